"""One LadybugDB database file: create its tables from a load plan, COPY the staged files in, count what it holds."""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from pathlib import Path

import ladybug as lb

from bluegreen_dagster.columns import LABELS, NODE_ID
from bluegreen_dagster.names import IDENTIFIER_RE, SnapshotError
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.targets.base import (
    PermanentTargetError,
    QueryRefused,
    QueryResult,
    QueryTimedOut,
)
from bluegreen_dagster.targets.embedded.plan import LoadPlan
from bluegreen_dagster.targets.embedded.staging import Staged
from bluegreen_dagster.targets.embedded.tables import TableSchema

MB = 1024 * 1024
# COPY FROM takes a file name only as a literal (a parameter is read as a data frame), so the staging path is
# written into the statement: it is ours (under embedded.path + a partition key + table names that passed
# IDENTIFIER_RE), and characters that a literal or a glob would interpret are refused outright.
_UNSAFE_PATH_CHARS = set("'\"\\*?[]{}\n\r")


def fill(path: Path, plan: LoadPlan, nodes: Staged, relationships: Staged, *, buffer_pool_bytes: int,
         threads: int, on_rows=lambda rows: None) -> None:
    """Create the database file at `path` with the plan's tables and one COPY per staged file."""
    db = lb.Database(str(path), buffer_pool_size=buffer_pool_bytes, max_num_threads=threads)
    try:
        conn = lb.Connection(db)
        try:
            # One checkpoint for the whole load instead of one per COPY: each checkpoint writes and syncs every
            # table (pair) filled so far, so with one COPY per (type, FROM, TO) pair, 40 labels (~1,600 pairs)
            # made the load quadratic in the pairs (benchmarks/bench_labels.py). The file is not online before
            # `fill` returns, so nothing is lost by not checkpointing in between.
            conn.execute("CALL auto_checkpoint=false")
            create_tables(conn, plan)
            for name, (file, rows) in nodes.items():
                copy_rows(conn, f"COPY `{name}` FROM {_path_literal(file)}", name)
                on_rows(rows)  # progress: rows copied so far (targets/embedded/target.py)
            for (name, a, b), (file, rows) in relationships.items():
                copy_rows(conn, _rel_copy(plan.rel_tables[name], a, b, _path_literal(file)), name)
                on_rows(rows)
            copy_rows(conn, "CHECKPOINT", "the database file")
        finally:
            conn.close()
    finally:
        db.close()


def create_tables(conn: lb.Connection, plan: LoadPlan) -> None:
    for table in plan.node_tables.values():
        props = "".join(f", `{name}` {t.ddl}" for name, t in table.properties.items())
        _ddl(conn, f"CREATE NODE TABLE `{table.name}`(`{NODE_ID}` INT64 PRIMARY KEY, `{LABELS}` STRING[]{props})",
             table)
    for table in plan.rel_tables.values():
        pairs = ", ".join(f"FROM `{a}` TO `{b}`" for a, b in sorted(table.pairs))
        props = "".join(f", `{name}` {t.ddl}" for name, t in table.properties.items())
        _ddl(conn, f"CREATE REL TABLE `{table.name}`({pairs}{props})", table)


def _rel_copy(table: TableSchema, a: str, b: str, literal: str) -> str:
    """COPY for a rel table. LadybugDB's COPY binds a rel property named `from` or `to` to the endpoints (it fails,
    or stores the ids in it), so such a table is filled by LOAD FROM + CREATE, slower but storing the values."""
    if not {"from", "to"} & {p.lower() for p in table.properties}:
        return f"COPY `{table.name}` FROM {literal} (from='{a}', to='{b}')"
    props = ", ".join(f"`{p}`: `{p}`" for p in table.properties)
    return (f"LOAD FROM {literal} MATCH (x:`{a}` {{`{NODE_ID}`: `from id`}}), (y:`{b}` {{`{NODE_ID}`: `to id`}}) "
            f"CREATE (x)-[:`{table.name}` {{{props}}}]->(y)")


def copy_rows(conn: lb.Connection, statement: str, name: str) -> None:
    try:
        conn.execute(statement)
    except RuntimeError as exc:
        text = str(exc)
        if "space" in text.lower() or "disk" in text.lower():
            # The load turns this into its one "disk full" message, with the free space measured after cleanup.
            raise OSError(errno.ENOSPC, f"LadybugDB ran out of disk copying into {name}: {text}") from None
        raise PermanentTargetError(f"LadybugDB failed copying rows into {name}: {text}") from None


def count_database(path: str | os.PathLike[str]) -> GraphCounts:
    """Node and relationship counts of a LadybugDB file (opened read-only), per label the way snapshots count."""
    db = lb.Database(str(path), read_only=True, buffer_pool_size=256 * MB)
    try:
        conn = lb.Connection(db)
        try:
            tables = _rows(conn.execute("CALL show_tables() RETURN name, type"))
            labels: Counter[str] = Counter()
            types: dict[str, int] = {}
            nodes = relationships = 0
            for name, kind in tables:
                if kind == "NODE":
                    properties = {row[0] for row in _rows(conn.execute(f"CALL table_info('{name}') RETURN name"))} \
                        if IDENTIFIER_RE.match(name) else set()
                    if LABELS in properties:
                        for node_labels, n in _rows(conn.execute(f"MATCH (n:`{name}`) RETURN n.`{LABELS}`, count(*)")):
                            nodes += n
                            for label in set(node_labels or []):
                                labels[label] += n
                    else:
                        n = _rows(conn.execute(f"MATCH (n:`{name}`) RETURN count(*)"))[0][0]
                        nodes += n
                        if n:
                            labels[name] += n
                elif kind == "REL":
                    n = _rows(conn.execute(f"MATCH ()-[r:`{name}`]->() RETURN count(*)"))[0][0]
                    relationships += n
                    if n:
                        types[name] = n
            return GraphCounts(nodes, relationships, dict(labels), types)
        finally:
            conn.close()
    finally:
        db.close()


def read_query(path: str | os.PathLike[str], query: str, *, timeout_seconds: float, keep_rows: int) -> QueryResult:
    """Run `query` on the database file opened read-only (LadybugDB refuses any write there), stopped by LadybugDB's
    query timeout; a run that still took longer (e.g. while materializing) counts as timed out too."""
    db = lb.Database(str(path), read_only=True, buffer_pool_size=256 * MB)
    try:
        conn = lb.Connection(db)
        try:
            conn.set_query_timeout(max(1, int(timeout_seconds * 1000)))
            started = time.monotonic()
            try:
                result = conn.execute(query)
            except RuntimeError as exc:
                seconds = time.monotonic() - started
                if str(exc).strip() == "Interrupted." or seconds > timeout_seconds:
                    raise QueryTimedOut(f"stopped after {seconds:.2f}s, the limit is {timeout_seconds:g}s") from None
                raise QueryRefused(f"LadybugDB refused it: {exc}") from None
            if isinstance(result, list):  # several statements: each gave its own result
                for part in result:
                    part.close()
                raise QueryRefused("it holds several statements: a smoke query is one statement")
            try:
                columns = list(result.get_column_names())
                row_count = result.get_num_tuples()
                rows = [result.get_next() for _ in range(min(keep_rows, row_count))]
            finally:
                result.close()
            seconds = time.monotonic() - started
        finally:
            conn.close()
    finally:
        db.close()
    if seconds > timeout_seconds:
        raise QueryTimedOut(f"took {seconds:.2f}s, the limit is {timeout_seconds:g}s")
    return QueryResult(columns, rows, row_count, seconds)


def _rows(result) -> list[list]:
    out = []
    while result.has_next():
        out.append(result.get_next())
    return out


def _ddl(conn: lb.Connection, statement: str, table: TableSchema) -> None:
    try:
        conn.execute(statement)
    except RuntimeError as exc:
        files = ", ".join(str(p) for p in table.files[:3])
        raise SnapshotError(f"{files}: LadybugDB cannot create {table.kind} table {table.name}: {exc}") from None


def _path_literal(path: Path) -> str:
    text = str(path)
    if _UNSAFE_PATH_CHARS & set(text):
        raise PermanentTargetError(
            f"embedded.path {text!r} contains a quote, backslash or glob character, which LadybugDB's COPY cannot "
            "take in a file name: choose a plain folder name"
        )
    return f"'{text}'"
