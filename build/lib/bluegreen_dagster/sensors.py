"""Sensors: one notices complete snapshots and launches their runs; one reports failed runs.

The snapshot sensor registers one dynamic partition per complete snapshot and requests one run for it
(run_key = partition key, so a snapshot is launched once). A snapshot is new when its partition does not exist
yet, so an older snapshot that arrives late is still loaded (the alias rules keep it from taking over). The cursor
only remembers which invalid folders were already reported, so each is reported once.
"""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg

from bluegreen_dagster.config import Settings
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.snapshots import parse_partition_key, scan

ALERT_WEBHOOK_ENV = "BLUEGREEN_ALERT_WEBHOOK"


def build_snapshot_sensor(settings: Settings, job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    base_path = settings.dataset.base_path
    orchestrator = settings.orchestrator

    @dg.sensor(name="snapshot_sensor", job=job, minimum_interval_seconds=orchestrator.scan_interval,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Watches {base_path} for complete snapshots; one partition and one run each.")
    def snapshot_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        already_reported = set(cursor.get("invalid", []))
        found = scan(base_path, orchestrator.settle_seconds)
        for path, why in found.invalid.items():
            if path not in already_reported:
                context.log.warning(f"skipping {path}: {why}")

        known = set(context.instance.get_dynamic_partitions(snapshot_partitions.name))
        new = [s for s in found.complete if s.key not in known]
        batch = new[: orchestrator.max_runs_per_tick]  # bounded work per tick; the rest comes next tick
        # Only folders still present stay in the cursor, so it stays small.
        next_cursor = json.dumps({"invalid": sorted(found.invalid)})
        if not batch:
            waiting = "; ".join(f"{path}: {why}" for path, why in list(found.waiting.items())[:3])
            return dg.SensorResult(skip_reason=f"no new complete snapshots in {base_path}"
                                   + (f" (waiting: {waiting})" if waiting else ""), cursor=next_cursor)
        keys = [s.key for s in batch]
        context.log.info(f"new snapshots: {', '.join(keys)}" + (f" (+{len(new) - len(batch)} next tick)"
                                                                 if len(new) > len(batch) else ""))
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=s.key, run_key=s.key, tags={"customer": s.id.customer})
                          for s in batch],
            dynamic_partitions_requests=[snapshot_partitions.build_add_request(keys)],
            cursor=next_cursor,
        )

    return snapshot_sensor


def step_error(event: dg.DagsterEvent) -> str:
    """A failed step's cause as the user should read it: a Failure's description, else the exception's message."""
    data = event.event_specific_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message.strip() if data.error else "unknown error"


def failure_message(run: dg.DagsterRun, error: str) -> str:
    key = run.tags.get("dagster/partition", "")
    who = ""
    if key:
        try:
            sid = parse_partition_key(key)
            who = f" for customer {sid.customer}, snapshot {sid.timestamp}"
        except ValueError:
            who = f" for {key}"
    return f"bluegreen run {run.run_id[:8]}{who} failed; the alias was not moved. {error}"


@dg.run_failure_sensor(name="alert_on_failure", default_status=dg.DefaultSensorStatus.RUNNING,
                       description=f"Logs every failed run and, if ${ALERT_WEBHOOK_ENV} is set, posts it there "
                                   "(Slack-compatible JSON {\"text\": ...}).")
def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
    error = "; ".join(f"{e.step_key}: {step_error(e)}" for e in context.get_step_failure_events()) \
        or context.failure_event.message or "see the run's logs"
    text = failure_message(context.dagster_run, error)
    context.log.error(text)
    url = os.environ.get(ALERT_WEBHOOK_ENV)
    if url:
        request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass
