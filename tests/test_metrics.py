"""What on-call sees: Prometheus metrics and the Grafana dashboard (alerts: tests/test_alerts.py and
tests/test_alert_channels.py).

The main scenario runs real loads in a real instance on disk (a success, a switch blocked by the plausibility
gate, a corrupt snapshot that fails the load), queues a run with no daemon, then starts the real daemon so the
sensor ticks, and scrapes `bluegreen metrics` (a process started by the test) over HTTP after each step."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import dagster as dg
import promql_parser
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.metrics import METRICS, registry_for
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets import make_target
from tests.conftest import Project, make_project
from tests.dagster_processes import BIN, bluegreen, dagster_home, process_group, project_env, \
    running_daemon, wait_for
from tests.helpers import free_port

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "bluegreen.json"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a /metrics text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


def test_metrics_report_alias_age_and_databases(project: Project) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=10)
    snap = snapshot_at(project.data, "acme", 1767741527)
    with make_target(project.settings) as target:
        target.load(snap)
        rules.switch_if_newest(target, snap.key, expected_counts(snap))
    text = generate_latest(registry_for(project.resources.initialized())).decode()
    assert 'bluegreen_target_up{target="embedded"} 1.0' in text
    assert 'bluegreen_alias_snapshot_timestamp_seconds{customer="acme"} 1.767741527e+09' in text
    assert 'bluegreen_databases{customer="acme",status="online"} 1.0' in text
    assert 'bluegreen_alias_age_seconds{customer="acme",database="acme-1767741527"}' in text
    # DAGSTER_HOME points at a folder that does not exist: a metric, not a crash
    assert "bluegreen_instance_up 0.0" in text


def test_metrics_say_target_down_instead_of_crashing(project: Project, monkeypatch, caplog) -> None:
    monkeypatch.setenv("METRICS_TEST_PW", "x-secret")
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": 1, "password": "${METRICS_TEST_PW}"})
    write_snapshot(project.data, "acme", 1, people=3)
    text = generate_latest(registry_for(project.resources.initialized(), instance_opener=None)).decode()
    assert 'bluegreen_target_up{target="neo4j"} 0.0' in text
    assert "graph target unreachable" in caplog.text and "x-secret" not in caplog.text + text


def test_an_unreadable_instance_is_a_metric(project: Project) -> None:
    def broken():
        raise RuntimeError("could not connect to server: Connection refused")

    text = generate_latest(registry_for(project.resources.initialized(), instance_opener=broken)).decode()
    assert "bluegreen_instance_up 0.0" in text
    assert 'bluegreen_target_up{target="embedded"} 1.0' in text  # the other source still reports


def test_instance_history_is_read_in_bounded_steps(project: Project) -> None:
    """A history longer than one read: the totals are withheld until complete, then exact."""
    for ts in (100, 200, 300):
        write_snapshot(project.data, "acme", ts, people=10)
    with dg.instance_for_test() as instance:
        for ts in (100, 200, 300):
            instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [f"acme-{ts}"])
            assert project.job().execute_in_process(partition_key=f"acme-{ts}", instance=instance).success
        # one record per read, and no time for a second read per scrape
        registry = registry_for(project.resources.initialized(), instance_opener=lambda: instance,
                                max_records=1, budget_seconds=0, cache_seconds=0)
        first = samples(generate_latest(registry).decode())
        assert value(first, "bluegreen_instance_history_caught_up") == 0
        assert value(first, "bluegreen_loads_total", customer="acme", outcome="success") is None
        for _ in range(5):
            scraped = samples(generate_latest(registry).decode())
        assert value(scraped, "bluegreen_instance_history_caught_up") == 1
        assert value(scraped, "bluegreen_loads_total", customer="acme", outcome="success") == 3


def test_a_snapshot_refused_by_a_smoke_query_counts_as_blocked(project: Project) -> None:
    """A failed smoke query blocks the switch like the other gate checks: `blocked`, not `failed`, and counted
    under its check (the outcome the dashboard and the docs promise for every blocking check)."""
    write_snapshot(project.data, "acme", 100, people=10)
    project.reconfigure(smoke={"queries": [{"name": "enough-people", "query": "MATCH (p:Person) RETURN p.nodeId",
                                            "min_rows": 1000}]})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-100"])
        result = project.job().execute_in_process(partition_key="acme-100", instance=instance, raise_on_error=False)
        assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == ["smoke_queries"]
        scraped = samples(generate_latest(registry_for(project.resources.initialized(),
                                                       instance_opener=lambda: instance)).decode())
    assert value(scraped, "bluegreen_loads_total", customer="acme", outcome="blocked") == 1
    assert value(scraped, "bluegreen_loads_total", customer="acme", outcome="failed") == 0
    assert value(scraped, "bluegreen_verification_failures_total", customer="acme", check="smoke_queries") == 1


# --------------------------------------------------------------------------------------------------------------
# real runs, a real exporter process, the real daemon


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return samples(response.read().decode())


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory) -> dict[str, dict]:
    project = make_project(tmp_path_factory.mktemp("metrics"))
    write_snapshot(project.data, "acme", 100, people=20)
    write_snapshot(project.data, "acme", 200, people=5)  # shrinks by 70%: the plausibility gate blocks it
    write_snapshot(project.data, "acme", 300, people=20)
    (project.data / "acme/300/relationships/knows-00000.parquet").write_bytes(b"garbage")  # the load fails
    write_snapshot(project.data, "globex", 100, people=20)
    home = dagster_home(project.root)
    with pytest.MonkeyPatch.context() as env, dg.DagsterInstance.from_config(str(home)) as instance:
        env.setenv("DAGSTER_HOME", str(home))  # the one instance of this scenario, whoever asks for it
        env.setenv("BLUEGREEN_CONFIG", str(project.config_file))
        job = project.job()
        for key in ("acme-100", "acme-200", "acme-300", "globex-100"):
            instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [key])
            job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    bluegreen(project, "load", "globex", "100", "--no-wait")  # no daemon yet: it stays queued

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    found: dict[str, dict] = {}
    log = project.root / "metrics.log"
    with process_group([str(BIN / "bluegreen"), "metrics", "--port", str(port), "--host", "127.0.0.1"],
                       project_env(project), log):
        found["after_runs"] = wait_for(lambda: _try(url), 60, "bluegreen metrics to answer", log)

        # The daemon's sensor ticks: nothing new to load (the queued run goes, the snapshots go).
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])):
                instance.delete_run(run.run_id)
        for customer in ("acme", "globex"):
            shutil.rmtree(project.data / customer)
        with running_daemon(project) as daemon_log:
            started = time.time()
            found["after_tick"] = wait_for(
                lambda: (s := _try(url)) and value(s, "bluegreen_sensor_last_successful_tick_timestamp_seconds",
                                                   sensor="snapshot_sensor") and s, 120,
                "a successful snapshot_sensor tick in the metrics", daemon_log, interval=1)
            found["tick_window"] = {"started": started, "seen": time.time()}
    return found


def _try(url: str) -> dict | None:
    try:
        return scrape(url)
    except OSError:
        return None


@pytest.mark.slow  # the real daemon
def test_loads_are_counted_by_outcome_after_real_runs(scrapes) -> None:
    s = scrapes["after_runs"]
    assert value(s, "bluegreen_instance_up") == 1 and value(s, "bluegreen_instance_history_caught_up") == 1
    assert value(s, "bluegreen_loads_total", customer="acme", outcome="success") == 1
    assert value(s, "bluegreen_loads_total", customer="acme", outcome="blocked") == 1
    assert value(s, "bluegreen_loads_total", customer="acme", outcome="failed") == 1
    assert value(s, "bluegreen_loads_total", customer="globex", outcome="success") == 1
    assert value(s, "bluegreen_loads_total", customer="globex", outcome="failed") == 0
    assert value(s, "bluegreen_verification_failures_total", customer="acme", check="plausible") == 1
    assert value(s, "bluegreen_verification_failures_total", customer="acme", check="verify_counts") is None


@pytest.mark.slow  # the real daemon
def test_last_load_duration_and_speed_are_those_of_the_newest_load(scrapes) -> None:
    s = scrapes["after_runs"]
    # acme's newest database is acme-200 (loaded, then refused by the gate): 5 people + 1 company, 20 relationships
    assert value(s, "bluegreen_last_load_rows", customer="acme") == 26
    assert value(s, "bluegreen_last_load_rows", customer="globex") == 21 + 80
    assert value(s, "bluegreen_last_load_rows_per_second", customer="globex") > 0
    assert value(s, "bluegreen_last_load_duration_seconds", customer="globex") > 0
    assert time.time() - value(s, "bluegreen_last_load_timestamp_seconds", customer="globex") < 600


@pytest.mark.slow  # the real daemon
def test_live_snapshot_databases_and_queued_runs(scrapes) -> None:
    s = scrapes["after_runs"]
    assert value(s, "bluegreen_target_up", target="embedded") == 1
    assert value(s, "bluegreen_alias_snapshot_timestamp_seconds", customer="acme") == 100  # the gate kept it there
    assert value(s, "bluegreen_databases", customer="acme", status="online") == 2  # acme-200 kept for inspection
    assert value(s, "bluegreen_runs", customer="globex", state="queued") == 1
    assert value(s, "bluegreen_runs", customer="globex", state="running") == 0
    assert value(s, "bluegreen_runs", customer="acme", state="queued") == 0


@pytest.mark.slow  # the real daemon
def test_sensor_tick_is_recent_once_the_daemon_runs(scrapes) -> None:
    s = scrapes["after_tick"]
    tick = value(s, "bluegreen_sensor_last_successful_tick_timestamp_seconds", sensor="snapshot_sensor")
    window = scrapes["tick_window"]
    assert window["started"] - 5 <= tick <= window["seen"] + 1
    assert value(s, "bluegreen_sensor_running", sensor="snapshot_sensor") == 1
    assert value(scrapes["after_runs"], "bluegreen_sensor_running", sensor="snapshot_sensor") is None  # never ticked


# --------------------------------------------------------------------------------------------------------------
# the Grafana dashboard


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects (Grafana's variables replaced by values first)."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\$\{?customer\}?", ".*", expr)
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.add(node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__"))
            return
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector", "args"):
            child = getattr(node, attr, None)
            for c in (child if isinstance(child, list) else [child]):
                if c is not None and not isinstance(c, (str, int, float)):
                    walk(c)

    walk(promql_parser.parse(expr))
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        exprs.append(match.group(1) if match else query)
    return exprs


def test_expression_parser_finds_every_metric() -> None:
    assert metric_names('sum by (c) (increase(a_total{customer=~"$customer"}[1h])) / (time() - b)') == {"a_total", "b"}


@pytest.mark.slow  # the real daemon
def test_dashboard_uses_exactly_the_exported_series(scrapes) -> None:
    exported = {name for s in (scrapes["after_runs"], scrapes["after_tick"]) for name, _ in s}
    used = set().union(*(metric_names(e) for e in dashboard_expressions()))
    assert used, "no expressions found in the dashboard"
    assert used <= exported, f"the dashboard uses series the exporter does not serve: {sorted(used - exported)}"
    documented = {name + ("_total" if kind == "counter" else "") for name, (kind, _, _) in METRICS.items()}
    assert exported <= documented  # nothing served that METRICS does not describe
    assert documented <= used, f"series with no panel: {sorted(documented - used)}"


def test_compose_wires_exporter_prometheus_and_grafana_together() -> None:
    import yaml

    deploy = DASHBOARD.parents[2]
    services = yaml.safe_load((deploy / "docker-compose.yaml").read_text())["services"]
    command = services["metrics"]["command"]
    port = command[command.index("--port") + 1]
    [job] = yaml.safe_load((deploy / "prometheus.yml").read_text())["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"metrics:{port}"]
    for service in ("prometheus", "grafana"):  # every bind-mounted file or folder exists
        for volume in services[service]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (deploy / source).exists(), f"{service} mounts {source}, which is not in deploy/"
    [datasource] = yaml.safe_load((deploy / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    dashboard = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource["uid"]}
    # the UIs and the exporter are published on the host's loopback only (README, "UI access")
    for service in ("webserver", "metrics", "prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[service]["ports"]), service
