"""Realistic demo snapshots: people who know each other and work at companies.

Written the way a producer should: into a hidden temporary folder, `_SUCCESS` last, then renamed into place, so
the sensor never sees a half-written snapshot. Sizes go from a few rows to millions; files are written in parts
of at most `rows_per_file` rows so memory stays bounded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bluegreen_dagster.folders import NODES_DIR, RELATIONSHIPS_DIR, SUCCESS_MARKER
from bluegreen_dagster.snapshots import snapshot_at, write_atomically

FIRST = np.array(["Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace", "John", "Margaret",
                  "Niklaus", "Radia", "Tim", "Vint", "Whitfield", "Yukihiro"])
LAST = np.array(["Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper", "Backus",
                 "Hamilton", "Wirth", "Perlman", "Berners-Lee", "Cerf", "Diffie", "Matsumoto"])
INDUSTRIES = np.array(["software", "finance", "retail", "health", "energy", "logistics"])


def _parts(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(size, total - start)


def write_snapshot_files(folder: Path, people: int, companies: int | None = None, knows_per_person: int = 3,
                         seed: int = 0, rows_per_file: int = 500_000) -> dict[str, int]:
    """Write nodes/ and relationships/ Parquet files (GDS column convention) into `folder`. Returns row counts."""
    rng = np.random.default_rng(seed)
    companies = companies if companies is not None else max(1, people // 50)
    nodes_dir, rels_dir = Path(folder) / NODES_DIR, Path(folder) / RELATIONSHIPS_DIR
    nodes_dir.mkdir(parents=True, exist_ok=True)
    rels_dir.mkdir(parents=True, exist_ok=True)
    person_base, company_base = 1, 1 + people  # node ids are unique across labels, > 0

    for part, (start, n) in enumerate(_parts(people, rows_per_file)):
        ids = np.arange(person_base + start, person_base + start + n, dtype=np.int64)
        # One label per node: the embedded target refuses nodes with several (schema_rules.py, docs/types.md).
        labels = pa.array([["Person"]] * n, pa.list_(pa.string()))
        names = pa.array(np.char.add(np.char.add(FIRST[rng.integers(0, len(FIRST), n)], " "),
                                     LAST[rng.integers(0, len(LAST), n)]))
        pq.write_table(pa.table({"nodeId": ids, "labels": labels, "name": names,
                                 "age": rng.integers(18, 90, n, dtype=np.int64),
                                 "score": rng.random(n)}), nodes_dir / f"person-{part:05d}.parquet")
    ids = np.arange(company_base, company_base + companies, dtype=np.int64)
    pq.write_table(pa.table({"nodeId": ids, "labels": pa.array(["Company"] * companies),
                             "name": pa.array([f"Company {i}" for i in range(companies)]),
                             "industry": pa.array(INDUSTRIES[rng.integers(0, len(INDUSTRIES), companies)]),
                             "founded": rng.integers(1900, 2025, companies, dtype=np.int64)}),
                   nodes_dir / "company-00000.parquet")

    knows = people * knows_per_person if people > 1 else 0
    for part, (start, n) in enumerate(_parts(knows, rows_per_file)):
        src = rng.integers(0, people, n, dtype=np.int64)
        dst = (src + rng.integers(1, people, n, dtype=np.int64)) % people  # never a self-loop
        pq.write_table(pa.table({"sourceNodeId": src + person_base, "targetNodeId": dst + person_base,
                                 "relationshipType": pa.array(["KNOWS"] * n).dictionary_encode(),
                                 "since": rng.integers(1990, 2026, n, dtype=np.int64),
                                 "weight": rng.random(n)}), rels_dir / f"knows-{part:05d}.parquet")
    for part, (start, n) in enumerate(_parts(people, rows_per_file)):
        src = np.arange(start, start + n, dtype=np.int64) + person_base
        dst = rng.integers(0, companies, n, dtype=np.int64) + company_base
        pq.write_table(pa.table({"sourceNodeId": src, "targetNodeId": dst,
                                 "relationshipType": pa.array(["WORKS_AT"] * n),
                                 "since": rng.integers(1990, 2026, n, dtype=np.int64)}),
                       rels_dir / f"works_at-{part:05d}.parquet")
    return {"nodes": people + companies, "relationships": knows + people}


def write_snapshot(base_path: Path, customer: str, timestamp: str | int | None = None, people: int = 1000,
                   seed: int | None = None, success_marker: bool = True, **kwargs) -> Path:
    """Drop one complete snapshot atomically under base_path/<customer>/<timestamp> and return its folder."""
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    target = snapshot_at(base_path, customer, timestamp).path  # validates the names first
    if target.exists():
        raise FileExistsError(f"{target} already exists")

    def write(tmp: Path) -> None:
        write_snapshot_files(tmp, people, seed=int(timestamp) % 2**32 if seed is None else seed, **kwargs)
        if success_marker:
            (tmp / SUCCESS_MARKER).touch()  # last: the producer's "done"

    return write_atomically(target, write)
