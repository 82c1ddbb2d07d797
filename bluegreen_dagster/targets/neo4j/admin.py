"""Neo4j administration over Bolt: databases, aliases, health, counts.

Every administration statement goes to the `system` database as an auto-commit `session.run` (WAIT commands
must not run inside an explicit transaction), wrapped in our own bounded retry loop on `is_retryable()` errors,
because auto-commit runs are never retried by the driver. Names are validated before any query and always sent
as `$parameters` (statements live in `queries.py`). Driver errors are mapped to `TransientTargetError` /
`PermanentTargetError` with a message that says what to fix; the password never appears in a message or log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import neo4j
from neo4j import exceptions as nx

from bluegreen_dagster.config_neo4j import Neo4jSettings, TopologySettings
from bluegreen_dagster.secrets import scrub
from bluegreen_dagster.targets.base import (
    PermanentTargetError,
    QueryRefused,
    QueryResult,
    QueryTimedOut,
    TransientTargetError,
    validate_alias,
    validate_database,
)
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.cluster import merge_rows, merged_status

log = logging.getLogger(__name__)

T = TypeVar("T")

ENTERPRISE_ONLY = "this needs Neo4j Enterprise; use target: embedded to try it without one"

UNSUPPORTED_ADMIN = "Neo.ClientError.Statement.UnsupportedAdministrationCommand"
NOT_SYSTEM_DATABASE = "Neo.ClientError.Statement.NotSystemDatabaseError"
UNAUTHORIZED = "Neo.ClientError.Security.Unauthorized"
EXISTING_DATABASE = "Neo.ClientError.Database.ExistingDatabaseFound"
EXISTING_ALIAS = "Neo.ClientError.Database.ExistingAliasFound"
DATABASE_LIMIT = "Neo.DatabaseError.Database.DatabaseLimitReached"
DATABASE_NOT_FOUND = "Neo.ClientError.Database.DatabaseNotFound"
FORBIDDEN = "Neo.ClientError.Security.Forbidden"
# A transaction stopped by its timeout (5.x names it ...ClientConfiguration when the client set the timeout).
TIMED_OUT = ("Neo.ClientError.Transaction.TransactionTimedOut",
             "Neo.ClientError.Transaction.TransactionTimedOutClientConfiguration")

# Retry budget of one call, kept small because the step's RetryPolicy retries the whole step on top of it
# (the worst case of the stack is `jobs.dead_target_seconds`, documented in the README).
ATTEMPTS = 2  # our own loop around every statement
BACKOFF = 0.5  # seconds before our second attempt
CONNECTION_TIMEOUT = 5.0  # driver: opening one connection
MAX_TRANSACTION_RETRY_TIME = 5.0  # driver: its own retries inside execute_query (reads of data databases)
WAIT_POLL_SECONDS = 0.5  # between two looks at SHOW DATABASE after a CREATE/DROP whose WAIT gave up


# What an operator checks when the Bolt port does not answer (the message already names host:port).
UNREACHABLE_HINT = ("check that Neo4j is running and that neo4j.host / neo4j.bolt_port name its Bolt listener "
                    "(server.bolt.listen_address), reachable from this host")


def bolt_uri(settings: Neo4jSettings) -> str:
    """neo4j://host:port when neo4j.uri routes (a cluster), else bolt://host:port. TLS is never in the scheme
    (`+s`): the driver then refuses a custom CA, so make_driver sets it from neo4j.tls instead."""
    return f"{'neo4j' if settings.routing else 'bolt'}://{settings.host}:{settings.bolt_port}"


def make_driver(settings: Neo4jSettings) -> neo4j.Driver:
    """A direct (bolt://) or routing (neo4j://) driver; TLS from neo4j.tls with neo4j.tls_ca_file or the system
    store."""
    config: dict[str, Any] = {"connection_timeout": CONNECTION_TIMEOUT,
                              "max_transaction_retry_time": MAX_TRANSACTION_RETRY_TIME,
                              "max_connection_pool_size": max(4, settings.concurrency * 2),
                              "user_agent": "bluegreen-dagster"}
    if settings.tls:
        config["encrypted"] = True
        config["trusted_certificates"] = (neo4j.TrustCustomCAs(str(settings.tls_ca_file)) if settings.tls_ca_file
                                          else neo4j.TrustSystemCAs())
    return neo4j.GraphDatabase.driver(bolt_uri(settings), auth=(settings.user, settings.password.get_secret_value()),
                                      **config)


def _gave_up(rows: list[dict[str, Any]]) -> bool:
    """A Cypher 5 WAIT answer (one row per server) where some server did not finish in time (success=false)."""
    return any(r.get("success") is False for r in rows)


def _where(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{r.get('address', '?')}: {r.get('state', '?')} {r.get('message', '')}".strip()
                     for r in rows if r.get("success") is False)


class ReadRefused(PermanentTargetError):
    """The server refused a read made as another user (`Admin.read_as`)."""


class Admin:
    """Administration and read helpers over one driver. Not thread-safe to close while in use."""

    def __init__(self, settings: Neo4jSettings, *, attempts: int = ATTEMPTS, backoff: float = BACKOFF,
                 driver: neo4j.Driver | None = None) -> None:
        self.settings = settings
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.uri = bolt_uri(settings)
        self._driver = driver
        # Every session (system and data databases) chains its bookmarks here: on a cluster, a read right after a
        # write (SHOW DATABASES after CREATE, the alias after ALTER, counts after the load) waits for that write
        # on whichever member serves it, instead of reading a lagging copy.
        self.bookmarks = neo4j.GraphDatabase.bookmark_manager()

    def for_server(self, address: str) -> Admin:
        """An Admin on one cluster member, direct (bolt://) to `address` (host:port, as SHOW SERVERS gives it), with
        the same user and TLS: what is measured per server (heap, page cache) is that server's own."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise PermanentTargetError(f"SHOW SERVERS gave {address!r}, not a host:port Bolt address")
        member = self.settings.model_copy(update={"uri": "", "host": host.strip("[]"), "bolt_port": int(port)})
        return Admin(member, attempts=1, backoff=self.backoff)

    # ---------------------------------------------------------------------------------------------------------
    # plumbing

    @property
    def driver(self) -> neo4j.Driver:
        if self._driver is None:
            try:
                self._driver = make_driver(self.settings)
            except (nx.ConfigurationError, ValueError, OSError) as exc:
                raise PermanentTargetError(f"cannot configure the Neo4j driver for {self.uri}: "
                                           f"{scrub(str(exc), self.settings.password)}") from None
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def map_error(self, exc: Exception, what: str) -> Exception:
        """A driver exception as a target error whose message says what to fix (caller raises it `from None`)."""
        code = getattr(exc, "code", None) or ""
        gql = getattr(exc, "gql_status", None) or ""
        # Belt and braces: never let the password through, whatever a library put into a message.
        message = scrub(getattr(exc, "message", None) or str(exc), self.settings.password)
        if isinstance(exc, nx.AuthError) or code == UNAUTHORIZED:
            return PermanentTargetError(
                f"authentication failed for user {self.settings.user!r} at {self.uri}: "
                "check neo4j.user / NEO4J_PASSWORD")
        if code == UNSUPPORTED_ADMIN or gql == "51N27" or (
                code == NOT_SYSTEM_DATABASE and "Unsupported administration command" in message):
            return PermanentTargetError(f"{what}: {ENTERPRISE_ONLY} (server said: {code or gql})")
        if code == EXISTING_DATABASE or gql == "42N11":
            return PermanentTargetError(f"{what}: a database or alias with that name already exists ({message})")
        if code == EXISTING_ALIAS:
            return PermanentTargetError(
                f"{what}: refused, an alias points at this database; move the alias first ({message})")
        if code == DATABASE_LIMIT:
            return TransientTargetError(
                f"{what}: the server's database limit is reached (dbms.max_databases); drop old snapshot "
                f"databases or raise the limit ({message})")
        if code == DATABASE_NOT_FOUND:
            return PermanentTargetError(f"{what}: database not found ({message})")
        if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)):
            return TransientTargetError(f"cannot reach Neo4j at {self.uri}: {message}; {UNREACHABLE_HINT}")
        if isinstance(exc, nx.UnsupportedServerProduct) or isinstance(exc, nx.ConfigurationError):
            return PermanentTargetError(f"{what}: {self.uri} is not a usable Neo4j server ({message})")
        if isinstance(exc, nx.Neo4jError) and exc.is_retryable():
            return TransientTargetError(f"{what}: Neo4j is busy or unavailable, retry later ({code}: {message})")
        if isinstance(exc, nx.DriverError) and exc.is_retryable():
            return TransientTargetError(f"{what}: {message}")
        if isinstance(exc, (nx.Neo4jError, nx.DriverError)):
            return PermanentTargetError(f"{what} failed: {code + ': ' if code else ''}{message}")
        if isinstance(exc, OSError):
            return TransientTargetError(f"cannot reach Neo4j at {self.uri}: {message}; {UNREACHABLE_HINT}")
        return PermanentTargetError(f"{what} failed: {type(exc).__name__}: {message}")

    def _with_retry(self, what: str, call: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except (nx.Neo4jError, nx.DriverError, OSError) as exc:
                retryable = isinstance(exc, OSError) or exc.is_retryable()
                if isinstance(exc, nx.AuthError) or getattr(exc, "code", None) == UNAUTHORIZED:
                    retryable = False
                if not retryable or attempt == self.attempts:
                    raise self.map_error(exc, what) from None
                log.warning("%s: attempt %d/%d failed (%s), retrying in %.1fs", what, attempt, self.attempts,
                            scrub(f"{type(exc).__name__}: {exc}", self.settings.password)[:300], delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")

    def run(self, query: str, params: dict[str, Any] | None = None, *, database: str | None = "system",
            what: str | None = None, wait: bool = False) -> list[dict[str, Any]]:
        """Auto-commit run (our own retry loop); `database=None` means the user's home database. Query parameters
        go in `params` (a `$database` parameter must not collide with the session's database). `wait`: a WAIT
        command, whose rows say per server whether it finished in time (`success`); one that did not is a
        TransientTargetError (the next attempt finds the state it left)."""
        params = params or {}
        label = what or " ".join(query.split()[:3])

        def call() -> list[dict[str, Any]]:
            with self.driver.session(database=database, bookmark_manager=self.bookmarks) as session:
                return [record.data() for record in session.run(query, params)]

        rows = self._with_retry(label, call)
        if wait and _gave_up(rows):
            raise TransientTargetError(f"{label}: not finished when WAIT gave up ({_where(rows)}); it may still "
                                       "complete, the next attempt checks")
        return rows

    def read(self, database: str, query: str, what: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A managed read transaction on a data database (the driver retries transient errors itself)."""

        def call() -> list[dict[str, Any]]:
            records, _, _ = self.driver.execute_query(query, params or {}, database_=database,
                                                      routing_=neo4j.RoutingControl.READ,
                                                      bookmark_manager_=self.bookmarks)
            return [record.data() for record in records]

        return self._with_retry(what, call)

    def read_as(self, user: str, database: str, query: str, what: str) -> list[dict[str, Any]]:
        """`read` as another user (`impersonated_user`; neo4j.user needs IMPERSONATE). A refusal of that user
        (no ACCESS, no such user, no IMPERSONATE) raises ReadRefused with the server's code and message."""

        def call() -> list[dict[str, Any]]:
            records, _, _ = self.driver.execute_query(query, {}, database_=database, impersonated_user_=user,
                                                      routing_=neo4j.RoutingControl.READ,
                                                      bookmark_manager_=self.bookmarks)
            return [record.data() for record in records]

        try:
            return self._with_retry(what, call)
        except PermanentTargetError as exc:
            if FORBIDDEN in str(exc) or DATABASE_NOT_FOUND in str(exc):
                raise ReadRefused(str(exc)) from None
            raise

    def read_only_query(self, database: str, query: str, *, timeout: float, keep_rows: int) -> QueryResult:
        """Run a query from config.yaml (a smoke query) to its end in a READ transaction on `database` with the
        server-side transaction timeout `timeout`: the server refuses writes and stops it at the limit. One
        attempt: the step's RetryPolicy retries what is transient (unreachable, busy)."""
        started = time.monotonic()
        try:
            with self.driver.session(database=database, default_access_mode=neo4j.READ_ACCESS,
                                     bookmark_manager=self.bookmarks) as session, \
                    session.begin_transaction(timeout=timeout) as tx:
                result = tx.run(query)
                columns, rows, count = list(result.keys()), [], 0
                for record in result:
                    if count < keep_rows:
                        rows.append(list(record.values()))
                    count += 1
        except nx.Neo4jError as exc:
            seconds = time.monotonic() - started
            message = scrub(exc.message or str(exc), self.settings.password)
            if exc.code in TIMED_OUT:
                raise QueryTimedOut(f"stopped by Neo4j after {seconds:.2f}s, the limit is {timeout:g}s") from None
            if exc.classification == "ClientError" and exc.code not in (UNAUTHORIZED, DATABASE_NOT_FOUND) \
                    and not isinstance(exc, nx.AuthError):
                raise QueryRefused(f"Neo4j refused it: {exc.code}: {message}") from None
            raise self.map_error(exc, f"running a read-only query on {database}") from None
        except (nx.DriverError, OSError) as exc:
            raise self.map_error(exc, f"running a read-only query on {database}") from None
        seconds = time.monotonic() - started
        if seconds > timeout:
            raise QueryTimedOut(f"took {seconds:.2f}s, the limit is {timeout:g}s")
        return QueryResult(columns, rows, count, seconds)

    # ---------------------------------------------------------------------------------------------------------
    # statements

    def components(self) -> dict[str, Any]:
        rows = self.run(queries.COMPONENTS, what="connecting to Neo4j")
        kernel = next((r for r in rows if r.get("name") == "Neo4j Kernel"), rows[0] if rows else {})
        return {"version": (kernel.get("versions") or ["?"])[0], "edition": kernel.get("edition", "?")}

    def database_status(self, name: str) -> tuple[str, str] | None:
        """(currentStatus, statusMessage) or None when no database has that name."""
        validate_database(name)
        rows = self.run(queries.DATABASE_STATUS, {"name": name}, what=f"reading the status of database {name}")
        if not rows:
            return None
        status = merged_status(r["currentStatus"] for r in rows) or "unknown"
        return status, "; ".join(sorted({r.get("statusMessage") or "" for r in rows} - {""}))

    def list_databases(self, customer: str) -> list[tuple[str, str]]:
        validate_alias(customer)
        rows = self.run(queries.LIST_DATABASES, {"prefix": f"{customer}-"}, what=f"listing databases of {customer}")
        return merge_rows((r["name"], r["currentStatus"]) for r in rows)

    def server_count(self) -> int:
        """Members of the DBMS (SHOW SERVERS); 1 where the server does not list them (Community)."""
        try:
            rows = self.run(queries.SERVER_COUNT, what="listing servers")
        except PermanentTargetError as exc:
            if ENTERPRISE_ONLY not in str(exc):
                raise
            return 1
        return int(rows[0]["servers"]) if rows else 1

    def count_databases(self) -> int:
        rows = self.run(queries.COUNT_DATABASES, what="counting databases")
        return int(rows[0]["databases"]) if rows else 0

    def alias_target(self, customer: str) -> str | None:
        validate_alias(customer)
        rows = self.run(queries.ALIAS_TARGET, {"alias": customer}, what=f"reading alias {customer}")
        return rows[0]["database"] if rows else None

    def alias_fence(self, customer: str) -> tuple[str | None, int]:
        """(the alias target, the `moves` its properties carry: 0 when none, e.g. an alias made by hand)."""
        validate_alias(customer)
        rows = self.run(queries.ALIAS_FENCE, {"alias": customer}, what=f"reading alias {customer}")
        if not rows:
            return None, 0
        moves = (rows[0].get("properties") or {}).get("moves")
        return rows[0]["database"], int(moves) if isinstance(moves, int) else 0

    def create_alias(self, customer: str, database: str, moves: int = 1) -> None:
        validate_alias(customer), validate_database(database)
        self.run(queries.CREATE_ALIAS, {"alias": customer, "database": database, "moves": int(moves)},
                 what=f"creating alias {customer} for {database}")

    def alter_alias(self, customer: str, database: str, moves: int) -> None:
        validate_alias(customer), validate_database(database)
        self.run(queries.ALTER_ALIAS, {"alias": customer, "database": database, "moves": int(moves)},
                 what=f"moving alias {customer} to {database}")

    def create_database(self, name: str, topology: TopologySettings | None = None, *, mount: bool = False) -> None:
        """CREATE DATABASE $name WAIT, with `TOPOLOGY $primaries PRIMARIES $secondaries SECONDARIES` when given (the
        counts are parameters too, checked to be plain ints); `mount`: IF NOT EXISTS, for the store an Arrow import
        left (arrow_mount.py). A WAIT that gave up (success=false) is not taken as done: polled until online."""
        validate_database(name)
        what = f"creating database {name}"
        params: dict[str, Any] = {"name": name}
        if topology is None:
            query = queries.MOUNT_DATABASE if mount else queries.CREATE_DATABASE
        else:
            counts = {"primaries": topology.primaries, "secondaries": topology.secondaries}
            if not all(type(n) is int and n >= 0 for n in counts.values()):
                raise PermanentTargetError(f"neo4j.topology must be whole numbers, got {counts}")
            query = queries.MOUNT_DATABASE_TOPOLOGY if mount else queries.CREATE_DATABASE_TOPOLOGY
            params.update(counts)
            what += f" on {counts['primaries']} primaries and {counts['secondaries']} secondaries"
        rows = self.run(query, params, what=what)
        if _gave_up(rows):
            self._await_status(name, "online", what, rows)

    def allocation(self, name: str) -> list[dict[str, Any]]:
        """One row per server hosting `name` (SHOW DATABASES): status, role and the current and requested counts."""
        validate_database(name)
        return self.run(queries.DATABASE_ALLOCATION, {"name": name}, what=f"reading where database {name} runs")

    def servers(self) -> list[dict[str, Any]]:
        """SHOW SERVERS: name, address, state, health of every member; [] where the server does not list them."""
        try:
            return self.run(queries.SERVERS, what="listing servers")
        except PermanentTargetError as exc:
            if ENTERPRISE_ONLY not in str(exc):
                raise
            return []

    def drop_database(self, name: str) -> None:
        """DROP ... WAIT, then polled until SHOW DATABASES no longer lists it: a WAIT that gave up (success=false)
        leaves the database "stopping" with its name taken, and a CREATE of that name would meet "already
        exists"; Cypher 25 answers WAIT with notifications instead of rows, so the list is the one word."""
        validate_database(name)
        what = f"dropping database {name}"
        rows = self.run(queries.DROP_DATABASE, {"name": name}, what=what)
        self._await_status(name, None, what, rows)

    def _await_status(self, name: str, want: str | None, what: str, rows: list[dict[str, Any]]) -> None:
        """Poll SHOW DATABASE until `name` is in status `want` (None: no longer listed), at most
        neo4j.online_timeout seconds; then a TransientTargetError (the next attempt finds the state it left)."""
        deadline = time.monotonic() + self.settings.online_timeout
        while True:
            status = self.database_status(name)
            if (status[0] if status else None) == want:
                return
            if time.monotonic() >= deadline:
                seen = f"{status[0]}" + (f" ({status[1]})" if status[1] else "") if status else "not listed"
                waited = f"; WAIT gave up ({_where(rows)})" if _gave_up(rows) else ""
                raise TransientTargetError(f"{what}: database {name} is {seen} after "
                                           f"{self.settings.online_timeout:g}s{waited}; it may still finish, the "
                                           "next attempt checks")
            log.info("%s: database %s is %s, waiting for %s", what, name, status[0] if status else "not listed",
                     want or "it to be gone")
            time.sleep(WAIT_POLL_SECONDS)

    def grant(self, statement: str, database: str, role: str) -> None:
        """queries.GRANT_ACCESS or GRANT_MATCH for `role` on `database` (a database, never an alias)."""
        validate_database(database)
        self.run(statement, {"database": database, "role": role},
                 what=f"granting {statement.split()[1]} on {database} to role {role!r}")

    def privilege_commands(self) -> list[str]:
        rows = self.run(queries.PRIVILEGE_COMMANDS, what="listing privileges (SHOW PRIVILEGES AS COMMANDS)")
        return [r["command"] for r in rows if isinstance(r.get("command"), str)]

    def replay(self, command: str, what: str) -> None:
        """A privilege command from `privilege_commands`, rewritten by access.py for a new, validated name."""
        self.run(command, what=what)

    def user_roles(self, user: str) -> list[str] | None:
        rows = self.run(queries.USER_ROLES, {"user": user}, what=f"reading the roles of user {user!r}")
        return sorted(rows[0]["roles"] or []) if rows else None

    def heap_percent(self) -> float | None:
        rows = self.run(queries.HEAP, what="reading heap usage")
        if not rows or not rows[0].get("max"):
            return None
        return 100.0 * float(rows[0]["used"]) / float(rows[0]["max"])

    def pagecache_percent(self) -> float | None:
        """Page cache usage from the Enterprise metrics gauge; None when the server does not publish it."""
        rows = self.run(queries.PAGECACHE, database=None, what="reading page cache usage")
        ratios = [float(r["ratio"]) for r in rows if r.get("ratio") is not None]
        return 100.0 * max(ratios) if ratios else None
