"""Loading one snapshot from outside through the webserver's GraphQL API, against a real `dagster-webserver` and
`dagster-daemon run` started here (temp DAGSTER_HOME, temp config, embedded target)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.requests import RequestsHTTPTransport

from bluegreen_dagster.cli import main
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import InvalidName
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.trigger import SnapshotTrigger, TriggerError, trigger_load
from tests.conftest import make_project
from tests.helpers import alias_of, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path):
    """A Dagster process in its own session, stopped by its process group at the end."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(condition, timeout: float, what: str, *logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in logs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


def server_info(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
        return response.status == 200


def stop_sensor(url: str, name: str) -> None:
    """What an operator does in the UI (Automation -> sensor -> off), so only the trigger launches runs here."""
    client = Client(transport=RequestsHTTPTransport(url=f"{url}/graphql", use_json=True, timeout=30))
    sensor = client.execute(GraphQLRequest(gql("""
        query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
            __typename ... on Sensor { id sensorState { id } } } }"""), variable_values={"selector": {
        "repositoryLocationName": "bluegreen", "repositoryName": "__repository__", "sensorName": name}}))
    state_id = sensor["sensorOrError"]["sensorState"]["id"]
    stopped = client.execute(GraphQLRequest(gql("""
        mutation ($id: String!) { stopSensor(id: $id) { __typename
            ... on StopSensorMutationResult { instigationState { status } } } }"""), variable_values={"id": state_id}))
    assert stopped["stopSensor"]["instigationState"]["status"] == "STOPPED"


@pytest.fixture
def dagster_processes(tmp_path: Path):
    """(project, webserver URL, logs): webserver and daemon sharing a temp DAGSTER_HOME, snapshot sensor off."""
    project = make_project(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "bluegreen_dagster" / "dagster_instance.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BLUEGREEN_CONFIG": str(project.config_file)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web_log, daemon_log = tmp_path / "webserver.log", tmp_path / "daemon.log"
    with process([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w",
                  str(REPO / "workspace.yaml")], env, web_log):
        wait_for(lambda: server_info(url), 120, "the webserver", web_log)
        stop_sensor(url, "snapshot_sensor")
        with process([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], env, daemon_log):
            yield project, url, (web_log, daemon_log)


@pytest.mark.slow
def test_a_snapshot_triggered_over_graphql_is_registered_loaded_and_switched(dagster_processes, monkeypatch) -> None:
    project, url, logs = dagster_processes
    write_snapshot(project.data, "acme-corp", 1_767_741_527, people=200)

    triggered = trigger_load(url, "acme-corp", 1_767_741_527)
    assert triggered.partition == "acme-corp-1767741527" and triggered.partition_added
    assert (triggered.location, triggered.repository) == ("bluegreen", "__repository__")

    trigger = SnapshotTrigger(url)
    status = trigger.wait(triggered.run_id, timeout=180, poll_seconds=0.5)
    assert status == "SUCCESS", f"run {triggered.run_id} ended {status}; logs in {logs}"
    assert alias_of(project, "acme-corp") == "acme-corp-1767741527"

    with dg.DagsterInstance.from_config(str(project.root / "dagster_home")) as instance:
        assert instance.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME) == ["acme-corp-1767741527"]
        run = instance.get_run_by_id(triggered.run_id)
        assert run.job_name == "load_snapshot"
        assert run.tags["dagster/partition"] == "acme-corp-1767741527" and run.tags["customer"] == "acme-corp"
        # Only the trigger launched runs: the sensor was off.
        assert [r.run_id for r in instance.get_runs()] == [triggered.run_id]

    # Triggering the same snapshot again: the partition exists already, a new run is submitted all the same.
    again = trigger.load("acme-corp", "1767741527")
    assert not again.partition_added and again.run_id != triggered.run_id
    assert trigger.wait(again.run_id, timeout=180, poll_seconds=0.5) == "SUCCESS"

    # `bluegreen trigger` on a host with the instance is `bluegreen load`: the same run queue, no webserver
    # needed (tests/test_cli.py runs it with no webserver at all); exit 0 on success.
    write_snapshot(project.data, "acme-corp", 1_767_741_600, people=200)
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(project.config_file))
    monkeypatch.setenv("DAGSTER_HOME", str(project.root / "dagster_home"))
    assert main(["trigger", "acme-corp", "1767741600", "--timeout", "180"]) == 0
    assert alias_of(project, "acme-corp") == "acme-corp-1767741600"


def test_bad_names_are_refused_before_any_request() -> None:
    trigger = SnapshotTrigger(f"http://127.0.0.1:{free_port()}")  # nothing listens there, nothing is sent
    with pytest.raises(InvalidName, match="customer 'Acme' is not a valid name"):
        trigger.load("Acme", "1767741527")
    with pytest.raises(InvalidName, match="timestamp '2026-01-01' is not valid"):
        trigger.load("acme-corp", "2026-01-01")


def test_an_unreachable_webserver_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TriggerError, match=rf"Dagster webserver at {url} did not answer.*dagster-webserver"):
        trigger_load(url, "acme-corp", "1767741527")
    with pytest.raises(TriggerError, match="is not http"):
        SnapshotTrigger("ftp://example.com")
    # Credentials in the URL are sent as basic auth, never shown.
    with pytest.raises(TriggerError) as err:
        trigger_load(f"http://ops:pa55word@127.0.0.1:{free_port()}", "acme-corp", "1767741527")
    assert "pa55word" not in str(err.value) and "ops:" not in str(err.value)
