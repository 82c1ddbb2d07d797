"""The run launcher: Dagster's DefaultRunLauncher plus the health check that run monitoring needs.

Why: the DefaultRunLauncher starts each run worker as a child process of a code server and says nothing when
asked whether that worker still lives (`supports_check_run_worker_health` is False). When the code server dies
with its workers (the daemon's process group killed, a container restarted), nobody is left to report the
failure: the run stays STARTED until `run_monitoring.max_runtime_seconds`, and the one-run-per-customer queue
limit holds that customer's later snapshots behind it. (A worker that dies under a living code server is
already failed by the code server itself, within a second.)

This launcher answers run monitoring's question, in this order:
1. Ask the code server that started the run (its address is in the run's `.dagster/grpc_info` tag) which runs
   it is executing. Listed: alive. Answering but not listing it: the worker is gone (the server was restarted).
2. That server no longer answers (or cannot list its runs: `dagster code-server start` is a proxy that does not
   forward the question): if it was on this machine (a socket or a loopback address, which is how the daemon
   runs its own code servers), look up the worker's process id, recorded by Dagster in the run's
   "Started process for run (pid: N)" event, and check that this process is still the one that started then.
3. Otherwise nothing can be known from here: report the worker as running and leave the run to
   `max_runtime_seconds`.

Wire it in `dagster.yaml` under `run_launcher:` (module `bluegreen_dagster.run_launcher`, class
`BluegreenRunLauncher`) with `run_monitoring.enabled: true`; see README, "When a run worker dies".
"""

from __future__ import annotations

import json
import os
import sys
import time

import grpc
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import GetCurrentRunsResult
from dagster._serdes import deserialize_value

# The event the run worker writes first (dagster/_grpc/impl.py); its metadata holds the worker's pid.
_STARTED_PROCESS_PREFIX = "Started process for run"
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# A process that started more than this after the event that names its pid is another process reusing the pid.
_START_TIME_SLACK_SECONDS = 2.0


class BluegreenRunLauncher(DefaultRunLauncher):
    """Launches runs like DefaultRunLauncher and tells run monitoring whether a run's worker still lives."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        grpc_info = _grpc_info(run)
        if grpc_info is None:
            # Executed in the launching process itself (`dagster asset materialize`, `execute_job`): no code
            # server to ask and no host recorded. Only max_runtime_seconds can end such a run.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched through a code server; not checked")
        address = _describe(grpc_info)
        try:
            current = _current_runs(grpc_info)
        except DagsterUserCodeUnreachableError as error:
            code = _grpc_code(error)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server at {address} is slow to answer")
            if code == grpc.StatusCode.UNIMPLEMENTED:
                # `dagster code-server start` is a proxy that does not forward this call; only the pid can tell.
                why = f"code server at {address} cannot list its runs"
            else:
                why = f"code server at {address} no longer answers"
            return self._check_worker_pid(run, grpc_info, why)
        if run.run_id in current:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server at {address} runs it")
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            f"run worker gone: the code server at {address} answers but no longer runs this run "
            "(it was restarted, or the worker process was killed)",
        )

    def _check_worker_pid(self, run: DagsterRun, grpc_info: dict, why: str) -> CheckRunHealthResult:
        if not _is_local(grpc_info):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{why}, and the worker's host is not this one")
        started = self._worker_start(run)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{why}, and no worker pid is recorded yet")
        pid, started_at = started
        state = process_state(pid, started_at)
        if state == "alive":
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{why}; worker process {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process gone (pid {pid}, {state}): it was killed or crashed ({why})",
            run_worker_id=str(pid),
        )

    def _worker_start(self, run: DagsterRun) -> tuple[int, float] | None:
        """(pid, timestamp) from the run's "Started process for run (pid: N)" event; the last one wins (a resumed
        run has several)."""
        found = None
        for entry in self._instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
            event = entry.dagster_event
            if event is None or not (event.message or "").startswith(_STARTED_PROCESS_PREFIX):
                continue
            metadata = event.engine_event_data.metadata if event.engine_event_data else {}
            pid = metadata.get("pid")
            value = getattr(pid, "value", pid)
            if value is not None and str(value).isdigit():
                found = (int(value), entry.timestamp)
        return found

    def get_run_worker_debug_info(self, run: DagsterRun, include_container_logs: bool | None = True) -> str | None:
        info = _grpc_info(run)
        return f"launched through the code server at {_describe(info)}" if info else None


def _grpc_info(run: DagsterRun) -> dict | None:
    raw = run.tags.get(GRPC_INFO_TAG)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) and (info.get("port") or info.get("socket")) else None


def _describe(info: dict) -> str:
    return info["socket"] if info.get("socket") else f"{info.get('host', 'localhost')}:{info['port']}"


def _is_local(info: dict) -> bool:
    # A Unix socket is a file on this machine; a loopback address is this machine's network, and so its processes.
    return bool(info.get("socket")) or str(info.get("host", "localhost")) in _LOOPBACK_HOSTS


def _current_runs(info: dict) -> set[str]:
    client = DagsterGrpcClient(port=info.get("port"), socket=info.get("socket"), host=info.get("host", "localhost"),
                               use_ssl=bool(info.get("use_ssl", False)))
    result = deserialize_value(client.get_current_runs(), GetCurrentRunsResult)
    return set(result.current_runs)


def _grpc_code(error: DagsterUserCodeUnreachableError) -> grpc.StatusCode | None:
    cause = error.__cause__
    return cause.code() if isinstance(cause, grpc.RpcError) else None  # type: ignore[attr-defined]


def process_state(pid: int, started_before: float) -> str:
    """"alive" if `pid` is a live process that started no later than `started_before` (a Unix time), else why not:
    "no such process", "zombie", or "pid reused by a later process"."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "no such process"
    except PermissionError:
        pass  # exists, owned by another user
    if not sys.platform.startswith("linux"):
        return "alive"
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return "no such process"
    # Fields after the command name, which is in parentheses and may itself contain spaces or parentheses.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return "zombie"
    started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    if started > started_before + _START_TIME_SLACK_SECONDS:
        return "pid reused by a later process"
    return "alive"


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return time.time() - time.monotonic()
