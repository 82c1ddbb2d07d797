"""The production Neo4jTarget, blue/green end to end, against the Enterprise stand-in (tests/standin).

Real driver, real Flight client, real sockets; only the server side is a stand-in (see tests/standin/__init__.py
for what it models and what it does not).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bluegreen_dagster.bluegreen import cleanup, switch_if_newest, verify
from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError, TargetError, TransientTargetError
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from bluegreen_dagster.targets.neo4j import queries as q
from bluegreen_dagster.targets.neo4j.arrow import ArrowLoader
from tests.standin.server import start_standin

PASSWORD = "bg-standin-pw-42"
PEOPLE = 120  # 120 people + 2 companies; 360 KNOWS + 120 WORKS_AT


@pytest.fixture
def standin():
    with start_standin(password=PASSWORD) as s:
        yield s
    assert not [t for t in threading.enumerate() if t.name.startswith("standin-")]


def make_settings(standin, tmp_path: Path, **neo4j):
    section = {"host": "127.0.0.1", "bolt_port": standin.bolt_port,
               "arrow_port": standin.arrow.port if standin.arrow else 1, "password": PASSWORD,
               "batch_size": 50, "concurrency": 2, "online_timeout": 2, **neo4j}
    return parse_settings({"target": "neo4j", "neo4j": section, "dataset": {"base_path": str(tmp_path / "data")},
                           }, root=tmp_path)


@pytest.fixture
def settings(standin, tmp_path):
    return make_settings(standin, tmp_path)


@pytest.fixture
def target(settings):
    with Neo4jTarget(settings, poll_interval=0.01) as t:
        yield t


def snapshot(settings, customer: str, ts: int, people: int = PEOPLE):
    write_snapshot(settings.dataset.base_path, customer, ts, people=people)
    return snapshot_at(settings.dataset.base_path, customer, ts)


def load_and_switch(target, settings, snap):
    report = target.load(snap)
    expected = expected_counts(snap)
    verify(target, snap.key, expected)
    return report, switch_if_newest(target, snap.key, expected)


def assert_no_trace(standin, name):
    dbms = standin.dbms
    assert name not in dbms.databases and name not in dbms.imports and name not in dbms.stores


# --- the happy path ---------------------------------------------------------------------------------------------


def test_load_verify_switch_cleanup(standin, settings, target):
    health = target.health()
    assert health.ok, health.problems
    assert health.measurements["edition"] == "enterprise"

    for ts in (100, 200, 300):
        snap = snapshot(settings, "acme", ts)
        report, switched = load_and_switch(target, settings, snap)
        assert (report.nodes, report.relationships, report.reused) == (PEOPLE + 2, 4 * PEOPLE, False)
        assert switched.switched and switched.current == snap.key
        assert target.alias_target("acme") == snap.key
    assert standin.dbms.aliases == {"acme": "acme-300"}
    counts = target.count("acme-300")
    assert counts.labels == {"Person": PEOPLE, "Employee": PEOPLE // 10, "Company": 2}
    assert counts.types == {"KNOWS": 3 * PEOPLE, "WORKS_AT": PEOPLE}

    # the Arrow protocol was followed: create, nodes, NODE_LOAD_DONE, relationships, RELATIONSHIP_LOAD_DONE
    kinds = [what for server, what, _ in standin.dbms.events if server == "arrow" and what.startswith("v1/")]
    assert kinds[:3] == ["v1/CREATE_DATABASE", "v1/NODE_LOAD_DONE", "v1/RELATIONSHIP_LOAD_DONE"]
    assert standin.dbms.events_of("v1/CREATE_DATABASE")[0]["id_property"] == q.ID_PROPERTY
    assert not standin.dbms.events_of("v1/ABORT")

    result = cleanup(target, "acme", keep=2, in_flight=set)
    assert result.dropped == ["acme-100"] and sorted(result.kept) == ["acme-200", "acme-300"]
    assert [d.name for d in target.list_databases("acme")] == ["acme-200", "acme-300"]

    # a re-run of an already loaded snapshot is a safe no-op
    again = target.load(snapshot_at(settings.dataset.base_path, "acme", 300))
    assert again.reused and again.nodes == PEOPLE + 2


def test_cleanup_never_drops_the_alias_target(standin, settings, target):
    load_and_switch(target, settings, snapshot(settings, "acme", 100))
    for ts in (200, 300):
        target.load(snapshot(settings, "acme", ts))  # loaded, never switched
    assert target.alias_target("acme") == "acme-100"
    result = cleanup(target, "acme", keep=1, in_flight=set)
    assert result.kept == ["acme-300"] and result.dropped == ["acme-200"]
    assert result.protected == {"acme-100": "alias target"}
    # and the server refuses it too (DROP DATABASE is RESTRICT)
    with pytest.raises(PermanentTargetError, match="alias"):
        target.drop_database("acme-100")
    assert "acme-100" in standin.dbms.databases


def test_older_snapshot_arriving_late_never_takes_the_alias(standin, settings, target):
    load_and_switch(target, settings, snapshot(settings, "acme", 300))
    report, switched = load_and_switch(target, settings, snapshot(settings, "acme", 250))
    assert report.nodes == PEOPLE + 2
    assert not switched.switched and switched.current == "acme-300"
    assert standin.dbms.aliases == {"acme": "acme-300"}
    assert [e["parameters"]["database"] for e in standin.dbms.events_of("ALTER_ALIAS")] == []


def test_customers_are_independent(standin, settings, target):
    load_and_switch(target, settings, snapshot(settings, "acme", 100, people=20))
    load_and_switch(target, settings, snapshot(settings, "globex", 50, people=30))
    assert standin.dbms.aliases == {"acme": "acme-100", "globex": "globex-50"}
    assert [d.name for d in target.list_databases("acme")] == ["acme-100"]
    assert target.count("globex-50").nodes == 31


def test_database_appears_late_or_must_be_mounted(standin, settings, target):
    faults = standin.dbms.faults
    faults.hidden_polls, faults.starting_polls = 3, 3
    report, switched = load_and_switch(target, settings, snapshot(settings, "acme", 100, people=20))
    assert switched.switched and report.nodes == 21
    faults.hidden_polls = faults.starting_polls = 0
    faults.register_after_import = False  # store written, database never registered: the target mounts it
    report, switched = load_and_switch(target, settings, snapshot(settings, "acme", 200, people=20))
    assert switched.switched and report.nodes == 21
    assert [e["parameters"]["name"] for e in standin.dbms.events_of("CREATE_DATABASE")] == ["acme-200"]


# --- failures: error raised, import aborted, nothing left, alias unchanged -----------------------------------------


def _prepare_live(target, settings):
    load_and_switch(target, settings, snapshot(settings, "acme", 100, people=20))
    return snapshot(settings, "acme", 200)


@pytest.mark.parametrize("fault, value, error", [
    ("drop_put_after_batches", 3, TransientTargetError),  # gRPC UNAVAILABLE mid-stream
    ("reject_batch", 2, PermanentTargetError),  # INVALID_ARGUMENT on one batch
])
def test_failure_mid_stream_aborts_and_leaves_nothing(standin, settings, target, fault, value, error):
    snap = _prepare_live(target, settings)
    setattr(standin.dbms.faults, fault, value)
    with pytest.raises(error):
        target.load(snap)
    assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-200"]
    assert_no_trace(standin, "acme-200")
    assert standin.dbms.aliases == {"acme": "acme-100"}
    assert PASSWORD not in str(standin.dbms.events)  # nothing logged the password either


def test_failure_in_relationship_phase_aborts(standin, settings, target):
    snap = _prepare_live(target, settings)
    standin.dbms.faults.fail_action["v1/RELATIONSHIP_LOAD_DONE"] = "INTERNAL"
    with pytest.raises(TargetError):
        target.load(snap)
    assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-200"]
    assert_no_trace(standin, "acme-200")
    assert standin.dbms.aliases == {"acme": "acme-100"}


@pytest.mark.parametrize("status, error", [("UNAVAILABLE", TransientTargetError),
                                           ("PERMISSION_DENIED", PermanentTargetError),
                                           ("ALREADY_EXISTS", PermanentTargetError)])
def test_refused_create(standin, settings, target, status, error):
    snap = _prepare_live(target, settings)
    standin.dbms.faults.refuse_create = status
    with pytest.raises(error) as info:
        target.load(snap)
    assert "acme-200" in str(info.value)
    assert_no_trace(standin, "acme-200")
    assert standin.dbms.aliases == {"acme": "acme-100"}


def test_database_that_never_starts_is_dropped(standin, settings, target):
    snap = _prepare_live(target, settings)
    standin.dbms.faults.start_fails = True
    with pytest.raises(TransientTargetError, match="not online"):
        target.load(snap)
    assert_no_trace(standin, "acme-200")
    assert standin.dbms.aliases == {"acme": "acme-100"}


def test_verification_failure_keeps_the_alias(standin, settings, target):
    snap = _prepare_live(target, settings)
    target.load(snap)
    graph = standin.dbms.databases["acme-200"].graph
    graph.relationships.pop()  # the database lost a relationship
    with pytest.raises(PermanentTargetError, match="does not match"):
        switch_if_newest(target, snap.key, expected_counts(snap))
    assert standin.dbms.aliases == {"acme": "acme-100"}


# --- credentials and edition ------------------------------------------------------------------------------------


def test_wrong_password_is_clear_and_secret(standin, tmp_path):
    wrong = "not-the-pw-987"
    settings = make_settings(standin, tmp_path, password=wrong)
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        with pytest.raises(PermanentTargetError) as info:
            target.health()
    assert "authentication" in str(info.value) and wrong not in str(info.value)
    loader = ArrowLoader(settings.neo4j)
    try:
        with pytest.raises(PermanentTargetError) as info:
            loader.check_protocol()
    finally:
        loader.close()
    assert "authentication" in str(info.value) and wrong not in str(info.value)
    assert standin.dbms.databases.keys() == {"system", "neo4j"}


def test_community_edition_is_refused_clearly(tmp_path):
    with start_standin(password=PASSWORD, edition="community", arrow=False) as standin:
        settings = make_settings(standin, tmp_path, loader="cypher")
        with Neo4jTarget(settings, poll_interval=0.01) as target:
            health = target.health()
            assert health.measurements["edition"] == "community"
            assert health.measurements["pagecache_percent"] == "unknown"
            snap = snapshot(settings, "acme", 100, people=10)
            with pytest.raises(PermanentTargetError, match="Enterprise"):
                target.load(snap)
            with pytest.raises(PermanentTargetError, match="Enterprise"):
                target.point_alias("acme", "acme-100")
        assert standin.dbms.databases.keys() == {"system", "neo4j"}


def test_health_reports_heap_and_database_count(standin, settings, target):
    standin.dbms.heap_used, standin.dbms.heap_max = 95, 100
    standin.dbms.pagecache_ratio = 0.5
    health = target.health()
    assert health.measurements["heap_percent"] == 95.0 and health.measurements["pagecache_percent"] == 50.0
    assert health.measurements["databases"] == 1
    assert any("heap" in p for p in health.problems)


# --- the Cypher fallback loader -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", [True, False])
def test_cypher_loader_blue_green(standin, tmp_path, dynamic):
    standin.dbms.dynamic_labels = dynamic
    settings = make_settings(standin, tmp_path, loader="cypher", batch_size=40)
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        for ts in (100, 200):
            report, switched = load_and_switch(target, settings, snapshot(settings, "acme", ts, people=30))
            assert (report.nodes, report.relationships) == (31, 120) and switched.switched
        counts = target.count("acme")
        assert q.LOAD_LABEL not in counts.labels and counts.nodes == 31
        assert cleanup(target, "acme", keep=1, in_flight=set).dropped == ["acme-100"]
    assert standin.dbms.aliases == {"acme": "acme-200"}
    assert not standin.dbms.events_of("v1/CREATE_DATABASE")
    used = {what for server, what, _ in standin.dbms.events if server == "bolt"}
    assert ("CREATE_NODES_DYNAMIC" in used) == dynamic and ("CREATE_NODES_STATIC" in used) != dynamic


def test_retry_after_unmounted_store_recovers(standin, settings, target):
    """Store files of an Arrow import whose database was never registered survive DROP DATABASE IF EXISTS; a retry
    of the same snapshot must not fail with ALREADY_EXISTS forever."""
    standin.dbms.faults.register_after_import = False
    standin.dbms.max_databases = 2  # system + neo4j: the mount (CREATE DATABASE) fails with DatabaseLimitReached
    snap = snapshot(settings, "acme", 100, people=10)
    with pytest.raises(TransientTargetError, match="limit"):
        target.load(snap)
    assert "acme-100" in standin.dbms.stores and "acme-100" not in standin.dbms.databases
    standin.dbms.max_databases = 100  # the operator made room; the step's retry runs
    assert target.load(snap).nodes == 11  # the leftover store is replaced (force=true), not "already exists"
    assert [e.get("force") for e in standin.dbms.events_of("v1/CREATE_DATABASE")] == [False, False, True]
    assert standin.dbms.stores == {} and "acme-100" in standin.dbms.databases
