"""The Dagster resources: the one way every entry point (assets, sensors, CLI, metrics exporter) reaches the
settings of `config.yaml` and the graph target they select.

- `PipelineResource`: where snapshots arrive and the orchestration knobs (`dataset:`, `orchestrator:`,
  `customers:`, `smoke:`).
- `EmbeddedResource` / `Neo4jResource` (both `TargetResource`): the target's own section plus `orchestrator:`
  (its health thresholds, the progress pace) and `customers:` (e.g. a customer's Neo4j readers), and `open()`,
  the seam that constructs the target object (`targets.make_target`) and closes it again.

Each resource holds its sections as config.yaml has them (a mapping per section, validated when read back by the
section's model, config.py or a config_*.py beside it): a field added to a settings model reaches the resource, the
UI and the target with no edit here. `build_resources()` turns one parsed `config.yaml` into these; `definitions.py`
and the CLI both call it, so there is one reading of the file per process. The Neo4j password is never resource
config: it is a `dg.EnvVar` naming the variable that `config.yaml` writes as `${NEO4J_PASSWORD}`, so the UI shows
the variable's name only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import BaseModel, PrivateAttr

from bluegreen_dagster.config import (
    ConfigError,
    EmbeddedSettings,
    OrchestratorSettings,
    Settings,
    config_path,
    load_settings,
)
from bluegreen_dagster.config_neo4j import Neo4jSettings
from bluegreen_dagster.config_smoke import SmokeSettings
from bluegreen_dagster.progress import LoadProgress
from bluegreen_dagster.targets import GraphTarget, make_target

PIPELINE = "pipeline"
TARGET = "target"


def _section(model: BaseModel, **dump: Any) -> dict[str, Any]:
    """A settings section as resource config: plain JSON values (paths as strings). Unset optional keys (None)
    are left out: Dagster's config maps hold no nulls, and reading the section back gives them their default."""
    return {key: value for key, value in model.model_dump(mode="json", **dump).items() if value is not None}


class PipelineResource(dg.ConfigurableResource):
    """`dataset:`, `orchestrator:`, `customers:` and `smoke:` of config.yaml, as the steps and the sensor read them."""

    dataset: dict[str, Any]
    orchestrator: dict[str, Any]
    # Only the keys config.yaml sets: a smoke query's expectation is the key that is present.
    customers: dict[str, Any] = {}
    smoke: dict[str, Any] = {}
    # The sections validated once (the sensor reads settle_seconds per snapshot it looks at).
    _settings: Settings | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.model_validate({"dataset": self.dataset, "orchestrator": self.orchestrator,
                                                      "customers": self.customers, "smoke": self.smoke})
        return self._settings

    @property
    def orchestration(self) -> OrchestratorSettings:
        return self.settings().orchestrator

    @property
    def base(self) -> Path:
        return Path(self.dataset["base_path"])

    @property
    def base_path(self) -> str:
        return self.dataset["base_path"]

    # The orchestrator values the steps, the sensor and the schedules read, by name.
    settle_seconds = property(lambda self: self.orchestration.settle_seconds)
    keep_databases = property(lambda self: self.orchestration.keep_databases)
    max_retries = property(lambda self: self.orchestration.max_retries)
    max_concurrent_loads = property(lambda self: self.orchestration.max_concurrent_loads)
    lost_lock_check_seconds = property(lambda self: self.orchestration.lost_lock_check_seconds)
    max_runs_per_tick = property(lambda self: self.orchestration.max_runs_per_tick)

    def shrink_limit(self, customer: str) -> float:
        own = self.settings().customers.get(customer)
        return own.max_shrink_percent if own and own.max_shrink_percent is not None \
            else self.orchestration.max_shrink_percent

    def smoke_plan(self, customer: str) -> SmokeSettings:
        return self.settings().smoke_for(customer)


class TargetResource(dg.ConfigurableResource):
    """What every target gets: `orchestrator:` of config.yaml (health thresholds, progress pace) and `customers:`
    (per-customer settings a target reads, e.g. the Neo4j readers of one customer), the same mapping the pipeline
    resource holds. Subclasses add their own section and `kind`."""

    orchestrator: dict[str, Any]
    customers: dict[str, Any] = {}
    kind: ClassVar[str]

    def section(self) -> BaseModel:
        """This target's section of config.yaml, validated by its model (config.py, config_neo4j.py)."""
        raise NotImplementedError

    def settings(self) -> Settings:
        """The `Settings` the target's constructor takes: this target's section and `orchestrator:`."""
        return Settings.model_validate({"target": self.kind, "orchestrator": self.orchestrator,
                                        "customers": self.customers, self.kind: self.section()})

    def make(self) -> GraphTarget:
        return make_target(self.settings())

    @contextmanager
    def open(self, progress_to: Callable[[str], None] | None = None) -> Iterator[GraphTarget]:
        """A connected target for the duration of the block, closed afterwards. A load through it reports its
        progress as lines to `progress_to` (e.g. `context.log.info`), paced by orchestrator.progress_seconds."""
        target = self.make()
        if progress_to is not None:
            target.progress = LoadProgress(progress_to, OrchestratorSettings.model_validate(
                self.orchestrator).progress_seconds)
        try:
            yield target
        finally:
            target.close()


class EmbeddedResource(TargetResource):
    """The embedded LadybugDB target (`embedded:` of config.yaml)."""

    embedded: dict[str, Any]
    kind: ClassVar[str] = "embedded"

    def section(self) -> EmbeddedSettings:
        return EmbeddedSettings.model_validate(self.embedded)


class Neo4jResource(TargetResource):
    """The Neo4j Enterprise target (`neo4j:` of config.yaml, without the password). `password` is always a
    `dg.EnvVar`: the UI shows the variable's name, the value is read from the environment where the step runs."""

    neo4j: dict[str, Any]
    password: str
    kind: ClassVar[str] = "neo4j"

    def section(self) -> Neo4jSettings:
        if isinstance(self.password, dg.EnvVar):  # only its name: resolved by Dagster, or by Resources.initialized()
            raise ConfigError(f"neo4j.password: environment variable {self.password} was not resolved")
        return Neo4jSettings.model_validate({**self.neo4j, "password": self.password})


@dataclass(frozen=True)
class Resources:
    """The resources of one config.yaml, and the settings they came from (for definitions-time values)."""

    settings: Settings
    pipeline: PipelineResource
    target: TargetResource

    def as_dict(self) -> dict[str, dg.ConfigurableResource]:
        return {PIPELINE: self.pipeline, TARGET: self.target}

    def initialized(self) -> Resources:
        """Copies with `dg.EnvVar` values resolved, for use outside a Dagster run (CLI, metrics exporter)."""
        try:
            return Resources(self.settings, self.pipeline.process_config_and_initialize(),
                             self.target.process_config_and_initialize())
        except dg.DagsterInvalidConfigError as exc:
            raise ConfigError(f"{exc.errors[0].message if exc.errors else exc}") from None


def password_env_var(settings: Settings, source: str) -> str:
    """The variable named by `neo4j.password: ${VAR}`; a literal password would be shown in the UI, so refuse it."""
    name = settings.env_name("neo4j.password")
    if name is None:
        raise ConfigError(f"{source}: neo4j.password must name an environment variable, e.g. "
                          "password: ${NEO4J_PASSWORD} (a literal password would be shown in the Dagster UI)")
    return name


def build_resources(settings: Settings, source: str = "config") -> Resources:
    """The resources for parsed `settings` (`source` names the file in errors)."""
    orchestrator = _section(settings.orchestrator)
    # One reading of `customers:` for both resources: the steps' limits and the target's readers agree.
    customers = {name: _section(c, exclude_unset=True) for name, c in settings.customers.items()}
    pipeline = PipelineResource(
        dataset=_section(settings.dataset), orchestrator=orchestrator, customers=customers,
        smoke=_section(settings.smoke, exclude_unset=True))
    target: TargetResource
    if settings.target == "neo4j":
        env_var = password_env_var(settings, source)
        target = Neo4jResource(neo4j=_section(settings.neo4j, exclude={"password"}), password=dg.EnvVar(env_var),
                               orchestrator=orchestrator, customers=customers)
    else:
        target = EmbeddedResource(embedded=_section(settings.embedded), orchestrator=orchestrator,
                                  customers=customers)
    return Resources(settings, pipeline, target)


def load_resources(path: str | Path | None = None) -> Resources:
    """Read config.yaml ($BLUEGREEN_CONFIG or ./config.yaml unless `path`) once and build the resources."""
    file = Path(path) if path is not None else config_path()
    return build_resources(load_settings(file), source=str(file))
