"""BluegreenRunLauncher's answer to run monitoring, one case each; tests/test_dead_run.py runs it for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._grpc.server import GrpcServerProcess

from bluegreen_dagster.run_launcher import BluegreenRunLauncher, process_state

from tests.helpers import free_port

LAUNCHER = {"module": "bluegreen_dagster.run_launcher", "class": "BluegreenRunLauncher"}


def started_run(instance: dg.DagsterInstance, grpc_info: dict | None, worker_pid: int | None) -> dg.DagsterRun:
    """A STARTED run as the DefaultRunLauncher leaves it: the code server's address in a tag, the worker's pid in
    its first engine event."""
    tags = {GRPC_INFO_TAG: json.dumps(grpc_info)} if grpc_info else {}
    run = instance.add_run(dg.DagsterRun(job_name="load_snapshot", status=dg.DagsterRunStatus.STARTED, tags=tags))
    if worker_pid is not None:
        instance.report_engine_event(f"Started process for run (pid: {worker_pid}).", run,
                                     EngineEventData.in_process(worker_pid))
    return run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides={"run_launcher": LAUNCHER}) as inst:
        assert isinstance(inst.run_launcher, BluegreenRunLauncher)
        assert inst.run_launcher.supports_check_run_worker_health
        yield inst


def test_worker_gone_with_its_local_code_server_is_failed(instance) -> None:
    pid = dead_pid()
    run = started_run(instance, {"host": "localhost", "port": free_port()}, pid)
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.FAILED
    assert f"run worker process gone (pid {pid}, no such process)" in health.msg


def test_worker_alive_after_its_code_server_died_is_left_running(instance) -> None:
    # This test process stands in for an orphaned worker: it started before the event that names it.
    run = started_run(instance, {"host": "127.0.0.1", "port": free_port()}, os.getpid())
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_reused_pid_is_not_mistaken_for_the_worker() -> None:
    assert process_state(os.getpid(), started_before=time.time()) == "alive"
    assert process_state(os.getpid(), started_before=time.time() - 10 * 365 * 86400) == \
        "pid reused by a later process"
    assert process_state(dead_pid(), started_before=time.time()) == "no such process"


def test_a_zombie_worker_is_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_state(proc.pid, time.time()) != "zombie" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(proc.pid, time.time()) == "zombie"
    finally:
        proc.wait()


def test_a_remote_code_server_that_does_not_answer_proves_nothing(instance) -> None:
    run = started_run(instance, {"host": "code-location.invalid", "port": 4000}, dead_pid())
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.RUNNING, health


def test_a_run_executed_outside_a_code_server_is_not_judged(instance) -> None:
    run = started_run(instance, None, dead_pid())
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_live_code_server_is_asked_which_runs_it_executes(instance, tmp_path: Path) -> None:
    code = tmp_path / "empty_location.py"
    code.write_text("import dagster as dg\ndefs = dg.Definitions()\n")
    with GrpcServerProcess(instance_ref=instance.get_ref(), force_port=True, wait_on_exit=True,
                           loadable_target_origin=LoadableTargetOrigin(python_file=str(code),
                                                                       executable_path=sys.executable)) as server:
        run = started_run(instance, {"host": "localhost", "port": server.port}, os.getpid())
        health = instance.run_launcher.check_run_worker_health(run)
    # The server answers and does not run it: whatever the pid says, the worker is not there (a restarted server).
    assert health.status == WorkerStatus.NOT_FOUND
    assert "answers but no longer runs this run" in health.msg


def test_a_code_server_proxy_that_cannot_list_runs_falls_back_to_the_pid(instance, tmp_path: Path) -> None:
    """`dagster code-server start` answers every call but "which runs do you execute?"; on this machine the
    worker's pid still tells."""
    code = tmp_path / "empty_location.py"
    code.write_text("import dagster as dg\ndefs = dg.Definitions()\n")
    port = free_port()
    proxy = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "code-server", "start", "-f", str(code),
                              "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = time.monotonic() + 120
        while subprocess.run([str(Path(sys.executable).parent / "dagster"), "api", "grpc-health-check", "-p",
                              str(port)], capture_output=True).returncode != 0:
            assert time.monotonic() < ready and proxy.poll() is None, "the code server proxy did not start"
            time.sleep(1)
        alive = instance.run_launcher.check_run_worker_health(
            started_run(instance, {"host": "127.0.0.1", "port": port}, os.getpid()))
        gone_pid = dead_pid()
        gone = instance.run_launcher.check_run_worker_health(
            started_run(instance, {"host": "127.0.0.1", "port": port}, gone_pid))
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        try:
            proxy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proxy.pid, signal.SIGKILL)
            proxy.wait()
    assert alive.status == WorkerStatus.RUNNING and "cannot list its runs" in alive.msg
    assert gone.status == WorkerStatus.FAILED and f"pid {gone_pid}, no such process" in gone.msg


@pytest.mark.parametrize("path", ["bluegreen_dagster/dagster_instance.yaml", "deploy/dagster.yaml"])
def test_shipped_instances_use_the_launcher_and_poll_often_enough(path: str) -> None:
    """A dead run is failed within two minutes only with this launcher and a poll well under that."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / path).read_text())
    assert raw["run_launcher"] == LAUNCHER
    monitoring = raw["run_monitoring"]
    assert monitoring["enabled"] is True and monitoring["poll_interval_seconds"] <= 60
    assert monitoring.get("max_resume_run_attempts", 0) == 0  # the DefaultRunLauncher cannot resume a run
    assert monitoring["free_slots_after_run_end_seconds"] > 0  # a dead run's pool slots come back
