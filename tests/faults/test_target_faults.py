"""Faults of the Neo4j target, through the real job against the Neo4j Enterprise stand-in (tests/standin: real Bolt
and real Arrow Flight over sockets, not Neo4j): the target is down before the load, the Arrow stream is reset
mid-load, the server refuses to create the database. Each ends with the four standard assertions
(tests/faults/harness.py); the project is `target: neo4j` pointing at the stand-in, so the probe reads the alias
and runs cleanup through the same Neo4jTarget the job uses."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project
from tests.helpers import failed_step, make_neo4j_project
from tests.standin.bolt_server import BoltServer
from tests.standin.flight_server import GdsArrowServer
from tests.standin.tcp_proxy import TcpProxy


def project_on_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin, **neo4j) -> Project:
    """A project on the stand-in that gives up on a database coming online after 4 s."""
    return make_neo4j_project(tmp_path, monkeypatch, standin, **{"online_timeout": 4, **neo4j})


def retries(result: dg.ExecuteInProcessResult, step: str) -> list[str]:
    """The error of every attempt of `step` that was retried (the cause under Dagster's retry request)."""
    def cause(error):
        while error.cause is not None and "RetryRequested" in error.cls_name:
            error = error.cause
        message = error.message.strip()  # "module.Class: text" for a raised exception: keep the text
        head, _, rest = message.partition(": ")
        return rest if head.endswith(error.cls_name) and rest else message

    return [cause(e.event_specific_data.error) for e in result.all_events
            if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == step]


def test_target_down_before_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin, fault) -> None:
    project = project_on_standin(tmp_path, monkeypatch, standin)
    write_snapshot(project.data, "acme", 100, people=40)
    write_snapshot(project.data, "acme", 200, people=40)
    with dg.instance_for_test() as instance:
        probe = fault("target down before the load (Bolt refused)", project, "acme")
        assert probe.run(instance, "acme-100").success

        port = standin.bolt.port
        standin.bolt.stop()  # Neo4j is down: nothing listens on the Bolt port
        result = probe.run(instance, "acme-200")
        assert not result.success and failed_step(result) == "health_check"
        assert len(retries(result, "health_check")) == 1  # retried (max_retries: 1), then failed
        assert "acme-200" not in standin.dbms.database_names()  # nothing was created

        standin.bolt = BoltServer(standin.dbms, port=port).start()  # back up, for the probe's cleanup and alias
    probe.conclude(alias="acme-100", message=probe.message(result),
                   mentions=[f"127.0.0.1:{port}", "cannot reach Neo4j", "check", "gave up after 1 retries"])


def test_arrow_server_down_before_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin, fault) -> None:
    """Bolt answers (the health check passes) but nothing listens on the GDS Arrow port."""
    project = project_on_standin(tmp_path, monkeypatch, standin)
    write_snapshot(project.data, "acme", 100, people=40)
    write_snapshot(project.data, "acme", 200, people=40)
    with dg.instance_for_test() as instance:
        probe = fault("GDS Arrow server down before the load", project, "acme")
        assert probe.run(instance, "acme-100").success
        port = standin.arrow.port
        standin.arrow.stop()
        result = probe.run(instance, "acme-200")
        assert not result.success and failed_step(result) == "snapshot_database"
        assert len(retries(result, "snapshot_database")) == 1
        standin.arrow = GdsArrowServer(standin.dbms, port=port).start()
    assert "acme-200" not in standin.dbms.database_names()
    probe.conclude(alias="acme-100", message=probe.message(result),
                   mentions=[f"GDS Arrow server at 127.0.0.1:{port}", "gds.arrow.enabled", "gave up after 1 retries"])


def test_arrow_connection_reset_mid_stream_then_the_retry_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 standin, fault) -> None:
    """A real TCP reset (a proxy between us and the GDS Arrow server) after three batches: the import is aborted and
    dropped, the step's retry loads from scratch and the alias moves forward."""
    proxy = TcpProxy(standin.arrow.port).start()
    try:
        project = project_on_standin(tmp_path, monkeypatch, standin, arrow_port=proxy.port)
        write_snapshot(project.data, "acme", 100, people=40)
        write_snapshot(project.data, "acme", 200, people=400)
        with dg.instance_for_test() as instance:
            probe = fault("Arrow connection reset mid-stream (then retried)", project, "acme")
            assert probe.run(instance, "acme-100").success
            standin.arrow.after_batch = lambda n: proxy.cut() if n == 3 and not proxy.cuts else None
            result = probe.run(instance, "acme-200")
        assert proxy.cuts == 1 and result.success
        [lost] = retries(result, "snapshot_database")
        assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-200"]
        probe.conclude(alias="acme-200", message=lost,
                       mentions=["acme-200", f"GDS Arrow server at 127.0.0.1:{proxy.port}", "import was aborted", "nothing is left"])
    finally:
        proxy.stop()


def test_arrow_stream_dropped_on_every_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin,
                                               fault) -> None:
    """The stand-in drops every DoPut stream after two batches (gRPC UNAVAILABLE): retried, then failed; the alias
    stays and the half-loaded import leaves nothing behind."""
    project = project_on_standin(tmp_path, monkeypatch, standin)
    write_snapshot(project.data, "acme", 100, people=40)
    write_snapshot(project.data, "acme", 200, people=400)
    with dg.instance_for_test() as instance:
        probe = fault("Arrow stream dropped on every attempt", project, "acme")
        assert probe.run(instance, "acme-100").success
        standin.dbms.faults.drop_put_after_batches = 2
        result = probe.run(instance, "acme-200")
    assert not result.success and failed_step(result) == "snapshot_database"
    assert len(retries(result, "snapshot_database")) == 1
    assert "acme-200" not in standin.dbms.database_names() and "acme-200" not in standin.dbms.stores
    probe.conclude(alias="acme-100", message=probe.message(result),
                   mentions=["acme-200", "GDS Arrow server", "gave up after 1 retries"])


def test_target_refuses_to_create_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin,
                                               fault) -> None:
    """The server's database limit is reached (dbms.max_databases, lower than our orchestrator.max_databases):
    Neo4j refuses the new database with Neo.DatabaseError.Database.DatabaseLimitReached."""
    project = project_on_standin(tmp_path, monkeypatch, standin, loader="cypher")
    write_snapshot(project.data, "acme", 100, people=40)
    write_snapshot(project.data, "acme", 200, people=40)
    with dg.instance_for_test() as instance:
        probe = fault("target refuses database creation (limit reached)", project, "acme")
        assert probe.run(instance, "acme-100").success
        standin.dbms.max_databases = len(standin.dbms.databases)  # system, neo4j, acme-100: full
        result = probe.run(instance, "acme-200")
    assert not result.success and failed_step(result) == "snapshot_database"
    assert "acme-200" not in standin.dbms.database_names()
    probe.conclude(alias="acme-100", message=probe.message(result),
                   mentions=["acme-200", "dbms.max_databases", "drop old snapshot databases or raise the limit"])


def test_a_file_added_during_the_load_is_refused_on_neo4j(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin,
                                                          fault) -> None:
    """The producer adds a file while the Arrow load streams: the database would mix two versions, so it is dropped
    and the run fails naming the change (the embedded target's fault is in test_data_faults.py)."""
    import shutil

    from bluegreen_dagster.targets.neo4j import arrow

    project = project_on_standin(tmp_path, monkeypatch, standin)
    write_snapshot(project.data, "acme", 100, people=40)
    write_snapshot(project.data, "acme", 200, people=40)
    nodes = project.data / "acme" / "200" / "nodes"
    original = arrow.ArrowLoader.load

    def load_then_add_a_file(self, snapshot):
        result = original(self, snapshot)
        if snapshot.key == "acme-200":
            shutil.copy(next(nodes.glob("*.parquet")), nodes / "late-extra.parquet")
        return result

    monkeypatch.setattr(arrow.ArrowLoader, "load", load_then_add_a_file)
    with dg.instance_for_test() as instance:
        probe = fault("file added during the load (Neo4j)", project, "acme")
        assert probe.run(instance, "acme-100").success
        result = probe.run(instance, "acme-200")
        assert not result.success and failed_step(result) == "snapshot_database"
    assert "acme-200" not in standin.dbms.database_names()
    probe.conclude(alias="acme-100", message=probe.message(result),
                   mentions=["changed while it was being loaded", "added", "late-extra.parquet",
                             "bluegreen load acme 200"])
