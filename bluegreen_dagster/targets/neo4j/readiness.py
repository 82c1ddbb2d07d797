"""Ready before live: the indexes readers need are ONLINE, and the database is read-only, before verification.

The GDS Arrow importer builds only the label and relationship-type lookup indexes; the Cypher loader builds one on
the node key per label. Either way, after the load and before the database is verified (and so long before the
alias moves to it), `make_ready`:

1. creates an index on the node key (`nodeId`) of every label, plus `neo4j.indexes` (label -> properties);
2. waits until every index is ONLINE, at most `neo4j.index_timeout` seconds, logging the population progress
   (a reader's query planned while an index populates scans the whole label);
3. marks the database read-only (`neo4j.read_only`, default true): a snapshot database is never written again.

It is idempotent: a reused database gets only what it lacks (made writable for that, then read-only again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bluegreen_dagster.config_neo4j import Neo4jSettings
from bluegreen_dagster.names import check_identifier
from bluegreen_dagster.targets.base import PermanentTargetError, TransientTargetError, validate_database
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.admin import Admin

log = logging.getLogger(__name__)

# Seconds between two looks at SHOW INDEXES while indexes populate (and between two progress lines).
POLL_SECONDS = 1.0


def wanted_indexes(labels: Iterable[str], settings: Neo4jSettings) -> set[tuple[str, str]]:
    """(label, property) of every index readers need: the node key of each label plus neo4j.indexes."""
    wanted = {(label, queries.ID_PROPERTY) for label in labels if label != queries.LOAD_LABEL}
    wanted |= {(label, prop) for label, props in settings.indexes.items() for prop in props}
    return wanted


def property_indexes(admin: Admin, database: str) -> dict[tuple[str, str], dict]:
    """(label, property) -> the SHOW INDEXES row of each single-property node index of `database`."""
    rows = admin.read(database, queries.SHOW_INDEXES, f"listing the indexes of {database}")
    return {(r["labelsOrTypes"][0], r["properties"][0]): r for r in rows
            if r.get("labelsOrTypes") and r.get("properties") and len(r["properties"]) == 1
            and r.get("type") != "LOOKUP"}


def make_ready(admin: Admin, settings: Neo4jSettings, database: str, labels: Iterable[str], *,
               poll_seconds: float = POLL_SECONDS) -> None:
    validate_database(database)
    wanted = wanted_indexes(labels, settings)
    existing = property_indexes(admin, database)
    missing = sorted(wanted - set(existing))
    if missing:
        if _access(admin, database) == "read-only":  # reused, from before neo4j.indexes listed more
            admin.run(queries.SET_READ_WRITE, {"name": database}, what=f"making {database} writable for indexes",
                      wait=True)
        for label, prop in missing:
            check_identifier(label, "label"), check_identifier(prop, "property name")
            admin.run(queries.CREATE_PROPERTY_INDEX.format(label=f"`{label}`", property=f"`{prop}`"),
                      database=database, what=f"creating the index on {label}.{prop} in {database}")
        log.info("%s: created %d index(es): %s", database, len(missing),
                 ", ".join(f"{label}.{prop}" for label, prop in missing))
    await_online(admin, settings, database, wanted, poll_seconds=poll_seconds)
    if settings.read_only and _access(admin, database) != "read-only":
        admin.run(queries.SET_READ_ONLY, {"name": database}, what=f"marking {database} read-only", wait=True)


def await_online(admin: Admin, settings: Neo4jSettings, database: str, wanted: set[tuple[str, str]], *,
                 poll_seconds: float = POLL_SECONDS) -> None:
    """Poll SHOW INDEXES until every wanted index is ONLINE (progress in the log), then `db.awaitIndexes` as
    the server's own word; FAILED is permanent, the time limit transient."""
    deadline = time.monotonic() + settings.index_timeout
    while True:
        indexes = property_indexes(admin, database)
        failed = [f"{k[0]}.{k[1]}" for k in wanted if indexes.get(k, {}).get("state") == "FAILED"]
        if failed:
            raise PermanentTargetError(f"{database}: index population FAILED for {', '.join(sorted(failed))}; "
                                       "see SHOW INDEXES YIELD * and the Neo4j debug log (a property of several "
                                       "types, or too long a string value)")
        waiting = {k: indexes.get(k, {}) for k in wanted if indexes.get(k, {}).get("state") != "ONLINE"}
        if not waiting:
            break
        progress = ", ".join(f"{label}.{prop} {row.get('state', 'missing')} "
                             f"{float(row.get('populationPercent') or 0):.0f}%"
                             for (label, prop), row in sorted(waiting.items()))
        if time.monotonic() >= deadline:
            raise TransientTargetError(f"{database}: indexes not ONLINE after neo4j.index_timeout "
                                       f"{settings.index_timeout:g}s ({progress})")
        log.info("%s: waiting for indexes: %s", database, progress)
        time.sleep(poll_seconds)
    admin.run(queries.AWAIT_INDEXES, {"seconds": max(1, int(deadline - time.monotonic()))}, database=database,
              what=f"waiting for the indexes of {database}")
    log.info("%s: %d index(es) ONLINE", database, len(wanted))


def _access(admin: Admin, database: str) -> str:
    rows = admin.run(queries.DATABASE_ACCESS, {"name": database}, what=f"reading the access mode of {database}")
    modes = {r["access"] for r in rows}
    return modes.pop() if len(modes) == 1 else "unknown"


__all__ = ["await_online", "make_ready", "property_indexes", "wanted_indexes"]
