"""Graph stores the pipeline can target: `embedded` (LadybugDB, the default) and `neo4j` (Enterprise 5.x)."""

from __future__ import annotations

from bluegreen_dagster.config import Settings
from bluegreen_dagster.targets.base import (
    DatabaseInfo,
    GraphTarget,
    Health,
    LoadReport,
    PermanentTargetError,
    TargetError,
    TransientTargetError,
)

__all__ = ["DatabaseInfo", "GraphTarget", "Health", "LoadReport", "PermanentTargetError", "TargetError",
           "TransientTargetError", "make_target"]


def make_target(settings: Settings) -> GraphTarget:
    """The target `config.yaml` selects. Imports lazily so the embedded default needs no Neo4j libraries loaded."""
    if settings.target == "neo4j":
        from bluegreen_dagster.targets.neo4j.target import Neo4jTarget

        return Neo4jTarget(settings)
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    return EmbeddedTarget(settings)
