"""Do the two Neo4j loaders store the same graph for a snapshot with nulls? The Cypher loader writes into a REAL
Neo4j Community 5.26 (tests/neo4j_harness); the Arrow loader, which needs GDS Enterprise, writes into the stand-in's
GDS Arrow server, which records what the GDS docs say is stored (a null float as NaN). Compared property by
property, keyed by nodeId."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.config import Settings
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.standin.server import start_standin

pytestmark = pytest.mark.neo4j_community

NODES = pa.table({"nodeId": pa.array([1, 2, 3, 4], pa.int64()), "labels": pa.array(["Person", "Person", "City", "City"]),
                  "score": pa.array([0.5, None, 1.5, None], pa.float64()), "age": pa.array([30, 31, 32, 33], pa.int64())})
RELS = pa.table({"sourceNodeId": pa.array([1, 2], pa.int64()), "targetNodeId": pa.array([3, 4], pa.int64()),
                 "relationshipType": pa.array(["LIVES_IN", "LIVES_IN"]), "weight": pa.array([None, 2.0])})


def write(base: Path, ts: int, nodes: pa.Table, rels: pa.Table):
    folder = base / "acme" / str(ts)
    for sub, table in (("nodes", nodes), ("relationships", rels)):
        (folder / sub).mkdir(parents=True)
        pq.write_table(table, folder / sub / "part-0.parquet")
    return snapshot_at(base, "acme", ts)


def settings_for(host: str, bolt: int, arrow: int, password: str, **neo4j) -> Settings:
    return Settings.model_validate({"target": "neo4j", "neo4j": {
        "host": host, "bolt_port": bolt, "arrow_port": arrow, "password": password, "batch_size": 2,
        "online_timeout": 5, **neo4j}})


@pytest.fixture
def community(neo4j_community):
    uri, _user, password = neo4j_community
    host, port = uri.removeprefix("bolt://").rsplit(":", 1)
    target = Neo4jTarget(settings_for(host, int(port), 1, password, loader="cypher"), admin=None)
    wipe = lambda: target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")  # noqa: E731
    wipe()
    yield target
    wipe()
    target.close()


def cypher_graph(target, snapshot):
    """Write with the Cypher loader into Community's `neo4j` database and read back what Neo4j stored."""
    target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")
    CypherLoader(target.admin, batch_size=2).write("neo4j", snapshot)
    nodes = {r["id"]: (tuple(sorted(r["labels"])), {k: v for k, v in r["props"].items() if k != "nodeId"})
             for r in target.admin.run("MATCH (n) RETURN n.nodeId AS id, labels(n) AS labels, properties(n) AS props",
                                       database="neo4j")}
    rels = sorted((r["s"], r["t"], r["d"], tuple(sorted(r["props"].items()))) for r in target.admin.run(
        "MATCH (a)-[r]->(b) RETURN a.nodeId AS s, type(r) AS t, b.nodeId AS d, properties(r) AS props",
        database="neo4j"))
    return nodes, rels


def arrow_graph(standin, snapshot, **neo4j):
    settings = settings_for("127.0.0.1", standin.bolt_port, standin.arrow_port, standin.dbms.password, **neo4j)
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        target.load(snapshot)
    graph = standin.dbms.databases.pop(snapshot.key).graph
    nodes = {key: (tuple(sorted(labels)), dict(graph.node_properties[key])) for key, labels in graph.nodes.items()}
    rels = sorted((s, t, d, tuple(sorted(p.items())))
                  for (s, t, d), p in zip(graph.relationships, graph.relationship_properties, strict=True))
    return nodes, rels


def without_nan(props: dict) -> tuple[dict, set]:
    nan = {k for k, v in props.items() if isinstance(v, float) and math.isnan(v)}
    return {k: v for k, v in props.items() if k not in nan}, nan


def test_arrow_and_cypher_loaders_agree_on_a_snapshot_with_nulls(community, tmp_path):
    nully = write(tmp_path, 100, NODES, RELS)
    cypher_nodes, cypher_rels = cypher_graph(community, nully)
    assert cypher_nodes[2] == (("Person",), {"age": 31})  # Neo4j stores no property for a null
    assert dict(cypher_rels[0][3]) == {}

    with start_standin(password="cmp-pw-123") as standin:
        with pytest.raises(SnapshotError, match="'score'.*2 null values.*neo4j.arrow_nulls: nan"):
            arrow_graph(standin, nully)  # default: refused before anything is created
        assert not standin.dbms.events_of("v1/CREATE_DATABASE")

        arrow_nodes, arrow_rels = arrow_graph(standin, nully, arrow_nulls="nan")
        assert arrow_nodes.keys() == cypher_nodes.keys()
        for node_id, (labels, props) in arrow_nodes.items():
            kept, nan = without_nan(props)
            assert (labels, kept) == cypher_nodes[node_id]  # the same graph, except ...
            assert nan == ({"score"} if node_id in (2, 4) else set())  # ... NaN exactly where Neo4j has nothing
        assert [r[:3] for r in arrow_rels] == [r[:3] for r in cypher_rels]
        kept, nan = without_nan(dict(arrow_rels[0][3]))
        assert (kept, nan) == ({}, {"weight"}) and dict(arrow_rels[1][3]) == dict(cypher_rels[1][3])

        filled = write(tmp_path, 200, NODES.set_column(2, "score", pa.array([0.5, 1.0, 1.5, 2.0])),
                       RELS.set_column(3, "weight", pa.array([1.0, 2.0])))
        assert arrow_graph(standin, filled) == cypher_graph(community, filled)  # no nulls: identical
