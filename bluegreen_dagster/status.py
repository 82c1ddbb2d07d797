"""Per-customer status, computed in one place for `bluegreen status` and the Prometheus exporter, and the table
`bluegreen status` prints.

A customer is any valid folder name under dataset.base_path; for each: the alias's target database, the snapshot
timestamp it serves and its age, the databases kept (with their status), what a reader opens, and its pin (pins.py)
when the caller read the pins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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


# --------------------------------------------------------------------------------------------------------------
# The table


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def print_status(out: Console, rows: list[CustomerStatus], kind: str, *, wide: bool = False) -> None:
    """The status table. Names are never cut or folded: each stays whole on one line (retained databases one per
    line). `wide` adds the path (or URI) a reader opens, as a column when it fits, else as a line per customer
    under the table; a table that does not fit the terminal at all becomes one block per customer."""
    title = f"bluegreen status ({kind} target)"
    cells = [_status_cells(row) for row in rows]
    columns = ["customer", "alias target", "age", "retained databases", "reader opens"]
    widths = [max(_cell_width(text) for text in [name] + [row[i] for row in cells])
              for i, name in enumerate(columns)]
    for shown in ([5, 4] if wide else [4]):
        if sum(widths[:shown]) + 3 * shown + 1 <= out.width:  # cells + padding + borders
            table = Table(title=title)
            for column, width in zip(columns[:shown], widths, strict=False):
                table.add_column(column, no_wrap=True, min_width=width)
            for row in cells:
                table.add_row(*row[:shown])
            out.print(table)
            if wide and shown == 4:
                for row in rows:
                    out.print(f"{row.customer} reader opens {row.reader or '-'}", markup=False, highlight=False,
                              soft_wrap=True)
            break
    else:
        out.print(f"[bold]{title}[/]")
        for row in cells:
            out.print(f"[bold]{row[0]}[/]", soft_wrap=True)  # soft wrap: a long name runs on, never cut
            for name, value in zip(columns[1:4 + wide], row[1:], strict=False):
                for i, line in enumerate(value.split("\n")):
                    out.print(f"  {name + ':' if i == 0 else '':<20}{line}", soft_wrap=True)
    for row in rows:
        if row.pin:
            pin = row.pin
            out.print(f"{row.customer} is pinned to {pin['database']} since {pin['since']} by {pin['by']}"
                      + (f": {pin['reason']}" if pin["reason"] else ""), highlight=False)


def _cell_width(markup: str) -> int:
    return max(Text.from_markup(line).cell_len for line in markup.split("\n"))


def _status_cells(row: CustomerStatus) -> list[str]:
    alias = row.target_database or "[yellow]no alias yet[/]"
    if row.pin:
        alias += "\n[yellow](pinned)[/]"
    retained = "\n".join(d.name if d.status == "online" else f"{d.name} ({d.status})" for d in row.databases)
    return [row.customer, alias, _age(row.age_seconds), retained or "-", escape(row.reader or "-")]
