"""A snapshot that changes under the pipeline (bluegreen_dagster/snapshots.py): a load refuses a snapshot whose files
were added, removed or rewritten while it ran, naming each; fingerprinting refuses a file rewritten while it was
hashed; the counts a snapshot promises are read again when its files change; the sensor's stamp sees a finished
snapshot change even before all its folders exist."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster import snapshots
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import Snapshot, expected_counts, folder_stamp, snapshot_at


@pytest.fixture
def snapshot(tmp_path: Path) -> Snapshot:
    write_snapshot(tmp_path, "acme", 100, people=5)
    return snapshot_at(tmp_path, "acme", 100)


def relative(snapshot: Snapshot) -> list[str]:
    nodes, relationships = snapshot.files()
    return [p.relative_to(snapshot.path).as_posix() for p in nodes + relationships]


def test_file_state_names_each_data_file_with_its_identity(snapshot: Snapshot) -> None:
    state = snapshot.file_state()
    assert sorted(state) == sorted(relative(snapshot)) and len(state) >= 2
    for name, identity in state.items():
        st = os.stat(snapshot.path / name)
        assert identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def test_a_file_gone_between_listing_and_stat_is_left_out_and_the_others_kept(snapshot: Snapshot,
                                                                             monkeypatch) -> None:
    names = relative(snapshot)
    listed = Snapshot.files

    def listed_then_first_removed(self):
        out = listed(self)
        os.remove(out[0][0])  # the producer removes a file right after the listing
        return out

    monkeypatch.setattr(Snapshot, "files", listed_then_first_removed)
    assert sorted(snapshot.file_state()) == sorted(names[1:])


def test_an_unchanged_snapshot_has_no_changes(snapshot: Snapshot) -> None:
    before = snapshot.file_state()
    assert snapshot.changes_since(before) is None
    snapshot.require_unchanged_since(before)  # no error


def test_each_kind_of_change_is_named_in_one_message(snapshot: Snapshot) -> None:
    before = snapshot.file_state()
    [first, second, *_] = relative(snapshot)
    folder = snapshot.path
    shutil.copy(folder / first, folder / "nodes" / "extra-b.parquet")
    shutil.copy(folder / first, folder / "nodes" / "extra-a.parquet")
    os.remove(folder / first)
    with open(folder / second, "ab") as fh:
        fh.write(b"\0")
    changes = (f"added {folder / 'nodes' / 'extra-a.parquet'}, {folder / 'nodes' / 'extra-b.parquet'}; "
               f"removed {folder / first}; rewrote {folder / second}")
    assert snapshot.changes_since(before) == changes
    with pytest.raises(SnapshotError) as refused:
        snapshot.require_unchanged_since(before)
    assert str(refused.value) == (
        f"{folder} changed while it was being loaded ({changes}), so nothing was loaded: the database would have "
        "mixed two versions of the snapshot. A producer must not change a snapshot after writing _SUCCESS")


@pytest.mark.parametrize("change, word", [("add", "added"), ("remove", "removed"), ("rewrite", "rewrote")])
def test_one_change_alone_is_named(snapshot: Snapshot, change: str, word: str) -> None:
    before = snapshot.file_state()
    name = relative(snapshot)[-1]
    path = snapshot.path / name
    if change == "add":
        path = snapshot.path / "relationships" / "late.parquet"
        shutil.copy(snapshot.path / name, path)
    elif change == "remove":
        os.remove(path)
    else:
        os.utime(path, ns=(0, 0))  # same size and content, another time: rewritten in place
    assert snapshot.changes_since(before) == f"{word} {path}"


def test_a_file_rewritten_while_it_is_hashed_is_refused_by_name(snapshot: Snapshot, monkeypatch) -> None:
    digest = snapshots._cached_digest

    def hashed_then_rewritten(path: str, identity: tuple) -> str:
        out = digest(path, identity)
        with open(path, "ab") as fh:  # the producer appends while we hash
            fh.write(b"\0")
        return out

    monkeypatch.setattr(snapshots, "_cached_digest", hashed_then_rewritten)
    first = snapshot.files()[0][0]
    with pytest.raises(SnapshotError) as refused:
        snapshot.fingerprint()
    assert str(refused.value) == (f"{first} changed while it was being fingerprinted; wait until the producer has "
                                  "finished and run again")


def test_the_promised_counts_are_read_again_when_a_file_is_rewritten(snapshot: Snapshot) -> None:
    counts = expected_counts(snapshot)
    assert expected_counts(snapshot) == counts
    node_file = snapshot.files()[0][0]
    table = pq.read_table(node_file)
    more = pa.concat_tables([table, table.slice(0, 1).set_column(
        0, table.schema.names[0], pa.array([10_000], table.schema.field(0).type))])
    pq.write_table(more, node_file)
    again = expected_counts(snapshot)
    assert again.nodes == counts.nodes + 1


def test_the_stamp_sees_relationships_change_while_nodes_is_still_missing(tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "1"
    (folder / "relationships").mkdir(parents=True)
    before = folder_stamp(str(folder))
    (folder / "relationships" / "part-0.parquet").touch()
    assert folder_stamp(str(folder)) != before
