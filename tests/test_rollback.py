"""Rollback and pin, as an operator uses them: `bluegreen rollback` / `unpin` and the UI's `rollback` job, on the
embedded target and on the Neo4j stand-in (tests/standin), with real load_snapshot runs around them."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from bluegreen_dagster.cli import main, prepare_dagster_home
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.pins import get_pin
from tests.conftest import Project
from tests.helpers import alias_of, databases, metadata, run_partition


@pytest.fixture
def instance(project: Project):
    """The instance the CLI uses ($DAGSTER_HOME with our dagster.yaml), so runs, CLI and pins share it."""
    prepare_dagster_home()
    with dg.DagsterInstance.get() as inst:
        yield inst


def live(instance: dg.DagsterInstance, customer: str = "acme") -> dict:
    """The metadata of the latest materialization of the customer's partition of `live_graph`."""
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("live_graph"), asset_partitions=[customer]), limit=1).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def status_json(capsys, customer: str = "acme") -> dict:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return {c["customer"]: c for c in json.loads(capsys.readouterr().out)["customers"]}[customer]


def load(project: Project, instance: dg.DagsterInstance, *timestamps: int, people: int = 30) -> None:
    for ts in timestamps:
        if not (project.data / "acme" / str(ts)).exists():
            write_snapshot(project.data, "acme", ts, people=people + ts // 100)
        assert run_partition(project, instance, f"acme-{ts}").success


def pin_story(project: Project, instance: dg.DagsterInstance, capsys, alias_of) -> None:
    """Rollback --pin, a pinned customer's new snapshot loads and verifies but does not switch, cleanup keeps the
    pinned database beyond keep_databases, unpin, and the next snapshot switches. `alias_of()` reads the target."""
    load(project, instance, 100, 200)
    assert alias_of() == "acme-200"

    capsys.readouterr()
    assert main(["rollback", "acme", "--pin", "--reason", "bad data in 200"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "acme-200 -> acme-100" in said and "pinned" in said
    assert alias_of() == "acme-100"
    facts = live(instance)
    assert facts["serves"] == "acme-100" and facts["previous"] == "acme-200" and facts["how"] == "rollback"
    assert facts["reason"] == "bad data in 200" and facts["pinned"] is True and "@" in facts["by"]
    rolled_back_at = facts["since"]
    pin = status_json(capsys)["pin"]
    assert pin["database"] == "acme-100" and pin["reason"] == "bad data in 200" and "@" in pin["by"]
    assert main(["status"]) == 0 and "pinned" in capsys.readouterr().out  # the table's pin column renders

    # keep_databases=2: a new snapshot loads and verifies, but the alias stays; the run succeeds and says why.
    write_snapshot(project.data, "acme", 300, people=40)
    result = run_partition(project, instance, "acme-300")
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["verify_counts"] is True
    said = metadata(result, "alias_switch")
    assert said["switched"] is False and said["pinned_to"] == "acme-100"
    assert "pinned to acme-100 since" in said["reason"] and "bad data in 200" in said["reason"]
    assert "`bluegreen unpin acme` to resume" in said["reason"]
    assert alias_of() == "acme-100"
    cleaned = metadata(result, "cleanup")
    assert cleaned["kept"] == ["acme-300", "acme-200"] and cleaned["protected"] == {"acme-100": "pinned"}

    capsys.readouterr()
    assert main(["unpin", "acme"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "acme unpinned" in said and "next" in said and "snapshot" in said
    assert status_json(capsys)["pin"] is None
    facts = live(instance)  # the unpin is recorded; the alias still serves acme-100 since the rollback
    assert facts["how"] == "unpin" and facts["serves"] == "acme-100" and facts["since"] == rolled_back_at
    assert facts["was_pinned_to"] == "acme-100"

    write_snapshot(project.data, "acme", 400, people=40)
    result = run_partition(project, instance, "acme-400")
    assert result.success and metadata(result, "alias_switch")["previous"] == "acme-100"
    assert alias_of() == "acme-400"
    assert live(instance)["how"] == "switch" and live(instance)["previous"] == "acme-100"
    assert metadata(result, "cleanup")["dropped"] == ["acme-200", "acme-100"]  # unpinned: retention applies again


def test_embedded_rollback_pin_unpin(project: Project, instance, capsys) -> None:
    project.reconfigure(orchestrator={"keep_databases": 2})
    pin_story(project, instance, capsys, lambda: alias_of(project, "acme"))
    assert databases(project, "acme") == ["acme-300", "acme-400"]


def test_default_rollback_passes_over_a_database_that_no_longer_verifies(project: Project, instance,
                                                                         capsys) -> None:
    project.reconfigure(orchestrator={"keep_databases": 3})
    load(project, instance, 100, 200, 300)
    # The snapshot of 200 changed on disk since it loaded: its database no longer matches it.
    shutil.rmtree(project.data / "acme" / "200")
    write_snapshot(project.data, "acme", 200, people=7)
    capsys.readouterr()
    assert main(["rollback", "acme"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert alias_of(project, "acme") == "acme-100"
    assert "acme-200: not verified" in said and "not pinned" in said
    assert get_pin(instance, "acme") is None
    # Not pinned: the next newer snapshot moves the alias forward as usual.
    load(project, instance, 500)
    assert alias_of(project, "acme") == "acme-500"


def test_refusals_say_what_to_do_and_leave_the_alias(project: Project, instance, capsys) -> None:
    project.reconfigure(orchestrator={"keep_databases": 3})
    write_snapshot(project.data, "globex", 100, people=5)
    load(project, instance, 100)

    def refused(*argv: str) -> str:
        capsys.readouterr()
        assert main(["rollback", *argv]) == 1
        assert alias_of(project, "acme") == before
        return " ".join(capsys.readouterr().err.split())  # rich wraps long lines

    before = "acme-100"
    assert "no retained database of acme older than the live acme-100" in refused("acme")
    assert "has no alias yet" in refused("globex")
    load(project, instance, 200)
    before = "acme-200"
    assert "acme-200 is already live" in refused("acme", "--to", "acme-200")
    assert "acme-150 does not exist" in refused("acme", "--to", "acme-150")
    assert "customer globex, not of acme" in refused("acme", "--to", "globex-100")
    assert "is not a snapshot name of the form" in refused("acme", "--to", "acme-100; DROP DATABASE acme-200")
    shutil.rmtree(project.data / "acme" / "100")
    assert "acme-100 is not verified" in refused("acme", "--to", "acme-100")
    write_snapshot(project.data, "acme", 100, people=3)
    assert "acme-100 is not verified" in refused("acme", "--to", "acme-100")
    assert "does not match its snapshot" in refused("acme")
    # A pinned customer is only moved with --pin (which moves the pin too).
    load(project, instance, 300)
    assert main(["rollback", "acme", "--to", "acme-200", "--pin"]) == 0
    before = "acme-200"
    assert "acme is pinned to acme-200" in refused("acme", "--to", "acme-300")
    assert main(["rollback", "acme", "--to", "acme-300", "--pin", "--reason", "200 was fine after all"]) == 0
    assert alias_of(project, "acme") == "acme-300" and get_pin(instance, "acme").database == "acme-300"
    capsys.readouterr()
    assert main(["unpin", "globex"]) == 0 and "globex was not pinned" in " ".join(capsys.readouterr().err.split())


def rollback_run(project: Project, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    job = project.defs.resolve_job_def("rollback")
    return job.execute_in_process(run_config={"ops": {"rollback_alias": {"config": config}}}, instance=instance,
                                  raise_on_error=False)


def test_the_ui_job_rolls_back_with_run_config(project: Project, instance) -> None:
    project.reconfigure(orchestrator={"keep_databases": 3})
    load(project, instance, 100, 200, 300)
    result = rollback_run(project, instance, customer="acme", to="acme-100", pin=True, reason="incident 7")
    assert result.success
    assert alias_of(project, "acme") == "acme-100"
    pin = get_pin(instance, "acme")
    assert pin.database == "acme-100" and pin.by == f"rollback run {result.run_id}" and pin.reason == "incident 7"
    assert instance.get_run_by_id(result.run_id).tags["customer"] == "acme"  # serialized with acme's loads
    seen = live(instance)
    assert seen["previous"] == "acme-300" and seen["run_id"] == result.run_id and seen["how"] == "rollback"
    assert seen["by"] == f"rollback run {result.run_id}"

    refused = rollback_run(project, instance, customer="acme", to="acme-100", pin=True)
    assert not refused.success and alias_of(project, "acme") == "acme-100"
    message = refused.get_step_failure_events()[0].event_specific_data.error.message
    assert "rollback refused" in message and "already live" in message


# --------------------------------------------------------------------------------------------------------------
# Neo4j, through the stand-in


@pytest.fixture
def neo4j_instance(neo4j_project: Project):  # noqa: F811
    prepare_dagster_home()
    with dg.DagsterInstance.get() as inst:
        yield inst


def test_neo4j_rollback_pin_unpin(neo4j_project: Project, standin, neo4j_instance, capsys) -> None:  # noqa: F811
    # No drain here: this story is about retention after an unpin (the drain has its own tests, test_drain.py).
    neo4j_project.reconfigure(orchestrator={"keep_databases": 2, "drain_seconds": 0})
    pin_story(neo4j_project, neo4j_instance, capsys, lambda: standin.dbms.alias_target("acme"))
    assert sorted(n for n in standin.dbms.database_names() if n.startswith("acme-")) == ["acme-300", "acme-400"]


def test_neo4j_ui_job_rolls_back_by_default_to_the_newest_older_verified(neo4j_project: Project,  # noqa: F811
                                                                        standin, neo4j_instance) -> None:  # noqa: F811
    neo4j_project.reconfigure(orchestrator={"keep_databases": 3})
    load(neo4j_project, neo4j_instance, 100, 200, 300)
    result = rollback_run(neo4j_project, neo4j_instance, customer="acme", reason="bad load")
    assert result.success
    assert standin.dbms.alias_target("acme") == "acme-200"
    assert get_pin(neo4j_instance, "acme") is None
    seen = live(neo4j_instance)
    assert seen["serves"] == "acme-200" and seen["previous"] == "acme-300" and seen["pinned"] is False


def test_a_failed_verification_never_drops_the_pinned_database(project: Project, instance,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """drop_unverified, the other place that drops databases, spares the pinned one even when the alias was moved
    away from it by hand (so "it is the alias target" does not protect it)."""
    from bluegreen_dagster.pins import set_pin
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    project.reconfigure(orchestrator={"keep_databases": 3})
    load(project, instance, 100, 200)
    set_pin(instance, "acme", "acme-100", reason="kept for an audit", by="ops@test")
    real_count = EmbeddedTarget.count

    def short_by_one(self, database):  # the re-run's verification finds a row missing
        counts = real_count(self, database)
        return type(counts)(counts.nodes - 1, counts.relationships, counts.labels, counts.types)

    monkeypatch.setattr(EmbeddedTarget, "count", short_by_one)
    result = run_partition(project, instance, "acme-100")
    assert not result.success
    assert next(e for e in result.get_asset_check_evaluations() if e.check_name == "verify_counts").passed is False
    monkeypatch.undo()
    assert databases(project, "acme") == ["acme-100", "acme-200"] and alias_of(project, "acme") == "acme-200"


def test_an_empty_graph_is_never_rolled_back_to(project: Project, instance, capsys) -> None:
    """A database that matches its snapshot but holds no nodes (a producer bug) is not a rollback target."""
    import pyarrow as pa

    from tests.embedded_helpers import custom, people

    project.reconfigure(orchestrator={"keep_databases": 3})
    no_rels = pa.table({"sourceNodeId": pa.array([], pa.int64()), "targetNodeId": pa.array([], pa.int64()),
                        "relationshipType": pa.array([], pa.string())})
    empty = custom(project.root, {"people": people([])}, {"knows": no_rels}, ts=100)
    (empty.path / "_SUCCESS").touch()
    load(project, instance, 200, 300)
    # Loaded and verified; older than the live one, so never switched to.
    assert run_partition(project, instance, "acme-100").success and "acme-100" in databases(project, "acme")
    capsys.readouterr()
    assert main(["rollback", "acme", "--to", "acme-100"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "acme-100 is not verified" in said and "empty graph" in said and alias_of(project, "acme") == "acme-300"
    assert main(["rollback", "acme"]) == 0 and alias_of(project, "acme") == "acme-200"
    assert main(["rollback", "acme"]) == 1 and alias_of(project, "acme") == "acme-200"  # only the empty one is older


def test_a_database_that_failed_the_gate_is_never_rolled_back_to(project: Project, instance, capsys) -> None:
    """A database refused by `plausible` is kept for inspection and counts exactly like its snapshot: only
    Dagster's record of its checks tells it must not serve."""
    project.reconfigure(orchestrator={"keep_databases": 3})
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=20)  # shrinks 90 %: refused by the gate, kept
    load(project, instance, 100)
    assert not run_partition(project, instance, "acme-200").success
    load(project, instance, 300, people=200)
    assert "acme-200" in databases(project, "acme")
    capsys.readouterr()
    assert main(["rollback", "acme", "--to", "acme-200"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "acme-200 is not verified: its plausible check failed" in said and alias_of(project, "acme") == "acme-300"
    assert main(["rollback", "acme"]) == 0 and alias_of(project, "acme") == "acme-100"
