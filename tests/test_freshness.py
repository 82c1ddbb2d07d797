"""Freshness of each customer's live graph (freshness.py): the check `live_graph_fresh`, per customer, evaluated by
the sensor `live_graph_freshness`, which alerts once when a customer turns stale. Fast: no load, no daemon."""

import json
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from bluegreen_dagster.config import ConfigError
from bluegreen_dagster.freshness import evaluate, outcome
from bluegreen_dagster.live_graph import SWITCH, UNPIN, latest, record_live
from tests.conftest import Project
from tests.test_alert_channels import http_receiver


def test_each_customer_is_judged_by_its_own_max_age() -> None:
    with dg.instance_for_test() as instance:
        for customer in ("acme", "globex", "initech"):
            record_live(instance, customer, f"{customer}-100", None, how=SWITCH, by="test")
        later = datetime.now(timezone.utc) + timedelta(hours=2)
        found = {f.customer: f for f in evaluate(instance, timedelta(hours=3), {"acme": timedelta(hours=1)}, later)}
        without_default = evaluate(instance, None, {"acme": timedelta(hours=1)}, later)
    assert found["acme"].stale and not found["globex"].stale and not found["initech"].stale
    assert [f.customer for f in without_default] == ["acme"]  # no max_age: not checked
    result = outcome(list(found.values()))
    assert result["passed"] is False and result["metadata"]["stale"] == ["acme"]
    assert "1 of 3 customers stale" in result["description"] and "acme: STALE, acme-100 live since" in \
        result["description"] and "max_age 1h00m" in result["description"]


def test_an_unpin_keeps_since_so_it_does_not_make_a_stale_graph_fresh() -> None:
    with dg.instance_for_test() as instance:
        first = record_live(instance, "acme", "acme-100", None, how=SWITCH, by="test")
        time.sleep(1.1)
        record_live(instance, "acme", "acme-100", "acme-100", how=UNPIN, by="test")
        event = latest(instance, "acme")
    assert event.metadata["how"].value == "unpin"
    assert event.metadata["since"].value == first.metadata["since"].value


def test_the_sensor_fails_the_check_and_alerts_once_per_customer_turning_stale(project: Project) -> None:
    with http_receiver() as (url, received):
        project.reconfigure(orchestrator={"max_age": 3600}, alerts={"webhook": {"url": f"{url}/hook"}},
                            customers={"acme": {"max_age": 6}})  # `since` is kept to the second
        sensor = project.defs.resolve_sensor_def("live_graph_freshness")

        def tick(cursor=None):
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor))

        with dg.instance_for_test() as instance:
            record_live(instance, "acme", "acme-100", None, how=SWITCH, by="test")
            record_live(instance, "globex", "globex-100", None, how=SWITCH, by="test")
            assert "moved just now" in tick().skip_message  # the UI compares by the second: wait for the next
            time.sleep(2.1)
            first = tick()
            time.sleep(5)
            stale = tick(first.cursor)
            again = tick(stale.cursor)
            # Another customer's move: evaluated again (else the UI shows "Not evaluated"), no second alert.
            record_live(instance, "globex", "globex-200", "globex-100", how=SWITCH, by="test")
            time.sleep(2.1)
            other = tick(stale.cursor)
            # A new snapshot goes live: fresh again, and the check says so.
            record_live(instance, "acme", "acme-200", "acme-100", how=SWITCH, by="test")
            time.sleep(2.1)
            fresh = tick(other.cursor)
    [passed] = first.asset_events
    assert passed.check_name == "live_graph_fresh" and passed.passed
    [failed] = stale.asset_events
    assert failed.asset_key == dg.AssetKey("live_graph") and not failed.passed
    assert failed.metadata["stale"].value == ["acme"] and "acme: STALE, acme-100" in failed.description
    assert isinstance(again, dg.SkipReason)  # nothing changed: no new evaluation, no second alert
    [still] = other.asset_events
    assert not still.passed and still.metadata["stale"].value == ["acme"]
    [now_fresh] = fresh.asset_events
    assert now_fresh.passed
    [(path, _headers, body)] = received
    alert = json.loads(body)
    assert path == "/hook" and alert["customer"] == "acme" and alert["step"].startswith("live_graph_fresh")
    assert "stale" in alert["cause"] and "acme-100" in alert["cause"]


def test_the_check_runs_from_the_ui_with_the_same_verdict(project: Project) -> None:
    project.reconfigure(customers={"acme": {"max_age": 1}})
    defs = project.defs
    with dg.instance_for_test() as instance:
        record_live(instance, "acme", "acme-100", None, how=SWITCH, by="test")
        time.sleep(1.5)
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_check_selection={dg.AssetCheckKey(dg.AssetKey("live_graph"), "live_graph_fresh")},
            asset_selection=set())
        result = job.execute_in_process(instance=instance)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["stale"].value == ["acme"]


@pytest.mark.parametrize("bad", [0, -5, "soon"])
def test_a_bad_max_age_fails_at_load_naming_the_key(project: Project, bad) -> None:
    with pytest.raises(ConfigError, match="customers.acme.max_age"):
        project.reconfigure(customers={"acme": {"max_age": bad}})


def test_materializing_live_graph_by_hand_records_what_the_target_serves(project: Project) -> None:
    from bluegreen_dagster.demo_data import write_snapshot
    from tests.helpers import run_partition as run

    write_snapshot(project.data, "acme", 100, people=20)
    defs = project.defs
    with dg.instance_for_test() as instance:
        assert run(project, instance, "acme-100").success
        switched = latest(instance, "acme")
        time.sleep(1.1)
        result = dg.materialize([defs.get_assets_def("live_graph")], partition_key="acme", instance=instance,
                                resources=project.resources.as_dict())
        read = latest(instance, "acme")
        assert result.success
        instance.add_dynamic_partitions("customers", ["globex"])  # a customer without an alias
        nobody = dg.materialize([defs.get_assets_def("live_graph")], partition_key="globex", instance=instance,
                                resources=project.resources.as_dict(), raise_on_error=False)
    assert read.metadata["how"].value == "read" and read.metadata["serves"].value == "acme-100"
    assert read.metadata["since"].value == switched.metadata["since"].value  # it moved nothing
    assert not nobody.success
    assert "globex has no alias" in nobody.get_step_failure_events()[0].event_specific_data.error.message
