"""Sensors: one notices complete snapshots and launches their runs; one alerts on failed runs.

The snapshot sensor registers one dynamic partition per new complete snapshot and requests one run for it
(run_key = partition key, so a snapshot is launched once). What was "seen" lives in the cursor, not in the
partitions (cleanup prunes those): per customer, the timestamps of the newest `keep_databases` snapshots launched.
A snapshot is new when it is newer than the oldest of those, or when it falls between them and was not launched
(an older snapshot arriving late: loaded, never switched to). A snapshot older than all of them is superseded:
cleanup would drop it at once, so it is not loaded (`bluegreen load` still can). The cursor stays
O(customers x keep_databases), and a tick reads only the snapshots above each customer's window.

Re-drops: the cursor also keeps each launched snapshot's `Snapshot.stamp()` (four stats, no file read). When a
stamp changes and the folder is complete again, the sensor fingerprints that one snapshot; if its files differ from
the ones its database was loaded from (fingerprints.py), it logs the re-drop once and launches the partition again
under a new run key (`<key>@<fingerprint prefix>`), whose load replaces the database or says what to do.
"""

from __future__ import annotations

import json
import os

import dagster as dg

from bluegreen_dagster import fingerprints, records
from bluegreen_dagster.alerts import notify_run_failure
from bluegreen_dagster.concurrency import sync_pool_limit
from bluegreen_dagster.config_alerts import AlertSettings
from bluegreen_dagster.folders import COMPLETE
from bluegreen_dagster.names import SnapshotError, SnapshotId
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.resources import PipelineResource
from bluegreen_dagster.snapshots import Snapshot, folder_stamp, scan

# Version 2 had no stamps, version 3 stamps without `_SUCCESS`: both are read as version 4 whose stamps are taken
# on the first tick (nothing relaunched, no snapshot hashed).
CURSOR_VERSION = 4
_READABLE = {2, 3, 4}


class Cursor:
    """{"v": 4, "launched": {customer: [ts, ...newest first, at most `window`]}, "stamps": {customer: {ts: stamp}},
    "invalid": [paths reported]}."""

    def __init__(self, raw: str | None, window: int) -> None:
        data = json.loads(raw) if raw else {}
        readable = data.get("v") in _READABLE
        self.window = window
        self.launched: dict[str, list[int]] = (
            {c: sorted(map(int, ts), reverse=True)[:window] for c, ts in data.get("launched", {}).items()}
            if readable else {})
        self.stamps: dict[str, dict[str, str]] = dict(data.get("stamps", {})) if data.get("v") == CURSOR_VERSION else {}
        self.invalid: set[str] = set(data.get("invalid", []))

    def floor(self, customer: str) -> int | None:
        """Snapshots at or below this timestamp are seen or superseded; None: every snapshot may still be new."""
        seen = self.launched.get(customer, [])
        return seen[-1] if len(seen) >= self.window else None

    def is_new(self, snap: Snapshot) -> bool:
        floor = self.floor(snap.id.customer)
        return (floor is None or snap.id.ts > floor) and snap.id.ts not in self.launched.get(snap.id.customer, ())

    def add(self, snap: Snapshot) -> None:
        seen = self.launched.setdefault(snap.id.customer, [])
        seen.append(snap.id.ts)
        seen.sort(reverse=True)
        del seen[self.window:]
        self.set_stamp(snap, snap.stamp())

    def stamp(self, snap: Snapshot) -> str | None:
        return self.stamps.get(snap.id.customer, {}).get(str(snap.id.ts))

    def set_stamp(self, snap: Snapshot, stamp: str | None) -> None:
        if stamp is not None:
            self.stamps.setdefault(snap.id.customer, {})[str(snap.id.ts)] = stamp

    def dump(self) -> str:
        # Stamps only for launched snapshots: the cursor stays O(customers x keep_databases).
        stamps = {c: kept for c, seen in self.launched.items()
                  if (kept := {str(ts): st for ts in seen if (st := self.stamps.get(c, {}).get(str(ts)))})}
        return json.dumps({"v": CURSOR_VERSION, "launched": self.launched, "stamps": stamps,
                           "invalid": sorted(self.invalid)}, separators=(",", ":"))


def new_snapshots(pipeline: PipelineResource, cursor: Cursor):
    """(new complete snapshots oldest first, the scan result), reading only what is above each window."""
    floors = {c: f for c in cursor.launched if (f := cursor.floor(c)) is not None}
    found = scan(pipeline.base, pipeline.settle_seconds, newer_than=floors)
    return [s for s in found.complete if cursor.is_new(s)], found


def redropped(context: dg.SensorEvaluationContext, pipeline: PipelineResource, cursor: Cursor,
              limit: int) -> list[tuple[Snapshot, str]]:
    """(snapshot, its fingerprint) for at most `limit` launched snapshots dropped again with other files than their
    database was loaded from, each logged once. Costs four stats per launched snapshot; a snapshot is hashed only
    when its stamp changed and it is complete again."""
    found = []
    base = os.fspath(pipeline.base)
    loading: set[str] | None = None  # read once per tick, and only when a stamp changed
    for customer, seen in cursor.launched.items():
        stamps = cursor.stamps.get(customer, {})
        for ts in seen:
            stamp, before = folder_stamp(f"{base}{os.sep}{customer}{os.sep}{ts}"), stamps.get(str(ts))
            if stamp is None or stamp == before:
                continue  # gone (a re-drop in progress, or deleted), or unchanged
            snap = Snapshot(SnapshotId(customer, ts, str(ts)), pipeline.base / customer / str(ts))
            if before is None:
                cursor.set_stamp(snap, stamp)  # launched before stamps were kept: take it now, launch nothing
                continue
            if loading is None:
                loading = records.in_flight_partitions(context.instance, None)
            if snap.key in loading:
                # Its run records the fingerprint of what it loads; compared once it ended (the stamp stays the
                # old one). A folder merely touched while its run waits (chown, chmod) launches nothing.
                continue
            if len(found) == limit or snap.state(pipeline.settle_seconds)[0] != COMPLETE:
                continue  # looked at again next tick (the stamp stays the old one)
            try:
                fingerprint = snap.fingerprint()
            except SnapshotError:
                continue  # still changing: next tick
            cursor.set_stamp(snap, stamp)
            loaded = records.recorded_fingerprint(context.instance, snap.key)
            if loaded == fingerprint:
                continue  # the same files again (or only their folders were touched): nothing to load
            context.log.warning(
                f"{snap.key} was dropped again with other files (fingerprint {fingerprints.short(fingerprint)}, "
                + (f"loaded: {fingerprints.short(loaded)}" if loaded else "none recorded as loaded")
                + f"): launching run key {fingerprints.run_key(snap.key, fingerprint)} to load it again")
            found.append((snap, fingerprint))
    return found


def snapshot_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    """Watches dataset.base_path for complete snapshots; one partition and one run each (and one per re-drop)."""
    if sync_pool_limit(context.instance, pipeline.max_concurrent_loads):
        context.log.info(f"pool bluegreen_loads limit set to {pipeline.max_concurrent_loads} "
                         "(orchestrator.max_concurrent_loads)")
    cursor = Cursor(context.cursor, window=pipeline.keep_databases)
    new, found = new_snapshots(pipeline, cursor)
    for path, why in found.invalid.items():
        if path not in cursor.invalid:
            context.log.warning(f"skipping {path}: {why}")
    cursor.invalid = set(found.invalid)  # only folders still present stay in the cursor
    again = redropped(context, pipeline, cursor, limit=pipeline.max_runs_per_tick)

    # Newest first, so a backlog reaches the alias soon and what the window supersedes is never requested.
    batch: list[Snapshot] = []
    for snap in sorted(new, key=lambda s: s.id.ts, reverse=True):
        if len(batch) + len(again) >= pipeline.max_runs_per_tick:
            break  # the rest comes next tick
        if cursor.is_new(snap):
            cursor.add(snap)
            batch.append(snap)
    batch.sort(key=lambda s: (s.id.ts, s.id.customer))
    if not batch and not again:
        waiting = "; ".join(f"{path}: {why}" for path, why in list(found.waiting.items())[:3])
        return dg.SensorResult(skip_reason=f"no new complete snapshots in {pipeline.base_path}"
                               + (f" (waiting: {waiting})" if waiting else ""), cursor=cursor.dump())
    keys = [s.key for s in batch]
    if keys:
        context.log.info(f"new snapshots: {', '.join(keys)}")
    requests = [dg.RunRequest(partition_key=s.key, run_key=s.key, tags={records.CUSTOMER_TAG: s.id.customer})
                for s in batch]
    requests += [dg.RunRequest(partition_key=s.key, run_key=fingerprints.run_key(s.key, fp),
                               tags={records.CUSTOMER_TAG: s.id.customer}) for s, fp in again]
    return dg.SensorResult(
        run_requests=requests,
        # A re-dropped snapshot's partition is added again in case a cleanup pruned it (adding is idempotent).
        dynamic_partitions_requests=[snapshot_partitions.build_add_request(keys + [s.key for s, _ in again])],
        cursor=cursor.dump(),
    )


def build_alert_sensor(alerts: AlertSettings) -> dg.RunFailureSensorDefinition:
    """Every run that failed for good is logged in this sensor's tick log with its real cause and sent to the
    channels `alerts:` configures (alerts/); a channel that is down is logged and skipped."""

    @dg.run_failure_sensor(name=records.ALERT_SENSOR, default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Alerts on runs that failed for good (config.yaml alerts:), with the cause.")
    def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
        notify_run_failure(context, alerts)

    return alert_on_failure
