"""The blue/green rules, target-agnostic. The Dagster steps call these; tests check each rule on every target.

1. The alias only moves to a database that is fully loaded and verified (re-verified under the lock), and only
   forward in time: an older snapshot never takes the alias from a newer one, however runs overlap.
2. Cleanup keeps the newest `keep` databases of a customer and never drops the alias target or a database still
   loading. Leftovers of a crashed load (status "failed") are removed whatever their age.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bluegreen_dagster.locks import customer_lock, loads_in_progress
from bluegreen_dagster.snapshots import GraphCounts, InvalidName, parse_partition_key
from bluegreen_dagster.targets.base import GraphTarget, PermanentTargetError


class VerificationFailed(PermanentTargetError):
    """The database does not hold what the snapshot promised."""


def verify(target: GraphTarget, database: str, expected: GraphCounts) -> GraphCounts:
    """Count the database and compare with the snapshot; raise VerificationFailed listing every difference."""
    actual = target.count(database)
    differences = expected.differences(actual)
    if differences:
        raise VerificationFailed(f"{database} does not match its snapshot: " + "; ".join(differences))
    return actual


@dataclass
class SwitchResult:
    switched: bool
    previous: str | None
    current: str | None
    reason: str


def switch_if_newest(target: GraphTarget, database: str, expected: GraphCounts, state_path: Path) -> SwitchResult:
    """Point the customer's alias at `database` if it is newer than the current target, after verifying it."""
    new = parse_partition_key(database)
    with customer_lock(state_path, new.customer):
        previous = target.alias_target(new.customer)
        if previous == database:
            return SwitchResult(False, previous, previous, f"alias {new.customer} already points at {database}")
        if previous is not None:
            try:
                current = parse_partition_key(previous)
            except InvalidName:
                current = None  # an alias set by hand to something else: a verified snapshot may take it over
            if current is not None and current.ts >= new.ts:
                return SwitchResult(False, previous, previous,
                                    f"alias {new.customer} stays on {previous}: it is newer than {database}")
        verify(target, database, expected)
        target.point_alias(new.customer, database)
        return SwitchResult(True, previous, database,
                            f"alias {new.customer} moved {previous or '(new alias)'} -> {database}")


@dataclass
class CleanupResult:
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)  # name -> why it was not dropped although old


def cleanup(target: GraphTarget, customer: str, keep: int, state_path: Path,
            in_flight: set[str] | frozenset[str] = frozenset()) -> CleanupResult:
    """Drop this customer's databases beyond the newest `keep`, except the alias target and loads in progress."""
    result = CleanupResult()
    with customer_lock(state_path, customer):
        alias = target.alias_target(customer)
        loading = set(in_flight) | loads_in_progress(state_path)
        databases = []
        for info in target.list_databases(customer):
            try:
                sid = parse_partition_key(info.name)
            except InvalidName:
                continue  # not ours: never touch it
            if sid.customer == customer:
                databases.append((sid.ts, info))
        databases.sort(key=lambda item: item[0], reverse=True)
        for _, info in databases:  # newest first
            if info.name in loading or info.status == "loading":
                result.protected[info.name] = "still loading"
            elif info.status == "failed" and info.name != alias:
                target.drop_database(info.name)  # a crashed load's leftovers never count as a kept database
                result.dropped.append(info.name)
            elif len(result.kept) < keep:
                result.kept.append(info.name)
            elif info.name == alias:
                result.protected[info.name] = "alias target"
            else:
                target.drop_database(info.name)
                result.dropped.append(info.name)
    return result
