"""Snapshot discovery at scale: `snapshots.scan` against a bare `os.scandir` walk of the same tree (the limit).

Builds `customers x snapshots` complete snapshot folders (nodes/ and relationships/ with one small file each,
`_SUCCESS`) in a temporary folder, then for each size times, warm page cache, median of `--repeat`:

- `walk_all`: os.scandir over every folder of the tree (base, customers, snapshots, nodes/, relationships/):
  the least any scan that examines every snapshot must do;
- `scan_all`: `scan(base)`, examining every snapshot (what the sensor did before `newer_than`);
- `walk_customers`: os.scandir of base and of each customer folder only: the least a tick must do to notice a new
  folder at all;
- `scan_new`: `scan(base, newer_than=...)` with every customer's newest timestamp as its mark, after one new
  snapshot was dropped: the sensor's tick. It must find exactly that snapshot.

Then fingerprints one demo snapshot (`--people`) three ways: SHA-256 of every file's whole content (what
`Snapshot.fingerprint` does), SHA-256 of every Parquet footer only (cheap, but blind to reordered rows), and one
pyarrow read of every file (what any load costs at least).

    .venv/bin/python benchmarks/bench_scan.py --sizes 100x100,1000x100 --people 1000000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen_dagster.demo_data import write_snapshot  # noqa: E402
from bluegreen_dagster.snapshots import scan, snapshot_at  # noqa: E402

FIRST_TS = 1_767_000_000


def build_tree(base: Path, customers: int, snapshots: int) -> dict[str, int]:
    """`customers x snapshots` complete snapshot folders; returns each customer's newest timestamp."""
    newest = {}
    for c in range(customers):
        customer = f"customer-{c:05d}"
        for s in range(snapshots):
            folder = base / customer / str(FIRST_TS + 60 * s)
            for sub, name in (("nodes", "person-00000.parquet"), ("relationships", "knows-00000.parquet")):
                os.makedirs(folder / sub)
                with open(folder / sub / name, "wb") as fh:
                    fh.write(b"PAR1")
            open(folder / "_SUCCESS", "wb").close()
        newest[customer] = FIRST_TS + 60 * (snapshots - 1)
    return newest


def walk_all(path: str) -> int:
    n = 0
    with os.scandir(path) as entries:
        for entry in entries:
            n += 1
            if entry.is_dir(follow_symlinks=False):
                n += walk_all(entry.path)
    return n


def walk_customers(base: str) -> int:
    n = 0
    with os.scandir(base) as customers:
        for customer in customers:
            with os.scandir(customer.path) as entries:
                n += sum(1 for _ in entries)
    return n


def timed(fn, repeat: int) -> tuple[float, object, float]:
    """Median wall seconds, the last result, median CPU seconds of this process (less noisy on a busy machine)."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), out, statistics.median(cpu)


def bench_size(root: Path, customers: int, snapshots: int, repeat: int) -> dict:
    base = root / f"tree-{customers}x{snapshots}"
    start = time.perf_counter()
    newest = build_tree(base, customers, snapshots)
    built = time.perf_counter() - start
    b = str(base)
    walk_all_s, _, walk_all_cpu = timed(lambda: walk_all(b), repeat)
    scan_all_s, found, scan_all_cpu = timed(lambda: scan(base, 3600), repeat)
    assert len(found.complete) == customers * snapshots and not found.waiting and not found.invalid
    # One new snapshot for the last customer: the tick must find it and nothing else.
    new_ts = newest["customer-00000"] + 60
    folder = base / "customer-00000" / str(new_ts)
    for sub in ("nodes", "relationships"):
        os.makedirs(folder / sub)
        (folder / sub / "part-0.parquet").write_bytes(b"PAR1")
    (folder / "_SUCCESS").touch()
    walk_customers_s, _, walk_customers_cpu = timed(lambda: walk_customers(b), repeat)
    scan_new_s, found, scan_new_cpu = timed(lambda: scan(base, 3600, newer_than=newest), repeat)
    assert [s.key for s in found.complete] == [f"customer-00000-{new_ts}"], found
    shutil.rmtree(base)
    return {
        "snapshots_on_disk": customers * snapshots, "customers": customers, "build_seconds": round(built, 1),
        "walk_all_s": round(walk_all_s, 4), "scan_all_s": round(scan_all_s, 4),
        "scan_all_vs_walk_all": round(scan_all_s / walk_all_s, 2),
        "walk_customers_s": round(walk_customers_s, 4), "scan_new_s": round(scan_new_s, 4),
        "scan_new_vs_walk_customers": round(scan_new_s / walk_customers_s, 2),
        "scan_new_vs_scan_all": round(scan_new_s / scan_all_s, 3),
        "cpu_s": {"walk_all": round(walk_all_cpu, 4), "scan_all": round(scan_all_cpu, 4),
                  "walk_customers": round(walk_customers_cpu, 4), "scan_new": round(scan_new_cpu, 4)},
        "goal_scan_new_under_s": 1.0,
    }


def bench_fingerprint(root: Path, people: int, repeat: int) -> dict:
    import pyarrow.parquet as pq

    folder = write_snapshot(root / "fp", "acme", FIRST_TS, people=people)
    snap = snapshot_at(root / "fp", "acme", FIRST_TS)
    files = [str(p) for p in snap.node_files + snap.relationship_files]
    size = sum(os.path.getsize(f) for f in files)

    def full() -> str:
        total = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                total.update(hashlib.file_digest(fh, "sha256").digest())
        return total.hexdigest()

    def footers() -> str:
        total = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                fh.seek(-8, os.SEEK_END)
                length = int.from_bytes(fh.read(4), "little")
                fh.seek(-8 - length, os.SEEK_END)
                total.update(fh.read(length))
        return total.hexdigest()

    def read() -> int:
        return sum(pq.read_table(f).num_rows for f in files)

    read()  # warm the page cache for all three
    full_s, _, _cpu = timed(full, repeat)
    footer_s, _, _cpu = timed(footers, repeat)
    read_s, rows, _cpu = timed(read, repeat)
    first = time.perf_counter()
    snap.fingerprint()
    fingerprint_first_s = time.perf_counter() - first
    again_s, _, _cpu = timed(snap.fingerprint, repeat)
    shutil.rmtree(folder)
    return {
        "people": people, "rows": rows, "files": len(files), "parquet_mb": round(size / 1e6, 1),
        "sha256_full_s": round(full_s, 4), "sha256_full_mb_per_s": round(size / 1e6 / full_s),
        "sha256_footer_s": round(footer_s, 5), "pyarrow_read_s": round(read_s, 4),
        "full_vs_read": round(full_s / read_s, 3),
        "fingerprint_first_s": round(fingerprint_first_s, 4), "fingerprint_again_s": round(again_s, 5),
    }


def progress(result: dict) -> dict:
    print(json.dumps(result), file=sys.stderr, flush=True)  # each size as it finishes: big trees take minutes
    return result


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu, "nproc": os.cpu_count(), "mem_gb": round(mem / 2**30, 1), "load_avg": os.getloadavg(),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100x100,1000x100", help="customersxsnapshots, comma-separated")
    parser.add_argument("--people", type=int, default=1_000_000, help="demo snapshot size for the fingerprint")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to build the trees (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_scan-", dir=args.dir))
    try:
        sizes = [tuple(int(x) for x in size.split("x")) for size in args.sizes.split(",")]
        out = {"machine": machine(),
               "scan": [progress(bench_size(root, c, s, args.repeat)) for c, s in sizes],
               "fingerprint": bench_fingerprint(root, args.people, args.repeat)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
