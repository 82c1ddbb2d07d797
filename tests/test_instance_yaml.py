"""Every Dagster instance YAML we ship or generate has the one `concurrency:` block (run queue, customer tag limit,
pool granularity and default limit) that `concurrency.instance_concurrency()` renders, and the same
`free_slots_after_run_end_seconds`; Dagster reads each the way docs/concurrency.md says."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from bluegreen_dagster.cli import instance_yaml
from bluegreen_dagster.concurrency import FREE_SLOTS_AFTER_RUN_END_SECONDS, instance_concurrency

REPO = Path(__file__).resolve().parent.parent


def shipped() -> dict[str, dict]:
    """Each instance settings file, as Dagster would get it."""
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())["additionalInstanceConfig"]
    return {
        "bluegreen_dagster/dagster_instance.yaml": yaml.safe_load(
            (REPO / "bluegreen_dagster" / "dagster_instance.yaml").read_text()),
        "deploy/dagster.yaml": yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text()),
        "deploy/helm/values.yaml additionalInstanceConfig": helm,
    }


@pytest.mark.parametrize("name", list(shipped()))
def test_every_instance_yaml_has_the_one_concurrency_block(name: str) -> None:
    settings = shipped()[name]
    assert settings["concurrency"] == instance_concurrency(1), name
    assert settings["run_monitoring"]["free_slots_after_run_end_seconds"] == FREE_SLOTS_AFTER_RUN_END_SECONDS, name


def test_the_instance_the_cli_writes_takes_max_concurrent_loads_as_the_pool_limit() -> None:
    assert yaml.safe_load(instance_yaml(3))["concurrency"] == instance_concurrency(3)


def test_dagster_reads_the_block_as_intended(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(instance_yaml(2))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
    assert config.pool_config.pool_granularity.value == "op" and config.pool_config.default_pool_limit == 2
    assert config.run_queue_config.max_concurrent_runs == 8
    assert config.run_queue_config.tag_concurrency_limits == [
        {"key": "customer", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]

