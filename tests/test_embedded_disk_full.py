"""A full disk while loading: the load fails with the free space and what to do, leaves no partial database and
never touches the alias or the snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bluegreen_dagster.snapshots import expected_counts
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.embedded import database, staging
from tests.embedded_helpers import demo, file_hashes, make_target, query, store_files

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


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
