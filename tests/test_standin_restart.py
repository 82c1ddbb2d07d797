"""Neo4j restarted mid-load (issue #16, "restarts"): the Enterprise stand-in as its own process with a data
directory (`python -m tests.standin --data-dir`, tests/standin/persistence.py), killed with SIGKILL while a real
`Neo4jTarget` load is between batches, and started again on the same ports.

What a user must see, with either loader: the load fails with a retryable error that names no secret; the alias
still serves the last good database, to a reader with its own role, with the old counts; the interrupted
database is not served; retrying the load succeeds and the alias moves. The stand-in models what Neo4j keeps
across a restart (docs/testing.md, "The stand-in across a restart"): an Arrow import that had not finished leaves
no database, a Cypher-loaded one keeps the batches committed before the kill. The first tests check that model
in one process (what a restart would find in the data directory); the last runs the whole story across processes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import neo4j
import pytest

from bluegreen_dagster.bluegreen import cleanup, switch_if_newest, verify
from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.helpers import STANDIN_PASSWORD as PASSWORD
from tests.standin.dbms import Dbms, Privilege
from tests.standin.persistence import FILE, DataDir
from tests.standin.server import start_standin

REPO = Path(__file__).resolve().parent.parent
CUSTOMER = "acme"
T0 = 1767741527
READER, READER_PASSWORD, ROLE = "alice", "alice-pw-1", "acme-reader"
GOOD_PEOPLE, NEW_PEOPLE = 40, 60  # 41 and 61 nodes (one company each): told apart through the alias


def after_restart(data_dir: Path) -> Dbms:
    """What a stand-in started now from `data_dir` would hold."""
    dbms = Dbms(password=PASSWORD)
    assert DataDir(data_dir).load(dbms)
    return dbms


def test_an_open_transaction_is_lost_and_a_committed_one_kept(tmp_path):
    with start_standin(password=PASSWORD, data_dir=tmp_path) as standin, \
            neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", PASSWORD)) as driver:
        driver.execute_query(queries.CREATE_DATABASE, name="acme-1", database_="system")
        with driver.session(database="acme-1") as session:
            tx = session.begin_transaction()
            tx.run(queries.CREATE_LOAD_MARKER).consume()
            assert after_restart(tmp_path).databases["acme-1"].graph.nodes == {}
            tx.commit()
        assert list(after_restart(tmp_path).databases["acme-1"].graph.nodes.values()) == [(queries.LOAD_LABEL,)]
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # no temp file left by the atomic replace


def test_the_catalog_survives_a_restart(tmp_path):
    """Aliases with their PROPERTIES (the fence), users, roles, privileges, indexes and the access mode."""
    with start_standin(password=PASSWORD, data_dir=tmp_path) as standin, \
            neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", PASSWORD)) as driver:
        for statement, params in (
                (queries.CREATE_DATABASE, {"name": "acme-1"}),
                (queries.CREATE_ALIAS, {"alias": "acme", "database": "acme-1", "moves": 3}),
                ("CREATE ROLE $role IF NOT EXISTS", {"role": ROLE}),
                ("CREATE USER $user IF NOT EXISTS SET PASSWORD $password CHANGE NOT REQUIRED",
                 {"user": READER, "password": READER_PASSWORD}),
                ("GRANT ROLE $role TO $user", {"role": ROLE, "user": READER}),
                (queries.GRANT_ACCESS, {"database": "acme", "role": ROLE})):
            driver.execute_query(statement, params, database_="system")
        driver.execute_query(queries.CREATE_PROPERTY_INDEX.format(label="`Person`", property="`name`"),
                             database_="acme-1")
        driver.execute_query(queries.SET_READ_ONLY, name="acme-1", database_="system")
    dbms = after_restart(tmp_path)
    assert dbms.aliases == {"acme": "acme-1"}
    assert dbms.alias_fence("acme") == ("acme-1", {"served": "acme-1", "moves": 3})
    assert dbms.check_credentials(READER, READER_PASSWORD) and ROLE in dbms.roles_of(READER)
    assert Privilege("GRANT", "ACCESS", "", "acme-1", "", ROLE) in dbms.privileges
    assert dbms.databases["acme-1"].access == "read-only"
    assert set(dbms.databases["acme-1"].indexes) == {("Person", "name")}


class StandinProcess:
    """`python -m tests.standin` with a data directory, stopped by its pid. `held` gets the `{"held": n}` line
    the stand-in prints when it reaches `--hold-at-batch`."""

    def __init__(self, data_dir: Path, ports: dict[str, int] | None = None, hold_at_batch: int | None = None):
        ports = ports or {"bolt_port": 0, "arrow_port": 0}
        command = [sys.executable, "-m", "tests.standin", "--password", PASSWORD, "--accept-string-properties",
                   "--bolt-port", str(ports["bolt_port"]), "--arrow-port", str(ports["arrow_port"]),
                   "--data-dir", str(data_dir)]
        if hold_at_batch is not None:
            command += ["--hold-at-batch", str(hold_at_batch)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STANDIN_")}
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            raise RuntimeError(f"the stand-in did not start (exit {self.process.returncode})")
        self.ports: dict[str, int] = json.loads(line)
        self.held: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.held.put(json.loads(line))

    @property
    def bolt_uri(self) -> str:
        return f"bolt://127.0.0.1:{self.ports['bolt_port']}"

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends; the exit status."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            self.kill()


@pytest.fixture
def processes():
    started: list[StandinProcess] = []
    yield started
    for process in started:
        process.kill()


def settings(tmp_path: Path, ports: dict[str, int], loader: str):
    return parse_settings({"target": "neo4j", "dataset": {"base_path": str(tmp_path / "data")}, "neo4j": {
        "host": "127.0.0.1", **ports, "password": PASSWORD, "loader": loader, "batch_size": 20, "concurrency": 2,
        "online_timeout": 2, "arrow_string_properties": True, "reader_roles": [ROLE], "reader_users": [READER]}},
        root=tmp_path)


def snapshot(settings, ts: int, people: int):
    write_snapshot(settings.dataset.base_path, CUSTOMER, ts, people=people)
    return snapshot_at(settings.dataset.base_path, CUSTOMER, ts)


def load_and_switch(target: Neo4jTarget, snap) -> bool:
    target.load(snap)
    expected = expected_counts(snap)
    verify(target, snap.key, expected)
    return switch_if_newest(target, snap.key, expected).switched


def as_reader(uri: str, database: str) -> int | str:
    """Nodes a reader counts in `database` (the alias, or a database by name), or the server's refusal."""
    with neo4j.GraphDatabase.driver(uri, auth=(READER, READER_PASSWORD)) as driver:
        try:
            records, _, _ = driver.execute_query(queries.COUNT_NODES, database_=database)
        except neo4j.exceptions.Neo4jError as exc:
            return f"{exc.code}: {exc.message}"
    return records[0]["count"]


def add_reader(uri: str) -> None:
    with neo4j.GraphDatabase.driver(uri, auth=("neo4j", PASSWORD)) as driver:
        for statement, params in (("CREATE ROLE $role IF NOT EXISTS", {"role": ROLE}),
                                  ("CREATE USER $user IF NOT EXISTS SET PASSWORD $password CHANGE NOT REQUIRED",
                                   {"user": READER, "password": READER_PASSWORD}),
                                  ("GRANT ROLE $role TO $user", {"role": ROLE, "user": READER})):
            driver.execute_query(statement, params, database_="system")


@pytest.mark.parametrize("loader", ["arrow", "cypher"])
def test_a_target_restarted_mid_load_keeps_the_alias_and_the_retry_goes_live(tmp_path, processes, loader):
    data_dir = tmp_path / "neo4j-data"
    first = StandinProcess(data_dir)
    processes.append(first)
    ports = first.ports
    config = settings(tmp_path, ports, loader)
    good, new = f"{CUSTOMER}-{T0}", f"{CUSTOMER}-{T0 + 1}"
    add_reader(first.bolt_uri)
    with Neo4jTarget(config, poll_interval=0.01) as target:
        assert load_and_switch(target, snapshot(config, T0, GOOD_PEOPLE))
    first.kill()  # the good state must survive a kill too, not only a clean stop

    # Killed while the next snapshot's load is between batches.
    holding = StandinProcess(data_dir, ports, hold_at_batch=1)
    processes.append(holding)
    failures: list[BaseException] = []
    newer = snapshot(config, T0 + 1, NEW_PEOPLE)

    def load_new() -> None:
        with Neo4jTarget(config, poll_interval=0.01) as target:
            try:
                target.load(newer)
            except BaseException as exc:  # noqa: BLE001 - the test asserts on it
                failures.append(exc)

    loading = threading.Thread(target=load_new, name="load-killed-mid-way")
    loading.start()
    assert holding.held.get(timeout=60) == {"held": 1}
    holding.kill()
    loading.join(timeout=120)
    assert not loading.is_alive()

    assert len(failures) == 1, "the load killed mid-way must fail"
    error = failures[0]
    assert isinstance(error, TransientTargetError), f"{type(error).__name__}: {error}"
    assert PASSWORD not in str(error)
    assert "127.0.0.1" in str(error), f"the message should name the server: {error}"
    # The server was gone, so nothing could be aborted or dropped: the message must not say it was.
    assert "nothing is left" not in str(error), error

    restarted = StandinProcess(data_dir, ports)
    processes.append(restarted)
    assert restarted.ports == ports
    with Neo4jTarget(config, poll_interval=0.01) as target:
        assert target.alias_target(CUSTOMER) == good
        assert as_reader(restarted.bolt_uri, CUSTOMER) == GOOD_PEOPLE + 1
        listed = {info.name: info.status for info in target.list_databases(CUSTOMER)}
        if loader == "arrow":
            # GDS holds an import in memory until RELATIONSHIP_LOAD_DONE: the database never appeared.
            assert listed == {good: "online"}
        else:
            # The batches committed before the kill survived, with the loader's marker: an unfinished load,
            # which no reader is granted.
            assert listed == {good: "online", new: "online"}
            partial = target.count(new)
            loaded = partial.nodes - partial.labels.get(queries.LOAD_LABEL, 0)
            assert partial.labels.get(queries.LOAD_LABEL) == 1 and 0 < loaded < NEW_PEOPLE + 1, partial
            assert "access" in str(as_reader(restarted.bolt_uri, new)).lower()
        result = cleanup(target, CUSTOMER, 1, in_flight=set)
        assert good not in result.dropped

        # The retry (the job's RetryPolicy, or relaunch.py) finds the leftover, loads again and goes live.
        assert load_and_switch(target, newer)
        assert target.alias_target(CUSTOMER) == new
        assert target.count(new).nodes == NEW_PEOPLE + 1
    assert as_reader(restarted.bolt_uri, CUSTOMER) == NEW_PEOPLE + 1
    assert restarted.stop() == 0
