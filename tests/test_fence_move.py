"""Every outcome of one fenced move (bluegreen_dagster/fence.py) and what it tells the user, on the embedded target:
what happened right after our move (nothing, our lock lost, a newer switch, an older stale move, the alias removed)
decides where the alias stays and the note `switch_if_newest` reports. tests/test_fence.py plays whole switches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bluegreen_dagster.bluegreen import is_newer
from bluegreen_dagster.concurrency import LostLock
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.fence import Moved, move
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets import make_target
from bluegreen_dagster.targets.base import Fence, FenceMoved, GraphTarget
from tests.conftest import make_project


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    settings = make_project(tmp_path_factory.mktemp("fence")).settings
    with make_target(settings) as loader:
        for ts in (100, 200, 300):
            write_snapshot(settings.dataset.base_path, "acme", ts, people=5)
            loader.load(snapshot_at(settings.dataset.base_path, "acme", ts))
    return settings


@pytest.fixture
def workers(settings) -> Iterator[tuple[GraphTarget, GraphTarget]]:
    """Two handles on one target (two workers), the alias on acme-100."""
    with make_target(settings) as a, make_target(settings) as b:
        a.point_alias("acme", "acme-100")
        yield a, b


def lock(*answers: bool) -> Callable[[], None]:
    """An `ensure_held` that passes or raises LostLock, one answer per call."""
    left = list(answers)

    def ensure_held() -> None:
        if not left.pop(0):
            raise LostLock("lost the customer lock")
    return ensure_held


def right_after_our_move(monkeypatch: pytest.MonkeyPatch, a: GraphTarget, then: Callable[[], None]) -> None:
    real = a.move_alias

    def move_then(customer: str, database: str, *, expect: Fence) -> None:
        real(customer, database, expect=expect)
        monkeypatch.setattr(a, "move_alias", real)  # once: a repair moves plainly
        then()

    monkeypatch.setattr(a, "move_alias", move_then)


def remove_alias(target: GraphTarget) -> None:
    os.remove(Path(target.root) / "aliases" / "acme.lbug")  # an operator deleting the alias by hand


def test_a_move_with_nothing_after_it_says_nothing_more(workers) -> None:
    a, _ = workers
    assert move(a, "acme", "acme-200", expect=a.alias_fence("acme"), newer=is_newer) == Moved("acme-200", "")
    assert move(a, "acme", "acme-300", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, True)) == Moved("acme-300", "")
    assert a.alias_target("acme") == "acme-300"


def test_a_lock_lost_right_after_our_move_is_said_and_the_move_stays(workers) -> None:
    a, _ = workers
    assert move(a, "acme", "acme-200", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, False)) == Moved("acme-200", "the customer lock was lost right after the move")
    assert a.alias_target("acme") == "acme-200"


@pytest.mark.parametrize("held", [True, False])
def test_a_newer_switch_right_after_ours_is_left_in_place(workers, monkeypatch, held: bool) -> None:
    a, b = workers
    right_after_our_move(monkeypatch, a, lambda: b.point_alias("acme", "acme-300"))
    assert move(a, "acme", "acme-200", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, held)) == Moved("acme-300", "another worker moved it on to acme-300 right after")
    assert b.alias_target("acme") == "acme-300"


def test_an_older_move_right_after_ours_is_repaired_forward_while_we_hold_the_lock(workers, monkeypatch) -> None:
    a, b = workers
    right_after_our_move(monkeypatch, a, lambda: b.point_alias("acme", "acme-100"))
    assert move(a, "acme", "acme-300", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, True)) == Moved(
        "acme-300", "repaired forward: a stale worker had moved it back to acme-100 right after")
    assert b.alias_target("acme") == "acme-300"


def test_an_older_move_right_after_ours_is_left_when_we_lost_the_lock(workers, monkeypatch) -> None:
    a, b = workers
    right_after_our_move(monkeypatch, a, lambda: b.point_alias("acme", "acme-100"))
    assert move(a, "acme", "acme-300", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, False)) == Moved(
        "acme-100", "it was moved to acme-100 right after, by a worker holding the customer lock now (this one "
                    "lost it): left there")
    assert b.alias_target("acme") == "acme-100"


def test_an_alias_removed_right_after_our_move_is_restored_only_while_we_hold_the_lock(workers, monkeypatch) -> None:
    a, b = workers
    right_after_our_move(monkeypatch, a, lambda: remove_alias(b))
    assert move(a, "acme", "acme-200", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, True)) == Moved(
        "acme-200", "repaired forward: a stale worker had moved it back to (no alias) right after")
    assert b.alias_target("acme") == "acme-200"

    right_after_our_move(monkeypatch, a, lambda: remove_alias(b))
    assert move(a, "acme", "acme-300", expect=a.alias_fence("acme"), newer=is_newer,
                ensure_held=lock(True, False)) == Moved(
        None, "it was moved to (no alias) right after, by a worker holding the customer lock now (this one lost it): "
              "left there")
    assert b.alias_target("acme") is None


def test_a_lock_lost_before_the_move_moves_nothing(workers) -> None:
    a, _ = workers
    with pytest.raises(LostLock):
        move(a, "acme", "acme-200", expect=a.alias_fence("acme"), newer=is_newer, ensure_held=lock(False))
    assert a.alias_target("acme") == "acme-100"


def test_a_repair_is_fenced_too_a_newer_switch_during_it_wins(workers, monkeypatch) -> None:
    """We moved to acme-200, a stale worker put acme-100 back, and while we read that, a newer switch moved the
    alias to acme-300: our repair forward must not pull it back to acme-200."""
    a, b = workers
    right_after_our_move(monkeypatch, a, lambda: b.point_alias("acme", "acme-100"))
    read = a.alias_fence
    reads = []

    def read_then_newer_switch(customer: str) -> Fence:
        fence = read(customer)
        reads.append(fence)
        if len(reads) == 1:  # our read right after the move
            b.point_alias("acme", "acme-300")
        return fence

    monkeypatch.setattr(a, "alias_fence", read_then_newer_switch)
    with pytest.raises(FenceMoved, match="not moved to acme-200"):
        move(a, "acme", "acme-200", expect=read("acme"), newer=is_newer, ensure_held=lock(True, True))
    assert b.alias_target("acme") == "acme-300"
