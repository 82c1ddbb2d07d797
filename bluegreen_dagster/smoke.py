"""Pre-switch smoke queries and warm-up: the new database answers the questions its readers will ask, before the
alias moves to it.

`config.yaml` lists them under `smoke:` (all customers) and `customers.<name>.smoke:` (merged over it by name,
see `config.SmokeSettings`). The blocking check `smoke_queries` (assets.py) calls `run_plan` on the new database
after verification: first the optional warm-up (its duration goes into the check's metadata), then each query,
read-only and within its time limit (`GraphTarget.read_query`), against one expectation:

- `min_rows: N`        the query returns at least N rows;
- `equals: X`          the value of `column` in the first row is X (a number equals a number of either type);
- `within_seconds: T`  the query runs to its end within T seconds.

A query the store refuses or stops at its limit fails like an unmet expectation. A failed warm-up fails the
check too: it was configured, and a database that cannot answer it should not go live. What a retry can fix
(the store unreachable) raises TransientTargetError for the step's RetryPolicy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bluegreen_dagster.config_smoke import SmokeQuery, SmokeSettings
from bluegreen_dagster.targets.base import GraphTarget, QueryRefused, QueryTimedOut

# Rows kept from each query: the first one is what `equals` reads, and a few are shown in the check's metadata.
KEEP_ROWS = 3
# Longest value text shown in a message or in metadata.
_SHOWN = 200


@dataclass
class Outcome:
    """One smoke query's result: what was expected, what came back."""

    name: str
    passed: bool
    expected: str
    got: str
    seconds: float | None  # None when the store refused the query


@dataclass
class Warmup:
    seconds: float | None
    error: str | None = None


@dataclass
class SmokeReport:
    database: str
    warmup: Warmup | None
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        return (self.warmup is None or self.warmup.error is None) and all(o.passed for o in self.outcomes)

    def description(self) -> str:
        """What failed (each query by its configured name: expected, got), or a one-line summary."""
        failures = []
        if self.warmup is not None and self.warmup.error is not None:
            failures.append(f"the warm-up query failed: {self.warmup.error}")
        failures += [f"smoke query {o.name!r} expected {o.expected}, got {o.got}" for o in self.outcomes
                     if not o.passed]
        if failures:
            return f"{self.database}: " + "; ".join(failures) + ". The alias was not moved; the database is kept " \
                   "for inspection until cleanup"
        warm = f"a {self.warmup.seconds:.2f}s warm-up" if self.warmup is not None else ""
        n = len(self.outcomes)
        if not n:
            return f"{self.database}: {warm}; no smoke queries configured"
        passed = f"{self.database}: {n} smoke quer{'y' if n == 1 else 'ies'} passed"
        return f"{passed} after {warm}" if warm else passed

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"database": self.database, "queries": [asdict(o) for o in self.outcomes],
                               "failed": [o.name for o in self.outcomes if not o.passed]}
        if self.warmup is not None and self.warmup.seconds is not None:
            out["warmup_s"] = round(self.warmup.seconds, 3)
        if self.warmup is not None and self.warmup.error is not None:
            out["warmup_error"] = self.warmup.error
        return out


def is_empty(plan: SmokeSettings) -> bool:
    return plan.warmup is None and not plan.queries


def run_plan(target: GraphTarget, database: str, plan: SmokeSettings) -> SmokeReport:
    """The warm-up, then every smoke query, on `database`; nothing here writes to it."""
    warmup = None
    if plan.warmup is not None:
        try:
            result = target.read_query(database, plan.warmup.query, timeout_seconds=plan.warmup.timeout_seconds,
                                       keep_rows=0)
            warmup = Warmup(result.seconds)
        except (QueryRefused, QueryTimedOut) as exc:
            warmup = Warmup(None, str(exc))
    return SmokeReport(database, warmup, [run_query(target, database, q) for q in plan.queries])


def run_query(target: GraphTarget, database: str, query: SmokeQuery) -> Outcome:
    expected = expectation(query)
    try:
        result = target.read_query(database, query.query, timeout_seconds=query.limit_seconds, keep_rows=KEEP_ROWS)
    except QueryTimedOut as exc:
        return Outcome(query.name, False, expected, f"no result in time ({exc})", query.limit_seconds)
    except QueryRefused as exc:
        return Outcome(query.name, False, expected, f"an error ({exc})", None)
    seconds = round(result.seconds, 3)
    rows = f"{result.row_count} row{'' if result.row_count == 1 else 's'}"
    if query.min_rows is not None:
        return Outcome(query.name, result.row_count >= query.min_rows, expected, rows, seconds)
    if query.within_seconds is not None:
        return Outcome(query.name, True, expected, f"{rows} in {result.seconds:.2f}s", seconds)
    if query.column not in result.columns:
        return Outcome(query.name, False, expected,
                       f"no column {query.column!r} (the query returns {', '.join(result.columns) or 'no columns'})",
                       seconds)
    if not result.rows:
        return Outcome(query.name, False, expected, "no rows", seconds)
    value = result.rows[0][result.columns.index(query.column)]
    return Outcome(query.name, same_value(query.equals, value), expected, f"{query.column} = {shown(value)}",
                   seconds)


def expectation(query: SmokeQuery) -> str:
    if query.min_rows is not None:
        return f"at least {query.min_rows} row{'' if query.min_rows == 1 else 's'}"
    if query.within_seconds is not None:
        return f"to finish within {query.within_seconds:g}s"
    return f"{query.column} = {shown(query.equals)} in the first row"


def same_value(expected: Any, actual: Any) -> bool:
    """YAML's value against the store's: numbers compare as numbers (800 equals 800.0), a boolean only equals a
    boolean (True is not 1), anything else must be equal and of the same type (the string "1" is not 1)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
