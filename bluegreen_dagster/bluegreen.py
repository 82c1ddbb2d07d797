"""The blue/green rules, target-agnostic. The Dagster steps call these; tests check each rule on every target.

1. The alias only moves to a database that is fully loaded and verified (re-verified right before the switch)
   and plausible (plausibility.py: never an empty graph, no big shrink unless overridden), and only forward in
   time: an older snapshot never takes the alias from a newer one (only an operator's rollback, rollback.py, moves
   it back, and only to a database that re-verifies and is not empty). So the alias target always passed the gate,
   and cleanup, which never drops it, never leaves a customer without a database that passed it.
2. Cleanup keeps the newest `keep` databases of a customer and never drops the alias target, the database the
   customer is pinned to (pins.py) or a database still loading. "Still loading" has one source, the caller's
   `in_flight` (Dagster's run records, see `records.in_flight_partitions`); any other database that is not
   online is a crashed load's leftover and is removed whatever its age, except one in a state the store has not
   decided yet (`UNDECIDED_STATUSES`: a cluster member not answering, a database moving or starting).
3. A database the alias left is kept for `drain_seconds` after that switch (the drain), whatever `keep` says:
   readers' transactions that began on it before the switch finish there. The switch times come from the
   caller (`records.left_alias_at`, what Dagster recorded).

The caller holds the customer's lock (`concurrency.customer_lock`) around `switch_if_newest` and `cleanup`, which
makes each one check-then-act step per customer, whichever host runs it. A caller that lost its lock without
knowing (paused, cut off) is held back by the target itself: the alias's fence (fence.py) and the target's refusal
to drop an alias target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from bluegreen_dagster import fence, plausibility, value_stats
from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.targets.base import UNDECIDED_STATUSES, FenceMoved, GraphTarget, PermanentTargetError


class VerificationFailed(PermanentTargetError):
    """The database does not hold what the snapshot promised."""


def verify(target: GraphTarget, database: str, expected: GraphCounts) -> GraphCounts:
    """Count the database and compare with the snapshot, counts and then per property the number of values and
    their bounds (value_stats.py); raise VerificationFailed listing every difference."""
    actual = target.count(database)
    differences = expected.differences(actual)
    if not differences and expected.values:
        found = target.value_stats(database, expected.values)
        if found is not None:
            differences = value_stats.differences(expected.values, found)
    if differences:
        raise VerificationFailed(f"{database} does not match its snapshot: " + "; ".join(differences))
    return actual


@dataclass
class SwitchResult:
    switched: bool
    previous: str | None
    current: str | None
    reason: str


def live_counts(target: GraphTarget, customer: str) -> tuple[str | None, GraphCounts | None]:
    """(the alias target, its counts), or (None, None) when the customer has no alias yet."""
    live = target.alias_target(customer)
    return live, (target.count(live) if live else None)


def is_newer(database: str, current: str) -> bool:
    """Whether snapshot database `database` may take an alias that serves `current` (a database that is not a
    snapshot of ours, e.g. set by hand, may be taken over)."""
    try:
        return parse_partition_key(database).ts > parse_partition_key(current).ts
    except InvalidName:
        return True


def switch_if_newest(target: GraphTarget, database: str, expected: GraphCounts, *,
                     max_shrink_percent: float | None = None, allow_shrink: bool = False,
                     pinned: str | None = None, ensure_held: Callable[[], None] | None = None) -> SwitchResult:
    """Point the customer's alias at `database` if it is newer than the current target, after verifying it and,
    when `max_shrink_percent` is given, passing the plausibility gate against the live database.

    `pinned` is the customer's pin, described (`pins.Pin.describe`), when an operator pinned the alias: then the
    alias stays where it is, whatever `database` is. `ensure_held` (the customer lock's `ensure_held`) proves the
    lock is still held right before the move. The move is fenced (fence.py): it happens only if the alias still
    serves what was read here, and is checked again right after it."""
    new = parse_partition_key(database)
    before = target.alias_fence(new.customer)
    previous = before.database
    if pinned:
        return SwitchResult(False, previous, previous,
                            f"alias {new.customer} stays on {previous}: {pinned}; "
                            f"`bluegreen unpin {new.customer}` to resume switching")
    if previous == database:
        return SwitchResult(False, previous, previous, f"alias {new.customer} already points at {database}")
    if previous is not None and not is_newer(database, previous):
        return SwitchResult(False, previous, previous,
                            f"alias {new.customer} stays on {previous}: it is newer than {database}")
    actual = verify(target, database, expected)
    if max_shrink_percent is not None:
        plausibility.check(actual, target.count(previous) if previous else None,
                           max_shrink_percent=max_shrink_percent, new_name=database, live_name=previous,
                           allow_shrink=allow_shrink)
    try:
        moved = fence.move(target, new.customer, database, expect=before, newer=is_newer, ensure_held=ensure_held)
    except FenceMoved as exc:
        return SwitchResult(False, previous, target.alias_target(new.customer), f"not moved: {exc}")
    reason = f"alias {new.customer} moved {previous or '(new alias)'} -> {database}"
    return SwitchResult(True, previous, moved.current, f"{reason}; {moved.note}" if moved.note else reason)


@dataclass
class CleanupResult:
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)  # name -> why it was not dropped although old


def cleanup(target: GraphTarget, customer: str, keep: int,
            in_flight: Callable[[], Collection[str]], own: str | None = None,
            pinned: str | None = None, *, left_at: Mapping[str, float] | None = None,
            drain_seconds: float = 300.0, now: float | None = None,
            ensure_held: Callable[[], None] = lambda: None) -> CleanupResult:
    """Drop this customer's databases beyond the newest `keep`, except the alias target, the `pinned` database
    (the one the customer's pin names) and loads in progress.

    `in_flight()` names the databases whose runs are queued or running. It is called after the databases are
    listed: a run creates its database only after its run record exists, so every database in the listing that
    belongs to a live run is named by it. `own` is the calling run's own (verified) database: it counts as a kept
    one, and is never dropped by its own run (the next cleanup decides if it falls beyond `keep`).

    `left_at` maps a database to the time (epoch seconds) it stopped being the alias target; one that left less
    than `drain_seconds` ago is kept ("draining"). `ensure_held` (the customer lock's) runs before each drop: a
    worker that lost its lock stops before dropping anything more."""
    result = CleanupResult()
    now = time.time() if now is None else now

    def draining(name: str) -> str | None:
        left = (left_at or {}).get(name)
        if left is None or name == alias or now - left >= drain_seconds:
            return None
        return (f"draining: the alias left it {now - left:.0f}s ago, kept for drain_seconds {drain_seconds:g}s "
                "so readers' transactions finish")

    alias = target.alias_target(customer)
    databases = []
    for info in target.list_databases(customer):
        try:
            sid = parse_partition_key(info.name)
        except InvalidName:
            continue  # not ours: never touch it
        if sid.customer == customer:
            databases.append((sid.ts, info))
    loading = set(in_flight())
    databases.sort(key=lambda item: item[0], reverse=True)
    for _, info in databases:  # newest first
        if info.name == own:
            if len(result.kept) < keep:
                result.kept.append(info.name)
            else:
                result.protected[info.name] = "this run's database"
        elif info.name in loading:
            result.protected[info.name] = "still loading"
        elif info.name == pinned:  # whatever its status or age: an operator chose it
            if len(result.kept) < keep:
                result.kept.append(info.name)
            else:
                result.protected[info.name] = "pinned"
        elif info.status in UNDECIDED_STATUSES and info.name != alias:
            result.protected[info.name] = f"{info.status}: the store has not decided about it yet"
        elif info.status != "online" and info.name != alias:
            if draining(info.name):  # once the alias target: not a crashed load's leftover
                result.protected[info.name] = draining(info.name)
            else:
                ensure_held()
                target.drop_database(info.name)  # a crashed load's leftovers never count as a kept database
                result.dropped.append(info.name)
        elif len(result.kept) < keep:
            result.kept.append(info.name)
        elif info.name == alias:
            result.protected[info.name] = "alias target"
        elif draining(info.name):
            result.protected[info.name] = draining(info.name)
        else:
            ensure_held()
            target.drop_database(info.name)
            result.dropped.append(info.name)
    return result
