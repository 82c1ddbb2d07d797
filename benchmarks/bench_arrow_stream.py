"""How fast the production GDS Arrow client (ArrowLoader) streams a snapshot over real gRPC on loopback.

    .venv/bin/python benchmarks/bench_arrow_stream.py --people 200000 --batch-size 10000

Measured in the same run, on the same demo snapshot (`demo_data.write_snapshot`):
  raw      every Parquet file read fully with pyarrow, twice in one process; the second read (page cache warm,
           thread pool up) is the physical limit of the input side: rows/s, Parquet MB/s, decoded Arrow MB/s
  prep     the loader's own input path without the network: `iter_batches` + `normalize_batch`, one thread
  load     `ArrowLoader.load` (as `Neo4jTarget` runs it) into a sink Flight server at --concurrency 1 and 4:
           rows/s, Arrow MB/s sent (`bytes_sent`), CPU seconds of client and sink, peak RSS of the loader process;
           three loads per concurrency in one process (a new ArrowLoader each, like production), the median
           reported (`all_seconds` lists the three; the first pays the process's one-time warm-up)
The sink (defined below) speaks just enough GDS Arrow v1 for ArrowLoader - basic-token handshake answered with a
bearer token, list_actions, CREATE_DATABASE, DoPut with one ack per batch, NODE/RELATIONSHIP_LOAD_DONE with the
counts, ABORT - and stores no rows: it only counts them, so the number is client + gRPC, not server bookkeeping.
Sink, raw read, prep and each load run in their own spawned process (sink and loader never share a GIL), and
each peak RSS is measured inside its process. Everything binds to 127.0.0.1; the temp folder is removed.
Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import resource
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bluegreen_dagster.demo_data import write_snapshot  # noqa: E402
from bluegreen_dagster.snapshots import expected_counts, snapshot_at  # noqa: E402
# The handshake pieces the stand-in already has (a no-op handler enabling Handshake, a Bearer-sending middleware).
from tests.standin.flight_server import _BearerMiddleware, _NoOpAuthHandler  # noqa: E402

MB = 1024 * 1024
HOST = "127.0.0.1"
USER, PASSWORD = "neo4j", "bench-password"
CUSTOMER, TS = "bench", 1_700_000_000
REPEAT = 3  # loads per concurrency, in one process; the median is reported


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------------------------------------------
# The sink: a GDS Arrow v1 server that counts rows and keeps none


class _Auth(flight.ServerMiddlewareFactory):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def start_call(self, info, headers):
        value = (headers.get("authorization") or [""])[0]
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
        self.rows: dict[tuple[str, str], int] = {}  # (database, entity) -> rows received
        self.batches = 0
        self.bytes = 0

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
        rows = batches = size = 0
        ack = pa.py_buffer(b'{"ok":true}')
        for chunk in reader:
            if chunk.data is None:
                continue
            rows += chunk.data.num_rows
            size += chunk.data.nbytes
            batches += 1
            writer.write(ack)  # one ack per batch, as the real server does
        with self.lock:
            self.rows[key] += rows
            self.batches += batches
            self.bytes += size


def _sink_child(ready, stop, queue) -> None:
    server = SinkServer()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    ready.put(server.port)
    idle_cpu = _cpu_s()  # imports and start-up, not serving
    stop.wait()
    server.shutdown()
    server.wait()
    # Per load: the loader child runs REPEAT loads against this sink.
    queue.put({"cpu_s": (_cpu_s() - idle_cpu) / REPEAT, "batches": server.batches // REPEAT,
               "bytes": server.bytes // REPEAT, "peak_rss_mb": _rss_mb()})


# --------------------------------------------------------------------------------------------------------------
# The measured children


def _write_child(data: str, people: int, queue) -> None:
    started = time.perf_counter()
    write_snapshot(Path(data), CUSTOMER, TS, people=people)
    queue.put(time.perf_counter() - started)


def _raw_read(files: list[Path]) -> tuple[int, int, float]:
    start = time.perf_counter()
    rows = nbytes = 0
    for path in files:
        table = pq.read_table(path)
        rows += table.num_rows
        nbytes += table.nbytes
    return rows, nbytes, time.perf_counter() - start


def _raw_child(files: list[Path], queue) -> None:
    first = _raw_read(files)
    second = _raw_read(files)
    queue.put({"first_seconds": first[2], "rows": second[0], "arrow_bytes": second[1], "seconds": second[2],
               "peak_rss_mb": _rss_mb()})


def _prep_child(data: str, batch_size: int, queue) -> None:
    from bluegreen_dagster.snapshots import NODE_COLUMNS, RELATIONSHIP_COLUMNS, iter_batches
    from bluegreen_dagster.targets.neo4j.arrow import normalize_batch

    snap = snapshot_at(Path(data), CUSTOMER, TS)
    start = time.perf_counter()
    rows = nbytes = 0
    for files, required, entity in ((snap.node_files, NODE_COLUMNS, "node"),
                                    (snap.relationship_files, RELATIONSHIP_COLUMNS, "relationship")):
        for path, batch in iter_batches(files, required, batch_size):
            batch = normalize_batch(batch, path, entity)
            rows += batch.num_rows
            nbytes += batch.nbytes
    queue.put({"rows": rows, "bytes": nbytes, "seconds": time.perf_counter() - start})


def _load_child(data: str, port: int, concurrency: int, batch_size: int, queue) -> None:
    from bluegreen_dagster.config import parse_settings
    from bluegreen_dagster.targets.neo4j.arrow import ArrowLoader

    settings = parse_settings({"target": "neo4j", "neo4j": {
        "host": HOST, "arrow_port": port, "user": USER, "password": PASSWORD, "tls": False,
        "concurrency": concurrency, "batch_size": batch_size}}, root=Path(data))
    dropped: list[str] = []
    start_rss = _rss_mb()
    runs = []
    for _ in range(REPEAT):
        # As Neo4jTarget.load constructs it (a new loader per load). `drop` and `is_unregistered` are only reached
        # on a failed load or an "already exists" CREATE_DATABASE, which the sink never answers: stand-ins.
        loader = ArrowLoader(settings.neo4j, drop=dropped.append, is_unregistered=lambda name: False)
        start, start_cpu = time.perf_counter(), _cpu_s()
        try:
            result = loader.load(snapshot_at(Path(data), CUSTOMER, TS))
        finally:
            loader.close()
        runs.append((time.perf_counter() - start, _cpu_s() - start_cpu, result))
    assert not dropped, dropped
    seconds, cpu, result = sorted(runs, key=lambda r: r[0])[len(runs) // 2]  # the median run
    queue.put({"nodes": result.nodes, "relationships": result.relationships, "bytes_sent": result.bytes_sent,
               "seconds": seconds, "cpu_s": cpu, "all_seconds": [r[0] for r in runs],
               "peak_rss_mb": _rss_mb(), "start_rss_mb": start_rss})


def _in_child(func, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=func, args=(*args, queue))
    proc.start()
    try:
        while True:
            try:
                return queue.get(timeout=1)
            except Exception:  # queue.Empty
                if not proc.is_alive():
                    raise RuntimeError(f"{func.__name__} exited with code {proc.exitcode}") from None
    finally:
        proc.join(timeout=30)


def _load_into_sink(data: str, concurrency: int, batch_size: int) -> dict:
    """A fresh sink per run, so its CPU time is this run's."""
    ctx = mp.get_context("spawn")
    ready, stats, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    sink = ctx.Process(target=_sink_child, args=(ready, stop, stats), daemon=True)
    sink.start()
    try:
        port = ready.get(timeout=60)
        load = _in_child(_load_child, data, port, concurrency, batch_size)
        stop.set()
        load["sink"] = stats.get(timeout=60)
        return load
    finally:
        stop.set()
        sink.join(timeout=10)
        if sink.is_alive():
            sink.terminate()
            sink.join()


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-arrow-") as tmp:
        data = str(Path(tmp) / "data")
        write_seconds = _in_child(_write_child, data, args.people)
        snap = snapshot_at(Path(data), CUSTOMER, TS)
        node_files, relationship_files = len(snap.node_files), len(snap.relationship_files)
        files = snap.node_files + snap.relationship_files
        parquet_bytes = snap.size_bytes
        parquet_mb = parquet_bytes / MB
        expected = expected_counts(snap)
        total = expected.nodes + expected.relationships

        raw = _in_child(_raw_child, files)
        assert raw["rows"] == total, (raw, expected)
        prep = _in_child(_prep_child, data, args.batch_size)
        assert prep["rows"] == total, (prep, expected)
        loads = {}
        for concurrency in (1, 4):
            load = _load_into_sink(data, concurrency, args.batch_size)
            assert (load["nodes"], load["relationships"]) == (expected.nodes, expected.relationships), load
            loads[concurrency] = load

    raw_rps = raw["rows"] / raw["seconds"]
    raw_arrow_mbps = raw["arrow_bytes"] / MB / raw["seconds"]
    out = {
        "people": args.people,
        "batch_size": args.batch_size,
        "rows": total,
        "nodes": expected.nodes,
        "relationships": expected.relationships,
        "parquet_files": len(files),
        "node_files": node_files,
        "relationship_files": relationship_files,
        "parquet_mb": round(parquet_mb, 1),
        "write_demo_seconds": round(write_seconds, 2),
        "raw_first_read_seconds": round(raw["first_seconds"], 3),
        "raw_seconds": round(raw["seconds"], 3),
        "raw_rows_per_s": round(raw_rps),
        "raw_parquet_mb_per_s": round(parquet_mb / raw["seconds"], 1),
        "raw_arrow_mb": round(raw["arrow_bytes"] / MB, 1),
        "raw_arrow_mb_per_s": round(raw_arrow_mbps, 1),
        "raw_peak_rss_mb": round(raw["peak_rss_mb"], 1),
        "prep_seconds": round(prep["seconds"], 3),
        "prep_rows_per_s": round(prep["rows"] / prep["seconds"]),
        "prep_vs_raw": round(prep["rows"] / prep["seconds"] / raw_rps, 4),
    }
    for concurrency, load in loads.items():
        rps = total / load["seconds"]
        mbps = load["bytes_sent"] / MB / load["seconds"]
        out[f"c{concurrency}"] = {
            "seconds": round(load["seconds"], 3),
            "all_seconds": [round(x, 3) for x in load["all_seconds"]],
            "rows_per_s": round(rps),
            "mb_sent": round(load["bytes_sent"] / MB, 1),
            "mb_per_s_sent": round(mbps, 1),
            "load_vs_raw_rows": round(rps / raw_rps, 4),
            "load_vs_raw_mb": round(mbps / raw_arrow_mbps, 4),
            "load_vs_prep_rows": round(prep["seconds"] / load["seconds"], 4),
            "client_cpu_s": round(load["cpu_s"], 2),
            "client_cpu_per_wall": round(load["cpu_s"] / load["seconds"], 2),
            "sink_cpu_s": round(load["sink"]["cpu_s"], 2),
            "sink_batches": load["sink"]["batches"],
            "sink_mb_received": round(load["sink"]["bytes"] / MB, 1),
            "peak_rss_mb": round(load["peak_rss_mb"], 1),
            "start_rss_mb": round(load["start_rss_mb"], 1),
            "peak_rss_vs_parquet": round(load["peak_rss_mb"] / parquet_mb, 2),
            "sink_peak_rss_mb": round(load["sink"]["peak_rss_mb"], 1),
        }
    out["c4_vs_c1"] = round(loads[1]["seconds"] / loads[4]["seconds"], 2)
    out["parent_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
