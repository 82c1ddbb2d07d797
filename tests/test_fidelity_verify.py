"""Verification's value check (value_stats.py): a database with the right counts but a value stored wrong, lost or
shifted fails `verify`, so the alias does not move to it."""

from __future__ import annotations

import datetime as dt

import ladybug as lb
import pyarrow as pa
import pytest

from bluegreen_dagster.bluegreen import VerificationFailed, switch_if_newest, verify
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import expected_counts
from tests.embedded_helpers import custom, demo, knows, make_target, people


def change(target, database: str, statement: str) -> None:
    db = lb.Database(str(target.database_path(database)))
    try:
        conn = lb.Connection(db)
        conn.execute(statement)
        conn.close()
    finally:
        db.close()


def test_a_loaded_demo_passes_the_value_check(tmp_path):
    snap = demo(tmp_path)
    target = make_target(tmp_path)
    target.load(snap)
    expected = expected_counts(snap)
    assert ("label", "Person", "age") in expected.values and ("type", "KNOWS", "since") in expected.values
    verify(target, snap.key, expected)


@pytest.mark.parametrize("statement, difference", [
    ("MATCH (p:Person) WHERE p.nodeId = 1 SET p.age = NULL",
     "label Person property age: expected 300 values, found 299"),
    ("MATCH (p:Person) WHERE p.nodeId = 1 SET p.age = 1000", "label Person property age: expected values from"),
    ("MATCH ()-[k:KNOWS]->() SET k.since = NULL", "type KNOWS property since: expected"),
])
def test_a_value_stored_wrong_blocks_the_switch(tmp_path, statement, difference):
    snap = demo(tmp_path)
    target = make_target(tmp_path)
    target.load(snap)
    change(target, snap.key, statement)
    assert target.count(snap.key) == expected_counts(snap)  # the counts alone would pass
    with pytest.raises(VerificationFailed, match=difference):
        switch_if_newest(target, snap.key, expected_counts(snap))
    assert target.alias_target("acme") is None


def test_a_timestamp_one_hour_off_fails_verification(tmp_path):
    instants = [dt.datetime(2024, 3, 10, 6, 30, tzinfo=dt.UTC), dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC)]
    at = pa.array(instants, pa.timestamp("us", tz="America/New_York"))
    snap = custom(tmp_path, {"p": people([1, 2], at=at)}, {"k": knows([1], [2])})
    target = make_target(tmp_path)
    target.load(snap)
    verify(target, snap.key, expected_counts(snap))
    change(target, snap.key,
           "MATCH (p:Person) WHERE p.nodeId = 2 SET p.at = CAST(p.at + INTERVAL('1 hour'), 'TIMESTAMP_TZ')")
    with pytest.raises(VerificationFailed, match="label Person property at: expected values from"):
        verify(target, snap.key, expected_counts(snap))


def test_multi_label_nodes_are_expected_under_each_label_and_refused_on_embedded(tmp_path):
    snap = custom(tmp_path, {"p": people([1, 2], [["Person", "Emp"], ["Person"]], age=pa.array([30, None]))},
                  {"k": knows([1], [2])})
    expected = expected_counts(snap)  # what Neo4j must hold: the node counts under both labels
    assert expected.labels == {"Person": 2, "Emp": 1}
    assert expected.values[("label", "Emp", "age")].count == 1
    assert expected.values[("label", "Person", "age")].count == 1
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match="several labels"):  # embedded keeps one label per node
        target.load(snap)
