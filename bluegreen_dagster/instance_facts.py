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

from bluegreen_dagster import records
from bluegreen_dagster.names import InvalidName, parse_partition_key

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
            more = self._read_finished_runs("success", dg.DagsterEventType.RUN_SUCCESS)
            more |= self._read_finished_runs("failure", dg.DagsterEventType.RUN_FAILURE)
            more |= self._read_loads()
            if not more or time.monotonic() >= deadline:
                break
        self.facts.caught_up = not more
        self.facts.in_flight = records.in_flight_counts(self.instance, limit=self.max_records)
        self.facts.sensors = self._sensors()

    def _read_finished_runs(self, stream: str, event_type: dg.DagsterEventType) -> bool:
        result = self.instance.fetch_run_status_changes(dg.RunStatusChangeRecordsFilter(event_type=event_type),
                                                        limit=self.max_records, cursor=self._cursors[stream],
                                                        ascending=True)
        run_ids = [r.event_log_entry.run_id for r in result.records]
        runs = {run.run_id: run for run in self.instance.get_runs(dg.RunsFilter(run_ids=run_ids))} if run_ids else {}
        loads: dict[tuple[str, str], int] = defaultdict(int)
        failures: dict[tuple[str, str], int] = defaultdict(int)
        for run_id in run_ids:
            run = runs.get(run_id)
            customer = records.load_customer(run) if run else None
            if customer is None:
                continue
            if event_type == dg.DagsterEventType.RUN_SUCCESS:
                loads[(customer, SUCCESS)] += 1
                continue
            failed_checks = records.failed_blocking_checks(self.instance, run_id)
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

    def _read_loads(self) -> bool:
        result = self.instance.fetch_materializations(records.LOADED_ASSET, limit=self.max_records,
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

    def _sensors(self) -> dict[str, SensorFacts]:
        facts = {}
        for name in records.SENSORS:
            record = records.sensor_record(self.instance, name)
            if record is not None:
                facts[name] = SensorFacts(running=record.running, last_ok_tick=record.last_ok_tick)
        return facts
