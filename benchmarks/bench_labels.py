"""Does the embedded target's load time grow with the number of labels? The same rows, loaded with one label and
with many, in the same run.

    .venv/bin/python benchmarks/bench_labels.py                       # 2,000 nodes, 5,000 relationships, 40 labels
    .venv/bin/python benchmarks/bench_labels.py --nodes 20000 --relationships 50000 --labels 40

Both snapshots hold the same node ids, properties and relationship endpoints; only the `labels` column differs
(node i has label `L{i % labels}`, or `L0` for all). With many labels the relationships fall into up to
labels^2 (FROM, TO) table pairs of one relationship type. Each load runs in its own child process, in a fresh
store (this script run with --child). Prints ONE JSON object:
  one_label / many_labels   {seconds, phases (plan, staging, copy), copy_statements, statement_seconds (COPY,
                            LOAD, the final CHECKPOINT) and statement_cpu_seconds (the same, in process CPU),
                            node_tables, rel_pairs, database_mb}
  many_vs_one               many_labels.seconds / one_label.seconds (the goal: at most 2)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_snapshot(data: Path, customer: str, ts: int, *, nodes: int, relationships: int, labels: int,
                   seed: int = 7) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    folder = data / customer / str(ts)
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir(parents=True)
    ids = np.arange(nodes, dtype=np.int64)
    pq.write_table(pa.table({
        "nodeId": ids,
        "labels": pa.array([[f"L{i % labels}"] for i in range(nodes)], pa.list_(pa.string())),
        "name": pa.array([f"node {i}" for i in range(nodes)]),
        "score": rng.random(nodes),
    }), folder / "nodes" / "nodes.parquet")
    pq.write_table(pa.table({
        "sourceNodeId": rng.integers(0, nodes, relationships, dtype=np.int64),
        "targetNodeId": rng.integers(0, nodes, relationships, dtype=np.int64),
        "relationshipType": pa.array(["LINKS"] * relationships),
        "weight": rng.random(relationships),
    }), folder / "relationships" / "links.parquet")
    (folder / "_SUCCESS").touch()


def _load(root: str, labels: int, nodes: int, relationships: int) -> dict:
    from bluegreen_dagster.config import parse_settings
    from bluegreen_dagster.snapshots import snapshot_at
    from bluegreen_dagster.targets.embedded import EmbeddedTarget
    from bluegreen_dagster.targets.embedded import database

    statements = []
    seconds = {"COPY": 0.0, "LOAD": 0.0, "CHECKPOINT": 0.0}
    cpu = dict.fromkeys(seconds, 0.0)  # process CPU (all LadybugDB threads): steadier than wall time on a busy machine
    copy_rows = database.copy_rows

    def counting(conn, statement, name):  # counts and times the statements the load issues
        statements.append(statement)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            return copy_rows(conn, statement, name)
        finally:
            seconds[statement.split()[0]] += time.perf_counter() - started
            cpu[statement.split()[0]] += time.process_time() - cpu_started

    database.copy_rows = counting
    data = Path(root) / "data"
    write_snapshot(data, "acme", 1000, nodes=nodes, relationships=relationships, labels=labels)
    settings = parse_settings({"embedded": {"path": str(Path(root) / "store"), "min_free_disk_mb": 0}},
                              root=Path(root))
    target = EmbeddedTarget(settings)
    snapshot = snapshot_at(data, "acme", 1000)
    report = target.load(snapshot)
    counts = target.count(report.database)
    assert counts.nodes == nodes and counts.relationships == relationships, counts
    from bluegreen_dagster.targets.embedded.plan import plan_load

    plan = plan_load(snapshot, target.batch_rows)
    return {"seconds": round(report.seconds, 3), "phases": {k: round(v, 3) for k, v in report.phases.items()},
            "copy_statements": sum(s.startswith("COPY") for s in statements),
            "statement_seconds": {k: round(v, 3) for k, v in seconds.items()},  # where the copy phase goes
            "statement_cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            "node_tables": len(plan.node_tables),
            "rel_pairs": sum(len(t.pairs) for t in plan.rel_tables.values()),
            "database_mb": round(target.database_path(report.database).stat().st_size / 2**20, 1)}


def measure(labels: int = 40, nodes: int = 2000, relationships: int = 5000) -> dict:
    out = {"nodes": nodes, "relationships": relationships, "labels": labels}
    for name, n in (("one_label", 1), ("many_labels", labels)):
        with tempfile.TemporaryDirectory(prefix="bench-labels-") as root:
            done = subprocess.run([sys.executable, __file__, "--child", root, "--labels", str(n), "--nodes",
                                   str(nodes), "--relationships", str(relationships)],
                                  capture_output=True, text=True, check=True)
            out[name] = json.loads(done.stdout)
    out["many_vs_one"] = round(out["many_labels"]["seconds"] / max(out["one_label"]["seconds"], 1e-9), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--relationships", type=int, default=5000)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one load in a fresh process, in this folder
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_load(args.child, args.labels, args.nodes, args.relationships)))
        return
    print(json.dumps(measure(args.labels, args.nodes, args.relationships), indent=2))


if __name__ == "__main__":
    main()
