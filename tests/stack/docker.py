"""Docker for the stack tests: a daemon started for the test run (stopped by pid) or one already running, and the
`docker` / `docker-compose` commands pointed at it. Containers are this run's own test hosts on bridges the run
creates; the tests send traffic only to them and to loopback."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [REPO / "deploy" / "docker-compose.yaml", Path(__file__).with_name("docker-compose.override.yaml")]
# The multi-host stack: every run in a container of its own (deploy/docker-compose.docker-runs.yaml).
DOCKER_RUNS_COMPOSE_FILES = [COMPOSE_FILES[0], REPO / "deploy" / "docker-compose.docker-runs.yaml", COMPOSE_FILES[1]]


class DockerUnavailable(Exception):
    """Why Docker cannot be used on this machine (the tests skip with it, or fail when CI requires Docker)."""


@functools.cache
def docker_cli() -> str:
    """The docker command that came with dockerd (Debian's docker.io): it builds with BuildKit by itself, where a
    newer CLI elsewhere on PATH wants the buildx plugin, which Debian bookworm does not package."""
    listed = subprocess.run(["dpkg-query", "-L", "docker.io"], capture_output=True, text=True) \
        if shutil.which("dpkg-query") else None
    packaged = [line for line in (listed.stdout.splitlines() if listed and listed.returncode == 0 else [])
                if line.endswith("/bin/docker")]
    found = packaged[0] if packaged else shutil.which("docker")
    if not found:
        raise DockerUnavailable("the docker command is not installed (apt-get install docker.io iptables)")
    return found


@dataclass
class Docker:
    host: str  # DOCKER_HOST, e.g. unix:///tmp/x/docker.sock

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1", **extra}

    def run(self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([docker_cli(), *args], env=env or self.env(), capture_output=True, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} … failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run([docker_cli(), "compose", "version"], capture_output=True).returncode == 0:
        return [docker_cli(), "compose"]
    raise DockerUnavailable("neither docker-compose nor the docker compose plugin is installed "
                            "(apt-get install docker-compose)")


def start_daemon(workdir: Path) -> tuple[Docker, subprocess.Popen | None]:
    """A daemon of our own when none answers at DOCKER_HOST / the default socket; `None` when one was running."""
    existing = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if subprocess.run([docker_cli(), "info"], env={**os.environ, "DOCKER_HOST": existing},
                      capture_output=True).returncode == 0:
        return Docker(existing), None
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise DockerUnavailable("no Docker daemon answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise DockerUnavailable("no Docker daemon answers and starting dockerd needs root")
    # A short socket path: unix sockets are limited to ~107 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="bgd-", dir="/tmp"))
    sock = run_dir / "docker.sock"
    # Images and layers persist across runs in the data root (building the image once per machine, not per run).
    data_root = Path(os.environ.get("BLUEGREEN_DOCKER_ROOT", "/var/lib/bluegreen-test-docker"))
    log = open(workdir / "dockerd.log", "wb")
    process = subprocess.Popen(
        [dockerd, "--data-root", str(data_root), "--exec-root", str(run_dir / "exec"), "-H", f"unix://{sock}",
         "--pidfile", str(run_dir / "dockerd.pid")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    docker = Docker(f"unix://{sock}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:  # e.g. another dockerd holds the same --data-root
            raise DockerUnavailable(f"dockerd exited ({process.returncode}); see {workdir / 'dockerd.log'}")
        try:
            if sock.exists() and docker.run("info", check=False, timeout=10).returncode == 0:
                return docker, process
        except subprocess.TimeoutExpired:
            pass  # still starting
        time.sleep(0.5)
    stop_daemon(process)
    raise DockerUnavailable(f"dockerd did not answer within 60 s; see {workdir / 'dockerd.log'}")


def stop_daemon(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
