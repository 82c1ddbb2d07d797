"""Per-customer status, computed in one place for `bluegreen status` and the Prometheus exporter.

A customer is any valid folder name under dataset.base_path; for each: the alias's target database, the snapshot
timestamp it serves and its age, the databases kept (with their status), and what a reader opens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bluegreen_dagster.resources import TargetResource
from bluegreen_dagster.snapshots import InvalidName, parse_partition_key, validate_customer


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

    def as_dict(self) -> dict:
        return asdict(self)


def customers_on_disk(base_path: Path) -> list[str]:
    """Valid customer folder names under base_path, sorted (invalid ones are the sensor's to report)."""
    base = Path(base_path)
    names = []
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            names.append(validate_customer(folder.name))
        except InvalidName:
            continue
    return names


def collect_status(base_path: Path, target: TargetResource, now: float | None = None) -> list[CustomerStatus]:
    """The status of every customer found under `base_path`, read from the target in one connection.

    `target` must be usable outside a run (`Resources.initialized()`); target errors propagate to the caller."""
    now = time.time() if now is None else now
    rows = []
    with target.open() as graph:
        for customer in customers_on_disk(base_path):
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
                reader=graph.reader_location(customer)))
    return rows
