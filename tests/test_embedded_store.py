"""The embedded store: alias switching, dropping, listing, the load lock and name checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bluegreen_dagster.snapshots import expected_counts
from bluegreen_dagster.targets.base import PermanentTargetError
from bluegreen_dagster.targets.embedded import store
from tests.embedded_helpers import demo, make_target, query


def test_point_alias_switches_atomically_and_drop_refuses_alias_target(tmp_path):
    target = make_target(tmp_path)
    old, new = demo(tmp_path, ts=1000, people=50), demo(tmp_path, ts=2000, people=60)
    target.load(old)
    target.load(new)

    assert target.alias_target("acme") is None
    with pytest.raises(PermanentTargetError, match="does not exist"):
        target.point_alias("acme", "acme-3000")
    assert target.alias_target("acme") is None

    target.point_alias("acme", old.key)
    assert target.alias_target("acme") == old.key
    target.point_alias("acme", new.key)
    alias = Path(target.reader_location("acme"))
    assert alias.is_symlink() and os.readlink(alias) == f"../databases/{new.key}.lbug"
    assert target.alias_target("acme") == new.key
    assert target.database_path(old.key).is_file()  # the old target stays until cleanup
    assert query(str(alias), "MATCH (p:Person) RETURN count(*)") == [[60]]
    assert [p.name for p in alias.parent.iterdir()] == ["acme.lbug"]  # no temp link left behind

    with pytest.raises(PermanentTargetError, match="alias"):
        target.drop_database(new.key)
    assert target.database_path(new.key).is_file()
    target.drop_database(old.key)
    assert not target.database_path(old.key).exists()
    target.drop_database(old.key)  # already gone: no error
    assert target.count(new.key).nodes == expected_counts(new).nodes


class _WatchedOs:
    """Stands in for `os` inside the embedded store: checks before and after every call that the alias exists."""

    def __init__(self, alias: Path, seen: list[str]) -> None:
        self._alias, self._seen = alias, seen

    def __getattr__(self, name):
        value = getattr(os, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args, **kwargs):
            self._seen.append(os.readlink(self._alias) if os.path.lexists(self._alias) else "MISSING")
            result = value(*args, **kwargs)
            self._seen.append(os.readlink(self._alias) if os.path.lexists(self._alias) else "MISSING")
            return result

        return call


def test_alias_never_missing_during_switch(tmp_path, monkeypatch):
    target = make_target(tmp_path)
    a, b = demo(tmp_path, ts=1000, people=10), demo(tmp_path, ts=2000, people=10)
    target.load(a)
    target.load(b)
    target.point_alias("acme", a.key)
    seen: list[str] = []
    monkeypatch.setattr(store, "os", _WatchedOs(target.root / "aliases" / "acme.lbug", seen))
    target.point_alias("acme", b.key)
    monkeypatch.undo()
    assert seen and "MISSING" not in seen
    assert set(seen) == {f"../databases/{a.key}.lbug", f"../databases/{b.key}.lbug"}
    assert target.alias_target("acme") == b.key


def test_list_databases_customer_isolation(tmp_path):
    target = make_target(tmp_path)
    target.load(demo(tmp_path, "acme", 1000, people=20))
    target.load(demo(tmp_path, "acme-corp", 1000, people=20))
    target.load(demo(tmp_path, "acme", 1001, people=20))
    (target.root / "loading" / "acme-1002.lbug").write_bytes(b"")
    (target.root / "loading" / "acme-corp-1003.lbug").write_bytes(b"")
    (target.root / "loading" / "acme-1004.lock").write_bytes(b"")  # no process holds these: crashed loads
    (target.root / "databases" / "notes.lbug").write_bytes(b"")

    assert [(d.name, d.status) for d in target.list_databases("acme")] == [
        ("acme-1000", "online"), ("acme-1001", "online"), ("acme-1002", "failed"), ("acme-1004", "failed")]
    assert [(d.name, d.status) for d in target.list_databases("acme-corp")] == [
        ("acme-corp-1000", "online"), ("acme-corp-1003", "failed")]
    assert target.list_databases("other") == []


@pytest.mark.parametrize("call", [
    lambda t: t.count("../../etc/passwd"),
    lambda t: t.drop_database("acme-1000/../../x"),
    lambda t: t.point_alias("acme", "acme-1000.lbug"),
    lambda t: t.point_alias("../evil", "acme-1000"),
    lambda t: t.alias_target("Acme Corp"),
    lambda t: t.reader_location("acme/../x"),
], ids=["count", "drop", "point-database", "point-alias", "alias-target", "reader-location"])
def test_names_that_are_not_snapshot_names_never_become_paths(tmp_path, call):
    target = make_target(tmp_path)
    target.load(demo(tmp_path, ts=1000, people=10))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(PermanentTargetError, match=r"refusing to use (database|alias) name"):
        call(target)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_lock_on_a_released_lock_file_is_not_a_lock(tmp_path, monkeypatch):
    # Loader B opens loading/<key>.lock while A still holds it; A finishes and unlinks it, loader C creates a new
    # lock file of that name and locks it. B's flock then succeeds on A's unlinked file: B must not load too.
    target = make_target(tmp_path)
    target.store.ensure_dirs()
    key = "acme-1000"
    lock_path = target.store.loading_dir / f"{key}.lock"
    held_by_c: list[int] = []
    real_flock = store.fcntl.flock

    class Fcntl:
        LOCK_EX, LOCK_NB = store.fcntl.LOCK_EX, store.fcntl.LOCK_NB

        @staticmethod
        def flock(fd, op):
            if not held_by_c:
                lock_path.unlink()  # A is done
                c = os.open(lock_path, os.O_RDWR | os.O_CREAT)  # C starts
                real_flock(c, op)
                held_by_c.append(c)
            return real_flock(fd, op)

    monkeypatch.setattr(store, "fcntl", Fcntl)
    entered = False
    try:
        with pytest.raises(Exception, match="being loaded by another process"):
            with target.store.load_lock(key):
                entered = True
    finally:
        os.close(held_by_c[0])
    assert not entered
    assert lock_path.exists()  # C's lock file is C's to remove
