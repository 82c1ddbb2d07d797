"""A password that must never appear: NEO4J_PASSWORD (and two alert secrets) set to distinctive values, then every
place a user or a log collector reads is searched for them: the runs' event logs (messages, errors, metadata,
check descriptions), the alert composed for a failed run, `bluegreen status`, `status --json`, `bluegreen check`,
config errors with a bad key next to the password, and what the real webserver's GraphQL API (the UI) shows of
the resources, the runs' config and their logs.

The Neo4j target is the stand-in (tests/standin); one injected server error echoes the password back, the way a
server or a library may put a connection's credentials into a message, so the scrubbing is exercised too."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._serdes import serialize_value

from bluegreen_dagster.alerts.compose import alert_for_run
from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project, make_project
from tests.dagster_processes import BIN, REPO, dagster_home, project_env, running_webserver
from tests.helpers import STANDIN_PASSWORD, run_partition

PASSWORD = STANDIN_PASSWORD  # the `standin` fixture's (tests/conftest.py)
SLACK_URL = "https://hooks.example.invalid/T000/B000/slack-secret-4711"
ALERT_TOKEN = "alert-token-secret-0815"
SECRETS = (PASSWORD, SLACK_URL, ALERT_TOKEN, base64.b64encode(f"neo4j:{PASSWORD}".encode()).decode())


def assert_no_secret(where: str, text: str) -> None:
    assert text, f"{where}: nothing to search (the test would prove nothing)"
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a secret:\n{text[:3000]}"


@pytest.fixture
def secret_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin) -> Project:
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", SLACK_URL)
    monkeypatch.setenv("ALERT_TOKEN", ALERT_TOKEN)
    settings = {**standin.neo4j_settings(), "password": "${NEO4J_PASSWORD}", "online_timeout": 10,
                "arrow_string_properties": True}
    project = make_project(tmp_path, target="neo4j", neo4j=settings, orchestrator={"keep_databases": 2},
                           alerts={"slack": {"webhook_url": "${SLACK_WEBHOOK_URL}"}})
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(project.config_file))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(project.root)))  # the webserver reads the same runs
    return project


def loaded_and_failed_runs(project: Project, standin, instance: dg.DagsterInstance
                           ) -> tuple[dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
    """acme-100 goes live; acme-200 fails at the switch with a server error that echoes the password."""
    write_snapshot(project.data, "acme", 100, people=30)
    write_snapshot(project.data, "acme", 200, people=30)
    good = run_partition(project, instance, "acme-100")
    assert good.success
    standin.dbms.fail_next("ALTER_ALIAS", "Neo.ClientError.Security.Forbidden",
                           f"Permission denied for user neo4j authenticated with password {PASSWORD}")
    bad = run_partition(project, instance, "acme-200")
    assert not bad.success
    return good, bad


def everything_logged(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of the run as stored (message, error chain, metadata, check results), serialised."""
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


def cli(project: Project, *args: str, config: Path | None = None) -> str:
    env = project_env(project)
    if config is not None:
        env["BLUEGREEN_CONFIG"] = str(config)
    done = subprocess.run([str(BIN / "bluegreen"), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def config_errors(project: Project) -> list[str]:
    """`bluegreen check` on configs that fail validation right next to the secrets."""
    raw = yaml.safe_load(project.config_file.read_text())
    typo = {**raw, "neo4j": {**raw["neo4j"], "bolt_prot": 7687, "bolt_port": "seven"},
            "alerts": {"slack": {"webhook_url": "${SLACK_WEBHOOK_URL}"}, "webhook": {"headers": "${ALERT_TOKEN}"}}}
    # The top-level check (target neo4j without a password) used to echo the whole expanded file.
    empty = {**raw, "neo4j": {**raw["neo4j"], "password": "${NO_SUCH_PASSWORD:-}"}}
    out = []
    for name, content in (("typo.yaml", typo), ("empty.yaml", empty)):
        path = project.root / name
        path.write_text(yaml.safe_dump(content))
        out.append(cli(project, "check", config=path))
    return out


def test_the_password_appears_in_no_log_metadata_status_check_or_config_error(secret_project: Project, standin,
                                                                             fault) -> None:
    project = secret_project
    probe = fault("password in logs/metadata/status/check/config errors", project, "acme")
    with dg.DagsterInstance.get() as instance:
        good, bad = loaded_and_failed_runs(project, standin, instance)
        probe.snapshot_files()
        for result in (good, bad):
            assert_no_secret(f"event log of {result.run_id}", everything_logged(instance, result.run_id))
        alert = alert_for_run(instance, bad.dagster_run, "http://127.0.0.1:3000")
    assert_no_secret("the alert", json.dumps(asdict(alert), default=str) + alert.text())
    assert "Permission denied" in alert.cause and "***" in alert.cause  # the cause is there, blanked

    status = cli(project, "status")
    assert "acme-100" in status and "exit 0" in status
    assert_no_secret("bluegreen status", status)
    status_json = cli(project, "status", "--json")
    assert '"target_database": "acme-100"' in status_json
    assert_no_secret("bluegreen status --json", status_json)
    check = cli(project, "check")
    assert "target health" in check
    assert_no_secret("bluegreen check", check)

    typo, empty = config_errors(project)
    assert "neo4j.bolt_prot: unknown key" in typo and "neo4j.bolt_port" in typo and "alerts.webhook.headers" in typo
    assert "neo4j.password is empty" in empty
    assert_no_secret("config error (typo next to the password)", typo)
    assert_no_secret("config error (empty password)", empty)

    probe.conclude(alias="acme-100", message=probe.message(bad),
                   mentions=["acme", "Permission denied", "***"])


RESOURCES_AND_RUNS = """
query Shown($runId: ID!) {
  workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
    __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { name allTopLevelResourceDetails {
      name resourceType configuredValues { key value type } configFields { name defaultValueAsJson }
      nestedResources { name resource { name configuredValues { key value type } } } } } } } } } }
  runsOrError { ... on Runs { results { runId runConfigYaml tags { key value } } } }
  logsForRun(runId: $runId) { ... on EventConnection { events {
    __typename ... on MessageEvent { message }
    ... on ExecutionStepFailureEvent { error { message causes { message } } }
    ... on MaterializationEvent { metadataEntries { label ... on TextMetadataEntry { text } } }
  } } }
}
"""


def graphql(url: str, query: str, variables: dict) -> str:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query, "variables": variables})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read().decode()


@pytest.mark.slow
def test_the_ui_shows_the_password_variable_never_its_value(secret_project: Project, standin, fault) -> None:
    project = secret_project
    probe = fault("password in the UI (resources, run config, logs)", project, "acme")
    with dg.DagsterInstance.get() as instance:
        _, bad = loaded_and_failed_runs(project, standin, instance)
    probe.snapshot_files()
    with running_webserver(project) as url:
        shown = graphql(url, RESOURCES_AND_RUNS, {"runId": bad.run_id})
    answer = json.loads(shown)
    assert "errors" not in answer, shown[:3000]
    [location] = answer["data"]["workspaceOrError"]["locationEntries"]
    resources = location["locationOrLoadError"]["repositories"][0]["allTopLevelResourceDetails"]
    values = {(r["name"], v["key"]): v for r in resources for v in r["configuredValues"]}
    # What the UI shows for the password: the variable's name, typed as an environment variable.
    [password] = [v for (_, key), v in values.items() if key == "password"]
    assert password == {"key": "password", "value": "NEO4J_PASSWORD", "type": "ENV_VAR"}
    assert len(answer["data"]["runsOrError"]["results"]) == 2
    assert "Permission denied" in shown  # the failed run's log is in the answer, blanked
    assert_no_secret("the webserver's GraphQL answer", shown)
    probe.conclude(alias="acme-100", message=probe.message(bad), mentions=["Permission denied", "***"])
