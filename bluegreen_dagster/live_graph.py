"""The asset `live_graph`: which database each customer's alias serves, and since when.

One asset partitioned by customer (the dynamic partitions definition `customers`), not one asset per customer: the
catalog stays one row however many customers there are, its Partitions tab lists them all with their status, and
a new customer is a partition added at its first switch, not a change to the definitions. See docs/steps.md.

Every move of the alias records a materialization of the customer's partition through `record_live`, from inside a
run (the `alias_switch` step, the `rollback` job, the reconcile job) or from outside one (`bluegreen rollback` /
`unpin`). Materializing a partition by hand (the UI's Materialize) records what the target's alias serves now,
e.g. after an alias was set outside this pipeline; it moves nothing. Its description and metadata say what serves, since when, what served before,
how it moved and who moved it; the freshness check (freshness.py) reads `since`.
"""

# No `from __future__ import annotations`: Dagster reads the asset's annotations when it defines it.
from collections.abc import Callable
from datetime import datetime, timezone

import dagster as dg

from bluegreen_dagster.concurrency import customer_lock
from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.records import CUSTOMERS_PARTITIONS_NAME, LIVE_GRAPH_ASSET
from bluegreen_dagster.resources import TargetResource

customer_partitions = dg.DynamicPartitionsDefinition(name=CUSTOMERS_PARTITIONS_NAME)

# The moves of an alias (metadata `how`), and a reading of the target that moved nothing.
SWITCH, ROLLBACK, UNPIN, RECONCILE, READ = "switch", "rollback", "unpin", "reconcile", "read"


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


def _metadata(instance: dg.DagsterInstance, customer: str, serves: str, previous: str | None, **more) -> dict:
    """`since` is now, unless the alias still serves what the latest record says: then it stays when that began."""
    since = _now()
    if previous == serves and (before := latest(instance, customer)) is not None \
            and value(before, "serves") == serves:
        since = value(before, "since", since)
    try:
        snapshot_timestamp = parse_partition_key(serves).timestamp
    except InvalidName:
        snapshot_timestamp = ""  # an alias set by hand to a database that is not a snapshot of ours
    return {"serves": serves, "since": since, "previous": previous or "", "snapshot_timestamp": snapshot_timestamp,
            **more}


def record_live(instance: dg.DagsterInstance, customer: str, serves: str, previous: str | None, *, how: str,
                by: str, reader: str = "", run_id: str = "", details: dict | None = None,
                log_event: Callable[[dg.AssetMaterialization], None] | None = None) -> dg.AssetMaterialization:
    """Record that `customer`'s alias serves `serves` (after a move from `previous`): a materialization of the
    customer's `live_graph` partition, logged with `log_event` (a run's `context.log_event`) or, outside a run, as
    a runless event of `instance`. Adds the customer's partition on its first move. An unpin (`previous ==
    serves`) keeps `since`."""
    if not instance.has_dynamic_partition(CUSTOMERS_PARTITIONS_NAME, customer):
        instance.add_dynamic_partitions(CUSTOMERS_PARTITIONS_NAME, [customer])
    metadata = _metadata(instance, customer, serves, previous, reader=reader, how=how, by=by, run_id=run_id,
                         **(details or {}))
    event = dg.AssetMaterialization(asset_key=LIVE_GRAPH_ASSET, partition=customer, metadata=metadata,
                                    description=f"{customer} -> {serves} since {metadata['since']} ({how} by {by})")
    (log_event or instance.report_runless_asset_event)(event)
    return event


@dg.asset(key=LIVE_GRAPH_ASSET, partitions_def=customer_partitions, group_name="bluegreen", kinds={"python"})
def live_graph(context: dg.AssetExecutionContext, target: TargetResource) -> dg.MaterializeResult:
    """Per customer (partition): the database its alias serves and since when. Materialized by every move of the
    alias (the alias_switch step, rollback, unpin, reconcile's forward switch); materializing it by hand records
    what the target's alias serves now and moves nothing."""
    customer = context.partition_key
    with target.open() as graph, customer_lock(context.instance, customer, on_wait=context.log.info):
        serves, reader = graph.alias_target(customer), graph.reader_location(customer)
        before = latest(context.instance, customer)
    if serves is None:
        raise dg.Failure(f"customer {customer} has no alias on the target: nothing serves it", allow_retries=False)
    recorded = value(before, "serves") if before is not None else None
    if recorded != serves:
        context.log.warning(f"alias {customer} serves {serves}, but the last record said {recorded or 'nothing'}")
    return dg.MaterializeResult(metadata=_metadata(
        context.instance, customer, serves, recorded, reader=reader or "", how=READ,
        by="the live_graph step", run_id=context.run.run_id))
