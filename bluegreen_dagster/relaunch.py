"""Relaunching snapshots whose run failed for a transient cause, which the snapshot sensor never does (its run key
is the partition key, and Dagster launches a run key once).

A failed run is **transient** when a later run may succeed:
- a step gave up on a transient target error (its Failure carries `records.FAILURE_KIND: transient`: the target was
  unreachable or over a health threshold through every retry), or
- the run itself failed, with no step failure and no error of its own, and nobody asked to cancel it: its worker
  died or never started. That is how Dagster 1.13 records it when the code server, run monitoring or a restarted
  worker fails the run from outside (`report_run_failed` without an error; at most a `RunFailureReason` of
  UNEXPECTED_TERMINATION, RUN_WORKER_RESTART or START_TIMEOUT). A run stopped for exceeding its maximum runtime
  is canceled first, so it is not taken for a dead worker.

It is **permanent** when a step's Failure says so (bad data, bad name, wrong credentials) or a blocking check
failed (verification, plausibility): the same snapshot would fail again. Anything else is unknown and is not
relaunched either: never guess. A relaunch is a new run of `load_snapshot` for the same partition with a new run
key `<partition>/relaunch-<n>` and the tag `bluegreen/relaunch=<n>`; those tags count the attempts per snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from bluegreen_dagster import records
from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.records import (
    CUSTOMER_TAG,
    FAILURE_KIND,
    IN_FLIGHT,
    PARTITION_TAG,
    PERMANENT,
    RELAUNCH_OF_TAG,
    RELAUNCH_TAG,
    SNAPSHOTS_PARTITIONS_NAME,
    TRANSIENT,
    WILL_RETRY_TAG,
)
from bluegreen_dagster.snapshots import snapshot_for_key

UNKNOWN = "unknown"
_WORKER_GONE = records.WORKER_DIED | records.WORKER_NEVER_STARTED
# How many recent failed runs of load_snapshot one tick looks at.
FAILED_RUNS_LOOKED_AT = 500


def failure_kind(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, str]:
    """(TRANSIENT | PERMANENT | UNKNOWN, why) for a failed run, from its event log."""
    failed_checks = records.failed_blocking_checks(instance, run.run_id)
    if failed_checks:
        return PERMANENT, f"check {next(iter(failed_checks))} failed"
    entries = instance.all_logs(run.run_id, of_type={
        dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.PIPELINE_FAILURE, dg.DagsterEventType.PIPELINE_CANCELING,
    })
    events = [e.dagster_event for e in entries if e.dagster_event is not None]
    kinds = []
    for event in events:
        if event.event_type != dg.DagsterEventType.STEP_FAILURE:
            continue
        user = event.event_specific_data.user_failure_data
        marker = user.metadata.get(FAILURE_KIND) if user is not None else None
        kinds.append((getattr(marker, "value", None), event.step_key))
    if any(kind == PERMANENT for kind, _ in kinds):
        return PERMANENT, "a step failed for a cause a retry cannot fix: " + ", ".join(
            step for kind, step in kinds if kind == PERMANENT)
    if kinds:
        if all(kind == TRANSIENT for kind, _ in kinds):
            return TRANSIENT, "gave up on a transient target error in " + ", ".join(step for _, step in kinds)
        return UNKNOWN, "a step failed without saying whether a retry can help"
    if any(event.event_type == dg.DagsterEventType.PIPELINE_CANCELING for event in events):
        return UNKNOWN, "the run was canceled (by an operator, or for exceeding its maximum runtime)"
    for event in events:
        if event.event_type == dg.DagsterEventType.PIPELINE_FAILURE:
            data = event.event_specific_data
            reason = getattr(data, "failure_reason", None)
            if getattr(data, "error", None) is None and (reason is None or reason in _WORKER_GONE):
                return TRANSIENT, "the run worker died" + (f" ({reason.value})" if reason else "")
    return UNKNOWN, "the run failed with an error of its own, outside any step"


@dataclass
class Decision:
    partition: str
    run_id: str
    relaunch: bool
    why: str
    attempt: int = 0  # the relaunch this would be (1 = first)


def decide(instance: dg.DagsterInstance, job_name: str, base_path, settle_seconds: float,
           max_attempts: int) -> list[Decision]:
    """For every snapshot whose latest load_snapshot run failed: relaunch it or not, and why (oldest first)."""
    failed = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE]),
                               limit=FAILED_RUNS_LOOKED_AT)
    partitions = sorted({run.tags[PARTITION_TAG] for run in failed if PARTITION_TAG in run.tags})
    decisions = []
    for key in partitions:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: key}))  # newest 1st
        latest = runs[0]
        if latest.status != dg.DagsterRunStatus.FAILURE:
            continue  # succeeded since, or running again
        if any(r.status in IN_FLIGHT for r in runs):
            continue
        attempts = sum(1 for r in runs if RELAUNCH_TAG in r.tags)
        kind, why = failure_kind(instance, latest)
        decision = Decision(key, latest.run_id, False, f"{key}: run {latest.run_id[:8]} failed ({kind}: {why})",
                            attempts + 1)
        decisions.append(decision)
        if kind != TRANSIENT:
            decision.why += "; not relaunched"
        elif latest.tags.get(WILL_RETRY_TAG) == "true":
            decision.why += "; Dagster's run retries relaunch it"
        elif attempts >= max_attempts:
            decision.why += (f"; not relaunched: {attempts} relaunches already (orchestrator.max_relaunch_attempts="
                             f"{max_attempts})")
        elif not instance.has_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, key):
            decision.why += "; not relaunched: its partition was deleted"
        else:
            try:
                snapshot = snapshot_for_key(base_path, key)
                missing = None if snapshot.path.is_dir() else f"{snapshot.path} is gone"
                missing = missing or snapshot.incomplete_reason(settle_seconds)
            except InvalidName as exc:
                missing = str(exc)
            if missing:
                decision.why += f"; not relaunched: {missing}"
            else:
                decision.relaunch = True
                decision.why += f"; relaunch {attempts + 1} of {max_attempts}"
    return decisions


def relaunch_requests(decisions: list[Decision]) -> list[dg.RunRequest]:
    """New runs of load_snapshot for the decisions to relaunch; each goes through the run queue like the sensor's."""
    return [dg.RunRequest(partition_key=d.partition, run_key=f"{d.partition}/relaunch-{d.attempt}",
                          tags={CUSTOMER_TAG: parse_partition_key(d.partition).customer, RELAUNCH_TAG: str(d.attempt),
                                RELAUNCH_OF_TAG: d.run_id})
            for d in decisions if d.relaunch]
