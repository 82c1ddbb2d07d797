"""An append-only log of every alias move the stand-in makes, for the stack's nemesis test (tests/stack/): one
JSON line per change of `Dbms.aliases`, with the database's node and relationship counts and status at that
moment, so a checker can tell which snapshot an alias served, from when, and whether it was complete.

It watches the alias table rather than wrapping the ALIAS statements, so it sees every way an alias can move."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from .dbms import Dbms


def record_alias_moves(dbms: Dbms, path: Path, stop: threading.Event, interval: float = 0.005) -> threading.Thread:
    """Start a thread appending a line to `path` whenever an alias appears, moves or disappears, until `stop`."""

    def watch() -> None:
        seen: dict[str, str] = {}
        with open(path, "a", buffering=1) as log:
            while not stop.is_set():
                with dbms.lock:
                    now = dict(dbms.aliases)
                    moves = []
                    for alias in sorted(set(seen) | set(now)):
                        if seen.get(alias) != now.get(alias):
                            database = dbms.databases.get(now[alias]) if alias in now else None
                            moves.append({"time": time.time(), "alias": alias, "database": now.get(alias),
                                          "previous": seen.get(alias),
                                          "nodes": len(database.graph.nodes) if database else None,
                                          "relationships": len(database.graph.relationships) if database else None,
                                          "status": database.status if database else None})
                for move in moves:
                    log.write(json.dumps(move) + "\n")
                seen = now
                stop.wait(interval)

    thread = threading.Thread(target=watch, name="alias-log", daemon=True)
    thread.start()
    return thread
