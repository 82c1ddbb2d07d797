"""A full disk while loading: the load fails with the free space and what to do, leaves no partial database and
never touches the alias or the snapshot.

The job-level tests fill a real small disk (a tmpfs mounted for the test, when this process may mount one) at the
moment the load writes its staging files or LadybugDB copies rows; where mounting is not allowed they simulate the
same write failure. The target-level tests below them inject the failure at each writer (works anywhere on Linux).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.embedded import database, staging
from bluegreen_dagster.targets.embedded import target as embedded_target
from tests.conftest import Project
from tests.embedded_helpers import demo, file_hashes, make_target, query, store_files
from tests.helpers import alias_of, databases, metadata, run_partition

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")

DISK_MB = 16


class SmallDisk:
    """The embedded store's disk: a tmpfs of DISK_MB when mounting is allowed, else a folder whose writes fail on
    demand. While `full` (set by the test, cleared by `free`), `before_write(leave)` uses the free space up to
    `leave` bytes, as another customer's load would (or, simulated, fails the write)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(root)], capture_output=True).returncode == 0
        self.ballast = root / "ballast"
        self.full = False

    def before_write(self, leave: int = 0) -> None:
        if not self.full:
            return
        if not self.mounted:
            raise OSError(errno.ENOSPC, "No space left on device (simulated: tmpfs could not be mounted)")
        with open(self.ballast, "ab") as fh:
            while (room := os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize) > leave:
                fh.write(b"\0" * max(4096, min(65536, room - leave)))
                fh.flush()

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)
        self.full = False

    def unmount(self) -> None:
        if self.mounted:  # lazy: a failed test's traceback may still hold a file on it open
            subprocess.run(["umount", "-l", str(self.root)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    disk = SmallDisk(root)
    try:
        yield disk
    finally:
        disk.unmount()


# Where the load is when the disk fills: pyarrow writing the staging files, or LadybugDB copying rows (with a
# little room left, so the database file is created and the COPY itself fails).
PHASES = {"staging": ("stage_nodes", 0), "copy": ("fill", 256 * 1024)}


@pytest.mark.parametrize("phase", list(PHASES))
def test_disk_full_while_loading(project: Project, fault, small_disk: SmallDisk, monkeypatch, phase: str) -> None:
    project.reconfigure(embedded={"path": str(small_disk.root / "store"), "min_free_disk_mb": 1})
    function, leave = PHASES[phase]
    real = getattr(embedded_target, function)

    def fill_the_disk_first(*args, **kwargs):
        small_disk.before_write(leave)
        return real(*args, **kwargs)

    with dg.instance_for_test() as instance:
        write_snapshot(project.data, "acme", 100, people=30)
        assert run_partition(project, instance, "acme-100").success
        write_snapshot(project.data, "acme", 200, people=3000)
        monkeypatch.setattr(embedded_target, function, fill_the_disk_first)
        small_disk.full = True  # from the load's first write on, and at the step's retry, until free()
        probe = fault(f"disk full while loading ({phase}, {'tmpfs' if small_disk.mounted else 'simulated'})",
                      project, "acme")
        result = probe.run(instance, "acme-200")
        assert not result.success
        assert [e.step_key for e in result.get_step_failure_events()] == ["snapshot_database"]
        assert databases(project, "acme") == ["acme-100"]
        assert not os.listdir(small_disk.root / "store" / "loading")  # no partial file, no staging folder
        probe.conclude(alias="acme-100", message=probe.message(result),
                       mentions=["disk full while loading acme-200", "the partial database was removed",
                                 "MB are free now and this load needs about", "free space on that disk",
                                 "re-run the partition", "gave up after 1 retries"])

        small_disk.free()  # space again: the same snapshot loads and goes live
        again = run_partition(project, instance, "acme-200")
    assert again.success and alias_of(project, "acme") == "acme-200"
    assert metadata(again, "snapshot_database")["nodes"] == 3000 + 60


def _live_and_next(tmp_path: Path):
    target = make_target(tmp_path, min_free_disk_mb=0)
    live, new = demo(tmp_path, ts=1000, people=40), demo(tmp_path, ts=2000, people=60)
    target.load(live)
    target.point_alias("acme", live.key)
    return target, live, new


def _assert_failed_cleanly(target, live, new, files_before, message: str) -> None:
    assert f"disk full while loading {new.key} into {target.root}" in message
    assert "the partial database was removed" in message
    assert "MB are free now and this load needs about" in message
    assert "free space on that disk" in message and "re-run the partition" in message
    assert store_files(target) == {"databases": [f"{live.key}.lbug"], "loading": []}
    assert target.alias_target("acme") == live.key
    assert query(target.reader_location("acme"), "MATCH (p:Person) RETURN count(*)") == [[40]]
    assert file_hashes(new.path) == files_before
    assert [(d.name, d.status) for d in target.list_databases("acme")] == [(live.key, "online")]


def test_staging_write_hits_a_full_disk(tmp_path, monkeypatch):
    target, live, new = _live_and_next(tmp_path)
    files_before = file_hashes(new.path)
    real_writer = staging.ParquetWriter
    opened: list[Path] = []

    def writer_on_a_full_disk(path, schema, **kwargs):
        opened.append(Path(path))
        Path(path).write_bytes(b"")  # the staging file exists, as it would on a real disk
        return real_writer("/dev/full", schema, **kwargs)  # every write: ENOSPC from the kernel

    monkeypatch.setattr(staging, "ParquetWriter", writer_on_a_full_disk)
    with pytest.raises(TransientTargetError) as failure:
        target.load(new)
    assert opened and opened[0].parent.name == f"{new.key}.lbug.staging"
    assert "No space left on device" in str(failure.value)
    _assert_failed_cleanly(target, live, new, files_before, str(failure.value))

    monkeypatch.undo()
    report = target.load(new)  # once there is room again, the same snapshot loads
    assert not report.reused and target.count(new.key) == expected_counts(new)


def test_ladybug_hits_a_full_disk_while_copying(tmp_path, monkeypatch):
    target, live, new = _live_and_next(tmp_path)
    files_before = file_hashes(new.path)
    real_copy = database.copy_rows
    copies: list[str] = []

    def copy_then_disk_full(conn, statement, name):
        partial = target.root / "loading" / f"{new.key}.lbug"
        assert partial.exists() and Path(f"{partial}.staging").is_dir()  # there is something to clean up
        if copies:
            raise RuntimeError(f"IO exception: Cannot write to file {partial}: No space left on device")
        copies.append(name)
        return real_copy(conn, statement, name)

    monkeypatch.setattr(database, "copy_rows", copy_then_disk_full)
    with pytest.raises(TransientTargetError) as failure:
        target.load(new)
    assert copies
    _assert_failed_cleanly(target, live, new, files_before, str(failure.value))
