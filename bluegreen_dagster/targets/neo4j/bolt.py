"""One Bolt connection of the Neo4j target: the driver, our retry loop, driver errors as target errors, and the
ways a statement is sent (`run` on `system`, `read` / `read_as` / `read_only_query` on a data database).

Every administration statement goes to the `system` database as an auto-commit `session.run` (WAIT commands
must not run inside an explicit transaction), wrapped in our own bounded retry loop on `is_retryable()` errors,
because auto-commit runs are never retried by the driver. Driver errors are mapped to `TransientTargetError` /
`PermanentTargetError` with a message that says what to fix; the password never appears in a message or log.
The statements themselves are `Admin`'s (admin.py), their texts in queries.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import neo4j
from neo4j import exceptions as nx

from bluegreen_dagster.config_neo4j import Neo4jSettings
from bluegreen_dagster.secrets import scrub
from bluegreen_dagster.targets.base import (
    PermanentTargetError,
    QueryRefused,
    QueryResult,
    QueryTimedOut,
    TransientTargetError,
)

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


def gave_up(rows: list[dict[str, Any]]) -> bool:
    """A Cypher 5 WAIT answer (one row per server) where some server did not finish in time (success=false)."""
    return any(r.get("success") is False for r in rows)


def unfinished(rows: list[dict[str, Any]]) -> str:
    """The servers of a WAIT answer that did not finish in time, each with its state and message."""
    return "; ".join(f"{r.get('address', '?')}: {r.get('state', '?')} {r.get('message', '')}".strip()
                     for r in rows if r.get("success") is False)


class ReadRefused(PermanentTargetError):
    """The server refused a read made as another user (`BoltClient.read_as`)."""


class BoltClient:
    """One driver, our retry loop and the ways a statement is sent. Not thread-safe to close while in use."""

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
        if wait and gave_up(rows):
            raise TransientTargetError(f"{label}: not finished when WAIT gave up ({unfinished(rows)}); it may still "
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
