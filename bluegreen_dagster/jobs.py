"""The jobs: `load_snapshot`, which the sensor and `bluegreen load` launch (every step of one snapshot's refresh,
in one process), and `rollback`, the UI's way to do what `bluegreen rollback` does (rollback.py).

The in-process executor runs the steps in the run's own process: about 5 s faster per run than one subprocess
per step, which matters for "snapshot lands -> alias switched". Its step RetryPolicy comes from config.yaml
(`orchestrator.max_retries`, `retry_backoff_base`), so the job is built in definitions.py, where the settings are
read; the assets themselves are plain module-level definitions.
"""

# No `from __future__ import annotations` here: Dagster reads the op's annotations (RollbackConfig, the resources)
# when it defines the op.
import dagster as dg
from pydantic import Field

from bluegreen_dagster.assets import STEPS, drop_unverified
from bluegreen_dagster.config import OrchestratorSettings
from bluegreen_dagster.records import CUSTOMER_TAG, LOAD_SNAPSHOT_JOB, ROLLBACK_JOB
from bluegreen_dagster.resources import PipelineResource, TargetResource


def retry_policy(orchestrator: OrchestratorSettings) -> dg.RetryPolicy:
    """Exponential backoff from `retry_backoff_base`, with jitter, `max_retries` times."""
    return dg.RetryPolicy(max_retries=orchestrator.max_retries, delay=orchestrator.retry_backoff_base,
                          backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def dead_target_seconds(orchestrator: OrchestratorSettings) -> float:
    """Upper bound, in seconds, from a step's first call to a dead Neo4j server to the run's failure.

    One step attempt: our ATTEMPTS tries of a call, each at most the driver's own retries (max_transaction_retry_time)
    plus one connection timeout, with BACKOFF between them. The RetryPolicy repeats the step max_retries times,
    after delays of (2^n - 1) x base +- base (exponential, plus-minus jitter), i.e. at most base x (2^(R+1) - 2)."""
    from bluegreen_dagster.targets.neo4j import bolt

    per_call = bolt.ATTEMPTS * (bolt.MAX_TRANSACTION_RETRY_TIME + bolt.CONNECTION_TIMEOUT) \
        + bolt.BACKOFF * (2 ** (bolt.ATTEMPTS - 1) - 1)
    retries = orchestrator.max_retries
    return (retries + 1) * per_call + orchestrator.retry_backoff_base * (2 ** (retries + 1) - 2)


def build_load_snapshot_job(orchestrator: OrchestratorSettings) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        LOAD_SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(*STEPS),
        executor_def=dg.in_process_executor,
        op_retry_policy=retry_policy(orchestrator),
        hooks={drop_unverified},
        description="health check -> load -> verify -> switch alias if newest, cleanup; for one snapshot",
    )


class RollbackConfig(dg.Config):
    """The Launchpad's run config of the `rollback` job; the same choices as `bluegreen rollback`."""

    customer: str = Field(description="the customer whose alias moves back")
    to: str = Field(default="", description="a retained database to move to; empty: the newest older one that is "
                                            "online and verifies")
    pin: bool = Field(default=False, description="keep the alias there until `bluegreen unpin`")
    reason: str = Field(default="", description="why, recorded with the rollback and the pin")


@dg.op(name="rollback_alias")
def rollback_alias(context: dg.OpExecutionContext, config: RollbackConfig, pipeline: PipelineResource,
                   target: TargetResource) -> dg.Output:
    """Move the customer's alias back (rollback.rollback), under the customer's lock; fails with what to do when
    the rollback is refused."""
    from bluegreen_dagster.rollback import RollbackRefused, rollback

    tagged = context.run.tags.get(CUSTOMER_TAG)
    if tagged and tagged != config.customer:
        raise dg.Failure(f"run tag customer={tagged} but run config customer={config.customer}; make them equal",
                         allow_retries=False)
    if not tagged:  # so the run shows under the customer's tag like its loads (the lock serializes it anyway)
        context.instance.add_run_tags(context.run.run_id, {CUSTOMER_TAG: config.customer})
    try:
        with target.open() as graph:
            result = rollback(context.instance, graph, pipeline.base, config.customer, to=config.to or None,
                              pin=config.pin, reason=config.reason, by=f"rollback run {context.run.run_id}",
                              record=context.log_event, on_wait=context.log.info, run_id=context.run.run_id)
    except RollbackRefused as exc:
        raise dg.Failure(description=f"rollback refused: {exc}", allow_retries=False) from exc
    context.log.info(result.describe())
    return dg.Output(result.current, metadata={
        "customer": result.customer, "rolled_back_from": result.previous, "serves": result.current,
        "pinned": result.pin is not None, "reason": result.reason, "passed_over": result.skipped})


@dg.job(name=ROLLBACK_JOB, executor_def=dg.in_process_executor,
        description="Move a customer's alias back to a retained, verified database (`bluegreen rollback`); "
                    "run config: customer, to (optional), pin, reason")
def rollback_job() -> None:
    rollback_alias()
