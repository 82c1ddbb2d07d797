"""Dagster's own processes for black-box tests: `dagster-daemon run` and `dagster-webserver`, started the way
the README tells operators to (`-w workspace.yaml`, our instance settings in a throwaway DAGSTER_HOME, the
project's config through BLUEGREEN_CONFIG), each in its own process group and stopped by its pid at the end."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's console scripts: dagster-daemon, dagster-webserver, bluegreen


def wait_for(condition, timeout: float, what: str, log: Path | None = None, interval: float = 0.25):
    """Poll `condition` until it returns something truthy; on timeout fail with the tail of `log`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    tail = f"; log {log}:\n{log.read_text()[-4000:]}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


def dagster_home(root: Path) -> Path:
    """`root/dagster_home` with the instance settings we ship (created once, shared by daemon and webserver).

    Its storage is created here, once: a daemon and a webserver started together on a fresh SQLite home both
    create the schema, and the loser's code location then fails to load with "Version table 'alembic_version'
    has more than one head present"."""
    home = root / "dagster_home"
    if not (home / "dagster.yaml").exists():
        import dagster as dg

        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "bluegreen_dagster" / "dagster_instance.yaml", home / "dagster.yaml")
        with dg.DagsterInstance.from_config(str(home)):
            pass
    return home


def project_env(project) -> dict[str, str]:
    """The environment every process of this project gets: its DAGSTER_HOME and config file."""
    return {**os.environ, "DAGSTER_HOME": str(dagster_home(project.root)),
            "BLUEGREEN_CONFIG": str(project.config_file)}


@contextmanager
def process_group(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run `command` in a new session (its own process group: the daemon's run workers and code servers are its
    children), output to `log`; at the end SIGTERM the group, SIGKILL it if it is still there after 20 s."""
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()


@contextmanager
def running_daemon(project, log_name: str = "daemon.log") -> Iterator[Path]:
    """`dagster-daemon run -w workspace.yaml` for this project; yields its log file."""
    log = project.root / log_name
    with process_group([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                       project_env(project), log):
        yield log


@contextmanager
def running_webserver(project, port: int | None = None, log_name: str = "webserver.log",
                      timeout: float = 90) -> Iterator[str]:
    """`dagster-webserver -w workspace.yaml` on a free port; yields its base URL once it answers /server_info."""
    port = port or free_port()
    log = project.root / log_name
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with process_group(command, project_env(project), log) as proc:
        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"dagster-webserver exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, timeout, "dagster-webserver to answer /server_info", log, interval=0.5)
        yield url


def bluegreen(project, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The `bluegreen` command with this project's environment; fails with its output on a non-zero exit."""
    result = subprocess.run([str(BIN / "bluegreen"), *args], cwd=REPO, env=project_env(project),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"bluegreen {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result
