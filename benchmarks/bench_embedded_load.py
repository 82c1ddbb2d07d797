"""How fast EmbeddedTarget.load turns a demo snapshot into a LadybugDB file, against raw Parquet reading.

    .venv/bin/python benchmarks/bench_embedded_load.py --people 200000

Prints ONE JSON object:
  raw_rows_per_s     reading every Parquet file fully with pyarrow (the physical limit of the input side; the
                     second of two reads, files in the page cache as they are for the load)
  load_rows_per_s    EmbeddedTarget.load (check pass, staging pass, one COPY per table, close and rename)
  load_vs_raw        load_rows_per_s / raw_rows_per_s
  load_phase_seconds the load's plan (check pass), staging and copy (CREATE TABLE, COPY, close) phases
  peak_rss_mb        peak resident memory of this process (ru_maxrss), after the load
  parquet_mb         total size of the snapshot's Parquet files; peak_rss_vs_parquet = peak_rss_mb / parquet_mb
Writing the demo data, the raw read and the load each run in their own child process, so each peak RSS is its
own (Linux keeps ru_maxrss across exec, so the parent stays small: it only imports and waits).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import MB, in_child, raw_read, rss_mb, write_demo_child  # noqa: E402
from bluegreen_dagster.config import parse_settings  # noqa: E402
from bluegreen_dagster.snapshots import expected_counts, snapshot_at  # noqa: E402


def _load(root: str, data: str, customer: str, ts: int, chunk_rows: int, queue) -> None:
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    settings = parse_settings({"embedded": {"path": str(Path(root) / "store"), "min_free_disk_mb": 0}}, root=Path(root))
    base_rss = rss_mb()
    target = EmbeddedTarget(settings, chunk_rows=chunk_rows)
    report = target.load(snapshot_at(Path(data), customer, ts))
    queue.put({"rows": report.rows, "seconds": report.seconds, "phases": report.phases, "peak_rss_mb": rss_mb(),
               "start_rss_mb": base_rss, "db_mb": target.database_path(report.database).stat().st_size / MB})


def _raw_child(files, queue) -> None:
    raw_read(files)  # warm-up: the first read of a fresh process pays for pyarrow's thread pool and allocator
    rows, _, seconds = raw_read(files)
    queue.put({"rows": rows, "seconds": seconds, "peak_rss_mb": rss_mb()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        customer, ts = "bench", 1_700_000_000
        write_seconds = in_child(write_demo_child, str(root / "data"), customer, ts, args.people)
        snap = snapshot_at(root / "data", customer, ts)
        files = snap.node_files + snap.relationship_files
        parquet_mb = snap.size_bytes / MB

        raw = in_child(_raw_child, files)
        load = in_child(_load, str(root), str(root / "data"), customer, ts, args.chunk_rows)
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
            "load_phase_seconds": {k: round(v, 3) for k, v in load["phases"].items()},
            "load_vs_raw": round(load_rps / raw_rps, 4),
            "peak_rss_mb": round(load["peak_rss_mb"], 1),
            "start_rss_mb": round(load["start_rss_mb"], 1),
            "parent_rss_mb": round(rss_mb(), 1),
            "peak_rss_vs_parquet": round(load["peak_rss_mb"] / parquet_mb, 2),
            "database_mb": round(load["db_mb"], 1),
        }))


if __name__ == "__main__":
    main()
