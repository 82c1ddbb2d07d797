"""One snapshot folder on disk: what one look at it finds (complete, waiting or invalid, and why), its Parquet files,
and the rule that keeps every look inside `dataset.base_path`.

Paths: nothing outside base_path (after resolving links) is read or named. A symbolic link anywhere in a snapshot's
tree (customer folder, snapshot folder, nodes/, relationships/, a Parquet file) is followed only when it resolves
inside base_path; one that leads out makes that folder invalid, reported under the link's own name, without
listing, reading or naming what it points to. Links that stay inside are allowed: they expose nothing the pipeline
could not read anyway, and let operators rename or share folders without copying data.

A snapshot's files are the `*.parquet` files directly in nodes/ and relationships/ whose names do not start with
'.' or '_' (temporaries and markers: the rule pyarrow.dataset and Spark use). It is finished when `_SUCCESS`
exists, or without one when its files have not changed for `settle_seconds`. Finished with no Parquet files in
nodes/ or relationships/ is invalid: the producer wrote an empty snapshot, and waiting will not fix it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bluegreen_dagster.names import printable

NODES_DIR = "nodes"
RELATIONSHIPS_DIR = "relationships"
SUCCESS_MARKER = "_SUCCESS"
PARQUET_SUFFIX = ".parquet"

COMPLETE, WAITING, INVALID = "complete", "waiting", "invalid"


def real_path(path: str | os.PathLike) -> str:
    return os.path.realpath(path)


def inside(path: str, base_real: str) -> bool:
    return os.path.commonpath([real_path(path), base_real]) == base_real


def leads_out(path: str) -> str:
    return (f"{printable(path)} is a symbolic link that leads outside dataset.base_path, so it is skipped (nothing "
            "outside base_path is read). Move the data under base_path, or replace the link with the folder or file "
            "itself")


class FolderInvalid(Exception):
    """A snapshot that can never be loaded as it is; the message says why and what to do."""


def data_files(folder: str, base_real: str) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """(the Parquet files to load, every file) directly in nodes/ or relationships/, checked to stay inside."""
    parquet, every = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            wanted = name.endswith(PARQUET_SUFFIX) and name[0] not in "._"
            if entry.is_symlink():  # never followed before it is known to stay inside
                if wanted and not inside(entry.path, base_real):
                    raise FolderInvalid(leads_out(entry.path))
            elif entry.is_dir():
                continue
            every.append(entry)
            if not wanted:
                continue
            if not name.isprintable():
                raise FolderInvalid(f"{printable(entry.path)}: the file name contains control or invisible "
                                    "characters (shown escaped); rename the file using letters, digits, '-', '_' "
                                    "and '.'")
            parquet.append(entry)
    parquet.sort(key=lambda e: e.name)
    return parquet, every


@dataclass(frozen=True)
class Look:
    """What one look at a snapshot folder found."""

    state: str
    reason: str | None = None  # what it waits for, or why it is invalid; None when complete


def look_at(folder: str, base_real: str, settle_seconds: float, now: float | None) -> Look:
    """Complete, waiting or invalid, and why: the one definition of a finished snapshot. Assumes `folder` itself
    was checked to stay inside base_path."""
    try:
        with os.scandir(folder) as it:
            top = {entry.name: entry for entry in it}
        data: dict[str, tuple[list[os.DirEntry], list[os.DirEntry]]] = {}
        for sub in (NODES_DIR, RELATIONSHIPS_DIR):
            entry = top.get(sub)
            if entry is None:
                continue
            if entry.is_symlink() and not inside(entry.path, base_real):
                raise FolderInvalid(leads_out(entry.path))
            if entry.is_dir():
                data[sub] = data_files(entry.path, base_real)
    except FolderInvalid as exc:
        return Look(INVALID, str(exc))
    except FileNotFoundError:
        return Look(WAITING, f"{printable(folder)} disappeared while it was being read")
    except OSError as exc:
        return Look(INVALID, f"{printable(folder)} cannot be read ({exc.strerror}); fix its permissions")

    finished = SUCCESS_MARKER in top
    for sub in (NODES_DIR, RELATIONSHIPS_DIR):
        if not data.get(sub, ((), ()))[0]:
            where = printable(os.path.join(folder, sub))
            if finished:
                return Look(INVALID, f"{where} has no Parquet files, yet {SUCCESS_MARKER} says the snapshot is "
                                     f"finished: the producer wrote an empty snapshot. Write the Parquet files into "
                                     f"{sub}/, or delete the folder {printable(folder)}")
            return Look(WAITING, f"no Parquet files in {where}")
    if finished:
        return Look(COMPLETE)
    try:
        files = [e for e in top.values() if not e.is_dir(follow_symlinks=False)]
        files += data[NODES_DIR][1] + data[RELATIONSHIPS_DIR][1]
        newest = max(e.stat(follow_symlinks=False).st_mtime for e in files)
    except FileNotFoundError:
        return Look(WAITING, f"files in {printable(folder)} are still changing")
    quiet_for = (time.time() if now is None else now) - newest
    if quiet_for < settle_seconds:
        return Look(WAITING, f"no {SUCCESS_MARKER} marker and files changed {quiet_for:.0f}s ago "
                             f"(settle_seconds={settle_seconds:g})")
    return Look(COMPLETE)
