"""Cross-process locks on this machine, shared by every run however it was launched (sensor, UI, CLI).

Dagster's run queue does not see `dagster asset materialize` runs, so the two limits that must always hold are
enforced here with `flock` on files under `orchestrator.state_path`: at most `max_concurrent_loads` loads at once,
and one alias switch or cleanup per customer at a time. The kernel releases a flock when its process dies, so a
crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def customer_lock(state_path: Path, customer: str) -> Iterator[None]:
    """Serialise alias switches and cleanups of one customer."""
    folder = Path(state_path) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"customer-{customer}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def load_slot(state_path: Path, slots: int, holder: str, on_wait: Callable[[str], None] | None = None,
              poll_seconds: float = 0.5) -> Iterator[int]:
    """Hold one of `slots` load slots; waits (telling `on_wait` once) while all are taken."""
    folder = Path(state_path) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        for i in range(slots):
            path = folder / f"load-slot-{i}.lock"
            fd = _try_lock(path)
            if fd is not None:
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, holder.encode())
                    yield i
                finally:
                    os.close(fd)
                return
        if on_wait and not told:
            on_wait(f"all {slots} load slot(s) are busy (orchestrator.max_concurrent_loads={slots}); waiting")
            told = True
        time.sleep(poll_seconds)


def loads_in_progress(state_path: Path) -> set[str]:
    """Names of databases whose load holds a slot right now (read from the slot files of live holders)."""
    folder = Path(state_path) / "locks"
    busy: set[str] = set()
    for path in folder.glob("load-slot-*.lock") if folder.is_dir() else []:
        fd = _try_lock(path)
        if fd is None:  # held by a live process: its content names the database
            holder = path.read_text().strip()
            if holder:
                busy.add(holder)
        else:
            os.close(fd)
    return busy
