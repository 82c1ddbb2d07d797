"""Ready before live (targets/neo4j/readiness.py) on the Enterprise stand-in: after either loader, the database has
an ONLINE index on the node key of every label (plus neo4j.indexes) and is read-only, before it is verified."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import standin_settings

T0 = 1767741527


@pytest.fixture
def standin(standin):
    """The stand-in of tests/conftest.py."""
    return standin


def make_target(standin, tmp_path: Path, **neo4j_settings) -> Neo4jTarget:
    return Neo4jTarget(standin_settings(standin, tmp_path, online_timeout=2, **neo4j_settings),
                       poll_interval=0.05)


def snapshot(tmp_path: Path, customer: str, ts: int = T0):
    write_snapshot(tmp_path / "data", customer, ts, people=60)
    return snapshot_at(tmp_path / "data", customer, ts)


def indexes(standin, database: str) -> list[tuple]:
    return sorted((r["type"], str(r["labelsOrTypes"]), str(r["properties"]), r["state"])
                  for r in standin.dbms.show_indexes(database))


def test_arrow_and_cypher_loads_end_with_the_same_online_indexes_and_read_only(standin, tmp_path):
    seen = {}
    for loader, customer in (("arrow", "acme"), ("cypher", "beta")):
        snap = snapshot(tmp_path, customer)
        with make_target(standin, tmp_path, loader=loader) as target:
            target.load(snap)
            seen[loader] = (indexes(standin, snap.key), target.count(snap.key))
        assert standin.dbms.databases[snap.key].access == "read-only"
    assert seen["arrow"] == seen["cypher"]
    labels = set(expected_counts(snap).labels)
    assert {(eval(lab)[0], eval(prop)[0]) for kind, lab, prop, state in seen["arrow"][0] if kind == "RANGE"} == \
        {(label, "nodeId") for label in labels}
    assert all(state == "ONLINE" for *_, state in seen["arrow"][0])


def test_the_load_returns_only_when_populating_indexes_are_online_and_logs_progress(standin, tmp_path, caplog):
    standin.dbms.index_population_seconds = 0.6
    snap = snapshot(tmp_path, "acme")
    with make_target(standin, tmp_path, indexes={"Person": ["name"]}) as target, \
            caplog.at_level(logging.INFO, logger="bluegreen_dagster.targets.neo4j.readiness"):
        target.load(snap)
    assert all(state == "ONLINE" for *_, state in indexes(standin, snap.key))
    assert ("RANGE", "['Person']", "['name']", "ONLINE") in indexes(standin, snap.key)
    assert any("waiting for indexes" in r.getMessage() and "POPULATING" in r.getMessage() for r in caplog.records)


def test_indexes_not_online_in_time_fail_the_load_transiently_and_nothing_is_read_only_yet(standin, tmp_path):
    standin.dbms.index_population_seconds = 30
    snap = snapshot(tmp_path, "acme")
    with make_target(standin, tmp_path, index_timeout=0.3) as target, \
            pytest.raises(TransientTargetError, match="not ONLINE after neo4j.index_timeout 0.3s"):
        target.load(snap)
    assert standin.dbms.databases[snap.key].access == "read-write"
    # The retry (population done by then) reuses the database and finishes it.
    standin.dbms.index_population_seconds = 0
    for key in standin.dbms.databases[snap.key].indexes:
        standin.dbms.databases[snap.key].indexes[key] = 0
    with make_target(standin, tmp_path) as target:
        assert target.load(snap).reused
    assert standin.dbms.databases[snap.key].access == "read-only"


def test_read_only_is_switchable_and_a_reused_database_gets_new_configured_indexes(standin, tmp_path):
    snap = snapshot(tmp_path, "acme")
    with make_target(standin, tmp_path, read_only=False) as target:
        target.load(snap)
    assert standin.dbms.databases[snap.key].access == "read-write"
    with make_target(standin, tmp_path) as target:
        target.load(snap)
    assert standin.dbms.databases[snap.key].access == "read-only"
    with make_target(standin, tmp_path, indexes={"Company": ["name"]}) as target:
        assert target.load(snap).reused
    assert ("RANGE", "['Company']", "['name']", "ONLINE") in indexes(standin, snap.key)
    assert standin.dbms.databases[snap.key].access == "read-only"


def test_configured_index_names_are_checked_like_data_names(tmp_path):
    with pytest.raises(Exception, match="not a label or property name"):
        parse_settings({"neo4j": {"indexes": {"Person": ["name`) DETACH DELETE n //"]}}}, root=tmp_path)


@pytest.mark.neo4j_community
def test_index_creation_and_the_wait_on_real_neo4j_community(neo4j_community, empty_community_graph):
    """The statements and SHOW INDEXES row shape readiness.py relies on, on a real server (Community accepts
    everything but the read-only mode)."""
    from bluegreen_dagster.targets.neo4j import queries, readiness
    from bluegreen_dagster.targets.neo4j.admin import Admin

    settings = empty_community_graph
    admin = Admin(settings.neo4j)
    try:
        admin.run(queries.CREATE_PROPERTY_INDEX.format(label="`Person`", property="`name`"), database="neo4j")
        readiness.await_online(admin, settings.neo4j, "neo4j", {("Person", "name")}, poll_seconds=0.2)
        assert readiness.property_indexes(admin, "neo4j")[("Person", "name")]["state"] == "ONLINE"
        assert readiness._access(admin, "neo4j") == "read-write"
    finally:
        for row in admin.read("neo4j", queries.SHOW_INDEXES, "listing indexes"):
            if row["type"] != "LOOKUP":  # leave the server as the other Community tests expect it
                admin.run(f"DROP INDEX `{row['name']}` IF EXISTS", database="neo4j")
        admin.close()


@pytest.fixture
def empty_community_graph(neo4j_community, tmp_path):
    uri, user, password = neo4j_community
    host, port = uri.removeprefix("bolt://").rstrip("/").rsplit(":", 1)
    return parse_settings({"target": "neo4j", "neo4j": {"host": host, "bolt_port": int(port), "user": user,
                                                        "password": password}}, root=tmp_path)
