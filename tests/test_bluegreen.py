"""Each blue/green rule, on the real embedded target, and the customer lock in separate processes sharing one
(SQLite) Dagster instance. tests/test_concurrency.py checks the load bound; tests/test_multi_host.py does both across
"hosts" on PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.concurrency import customer_lock
from bluegreen_dagster.config import load_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import parse_partition_key
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets import make_target
from tests.conftest import Project
from tests.helpers import alias_of


def load(project: Project, customer: str, ts: int, people: int = 10) -> str:
    write_snapshot(project.data, customer, ts, people=people)
    snap = snapshot_at(project.data, customer, ts)
    with make_target(project.settings) as target:
        target.load(snap)
    return snap.key


def switch(project: Project, key: str, instance: dg.DagsterInstance | None = None) -> rules.SwitchResult:
    sid = parse_partition_key(key)
    snap = snapshot_at(project.data, sid.customer, sid.timestamp)
    with make_target(project.settings) as target:
        if instance is None:
            return rules.switch_if_newest(target, key, expected_counts(snap))
        with customer_lock(instance, sid.customer):
            return rules.switch_if_newest(target, key, expected_counts(snap))


def nothing_in_flight() -> set[str]:
    return set()


def names(project: Project, customer: str) -> list[str]:
    with make_target(project.settings) as target:
        return sorted(d.name for d in target.list_databases(customer))


def test_alias_moves_forward_only(project: Project) -> None:
    old, new = load(project, "acme", 100), load(project, "acme", 200)
    assert switch(project, new).switched
    result = switch(project, old)
    assert not result.switched and result.current == new and "newer" in result.reason
    assert alias_of(project, "acme") == new


def test_alias_never_moves_to_an_unverified_database(project: Project) -> None:
    key = load(project, "acme", 100)
    with make_target(project.settings) as target:
        wrong = GraphCounts(nodes=999, relationships=0, labels={}, types={})
        with pytest.raises(rules.VerificationFailed, match="nodes: expected 999"):
            rules.switch_if_newest(target, key, wrong)
        assert target.alias_target("acme") is None


def _switch_in_process(config_file: str, home: str, key: str, start: float) -> None:
    project = Project(Path(config_file).parent, Path(config_file), load_settings(config_file))
    with dg.DagsterInstance.from_config(home) as instance:
        time.sleep(max(0.0, start - time.time()))
        switch(project, key, instance)


def test_overlapping_switches_in_separate_processes_end_on_the_newest(project: Project) -> None:
    keys = [load(project, "acme", ts) for ts in (100, 200, 300, 400, 500)]
    random.Random(7).shuffle(keys)
    home = project.root / "dagster_home"
    home.mkdir()
    dg.DagsterInstance.from_config(str(home)).dispose()
    start = time.time() + 3.0  # all processes race for the lock at once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_switch_in_process, args=(str(project.config_file), str(home), k, start))
             for k in keys]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert alias_of(project, "acme") == "acme-500"


def test_cleanup_keeps_newest_n_and_never_the_alias_target(project: Project) -> None:
    keys = [load(project, "acme", ts) for ts in (100, 200, 300, 400)]
    switch(project, keys[0])  # the alias is on the oldest (the newer ones were never switched to)
    result = rules.cleanup(make_target(project.settings), "acme", 2, nothing_in_flight)
    assert result.dropped == ["acme-200"]
    assert result.protected == {"acme-100": "alias target"}
    assert names(project, "acme") == ["acme-100", "acme-300", "acme-400"]


def test_cleanup_never_drops_a_database_still_loading(project: Project) -> None:
    for ts in (100, 200, 300):
        load(project, "acme", ts)
    switch(project, "acme-300")
    # acme-100 is being (re)loaded by another run: Dagster's run records say so.
    result = rules.cleanup(make_target(project.settings), "acme", 1, lambda: {"acme-100"})
    assert result.protected == {"acme-100": "still loading"} and result.dropped == ["acme-200"]
    assert names(project, "acme") == ["acme-100", "acme-300"]


def test_cleanup_reads_in_flight_runs_after_listing_databases(project: Project) -> None:
    """A run that starts loading while cleanup runs: its database appears after the run record, so reading the
    run records after the listing always covers it."""
    load(project, "acme", 100)
    switch(project, "acme-100")
    order = []

    class Recording:
        def __init__(self, target):
            self.target = target

        def __getattr__(self, name):
            if name == "list_databases":
                order.append("list")
            return getattr(self.target, name)

    def in_flight():
        order.append("in_flight")
        return set()

    rules.cleanup(Recording(make_target(project.settings)), "acme", 1, in_flight)
    assert order == ["list", "in_flight"]


def test_cleanup_counts_its_own_database_and_never_drops_it(project: Project) -> None:
    for ts in (100, 200, 300):
        load(project, "acme", ts)
    switch(project, "acme-300")
    # The run of acme-200 (verified, not switched to: older) cleans up with keep=1.
    result = rules.cleanup(make_target(project.settings), "acme", 1, lambda: {"acme-200"}, own="acme-200")
    assert result.kept == ["acme-300"] and result.protected == {"acme-200": "this run's database"}
    assert result.dropped == ["acme-100"]


def test_cleanup_touches_only_its_customer(project: Project) -> None:
    load(project, "acme", 100)
    load(project, "acme", 200)
    load(project, "acme-corp", 50)
    rules.cleanup(make_target(project.settings), "acme", 1, nothing_in_flight)
    assert names(project, "acme") == ["acme-200"]
    assert names(project, "acme-corp") == ["acme-corp-50"]


def test_a_crashed_loads_leftovers_are_cleaned_but_a_load_in_flight_is_not(project: Project) -> None:
    import fcntl
    import os

    for ts in (100, 200):
        load(project, "acme", ts)
    switch(project, "acme-200")
    loading = project.settings.embedded.path / "loading"
    # acme-300: a run was killed mid-load (its partial file and lock file remain, nobody holds the lock).
    (loading / "acme-300.lbug").write_bytes(b"half a database")
    (loading / "acme-300.lock").touch()
    # acme-400: a load is running right now in another process (it holds the lock).
    (loading / "acme-400.lbug").write_bytes(b"being written")
    fd = os.open(loading / "acme-400.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with make_target(project.settings) as target:
            assert {d.name: d.status for d in target.list_databases("acme")} == {
                "acme-100": "online", "acme-200": "online", "acme-300": "failed", "acme-400": "loading"}
        # Dagster's run records say acme-400 is in flight; nothing says so of acme-300.
        result = rules.cleanup(make_target(project.settings), "acme", 2, lambda: {"acme-400"})
    finally:
        os.close(fd)
    assert result.dropped == ["acme-300"]
    assert result.protected == {"acme-400": "still loading"}
    assert result.kept == ["acme-200", "acme-100"]
    assert not (loading / "acme-300.lbug").exists() and (loading / "acme-400.lbug").exists()
