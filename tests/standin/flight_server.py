"""A `pyarrow.flight` server speaking the GDS Arrow v1 database-import protocol (reference neo4j.md §1).

- Auth: a basic-token handshake (no-op `auth_handler` plus a middleware that checks `authorization: Basic ...`
  against the Dbms user/password and answers with `authorization: Bearer <token>`); later calls must carry that
  Bearer header (GDSC-style Basic on every call is accepted too). Wrong password -> UNAUTHENTICATED.
- `list_actions`: v1/CREATE_DATABASE, v1/NODE_LOAD_DONE, v1/RELATIONSHIP_LOAD_DONE, v1/ABORT.
- DoAction bodies and replies are JSON; each action returns exactly one result.
- DoPut descriptor: `{"name":"PUT_COMMAND","version":"v1","body":{"name":N,"entity_type":"node"|"relationship"}}`;
  one ack (a small JSON metadata message) per batch. Batches are validated like the real importer would: INTEGER
  ids are non-null int64 > 0, labels utf8 / dictionary / list<utf8> (or `common_labels` in the descriptor body),
  relationship endpoints must be known nodes, labels and relationship types are never null. Property types follow
  the GDS documentation (reference neo4j.md §1.5, §1.8), not our client: node properties int64, float64 and lists
  of int64 / float64 / float32 (`accept_string_properties = True` also takes utf8, which GDS only hints at);
  relationship properties float64 only. Anything else -> INVALID_ARGUMENT.
- Nulls as documented: a null float is stored as NaN; a null long as GDS's default value Long.MIN_VALUE
  (DefaultValue.java; whether the database import writes it is UNVERIFIED); a null list as no property.
- LOAD_DONE replies count the rows received (duplicates included, as the server counts what it got).

Server behaviours for long loads (attributes of `GdsArrowServer`, set by tests):
- `token_ttl`: Bearer tokens are refused (UNAUTHENTICATED) once this many seconds old (GDS evicts tokens).
- `load_done_delay`: NODE_LOAD_DONE and RELATIONSHIP_LOAD_DONE take this many seconds (finalisation is slow).
- `batch_delay`: each DoPut batch is acknowledged after this many seconds (a long, healthy stream).
- `after_batch(n)`: a hook run before batch n is acknowledged (tests cut a `tcp_proxy.TcpProxy` there: a real
  connection lost mid-stream).
- `stall_after_batches`: after this many batches of an import, DoPut stops acknowledging (the stream hangs)
  until the import is aborted or the server stops.
- `Dbms.faults.store_checked_at = "finish"`: leftover store files are reported "already exists" at
  RELATIONSHIP_LOAD_DONE rather than at CREATE_DATABASE.

gRPC statuses (reference §1.7) are produced by raising the matching pyarrow exception. One deliberate gap:
ALREADY_EXISTS cannot be raised from a Python Flight server (pyarrow has no exception that maps to Arrow's
AlreadyExists status), so it is sent as UNKNOWN with the message "Already exists: ..." - the client sees
`FlightServerError` (an `ArrowException`, as with the real status) whose text contains "Already exists".
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from .dbms import ArrowError, ArrowImport, Dbms

ACTIONS = {
    "v1/CREATE_DATABASE": "Create a Neo4j database from Arrow node and relationship streams",
    "v1/NODE_LOAD_DONE": "Signal that all nodes of an import were sent",
    "v1/RELATIONSHIP_LOAD_DONE": "Signal that all relationships were sent; writes and starts the database",
    "v1/ABORT": "Abort an import and remove its temporary data",
}


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def property_type_ok(t: pa.DataType, entity: str, strings: bool) -> bool:
    """The documented property types: relationship properties are double only (GDS docs, relationship section);
    node properties long, double, long[], double[], float[] (and utf8 only when strings are switched on)."""
    if entity == "relationship":
        return t == pa.float64()
    if t in (pa.int64(), pa.float64()) or (strings and t == pa.string()):
        return True
    if pa.types.is_list(t):
        return t.value_type in (pa.int64(), pa.float64(), pa.float32())
    return False


def property_types(entity: str, strings: bool) -> str:
    if entity == "relationship":
        return "float64 (relationship properties are double only)"
    return "int64, float64, list<int64>, list<float64>, list<float32>" + (", utf8" if strings else "")


LONG_DEFAULT = -(2**63)  # GDS DefaultValue for a missing long


def status_error(status: str, message: str) -> Exception:
    """The pyarrow exception a server raises to send a gRPC status (see the module docstring for ALREADY_EXISTS)."""
    if status in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"):
        return pa.ArrowInvalid(message)
    if status == "NOT_FOUND":
        return KeyError(message)
    if status == "ALREADY_EXISTS":
        return flight.FlightServerError(f"Already exists: {message}")
    if status == "INTERNAL":
        return flight.FlightInternalError(message)
    if status == "UNAVAILABLE":
        return flight.FlightUnavailableError(message)
    if status == "DEADLINE_EXCEEDED":
        return flight.FlightTimedOutError(message)
    if status == "UNAUTHENTICATED":
        return flight.FlightUnauthenticatedError(message)
    if status == "PERMISSION_DENIED":
        return flight.FlightUnauthorizedError(message)
    if status == "CANCELLED":
        return flight.FlightCancelledError(message)
    if status == "UNIMPLEMENTED":
        return NotImplementedError(message)
    return flight.FlightServerError(message)  # UNKNOWN


class _NoOpAuthHandler(flight.ServerAuthHandler):
    """Enables the Handshake RPC (needed by authenticate_basic_token); the real check is in the middleware."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


class _BearerMiddleware(flight.ServerMiddleware):
    def __init__(self, token: str | None) -> None:
        self.token = token

    def sending_headers(self):
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


class _AuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    def __init__(self, server: GdsArrowServer) -> None:
        super().__init__()
        self.server = server

    def start_call(self, info, headers):
        values = headers.get("authorization") or headers.get("Authorization") or []
        value = values[0] if values else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(value[6:]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                raise flight.FlightUnauthenticatedError("Malformed basic authorization header") from None
            ok = self.server.dbms.check_credentials(user, password)
            self.server.dbms.log("arrow", "AUTH", user=user, ok=ok)
            if not ok:
                raise flight.FlightUnauthenticatedError(
                    "The client is unauthorized due to authentication failure.")
            token = secrets.token_hex(16)
            with self.server.lock:
                self.server.tokens[token] = time.monotonic()
            return _BearerMiddleware(token)
        if value.startswith("Bearer "):
            with self.server.lock:
                issued = self.server.tokens.get(value[7:])
                ttl = self.server.token_ttl
                if issued is not None and ttl is not None and time.monotonic() - issued > ttl:
                    del self.server.tokens[value[7:]]  # evicted, as GDS does on its schedule
                    issued = None
            if issued is not None:
                return _BearerMiddleware(None)
            self.server.dbms.log("arrow", "BEARER_REFUSED")
            raise flight.FlightUnauthenticatedError("Invalid or expired bearer token")
        raise flight.FlightUnauthenticatedError("No authorization header: authenticate with a basic token first")


class GdsArrowServer(flight.FlightServerBase):
    """Serve with `start()` (a thread) and `stop()`; `port` is the bound loopback port."""

    def __init__(self, dbms: Dbms, host: str = "127.0.0.1", port: int = 0) -> None:
        self.dbms = dbms
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # token -> when issued
        self.token_ttl: float | None = None
        self.load_done_delay = 0.0
        self.batch_delay = 0.0
        self.after_batch: Any = None  # called with the import's batch number, e.g. to cut a TcpProxy
        self.stall_after_batches: int | None = None
        self.accept_string_properties = False
        self._stopping = threading.Event()
        super().__init__(f"grpc+tcp://{host}:{port}", auth_handler=_NoOpAuthHandler(),
                         middleware={"auth": _AuthMiddlewareFactory(self)})
        self._thread: threading.Thread | None = None

    def start(self) -> GdsArrowServer:
        # The server already serves (bound in __init__); `wait`, not `serve`, which installs Arrow's own SIGTERM
        # handler over the command line's, so `python -m tests.standin` would never stop on SIGTERM.
        self._thread = threading.Thread(target=self.wait, name=f"standin-arrow-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.shutdown()
        self.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- actions ----------------------------------------------------------------------------------------------

    def list_actions(self, context):
        if not self.dbms.arrow_enabled:
            return []
        return list(ACTIONS.items())

    def do_action(self, context, action):
        kind = action.type
        try:
            body = json.loads(action.body.to_pybytes() or b"{}")
        except ValueError:
            raise status_error("INVALID_ARGUMENT", f"{kind}: the action body is not JSON") from None
        self.dbms.log("arrow", kind, **(body if isinstance(body, dict) else {"body": body}))
        if not self.dbms.arrow_enabled or kind not in ACTIONS:
            raise status_error("UNIMPLEMENTED", f"Unknown action type '{kind}'")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise status_error("INVALID_ARGUMENT", f"{kind}: the body needs a string 'name'")
        injected = self.dbms.faults.fail_action.get(kind)
        if injected:
            raise status_error(injected, f"{kind} failed (injected fault)")
        try:
            reply = self._action(kind, body)
        except ArrowError as exc:
            raise status_error(exc.status, exc.message) from None
        finally:
            self.dbms.commit_point()  # a finished import's database (or a replaced store) is durable first
        return [json.dumps(reply).encode()]

    def _action(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["name"]
        if kind == "v1/CREATE_DATABASE":
            imp = self.dbms.arrow_create(name, body)
            return {"name": imp.name}
        if kind == "v1/ABORT":
            self.dbms.arrow_abort(name)
            return {"name": name}
        if self.load_done_delay:
            self.dbms.arrow_import(name)  # NOT_FOUND at once, like the real server
            self._stopping.wait(self.load_done_delay)
        with self.dbms.lock:
            imp = self.dbms.arrow_import(name)
            if kind == "v1/NODE_LOAD_DONE":
                if imp.phase != "nodes":
                    raise ArrowError("FAILED_PRECONDITION", f"Import '{imp.name}' is not loading nodes")
                imp.phase = "relationships"
                return {"name": imp.name, "node_count": imp.node_rows}
            if imp.phase != "relationships":
                raise ArrowError("FAILED_PRECONDITION",
                                 f"Import '{imp.name}': send NODE_LOAD_DONE before RELATIONSHIP_LOAD_DONE")
            self.dbms.arrow_finish(imp)
            return {"name": imp.name, "relationship_count": imp.relationship_rows}

    # --- DoPut ------------------------------------------------------------------------------------------------

    def do_put(self, context, descriptor, reader, writer):
        try:
            command = json.loads(descriptor.command or b"")
            body = command["body"]
            ok = (command.get("name") == "PUT_COMMAND" and command.get("version") == "v1"
                  and isinstance(body.get("name"), str) and body.get("entity_type") in ("node", "relationship"))
        except (ValueError, TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise status_error("INVALID_ARGUMENT", "DoPut needs the descriptor command "
                                                   '{"name":"PUT_COMMAND","version":"v1","body":{"name":..,'
                                                   '"entity_type":"node"|"relationship"}}')
        entity = body["entity_type"]
        try:
            imp = self.dbms.arrow_import(body["name"])
            with self.dbms.lock:
                want = "nodes" if entity == "node" else "relationships"
                if imp.phase != want:
                    raise ArrowError("FAILED_PRECONDITION",
                                     f"Import '{imp.name}' is not accepting {entity}s (phase: {imp.phase})")
                imp.open_puts += 1
            try:
                self._check_schema(imp, entity, reader.schema)
                for chunk in reader:
                    batch = chunk.data
                    if batch is None:
                        continue
                    self._batch(imp, entity, body, batch)
                    writer.write(pa.py_buffer(json.dumps({"rows": batch.num_rows}).encode()))
            finally:
                with self.dbms.lock:
                    imp.open_puts -= 1
        except ArrowError as exc:
            self.dbms.log("arrow", "DoPut failed", name=body["name"], entity=entity, status=exc.status,
                          message=exc.message)
            raise status_error(exc.status, exc.message) from None

    def _check_schema(self, imp: ArrowImport, entity: str, schema: pa.Schema) -> None:
        id_type = pa.int64() if imp.id_type == "INTEGER" else pa.string()
        ids = ("nodeId",) if entity == "node" else ("sourceNodeId", "targetNodeId")
        for column in ids:
            if column not in schema.names:
                raise ArrowError("INVALID_ARGUMENT", f"Missing column '{column}' in the {entity} schema")
            if schema.field(column).type != id_type:
                raise ArrowError("INVALID_ARGUMENT", f"Column '{column}' must be {id_type} for id_type "
                                                     f"{imp.id_type}, got {schema.field(column).type}")
        special = {"labels"} if entity == "node" else {"relationshipType"}
        if entity == "relationship" and "relationshipType" not in schema.names:
            raise ArrowError("INVALID_ARGUMENT", "Missing column 'relationshipType' in the relationship schema")
        for f in schema:
            if f.name in ids:
                continue
            if f.name in special:
                t = f.type
                if pa.types.is_dictionary(t):
                    t = t.value_type
                ok = _is_string(t) or (entity == "node" and pa.types.is_list(t) and _is_string(t.value_type))
                if not ok:
                    raise ArrowError("INVALID_ARGUMENT", f"Column '{f.name}' has unsupported type {f.type}")
            elif not property_type_ok(f.type, entity, self.accept_string_properties):
                raise ArrowError("INVALID_ARGUMENT", f"Property column '{f.name}' has unsupported type {f.type}; "
                                                     f"supported for {entity}s: "
                                                     f"{property_types(entity, self.accept_string_properties)}")

    def _batch(self, imp: ArrowImport, entity: str, body: dict[str, Any], batch: pa.RecordBatch) -> None:
        faults = self.dbms.faults
        with self.dbms.lock:
            if imp.state != "loading":
                raise ArrowError("NOT_FOUND", f"Import '{imp.name}' was {imp.state}")
            imp.batches += 1
            number = imp.batches
            if faults.drop_put_after_batches is not None and number > faults.drop_put_after_batches:
                raise ArrowError("UNAVAILABLE", "Connection reset by peer (injected fault: stream dropped after "
                                                f"{faults.drop_put_after_batches} batches)")
            if faults.reject_batch is not None and number == faults.reject_batch:
                raise ArrowError("INVALID_ARGUMENT", f"Batch {number} rejected (injected fault)")
            stall = self.stall_after_batches is not None and number > self.stall_after_batches
        self.dbms.batch_taken()
        if self.after_batch is not None:
            self.after_batch(number)
        self.dbms.hold_if_due()
        if self.batch_delay:
            self._stopping.wait(self.batch_delay)
        if stall:  # no ack until the import is aborted (or the server stops)
            while imp.state == "loading" and not self._stopping.wait(0.05):
                pass
            raise ArrowError("NOT_FOUND", f"Import '{imp.name}' was {imp.state}")
        columns = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
        props = [n for n in batch.schema.names
                 if n not in ("nodeId", "labels", "sourceNodeId", "targetNodeId", "relationshipType")]
        prop_rows = self._properties(columns, props, batch.num_rows)
        if entity == "node":
            ids = columns["nodeId"]
            if ids.null_count:
                raise ArrowError("INVALID_ARGUMENT", "Column 'nodeId' contains null values")
            id_values = ids.to_pylist()
            if imp.id_type == "INTEGER" and any(v <= 0 for v in id_values):
                raise ArrowError("INVALID_ARGUMENT", "Column 'nodeId' must hold positive ids (> 0)")
            if "labels" in columns:
                label_col = columns["labels"]
                if pa.types.is_dictionary(label_col.type):
                    label_col = label_col.cast(label_col.type.value_type)
                if label_col.null_count:
                    raise ArrowError("INVALID_ARGUMENT", "Column 'labels' contains null values")
                raw = label_col.to_pylist()
                labels = [tuple(v or ()) if pa.types.is_list(label_col.type) else ((v,) if v else ())
                          for v in raw]
            else:
                labels = [tuple(body.get("common_labels") or ())] * batch.num_rows
            with self.dbms.lock:
                imp.node_rows += batch.num_rows
                for node_id, node_labels, node_props in zip(id_values, labels, prop_rows, strict=True):
                    if node_id not in imp.graph.nodes:  # duplicates: undefined on the real server; first wins
                        imp.graph.nodes[node_id] = tuple(dict.fromkeys(node_labels))
                        imp.graph.node_properties[node_id] = node_props
            return
        src, dst = columns["sourceNodeId"], columns["targetNodeId"]
        if src.null_count or dst.null_count:
            raise ArrowError("INVALID_ARGUMENT", "Relationship endpoint columns contain null values")
        type_col = columns["relationshipType"]
        if pa.types.is_dictionary(type_col.type):
            type_col = type_col.cast(type_col.type.value_type)
        if type_col.null_count:
            raise ArrowError("INVALID_ARGUMENT", "Column 'relationshipType' contains null values")
        rels = list(zip(src.to_pylist(), type_col.to_pylist(), dst.to_pylist(), strict=True))
        with self.dbms.lock:
            for s, _, t in rels:
                for end in (s, t):
                    if end not in imp.graph.nodes:
                        raise ArrowError("INVALID_ARGUMENT", f"Relationship endpoint {end} is not a node of "
                                                             f"import '{imp.name}'")
            imp.relationship_rows += batch.num_rows
            imp.graph.relationships.extend(rels)
            imp.graph.relationship_properties.extend(prop_rows)

    @staticmethod
    def _properties(columns: dict[str, pa.Array], names: list[str], rows: int) -> list[dict[str, Any]]:
        """Each row's stored properties, nulls as GDS documents them (float -> NaN, long -> default value)."""
        out: list[dict[str, Any]] = [{} for _ in range(rows)]
        for name in names:
            column = columns[name]
            if pa.types.is_floating(column.type):
                missing: Any = float("nan")
            elif pa.types.is_integer(column.type):
                missing = LONG_DEFAULT
            else:
                missing = None  # a null list: no property
            for props, value in zip(out, column.to_pylist(), strict=True):
                if value is None:
                    if missing is None:
                        continue
                    value = missing
                props[name] = value
        return out
