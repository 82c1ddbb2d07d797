"""Run retention: delete old runs and their event logs, so run history stays the size of a month, not of years.

24 snapshots a day for 1,000 customers is 24,000 runs a day. The `run_retention` schedule (schedules.py) runs the
job of the asset `run_history`, which deletes finished runs last updated more than `orchestrator.run_retention_days`
ago with `DagsterInstance.delete_run` (the run, its tags and every event it logged, its materializations and check
evaluations included), `orchestrator.run_retention_batch` runs per batch, one log line per batch. It never deletes:

- a run in flight (queued, starting, running, canceling), however old: only finished runs are read;
- a run of a snapshot partition that still exists (= a database that still exists, cleanup deletes both): its
  records say whether that database passed the gate, ever served the alias and which files it was loaded from
  (records.py), and the relaunch schedule counts its earlier attempts; a partition has a few runs at most;
- for each customer, the run that recorded what its alias serves now (its latest `live_graph` materialization)
  and the run that loaded that database, even when the partition itself was deleted by hand.

Dagster's own `retention:` instance setting only purges sensor and schedule ticks (the instance YAMLs set it).
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations when it defines it.

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg

from bluegreen_dagster import records
from bluegreen_dagster.reconcile import GROUP
from bluegreen_dagster.resources import PipelineResource

# Why a run is kept (the counts in the log and in `run_history`'s metadata).
PARTITION_EXISTS = "partition_exists"
LIVE_DATABASE = "live_database"


@dataclass
class RetentionResult:
    cutoff: datetime
    deleted: int = 0
    kept: Counter = field(default_factory=Counter)  # why -> runs kept
    batches: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        kept = ", ".join(f"{n} ({why.replace('_', ' ')})" for why, n in sorted(self.kept.items())) or "none"
        return (f"deleted {self.deleted} runs last updated before {self.cutoff.isoformat(timespec='seconds')} in "
                f"{self.batches} batches, {self.seconds:.1f} s; kept {kept}")


class Protection:
    """Which old finished runs must stay. The live databases' runs are read once per retention run; the existing
    partitions again before every batch, as a load may add one at any time."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.live = records.live_database_runs(instance)
        self.partitions: set[str] = set()

    def refresh(self) -> None:
        self.partitions = records.snapshot_partitions_now(self.instance)

    def why_kept(self, run: dg.DagsterRun) -> str | None:
        if run.run_id in self.live:
            return LIVE_DATABASE
        if run.tags.get(records.PARTITION_TAG) in self.partitions:
            return PARTITION_EXISTS
        return None


def delete_old_runs(instance: dg.DagsterInstance, older_than: timedelta, batch: int,
                    log: Callable[[str], None] = lambda _: None, now: datetime | None = None,
                    max_batches: int | None = None) -> RetentionResult:
    """Delete finished runs last updated before `now - older_than`, oldest first, `batch` at a time (at most
    `max_batches` batches), except the protected ones; `log` gets one line per batch."""
    started = time.monotonic()
    result = RetentionResult(cutoff=(now or datetime.now(timezone.utc)) - older_than)
    protection = Protection(instance)
    after: str | None = None  # the newest run kept so far: the next page starts after it
    while max_batches is None or result.batches < max_batches:
        protection.refresh()
        page = records.finished_runs_before(instance, result.cutoff, batch, after_run=after)
        if not page:
            break
        deleted = 0
        for record in page:
            run = record.dagster_run
            why = protection.why_kept(run)
            if why is None:
                instance.delete_run(run.run_id)
                deleted += 1
            else:
                result.kept[why] += 1
                after = run.run_id
        result.batches += 1
        result.deleted += deleted
        log(f"batch {result.batches}: deleted {deleted} of {len(page)} runs last updated up to "
            f"{page[-1].update_timestamp:%Y-%m-%d %H:%M} UTC ({result.deleted} deleted so far, "
            f"{sum(result.kept.values())} kept)")
        if len(page) < batch:
            break
    result.seconds = time.monotonic() - started
    return result


@dg.asset(key=records.RUN_HISTORY_ASSET, group_name=GROUP, kinds={"python"})
def run_history(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Deletes finished runs older than `orchestrator.run_retention_days` with their event logs (retention.py);
    records how many it deleted and kept, and why."""
    settings = pipeline.orchestration
    result = delete_old_runs(context.instance, timedelta(days=settings.run_retention_days),
                             settings.run_retention_batch, log=context.log.info)
    context.log.info(result.summary())
    return dg.MaterializeResult(metadata={
        "deleted": result.deleted, "batches": result.batches, "seconds": round(result.seconds, 2),
        "cutoff": result.cutoff.isoformat(timespec="seconds"), "retention_days": settings.run_retention_days,
        **{f"kept_{why}": result.kept.get(why, 0) for why in (PARTITION_EXISTS, LIVE_DATABASE)}})
