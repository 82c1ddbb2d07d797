"""Prometheus metrics (`bluegreen metrics`): the facts of `bluegreen status`, read fresh on every scrape.

Dagster OSS has no /metrics endpoint of its own, so this small exporter covers what an on-call person alerts on:
how old each customer's live graph is and how many databases it keeps.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from bluegreen_dagster.resources import Resources
from bluegreen_dagster.status import collect_status


class StatusCollector:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources  # initialized: usable outside a Dagster run

    def collect(self):
        kind = self.resources.target.kind
        up = GaugeMetricFamily("bluegreen_target_up", "1 if the graph target answered the last scrape", labels=["target"])
        age = GaugeMetricFamily("bluegreen_alias_age_seconds", "Age of the snapshot the customer's alias serves",
                                labels=["customer", "database"])
        snapshot_ts = GaugeMetricFamily("bluegreen_alias_snapshot_timestamp",
                                        "Timestamp of the snapshot the alias serves", labels=["customer"])
        databases = GaugeMetricFamily("bluegreen_databases", "Databases kept per customer and status",
                                      labels=["customer", "status"])
        try:
            rows = collect_status(self.resources.pipeline.base, self.resources.target)
        except Exception:  # a down target is a metric, not a crashed exporter
            up.add_metric([kind], 0)
            yield up
            return
        up.add_metric([kind], 1)
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
        yield from (up, age, snapshot_ts, databases)


def registry_for(resources: Resources) -> CollectorRegistry:
    """A registry whose every scrape reads the status afresh; `resources` must be `Resources.initialized()`."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(resources))
    return registry


def serve(resources: Resources, port: int) -> None:
    start_http_server(port, registry=registry_for(resources))
    print(f"serving Prometheus metrics on http://0.0.0.0:{port}/metrics")
    while True:
        time.sleep(3600)
