"""Rollback and pin: move a customer's alias back to a retained, verified database in one step, and optionally keep
it there (a pin, pins.py) until `bluegreen unpin`.

`rollback` is the one implementation behind `bluegreen rollback` and the `rollback` job in the UI (jobs.py). It runs
under the customer's lock (`concurrency.customer_lock`), so it cannot interleave with a switch or a cleanup of the
same customer on another host, and it records what it did on the customer's partition of the asset `live_graph`,
like a switch does (`live_graph.record_live`).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster import pins, plausibility, records
from bluegreen_dagster.concurrency import customer_lock
from bluegreen_dagster.live_graph import ROLLBACK, UNPIN, record_live
from bluegreen_dagster.names import (
    InvalidName,
    SnapshotError,
    parse_partition_key,
    shown_name,
    validate_customer,
)
from bluegreen_dagster.snapshots import expected_counts, snapshot_for_key
from bluegreen_dagster.targets import GraphTarget, TargetError


class RollbackRefused(Exception):
    """The rollback was not done; the message says why and what to do. The alias did not move."""


@dataclass
class RollbackResult:
    customer: str
    previous: str  # the database the alias served before
    current: str  # the database it serves now
    pin: pins.Pin | None
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)  # newer candidates passed over, and why

    def describe(self) -> str:
        text = f"alias {self.customer} rolled back {self.previous} -> {self.current}"
        if self.skipped:
            text += " (passed over: " + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) + ")"
        if self.pin:
            return text + f"; pinned: newer snapshots load and verify but do not switch until " \
                          f"`bluegreen unpin {self.customer}`"
        return text + "; not pinned: the next newer snapshot switches the alias forward again " \
                      "(pass --pin to hold it here)"


def operator() -> str:
    """Who runs the command, for a pin's `by`: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def why_not_verified(target: GraphTarget, instance: dg.DagsterInstance, base_path: Path,
                     database: str) -> str | None:
    """None if `database` passed the gate when it was loaded and still holds exactly what its snapshot on disk
    promises (counts per label and type) and is not an empty graph (plausibility.py), otherwise why not, in words.

    Both sources must agree. Dagster's records (`gate_problem`) know whether the load passed every blocking check,
    which the database itself cannot tell. Re-verifying now, against the snapshot on disk, with the same test the
    switch applies right before it moves an alias, catches a database damaged or changed since."""
    problem = records.gate_problem(instance, database)
    if problem:
        return problem
    try:
        snapshot = snapshot_for_key(base_path, database)
        if not snapshot.path.is_dir():
            return f"its snapshot folder {snapshot.path} is gone, so it cannot be verified (restore the folder)"
        actual = rules.verify(target, database, expected_counts(snapshot))
        # The gate's absolute rule; its shrink rule compares with the live database, which a rollback replaces
        # on purpose, so it does not apply.
        plausibility.check(actual, None, max_shrink_percent=100, new_name=database, live_name=None)
    except (SnapshotError, InvalidName, TargetError) as exc:
        return str(exc)
    return None


def _timestamp(database: str) -> int | None:
    try:
        return parse_partition_key(database).ts
    except InvalidName:
        return None


def rollback(instance: dg.DagsterInstance, target: GraphTarget, base_path: Path, customer: str, *,
             to: str | None = None, pin: bool = False, reason: str = "", by: str | None = None,
             record: Callable[[dg.AssetMaterialization], None] | None = None,
             on_wait: Callable[[str], None] = lambda _: None, run_id: str = "") -> RollbackResult:
    """Point `customer`'s alias at `to`, or by default at the newest retained database older than the live one
    that is online and verifies (`why_not_verified`); with `pin`, pin the customer there.

    Raises RollbackRefused (nothing changed) when the customer has no alias, `to` is not this customer's, does not
    exist, is not online, does not verify or is already live, when no older database qualifies, or when the
    customer is pinned and `pin` is not given (moving a pinned alias must move the pin too, on purpose).
    `record` receives the materialization of `live_graph` (default: a runless event in `instance`)."""
    try:
        validate_customer(customer)
    except InvalidName as exc:
        raise RollbackRefused(str(exc)) from None
    if to is not None:
        try:
            owner = parse_partition_key(to).customer
        except InvalidName as exc:
            raise RollbackRefused(f"--to {shown_name(to)}: {exc}") from None
        if owner != customer:
            raise RollbackRefused(f"{to} is a database of customer {owner}, not of {customer}; name one of "
                                  f"{customer}'s (`bluegreen status` lists them)")
    by = by or operator()
    with customer_lock(instance, customer, on_wait=on_wait):
        live = target.alias_target(customer)
        if live is None:
            raise RollbackRefused(f"customer {customer} has no alias yet: there is nothing to roll back")
        current_pin = pins.get_pin(instance, customer)
        if current_pin is not None and not pin:
            raise RollbackRefused(f"{current_pin.describe()}. Add --pin to move the pin with the alias, or "
                                  f"`bluegreen unpin {customer}` first")
        databases = {d.name: d for d in target.list_databases(customer)}
        retained = ", ".join(sorted(databases)) or "none"
        skipped: dict[str, str] = {}
        if to is not None:
            if to == live:
                raise RollbackRefused(f"{to} is already live for {customer}; nothing to do")
            if to not in databases:
                raise RollbackRefused(f"{to} does not exist (retained databases of {customer}: {retained})")
            if databases[to].status != "online":
                raise RollbackRefused(f"{to} is {databases[to].status}, not online; choose another "
                                      f"(retained: {retained})")
            problem = why_not_verified(target, instance, base_path, to)
            if problem:
                raise RollbackRefused(f"{to} is not verified: {problem}")
            chosen = to
        else:
            live_ts = _timestamp(live)
            older = sorted((name for name in databases
                            if name != live and (live_ts is None or (_timestamp(name) or 0) < live_ts)),
                           key=lambda name: _timestamp(name) or 0, reverse=True)
            chosen = None
            for name in older:  # newest first
                if databases[name].status != "online":
                    skipped[name] = databases[name].status
                    continue
                problem = why_not_verified(target, instance, base_path, name)
                if problem is None:
                    chosen = name
                    break
                skipped[name] = f"not verified: {problem}"
            if chosen is None:
                detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or f"retained: {retained}"
                raise RollbackRefused(f"no retained database of {customer} older than the live {live} is online "
                                      f"and verified ({detail}); name one with --to, or load an older snapshot "
                                      "again (`bluegreen load`)")
        target.point_alias(customer, chosen)
        new_pin = pins.set_pin(instance, customer, chosen, reason=reason, by=by) if pin else None
        reader = target.reader_location(customer)
        result = RollbackResult(customer, live, chosen, new_pin, reason, skipped)
        record_live(instance, customer, chosen, live, how=ROLLBACK, by=by, reader=reader or "", run_id=run_id,
                    details={"reason": reason, "pinned": pin, "passed_over": skipped}, log_event=record)
    return result


def unpin(instance: dg.DagsterInstance, target: GraphTarget, customer: str, *, by: str | None = None,
          record: Callable[[dg.AssetMaterialization], None] | None = None) -> tuple[pins.Pin | None, str]:
    """Clear the customer's pin; returns (the pin removed or None, what happens next in words)."""
    validate_customer(customer)
    with customer_lock(instance, customer):
        removed = pins.clear_pin(instance, customer)
        live = target.alias_target(customer)
        if removed is not None and live:
            record_live(instance, customer, live, live, how=UNPIN, by=by or operator(), log_event=record,
                        details={"was_pinned_to": removed.database})
    if removed is None:
        return None, f"{customer} was not pinned; nothing changed"
    text = (f"{customer} unpinned (was: {removed.describe()}). The alias stays on {live or '(none)'} until the next "
            f"snapshot newer than it is loaded and verified, which switches it as usual. A snapshot that loaded "
            f"while pinned switches when its partition is run again (`bluegreen load {customer} TIMESTAMP`)")
    return removed, text
