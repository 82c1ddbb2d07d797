"""Zero downtime, seen by readers: three reader processes open the customer's alias and count nodes and
relationships in a loop while 20 snapshots of different sizes are dropped and switched by the real pipeline.

The pipeline is driven the way production runs it: `dagster-daemon run -w workspace.yaml` with our instance
settings, and the snapshot sensor launching one run per snapshot. The test is the producer: it writes each
snapshot in the README's format into a hidden folder, `_SUCCESS` last, and renames it into place, keeping a few
snapshots ahead of the alias so the sensor and the customer's run queue always have work (a new interpreter per
drop, as `bluegreen simulate-snapshot` would be, costs seconds of CPU on a 2-core machine). Each snapshot has its
own size, so each has its own (nodes, relationships) pair.

Asserted: no read failed; every read returned the counts of exactly one complete snapshot; no reader ever went
back to an older snapshot; the alias moved 20 times, forward only, ending at the newest. Printed: reads, failures,
the longest read latency during a switch, as a JSON line (`zero_downtime {...}`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_project
from tests.dagster_processes import running_daemon, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CUSTOMER = "zdt-corp"
SWITCHES = 20  # snapshots switched while the readers read (plus one that is live before they start)
READERS = 3
IN_FLIGHT = 6  # snapshots dropped but not yet live: the sensor and the run queue always have work
DROP_EVERY_S = 1.0  # the producer's pace while the backlog has room
SWITCH_WINDOW_S = 0.5  # a read that overlaps [switch - 0.5 s, switch + 0.5 s] counts as a read during a switch


def write_snapshot(base_path: Path, timestamp: int, people: int) -> tuple[int, int]:
    """A producer's drop: `people` Person nodes in a ring where everyone KNOWS the next two, plus one Company
    everyone WORKS_AT. Returns its (nodes, relationships)."""
    ids = pa.array(range(1, people + 1), pa.int64())
    company = people + 1
    source = [i for i in range(1, people + 1) for _ in range(3)]
    target = [t for i in range(1, people + 1) for t in ((i % people) + 1, ((i + 1) % people) + 1, company)]
    kinds = ["KNOWS", "KNOWS", "WORKS_AT"] * people
    tmp = base_path / CUSTOMER / f".{timestamp}.tmp"
    (tmp / "nodes").mkdir(parents=True)
    (tmp / "relationships").mkdir()
    pq.write_table(pa.table({"nodeId": ids, "labels": pa.array(["Person"] * people), "age": pa.array(
        [20 + i % 50 for i in range(people)], pa.int64())}), tmp / "nodes" / "people.parquet")
    pq.write_table(pa.table({"nodeId": pa.array([company], pa.int64()), "labels": ["Company"]}),
                   tmp / "nodes" / "companies.parquet")
    pq.write_table(pa.table({"sourceNodeId": pa.array(source, pa.int64()), "targetNodeId": pa.array(target, pa.int64()),
                             "relationshipType": kinds}), tmp / "relationships" / "edges.parquet")
    (tmp / "_SUCCESS").touch()
    tmp.rename(base_path / CUSTOMER / str(timestamp))
    return people + 1, 3 * people


def read_loop(alias: str, stop_file: str, out_file: str) -> None:
    """One reader process: what a customer's service does, open the alias read-only, count, close, again."""
    import ladybug

    with open(out_file, "w", buffering=1) as out:
        while not os.path.exists(stop_file):
            started = time.time()
            record: dict = {"start": started}
            try:
                db = ladybug.Database(alias, read_only=True)
                try:
                    conn = ladybug.Connection(db)
                    record["nodes"] = conn.execute("MATCH (n) RETURN count(n)").get_next()[0]
                    record["rels"] = conn.execute("MATCH ()-[r]->() RETURN count(r)").get_next()[0]
                finally:
                    db.close()
            except Exception as exc:  # a failed read is the result we look for, not a crash of the reader
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["end"] = time.time()
            out.write(json.dumps(record) + "\n")


class AliasWatcher(threading.Thread):
    """Polls where the alias points (every 5 ms) and records each change with its time."""

    def __init__(self, alias: Path) -> None:
        super().__init__(daemon=True)
        self.alias, self.changes, self.stopping = alias, [], threading.Event()

    def current(self) -> str | None:
        return Path(os.path.realpath(self.alias)).stem if os.path.lexists(self.alias) else None

    def run(self) -> None:
        last = None
        while not self.stopping.is_set():
            now = self.current()
            if now != last:
                self.changes.append((time.time(), now))
                last = now
            time.sleep(0.005)


class Dropper(threading.Thread):
    """Drops snapshots 1..N, each as soon as fewer than IN_FLIGHT dropped ones are still waiting to go live, so
    the sensor always finds new work and the customer's run queue never runs dry."""

    def __init__(self, drop, watcher: AliasWatcher, timestamps: list[int], began: float) -> None:
        super().__init__(daemon=True)
        self.drop, self.watcher, self.timestamps, self.began = drop, watcher, timestamps, began
        self.stopping, self.error = threading.Event(), None

    def run(self) -> None:
        try:
            for i in range(1, len(self.timestamps)):
                while live_index(self.watcher.current(), self.timestamps) < i - IN_FLIGHT:
                    if self.stopping.wait(0.1):
                        return
                self.drop(i)
                self.stopping.wait(DROP_EVERY_S)
                print(f"{time.monotonic() - self.began:6.1f}s dropped snapshot {i}; live: {self.watcher.current()}",
                      flush=True)
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"


def test_readers_never_fail_and_always_see_one_complete_snapshot_during_20_switches(tmp_path: Path) -> None:
    project = make_project(tmp_path, orchestrator={"scan_interval": 5, "keep_databases": 2})
    alias = project.settings.embedded.path / "aliases" / f"{CUSTOMER}.lbug"
    base_ts = int(time.time()) - 10_000
    timestamps = [base_ts + i for i in range(SWITCHES + 1)]
    valid: dict[tuple[int, int], int] = {}  # (nodes, relationships) -> snapshot index

    def drop(i: int) -> None:
        valid[write_snapshot(project.data, timestamps[i], people=50 + 25 * i)] = i

    watcher = AliasWatcher(alias)
    stop_file = tmp_path / "stop-readers"
    outputs = [tmp_path / f"reader-{n}.jsonl" for n in range(READERS)]
    readers = [multiprocessing.get_context("spawn").Process(target=read_loop, args=(str(alias), str(stop_file), str(o)))
               for o in outputs]
    began = time.monotonic()
    with running_daemon(project) as log:
        drop(0)
        wait_for(lambda: watcher.current() == f"{CUSTOMER}-{timestamps[0]}", 120, "the first snapshot to go live", log)
        watcher.start()
        for r in readers:
            r.start()
        wait_for(lambda: all(o.exists() and o.stat().st_size for o in outputs), 60, "every reader's first read")
        switching = time.monotonic()
        dropper = Dropper(drop, watcher, timestamps, switching)
        dropper.start()
        try:
            wait_for(lambda: dropper.error or watcher.current() == f"{CUSTOMER}-{timestamps[-1]}", 600,
                     "the newest snapshot to go live", log)
            assert not dropper.error, f"dropping snapshots failed: {dropper.error}"
            switch_seconds = time.monotonic() - switching
            time.sleep(1.0)  # reads after the last switch
        finally:
            dropper.stopping.set()
            stop_file.touch()
            for r in readers:
                r.join(timeout=30)
                if r.is_alive():
                    r.kill()
            watcher.stopping.set()
            watcher.join()
            dropper.join()

    assert len(valid) == SWITCHES + 1, "two snapshots have the same counts; the test could not tell them apart"
    exit_codes = [r.exitcode for r in readers]
    reads = [[json.loads(line) for line in o.read_text().splitlines()] for o in outputs]
    all_reads = [rec for per_reader in reads for rec in per_reader]
    failures = [rec for rec in all_reads if "error" in rec]
    wrong = [rec for rec in all_reads if "error" not in rec and (rec["nodes"], rec["rels"]) not in valid]
    backwards = []
    for n, per_reader in enumerate(reads):
        seen = [valid[(rec["nodes"], rec["rels"])] for rec in per_reader if (rec.get("nodes"), rec.get("rels")) in valid]
        backwards += [(n, a, b) for a, b in zip(seen, seen[1:]) if b < a]

    switch_times = [t for t, target in watcher.changes[1:]]  # the first entry is the alias as the watcher found it
    targets = [target for _, target in watcher.changes]
    latencies = [rec["end"] - rec["start"] for rec in all_reads]
    during = [rec["end"] - rec["start"] for rec in all_reads
              if any(rec["start"] <= t + SWITCH_WINDOW_S and rec["end"] >= t - SWITCH_WINDOW_S for t in switch_times)]
    snapshots_seen = {valid[(r["nodes"], r["rels"])] for r in all_reads if (r.get("nodes"), r.get("rels")) in valid}
    result = {
        "readers": READERS, "reads": len(all_reads), "failed_reads": len(failures), "wrong_counts": len(wrong),
        "went_backwards": len(backwards), "switches": len(switch_times),
        "snapshots_seen_by_readers": len(snapshots_seen),
        "max_read_latency_during_switch_s": round(max(during), 4) if during else None,
        "reads_during_switch": len(during),
        "max_read_latency_s": round(max(latencies), 4) if latencies else None,
        "median_read_latency_s": round(statistics.median(latencies), 4) if latencies else None,
        "switching_seconds": round(switch_seconds, 1), "total_seconds": round(time.monotonic() - began, 1),
        "pipeline": "dagster-daemon + snapshot_sensor",
    }
    print(f"\nzero downtime: {result['reads']} reads by {READERS} processes during {result['switches']} switches "
          f"in {result['switching_seconds']}s; {result['failed_reads']} failed; longest read during a switch "
          f"{result['max_read_latency_during_switch_s']}s (longest overall {result['max_read_latency_s']}s)")
    print("zero_downtime " + json.dumps(result))

    assert exit_codes == [0] * READERS, f"a reader process died: exit codes {exit_codes}"
    assert not failures, f"{len(failures)} of {len(all_reads)} reads failed, e.g. {failures[:3]}"
    assert not wrong, f"reads that match no complete snapshot: {wrong[:3]}; valid (nodes, rels): {sorted(valid)}"
    assert not backwards, f"readers went back to older snapshots (reader, from, to): {backwards[:5]}"
    assert all(len(per_reader) > 0 for per_reader in reads), "a reader never read"
    expected_targets = [f"{CUSTOMER}-{ts}" for ts in timestamps]
    assert targets == expected_targets, f"the alias did not move forward through every snapshot: {targets}"
    # Readers really read across the switches, not only the first and the last snapshot.
    assert len(snapshots_seen) >= SWITCHES // 2, f"readers saw only snapshots {sorted(snapshots_seen)}"


def live_index(target: str | None, timestamps: list[int]) -> int:
    """Which snapshot (index into timestamps) the alias serves now, -1 for none."""
    keys = [f"{CUSTOMER}-{ts}" for ts in timestamps]
    return keys.index(target) if target in keys else -1
