"""Run inside a container of the stack (the repository's tests/ mounted at /opt/bluegreen/tests), with the
image's neo4j driver and the queries the target answers (bluegreen_dagster/targets/neo4j/queries.py):

    python3 -m tests.stack.probe read CUSTOMER...   # a reader: count each alias's graph every 0.5 s, forever
    python3 -m tests.stack.probe databases          # every database with its node and relationship counts

One JSON line per read or database on stdout (the nemesis test reads them with `docker logs` / exec)."""

from __future__ import annotations

import json
import os
import sys
import time

import neo4j

from bluegreen_dagster.targets.neo4j import queries


def driver() -> neo4j.Driver:
    return neo4j.GraphDatabase.driver(f"bolt://{os.environ.get('NEO4J_HOST', 'neo4j')}:7687",
                                      auth=(os.environ.get("NEO4J_USER", "neo4j"), os.environ["NEO4J_PASSWORD"]),
                                      connection_timeout=5, max_transaction_retry_time=0)


def counts(session: neo4j.Session) -> tuple[int, int]:
    """Both counts in one transaction: Neo4j resolves an alias for each transaction, so two auto-commit statements
    can read two databases across a switch (docs/neo4j-readers.md). No retry: every failure is one unavailable read."""
    with session.begin_transaction() as tx:
        nodes = tx.run(queries.COUNT_NODES).single()["count"]
        relationships = sum(record["count"] for record in tx.run(queries.COUNT_BY_TYPE))
    return nodes, relationships


def read(customers: list[str]) -> None:
    d = driver()
    while True:
        for customer in customers:
            started = time.time()
            try:
                with d.session(database=customer) as session:
                    nodes, relationships = counts(session)
                row = {"customer": customer, "nodes": nodes, "relationships": relationships}
            except Exception as exc:  # noqa: BLE001 - every failure is one unavailable read
                row = {"customer": customer, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                try:
                    d.close()
                except Exception:  # noqa: BLE001
                    pass
                d = driver()
            print(json.dumps({"time": started, **row}), flush=True)
        time.sleep(0.5)


def databases() -> None:
    with driver() as d:
        with d.session(database="system") as session:
            rows = list(session.run(queries.LIST_DATABASES, prefix=""))
        for row in rows:
            with d.session(database=row["name"]) as session:
                nodes, relationships = counts(session)
            print(json.dumps({"name": row["name"], "status": row["currentStatus"], "nodes": nodes,
                              "relationships": relationships}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(sys.argv[2:])
    else:
        databases()
