"""The alias's fence: why a worker that lost its lock cannot move the alias backwards (docs/concurrency.md, "A
worker that lost its lock").

The customer's lock (`concurrency.customer_lock`) makes a switch one check-then-act step per customer only while
its holder really holds it. A worker paused (SIGSTOP, `docker pause`) or cut off from PostgreSQL longer than the
lock's keepalive resumes believing it still holds it, while another worker took it and moved the alias on. So the
move itself checks, each time against where the truth is, right at the move:

1. before: the lock proves it is still held (`HeldLock.ensure_held`); a lost lock moves nothing;
2. the move: the target's own fence (`GraphTarget.alias_fence`: the database the alias serves and a count of its
   moves, kept by the target itself: a file beside the alias on the embedded target, the alias's PROPERTIES on
   Neo4j) must still be what the worker read before deciding, or `move_alias` refuses (FenceMoved). Every move
   raises the count, a rollback's too, so an alias moved away and back is not mistaken for an unmoved one;
3. after: the fence is read again. Ours, or something newer: done. Something older while the lock is still ours:
   a stale worker's move landed after ours, so the alias is repaired forward to ours. Something else while the
   lock is lost: the worker that holds it now decided that (a rollback may move it back on purpose); left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bluegreen_dagster.targets.base import Fence, GraphTarget


@dataclass
class Moved:
    """What a fenced move left: the database the alias serves now, and what happened besides our move ("" if
    nothing)."""

    current: str | None
    note: str = ""


def move(target: GraphTarget, customer: str, database: str, *, expect: Fence,
         newer: Callable[[str, str], bool], ensure_held: Callable[[], None] | None = None) -> Moved:
    """Move the alias from `expect` (the fence read before deciding) to `database`, checked before, during and
    after the move as this module's docstring says. Raises LostLock (nothing moved) or FenceMoved (nothing moved:
    the decision is stale). `newer(a, b)` says whether snapshot database `a` may take an alias serving `b`."""
    if ensure_held is not None:
        ensure_held()
    target.move_alias(customer, database, expect=expect)
    after = target.alias_fence(customer)
    held = _held(ensure_held)
    if after.database == database:
        return Moved(database, "" if held else "the customer lock was lost right after the move")
    if after.database is not None and not newer(database, after.database):
        return Moved(after.database, f"another worker moved it on to {after.database} right after")
    if not held:
        return Moved(after.database, f"it was moved to {after.database or '(no alias)'} right after, by a worker "
                                     "holding the customer lock now (this one lost it): left there")
    target.move_alias(customer, database, expect=after)
    return Moved(database, f"repaired forward: a stale worker had moved it back to {after.database or '(no alias)'}"
                           " right after")


def _held(ensure_held: Callable[[], None] | None) -> bool:
    from bluegreen_dagster.concurrency import LostLock  # concurrency imports Dagster: only when a lock is given

    if ensure_held is None:
        return True
    try:
        ensure_held()
    except LostLock:
        return False
    return True
