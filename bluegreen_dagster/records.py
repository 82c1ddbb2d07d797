"""What Dagster records for this project: the one home of the names of the things it creates (assets, checks,
jobs, sensors, schedules, the partitions definition, tags and metadata keys) and of the questions asked of its
records outside a run's own step: which blocking checks failed in a run, which runs are in flight, did a database
pass the gate, was it ever live, which fingerprint was recorded, what state the sensors are in.

Nothing here imports the definitions (assets.py, jobs.py, definitions.py, schedules.py): they take their names
from here, so code that only reads the records (metrics, alerts, relaunch, reconcile, rollback, doctor) never
loads the definitions to learn a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg

# Instigator, tick and run-failure-reason enums are not exported at Dagster's top level (1.13). This module and
# run_launcher.py are the only package files that import from `dagster._`: everything else reads sensors and
# failure reasons through the functions below.
from dagster._core.events import RunFailureReason
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType, TickStatus

from bluegreen_dagster.names import InvalidName, parse_partition_key

# -- names of what the definitions create -------------------------------------------------------------------------

SNAPSHOTS_PARTITIONS_NAME = "snapshots"  # the dynamic partitions definition: one partition per snapshot (partitions.py)
CUSTOMERS_PARTITIONS_NAME = "customers"  # one partition per customer, of the asset live_graph (live_graph.py)

# The steps of one snapshot's refresh (assets.py), and the asset key whose partitions are the databases loaded.
HEALTH_CHECK, SNAPSHOT_DATABASE, ALIAS_SWITCH, CLEANUP = "health_check", "snapshot_database", "alias_switch", "cleanup"
LOADED_ASSET = dg.AssetKey(SNAPSHOT_DATABASE)
SWITCH_ASSET = dg.AssetKey(ALIAS_SWITCH)

# The blocking checks of a load (the gate): a database that failed one of them (e.g. a refused shrink, a failed
# smoke query) is kept for inspection and must never serve the alias, although it may count exactly like its
# snapshot.
VERIFY_COUNTS, PLAUSIBLE, SMOKE_QUERIES = "verify_counts", "plausible", "smoke_queries"
GATE_CHECKS = (VERIFY_COUNTS, PLAUSIBLE, SMOKE_QUERIES)
GATE_STEP = "gate"  # the one step that evaluates GATE_CHECKS in order (assets.py)

# Which database each customer's alias serves (live_graph.py), and its freshness check (freshness.py).
LIVE_GRAPH_ASSET = dg.AssetKey("live_graph")
FRESH_CHECK = "live_graph_fresh"

LOAD_SNAPSHOT_JOB = "load_snapshot"
ROLLBACK_JOB = "rollback"
RECONCILE_JOB = "reconcile"
HEALTH_AUDIT_JOB = "health_audit"
RUN_RETENTION_JOB = "run_retention"
RUN_HISTORY_ASSET = dg.AssetKey("run_history")  # its materializations record what each retention run deleted

SNAPSHOT_SENSOR = "snapshot_sensor"
ALERT_SENSOR = "alert_on_failure"
FRESHNESS_SENSOR = "live_graph_freshness"
SENSORS = (SNAPSHOT_SENSOR, ALERT_SENSOR, FRESHNESS_SENSOR)

RECONCILE_SCHEDULE = "reconcile"
RELAUNCH_SCHEDULE = "relaunch_transient_failures"
HEALTH_AUDIT_SCHEDULE = "health_audit"
RUN_RETENTION_SCHEDULE = "run_retention"

# -- tags and metadata keys ---------------------------------------------------------------------------------------

PARTITION_TAG = "dagster/partition"  # Dagster's own: the partition key (= database name) of a run
WILL_RETRY_TAG = "dagster/will_retry"  # Dagster's own: its run retries will re-launch this failed run
CUSTOMER_TAG = "customer"  # every run of a customer; the run queue admits one run per value (concurrency.py)
ALLOW_SHRINK_TAG = "bluegreen/allow_shrink"  # "true": the run may shrink the graph (plausibility.py)
RELAUNCH_TAG = "bluegreen/relaunch"  # n: the run is the n-th relaunch of its snapshot (relaunch.py)
RELAUNCH_OF_TAG = "bluegreen/relaunch_of"  # the run id of the failed run it relaunches

# Metadata on a step's Failure that says whether a later run may succeed: the relaunch schedule relaunches a
# snapshot whose run failed TRANSIENT (relaunch.py), never one that failed PERMANENT.
FAILURE_KIND = "bluegreen/failure"
TRANSIENT, PERMANENT = "transient", "permanent"

# Metadata of a `snapshot_database` materialization: the fingerprint of the files it was loaded from
# (fingerprints.py).
FINGERPRINT = "fingerprint"

# -- statuses -----------------------------------------------------------------------------------------------------

QUEUED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
RUNNING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
IN_FLIGHT = (*QUEUED, *RUNNING)
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# How Dagster records a run failed from outside because its worker is gone (report_run_failed by the code server,
# run monitoring or a restarted daemon), and because its worker never started.
WORKER_DIED = frozenset({RunFailureReason.UNEXPECTED_TERMINATION, RunFailureReason.RUN_WORKER_RESTART})
WORKER_NEVER_STARTED = frozenset({RunFailureReason.START_TIMEOUT})


# -- runs -----------------------------------------------------------------------------------------------------------

def load_customer(run: dg.DagsterRun) -> str | None:
    """The customer of a load run (`load_snapshot`, or an asset run that materializes `snapshot_database`), from
    its partition; None for any other run."""
    is_load = run.job_name == LOAD_SNAPSHOT_JOB or (run.asset_selection and LOADED_ASSET in run.asset_selection)
    if not is_load:
        return None
    try:
        return parse_partition_key(run.tags.get(PARTITION_TAG, "")).customer
    except InvalidName:
        return None


def in_flight_partitions(instance: dg.DagsterInstance, customer: str | None, this_run: str | None = None
                         ) -> set[str]:
    """Partition keys (= database names) of this customer's runs (every customer's for None) that are queued or
    running, other than `this_run`: the one answer to "what is loading", read from the instance's run records, so
    it holds across hosts."""
    keys = set()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))):
        run = record.dagster_run
        key = run.tags.get(PARTITION_TAG, "")
        try:
            if run.run_id != this_run and customer in (None, parse_partition_key(key).customer):
                keys.add(key)
        except InvalidName:
            continue  # another job's run
    return keys


def in_flight_counts(instance: dg.DagsterInstance, limit: int | None = None) -> dict[tuple[str, str], int]:
    """{(customer, "queued" | "running"): runs} over the runs in flight that carry a customer tag."""
    counts: dict[tuple[str, str], int] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(IN_FLIGHT)), limit=limit):
        customer = record.dagster_run.tags.get(CUSTOMER_TAG)
        if customer:
            key = (customer, "queued" if record.dagster_run.status in QUEUED else "running")
            counts[key] = counts.get(key, 0) + 1
    return counts


# -- checks -------------------------------------------------------------------------------------------------------

def check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    """Every asset check evaluation the run recorded, in the order recorded."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return [e.dagster_event.asset_check_evaluation_data for e in entries if e.dagster_event is not None]


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    """{check name: its evaluation} for the blocking checks that failed in the run, in the order they failed: the
    one answer to "was this run blocked by the gate, and by what" (metrics, alerts, relaunch, the gate itself)."""
    return {e.check_name: e for e in check_evaluations(instance, run_id) if e.blocking and not e.passed}


def verified_in_run(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether the run's latest `verify_counts` evaluation passed (the gate stops at the first failed check, so a
    failed gate after a passed verification is a refused plausibility or smoke query: that database is kept)."""
    passed = [e.passed for e in check_evaluations(instance, run_id) if e.check_name == VERIFY_COUNTS]
    return bool(passed) and passed[-1]


def gate_problem(instance: dg.DagsterInstance, database: str) -> str | None:
    """Why Dagster's records do not show `database` as having passed every gate check, or None if they do.

    The checks are those of the run that made the partition's latest `snapshot_database` materialization (Dagster
    1.13 records no partition on the evaluations of a partitioned asset's checks, but their run has one)."""
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LOADED_ASSET, asset_partitions=[database]), limit=1)
    if not latest.records:
        return "Dagster has no record of loading it"
    run_id = latest.records[0].run_id
    passed = {e.check_name: e.passed for e in check_evaluations(instance, run_id)}
    for name in GATE_CHECKS:
        if name not in passed:
            return f"its run {run_id} recorded no {name} result"
        if not passed[name]:
            return f"its {name} check failed in run {run_id}"
    return None


# -- materializations -------------------------------------------------------------------------------------------

def was_live(instance: dg.DagsterInstance, database: str) -> bool:
    """Whether the alias ever moved to `database` (an `alias_switch` materialization with `switched`). An alias
    that left such a database was moved away on purpose (a rollback): only an operator's `rollback --to` brings it
    back."""
    steps = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SWITCH_ASSET, asset_partitions=[database]), limit=100)
    return any((m := r.asset_materialization.metadata.get("switched")) is not None and m.value
               for r in steps.records)


# Moves read per customer: far more switches than any drain window can hold.
RECENT_MOVES = 100


def left_alias_at(instance: dg.DagsterInstance, customer: str) -> dict[str, float]:
    """database -> when (epoch seconds) it last stopped being `customer`'s alias target, from the `live_graph`
    materializations every move of the alias records (live_graph.py)."""
    left: dict[str, float] = {}
    moves = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LIVE_GRAPH_ASSET, asset_partitions=[customer]), limit=RECENT_MOVES)
    for record in moves.records:  # newest first
        event = record.asset_materialization
        metadata = {key: getattr(value, "value", value) for key, value in (event.metadata if event else {}).items()}
        previous, serves = metadata.get("previous"), metadata.get("serves")
        if isinstance(previous, str) and previous and previous != serves:
            left.setdefault(previous, record.timestamp)
    return left


def recorded_fingerprint(instance: dg.DagsterInstance, key: str) -> str | None:
    """The fingerprint recorded by the partition's latest `snapshot_database` materialization (None: never
    recorded, e.g. loaded before fingerprints were recorded, or the run died between the load and the record)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LOADED_ASSET, asset_partitions=[key]), limit=1)
    for record in result.records:
        materialization = record.asset_materialization
        value = materialization.metadata.get(FINGERPRINT) if materialization else None
        if value is not None:
            return str(value.value)
    return None


# -- sensors ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SensorRecord:
    """What the instance records of one sensor."""

    name: str
    running: bool  # not stopped (our sensors default to running: DECLARED_IN_CODE means nobody stopped them)
    last_tick: float | None  # when it last ticked, whatever the outcome
    last_tick_status: str | None  # "success", "skipped", "failure", "started"
    last_tick_error: str | None  # the last line of the last tick's error, when it failed
    last_ok_tick: float | None  # the newest tick that evaluated without error (it launched runs or had none to)


def sensor_record(instance: dg.DagsterInstance, name: str) -> SensorRecord | None:
    """The sensor's state on this instance (preferring a running one, if several code locations define it), or
    None if it never ticked here."""
    states = [s for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR) if s.name == name]
    if not states:
        return None
    running = [s for s in states if s.status in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)]
    state = (running or states)[-1]
    last = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
    ok = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1,
                            statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED])
    tick = last[0] if last else None
    error = None
    if tick is not None and tick.status == TickStatus.FAILURE:
        error = tick.error.message.strip().splitlines()[-1] if tick.error else "no error recorded"
    return SensorRecord(name=name, running=bool(running), last_tick=tick.timestamp if tick else None,
                        last_tick_status=tick.status.value.lower() if tick else None, last_tick_error=error,
                        last_ok_tick=ok[0].timestamp if ok else None)


# -- run retention (retention.py) ---------------------------------------------------------------------------------

def finished_runs_before(instance: dg.DagsterInstance, before: datetime, limit: int,
                         after_run: str | None = None) -> list[dg.RunRecord]:
    """Up to `limit` finished runs (success, failure, canceled) last updated before `before` (UTC), oldest first,
    after the run `after_run` (which must still exist: Dagster pages by the cursor run's row, and finds nothing
    after a run that is gone). A run in flight is never returned, however old."""
    return list(instance.get_run_records(dg.RunsFilter(statuses=list(FINISHED), updated_before=before),
                                         limit=limit, cursor=after_run, ascending=True))


def job_in_flight(instance: dg.DagsterInstance, job_name: str) -> bool:
    """Whether a run of `job_name` is queued or running."""
    return bool(instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=list(IN_FLIGHT)), limit=1))


def snapshot_partitions_now(instance: dg.DagsterInstance) -> set[str]:
    """The snapshot partitions (= databases) that exist now: cleanup deletes a partition with its database."""
    return set(instance.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME))


def _latest_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                             partitions: set[str]) -> list[dg.EventLogRecord]:
    """Each partition's latest materialization of `asset_key`, in two queries whatever the number of partitions
    (one `fetch_materializations` per partition costs a connection each on PostgreSQL: minutes for 1,000)."""
    if not partitions:
        return []
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=partitions)
    ids, found = sorted(latest.values()), []
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        found += instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=chunk), limit=len(chunk)).records
    return found


def live_database_runs(instance: dg.DagsterInstance) -> dict[str, str]:
    """run id -> why it matters, per customer: the run that recorded what the alias serves now (the customer's
    latest `live_graph` materialization) and the run that loaded that database (its partition's latest
    `snapshot_database` materialization, which holds its fingerprint and gate results). Deleting a run deletes
    its events, and these are the records that say what is live and that it passed the gate."""
    runs: dict[str, str] = {}
    serving: dict[str, str] = {}  # database -> customer
    customers = set(instance.get_dynamic_partitions(CUSTOMERS_PARTITIONS_NAME))
    for record in _latest_materializations(instance, LIVE_GRAPH_ASSET, customers):
        event = record.asset_materialization
        serves = event.metadata.get("serves") if event else None
        database, customer = (str(serves.value) if serves is not None else ""), (event.partition if event else "")
        if record.run_id:  # "" for a move recorded outside a run (bluegreen rollback / unpin)
            runs[record.run_id] = f"recorded that {customer}'s alias serves {database or '(unknown)'}"
        if database:
            serving[database] = customer
    for record in _latest_materializations(instance, LOADED_ASSET, set(serving)):
        event = record.asset_materialization
        if record.run_id and event is not None:
            runs.setdefault(record.run_id, f"loaded {event.partition}, live for {serving.get(event.partition)}")
    return runs
