"""Our GDS Arrow loader against Neo4j's official client (`graphdatascience`), end to end from Parquet, same run,
same sink Flight server, same snapshot files.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/bench_arrow_vs_gdsc.py            # ~6M rows x 2 variants + a 1x/16x memory series
    .venv/bin/python benchmarks/bench_arrow_vs_gdsc.py --quick    # small sizes, to check the script runs

What runs, each in its own spawned process (so every peak RSS is that variant's alone):
  read   `pyarrow.parquet.read_table` of every file: the input side's ceiling
  ours   `ArrowLoader.load`, as `Neo4jTarget` runs it (`neo4j.concurrency` streams, `neo4j.batch_size` rows)
  gdsc   the path a user of the official client takes: `read_table` of the nodes folder, `GdsArrowClient`
         `create_database` / `upload_nodes`, `node_load_done`, then the relationships folder the same way
  gdsc_per_row_group   the official client fed one row group at a time (how we would use it if adopted)
  bound  the sink's ingest limit: every file read into memory first (not timed), then sent as --batch-size
         slices over --concurrency parallel DoPut streams with nothing else to do: what any client can reach
Snapshots (written once into a temp folder, 4 node files + 4 relationship files, pyarrow's default row groups):
  numeric      ints and floats (the issue's shape)
  strings      adds a string and a list<int64> node property (ours with neo4j.arrow_string_properties: true)
  memory 1x / 16x   the numeric shape at 1.5M and 24M rows: peak RSS of ours and gdsc at both sizes
The sink is a GDS Arrow v1 server (handshake with a Bearer token, CREATE_DATABASE, DoPut with one ack per batch,
LOAD_DONE with counts) that counts rows and keeps none, in its own process, shared by every variant.
Rows/s = (nodes + relationships) / wall seconds of the whole load, best of --repeat runs (at least 5 for a
snapshot of up to 2M rows), ours and gdsc alternating and taking turns to go first, after one untimed load that
warms the sink (its first load is slower, which the first client measured would pay).
Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.flight_sink import HOST, PASSWORD, USER, Sink, bound_child  # noqa: E402
from benchmarks.harness import cpu_s, rss_mb  # noqa: E402

CUSTOMER = "bench"
# Snapshots of at most this many rows load in well under a second here: each client runs at least this often.
SHORT_LOAD_ROWS, SHORT_LOAD_REPEAT = 2_000_000, 5
FILES = 4  # per entity
RELS_PER_NODE = 3


# --------------------------------------------------------------------------------------------------------------
# Snapshot files


def write_files(folder: Path, nodes: int, strings: bool, seed: int = 7) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir(parents=True)
    names = np.array(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"])
    for part, (start, n) in enumerate(_parts(nodes)):
        ids = np.arange(1 + start, 1 + start + n, dtype=np.int64)
        two = (ids % 10 == 0)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.where(two, 2, 1), out=offsets[1:])
        values = np.full(offsets[-1], "Person", dtype="<U8")
        values[offsets[:-1][two] + 1] = "Employee"
        columns = {"nodeId": ids, "labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
                   "age": rng.integers(18, 90, n, dtype=np.int64), "score": rng.random(n)}
        if strings:
            columns["name"] = pa.array(names[rng.integers(0, len(names), n)])
            lengths = rng.integers(0, 4, n)
            tag_offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(lengths, out=tag_offsets[1:])
            columns["tags"] = pa.ListArray.from_arrays(pa.array(tag_offsets),
                                                       pa.array(rng.integers(0, 1000, tag_offsets[-1])))
        pq.write_table(pa.table(columns), folder / "nodes" / f"part-{part}.parquet")
    rels = nodes * RELS_PER_NODE
    for part, (start, n) in enumerate(_parts(rels)):
        src = rng.integers(1, nodes + 1, n, dtype=np.int64)
        columns = {"sourceNodeId": src, "targetNodeId": (src % nodes) + 1,
                   "relationshipType": pa.array(np.where(rng.random(n) < 0.7, "KNOWS", "LIKES")),
                   "weight": rng.random(n)}
        pq.write_table(pa.table(columns), folder / "relationships" / f"part-{part}.parquet")
    return {"nodes": nodes, "relationships": rels}


def _parts(total: int):
    size = -(-total // FILES)
    return [(start, min(size, total - start)) for start in range(0, total, size)]


# --------------------------------------------------------------------------------------------------------------
# The measured children (each one load, in its own process)


def _read_child(folder: str, queue) -> None:
    """Every file read whole, twice; the faster pass is reported (the first warms the thread pool)."""
    passes = []
    for _ in range(2):
        start, cpu = time.perf_counter(), cpu_s()
        rows = 0
        for sub in ("nodes", "relationships"):
            for path in sorted((Path(folder) / sub).glob("*.parquet")):
                rows += pq.read_table(path).num_rows
        passes.append({"rows": rows, "seconds": time.perf_counter() - start, "cpu_s": cpu_s() - cpu})
    queue.put({**min(passes, key=lambda p: p["seconds"]), "peak_rss_mb": rss_mb()})


def _ours_child(folder: str, port: int, strings: bool, concurrency: int, batch_size: int, queue) -> None:
    from bluegreen_dagster.config_neo4j import Neo4jSettings
    from bluegreen_dagster.snapshots import snapshot_at
    from bluegreen_dagster.targets.neo4j.arrow import ArrowLoader

    base = Path(folder).parent.parent
    snap = snapshot_at(base, CUSTOMER, Path(folder).name)
    settings = Neo4jSettings(host=HOST, arrow_port=port, user=USER, password=PASSWORD, concurrency=concurrency,
                             batch_size=batch_size, arrow_string_properties=strings)
    start, cpu = time.perf_counter(), cpu_s()
    loader = ArrowLoader(settings)
    try:
        result = loader.load(snap)
    finally:
        loader.close()
    queue.put({"rows": result.nodes + result.relationships, "seconds": time.perf_counter() - start,
               "cpu_s": cpu_s() - cpu, "peak_rss_mb": rss_mb()})


def _gdsc_child(folder: str, port: int, concurrency: int, batch_size: int, queue) -> None:
    from graphdatascience.arrow_client.arrow_authentication import UsernamePasswordAuthentication
    from graphdatascience.arrow_client.authenticated_flight_client import AuthenticatedArrowClient
    from graphdatascience.arrow_client.v1.gds_arrow_client import GdsArrowClient

    name = f"{CUSTOMER}-{Path(folder).name}"
    start, cpu = time.perf_counter(), cpu_s()
    client = GdsArrowClient(AuthenticatedArrowClient((HOST, port), auth=UsernamePasswordAuthentication(USER, PASSWORD)))
    rows = 0
    try:
        client.create_database(name, id_type="INTEGER", id_property="nodeId", concurrency=concurrency)
        nodes = pq.read_table(Path(folder) / "nodes")
        client.upload_nodes(name, nodes, batch_size=batch_size)
        rows += nodes.num_rows
        del nodes
        client.node_load_done(name)
        rels = pq.read_table(Path(folder) / "relationships")
        client.upload_relationships(name, rels, batch_size=batch_size)
        rows += rels.num_rows
        del rels
        client.relationship_load_done(name)
    finally:
        client.close()
    queue.put({"rows": rows, "seconds": time.perf_counter() - start, "cpu_s": cpu_s() - cpu,
               "peak_rss_mb": rss_mb()})


def _gdsc_rg_child(folder: str, port: int, concurrency: int, batch_size: int, queue) -> None:
    """The official client fed one row group at a time (memory bounded), as it would be if we adopted it."""
    from graphdatascience.arrow_client.arrow_authentication import UsernamePasswordAuthentication
    from graphdatascience.arrow_client.authenticated_flight_client import AuthenticatedArrowClient
    from graphdatascience.arrow_client.v1.gds_arrow_client import GdsArrowClient

    name = f"{CUSTOMER}-{Path(folder).name}"
    start, cpu = time.perf_counter(), cpu_s()
    client = GdsArrowClient(AuthenticatedArrowClient((HOST, port), auth=UsernamePasswordAuthentication(USER, PASSWORD)))
    rows = 0
    try:
        client.create_database(name, id_type="INTEGER", id_property="nodeId", concurrency=concurrency)
        for sub, upload, done in (("nodes", client.upload_nodes, client.node_load_done),
                                  ("relationships", client.upload_relationships, client.relationship_load_done)):
            for path in sorted((Path(folder) / sub).glob("*.parquet")):
                pf = pq.ParquetFile(path)
                for rg in range(pf.metadata.num_row_groups):
                    table = pf.read_row_group(rg)
                    upload(name, table, batch_size=batch_size)
                    rows += table.num_rows
            done(name)
    finally:
        client.close()
    queue.put({"rows": rows, "seconds": time.perf_counter() - start, "cpu_s": cpu_s() - cpu,
               "peak_rss_mb": rss_mb()})


ROOT = Path(__file__).resolve().parent.parent
_CHILD = """import json, sys
from {module} import {name}
class Queue:
    def put(self, result):
        print("RESULT " + json.dumps(result), flush=True)
{name}(*json.loads(sys.argv[1]), Queue())
"""


def _run(target, *args) -> dict:
    """`target(*args, queue)` in a fresh interpreter that imports only the target's module, not the caller's
    `__main__` as a spawned process would (report.py brings matplotlib, pandas and dagster: 250 MB that would hide
    what each client's own imports and work cost). Each peak RSS is then the client's own."""
    module = __spec__.name if target.__module__ == "__main__" and __spec__ else target.__module__
    code = _CHILD.format(module=module if module != "__main__" else "benchmarks.bench_arrow_vs_gdsc",
                         name=target.__name__)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{target.__name__} exited with {done.returncode} without a result: {done.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _with_rate(result: dict) -> dict:
    return {**result, "rows_per_s": round(result["rows"] / result["seconds"]), "seconds": round(result["seconds"], 2),
            "cpu_s": round(result["cpu_s"], 2), "peak_rss_mb": round(result["peak_rss_mb"])}


def _best(runs: list[dict]) -> dict:
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["all_rows_per_s"] = [r["rows_per_s"] for r in runs]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return best


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(mem, 1), "loadavg": os.getloadavg(),
            "python": platform.python_version(), "pyarrow": pa.__version__}


def measure_snapshot(sink: Sink, folder: Path, nodes: int, strings: bool, repeat: int, concurrency: int,
                     batch_size: int, per_row_group: bool = True, bound: bool = False) -> dict:
    """Write one snapshot into `folder`, run every variant on it (each in its own process), delete its files."""
    port = sink.port
    started = time.perf_counter()
    counts = write_files(folder, nodes, strings)
    entry: dict = {**counts, "rows": counts["nodes"] + counts["relationships"],
                   "parquet_mb": round(sum(f.stat().st_size for f in folder.rglob("*.parquet")) / 2**20),
                   "write_seconds": round(time.perf_counter() - started, 1)}
    entry["read"] = _with_rate(_run(_read_child, str(folder)))
    # The sink's own first load is slower (its process warms up): an untimed load first, so no client pays it.
    _run(bound_child, str(folder), port, concurrency, batch_size)
    if entry["rows"] <= SHORT_LOAD_ROWS:  # a load of a fraction of a second: more runs, as noise weighs more
        repeat = max(repeat, SHORT_LOAD_REPEAT)
    entry["repeat"] = repeat
    ours, gdsc, gdsc_rg, bounds = [], [], [], []
    for i in range(repeat):  # alternating, so drifting machine load hits all alike; who goes first, too
        pair = [lambda: ours.append(_with_rate(_run(_ours_child, str(folder), port, strings, concurrency,
                                                    batch_size))),
                lambda: gdsc.append(_with_rate(_run(_gdsc_child, str(folder), port, concurrency, batch_size)))]
        for measure in pair if i % 2 == 0 else reversed(pair):
            measure()
        if per_row_group:
            gdsc_rg.append(_with_rate(_run(_gdsc_rg_child, str(folder), port, concurrency, batch_size)))
        if bound:
            bounds.append(_with_rate(_run(bound_child, str(folder), port, concurrency, batch_size)))
    entry["ours"], entry["gdsc"] = _best(ours), _best(gdsc)
    if gdsc_rg:
        entry["gdsc_per_row_group"] = _best(gdsc_rg)
    if bounds:
        entry["bound"] = _best(bounds)
    for key in ("read", "ours", "gdsc", "gdsc_per_row_group", "bound"):
        if key in entry:
            assert entry[key]["rows"] == entry["rows"], (folder, entry[key])
    entry["ours_vs_gdsc"] = round(entry["ours"]["rows_per_s"] / entry["gdsc"]["rows_per_s"], 2)
    if gdsc_rg:
        entry["ours_vs_gdsc_per_row_group"] = round(
            entry["ours"]["rows_per_s"] / entry["gdsc_per_row_group"]["rows_per_s"], 2)
    entry["ours_vs_read"] = round(entry["ours"]["rows_per_s"] / entry["read"]["rows_per_s"], 2)
    entry["gdsc_vs_read"] = round(entry["gdsc"]["rows_per_s"] / entry["read"]["rows_per_s"], 2)
    if bounds:
        entry["ours_vs_bound"] = round(entry["ours"]["rows_per_s"] / entry["bound"]["rows_per_s"], 2)
    for f in folder.rglob("*.parquet"):
        f.unlink()
    return entry


def series(base_nodes: int, factors=(1, 4, 16), repeat: int = 1, concurrency: int = 4,
           batch_size: int = 10_000) -> dict:
    """The numeric snapshot at each size factor: read, ours, the official client and the sink's bound."""
    from graphdatascience import __version__ as gdsc_version

    out: dict = {"machine": machine(), "graphdatascience": gdsc_version, "concurrency": concurrency,
                 "batch_size": batch_size, "base_nodes": base_nodes, "sizes": {}}
    with Sink() as sink, tempfile.TemporaryDirectory(prefix="bench-arrow-") as tmp:
        for factor in factors:
            folder = Path(tmp) / CUSTOMER / str(factor)
            out["sizes"][f"{factor}x"] = measure_snapshot(sink, folder, base_nodes * factor, False, repeat,
                                                          concurrency, batch_size, per_row_group=False, bound=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1_500_000, help="nodes of the speed snapshots (x4 rows)")
    parser.add_argument("--memory-nodes", type=int, default=375_000, help="nodes of the 1x memory snapshot")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.memory_nodes, args.repeat = 100_000, 25_000, 1
    from graphdatascience import __version__ as gdsc_version

    out: dict = {"machine": machine(), "graphdatascience": gdsc_version, "concurrency": args.concurrency,
                 "batch_size": args.batch_size, "snapshots": {}}
    with Sink() as sink, tempfile.TemporaryDirectory(prefix="bench-arrow-") as tmp:
        specs = [("numeric", args.nodes, False, args.repeat), ("strings", args.nodes, True, args.repeat),
                 ("memory_1x", args.memory_nodes, False, 1), ("memory_16x", args.memory_nodes * 16, False, 1)]
        for ts, (label, nodes, strings, repeat) in enumerate(specs, start=1):
            out["snapshots"][label] = measure_snapshot(sink, Path(tmp) / CUSTOMER / str(ts), nodes, strings, repeat,
                                                       args.concurrency, args.batch_size, bound=True)
    snaps = out["snapshots"]
    out["goals"] = {
        "ours_vs_gdsc_numeric (>= 1.2)": snaps["numeric"]["ours_vs_gdsc"],
        "ours_vs_gdsc_strings (>= 1.2)": snaps["strings"]["ours_vs_gdsc"],
        "ours_rss_16x_over_1x (<= 1.3)": round(snaps["memory_16x"]["ours"]["peak_rss_mb"]
                                               / snaps["memory_1x"]["ours"]["peak_rss_mb"], 2),
        "gdsc_rss_16x_over_1x": round(snaps["memory_16x"]["gdsc"]["peak_rss_mb"]
                                      / snaps["memory_1x"]["gdsc"]["peak_rss_mb"], 2),
        "ours_rss_below_gdsc_at_every_size": all(s["ours"]["peak_rss_mb"] < s["gdsc"]["peak_rss_mb"]
                                                 for s in snaps.values()),
        "ours_vs_gdsc_per_row_group_numeric": snaps["numeric"]["ours_vs_gdsc_per_row_group"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
