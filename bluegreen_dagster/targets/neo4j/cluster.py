"""What a cluster reports, read as one answer: SHOW DATABASES has one row per hosting server.

A member that does not answer reports `unknown`; one that is moving a database away reports `deallocating` while
still online; a new allocation reports `starting` or `store copying`. Those are transient, not failures: a
database any member reports in such a state is "not decided" (merged as that state, or `mixed` when members
disagree), and cleanup and `load` wait for it instead of dropping it (bluegreen.cleanup,
`base.UNDECIDED_STATUSES`). A database is failed only when every row says the same failed state.
"""

from __future__ import annotations

from collections.abc import Iterable

from bluegreen_dagster.targets.base import UNDECIDED_STATUSES


def merged_status(statuses: Iterable[str]) -> str | None:
    """One state for a database from its per-server `currentStatus` values (None: no row, not listed)."""
    seen = [str(s or "unknown") for s in statuses]
    if not seen:
        return None
    distinct = set(seen)
    if len(distinct) == 1:
        return seen[0]
    undecided = sorted(distinct & UNDECIDED_STATUSES)
    return undecided[0] if undecided else "mixed"


def merge_rows(rows: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """[(name, currentStatus)] with one row per server -> one (name, merged status) per database, in order."""
    by_name: dict[str, list[str]] = {}
    for name, status in rows:
        by_name.setdefault(name, []).append(status)
    return [(name, merged_status(statuses) or "unknown") for name, statuses in by_name.items()]


def allocation_pending(rows: list[dict]) -> str | None:
    """What keeps a new database from being used, from its SHOW DATABASES rows (queries.DATABASE_ALLOCATION):
    None once every server allocated to it reports `online` and the copies running equal the copies requested
    (primaries and secondaries), else a line for the log and for the time-out message. A server that reports
    `unknown` holds it back like one still `starting`: the database is verified only where it fully runs."""
    if not rows:
        return "not listed yet"
    waiting = [f"{r.get('serverID') or r.get('address') or '?'} {r.get('currentStatus') or 'unknown'}"
               for r in rows if r.get("currentStatus") != "online"]
    counts = []
    for kind in ("Primaries", "Secondaries"):
        current = {r.get(f"current{kind}Count") for r in rows}
        requested = {r.get(f"requested{kind}Count") for r in rows} - {None}
        if requested and current != requested:  # None: a server that does not report counts (standalone)
            counts.append(f"{min(c or 0 for c in current)}/{max(requested)} {kind.lower()}")
    if not waiting and not counts:
        return None
    return "; ".join([", ".join(counts) + " running" if counts else "", ", ".join(waiting)]).strip("; ")


__all__ = ["allocation_pending", "merge_rows", "merged_status"]
