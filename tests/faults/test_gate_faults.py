"""Faults that verification cannot see because the database equals its snapshot: the snapshot itself is wrong.
The plausibility gate (plausibility.py, the blocking check `plausible`) must keep them off the alias. Each test
asserts: the alias still serves the last good database, no snapshot file changed, and the message names both
counts and what to do."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import ALLOW_SHRINK_TAG
from tests.conftest import Project
from tests.faults.harness import tree_state
from tests.helpers import alias_of, databases, run_partition


def write_empty_snapshot(project: Project, customer: str, ts: int, like: int) -> None:
    """A snapshot with the same typed columns as snapshot `like` and zero rows, plus _SUCCESS (a producer bug)."""
    source = project.data / customer / str(like)
    target = project.data / customer / str(ts)
    for folder in ("nodes", "relationships"):
        (target / folder).mkdir(parents=True)
        for file in (source / folder).glob("*.parquet"):
            pq.write_table(pq.read_table(file).slice(0, 0), target / folder / file.name)
    (target / "_SUCCESS").touch()


def gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "plausible")


def test_an_empty_snapshot_never_goes_live_and_the_good_database_survives_cleanup(project: Project, fault) -> None:
    project.reconfigure(orchestrator={"keep_databases": 1})
    write_snapshot(project.data, "acme", 100, people=50)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        write_empty_snapshot(project, "acme", 200, like=100)
        write_empty_snapshot(project, "acme", 300, like=100)
        probe = fault("empty snapshot (0 rows, _SUCCESS)", project, "acme")

        refused = run_partition(project, instance, "acme-200")
        assert not refused.success
        assert alias_of(project, "acme") == "acme-100"
        assert "empty graph (0 nodes" in gate(refused).description
        assert "acme-200" in databases(project, "acme")  # kept for inspection

        # Another refused snapshot with keep_databases=1: cleanup would keep only the newest, but the last
        # database that passed the gate is the alias target and stays.
        assert not run_partition(project, instance, "acme-300").success
        probe.conclude(alias="acme-100", message=probe.message(refused),
                       mentions=["empty graph", "acme-200", "fix the producer"])
        write_snapshot(project.data, "acme", 400, people=50)
        assert run_partition(project, instance, "acme-400").success
        assert alias_of(project, "acme") == "acme-400"


def test_the_first_snapshot_of_a_customer_may_not_be_empty(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=5)
    write_empty_snapshot(project, "acme", 50, like=100)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-50")
    assert not result.success and alias_of(project, "acme") is None
    assert "refusing to switch" in gate(result).description


def test_a_big_shrink_is_refused_unless_the_run_allows_it(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=40)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        refused = run_partition(project, instance, "acme-200")
        assert not refused.success and alias_of(project, "acme") == "acme-100"
        message = gate(refused).description
        assert "nodes" in message and "-80%" in message and ALLOW_SHRINK_TAG in message

        allowed = run_partition(project, instance, "acme-200", **{ALLOW_SHRINK_TAG: "true"})
        assert allowed.success and alias_of(project, "acme") == "acme-200"


def test_the_shrink_limit_is_set_per_customer(project: Project) -> None:
    project.reconfigure(customers={"acme": {"max_shrink_percent": 90}})
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=40)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        assert run_partition(project, instance, "acme-200").success
    assert alias_of(project, "acme") == "acme-200"


def test_an_older_snapshot_that_will_not_be_switched_is_not_judged_against_the_live_one(project: Project) -> None:
    write_snapshot(project.data, "acme", 300, people=200)
    write_snapshot(project.data, "acme", 200, people=20)  # late and much smaller: loaded, never switched to
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-300").success
        late = run_partition(project, instance, "acme-200")
    assert late.success and alias_of(project, "acme") == "acme-300"
    assert "will not be switched" in gate(late).description
