"""The one home of snapshots: finding them under `dataset.base_path` (`scan`), one snapshot (`Snapshot`: its state,
its files, its fingerprint) and the counts its files promise. Names live in `names.py`, one folder's look and the
stay-inside-base_path rule in `folders.py`, reading Parquet in `reading.py`: import those names from there.

`scan` is the sensor's hot path: one `os.scandir` per customer folder and, per examined snapshot, one per folder
(snapshot, nodes/, relationships/), using the entries' cached types. With `newer_than` it skips, by name alone,
every snapshot at or below a customer's timestamp, so a tick costs per customer, not per old snapshot. The other
per-tick cost is `folder_stamp` (four lstat calls) per launched snapshot, to notice one dropped again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bluegreen_dagster.folders import (
    COMPLETE,
    INVALID,
    NODES_DIR,
    RELATIONSHIPS_DIR,
    SUCCESS_MARKER,
    WAITING,
    FolderInvalid,
    Look,
    data_files,
    inside,
    leads_out,
    look_at,
    real_path,
)
from bluegreen_dagster.names import (
    InvalidName,
    SnapshotError,
    SnapshotId,
    parse_partition_key,
    partition_key,
    printable,
    snapshot_id,
    timestamp_of,
    validate_customer,
)
from bluegreen_dagster.reading import (
    GraphCounts,
    count_files,
)

# --------------------------------------------------------------------------------------------------------------
# One snapshot


@dataclass(frozen=True)
class Snapshot:
    id: SnapshotId
    path: Path  # <dataset.base_path>/<customer>/<timestamp>

    @property
    def key(self) -> str:
        return self.id.key

    @property
    def _base_real(self) -> str:
        return real_path(Path(self.path).parent.parent)  # dataset.base_path

    def _checked_look(self, settle_seconds: float, now: float | None) -> Look:
        base_real = self._base_real
        if not inside(str(self.path), base_real):
            return Look(INVALID, leads_out(str(self.path)))
        if not os.path.isdir(self.path):
            return Look(WAITING, f"{printable(self.path)} does not exist")
        return look_at(str(self.path), base_real, settle_seconds, now)

    def state(self, settle_seconds: float, now: float | None = None) -> tuple[str, str | None]:
        """(COMPLETE, None), (WAITING, what it waits for) or (INVALID, why it can never load and what to do)."""
        seen = self._checked_look(settle_seconds, now)
        return seen.state, seen.reason

    def incomplete_reason(self, settle_seconds: float, now: float | None = None) -> str | None:
        """None when the snapshot may be loaded; otherwise what it is waiting for or why it is invalid."""
        return self.state(settle_seconds, now)[1]

    def files(self) -> tuple[list[Path], list[Path]]:
        """(node files, relationship files), sorted by name; SnapshotError when one may not be read (a link out of
        base_path, a name with control characters). Lists what is there, complete or not."""
        base_real = self._base_real
        if not inside(str(self.path), base_real):
            raise SnapshotError(leads_out(str(self.path)))
        out = []
        for sub in (NODES_DIR, RELATIONSHIPS_DIR):
            folder = os.path.join(self.path, sub)
            if not inside(folder, base_real):
                raise SnapshotError(leads_out(folder))
            try:
                out.append([Path(e.path) for e in data_files(folder, base_real)[0]])
            except (FileNotFoundError, NotADirectoryError):
                out.append([])
            except FolderInvalid as exc:
                raise SnapshotError(str(exc)) from None
        return out[0], out[1]

    @property
    def node_files(self) -> list[Path]:
        return self.files()[0]

    @property
    def relationship_files(self) -> list[Path]:
        return self.files()[1]

    @property
    def size_bytes(self) -> int:
        nodes, relationships = self.files()
        return sum(f.stat().st_size for f in nodes + relationships)

    def file_state(self) -> dict[str, tuple[int, ...]]:
        """Each data file (path relative to the snapshot) -> its identity (device, inode, size, mtime, ctime): taken
        before a load, compared after it by `changes_since`."""
        nodes, relationships = self.files()
        state = {}
        for path in nodes + relationships:
            try:
                state[path.relative_to(self.path).as_posix()] = _identity(path.stat())
            except FileNotFoundError:
                continue  # gone already: changes_since reports it as removed
        return state

    def changes_since(self, before: Mapping[str, tuple[int, ...]]) -> str | None:
        """What was added, removed or rewritten among the data files since `file_state()` returned `before`, or
        None: a load that planned its files from `before` loaded exactly the snapshot only when this is None."""
        after = self.file_state()
        changes = []
        for what, names in (("added", sorted(set(after) - set(before))),
                            ("removed", sorted(set(before) - set(after))),
                            ("rewrote", sorted(n for n in before if n in after and after[n] != before[n]))):
            if names:
                changes.append(f"{what} {', '.join(printable(self.path / n) for n in names)}")
        return "; ".join(changes) or None

    def require_unchanged_since(self, before: Mapping[str, tuple[int, ...]]) -> None:
        """A load reads the files it planned (`before`); if the producer added, removed or rewrote one meanwhile,
        the database would mix two versions of the snapshot, so the load is refused (every target calls this
        before its database goes online)."""
        changes = self.changes_since(before)
        if changes:
            raise SnapshotError(
                f"{printable(self.path)} changed while it was being loaded ({changes}), so nothing was loaded: the "
                f"database would have mixed two versions of the snapshot. A producer must not change a snapshot "
                f"after writing {SUCCESS_MARKER}")

    def stamp(self) -> str | None:
        """`folder_stamp` of this snapshot's folder: a cheap identity that changes when it is dropped again."""
        return folder_stamp(os.fspath(self.path))

    def fingerprint(self) -> str:
        """'sha256:<hex>' over each file's path relative to the snapshot, its size and the SHA-256 of its whole
        content: changes when any file is added, removed, renamed or rewritten (even with the same size).
        A full hash, not the Parquet footer: two files with the same rows in another order can have identical
        footers and sizes. It costs 0.2-0.3 x one pyarrow read of the files (benchmarks/bench_scan.py: 0.19 s for
        83 MB on 2 vCPUs); each file is hashed once per process while it stays the same file (device, inode, size,
        mtime, ctime)."""
        nodes, relationships = self.files()
        total = hashlib.sha256()
        for path in nodes + relationships:
            relative = path.relative_to(self.path).as_posix()
            size, digest = _file_digest(str(path))
            total.update(f"{relative}\0{size}\0{digest}\n".encode())
        return "sha256:" + total.hexdigest()


def folder_stamp(path: str) -> str | None:
    """A cheap identity of a snapshot folder (inode and change time of the folder, nodes/, relationships/ and the
    `_SUCCESS` marker; four lstat calls, no file read), None when the folder is gone. It changes when the folder is
    deleted and dropped again (even on a reused inode: the change time is new), an entry is added, removed or
    renamed in one of them, or `_SUCCESS` is written again (a producer that rewrites files in place and marks the
    snapshot finished anew); not when a file alone is rewritten in place (only `Snapshot.fingerprint()` sees that).
    The sensor compares it per tick to notice a re-dropped snapshot without hashing files; plain strings, no
    pathlib, as it runs per launched snapshot per tick. Links are not followed (a link is stamped itself): nothing
    outside base_path is looked at."""
    parts = []
    for folder in (path, *(path + os.sep + entry for entry in (NODES_DIR, RELATIONSHIPS_DIR, SUCCESS_MARKER))):
        try:
            st = os.lstat(folder)
        except OSError:
            if folder is path:
                return None
            parts.append("-")
            continue
        parts.append(f"{st.st_ino:x}.{st.st_ctime_ns:x}")
        if folder is path and stat.S_ISLNK(st.st_mode):
            break  # a linked snapshot folder: its contents are not looked at through the link
    return hashlib.blake2b("/".join(parts).encode(), digest_size=5).hexdigest()


@functools.lru_cache(maxsize=4096)
def _cached_digest(path: str, identity: tuple[int, ...]) -> str:
    with open(path, "rb") as fh:
        if _identity(os.fstat(fh.fileno())) != identity:
            raise SnapshotError(f"{printable(path)} changed while it was being fingerprinted; wait until the "
                                "producer has finished and run again")
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _file_digest(path: str) -> tuple[int, str]:
    try:
        st = os.stat(path)
        digest = _cached_digest(path, _identity(st))
        if _identity(os.stat(path)) != _identity(st):
            raise SnapshotError(f"{printable(path)} changed while it was being fingerprinted; wait until the "
                                "producer has finished and run again")
    except FileNotFoundError:
        raise SnapshotError(f"{printable(path)} disappeared while the snapshot was being fingerprinted; restore "
                            "it or drop the snapshot again") from None
    return st.st_size, digest


def _checked(snapshot: Snapshot) -> Snapshot:
    """The snapshot, when its folder does not lead outside base_path (SnapshotError otherwise)."""
    if os.path.lexists(snapshot.path) and not inside(str(snapshot.path), snapshot._base_real):
        raise SnapshotError(leads_out(str(snapshot.path)))
    return snapshot


def how_to_retry(key: str) -> str:
    """What a user does after a snapshot's files were refused (appended to every such error): the run moved no
    alias and changed no file, and the sensor launches a snapshot once, so the fixed snapshot is run by hand."""
    sid = parse_partition_key(key)
    return (f"The alias was not moved and no snapshot file was changed. Fix the snapshot's files (or drop a "
            f"corrected snapshot with a newer timestamp), then run the partition again: "
            f"bluegreen load {sid.customer} {sid.timestamp}")


def snapshot_at(base_path: Path, customer: str, timestamp: str | int) -> Snapshot:
    sid = snapshot_id(customer, timestamp)
    return _checked(Snapshot(sid, Path(base_path) / sid.customer / sid.timestamp))


def snapshot_for_key(base_path: Path, key: str) -> Snapshot:
    sid = parse_partition_key(key)
    return _checked(Snapshot(sid, Path(base_path) / sid.customer / sid.timestamp))


@functools.lru_cache(maxsize=64)
def _expected_counts(snapshot: Snapshot, _state: tuple) -> GraphCounts:
    return count_files(snapshot.node_files, snapshot.relationship_files)


def expected_counts(snapshot: Snapshot) -> GraphCounts:
    """Counts the snapshot's files promise, read from the label and type columns only (cached per file state)."""
    state = tuple((str(p), *_identity(p.stat())) for p in snapshot.node_files + snapshot.relationship_files)
    return _expected_counts(snapshot, state)


# --------------------------------------------------------------------------------------------------------------
# Discovery


@dataclass
class ScanResult:
    complete: list[Snapshot] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # printable path -> why not yet
    invalid: dict[str, str] = field(default_factory=dict)  # printable path -> why it can never be loaded


def _customer_folders(base: str, base_real: str, result: ScanResult | None) -> list[os.DirEntry]:
    """The folders under base that name a customer and stay inside it; the others go to result.invalid."""
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    folders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue  # a producer's temporary folder, or ours
        if entry.is_symlink() and not inside(entry.path, base_real):
            if result is not None:
                result.invalid[printable(entry.path)] = leads_out(entry.path)
            continue
        if not entry.is_dir():
            continue
        try:
            validate_customer(entry.name)
        except InvalidName as exc:
            if result is not None:
                result.invalid[printable(entry.path)] = str(exc)
            continue
        folders.append(entry)
    return folders


def customers(base_path: Path) -> list[str]:
    """The customers with a valid folder under base_path that stays inside it, sorted."""
    base = os.fspath(base_path)
    return [e.name for e in _customer_folders(base, real_path(base), None)] if os.path.isdir(base) else []


def scan(base_path: Path, settle_seconds: float, now: float | None = None, *,
         newer_than: Mapping[str, int] | None = None) -> ScanResult:
    """Every snapshot folder under base_path, split into complete (oldest first) / waiting / invalid.

    newer_than: per customer a timestamp; that customer's folders named a timestamp at or below it are not
    examined at all (no stat, no listing) and appear in no list. Folders whose names are invalid are still
    reported: that needs only the name.
    """
    result = ScanResult()
    base = os.fspath(base_path)
    if not os.path.isdir(base):
        return result
    base_real = real_path(base)
    for customer_entry in _customer_folders(base, base_real, result):
        customer = customer_entry.name
        floor = newer_than.get(customer) if newer_than else None
        try:
            with os.scandir(customer_entry.path) as it:
                entries = list(it)
        except OSError as exc:
            result.invalid[printable(customer_entry.path)] = (f"{printable(customer_entry.path)} cannot be listed "
                                                              f"({exc.strerror}); fix its permissions")
            continue
        examined = []
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            ts = timestamp_of(name)
            if ts is None or floor is None or ts > floor:
                examined.append((name, ts, entry))
        examined.sort()  # by name: names in one folder are unique
        for name, ts, entry in examined:
            if entry.is_symlink() and not inside(entry.path, base_real):
                result.invalid[printable(entry.path)] = leads_out(entry.path)
                continue
            if not entry.is_dir():
                continue
            try:
                partition_key(customer, name)
            except InvalidName as exc:
                result.invalid[printable(entry.path)] = str(exc)
                continue
            seen = look_at(entry.path, base_real, settle_seconds, now)
            if seen.state == COMPLETE:
                result.complete.append(Snapshot(SnapshotId(customer, ts, name), Path(entry.path)))
            elif seen.state == WAITING:
                result.waiting[printable(entry.path)] = seen.reason
            else:
                result.invalid[printable(entry.path)] = seen.reason
    result.complete.sort(key=lambda s: (s.id.ts, s.id.customer))
    return result


def write_atomically(target_dir: Path, write) -> Path:
    """Run `write(tmp_dir)` in a hidden sibling folder, then rename it into place (what producers should do)."""
    target_dir = Path(target_dir)
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = target_dir.parent / f".{target_dir.name}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, target_dir)
    return target_dir
