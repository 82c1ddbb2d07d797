"""The password never leaves the GDS Arrow path either: a Flight server that echoes the password in its errors
(as a server or a library may put a connection's credentials into a message), on an action and on a DoPut
stream. The run fails with the server's sentence, blanked, and no event of the run, no log line and no
exception text holds the password (tests/faults/test_secret_faults.py does the same for the Bolt path)."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project, make_project
from tests.dagster_processes import dagster_home
from tests.faults.harness import run_partition, user_message
from tests.faults.test_secret_faults import PASSWORD, assert_no_secret, everything_logged
from tests.standin.flight_server import GdsArrowServer, status_error
from tests.standin.server import start_standin


class EchoingArrowServer(GdsArrowServer):
    """The stand-in's Flight server, except that one kind of call fails with a message holding the password."""

    echo_on = "v1/CREATE_DATABASE"

    def _echo(self, what: str) -> Exception:
        return status_error("INVALID_ARGUMENT", f"{what} refused for user neo4j with password {PASSWORD} "
                                                f"(basic {PASSWORD})")

    def do_action(self, context, action):
        if action.type == self.echo_on:
            raise self._echo(action.type)
        return super().do_action(context, action)

    def do_put(self, context, descriptor, reader, writer):
        if self.echo_on == "DoPut":
            raise self._echo("DoPut")
        return super().do_put(context, descriptor, reader, writer)


@pytest.fixture(params=["v1/CREATE_DATABASE", "DoPut", "v1/NODE_LOAD_DONE"])
def echoing(request):
    with start_standin(password=PASSWORD, arrow=False) as standin:
        standin.arrow = EchoingArrowServer(standin.dbms).start()  # stopped by start_standin
        standin.arrow.accept_string_properties = True
        standin.arrow.echo_on = request.param
        yield standin


@pytest.fixture
def arrow_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, echoing) -> Project:
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    settings = {**echoing.neo4j_settings(), "password": "${NEO4J_PASSWORD}", "online_timeout": 10,
                "arrow_string_properties": True, "loader": "arrow"}
    project = make_project(tmp_path, target="neo4j", neo4j=settings)
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(project.config_file))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(project.root)))
    return project


def test_an_arrow_error_echoing_the_password_is_blanked_everywhere(arrow_project: Project, echoing,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    write_snapshot(arrow_project.data, "acme", 100, people=30)
    caplog.set_level(logging.DEBUG)
    with dg.DagsterInstance.get() as instance:
        result = run_partition(arrow_project, instance, "acme-100")
        assert not result.success
        logged = everything_logged(instance, result.run_id)
    message = user_message(result)
    assert "refused for user neo4j with password ***" in message, message  # the server's sentence, blanked
    assert_no_secret("the run's event log", logged)
    assert_no_secret("the failure shown to the user", message)
    assert_no_secret("Python log records", "\n".join(r.getMessage() for r in caplog.records) or "(no records)")
    assert echoing.dbms.aliases == {}
