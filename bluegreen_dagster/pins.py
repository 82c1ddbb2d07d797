"""Pins: a customer whose alias an operator fixed (`bluegreen rollback --pin`) keeps it until `bluegreen unpin`.

While a customer is pinned, newer snapshots still load and verify but do not switch, and cleanup never drops the
pinned database. A pin lives in the Dagster instance's key-value storage (the run storage's `kvs` table: the
PostgreSQL database in production), so every host, run and CLI sees the same pin. Read it under the customer's
lock (`concurrency.customer_lock`) when acting on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import dagster as dg

from bluegreen_dagster.names import validate_customer

_PREFIX = "bluegreen/pin/"


@dataclass(frozen=True)
class Pin:
    customer: str
    database: str  # the database the alias was pinned to
    reason: str
    since: str  # ISO 8601, UTC
    by: str  # who set it: a user@host, or a run id for the rollback job

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{self.customer} is pinned to {self.database} since {self.since} by {self.by}{why}"


def _key(customer: str) -> str:
    return _PREFIX + validate_customer(customer)


def _decode(value: str | None) -> Pin | None:
    return Pin(**json.loads(value)) if value else None  # "" is an unpinned customer (the store cannot delete)


def get_pin(instance: dg.DagsterInstance, customer: str) -> Pin | None:
    return _decode(instance.run_storage.get_cursor_values({_key(customer)}).get(_key(customer)))


def pins(instance: dg.DagsterInstance, customers: list[str]) -> dict[str, Pin]:
    """The pinned ones among `customers`, in one read."""
    values = instance.run_storage.get_cursor_values({_key(c) for c in customers})
    found = {key[len(_PREFIX):]: _decode(value) for key, value in values.items()}
    return {customer: pin for customer, pin in found.items() if pin is not None}


def set_pin(instance: dg.DagsterInstance, customer: str, database: str, reason: str, by: str) -> Pin:
    pin = Pin(customer=customer, database=database, reason=reason, by=by,
              since=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    instance.run_storage.set_cursor_values({_key(customer): json.dumps(asdict(pin))})
    return pin


def clear_pin(instance: dg.DagsterInstance, customer: str) -> Pin | None:
    """Unpin; returns the pin that was removed, or None if the customer was not pinned."""
    previous = get_pin(instance, customer)
    if previous is not None:
        instance.run_storage.set_cursor_values({_key(customer): ""})
    return previous
