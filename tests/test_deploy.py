"""What can be checked here of the deployment files in deploy/ (Docker cannot run on the build machines):
they parse, they agree with each other and with the package, every environment variable they use is
documented, and the Helm values use only keys of the official chart (tests/data/dagster_chart_keys.txt)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
YAML_FILES = ["docker-compose.yaml", "dagster.yaml", "workspace.yaml", "config.yaml", "helm/values.yaml"]
CHART_KEYS = Path(__file__).parent / "data" / "dagster_chart_keys.txt"


def load(name: str):
    return yaml.safe_load((DEPLOY / name).read_text())


def docs_section(page: str, title: str) -> str:
    text = (REPO / "docs" / page).read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/{page} has no section '## {title}'"
    return match.group(1)


@pytest.mark.parametrize("name", YAML_FILES)
def test_every_yaml_file_parses_to_a_mapping(name: str) -> None:
    assert isinstance(load(name), dict), f"deploy/{name} is not a YAML mapping"


# --- environment variables ------------------------------------------------------------------------------------

def env_vars_used() -> dict[str, set[str]]:
    """Variable name -> the deploy files that read or set it."""
    found: dict[str, set[str]] = {}

    def note(name: str, where: str) -> None:
        found.setdefault(name, set()).add(where)

    for name in ("docker-compose.yaml", "config.yaml"):
        for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (DEPLOY / name).read_text()):
            note(var, name)
    for service in load("docker-compose.yaml")["services"].values():
        for var in (service.get("environment") or {}):
            note(var, "docker-compose.yaml")

    def env_sources(node) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                note(node["env"], "dagster.yaml")
            for value in node.values():
                env_sources(value)
        elif isinstance(node, list):
            for value in node:
                env_sources(value)

    env_sources(load("dagster.yaml"))
    for line in (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            for var in re.findall(r"\b([A-Z][A-Z0-9_]+)=", line):
                note(var, "Dockerfile")
    for deployment in load("helm/values.yaml")["dagster-user-deployments"]["deployments"]:
        for item in deployment.get("env", []):
            note(item["name"], "helm/values.yaml")
    return found


def test_every_environment_variable_the_deploy_files_use_is_documented() -> None:
    section = docs_section("hosts.md", "Environment variables")
    used = env_vars_used()
    assert {"DAGSTER_PG_PASSWORD", "NEO4J_PASSWORD", "DAGSTER_HOME", "BLUEGREEN_CONFIG"} <= set(used)
    undocumented = {var: sorted(files) for var, files in used.items() if f"`{var}`" not in section}
    assert not undocumented, f"document these in docs/hosts.md 'Environment variables': {undocumented}"


def test_the_instance_reads_only_variables_that_every_dagster_container_gets() -> None:
    compose = load("docker-compose.yaml")
    common = compose["x-bluegreen"]["environment"]
    instance_vars = {v for v, files in env_vars_used().items() if "dagster.yaml" in files}
    assert instance_vars and instance_vars <= set(common), instance_vars - set(common)
    # config.yaml's required variables (no default) reach the code location too.
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", (DEPLOY / "config.yaml").read_text()))
    assert required <= set(common), required - set(common)


# --- the compose file, the image and the workspace agree ---------------------------------------------------------

def dockerfile_cmd() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("CMD "))
    return yaml.safe_load(line[len("CMD "):])


def test_the_image_copies_files_that_exist_and_serves_the_code_location() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in shlex.split(line)[1:-1]:
                assert (REPO / source).exists(), f"deploy/Dockerfile copies {source}, which does not exist"
    cmd = dockerfile_cmd()
    # Not `dagster code-server start`: that proxy cannot tell run monitoring which runs it executes.
    assert cmd[:3] == ["dagster", "api", "grpc"]
    module = cmd[cmd.index("-m") + 1]
    assert importlib.util.find_spec(module) is not None, module
    workspace = load("workspace.yaml")["load_from"][0]["grpc_server"]
    assert cmd[cmd.index("--location-name") + 1] == workspace["location_name"] == "bluegreen"
    assert int(cmd[cmd.index("-p") + 1]) == workspace["port"]
    # The webserver and daemon find the code server under its compose service name.
    compose = load("docker-compose.yaml")
    assert workspace["host"] in compose["services"]
    build = compose["x-bluegreen"]["build"]
    assert (DEPLOY / build["context"]).resolve() == REPO and (REPO / build["dockerfile"]).exists()


def test_compose_runs_every_process_with_neo4j_enterprise_and_gds_arrow() -> None:
    services = load("docker-compose.yaml")["services"]
    assert {"postgres", "neo4j", "bluegreen-code", "webserver", "daemon", "metrics"} <= set(services)
    neo4j = services["neo4j"]
    assert "enterprise" in neo4j["image"]
    assert neo4j["environment"]["NEO4J_ACCEPT_LICENSE_AGREEMENT"] == "yes"
    assert neo4j["environment"]["NEO4J_gds_arrow_enabled"] == "true"
    assert "graph-data-science" in neo4j["environment"]["NEO4J_PLUGINS"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["metrics"]["command"][:2] == ["bluegreen", "metrics"]
    workspace_path = "/opt/dagster/dagster_home/workspace.yaml"
    assert workspace_path in services["daemon"]["command"] and workspace_path in services["webserver"]["command"]


def test_production_instance_settings_are_valid_dagster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(var, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    raw = load("dagster.yaml")
    result = process_config(dagster_instance_config_schema(), raw)
    assert result.success, result.errors
    assert raw["run_launcher"] == {"module": "bluegreen_dagster.run_launcher", "class": "BluegreenRunLauncher"}
    limits = raw["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "customer", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


# --- Helm ----------------------------------------------------------------------------------------------------

def chart_keys() -> set[str]:
    return {line.strip() for line in CHART_KEYS.read_text().splitlines() if line.strip() and not line.startswith("#")}


def unknown_helm_keys(values, allowed: set[str], prefix: str = "") -> list[str]:
    """Paths in `values` that the chart does not define, in the notation of dagster_chart_keys.txt."""
    unknown = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if f"{path}.*" in allowed or f"{path}[]" in allowed:
            continue  # free-form below this point
        if path not in allowed and not any(a.startswith(f"{path}.") or a.startswith(f"{path}[]") for a in allowed):
            unknown.append(path)
        elif isinstance(value, dict):
            unknown += unknown_helm_keys(value, allowed, path)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    unknown += unknown_helm_keys(item, allowed, f"{path}[]")
    return unknown


def test_helm_values_use_only_keys_the_official_chart_defines() -> None:
    allowed = chart_keys()
    assert len(allowed) > 200 and "dagster-user-deployments.deployments[].dagsterApiGrpcArgs[]" in allowed
    assert unknown_helm_keys(load("helm/values.yaml"), allowed) == []


def test_the_chart_key_check_catches_a_misspelt_key() -> None:
    allowed = chart_keys()
    wrong = {"dagsterDaemon": {"runMonitoring": {"pollIntervalSecond": 15}},
             "dagster-user-deployments": {"deployments": [{"name": "x", "codeServerArgs": []}]},
             "runLauncher": {"config": {"k8sRunLauncher": {"runK8sConfig": {"anything": {"goes": 1}}}}}}
    assert unknown_helm_keys(wrong, allowed) == ["dagsterDaemon.runMonitoring.pollIntervalSecond",
                                                 "dagster-user-deployments.deployments[].codeServerArgs"]


def test_helm_instance_settings_match_the_production_instance() -> None:
    values = load("helm/values.yaml")
    extra = values["additionalInstanceConfig"]
    result = process_config(dagster_instance_config_schema(), extra)
    assert result.success, result.errors
    assert extra["concurrency"] == load("dagster.yaml")["concurrency"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    # The chart writes run_coordinator limits only when set; set twice, Dagster refuses to start.
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert not queued["maxConcurrentRuns"] and not queued["tagConcurrencyLimits"]
    # Its own run_monitoring block is off so that ours (with max_runtime_seconds) is the only one.
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is False
    assert extra["run_monitoring"]["enabled"] is True
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == "bluegreen"
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "bluegreen_dagster.definitions"]


def test_the_kubernetes_metrics_exporter_runs_like_the_code_location() -> None:
    """deploy/k8s/metrics.yaml: what the chart cannot host, with the same image, env, secrets and volumes as the code
    location of deploy/helm/values.yaml, the chart's instance config, and a Service Prometheus discovers."""
    deployment, service = yaml.safe_load_all((DEPLOY / "k8s" / "metrics.yaml").read_text())
    values = load("helm/values.yaml")
    [code] = values["dagster-user-deployments"]["deployments"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["bluegreen", "metrics"]
    assert container["image"] == f"{code['image']['repository']}:{code['image']['tag']}"
    env = {e["name"]: e for e in container["env"]}
    assert all(env[e["name"]] == e for e in code["env"])
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": values["global"]["postgresqlSecretName"], "key": "postgresql-password"}
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [s["name"] for s in code["envSecrets"]]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for volume in code["volumes"]:
        assert volumes[volume["name"]] == volume
    assert volumes["dagster-instance"]["configMap"]["name"] == "dagster-instance"  # the chart's, release `dagster`
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["dagster-instance"] == f"{env['DAGSTER_HOME']['value']}/dagster.yaml"
    assert all(mounts[m["name"]] == m["mountPath"] for m in code["volumeMounts"])
    port = str(container["ports"][0]["containerPort"])
    assert container["command"][container["command"].index("--port") + 1] == port
    assert service["metadata"]["annotations"]["prometheus.io/port"] == port
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
