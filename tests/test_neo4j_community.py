"""Against a REAL Neo4j Community 5.26 server (tests/neo4j_harness): connectivity, auth, errors, the Cypher
fallback loader, counts, health, and that every administration statement we send gets past Neo4j's parser
(Community then refuses it as an Enterprise feature, which is a different code than a syntax error)."""

from __future__ import annotations

import logging
import math
import socket
from pathlib import Path

import neo4j
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.bluegreen import verify
from bluegreen_dagster.config import Settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError, TransientTargetError
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.admin import Admin
from bluegreen_dagster.targets.neo4j.bolt import UNSUPPORTED_ADMIN
from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget

pytestmark = pytest.mark.neo4j_community

ENTERPRISE_MESSAGE = "this needs Neo4j Enterprise; use target: embedded to try it without one"


def make_settings(uri: str, password: str, **neo4j_overrides) -> Settings:
    host, port = uri.removeprefix("bolt://").rsplit(":", 1)
    return Settings.model_validate({
        "target": "neo4j",
        "neo4j": {"host": host, "bolt_port": int(port), "password": password, "loader": "cypher",
                  "batch_size": 200, "online_timeout": 5, **neo4j_overrides},
    })


@pytest.fixture
def target(neo4j_community):
    uri, _user, password = neo4j_community
    t = Neo4jTarget(make_settings(uri, password), admin=None)
    yield t
    t.close()


@pytest.fixture
def empty_neo4j(target):
    """Community's `neo4j` database, emptied before and after the test (indexes included)."""

    def wipe() -> None:
        target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")
        for row in target.admin.run("SHOW INDEXES YIELD name, type WHERE type = 'RANGE' RETURN name",
                                    database="neo4j"):
            target.admin.run(f"DROP INDEX `{row['name']}` IF EXISTS", database="neo4j")

    wipe()
    yield target
    wipe()


# --- connectivity and errors --------------------------------------------------------------------------------------


def test_health_measures_heap_and_reports_pagecache_unknown(target):
    health = target.health()
    assert health.measurements["edition"] == "community"
    assert str(health.measurements["version"]).startswith("5.26")
    heap = health.measurements["heap_percent"]
    assert isinstance(heap, float) and 0 < heap < 100
    assert health.measurements["pagecache_percent"] == "unknown"  # Enterprise metrics only: not a problem
    assert health.measurements["databases"] == 1  # `neo4j`; `system` is not a standard database
    assert health.ok, health.problems


def test_health_problems_name_measurement_and_threshold(neo4j_community):
    uri, _user, password = neo4j_community
    settings = make_settings(uri, password)
    settings.orchestrator.heap_threshold_percent = 0.001
    settings.orchestrator.max_databases = 1
    with Neo4jTarget(settings) as t:
        health = t.health()
    assert not health.ok
    heap_problem = next(p for p in health.problems if p.startswith("heap"))
    assert "heap_threshold_percent 0.001%" in heap_problem and f"{health.measurements['heap_percent']:.1f}" in heap_problem
    db_problem = next(p for p in health.problems if "databases" in p)
    assert "1 standard databases" in db_problem and "max_databases is 1" in db_problem


def test_wrong_password_is_a_clear_permanent_error_without_the_password(neo4j_community):
    uri, _user, _password = neo4j_community
    wrong = "Wr0ng-Secret-Value-42"
    with Neo4jTarget(make_settings(uri, wrong)) as t, pytest.raises(PermanentTargetError) as info:
        t.health()
    message = str(info.value)
    assert "authentication failed for user 'neo4j'" in message
    assert "check neo4j.user / NEO4J_PASSWORD" in message
    assert wrong not in message and wrong not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_server_down_is_transient(neo4j_community):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = make_settings(f"bolt://127.0.0.1:{closed_port}", "whatever-password")
    with Neo4jTarget(settings, admin=Admin(settings.neo4j, attempts=2, backoff=0.05)) as t:
        with pytest.raises(TransientTargetError) as info:
            t.health()
    assert str(info.value).startswith(f"cannot reach Neo4j at bolt://127.0.0.1:{closed_port}: ")
    assert "whatever-password" not in str(info.value)


# --- every statement is accepted by the parser ------------------------------------------------------------------


def _error_of(driver: neo4j.Driver, query: str, params: dict | None = None,
              database: str | None = "system") -> neo4j.exceptions.Neo4jError | None:
    try:
        with driver.session(database=database) as session:
            session.run(query, params).consume()
    except neo4j.exceptions.Neo4jError as exc:
        return exc
    return None


@pytest.mark.parametrize("name", sorted(queries.ADMIN_QUERIES))
def test_admin_statement_parses_and_is_refused_as_enterprise_only(neo4j_community, name):
    uri, user, password = neo4j_community
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as driver:
        error = _error_of(driver, queries.ADMIN_QUERIES[name],
                          {"name": "acme-1767741527", "alias": "acme", "database": "acme-1767741527",
                           "role": "acme-reader", "primaries": 1, "secondaries": 0})
    assert error is not None
    assert error.code == UNSUPPORTED_ADMIN, f"{name}: {error.code} {error.message}"


def test_test_only_drop_alias_parses(neo4j_community):
    """The Enterprise opt-in test's teardown statement (not sent by production code)."""
    uri, user, password = neo4j_community
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as driver:
        error = _error_of(driver, "DROP ALIAS $alias IF EXISTS FOR DATABASE", {"alias": "acme"})
    assert error is not None and error.code == UNSUPPORTED_ADMIN


def test_alias_listing_parses_and_is_refused_as_enterprise_only(neo4j_community):
    uri, user, password = neo4j_community
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as driver:
        error = _error_of(driver, queries.ALIAS_TARGET, {"alias": "acme"})
    # Community 5.26 answers SHOW ALIASES with this code (not SyntaxError) and "Unsupported administration command".
    assert error is not None and error.code == "Neo.ClientError.Statement.NotSystemDatabaseError"
    assert "Unsupported administration command" in error.message


@pytest.mark.parametrize("name, database, params", [
    ("COMPONENTS", "system", {}),
    ("LIST_DATABASES", "system", {"prefix": "acme-"}),
    ("DATABASE_STATUS", "system", {"name": "neo4j"}),
    ("DATABASE_ALLOCATION", "system", {"name": "neo4j"}),
    ("COUNT_DATABASES", "system", {}),
    ("HEAP", "system", {}),
    ("PAGECACHE", None, {}),
    ("COUNT_NODES", "neo4j", {}),
    ("COUNT_BY_LABEL", "neo4j", {}),
    ("COUNT_BY_TYPE", "neo4j", {}),
    ("COUNT_LOAD_MARKERS", "neo4j", {}),
    ("USER_ROLES", "system", {"user": "neo4j"}),
    ("SHOW_INDEXES", "neo4j", {}),
    ("AWAIT_INDEXES", "neo4j", {"seconds": 5}),
])
def test_other_statements_run_on_community(neo4j_community, name, database, params):
    uri, user, password = neo4j_community
    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as driver:
        error = _error_of(driver, getattr(queries, name), params, database=database)
    assert error is None, f"{name}: {error.code} {error.message}"


def test_point_alias_says_enterprise_is_needed(target):
    with pytest.raises(PermanentTargetError) as info:
        target.point_alias("acme", "acme-1767741527")
    assert ENTERPRISE_MESSAGE in str(info.value)


def test_alias_target_says_enterprise_is_needed(target):
    with pytest.raises(PermanentTargetError) as info:
        target.alias_target("acme")
    assert ENTERPRISE_MESSAGE in str(info.value)


def test_load_with_cypher_loader_says_enterprise_is_needed(target, tmp_path):
    write_snapshot(tmp_path, "acme", 1767741527, people=20)
    with pytest.raises(PermanentTargetError) as info:
        target.load(snapshot_at(tmp_path, "acme", 1767741527))
    assert ENTERPRISE_MESSAGE in str(info.value)
    assert target.admin.database_status("acme-1767741527") is None  # nothing left behind


def test_drop_database_says_enterprise_is_needed(target):
    with pytest.raises(PermanentTargetError) as info:
        target.drop_database("acme-1767741527")
    assert ENTERPRISE_MESSAGE in str(info.value)


def test_list_databases_works_on_community(target):
    assert target.list_databases("acme") == []


def test_names_are_validated_before_any_query(target):
    for bad in ("neo4j", "acme-1; DROP", "system-1", "Acme-1"):
        with pytest.raises(PermanentTargetError, match="refusing"):
            target.drop_database(bad)
    with pytest.raises(PermanentTargetError, match="refusing"):
        target.point_alias("a`b", "acme-1767741527")


# --- the Cypher loader writing a real snapshot ------------------------------------------------------------------


def test_cypher_loader_writes_demo_snapshot_and_counts_match(empty_neo4j, tmp_path, caplog):
    target = empty_neo4j
    write_snapshot(tmp_path, "acme", 1767741527, people=500)
    snapshot = snapshot_at(tmp_path, "acme", 1767741527)
    with caplog.at_level(logging.INFO):
        result = CypherLoader(target.admin, batch_size=200).write("neo4j", snapshot)

    expected = expected_counts(snapshot)
    assert (result.nodes, result.relationships) == (expected.nodes, expected.relationships)
    assert result.bytes_read > 0 and set(result.phases) == {"indexes", "nodes", "relationships", "prepare"}
    counts = verify(target, "neo4j", expected)  # Neo4jTarget.count through the blue/green rule
    assert counts == expected
    assert queries.LOAD_LABEL not in counts.labels  # the marker node is gone

    person = target.admin.run("MATCH (p:Person {nodeId: 1}) RETURN p.name AS name, p.age AS age, p.score AS score",
                              database="neo4j")[0]
    assert isinstance(person["name"], str) and isinstance(person["age"], int) and isinstance(person["score"], float)
    knows = target.admin.run("MATCH ()-[r:KNOWS]->() RETURN r.since AS since, r.weight AS weight LIMIT 1",
                             database="neo4j")[0]
    assert isinstance(knows["since"], int) and isinstance(knows["weight"], float)
    indexes = target.admin.run("SHOW INDEXES YIELD name, labelsOrTypes, properties WHERE properties = ['nodeId'] "
                               "RETURN name, labelsOrTypes", database="neo4j")
    assert sorted(r["labelsOrTypes"][0] for r in indexes) == sorted(expected.labels)  # no helper index left
    # Every relationship joins the nodes its row names (endpoints are found by internal id, not by nodeId).
    rows = pq.read_table(snapshot.relationship_files[0]).slice(0, 50).to_pylist()
    for row in rows:
        found = target.admin.run("MATCH (a {nodeId: $s})-[r:KNOWS {since: $since}]->(b {nodeId: $t}) "
                                 "RETURN count(r) AS c", {"s": row["sourceNodeId"], "t": row["targetNodeId"],
                                                          "since": row["since"]}, database="neo4j")[0]["c"]
        assert found >= 1, row
    # id() is deprecated in Cypher 5: the loader asks the server not to send that notice for every batch.
    assert not [r for r in caplog.records if "deprecated" in r.getMessage().lower()]


def test_cypher_loader_omits_nulls_keeps_nan_and_label_sets(empty_neo4j, tmp_path):
    snapshot = snapshot_at(tmp_path, "acme", 1767741530)
    (snapshot.path / "nodes").mkdir(parents=True)
    (snapshot.path / "relationships").mkdir(parents=True)
    pq.write_table(pa.table({
        "nodeId": pa.array([1, 2, 3, 4, 5], pa.int64()),
        "labels": pa.array([["Person"], ["Person", "Employee"], [], None, ["Person", "Person"]],
                           pa.list_(pa.string())),
        "score": pa.array([1.5, None, float("nan"), 2.0, None], pa.float64()),
        "tags": pa.array([["a", None], None, [], ["b"], ["c"]], pa.list_(pa.string())),
        "active": pa.array([True, False, None, True, True]),
    }), snapshot.path / "nodes" / "n.parquet")
    pq.write_table(pa.table({"sourceNodeId": pa.array([1, 2, 3], pa.int64()),
                             "targetNodeId": pa.array([2, 3, 1], pa.int64()),
                             "relationshipType": pa.array(["KNOWS", "LIKES", "KNOWS"]).dictionary_encode(),
                             "weight": pa.array([None, 0.5, float("nan")], pa.float64())}),
                   snapshot.path / "relationships" / "r.parquet")
    result = CypherLoader(empty_neo4j.admin, batch_size=2).write("neo4j", snapshot)
    assert (result.nodes, result.relationships) == (5, 3)

    nodes = {r["id"]: r for r in empty_neo4j.admin.run(
        "MATCH (n) RETURN n.nodeId AS id, labels(n) AS labels, properties(n) AS props", database="neo4j")}
    assert {k: sorted(v["labels"]) for k, v in nodes.items()} == {
        1: ["Person"], 2: ["Employee", "Person"], 3: [], 4: [], 5: ["Person"]}
    assert nodes[1]["props"] == {"nodeId": 1, "score": 1.5, "tags": ["a"], "active": True}  # null list entry dropped
    assert "score" not in nodes[2]["props"] and "tags" not in nodes[2]["props"]  # null: no property at all
    assert math.isnan(nodes[3]["props"]["score"]) and nodes[3]["props"]["tags"] == []  # NaN stays NaN
    assert "active" not in nodes[3]["props"]
    rels = {(r["s"], r["t"]): r for r in empty_neo4j.admin.run(
        "MATCH (a)-[r]->(b) RETURN a.nodeId AS s, b.nodeId AS t, type(r) AS type, properties(r) AS props",
        database="neo4j")}
    assert rels[(1, 2)]["type"] == "KNOWS" and rels[(1, 2)]["props"] == {}
    assert rels[(2, 3)]["type"] == "LIKES" and rels[(2, 3)]["props"] == {"weight": 0.5}
    assert math.isnan(rels[(3, 1)]["props"]["weight"])


def _write_nodes(folder: Path, labels: list, rels: dict | None = None) -> None:
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir(parents=True)
    pq.write_table(pa.table({"nodeId": pa.array(range(1, len(labels) + 1), pa.int64()),
                             "labels": pa.array(labels)}), folder / "nodes" / "n.parquet")
    rels = rels or {"sourceNodeId": [1], "targetNodeId": [1], "relationshipType": ["SELF"]}
    pq.write_table(pa.table(rels), folder / "relationships" / "r.parquet")
    (folder / "_SUCCESS").touch()


def test_cypher_loader_refuses_unsafe_labels_before_writing(empty_neo4j, tmp_path):
    snapshot = snapshot_at(tmp_path, "acme", 1767741528)
    _write_nodes(snapshot.path, ["Person", "X`) DETACH DELETE (n"])
    with pytest.raises(SnapshotError, match="is not allowed"):
        CypherLoader(empty_neo4j.admin, batch_size=10).write("neo4j", snapshot)
    assert empty_neo4j.count("neo4j").nodes == 0


def test_cypher_loader_reports_relationships_to_missing_nodes(empty_neo4j, tmp_path):
    snapshot = snapshot_at(tmp_path, "acme", 1767741529)
    _write_nodes(snapshot.path, ["Person", "Person"],
                 {"sourceNodeId": [1, 2], "targetNodeId": [2, 99], "relationshipType": ["KNOWS", "KNOWS"]})
    with pytest.raises(SnapshotError, match="1 of 2 relationships name a sourceNodeId/targetNodeId"):
        CypherLoader(empty_neo4j.admin, batch_size=10).write("neo4j", snapshot)


def test_cypher_loader_refuses_duplicate_node_ids_and_leaves_the_marker(empty_neo4j, tmp_path):
    """A failed load keeps the marker node, so Neo4jTarget.load never reuses that database as a finished one."""
    snapshot = snapshot_at(tmp_path, "acme", 1767741531)
    _write_nodes(snapshot.path, ["Person", "Person", "Person"])
    pq.write_table(pa.table({"nodeId": pa.array([2], pa.int64()), "labels": pa.array(["Company"])}),
                   snapshot.path / "nodes" / "m.parquet")
    with pytest.raises(SnapshotError, match=r"1 node ids appear more than once .*\(e\.g\. 2\)"):
        CypherLoader(empty_neo4j.admin, batch_size=10).write("neo4j", snapshot)
    assert queries.LOAD_LABEL in empty_neo4j.count("neo4j").labels


def test_cypher_loader_refuses_unsafe_property_names_before_writing(empty_neo4j, tmp_path):
    snapshot = snapshot_at(tmp_path, "acme", 1767741532)
    _write_nodes(snapshot.path, ["Person"])
    pq.write_table(pa.table({"nodeId": pa.array([7], pa.int64()), "labels": pa.array(["Person"]),
                             "x`}) DETACH DELETE (n": pa.array([1])}), snapshot.path / "nodes" / "m.parquet")
    with pytest.raises(SnapshotError, match="m.parquet: property column .* is not allowed"):
        CypherLoader(empty_neo4j.admin, batch_size=10).write("neo4j", snapshot)
    assert empty_neo4j.count("neo4j").nodes == 0  # checked before anything is written
