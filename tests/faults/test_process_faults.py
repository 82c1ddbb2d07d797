"""Process faults with the real daemon (`dagster-daemon run`, the shipped instance settings, the embedded target):
a run worker SIGKILLed in the middle of its load, then the partition re-run as the README tells users to; the
daemon restarted while a customer's runs wait in the queue. The Deployment (DAGSTER_HOME, workspace, a daemon
that can be killed and started again) is the one of tests/test_dead_run.py; its code location adds the
`hold_customer` job that occupies a customer's run slot (tests/dead_run_location.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.alerts.compose import alert_for_run
from bluegreen_dagster.demo_data import write_snapshot
from tests.dagster_processes import BIN, REPO
from tests.test_dead_run import Deployment, alias_of, deployment, hold_run_with_worker, pid_alive

pytestmark = pytest.mark.slow

GOOD, BIG = 1_767_000_100, 1_767_000_200


def partition_run(d: Deployment, key: str) -> dg.DagsterRun | None:
    runs = d.runs(tags={"dagster/partition": key})
    return runs[-1] if runs else None  # get_runs is newest first: the first run of the partition


def step_events(d: Deployment, run_id: str, step: str) -> set[str]:
    with dg.DagsterInstance.from_config(str(d.home)) as instance:
        return {e.dagster_event.event_type_value for e in instance.all_logs(run_id)
                if e.dagster_event is not None and e.dagster_event.step_key == step}


def worker_pid(d: Deployment, run_id: str) -> int | None:
    """The run worker's pid, from the launcher's "Started process for run (pid: N)" engine event."""
    with dg.DagsterInstance.from_config(str(d.home)) as instance:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            data = entry.dagster_event.engine_event_data if entry.dagster_event else None
            pid = (data.metadata if data else {}).get("pid")
            value = getattr(pid, "value", pid)
            if value is not None and str(value).isdigit():
                return int(value)
    return None


def bluegreen_load(d: Deployment, customer: str, ts: int) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "bluegreen"), "load", customer, str(ts), "--workspace", str(d.workspace),
                           "--timeout", "240"], cwd=REPO, env=d.env, capture_output=True, text=True, timeout=300)


def test_run_killed_mid_load_then_the_partition_is_re_run(tmp_path: Path, fault) -> None:
    with deployment(tmp_path) as d:
        write_snapshot(d.project.data, "acme", GOOD, people=50)
        d.wait_for(lambda: alias_of(d.project, "acme") == f"acme-{GOOD}", 180, "the first snapshot to go live")
        write_snapshot(d.project.data, "acme", BIG, people=600_000)  # ~8 s of load on an idle machine
        probe = fault("run worker SIGKILLed mid-load, then re-run", d.project, "acme")

        key = f"acme-{BIG}"
        run = d.wait_for(lambda: partition_run(d, key), 120, "the sensor to launch the big snapshot's run")
        d.wait_for(lambda: "STEP_START" in step_events(d, run.run_id, "snapshot_database"), 120,
                   "the load step to start")
        pid = d.wait_for(lambda: worker_pid(d, run.run_id), 30, "the run worker's pid")
        time.sleep(1.0)  # well inside the load
        os.kill(pid, signal.SIGKILL)
        d.wait_for(lambda: not pid_alive(pid), 10, "the worker to die")
        assert "STEP_SUCCESS" not in step_events(d, run.run_id, "snapshot_database"), "the load finished first"

        d.wait_for(lambda: d.run(run.run_id).status == dg.DagsterRunStatus.FAILURE, 120,
                   "the killed run to be marked FAILURE")
        assert alias_of(d.project, "acme") == f"acme-{GOOD}"
        with dg.DagsterInstance.from_config(str(d.home)) as instance:
            alert = alert_for_run(instance, d.run(run.run_id), None)

        # The re-run, as the alert says: through the queue, with the daemon that is still running.
        rerun = bluegreen_load(d, "acme", BIG)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert alias_of(d.project, "acme") == key
        assert [r.status for r in d.runs(tags={"dagster/partition": key})] == [
            dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
    probe.conclude(alias=key, message=alert.text(), mentions=["worker died", f"bluegreen load acme {BIG}"])


def test_daemon_restarted_with_runs_queued(tmp_path: Path, fault) -> None:
    """A customer's two snapshots wait in the queue behind a running run; the daemon is stopped (SIGTERM to its
    process group, with the code server and that run's worker, as a restart does) and started again: the
    interrupted run is failed with a cause, and the queued runs still run, one at a time, oldest first, each
    exactly once."""
    stamps = [1_767_000_300, 1_767_000_400]
    with deployment(tmp_path) as d:
        held, worker = hold_run_with_worker(d)
        queued = []
        for ts in stamps:  # arriving one after the other (at once, the sensor launches only the newest keep_databases)
            write_snapshot(d.project.data, "acme", ts, people=40 + ts % 1000 // 100)
            queued.append(d.wait_for(lambda: partition_run(d, f"acme-{ts}"), 120, f"the sensor to queue acme-{ts}"))
        probe = fault("daemon restarted with runs queued", d.project, "acme")
        time.sleep(3)
        assert [d.run(r.run_id).status for r in queued] == [dg.DagsterRunStatus.QUEUED] * 2

        d.kill_daemon_group(signal.SIGTERM)
        d.wait_for(lambda: not pid_alive(worker), 30, "the held run's worker to stop with the daemon")
        assert [d.run(r.run_id).status for r in queued] == [dg.DagsterRunStatus.QUEUED] * 2  # still waiting
        d.start_daemon()

        d.wait_for(lambda: all(d.run(r.run_id).is_finished for r in queued), 240, "the queued runs to finish")
        runs = [d.run(r.run_id) for r in queued]
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert d.run(held).status == dg.DagsterRunStatus.FAILURE
        with dg.DagsterInstance.from_config(str(d.home)) as instance:
            spans = [(instance.get_run_record_by_id(r.run_id).start_time,
                      instance.get_run_record_by_id(r.run_id).end_time) for r in runs]
        assert [s for s, _ in spans] == sorted(s for s, _ in spans), "the queued runs started out of order"
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, "two runs of one customer overlapped"
        for ts in stamps:  # each snapshot ran once: the restarted sensor did not launch it again
            assert len(d.runs(tags={"dagster/partition": f"acme-{ts}"})) == 1
        with dg.DagsterInstance.from_config(str(d.home)) as instance:
            alert = alert_for_run(instance, d.run(held), None)
    assert alert.kind == "run_worker_died"
    probe.conclude(alias=f"acme-{stamps[-1]}", message=alert.text(),
                   mentions=["run worker died during step hold", "interrupted", "SIGTERM", "Re-execute"])
