"""The one small interface the pipeline needs from a graph store.

The Dagster layer (and the blue/green rules in `bluegreen_dagster.bluegreen`) only ever call these methods, so the
embedded LadybugDB target and the Neo4j Enterprise target are interchangeable through `config.yaml`'s `target:`.

Errors are split by what a retry can do: `TransientTargetError` (server down, busy, over a health threshold) is
retried by the step's RetryPolicy; `PermanentTargetError` and `SnapshotError` (bad input, wrong password, wrong
edition, name taken) fail at once with a message that says what to fix.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from bluegreen_dagster.names import InvalidName, parse_partition_key, validate_customer
from bluegreen_dagster.progress import NO_PROGRESS, LoadProgress
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.snapshots import Snapshot


class TargetError(Exception):
    """Base of target errors; the message is meant for the user."""


class TransientTargetError(TargetError):
    """Retrying later may succeed (unreachable, busy, over a threshold)."""


class PermanentTargetError(TargetError):
    """Retrying will not help until someone changes something (credentials, edition, configuration, data)."""


class FenceMoved(TransientTargetError):
    """The alias no longer serves what the caller read (`GraphTarget.move_alias`): someone moved it meanwhile, so
    the caller's decision is stale and nothing was moved. Transient: deciding again on what it serves now is safe."""


class QueryTimedOut(PermanentTargetError):
    """A read-only query ran past its time limit and was stopped (`GraphTarget.read_query`)."""


class QueryRefused(PermanentTargetError):
    """The database refused or failed a read-only query: a syntax error, a write, an unknown procedure..."""


@dataclass
class QueryResult:
    """What `GraphTarget.read_query` saw: the columns, the first rows, how many rows there were, how long it took."""

    columns: list[str]
    rows: list[list[Any]]  # the first `keep_rows` rows
    row_count: int         # every row the query returned
    seconds: float


@dataclass
class Health:
    """Result of the pre-load health check. `problems` is empty when a load may start."""

    problems: list[str] = field(default_factory=list)
    # Numbers measured, for the UI: e.g. heap_percent, pagecache_percent, databases, free_disk_mb.
    measurements: dict[str, float | int | str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_database(name: str) -> str:
    """A snapshot database name (`<customer>-<timestamp>`, see `names.parse_partition_key`); anything else is
    refused before it reaches a statement or a file path."""
    try:
        parse_partition_key(name)
    except InvalidName as exc:
        raise PermanentTargetError(f"refusing to use database name {name!r}: {exc}") from None
    return name


def validate_alias(customer: str) -> str:
    """An alias name, which is the customer name (see `names.validate_customer`)."""
    try:
        return validate_customer(customer)
    except InvalidName as exc:
        raise PermanentTargetError(f"refusing to use alias name {customer!r}: {exc}") from None


@dataclass
class LoadReport:
    """What one load did: the result of `GraphTarget.load` and of the Neo4j loaders it uses."""

    database: str
    nodes: int
    relationships: int
    # Snapshot data the load read: the Parquet files' size (embedded), the Arrow batches sent or written (Neo4j).
    bytes_read: int
    seconds: float
    # True when the database already existed fully loaded and the load was skipped (a safe re-run).
    reused: bool = False
    # Seconds per phase of the load, in the order they ran (each loader names its own, e.g. plan, staging, copy).
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.nodes + self.relationships

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


# States in which a store has not decided about a database yet (a cluster member not answering, a database
# moving or starting, members that disagree): cleanup and loads wait for them, never drop for them.
UNDECIDED_STATUSES = frozenset({"unknown", "deallocating", "starting", "store copying", "stopping", "mixed"})


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    # "online" when complete and readable; "loading" while a load is writing it; "failed" for what a crashed load
    # left behind (cleanup removes it); on Neo4j "incomplete" for an online database its load has not finished
    # (writing now, or cut off); other target states (e.g. Neo4j's "offline") as the target reports them.
    status: str


@dataclass(frozen=True)
class Fence:
    """What the target itself says about a customer's alias: the database it serves and how many times it was
    moved (every move raises `moves`, a rollback's too; None where the target keeps no count). Two reads are equal
    only if nothing moved the alias in between, even away and back (fence.py explains the use)."""

    database: str | None
    moves: int | None = None


class GraphTarget(abc.ABC):
    """What the pipeline needs from a graph store. Database names are partition keys (see `snapshots`)."""

    kind: str
    # Where `load` reports rows loaded as it goes (`progress.rows(...)`); the resource sets it for a run.
    progress: LoadProgress = NO_PROGRESS

    @abc.abstractmethod
    def health(self, snapshot: Snapshot | None = None) -> Health:
        """Whether a load may start now; raise TransientTargetError only when the target cannot be reached."""

    @abc.abstractmethod
    def load(self, snapshot: Snapshot) -> LoadReport:
        """Create database `snapshot.key` and fill it from the snapshot's Parquet files.

        Idempotent: if that database already exists complete, return a report with reused=True. On any failure
        remove what was created (never any other database) and raise.
        """

    @abc.abstractmethod
    def count(self, database: str) -> GraphCounts:
        """Node and relationship counts, total and per label / type, read from the database itself."""

    def value_stats(self, database: str, expected: dict) -> dict | None:
        """Per (label or type, property) in `expected` (value_stats.ValueStats), what the database holds: the
        non-null count and, where `expected` has bounds, min and max (value_stats.comparable). None when this
        target cannot answer: verification then compares counts only."""
        return None

    @abc.abstractmethod
    def list_databases(self, customer: str) -> list[DatabaseInfo]:
        """This customer's snapshot databases (names `<customer>-<timestamp>`), including ones still loading."""

    @abc.abstractmethod
    def alias_target(self, customer: str) -> str | None:
        """The database the customer's alias points at, or None if there is no alias yet."""

    @abc.abstractmethod
    def point_alias(self, customer: str, database: str) -> None:
        """Create the alias or move it to `database`, atomically, raising its fence's `moves`. Forward-only checks
        are the caller's job; a move that must not outrun another one uses `move_alias`."""

    def alias_fence(self, customer: str) -> Fence:
        """The alias's fence, read from the target itself (here: the alias target and no count)."""
        return Fence(self.alias_target(customer))

    def move_alias(self, customer: str, database: str, *, expect: Fence) -> None:
        """`point_alias`, only if the alias's fence still equals `expect` (read by the caller before deciding);
        else raise FenceMoved and move nothing. Here a read right before the move: targets that can make the
        comparison and the move one step do so."""
        now = self.alias_fence(customer)
        if now != expect:
            raise FenceMoved(f"alias {customer} moved since it was read (it was {expect.database or '(none)'}; it "
                             f"is {now.database or '(none)'}); not moved to {database}")
        self.point_alias(customer, database)

    @abc.abstractmethod
    def drop_database(self, database: str) -> None:
        """Remove a database (no error if it is gone). Must refuse to drop the target of an alias."""

    @abc.abstractmethod
    def read_query(self, database: str, query: str, *, timeout_seconds: float, keep_rows: int = 1) -> QueryResult:
        """Run `query` (Cypher, from config.yaml) read-only on `database` to its end, within `timeout_seconds`.

        Raise QueryTimedOut when it ran longer (stopped by the store where it can, else measured), QueryRefused
        when the store refused it (including any write), TransientTargetError when the store cannot be reached."""

    def prepare_readers(self, database: str, customer: str) -> None:  # noqa: B027 - optional hook
        """Before the alias moves to `database`: give the customer's readers access to it and prove they can
        read it, or raise PermanentTargetError (the alias must not move). `point_alias` calls it. Nothing to do
        where readers open the alias as a file (the embedded target)."""

    def drain_seconds(self) -> float:
        """How long cleanup keeps a database the alias left (bluegreen.cleanup, drain.py): 0 where readers hold
        no transaction on the target's databases (the embedded target: readers open the files themselves)."""
        return 0.0

    def reader_location(self, customer: str) -> str | None:
        """What a reader opens to query the customer's current graph (a path or a URI and alias name)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> GraphTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
