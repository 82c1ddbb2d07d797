"""Opt-in: end-to-end against a REAL Neo4j Enterprise 5.x (+ GDS Arrow) server. Skipped unless NEO4J_URI is set.

    NEO4J_URI=bolt://localhost:7687 NEO4J_PASSWORD=... [NEO4J_USER=neo4j] [GDS_ARROW_PORT=8491] \
        .venv/bin/pytest -m neo4j_enterprise tests/test_neo4j_enterprise_optin.py

Without GDS_ARROW_PORT the Cypher loader is used. Creates databases named `bgtest<random>-<timestamp>` and an
alias `bgtest<random>`, and removes them at the end. This is the only test that settles the UNVERIFIED points of
the reference (string properties over Arrow, LOAD_DONE timing, alias error codes).
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlparse

import pytest

from bluegreen_dagster import bluegreen
from bluegreen_dagster.config import Settings
from bluegreen_dagster.config_neo4j import TopologySettings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError, TargetError
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget

pytestmark = [
    pytest.mark.neo4j_enterprise,
    pytest.mark.skipif(not os.environ.get("NEO4J_URI"), reason="set NEO4J_URI (and NEO4J_PASSWORD, optional "
                                                                "GDS_ARROW_PORT) to run against Neo4j Enterprise"),
]


@pytest.fixture
def target():
    uri = urlparse(os.environ["NEO4J_URI"])
    arrow_port = os.environ.get("GDS_ARROW_PORT")
    settings = Settings.model_validate({"target": "neo4j", "neo4j": {
        "host": uri.hostname or "localhost", "bolt_port": uri.port or 7687,
        "user": os.environ.get("NEO4J_USER", "neo4j"), "password": os.environ.get("NEO4J_PASSWORD", ""),
        "tls": uri.scheme.endswith("+s"), "loader": "arrow" if arrow_port else "cypher",
        "arrow_port": int(arrow_port or 8491), "batch_size": 5_000, "online_timeout": 300,
        # The demo snapshot has string node properties: this suite is what verifies them on a real GDS.
        "arrow_string_properties": True}})
    with Neo4jTarget(settings) as t:
        yield t


def test_load_verify_switch_cleanup(target, tmp_path):
    customer = f"bgtest{secrets.token_hex(3)}"
    timestamps = [1767741527, 1767741600, 1767741700]
    try:
        health = target.health()
        assert health.measurements["edition"] == "enterprise", health.measurements
        for ts in timestamps:
            write_snapshot(tmp_path / "data", customer, ts, people=2_000)
            snapshot = snapshot_at(tmp_path / "data", customer, ts)
            expected = expected_counts(snapshot)
            report = target.load(snapshot)
            assert (report.nodes, report.relationships) == (expected.nodes, expected.relationships)
            assert target.load(snapshot).reused  # idempotent re-run
            assert bluegreen.verify(target, snapshot.key, expected) == expected
            result = bluegreen.switch_if_newest(target, snapshot.key, expected)
            assert result.switched and target.alias_target(customer) == snapshot.key

        newest = f"{customer}-{timestamps[-1]}"
        with pytest.raises(PermanentTargetError, match="alias"):
            target.drop_database(newest)  # RESTRICT: the live target cannot be dropped

        cleaned = bluegreen.cleanup(target, customer, keep=1, in_flight=set)
        assert sorted(cleaned.dropped) == sorted(f"{customer}-{ts}" for ts in timestamps[:-1])
        assert [d.name for d in target.list_databases(customer)] == [newest]
    finally:
        problems = _remove_everything(target, customer)
    if problems:  # reported after the test's own result, never instead of it
        pytest.fail(f"could not clean up on the server: {'; '.join(problems)}")


def test_readers_through_the_alias_see_zero_downtime_during_20_switches(target, tmp_path):
    """The zero-downtime loop of tests/test_zero_downtime.py against real Enterprise: three processes read through
    the alias with the driver while 20 snapshots of different sizes are loaded, verified, switched and cleaned up
    (keep 2), one after another as fast as the server takes them. The readers are a non-admin user of a reader
    role (neo4j.reader_roles), proved before each switch (neo4j.reader_users)."""
    import json
    import time

    from tests.zero_downtime_readers import first_reads_done, neo4j_reader, reader_processes, summarize

    customer = f"bgtest{secrets.token_hex(3)}"
    role, user, password = f"{customer}-reader", f"{customer}reader", secrets.token_hex(12)
    reader_args = (os.environ["NEO4J_URI"], user, password, customer)
    valid, switch_times = {}, []
    admin_target = target
    target = Neo4jTarget(target.settings.model_copy(update={"neo4j": target.settings.neo4j.model_copy(
        update={"reader_roles": [role], "reader_users": [user]})}))

    def load_and_switch(i: int) -> None:
        write_snapshot(tmp_path / "data", customer, 1767741527 + i, people=100 + 20 * i)
        snapshot = snapshot_at(tmp_path / "data", customer, 1767741527 + i)
        expected = expected_counts(snapshot)
        valid[(expected.nodes, expected.relationships)] = i
        target.load(snapshot)
        bluegreen.verify(target, snapshot.key, expected)
        started = time.time()
        assert bluegreen.switch_if_newest(target, snapshot.key, expected).switched
        if i:  # the first switch happens before the readers start
            switch_times.append((started + time.time()) / 2)
        bluegreen.cleanup(target, customer, keep=2, in_flight=set)

    try:
        _create_reader(admin_target, role, user, password)
        load_and_switch(0)
        with reader_processes(neo4j_reader, reader_args, tmp_path) as readers:
            deadline = time.monotonic() + 60
            while not first_reads_done(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.2)
            for i in range(1, 21):
                load_and_switch(i)
            time.sleep(1.0)
        result, problems = summarize(readers, tmp_path, valid, switch_times)
        print("zero_downtime " + json.dumps({**result, "target": "neo4j", "loader": target.settings.neo4j.loader}))
        assert not problems, "\n".join(problems)
    finally:
        target.close()
        problems = _remove_everything(admin_target, customer) + _remove_reader(admin_target, role, user)
    if problems:
        pytest.fail(f"could not clean up on the server: {'; '.join(problems)}")


def _create_reader(target: Neo4jTarget, role: str, user: str, password: str) -> None:
    """A role and a non-admin user of it (test-only statements; the stand-in knows them too)."""
    target.admin.run("CREATE ROLE $role IF NOT EXISTS", {"role": role})
    target.admin.run("CREATE USER $user IF NOT EXISTS SET PASSWORD $password CHANGE NOT REQUIRED",
                     {"user": user, "password": password})
    target.admin.run("GRANT ROLE $role TO $user", {"role": role, "user": user})


def _remove_reader(target: Neo4jTarget, role: str, user: str) -> list[str]:
    problems = []
    for statement, params in (("DROP USER $user IF EXISTS", {"user": user}),
                              ("DROP ROLE $role IF EXISTS", {"role": role})):
        try:
            target.admin.run(statement, params)
        except TargetError as exc:
            problems.append(str(exc))
    return problems


def _remove_everything(target: Neo4jTarget, customer: str) -> list[str]:
    problems = []
    try:  # test-only statement (not in queries.py); its parse is checked in test_neo4j_community.py
        target.admin.run("DROP ALIAS $alias IF EXISTS FOR DATABASE", {"alias": customer})
    except TargetError as exc:
        problems.append(str(exc))
    try:
        for info in target.list_databases(customer):
            target.drop_database(info.name)
    except TargetError as exc:
        problems.append(str(exc))
    return problems


def test_a_reader_role_keeps_reading_through_the_alias_across_switches(target, tmp_path):
    """A non-admin user of a reader role, granted ACCESS and MATCH on the alias once (which Neo4j stores against
    the database the alias points at then), counts nodes through the alias while 5 snapshots switch, the alias
    rolls back one and moves forward again: no refused read, no empty count. Access follows the alias
    (targets/neo4j/access.py); the reader's read of each new database is proved before the switch."""
    import threading
    import time

    import neo4j

    from bluegreen_dagster.targets.neo4j import queries

    customer = f"bgtest{secrets.token_hex(3)}"
    role, user, password = f"{customer}-reader", f"{customer}reader", secrets.token_hex(12)
    proving_settings = target.settings.model_copy(update={"neo4j": target.settings.neo4j.model_copy(
        update={"reader_users": [user]})})
    reads: list = []
    stop = threading.Event()

    def reader_loop() -> None:
        with neo4j.GraphDatabase.driver(os.environ["NEO4J_URI"], auth=(user, password)) as driver:
            while not stop.is_set():
                try:
                    with driver.session(database=customer, default_access_mode=neo4j.READ_ACCESS) as session, \
                            session.begin_transaction() as tx:
                        reads.append(tx.run(queries.COUNT_NODES).single()["count"])
                except neo4j.exceptions.Neo4jError as exc:
                    reads.append(f"{exc.code}: {exc.message}")
                time.sleep(0.01)

    def load_and_switch(graph: Neo4jTarget, ts: int) -> None:
        write_snapshot(tmp_path / "data", customer, ts, people=200 + ts % 100)
        snapshot = snapshot_at(tmp_path / "data", customer, ts)
        expected = expected_counts(snapshot)
        graph.load(snapshot)
        assert bluegreen.switch_if_newest(graph, snapshot.key, expected).switched

    timestamps = [1767741527 + i for i in range(6)]
    try:
        _create_reader(target, role, user, password)
        load_and_switch(target, timestamps[0])
        target.admin.run(queries.GRANT_ACCESS, {"database": customer, "role": role})  # on the alias, by hand
        target.admin.run(queries.GRANT_MATCH, {"database": customer, "role": role})
        thread = threading.Thread(target=reader_loop, daemon=True)
        thread.start()
        with Neo4jTarget(proving_settings) as proving:
            for ts in timestamps[1:]:
                load_and_switch(proving, ts)
                bluegreen.cleanup(proving, customer, keep=2, in_flight=set)
            proving.point_alias(customer, f"{customer}-{timestamps[-2]}")  # a rollback's move
            proving.point_alias(customer, f"{customer}-{timestamps[-1]}")
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=30)
        failed = [r for r in reads if isinstance(r, str)]
        assert len(reads) > 10 and not failed and 0 not in reads, (len(reads), failed[:3])
    finally:
        stop.set()
        problems = _remove_everything(target, customer) + _remove_reader(target, role, user)
    if problems:
        pytest.fail(f"could not clean up on the server: {'; '.join(problems)}")


def test_topology_on_a_real_cluster(tmp_path):
    """A licensed cluster (SHOW SERVERS lists more than one server; skipped otherwise), reached through NEO4J_URI
    as given (neo4j:// routes): a database created with a TOPOLOGY runs on that many servers before it is verified
    and switched, and health is measured on every Enabled server. NEO4J_TOPOLOGY="p,s" picks the counts (default:
    up to 3 primaries, no secondaries)."""
    settings = Settings.model_validate({"target": "neo4j", "neo4j": {
        "uri": os.environ["NEO4J_URI"], "user": os.environ.get("NEO4J_USER", "neo4j"),
        "password": os.environ.get("NEO4J_PASSWORD", ""), "loader": "cypher", "batch_size": 5_000,
        "online_timeout": 300}})
    with Neo4jTarget(settings) as probe:
        enabled = [s for s in probe.admin.servers() if s.get("state") == "Enabled"]
    if len(enabled) < 2:
        pytest.skip("not a cluster: SHOW SERVERS lists fewer than two Enabled servers")
    primaries, secondaries = (int(n) for n in os.environ.get("NEO4J_TOPOLOGY", f"{min(3, len(enabled))},0")
                              .split(","))
    settings.neo4j.topology = TopologySettings(primaries=primaries, secondaries=secondaries)
    customer = f"bgtest{secrets.token_hex(3)}"
    with Neo4jTarget(settings) as target:
        try:
            health = target.health()
            assert {f"heap_percent@{s['name']}" for s in enabled} <= set(health.measurements), health.measurements
            write_snapshot(tmp_path / "data", customer, 1767741527, people=500)
            snapshot = snapshot_at(tmp_path / "data", customer, 1767741527)
            expected = expected_counts(snapshot)
            target.load(snapshot)
            rows = target.admin.allocation(snapshot.key)
            roles = sorted(r["role"] for r in rows if r["currentStatus"] == "online")
            assert roles == sorted(["primary"] * primaries + ["secondary"] * secondaries), rows
            assert bluegreen.verify(target, snapshot.key, expected) == expected
            assert bluegreen.switch_if_newest(target, snapshot.key, expected).switched
        finally:
            problems = _remove_everything(target, customer)
    if problems:
        pytest.fail(f"could not clean up on the server: {'; '.join(problems)}")
