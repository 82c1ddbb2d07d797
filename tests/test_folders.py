"""One look at a snapshot folder (bluegreen_dagster/folders.py) where it goes wrong outside the happy path: a folder
the pipeline may not read, a folder or file that goes away while it is being looked at, links whose own time is
newer than what they point to, and a link out of base_path that sits beside a missing nodes/."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bluegreen_dagster import folders
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.folders import COMPLETE, INVALID, WAITING, look_at
from bluegreen_dagster.snapshots import scan, snapshot_at

NOBODY = 65534
OLD = 1_000_000_000.0  # every file's time in the settle tests; `now` is given explicitly


def as_another_user(action: Callable[[], object]) -> object:
    """`action()` as a user who owns none of the files: in a forked child that became `nobody` when the tests run
    as root (root reads any folder whatever its permissions), else directly (the owner of a mode-000 folder cannot
    read it either)."""
    if os.geteuid() != 0:
        return action()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = ("ok", action())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = ("error", repr(exc))
        with os.fdopen(write, "wb") as fh:
            pickle.dump(out, fh)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        kind, value = pickle.load(fh)
    os.waitpid(pid, 0)
    assert kind == "ok", value
    return value


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A base_path another user can walk to (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="bgd-folders-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for folder, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755, follow_symlinks=False)
        shutil.rmtree(base)


@pytest.mark.parametrize("unreadable", [".", "nodes", "relationships"])
def test_a_folder_the_pipeline_may_not_read_is_invalid_and_says_fix_its_permissions(shared_base: Path,
                                                                                     unreadable: str) -> None:
    folder = write_snapshot(shared_base, "acme", 100, people=5)
    snapshot = snapshot_at(shared_base, "acme", 100)
    assert snapshot.state(60) == (COMPLETE, None)
    (folder / unreadable).chmod(0o000)
    expected = (INVALID, f"{folder} cannot be read (Permission denied); fix its permissions")
    assert as_another_user(lambda: snapshot.state(60)) == expected
    found = as_another_user(lambda: scan(shared_base, 60))
    assert found.complete == [] and found.invalid == {str(folder): expected[1]}


def test_a_customer_folder_the_pipeline_may_not_list_is_reported_and_the_others_still_load(shared_base: Path) -> None:
    write_snapshot(shared_base, "acme", 100, people=5)
    write_snapshot(shared_base, "bolt", 100, people=5)
    assert [s.key for s in scan(shared_base, 60).complete] == ["acme-100", "bolt-100"]
    (shared_base / "acme").chmod(0o000)
    found = as_another_user(lambda: scan(shared_base, 60))
    assert [s.key for s in found.complete] == ["bolt-100"]
    assert found.invalid == {str(shared_base / "acme"): f"{shared_base / 'acme'} cannot be listed (Permission "
                                                          "denied); fix its permissions"}


def test_a_folder_gone_before_it_is_looked_at_waits_and_says_so(tmp_path: Path) -> None:
    """scan lists a customer's snapshot folders, then looks at each: one deleted in between waits (it may be
    dropped again), it is not invalid."""
    gone = tmp_path / "acme" / "100"
    assert look_at(str(gone), str(tmp_path), 60, None) == folders.Look(
        WAITING, f"{gone} disappeared while it was being read")


def test_a_file_removed_between_listing_and_its_time_waits_as_still_changing(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5, success_marker=False)
    listed = folders.data_files

    def listed_then_removed(where: str, base_real: str):
        parquet, every = listed(where, base_real)
        os.remove(every[0].path)  # the producer replaces a file right after the listing
        return parquet, every

    monkeypatch.setattr(folders, "data_files", listed_then_removed)
    assert snapshot_at(tmp_path, "acme", 100).state(60) == (WAITING, f"files in {folder} are still changing")


def test_a_link_out_of_base_path_is_refused_even_when_nodes_is_missing(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "elsewhere"
    folder = write_snapshot(base, "acme", 100, people=5)
    shutil.rmtree(folder / "nodes")
    shutil.rmtree(folder / "relationships")
    (outside / "relationships").mkdir(parents=True)
    os.symlink(outside / "relationships", folder / "relationships")
    state, reason = snapshot_at(base, "acme", 100).state(60)
    assert state == INVALID
    assert reason.startswith(f"{folder / 'relationships'} is a symbolic link that leads outside dataset.base_path")


def age(folder: Path, when: float = OLD) -> None:
    """Set every file's and link's own time in `folder` to `when`."""
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


def test_nodes_linked_anew_inside_base_path_waits_for_the_links_own_time(tmp_path: Path) -> None:
    """An operator points nodes/ at another folder of files written long ago: the link itself is the change, so a
    snapshot without _SUCCESS waits settle_seconds from the link's time, not from its old files'."""
    folder = write_snapshot(tmp_path, "acme", 100, people=5, success_marker=False)
    shared = tmp_path / "shared-nodes"
    (folder / "nodes").rename(shared)
    os.symlink(shared, folder / "nodes")
    age(tmp_path)
    snapshot = snapshot_at(tmp_path, "acme", 100)
    assert snapshot.state(60, now=OLD + 100) == (COMPLETE, None)
    os.utime(folder / "nodes", (OLD + 90, OLD + 90), follow_symlinks=False)
    assert snapshot.state(60, now=OLD + 100) == (
        WAITING, "no _SUCCESS marker and files changed 10s ago (settle_seconds=60)")


def test_a_data_file_linked_anew_waits_for_the_links_own_time(tmp_path: Path) -> None:
    folder = write_snapshot(tmp_path, "acme", 100, people=5, success_marker=False)
    data_file = sorted((folder / "nodes").glob("*.parquet"))[0]
    kept = tmp_path / "kept" / data_file.name
    kept.parent.mkdir()
    data_file.rename(kept)
    os.symlink(kept, data_file)
    age(tmp_path)
    snapshot = snapshot_at(tmp_path, "acme", 100)
    assert snapshot.state(60, now=OLD + 100) == (COMPLETE, None)
    os.utime(data_file, (OLD + 90, OLD + 90), follow_symlinks=False)
    assert snapshot.state(60, now=OLD + 100) == (
        WAITING, "no _SUCCESS marker and files changed 10s ago (settle_seconds=60)")
