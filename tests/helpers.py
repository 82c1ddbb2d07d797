"""Helpers shared by the tests (their fixtures are in tests/conftest.py): a free port, a snapshot's run and what it
recorded, what the target holds, and a project on the Neo4j stand-in."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from bluegreen_dagster.config import Settings, parse_settings
from bluegreen_dagster.names import parse_partition_key
from bluegreen_dagster.records import CUSTOMER_TAG, SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.targets import make_target

if TYPE_CHECKING:  # tests/conftest.py loads tests/neo4j_community.py, which takes free_port from here
    from tests.conftest import Project

# The password of the Neo4j stand-in started by the `standin` fixture (tests/conftest.py): only for that server.
STANDIN_PASSWORD = "standin-secret-pw"


def free_port() -> int:
    """A loopback TCP port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_partition(project: Project, instance: dg.DagsterInstance, key: str, **tags: str
                  ) -> dg.ExecuteInProcessResult:
    """One snapshot's run of `load_snapshot`, in process, with the tags the sensor sets (and any others)."""
    if not instance.has_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, key):
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [key])
    return project.job().execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                            tags={CUSTOMER_TAG: parse_partition_key(key).customer, **tags})


def failed_step(result: dg.ExecuteInProcessResult) -> str:
    """The key of the run's one failed step."""
    [failure] = result.get_step_failure_events()
    return failure.step_key


def metadata(result: dg.ExecuteInProcessResult, step: str) -> dict:
    """The metadata of the step's own asset's materialization, as plain values."""
    [event] = [e for e in result.asset_materializations_for_node(step) if e.asset_key == dg.AssetKey(step)]
    return {k: v.value for k, v in event.metadata.items()}


def alias_of(project: Project, customer: str) -> str | None:
    """The database the customer's alias points at, asked of the target."""
    with make_target(project.settings) as target:
        return target.alias_target(customer)


def databases(project: Project, customer: str) -> list[str]:
    """The customer's databases on the target, by name."""
    with make_target(project.settings) as target:
        return sorted(d.name for d in target.list_databases(customer))


def make_neo4j_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin, orchestrator: dict | None = None,
                       **neo4j) -> Project:
    """A project whose target is the stand-in (password from $STANDIN_PASSWORD), keeping one database per
    customer; `orchestrator` and `neo4j` override settings. $BLUEGREEN_CONFIG and $DAGSTER_HOME point at it."""
    from tests.conftest import make_project

    monkeypatch.setenv("STANDIN_PASSWORD", STANDIN_PASSWORD)
    project = make_project(tmp_path, target="neo4j", neo4j={
        **standin.neo4j_settings(), "password": "${STANDIN_PASSWORD}", "batch_size": 100, "online_timeout": 10,
        "arrow_string_properties": True, **neo4j},
        orchestrator={"keep_databases": 1, **(orchestrator or {})})
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(project.config_file))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return project


def standin_settings(standin, tmp_path: Path, **neo4j) -> Settings:
    """Settings whose `neo4j:` section points at a running stand-in (small batches, short waits), plus `neo4j`."""
    section = {"host": "127.0.0.1", "bolt_port": standin.bolt_port,
               "arrow_port": standin.arrow.port if standin.arrow else 1, "password": standin.dbms.password,
               "batch_size": 50, "concurrency": 2, "online_timeout": 2, "arrow_string_properties": True, **neo4j}
    return parse_settings({"target": "neo4j", "neo4j": section, "dataset": {"base_path": str(tmp_path / "data")}},
                          root=tmp_path)
