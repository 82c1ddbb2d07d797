"""A cluster read as one answer (targets/neo4j/cluster.py) on the Enterprise stand-in with three members, each with
a Bolt listener of its own: per-server SHOW DATABASES rows merged, transient member states never a reason to drop,
neo4j.topology reaching CREATE DATABASE and the load waiting until every allocated member runs the database,
neo4j:// routing, the Arrow loader refused, health measured on every server (unknown when unreadable)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bluegreen_dagster.bluegreen import cleanup
from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError, TransientTargetError
from bluegreen_dagster.targets.neo4j.cluster import merged_status
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import standin_settings
from tests.standin.bolt_server import BoltServer

T0 = 1767741527


@pytest.fixture
def standin(standin):
    """The stand-in of tests/conftest.py, with three cluster members, each listening on a port of its own (its
    address in SHOW SERVERS and in the routing table), all sharing the one Dbms. The stand-in's own listener plays
    the address an operator configures (a load balancer, or any member)."""
    dbms = standin.dbms
    dbms.servers = ["server-1", "server-2", "server-3"]
    members = [BoltServer(dbms, member=name).start() for name in dbms.servers]
    dbms.server_addresses = {m.executor.member: f"127.0.0.1:{m.port}" for m in members}
    try:
        yield standin
    finally:
        for member in members:
            member.stop()


def make_target(standin, tmp_path: Path, **neo4j_settings) -> Neo4jTarget:
    settings = {"online_timeout": 3, "loader": "cypher", **neo4j_settings}
    return Neo4jTarget(standin_settings(standin, tmp_path, **settings),
                       poll_interval=0.05)


def snapshot(tmp_path: Path, ts: int):
    write_snapshot(tmp_path / "data", "acme", ts, people=30)
    return snapshot_at(tmp_path / "data", "acme", ts)


def test_per_server_states_merge_into_one_and_transient_ones_stay_undecided():
    assert merged_status(["online", "online", "online"]) == "online"
    assert merged_status(["online", "unknown", "online"]) == "unknown"
    assert merged_status(["online", "deallocating"]) == "deallocating"
    assert merged_status(["online", "offline"]) == "mixed"
    assert merged_status(["offline", "offline"]) == "offline"
    assert merged_status([]) is None


def test_one_member_unknown_drops_nothing_for_it_and_cleanup_goes_on_when_it_is_back(standin, tmp_path):
    dbms = standin.dbms
    for ts in (T0, T0 + 1, T0 + 2):
        dbms.add_database(f"acme-{ts}", nodes={1: ("Person",)})
    dbms.create_alias("acme", f"acme-{T0 + 2}")
    dbms.member_status[(f"acme-{T0}", "server-3")] = "unknown"
    dbms.member_status[(f"acme-{T0 + 1}", "server-2")] = "deallocating"
    with make_target(standin, tmp_path) as target:
        assert [d.status for d in target.list_databases("acme")] == ["unknown", "deallocating", "online"]
        result = cleanup(target, "acme", keep=1, in_flight=set)
        assert result.dropped == [] and set(result.protected) == {f"acme-{T0}", f"acme-{T0 + 1}"}
        dbms.member_status.clear()
        assert sorted(cleanup(target, "acme", keep=1, in_flight=set).dropped) == [f"acme-{T0}", f"acme-{T0 + 1}"]


def test_a_load_waits_for_an_unknown_member_and_finishes_when_it_is_back(standin, tmp_path):
    dbms = standin.dbms
    snap = snapshot(tmp_path, T0)
    original = dbms.create_database

    def create_with_a_silent_member(name):  # the new database's third member does not answer for a while
        db = original(name)
        dbms.member_status[(db.name, "server-3")] = "unknown"
        threading.Timer(0.5, dbms.member_status.clear).start()
        return db

    dbms.create_database = create_with_a_silent_member
    with make_target(standin, tmp_path) as target:
        report = target.load(snap)
    assert report.nodes > 0 and dbms.databases[snap.key].graph.nodes


def test_an_existing_database_a_member_reports_unknown_is_never_dropped_by_load(standin, tmp_path):
    snap = snapshot(tmp_path, T0)
    standin.dbms.add_database(snap.key, nodes={1: ("Person",)})
    standin.dbms.member_status[(snap.key, "server-2")] = "unknown"
    with make_target(standin, tmp_path) as target, pytest.raises(TransientTargetError, match="unknown"):
        target.load(snap)
    assert snap.key in standin.dbms.databases


def test_the_arrow_loader_is_refused_on_a_cluster_unless_the_operator_says_so(standin, tmp_path):
    snap = snapshot(tmp_path, T0)
    with make_target(standin, tmp_path, loader="arrow") as target, \
            pytest.raises(PermanentTargetError, match=r"cluster of 3 servers.*neo4j.loader: cypher"):
        target.load(snap)
    assert snap.key not in standin.dbms.databases
    with make_target(standin, tmp_path, loader="arrow", arrow_on_cluster=True) as target:
        assert target.load(snap).nodes > 0


def test_health_reports_a_measure_it_cannot_read_as_unknown(standin, tmp_path):
    standin.dbms.fail_next("PAGECACHE", "Neo.TransientError.General.DatabaseUnavailable",
                           "Database 'neo4j' is unavailable.", times=10_000)  # unreadable however often retried
    with make_target(standin, tmp_path) as target:
        health = target.health()
    assert health.ok and health.measurements["pagecache_percent"] == "unknown"


@pytest.mark.neo4j_community
def test_a_server_that_does_not_list_servers_counts_as_one_on_real_community(neo4j_community, tmp_path):
    from bluegreen_dagster.targets.neo4j.admin import Admin

    uri, user, password = neo4j_community
    host, port = uri.removeprefix("bolt://").rstrip("/").rsplit(":", 1)
    settings = parse_settings({"target": "neo4j", "neo4j": {"host": host, "bolt_port": int(port), "user": user,
                                                            "password": password}}, root=tmp_path)
    admin = Admin(settings.neo4j)
    try:
        assert admin.server_count() == 1
    finally:
        admin.close()
