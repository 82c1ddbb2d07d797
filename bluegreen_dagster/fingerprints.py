"""Which files a snapshot database was loaded from, and what happens when a snapshot is dropped again under the
same timestamp with other files.

The record: `Snapshot.fingerprint()` (a SHA-256 over every file's name, size and content) is stored as the
`fingerprint` metadata of the partition's `snapshot_database` materialization (read back by
`records.recorded_fingerprint`). Why there and not in the database:
Dagster's instance (PostgreSQL in production) holds it across hosts, it is the same for both targets, and the graph
stays untouched (no extra node a reader would see, no change to the counts `verify_counts` compares).

The rule (`prepare_load`, before every load): a complete database whose recorded fingerprint differs from the
snapshot's files now is dropped and loaded again, unless the alias serves it: a live database is never replaced in
place, so that run fails with what to do. A database with the same fingerprint is reused as before.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from bluegreen_dagster.snapshots import Snapshot
from bluegreen_dagster.targets.base import GraphTarget, PermanentTargetError, TransientTargetError


class LiveSnapshotChanged(PermanentTargetError):
    """The alias serves a database loaded from other files than its snapshot folder holds now."""


def short(fingerprint: str) -> str:
    """The first 12 hex digits, enough to tell two versions of one snapshot apart in a log line or a run key."""
    return fingerprint.removeprefix("sha256:")[:12]


def run_key(key: str, fingerprint: str) -> str:
    """The run key of a re-dropped snapshot: a new one per content, so Dagster launches it once per version."""
    return f"{key}@{short(fingerprint)}"


def prepare_load(graph: GraphTarget, snapshot: Snapshot, fingerprint: str, recorded_fingerprint: str | None,
                 in_flight: Callable[[], Collection[str]], pinned: str | None = None) -> str | None:
    """Make sure database `snapshot.key`, if it exists complete, was loaded from the files the snapshot holds now:
    drop it when it was not (and the alias does not serve it) so the load that follows starts fresh.

    Returns a line for the run's log when it did something or could not check, None when there was nothing to do.
    Raises LiveSnapshotChanged (not retried) for the alias target or the `pinned` database (pins.py),
    TransientTargetError when another run is loading
    the same database. The caller holds the customer's lock, so the alias cannot move to it meanwhile."""
    key, customer = snapshot.key, snapshot.id.customer
    if recorded_fingerprint == fingerprint:
        return None
    if not any(d.name == key and d.status == "online" for d in graph.list_databases(customer)):
        return None  # nothing complete to reuse: the load creates it (the target removes a crashed load's leftovers)
    live = graph.alias_target(customer) == key or key == pinned
    if recorded_fingerprint is None:
        if live:
            return (f"{key} has no recorded fingerprint (loaded before fingerprints were recorded); the alias serves "
                    f"it, so it is reused as it is and recorded as {short(fingerprint)}; verify_counts still "
                    "compares its counts with the files")
        why = "no fingerprint was recorded for it, so which files it holds is unknown"
    else:
        if live:
            raise LiveSnapshotChanged(
                f"{key} is live (alias {customer}) but its snapshot folder now holds other files than it was loaded "
                f"from (fingerprint {short(recorded_fingerprint)} loaded, {short(fingerprint)} now in "
                f"{snapshot.path}). A live database is never replaced in place, so this run changes nothing. To "
                f"publish the new files, drop them as a new snapshot with a later timestamp "
                f"({snapshot.path.parent}/<later timestamp>/); or restore the files {key} was loaded from. To reload "
                f"this timestamp itself, first let a newer snapshot take the alias {customer}, then run the "
                f"partition {key} again (or `bluegreen rollback {customer}` to move the alias off it)")
        why = (f"the snapshot was dropped again under the same timestamp with other files (fingerprint "
               f"{short(recorded_fingerprint)} loaded, {short(fingerprint)} now in {snapshot.path})")
    if key in in_flight():
        raise TransientTargetError(f"{key} must be loaded again ({why}), but another run is loading it right now")
    graph.drop_database(key)
    return f"{key}: {why}; dropped it and loading it again into a fresh database"
