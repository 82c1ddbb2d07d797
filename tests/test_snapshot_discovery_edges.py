"""One snapshot's state as `bluegreen status` and the load step see it (complete, waiting and why, invalid and what
to do), the stamp that tells the sensor a snapshot was dropped again, and the messages that name the file at fault."""

import os
import shutil
import time
from pathlib import Path

import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.folders import COMPLETE, INVALID, WAITING
from bluegreen_dagster.names import SnapshotError, snapshot_id
from bluegreen_dagster.snapshots import Snapshot, folder_stamp, how_to_retry, snapshot_at


def newest_mtime(folder: Path) -> float:
    return max(os.lstat(p).st_mtime for p in [*folder.rglob("*")])


def test_a_finished_snapshot_is_complete(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    snapshot = snapshot_at(tmp_path, "acme", 100)
    assert snapshot.state(60) == (COMPLETE, None)
    assert snapshot.incomplete_reason(60) is None
    # dataset.base_path is two levels above the snapshot folder
    assert Snapshot(snapshot.id, snapshot.path).state(60) == (COMPLETE, None)


def test_a_snapshot_not_there_yet_waits_naming_its_folder(tmp_path: Path) -> None:
    snapshot = snapshot_at(tmp_path, "acme", 100)
    expected = f"{tmp_path / 'acme' / '100'} does not exist"
    assert snapshot.state(60) == (WAITING, expected)
    assert snapshot.incomplete_reason(60) == expected


def test_without_success_marker_it_waits_settle_seconds_after_the_last_change(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5, success_marker=False)
    snapshot = snapshot_at(tmp_path, "acme", 100)
    newest = newest_mtime(folder)
    assert snapshot.state(60, now=newest + 10) == (
        WAITING, "no _SUCCESS marker and files changed 10s ago (settle_seconds=60)")
    assert snapshot.incomplete_reason(60, now=newest + 10).startswith("no _SUCCESS marker")
    assert snapshot.state(60, now=newest + 61) == (COMPLETE, None)
    assert snapshot.incomplete_reason(60, now=newest + 61) is None
    assert snapshot.state(3600)[0] == WAITING  # `now` defaults to the clock: written just now
    assert snapshot.state(0.5, now=time.time() + 3600)[0] == COMPLETE


def test_a_snapshot_folder_linked_from_outside_base_path_is_invalid_under_its_own_name(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "elsewhere"
    write_snapshot(outside, "acme", 100, people=5)
    (base / "acme").mkdir(parents=True)
    os.symlink(outside / "acme" / "100", base / "acme" / "100")
    snapshot = Snapshot(snapshot_id("acme", 100), base / "acme" / "100")
    state, reason = snapshot.state(60)
    assert state == INVALID
    assert reason.startswith(f"{base / 'acme' / '100'} is a symbolic link that leads outside dataset.base_path")
    assert str(outside) not in reason
    assert snapshot.incomplete_reason(60) == reason
    with pytest.raises(SnapshotError, match="leads outside dataset.base_path"):
        snapshot_at(base, "acme", 100)


def test_a_link_that_stays_inside_base_path_is_followed(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    (tmp_path / "acme" / "200").symlink_to(tmp_path / "acme" / "100")
    assert snapshot_at(tmp_path, "acme", 200).state(60) == (COMPLETE, None)


def test_a_data_file_that_vanished_is_named_when_fingerprinting(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5)
    gone = folder / "nodes" / "zz-gone.parquet"
    gone.symlink_to(folder / "nodes" / "missing.parquet")  # a dangling link inside base_path: listed, unreadable
    with pytest.raises(SnapshotError) as err:
        snapshot_at(tmp_path, "acme", 100).fingerprint()
    assert str(err.value) == (f"{gone} disappeared while the snapshot was being fingerprinted; restore it or drop "
                              "the snapshot again")


def test_the_stamp_changes_when_a_snapshot_is_dropped_again_not_when_it_is_only_read(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5)
    snapshot = snapshot_at(tmp_path, "acme", 100)
    first = snapshot.stamp()
    assert first == folder_stamp(str(folder)) and len(first) == 10
    snapshot.fingerprint()
    assert snapshot.stamp() == first  # reading changes nothing

    (folder / "_SUCCESS").unlink()
    (folder / "_SUCCESS").touch()  # marked finished anew
    second = snapshot.stamp()
    assert second != first

    (folder / "relationships" / "extra.parquet").write_bytes(b"")  # an entry added in relationships/
    third = snapshot.stamp()
    assert third not in (first, second)

    (folder / "nodes" / "extra.parquet").write_bytes(b"")  # an entry added in nodes/
    fourth = snapshot.stamp()
    assert fourth not in (first, second, third)

    shutil.rmtree(folder)
    assert folder_stamp(str(folder)) is None and snapshot.stamp() is None  # gone
    write_snapshot(tmp_path, "acme", 100, people=5)
    assert snapshot.stamp() not in (None, first, second, third, fourth)  # dropped again


def test_the_stamp_of_an_unfinished_snapshot_changes_when_it_is_finished(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5, success_marker=False)
    before = folder_stamp(str(folder))
    (folder / "_SUCCESS").touch()
    assert folder_stamp(str(folder)) != before


def test_a_linked_snapshot_folder_is_stamped_without_looking_through_the_link(tmp_path: Path) -> None:
    target = write_snapshot(tmp_path, "acme", 100, people=5)
    link = tmp_path / "acme" / "200"
    link.symlink_to(target)
    stamp = folder_stamp(str(link))
    assert stamp is not None and stamp != folder_stamp(str(target))
    (target / "_SUCCESS").unlink()  # a change behind the link is not looked at
    assert folder_stamp(str(link)) == stamp


def test_how_to_retry_names_the_command_for_this_snapshot() -> None:
    assert how_to_retry("acme-corp-1767741527") == (
        "The alias was not moved and no snapshot file was changed. Fix the snapshot's files (or drop a corrected "
        "snapshot with a newer timestamp), then run the partition again: bluegreen load acme-corp 1767741527")


# ---------------------------------------------------------------------------------------------------------------
# What a scan reports, per folder (the sensor's and `bluegreen status`'s view)

def scanned(base: Path, **kwargs):
    from bluegreen_dagster.snapshots import scan

    return scan(base, 60, now=time.time() + 3600, **kwargs)


def test_which_files_are_data_files(tmp_path: Path) -> None:
    """`*.parquet` directly in nodes/ and relationships/, not starting with '.' or '_'; folders and other files
    are skipped, so a producer's temporary files never count."""
    folder = write_snapshot(tmp_path, "acme", 100, people=5)
    nodes = folder / "nodes"
    (nodes / "_partial.parquet").write_bytes(b"")
    (nodes / ".hidden.parquet").write_bytes(b"")
    (nodes / "part.parquet.tmp").write_bytes(b"")
    (nodes / "sub.parquet").mkdir()
    snapshot = snapshot_at(tmp_path, "acme", 100)
    node_files, rel_files = snapshot.files()
    assert [p.name for p in node_files] == sorted(p.name for p in nodes.glob("[!._]*.parquet") if p.is_file())
    assert node_files and rel_files and all(p.parent.name == "relationships" for p in rel_files)
    result = scanned(tmp_path)
    assert [s.key for s in result.complete] == ["acme-100"] and not result.invalid and not result.waiting


def test_a_finished_snapshot_without_files_says_which_folder_is_empty_and_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "100"
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir()
    (folder / "nodes" / "_partial.parquet").write_bytes(b"")  # not a data file
    (folder / "_SUCCESS").touch()
    result = scanned(tmp_path)
    assert result.invalid == {str(folder): (
        f"{folder / 'nodes'} has no Parquet files, yet _SUCCESS says the snapshot is finished: the producer wrote "
        f"an empty snapshot. Write the Parquet files into nodes/, or delete the folder {folder}")}
    (folder / "_SUCCESS").unlink()
    assert scanned(tmp_path).waiting == {str(folder): f"no Parquet files in {folder / 'nodes'}"}


def test_relationships_missing_is_named_too(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5)
    shutil.rmtree(folder / "relationships")
    (folder / "relationships").write_text("not a folder")
    assert scanned(tmp_path).invalid[str(folder)].startswith(
        f"{folder / 'relationships'} has no Parquet files, yet _SUCCESS says")


def test_a_data_file_with_a_control_character_makes_the_snapshot_invalid_naming_it_escaped(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5)
    (folder / "relationships" / "bad\x1bname.parquet").write_bytes(b"")
    reason = scanned(tmp_path).invalid[str(folder)]
    assert reason == (f"{folder / 'relationships'}/bad\\x1bname.parquet: the file name contains control or "
                      "invisible characters (shown escaped); rename the file using letters, digits, '-', '_' and '.'")
    with pytest.raises(SnapshotError, match="the file name contains control or invisible characters"):
        snapshot_at(tmp_path, "acme", 100).files()


def test_links_leading_out_are_refused_only_where_they_would_be_read(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "base2"  # a sibling whose name starts like base's
    folder = write_snapshot(base, "acme", 100, people=5)
    (outside / "x").mkdir(parents=True)
    (outside / "x" / "a.parquet").write_bytes(b"")
    (folder / "nodes" / "notes.txt").symlink_to(outside / "x" / "a.parquet")  # not a data file: never read
    assert [s.key for s in scanned(base).complete] == ["acme-100"]
    link = folder / "nodes" / "z.parquet"
    link.symlink_to(outside / "x" / "a.parquet")
    reason = scanned(base).invalid[str(folder)]
    assert reason.startswith(f"{link} is a symbolic link that leads outside dataset.base_path, so it is skipped")
    assert str(outside) not in reason
    with pytest.raises(SnapshotError, match="leads outside dataset.base_path"):
        snapshot_at(base, "acme", 100).files()
    link.unlink()
    shutil.rmtree(folder / "relationships")
    (folder / "relationships").symlink_to(outside / "x")
    assert scanned(base).invalid[str(folder)].startswith(f"{folder / 'relationships'} is a symbolic link that leads")
    with pytest.raises(SnapshotError, match="leads outside dataset.base_path"):
        snapshot_at(base, "acme", 100).files()


def test_customer_folders_listed_and_refused(tmp_path: Path) -> None:
    from bluegreen_dagster.snapshots import customers

    write_snapshot(tmp_path, "globex", 1, people=5)
    write_snapshot(tmp_path, "acme", 1, people=5)
    (tmp_path / "Bad_Name").mkdir()
    (tmp_path / ".tmp-acme").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert customers(tmp_path) == ["acme", "globex"]
    assert customers(tmp_path / "missing") == []
    result = scanned(tmp_path)
    assert list(result.invalid) == [str(tmp_path / "Bad_Name")]
    assert result.invalid[str(tmp_path / "Bad_Name")].startswith("customer 'Bad_Name' is not a valid name")
    assert [s.key for s in result.complete] == ["acme-1", "globex-1"]
    assert scanned(tmp_path / "missing").complete == []


def test_snapshot_folders_with_bad_names_are_reported_and_others_loaded_oldest_first(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 20, people=5)
    write_snapshot(tmp_path, "acme", 100, people=5)
    write_snapshot(tmp_path, "globex", 50, people=5)
    (tmp_path / "acme" / "not-a-time").mkdir()
    (tmp_path / "acme" / ".writing").mkdir()
    (tmp_path / "acme" / "7.txt").write_text("")  # a file, not a snapshot folder
    long_ts = "1" * 20
    customer = "c" * 43  # 43 + 1 + 20 = 64 characters: one too many for a database name
    write_snapshot(tmp_path, "c" * 42, long_ts, people=5)  # 63: allowed
    (tmp_path / customer / long_ts).mkdir(parents=True)
    result = scanned(tmp_path)
    assert [s.key for s in result.complete] == ["acme-20", "globex-50", "acme-100", f"{'c' * 42}-{long_ts}"]
    assert result.invalid[str(tmp_path / "acme" / "not-a-time")].startswith("timestamp 'not-a-time' is not valid")
    assert result.invalid[str(tmp_path / customer / long_ts)].startswith(
        f"snapshot name '{customer}-{long_ts}' has 64 characters")
    assert not any(".writing" in k or "7.txt" in k for k in [*result.invalid, *result.waiting])
    newer = scanned(tmp_path, newer_than={"acme": 20})
    assert [s.key for s in newer.complete] == ["globex-50", "acme-100", f"{'c' * 42}-{long_ts}"]
    assert str(tmp_path / "acme" / "not-a-time") in newer.invalid  # a bad name is reported whatever the floor
    assert [s.key for s in scanned(tmp_path, newer_than={"acme": 100, "globex": 49}).complete] == [
        "globex-50", f"{'c' * 42}-{long_ts}"]


LEADS_OUT_TAIL = ("is a symbolic link that leads outside dataset.base_path, so it is skipped (nothing outside "
                  "base_path is read). Move the data under base_path, or replace the link with the folder or file "
                  "itself")


def test_every_link_out_is_reported_under_its_own_name_with_what_to_do(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    write_snapshot(outside, "globex", 5, people=5)
    write_snapshot(base, "acme", 1, people=5)
    (base / "0-globex").symlink_to(outside / "globex")  # a customer folder linked out, sorted first
    (base / "0-notes.txt").write_text("")  # a file, sorted before every customer
    (base / "acme" / "2").symlink_to(outside / "globex" / "5")  # a snapshot folder linked out
    result = scanned(base)
    assert result.invalid == {str(base / "0-globex"): f"{base / '0-globex'} {LEADS_OUT_TAIL}",
                              str(base / "acme" / "2"): f"{base / 'acme' / '2'} {LEADS_OUT_TAIL}"}
    assert [s.key for s in result.complete] == ["acme-1"]


def test_nodes_linked_inside_base_path_are_followed_by_state(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 1, people=5)
    shutil.move(folder / "nodes", tmp_path / "shared-nodes")
    (folder / "nodes").symlink_to(tmp_path / "shared-nodes")
    assert snapshot_at(tmp_path, "acme", 1).state(60) == (COMPLETE, None)


def test_the_stamp_sees_success_written_while_a_subfolder_is_still_missing(tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "1"
    (folder / "nodes").mkdir(parents=True)
    before = folder_stamp(str(folder))
    assert before is not None  # the folder is there, relationships/ and _SUCCESS not yet
    (folder / "_SUCCESS").touch()
    assert folder_stamp(str(folder)) != before


def test_a_snapshot_found_by_its_key_is_the_one_at_its_folder(tmp_path: Path) -> None:
    from bluegreen_dagster.snapshots import snapshot_for_key

    write_snapshot(tmp_path, "acme", 100, people=5)
    snapshot = snapshot_for_key(tmp_path, "acme-100")
    assert snapshot == snapshot_at(tmp_path, "acme", 100)
    assert snapshot.key == "acme-100" and snapshot.path == tmp_path / "acme" / "100"
    assert snapshot.state(60) == (COMPLETE, None)


def test_state_and_scan_agree_on_an_empty_finished_snapshot_and_on_where_a_snapshot_is(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 1, people=5)
    empty = tmp_path / "acme" / "2"
    (empty / "nodes").mkdir(parents=True)
    (empty / "relationships").mkdir()
    (empty / "_SUCCESS").touch()
    state, reason = snapshot_at(tmp_path, "acme", 2).state(60)
    assert state == INVALID and reason == scanned(tmp_path).invalid[str(empty)]
    (empty / "relationships" / "bad\x07.parquet").write_bytes(b"")
    assert snapshot_at(tmp_path, "acme", 2).state(60)[0] == INVALID
    found = scanned(tmp_path).complete
    assert [(s.key, s.path) for s in found] == [("acme-1", folder)]
    assert found[0].files() == snapshot_at(tmp_path, "acme", 1).files()


def test_settle_time_counts_a_file_written_beside_nodes_and_relationships(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 1, people=5, success_marker=False)
    old = time.time() - 3600
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (old, old))
    snapshot = snapshot_at(tmp_path, "acme", 1)
    assert snapshot.state(60)[0] == COMPLETE  # quiet for an hour
    (folder / "manifest.json").write_text("{}")  # the producer is still writing, at the top of the folder
    assert snapshot.state(60)[0] == WAITING


def test_settle_seconds_after_the_last_change_is_enough(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 1, people=5, success_marker=False)
    newest = 1_700_000_000  # whole seconds: `now - newest` is then exact, 60.0 and not 59.99999...
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (newest, newest))
    assert snapshot_at(tmp_path, "acme", 1).state(60, now=newest + 60) == (COMPLETE, None)
    assert snapshot_at(tmp_path, "acme", 1).state(60, now=newest + 59.5)[0] == WAITING


def test_only_a_leading_dot_or_underscore_hides_a_data_file(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 1, people=5)
    first = sorted((folder / "nodes").glob("*.parquet"))[0]
    shutil.copy(first, folder / "nodes" / "X-extra.parquet")
    assert "X-extra.parquet" in [p.name for p in snapshot_at(tmp_path, "acme", 1).node_files]


def test_listing_the_files_of_a_snapshot_refuses_links_out_by_name_and_reads_a_missing_folder_as_empty(
        tmp_path: Path) -> None:
    """What a load reads (`Snapshot.files`), for a snapshot found earlier whose folder changed since."""
    base, outside = tmp_path / "base", tmp_path / "elsewhere"
    folder = write_snapshot(base, "acme", 100, people=5)
    snapshot = snapshot_at(base, "acme", 100)
    shutil.rmtree(folder / "nodes")
    nodes, relationships = snapshot.files()
    assert nodes == [] and relationships and all(p.parent == folder / "relationships" for p in relationships)

    write_snapshot(outside, "acme", 100, people=5)
    os.symlink(outside / "acme" / "100" / "nodes", folder / "nodes")
    with pytest.raises(SnapshotError) as refused:
        snapshot.files()
    assert str(refused.value).startswith(f"{folder / 'nodes'} is a symbolic link that leads outside dataset.base_path")

    shutil.rmtree(folder)
    os.symlink(outside / "acme" / "100", folder)  # the whole snapshot folder replaced by a link out
    with pytest.raises(SnapshotError) as refused:
        snapshot.fingerprint()
    assert str(refused.value).startswith(f"{folder} is a symbolic link that leads outside dataset.base_path")
    assert str(outside) not in str(refused.value)


def test_a_snapshot_asked_for_by_name_whose_folder_leads_out_is_refused_naming_the_link(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "elsewhere"
    write_snapshot(outside, "acme", 100, people=5)
    (base / "acme").mkdir(parents=True)
    os.symlink(outside / "acme" / "100", base / "acme" / "100")
    with pytest.raises(SnapshotError) as refused:
        snapshot_at(base, "acme", 100)
    assert str(refused.value).startswith(
        f"{base / 'acme' / '100'} is a symbolic link that leads outside dataset.base_path")
    assert str(outside) not in str(refused.value)
