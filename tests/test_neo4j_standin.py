"""The production Neo4jTarget, blue/green end to end, against the Enterprise stand-in (tests/standin).

Real driver, real Flight client, real sockets; only the server side is a stand-in (see tests/standin/__init__.py
for what it models and what it does not).
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.bluegreen import cleanup, switch_if_newest, verify
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import (
    PermanentTargetError,
    TargetError,
    TransientTargetError,
)
from bluegreen_dagster.targets.neo4j import queries as q
from bluegreen_dagster.targets.neo4j.arrow import ArrowLoader
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import STANDIN_PASSWORD
from tests.helpers import standin_settings as make_settings
from tests.standin.server import start_standin
from tests.standin.tcp_proxy import TcpProxy

PASSWORD = STANDIN_PASSWORD  # the `standin` fixture's (tests/conftest.py)
PEOPLE = 120  # 120 people + 2 companies; 360 KNOWS + 120 WORKS_AT


@pytest.fixture
def settings(standin, tmp_path):
    # GDS gets 0.2 s to register a database before its store is mounted (test_neo4j_mount.py tests the real wait).
    return make_settings(standin, tmp_path, arrow_mount_wait=0.2)


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
    assert counts.labels == {"Person": PEOPLE, "Company": 2}
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
    assert [e["parameters"]["name"] for e in standin.dbms.events_of("MOUNT_DATABASE")] == ["acme-200"]
    assert standin.dbms.events_of("CREATE_DATABASE") == []


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
    # the step's retry starts from scratch and succeeds
    setattr(standin.dbms.faults, fault, None)
    report, switched = load_and_switch(target, settings, snap)
    assert report.nodes == PEOPLE + 2 and switched.switched
    assert [e["force"] for e in standin.dbms.events_of("v1/CREATE_DATABASE")][-1] is False


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
    assert "NEO4J_PASSWORD" in str(info.value)
    assert len(standin.dbms.events_of("AUTH")) == 1  # refused at once, no second handshake
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


def test_cypher_loader_blue_green(standin, tmp_path):
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
    assert {"CREATE_LOAD_MARKER", "CREATE_NODES", "CREATE_RELATIONSHIPS", "DELETE_LOAD_MARKER"} <= used


def test_cypher_load_interrupted_midway_is_loaded_again_not_reused(standin, tmp_path):
    """A process that died mid-load leaves an online database that still has the loader's marker node."""
    settings = make_settings(standin, tmp_path, loader="cypher", batch_size=40)
    standin.dbms.add_database("acme-100", nodes={("c", -1): (q.LOAD_LABEL,), ("c", -2): ("Person",)})
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        report = target.load(snapshot(settings, "acme", 100, people=30))
        assert not report.reused and (report.nodes, report.relationships) == (31, 120)
        counts = target.count("acme-100")
    assert q.LOAD_LABEL not in counts.labels and counts.nodes == 31


@pytest.mark.parametrize("checked_at", ["create", "finish"])
def test_retry_after_unmounted_store_recovers(standin, settings, target, checked_at):
    """Store files of an Arrow import whose database was never registered survive DROP DATABASE IF EXISTS; a retry
    of the same snapshot must not fail with ALREADY_EXISTS forever, whether the server reports the leftover files
    at CREATE_DATABASE or only at RELATIONSHIP_LOAD_DONE."""
    standin.dbms.faults.store_checked_at = checked_at
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


# --- long loads: no deadline on streams or LOAD_DONE, stalls detected, tokens renewed ------------------------------


def arrow_loader(settings, target, say=None, **connection):
    return ArrowLoader(settings.neo4j, drop=target.admin.drop_database,
                       is_unregistered=lambda n: target.admin.database_status(n) is None, say=say, **connection)


def test_streams_and_load_done_outlast_every_short_deadline(standin, settings, target):
    standin.arrow.batch_delay = 0.02  # ~20 batches per stream: each stream lasts longer than the 0.3 s deadline
    standin.arrow.load_done_delay = 0.8
    lines: list[str] = []
    loader = arrow_loader(settings, target, say=lines.append, short_timeout=0.3, heartbeat=0.25)
    try:
        result = loader.load(snapshot(settings, "acme", 100))
    finally:
        loader.close()
    assert (result.nodes, result.relationships) == (PEOPLE + 2, 4 * PEOPLE)
    assert result.seconds > 1.6
    beats = [line for line in lines if "still finalising" in line]
    assert any("v1/NODE_LOAD_DONE acme-100" in b for b in beats)
    assert any("v1/RELATIONSHIP_LOAD_DONE acme-100" in b for b in beats)
    assert not standin.dbms.events_of("v1/ABORT")


def test_stalled_stream_is_aborted_and_the_retry_succeeds(standin, tmp_path):
    settings = make_settings(standin, tmp_path, stall_timeout=0.5)
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        snap = _prepare_live(target, settings)
        standin.arrow.stall_after_batches = 3
        started = time.monotonic()
        with pytest.raises(TransientTargetError, match="no batch acknowledged .* for 0.5s .*stall_timeout"):
            target.load(snap)
        assert time.monotonic() - started < 5
        assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-200"]
        assert_no_trace(standin, "acme-200")
        assert standin.dbms.aliases == {"acme": "acme-100"}
        standin.arrow.stall_after_batches = None
        report, switched = load_and_switch(target, settings, snap)
        assert report.nodes == PEOPLE + 2 and switched.switched


@pytest.mark.parametrize("token_max_age", [0.2, 600.0])
def test_expired_tokens_are_renewed(standin, settings, target, token_max_age):
    """0.2: renewed before the server's 0.5 s lifetime runs out; 600: the server refuses it first (UNAUTHENTICATED),
    and the client authenticates again once and carries on."""
    standin.arrow.token_ttl = 0.5
    standin.arrow.batch_delay = 0.01
    standin.arrow.load_done_delay = 0.6
    loader = arrow_loader(settings, target, token_max_age=token_max_age)
    try:
        result = loader.load(snapshot(settings, "acme", 100))
    finally:
        loader.close()
    assert result.relationships == 4 * PEOPLE
    handshakes = standin.dbms.events_of("AUTH")
    assert len(handshakes) >= 2 and all(h["ok"] for h in handshakes)
    refused = standin.dbms.events_of("BEARER_REFUSED")
    assert (not refused) if token_max_age < 0.5 else refused


def test_changed_password_fails_at_the_re_handshake(standin, settings, target):
    standin.arrow.token_ttl = 0.3
    standin.arrow.load_done_delay = 0.5
    loader = arrow_loader(settings, target)
    # the password changes while the load runs: the next handshake is refused
    threading.Timer(0.2, lambda: setattr(standin.dbms, "password", "rotated-pw-555")).start()
    try:
        with pytest.raises(PermanentTargetError, match="NEO4J_PASSWORD"):
            loader.load(snapshot(settings, "acme", 100))
    finally:
        loader.close()
    # With the old password not even ABORT is accepted: the server's gds.arrow.abortion_timeout ends the import.
    assert "acme-100" not in standin.dbms.databases and not standin.dbms.aliases


# --- what GDS documents: property types, nulls, labels -------------------------------------------------------------


def write_parquet_snapshot(settings, ts: int, node_tables: list, rel_tables: list, **write_options):
    folder = Path(settings.dataset.base_path) / "acme" / str(ts)
    for sub, tables in (("nodes", node_tables), ("relationships", rel_tables)):
        (folder / sub).mkdir(parents=True)
        for i, table in enumerate(tables):
            pq.write_table(table, folder / sub / f"part-{i}.parquet", **write_options)
    (folder / "_SUCCESS").touch()
    return snapshot_at(settings.dataset.base_path, "acme", ts)


def people_table(n=4, **extra):
    return pa.table({"nodeId": pa.array(range(1, n + 1), pa.int64()), "labels": pa.array(["Person"] * n), **extra})


def knows_table(**extra):
    return pa.table({"sourceNodeId": pa.array([1, 2], pa.int64()), "targetNodeId": pa.array([2, 3], pa.int64()),
                     "relationshipType": pa.array(["KNOWS", "KNOWS"]), **extra})


def assert_refused_before_create(standin, target, snap, *needles):
    with pytest.raises(SnapshotError) as info:
        target.load(snap)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not standin.dbms.events_of("v1/CREATE_DATABASE")
    assert_no_trace(standin, snap.key)
    return str(info.value)


@pytest.mark.parametrize("column, needles", [
    (pa.array(["a", "b"]), ("'note'", "double relationship properties", "neo4j.loader: cypher")),
    (pa.array([[1.0], [2.0]], pa.list_(pa.float64())), ("'note'", "double", "neo4j.loader: cypher")),
    (pa.array([1, 2**53 + 1], pa.int64()), ("'note'", "2^53", "neo4j.loader: cypher")),
])
def test_relationship_properties_are_double_only(standin, settings, target, column, needles):
    snap = write_parquet_snapshot(settings, 100, [people_table()], [knows_table(note=column)])
    message = assert_refused_before_create(standin, target, snap, *needles)
    assert "part-0.parquet" in message


def test_integer_relationship_properties_are_sent_as_double(standin, settings, target):
    snap = write_parquet_snapshot(settings, 100, [people_table()],
                                  [knows_table(since=pa.array([1990, -(2**53)], pa.int64()))])
    target.load(snap)
    props = standin.dbms.databases["acme-100"].graph.relationship_properties
    assert props == [{"since": 1990.0}, {"since": float(-(2**53))}]
    assert all(isinstance(p["since"], float) for p in props)


def test_string_node_properties_need_the_opt_in(standin, settings, tmp_path):
    snap = write_parquet_snapshot(settings, 100, [people_table(name=pa.array(list("abcd")))], [knows_table()])
    strict = make_settings(standin, tmp_path, arrow_string_properties=False)
    with Neo4jTarget(strict, poll_interval=0.01) as target:
        assert_refused_before_create(standin, target, snap, "'name'", "neo4j.arrow_string_properties: true",
                                     "neo4j.loader: cypher")
    with Neo4jTarget(settings, poll_interval=0.01) as target:  # arrow_string_properties: true
        target.load(snap)
    assert standin.dbms.databases["acme-100"].graph.node_properties[1] == {"name": "a"}


@pytest.mark.parametrize("labels, needle", [
    (pa.array(["Person", None, "Person", "Person"]), "null labels"),
    (pa.array(["Person", "", "Person", "Person"]), "empty labels"),
    (pa.array([["Person"], None, ["Person"], ["A"]], pa.list_(pa.string())), "null labels or empty label lists"),
    (pa.array([["Person"], [], ["Person"], ["A"]], pa.list_(pa.string())), "null labels or empty label lists"),
])
@pytest.mark.parametrize("statistics", [True, False])
def test_missing_labels_are_refused_before_create(standin, settings, target, labels, needle, statistics):
    table = people_table().set_column(1, "labels", labels)
    snap = write_parquet_snapshot(settings, 100, [table], [knows_table()], write_statistics=statistics)
    assert_refused_before_create(standin, target, snap, "'labels'", needle, "part-0.parquet")


NULLY_NODES = pa.table({"nodeId": pa.array([1, 2, 3, 4], pa.int64()), "labels": pa.array(["Person"] * 4),
                        "score": pa.array([0.5, None, 1.5, None], pa.float64()),
                        "age": pa.array([30, 31, 32, 33], pa.int64())})
NULLY_RELS = knows_table(weight=pa.array([None, 2.0], pa.float64()))


def stored_graph(graph, cypher: bool):
    """{nodeId: (labels, properties)} and [(source, type, target, properties)], whichever loader wrote it."""
    ids = {key: (props["nodeId"] if cypher else key) for key, props in graph.node_properties.items()}
    nodes = {ids[key]: (tuple(sorted(set(labels) - {q.LOAD_LABEL})),
                        {k: v for k, v in graph.node_properties[key].items() if k != "nodeId"})
             for key, labels in graph.nodes.items()}
    rels = sorted((ids[s], t, ids[d], tuple(sorted(p.items())))
                  for (s, t, d), p in zip(graph.relationships, graph.relationship_properties, strict=True))
    return nodes, rels


def test_arrow_and_cypher_loaders_store_the_same_graph_for_nulls(standin, settings, tmp_path):
    """The Cypher loader stores no property for a null. The Arrow loader refuses nulls by default (GDS would store
    NaN); with arrow_nulls: nan it stores NaN exactly where the Cypher loader stores nothing, and the rest agrees."""
    snap = write_parquet_snapshot(settings, 100, [NULLY_NODES], [NULLY_RELS])
    with Neo4jTarget(make_settings(standin, tmp_path, loader="cypher"), poll_interval=0.01) as target:
        target.load(snap)
    cypher_nodes, cypher_rels = stored_graph(standin.dbms.databases["acme-100"].graph, cypher=True)
    assert cypher_nodes[2] == (("Person",), {"age": 31}) and cypher_rels[0][3] == ()
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        target.drop_database("acme-100")
        message = assert_refused_before_create(standin, target, snap, "'score'", "2 null values",
                                               "neo4j.arrow_nulls: nan", "neo4j.loader: cypher")
        assert "row group 0" in message
    with Neo4jTarget(make_settings(standin, tmp_path, arrow_nulls="nan"), poll_interval=0.01) as target:
        target.load(snap)
    arrow_nodes, arrow_rels = stored_graph(standin.dbms.databases["acme-100"].graph, cypher=False)
    assert arrow_nodes.keys() == cypher_nodes.keys()
    for node_id, (labels, props) in arrow_nodes.items():
        nan = {k for k, v in props.items() if isinstance(v, float) and math.isnan(v)}
        assert (labels, {k: v for k, v in props.items() if k not in nan}) == cypher_nodes[node_id]
        assert nan == ({"score"} if node_id in (2, 4) else set())
    assert [r[:3] for r in arrow_rels] == [r[:3] for r in cypher_rels]
    assert math.isnan(dict(arrow_rels[0][3])["weight"]) and dict(arrow_rels[1][3]) == dict(cypher_rels[1][3])

    # and without nulls, both loaders store exactly the same graph with the default settings
    filled = write_parquet_snapshot(settings, 200, [NULLY_NODES.set_column(2, "score", pa.array([0.5, 1.0, 1.5, 2.0]))],
                                    [knows_table(weight=pa.array([1.0, 2.0]))])
    arrow, cypher = load_with_both_loaders(standin, tmp_path, settings, filled)
    assert cypher == arrow


def load_with_both_loaders(standin, tmp_path: Path, settings, snapshot) -> tuple:
    """The graph the Arrow loader stores for `snapshot` (with `settings`), and the one the Cypher loader stores."""
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        target.load(snapshot)
    arrow = stored_graph(standin.dbms.databases[snapshot.key].graph, cypher=False)
    standin.dbms.databases.pop(snapshot.key)
    with Neo4jTarget(make_settings(standin, tmp_path, loader="cypher"), poll_interval=0.01) as target:
        target.load(snapshot)
    return arrow, stored_graph(standin.dbms.databases[snapshot.key].graph, cypher=True)


def test_null_integers_are_refused_even_with_nan(standin, tmp_path):
    settings = make_settings(standin, tmp_path, arrow_nulls="nan")
    snap = write_parquet_snapshot(settings, 100, [people_table(age=pa.array([1, None, 3, 4], pa.int64()))],
                                  [knows_table()])
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        assert_refused_before_create(standin, target, snap, "'age'", "1 null values", "GDS has no null")


def test_connection_lost_mid_stream_aborts_and_the_retry_succeeds(standin, tmp_path):
    """A real lost connection (TCP reset through a proxy) after a few batches: ABORT, drop, a transient error, and
    the step's retry starts from scratch and succeeds."""
    proxy = TcpProxy(standin.arrow.port).start()
    try:
        settings = make_settings(standin, tmp_path, arrow_port=proxy.port)
        with Neo4jTarget(settings, poll_interval=0.01) as target:
            snap = _prepare_live(target, settings)
            first = len(standin.dbms.events_of("v1/CREATE_DATABASE"))
            standin.arrow.after_batch = lambda n: proxy.cut() if n == 3 and not proxy.cuts else None
            with pytest.raises(TransientTargetError, match="acme-200"):
                target.load(snap)
            assert proxy.cuts == 1
            assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-200"]
            assert_no_trace(standin, "acme-200")
            assert standin.dbms.aliases == {"acme": "acme-100"}
            report, switched = load_and_switch(target, settings, snap)  # the retry, from scratch
            assert report.nodes == PEOPLE + 2 and switched.switched
            assert len(standin.dbms.events_of("v1/CREATE_DATABASE")) == first + 2
    finally:
        proxy.stop()


def test_empty_list_properties_are_values_not_nulls(standin, settings, target):
    """Parquet statistics count empty lists as nulls; an empty list property is still a value and loads."""
    tags = pa.array([[1, 2], [], [3], []], pa.list_(pa.int64()))
    snap = write_parquet_snapshot(settings, 100, [people_table(tags=tags)], [knows_table()])
    target.load(snap)
    assert standin.dbms.databases["acme-100"].graph.node_properties[2] == {"tags": []}
    bad = write_parquet_snapshot(settings, 200, [people_table(tags=pa.array([[1], None, [2], [3]],
                                                                            pa.list_(pa.int64())))], [knows_table()])
    with pytest.raises(SnapshotError, match="'tags' .* 1 null values"):
        target.load(bad)


def test_a_database_dropped_while_it_is_listed_reads_as_unknown(standin, target, monkeypatch):
    """Another run's cleanup may drop a database between SHOW DATABASES and the look inside it: the listing (and
    `bluegreen status`, cleanup, reconcile) goes on, with that database undecided, instead of failing."""
    standin.dbms.add_database("acme-1", nodes={1: ("Person",)})
    listed = target.admin.list_databases
    monkeypatch.setattr(target.admin, "list_databases",
                        lambda customer: [*listed(customer), ("acme-2", "online")])  # gone once read
    assert {d.name: d.status for d in target.list_databases("acme")} == {"acme-1": "online", "acme-2": "unknown"}
