"""The drain of cleanup: a database the alias left is kept for `orchestrator.drain_seconds` counted from that
switch (bluegreen.cleanup), whatever `keep_databases` says, on targets whose readers hold transactions
(`GraphTarget.drain_seconds`: Neo4j). Readers that opened a transaction on the alias just before a switch keep
running on the database it left. The switch time is the one Dagster recorded: every move of the alias (switch,
rollback, unpin, reconcile) materializes the customer's `live_graph` partition (live_graph.py).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bluegreen_dagster import records
from bluegreen_dagster.targets.base import GraphTarget


def for_cleanup(instance: dg.DagsterInstance, customer: str, target: GraphTarget) -> dict[str, Any]:
    """The drain keywords of `bluegreen.cleanup` for `customer`: `rules.cleanup(..., **for_cleanup(...))`."""
    return {"left_at": records.left_alias_at(instance, customer), "drain_seconds": target.drain_seconds()}
