"""`bluegreen doctor`: one line per check, against the real Dagster webserver and daemon (started by the test),
the Neo4j stand-in for the Arrow line, and the failures an operator meets (daemon not running, webserver down,
sensor stopped, bad data dir, bad config)."""

from __future__ import annotations

import re
import subprocess

import pytest

from bluegreen_dagster.doctor import FAIL, PASS, SKIP, Options, run_doctor
from tests.conftest import Project, make_project
from tests.dagster_processes import BIN, REPO, dagster_home, project_env, running_daemon, \
    running_webserver, wait_for
from tests.helpers import free_port
from tests.standin.server import start_standin

PASSWORD = "doctor-standin-pw"


def doctor(project: Project, *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """Run `bluegreen doctor`; (exit code, {check: (status, detail)})."""
    done = subprocess.run([str(BIN / "bluegreen"), "doctor", *args], cwd=REPO, env=project_env(project),
                          capture_output=True, text=True, timeout=120)
    lines = {}
    for line in done.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status in (PASS, FAIL, SKIP):
            check, detail = rest[:10].strip(), rest[11:]
            lines[check] = (status, detail)
    assert lines, f"no check lines in:\n{done.stdout}\n{done.stderr}"
    return done.returncode, lines


def in_process(monkeypatch: pytest.MonkeyPatch, project: Project, **options) -> tuple[int, dict[str, tuple[str, str]]]:
    out: list[str] = []
    code = run_doctor(Options(**options), out=out.append)
    return code, {line[6:16].strip(): (line[:4], line[17:]) for line in out[:-1]}


# --------------------------------------------------------------------------------------------------------------
# a real webserver and daemon


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("doctor"))
    dagster_home(project.root)
    with running_webserver(project) as url:
        project.reconfigure(alerts={"dagster_webserver_url": url})
        with running_daemon(project):
            last: list = []

            def healthy():
                last[:] = [doctor(project)]
                return last[0][0] == 0

            wait_for(healthy, 180, f"doctor to pass once the daemon's sensor ticked (last: {last})", interval=2)
            yield project, url


@pytest.mark.slow  # the real daemon
def test_every_check_passes_on_a_healthy_deployment(stack) -> None:
    project, url = stack
    code, lines = doctor(project)
    assert code == 0
    assert [c for c, (s, _) in lines.items() if s == PASS] == ["config", "data dir", "target", "dagster", "daemon",
                                                                "webserver", "sensor"]
    assert lines["arrow"] == (SKIP, "the embedded target has no Arrow server")
    assert url in lines["webserver"][1]
    assert lines["sensor"][1].startswith("snapshot_sensor running, last tick")


@pytest.mark.slow  # the real daemon
def test_webserver_down_says_where_it_looked(stack) -> None:
    project, _ = stack
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, lines = doctor(project, "--webserver-url", nowhere)
    assert code == 1
    status, detail = lines["webserver"]
    assert status == FAIL and nowhere in detail and "dagster-webserver -w workspace.yaml" in detail
    assert lines["daemon"][0] == PASS and lines["sensor"][0] == PASS  # only that line fails


@pytest.mark.slow  # the real daemon
def test_stale_heartbeat_names_each_daemon_and_its_age(stack) -> None:
    project, _ = stack
    code, lines = doctor(project, "--heartbeat-max-age", "0")  # every heartbeat is older than 0 s
    assert code == 1
    status, detail = lines["daemon"]
    assert status == FAIL and re.search(r"SENSOR \(\d+ s ago\)", detail), detail
    assert "QUEUED_RUN_COORDINATOR" in detail and "start exactly one `dagster-daemon run" in detail


@pytest.mark.slow  # the real daemon
def test_stopped_sensor_fails_with_how_to_start_it(stack) -> None:
    project, _ = stack
    stop = subprocess.run([str(BIN / "dagster"), "sensor", "stop", "snapshot_sensor", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, env=project_env(project), capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    code, lines = doctor(project)
    assert code == 1
    assert lines["sensor"][0] == FAIL and "snapshot_sensor is stopped" in lines["sensor"][1]
    assert "dagster sensor start snapshot_sensor" in lines["sensor"][1]


# --------------------------------------------------------------------------------------------------------------
# no processes needed


def test_daemon_not_running(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(project.root)))
    code, lines = in_process(monkeypatch, project, webserver_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    assert code == 1
    assert lines["dagster"][0] == PASS
    assert lines["daemon"][0] == FAIL and "SENSOR (never)" in lines["daemon"][1]
    assert "start exactly one `dagster-daemon run -w workspace.yaml`" in lines["daemon"][1]
    assert lines["sensor"][0] == FAIL and "never ticked" in lines["sensor"][1]


def test_missing_dagster_home(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    code, lines = in_process(monkeypatch, project, webserver_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    assert code == 1
    assert lines["dagster"][0] == FAIL and "DAGSTER_HOME is not set" in lines["dagster"][1]
    assert lines["daemon"] == (SKIP, "needs a usable DAGSTER_HOME (see the dagster line)")


def test_bad_data_dir(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.reconfigure(dataset={"base_path": "no-such-folder"})
    code, lines = in_process(monkeypatch, project, timeout=2)
    assert code == 1
    status, detail = lines["data dir"]
    assert status == FAIL and "no-such-folder is not a folder" in detail and "dataset.base_path" in detail


def test_bad_config_skips_what_depends_on_it(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    project.config_file.write_text("orchestrator:\n  keep_databases: 0\n")
    code, lines = in_process(monkeypatch, project, timeout=2)
    assert code == 1
    assert lines["config"][0] == FAIL and "orchestrator.keep_databases" in lines["config"][1]
    for check in ("data dir", "target", "arrow"):
        assert lines[check] == (SKIP, "needs a valid config (see the config line)")


# --------------------------------------------------------------------------------------------------------------
# Neo4j: the stand-in's Bolt and GDS Arrow servers


def neo4j_project(project: Project, monkeypatch: pytest.MonkeyPatch, bolt_port: int, arrow_port: int) -> None:
    monkeypatch.setenv("DOCTOR_NEO4J_PASSWORD", PASSWORD)
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": bolt_port, "arrow_port": arrow_port,
                                               "password": "${DOCTOR_NEO4J_PASSWORD}"})


def test_arrow_v1_offered_by_the_gds_arrow_server(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_standin(password=PASSWORD) as standin:
        neo4j_project(project, monkeypatch, standin.bolt_port, standin.arrow.port)
        code, lines = in_process(monkeypatch, project, timeout=5)
    assert lines["target"][0] == PASS and "neo4j target healthy" in lines["target"][1]
    assert lines["arrow"] == (PASS, f"GDS Arrow at 127.0.0.1:{standin.arrow.port} offers protocol v1 (versions: v1)")
    assert PASSWORD not in str(lines)


def test_arrow_port_closed(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()
    with start_standin(password=PASSWORD, arrow=False) as standin:
        neo4j_project(project, monkeypatch, standin.bolt_port, closed)
        code, lines = in_process(monkeypatch, project, timeout=5)
    assert code == 1
    status, detail = lines["arrow"]
    assert status == FAIL and f"GDS Arrow port 127.0.0.1:{closed} is not open" in detail
    assert "gds.arrow.enabled=true" in detail
    assert lines["target"][0] == PASS  # Bolt answers: only Arrow is missing


def test_neo4j_unreachable(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    neo4j_project(project, monkeypatch, free_port(), free_port())
    code, lines = in_process(monkeypatch, project, timeout=2)
    assert code == 1
    assert lines["target"][0] == FAIL and "neo4j target unreachable" in lines["target"][1]
    assert PASSWORD not in str(lines)
