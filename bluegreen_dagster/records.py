"""What Dagster's records say about a snapshot database, for the decisions made outside its own run (rollback.py,
reconcile.py): did its load pass the gate, and did it ever serve the alias.
"""

import dagster as dg

# The blocking checks of a load: a database that failed one of them (e.g. a refused shrink, a failed smoke query) is
# kept for inspection and must never serve the alias, although it may count exactly like its snapshot.
GATE_CHECKS = ("verify_counts", "plausible", "smoke_queries")


def gate_problem(instance: dg.DagsterInstance, database: str) -> str | None:
    """Why Dagster's records do not show `database` as having passed every blocking check, or None if they do.

    The checks are those of the run that made the partition's latest `snapshot_database` materialization (Dagster
    1.13 records no partition on the evaluations of a partitioned asset's checks, but their run has one)."""
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("snapshot_database"), asset_partitions=[database]), limit=1)
    if not latest.records:
        return "Dagster has no record of loading it"
    run_id = latest.records[0].run_id
    passed = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.asset_check_evaluation_data
        passed[evaluation.check_name] = evaluation.passed
    for name in GATE_CHECKS:
        if name not in passed:
            return f"its run {run_id} recorded no {name} result"
        if not passed[name]:
            return f"its {name} check failed in run {run_id}"
    return None


def was_live(instance: dg.DagsterInstance, database: str) -> bool:
    """Whether the alias ever moved to `database` (an `alias_switch` materialization with `switched`). An alias
    that left such a database was moved away on purpose (a rollback): only an operator's `rollback --to` brings it
    back."""
    steps = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("alias_switch"), asset_partitions=[database]), limit=100)
    return any((m := r.asset_materialization.metadata.get("switched")) is not None and m.value
               for r in steps.records)
