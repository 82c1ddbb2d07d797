"""Promises that once had no test: each test here was checked by planting the bug it names in the code and seeing
it fail (docs/mutation.md lists the bugs). The customer lock has its own file (tests/test_customer_lock.py), the
GDS Arrow password its own fault test (tests/faults/test_arrow_secret_faults.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster import fingerprints, records, plausibility
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.plausibility import Implausible
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.secrets import scrub
from bluegreen_dagster.snapshots import expected_counts, scan, snapshot_at
from bluegreen_dagster.targets.base import DatabaseInfo, GraphTarget
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
    assert str(failed.value) == (f"{loaded.key} does not match its snapshot: label Company: expected 2, found 0; "
                                 "label Person: expected 2, found 4")
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
    assert "dropped again under the same timestamp with other files" in said
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


# --------------------------------------------------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md): rules whose every branch a test now pins down


class ListedTarget(GraphTarget):
    """A target that only lists, counts, points and drops: the blue/green rules' view of a store."""

    def __init__(self, databases: dict[str, str], alias: str | None = None,
                 sizes: dict[str, GraphCounts] | None = None) -> None:
        self.databases = dict(databases)  # name -> status
        self.alias = alias
        self.sizes = sizes or {}  # name -> counts; counts(10, 20) for the others
        self.dropped: list[str] = []

    def health(self, snapshot=None):
        raise NotImplementedError

    def load(self, snapshot):
        raise NotImplementedError

    def count(self, database: str) -> GraphCounts:
        return self.sizes.get(database, counts(10, 20))

    def list_databases(self, customer: str) -> list[DatabaseInfo]:
        return [DatabaseInfo(name, status) for name, status in self.databases.items()]

    def alias_target(self, customer: str) -> str | None:
        return self.alias if customer == "acme" else None

    def point_alias(self, customer: str, database: str) -> None:
        self.alias = database

    def drop_database(self, database: str) -> None:
        del self.databases[database]
        self.dropped.append(database)

    def read_query(self, database, query, *, timeout_seconds, keep_rows=1):
        raise NotImplementedError


def test_cleanup_skips_foreign_databases_and_goes_on() -> None:
    target = ListedTarget({"acme-manual-copy": "online", "acme-100": "online", "acme-200": "online",
                           "acme-300": "online"})
    result = rules.cleanup(target, "acme", keep=1, in_flight=set)
    assert sorted(result.dropped) == ["acme-100", "acme-200"] and result.kept == ["acme-300"]
    assert "acme-manual-copy" in target.databases


def test_cleanup_counts_own_and_pinned_databases_as_kept_ones() -> None:
    target = ListedTarget({f"acme-{ts}": "online" for ts in (100, 200, 300, 400)}, alias="acme-400")
    result = rules.cleanup(target, "acme", keep=2, in_flight=set, own="acme-300", pinned="acme-100")
    assert result.kept == ["acme-400", "acme-300"]
    assert result.protected == {"acme-100": "pinned"} and result.dropped == ["acme-200"]
    target = ListedTarget({f"acme-{ts}": "online" for ts in (100, 200, 300)})
    result = rules.cleanup(target, "acme", keep=3, in_flight=set, pinned="acme-100")
    assert result.kept == ["acme-300", "acme-200", "acme-100"] and not result.protected
    target = ListedTarget({f"acme-{ts}": "online" for ts in (100, 200)})
    result = rules.cleanup(target, "acme", keep=1, in_flight=set, own="acme-100")
    assert result.kept == ["acme-200"] and result.protected == {"acme-100": "this run's database"}


def test_is_newer_and_live_counts() -> None:
    assert rules.is_newer("acme-200", "acme-100") and not rules.is_newer("acme-100", "acme-100")
    assert rules.is_newer("acme-100", "hand-made")  # not a snapshot of ours: may be taken over
    assert rules.live_counts(ListedTarget({}), "acme") == (None, None)
    live = ListedTarget({}, alias="acme-100", sizes={"acme-100": counts(3, 4)})
    assert rules.live_counts(live, "acme") == ("acme-100", counts(3, 4))


def test_gate_messages_say_what_shrank_and_what_to_do() -> None:
    with pytest.raises(Implausible) as empty:
        gate(counts(0, 0), counts(10, 10), 50)
    assert str(empty.value).endswith("is an empty graph (0 nodes, 0 relationships): refusing to switch to it. Fix "
                                     "the producer and drop a new snapshot")
    with pytest.raises(Implausible, match="relationships 1 -> 0 "):
        gate(counts(10, 0), counts(10, 1), 50)  # the last relationship gone is a 100 % shrink
    with pytest.raises(Implausible) as both:
        gate(counts(100, 100), counts(1000, 1000), 50)
    message = str(both.value)
    assert "nodes 1,000 -> 100 (-90%); relationships 1,000 -> 100 (-90%), more than max_shrink_percent=50" in message
    assert "bluegreen/allow_shrink=true (or `bluegreen load --allow-shrink`)" in message


def test_scrub_blanks_the_longest_secret_first_and_secrets_of_three_characters() -> None:
    assert scrub("token abzzzzcd here", "zzzz", "abzzzzcd") == "token *** here"  # no "ab***cd" left
    assert scrub("pin abc", "abc") == "pin ***" and scrub("pin ab", "ab") == "pin ab"


def test_recorded_fingerprint_is_the_partitions_latest() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert records.recorded_fingerprint(instance, "acme-100") is None
        for fp in ("sha256:old", "sha256:new"):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                records.LOADED_ASSET, partition="acme-100", metadata={records.FINGERPRINT: fp}))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            records.LOADED_ASSET, partition="acme-200", metadata={records.FINGERPRINT: "sha256:other"}))
        assert records.recorded_fingerprint(instance, "acme-100") == "sha256:new"
        instance.report_runless_asset_event(dg.AssetMaterialization(records.LOADED_ASSET, partition="acme-100"))
        assert records.recorded_fingerprint(instance, "acme-100") is None  # the latest one holds none: unknown


def test_prepare_load_says_why_it_reuses_or_reloads_without_a_record(tmp_path: Path) -> None:
    snapshot = snapshot_at(tmp_path, "acme", 100)
    live = ListedTarget({"acme-100": "online"}, alias="acme-100")
    said = fingerprints.prepare_load(live, snapshot, "sha256:abc", None, in_flight=set)
    assert "verify_counts still compares its counts with the files" in said and not live.dropped
    other = ListedTarget({"acme-100": "online"})
    said = fingerprints.prepare_load(other, snapshot, "sha256:abc", None, in_flight=set)
    assert said == ("acme-100: no fingerprint was recorded for it, so which files it holds is unknown; dropped it "
                    "and loading it again into a fresh database")
    assert other.dropped == ["acme-100"]


def test_switch_moves_forward_again_and_again_and_says_why_it_stays() -> None:
    target = ListedTarget({f"acme-{ts}": "online" for ts in (100, 200, 300)})
    same = counts(10, 20)
    assert rules.switch_if_newest(target, "acme-100", same) == rules.SwitchResult(
        True, None, "acme-100", "alias acme moved (new alias) -> acme-100")
    assert rules.switch_if_newest(target, "acme-200", same) == rules.SwitchResult(
        True, "acme-100", "acme-200", "alias acme moved acme-100 -> acme-200")
    assert rules.switch_if_newest(target, "acme-200", same) == rules.SwitchResult(
        False, "acme-200", "acme-200", "alias acme already points at acme-200")
    assert rules.switch_if_newest(target, "acme-100", same) == rules.SwitchResult(
        False, "acme-200", "acme-200", "alias acme stays on acme-200: it is newer than acme-100")
    assert rules.switch_if_newest(target, "acme-300", same, pinned="pinned to acme-200 by ops") == rules.SwitchResult(
        False, "acme-200", "acme-200",
        "alias acme stays on acme-200: pinned to acme-200 by ops; `bluegreen unpin acme` to resume switching")
    assert target.alias == "acme-200"


def test_switch_passes_the_verified_counts_through_the_gate() -> None:
    small = counts(1, 1)
    target = ListedTarget({"acme-100": "online", "acme-200": "online"}, alias="acme-100",
                          sizes={"acme-100": counts(1000, 1000), "acme-200": small})
    with pytest.raises(Implausible, match="^acme-200 shrinks against the live acme-100: nodes 1,000 -> 1 "):
        rules.switch_if_newest(target, "acme-200", small, max_shrink_percent=50)
    assert target.alias == "acme-100"
    assert rules.switch_if_newest(target, "acme-200", small, max_shrink_percent=50, allow_shrink=True).switched
    first = ListedTarget({"acme-100": "online"}, sizes={"acme-100": small})
    assert rules.switch_if_newest(first, "acme-100", small, max_shrink_percent=50).switched  # nothing live to shrink
    empty = ListedTarget({"acme-100": "online"}, sizes={"acme-100": counts(0, 0)})
    with pytest.raises(Implausible, match="empty graph"):
        rules.switch_if_newest(empty, "acme-100", counts(0, 0), max_shrink_percent=50)
    assert empty.alias is None
