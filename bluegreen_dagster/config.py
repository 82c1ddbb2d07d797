"""The one home of configuration: `config.yaml`, validated with pydantic.

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
from urllib.parse import urlsplit

import yaml
from bluegreen_dagster.names import IDENTIFIER_RE, validate_customer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

CONFIG_ENV_VAR = "BLUEGREEN_CONFIG"
DEFAULT_CONFIG_PATH = "config.yaml"
# neo4j.uri schemes: direct (bolt) or routed (neo4j), plain or TLS with the system store / neo4j.tls_ca_file.
URI_SCHEMES = ("bolt", "bolt+s", "neo4j", "neo4j+s")

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key and what to fix."""


class _Section(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TopologySettings(_Section):
    """`CREATE DATABASE ... TOPOLOGY p PRIMARIES s SECONDARIES` on a Neo4j cluster (neo4j.topology, or per customer
    customers.<name>.topology). Neo4j 5 allows 1-11 primaries and 0-20 secondaries per database."""

    primaries: int = Field(1, ge=1, le=11)
    secondaries: int = Field(0, ge=0, le=20)


class Neo4jSettings(_Section):
    host: str = "localhost"
    bolt_port: int = Field(7687, ge=1, le=65535)
    arrow_port: int = Field(8491, ge=1, le=65535)
    user: str = "neo4j"
    password: SecretStr = SecretStr("")
    tls: bool = False
    # PEM file with the CA that signed the server's certificate; the system store is used when unset.
    tls_ca_file: Path | None = None
    concurrency: int = Field(4, ge=1, le=256)
    # `arrow` needs GDS Enterprise with the Arrow Flight server; `cypher` works on any Neo4j Enterprise.
    loader: Literal["arrow", "cypher"] = "arrow"
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    # Seconds to wait for a new database to come online after the load.
    online_timeout: float = Field(300, gt=0)
    # GDS Arrow: a stream with no acknowledged batch for this many seconds counts as stalled (the load is aborted
    # and retried). Streams and LOAD_DONE finalisation themselves have no deadline, however long they run.
    stall_timeout: float = Field(300, gt=0)
    # GDS Arrow: send string node properties (GDS does not document them for database import; unverified).
    arrow_string_properties: bool = False
    # GDS Arrow: nulls in properties are refused (the Cypher loader stores no property, GDS would store NaN);
    # `nan` sends null floats as NaN instead.
    arrow_nulls: Literal["refuse", "nan"] = "refuse"
    # Readers (targets/neo4j/access.py, docs/neo4j-readers.md). Before the alias moves, the new database gets the
    # read privileges every role has on the current target, plus ACCESS and MATCH for these roles (per customer
    # too: customers.<name>.reader_roles); off only when grants are made on `*` or by the operator's own tooling.
    reader_access_follows_alias: bool = True
    reader_roles: list[str] = []
    # Users whose read of the new database is proven (a count through `impersonated_user`, which needs IMPERSONATE
    # for neo4j.user) before the alias moves; a user who cannot read blocks the switch. Per customer too.
    reader_users: list[str] = []
    # Ready before live (targets/neo4j/readiness.py): after the load, before verification, an index on the node key
    # of every label plus these (label -> property names), waited for until ONLINE within index_timeout seconds;
    # then the database is marked read-only (ALTER DATABASE ... SET ACCESS READ ONLY) unless read_only is false.
    indexes: dict[str, list[str]] = {}
    index_timeout: float = Field(600, gt=0)
    read_only: bool = True
    # A GDS Arrow import builds the store on the one server GDS runs on; on a cluster (SHOW SERVERS lists more than
    # one) the Arrow loader is refused unless this says the operator knows what GDS does there.
    arrow_on_cluster: bool = False
    # One Bolt URI instead of host/bolt_port/tls: bolt:// and bolt+s:// reach one server; neo4j:// and neo4j+s://
    # route (a cluster: admin work to the system database's writer, verification reads to a reader). It sets host,
    # bolt_port and tls; setting one of those as well, to another value, is an error.
    uri: str = ""
    # The topology of every new database (CREATE DATABASE ... TOPOLOGY); unset: the cluster's default allocation.
    # Per customer: customers.<name>.topology.
    topology: TopologySettings | None = None
    # GDS Arrow (targets/neo4j/arrow_mount.py): seconds GDS may take, after RELATIONSHIP_LOAD_DONE replied, to
    # register and start the database it wrote, plus 1 s per 20 MB of snapshot (the store may still be written).
    # Within that wait (bounded by online_timeout) no CREATE DATABASE is ever sent for it.
    arrow_mount_wait: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _uri_sets_host_port_tls(self) -> Neo4jSettings:
        if not self.uri:
            return self
        parsed = urlsplit(self.uri)
        if parsed.scheme not in URI_SCHEMES or not parsed.hostname or parsed.path not in ("", "/") or parsed.query:
            raise ValueError(f"neo4j.uri {self.uri!r} is not a Bolt URI: write scheme://host[:port] with scheme "
                             f"{', '.join(URI_SCHEMES)}")
        try:
            port = parsed.port or 7687
        except ValueError:
            raise ValueError(f"neo4j.uri {self.uri!r} has an invalid port") from None
        found = {"host": parsed.hostname, "bolt_port": port, "tls": parsed.scheme.endswith("+s")}
        clash = [k for k, v in found.items() if k in self.model_fields_set and getattr(self, k) != v]
        if clash:
            raise ValueError(f"neo4j.uri {self.uri!r} disagrees with neo4j.{', neo4j.'.join(clash)}: set one of them")
        for key, value in found.items():
            object.__setattr__(self, key, value)
        return self

    @property
    def routing(self) -> bool:
        """True for neo4j:// and neo4j+s:// (routed, e.g. a cluster), False for a direct bolt:// connection."""
        return self.uri.startswith("neo4j")

    @field_validator("indexes")
    @classmethod
    def _index_names(cls, indexes: dict[str, list[str]]) -> dict[str, list[str]]:
        for label, properties in indexes.items():
            for name in (label, *properties):
                if not IDENTIFIER_RE.match(name):
                    raise ValueError(f"{name!r} is not a label or property name: use letters, digits and '_', "
                                     "starting with a letter")
        return indexes


class DatasetSettings(_Section):
    base_path: Path = Path("data")


class OrchestratorSettings(_Section):
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


# Pre-switch smoke queries (smoke.py): read-only Cypher on a new database after verification, before the switch.
_SMOKE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SmokeQuery(_Section):
    """One smoke query and exactly one expectation: `min_rows`, `equals` (with `column`) or `within_seconds`."""

    name: str
    query: str = Field(min_length=1)
    min_rows: int | None = Field(None, ge=0)        # the query returns at least this many rows
    column: str | None = None                       # with `equals`: this column of the first row ...
    equals: bool | int | float | str | None = None  # ... holds this value
    within_seconds: float | None = Field(None, gt=0, le=3600)  # the query runs to its end within this time
    # The time limit of a `min_rows` / `equals` query (`within_seconds` is its own limit).
    timeout_seconds: float = Field(60, gt=0, le=3600)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not _SMOKE_NAME_RE.match(name):
            raise ValueError("a smoke query name is 1-64 letters, digits, '_', '.' or '-', e.g. people-exist")
        return name

    @model_validator(mode="after")
    def _one_expectation(self) -> SmokeQuery:
        given = [key for key in ("min_rows", "equals", "within_seconds") if key in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"smoke query {self.name!r} needs exactly one expectation: min_rows: N, equals: X "
                             f"(with column: NAME) or within_seconds: T (it has {', '.join(given) or 'none'})")
        if ("column" in self.model_fields_set) != ("equals" in given):
            raise ValueError(f"smoke query {self.name!r}: column and equals go together (the value of that column "
                             "in the first row)")
        if "within_seconds" in given and "timeout_seconds" in self.model_fields_set:
            raise ValueError(f"smoke query {self.name!r}: within_seconds is its own time limit; drop timeout_seconds")
        return self

    @property
    def limit_seconds(self) -> float:
        return self.within_seconds if self.within_seconds is not None else self.timeout_seconds


class WarmupQuery(_Section):
    """A read-only query run on the new database before the smoke queries and the switch (e.g. to fill caches)."""

    query: str = Field(min_length=1)
    timeout_seconds: float = Field(600, gt=0, le=86_400)


class SmokeSettings(_Section):
    """`smoke:` (all customers) or `customers.<name>.smoke:` (merged over it, see `merged`)."""

    warmup: WarmupQuery | None = None
    queries: list[SmokeQuery] = []

    @field_validator("queries")
    @classmethod
    def _unique_names(cls, queries: list[SmokeQuery]) -> list[SmokeQuery]:
        seen: set[str] = set()
        for q in queries:
            if q.name in seen:
                raise ValueError(f"two smoke queries are named {q.name!r}: names must be unique")
            seen.add(q.name)
        return queries

    def merged(self, override: SmokeSettings | None) -> SmokeSettings:
        """This (global) plan with a customer's on top: a customer query replaces the global one of the same name,
        others are added; the customer's `warmup` (even `warmup: null`) replaces the global one."""
        if override is None:
            return self
        names = {q.name for q in override.queries}
        queries = [q for q in self.queries if q.name not in names] + list(override.queries)
        warmup = override.warmup if "warmup" in override.model_fields_set else self.warmup
        return SmokeSettings(warmup=warmup, queries=queries)


class CustomerSettings(_Section):
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


class EmbeddedSettings(_Section):
    path: Path = Path(".bluegreen/embedded")
    # The health check refuses a load when less than this much disk is free (or 4x the snapshot's Parquet size).
    min_free_disk_mb: int = Field(512, ge=0)


# Failure alerts (bluegreen_dagster/alerts/). Every channel is off until its address is set; secrets (webhook URLs,
# tokens, the SMTP password, the Sentry DSN) are SecretStr so they never print, and come from ${VAR} in config.yaml.
class SlackAlertSettings(_Section):
    webhook_url: SecretStr = SecretStr("")      # incoming webhook
    bot_token: SecretStr = SecretStr("")        # xoxb-... bot token, used with `channel` (chat.postMessage)
    channel: str = Field("", validate_default=True)
    api_url: str = "https://slack.com/api/"     # Slack Web API base; changed only for a proxy (or a test)

    @field_validator("channel")
    @classmethod
    def _token_needs_channel(cls, channel: str, info: ValidationInfo) -> str:
        # A field validator, not a model one: its error shows only this field's value, never the token.
        token = info.data.get("bot_token")
        if token is not None and token.get_secret_value() and not channel:
            raise ValueError("a Slack bot_token needs a channel to post to, e.g. channel: \"#data-alerts\"")
        return channel


class EmailAlertSettings(_Section):
    host: str = ""                              # SMTP server; e-mail is off while empty
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: Path | None = None                 # PEM with the CA of a private SMTP server; system store otherwise
    user: str = ""
    password: SecretStr = SecretStr("")
    sender: str = "bluegreen@localhost"
    to: list[str] = Field([], validate_default=True)

    @field_validator("to")
    @classmethod
    def _host_needs_recipients(cls, to: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("host") and not to:
            raise ValueError("e-mail alerts need at least one recipient, e.g. to: [oncall@example.com]")
        return to


class WebhookAlertSettings(_Section):
    url: SecretStr = SecretStr("")              # receives a JSON object per alert (see README, "Alerts")
    headers: dict[str, SecretStr] = {}          # e.g. Authorization: Bearer ${ALERT_WEBHOOK_TOKEN}


class SentryAlertSettings(_Section):
    dsn: SecretStr = SecretStr("")
    environment: str = "production"


class AlertSettings(_Section):
    # Base of the links in alerts: <url>/runs/<run_id>.
    dagster_webserver_url: str = "http://127.0.0.1:3000"
    attempts: int = Field(3, ge=1, le=10)        # per channel, with backoff; a channel that stays down is skipped
    timeout_seconds: float = Field(5, gt=0, le=60)
    slack: SlackAlertSettings = SlackAlertSettings()
    email: EmailAlertSettings = EmailAlertSettings()
    webhook: WebhookAlertSettings = WebhookAlertSettings()
    sentry: SentryAlertSettings = SentryAlertSettings()


class Settings(_Section):
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
