"""The schedules (Automation in the UI, each switchable there; running by default), built from config.yaml:

- `reconcile` (`orchestrator.reconcile_cron`, hourly): runs the job `reconcile` (reconcile.py).
- `relaunch_transient_failures` (same cron): a schedule launches runs of one job only (Dagster 1.13), so relaunching
  is its own schedule on `load_snapshot`. Its evaluation returns one RunRequest per snapshot to relaunch
  (relaunch.py); the runs go through the run queue like the sensor's, so the pool and the per-customer limit apply.
- `health_audit` (`orchestrator.health_audit_cron`, every 15 min): runs the job `health_audit` (health_audit.py).
- `run_retention` (`orchestrator.run_retention_cron`, hourly): runs the job `run_retention` (retention.py), unless
  the previous one is still deleting.
"""

from __future__ import annotations

import dagster as dg

from bluegreen_dagster.config import OrchestratorSettings
from bluegreen_dagster.health_audit import target_health
from bluegreen_dagster.reconcile import reconcile_report
from bluegreen_dagster.records import (
    HEALTH_AUDIT_JOB,
    HEALTH_AUDIT_SCHEDULE,
    LOAD_SNAPSHOT_JOB,
    RECONCILE_JOB,
    RECONCILE_SCHEDULE,
    RELAUNCH_SCHEDULE,
    RUN_RETENTION_JOB,
    RUN_RETENTION_SCHEDULE,
    job_in_flight,
)
from bluegreen_dagster.relaunch import decide, relaunch_requests
from bluegreen_dagster.resources import PipelineResource
from bluegreen_dagster.retention import run_history

ASSETS = [reconcile_report, target_health, run_history]


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(RECONCILE_JOB, selection=dg.AssetSelection.assets(reconcile_report),
                            executor_def=dg.in_process_executor,
                            description="Per customer: alias forward to the newest verified database, crashed "
                                        "loads' leftovers removed, retention; unsafe drift as a failed check"),
        dg.define_asset_job(HEALTH_AUDIT_JOB, selection=dg.AssetSelection.assets(target_health),
                            executor_def=dg.in_process_executor,
                            description="Records the target's health (heap, page cache, databases, free disk)"),
        dg.define_asset_job(RUN_RETENTION_JOB, selection=dg.AssetSelection.assets(run_history),
                            executor_def=dg.in_process_executor,
                            description="Deletes old finished runs and their event logs; keeps runs in flight, "
                                        "runs of existing snapshot partitions and of live databases"),
    ]


def build_schedules(orchestrator: OrchestratorSettings, load_snapshot: dg.UnresolvedAssetJobDefinition
                    ) -> list[dg.ScheduleDefinition]:
    max_attempts = orchestrator.max_relaunch_attempts

    def relaunch_transient_failures(context: dg.ScheduleEvaluationContext, pipeline: PipelineResource):
        decisions = decide(context.instance, LOAD_SNAPSHOT_JOB, pipeline.base, pipeline.settle_seconds, max_attempts)
        for decision in decisions:
            context.log.info(decision.why)
        requests = relaunch_requests(decisions)
        if not requests:
            yield dg.SkipReason(f"nothing to relaunch among {len(decisions)} failed snapshots"
                                + "".join(f"\n{d.why}" for d in decisions[:20]))
        yield from requests

    def run_retention(context: dg.ScheduleEvaluationContext):
        if job_in_flight(context.instance, RUN_RETENTION_JOB):
            return dg.SkipReason(f"a {RUN_RETENTION_JOB} run is still deleting")
        return dg.RunRequest()

    running = dg.DefaultScheduleStatus.RUNNING
    return [
        dg.ScheduleDefinition(name=RECONCILE_SCHEDULE, job_name=RECONCILE_JOB,
                              cron_schedule=orchestrator.reconcile_cron, default_status=running,
                              description="Reconciles every customer's alias and databases"),
        dg.schedule(name=RELAUNCH_SCHEDULE, job=load_snapshot, cron_schedule=orchestrator.reconcile_cron,
                    default_status=running,
                    description="Relaunches snapshots whose run failed for a transient cause (at most "
                                f"{max_attempts} times each)")(relaunch_transient_failures),
        dg.ScheduleDefinition(name=HEALTH_AUDIT_SCHEDULE, job_name=HEALTH_AUDIT_JOB,
                              cron_schedule=orchestrator.health_audit_cron, default_status=running,
                              description="Records the target's health for the UI's history"),
        dg.schedule(name=RUN_RETENTION_SCHEDULE, job_name=RUN_RETENTION_JOB,
                    cron_schedule=orchestrator.run_retention_cron, default_status=running,
                    description=f"Deletes finished runs older than {orchestrator.run_retention_days:g} days with "
                                "their event logs")(run_retention),
    ]
