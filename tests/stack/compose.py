"""One compose project of the stack tests: start it, run commands in its containers as an operator would, drop
snapshots the way a producer should (into a hidden folder, `_SUCCESS` last, renamed into place), tear it down."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.stack.docker import COMPOSE_FILES, Docker, compose_command

# The services the tests run: Grafana has no image here (tests/stack/docker-compose.override.yaml).
SERVICES = ["postgres", "neo4j", "bluegreen-code", "webserver", "daemon", "metrics", "prometheus"]
SNAPSHOTS = "/data/snapshots"  # the `snapshots` volume in the containers (deploy/config.yaml dataset.base_path)


class Stack:
    def __init__(self, docker: Docker, workdir: Path, files: list[Path] = COMPOSE_FILES,
                 services: list[str] = SERVICES) -> None:
        self.docker = docker
        self.workdir = workdir
        self.files = files
        self.services = services
        self.project = f"bgstack{os.getpid()}"
        license_file = workdir / "gds.license"  # the stand-in reads no licence; the mount needs a file
        license_file.write_text("")
        self.env = docker.env(DAGSTER_PG_PASSWORD=secrets.token_hex(12), NEO4J_PASSWORD=secrets.token_hex(12),
                              GRAFANA_ADMIN_PASSWORD=secrets.token_hex(12), GDS_LICENSE_FILE=str(license_file),
                              COMPOSE_HTTP_TIMEOUT="300", **socket_settings(docker))

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        files = [arg for f in self.files for arg in ("-f", str(f))]
        result = subprocess.run([*compose_command(), "-p", self.project, *files, *args], env=self.env,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"compose {' '.join(args[:2])} failed ({result.returncode}):\n"
                               f"{result.stdout.decode(errors='replace')[-2000:]}\n"
                               f"{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def up(self) -> None:
        self.remove_leftovers()
        self.compose("up", "-d", "--no-build", *self.services, timeout=900)

    def down(self) -> None:
        logs = self.compose("logs", "--no-color", "--tail", "200", check=False, timeout=120)
        (self.workdir / "compose.log").write_bytes(logs.stdout + logs.stderr)
        # Run containers (deploy/dagster-docker.yaml) are the daemon's, not compose's: remove them first.
        workers = self.run_containers(all=True)
        if workers:
            self.docker.run("rm", "-f", *workers, check=False, timeout=300)
        self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)

    def remove_leftovers(self) -> None:
        """Containers, networks and volumes a killed earlier test run left in the daemon's data root: its
        containers (`restart: unless-stopped`) come back with the daemon and hold the published ports."""
        listed = self.docker.run("ps", "-a", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}} '
                                 '{{.Label "bluegreen/run-worker"}}{{.Label "bluegreen/nemesis-reader"}}',
                                 timeout=60).stdout.decode().split("\n")
        stale = [line.split()[0] for line in listed if line.strip() and
                 (" bgstack" in line or line.rstrip().endswith("true"))]
        if stale:
            self.docker.run("rm", "-f", "-v", *stale, check=False, timeout=300)
        for network in ("bluegreen-instance", "bluegreen-target"):
            self.docker.run("network", "rm", network, check=False, timeout=60)
        self.docker.run("volume", "rm", "bluegreen-snapshots", check=False, timeout=60)
        self.docker.run("network", "prune", "-f", check=False, timeout=60)

    def run_containers(self, all: bool = False) -> list[str]:
        """Ids of the run containers DockerRunLauncher started (label from deploy/dagster-docker.yaml)."""
        out = self.docker.run("ps", "-q", *(["-a"] if all else []), "--filter", "label=bluegreen/run-worker",
                              timeout=60).stdout.decode()
        return out.split()

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.decode().strip()

    def exec(self, service: str, *command: str, user: str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", *(["-u", user] if user else []), service, *command, check=check,
                            timeout=timeout)

    def python(self, service: str, code: str, timeout: float = 60) -> str:
        """Run Python in a container (e.g. an HTTP request to another container by its service name)."""
        return self.exec(service, "python3", "-c", code, timeout=timeout).stdout.decode()

    def drop_snapshot(self, customer: str, timestamp: int, people: int) -> dict[str, int]:
        """Write a numeric-only snapshot (GDS Arrow takes numeric properties) and move it into the volume."""
        local = self.workdir / f"{customer}-{timestamp}"
        counts = write_snapshot(local, people, seed=timestamp)
        code = self.container("bluegreen-code")
        self.docker.run("cp", str(local), f"{code}:/tmp/{customer}-{timestamp}")
        hidden = f"{SNAPSHOTS}/{customer}/.{timestamp}.tmp"
        self.exec("bluegreen-code", "sh", "-c",
                  f"mkdir -p {SNAPSHOTS}/{customer} && mv /tmp/{customer}-{timestamp} {hidden} && "
                  f"chown -R 10001 {SNAPSHOTS}/{customer} && mv {hidden} {SNAPSHOTS}/{customer}/{timestamp}",
                  user="0")
        return counts

    def status(self) -> dict:
        out = self.exec("bluegreen-code", "bluegreen", "status", "--json").stdout.decode()
        return json.loads(out)

    def alias_target(self, customer: str) -> str | None:
        for row in self.status()["customers"]:
            if row["customer"] == customer:
                return row["target_database"]
        return None

    def wait_for_alias(self, customer: str, database: str, timeout: float) -> float:
        started = time.monotonic()
        seen = None
        while time.monotonic() - started < timeout:
            seen = self.alias_target(customer)
            if seen == database:
                return time.monotonic() - started
            time.sleep(2)
        raise AssertionError(f"{customer} still serves {seen!r} after {timeout:.0f}s, not {database}")

    def graphql(self, query: str, service: str = "daemon") -> dict:
        """The webserver's GraphQL API, asked from inside the stack (the daemon's container) by service name."""
        code = ("import json, sys, urllib.request\n"
                "req = urllib.request.Request('http://webserver:3000/graphql', data=json.dumps({'query': sys.argv[1]})"
                ".encode(), headers={'Content-Type': 'application/json'})\n"
                "print(urllib.request.urlopen(req, timeout=30).read().decode())")
        for attempt in range(5):  # the webserver's first queries after a PostgreSQL restart may answer 500
            result = self.exec(service, "python3", "-c", code, query, check=attempt == 4)
            if result.returncode == 0:
                return json.loads(result.stdout.decode())
            time.sleep(3)

    def prometheus(self, path: str, **params: str) -> dict:
        """Prometheus' HTTP API as an operator asks it: on the host's loopback, where deploy/docker-compose.yaml
        publishes it (127.0.0.1:9090)."""
        url = f"http://127.0.0.1:9090{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.load(response)


def socket_settings(docker: Docker) -> dict[str, str]:
    """DOCKER_SOCKET and DOCKER_SOCKET_GID for deploy/docker-compose.docker-runs.yaml: the daemon's socket on
    this host, mounted into the containers that launch and watch run containers."""
    if not docker.host.startswith("unix://"):
        return {}
    path = docker.host.removeprefix("unix://")
    return {"DOCKER_SOCKET": path, "DOCKER_SOCKET_GID": str(os.stat(path).st_gid)}


def write_snapshot(folder: Path, people: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir()
    ids = np.arange(1, people + 1, dtype=np.int64)
    pq.write_table(pa.table({"nodeId": ids, "labels": pa.array(["Person"] * people),
                             "age": rng.integers(18, 90, people, dtype=np.int64)}), folder / "nodes" / "part-0.parquet")
    knows = people * 2
    pq.write_table(pa.table({"sourceNodeId": rng.integers(1, people + 1, knows, dtype=np.int64),
                             "targetNodeId": rng.integers(1, people + 1, knows, dtype=np.int64),
                             "relationshipType": pa.array(["KNOWS"] * knows),
                             "weight": rng.random(knows)}), folder / "relationships" / "part-0.parquet")
    (folder / "_SUCCESS").write_text("")
    return {"nodes": people, "relationships": knows}
