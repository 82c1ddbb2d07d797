"""How fast EmbeddedTarget.load turns a demo snapshot into a LadybugDB file, against raw Parquet reading.

    .venv/bin/python benchmarks/bench_embedded_load.py --people 200000

Prints ONE JSON object:
  raw_rows_per_s     reading every Parquet file fully with pyarrow (the physical limit of the input side; the
                     second of two reads, files in the page cache as they are for the load)
  load_rows_per_s    EmbeddedTarget.load (check pass, staging pass, one COPY per table, close and rename)
  load_vs_raw        load_rows_per_s / raw_rows_per_s
  copy_rows_per_s    LadybugDB's own bulk load: one COPY FROM the snapshot's Parquet files straight into a fresh
                     database, tables written by hand for the demo schema (no checks, no staging): the engine's
                     limit; load_vs_copy = load_rows_per_s / copy_rows_per_s, copy_peak_rss_mb its peak RSS
  load_phase_seconds the load's plan (check pass), staging and copy (CREATE TABLE, COPY, close) phases
  peak_rss_mb        peak resident memory of this process (ru_maxrss), after the load
  parquet_mb         total size of the snapshot's Parquet files; peak_rss_vs_parquet = peak_rss_mb / parquet_mb
Writing the demo data, the raw read and the load each run in their own child process, so each peak RSS is its
own (Linux keeps ru_maxrss across exec, so the parent stays small: it only imports and waits).
"""

from __future__ import annotations

import argparse
import json
import shutil
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


# The demo snapshot's schema (bluegreen_dagster/demo_data.py), written out by hand as a user of LadybugDB would:
# COPY maps Parquet columns by position, relationship files start with their FROM and TO keys.
_DEMO_DDL = (
    "CREATE NODE TABLE Person(nodeId INT64 PRIMARY KEY, labels STRING[], name STRING, age INT64, score DOUBLE)",
    "CREATE NODE TABLE Company(nodeId INT64 PRIMARY KEY, labels STRING, name STRING, industry STRING, founded INT64)",
    "CREATE REL TABLE KNOWS(FROM Person TO Person, relationshipType STRING, since INT64, weight DOUBLE)",
    "CREATE REL TABLE WORKS_AT(FROM Person TO Company, relationshipType STRING, since INT64)",
)
_DEMO_FILES = (("Person", "nodes", "person-"), ("Company", "nodes", "company-"),
               ("KNOWS", "relationships", "knows-"), ("WORKS_AT", "relationships", "works_at-"))


def _copy_child(root: str, data: str, customer: str, ts: int, queue) -> None:
    """LadybugDB's own COPY FROM the snapshot's Parquet files into a fresh database (same buffer pool and threads
    as the target uses), timed from opening the database to closing it."""
    import time

    import ladybug as lb

    from bluegreen_dagster.config import parse_settings
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    settings = parse_settings({"embedded": {"path": str(Path(root) / "store"), "min_free_disk_mb": 0}}, root=Path(root))
    target = EmbeddedTarget(settings)
    folder = snapshot_at(Path(data), customer, ts).path
    started = time.perf_counter()
    db = lb.Database(str(Path(root) / "copy.lbug"), buffer_pool_size=target.buffer_pool_bytes,
                     max_num_threads=target.threads)
    conn = lb.Connection(db)
    for statement in _DEMO_DDL:
        conn.execute(statement)
    rows = 0
    for table, sub, prefix in _DEMO_FILES:
        files = sorted(str(f) for f in (folder / sub).glob(f"{prefix}*.parquet"))
        conn.execute(f"COPY {table} FROM [{', '.join(repr(f) for f in files)}]")
    for table, sub, _ in _DEMO_FILES:
        pattern = f"MATCH (n:{table}) RETURN count(*)" if sub == "nodes" else f"MATCH ()-[r:{table}]->() RETURN count(*)"
        rows += conn.execute(pattern).get_next()[0]
    conn.close()
    db.close()
    queue.put({"rows": rows, "seconds": time.perf_counter() - started, "peak_rss_mb": rss_mb()})


def _best(runs: list[dict]) -> dict:
    """The fastest run, with every run's seconds and the highest peak RSS of them."""
    return {**min(runs, key=lambda r: r["seconds"]), "all_seconds": [round(r["seconds"], 3) for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def measure(people: int, chunk_rows: int = 100_000, repeat: int = 1) -> dict:
    """Raw read, LadybugDB's own COPY and EmbeddedTarget.load of one demo snapshot, each in its own process;
    COPY and load alternate `repeat` times (best of, as the machine may be shared)."""
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        root = Path(tmp)
        customer, ts = "bench", 1_700_000_000
        write_seconds = in_child(write_demo_child, str(root / "data"), customer, ts, people)
        snap = snapshot_at(root / "data", customer, ts)
        files = snap.node_files + snap.relationship_files
        parquet_mb = snap.size_bytes / MB

        raw = in_child(_raw_child, files)
        copies, loads = [], []
        for i in range(repeat):
            shutil.rmtree(root / "store", ignore_errors=True)
            (root / "copy.lbug").unlink(missing_ok=True)
            copies.append(in_child(_copy_child, str(root), str(root / "data"), customer, ts))
            loads.append(in_child(_load, str(root), str(root / "data"), customer, ts, chunk_rows))
        copy, load = _best(copies), _best(loads)
        expected = expected_counts(snap)
        assert load["rows"] == expected.nodes + expected.relationships, (load, expected)
        assert copy["rows"] == load["rows"], (copy, load)
        raw_rps = raw["rows"] / raw["seconds"]
        load_rps = load["rows"] / load["seconds"]
        copy_rps = copy["rows"] / copy["seconds"]
        return {
            "people": people,
            "chunk_rows": chunk_rows,
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
            "repeat": repeat,
            "copy_seconds": round(copy["seconds"], 3),
            "copy_all_seconds": copy["all_seconds"],
            "load_all_seconds": load["all_seconds"],
            "copy_rows_per_s": round(copy_rps),
            "copy_peak_rss_mb": round(copy["peak_rss_mb"], 1),
            "load_vs_copy": round(load_rps / copy_rps, 3),
            "peak_rss_mb": round(load["peak_rss_mb"], 1),
            "start_rss_mb": round(load["start_rss_mb"], 1),
            "parent_rss_mb": round(rss_mb(), 1),
            "peak_rss_vs_parquet": round(load["peak_rss_mb"] / parquet_mb, 2),
            "database_mb": round(load["db_mb"], 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1, help="COPY and load alternating, best of")
    args = parser.parse_args()
    print(json.dumps(measure(args.people, args.chunk_rows, args.repeat)))


if __name__ == "__main__":
    main()
