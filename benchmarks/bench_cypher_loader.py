"""The Cypher fallback loader (CypherLoader) against a naive loading script, on one real Neo4j Community server.

    .venv/bin/python benchmarks/bench_cypher_loader.py --people 25000 --repeat 3

Needs the Community launcher (`bash tests/neo4j_harness/build.sh`, Java 17). The benchmark starts it on a free
port (the same command line as the `neo4j_community` test tier), stops it by pid at the end, and writes one demo
snapshot (`demo_data`, people + people/50 companies nodes, 4 relationships per person: 25000 people = 125,500
rows). Both loaders write into Community's only user database, `neo4j`, emptied (nodes, relationships and
indexes) before every load, and the counts are checked after every load (outside the timing):

  ours   `CypherLoader.write`, as `Neo4jTarget` runs it after CREATE DATABASE (marker node, per-label indexes,
         nodes, relationships, marker removed), at --batch-size rows per transaction
  naive  the script from issue 6: one `:Node(nodeId)` index, each Parquet file read whole with `to_pylist()`,
         `UNWIND $rows AS row CREATE (n:Node:$(row.labels) {nodeId: row.id}) SET n += row.props`, then
         `UNWIND $rows AS row MATCH (a:Node {nodeId: row.s}) MATCH (b:Node {nodeId: row.t})
         CREATE (a)-[r:$(row.type)]->(b) SET r += row.props`, one managed transaction per --batch-size rows

--warmup rounds of both loaders on the same snapshot, not counted (the JIT of a fresh server is cold: the first
loads run 2-4x slower, and a smaller warm-up snapshot was not enough), then --repeat rounds alternating which
loader goes first. Per loader: wall seconds and rows/s (median), CPU seconds
of this process (client) and of the server process (from /proc), and for ours the phase times the loader
reports. On a shared machine wall time swings 2-3x with other load, so several ratios are printed: `ratio` is
the median of the per-round ratios (ours against the naive load next to it in time; the goal is judged on it),
`ratio_of_medians`, `ratio_best` (fastest load of each, as `timeit` advises for noisy machines) and `ratio_cpu`
(client + server CPU seconds, which swing much less). Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import neo4j
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bluegreen_dagster.config import Settings  # noqa: E402
from bluegreen_dagster.demo_data import write_snapshot  # noqa: E402
from bluegreen_dagster.snapshots import expected_counts, snapshot_at  # noqa: E402
from bluegreen_dagster.targets.neo4j.admin import Admin  # noqa: E402
from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader  # noqa: E402
from tests.helpers import free_port as _free_port  # noqa: E402
from tests.neo4j_community import PASSWORD, USER, _bolt_answers, harness_command  # noqa: E402

GOAL = 1.5  # issue 6: ours >= 1.5x the naive script's rows/s
NAIVE_NODES = "UNWIND $rows AS row CREATE (n:Node:$(row.labels) {nodeId: row.id}) SET n += row.props"
NAIVE_RELS = ("UNWIND $rows AS row MATCH (a:Node {nodeId: row.s}) MATCH (b:Node {nodeId: row.t}) "
              "CREATE (a)-[r:$(row.type)]->(b) SET r += row.props")


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "mem_gb": round(mem_gb, 1), "cpu": model, "python": platform.python_version(),
            "neo4j_driver": neo4j.__version__}


class Server:
    """The Community launcher, started and stopped by pid."""

    def __init__(self, log_file: Path) -> None:
        command = harness_command(_free_port())
        if isinstance(command, str):
            raise SystemExit(command)
        with open(log_file, "w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            text=True, start_new_session=True)
        self.uri = ""
        found = threading.Event()

        def read_stdout() -> None:
            for line in self.process.stdout:
                if line.startswith("BOLT_URI=") and not found.is_set():
                    self.uri = line.strip().split("=", 1)[1].rstrip("/")
                    found.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + 240
        while not (found.is_set() and _bolt_answers(self.uri)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the Neo4j harness did not start; see {log_file}")
            time.sleep(0.3)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process.stdin:
            self.process.stdin.close()


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def empty(driver: neo4j.Driver) -> None:
    with driver.session(database="neo4j") as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
        for record in list(session.run("SHOW INDEXES YIELD name, type WHERE type = 'RANGE' RETURN name")):
            session.run(f"DROP INDEX `{record['name']}`").consume()


def counts(driver: neo4j.Driver) -> tuple[int, dict[str, int]]:
    with driver.session(database="neo4j") as session:
        nodes = session.run("MATCH (n) RETURN count(n) AS c").single()["c"]
        types = {r["t"]: r["c"] for r in session.run("MATCH ()-[r]->() RETURN type(r) AS t, count(*) AS c")}
    return nodes, types


def naive(driver: neo4j.Driver, folder: Path, batch_size: int) -> None:
    def write(query: str, rows: list[dict]) -> None:
        with driver.session(database="neo4j") as session:
            session.execute_write(lambda tx: tx.run(query, rows=rows).consume())

    with driver.session(database="neo4j") as session:
        session.run("CREATE INDEX FOR (n:Node) ON (n.nodeId)").consume()
        session.run("CALL db.awaitIndexes(300)").consume()
    for path in sorted((folder / "nodes").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for i in range(0, len(rows), batch_size):
            write(NAIVE_NODES, [{"id": r["nodeId"], "labels": [r["labels"]] if isinstance(r["labels"], str)
                                 else r["labels"], "props": {k: v for k, v in r.items() if k not in ("nodeId", "labels")}}
                                for r in rows[i:i + batch_size]])
    reserved = ("sourceNodeId", "targetNodeId", "relationshipType")
    for path in sorted((folder / "relationships").glob("*.parquet")):
        rows = pq.read_table(path).to_pylist()
        for i in range(0, len(rows), batch_size):
            write(NAIVE_RELS, [{"s": r["sourceNodeId"], "t": r["targetNodeId"], "type": r["relationshipType"],
                                "props": {k: v for k, v in r.items() if k not in reserved}}
                               for r in rows[i:i + batch_size]])


def measure(name: str, server: Server, driver: neo4j.Driver, admin: Admin, snapshot, batch_size: int) -> dict:
    empty(driver)
    expected = expected_counts(snapshot)
    c0, s0, t0 = client_cpu(), server.cpu_seconds(), time.monotonic()
    phases = {}
    if name == "ours":
        result = CypherLoader(admin, batch_size).write("neo4j", snapshot)
        phases = {k: round(v, 2) for k, v in result.phases.items()}
    else:
        naive(driver, snapshot.path, batch_size)
    seconds = time.monotonic() - t0
    out = {"seconds": round(seconds, 2), "client_cpu": round(client_cpu() - c0, 2),
           "server_cpu": round(server.cpu_seconds() - s0, 2), "phases": phases}
    nodes, types = counts(driver)
    if nodes != expected.nodes or types != expected.types:
        raise SystemExit(f"{name} wrote {nodes} nodes {types}, expected {expected.nodes} {expected.types}")
    return out


def summary(runs: list[dict], rows: int) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["client_cpu"] + r["server_cpu"] for r in runs)
    return {"rows_per_s": round(rows / seconds), "seconds": seconds, "cpu_seconds": round(cpu, 2),
            "client_cpu": statistics.median(r["client_cpu"] for r in runs),
            "server_cpu": statistics.median(r["server_cpu"] for r in runs), "runs": runs}


def unavailable() -> str | None:
    """Why the benchmark cannot run here (the launcher is not built, no Java), or None."""
    command = harness_command(0)
    return command if isinstance(command, str) else None


def run(people: int = 25000, batch_size: int = 10000, repeat: int = 3, warmup: int = 1) -> dict:
    """Warm-up rounds, then `repeat` alternating rounds of ours and the naive script on one fresh server."""
    args = argparse.Namespace(people=people, batch_size=batch_size, repeat=repeat, warmup=warmup)
    logging.getLogger("neo4j").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-cypher-") as tmp:
        base = Path(tmp)
        write_snapshot(base / "data", "bench", 1, people=args.people)
        snapshot = snapshot_at(base / "data", "bench", 1)
        expected = expected_counts(snapshot)
        rows = expected.nodes + expected.relationships
        load_before = os.getloadavg()
        server = Server(base / "harness.log")
        try:
            host, port = server.uri.removeprefix("bolt://").rsplit(":", 1)
            settings = Settings.model_validate({"target": "neo4j", "neo4j": {
                "host": host, "bolt_port": int(port), "user": USER, "password": PASSWORD, "loader": "cypher"}})
            admin = Admin(settings.neo4j)
            driver = admin.driver
            for _ in range(args.warmup):
                for name in ("ours", "naive"):
                    measure(name, server, driver, admin, snapshot, args.batch_size)
            runs: dict[str, list[dict]] = {"ours": [], "naive": []}
            for round_ in range(args.repeat):
                for name in (("ours", "naive") if round_ % 2 == 0 else ("naive", "ours")):
                    runs[name].append(measure(name, server, driver, admin, snapshot, args.batch_size))
            empty(driver)
            admin.close()
        finally:
            server.stop()
        ours, naive_ = summary(runs["ours"], rows), summary(runs["naive"], rows)
        paired = [n["seconds"] / o["seconds"] for o, n in zip(runs["ours"], runs["naive"], strict=True)]
        best = min(r["seconds"] for r in runs["naive"]) / min(r["seconds"] for r in runs["ours"])
        return {
            "rows": rows, "nodes": expected.nodes, "relationships": expected.relationships,
            "batch_size": args.batch_size, "warmup": args.warmup, "repeat": args.repeat,
            "ours": ours, "naive": naive_,
            "ratio": round(statistics.median(paired), 2), "per_round": [round(x, 2) for x in paired],
            "ratio_of_medians": round(ours["rows_per_s"] / naive_["rows_per_s"], 2),
            "ratio_best": round(best, 2),
            "ratio_cpu": round(naive_["cpu_seconds"] / ours["cpu_seconds"], 2),
            "goal": GOAL, "goal_met": statistics.median(paired) >= GOAL,
            "machine": {**machine(), "loadavg_before": [round(x, 1) for x in load_before],
                        "loadavg_after": [round(x, 1) for x in os.getloadavg()]},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=25000)
    parser.add_argument("--batch-size", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args.people, args.batch_size, args.repeat, args.warmup), indent=1))


if __name__ == "__main__":
    main()
