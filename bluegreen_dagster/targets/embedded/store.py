"""The embedded store's folders: where each database file lives, the load lock, and the alias symlinks.

Layout under `embedded.path`::

    databases/<key>.lbug          complete databases only (a load renames its file in here when done and closed)
    loading/<key>.lbug            a load in progress (removed on failure; a stale one is removed by the next load)
    loading/<key>.lbug.staging/   that load's staging Parquet files (removed with it)
    loading/<key>.lock            flock held while a process loads <key> (two loads of one key never interleave)
    aliases/<customer>.lbug       symlink -> ../databases/<key>.lbug, switched with os.replace (atomic)
    fences/<customer>.fence       the alias's fence: {"served": <key>, "moves": n}, rewritten before every swap
    fences/<customer>.fence.lock  flock held (briefly) while the fence is compared and the alias swapped

The load lock is the embedded target's only lock, and the only source of "loading": a database is loading exactly
while some process holds its lock. A `flock` is right here because the files it guards are local by nature; the
alias swap itself needs none (os.replace is atomic), but the fence does: the compare of `move_alias` and the swap
are one step under the fence lock, so a worker that read the alias before a pause cannot swap it after another
worker moved it (fence.py). The fence lock is only held for those few file operations, never across a pause a
caller decides, and waiting for it is bounded.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bluegreen_dagster.targets.base import (
    Fence,
    FenceMoved,
    PermanentTargetError,
    TransientTargetError,
    validate_alias,
    validate_database,
)

SUFFIX = ".lbug"
LOCK_SUFFIX = ".lock"
FENCE_SUFFIX = ".fence"
# How long a move or a fence read waits for another process's fence lock (held for a few file operations).
FENCE_LOCK_SECONDS = 30.0
DATABASES_DIR = "databases"
LOADING_DIR = "loading"
ALIASES_DIR = "aliases"
FENCES_DIR = "fences"  # beside aliases/, not in it: readers list aliases/ to find the aliases


class Store:
    """Paths and file operations under one `embedded.path`; names are validated before they become paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.databases_dir = self.root / DATABASES_DIR
        self.loading_dir = self.root / LOADING_DIR
        self.aliases_dir = self.root / ALIASES_DIR
        self.fences_dir = self.root / FENCES_DIR

    def database_path(self, database: str) -> Path:
        return self.databases_dir / f"{validate_database(database)}{SUFFIX}"

    def partial_path(self, database: str) -> Path:
        return self.loading_dir / f"{validate_database(database)}{SUFFIX}"

    def alias_path(self, customer: str) -> Path:
        return self.aliases_dir / f"{validate_alias(customer)}{SUFFIX}"

    def ensure_dirs(self) -> None:
        try:
            for folder in (self.databases_dir, self.loading_dir, self.aliases_dir, self.fences_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientTargetError(f"cannot create the embedded store under {self.root}: {exc}") from None

    # -- the load lock ------------------------------------------------------------------------------------------

    @contextmanager
    def load_lock(self, database: str) -> Iterator[None]:
        """Held while one process writes `database`; raises TransientTargetError when another process holds it."""
        path = self.loading_dir / f"{validate_database(database)}{LOCK_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TransientTargetError(f"{database} is being loaded by another process right now") from None
            # The holder before us unlinks the file when done: a lock on that unlinked file would guard nothing
            # while a third process locks a new file of the same name.
            if not _same_file(fd, path):
                raise TransientTargetError(f"{database} is being loaded by another process right now")
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def load_in_progress(self, database: str) -> bool:
        """Whether a live process holds `database`'s load lock."""
        try:
            fd = os.open(self.loading_dir / f"{database}{LOCK_SUFFIX}", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock if we got it
        return False

    # -- listing ------------------------------------------------------------------------------------------------

    def complete(self) -> list[str]:
        """Names of the complete databases."""
        return _names(self.databases_dir, SUFFIX)

    def unfinished(self) -> list[str]:
        """Names with a partial file or a lock file: loading now, or left by a crashed load."""
        return sorted(set(_names(self.loading_dir, SUFFIX)) | set(_names(self.loading_dir, LOCK_SUFFIX)))

    # -- aliases ------------------------------------------------------------------------------------------------

    def alias_target(self, customer: str) -> str | None:
        path = self.alias_path(customer)
        try:
            link = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentTargetError(
                f"alias {path} is not a symlink ({exc}); move it away so the pipeline can manage the alias"
            ) from None
        name = os.path.basename(link)
        return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name

    def swap_alias(self, customer: str, database: str) -> None:
        """Point the alias at a complete database with one atomic rename: a reader never finds it missing."""
        target = self.database_path(database)
        alias = self.alias_path(customer)
        tmp = self.aliases_dir / f".{customer}{SUFFIX}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.symlink(os.path.join("..", DATABASES_DIR, target.name), tmp)
            os.replace(tmp, alias)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        fsync_dir(self.aliases_dir)

    def fence_path(self, customer: str) -> Path:
        return self.fences_dir / f"{validate_alias(customer)}{FENCE_SUFFIX}"

    @contextmanager
    def fence_lock(self, customer: str, *, exclusive: bool) -> Iterator[None]:
        """Held while the fence is read (shared) or compared and the alias swapped (exclusive)."""
        path = self.fences_dir / f"{validate_alias(customer)}{FENCE_SUFFIX}{LOCK_SUFFIX}"
        self.ensure_dirs()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + FENCE_LOCK_SECONDS
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TransientTargetError(
                            f"alias {customer}: another process held {path.name} for {FENCE_LOCK_SECONDS:g}s") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # releases the lock

    def fence(self, customer: str) -> Fence:
        """The alias target (the symlink is the truth) and the moves counted in the fence file."""
        with self.fence_lock(customer, exclusive=False):
            return Fence(self.alias_target(customer), self._moves(customer))

    def _moves(self, customer: str) -> int:
        try:
            return int(json.loads(self.fence_path(customer).read_text())["moves"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise PermanentTargetError(f"the fence of alias {customer} ({self.fence_path(customer)}) is unreadable "
                                       f"({exc}); move it away: the next move starts it again") from None

    def move_alias(self, customer: str, database: str, expect: Fence | None) -> None:
        """Swap the alias to `database` (a complete database), raising the fence's moves; with `expect`, only if the
        fence still equals it (else FenceMoved), compared and swapped under the fence lock. The fence file is
        written first: a crash between the two leaves a fence nobody read before, which refuses stale moves."""
        validate_database(database)
        with self.fence_lock(customer, exclusive=True):
            now = Fence(self.alias_target(customer), self._moves(customer))
            if expect is not None and now != expect:
                raise FenceMoved(f"alias {customer} moved since it was read (it was {expect.database or '(none)'}, "
                                 f"move {expect.moves}; it is {now.database or '(none)'}, move {now.moves}); "
                                 f"not moved to {database}")
            if not self.database_path(database).is_file():  # checked here: a drop holds this lock too
                raise PermanentTargetError(f"cannot point alias {customer} at {database}: "
                                           f"{self.database_path(database)} does not exist (load it first)")
            fence = self.fence_path(customer)
            tmp = fence.with_name(f".{fence.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps({"served": database, "moves": now.moves + 1}))
            os.replace(tmp, fence)
            self.swap_alias(customer, database)

    def aliases_of(self, database: str) -> list[str]:
        """Customers whose alias points at `database`."""
        if not self.aliases_dir.is_dir():
            return []
        name = self.database_path(database).name
        return [p.name[: -len(SUFFIX)] for p in sorted(self.aliases_dir.glob(f"*{SUFFIX}"))
                if p.is_symlink() and os.path.basename(os.readlink(p)) == name]


def remove_with_siblings(path: Path) -> None:
    """Remove a database file and its `<file>.*` siblings (write-ahead log, shadow files, staging folder)."""
    for p in [path, *path.parent.glob(f"{glob.escape(path.name)}.*")] if path.parent.is_dir() else [path]:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            pass


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems refuse fsync on a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _names(folder: Path, suffix: str) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir()
                  if p.name.endswith(suffix) and not p.name.startswith(".") and p.is_file())


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
