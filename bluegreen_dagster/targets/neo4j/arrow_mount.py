"""When is an Arrow-built database ready: waiting for GDS to register it, and mounting its store only when safe.

GDS's own signal is the RELATIONSHIP_LOAD_DONE reply: its importer (GdsParallelBatchImporter) writes the store,
then registers and starts the database and looks at it (`isAvailable`, at most 10 times one second); a database
that does not start is only logged ("Unable to start database"), the reply carries no error. The v1 protocol
has no action to ask whether GDS is still busy (its actions: CREATE_DATABASE, NODE_LOAD_DONE,
RELATIONSHIP_LOAD_DONE, ABORT), and whether the reply waits for the registration is not documented. So:

1. After the reply, SHOW DATABASE is polled for `neo4j.arrow_mount_wait` seconds plus 1 s per 20 MB of
   snapshot (the store may still be written), at most `neo4j.online_timeout`. No CREATE is ever sent meanwhile:
   a CREATE DATABASE mounts whatever store files are on disk, however incomplete.
2. Listed: the target polls it until online (`Neo4jTarget.wait_online`, `neo4j.online_timeout`).
3. Not listed after the whole wait: GDS gave up registering it and its store is complete, so it is mounted with
   `CREATE DATABASE $name IF NOT EXISTS WAIT` (a no-op if GDS registered it after all; a WAIT that gives up is
   polled, admin.py), then 2.
4. Not listed when `neo4j.online_timeout` cut the wait short: GDS may still be writing; no CREATE, a transient
   error that names the setting (the retry finds the database if GDS registers it meanwhile, and reuses it).

The same wait comes before a retry replaces "already existing" store files of an earlier import of the snapshot
(`stays_unregistered`, arrow.py's force=true): they may be the ones GDS is still registering.
"""

from __future__ import annotations

import logging
import time

from bluegreen_dagster.config_neo4j import Neo4jSettings, TopologySettings
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.neo4j.admin import Admin

log = logging.getLogger(__name__)

# Snapshot bytes per second a store is written at, at the least (a guess on the slow side: no public figure).
STORE_BYTES_PER_SECOND = 20 * 1024 * 1024


def mount_wait(settings: Neo4jSettings, snapshot_bytes: int) -> float:
    """Seconds GDS may still be writing, registering and starting the store of a snapshot of this size."""
    return settings.arrow_mount_wait + max(0, snapshot_bytes) / STORE_BYTES_PER_SECOND


def await_registration(admin: Admin, settings: Neo4jSettings, name: str, snapshot_bytes: int, *,
                       topology: TopologySettings | None = None, poll_seconds: float = 1.0) -> None:
    """After RELATIONSHIP_LOAD_DONE replied: return once SHOW DATABASE lists `name`, mounting its store only
    after the whole wait (rules 1, 3 and 4 of the module docstring). The caller then waits for it to be online."""
    if not _listed_within_wait(admin, settings, name, snapshot_bytes, poll_seconds):
        log.warning("%s is not listed %.0fs after the GDS Arrow import finished (GDS only logs 'Unable to start "
                    "database'): mounting its store with CREATE DATABASE IF NOT EXISTS", name,
                    mount_wait(settings, snapshot_bytes))
        admin.create_database(name, topology, mount=True)


def stays_unregistered(admin: Admin, settings: Neo4jSettings, name: str, snapshot_bytes: int, *,
                       poll_seconds: float = 1.0) -> bool:
    """Before the store files of an earlier import of `name` are replaced (an Arrow create with force=true): GDS
    may still be writing or registering them (that import's reply came moments ago). True only when SHOW DATABASE
    still does not list `name` after the whole wait; raises as rule 4 when online_timeout cuts it short."""
    return not _listed_within_wait(admin, settings, name, snapshot_bytes, poll_seconds)


def _listed_within_wait(admin: Admin, settings: Neo4jSettings, name: str, snapshot_bytes: int,
                        poll_seconds: float) -> bool:
    wanted = mount_wait(settings, snapshot_bytes)
    start = time.monotonic()
    while admin.database_status(name) is None:
        waited = time.monotonic() - start
        if waited >= min(wanted, settings.online_timeout):
            if wanted > settings.online_timeout:
                raise TransientTargetError(
                    f"database {name} is not listed {waited:.0f}s after the GDS Arrow import finished, and GDS may "
                    f"still be writing its store ({snapshot_bytes} bytes of snapshot ask for {wanted:.0f}s): not "
                    "mounting or replacing it; raise neo4j.online_timeout above that, and see the Neo4j debug log")
            return False
        time.sleep(poll_seconds)
    return True


__all__ = ["STORE_BYTES_PER_SECOND", "await_registration", "mount_wait", "stays_unregistered"]
