"""A run whose worker is SIGKILLed is failed within two minutes and the customer's queue moves on.

The real daemon (`dagster-daemon run`) with the shipped instance settings (bluegreen_dagster/dagster_instance.yaml:
BluegreenRunLauncher, run monitoring, one run per customer) and a code location holding bluegreen's definitions
plus a job that holds the customer's run slot (tests/dead_run_location.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project, make_project
from tests.helpers import alias_of

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEADLINE_SECONDS = 120  # the promise: a dead run is failed within two minutes of its worker dying

pytestmark = pytest.mark.slow


class Deployment:
    """One DAGSTER_HOME, one workspace, and a daemon that can be killed and started again."""

    def __init__(self, project: Project):
        root = project.root
        self.project = project
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "bluegreen_dagster" / "dagster_instance.yaml", self.home / "dagster.yaml")
        self.workspace = root / "workspace.yaml"
        self.workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "tests.dead_run_location", "working_directory": str(REPO), "location_name": "bluegreen"}}]}))
        self.holds = root / "holds"
        self.holds.mkdir()
        self.env = {**os.environ, "DAGSTER_HOME": str(self.home), "BLUEGREEN_CONFIG": str(project.config_file),
                    "BLUEGREEN_TEST_HOLD_DIR": str(self.holds)}
        self.log = root / "daemon.log"
        self.daemon: subprocess.Popen | None = None
        # Create the storage once, before several processes open it at the same moment.
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            instance.get_runs(limit=1)

    def start_daemon(self) -> None:
        with open(self.log, "a") as out:
            self.daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)],
                                           cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def kill_daemon_group(self, sig: int) -> None:
        """The daemon, the code server it started and every run worker that code server started."""
        assert self.daemon is not None
        try:
            os.killpg(self.daemon.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
        self.daemon = None

    def launch_hold(self, customer: str) -> None:
        """`dagster job launch`, as a user would: the run goes through the queue like every other."""
        subprocess.run([str(BIN / "dagster"), "job", "launch", "-w", str(self.workspace), "-j", "hold_customer",
                        "--tags", json.dumps({"customer": customer})],
                       cwd=REPO, env=self.env, check=True, capture_output=True, timeout=120)

    def runs(self, **filters) -> list[dg.DagsterRun]:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            return list(instance.get_runs(filters=dg.RunsFilter(**filters)))

    def run(self, run_id: str) -> dg.DagsterRun:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None
            return run

    def failure_messages(self, run_id: str) -> str:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            return "\n".join(e.message or "" for e in instance.all_logs(run_id)
                             if e.dagster_event and e.dagster_event.event_type in (
                                 dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT))

    def wait_for(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; daemon log:\n"
                             f"{self.log.read_text()[-6000:]}")


@contextmanager
def deployment(tmp_path: Path):
    d = Deployment(make_project(tmp_path, orchestrator={"scan_interval": 5, "settle_seconds": 1}))
    d.start_daemon()
    try:
        yield d
    finally:
        if d.daemon is not None:
            d.kill_daemon_group(signal.SIGTERM)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def hold_run_with_worker(d: Deployment) -> tuple[str, int]:
    """Launch a hold run for `acme` and wait until its worker runs: (run id, worker pid)."""
    d.launch_hold("acme")
    pid_file = d.wait_for(lambda: next(iter(d.holds.glob("*.pid")), None), 120, "the hold run's worker to start")
    run_id = pid_file.stem
    pid = int(d.wait_for(lambda: pid_file.read_text().strip(), 10, "the pid"))
    assert d.run(run_id).status == dg.DagsterRunStatus.STARTED
    return run_id, pid


def test_run_killed_with_the_daemon_fails_within_two_minutes_and_the_queue_moves(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        held_run, worker = hold_run_with_worker(d)

        # A real snapshot of the same customer: the sensor launches its load, the queue holds it back.
        write_snapshot(d.project.data, "acme", 1_767_000_100, people=50)
        queued = d.wait_for(lambda: d.runs(tags={"dagster/partition": "acme-1767000100"}), 120,
                            "the sensor to submit the snapshot's run")[0]
        # Run monitoring checks the live run and leaves it alone (no false alarm from the health check).
        seen = len(d.log.read_text())  # the worker runs since before this point
        d.wait_for(lambda: f"Checking run {held_run}" in d.log.read_text()[seen:], 60,
                   "run monitoring to check the running run")
        time.sleep(3)
        assert d.run(held_run).status == dg.DagsterRunStatus.STARTED
        assert d.run(queued.run_id).status == dg.DagsterRunStatus.QUEUED

        # The fault of issue 9: the daemon's process group is killed, with the code server and the run worker.
        d.kill_daemon_group(signal.SIGKILL)
        killed_at = time.monotonic()
        d.wait_for(lambda: not pid_alive(worker), 10, "the run worker to die with its process group")
        assert d.run(held_run).status == dg.DagsterRunStatus.STARTED  # nothing else notices

        d.start_daemon()
        d.wait_for(lambda: d.run(held_run).status == dg.DagsterRunStatus.FAILURE,
                   DEADLINE_SECONDS - (time.monotonic() - killed_at), "the dead run to be marked FAILURE")
        failed_after = time.monotonic() - killed_at
        assert f"run worker process gone (pid {worker}" in d.failure_messages(held_run)

        # The queue moves: the customer's snapshot loads and goes live.
        d.wait_for(lambda: alias_of(d.project, "acme") == "acme-1767000100", 120,
                   "the queued snapshot run to start and switch the alias")
        assert d.run(queued.run_id).status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS)
        print(f"dead run failed {failed_after:.1f}s after the kill (limit {DEADLINE_SECONDS}s)")


def test_run_worker_killed_alone_is_failed_by_its_code_server(tmp_path: Path) -> None:
    """The other half: the code server survives its worker and reports the failure itself, at once."""
    with deployment(tmp_path) as d:
        held_run, worker = hold_run_with_worker(d)
        d.launch_hold("acme")  # a second run of the same customer waits in the queue
        second = d.wait_for(lambda: [r for r in d.runs(tags={"customer": "acme"}) if r.run_id != held_run], 60,
                            "the second run to be submitted")[0]
        time.sleep(3)
        assert d.run(second.run_id).status == dg.DagsterRunStatus.QUEUED

        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        d.wait_for(lambda: d.run(held_run).status == dg.DagsterRunStatus.FAILURE, DEADLINE_SECONDS,
                   "the killed run to be marked FAILURE")
        failed_after = time.monotonic() - killed_at
        assert "signal" in d.failure_messages(held_run).lower() or "exit code" in d.failure_messages(held_run)
        d.wait_for(lambda: (d.holds / f"{second.run_id}.pid").exists(), 120, "the queued run to start")
        (d.holds / f"{second.run_id}.release").touch()
        d.wait_for(lambda: d.run(second.run_id).status == dg.DagsterRunStatus.SUCCESS, 60, "the second run to finish")
        print(f"killed worker's run failed {failed_after:.1f}s after the kill")
