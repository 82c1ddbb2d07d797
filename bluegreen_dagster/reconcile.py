"""Reconcile: per customer, bring the target back to what the blue/green rules promise, or say why it cannot.

For each customer (a folder under dataset.base_path, or a snapshot partition), under the customer's lock:
1. **Drift it cannot fix safely** is reported, never guessed at: the alias serves a database that is gone, that is
   not one of ours, or that is newer than every snapshot on disk; or a pinned customer's alias serves another
   database than the pin. Nothing else is done for that customer. (A live database whose snapshot is gone is fine.)
2. **Forward**: when a newer, complete database exists whose run is not in flight and whose snapshot is on disk,
   the alias moves to the newest such database whose load passed every blocking check (records.py), that never
   served the alias before (one rolled back from stays off it), and that passes `bluegreen.switch_if_newest`
   (re-verified against its snapshot and the plausibility gate, like the `alias_switch` step), and the move is
   recorded on `live_graph` (live_graph.py) like every move. A pinned customer on its pinned database stays there.
3. **Cleanup**: `bluegreen.cleanup` with Dagster's in-flight runs: removes crashed loads' leftovers and keeps the
   newest `keep_databases`, the alias target and loads in flight.

The asset `reconcile_report` materializes what was done per customer; its check `no_unsafe_drift` fails with one
line per customer whose drift needs an operator. Relaunching failed loads is relaunch.py's (a schedule on
load_snapshot).
"""


from dataclasses import dataclass, field

import dagster as dg

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster import drain, plausibility, records
from bluegreen_dagster.concurrency import customer_lock
from bluegreen_dagster.live_graph import RECONCILE, record_live
from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.pins import get_pin
from bluegreen_dagster.records import in_flight_partitions
from bluegreen_dagster.resources import PipelineResource, TargetResource
from bluegreen_dagster.snapshots import Snapshot, customers, expected_counts, scan
from bluegreen_dagster.targets import GraphTarget, TargetError

GROUP = "operations"
DRIFT_CHECK = "no_unsafe_drift"


@dataclass
class CustomerReconcile:
    customer: str
    alias: str | None = None
    switched_from: str | None = None  # set when the alias moved forward
    drift: str | None = None  # what an operator must look at; None when nothing is unsafe
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"alias -> {self.alias or '(none)'}"]
        if self.switched_from is not None:
            parts.append(f"moved forward from {self.switched_from or '(no alias)'}")
        if self.dropped:
            parts.append(f"dropped {', '.join(self.dropped)}")
        return "; ".join(parts + self.notes + ([f"DRIFT: {self.drift}"] if self.drift else []))


def customers_to_reconcile(instance: dg.DagsterInstance, pipeline: PipelineResource) -> list[str]:
    """Customers with a folder under base_path, and those with a snapshot partition (their folder may be gone)."""
    found = set(customers(pipeline.base))
    for key in instance.get_dynamic_partitions(snapshot_partitions.name):
        try:
            found.add(parse_partition_key(key).customer)
        except InvalidName:
            continue
    return sorted(found)


def _drift(customer: str, live: str, databases: dict[str, str], on_disk: list[Snapshot]) -> str | None:
    try:
        owner = parse_partition_key(live).customer
    except InvalidName:
        owner = None
    if owner != customer:
        return f"alias {customer} serves {live}, which is not one of {customer}'s snapshot databases"
    if live not in databases:
        return f"alias {customer} serves {live}, which does not exist"
    newest = max((s.id.ts for s in on_disk), default=None)
    if newest is not None and parse_partition_key(live).ts > newest:
        return (f"alias {customer} serves {live}, newer than every snapshot on disk (newest: {customer}/{newest}); "
                "was a snapshot folder replaced or the alias set by hand?")
    return None


def reconcile_customer(graph: GraphTarget, instance: dg.DagsterInstance, pipeline: PipelineResource,
                       customer: str, on_disk: list[Snapshot], record=None, run_id: str = "") -> CustomerReconcile:
    """One customer's drift check, forward switch and cleanup; the caller holds the customer's lock. `record`
    logs the `live_graph` materialization of a forward switch (a run's `context.log_event`; default: runless)."""
    out = CustomerReconcile(customer)
    live = out.alias = graph.alias_target(customer)
    databases = {info.name: info.status for info in graph.list_databases(customer)}
    pin = get_pin(instance, customer)
    if live is not None:
        out.drift = _drift(customer, live, databases, on_disk)
    if pin is not None and live != pin.database:
        out.drift = out.drift or f"{pin.describe()}, but alias {customer} serves {live or '(none)'}"
    if out.drift:
        out.notes.append("left as it is (an operator decides)")
        return out

    loading = in_flight_partitions(instance, customer)
    if pin is not None:
        out.notes.append(f"pinned to {pin.database}: not moved")
    else:
        snapshots = {s.key: s for s in on_disk}
        newer = sorted((name for name, status in databases.items()
                        if status == "online" and name not in loading and name in snapshots
                        and (live is None or rules.is_newer(name, live))),
                       key=lambda name: parse_partition_key(name).ts, reverse=True)
        for name in newer:
            # Only a database whose load passed every blocking check (smoke queries are not re-run here), and
            # not one the alias was moved away from on purpose (a rollback without a pin).
            why = records.gate_problem(instance, name) or (
                "the alias served it before and was rolled back from it" if records.was_live(instance, name) else None)
            if why:
                out.notes.append(f"not switched to {name}: {why}")
                continue
            try:
                result = rules.switch_if_newest(graph, name, expected_counts(snapshots[name]),
                                                max_shrink_percent=pipeline.shrink_limit(customer))
            except (rules.VerificationFailed, plausibility.Implausible) as exc:
                out.notes.append(f"not switched to {name}: {exc}")
                continue
            if result.switched:
                out.switched_from, out.alias = result.previous or "", result.current
                record_live(instance, customer, result.current, result.previous, how=RECONCILE,
                            by="the reconcile job", reader=graph.reader_location(customer) or "", run_id=run_id,
                            log_event=record)
            break

    cleaned = rules.cleanup(graph, customer, pipeline.keep_databases,
                            in_flight=lambda: in_flight_partitions(instance, customer),
                            **drain.for_cleanup(instance, customer, graph))
    out.dropped = cleaned.dropped
    # Like the cleanup step: the partitions of databases dropped for retention go too. A crashed load's leftover
    # keeps its partition, so relaunch.py can still load that snapshot again.
    for key in cleaned.dropped:
        if databases.get(key) == "online" and instance.has_dynamic_partition(snapshot_partitions.name, key):
            instance.delete_dynamic_partition(snapshot_partitions.name, key)
    return out


@dg.asset(group_name=GROUP, kinds={"python"},
          check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset="reconcile_report",
                                         description="No customer's alias is in a state reconcile may not fix")])
def reconcile_report(context: dg.AssetExecutionContext, pipeline: PipelineResource, target: TargetResource):
    """Per customer: report unsafe drift, move a stale alias forward to the newest verified database, remove crashed
    loads' leftovers and apply retention (see reconcile.py)."""
    found = scan(pipeline.base, pipeline.settle_seconds)
    results: dict[str, CustomerReconcile] = {}
    with target.open() as graph:
        for customer in customers_to_reconcile(context.instance, pipeline):
            on_disk = [s for s in found.complete if s.id.customer == customer]
            try:
                with customer_lock(context.instance, customer, on_wait=context.log.info):
                    results[customer] = reconcile_customer(graph, context.instance, pipeline, customer, on_disk,
                                                           record=context.log_event, run_id=context.run.run_id)
            except TargetError as exc:
                results[customer] = CustomerReconcile(customer, drift=f"could not reconcile {customer}: {exc}")
            context.log.info(f"{customer}: {results[customer].summary()}")
    drifted = {c: r.drift for c, r in results.items() if r.drift}
    yield dg.MaterializeResult(metadata={
        "customers": len(results),
        "switched_forward": [f"{c}: {r.switched_from or '(no alias)'} -> {r.alias}" for c, r in results.items()
                             if r.switched_from is not None],
        "dropped": [name for r in results.values() for name in r.dropped],
        "drifted": sorted(drifted),
        "per_customer": {c: r.summary() for c, r in results.items()},
    })
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK, passed=not drifted, metadata={c: d for c, d in drifted.items()},
        description="\n".join(f"{c}: {d}" for c, d in drifted.items()) if drifted
        else f"{len(results)} customers: every alias serves one of its own, existing databases")
