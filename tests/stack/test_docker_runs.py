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
from tests.stack.compose import Stack
from tests.stack.docker import DOCKER_RUNS_COMPOSE_FILES

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def runs_stack(built_images, tmp_path_factory):
    stack = Stack(built_images, tmp_path_factory.mktemp("runs-stack"), files=DOCKER_RUNS_COMPOSE_FILES)
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


@pytest.mark.timeout(1200)
def test_two_loads_of_one_customer_run_in_two_containers_against_one_postgres_and_one_target(runs_stack):
    stack = runs_stack
    first = int(time.time()) - 100
    second = first + 50
    stack.drop_snapshot("acme-corp", first, people=1500)
    stack.wait_for_alias("acme-corp", f"acme-corp-{first}", timeout=420)
    stack.drop_snapshot("acme-corp", second, people=1600)
    stack.wait_for_alias("acme-corp", f"acme-corp-{second}", timeout=300)

    runs = runs_of(stack, {f"acme-corp-{first}", f"acme-corp-{second}"})
    assert set(runs) == {f"acme-corp-{first}", f"acme-corp-{second}"}, runs
    assert {run["status"] for run in runs.values()} == {"SUCCESS"}, runs
    containers = {partition: run["tags"]["docker/container_id"] for partition, run in runs.items()}
    assert len(set(containers.values())) == 2, containers  # two hosts, one per load

    code_location = stack.container("bluegreen-code")
    for partition, container in containers.items():
        inspected = json.loads(stack.docker.run("inspect", container).stdout)[0]
        # The run really ran in that container: Docker labelled it with the run's id, and it is not the code
        # location (where BluegreenRunLauncher would have run it as a child process).
        assert inspected["Config"]["Labels"]["dagster/run_id"] == runs[partition]["runId"]
        assert not code_location.startswith(container) and not container.startswith(code_location)
        assert inspected["State"]["ExitCode"] == 0, inspected["State"]
        # On both networks, reaching the one PostgreSQL and the one target by their service names.
        assert {"bluegreen-instance", "bluegreen-target"} <= set(inspected["NetworkSettings"]["Networks"])
        print(f"[stack] {partition}: run {runs[partition]['runId']} in container {container[:12]} "
              f"(hostname {inspected['Config']['Hostname']})")
    hostnames = {json.loads(stack.docker.run("inspect", c).stdout)[0]["Config"]["Hostname"]
                 for c in containers.values()}
    assert len(hostnames) == 2

    # The same target served both: its alias log saw the alias move first -> second.
    moves = [json.loads(line) for line in stack.exec("neo4j", "cat", "/tmp/alias-moves.jsonl").stdout.splitlines()]
    served = [move["database"] for move in moves if move["alias"] == "acme-corp"]
    assert served[-2:] == [f"acme-corp-{first}", f"acme-corp-{second}"], moves


NEMESIS_CUSTOMERS = ["nemesis-a", "nemesis-b", "nemesis-c"]
MINUTES = float(os.environ.get("BLUEGREEN_NEMESIS_MINUTES", "10"))


@pytest.mark.timeout(int(MINUTES * 60) + 2400)
def test_nemesis_partitions_pauses_kills_and_restarts_leave_every_guarantee_intact(runs_stack, tmp_path):
    """BLUEGREEN_NEMESIS_MINUTES (default 10) of faults while snapshots land and readers read; then the faults
    stop, reconcile runs, and the checker reads the whole history (tests/stack/nemesis.py)."""
    stack = runs_stack
    minutes = MINUTES
    history = nemesis.History()
    reader = nemesis.start_reader(stack, NEMESIS_CUSTOMERS)
    producer = nemesis.Producer(stack, NEMESIS_CUSTOMERS, history, every=30)
    producer.start()
    started = time.monotonic()
    try:
        # The first snapshot of each customer live before the faults start (readers then have an alias to read).
        while len(history.drops) < len(NEMESIS_CUSTOMERS):
            time.sleep(1)
        for drop in list(history.drops):
            stack.wait_for_alias(drop.customer, f"{drop.customer}-{drop.timestamp}", timeout=420)
        nemesis.Nemesis(stack, history, log=lambda line: print(f"[nemesis] {line}", flush=True)).run(
            deadline=started + minutes * 60)
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
