"""The stand-in's data directory: what a real Neo4j keeps across a restart, so a test can kill the process mid-load
and start it again (`python -m tests.standin --data-dir DIR`, or `STANDIN_DATA_DIR`).

What survives, as on Neo4j (docs/testing.md, "The stand-in across a restart"):
- every committed change: databases with their nodes, relationships, indexes and access mode, aliases with their
  PROPERTIES, users, roles and privileges, and store files an Arrow import left unmounted (`Dbms.stores`). Neo4j's
  transaction log makes a committed transaction durable ("the DBMS can always recover the results of a committed
  transaction"); here the whole catalog is written after each Bolt RUN / COMMIT and each Arrow action that changed
  it, before the client hears success;
- not an open explicit transaction: its writes are held by the connection until COMMIT, so a crash rolls it back;
- not an Arrow import still open (`Dbms.imports`, `v1/CREATE_DATABASE` streamed but no `v1/RELATIONSHIP_LOAD_DONE`):
  GDS holds it in memory and writes the store only when it finishes, so the database never appears; nor a store
  GDS was still writing and registering when the process died (`Dbms.mounting`);
- not the test knobs (`faults`, servers, event log) nor the admin user's password, which the command line gives.

One file, `dbms.pickle`, replaced atomically (temp file, fsync, `os.replace`, fsync of the directory): a kill at any
moment leaves the previous or the new state, never half of one. It is written only when its bytes changed, so reads
cost one pickling; without `--data-dir` nothing of this runs.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dbms import Dbms

FILE = "dbms.pickle"
FORMAT = 1
# The Dbms attributes a restart keeps; everything else starts afresh.
DURABLE = ("databases", "aliases", "alias_properties", "stores", "users", "roles", "privileges")


class DataDir:
    """Where a Dbms keeps its durable state. `load` at start, `save` at every commit point (under `dbms.lock`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.file = self.path / FILE
        self._last: bytes | None = None

    def load(self, dbms: Dbms) -> bool:
        """Put the saved state into `dbms`; False when there is none yet (a first start). A file this code cannot
        read stops the start, as a real server refuses a store it cannot recover."""
        if not self.file.exists():
            return False
        data = self.file.read_bytes()
        state: dict[str, Any] = pickle.loads(data)  # noqa: S301 - our own file, written by save()
        if state.get("format") != FORMAT:
            raise RuntimeError(f"{self.file}: format {state.get('format')!r}, this stand-in reads {FORMAT}")
        with dbms.lock:
            for name in DURABLE:
                setattr(dbms, name, state[name])
            if dbms.user in dbms.users:  # the command line's password wins for the admin user
                dbms.users[dbms.user].password = dbms.password
        self._last = self._encode(dbms)
        return True

    def save(self, dbms: Dbms) -> None:
        with dbms.lock:
            data = self._encode(dbms)
            if data == self._last:
                return
            fd, temp = tempfile.mkstemp(prefix=".dbms-", dir=self.path)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self.file)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a power cut
            finally:
                os.close(directory)
            self._last = data

    @staticmethod
    def _encode(dbms: Dbms) -> bytes:
        state = {name: getattr(dbms, name) for name in DURABLE}
        return pickle.dumps({"format": FORMAT, **state}, protocol=pickle.HIGHEST_PROTOCOL)
