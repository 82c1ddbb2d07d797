"""A thin client for the GDS Arrow Flight server, protocol v1, creating one Neo4j database per snapshot.

Sequence (reference neo4j.md §1.4): `v1/CREATE_DATABASE` -> DoPut node batches (one ack per batch) ->
`v1/NODE_LOAD_DONE` (node_count checked) -> DoPut relationship batches -> `v1/RELATIONSHIP_LOAD_DONE`
(relationship_count checked). On any failure after the create: `v1/ABORT`, drop what was made, raise the cause.

Batches stream straight from Parquet (one batch per stream in memory); up to `neo4j.concurrency` DoPut streams
run in parallel, one per file. Types are normalised per batch; the property-type rule (and why) is in the README, "Property types with the GDS Arrow loader".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from bluegreen_dagster.columns import is_integer, is_list, is_string, labels_as_list_array
from bluegreen_dagster.config import Neo4jSettings
from bluegreen_dagster.snapshots import (
    LABELS,
    NODE_COLUMNS,
    NODE_ID,
    REL_TYPE,
    RELATIONSHIP_COLUMNS,
    SOURCE_ID,
    TARGET_ID,
    Snapshot,
    SnapshotError,
    iter_batches,
    open_parquet,
)
from bluegreen_dagster.targets.base import PermanentTargetError, TargetError, TransientTargetError
from bluegreen_dagster.targets.neo4j import queries

log = logging.getLogger(__name__)

CREATE_DATABASE = "v1/CREATE_DATABASE"
NODE_LOAD_DONE = "v1/NODE_LOAD_DONE"
RELATIONSHIP_LOAD_DONE = "v1/RELATIONSHIP_LOAD_DONE"
ABORT = "v1/ABORT"

INT64_MAX = 2**63 - 1

# --------------------------------------------------------------------------------------------------------------
# Type normalisation (pure functions, also used by tests and by the stand-in's expectations)

_UNSUPPORTED_HINT = ("GDS Arrow database import takes int64, float64, string and lists of int64/float64/float32 "
                     "properties: cast the column in the producer (e.g. booleans to int64 0/1 or to string), or "
                     "use neo4j.loader: cypher")


def _to_int64(column: pa.Array, path: Path, name: str) -> pa.Array:
    if column.type == pa.int64():
        return column
    if pa.types.is_uint64(column.type) and len(column) and column.null_count < len(column):
        biggest = pc.max(column).as_py()
        if biggest is not None and biggest > INT64_MAX:
            raise SnapshotError(f"{path}: column {name!r} holds {biggest}, which does not fit in int64")
    return column.cast(pa.int64())


def property_target_type(t: pa.DataType) -> pa.DataType | None:
    """The Arrow type a property column is sent as, or None when the rule rejects it."""
    if is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if is_string(t):
        return pa.string()
    if is_list(t):
        v = t.value_type
        if is_integer(v):
            return pa.list_(pa.int64())
        if pa.types.is_float32(v):
            return pa.list_(pa.float32())
        if pa.types.is_floating(v):
            return pa.list_(pa.float64())
    return None


def _cast_property(column: pa.Array, target: pa.DataType, path: Path, name: str) -> pa.Array:
    if column.type == target:
        return column
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if target == pa.int64():
        return _to_int64(column, path, name)
    if pa.types.is_list(target) and is_integer(column.type.value_type) and pa.types.is_uint64(column.type.value_type):
        flat = pc.list_flatten(column)
        if len(flat) and flat.null_count < len(flat) and (pc.max(flat).as_py() or 0) > INT64_MAX:
            raise SnapshotError(f"{path}: column {name!r} holds values that do not fit in int64")
    try:
        return column.cast(target)
    except pa.ArrowInvalid as exc:
        raise SnapshotError(f"{path}: column {name!r} cannot be sent as {target}: {exc}") from None


def normalize_batch(batch: pa.RecordBatch, path: Path, entity: str) -> pa.RecordBatch:
    """The batch as the GDS Arrow server expects it: ids int64, labels list<string>, types string, properties by
    the README's property-type rule. Raises SnapshotError naming file and column for anything else."""
    arrays, fields = [], []
    id_columns = (NODE_ID,) if entity == "node" else (SOURCE_ID, TARGET_ID)
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in id_columns:
            if column.null_count:
                raise SnapshotError(f"{path}: column {name!r} has {column.null_count} null ids")
            column = _to_int64(column, path, name)
            if len(column) and pc.min(column).as_py() <= 0:
                raise SnapshotError(f"{path}: column {name!r} holds ids <= 0; GDS Arrow needs positive node ids")
        elif entity == "node" and name == LABELS:
            column = labels_as_list_array(column)
        elif entity == "relationship" and name == REL_TYPE:
            if column.null_count:
                raise SnapshotError(f"{path}: column {name!r} has {column.null_count} null relationship types")
            if pa.types.is_dictionary(column.type) or pa.types.is_large_string(column.type):
                column = column.cast(pa.string())
        else:
            target = property_target_type(column.type)
            if target is None:
                raise SnapshotError(f"{path}: property column {name!r} has type {column.type}: {_UNSUPPORTED_HINT}")
            column = _cast_property(column, target, path, name)
        arrays.append(column)
        fields.append(pa.field(name, column.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


# --------------------------------------------------------------------------------------------------------------
# The client


@dataclass
class ArrowLoadResult:
    nodes: int
    relationships: int
    bytes_sent: int
    seconds: float


class ArrowLoader:
    """Creates database `snapshot.key` through the GDS Arrow server. `drop` removes a half-made database."""

    def __init__(self, settings: Neo4jSettings, drop: Callable[[str], None] | None = None,
                 timeout: float = 600.0, is_unregistered: Callable[[str], bool] | None = None) -> None:
        self.settings = settings
        self.drop = drop
        # Whether Neo4j lists no database of that name (then leftover store files of an earlier import of this
        # very snapshot may be replaced with force=true).
        self.is_unregistered = is_unregistered
        self.timeout = timeout
        self.where = f"{settings.host}:{settings.arrow_port}"
        scheme = "grpc+tls" if settings.tls else "grpc+tcp"
        self.location = f"{scheme}://{settings.host}:{settings.arrow_port}"
        self._client: flight.FlightClient | None = None
        self._options: flight.FlightCallOptions | None = None

    # -- connection --------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        secret = self.settings.password.get_secret_value()
        return text.replace(secret, "***") if len(secret) >= 3 else text

    def map_error(self, exc: Exception, what: str) -> TargetError:
        message = self._scrub(str(exc)).replace("org.apache.arrow.flight.FlightRuntimeException: ", "")
        for noise in (". Detail:", ". gRPC client debug context:", "\nDetail:"):  # keep the server's sentence
            message = message.split(noise, 1)[0]
        if isinstance(exc, flight.FlightUnauthenticatedError):
            return PermanentTargetError(f"GDS Arrow server at {self.where}: authentication failed for user "
                                        f"{self.settings.user!r}: check neo4j.user / NEO4J_PASSWORD")
        if isinstance(exc, flight.FlightUnauthorizedError):
            return PermanentTargetError(f"{what}: permission denied by the GDS Arrow server at {self.where}: {message}")
        if isinstance(exc, (flight.FlightUnavailableError, flight.FlightTimedOutError)):
            return TransientTargetError(f"cannot reach the GDS Arrow server at {self.where} ({what}): {message}; "
                                        "check gds.arrow.enabled and gds.arrow.listen_address")
        if isinstance(exc, flight.FlightCancelledError):
            return TransientTargetError(f"{what}: cancelled by the GDS Arrow server: {message}")
        if "Already exists" in message or "already exists" in message:
            return PermanentTargetError(f"{what}: a database or an import with that name already exists on "
                                        f"{self.where}: {message}")
        return PermanentTargetError(f"{what} failed on the GDS Arrow server at {self.where}: {message}")

    def connect(self) -> flight.FlightClient:
        if self._client is not None:
            return self._client
        kwargs: dict[str, Any] = {}
        if self.settings.tls and self.settings.tls_ca_file:
            try:
                kwargs["tls_root_certs"] = Path(self.settings.tls_ca_file).read_bytes()
            except OSError as exc:
                raise PermanentTargetError(f"neo4j.tls_ca_file {self.settings.tls_ca_file}: {exc}") from None
        client = flight.FlightClient(self.location, **kwargs)
        try:
            header = client.authenticate_basic_token(self.settings.user, self.settings.password.get_secret_value(),
                                                     flight.FlightCallOptions(timeout=30))
        except (pa.ArrowException, OSError) as exc:
            client.close()
            if isinstance(exc, (flight.FlightUnauthenticatedError, flight.FlightUnauthorizedError)):
                raise self.map_error(exc, "authenticating") from None
            # gRPC reports a refused connection during the handshake as INTERNAL "Could not finish writing ...".
            raise TransientTargetError(
                f"cannot reach the GDS Arrow server at {self.where}: {self._scrub(str(exc)).split('. Detail:')[0]}; "
                "is it running/enabled/licensed (gds.arrow.enabled=true, gds.arrow.listen_address, "
                "neo4j.arrow_port)?") from None
        self._options = flight.FlightCallOptions(headers=[header], timeout=self.timeout)
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def check_protocol(self) -> None:
        client = self.connect()
        try:
            types = {a.type for a in client.list_actions(self._options)}
        except (pa.ArrowException, OSError) as exc:
            raise self.map_error(exc, "listing actions") from None
        if CREATE_DATABASE not in types:
            raise PermanentTargetError(
                f"GDS Arrow server at {self.where} is not running/enabled/licensed or speaks no v1 protocol "
                f"(it offers no {CREATE_DATABASE}; actions: {', '.join(sorted(types)) or 'none'})")

    def action(self, action_type: str, body: dict[str, Any]) -> dict[str, Any]:
        """One DoAction, results consumed eagerly (Flight raises only when the stream is read)."""
        client = self.connect()
        try:
            results = list(client.do_action(flight.Action(action_type, json.dumps(body).encode()), self._options))
        except (pa.ArrowException, OSError) as exc:
            raise self.map_error(exc, f"{action_type} {body.get('name')}") from None
        if not results:
            return {}
        try:
            return json.loads(results[0].body.to_pybytes() or b"{}")
        except ValueError:
            raise PermanentTargetError(f"{action_type}: the GDS Arrow server answered something that is not JSON: "
                                       f"{results[0].body.to_pybytes()[:200]!r}") from None

    # -- upload ------------------------------------------------------------------------------------------------

    def _put_file(self, database: str, entity: str, path: Path, required: dict, stop: threading.Event) -> tuple[int, int]:
        client = self.connect()
        descriptor = flight.FlightDescriptor.for_command(json.dumps(
            {"name": "PUT_COMMAND", "version": "v1", "body": {"name": database, "entity_type": entity}}).encode())
        rows = sent = 0
        writer = reader = None
        schema: pa.Schema | None = None
        try:
            for file, batch in iter_batches([path], required, self.settings.batch_size):
                if stop.is_set():
                    raise _Stopped()
                batch = normalize_batch(batch, file, entity)
                if batch.num_rows == 0:
                    continue
                if writer is None:
                    schema = batch.schema
                    writer, reader = client.do_put(descriptor, schema, self._options)
                elif batch.schema != schema:
                    raise SnapshotError(f"{file}: the columns changed type within the file ({schema} -> "
                                        f"{batch.schema})")
                writer.write_batch(batch)
                reader.read()  # one ack per batch: back-pressure, and errors surface here
                rows += batch.num_rows
                sent += batch.nbytes
            if writer is not None:
                writer.done_writing()
                writer.close()
                writer = None
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, SnapshotError):
                raise
            raise self.map_error(exc, f"sending {entity}s of {path.name} into {database}") from None
        finally:
            if writer is not None:
                try:
                    writer.close()
                except (pa.ArrowException, OSError):
                    pass
        return rows, sent

    def upload(self, database: str, entity: str, files: list[Path], required: dict) -> tuple[int, int]:
        """Send every file, up to `concurrency` DoPut streams at once (one per file). Returns (rows, bytes)."""
        stop = threading.Event()
        rows = sent = 0
        workers = max(1, min(self.settings.concurrency, len(files)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"arrow-{entity}") as pool:
            futures = [pool.submit(self._put_file, database, entity, f, required, stop) for f in files]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None and not isinstance(f.exception(), _Stopped)]
            if failed:
                stop.set()
                for f in pending:
                    f.cancel()
                wait(pending)
                raise failed[0].exception()
            for f in futures:
                r, b = f.result()
                rows += r
                sent += b
        return rows, sent

    # -- the whole load ----------------------------------------------------------------------------------------

    @staticmethod
    def check_schemas(snapshot: Snapshot) -> None:
        """Refuse unsupported property types from the Parquet footers alone, before anything is created."""
        for files, reserved in ((snapshot.node_files, {NODE_ID, LABELS}),
                                (snapshot.relationship_files, {SOURCE_ID, TARGET_ID, REL_TYPE})):
            for path in files:
                for f in open_parquet(path).schema_arrow:
                    if f.name not in reserved and property_target_type(f.type) is None:
                        raise SnapshotError(f"{path}: property column {f.name!r} has type {f.type}: "
                                            f"{_UNSUPPORTED_HINT}")

    def load(self, snapshot: Snapshot) -> ArrowLoadResult:
        database = snapshot.key
        start = time.monotonic()
        self.check_schemas(snapshot)
        self.check_protocol()
        body = {"name": database, "id_type": "INTEGER", "id_property": queries.ID_PROPERTY,
                "concurrency": self.settings.concurrency, "force": False}
        try:
            self.action(CREATE_DATABASE, body)
        except PermanentTargetError as exc:
            # An earlier attempt at this snapshot wrote store files but its database was never registered, so
            # DROP DATABASE IF EXISTS could not remove them and force=false refuses forever. Neo4j lists no
            # database of this name (checked now), so those files are nobody's: replace them, once.
            if "already exists" not in str(exc) or self.is_unregistered is None or not self.is_unregistered(database):
                raise
            log.warning("%s: store files of an earlier, unregistered import exist; recreating with force=true",
                        database)
            self.action(CREATE_DATABASE, {**body, "force": True})
        try:
            nodes, node_bytes = self.upload(database, "node", snapshot.node_files, NODE_COLUMNS)
            reply = self.action(NODE_LOAD_DONE, {"name": database})
            if int(reply.get("node_count", -1)) != nodes:
                raise PermanentTargetError(f"{database}: sent {nodes} nodes but the GDS Arrow server counted "
                                           f"{reply.get('node_count')}")
            rels, rel_bytes = self.upload(database, "relationship", snapshot.relationship_files, RELATIONSHIP_COLUMNS)
            reply = self.action(RELATIONSHIP_LOAD_DONE, {"name": database})
            if int(reply.get("relationship_count", -1)) != rels:
                raise PermanentTargetError(f"{database}: sent {rels} relationships but the GDS Arrow server "
                                           f"counted {reply.get('relationship_count')}")
        except BaseException as exc:
            self.abort_and_drop(database, exc)
            raise
        seconds = time.monotonic() - start
        log.info("arrow load %s: %d nodes, %d relationships, %d bytes in %.1fs", database, nodes, rels,
                 node_bytes + rel_bytes, seconds)
        return ArrowLoadResult(nodes, rels, node_bytes + rel_bytes, seconds)

    def abort_and_drop(self, database: str, cause: BaseException) -> None:
        log.warning("arrow load of %s failed (%s): aborting the import and dropping the database", database,
                    self._scrub(str(cause))[:300])
        try:
            self.action(ABORT, {"name": database})
        except TargetError as exc:  # NOT_FOUND once the import finished or never started: nothing to abort
            log.info("v1/ABORT %s: %s", database, exc)
        if self.drop is not None:
            try:
                self.drop(database)
            except TargetError as exc:
                log.error("could not drop %s after a failed load: %s", database, exc)


class _Stopped(Exception):
    """A sibling stream failed; this one stops quietly."""
