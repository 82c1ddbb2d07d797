"""One rule for every target (docs/types.md): each value stored as the snapshot has it, read back with its type, or
the snapshot refused before any database exists, naming the file and the column. Embedded target here; the Neo4j
paths in tests/test_fidelity_neo4j.py."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.schema_rules import check_snapshot
from tests.embedded_helpers import custom, knows, make_target, people, query, store_files


def load(tmp_path, nodes, rels=None):
    snap = custom(tmp_path, nodes, rels if rels is not None else {"k": knows([1], [2])})
    target = make_target(tmp_path)
    target.load(snap)
    return snap, str(target.database_path(snap.key))


def refused(tmp_path, nodes, rels=None) -> str:
    snap = custom(tmp_path, nodes, rels if rels is not None else {"k": knows([1], [2])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError) as caught:
        target.load(snap)
    assert store_files(target) == {"databases": [], "loading": []}  # nothing was created
    return str(caught.value)


def test_duplicate_column_name_is_refused_naming_file_and_column(tmp_path):
    table = pa.table([pa.array([1, 2], pa.int64()), pa.array([["Person"]] * 2), pa.array([30, 40]),
                      pa.array([31, 41])], names=["nodeId", "labels", "age", "age"])
    message = refused(tmp_path, {"people": table})
    assert "people.parquet" in message and "'age' appears 2 times" in message


def test_node_id_twice_in_a_file_is_refused(tmp_path):
    table = pa.table([pa.array([1, 2], pa.int64()), pa.array([1, 2], pa.int64()), pa.array([["Person"]] * 2)],
                     names=["nodeId", "nodeId", "labels"])
    message = refused(tmp_path, {"people": table})
    assert "people.parquet" in message and "'nodeId' appears 2 times" in message


@pytest.mark.parametrize("labels", [
    pa.array([[["Person"]], [["Person"]]], pa.list_(pa.list_(pa.string()))),
    pa.array([[{"a": "Person"}], [{"a": "Person"}]]),
])
def test_labels_as_list_of_lists_or_structs_is_refused(tmp_path, labels):
    table = pa.table({"nodeId": pa.array([1, 2], pa.int64()), "labels": labels})
    message = refused(tmp_path, {"people": table})
    assert "people.parquet" in message and "'labels'" in message and "list<string>" in message


def test_names_over_200_characters_say_the_limit(tmp_path):
    message = refused(tmp_path, {"people": people([1, 2], **{"a" * 201: [1, 2]})})
    assert "people.parquet" in message and "201 characters; the limit is 200" in message
    snap, path = load(tmp_path / "ok", {"people": people([1, 2], **{"b" * 200: [1, 2]})})
    assert query(path, f"MATCH (p:Person) RETURN p.{'b' * 200} ORDER BY p.nodeId") == [[1], [2]]


def test_uint64_above_int64_max_is_stored_on_embedded_and_refused_on_neo4j(tmp_path):
    _, path = load(tmp_path, {"people": people([1, 2], big=pa.array([1, 2**63], pa.uint64()))})
    assert query(path, "MATCH (p:Person) RETURN p.big ORDER BY p.nodeId") == [[1], [2**63]]
    for target in ("cypher", "arrow"):
        with pytest.raises(SnapshotError, match="'big' holds 9223372036854775808"):
            check_snapshot(sorted((tmp_path / "data").rglob("nodes/*.parquet")), [], target)


def test_uint64_node_id_above_int64_max_is_refused(tmp_path):
    table = pa.table({"nodeId": pa.array([1, 2**63], pa.uint64()), "labels": pa.array(["Person"] * 2)})
    message = refused(tmp_path, {"people": table})
    assert "people.parquet" in message and "'nodeId'" in message and "every target stores an id" in message


def test_uint64_within_int64_is_stored(tmp_path):
    _, path = load(tmp_path, {"people": people([1, 2], big=pa.array([0, 2**63 - 1], pa.uint64()))})
    assert query(path, "MATCH (p:Person) RETURN p.big ORDER BY p.nodeId") == [[0], [2**63 - 1]]


def test_nanoseconds_with_a_sub_microsecond_part_are_refused_on_embedded(tmp_path):
    table = people([1, 2], at=pa.array([1_000_000_000_000_000_000, 1_000_000_000_000_000_001], pa.timestamp("ns")))
    message = refused(tmp_path, {"people": table})
    assert "people.parquet" in message and "'at'" in message and "sub-microsecond" in message


def test_nanoseconds_on_whole_microseconds_are_stored(tmp_path):
    table = people([1, 2], at=pa.array([1_000_000_000_000_001_000, None], pa.timestamp("ns")))
    _, path = load(tmp_path, {"people": table})
    assert query(path, "MATCH (p:Person) RETURN p.at ORDER BY p.nodeId") == [
        [dt.datetime(2001, 9, 9, 1, 46, 40, 1)], [None]]


def test_relationship_properties_named_from_and_to_are_stored(tmp_path):
    rels = {"k": knows([1, 2], [2, 1], **{"from": pa.array([5, None]), "to": pa.array(["x", "y"]),
                                          "To_Do": pa.array([True, False])})}
    _, path = load(tmp_path, {"people": people([1, 2])}, rels)
    assert query(path, "MATCH (a)-[k:KNOWS]->(b) RETURN a.nodeId, b.nodeId, k.`from`, k.`to`, k.To_Do "
                       "ORDER BY a.nodeId") == [[1, 2, 5, "x", True], [2, 1, None, "y", False]]


def test_an_all_null_column_is_no_value(tmp_path):
    _, path = load(tmp_path, {"people": people([1, 2], nothing=pa.nulls(2))})
    assert query(path, "MATCH (p:Person) RETURN p.nothing") == [[None], [None]]


def test_timestamp_units_and_list_widths_may_differ_between_files(tmp_path):
    nodes = {
        "a": people([1], at=pa.array([1_700_000_000_123], pa.timestamp("ms")),
                    xs=pa.array([[1, 2]], pa.list_(pa.int32()))),
        "b": people([2], at=pa.array([1_700_000_000_123_456], pa.timestamp("us")),
                    xs=pa.array([[2**40]], pa.list_(pa.int64()))),
    }
    _, path = load(tmp_path, nodes)
    assert query(path, "MATCH (p:Person) RETURN p.at, p.xs ORDER BY p.nodeId") == [
        [dt.datetime(2023, 11, 14, 22, 13, 20, 123000), [1, 2]],
        [dt.datetime(2023, 11, 14, 22, 13, 20, 123456), [2**40]],
    ]


def test_an_integer_in_one_file_and_a_float_in_another_is_refused(tmp_path):
    nodes = {"a": people([1], score=pa.array([1], pa.int64())), "b": people([2], score=pa.array([1.5], pa.float32()))}
    message = refused(tmp_path, nodes)
    assert "b.parquet" in message and "'score'" in message and "a.parquet" in message and "one type" in message


def test_refused_types_name_the_file_the_column_and_what_to_write(tmp_path):
    message = refused(tmp_path, {"people": people([1], blob=pa.array([b"x"], pa.binary()))})
    assert "people.parquet" in message and "'blob'" in message and "cast it in the producer" in message


@pytest.mark.parametrize("target", ["cypher", "arrow"])
def test_one_kind_per_property_is_the_rule_on_neo4j_too(tmp_path, target):
    snap = custom(tmp_path, {"a": people([1], score=pa.array([1], pa.int64())),
                             "b": people([2], score=pa.array([1.5], pa.float32()))}, {"k": knows([1], [2])})
    with pytest.raises(SnapshotError, match=r"b\.parquet: node property column 'score' has type float"):
        check_snapshot(snap.node_files, snap.relationship_files, target)


def test_multi_label_nodes_are_refused_on_embedded_and_accepted_on_neo4j(tmp_path):
    nodes = {"people": people([1, 2], [["Person", "Emp"], ["Person"]])}
    message = refused(tmp_path, nodes)
    assert "people.parquet" in message and "'labels'" in message and "nodeId 1: ['Person', 'Emp']" in message
    assert "write one label per node" in message
    snap = custom(tmp_path / "neo4j", nodes, {"k": knows([1], [2])})
    for target in ("cypher", "arrow"):  # Neo4j gives a node every label
        check_snapshot(snap.node_files, snap.relationship_files, target)


def test_labels_as_one_string_per_row_are_one_label(tmp_path):
    _, path = load(tmp_path, {"p": pa.table({"nodeId": pa.array([1, 2], pa.int64()),
                                             "labels": pa.array(["Person", "Person"])})})
    assert query(path, "MATCH (p:Person) RETURN p.nodeId ORDER BY p.nodeId") == [[1], [2]]
