"""What on-call sees: Prometheus metrics and failure alerts."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from prometheus_client import generate_latest

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.metrics import registry_for
from bluegreen_dagster.sensors import alert_on_failure
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets import make_target
from tests.conftest import Project


def test_metrics_report_alias_age_and_databases(project: Project) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=10)
    snap = snapshot_at(project.data, "acme", 1767741527)
    with make_target(project.settings) as target:
        target.load(snap)
        rules.switch_if_newest(target, snap.key, expected_counts(snap))
    text = generate_latest(registry_for(project.resources.initialized())).decode()
    assert 'bluegreen_target_up{target="embedded"} 1.0' in text
    assert 'bluegreen_alias_snapshot_timestamp{customer="acme"} 1.767741527e+09' in text
    assert 'bluegreen_databases{customer="acme",status="online"} 1.0' in text
    assert 'bluegreen_alias_age_seconds{customer="acme",database="acme-1767741527"}' in text


def test_metrics_say_target_down_instead_of_crashing(project: Project, monkeypatch) -> None:
    monkeypatch.setenv("METRICS_TEST_PW", "x-secret")
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": 1, "password": "${METRICS_TEST_PW}"})
    write_snapshot(project.data, "acme", 1, people=3)
    text = generate_latest(registry_for(project.resources.initialized())).decode()
    assert 'bluegreen_target_up{target="neo4j"} 0.0' in text


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    thread.join()


def test_failed_run_is_posted_to_the_webhook(project: Project, webhook, monkeypatch) -> None:
    url, received = webhook
    monkeypatch.setenv("BLUEGREEN_ALERT_WEBHOOK", url)

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["acme-100"]))
    def broken():
        raise dg.Failure("snapshot acme/100 has a corrupt file")

    with dg.instance_for_test() as instance:
        result = dg.materialize([broken], partition_key="acme-100", instance=instance, raise_on_error=False)
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_failure", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
        alert_on_failure(context)
    [message] = received
    assert "customer acme, snapshot 100 failed; the alias was not moved" in message["text"]
    assert "broken: snapshot acme/100 has a corrupt file" in message["text"]
