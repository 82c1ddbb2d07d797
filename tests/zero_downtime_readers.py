"""Reader processes for the zero-downtime tests, and what their reads add up to.

A reader does what a customer's service does: open the alias, count nodes and relationships, close, again, as
fast as it can. Each read is one JSON line (start, end, counts or the error) in the reader's own file, so a
reader that dies still leaves what it read. `summarize` turns the files into the numbers the tests assert and
print: reads, failures, counts that match no complete snapshot, readers that went back to an older snapshot,
and the longest read latency around a switch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SWITCH_WINDOW_S = 0.5  # a read that overlaps [switch - 0.5 s, switch + 0.5 s] counts as a read during a switch


def _loop(read: Callable[[], tuple[int, int]], stop_file: str, out_file: str) -> None:
    with open(out_file, "w", buffering=1) as out:
        while not os.path.exists(stop_file):
            record: dict = {"start": time.time()}
            try:
                record["nodes"], record["rels"] = read()
            except Exception as exc:  # a failed read is the result we look for, not a crash of the reader
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["end"] = time.time()
            out.write(json.dumps(record) + "\n")


def ladybug_reader(alias: str, stop_file: str, out_file: str) -> None:
    """Opens the embedded alias read-only, as the README shows, for every read."""
    import ladybug

    def read() -> tuple[int, int]:
        db = ladybug.Database(alias, read_only=True)
        try:
            conn = ladybug.Connection(db)
            return (conn.execute("MATCH (n) RETURN count(n)").get_next()[0],
                    conn.execute("MATCH ()-[r]->() RETURN count(r)").get_next()[0])
        finally:
            db.close()

    _loop(read, stop_file, out_file)


def neo4j_reader(uri: str, user: str, password: str, alias: str, stop_file: str, out_file: str) -> None:
    """Reads through the Neo4j alias with the driver: both counts in one explicit read transaction (so from one
    database), without the driver's automatic retries, so every error counts."""
    import neo4j

    with neo4j.GraphDatabase.driver(uri, auth=(user, password)) as driver:
        def read() -> tuple[int, int]:
            with driver.session(database=alias, default_access_mode=neo4j.READ_ACCESS) as session, \
                    session.begin_transaction() as tx:
                nodes = tx.run("MATCH (n) RETURN count(n) AS count").single()["count"]
                rels = sum(r["count"] for r in tx.run("MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS count"))
                return nodes, rels

        _loop(read, stop_file, out_file)


@contextmanager
def reader_processes(reader: Callable, args: tuple, folder: Path, count: int = 3) -> Iterator[list]:
    """`count` processes running `reader(*args, stop_file, out_file)`; stopped (stop file, then kill by pid if
    needed) on exit. Yields the processes; their files are `folder/reader-<n>.jsonl`."""
    stop_file = folder / "stop-readers"
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=reader, args=(*args, str(stop_file), str(folder / f"reader-{n}.jsonl")))
             for n in range(count)]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        stop_file.touch()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()


def outputs(folder: Path, count: int = 3) -> list[Path]:
    return [folder / f"reader-{n}.jsonl" for n in range(count)]


def first_reads_done(folder: Path, count: int = 3) -> bool:
    return all(o.exists() and o.stat().st_size for o in outputs(folder, count))


def summarize(procs: list, folder: Path, valid: dict[tuple[int, int], int],
              switch_times: list[float]) -> tuple[dict, list[str]]:
    """The reads' numbers, and every broken promise in words (empty when readers saw zero downtime).

    valid: (nodes, relationships) of each complete snapshot -> its order (older first)."""
    reads = [[json.loads(line) for line in o.read_text().splitlines()] for o in outputs(folder, len(procs))]
    every = [r for per_reader in reads for r in per_reader]
    failures = [r for r in every if "error" in r]
    ok = [r for r in every if "error" not in r]
    wrong = [r for r in ok if (r["nodes"], r["rels"]) not in valid]
    backwards = []
    for n, per_reader in enumerate(reads):
        seen = [valid[(r["nodes"], r["rels"])] for r in per_reader if (r.get("nodes"), r.get("rels")) in valid]
        backwards += [(n, a, b) for a, b in zip(seen, seen[1:]) if b < a]
    latencies = [r["end"] - r["start"] for r in every]
    during = [r["end"] - r["start"] for r in every
              if any(r["start"] <= t + SWITCH_WINDOW_S and r["end"] >= t - SWITCH_WINDOW_S for t in switch_times)]
    seen_snapshots = {valid[(r["nodes"], r["rels"])] for r in ok if (r["nodes"], r["rels"]) in valid}
    result = {
        "readers": len(procs), "reads": len(every), "failed_reads": len(failures), "wrong_counts": len(wrong),
        "went_backwards": len(backwards), "switches": len(switch_times),
        "snapshots_seen_by_readers": len(seen_snapshots), "reads_during_switch": len(during),
        "max_read_latency_during_switch_s": round(max(during), 4) if during else None,
        "max_read_latency_s": round(max(latencies), 4) if latencies else None,
        "median_read_latency_s": round(statistics.median(latencies), 4) if latencies else None,
    }
    problems = []
    exit_codes = [p.exitcode for p in procs]
    if exit_codes != [0] * len(procs):
        problems.append(f"a reader process died: exit codes {exit_codes}")
    if failures:
        problems.append(f"{len(failures)} of {len(every)} reads failed, e.g. {failures[:3]}")
    if wrong:
        problems.append(f"reads that match no complete snapshot: {wrong[:3]}; valid (nodes, rels): {sorted(valid)}")
    if backwards:
        problems.append(f"readers went back to an older snapshot (reader, from, to): {backwards[:5]}")
    if any(not per_reader for per_reader in reads):
        problems.append("a reader never read")
    if len(seen_snapshots) < max(2, len(switch_times) // 2):
        problems.append(f"readers saw only snapshots {sorted(seen_snapshots)} of {len(valid)}: they did not read "
                        "across the switches")
    return result, problems
