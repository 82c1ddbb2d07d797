"""Readers of a customer keep reading across switches on the Enterprise stand-in: their access follows the alias
(targets/neo4j/access.py), and a reader who could not read the new database blocks the switch.

The stand-in stores privileges against the database an alias resolved to when they were granted, refuses a
transaction without ACCESS and shows nothing without MATCH/TRAVERSE, as Neo4j does (tests/standin/dbms.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import neo4j
import pytest

from bluegreen_dagster.bluegreen import cleanup, switch_if_newest, verify
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.access import ReadersCannotRead, carried_commands
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import STANDIN_PASSWORD as PASSWORD
from tests.helpers import standin_settings

READER, READER_PASSWORD, ROLE = "alice", "alice-pw-1", "acme-reader"
CUSTOMER = "acme"
T0 = 1767741527


@pytest.fixture
def standin(standin):
    """The stand-in of tests/conftest.py, with a reader role and user."""
    standin.dbms.create_role(ROLE)
    standin.dbms.create_user(READER, READER_PASSWORD, (ROLE,))
    return standin


def make_target(standin, tmp_path: Path, **neo4j_settings) -> Neo4jTarget:
    return Neo4jTarget(standin_settings(standin, tmp_path, online_timeout=2, **neo4j_settings),
                       poll_interval=0.01)


def load_and_switch(target: Neo4jTarget, ts: int, people: int = 40):
    write_snapshot(target.settings.dataset.base_path, CUSTOMER, ts, people=people)
    snap = snapshot_at(target.settings.dataset.base_path, CUSTOMER, ts)
    target.load(snap)
    expected = expected_counts(snap)
    verify(target, snap.key, expected)
    return switch_if_newest(target, snap.key, expected)


def grant_on_alias(standin, role: str = ROLE, match: bool = True) -> None:
    """What an operator does once, by hand: grant the reader role on the customer's alias (which Neo4j resolves
    to the database the alias points at now)."""
    with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", PASSWORD)) as driver, \
            driver.session(database="system") as session:
        session.run(queries.GRANT_ACCESS, database=CUSTOMER, role=role).consume()
        if match:
            session.run(queries.GRANT_MATCH, database=CUSTOMER, role=role).consume()


class ReaderLoop:
    """A reader user counting nodes through the alias as fast as it can, in explicit read transactions without
    the driver's retries (so every refusal counts)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.reads: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader-loop", daemon=True)

    def _run(self) -> None:
        with neo4j.GraphDatabase.driver(self.uri, auth=(READER, READER_PASSWORD)) as driver:
            while not self._stop.is_set():
                try:
                    with driver.session(database=CUSTOMER, default_access_mode=neo4j.READ_ACCESS) as session, \
                            session.begin_transaction() as tx:
                        self.reads.append(tx.run(queries.COUNT_NODES).single()["count"])
                except neo4j.exceptions.Neo4jError as exc:
                    self.reads.append(f"{exc.code}: {exc.message}")
                time.sleep(0.005)

    def __enter__(self) -> ReaderLoop:
        self._thread.start()
        while not self.reads:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.1)
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def failed(self) -> list[str]:
        return [r for r in self.reads if isinstance(r, str)]

    @property
    def empty(self) -> list[int]:
        return [r for r in self.reads if r == 0]


def switches_with_a_reader(standin, tmp_path, **neo4j_settings) -> ReaderLoop:
    """The first snapshot goes live and the operator grants the reader role on the alias; then, while the reader
    counts through the alias: 5 more switches, a rollback to the previous database (the path rollback.py takes,
    `point_alias`), and forward again, each followed by a cleanup keeping 2."""
    with make_target(standin, tmp_path) as target:
        assert load_and_switch(target, T0).switched
    grant_on_alias(standin)
    with make_target(standin, tmp_path, **neo4j_settings) as target:
        with ReaderLoop(standin.bolt_uri) as loop:
            for i in range(1, 6):
                assert load_and_switch(target, T0 + i, people=40 + i).switched
                cleanup(target, CUSTOMER, 2, in_flight=set)
                time.sleep(0.05)
            target.point_alias(CUSTOMER, f"{CUSTOMER}-{T0 + 4}")  # rollback
            time.sleep(0.05)
            target.point_alias(CUSTOMER, f"{CUSTOMER}-{T0 + 5}")  # and forward again (unpin, reconcile)
            time.sleep(0.05)
    return loop


def test_a_reader_role_reads_through_the_alias_across_every_switch(standin, tmp_path):
    loop = switches_with_a_reader(standin, tmp_path, reader_users=[READER])
    assert len(loop.reads) > 20
    assert loop.failed == [] and loop.empty == []
    # The role can read the live database by its own grants, not by one on `*`.
    live = standin.dbms.aliases[CUSTOMER]
    assert any(p.role == ROLE and p.database == live and p.action == "ACCESS" for p in standin.dbms.privileges)
    assert not any(p.role == ROLE and p.database == "*" for p in standin.dbms.privileges)
    # Grants on dropped databases went with them.
    assert {p.database for p in standin.dbms.privileges if p.role == ROLE} <= set(standin.dbms.databases)


def test_without_access_following_the_alias_the_same_readers_are_refused(standin, tmp_path):
    """The guarantee above, switched off: the same loop fails after the first switch."""
    loop = switches_with_a_reader(standin, tmp_path, reader_access_follows_alias=False)
    assert any("Database access is not allowed for user 'alice'" in r for r in loop.failed), loop.reads[-3:]


def test_configured_reader_roles_get_access_without_a_grant_by_hand(standin, tmp_path):
    with make_target(standin, tmp_path, reader_roles=[ROLE], reader_users=[READER]) as target:
        assert load_and_switch(target, T0).switched
        assert load_and_switch(target, T0 + 1).switched
    with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=(READER, READER_PASSWORD)) as driver:
        records, _, _ = driver.execute_query(queries.COUNT_NODES, database_=CUSTOMER)
    assert records[0]["count"] == len(standin.dbms.databases[f"{CUSTOMER}-{T0 + 1}"].graph.nodes) > 0


def test_the_first_switch_is_proved_too(standin, tmp_path):
    """No alias yet, so nothing to carry: a configured reader without any grant blocks the alias's creation."""
    with make_target(standin, tmp_path, reader_users=[READER]) as target, \
            pytest.raises(ReadersCannotRead, match="missing ACCESS"):
        load_and_switch(target, T0)
    assert CUSTOMER not in standin.dbms.aliases


def test_a_reader_who_cannot_read_keeps_the_alias_where_it_is(standin, tmp_path):
    with make_target(standin, tmp_path) as target:
        assert load_and_switch(target, T0).switched
    grant_on_alias(standin)
    with make_target(standin, tmp_path, reader_users=[READER], reader_access_follows_alias=True) as target:
        # The role lost MATCH on the live database (someone revoked it): carried as it is, ACCESS only.
        standin.dbms.privileges = {p for p in standin.dbms.privileges if not (p.role == ROLE and
                                                                              p.action == "MATCH")}
        with pytest.raises(ReadersCannotRead) as raised:
            load_and_switch(target, T0 + 1)
        message = str(raised.value)
        assert "'alice'" in message and ROLE in message and "missing MATCH" in message
        assert standin.dbms.aliases[CUSTOMER] == f"{CUSTOMER}-{T0}"

        standin.dbms.privileges = {p for p in standin.dbms.privileges if p.role != ROLE}  # no ACCESS either
        with pytest.raises(ReadersCannotRead, match=r"(?s)'alice' \(roles PUBLIC, acme-reader\).*missing ACCESS"):
            switch_if_newest(target, f"{CUSTOMER}-{T0 + 1}",
                             expected_counts(snapshot_at(target.settings.dataset.base_path, CUSTOMER, T0 + 1)))
        assert standin.dbms.aliases[CUSTOMER] == f"{CUSTOMER}-{T0}"


def test_carried_commands_keep_read_grants_and_denies_of_the_old_database_only():
    old, new = "acme-1767741527", "acme-1767741600"
    commands = [
        f"GRANT ACCESS ON DATABASE `{old}` TO `acme-reader`",
        f"GRANT MATCH {{*}} ON GRAPH `{old}` NODE * TO `acme-reader`",
        f"DENY READ {{secret}} ON GRAPH `{old}` NODE Person TO `acme-reader`",
        f"GRANT WRITE ON GRAPH `{old}` TO `acme-writer`",  # not a read privilege
        "GRANT MATCH {*} ON GRAPH * NODE * TO `admin`",  # `*` covers the new database already
        "GRANT ACCESS ON DATABASE `other-1767741527` TO `other-reader`",
        f"GRANT IMMUTABLE TRAVERSE ON GRAPH `{old}` NODE * TO `acme-reader`",
        "GRANT ROLE MANAGEMENT ON DBMS TO `admin`",
    ]
    carried, skipped = carried_commands(commands, old, new)
    assert carried == [
        f"GRANT ACCESS ON DATABASE `{new}` TO `acme-reader`",
        f"GRANT MATCH {{*}} ON GRAPH `{new}` NODE * TO `acme-reader`",
        f"DENY READ {{secret}} ON GRAPH `{new}` NODE Person TO `acme-reader`",
    ]
    assert len(skipped) == 1 and "IMMUTABLE" in skipped[0]
    with pytest.raises(Exception, match="refusing"):
        carried_commands(commands, old, "acme`] TO admin //")


# --- through Dagster: per-customer readers of config.yaml, and the forward move after an unpin ----------------------


def _read_as_reader(standin) -> int | str:
    with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=(READER, READER_PASSWORD)) as driver:
        try:
            records, _, _ = driver.execute_query(queries.COUNT_NODES, database_=CUSTOMER)
        except neo4j.exceptions.Neo4jError as exc:
            return f"{exc.code}: {exc.message}"
    return records[0]["count"]


def test_a_customers_reader_roles_in_config_yaml_reach_the_target_in_dagster_runs(standin, tmp_path, monkeypatch):
    """`customers.acme.reader_roles/reader_users` (and nothing global) apply in the runs of acme's partitions:
    acme's reader reads each new database through the alias; another customer's role gets nothing on acme's."""
    import dagster as dg

    from tests.helpers import make_neo4j_project, run_partition

    standin.dbms.create_role("globex-reader")
    project = make_neo4j_project(tmp_path, monkeypatch, standin)
    project.reconfigure(customers={CUSTOMER: {"reader_roles": [ROLE], "reader_users": [READER]},
                                   "globex": {"reader_roles": ["globex-reader"]}})
    for i in range(2):
        write_snapshot(project.data, CUSTOMER, T0 + i, people=30 + i)
    with dg.instance_for_test() as instance:
        for i in range(2):
            result = run_partition(project, instance, f"{CUSTOMER}-{T0 + i}")
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            live = standin.dbms.aliases[CUSTOMER]
            assert live == f"{CUSTOMER}-{T0 + i}"
            assert _read_as_reader(standin) == len(standin.dbms.databases[live].graph.nodes) > 0
    assert {p.role for p in standin.dbms.privileges if p.database == live} == {ROLE}


def test_a_reader_role_keeps_reading_across_an_unpin_that_moves_the_alias_forward(standin, tmp_path, monkeypatch):
    """Pinned on the first database (granted by hand on the alias), a newer one loads but does not switch; after
    `unpin` the reconcile job moves the alias forward (the path rollback.py's docstring promises) and the role's
    read privileges were carried to the new database before the move."""
    import dagster as dg

    from bluegreen_dagster import pins
    from bluegreen_dagster.reconcile import reconcile_customer
    from bluegreen_dagster.rollback import unpin
    from bluegreen_dagster.snapshots import scan
    from tests.helpers import make_neo4j_project, run_partition

    project = make_neo4j_project(tmp_path, monkeypatch, standin)
    for i in range(2):
        write_snapshot(project.data, CUSTOMER, T0 + i, people=30 + i)
    old, new = f"{CUSTOMER}-{T0}", f"{CUSTOMER}-{T0 + 1}"
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, old).success
        grant_on_alias(standin)
        pins.set_pin(instance, CUSTOMER, old, reason="incident", by="ops@host")
        assert run_partition(project, instance, new).success
        assert standin.dbms.aliases[CUSTOMER] == old and _read_as_reader(standin) == 31
        resources = project.resources.initialized()
        with resources.target.open() as graph:
            removed, _ = unpin(instance, graph, CUSTOMER, by="ops@host")
            assert removed is not None
            on_disk = [s for s in scan(project.data, 0).complete if s.id.customer == CUSTOMER]
            report = reconcile_customer(graph, instance, resources.pipeline, CUSTOMER, on_disk)
    assert report.switched_from == old and standin.dbms.aliases[CUSTOMER] == new
    assert _read_as_reader(standin) == 32
