"""Per-customer status, computed in one place for `bluegreen status` and the Prometheus exporter.

A customer is any valid folder name under dataset.base_path; for each: the alias's target database, the snapshot
timestamp it serves and its age, the databases kept (with their status), what a reader opens, and its pin (pins.py)
when the caller read the pins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.pins import Pin
from bluegreen_dagster.resources import TargetResource
from bluegreen_dagster.snapshots import customers


@dataclass
class DatabaseStatus:
    name: str
    status: str


@dataclass
class CustomerStatus:
    customer: str
    alias: str
    target_database: str | None
    snapshot_timestamp: str | None
    age_seconds: int | None
    databases: list[DatabaseStatus] = field(default_factory=list)
    reader: str | None = None
    pin: dict | None = None  # pins.Pin as a dict (database, reason, since, by) when the customer is pinned

    def as_dict(self) -> dict:
        return asdict(self)


def collect_status(base_path: Path, target: TargetResource, now: float | None = None,
                   pins: Mapping[str, Pin] | None = None) -> list[CustomerStatus]:
    """The status of every customer found under `base_path`, read from the target in one connection; `pins`
    (`pins.pins(instance, ...)`) adds each customer's pin.

    `target` must be usable outside a run (`Resources.initialized()`); target errors propagate to the caller."""
    now = time.time() if now is None else now
    rows = []
    with target.open() as graph:
        for customer in customers(base_path):  # links out of base_path and invalid names: never listed
            current = graph.alias_target(customer)
            try:
                sid = parse_partition_key(current) if current else None
            except InvalidName:
                sid = None  # an alias someone pointed at a database of their own
            created = sid.created_at if sid else None
            rows.append(CustomerStatus(
                customer=customer, alias=customer, target_database=current,
                snapshot_timestamp=sid.timestamp if sid else None,
                age_seconds=round(now - created.timestamp()) if created else None,
                databases=[DatabaseStatus(d.name, d.status)
                           for d in sorted(graph.list_databases(customer), key=lambda d: d.name)],
                reader=graph.reader_location(customer),
                pin=asdict(pins[customer]) if pins and customer in pins else None))
    return rows
