"""Sensors: one notices complete snapshots and launches their runs; one alerts on failed runs.

The snapshot sensor registers one dynamic partition per new complete snapshot and requests one run for it
(run_key = partition key, so a snapshot is launched once). What was "seen" lives in the cursor, not in the
partitions (cleanup prunes those): per customer, the timestamps of the newest `keep_databases` snapshots launched.
A snapshot is new when it is newer than the oldest of those, or when it falls between them and was not launched
(an older snapshot arriving late: loaded, never switched to). A snapshot older than all of them is superseded:
cleanup would drop it at once, so it is not loaded (`bluegreen load` still can). The cursor stays
O(customers x keep_databases), and a tick reads only the snapshots above each customer's window.
"""

from __future__ import annotations

import json

import dagster as dg

from bluegreen_dagster.alerts import notify_run_failure
from bluegreen_dagster.concurrency import sync_pool_limit
from bluegreen_dagster.config import AlertSettings
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.resources import PipelineResource
from bluegreen_dagster.snapshots import Snapshot, scan

CURSOR_VERSION = 2


class Cursor:
    """{"v": 2, "launched": {customer: [ts, ...newest first, at most `window`]}, "invalid": [paths reported]}."""

    def __init__(self, raw: str | None, window: int) -> None:
        data = json.loads(raw) if raw else {}
        self.window = window
        self.launched: dict[str, list[int]] = (
            {c: sorted(map(int, ts), reverse=True)[:window] for c, ts in data.get("launched", {}).items()}
            if data.get("v") == CURSOR_VERSION else {})
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

    def dump(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "launched": self.launched, "invalid": sorted(self.invalid)},
                          separators=(",", ":"))


def new_snapshots(pipeline: PipelineResource, cursor: Cursor):
    """(new complete snapshots oldest first, the scan result), reading only what is above each window."""
    floors = {c: f for c in cursor.launched if (f := cursor.floor(c)) is not None}
    found = scan(pipeline.base, pipeline.settle_seconds, newer_than=floors)
    return [s for s in found.complete if cursor.is_new(s)], found


def snapshot_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
    """Watches dataset.base_path for complete snapshots; one partition and one run each."""
    if sync_pool_limit(context.instance, pipeline.max_concurrent_loads):
        context.log.info(f"pool bluegreen_loads limit set to {pipeline.max_concurrent_loads} "
                         "(orchestrator.max_concurrent_loads)")
    cursor = Cursor(context.cursor, window=pipeline.keep_databases)
    new, found = new_snapshots(pipeline, cursor)
    for path, why in found.invalid.items():
        if path not in cursor.invalid:
            context.log.warning(f"skipping {path}: {why}")
    cursor.invalid = set(found.invalid)  # only folders still present stay in the cursor

    # Newest first, so a backlog reaches the alias soon and what the window supersedes is never requested.
    batch: list[Snapshot] = []
    for snap in sorted(new, key=lambda s: s.id.ts, reverse=True):
        if len(batch) == pipeline.max_runs_per_tick:
            break  # the rest comes next tick
        if cursor.is_new(snap):
            cursor.add(snap)
            batch.append(snap)
    batch.sort(key=lambda s: (s.id.ts, s.id.customer))
    if not batch:
        waiting = "; ".join(f"{path}: {why}" for path, why in list(found.waiting.items())[:3])
        return dg.SensorResult(skip_reason=f"no new complete snapshots in {pipeline.base_path}"
                               + (f" (waiting: {waiting})" if waiting else ""), cursor=cursor.dump())
    keys = [s.key for s in batch]
    context.log.info(f"new snapshots: {', '.join(keys)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=s.key, run_key=s.key, tags={"customer": s.id.customer})
                      for s in batch],
        dynamic_partitions_requests=[snapshot_partitions.build_add_request(keys)],
        cursor=cursor.dump(),
    )


def build_alert_sensor(alerts: AlertSettings) -> dg.RunFailureSensorDefinition:
    """Every run that failed for good is logged in this sensor's tick log with its real cause and sent to the
    channels `alerts:` configures (alerts/); a channel that is down is logged and skipped."""

    @dg.run_failure_sensor(name="alert_on_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Alerts on runs that failed for good (config.yaml alerts:), with the cause.")
    def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
        notify_run_failure(context, alerts)

    return alert_on_failure
