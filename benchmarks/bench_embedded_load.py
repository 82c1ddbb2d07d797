"""How fast EmbeddedTarget.load turns a demo snapshot into a LadybugDB file, against raw Parquet reading.

    .venv/bin/python benchmarks/bench_embedded_load.py --people 200000

Prints ONE JSON object:
  raw_rows_per_s     reading every Parquet file fully with pyarrow (the physical limit of the input side; the
                     second of two reads, files in the page cache as they are for the load)
  load_rows_per_s    EmbeddedTarget.load (check pass, staging pass, one COPY per table, close and rename)
  load_vs_raw        load_rows_per_s / raw_rows_per_s
  peak_rss_mb        peak resident memory of this process (ru_maxrss), after the load
  parquet_mb         total size of the snapshot's Parquet files; peak_rss_vs_parquet = peak_rss_mb / parquet_mb
Writing the demo data, the raw read and the load each run in their own child process, so each peak RSS is its
own (Linux keeps ru_maxrss across exec, so the parent stays small: it only imports and waits).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bluegreen_dagster.config import parse_settings  # noqa: E402
from bluegreen_dagster.demo_data import write_snapshot  # noqa: E402
from bluegreen_dagster.snapshots import expected_counts, snapshot_at  # noqa: E402

MB = 1024 * 1024


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _raw_read(files: list[Path]) -> tuple[int, float, float]:
    start = time.perf_counter()
    rows = 0
    for path in files:
        rows += pq.read_table(path).num_rows
    return rows, time.perf_counter() - start, _rss_mb()


def _load(root: str, data: str, customer: str, ts: int, chunk_rows: int, queue) -> None:
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    settings = parse_settings({"embedded": {"path": str(Path(root) / "store"), "min_free_disk_mb": 0}}, root=Path(root))
    base_rss = _rss_mb()
    target = EmbeddedTarget(settings, chunk_rows=chunk_rows)
    report = target.load(snapshot_at(Path(data), customer, ts))
    queue.put({"rows": report.rows, "seconds": report.seconds, "peak_rss_mb": _rss_mb(), "start_rss_mb": base_rss,
               "db_mb": target.database_path(report.database).stat().st_size / MB})


def _in_child(func, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=func, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _raw_child(files, queue) -> None:
    _raw_read(files)  # warm-up: the first read of a fresh process pays for pyarrow's thread pool and allocator
    rows, seconds, rss = _raw_read(files)
    queue.put({"rows": rows, "seconds": seconds, "peak_rss_mb": rss})


def _write_child(data: str, customer: str, ts: int, people: int, queue) -> None:
    started = time.perf_counter()
    write_snapshot(Path(data), customer, ts, people=people)
    queue.put(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        customer, ts = "bench", 1_700_000_000
        write_seconds = _in_child(_write_child, str(root / "data"), customer, ts, args.people)
        snap = snapshot_at(root / "data", customer, ts)
        files = snap.node_files + snap.relationship_files
        parquet_mb = snap.size_bytes / MB

        raw = _in_child(_raw_child, files)
        load = _in_child(_load, str(root), str(root / "data"), customer, ts, args.chunk_rows)
        expected = expected_counts(snap)
        assert load["rows"] == expected.nodes + expected.relationships, (load, expected)
        raw_rps = raw["rows"] / raw["seconds"]
        load_rps = load["rows"] / load["seconds"]
        print(json.dumps({
            "people": args.people,
            "chunk_rows": args.chunk_rows,
            "rows": load["rows"],
            "nodes": expected.nodes,
            "relationships": expected.relationships,
            "parquet_files": len(files),
            "parquet_mb": round(parquet_mb, 1),
            "write_demo_seconds": round(write_seconds, 2),
            "raw_seconds": round(raw["seconds"], 3),
            "raw_rows_per_s": round(raw_rps),
            "raw_peak_rss_mb": round(raw["peak_rss_mb"], 1),
            "load_seconds": round(load["seconds"], 3),
            "load_rows_per_s": round(load_rps),
            "load_vs_raw": round(load_rps / raw_rps, 4),
            "peak_rss_mb": round(load["peak_rss_mb"], 1),
            "start_rss_mb": round(load["start_rss_mb"], 1),
            "parent_rss_mb": round(_rss_mb(), 1),
            "peak_rss_vs_parquet": round(load["peak_rss_mb"] / parquet_mb, 2),
            "database_mb": round(load["db_mb"], 1),
        }))


if __name__ == "__main__":
    main()
