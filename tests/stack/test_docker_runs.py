"""Several hosts for real: deploy/docker-compose.yaml with deploy/docker-compose.docker-runs.yaml, where every run
starts in a container of its own (dagster-docker's DockerRunLauncher, deploy/dagster-docker.yaml). Two loads of
one customer run in two different containers, neither of them the code location's, against the one PostgreSQL
and the one target (the stand-in); then the nemesis (tests/stack/nemesis.py) runs over this same stack."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.stack import nemesis
from tests.stack.compose import SERVICES, Stack
from tests.stack.docker import DOCKER_RUNS_COMPOSE_FILES

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def runs_stack(built_images, tmp_path_factory):
    # No Prometheus here: tests/stack/test_compose.py checks it, and the nemesis needs the machine's cores.
    stack = Stack(built_images, tmp_path_factory.mktemp("runs-stack"), files=DOCKER_RUNS_COMPOSE_FILES,
                  services=[service for service in SERVICES if service != "prometheus"])
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def runs_of(stack: Stack, partitions: set[str]) -> dict[str, dict]:
    """partition -> {runId, status, tags} of the runs whose `dagster/partition` tag is one of `partitions`."""
    results = stack.graphql('{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }'
                            )["data"]["runsOrError"]["results"]
    found = {}
    for run in results:
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        if tags.get("dagster/partition") in partitions:
            found[tags["dagster/partition"]] = {"runId": run["runId"], "status": run["status"], "tags": tags}
    return found


def assert_two_loads_ran_in_two_containers(stack: Stack, customer: str, first: int, second: int) -> None:
    """Both loads of `customer` succeeded, each in a container of its own (neither the code location), on both
    networks, against the one PostgreSQL (their runs are in it) and the one target (its alias log)."""
    partitions = {f"{customer}-{first}", f"{customer}-{second}"}
    deadline = time.monotonic() + 180  # the alias moves in alias_switch; cleanup runs after it
    while (runs := runs_of(stack, partitions)) and time.monotonic() < deadline and \
            any(run["status"] in ("QUEUED", "STARTING", "STARTED") for run in runs.values()):
        time.sleep(2)
    assert set(runs) == partitions, runs
    assert {run["status"] for run in runs.values()} == {"SUCCESS"}, runs
    containers = {partition: run["tags"]["docker/container_id"] for partition, run in runs.items()}
    assert len(set(containers.values())) == 2, containers  # two hosts, one per load

    code_location = stack.container("bluegreen-code")
    hostnames = set()
    for partition, container in containers.items():
        inspected = json.loads(stack.docker.run("inspect", container).stdout)[0]
        # The run really ran in that container: Docker labelled it with the run's id, and it is not the code
        # location (where BluegreenRunLauncher would have run it as a child process).
        assert inspected["Config"]["Labels"]["dagster/run_id"] == runs[partition]["runId"]
        assert not code_location.startswith(container) and not container.startswith(code_location)
        assert inspected["State"]["ExitCode"] == 0, inspected["State"]
        # On both networks, reaching the one PostgreSQL and the one target by their service names.
        assert {"bluegreen-instance", "bluegreen-target"} <= set(inspected["NetworkSettings"]["Networks"])
        hostnames.add(inspected["Config"]["Hostname"])
        print(f"[stack] {partition}: run {runs[partition]['runId']} in container {container[:12]} "
              f"(hostname {inspected['Config']['Hostname']})", flush=True)
    assert len(hostnames) == 2

    # The same target served them: its alias log saw the alias move to the second.
    moves = [json.loads(line) for line in stack.exec("neo4j", "cat", "/tmp/alias-moves.jsonl").stdout.splitlines()]
    served = [move["database"] for move in moves if move["alias"] == customer]
    assert served[-1] == f"{customer}-{second}", moves


NEMESIS_CUSTOMERS = ["nemesis-a", "nemesis-b", "nemesis-c"]
# 0 (the default, for iterating locally): the two-containers proof only; .ci/run sets 10, the nemesis too
# (docs/hosts.md, "The nemesis test").
MINUTES = float(os.environ.get("BLUEGREEN_NEMESIS_MINUTES", "0"))


@pytest.mark.timeout(int(MINUTES * 60) + 2400)
def test_runs_in_containers_and_nemesis_partitions_pauses_kills_restarts_leave_every_guarantee_intact(
        runs_stack, tmp_path):
    """Two loads of one customer run in two containers; then BLUEGREEN_NEMESIS_MINUTES (default 0: none) of faults
    while snapshots land and readers read; then the faults stop, reconcile runs, and the checker reads the whole
    history (tests/stack/nemesis.py)."""
    stack = runs_stack
    minutes = MINUTES
    history = nemesis.History()
    reader = nemesis.start_reader(stack, NEMESIS_CUSTOMERS)
    producer = nemesis.Producer(stack, NEMESIS_CUSTOMERS, history, every=30)
    producer.start()
    started = time.monotonic()
    try:
        # Before the faults: every customer served (readers then have an alias to read), and two loads of the
        # first customer ran in two different containers (the several hosts the faults then pick from).
        while len(history.drops) < len(NEMESIS_CUSTOMERS) + 1:
            time.sleep(1)
        for drop in history.drops[1:len(NEMESIS_CUSTOMERS) + 1]:
            stack.wait_for_alias(drop.customer, f"{drop.customer}-{drop.timestamp}", timeout=420)
        first, second = history.drops[0], history.drops[len(NEMESIS_CUSTOMERS)]
        assert_two_loads_ran_in_two_containers(stack, first.customer, first.timestamp, second.timestamp)
        if not minutes:
            stack.docker.run("rm", "-f", reader, check=False)
            return
        # The minutes count from the first fault, not from the stack's warm-up above.
        nemesis.Nemesis(stack, history, log=lambda line: print(f"[nemesis] {line}", flush=True)).run(
            deadline=time.monotonic() + minutes * 60)
    finally:
        producer.stop.set()
        producer.join(timeout=120)
    # Healed: one more snapshot per customer, which must now be served (the checker says so when it is not,
    # with everything else it found), then reconcile runs.
    for customer in NEMESIS_CUSTOMERS:
        producer.drop(customer)
    for customer in NEMESIS_CUSTOMERS:
        newest = max(d.timestamp for d in history.drops if d.customer == customer)
        try:
            waited = stack.wait_for_alias(customer, f"{customer}-{newest}", timeout=300)
            print(f"[nemesis] {customer}-{newest} live {waited:.0f}s after the faults stopped")
        except AssertionError as exc:
            print(f"[nemesis] {exc}")
    reconcile = run_reconcile(stack)
    history.moves = nemesis.json_lines(stack.exec("neo4j", "cat", "/tmp/alias-moves.jsonl").stdout)
    history.reads = nemesis.json_lines(stack.docker.run("logs", reader, timeout=120).stdout)
    stack.docker.run("rm", "-f", reader, check=False)
    history.runs = stack.graphql('{ runsOrError { ... on Runs { results { runId status startTime endTime '
                                 'tags { key value } } } } }', service="webserver")["data"]["runsOrError"]["results"]
    history.databases = nemesis.probe_databases(stack)
    (tmp_path / "history.json").write_text(history.to_json())

    violations, rows = nemesis.check(history, NEMESIS_CUSTOMERS)
    outcomes = {}
    for run in history.runs:
        outcomes[run["status"]] = outcomes.get(run["status"], 0) + 1
    print(f"\n[nemesis] {minutes:g} min, {len(history.drops)} snapshots dropped, {len(history.moves)} alias moves, "
          f"{len(history.reads)} reads, runs {outcomes}, reconcile {reconcile}, producer errors "
          f"{len(producer.errors)}, took {time.monotonic() - started:.0f}s; history: {tmp_path / 'history.json'}")
    print(nemesis.format_table(rows), flush=True)
    for violation in violations:
        print(f"[nemesis] VIOLATION {violation.rule} at {violation.time:.1f}: {violation.evidence}")
    assert {row["fault"] for row in rows if row["injected"]} == set(nemesis.FAULTS), rows
    assert not violations, f"{len(violations)} violations (above)"


def run_reconcile(stack: Stack) -> str:
    """Launch the reconcile job (bluegreen_dagster/reconcile.py) and wait for its outcome."""
    stack.exec("webserver", "dagster", "job", "launch", "-w", "/opt/dagster/dagster_home/workspace.yaml",
               "-l", "bluegreen", "-j", "reconcile", timeout=300)
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        runs = stack.graphql('{ runsOrError(filter: {pipelineName: "reconcile"}) { ... on Runs { results { runId '
                             'status } } } }', service="webserver")["data"]["runsOrError"]["results"]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return f"{runs[0]['runId']} {runs[0]['status']}"
        time.sleep(3)
    raise AssertionError("the reconcile run did not finish within 420 s")
