"""Shared fixtures: a throwaway project (config.yaml, data folder, embedded store) per test, the Neo4j stand-in
and a project on it. Shared helpers that are not fixtures are in tests/helpers.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import dagster as dg

from bluegreen_dagster.config import Settings, load_settings
from bluegreen_dagster.resources import Resources, load_resources

# The real Neo4j Community server fixture (tests/neo4j_harness), for the `neo4j_community` tier.
pytest_plugins = ["tests.neo4j_community"]


@dataclass
class Project:
    root: Path
    config_file: Path
    settings: Settings

    @property
    def data(self) -> Path:
        return self.settings.dataset.base_path

    @property
    def resources(self) -> Resources:
        """The resources definitions.py would build from this project's config.yaml."""
        return load_resources(self.config_file)

    @property
    def defs(self) -> dg.Definitions:
        from bluegreen_dagster.definitions import build_definitions

        return build_definitions(self.resources)

    def job(self) -> dg.JobDefinition:
        return self.defs.resolve_job_def("load_snapshot")

    def reconfigure(self, **sections) -> Project:
        raw = yaml.safe_load(self.config_file.read_text())
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        self.config_file.write_text(yaml.safe_dump(raw))
        self.settings = load_settings(self.config_file)
        return self


def make_project(root: Path, **sections) -> Project:
    raw = {
        "target": "embedded",
        "dataset": {"base_path": "data"},
        "embedded": {"path": "store", "min_free_disk_mb": 1},
        # The reconcile, health-audit and run-retention schedules fire only where a test asks for them (a
        # daemon-based test that crossed the hour would otherwise see their runs).
        "orchestrator": {"settle_seconds": 5, "max_retries": 1, "retry_backoff_base": 0.1,
                         "scan_interval": 5, "reconcile_cron": "0 0 1 1 *", "health_audit_cron": "0 0 1 1 *",
                         "run_retention_cron": "0 0 1 1 *"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values) if isinstance(values, dict) else raw.__setitem__(section, values)
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    (root / "data").mkdir(exist_ok=True)
    return Project(root, config_file, load_settings(config_file))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project in tmp_path whose config.yaml is also what $BLUEGREEN_CONFIG points at."""
    p = make_project(tmp_path)
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(p.config_file))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return p


@pytest.fixture
def standin():
    """The Neo4j Enterprise stand-in (Bolt and GDS Arrow, tests/standin/) on free ports, password
    `helpers.STANDIN_PASSWORD`, taking string node properties over Arrow (the demo snapshots have names: GDS's
    opt-in mode); stopped afterwards, with no thread of it left."""
    import threading

    from tests.helpers import STANDIN_PASSWORD
    from tests.standin.server import start_standin

    with start_standin(password=STANDIN_PASSWORD) as s:
        s.arrow.accept_string_properties = True
        yield s
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("standin-")]
    assert not leftovers, leftovers


@pytest.fixture
def neo4j_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin) -> Project:
    """A project on the stand-in (helpers.make_neo4j_project), which $BLUEGREEN_CONFIG and $DAGSTER_HOME name."""
    from tests.helpers import make_neo4j_project

    return make_neo4j_project(tmp_path, monkeypatch, standin)


@pytest.fixture(autouse=True)
def _no_dangling_defs_state_storage(monkeypatch: pytest.MonkeyPatch):
    """Loading Definitions never trips over an instance another part of the test process dropped.

    A Dagster instance that is "entered" (`with instance:`, or one a schedule/sensor context opens from a ref and
    never exits) publishes its defs-state storage in a context variable, and that storage holds only a weak
    reference to its instance. Tests make many instances in one process: once such an instance is collected, any
    later Definitions load fails with "Attempted to resolve undefined DagsterInstance weakref". A long-lived
    daemon or webserver keeps its one instance, so this is a test-process artifact: treat a storage whose instance
    is gone as no storage."""
    from dagster._core.storage.defs_state.base import DefsStateStorage

    original = DefsStateStorage.get

    def live_storage():
        storage = original()
        ref = getattr(storage, "_instance_weakref", None)
        return None if ref is not None and ref() is None else storage

    monkeypatch.setattr(DefsStateStorage, "get", staticmethod(live_storage))


# The property-based fidelity suite (tests/test_fidelity_properties.py): "ci" (the default) is derandomized (a fixed
# seed) and bounded; `pytest --hypothesis-profile=long` runs for hours.
def _hypothesis_profiles() -> None:
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None, suppress_health_check=quiet,
                              print_blob=True)
    settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=quiet,
                              print_blob=True)
    settings.load_profile("ci")


_hypothesis_profiles()
