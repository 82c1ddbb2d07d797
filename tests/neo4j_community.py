"""Pytest plugin: a real Neo4j Community 5.26 server (tests/neo4j_harness) for the `neo4j_community` tier.

Load it from tests/conftest.py with `pytest_plugins = ["tests.neo4j_community"]`. The session-scoped fixture
`neo4j_community` starts the launcher on a free port, waits until Bolt answers, yields (uri, user, password)
and stops the process by its pid. It skips with the reason when java or the built launcher is missing
(build it with tests/neo4j_harness/build.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

HARNESS_DIR = Path(__file__).resolve().parent / "neo4j_harness"
CLASSPATH_FILE = HARNESS_DIR / "target" / "classpath.txt"
CLASSES_DIR = HARNESS_DIR / "target" / "classes"
MAIN_CLASS = "bluegreen.harness.HarnessMain"
USER = "neo4j"
PASSWORD = "harness-password"  # a test server's password, not a secret
START_TIMEOUT = float(os.environ.get("NEO4J_HARNESS_START_TIMEOUT", "180"))


def harness_command(port: int) -> list[str] | str:
    """The java command line, or a string saying why it cannot run."""
    java = shutil.which("java")
    if java is None:
        return "java is not installed (the neo4j_community tier needs JDK 17)"
    if not CLASSPATH_FILE.is_file() or not (CLASSES_DIR / "bluegreen" / "harness" / "HarnessMain.class").is_file():
        return f"the Neo4j harness launcher is not built: run {HARNESS_DIR / 'build.sh'}"
    classpath = f"{CLASSES_DIR}{os.pathsep}{CLASSPATH_FILE.read_text().strip()}"
    return [java, "-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-cp", classpath, MAIN_CLASS, str(port), PASSWORD]


def _bolt_answers(uri: str) -> bool:
    import neo4j

    try:
        with neo4j.GraphDatabase.driver(uri, auth=(USER, PASSWORD), connection_timeout=2) as driver:
            driver.verify_connectivity()
        return True
    except Exception:  # noqa: BLE001 - still starting
        return False


@pytest.fixture(scope="session")
def neo4j_community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    port = free_port()
    command = harness_command(port)
    if isinstance(command, str):
        if os.environ.get("BLUEGREEN_REQUIRE_NEO4J") == "1":  # CI: this tier must run, never silently skip
            pytest.fail(f"{command} (BLUEGREEN_REQUIRE_NEO4J=1)")
        pytest.skip(command)
    log_file = tmp_path_factory.mktemp("neo4j-harness") / "harness.log"
    started = time.monotonic()
    with open(log_file, "w") as log:
        # stdin stays open as a pipe: the launcher exits by itself if this process dies and the pipe closes.
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                   text=True, start_new_session=True)
    uri_holder: list[str] = []

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("BOLT_URI=") and not uri_holder:
                uri_holder.append(line.strip().split("=", 1)[1].rstrip("/"))

    threading.Thread(target=read_stdout, daemon=True).start()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Neo4j harness exited with {process.returncode}; see {log_file}:\n"
                            + log_file.read_text()[-3000:])
            if uri_holder and _bolt_answers(uri_holder[0]):
                break
            if time.monotonic() - started > START_TIMEOUT:
                pytest.fail(f"the Neo4j harness did not answer on Bolt within {START_TIMEOUT:g}s; see {log_file}")
            time.sleep(0.3)
        print(f"\nneo4j harness up at {uri_holder[0]} in {time.monotonic() - started:.1f}s")  # noqa: T201
        yield uri_holder[0], USER, PASSWORD
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process.stdin:
            process.stdin.close()
