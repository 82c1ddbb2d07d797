"""Property-based fidelity suite: for generated snapshots (tests/fidelity_snapshots.py) each target either stores
exactly the values, read back and compared with their types per docs/types.md, and passes verification's value
check, or refuses the snapshot before creating anything, naming the file and the column.

Profiles (tests/conftest.py): "ci" by default (fixed seed, bounded), `--hypothesis-profile=long` for hours.
Shrunk failures found so far are the regular tests at the end of this file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bluegreen_dagster.bluegreen import verify
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import expected_counts
from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader
from tests.embedded_helpers import make_target, query, store_files
from tests.fidelity_snapshots import (
    GeneratedSnapshot,
    expected_nodes,
    normalised,
    same,
    snapshots,
    values_of,
)
from tests.test_neo4j_community import empty_neo4j, target  # noqa: F401 - fixtures

pytestmark = pytest.mark.fidelity


def bounded(ci_examples: int):
    """`ci_examples` under the "ci" profile; the loaded profile's own number otherwise."""
    current = settings.default
    return settings(max_examples=ci_examples if current.max_examples == 40 else current.max_examples)


def assert_refusal_names_file_and_column(gen: GeneratedSnapshot, message: str, embedded: bool = False) -> None:
    assert ".parquet" in message, message
    assert "column" in message or "label" in message, message
    reasons = [r for r in (gen.refused, gen.refused_embedded if embedded else None) if r is not None]
    if not reasons:
        pytest.fail(f"a snapshot every target stores was refused: {message}")
    assert any(r in message for r in reasons), message


def expected_relationships(gen: GeneratedSnapshot, drop_null_elements: bool = False) -> list:
    out = []
    for table in gen.relationships:
        props = [n for n in table.schema.names if n not in ("sourceNodeId", "targetNodeId", "relationshipType")]
        columns = [values_of(table.column(p).combine_chunks()) for p in props]
        for i, (s, t, ty) in enumerate(zip(table.column("sourceNodeId").to_pylist(),
                                           table.column("targetNodeId").to_pylist(),
                                           table.column("relationshipType").to_pylist(), strict=True)):
            out.append((s, t, ty, tuple((p, c[i]) for p, c in zip(props, columns, strict=True))))
    return sorted(out, key=repr)


# ---------------------------------------------------------------------------------------------------------------
# Embedded


def check_embedded(gen: GeneratedSnapshot) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        snap = gen.write(base / "data", 1000)
        target = make_target(base)
        try:
            target.load(snap)
        except SnapshotError as exc:
            assert store_files(target) == {"databases": [], "loading": []}
            assert_refusal_names_file_and_column(gen, str(exc), embedded=True)
            event("embedded: refused")
            return
        event("embedded: stored")
        assert gen.refused is None, f"stored a snapshot that must be refused ({gen.refused})"
        assert gen.refused_embedded is None, f"stored a snapshot it must refuse ({gen.refused_embedded})"
        path = str(target.database_path(snap.key))
        want = expected_nodes(gen)
        labels = {label for table in gen.nodes for row in table.column("labels").to_pylist() for label in row}
        rows = [(i, set(ls)) for t in gen.nodes for i, ls in zip(t.column("nodeId").to_pylist(),
                                                                  t.column("labels").to_pylist(), strict=True)]
        assert query(path, "MATCH (n) RETURN count(*)") == [[len(rows)]]  # each node once
        seen = {}
        for label in labels:  # each label reads every node that has it, like Neo4j
            assert query(path, f"MATCH (n:`{label}`) RETURN count(*)") == [[sum(label in ls for _, ls in rows)]]
            columns = {row[0] for row in query(path, f"CALL table_info('{label}') RETURN name")}
            for name in sorted({p for _, p in want} & columns):
                for node_id, value in query(path, f"MATCH (n:`{label}`) RETURN n.nodeId, n.`{name}`"):
                    seen[(node_id, name)] = normalised(value)
        for key, value in want.items():
            assert same(value, seen.get(key)), f"{key}: snapshot {value!r}, stored {seen.get(key)!r}"
        stored_rels = []
        for table in gen.relationships:
            props = [n for n in table.schema.names if n not in ("sourceNodeId", "targetNodeId", "relationshipType")]
            reads = ", ".join(f"r.`{p}`" for p in props)
            cypher = f"MATCH (a)-[r]->(b) RETURN a.nodeId, b.nodeId, label(r){', ' if props else ''}{reads}"
            for row in query(path, cypher):
                stored_rels.append((row[0], row[1], row[2], tuple((p, normalised(v)) for p, v in
                                                                   zip(props, row[3:], strict=True))))
        want_rels = expected_relationships(gen)
        assert len(stored_rels) == len(want_rels)
        assert all(same(list(w[3]), list(g[3])) and w[:3] == g[:3]
                   for w, g in zip(want_rels, sorted(stored_rels, key=repr), strict=True)), (want_rels, stored_rels)
        verify(target, snap.key, expected_counts(snap))  # counts and the value check agree


@bounded(40)
@given(snapshots(multi_label=True))
def test_embedded_stores_exactly_or_refuses(gen):
    check_embedded(gen)


# ---------------------------------------------------------------------------------------------------------------
# Cypher loader on a real Neo4j Community 5.26


def without_null_elements(value):
    """Neo4j lists hold no null: the Cypher loader drops null elements (docs/types.md)."""
    if isinstance(value, list):
        return [without_null_elements(v) for v in value if v is not None]
    return value


def check_cypher(gen: GeneratedSnapshot, neo4j_target) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        snap = gen.write(Path(tmp) / "data", 1000)
        neo4j_target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")
        try:
            CypherLoader.check(snap)  # what Neo4jTarget.load runs before CREATE DATABASE
        except SnapshotError as exc:
            assert_refusal_names_file_and_column(gen, str(exc))
            assert neo4j_target.admin.run("MATCH (n) RETURN count(n) AS c", database="neo4j")[0]["c"] == 0
            event("cypher: refused")
            return
        event("cypher: stored")
        assert gen.refused is None, f"accepted a snapshot that must be refused ({gen.refused})"
        CypherLoader(neo4j_target.admin, 3).write("neo4j", snap)
        rows = neo4j_target.admin.run("MATCH (n) RETURN n.nodeId AS id, properties(n) AS props", database="neo4j")
        seen = {row["id"]: row["props"] for row in rows}
        for (node_id, name), value in expected_nodes(gen).items():
            stored = normalised(seen[node_id].get(name))
            value = without_null_elements(value)
            assert same(value, stored), f"{(node_id, name)}: snapshot {value!r}, stored {stored!r}"
        rels = neo4j_target.admin.run("MATCH (a)-[r]->(b) RETURN a.nodeId AS s, b.nodeId AS t, type(r) AS ty, "
                                      "properties(r) AS props", database="neo4j")
        stored = sorted(((r["s"], r["t"], r["ty"], tuple(sorted((k, normalised(v)) for k, v in r["props"].items())))
                         for r in rels), key=repr)
        want = sorted(((s, t, ty, tuple(sorted((k, v) for k, v in props if v is not None)))
                       for s, t, ty, props in expected_relationships(gen)), key=repr)
        assert len(stored) == len(want)
        assert all(w[:3] == g[:3] and same([list(x) for x in w[3]], [list(x) for x in g[3]])
                   for w, g in zip(want, stored, strict=True)), (want, stored)


@pytest.mark.neo4j_community
@bounded(15)
@given(data=st.data())
def test_cypher_loader_stores_exactly_or_refuses(empty_neo4j, target, data):  # noqa: F811
    check_cypher(data.draw(snapshots()), target)


# ---------------------------------------------------------------------------------------------------------------
# GDS Arrow loader against the stand-in (tests/standin, which follows the GDS docs)

ARROW_NODE_FAMILIES = {"int", "float", "string", "list_int", "null"}  # strings: arrow_string_properties: true


def arrow_refuses(gen: GeneratedSnapshot) -> bool:
    """What the Arrow loader's rules (docs/types.md, last column) refuse: other types, and any null value."""
    for table in gen.nodes:
        for prop in gen.properties:
            if prop.name not in table.schema.names:
                continue
            column = table.column(prop.name).combine_chunks()
            if prop.refused or prop.family not in ARROW_NODE_FAMILIES:
                return True
            if prop.family == "null":
                continue
            if column.null_count or (prop.family == "list_int" and column.flatten().null_count):
                return True
    for table in gen.relationships:
        for name in table.schema.names:
            if name not in ("sourceNodeId", "targetNodeId", "relationshipType") and table.column(name).null_count:
                return True
    return False


def check_arrow(gen: GeneratedSnapshot, server) -> None:
    """`server`: the running stand-in."""
    from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
    from tests.helpers import standin_settings as make_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(server, Path(tmp))
        snap = gen.write(Path(settings.dataset.base_path), 1000)
        server.dbms.databases.pop(snap.key, None)
        before = len(server.dbms.events_of("v1/CREATE_DATABASE"))
        refuses = arrow_refuses(gen)
        with Neo4jTarget(settings, poll_interval=0.01) as target:
            try:
                target.load(snap)
            except SnapshotError as exc:
                assert ".parquet" in str(exc) and "column" in str(exc), str(exc)
                assert len(server.dbms.events_of("v1/CREATE_DATABASE")) == before  # refused before creating
                assert refuses, f"the Arrow loader refused what its rules accept: {exc}"
                event("arrow: refused")
                return
        event("arrow: stored")
        assert not refuses, "the Arrow loader accepted what its rules refuse"
        graph = server.dbms.databases[snap.key].graph
        for (node_id, name), value in expected_nodes(gen).items():
            if value is None:  # an all-null column: not sent
                assert name not in graph.node_properties[node_id]
                continue
            assert same(value, graph.node_properties[node_id][name]), (node_id, name)
        stored = sorted(((s, t, d, tuple(sorted(p.items())))
                         for (s, t, d), p in zip(graph.relationships, graph.relationship_properties, strict=True)),
                        key=repr)
        want = sorted(((s, ty, t, tuple(sorted((k, float(v)) for k, v in props)))  # sent as double
                       for s, t, ty, props in expected_relationships(gen)), key=repr)
        assert stored == want


@bounded(40)
@given(data=st.data())
def test_arrow_loader_stores_exactly_or_refuses(standin, data):  # noqa: F811
    check_arrow(data.draw(snapshots()), standin)
