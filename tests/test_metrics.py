"""What on-call sees: Prometheus metrics (alerts: tests/test_alerts.py and tests/test_alert_channels.py)."""


from prometheus_client import generate_latest

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.metrics import registry_for
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
