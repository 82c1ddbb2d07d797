"""What the Dagster instance knows about the refreshes, read for the metrics exporter (metrics.py).

- Loads by outcome, verification failures and the last load's duration and rows/s are folded in incrementally:
  run-finished events and `snapshot_database` materializations are read in storage order from a cursor, at most
  `max_records` per query and for at most `budget_seconds` per refresh, so a long history never makes a scrape
  slow. The totals cover the whole history once `caught_up` (a fresh exporter reads it over its first scrapes);
  they are kept in memory, so every exporter (and every restart) computes the same numbers from the instance.
- Runs in flight (per customer, queued / running) and the sensors' state are read afresh on each refresh.

The instance is only read, never written. A refresh that fails leaves the last facts in place and raises; the
exporter reports that as `bluegreen_instance_up 0`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.event_api import RunStatusChangeRecordsFilter
from dagster._core.events import DagsterEventType
from dagster._core.scheduler.instigation import (
    InstigatorStatus,
    InstigatorType,
    TickStatus,
)

from bluegreen_dagster.jobs import LOAD_SNAPSHOT_JOB
from bluegreen_dagster.names import InvalidName, parse_partition_key

LOAD_ASSET = dg.AssetKey("snapshot_database")
BLOCKING_CHECKS = ("verify_counts", "plausible")
SENSORS = ("snapshot_sensor", "alert_on_failure")
QUEUED = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
RUNNING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)

SUCCESS, FAILED, BLOCKED = "success", "failed", "blocked"


@dataclass
class LastLoad:
    """Facts of a customer's most recent load (from its `snapshot_database` materialization)."""

    database: str
    timestamp: float
    duration_s: float
    rows: int
    rows_per_s: float


@dataclass
class SensorFacts:
    running: bool
    last_ok_tick: float | None  # the newest tick that evaluated without error (it launched runs or had none to)


@dataclass
class Facts:
    loads: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (customer, outcome)
    verification_failures: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    last_load: dict[str, LastLoad] = field(default_factory=dict)
    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)  # (customer, "queued" / "running")
    sensors: dict[str, SensorFacts] = field(default_factory=dict)
    caught_up: bool = False

    @property
    def customers(self) -> set[str]:
        return {c for c, _ in self.loads} | set(self.last_load) | {c for c, _ in self.in_flight}


def _customer(run: dg.DagsterRun) -> str | None:
    """The customer of a load run (load_snapshot, or an asset run that materializes snapshot_database)."""
    is_load = run.job_name == LOAD_SNAPSHOT_JOB or (run.asset_selection and LOAD_ASSET in run.asset_selection)
    if not is_load:
        return None
    try:
        return parse_partition_key(run.tags.get("dagster/partition", "")).customer
    except InvalidName:
        return None


class InstanceFacts:
    """The facts of one Dagster instance, refreshed at most every `cache_seconds` (thread-safe)."""

    def __init__(self, instance: dg.DagsterInstance, *, max_records: int = 500, budget_seconds: float = 2.0,
                 cache_seconds: float = 5.0) -> None:
        self.instance = instance
        self.max_records = max_records
        self.budget_seconds = budget_seconds
        self.cache_seconds = cache_seconds
        self.facts = Facts()
        self._cursors: dict[str, str | None] = {"success": None, "failure": None, "materialization": None}
        self._refreshed_at = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> Facts:
        with self._lock:
            if time.monotonic() - self._refreshed_at >= self.cache_seconds:
                self._refresh()
                self._refreshed_at = time.monotonic()
            return self.facts

    # -- the history, incrementally ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        deadline = time.monotonic() + self.budget_seconds
        while True:  # at least one read of each stream per refresh, more while the budget lasts
            more = self._read_finished_runs("success", DagsterEventType.RUN_SUCCESS)
            more |= self._read_finished_runs("failure", DagsterEventType.RUN_FAILURE)
            more |= self._read_loads()
            if not more or time.monotonic() >= deadline:
                break
        self.facts.caught_up = not more
        self.facts.in_flight = self._in_flight()
        self.facts.sensors = self._sensors()

    def _read_finished_runs(self, stream: str, event_type: DagsterEventType) -> bool:
        result = self.instance.fetch_run_status_changes(RunStatusChangeRecordsFilter(event_type=event_type),
                                                        limit=self.max_records, cursor=self._cursors[stream],
                                                        ascending=True)
        run_ids = [r.event_log_entry.run_id for r in result.records]
        runs = {run.run_id: run for run in self.instance.get_runs(dg.RunsFilter(run_ids=run_ids))} if run_ids else {}
        loads: dict[tuple[str, str], int] = defaultdict(int)
        failures: dict[tuple[str, str], int] = defaultdict(int)
        for run_id in run_ids:
            run = runs.get(run_id)
            customer = _customer(run) if run else None
            if customer is None:
                continue
            if event_type == DagsterEventType.RUN_SUCCESS:
                loads[(customer, SUCCESS)] += 1
                continue
            failed_checks = self._failed_checks(run_id)
            for check in failed_checks:
                failures[(customer, check)] += 1
            loads[(customer, BLOCKED if failed_checks else FAILED)] += 1
        # Applied together with the cursor: a read that fails halfway counts nothing twice.
        for key, n in loads.items():
            self.facts.loads[key] += n
        for key, n in failures.items():
            self.facts.verification_failures[key] += n
        if result.records:
            self._cursors[stream] = result.cursor
        return result.has_more

    def _failed_checks(self, run_id: str) -> set[str]:
        """The blocking checks that failed in a failed run (few events: its check evaluations only)."""
        records = self.instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
        failed = set()
        for record in records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            if evaluation.check_name in BLOCKING_CHECKS and not evaluation.passed:
                failed.add(evaluation.check_name)
        return failed

    def _read_loads(self) -> bool:
        result = self.instance.fetch_materializations(LOAD_ASSET, limit=self.max_records,
                                                      cursor=self._cursors["materialization"], ascending=True)
        for record in result.records:
            materialization = record.asset_materialization
            metadata = {k: v.value for k, v in (materialization.metadata or {}).items()}
            try:
                customer = parse_partition_key(materialization.partition or "").customer
            except InvalidName:
                continue
            if metadata.get("reused"):  # nothing was loaded: its duration and speed say nothing
                continue
            self.facts.last_load[customer] = LastLoad(
                database=str(metadata.get("database", materialization.partition)), timestamp=record.timestamp,
                duration_s=float(metadata.get("duration_s", 0)), rows=int(metadata.get("rows", 0)),
                rows_per_s=float(metadata.get("rows_per_s", 0)))
        if result.records:
            self._cursors["materialization"] = result.cursor
        return result.has_more

    # -- the present ---------------------------------------------------------------------------------------------

    def _in_flight(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        records = self.instance.get_run_records(dg.RunsFilter(statuses=[*QUEUED, *RUNNING]), limit=self.max_records)
        for record in records:
            customer = record.dagster_run.tags.get("customer")
            if customer:
                counts[(customer, "queued" if record.dagster_run.status in QUEUED else "running")] += 1
        return dict(counts)

    def _sensors(self) -> dict[str, SensorFacts]:
        facts = {}
        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name not in SENSORS:
                continue
            ticks = self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1,
                                            statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED])
            # Our sensors default to running: DECLARED_IN_CODE means nobody stopped them.
            running = state.status in (InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE)
            facts[state.name] = SensorFacts(running=running, last_ok_tick=ticks[0].timestamp if ticks else None)
        return facts
