"""A cluster read as one answer (targets/neo4j/cluster.py) on the Enterprise stand-in with three members, each with
a Bolt listener of its own: per-server SHOW DATABASES rows merged, transient member states never a reason to drop,
neo4j.topology reaching CREATE DATABASE and the load waiting until every allocated member runs the database,
neo4j:// routing, reads through the alias after a switch, the Arrow loader refused, health measured on every
server (unknown when unreadable)."""

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


# --- topology, allocation, routing, health on every server ---------------------------------------------------------

def cluster_settings(standin, tmp_path: Path, customers: dict | None = None, **neo4j_settings):
    section = {**standin_settings(standin, tmp_path).neo4j.model_dump(mode="json"), "online_timeout": 5,
               "loader": "cypher", "password": standin.dbms.password, **neo4j_settings}
    return parse_settings({"target": "neo4j", "neo4j": section, "dataset": {"base_path": str(tmp_path / "data")},
                           "customers": customers or {}}, root=tmp_path)


def rows_of(dbms, name: str) -> list[tuple[str, str, str]]:
    return [(r["serverID"], r["role"], r["currentStatus"]) for r in dbms.show_databases(count_poll=False)
            if r["name"] == name]


def test_topology_reaches_create_database_as_parameters_and_per_customer_over_the_global_one(standin, tmp_path):
    settings = cluster_settings(standin, tmp_path, topology={"primaries": 1, "secondaries": 1},
                                customers={"beta": {"topology": {"primaries": 3, "secondaries": 0}}})
    write_snapshot(tmp_path / "data", "beta", T0, people=10)
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        target.load(snapshot(tmp_path, T0))
        target.load(snapshot_at(tmp_path / "data", "beta", T0))
    sent = [e["parameters"] for e in standin.dbms.events_of("CREATE_DATABASE_TOPOLOGY")]
    assert sent == [{"name": f"acme-{T0}", "primaries": 1, "secondaries": 1},
                    {"name": f"beta-{T0}", "primaries": 3, "secondaries": 0}]
    assert not standin.dbms.events_of("CREATE_DATABASE")  # never the plain form while a topology is set
    assert rows_of(standin.dbms, f"acme-{T0}") == [("server-1", "primary", "online"),
                                                   ("server-2", "secondary", "online")]
    assert [role for _, role, _ in rows_of(standin.dbms, f"beta-{T0}")] == ["primary"] * 3


def test_a_topology_the_cluster_cannot_hold_is_refused_with_the_servers_reason_and_nothing_left(standin, tmp_path):
    settings = cluster_settings(standin, tmp_path, topology={"primaries": 3, "secondaries": 1})
    snap = snapshot(tmp_path, T0)
    with Neo4jTarget(settings, poll_interval=0.05) as target, \
            pytest.raises(PermanentTargetError, match=r"3 primaries and 1 secondaries.*only 3 enabled"):
        target.load(snap)
    assert snap.key not in standin.dbms.databases


@pytest.mark.parametrize("member_state", ["unknown", "starting"])
def test_the_load_waits_while_an_allocated_member_is_not_online_and_switches_when_it_is_back(
        standin, tmp_path, member_state):
    """Nothing is written, verified or switched while server-3 (a secondary of the new database) is `unknown` or
    `starting`; when it reports online the load goes on and the alias moves."""
    from bluegreen_dagster import bluegreen
    from bluegreen_dagster.snapshots import expected_counts

    dbms = standin.dbms
    settings = cluster_settings(standin, tmp_path, topology={"primaries": 2, "secondaries": 1})
    snap = snapshot(tmp_path, T0)
    back: list[int] = []

    def member_comes_back():
        with dbms.lock:
            back.append(len(dbms.events))
            dbms.member_status.clear()

    original = dbms.create_database

    def create_with_a_lagging_member(name, topology=None):
        db = original(name, topology)
        dbms.member_status[(db.name, "server-3")] = member_state
        threading.Timer(0.8, member_comes_back).start()
        return db

    dbms.create_database = create_with_a_lagging_member
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        target.load(snap)
        expected = expected_counts(snap)
        assert bluegreen.verify(target, snap.key, expected) == expected
        assert bluegreen.switch_if_newest(target, snap.key, expected).switched
    assert back, "the load finished before the member came back: it did not wait for it"
    before = [what for _, what, _ in dbms.events[:back[0]]]
    assert "CREATE_NODES" not in before and "ALTER_ALIAS" not in before and "CREATE_ALIAS" not in before
    assert dbms.alias_target("acme") == snap.key and snap.key in dbms.databases


def test_the_load_waits_until_the_running_copies_equal_the_requested_ones(standin, tmp_path, caplog):
    """Every listed member online is not enough: server-2 is allocated but has not reported the database yet, so
    1 of 2 primaries runs; the load waits (and says so) until it does."""
    dbms = standin.dbms
    settings = cluster_settings(standin, tmp_path, topology={"primaries": 2, "secondaries": 0})
    snap = snapshot(tmp_path, T0)
    listed: list[int] = []

    def reported():
        with dbms.lock:
            listed.append(len(dbms.events))
            dbms.unlisted.clear()

    original = dbms.create_database

    def create_allocated_but_unlisted(name, topology=None):
        db = original(name, topology)
        dbms.unlisted.add((db.name, "server-2"))
        threading.Timer(0.8, reported).start()
        return db

    dbms.create_database = create_allocated_but_unlisted
    with caplog.at_level("INFO"), Neo4jTarget(settings, poll_interval=0.05) as target:
        assert target.load(snap).nodes > 0
    assert listed and "CREATE_NODES" not in [what for _, what, _ in dbms.events[:listed[0]]]
    assert "1/2 primaries running" in caplog.text


def test_a_member_that_never_comes_back_fails_the_load_transiently_and_names_it(standin, tmp_path):
    dbms = standin.dbms
    settings = cluster_settings(standin, tmp_path, topology={"primaries": 2, "secondaries": 1}, online_timeout=0.5)
    snap = snapshot(tmp_path, T0)
    original = dbms.create_database

    def create_with_a_member_away(name, topology=None):
        db = original(name, topology)
        dbms.unlisted.add((db.name, "server-3"))
        return db

    dbms.create_database = create_with_a_member_away
    with Neo4jTarget(settings, poll_interval=0.05) as target, \
            pytest.raises(TransientTargetError, match=r"not running on every allocated server.*0/1 secondaries"):
        target.load(snap)
    assert dbms.aliases == {}


def test_neo4j_uri_routes_admin_work_to_the_writer_and_verification_reads_to_a_reader(standin, tmp_path):
    """A neo4j:// URI end to end (load, verify, switch, cleanup) through the stand-in's routing table: system work
    on the writer (server-1), the counts of verification on a reader member, every system read after a write
    carrying that write's bookmark."""
    from bluegreen_dagster import bluegreen
    from bluegreen_dagster.snapshots import expected_counts

    dbms = standin.dbms
    settings = cluster_settings(standin, tmp_path, uri=f"neo4j://127.0.0.1:{standin.bolt_port}",
                                topology={"primaries": 1, "secondaries": 2})
    assert settings.neo4j.routing and settings.neo4j.bolt_port == standin.bolt_port
    with Neo4jTarget(settings, poll_interval=0.05) as target:
        for ts in (T0, T0 + 1):
            snap = snapshot(tmp_path, ts)
            target.load(snap)
            expected = expected_counts(snap)
            mark = len(dbms.events)
            assert bluegreen.verify(target, snap.key, expected) == expected
            counted_on = {d.get("member") for _, what, d in dbms.events[mark:] if what == "COUNT_NODES"}
            assert counted_on and None not in counted_on and "server-1" not in counted_on, counted_on
            mark = len(dbms.events)
            assert bluegreen.switch_if_newest(target, snap.key, expected).switched
            after_move = dbms.events[mark:]
            moved_at = next(i for i, (_, what, _) in enumerate(after_move) if what in ("CREATE_ALIAS", "ALTER_ALIAS"))
            read_through_alias = {d.get("member") for _, what, d in after_move[moved_at:]
                                  if what == "BEGIN" and d.get("asked") == "acme" and d.get("db") == snap.key}
            assert read_through_alias and "server-1" not in read_through_alias, \
                "after the move nothing read through the alias on a reader member"
        assert bluegreen.cleanup(target, "acme", keep=1, in_flight=set).dropped == [f"acme-{T0}"]
        assert target.reader_location("acme") == f"neo4j://127.0.0.1:{standin.bolt_port} database=acme"
    assert dbms.alias_target("acme") == f"acme-{T0 + 1}"
    assert {e["db"] for e in dbms.events_of("ROUTE")} >= {"system"}
    assert {e.get("member") for e in dbms.events_of("ALTER_ALIAS")} == {"server-1"}
    assert dbms.events_of("BOOKMARKS"), "system sessions after a write sent no bookmark"



def test_a_switch_reads_through_the_alias_until_it_answers_the_new_database(standin, tmp_path):
    """After the move, reads through the alias are repeated while they answer another graph (a reader member that
    has not applied the move still serves the old one), compared with the counts verification just read: the new
    database is counted once when the alias answers at once. An alias that never answers it fails transiently."""
    from bluegreen_dagster import bluegreen
    from bluegreen_dagster.snapshots import expected_counts

    def grown(ts: int, people: int):
        write_snapshot(tmp_path / "data", "acme", ts, people=people)
        return snapshot_at(tmp_path / "data", "acme", ts)

    with make_target(standin, tmp_path, online_timeout=1) as target:
        real, counted, lagging = target.count, [], {"reads": 0, "serves": None}

        def count(database):  # the next `reads` reads through the alias answer the graph of `serves`
            counted.append(database)
            if database == "acme" and lagging["reads"]:
                lagging["reads"] -= 1
                return real(lagging["serves"])
            return real(database)

        target.count = count
        snaps = [grown(T0 + i, people) for i, people in enumerate((20, 30, 40, 50))]
        for snap in snaps:
            target.load(snap)
        assert bluegreen.switch_if_newest(target, snaps[0].key, expected_counts(snaps[0])).switched

        counted.clear()
        assert bluegreen.switch_if_newest(target, snaps[1].key, expected_counts(snaps[1])).switched
        assert counted == [snaps[1].key, "acme"], counted  # verified once, then one read through the alias

        counted.clear()
        lagging.update(reads=2, serves=snaps[1].key)
        assert bluegreen.switch_if_newest(target, snaps[2].key, expected_counts(snaps[2])).switched
        assert counted.count("acme") == 3 and lagging["reads"] == 0, counted

        lagging.update(reads=10 ** 6, serves=snaps[2].key)
        with pytest.raises(TransientTargetError, match="a reader member has not applied the move"):
            bluegreen.switch_if_newest(target, snaps[3].key, expected_counts(snaps[3]))

def test_bolt_uri_schemes_and_their_clashes(tmp_path):
    def neo4j(**section):
        return parse_settings({"target": "neo4j", "neo4j": {"password": "p", **section}}, root=tmp_path).neo4j

    assert (neo4j(uri="neo4j+s://db.example:7688").tls, neo4j(uri="neo4j+s://db.example:7688").host) == \
        (True, "db.example")
    assert not neo4j(uri="bolt://h").routing and neo4j(uri="bolt://h").bolt_port == 7687
    assert neo4j(uri="neo4j://h", host="h").routing  # the same host twice is no clash
    for bad, message in (("http://h:7474", "not a Bolt URI"), ("neo4j://h:7687/db", "not a Bolt URI"),
                         ("neo4j://h:99999", "invalid port")):
        with pytest.raises(Exception, match=message):
            neo4j(uri=bad)
    with pytest.raises(Exception, match="disagrees with neo4j.bolt_port"):
        neo4j(uri="neo4j://h:7688", bolt_port=7687)


def test_health_is_measured_on_every_server_and_one_over_its_threshold_is_named(standin, tmp_path):
    dbms = standin.dbms
    dbms.server_heap["server-2"] = (95, 100)
    dbms.server_pagecache["server-3"] = 0.97
    with Neo4jTarget(cluster_settings(standin, tmp_path), poll_interval=0.05) as target:
        health = target.health()
    assert not health.ok
    assert any(p.startswith("server server-2: heap 95.0% used") for p in health.problems), health.problems
    assert any(p.startswith("server server-3: page cache 97.0% used") for p in health.problems), health.problems
    assert health.measurements["heap_percent@server-1"] == 25.0 and health.measurements["heap_percent"] == 95.0
    dbms.server_state["server-2"] = "Cordoned"  # gets no new database: not what the load depends on
    with Neo4jTarget(cluster_settings(standin, tmp_path), poll_interval=0.05) as target:
        health = target.health()
    assert "heap_percent@server-2" not in health.measurements
    assert not any("server-2" in p for p in health.problems)


def test_a_server_over_its_threshold_blocks_the_load_in_dagster_and_names_the_server(standin, tmp_path, monkeypatch):
    import dagster as dg

    from tests.helpers import make_neo4j_project, run_partition

    standin.dbms.server_heap["server-3"] = (99, 100)
    project = make_neo4j_project(tmp_path, monkeypatch, standin, loader="cypher",
                                 uri=f"neo4j://127.0.0.1:{standin.bolt_port}")
    write_snapshot(project.data, "acme", T0, people=10)
    with dg.instance_for_test() as instance:
        refused = run_partition(project, instance, f"acme-{T0}")
        assert not refused.success
        message = refused.get_step_failure_events()[0].event_specific_data.error.message
        assert "server server-3: heap 99.0% used" in message
        assert standin.dbms.database_names() == ["neo4j"] and standin.dbms.aliases == {}
        del standin.dbms.server_heap["server-3"]
        assert run_partition(project, instance, f"acme-{T0}").success
    assert standin.dbms.alias_target("acme") == f"acme-{T0}"


def test_a_member_whose_measures_cannot_be_read_is_unknown_not_a_failure(standin, tmp_path):
    dbms = standin.dbms
    dbms.server_addresses["server-2"] = f"127.0.0.1:{_closed_port()}"  # not answering
    with Neo4jTarget(cluster_settings(standin, tmp_path), poll_interval=0.05) as target:
        dbms.fail_next("COUNT_DATABASES", "Neo.TransientError.General.DatabaseUnavailable", "busy", times=10)
        health = target.health()
    assert health.ok, health.problems
    assert health.measurements["heap_percent@server-2"] == "unknown"
    assert health.measurements["pagecache_percent@server-2"] == "unknown"
    assert health.measurements["heap_percent@server-1"] == 25.0
    assert health.measurements["databases"] == "unknown"


def _closed_port() -> int:
    from tests.helpers import free_port

    return free_port()


def test_the_opt_in_cluster_test_runs_against_the_three_member_stand_in(standin):
    """tests/test_neo4j_enterprise_optin.py's cluster test runs nowhere else in CI: here, through neo4j://, so it
    cannot rot between the times a licensed team points it at a real cluster."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NEO4J_URI": f"neo4j://127.0.0.1:{standin.bolt_port}", "NEO4J_PASSWORD": standin.dbms.password,
           "NEO4J_TOPOLOGY": "2,1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "real_cluster",
                           "tests/test_neo4j_enterprise_optin.py"], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
    assert [e["parameters"]["primaries"] for e in standin.dbms.events_of("CREATE_DATABASE_TOPOLOGY")] == [2]
