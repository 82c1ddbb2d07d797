"""The one home of snapshots: naming, discovery, completeness and reading.

A snapshot is `<base_path>/<customer>/<timestamp>/nodes/*.parquet` + `relationships/*.parquet`. Customer and
timestamp map to ONE string that is both the Dagster partition key and the database name, through the pair
`partition_key()` / `parse_partition_key()`. Nothing else in the code builds or splits that string.

Name rules (Neo4j database names, which are the stricter of the two targets; Dagster's UI/CLI additionally
break on `/ , | ...`): lowercase ASCII letters, digits and `-`, starting with a letter, not ending with `-`,
3 to 63 characters, no `system` prefix. Customers are such names themselves (the alias is the customer name);
timestamps are digits (e.g. Unix epoch seconds), compared as integers.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bluegreen_dagster.columns import decoded, is_integer, is_list, is_string, labels_as_lists

NODES_DIR = "nodes"
RELATIONSHIPS_DIR = "relationships"
SUCCESS_MARKER = "_SUCCESS"
MAX_NAME_LENGTH = 63

NODE_ID = "nodeId"
LABELS = "labels"
SOURCE_ID = "sourceNodeId"
TARGET_ID = "targetNodeId"
REL_TYPE = "relationshipType"

_CUSTOMER_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,20}$")
_KEY_RE = re.compile(r"^(?P<customer>[a-z](?:[a-z0-9-]*[a-z0-9])?)-(?P<timestamp>[0-9]{1,20})$")


# Labels, relationship types and property names come from data and end up (backtick-quoted) in statement text on
# both targets, so both accept exactly these: letters, digits and '_', starting with a letter.
IDENTIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,199}$")


class InvalidName(ValueError):
    """A customer, timestamp or partition key that cannot name a database; the message says why."""


class SnapshotError(ValueError):
    """The snapshot's files cannot be loaded as they are (bad input: retrying will not help)."""


def check_identifier(name: object, kind: str, path: Path | None = None) -> str:
    """A label, relationship type or property name from the data, checked before it may reach any statement."""
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        where = f"{path}: " if path else ""
        raise SnapshotError(f"{where}{kind} {name!r} is not allowed: use letters, digits and '_', starting with a "
                            "letter (e.g. Person, WORKS_AT)")
    return name


def validate_customer(customer: str) -> str:
    if not isinstance(customer, str) or not _CUSTOMER_RE.match(customer):
        raise InvalidName(
            f"customer {customer!r} is not a valid name: use lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-' (e.g. 'acme-corp')"
        )
    if customer.startswith("system"):
        raise InvalidName(f"customer {customer!r} is not a valid name: the prefix 'system' is reserved by Neo4j")
    if len(customer) < 3:
        raise InvalidName(f"customer {customer!r} is too short: aliases need at least 3 characters")
    return customer


def validate_timestamp(timestamp: str) -> str:
    if not isinstance(timestamp, str) or not _TIMESTAMP_RE.match(timestamp):
        raise InvalidName(
            f"timestamp {timestamp!r} is not valid: use digits only, e.g. Unix epoch seconds such as 1767741527"
        )
    return timestamp


def partition_key(customer: str, timestamp: str | int) -> str:
    """The partition key and database name for one snapshot, e.g. ('acme', 1767741527) -> 'acme-1767741527'."""
    key = f"{validate_customer(customer)}-{validate_timestamp(str(timestamp))}"
    if len(key) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"snapshot name {key!r} has {len(key)} characters; database names allow at most {MAX_NAME_LENGTH}: "
            "shorten the customer folder name"
        )
    return key


@dataclass(frozen=True, order=True)
class SnapshotId:
    """Who and when; orders by time within a customer."""

    customer: str
    ts: int
    timestamp: str = field(compare=False)

    @property
    def key(self) -> str:
        return partition_key(self.customer, self.timestamp)

    @property
    def created_at(self) -> datetime | None:
        """The timestamp as a UTC time when it looks like epoch seconds (for ages in `status`)."""
        return datetime.fromtimestamp(self.ts, UTC) if 0 < self.ts < 10**11 else None


def parse_partition_key(key: str) -> SnapshotId:
    """Inverse of `partition_key`; raises InvalidName for anything `partition_key` would not produce."""
    match = _KEY_RE.match(key) if isinstance(key, str) else None
    if not match:
        raise InvalidName(f"{key!r} is not a snapshot name of the form <customer>-<timestamp>, e.g. 'acme-1767741527'")
    customer, timestamp = match.group("customer"), match.group("timestamp")
    if partition_key(customer, timestamp) != key:  # also enforces the length and reserved-prefix rules
        raise InvalidName(f"{key!r} is not a valid snapshot name")
    return SnapshotId(customer, int(timestamp), timestamp)


def snapshot_id(customer: str, timestamp: str | int) -> SnapshotId:
    return parse_partition_key(partition_key(customer, timestamp))


# --------------------------------------------------------------------------------------------------------------
# Discovery and completeness


@dataclass(frozen=True)
class Snapshot:
    id: SnapshotId
    path: Path

    @property
    def key(self) -> str:
        return self.id.key

    @property
    def node_files(self) -> list[Path]:
        return sorted((self.path / NODES_DIR).glob("*.parquet"))

    @property
    def relationship_files(self) -> list[Path]:
        return sorted((self.path / RELATIONSHIPS_DIR).glob("*.parquet"))

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.node_files + self.relationship_files)

    def incomplete_reason(self, settle_seconds: float, now: float | None = None) -> str | None:
        """None when the snapshot may be loaded; otherwise what it is still waiting for."""
        if not self.node_files:
            return f"no Parquet files in {self.path / NODES_DIR}"
        if not self.relationship_files:
            return f"no Parquet files in {self.path / RELATIONSHIPS_DIR}"
        if (self.path / SUCCESS_MARKER).exists():
            return None
        newest = max(p.stat().st_mtime for p in self.path.rglob("*") if p.is_file())
        quiet_for = (time.time() if now is None else now) - newest
        if quiet_for < settle_seconds:
            return f"no {SUCCESS_MARKER} marker and files changed {quiet_for:.0f}s ago (settle_seconds={settle_seconds:g})"
        return None


def snapshot_at(base_path: Path, customer: str, timestamp: str | int) -> Snapshot:
    sid = snapshot_id(customer, timestamp)
    return Snapshot(sid, Path(base_path) / sid.customer / sid.timestamp)


def snapshot_for_key(base_path: Path, key: str) -> Snapshot:
    sid = parse_partition_key(key)
    return Snapshot(sid, Path(base_path) / sid.customer / sid.timestamp)


@dataclass
class ScanResult:
    complete: list[Snapshot] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # path -> why not yet
    invalid: dict[str, str] = field(default_factory=dict)  # path -> why it can never be loaded


def scan(base_path: Path, settle_seconds: float, now: float | None = None) -> ScanResult:
    """Every snapshot folder under base_path, sorted oldest first, split into complete / waiting / invalid."""
    result = ScanResult()
    base = Path(base_path)
    if not base.is_dir():
        return result
    for customer_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            validate_customer(customer_dir.name)
        except InvalidName as exc:
            result.invalid[str(customer_dir)] = str(exc)
            continue
        for ts_dir in sorted(p for p in customer_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                snap = snapshot_at(base, customer_dir.name, ts_dir.name)
            except InvalidName as exc:
                result.invalid[str(ts_dir)] = str(exc)
                continue
            reason = snap.incomplete_reason(settle_seconds, now)
            if reason is None:
                result.complete.append(snap)
            else:
                result.waiting[str(ts_dir)] = reason
    result.complete.sort(key=lambda s: (s.id.ts, s.id.customer))
    return result


# --------------------------------------------------------------------------------------------------------------
# Reading


def open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise SnapshotError(f"{path}: not a readable Parquet file ({exc}); replace the file and re-run") from None


def _require_columns(path: Path, schema: pa.Schema, required: dict[str, tuple[str, ...]]) -> None:
    for column, kinds in required.items():
        if column not in schema.names:
            raise SnapshotError(f"{path}: missing required column {column!r} (has {', '.join(schema.names)})")
        arrow_type = schema.field(column).type
        ok = any(
            (kind == "int" and is_integer(arrow_type))
            or (kind == "string" and is_string(arrow_type))
            or (kind == "list" and is_list(arrow_type))
            for kind in kinds
        )
        if not ok:
            raise SnapshotError(f"{path}: column {column!r} has type {arrow_type}, expected {' or '.join(kinds)}")


NODE_COLUMNS = {NODE_ID: ("int",), LABELS: ("string", "list")}
RELATIONSHIP_COLUMNS = {SOURCE_ID: ("int",), TARGET_ID: ("int",), REL_TYPE: ("string",)}


def iter_batches(files: list[Path], required: dict[str, tuple[str, ...]], batch_size: int,
                 columns: list[str] | None = None) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream record batches from Parquet files, checking the GDS columns first. Memory stays at one batch."""
    for path in files:
        pf = open_parquet(path)
        _require_columns(path, pf.schema_arrow, required)
        try:
            for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                yield path, batch
        except (pa.ArrowException, OSError) as exc:
            raise SnapshotError(f"{path}: could not be read to the end ({exc}); replace the file and re-run") from None


@dataclass(frozen=True)
class GraphCounts:
    """Node and relationship counts, in total and per label / type: what verify compares."""

    nodes: int
    relationships: int
    labels: dict[str, int]
    types: dict[str, int]

    def differences(self, actual: GraphCounts) -> list[str]:
        """Human-readable differences, expected (self) vs actual; empty when they match."""
        out = []
        if self.nodes != actual.nodes:
            out.append(f"nodes: expected {self.nodes}, found {actual.nodes}")
        if self.relationships != actual.relationships:
            out.append(f"relationships: expected {self.relationships}, found {actual.relationships}")
        for kind, want, got in (("label", self.labels, actual.labels), ("type", self.types, actual.types)):
            for name in sorted(set(want) | set(got)):
                if want.get(name, 0) != got.get(name, 0):
                    out.append(f"{kind} {name}: expected {want.get(name, 0)}, found {got.get(name, 0)}")
        return out

    def as_metadata(self) -> dict[str, int]:
        return {"nodes": self.nodes, "relationships": self.relationships,
                **{f"label:{k}": v for k, v in sorted(self.labels.items())},
                **{f"type:{k}": v for k, v in sorted(self.types.items())}}


def _fingerprint(snapshot: Snapshot) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in snapshot.node_files + snapshot.relationship_files)


@functools.lru_cache(maxsize=64)
def _expected_counts(snapshot: Snapshot, _fingerprint: tuple) -> GraphCounts:
    labels: Counter[str] = Counter()
    types: Counter[str] = Counter()
    nodes = relationships = 0
    for _, batch in iter_batches(snapshot.node_files, NODE_COLUMNS, 65_536, columns=[LABELS]):
        nodes += batch.num_rows
        for node_labels in labels_as_lists(batch.column(0)):
            labels.update(set(node_labels))
    for _, batch in iter_batches(snapshot.relationship_files, RELATIONSHIP_COLUMNS, 65_536, columns=[REL_TYPE]):
        relationships += batch.num_rows
        for value in decoded(batch.column(0)).value_counts().to_pylist():
            types[value["values"]] += value["counts"]
    return GraphCounts(nodes, relationships, dict(labels), dict(types))


def expected_counts(snapshot: Snapshot) -> GraphCounts:
    """Counts the snapshot's files promise, read from the label and type columns only (cached per file state)."""
    return _expected_counts(snapshot, _fingerprint(snapshot))


def write_atomically(target_dir: Path, write) -> Path:
    """Run `write(tmp_dir)` in a hidden sibling folder, then rename it into place (what producers should do)."""
    target_dir = Path(target_dir)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = target_dir.parent / f".{target_dir.name}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, target_dir)
    return target_dir
