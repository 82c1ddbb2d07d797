"""The Dagster resources: the one way every entry point (assets, sensors, CLI, metrics exporter) reaches the
settings of `config.yaml` and the graph target they select.

- `PipelineResource`: where snapshots arrive and the orchestration knobs (`dataset:` and `orchestrator:`).
- `EmbeddedResource` / `Neo4jResource` (both `TargetResource`): the target's settings, and `open()`, the seam that
  constructs the target object (`EmbeddedTarget(settings)` / `Neo4jTarget(settings)`, via `targets.make_target`)
  and closes it again.

`build_resources()` turns one parsed `config.yaml` into these; `definitions.py` and the CLI both call it, so there
is one reading of the file per process. The Neo4j password is never resource config: it is a `dg.EnvVar` naming
the variable that `config.yaml` writes as `${NEO4J_PASSWORD}`, so the UI shows the variable's name only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dagster as dg
import yaml

from bluegreen_dagster.config import (
    _ENV_PATTERN,
    ConfigError,
    Settings,
    SmokeSettings,
    config_path,
    load_settings,
)
from bluegreen_dagster.targets import GraphTarget, make_target

PIPELINE = "pipeline"
TARGET = "target"


class PipelineResource(dg.ConfigurableResource):
    """`dataset:` and `orchestrator:` of config.yaml, as the steps and the sensor read them."""

    base_path: str
    settle_seconds: float
    keep_databases: int
    max_retries: int
    max_concurrent_loads: int
    max_runs_per_tick: int
    max_shrink_percent: float = 50
    # customers.<name>.max_shrink_percent of config.yaml, where set
    max_shrink_percent_by_customer: dict[str, float] = {}

    @property
    def base(self) -> Path:
        return Path(self.base_path)

    def shrink_limit(self, customer: str) -> float:
        return self.max_shrink_percent_by_customer.get(customer, self.max_shrink_percent)

    # smoke: of config.yaml, and each configured customer's plan with customers.<name>.smoke merged over it: as
    # SmokeSettings JSON with only the keys that were set (an expectation is the key that is present).
    smoke: str = "{}"
    smoke_by_customer: dict[str, str] = {}

    def smoke_plan(self, customer: str) -> SmokeSettings:
        return SmokeSettings.model_validate_json(self.smoke_by_customer.get(customer, self.smoke))


class TargetResource(dg.ConfigurableResource):
    """What every target needs: the health thresholds. Subclasses add their own section and `kind`."""

    max_databases: int
    heap_threshold_percent: float
    pagecache_threshold_percent: float

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def _section(self) -> dict:
        raise NotImplementedError

    def settings(self) -> Settings:
        """The `Settings` the target's constructor takes (only this target's section is filled)."""
        orchestrator = {"max_databases": self.max_databases, "heap_threshold_percent": self.heap_threshold_percent,
                        "pagecache_threshold_percent": self.pagecache_threshold_percent}
        return Settings.model_validate({"target": self.kind, self.kind: self._section(),
                                        "orchestrator": orchestrator})

    def make(self) -> GraphTarget:
        return make_target(self.settings())

    @contextmanager
    def open(self) -> Iterator[GraphTarget]:
        """A connected target for the duration of the block, closed afterwards."""
        target = self.make()
        try:
            yield target
        finally:
            target.close()


class EmbeddedResource(TargetResource):
    """The embedded LadybugDB target (`embedded:` of config.yaml)."""

    path: str
    min_free_disk_mb: int

    @property
    def kind(self) -> str:
        return "embedded"

    def _section(self) -> dict:
        return {"path": self.path, "min_free_disk_mb": self.min_free_disk_mb}


class Neo4jResource(TargetResource):
    """The Neo4j Enterprise target (`neo4j:` of config.yaml). `password` is always a `dg.EnvVar`."""

    host: str
    bolt_port: int
    arrow_port: int
    user: str
    password: str
    tls: bool
    tls_ca_file: str | None
    concurrency: int
    loader: Literal["arrow", "cypher"]
    batch_size: int
    online_timeout: float
    stall_timeout: float
    arrow_string_properties: bool
    arrow_nulls: Literal["refuse", "nan"]

    @property
    def kind(self) -> str:
        return "neo4j"

    def _section(self) -> dict:
        if isinstance(self.password, dg.EnvVar):  # only its name: resolved by Dagster, or by Resources.initialized()
            raise ConfigError(f"neo4j.password: environment variable {self.password} was not resolved")
        return {"host": self.host, "bolt_port": self.bolt_port, "arrow_port": self.arrow_port, "user": self.user,
                "password": self.password, "tls": self.tls, "tls_ca_file": self.tls_ca_file,
                "concurrency": self.concurrency, "loader": self.loader, "batch_size": self.batch_size,
                "online_timeout": self.online_timeout, "stall_timeout": self.stall_timeout,
                "arrow_string_properties": self.arrow_string_properties, "arrow_nulls": self.arrow_nulls}


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


def password_env_var(raw_password: object, source: str) -> str:
    """The variable named by `neo4j.password: ${VAR}`; a literal password would be shown in the UI, so refuse it."""
    match = _ENV_PATTERN.fullmatch(raw_password) if isinstance(raw_password, str) else None
    if not match:
        raise ConfigError(f"{source}: neo4j.password must name an environment variable, e.g. "
                          "password: ${NEO4J_PASSWORD} (a literal password would be shown in the Dagster UI)")
    return match.group(1)


def build_resources(settings: Settings, raw: dict | None = None, source: str = "config") -> Resources:
    """The resources for parsed `settings`; `raw` is the file before `${VAR}` expansion (for the password)."""
    orch = settings.orchestrator
    pipeline = PipelineResource(
        base_path=str(settings.dataset.base_path), settle_seconds=orch.settle_seconds,
        keep_databases=orch.keep_databases, max_retries=orch.max_retries,
        max_concurrent_loads=orch.max_concurrent_loads, max_runs_per_tick=orch.max_runs_per_tick,
        max_shrink_percent=orch.max_shrink_percent,
        max_shrink_percent_by_customer={name: c.max_shrink_percent for name, c in settings.customers.items()
                                        if c.max_shrink_percent is not None},
        smoke=settings.smoke.model_dump_json(exclude_unset=True),
        smoke_by_customer={name: settings.smoke_for(name).model_dump_json(exclude_unset=True)
                           for name, c in settings.customers.items() if c.smoke is not None})
    thresholds = {"max_databases": orch.max_databases, "heap_threshold_percent": orch.heap_threshold_percent,
                  "pagecache_threshold_percent": orch.pagecache_threshold_percent}
    target: TargetResource
    if settings.target == "neo4j":
        n = settings.neo4j
        env_var = password_env_var(((raw or {}).get("neo4j") or {}).get("password"), source)
        target = Neo4jResource(
            host=n.host, bolt_port=n.bolt_port, arrow_port=n.arrow_port, user=n.user, password=dg.EnvVar(env_var),
            tls=n.tls, tls_ca_file=str(n.tls_ca_file) if n.tls_ca_file else None, concurrency=n.concurrency,
            loader=n.loader, batch_size=n.batch_size, online_timeout=n.online_timeout,
            stall_timeout=n.stall_timeout, arrow_string_properties=n.arrow_string_properties,
            arrow_nulls=n.arrow_nulls, **thresholds)
    else:
        e = settings.embedded
        target = EmbeddedResource(path=str(e.path), min_free_disk_mb=e.min_free_disk_mb, **thresholds)
    return Resources(settings, pipeline, target)


def load_resources(path: str | Path | None = None) -> Resources:
    """Read config.yaml ($BLUEGREEN_CONFIG or ./config.yaml unless `path`) once and build the resources."""
    file = Path(path) if path is not None else config_path()
    settings = load_settings(file)
    raw = yaml.safe_load(file.read_text()) or {}
    return build_resources(settings, raw, source=str(file))
