"""The one home of configuration: `config.yaml` read and validated with pydantic into `Settings`, whose fields are
the sections. The small sections are here; those with a concept of their own have their model beside this file:
`neo4j:` in config_neo4j.py, `smoke:` in config_smoke.py, `alerts:` in config_alerts.py.

Every entry point (CLI, Dagster definitions, the daemon) calls `load_settings()`, which reads the file named by
`BLUEGREEN_CONFIG` (default `./config.yaml`). `${VAR}` and `${VAR:-default}` expand from the environment; a
missing variable or a wrong value fails at load with the key's dotted name. Relative paths are resolved against
the config file's folder, so the daemon, the webserver and the CLI agree whatever their working directory.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from bluegreen_dagster.config_alerts import AlertSettings
from bluegreen_dagster.config_neo4j import Neo4jSettings, TopologySettings
from bluegreen_dagster.config_section import Section
from bluegreen_dagster.config_smoke import SmokeSettings
from bluegreen_dagster.names import validate_customer

CONFIG_ENV_VAR = "BLUEGREEN_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and what to fix."""


class DatasetSettings(Section):
    base_path: Path = Path("data")


class OrchestratorSettings(Section):
    # The limit of the Dagster pool `bluegreen_loads` (the load step), enforced by the instance across hosts.
    max_concurrent_loads: int = Field(1, ge=1, le=64)
    scan_interval: int = Field(10, ge=1, le=86_400)
    max_databases: int = Field(50, ge=1)
    heap_threshold_percent: float = Field(85, gt=0, le=100)
    pagecache_threshold_percent: float = Field(90, gt=0, le=100)
    max_retries: int = Field(3, ge=0, le=100)
    retry_backoff_base: float = Field(2, gt=0, le=3600)
    keep_databases: int = Field(2, ge=1)
    # A snapshot without an _SUCCESS marker counts as complete once no file in it changed for this long.
    settle_seconds: float = Field(30, ge=0)
    # While a load runs, its load slot's lock is proven this often; a run worker that lost it (cut off from the
    # Dagster instance's PostgreSQL) ends its own process so its run fails and frees its slot. 0: never checked.
    lost_lock_check_seconds: float = Field(10, ge=0)
    # Bounds the work of one sensor tick; the rest is picked up by the next ticks.
    max_runs_per_tick: int = Field(20, ge=1, le=500)
    # The plausibility gate (plausibility.py): refuse a switch that shrinks nodes or relationships by more than
    # this against the live database (an empty graph is always refused). Per customer: customers.<name>.
    max_shrink_percent: float = Field(50, ge=0, le=100)
    # The reconcile schedule (reconcile.py, relaunch.py) and the health-audit schedule (health_audit.py): cron
    # strings, evaluated in UTC; each schedule can be stopped and started in the UI (Automation).
    reconcile_cron: str = "0 * * * *"
    health_audit_cron: str = "*/15 * * * *"
    # How many times the reconcile schedule relaunches one snapshot whose runs failed for a transient cause.
    max_relaunch_attempts: int = Field(3, ge=0, le=100)
    # Freshness (freshness.py): a customer whose live graph has served longer than this fails the check
    # `live_graph_fresh` and is alerted. Seconds, or an ISO 8601 duration ("PT26H"); unset: not checked.
    # Per customer: customers.<name>.max_age.
    max_age: timedelta | None = Field(None, gt=timedelta(0))
    # A load reports its rows loaded (of the snapshot's total) in the run's log at most this often (progress.py).
    progress_seconds: float = Field(2, gt=0, le=3600)
    # A database the alias left is kept at least this long after that switch (drain.py, bluegreen.cleanup), whatever
    # keep_databases says: readers' transactions that began on it finish there.
    drain_seconds: float = Field(300, ge=0)
    # Run retention (retention.py): the `run_retention` schedule (cron, UTC) deletes finished runs, with their
    # event logs, last updated more than run_retention_days ago, run_retention_batch at a time; never a run in
    # flight, a run of a snapshot partition that still exists, or the runs that recorded a customer's live database.
    run_retention_days: float = Field(30, gt=0)
    run_retention_cron: str = "30 * * * *"
    run_retention_batch: int = Field(500, ge=1, le=10_000)

    @field_validator("reconcile_cron", "health_audit_cron", "run_retention_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        import dagster as dg

        try:  # the check Dagster applies when it defines a schedule
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"{value!r} is not a cron string Dagster accepts; e.g. \"0 * * * *\" (hourly)") from None
        return value


class CustomerSettings(Section):
    """Per-customer settings: overrides of `orchestrator:` values (`customers: {acme-corp: {max_shrink_percent: 90}}`)
    and smoke queries on top of the global `smoke:`."""

    max_shrink_percent: float | None = Field(None, ge=0, le=100)
    max_age: timedelta | None = Field(None, gt=timedelta(0))
    smoke: SmokeSettings | None = None
    # Neo4j readers of this customer, on top of neo4j.reader_roles / neo4j.reader_users.
    reader_roles: list[str] = []
    reader_users: list[str] = []
    # neo4j.topology for this customer's databases.
    topology: TopologySettings | None = None


class EmbeddedSettings(Section):
    path: Path = Path(".bluegreen/embedded")
    # The health check refuses a load when less than this much disk is free (or 4x the snapshot's Parquet size).
    min_free_disk_mb: int = Field(512, ge=0)


class Settings(Section):
    target: Literal["embedded", "neo4j"] = "embedded"
    # dotted key -> the variable a whole value came from (`password: ${NEO4J_PASSWORD}`), set by parse_settings:
    # a secret is handed to Dagster as that variable (dg.EnvVar), never as its value.
    _env_names: dict[str, str] = PrivateAttr(default_factory=dict)
    neo4j: Neo4jSettings = Neo4jSettings()
    dataset: DatasetSettings = DatasetSettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    customers: dict[str, CustomerSettings] = {}
    alerts: AlertSettings = AlertSettings()
    smoke: SmokeSettings = SmokeSettings()

    @field_validator("customers")
    @classmethod
    def _customer_names(cls, customers: dict[str, CustomerSettings]) -> dict[str, CustomerSettings]:
        for name in customers:
            validate_customer(name)  # InvalidName is a ValueError: reported under the `customers` key
        return customers

    def smoke_for(self, customer: str) -> SmokeSettings:
        """The smoke plan of one customer: `smoke:` with `customers.<name>.smoke:` merged over it."""
        own = self.customers.get(customer)
        return self.smoke.merged(own.smoke if own else None)

    def topology_for(self, customer: str) -> TopologySettings | None:
        """The topology of a customer's new databases: customers.<name>.topology, else neo4j.topology."""
        own = self.customers.get(customer)
        return own.topology if own and own.topology else self.neo4j.topology

    @model_validator(mode="after")
    def _neo4j_needs_password(self) -> Settings:
        if self.target == "neo4j" and not self.neo4j.password.get_secret_value():
            raise ValueError("neo4j.password is empty: set it, e.g. password: ${NEO4J_PASSWORD} and export NEO4J_PASSWORD")
        return self

    def env_name(self, key: str) -> str | None:
        """The environment variable `key` (e.g. "neo4j.password") was written as in config.yaml, if any."""
        return self._env_names.get(key)

    def resolve_paths(self, root: Path) -> Settings:
        """Make relative paths absolute against `root` (the config file's folder)."""

        def absolute(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (root / p).resolve()

        self.dataset.base_path = absolute(self.dataset.base_path)
        self.embedded.path = absolute(self.embedded.path)
        self.neo4j.tls_ca_file = absolute(self.neo4j.tls_ca_file)
        self.alerts.email.ca_file = absolute(self.alerts.email.ca_file)
        return self


def _expand_env(node: Any, key: str, env: dict[str, str], names: dict[str, str] | None = None) -> Any:
    """`node` with every `${VAR}` expanded; `names` collects the variable of each value that is one `${VAR}`."""
    names = {} if names is None else names
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else str(k), env, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{key}[{i}]", env, names) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    whole = _ENV_PATTERN.fullmatch(node)
    if whole:
        names[key] = whole.group(1)

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{key}: environment variable {name} is not set (export it, or write ${{{name}:-default}})")

    return _ENV_PATTERN.sub(substitute, node)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH))


def dagster_home() -> Path:
    """The Dagster instance's folder every command uses: $DAGSTER_HOME, else `.dagster_home` beside the config
    file (where `bluegreen demo` creates it). Only named here: the CLI creates it, metrics and doctor check it."""
    return Path(os.environ.get("DAGSTER_HOME") or config_path().resolve().parent / ".dagster_home").resolve()


def _shown_input(err: Any) -> str:
    """The offending value, for the error message, unless it may hold a secret: a whole section (the top-level
    validator's input is the entire expanded file, webhook URLs and tokens included) or a SecretStr field."""
    value = err.get("input")
    if err["type"] in ("missing", "extra_forbidden") or isinstance(value, (dict, list)) or _holds_secret(err["loc"]):
        return ""
    return f" (got {value!r})"


def _holds_secret(loc: tuple[Any, ...]) -> bool:
    model: type[BaseModel] = Settings
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return False
        if "SecretStr" in str(field.annotation):
            return True
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    return False


def parse_settings(raw: dict[str, Any] | None, *, root: Path, env: dict[str, str] | None = None, source: str = "config") -> Settings:
    """Validate an already-parsed YAML mapping (after `${VAR}` expansion)."""
    names: dict[str, str] = {}
    expanded = _expand_env(raw or {}, "", dict(os.environ) if env is None else env, names)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {msg}{_shown_input(err)}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
    settings._env_names = names
    return settings.resolve_paths(root)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, expand and validate the config file (default: $BLUEGREEN_CONFIG or ./config.yaml)."""
    file = Path(path) if path is not None else config_path()
    if not file.is_file():
        raise ConfigError(f"config file {file} not found: create it or set {CONFIG_ENV_VAR} to its path")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections (neo4j:, dataset:, orchestrator:, ...)")
    return parse_settings(raw, root=file.resolve().parent, source=str(file))
