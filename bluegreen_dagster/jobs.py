"""The job the sensor and `bluegreen load` launch: every step of one snapshot's refresh, in one process.

The in-process executor runs the steps in the run's own process: about 5 s faster per run than one subprocess
per step, which matters for "snapshot lands -> alias switched". Its step RetryPolicy comes from config.yaml
(`orchestrator.max_retries`, `retry_backoff_base`), so the job is built in definitions.py, where the settings are
read; the assets themselves are plain module-level definitions.
"""

from __future__ import annotations

import dagster as dg

from bluegreen_dagster.assets import STEPS, drop_unverified
from bluegreen_dagster.config import OrchestratorSettings

LOAD_SNAPSHOT_JOB = "load_snapshot"


def retry_policy(orchestrator: OrchestratorSettings) -> dg.RetryPolicy:
    """Exponential backoff from `retry_backoff_base`, with jitter, `max_retries` times."""
    return dg.RetryPolicy(max_retries=orchestrator.max_retries, delay=orchestrator.retry_backoff_base,
                          backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def dead_target_seconds(orchestrator: OrchestratorSettings) -> float:
    """Upper bound, in seconds, from a step's first call to a dead Neo4j server to the run's failure.

    One step attempt: our ATTEMPTS tries of a call, each at most the driver's own retries (max_transaction_retry_time)
    plus one connection timeout, with BACKOFF between them. The RetryPolicy repeats the step max_retries times,
    after delays of (2^n - 1) x base +- base (exponential, plus-minus jitter), i.e. at most base x (2^(R+1) - 2)."""
    from bluegreen_dagster.targets.neo4j import admin

    per_call = admin.ATTEMPTS * (admin.MAX_TRANSACTION_RETRY_TIME + admin.CONNECTION_TIMEOUT) \
        + admin.BACKOFF * (2 ** (admin.ATTEMPTS - 1) - 1)
    retries = orchestrator.max_retries
    return (retries + 1) * per_call + orchestrator.retry_backoff_base * (2 ** (retries + 1) - 2)


def build_load_snapshot_job(orchestrator: OrchestratorSettings) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        LOAD_SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(*STEPS),
        executor_def=dg.in_process_executor,
        op_retry_policy=retry_policy(orchestrator),
        hooks={drop_unverified},
        description="health check -> load -> verify -> switch alias if newest, cleanup; for one snapshot",
    )
