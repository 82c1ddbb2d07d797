"""The connection to the GDS Arrow Flight server: authentication, call options, actions and error mapping.

- Deadlines only on short calls (handshake, list_actions, CREATE_DATABASE, ABORT). DoPut streams and LOAD_DONE
  actions run without one: a gRPC deadline covers the whole call, so a healthy hour-long stream or finalisation
  would be killed by it. Stalls are detected by lack of progress instead (see `arrow.py` and `long_action`).
- The Bearer token is refreshed before it is `token_max_age` old (GDS evicts tokens; the official client renews
  after 10 minutes), and a call answered UNAUTHENTICATED is retried once after a fresh handshake. A handshake
  that is refused fails at once: the password is wrong.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from bluegreen_dagster.config_neo4j import Neo4jSettings
from bluegreen_dagster.secrets import scrub
from bluegreen_dagster.targets.base import PermanentTargetError, TargetError, TransientTargetError

log = logging.getLogger(__name__)

SHORT_TIMEOUT = 60.0  # seconds, for calls that answer at once
TOKEN_MAX_AGE = 540.0  # seconds; renewed before the 10 minutes after which the official client renews
HEARTBEAT = 60.0  # seconds between "still waiting" lines while a LOAD_DONE finalises


class FlightConnection:
    """One authenticated FlightClient shared by all streams of a load (thread-safe)."""

    def __init__(self, settings: Neo4jSettings, *, short_timeout: float = SHORT_TIMEOUT,
                 token_max_age: float = TOKEN_MAX_AGE, heartbeat: float = HEARTBEAT,
                 say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.short_timeout = short_timeout
        self.token_max_age = token_max_age
        self.heartbeat = heartbeat
        self.say = say or log.info
        self.where = f"{settings.host}:{settings.arrow_port}"
        scheme = "grpc+tls" if settings.tls else "grpc+tcp"
        self.location = f"{scheme}://{settings.host}:{settings.arrow_port}"
        self._lock = threading.Lock()
        self._client: flight.FlightClient | None = None
        self._header: tuple[bytes, bytes] | None = None
        self._token_at = 0.0

    # -- errors -------------------------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        return scrub(text, self.settings.password)

    def map_error(self, exc: BaseException, what: str) -> TargetError:
        message = self.scrub(str(exc)).replace("org.apache.arrow.flight.FlightRuntimeException: ", "")
        for noise in (". Detail:", ". gRPC client debug context:", "\nDetail:"):  # keep the server's sentence
            message = message.split(noise, 1)[0]
        if isinstance(exc, flight.FlightUnauthenticatedError):
            return PermanentTargetError(f"GDS Arrow server at {self.where}: authentication failed for user "
                                        f"{self.settings.user!r} ({what}): check neo4j.user / NEO4J_PASSWORD")
        if isinstance(exc, flight.FlightUnauthorizedError):
            return PermanentTargetError(f"{what}: permission denied by the GDS Arrow server at {self.where}: {message}")
        if isinstance(exc, (flight.FlightUnavailableError, flight.FlightTimedOutError)):
            return TransientTargetError(f"lost or could not reach the GDS Arrow server at {self.where} ({what}): "
                                        f"{message}; check gds.arrow.enabled and gds.arrow.listen_address")
        if isinstance(exc, flight.FlightCancelledError):
            return TransientTargetError(f"{what}: cancelled by the GDS Arrow server: {message}")
        if "Already exists" in message or "already exists" in message:
            return AlreadyExists(f"{what}: a database or an import with that name already exists on "
                                 f"{self.where}: {message}")
        return PermanentTargetError(f"{what} failed on the GDS Arrow server at {self.where}: {message}")

    # -- connection and token -------------------------------------------------------------------------------------

    def _handshake(self, client: flight.FlightClient) -> None:
        try:
            self._header = client.authenticate_basic_token(self.settings.user,
                                                           self.settings.password.get_secret_value(),
                                                           flight.FlightCallOptions(timeout=self.short_timeout))
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, (flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError)):
                raise self.map_error(exc, "authenticating") from None
            # gRPC reports a refused connection during the handshake as INTERNAL "Could not finish writing ...".
            raise TransientTargetError(
                f"cannot reach the GDS Arrow server at {self.where}: {self.scrub(str(exc)).split('. Detail:')[0]}; "
                "is it running/enabled/licensed (gds.arrow.enabled=true, gds.arrow.listen_address, "
                "neo4j.arrow_port)?") from None
        self._token_at = time.monotonic()

    def client(self) -> flight.FlightClient:
        with self._lock:
            if self._client is None:
                kwargs: dict[str, Any] = {}
                if self.settings.tls and self.settings.tls_ca_file:
                    try:
                        kwargs["tls_root_certs"] = Path(self.settings.tls_ca_file).read_bytes()
                    except OSError as exc:
                        raise PermanentTargetError(f"neo4j.tls_ca_file {self.settings.tls_ca_file}: {exc}") from None
                client = flight.FlightClient(self.location, **kwargs)
                try:
                    self._handshake(client)
                except BaseException:
                    client.close()
                    raise
                self._client = client
            elif time.monotonic() - self._token_at >= self.token_max_age:
                log.info("GDS Arrow token is %.0fs old: authenticating again", time.monotonic() - self._token_at)
                self._handshake(self._client)
            return self._client

    def reauthenticate(self, stale: tuple[bytes, bytes] | None) -> None:
        """After UNAUTHENTICATED on a call made with `stale`: a fresh handshake (once per stale token)."""
        client = self.client()
        with self._lock:
            if self._header == stale:
                log.warning("GDS Arrow server refused the token: authenticating again")
                self._handshake(client)

    def options(self, *, deadline: bool) -> tuple[flight.FlightCallOptions, tuple[bytes, bytes] | None]:
        """Call options with the current token; a deadline only for calls that answer at once."""
        self.client()
        header = self._header
        return flight.FlightCallOptions(headers=[header] if header else None,
                                        timeout=self.short_timeout if deadline else None), header

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- calls --------------------------------------------------------------------------------------------------

    def with_token(self, call: Callable[[flight.FlightClient, flight.FlightCallOptions], Any], what: str, *,
                   deadline: bool) -> Any:
        """Run `call`, retried once after a fresh handshake if the server says the token is no longer valid."""
        for attempt in (1, 2):
            options, header = self.options(deadline=deadline)
            try:
                return call(self.client(), options)
            except flight.FlightUnauthenticatedError as exc:
                if attempt == 2:
                    raise self.map_error(exc, what) from None
                self.reauthenticate(header)
            except (pa.ArrowException, OSError) as exc:
                raise self.map_error(exc, what) from None
        raise AssertionError("unreachable")

    def list_action_types(self) -> set[str]:
        return self.with_token(lambda c, o: {a.type for a in c.list_actions(o)}, "listing actions", deadline=True)

    def action(self, action_type: str, body: dict[str, Any], *, deadline: bool = True) -> dict[str, Any]:
        """One DoAction; results consumed eagerly (Flight raises only when the result stream is read)."""
        payload = json.dumps(body).encode()
        results = self.with_token(lambda c, o: list(c.do_action(flight.Action(action_type, payload), o)),
                                  f"{action_type} {body.get('name')}", deadline=deadline)
        if not results:
            return {}
        try:
            return json.loads(results[0].body.to_pybytes() or b"{}")
        except ValueError:
            raise PermanentTargetError(f"{action_type}: the GDS Arrow server answered something that is not JSON: "
                                       f"{results[0].body.to_pybytes()[:200]!r}") from None

    def long_action(self, action_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """A LOAD_DONE: no deadline (finalisation writes the whole store), a heartbeat line while it runs."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["reply"] = self.action(action_type, body, deadline=False)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc

        start = time.monotonic()
        worker = threading.Thread(target=run, name=f"arrow-{action_type.split('/')[-1].lower()}", daemon=True)
        worker.start()
        while True:
            worker.join(self.heartbeat)
            if not worker.is_alive():
                break
            self.say(f"{action_type} {body.get('name')}: the GDS Arrow server is still finalising "
                     f"({time.monotonic() - start:.0f}s so far)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["reply"]


class AlreadyExists(PermanentTargetError):
    """The server reports a database, store files or an import of that name (at create or at finalisation)."""
