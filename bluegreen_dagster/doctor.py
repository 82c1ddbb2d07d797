"""`bluegreen doctor`: what an operator runs first when something looks wrong. One line per check, PASS / FAIL /
SKIP, each failure saying what to fix; exit 1 if anything failed.

Checks, in the order a deployment depends on them: config valid -> data dir readable -> target reachable and
healthy -> (Neo4j, arrow loader) Arrow port open and protocol v1 offered -> DAGSTER_HOME and its storage usable ->
daemon heartbeat fresh -> webserver answering -> sensor `snapshot_sensor` running. A check whose prerequisite
failed, or that does not apply (Arrow on the embedded target), is SKIP with the reason.

The webserver's address is `alerts.dagster_webserver_url` of config.yaml (the one home of the UI's address; the
alerts' run links use it too), or `--webserver-url`.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from bluegreen_dagster.config import ConfigError, config_path, dagster_home
from bluegreen_dagster.records import SNAPSHOT_SENSOR as SENSOR
from bluegreen_dagster.records import sensor_record
from bluegreen_dagster.secrets import scrub

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
# The daemon writes a heartbeat every 30 s (Dagster's default); older than this and it is not running.
HEARTBEAT_MAX_AGE = 90.0


@dataclass
class Line:
    status: str
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status}  {self.check:<10} {self.detail}"


class Skip(Exception):
    """The check does not apply, or its prerequisite failed; the message says which."""


class Failed(Exception):
    """The check failed; the message says what is wrong and what to fix."""


@dataclass
class Options:
    webserver_url: str | None = None
    heartbeat_max_age: float = HEARTBEAT_MAX_AGE
    timeout: float = 5.0


class Doctor:
    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.resources = None  # set by the config check
        self.instance = None  # set by the DAGSTER_HOME check

    def run(self) -> list[Line]:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("config", self.config), ("data dir", self.data_dir), ("target", self.target), ("arrow", self.arrow),
            ("dagster", self.dagster_home), ("daemon", self.daemon), ("webserver", self.webserver),
            ("sensor", self.sensor)]
        lines = []
        try:
            for name, check in checks:
                try:
                    lines.append(Line(PASS, name, check()))
                except Skip as exc:
                    lines.append(Line(SKIP, name, str(exc)))
                except Failed as exc:
                    lines.append(Line(FAIL, name, self._scrub(str(exc))))
                except Exception as exc:  # an unexpected error is a failed check, not a crashed doctor
                    lines.append(Line(FAIL, name, self._scrub(f"{type(exc).__name__}: {exc}")))
        finally:
            if self.instance is not None:
                self.instance.dispose()
            # The initialized resources hold an ephemeral Dagster instance; let it go while sqlite is still loaded
            # (collected at interpreter exit it prints "Cannot operate on a closed database" tracebacks).
            self.resources = self.instance = None
            gc.collect()
        return lines

    def _scrub(self, text: str) -> str:
        settings = self.resources.settings if self.resources else None
        return scrub(text, settings.neo4j.password) if settings else text

    def _needs_config(self):
        if self.resources is None:
            raise Skip("needs a valid config (see the config line)")
        return self.resources

    # -- the pipeline ---------------------------------------------------------------------------------------

    def config(self) -> str:
        from bluegreen_dagster.resources import load_resources

        path = config_path()
        try:
            resources = load_resources(path)
            live = resources.initialized()
        except ConfigError as exc:
            raise Failed(f"{exc} (fix the file, or point BLUEGREEN_CONFIG at the right one)") from None
        self.resources = live
        return f"{path.resolve()} valid (target {live.target.kind})"

    def data_dir(self) -> str:
        from bluegreen_dagster.snapshots import scan

        settings = self._needs_config().settings
        base = settings.dataset.base_path
        if not base.is_dir():
            raise Failed(f"dataset.base_path {base} is not a folder: create it or fix dataset.base_path")
        if not os.access(base, os.R_OK | os.X_OK):
            raise Failed(f"dataset.base_path {base} is not readable by this user (uid {os.getuid()}): "
                         "fix its permissions")
        try:
            found = scan(base, settings.orchestrator.settle_seconds)
        except OSError as exc:
            raise Failed(f"dataset.base_path {base} cannot be read: {exc}") from None
        invalid = f", {len(found.invalid)} invalid (see `bluegreen check`)" if found.invalid else ""
        return (f"{base} readable: {len(found.complete)} complete snapshots, {len(found.waiting)} waiting"
                f"{invalid}")

    def target(self) -> str:
        from bluegreen_dagster.targets import TargetError

        resources = self._needs_config()
        try:
            with resources.target.open() as graph:
                health = graph.health()
        except (TargetError, ConfigError) as exc:
            raise Failed(f"{resources.target.kind} target unreachable: {exc}") from None
        facts = ", ".join(f"{k}={v}" for k, v in health.measurements.items())
        if health.problems:
            raise Failed(f"{resources.target.kind} target unhealthy: {'; '.join(health.problems)} ({facts})")
        return f"{resources.target.kind} target healthy ({facts})"

    def arrow(self) -> str:
        from bluegreen_dagster.targets import TargetError
        from bluegreen_dagster.targets.neo4j.arrow import CREATE_DATABASE
        from bluegreen_dagster.targets.neo4j.flight_client import FlightConnection

        settings = self._needs_config().settings
        if settings.target != "neo4j":
            raise Skip("the embedded target has no Arrow server")
        if settings.neo4j.loader != "arrow":
            raise Skip("neo4j.loader is cypher: loads go over Bolt")
        n = settings.neo4j
        try:
            socket.create_connection((n.host, n.arrow_port), timeout=self.options.timeout).close()
        except OSError as exc:
            raise Failed(f"GDS Arrow port {n.host}:{n.arrow_port} is not open ({exc.strerror or exc}): set "
                         "gds.arrow.enabled=true and gds.arrow.listen_address on the server, or fix neo4j.arrow_port "
                         "(or use neo4j.loader: cypher)") from None
        conn = FlightConnection(n, short_timeout=self.options.timeout)
        try:
            actions = conn.list_action_types()
        except TargetError as exc:
            raise Failed(str(exc)) from None
        finally:
            conn.close()
        if CREATE_DATABASE not in actions:
            raise Failed(f"GDS Arrow server at {n.host}:{n.arrow_port} offers no {CREATE_DATABASE} (actions: "
                         f"{', '.join(sorted(actions)) or 'none'}): it needs a GDS Enterprise licence and GDS >= 2.6")
        versions = sorted({a.split("/", 1)[0] for a in actions if "/" in a})
        return f"GDS Arrow at {n.host}:{n.arrow_port} offers protocol v1 (versions: {', '.join(versions)})"

    # -- Dagster ---------------------------------------------------------------------------------------------

    def dagster_home(self) -> str:
        import dagster as dg

        path = dagster_home()  # what the other commands use
        if not os.environ.get("DAGSTER_HOME") and not path.is_dir():
            raise Failed("DAGSTER_HOME is not set: export DAGSTER_HOME=<the folder holding the dagster.yaml that "
                         "the webserver and the daemon use>")
        if not (path / "dagster.yaml").is_file():
            raise Failed(f"no dagster.yaml in DAGSTER_HOME={path}: copy bluegreen_dagster/dagster_instance.yaml "
                         "there (or deploy/dagster.yaml in production)")
        try:
            self.instance = dg.DagsterInstance.from_config(str(path))
            runs = self.instance.get_runs_count()
        except Exception as exc:
            self.instance = None
            raise Failed(f"the instance in DAGSTER_HOME={path} cannot be read: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''} (check its storage: the database server, "
                         "DAGSTER_PG_* variables, `dagster instance migrate`)") from None
        return f"DAGSTER_HOME={path}: storage readable ({runs} runs)"

    def _needs_instance(self):
        if self.instance is None:
            raise Skip("needs a usable DAGSTER_HOME (see the dagster line)")
        return self.instance

    def daemon(self) -> str:
        instance = self._needs_instance()
        heartbeats = instance.get_daemon_heartbeats()
        now = time.time()
        stale = []
        for daemon_type in instance.get_required_daemon_types():
            beat = heartbeats.get(daemon_type)
            if beat is None:
                stale.append(f"{daemon_type} (never)")
            elif now - beat.timestamp > self.options.heartbeat_max_age:
                stale.append(f"{daemon_type} ({now - beat.timestamp:.0f} s ago)")
        if stale:
            raise Failed(f"no fresh daemon heartbeat from {', '.join(stale)}: start exactly one "
                         "`dagster-daemon run -w workspace.yaml` with this DAGSTER_HOME (it runs the sensor, the "
                         "run queue and run monitoring)")
        newest = max(now - b.timestamp for b in heartbeats.values())
        return f"daemon heartbeats fresh (oldest {newest:.0f} s ago)"

    def webserver(self) -> str:
        url = self.options.webserver_url or (self.resources.settings.alerts.dagster_webserver_url
                                             if self.resources else None)
        if not url:
            raise Skip("needs a valid config or --webserver-url")
        info = url.rstrip("/") + "/server_info"
        try:
            with urllib.request.urlopen(info, timeout=self.options.timeout) as response:
                body = response.read(2000).decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Failed(f"webserver at {url} does not answer ({reason}): start `dagster-webserver -w workspace.yaml` "
                         "with this DAGSTER_HOME, or set alerts.dagster_webserver_url to its address") from None
        if "dagster_webserver_version" not in body:
            raise Failed(f"{info} answered, but not as a Dagster webserver: check alerts.dagster_webserver_url")
        return f"webserver at {url} answers"

    def sensor(self) -> str:
        record = sensor_record(self._needs_instance(), SENSOR)
        if record is None:
            raise Failed(f"{SENSOR} has never ticked on this instance: start the daemon with -w workspace.yaml "
                         "(location name bluegreen)")
        if not record.running:
            raise Failed(f"{SENSOR} is stopped: start it in the UI (Automation -> {SENSOR} -> toggle on) or "
                         f"`dagster sensor start {SENSOR} -w workspace.yaml`")
        if record.last_tick is None:
            raise Failed(f"{SENSOR} is running but has no tick yet: is the daemon running (see the daemon line)?")
        age = time.time() - record.last_tick
        if record.last_tick_error is not None:
            raise Failed(f"{SENSOR}'s last tick ({age:.0f} s ago) failed: {record.last_tick_error} (its tick log in "
                         "the UI has the whole error)")
        return f"{SENSOR} running, last tick {age:.0f} s ago ({record.last_tick_status})"


def run_doctor(options: Options | None = None, out: Callable[[str], None] = print) -> int:
    lines = Doctor(options).run()
    for line in lines:
        out(str(line))
    failed = [line for line in lines if line.status == FAIL]
    out(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0
