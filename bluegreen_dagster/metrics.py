"""Prometheus metrics (`bluegreen metrics`), read fresh on every scrape (Dagster OSS has no /metrics of its own).

Two sources, each with its own `*_up`: a source that is down is a metric, never a crashed exporter.
- the graph target (status.py, as `bluegreen status`): the live snapshot per customer, its age, the databases kept;
- the Dagster instance (instance_facts.py, opened from $DAGSTER_HOME and only read): loads by outcome,
  verification failures, the last load's duration and rows/s, runs queued and running, the sensors' last tick.

`METRICS` lists every series with its help text; deploy/grafana/bluegreen.json uses only these (tests/test_metrics.py
checks each panel's expression against what a live exporter serves).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bluegreen_dagster.instance_facts import BLOCKED, FAILED, SUCCESS, InstanceFacts
from bluegreen_dagster.records import GATE_CHECKS
from bluegreen_dagster.resources import Resources
from bluegreen_dagster.secrets import scrub
from bluegreen_dagster.status import collect_status

log = logging.getLogger(__name__)

# name: (type, help, labels). Counters are served with the suffix _total.
METRICS: dict[str, tuple[str, str, list[str]]] = {
    "bluegreen_target_up": ("gauge", "1 if the graph target answered this scrape", ["target"]),
    "bluegreen_alias_snapshot_timestamp_seconds": (
        "gauge", "Timestamp of the snapshot the customer's alias serves (the live snapshot)", ["customer"]),
    "bluegreen_alias_age_seconds": ("gauge", "Age of the live snapshot", ["customer", "database"]),
    "bluegreen_databases": ("gauge", "Databases kept per customer, by status", ["customer", "status"]),
    "bluegreen_instance_up": ("gauge", "1 if the Dagster instance ($DAGSTER_HOME) could be read this scrape", []),
    "bluegreen_instance_history_caught_up": (
        "gauge", "1 once the exporter has read the instance's whole run history (the totals below are complete)", []),
    "bluegreen_loads": ("counter", "Finished load runs by outcome: success, failed, blocked (a blocking check "
                                   "failed and the alias did not move)", ["customer", "outcome"]),
    "bluegreen_verification_failures": (
        "counter", f"Failed blocking checks ({', '.join(GATE_CHECKS)}) in failed load runs", ["customer", "check"]),
    "bluegreen_last_load_duration_seconds": ("gauge", "Duration of the customer's last load", ["customer"]),
    "bluegreen_last_load_rows_per_second": ("gauge", "Rows per second of the customer's last load", ["customer"]),
    "bluegreen_last_load_rows": ("gauge", "Rows (nodes + relationships) of the customer's last load", ["customer"]),
    "bluegreen_last_load_timestamp_seconds": ("gauge", "When the customer's last load finished", ["customer"]),
    "bluegreen_runs": ("gauge", "Runs of the customer in the run queue (queued) or executing (running)",
                       ["customer", "state"]),
    "bluegreen_sensor_running": ("gauge", "1 if the sensor is running (not stopped in the UI)", ["sensor"]),
    "bluegreen_sensor_last_successful_tick_timestamp_seconds": (
        "gauge", "When the sensor last evaluated without error", ["sensor"]),
}


def _family(name: str):
    kind, text, labels = METRICS[name]
    return (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=labels)


def dagster_home() -> Path | None:
    """$DAGSTER_HOME, else `.dagster_home` beside the config file (as the CLI), if it exists; never created here."""
    from bluegreen_dagster.config import dagster_home as home_folder

    home = home_folder()
    return home if home.is_dir() else None


def open_instance() -> dg.DagsterInstance:
    home = dagster_home()
    if home is None:
        raise RuntimeError("DAGSTER_HOME is not set (or is not a folder): point it at the instance the daemon uses")
    return dg.DagsterInstance.from_config(str(home))


class StatusCollector:
    """A custom collector: every scrape reads the target, and the instance through `InstanceFacts` (cached for a
    few seconds, bounded work per scrape)."""

    def __init__(self, resources: Resources, instance_opener: Callable[[], dg.DagsterInstance] | None = open_instance,
                 **facts_options: float) -> None:
        self.resources = resources  # initialized: usable outside a Dagster run
        self.instance_opener = instance_opener
        self.facts_options = facts_options
        self.instance_facts: InstanceFacts | None = None
        self._opening = threading.Lock()  # scrapes may come in parallel: open the instance once
        self._complained = ""

    def collect(self):
        yield from self._target()
        if self.instance_opener is not None:
            yield from self._instance()

    def _target(self):
        kind = self.resources.target.kind
        up = _family("bluegreen_target_up")
        try:
            rows = collect_status(self.resources.pipeline.base, self.resources.target)
        except Exception as exc:  # a down target is a metric, not a crashed exporter
            self._complain(f"graph target unreachable: {exc}")
            up.add_metric([kind], 0)
            yield up
            return
        up.add_metric([kind], 1)
        snapshot_ts, age, databases = (_family(n) for n in ("bluegreen_alias_snapshot_timestamp_seconds",
                                                             "bluegreen_alias_age_seconds", "bluegreen_databases"))
        for row in rows:
            if row.age_seconds is not None:
                age.add_metric([row.customer, row.target_database], row.age_seconds)
            if row.snapshot_timestamp is not None:
                snapshot_ts.add_metric([row.customer], int(row.snapshot_timestamp))
            counts: dict[str, int] = {}
            for db in row.databases:
                counts[db.status] = counts.get(db.status, 0) + 1
            for status, n in counts.items():
                databases.add_metric([row.customer, status], n)
        yield from (up, snapshot_ts, age, databases)

    def _instance(self):
        up = _family("bluegreen_instance_up")
        try:
            with self._opening:
                if self.instance_facts is None:
                    self.instance_facts = InstanceFacts(self.instance_opener(), **self.facts_options)
            facts = self.instance_facts.current()
        except Exception as exc:  # a down instance is a metric too; the next scrape tries again
            self._complain(f"Dagster instance unreadable: {exc}")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        caught_up = _family("bluegreen_instance_history_caught_up")
        caught_up.add_metric([], 1 if facts.caught_up else 0)
        yield from (up, caught_up)

        customers = sorted(facts.customers)
        if facts.caught_up:  # partial totals would show as a burst of loads in increase()
            loads, failures = _family("bluegreen_loads"), _family("bluegreen_verification_failures")
            for customer in customers:
                for outcome in (SUCCESS, FAILED, BLOCKED):
                    loads.add_metric([customer, outcome], facts.loads.get((customer, outcome), 0))
            for (customer, check), n in sorted(facts.verification_failures.items()):
                failures.add_metric([customer, check], n)
            yield from (loads, failures)

        duration, speed, rows, when = (_family(n) for n in (
            "bluegreen_last_load_duration_seconds", "bluegreen_last_load_rows_per_second",
            "bluegreen_last_load_rows", "bluegreen_last_load_timestamp_seconds"))
        for customer, last in sorted(facts.last_load.items()):
            duration.add_metric([customer], last.duration_s)
            speed.add_metric([customer], last.rows_per_s)
            rows.add_metric([customer], last.rows)
            when.add_metric([customer], last.timestamp)
        runs = _family("bluegreen_runs")
        for customer in customers:
            for state in ("queued", "running"):
                runs.add_metric([customer, state], facts.in_flight.get((customer, state), 0))
        running, tick = _family("bluegreen_sensor_running"), _family("bluegreen_sensor_last_successful_tick_timestamp_seconds")
        for name, sensor in sorted(facts.sensors.items()):
            running.add_metric([name], 1 if sensor.running else 0)
            if sensor.last_ok_tick is not None:
                tick.add_metric([name], sensor.last_ok_tick)
        yield from (duration, speed, rows, when, runs, running, tick)

    def _complain(self, message: str) -> None:
        """Log a source's failure once per distinct message, not on every scrape."""
        message = scrub(message, self.resources.settings.neo4j.password)
        if message != self._complained:
            log.warning("%s", message)
            self._complained = message


def registry_for(resources: Resources, instance_opener: Callable[[], dg.DagsterInstance] | None = open_instance,
                 **facts_options: float) -> CollectorRegistry:
    """A registry whose every scrape reads afresh; `resources` must be `Resources.initialized()`.
    `instance_opener=None` leaves the Dagster instance out (only the target's series)."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(resources, instance_opener, **facts_options))
    return registry


def serve(resources: Resources, port: int, host: str = "0.0.0.0") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start_http_server(port, addr=host, registry=registry_for(resources))
    print(f"serving Prometheus metrics on http://{host}:{port}/metrics", flush=True)
    while True:
        time.sleep(3600)
