"""The sink the Arrow benchmarks load into: a GDS Arrow v1 Flight server that counts rows and keeps none (handshake
with a Bearer token, CREATE_DATABASE, DoPut with one ack per batch, LOAD_DONE with counts), run in its own process,
and its ingest bound: what a client with nothing else to do reaches against it."""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from benchmarks.harness import cpu_s, rss_mb
# The handshake pieces the stand-in already has (a no-op handler enabling Handshake, a Bearer-sending middleware).
from tests.standin.flight_server import _BearerMiddleware, _NoOpAuthHandler

HOST = "127.0.0.1"
USER, PASSWORD = "neo4j", "bench-password"


class _Auth(flight.ServerMiddlewareFactory):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def start_call(self, info, headers):
        value = (headers.get("authorization") or headers.get("Authorization") or [""])[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value == self.basic:
            return _BearerMiddleware(self.token)
        if value == f"Bearer {self.token}":
            return _BearerMiddleware(None)
        raise flight.FlightUnauthenticatedError("authenticate with a basic token first")


class SinkServer(flight.FlightServerBase):
    ACTIONS = ("v1/CREATE_DATABASE", "v1/NODE_LOAD_DONE", "v1/RELATIONSHIP_LOAD_DONE", "v1/ABORT")

    def __init__(self) -> None:
        super().__init__(f"grpc+tcp://{HOST}:0", auth_handler=_NoOpAuthHandler(),
                         middleware={"auth": _Auth(secrets.token_hex(16))})
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], int] = {}

    def list_actions(self, context):
        return [(a, a) for a in self.ACTIONS]

    def do_action(self, context, action):
        body = json.loads(action.body.to_pybytes() or b"{}")
        name = body["name"]
        with self.lock:
            if action.type == "v1/CREATE_DATABASE":
                self.rows[(name, "node")] = self.rows[(name, "relationship")] = 0
                reply = {"name": name}
            elif action.type == "v1/NODE_LOAD_DONE":
                reply = {"name": name, "node_count": self.rows[(name, "node")]}
            elif action.type == "v1/RELATIONSHIP_LOAD_DONE":
                reply = {"name": name, "relationship_count": self.rows[(name, "relationship")]}
            elif action.type == "v1/ABORT":
                reply = {"name": name}
            else:
                raise NotImplementedError(f"Unknown action type '{action.type}'")
        return [json.dumps(reply).encode()]

    def do_put(self, context, descriptor, reader, writer):
        body = json.loads(descriptor.command)["body"]
        key = (body["name"], body["entity_type"])
        rows = 0
        ack = pa.py_buffer(b'{"ok":true}')
        for chunk in reader:
            if chunk.data is None:
                continue
            rows += chunk.data.num_rows
            writer.write(ack)  # one ack per batch, as the real server does
        with self.lock:
            self.rows[key] += rows


def _sink_child(ready, stop) -> None:
    server = SinkServer()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    ready.put(server.port)
    stop.wait()
    server.shutdown()
    server.wait()


class Sink:
    """The sink Flight server in its own process, for the duration of a `with` block."""

    def __enter__(self) -> "Sink":
        self.ctx = mp.get_context("spawn")
        ready, self.stop = self.ctx.Queue(), self.ctx.Event()
        self.proc = self.ctx.Process(target=_sink_child, args=(ready, self.stop))
        self.proc.start()
        self.port = ready.get(timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.proc.join(30)


def bound_child(folder: str, port: int, concurrency: int, batch_size: int, queue) -> None:
    """The sink's ingest bound: tables already in memory, sent over `concurrency` parallel DoPut streams."""
    name = f"bound-{Path(folder).name}"
    tables = {sub: [pq.read_table(path) for path in sorted((Path(folder) / sub).glob("*.parquet"))]
              for sub in ("nodes", "relationships")}
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    options = flight.FlightCallOptions(headers=[(b"authorization", basic.encode())])
    client = flight.FlightClient(f"grpc+tcp://{HOST}:{port}")

    def action(kind: str) -> None:
        list(client.do_action(flight.Action(kind, json.dumps({"name": name}).encode()), options))

    def put(entity: str, table: pa.Table) -> int:
        descriptor = flight.FlightDescriptor.for_command(
            json.dumps({"name": "PUT_MESSAGE", "version": "v1", "body": {"name": name, "entity_type": entity}}))
        writer, reader = client.do_put(descriptor, table.schema, options)
        for batch in table.to_batches(max_chunksize=batch_size):
            writer.write_batch(batch)
            reader.read()  # the sink's ack, as a real client waits for it
        writer.done_writing()
        writer.close()
        return table.num_rows

    start, cpu = time.perf_counter(), cpu_s()
    rows = 0
    action("v1/CREATE_DATABASE")
    with ThreadPoolExecutor(concurrency) as pool:
        for sub, entity, done in (("nodes", "node", "v1/NODE_LOAD_DONE"),
                                  ("relationships", "relationship", "v1/RELATIONSHIP_LOAD_DONE")):
            rows += sum(pool.map(lambda t, e=entity: put(e, t), tables[sub]))
            action(done)
    client.close()
    queue.put({"rows": rows, "seconds": time.perf_counter() - start, "cpu_s": cpu_s() - cpu,
               "peak_rss_mb": rss_mb()})
