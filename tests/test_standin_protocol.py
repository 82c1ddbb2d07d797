"""The Enterprise stand-in itself, exercised only through the real `neo4j` driver and `pyarrow.flight` client."""

from __future__ import annotations

import json
import math
import threading
import time

import neo4j
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from neo4j.exceptions import AuthError, ClientError, CypherSyntaxError, DatabaseUnavailable

from bluegreen_dagster.targets.neo4j import queries as q
from tests.helpers import STANDIN_PASSWORD
from tests.standin.bolt_server import BoltServer, Catalogue, Executor, _statement_constants
from tests.standin.dbms import Dbms, Graph
from tests.standin.packstream import Structure, pack, unpack
from tests.standin.server import start_standin

PASSWORD = STANDIN_PASSWORD  # the `standin` fixture's (tests/conftest.py)


@pytest.fixture
def driver(standin):
    with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", PASSWORD)) as drv:
        yield drv


def system(driver, statement, **params):
    records, _, _ = driver.execute_query(statement, params, database_="system")
    return [r.data() for r in records]


# --- PackStream and the statement catalogue ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, True, False, 0, -16, -17, 127, 128, -129, 2**15, -(2**31) - 1, 2**62,
                                   1.5, "", "x" * 15, "é" * 300, [1, [2, "a"]], {"k": {"n": None}},
                                   list(range(70000)), b"\x00\x01", Structure(0x4E, [1, ["L"], {}])])
def test_packstream_round_trip(value):
    assert unpack(pack(value)) == value


def test_every_statement_in_queries_py_is_answered():
    """Drift guard: a new statement in queries.py needs a handler here, or the stand-in would fail it at run time."""
    executor = Executor(Dbms(), Catalogue())
    assert set(_statement_constants()) - executor.handled() == set()


# --- Bolt ---------------------------------------------------------------------------------------------------------


def test_driver_connects_over_bolt_5_4(driver):
    driver.verify_connectivity()
    info = driver.get_server_info()
    assert info.agent.startswith("Neo4j/5.")
    assert info.protocol_version == (5, 4)
    assert system(driver, q.COMPONENTS) == [{"name": "Neo4j Kernel", "versions": ["5.26.0"], "edition": "enterprise"}]
    assert driver.execute_query("RETURN 1 AS n").records[0]["n"] == 1


def test_wrong_password_is_auth_error_without_the_password(standin):
    with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", "wrong-pass-123")) as drv:
        with pytest.raises(AuthError) as info:
            drv.verify_connectivity()
    assert info.value.code == "Neo.ClientError.Security.Unauthorized"
    assert "wrong-pass-123" not in str(info.value)


def test_show_create_alter_alias_with_parameters(standin, driver):
    assert system(driver, q.LIST_DATABASES, prefix="acme") == []
    system(driver, q.CREATE_DATABASE, name="acme-100")
    system(driver, q.CREATE_DATABASE, name="acme-200")
    assert system(driver, q.LIST_DATABASES, prefix="acme-") == [
        {"name": "acme-100", "currentStatus": "online"}, {"name": "acme-200", "currentStatus": "online"}]
    assert system(driver, q.DATABASE_STATUS, name="acme-100") == [{"currentStatus": "online", "statusMessage": ""}]
    assert system(driver, q.COUNT_DATABASES) == [{"databases": 3}]  # neo4j + 2
    assert system(driver, q.ALIAS_TARGET, alias="acme") == []

    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-100", moves=1)
    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-200", moves=1)  # IF NOT EXISTS: a silent no-op
    assert system(driver, q.ALIAS_TARGET, alias="acme") == [{"database": "acme-100"}]
    assert system(driver, q.ALIAS_FENCE, alias="acme") == [
        {"database": "acme-100", "properties": {"served": "acme-100", "moves": 1}}]
    system(driver, q.ALTER_ALIAS, alias="acme", database="acme-200", moves=2)
    assert system(driver, q.ALIAS_TARGET, alias="acme") == [{"database": "acme-200"}]
    assert system(driver, q.ALIAS_FENCE, alias="acme") == [
        {"database": "acme-200", "properties": {"served": "acme-200", "moves": 2}}]
    assert standin.dbms.aliases == {"acme": "acme-200"}
    assert [e["parameters"] for e in standin.dbms.events_of("ALTER_ALIAS")] == [
        {"alias": "acme", "database": "acme-200", "moves": 2}]


def test_drop_of_alias_target_is_refused(standin, driver):
    system(driver, q.CREATE_DATABASE, name="acme-1")
    system(driver, q.CREATE_DATABASE, name="acme-2")
    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-1", moves=1)
    with pytest.raises(ClientError) as info:
        system(driver, q.DROP_DATABASE, name="acme-1")
    assert info.value.code == "Neo.ClientError.Database.ExistingAliasFound"
    assert "acme-1" in standin.dbms.database_names()
    system(driver, q.ALTER_ALIAS, alias="acme", database="acme-2", moves=1)
    system(driver, q.DROP_DATABASE, name="acme-1")
    system(driver, q.DROP_DATABASE, name="acme-1")  # IF EXISTS
    assert standin.dbms.database_names() == ["acme-2", "neo4j"]


def test_namespace_chain_and_not_found_rules(driver):
    system(driver, q.CREATE_DATABASE, name="acme-1")
    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-1", moves=1)
    for name in ("acme-1", "acme", "ACME-1"):
        with pytest.raises(ClientError) as info:
            system(driver, q.CREATE_DATABASE, name=name)
        assert info.value.code == "Neo.ClientError.Database.ExistingDatabaseFound"
    with pytest.raises(ClientError) as info:
        system(driver, q.CREATE_ALIAS, alias="other", database="acme", moves=1)
    assert info.value.code == "Neo.ClientError.Database.IllegalAliasChain"
    with pytest.raises(ClientError) as info:
        system(driver, q.ALTER_ALIAS, alias="acme", database="nope-1", moves=1)
    assert info.value.code == "Neo.ClientError.Database.DatabaseNotFound"
    with pytest.raises(ClientError) as info:
        system(driver, q.ALTER_ALIAS, alias="nobody", database="acme-1", moves=1)
    assert info.value.code == "Neo.ClientError.Database.DatabaseNotFound"
    with pytest.raises(ClientError) as info:
        driver.execute_query(q.COUNT_NODES, database_="nope-1")
    assert info.value.code == "Neo.ClientError.Database.DatabaseNotFound"
    with pytest.raises(ClientError) as info:
        system(driver, q.CREATE_DATABASE, name="_bad")
    assert info.value.code == "Neo.ClientError.Statement.ArgumentError"


def test_unknown_statements_and_wrong_database_are_loud(driver):
    with pytest.raises(CypherSyntaxError):
        driver.execute_query("MATCH (n) DETACH DELETE n", database_="neo4j")
    with pytest.raises(ClientError) as info:
        driver.execute_query(q.CREATE_DATABASE, {"name": "acme-1"}, database_="neo4j")
    assert info.value.code == "Neo.ClientError.Statement.NotSystemDatabaseError"
    with pytest.raises(ClientError) as info:
        system(driver, q.COUNT_NODES)
    assert info.value.code == "Neo.ClientError.Statement.NotSystemDatabaseError"
    with pytest.raises(ClientError) as info:
        system(driver, q.CREATE_DATABASE)  # no $name
    assert info.value.code == "Neo.ClientError.Statement.ParameterMissing"


def test_failure_state_reset_and_transactions(standin, driver):
    standin.dbms.add_database("acme-1")
    standin.dbms.add_database("acme-2")
    with driver.session(database="system") as session:
        with pytest.raises(CypherSyntaxError):
            session.run("NOT CYPHER").consume()
        # the connection went FAILED -> IGNORED -> RESET; the session keeps working
        assert session.run(q.COUNT_DATABASES).single()["databases"] == 3
        session.run(q.CREATE_ALIAS, alias="acme", database="acme-1", moves=1).consume()
        with session.begin_transaction() as tx:
            tx.run(q.ALTER_ALIAS, alias="acme", database="acme-2", moves=1).consume()
            tx.rollback()
        assert standin.dbms.aliases["acme"] == "acme-1"
        with session.begin_transaction() as tx:
            tx.run(q.ALTER_ALIAS, alias="acme", database="acme-2", moves=1).consume()
            assert tx.run(q.ALIAS_TARGET, alias="acme").single()["database"] == "acme-1"  # not committed yet
            tx.commit()
        assert standin.dbms.aliases["acme"] == "acme-2"
        result = session.run(q.LIST_DATABASES, prefix="")
        assert len(list(result)) == 3


def test_counts_through_alias_and_database_states(standin, driver):
    standin.dbms.add_database("acme-1", nodes={1: ("Person",), 2: ("Person", "Employee"), 3: ("Company",)},
                              relationships=[(1, "KNOWS", 2), (2, "WORKS_AT", 3)])
    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-1", moves=1)
    for db in ("acme-1", "acme"):
        assert driver.execute_query(q.COUNT_NODES, database_=db).records[0]["count"] == 3
        with driver.session(database=db) as session:
            labels = session.execute_read(lambda tx: {r["label"]: r["count"] for r in tx.run(q.COUNT_BY_LABEL)})
            types = session.execute_read(lambda tx: {r["type"]: r["count"] for r in tx.run(q.COUNT_BY_TYPE)})
        assert labels == {"Person": 2, "Employee": 1, "Company": 1}
        assert types == {"KNOWS": 1, "WORKS_AT": 1}
    standin.dbms.databases["acme-1"].status = "offline"
    with driver.session(database="acme") as session, pytest.raises(DatabaseUnavailable):
        session.run(q.COUNT_NODES).consume()


def test_a_transaction_reads_one_database_while_its_alias_moves(standin, driver):
    """Neo4j resolves an alias for each transaction (reference neo4j.md §2.7): the statements of one transaction
    read the database the alias named at BEGIN; two auto-commit statements may read two databases."""
    standin.dbms.add_database("acme-1", nodes={1: ("Person",)}, relationships=[])
    standin.dbms.add_database("acme-2", nodes={1: ("Person",), 2: ("Person",)}, relationships=[(1, "KNOWS", 2)])
    system(driver, q.CREATE_ALIAS, alias="acme", database="acme-1", moves=1)
    with driver.session(database="acme") as session, session.begin_transaction() as tx:
        assert tx.run(q.COUNT_NODES).single()["count"] == 1
        system(driver, q.ALTER_ALIAS, alias="acme", database="acme-2", moves=2)
        assert list(tx.run(q.COUNT_BY_TYPE)) == []  # still acme-1
    with driver.session(database="acme") as session:
        assert session.run(q.COUNT_NODES).single()["count"] == 2


def test_health_statements(standin, driver):
    standin.dbms.heap_used, standin.dbms.heap_max = 900, 1000
    assert system(driver, q.HEAP) == [{"used": 900, "max": 1000}]
    assert driver.execute_query(q.PAGECACHE).records[0]["ratio"] == 0.25
    standin.dbms.pagecache_ratio = None
    assert driver.execute_query(q.PAGECACHE).records == []


def _hello_hints(port: int) -> dict:
    """HELLO over a raw socket: the hints in the server's SUCCESS."""
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x60\x60\xb0\x17" + bytes((0, 0, 4, 5)) + bytes(12))
        assert sock.recv(4) == bytes((0, 0, 4, 5))
        body = pack(Structure(0x01, [{"user_agent": "test/1", "bolt_agent": {"product": "test/1"}}]))
        sock.sendall(struct.pack(">H", len(body)) + body + b"\x00\x00")
        data = b""
        while not data.endswith(b"\x00\x00") or len(data) < 4:
            data += sock.recv(65536)
    size = struct.unpack(">H", data[:2])[0]
    reply = unpack(data[2:2 + size])
    assert reply.tag == 0x70, reply
    return reply.fields[0]["hints"]


def test_bolt_keep_alive_as_neo4j_documents_it(standin):
    """Neo4j sends `connection.recv_timeout_seconds` (connection_keep_alive 1m x 2 probes) and a NOOP at least once
    per that period while a request runs: the driver drops a connection silent for longer (a server cut off),
    and keeps one whose request is merely slow."""
    assert _hello_hints(standin.bolt.port)["connection.recv_timeout_seconds"] == 120
    fast = BoltServer(standin.dbms, keep_alive_seconds=0.5).start()  # hint 1 s: the driver reads with a 1 s timeout
    try:
        assert _hello_hints(fast.port)["connection.recv_timeout_seconds"] == 1
        standin.dbms.add_database("acme-1", nodes={1: ("Person",)})
        standin.dbms.index_population_seconds = 2.5
        with neo4j.GraphDatabase.driver(f"bolt://127.0.0.1:{fast.port}", auth=("neo4j", PASSWORD)) as drv:
            drv.execute_query(q.CREATE_ID_INDEX.format(label="`Person`"), database_="acme-1")
            started = time.monotonic()
            with drv.session(database="acme-1") as session:  # auto-commit: no retry would hide a timeout
                session.run(q.AWAIT_INDEXES, {"seconds": 10}).consume()  # 2.5 s, kept alive by NOOPs
            assert time.monotonic() - started >= 2
    finally:
        fast.stop()


def test_database_limit_and_injected_failure(standin, driver):
    standin.dbms.max_databases = 3  # system + neo4j + one
    system(driver, q.CREATE_DATABASE, name="acme-1")
    with pytest.raises(neo4j.exceptions.DatabaseError) as info:
        system(driver, q.CREATE_DATABASE, name="acme-2")
    assert info.value.code == "Neo.DatabaseError.Database.DatabaseLimitReached"
    standin.dbms.fail_next("DROP_DATABASE", "Neo.TransientError.General.DatabaseUnavailable", "busy")
    with driver.session(database="system") as session:
        with pytest.raises(neo4j.exceptions.TransientError):  # auto-commit: no driver retry
            session.run(q.DROP_DATABASE, name="acme-1").consume()
        session.run(q.DROP_DATABASE, name="acme-1").consume()
    assert standin.dbms.database_names() == ["neo4j"]


def test_community_edition_refuses_administration():
    with start_standin(password=PASSWORD, edition="community", arrow=False) as standin:
        with neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", PASSWORD)) as drv:
            assert system(drv, q.COMPONENTS)[0]["edition"] == "community"
            assert system(drv, q.COUNT_DATABASES) == [{"databases": 1}]
            for statement, params in ((q.CREATE_DATABASE, {"name": "acme-1"}),
                                      (q.CREATE_ALIAS, {"alias": "acme", "database": "neo4j", "moves": 1}),
                                      (q.DROP_DATABASE, {"name": "neo4j"})):
                with pytest.raises(ClientError) as info:
                    system(drv, statement, **params)
                assert info.value.code == "Neo.ClientError.Statement.UnsupportedAdministrationCommand"


# --- GDS Arrow Flight ---------------------------------------------------------------------------------------------


def arrow_client(standin, password=PASSWORD):
    client = flight.FlightClient(standin.arrow_uri)
    header = client.authenticate_basic_token("neo4j", password)
    return client, flight.FlightCallOptions(headers=[header])


def action(client, options, kind, body):
    return [json.loads(r.body.to_pybytes()) for r in client.do_action(flight.Action(kind, json.dumps(body).encode()),
                                                                       options)]


def put(client, options, name, entity, *batches):
    descriptor = flight.FlightDescriptor.for_command(json.dumps(
        {"name": "PUT_COMMAND", "version": "v1", "body": {"name": name, "entity_type": entity}}).encode())
    writer, reader = client.do_put(descriptor, batches[0].schema, options)
    acks = []
    for batch in batches:
        writer.write_batch(batch)
        acks.append(reader.read())
    writer.done_writing()
    writer.close()
    return acks


def nodes(ids, labels):
    return pa.record_batch({"nodeId": pa.array(ids, pa.int64()), "labels": pa.array(labels, pa.list_(pa.string())),
                            "age": pa.array(ids, pa.int64()), "score": pa.array([0.5] * len(ids))})


def rels(pairs, rel_type="KNOWS"):
    return pa.record_batch({"sourceNodeId": pa.array([s for s, _ in pairs], pa.int64()),
                            "targetNodeId": pa.array([t for _, t in pairs], pa.int64()),
                            "relationshipType": pa.array([rel_type] * len(pairs)).dictionary_encode()})


def test_flight_handshake_and_actions(standin):
    client, options = arrow_client(standin)
    with client:
        types = [a.type for a in client.list_actions(options)]
        assert types == ["v1/CREATE_DATABASE", "v1/NODE_LOAD_DONE", "v1/RELATIONSHIP_LOAD_DONE", "v1/ABORT"]
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_actions())  # no bearer header
    with pytest.raises(flight.FlightUnauthenticatedError) as info:
        arrow_client(standin, password="wrong-pass-123")
    assert "wrong-pass-123" not in str(info.value)


def test_flight_import_counts_and_database_online(standin, driver):
    client, options = arrow_client(standin)
    with client:
        assert action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1", "id_property": "nodeId"}) == [
            {"name": "acme-1"}]
        assert system(driver, q.LIST_DATABASES, prefix="acme") == []  # loading: not listed yet
        acks = put(client, options, "acme-1", "node", nodes([1, 2], [["Person"], ["Person", "Employee"]]),
                   nodes([3], [["Company"]]))
        assert len(acks) == 2 and all(a is not None for a in acks)
        assert action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"}) == [
            {"name": "acme-1", "node_count": 3}]
        put(client, options, "acme-1", "relationship", rels([(1, 2), (2, 1)]), rels([(2, 3)], "WORKS_AT"))
        assert action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": "acme-1"}) == [
            {"name": "acme-1", "relationship_count": 3}]
    assert system(driver, q.LIST_DATABASES, prefix="acme") == [{"name": "acme-1", "currentStatus": "online"}]
    assert driver.execute_query(q.COUNT_NODES, database_="acme-1").records[0]["count"] == 3
    types = {r["type"]: r["count"] for r in driver.execute_query(q.COUNT_BY_TYPE, database_="acme-1").records}
    assert types == {"KNOWS": 2, "WORKS_AT": 1}


def test_flight_abort_already_exists_and_validation(standin):
    standin.dbms.add_database("taken-1")
    client, options = arrow_client(standin)
    with client:
        with pytest.raises(pa.ArrowException, match="Already exists"):
            action(client, options, "v1/CREATE_DATABASE", {"name": "taken-1"})
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        with pytest.raises(pa.ArrowException, match="Already exists"):
            action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})  # import running
        bad = pa.record_batch({"nodeId": pa.array([1], pa.int64()), "flag": pa.array([True])})
        with pytest.raises(pa.ArrowInvalid, match="flag"):
            put(client, options, "acme-1", "node", bad)
        with pytest.raises(pa.ArrowInvalid, match="nodeId"):
            put(client, options, "acme-1", "node", pa.record_batch({"nodeId": pa.array([1], pa.int32())}))
        put(client, options, "acme-1", "node", nodes([1], [["Person"]]))
        with pytest.raises(pa.ArrowInvalid):  # relationships before NODE_LOAD_DONE
            put(client, options, "acme-1", "relationship", rels([(1, 1)]))
        action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
        with pytest.raises(pa.ArrowInvalid, match="endpoint 9"):
            put(client, options, "acme-1", "relationship", rels([(1, 9)]))
        assert action(client, options, "v1/ABORT", {"name": "acme-1"}) == [{"name": "acme-1"}]
        with pytest.raises(pa.ArrowKeyError):
            action(client, options, "v1/ABORT", {"name": "acme-1"})
        with pytest.raises(pa.ArrowKeyError):
            action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
    assert standin.dbms.imports == {} and standin.dbms.database_names() == ["neo4j", "taken-1"]
    assert [e["name"] for e in standin.dbms.events_of("v1/ABORT")] == ["acme-1", "acme-1"]


def test_flight_fault_modes(standin):
    faults = standin.dbms.faults
    client, options = arrow_client(standin)
    with client:
        faults.refuse_create = "UNAVAILABLE"
        with pytest.raises(flight.FlightUnavailableError):
            action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        faults.refuse_create = None
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        faults.drop_put_after_batches = 1
        with pytest.raises(flight.FlightUnavailableError):
            put(client, options, "acme-1", "node", nodes([1], [["A"]]), nodes([2], [["A"]]))
        faults.drop_put_after_batches = None
        faults.reject_batch = 3
        with pytest.raises(pa.ArrowInvalid, match="rejected"):
            put(client, options, "acme-1", "node", nodes([3], [["A"]]))
        faults.reject_batch = None
        faults.fail_action["v1/NODE_LOAD_DONE"] = "INTERNAL"
        with pytest.raises(flight.FlightInternalError):
            action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
        action(client, options, "v1/ABORT", {"name": "acme-1"})


def test_database_comes_online_after_polls_or_needs_create(standin, driver):
    faults = standin.dbms.faults
    faults.hidden_polls, faults.starting_polls = 1, 2
    client, options = arrow_client(standin)
    with client:
        for name in ("acme-1", "acme-2"):
            action(client, options, "v1/CREATE_DATABASE", {"name": name})
            put(client, options, name, "node", nodes([1, 2], [["A"], ["B"]]))
            action(client, options, "v1/NODE_LOAD_DONE", {"name": name})
            put(client, options, name, "relationship", rels([(1, 2)]))
            action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": name})
            faults.register_after_import = False
    statuses = [system(driver, q.DATABASE_STATUS, name="acme-1") for _ in range(4)]
    assert statuses == [[], [{"currentStatus": "starting", "statusMessage": ""}],
                        [{"currentStatus": "starting", "statusMessage": ""}],
                        [{"currentStatus": "online", "statusMessage": ""}]]
    assert system(driver, q.DATABASE_STATUS, name="acme-2") == []  # store written, database never registered
    system(driver, q.CREATE_DATABASE, name="acme-2")  # mounts the store files
    assert driver.execute_query(q.COUNT_NODES, database_="acme-2").records[0]["count"] == 2


# --- GDS Arrow behaviours for long loads and documented types ------------------------------------------------------


def test_flight_tokens_expire_after_ttl(standin):
    standin.arrow.token_ttl = 0.3
    client, options = arrow_client(standin)
    with client:
        assert client.list_actions(options)
        time.sleep(0.5)
        with pytest.raises(flight.FlightUnauthenticatedError, match="expired"):
            list(client.list_actions(options))
        fresh = flight.FlightCallOptions(headers=[client.authenticate_basic_token("neo4j", PASSWORD)])
        assert client.list_actions(fresh)


def test_flight_load_done_outlasts_a_client_deadline(standin):
    standin.arrow.load_done_delay = 1.0
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        put(client, options, "acme-1", "node", nodes([1], [["A"]]))
        short = flight.FlightCallOptions(headers=options_headers(client), timeout=0.3)
        with pytest.raises(flight.FlightTimedOutError):
            action(client, short, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-2"})
        put(client, options, "acme-2", "node", nodes([1], [["A"]]))
        started = time.monotonic()
        assert action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-2"})[0]["node_count"] == 1
        assert time.monotonic() - started >= 1.0


def options_headers(client):
    return [client.authenticate_basic_token("neo4j", PASSWORD)]


@pytest.mark.parametrize("checked_at", ["create", "finish"])
def test_flight_leftover_store_already_exists_at_create_or_finish(standin, checked_at):
    standin.dbms.faults.store_checked_at = checked_at
    standin.dbms.stores["acme-1"] = Graph()  # store files of an earlier import, never registered
    client, options = arrow_client(standin)
    with client:
        if checked_at == "create":
            with pytest.raises(pa.ArrowException, match="Already exists"):
                action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        else:
            action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
            put(client, options, "acme-1", "node", nodes([1], [["A"]]))
            action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
            with pytest.raises(pa.ArrowException, match="Already exists"):
                action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": "acme-1"})
        # force=true replaces the leftover files in either case
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1", "force": True})
        put(client, options, "acme-1", "node", nodes([1, 2], [["A"], ["B"]]))
        action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
        assert action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": "acme-1"})[0]["relationship_count"] == 0
    assert "acme-1" in standin.dbms.databases and "acme-1" not in standin.dbms.stores


def test_flight_property_types_follow_the_docs(standin):
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        named = pa.record_batch({"nodeId": pa.array([1], pa.int64()), "labels": pa.array(["A"]),
                                 "name": pa.array(["x"])})
        standin.arrow.accept_string_properties = False  # GDS's default: no string properties
        with pytest.raises(pa.ArrowInvalid, match="'name' has unsupported type string"):
            put(client, options, "acme-1", "node", named)
        standin.arrow.accept_string_properties = True  # the opt-in mode
        put(client, options, "acme-1", "node", named,
            pa.record_batch({"nodeId": pa.array([2], pa.int64()), "labels": pa.array(["A"]), "name": pa.array(["y"])}))
        action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
        for bad in (pa.array([1], pa.int64()), pa.array(["x"]), pa.array([[1.0]], pa.list_(pa.float64()))):
            with pytest.raises(pa.ArrowInvalid, match="relationships: float64"):
                put(client, options, "acme-1", "relationship", rels([(1, 2)]).append_column("w", bad))
        put(client, options, "acme-1", "relationship", rels([(1, 2)]).append_column("w", pa.array([0.5])))
        action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": "acme-1"})
    graph = standin.dbms.databases["acme-1"].graph
    assert graph.node_properties[2] == {"name": "y"} and graph.relationship_properties == [{"w": 0.5}]


def test_flight_nulls_become_nan_or_the_long_default(standin):
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        put(client, options, "acme-1", "node", pa.record_batch({
            "nodeId": pa.array([1, 2], pa.int64()), "labels": pa.array(["A", "A"]),
            "score": pa.array([None, 1.5], pa.float64()), "age": pa.array([3, None], pa.int64()),
            "vec": pa.array([None, [1]], pa.list_(pa.int64()))}))
        action(client, options, "v1/NODE_LOAD_DONE", {"name": "acme-1"})
        put(client, options, "acme-1", "relationship", rels([(1, 2)]).append_column("w", pa.array([None], pa.float64())))
        action(client, options, "v1/RELATIONSHIP_LOAD_DONE", {"name": "acme-1"})
    graph = standin.dbms.databases["acme-1"].graph
    assert math.isnan(graph.node_properties[1]["score"]) and graph.node_properties[1]["age"] == 3
    assert "vec" not in graph.node_properties[1]
    assert graph.node_properties[2] == {"score": 1.5, "age": -(2**63), "vec": [1]}
    assert math.isnan(graph.relationship_properties[0]["w"])


def test_flight_labels_are_not_nullable(standin):
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        with pytest.raises(pa.ArrowInvalid, match="'labels' contains null"):
            put(client, options, "acme-1", "node", nodes([1, 2], [["A"], None]))


def test_flight_stream_stalls_until_aborted(standin):
    standin.arrow.stall_after_batches = 1
    client, options = arrow_client(standin)
    with client:
        action(client, options, "v1/CREATE_DATABASE", {"name": "acme-1"})
        descriptor = flight.FlightDescriptor.for_command(json.dumps(
            {"name": "PUT_COMMAND", "version": "v1", "body": {"name": "acme-1", "entity_type": "node"}}).encode())
        writer, reader = client.do_put(descriptor, nodes([1], [["A"]]).schema, options)
        writer.write_batch(nodes([1], [["A"]]))
        assert reader.read() is not None
        writer.write_batch(nodes([2], [["A"]]))
        acked = []
        waiter = threading.Thread(target=lambda: acked.append(_read_or_error(reader)), daemon=True)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not acked  # no ack: the stream hangs
        other, other_options = arrow_client(standin)
        with other:
            action(other, other_options, "v1/ABORT", {"name": "acme-1"})
        waiter.join(5)
        # the abort ends the hanging stream: no ack (end of stream), and its status is NOT_FOUND
        assert acked and (acked[0] is None or isinstance(acked[0], pa.ArrowException))
        with pytest.raises(pa.ArrowKeyError, match="aborted"):
            writer.close()


def _read_or_error(reader):
    try:
        return reader.read()
    except pa.ArrowException as exc:
        return exc
