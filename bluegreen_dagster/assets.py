"""The steps of one snapshot's refresh, each a partitioned asset (or the gate, its checks) so the run timeline
shows them apart, in an order their dependencies enforce (docs/steps.md):

    health_check -> snapshot_database -> gate [verify_counts, plausible, smoke_queries] -> alias_switch -> cleanup

- `snapshot_database` is the snapshot's database; it runs in the pool `bluegreen_loads` (see concurrency.py). It
  records the fingerprint of the files it was loaded from; a snapshot dropped again with other files is loaded
  again, or refused when it is live (fingerprints.py).
- `gate` is one step evaluating three blocking checks of `snapshot_database` in this order; the first that fails
  ends it, names the checks it did not run, and fails the step, so Dagster skips the switch and the cleanup:
  - `verify_counts` only verifies. If it fails (or cannot finish), the job's failure hook `drop_unverified` removes
    the unverified database.
  - `plausible` is the plausibility gate (plausibility.py): an empty graph, or one that shrinks too much against
    the live database, fails it; the database is kept for inspection.
  - `smoke_queries` runs the configured warm-up and smoke queries (smoke.py) read-only on the verified database;
    a failing one blocks the switch the same way, and the database is kept for inspection.
- `alias_switch` moves the alias if this database is the newest verified one, and records every move as a
  materialization of the customer's partition of `live_graph` (live_graph.py). Its own materialization says
  whether it moved and why (metadata `switched`, `reason`). A pinned customer (pins.py, `bluegreen rollback --pin`)
  is never switched: the reason says pinned to what, since when, by whom and why.
- `cleanup` runs after `alias_switch` (it depends on it) and keeps the newest `keep_databases`, the alias target,
  every database whose run is in flight and, on Neo4j, those the alias left within `drain_seconds` (drain.py); it
  deletes the dynamic partitions of the databases it dropped.

Bad input (a corrupt file, a bad name, wrong credentials) fails at once with a message that says what to fix;
transient trouble (target unreachable or over a health threshold) raises and is retried by the job's RetryPolicy.
Whatever fails, the alias stays on the last good database and the snapshot stays on disk.
"""


import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster import drain, fingerprints, plausibility, records, smoke
from bluegreen_dagster.concurrency import LOADS_POOL, LostLock, customer_lock, end_worker, load_slot
from bluegreen_dagster.config import ConfigError
from bluegreen_dagster.live_graph import SWITCH, record_live
from bluegreen_dagster.names import InvalidName, SnapshotError, parse_partition_key
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.pins import get_pin
from bluegreen_dagster.records import FAILURE_KIND, PERMANENT, TRANSIENT, in_flight_partitions
from bluegreen_dagster.resources import PipelineResource, TargetResource
from bluegreen_dagster.snapshots import (
    Snapshot,
    expected_counts,
    how_to_retry,
    snapshot_for_key,
)
from bluegreen_dagster.targets import GraphTarget, PermanentTargetError, TransientTargetError

GROUP = "bluegreen"


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
            raise dg.Failure(description=f"{exc} (gave up after {max_retries} retries)", allow_retries=False,
                             metadata={FAILURE_KIND: TRANSIENT}) from exc
        raise
    except SnapshotError as exc:
        key = context.partition_key if context is not None else None
        raise dg.Failure(description=str(exc) + (f". {how_to_retry(key)}" if key else ""),
                         allow_retries=False, metadata={FAILURE_KIND: PERMANENT}) from exc
    except (InvalidName, PermanentTargetError, ConfigError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False, metadata={FAILURE_KIND: PERMANENT}) from exc


def snapshot_of(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                pipeline: PipelineResource) -> Snapshot:
    """The snapshot this partition names, which must still be on disk and complete."""
    with step_errors():
        snapshot = snapshot_for_key(pipeline.base, context.partition_key)
    if not snapshot.path.is_dir():
        raise dg.Failure(f"snapshot folder {snapshot.path} does not exist (dataset.base_path="
                         f"{pipeline.base_path}); restore it or delete the partition", allow_retries=False)
    reason = snapshot.incomplete_reason(pipeline.settle_seconds)
    if reason:
        raise dg.Failure(f"snapshot {snapshot.path} is not complete: {reason}. Finish writing it (write "
                         "_SUCCESS last) and run the partition again", allow_retries=False)
    return snapshot


common = dict(partitions_def=snapshot_partitions, group_name=GROUP)


@dg.asset(**common, kinds={"python"})
def health_check(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                 target: TargetResource) -> dg.MaterializeResult:
    """The target can take a load now: reachable, under the memory / disk thresholds, below max_databases."""
    snapshot = snapshot_of(context, pipeline)
    with step_errors(context, pipeline.max_retries), target.open() as graph:
        health = graph.health(snapshot)
        if not health.ok:
            raise TargetUnhealthy("health check refused the load: " + "; ".join(health.problems))
    return dg.MaterializeResult(metadata={"target": graph.kind, **health.measurements})


@dg.asset(**common, deps=[health_check], kinds={"parquet"}, pool=LOADS_POOL)
def snapshot_database(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                      target: TargetResource) -> dg.MaterializeResult:
    """A new database named after the partition, bulk-loaded from the snapshot's Parquet files."""
    snapshot = snapshot_of(context, pipeline)
    started = time.monotonic()
    with load_slot(context.instance, pipeline.max_concurrent_loads, on_wait=context.log.info,
                   watch_seconds=pipeline.lost_lock_check_seconds, on_lost=end_worker) as claimed_by:
        waited = time.monotonic() - started
        with step_errors(context, pipeline.max_retries), target.open(progress_to=context.log.info) as graph:
            fingerprint = snapshot.fingerprint()
            with customer_lock(context.instance, snapshot.id.customer, on_wait=context.log.info):
                pin = get_pin(context.instance, snapshot.id.customer)
                changed = fingerprints.prepare_load(
                    graph, snapshot, fingerprint, records.recorded_fingerprint(context.instance, snapshot.key),
                    in_flight=lambda: in_flight_partitions(context.instance, snapshot.id.customer,
                                                           this_run=context.run.run_id),
                    pinned=pin.database if pin else None)
            if changed:
                context.log.warning(changed)
            report = graph.load(snapshot)
    what = "already loaded; reused it" if report.reused else f"loaded {report.rows:,} rows in {report.seconds:.1f}s"
    context.log.info(f"{report.database}: {what}")
    return dg.MaterializeResult(metadata={
        "database": report.database, "target": graph.kind, "reused": report.reused,
        records.FINGERPRINT: fingerprint,
        "nodes": report.nodes, "relationships": report.relationships, "rows": report.rows,
        "bytes": report.bytes_read, "duration_s": round(report.seconds, 3),
        "rows_per_s": round(report.rows_per_second), "waited_for_load_slot_s": round(waited, 3),
        "load_slot": claimed_by, "snapshot_path": dg.MetadataValue.path(str(snapshot.path)),
    })


def verify_counts(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource, graph: GraphTarget,
                  snapshot: Snapshot) -> dg.AssetCheckResult:
    """Node and relationship counts, per label and type, equal the snapshot's. Only reads the database."""
    expected = expected_counts(snapshot)
    try:
        actual = rules.verify(graph, snapshot.key, expected)
    except rules.VerificationFailed as exc:
        return dg.AssetCheckResult(check_name="verify_counts", passed=False, description=str(exc),
                                   metadata={"expected": expected.as_metadata()})
    return dg.AssetCheckResult(check_name="verify_counts", passed=True, metadata={"counts": actual.as_metadata()})


def allow_shrink(context) -> bool:
    """The run's explicit override of the shrink rule (tag `bluegreen/allow_shrink=true`, `bluegreen load
    --allow-shrink`)."""
    return context.run.tags.get(records.ALLOW_SHRINK_TAG, "").lower() == "true"


def plausible(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource, graph: GraphTarget,
              snapshot: Snapshot) -> dg.AssetCheckResult:
    """The new graph may replace the live one: not empty, and no node or relationship count shrinks by more than
    max_shrink_percent unless the run allows it. A refused database is kept for inspection (cleanup drops it
    later); the alias stays where it is."""
    customer = snapshot.id.customer
    new = graph.count(snapshot.key)
    live, live_counts = rules.live_counts(graph, customer)
    limit = pipeline.shrink_limit(customer)
    metadata = {"nodes": new.nodes, "relationships": new.relationships, "live_database": live or "",
                "live_nodes": live_counts.nodes if live_counts else 0,
                "live_relationships": live_counts.relationships if live_counts else 0,
                "max_shrink_percent": limit, "allow_shrink": allow_shrink(context)}
    result = functools.partial(dg.AssetCheckResult, check_name="plausible", metadata=metadata)
    if live is not None and live != snapshot.key and not rules.is_newer(snapshot.key, live):
        return result(passed=True, description=f"{live} is live and newer: this database will not be switched to")
    try:
        plausibility.check(new, live_counts if live != snapshot.key else None, max_shrink_percent=limit,
                           new_name=snapshot.key, live_name=live, allow_shrink=allow_shrink(context))
    except plausibility.Implausible as exc:
        return result(passed=False, description=str(exc))
    return result(passed=True)


def smoke_queries(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource, graph: GraphTarget,
                  snapshot: Snapshot) -> dg.AssetCheckResult:
    """The configured warm-up and smoke queries (config.yaml `smoke:`, `customers.<name>.smoke:`) pass on the new
    database, each read-only within its time limit. A failure names the query, what was expected and what came
    back; the alias stays and the database is kept for inspection (cleanup's retention drops it later)."""
    plan = pipeline.smoke_plan(snapshot.id.customer)
    if smoke.is_empty(plan):
        return dg.AssetCheckResult(check_name="smoke_queries", passed=True,
                                   description="no smoke queries configured (config.yaml smoke:)")
    report = smoke.run_plan(graph, snapshot.key, plan)
    if report.warmup is not None and report.warmup.seconds is not None:
        context.log.info(f"{snapshot.key}: warm-up query took {report.warmup.seconds:.2f}s")
    return dg.AssetCheckResult(check_name="smoke_queries", passed=report.passed, description=report.description(),
                               metadata=report.metadata())


# The gate's checks, in the order they run: each later one needs the earlier ones to have passed (the plausibility
# gate and the smoke queries read a database whose counts are verified).
GATE = (verify_counts, plausible, smoke_queries)


@dg.multi_asset_check(
    name=records.GATE_STEP, can_subset=False,
    specs=[dg.AssetCheckSpec(check.__name__, asset="snapshot_database", blocking=True,
                             description=(check.__doc__ or "").split("\n")[0]) for check in GATE])
def gate(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource, target: TargetResource):
    """verify_counts, then plausible, then smoke_queries, in one step. The first that fails ends the step as a
    failure naming the checks not run, so the switch and the cleanup are skipped and the alias stays."""
    snapshot = snapshot_of(context, pipeline)
    with step_errors(context, pipeline.max_retries), target.open() as graph:
        for position, check in enumerate(GATE):
            result = check(context, pipeline, graph, snapshot)
            yield result
            if not result.passed:
                rest = [later.__name__ for later in GATE[position + 1:]]
                if rest:
                    raise dg.Failure(f"{', '.join(rest)} not run: {check.__name__} failed first and blocks the "
                                     f"switch: {result.description}", allow_retries=False,
                                     metadata={FAILURE_KIND: PERMANENT})
                return  # Dagster fails the step: a blocking check failed


@dg.asset(**common, deps=[snapshot_database], kinds={"python"})
def alias_switch(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                 target: TargetResource) -> dg.MaterializeResult:
    """The customer's alias moves to this database if it is the newest verified one; never backwards. A move is
    recorded on `live_graph` (live_graph.py); this step's metadata says whether it moved (`switched`) and why."""
    snapshot = snapshot_of(context, pipeline)
    customer = snapshot.id.customer
    with step_errors(context, pipeline.max_retries), target.open() as graph, \
            customer_lock(context.instance, customer, on_wait=context.log.info) as lock:
        pin = get_pin(context.instance, customer)  # read under the lock: a rollback --pin cannot slip in between
        try:
            result = rules.switch_if_newest(graph, snapshot.key, expected_counts(snapshot),
                                            max_shrink_percent=pipeline.shrink_limit(customer),
                                            allow_shrink=allow_shrink(context), pinned=pin.describe() if pin else None,
                                            ensure_held=lock.ensure_held)
        except LostLock as exc:  # nothing moved (fence.py); a later run decides again under the lock
            raise dg.Failure(description=str(exc), allow_retries=False, metadata={FAILURE_KIND: TRANSIENT}) from None
        reader = graph.reader_location(customer)
        if result.switched:
            record_live(context.instance, customer, result.current, result.previous, how=SWITCH,
                        by="the alias_switch step", reader=reader or "", run_id=context.run.run_id,
                        log_event=context.log_event)
    (context.log.warning if pin else context.log.info)(result.reason)
    # Materialized whether or not the alias moved: cleanup depends on it, and Dagster skips the dependents of a
    # step that emits no output.
    return dg.MaterializeResult(metadata={
        "switched": result.switched, "previous": result.previous or "", "alias_target": result.current or "",
        "customer": customer, "reason": result.reason, "reader": reader or "", "customer_lock": lock,
        "pinned_to": pin.database if pin else ""})


@dg.asset(**common, deps=[alias_switch], kinds={"python"})
def cleanup(context: dg.AssetExecutionContext, pipeline: PipelineResource, target: TargetResource
            ) -> dg.MaterializeResult:
    """After the switch: keep the customer's newest `orchestrator.keep_databases` databases, the alias target, the
    pinned database and loads in flight."""
    snapshot = snapshot_of(context, pipeline)
    customer = snapshot.id.customer
    with step_errors(context, pipeline.max_retries), target.open() as graph, \
            customer_lock(context.instance, customer, on_wait=context.log.info) as lock:
        pin = get_pin(context.instance, customer)
        try:
            result = rules.cleanup(graph, customer, pipeline.keep_databases,
                                   in_flight=lambda: in_flight_partitions(context.instance, customer),
                                   own=snapshot.key, pinned=pin.database if pin else None,
                                   ensure_held=lock.ensure_held, **drain.for_cleanup(context.instance, customer, graph))
        except LostLock as exc:  # stopped before its next drop
            raise dg.Failure(description=str(exc), allow_retries=False, metadata={FAILURE_KIND: TRANSIENT}) from None
    # The partitions of dropped databases go too (their run history stays): the partition list stays as long as
    # the databases kept, not one per snapshot ever seen. The sensor's cursor, not the partitions, says what it saw.
    pruned = [key for key in result.dropped
              if context.instance.has_dynamic_partition(snapshot_partitions.name, key)]
    for key in pruned:
        context.instance.delete_dynamic_partition(snapshot_partitions.name, key)
    context.log.info(f"{customer}: dropped {result.dropped or 'nothing'}; kept {result.kept}")
    return dg.MaterializeResult(metadata={
        "dropped": result.dropped, "kept": result.kept, "protected": result.protected,
        "keep_databases": pipeline.keep_databases, "pruned_partitions": pruned, "customer_lock": lock})


@dg.failure_hook(required_resource_keys={"target"})
def drop_unverified(context: dg.HookContext) -> None:
    """When verification fails (or cannot finish), remove the database it was checking, unless the alias serves it
    (a re-run of the live snapshot), the customer is pinned to it, or another run of the same snapshot is in
    flight."""
    if context.step_key != records.GATE_STEP or records.verified_in_run(context.instance, context.run_id):
        return
    key = context.instance.get_run_by_id(context.run_id).tags.get(records.PARTITION_TAG, "")
    try:
        customer = parse_partition_key(key).customer
    except InvalidName:
        return
    graph_resource: TargetResource = context.resources.target
    with graph_resource.open() as graph, customer_lock(context.instance, customer, on_wait=context.log.info):
        others = in_flight_partitions(context.instance, customer, this_run=context.run_id)
        pin = get_pin(context.instance, customer)
        if graph.alias_target(customer) == key or key in others or (pin and pin.database == key):
            context.log.warning(f"{key} failed verification; kept: it is the alias target, pinned or loading in "
                                "another run")
            return
        graph.drop_database(key)
    context.log.warning(f"{key} failed verification: dropped it (the alias was not moved)")


STEPS = [health_check, snapshot_database, alias_switch, cleanup]
CHECKS = [gate]
