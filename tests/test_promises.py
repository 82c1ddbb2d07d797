"""Promises that once had no test: each test here was checked by planting the bug it names in the code and seeing
it fail (docs/mutation.md lists the bugs). The customer lock has its own file (tests/test_customer_lock.py), the
GDS Arrow password its own fault test (tests/faults/test_arrow_secret_faults.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster import fingerprints, plausibility
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.plausibility import Implausible
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.snapshots import expected_counts, scan, snapshot_at
from tests.embedded_helpers import custom, knows, make_target, people, query

# --------------------------------------------------------------------------------------------------------------
# Verification compares every label's count, not only the totals


def test_same_totals_with_other_labels_fail_verification_and_keep_the_alias(tmp_path: Path) -> None:
    """A database whose node and relationship totals and types match the snapshot, but whose nodes carry other
    labels, is not the snapshot: readers asking for `:Company` would find nothing."""
    target = make_target(tmp_path)
    loaded = custom(tmp_path, {"n": people([1, 2, 3, 4], [["Person"]] * 4)}, {"r": knows([1, 2], [3, 4])}, ts=2000)
    promised = custom(tmp_path, {"n": people([1, 2, 3, 4], [["Person"]] * 2 + [["Company"]] * 2)},
                      {"r": knows([1, 2], [3, 4])}, ts=3000)
    target.load(loaded)
    expected = expected_counts(promised)
    actual = target.count(loaded.key)
    assert (actual.nodes, actual.relationships, actual.types) == (expected.nodes, expected.relationships,
                                                                  expected.types)
    with pytest.raises(rules.VerificationFailed) as failed:
        rules.verify(target, loaded.key, expected)
    assert "label Company: expected 2, found 0" in str(failed.value)
    assert "label Person: expected 2, found 4" in str(failed.value)
    with pytest.raises(rules.VerificationFailed):
        rules.switch_if_newest(target, loaded.key, expected)
    assert target.alias_target("acme") is None


def test_other_relationship_types_with_the_same_total_fail_verification() -> None:
    expected = GraphCounts(4, 2, {"Person": 4}, {"KNOWS": 1, "LIKES": 1})
    assert expected.differences(GraphCounts(4, 2, {"Person": 4}, {"KNOWS": 2})) == [
        "type KNOWS: expected 1, found 2", "type LIKES: expected 1, found 0"]


# --------------------------------------------------------------------------------------------------------------
# The shrink gate at its boundary


def counts(nodes: int, relationships: int) -> GraphCounts:
    return GraphCounts(nodes, relationships, {"Person": nodes}, {"KNOWS": relationships})


def gate(new: GraphCounts, live: GraphCounts, limit: float) -> None:
    plausibility.check(new, live, max_shrink_percent=limit, new_name="acme-2", live_name="acme-1")


@pytest.mark.parametrize("what", ["nodes", "relationships"])
def test_a_shrink_of_exactly_max_shrink_percent_passes_and_one_more_row_is_refused(what: str) -> None:
    live = counts(1000, 1000)
    exactly = counts(500, 1000) if what == "nodes" else counts(1000, 500)
    past = counts(499, 1000) if what == "nodes" else counts(1000, 499)
    gate(exactly, live, 50)  # -50.0 %: allowed
    with pytest.raises(Implausible, match=f"{what} 1,000 -> 499 "):
        gate(past, live, 50)  # -50.1 %: refused


def test_shrink_limits_at_zero_and_fractions() -> None:
    gate(counts(1000, 1000), counts(1000, 1000), 0)  # no shrink at all passes even a zero limit
    with pytest.raises(Implausible):
        gate(counts(999, 1000), counts(1000, 1000), 0)
    gate(counts(999, 1000), counts(1000, 1000), 0.1)  # -0.1 % is within 0.1
    with pytest.raises(Implausible):
        gate(counts(998, 1000), counts(1000, 1000), 0.1)
    assert plausibility.shrink_percent(1000, 500) == 50.0
    assert plausibility.shrink_percent(0, 0) == 0.0 and plausibility.shrink_percent(10, 20) == 0.0


# --------------------------------------------------------------------------------------------------------------
# Settle time counts from the newest file


def test_settle_time_counts_from_the_newest_file_not_the_oldest(tmp_path: Path) -> None:
    """Without _SUCCESS a snapshot is finished when no file changed for settle_seconds: one file still being
    written (changed 10 s ago) keeps it waiting however old the others are."""
    folder = write_snapshot(tmp_path, "acme", 100, people=20, success_marker=False)
    now = time.time()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) >= 3
    for path in files:
        os.utime(path, (now - 3600, now - 3600))
    recent = sorted((folder / "relationships").glob("*.parquet"))[-1]
    os.utime(recent, (now - 10, now - 10))
    found = scan(tmp_path, settle_seconds=60, now=now)
    assert not found.complete
    assert "changed 10s ago" in found.waiting[str(folder)]
    assert [s.key for s in scan(tmp_path, settle_seconds=60, now=now + 51).complete] == ["acme-100"]


# --------------------------------------------------------------------------------------------------------------
# The fingerprint covers relationship files: a re-drop that rewrites only relationships reloads


def test_relationships_rewritten_with_the_same_counts_are_reloaded_not_reused(tmp_path: Path) -> None:
    target = make_target(tmp_path)
    snapshot = custom(tmp_path, {"n": people([1, 2, 3, 4])}, {"r": knows([1, 2], [3, 4], since=[2001, 2002])})
    target.load(snapshot)
    loaded_from = snapshot.fingerprint()
    db = str(target.database_path(snapshot.key))
    before = query(db, "MATCH (a)-[r:KNOWS]->(b) RETURN a.nodeId, b.nodeId, r.since ORDER BY a.nodeId")
    assert before == [[1, 3, 2001], [2, 4, 2002]]

    # The producer drops the snapshot again: same nodes, the same number of relationships, other endpoints.
    pq.write_table(knows([1, 2], [4, 3], since=[2011, 2012]), snapshot.path / "relationships" / "r.parquet")
    now = snapshot.fingerprint()
    assert now != loaded_from
    said = fingerprints.prepare_load(target, snapshot, now, loaded_from, in_flight=list)
    assert said and "dropped it and loading it again" in said
    target.load(snapshot)
    after = query(db, "MATCH (a)-[r:KNOWS]->(b) RETURN a.nodeId, b.nodeId, r.since ORDER BY a.nodeId")
    assert after == [[1, 4, 2011], [2, 3, 2012]]
    rules.verify(target, snapshot.key, expected_counts(snapshot))


def test_fingerprint_sees_each_relationship_file_and_node_file(tmp_path: Path) -> None:
    snapshot = custom(tmp_path, {"n": people([1, 2])}, {"r": knows([1], [2]), "s": knows([2], [1])})
    prints = {snapshot.fingerprint()}
    pq.write_table(knows([2], [2]), snapshot.path / "relationships" / "s.parquet")
    prints.add(snapshot.fingerprint())
    pq.write_table(people([1, 2], name=pa.array(["a", "b"])), snapshot.path / "nodes" / "n.parquet")
    prints.add(snapshot.fingerprint())
    (snapshot.path / "relationships" / "s.parquet").rename(snapshot.path / "relationships" / "t.parquet")
    prints.add(snapshot.fingerprint())
    assert len(prints) == 4
    assert snapshot_at(tmp_path / "data", "acme", 2000).fingerprint() in prints
