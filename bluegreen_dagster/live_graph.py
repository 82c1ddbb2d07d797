"""The asset `live_graph`: which database each customer's alias serves, and since when.

One asset partitioned by customer (the dynamic partitions definition `customers`), not one asset per customer: the
catalog stays one row however many customers there are, its Partitions tab lists them all with their status, and
a new customer is a partition added at its first switch, not a change to the definitions. See docs/steps.md.

Nothing executes it: every move of the alias records a materialization of the customer's partition through
`record_live`, from inside a run (the `alias_switch` step, the `rollback` job, the reconcile job) or from outside
one (`bluegreen rollback` / `unpin`). Its description and metadata say what serves, since when, what served before,
how it moved and who moved it; the freshness check (freshness.py) reads `since`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import dagster as dg

from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.records import CUSTOMERS_PARTITIONS_NAME, LIVE_GRAPH_ASSET

customer_partitions = dg.DynamicPartitionsDefinition(name=CUSTOMERS_PARTITIONS_NAME)

# The moves of an alias (metadata `how`).
SWITCH, ROLLBACK, UNPIN, RECONCILE = "switch", "rollback", "unpin", "reconcile"

live_graph = dg.AssetSpec(
    LIVE_GRAPH_ASSET, partitions_def=customer_partitions, group_name="bluegreen", kinds={"neo4j"},
    description="Per customer (partition): the database its alias serves and since when. Materialized by every "
                "move of the alias: the alias_switch step, rollback, unpin and reconcile's forward switch.")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def latest(instance: dg.DagsterInstance, customer: str) -> dg.AssetMaterialization | None:
    """The customer's latest `live_graph` materialization, or None before its first switch."""
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LIVE_GRAPH_ASSET, asset_partitions=[customer]), limit=1)
    return found.records[0].asset_materialization if found.records else None


def value(event: dg.AssetMaterialization, key: str, default=None):
    entry = event.metadata.get(key)
    return default if entry is None else entry.value


def record_live(instance: dg.DagsterInstance, customer: str, serves: str, previous: str | None, *, how: str,
                by: str, reader: str = "", run_id: str = "", details: dict | None = None,
                log_event: Callable[[dg.AssetMaterialization], None] | None = None) -> dg.AssetMaterialization:
    """Record that `customer`'s alias serves `serves` (after a move from `previous`): a materialization of the
    customer's `live_graph` partition, logged with `log_event` (a run's `context.log_event`) or, outside a run, as
    a runless event of `instance`. Adds the customer's partition on its first move.

    `since` is now, unless the alias still serves the same database (an unpin): then it stays when that began."""
    if not instance.has_dynamic_partition(CUSTOMERS_PARTITIONS_NAME, customer):
        instance.add_dynamic_partitions(CUSTOMERS_PARTITIONS_NAME, [customer])
    since = _now()
    if previous == serves and (before := latest(instance, customer)) is not None \
            and value(before, "serves") == serves:
        since = value(before, "since", since)
    try:
        snapshot_timestamp = parse_partition_key(serves).timestamp
    except InvalidName:
        snapshot_timestamp = ""  # an alias set by hand to a database that is not a snapshot of ours
    event = dg.AssetMaterialization(
        asset_key=LIVE_GRAPH_ASSET, partition=customer,
        description=f"{customer} -> {serves} since {since} ({how} by {by})",
        metadata={"serves": serves, "since": since, "previous": previous or "", "snapshot_timestamp":
                  snapshot_timestamp, "reader": reader, "how": how, "by": by, "run_id": run_id, **(details or {})})
    (log_event or instance.report_runless_asset_event)(event)
    return event
