"""The deploy files run for real: deploy/Dockerfile builds, and deploy/docker-compose.yaml (with only what cannot
exist here swapped, tests/stack/docker-compose.override.yaml) refreshes graphs as an operator sees it: snapshots
dropped into the snapshots volume are loaded and switched by the sensor, `bluegreen status --json` and the
webserver's GraphQL say so, `bluegreen doctor` passes inside the stack, the metrics endpoint answers, and
Prometheus (deploy/prometheus.yml) scrapes it and serves the live snapshot per customer."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.stack


def test_the_stack_loads_and_switches_snapshots_dropped_into_its_volume(stack):
    first = int(time.time()) - 100
    stack.drop_snapshot("acme-corp", first, people=2000)
    stack.drop_snapshot("globex", first, people=500)
    waited = stack.wait_for_alias("acme-corp", f"acme-corp-{first}", timeout=300)
    stack.wait_for_alias("globex", f"globex-{first}", timeout=120)
    print(f"[stack] first snapshot live after {waited:.0f}s")

    second = first + 50  # a newer snapshot: the alias moves, blue/green
    stack.drop_snapshot("acme-corp", second, people=2100)
    stack.wait_for_alias("acme-corp", f"acme-corp-{second}", timeout=180)

    # A reader on another host of the stack opens the alias and reads the new graph whole.
    read = stack.python("daemon", "import os, neo4j\n"
                                  "with neo4j.GraphDatabase.driver('bolt://neo4j:7687', auth=('neo4j', "
                                  "os.environ['NEO4J_PASSWORD'])) as d:\n"
                                  "    print(d.execute_query('MATCH (n) RETURN count(n) AS count', database_='acme-corp')"
                                  ".records[0]['count'])")
    assert int(read.strip()) == 2100

    status = stack.status()
    assert status["target"] == "neo4j"
    acme = next(row for row in status["customers"] if row["customer"] == "acme-corp")
    assert {d["name"] for d in acme["databases"]} >= {f"acme-corp-{first}", f"acme-corp-{second}"}

    runs = stack.graphql('{ runsOrError(filter: {statuses: [SUCCESS]}) { ... on Runs { results { runId '
                         'jobName tags { key value } } } } }')["data"]["runsOrError"]["results"]
    partitions = {tag["value"] for run in runs for tag in run["tags"] if tag["key"] == "dagster/partition"}
    assert {f"acme-corp-{first}", f"acme-corp-{second}", f"globex-{first}"} <= partitions

    doctor = stack.exec("daemon", "bluegreen", "doctor", "--webserver-url", "http://webserver:3000", check=False)
    report = doctor.stdout.decode() + doctor.stderr.decode()
    assert doctor.returncode == 0, report

    metrics = stack.python("daemon", "import urllib.request; print(urllib.request.urlopen("
                                     "'http://metrics:9108/metrics', timeout=30).read().decode())")
    assert 'customer="acme-corp"' in metrics, metrics[:2000]

    # Prometheus, as an operator asks it: its scrape of the exporter is up, and the live snapshot per customer it
    # stored is the one the aliases serve (it scrapes every 15 s: wait for a scrape after the last switch).
    deadline = time.monotonic() + 120
    while True:
        try:
            targets = stack.prometheus("/api/v1/targets")["data"]["activeTargets"]
            live = {sample["metric"]["customer"]: float(sample["value"][1]) for sample in stack.prometheus(
                "/api/v1/query", query="bluegreen_alias_snapshot_timestamp_seconds")["data"]["result"]}
        except OSError:  # not answering (yet): asked again until the deadline, then the error is the failure
            if time.monotonic() > deadline:
                raise
            time.sleep(3)
            continue
        if ([t["health"] for t in targets] == ["up"] and live == {"acme-corp": second, "globex": first}) \
                or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert [(t["labels"]["job"], t["scrapeUrl"], t["health"]) for t in targets] == \
        [("bluegreen", "http://metrics:9108/metrics", "up")], targets
    assert live == {"acme-corp": second, "globex": first}, live
