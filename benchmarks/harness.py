"""What the benchmarks share: one measurement per spawned process (so each peak RSS is its own), that process's
peak RSS, the demo snapshot writer and the raw Parquet read every loader is compared with."""

from __future__ import annotations

import multiprocessing as mp
import queue as queues
import resource
import time
from pathlib import Path

import pyarrow.parquet as pq

from bluegreen_dagster.demo_data import write_snapshot

MB = 1024 * 1024


def rss_mb() -> float:
    """Peak resident memory of this process so far: VmHWM, as ru_maxrss survives fork+exec and a spawned child
    would report its parent's peak when that is higher than its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_child(func, *args):
    """Run `func(*args, queue)` in a spawned process and return what it put on the queue; fail if it died."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=func, args=(*args, queue))
    proc.start()
    try:
        while True:
            try:
                return queue.get(timeout=1)
            except queues.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"{func.__name__} exited with code {proc.exitcode}") from None
    finally:
        proc.join(timeout=30)


def write_demo_child(data: str, customer: str, ts: int, people: int, queue) -> None:
    """Write the demo snapshot; puts the seconds it took."""
    started = time.perf_counter()
    write_snapshot(Path(data), customer, ts, people=people)
    queue.put(time.perf_counter() - started)


def raw_read(files: list[Path]) -> tuple[int, int, float]:
    """(rows, decoded Arrow bytes, seconds) for reading every file fully with pyarrow."""
    start = time.perf_counter()
    rows = nbytes = 0
    for path in files:
        table = pq.read_table(path)
        rows += table.num_rows
        nbytes += table.nbytes
    return rows, nbytes, time.perf_counter() - start
