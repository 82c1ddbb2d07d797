"""The steps of one snapshot's refresh, each a partitioned asset (or check) so the run timeline shows them apart:

    health_check -> snapshot_database -> [verify_counts, blocking] -> alias_switch -> cleanup

Bad input (a corrupt file, a bad name, wrong credentials) fails at once with a message that says what to fix;
transient trouble (target unreachable or over a health threshold) raises and is retried by the step's
RetryPolicy. Whatever fails, the alias stays on the last good database and the snapshot stays on disk.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.config import ConfigError, Settings
from bluegreen_dagster.locks import load_slot
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.resources import BluegreenResource
from bluegreen_dagster.snapshots import (
    InvalidName,
    Snapshot,
    SnapshotError,
    expected_counts,
    parse_partition_key,
    snapshot_for_key,
)
from bluegreen_dagster.targets import PermanentTargetError, TransientTargetError

GROUP = "bluegreen"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


class TargetUnhealthy(TransientTargetError):
    """The health check refused the load; the step's retry policy tries again later."""


@contextmanager
def step_errors(context=None, max_retries: int = 0) -> Iterator[None]:
    """Errors a retry cannot fix become a Failure that is not retried. Transient ones go to the RetryPolicy, except
    on the last attempt, where a Failure carries the cause (Dagster would only say "Exceeded max_retries")."""
    try:
        yield
    except TransientTargetError as exc:
        if context is not None and context.retry_number >= max_retries:
            raise dg.Failure(description=f"{exc} (gave up after {max_retries} retries)", allow_retries=False) from exc
        raise
    except (SnapshotError, InvalidName, PermanentTargetError, ConfigError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


def snapshot_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, settings: Settings) -> Snapshot:
    """The snapshot this partition names, which must still be on disk and complete."""
    with step_errors():
        snapshot = snapshot_for_key(settings.dataset.base_path, context.partition_key)
    if not snapshot.path.is_dir():
        raise dg.Failure(f"snapshot folder {snapshot.path} does not exist (dataset.base_path="
                         f"{settings.dataset.base_path}); restore it or delete the partition", allow_retries=False)
    reason = snapshot.incomplete_reason(settings.orchestrator.settle_seconds)
    if reason:
        raise dg.Failure(f"snapshot {snapshot.path} is not complete: {reason}. Finish writing it (write "
                         "_SUCCESS last) and run the partition again", allow_retries=False)
    return snapshot


def in_flight_databases(instance: dg.DagsterInstance, customer: str, this_run: str) -> set[str]:
    """Partition keys (= database names) of this customer's other runs that are queued or running."""
    keys = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        key = run.tags.get("dagster/partition", "")
        try:
            if run.run_id != this_run and parse_partition_key(key).customer == customer:
                keys.add(key)
        except InvalidName:
            continue  # another job's run
    return keys


def build_assets(settings: Settings) -> list:
    """The partitioned steps, with a RetryPolicy built from `orchestrator.max_retries` / `retry_backoff_base`."""
    orchestrator = settings.orchestrator
    retry = dg.RetryPolicy(max_retries=orchestrator.max_retries, delay=orchestrator.retry_backoff_base,
                           backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
    common = dict(partitions_def=snapshot_partitions, retry_policy=retry, group_name=GROUP)

    @dg.asset(**common, kinds={"python"})
    def health_check(context: dg.AssetExecutionContext, bluegreen: BluegreenResource) -> dg.MaterializeResult:
        """The target can take a load now: reachable, under the memory / disk thresholds, below max_databases."""
        snapshot = snapshot_of(context, bluegreen.settings)
        with step_errors(context, orchestrator.max_retries), bluegreen.target() as target:
            health = target.health(snapshot)
            if not health.ok:
                raise TargetUnhealthy("health check refused the load: " + "; ".join(health.problems))
        return dg.MaterializeResult(metadata={"target": target.kind, **health.measurements})

    @dg.asset(**common, deps=[health_check], kinds={"parquet"})
    def snapshot_database(context: dg.AssetExecutionContext, bluegreen: BluegreenResource) -> dg.MaterializeResult:
        """A new database named after the partition, bulk-loaded from the snapshot's Parquet files."""
        settings = bluegreen.settings
        snapshot = snapshot_of(context, settings)
        started = time.monotonic()
        with load_slot(settings.orchestrator.state_path, settings.orchestrator.max_concurrent_loads,
                       holder=snapshot.key, on_wait=context.log.info):
            waited = time.monotonic() - started
            with step_errors(context, orchestrator.max_retries), bluegreen.target() as target:
                report = target.load(snapshot)
        what = "already loaded; reused it" if report.reused else f"loaded {report.rows:,} rows in {report.seconds:.1f}s"
        context.log.info(f"{report.database}: {what}")
        return dg.MaterializeResult(metadata={
            "database": report.database, "target": target.kind, "reused": report.reused,
            "nodes": report.nodes, "relationships": report.relationships, "rows": report.rows,
            "bytes": report.bytes_read, "duration_s": round(report.seconds, 3),
            "rows_per_s": round(report.rows_per_second), "waited_for_load_slot_s": round(waited, 3),
            "snapshot_path": dg.MetadataValue.path(str(snapshot.path)),
        })

    @dg.asset_check(asset=snapshot_database, blocking=True, retry_policy=retry)
    def verify_counts(context: dg.AssetCheckExecutionContext, bluegreen: BluegreenResource) -> dg.AssetCheckResult:
        """Node and relationship counts, per label and type, equal the snapshot's. A mismatch drops the database."""
        snapshot = snapshot_of(context, bluegreen.settings)
        with step_errors(context, orchestrator.max_retries), bluegreen.target() as target:
            expected = expected_counts(snapshot)
            try:
                actual = rules.verify(target, snapshot.key, expected)
            except rules.VerificationFailed as exc:
                dropped = target.alias_target(snapshot.id.customer) != snapshot.key
                if dropped:  # an unverified database must never be switched to; remove it now
                    target.drop_database(snapshot.key)
                return dg.AssetCheckResult(passed=False, description=str(exc), metadata={
                    "expected": expected.as_metadata(), "dropped_database": dropped})
        return dg.AssetCheckResult(passed=True, metadata={"counts": actual.as_metadata()})

    @dg.asset(**common, deps=[snapshot_database], kinds={"python"})
    def alias_switch(context: dg.AssetExecutionContext, bluegreen: BluegreenResource) -> dg.MaterializeResult:
        """The customer's alias moves to this database if it is the newest verified one; never backwards."""
        settings = bluegreen.settings
        snapshot = snapshot_of(context, settings)
        with step_errors(context, orchestrator.max_retries), bluegreen.target() as target:
            result = rules.switch_if_newest(target, snapshot.key, expected_counts(snapshot),
                                            settings.orchestrator.state_path)
            reader = target.reader_location(snapshot.id.customer)
        context.log.info(result.reason)
        return dg.MaterializeResult(metadata={
            "switched": result.switched, "previous": result.previous or "", "alias_target": result.current or "",
            "customer": snapshot.id.customer, "reason": result.reason, "reader": reader or ""})

    @dg.asset(**common, deps=[alias_switch], kinds={"python"})
    def cleanup(context: dg.AssetExecutionContext, bluegreen: BluegreenResource) -> dg.MaterializeResult:
        """Keep the customer's newest `orchestrator.keep_databases` databases, the alias target and loads in flight."""
        settings = bluegreen.settings
        snapshot = snapshot_of(context, settings)
        customer = snapshot.id.customer
        in_flight = in_flight_databases(context.instance, customer, context.run.run_id)
        with step_errors(context, orchestrator.max_retries), bluegreen.target() as target:
            result = rules.cleanup(target, customer, settings.orchestrator.keep_databases,
                                   settings.orchestrator.state_path, in_flight)
        context.log.info(f"{customer}: dropped {result.dropped or 'nothing'}; kept {result.kept}")
        return dg.MaterializeResult(metadata={
            "dropped": result.dropped, "kept": result.kept, "protected": result.protected,
            "keep_databases": settings.orchestrator.keep_databases})

    return [health_check, snapshot_database, verify_counts, alias_switch, cleanup]
