"""When each database stopped being its customer's alias target, as Dagster recorded it: the drain of cleanup.

Readers that opened a transaction on the alias just before a switch keep running on the database it left; so a
database the alias left is kept for `orchestrator.drain_seconds` counted from that switch (bluegreen.cleanup),
whatever `keep_databases` says, on targets whose readers hold transactions (`GraphTarget.drain_seconds`: Neo4j).
The switch time is the one Dagster recorded: every move of the alias (switch, rollback, unpin) records an
observation of `alias/<customer>` naming what it serves and what it served before.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from bluegreen_dagster.targets.base import GraphTarget

# Observations read per customer: far more switches than any drain window can hold.
RECENT_SWITCHES = 100


def left_alias_at(instance: dg.DagsterInstance, alias_key: dg.AssetKey) -> dict[str, float]:
    """database -> the time (epoch seconds) it last stopped being the target of the alias `alias_key`."""
    left: dict[str, float] = {}
    for record in instance.fetch_observations(alias_key, limit=RECENT_SWITCHES).records:  # newest first
        observation = record.asset_observation
        if observation is None:
            continue
        metadata = {key: getattr(value, "value", value) for key, value in observation.metadata.items()}
        previous, serves = metadata.get("previous"), metadata.get("serves")
        if isinstance(previous, str) and previous and previous != serves:
            left.setdefault(previous, record.timestamp)
    return left


def for_cleanup(instance: dg.DagsterInstance, customer: str, target: GraphTarget) -> dict[str, Any]:
    """The drain keywords of `bluegreen.cleanup` for `customer`: `rules.cleanup(..., **for_cleanup(...))`."""
    from bluegreen_dagster.assets import alias_asset_key  # assets imports this module

    return {"left_at": left_alias_at(instance, alias_asset_key(customer)), "drain_seconds": target.drain_seconds()}


__all__ = ["RECENT_SWITCHES", "for_cleanup", "left_alias_at"]
