"""Freshness of each customer's live graph: the check `live_graph_fresh` on `live_graph` (live_graph.py).

A customer is stale when its alias has served the same database for longer than its `max_age` (config.yaml
`orchestrator.max_age`, or `customers.<name>.max_age`; unset: not checked), i.e. no newer snapshot went live. The
time counts from the materialization's `since` (when the alias began serving that database; an unpin keeps it).

Dagster's `build_last_update_freshness_checks` takes one age for a whole asset and, for a partitioned asset, looks at
its newest record, whichever partition: one fresh customer would hide every stale one. So this module evaluates all
customers itself: the sensor `live_graph_freshness` records one evaluation of the check whenever the set of stale
customers changes (failed, naming each stale customer with its age and limit) or an alias moved (the UI shows a
check as not evaluated once its asset has a newer materialization), and alerts once per customer that turns stale
through the configured channels (alerts/). The check can also be executed from the UI.
"""

# No `from __future__ import annotations`: Dagster reads the check's context annotation when it defines it.
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import dagster as dg

from bluegreen_dagster import live_graph
from bluegreen_dagster.alerts import Alert, send_alert
from bluegreen_dagster.config import Settings
from bluegreen_dagster.records import CUSTOMERS_PARTITIONS_NAME, FRESH_CHECK, FRESHNESS_SENSOR, LIVE_GRAPH_ASSET

# How often the sensor looks (one indexed query per checked customer); an age limit is hours, not seconds.
INTERVAL_SECONDS = 30


@dataclass(frozen=True)
class Freshness:
    customer: str
    serves: str
    since: datetime
    age: timedelta
    max_age: timedelta

    @property
    def stale(self) -> bool:
        return self.age > self.max_age

    def describe(self) -> str:
        state = "STALE" if self.stale else "fresh"
        return (f"{self.customer}: {state}, {self.serves} live since {self.since.isoformat(timespec='seconds')} "
                f"({_short(self.age)}; max_age {_short(self.max_age)})")


def _short(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def max_ages(settings: Settings) -> tuple[timedelta | None, dict[str, timedelta]]:
    """(orchestrator.max_age, {customer: customers.<name>.max_age where set})."""
    return settings.orchestrator.max_age, {name: c.max_age for name, c in settings.customers.items()
                                           if c.max_age is not None}


def evaluate(instance: dg.DagsterInstance, default: timedelta | None, overrides: dict[str, timedelta],
             now: datetime | None = None) -> list[Freshness]:
    """The freshness of every customer with a `live_graph` partition and a max_age."""
    now = now or datetime.now(timezone.utc)
    found = []
    for customer in sorted(instance.get_dynamic_partitions(CUSTOMERS_PARTITIONS_NAME)):
        limit = overrides.get(customer, default)
        event = live_graph.latest(instance, customer) if limit is not None else None
        if event is None:
            continue
        since = datetime.fromisoformat(live_graph.value(event, "since"))
        found.append(Freshness(customer, live_graph.value(event, "serves", ""), since, now - since, limit))
    return found


def outcome(found: list[Freshness]) -> dict:
    """The check's passed, description and metadata for `found`."""
    stale = [f for f in found if f.stale]
    if stale:
        description = f"{len(stale)} of {len(found)} customers stale:\n" + "\n".join(f.describe() for f in stale)
    else:
        description = f"{len(found)} customers checked, every live graph within its max_age" if found \
            else "no customer has a live graph and a max_age (orchestrator.max_age) yet"
    return {"passed": not stale, "description": description,
            "metadata": {"stale": [f.customer for f in stale], "checked": len(found),
                         "per_customer": {f.customer: f.describe() for f in found}}}


def stale_alert(found: Freshness) -> Alert:
    return Alert(kind="run_failed", customer=found.customer, snapshot=None, partition=None,
                 step=f"{FRESH_CHECK} (check on {LIVE_GRAPH_ASSET.to_user_string()})",
                 cause=f"the live graph is stale: {found.describe()}",
                 action="No newer snapshot went live. Check that snapshots arrive and load (`bluegreen status`, the "
                        "Runs page), or whether the customer is pinned (`bluegreen unpin`).",
                 job=FRESH_CHECK)


def build_freshness(settings: Settings) -> tuple[dg.AssetChecksDefinition, dg.SensorDefinition]:
    """The check `live_graph_fresh` and the sensor that evaluates it and alerts, for these settings."""
    default, overrides = max_ages(settings)

    @dg.asset_check(asset=LIVE_GRAPH_ASSET, name=FRESH_CHECK,
                    description="Every customer's live graph is younger than its max_age (orchestrator.max_age, "
                                "customers.NAME.max_age)")
    def live_graph_fresh(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(**outcome(evaluate(context.instance, default, overrides)))

    @dg.sensor(name=FRESHNESS_SENSOR, minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Evaluates {FRESH_CHECK} when a customer turns stale or fresh again; alerts on stale")
    def live_graph_freshness(context: dg.SensorEvaluationContext):
        # The UI compares a check's evaluation with its asset's latest materialization by the second: evaluate
        # after a move of an alias, but not within the same second.
        newest = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=LIVE_GRAPH_ASSET),
                                                         limit=1).records
        if newest and time.time() - newest[0].timestamp < 2:
            return dg.SkipReason("an alias moved just now: evaluating on the next tick")
        found = evaluate(context.instance, default, overrides)
        now = {"stale": sorted(f.customer for f in found if f.stale), "moved": newest[0].storage_id if newest else 0}
        before = json.loads(context.cursor) if context.cursor else {"stale": []}
        for turned in (f for f in found if f.stale and f.customer not in before["stale"]):
            context.log.warning(turned.describe())
            send_alert(stale_alert(turned), settings.alerts, context.log)
        if before == now:
            return dg.SkipReason(f"unchanged: {len(now['stale'])} stale of {len(found)} checked")
        return dg.SensorResult(cursor=json.dumps(now), asset_events=[dg.AssetCheckEvaluation(
            asset_key=LIVE_GRAPH_ASSET, check_name=FRESH_CHECK, **outcome(found))])

    return live_graph_fresh, live_graph_freshness
