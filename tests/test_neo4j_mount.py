"""When an Arrow-built database is ready (targets/neo4j/arrow_mount.py), and WAIT that gives up (admin.py), on the
Enterprise stand-in: GDS registering its database seconds after RELATIONSHIP_LOAD_DONE, never registering it, and
CREATE/DROP whose WAIT answers success=false while the operation finishes later (tests/standin/dbms.py `Faults`).
"""

from __future__ import annotations

import time

import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import standin_settings

PEOPLE = 20
NODES = PEOPLE + 1  # the demo snapshot: 20 people, 1 company


def snapshot(settings, ts: int = 100):
    write_snapshot(settings.dataset.base_path, "acme", ts, people=PEOPLE)
    return snapshot_at(settings.dataset.base_path, "acme", ts)


def creates(standin) -> list[tuple[str, float]]:
    """Every CREATE DATABASE the target sent (plain or IF NOT EXISTS), with when the stand-in got it."""
    return [(what, at) for _, what, at in _timed(standin) if what in ("CREATE_DATABASE", "MOUNT_DATABASE")]


def _timed(standin):
    return [(server, what, details.get("at", 0.0)) for server, what, details in standin.dbms.events]


@pytest.fixture
def stamped(standin, monkeypatch):
    """The stand-in's event log with a time on every entry."""
    original = standin.dbms.log

    def log(server, what, **details):
        original(server, what, at=time.monotonic(), **details)

    monkeypatch.setattr(standin.dbms, "log", log)
    return standin


@pytest.mark.slow
def test_a_database_gds_registers_20s_late_is_waited_for_never_created(stamped, tmp_path):
    """~21 s. The default wait (neo4j.arrow_mount_wait 30 s) outlasts GDS's 20 s: no CREATE of our own."""
    standin = stamped
    standin.dbms.faults.register_after_seconds = 20
    settings = standin_settings(standin, tmp_path, online_timeout=60)
    with Neo4jTarget(settings, poll_interval=0.2) as target:
        started = time.monotonic()
        report = target.load(snapshot(settings))
    assert time.monotonic() - started >= 20
    assert creates(standin) == []
    assert standin.dbms.events_of("MOUNTED_INCOMPLETE_STORE") == []
    assert standin.dbms.events_of("GDS_UNABLE_TO_START") == []
    assert report.nodes == NODES and len(standin.dbms.databases["acme-100"].graph.nodes) == NODES


def test_a_database_gds_never_registers_is_mounted_after_the_whole_wait(stamped, tmp_path):
    """GDS writes the store for 1 s and never registers it: mounted (IF NOT EXISTS) only after arrow_mount_wait."""
    standin = stamped
    standin.dbms.faults.register_after_import = False
    standin.dbms.faults.register_after_seconds = 1.0
    settings = standin_settings(standin, tmp_path, online_timeout=10, arrow_mount_wait=1.5)
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        report = target.load(snapshot(settings))
    [done] = [at for _, what, at in _timed(standin) if what == "v1/RELATIONSHIP_LOAD_DONE"]
    [(what, at)] = creates(standin)
    assert what == "MOUNT_DATABASE" and at - done >= 1.5
    assert standin.dbms.events_of("MOUNTED_INCOMPLETE_STORE") == []
    assert report.nodes == NODES and len(standin.dbms.databases["acme-100"].graph.nodes) == NODES


def test_a_wait_cut_short_by_online_timeout_mounts_nothing_and_the_retry_reuses_gds_database(stamped, tmp_path):
    """The snapshot asks for 5 s but online_timeout is 1 s: GDS may still be writing, so a clear transient error
    and no CREATE. A retry at once meets "already exists" (GDS's store) and does not replace it (force=true)
    either; GDS registers the database at 4 s, and the next retry finds and reuses it."""
    standin = stamped
    standin.dbms.faults.register_after_seconds = 4.0
    settings = standin_settings(standin, tmp_path, online_timeout=1, arrow_mount_wait=5)
    snap = snapshot(settings)
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        for _ in range(2):
            with pytest.raises(TransientTargetError, match=r"GDS may still be writing.*raise neo4j.online_timeout"):
                target.load(snap)
        assert creates(standin) == []
        assert [e.get("force") for e in standin.dbms.events_of("v1/CREATE_DATABASE")] == [False, False]
        deadline = time.monotonic() + 10
        while "acme-100" not in standin.dbms.database_names() and time.monotonic() < deadline:
            time.sleep(0.1)
        report = target.load(snap)
    assert report.reused and report.nodes == NODES
    assert creates(standin) == [] and standin.dbms.events_of("GDS_UNABLE_TO_START") == []
    assert standin.dbms.events_of("REPLACED_STORE_BEING_REGISTERED") == []


def test_a_drop_whose_wait_gives_up_is_polled_until_gone_before_the_same_name_is_created(standin, tmp_path):
    """A leftover of a failed load is dropped, WAIT answers success=false and the drop finishes 1 s later: the
    Cypher loader's CREATE of the same name waits for it instead of failing with "already exists"."""
    standin.dbms.add_database("acme-100", status="offline")
    standin.dbms.faults.wait_gives_up["DROP_DATABASE"] = 1.0
    settings = standin_settings(standin, tmp_path, loader="cypher", online_timeout=5)
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        report = target.load(snapshot(settings))
    assert report.nodes == NODES
    assert [w for _, w, _ in standin.dbms.events if w in ("DROP_DATABASE", "CREATE_DATABASE")] == \
        ["DROP_DATABASE", "CREATE_DATABASE"]


def test_a_create_whose_wait_gives_up_is_not_taken_as_created(standin, tmp_path):
    """CREATE ... WAIT answers success=false and the database starts 1 s later: create_database returns only once
    it is online; the same for the mount (IF NOT EXISTS)."""
    standin.dbms.faults.wait_gives_up.update(CREATE_DATABASE=1.0, MOUNT_DATABASE=1.0)
    settings = standin_settings(standin, tmp_path, online_timeout=5)
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        for name, mount in (("acme-100", False), ("acme-200", True)):
            started = time.monotonic()
            target.admin.create_database(name, mount=mount)
            assert time.monotonic() - started >= 0.9
            assert target.admin.database_status(name) == ("online", "")


def test_a_create_that_never_finishes_is_a_transient_error_naming_the_wait(standin, tmp_path):
    standin.dbms.faults.wait_gives_up["CREATE_DATABASE"] = 60.0
    settings = standin_settings(standin, tmp_path, online_timeout=1)
    with Neo4jTarget(settings, poll_interval=0.05) as target, \
            pytest.raises(TransientTargetError, match=r"acme-100 is starting after 1s; WAIT gave up .*TimedOut"):
        target.admin.create_database("acme-100")
