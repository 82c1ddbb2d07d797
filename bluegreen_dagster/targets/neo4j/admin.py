"""Neo4j administration over Bolt: databases, aliases, servers, privileges, health, each statement a method of
`Admin`.

Names are validated before any query and always sent as `$parameters` (statements live in `queries.py`). How a
statement is sent, retried and its errors mapped is `BoltClient`'s (bolt.py), which `Admin` extends.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bluegreen_dagster.config_neo4j import TopologySettings
from bluegreen_dagster.targets.base import (
    PermanentTargetError,
    TransientTargetError,
    validate_alias,
    validate_database,
)
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.bolt import ENTERPRISE_ONLY, BoltClient, gave_up, unfinished
from bluegreen_dagster.targets.neo4j.cluster import merge_rows, merged_status

log = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.5  # between two looks at SHOW DATABASE after a CREATE/DROP whose WAIT gave up


class Admin(BoltClient):
    """The administration statements (and `for_server`, an Admin on one cluster member) over one driver."""

    def for_server(self, address: str) -> Admin:
        """An Admin on one cluster member, direct (bolt://) to `address` (host:port, as SHOW SERVERS gives it), with
        the same user and TLS: what is measured per server (heap, page cache) is that server's own."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise PermanentTargetError(f"SHOW SERVERS gave {address!r}, not a host:port Bolt address")
        member = self.settings.model_copy(update={"uri": "", "host": host.strip("[]"), "bolt_port": int(port)})
        return Admin(member, attempts=1, backoff=self.backoff)

    def components(self) -> dict[str, Any]:
        rows = self.run(queries.COMPONENTS, what="connecting to Neo4j")
        kernel = next((r for r in rows if r.get("name") == "Neo4j Kernel"), rows[0] if rows else {})
        return {"version": (kernel.get("versions") or ["?"])[0], "edition": kernel.get("edition", "?")}

    def database_status(self, name: str) -> tuple[str, str] | None:
        """(currentStatus, statusMessage) or None when no database has that name."""
        validate_database(name)
        rows = self.run(queries.DATABASE_STATUS, {"name": name}, what=f"reading the status of database {name}")
        if not rows:
            return None
        status = merged_status(r["currentStatus"] for r in rows) or "unknown"
        return status, "; ".join(sorted({r.get("statusMessage") or "" for r in rows} - {""}))

    def list_databases(self, customer: str) -> list[tuple[str, str]]:
        validate_alias(customer)
        rows = self.run(queries.LIST_DATABASES, {"prefix": f"{customer}-"}, what=f"listing databases of {customer}")
        return merge_rows((r["name"], r["currentStatus"]) for r in rows)

    def server_count(self) -> int:
        """Members of the DBMS (SHOW SERVERS); 1 where the server does not list them (Community)."""
        try:
            rows = self.run(queries.SERVER_COUNT, what="listing servers")
        except PermanentTargetError as exc:
            if ENTERPRISE_ONLY not in str(exc):
                raise
            return 1
        return int(rows[0]["servers"]) if rows else 1

    def count_databases(self) -> int:
        rows = self.run(queries.COUNT_DATABASES, what="counting databases")
        return int(rows[0]["databases"]) if rows else 0

    def alias_target(self, customer: str) -> str | None:
        validate_alias(customer)
        rows = self.run(queries.ALIAS_TARGET, {"alias": customer}, what=f"reading alias {customer}")
        return rows[0]["database"] if rows else None

    def alias_fence(self, customer: str) -> tuple[str | None, int]:
        """(the alias target, the `moves` its properties carry: 0 when none, e.g. an alias made by hand)."""
        validate_alias(customer)
        rows = self.run(queries.ALIAS_FENCE, {"alias": customer}, what=f"reading alias {customer}")
        if not rows:
            return None, 0
        moves = (rows[0].get("properties") or {}).get("moves")
        return rows[0]["database"], int(moves) if isinstance(moves, int) else 0

    def create_alias(self, customer: str, database: str, moves: int = 1) -> None:
        validate_alias(customer), validate_database(database)
        self.run(queries.CREATE_ALIAS, {"alias": customer, "database": database, "moves": int(moves)},
                 what=f"creating alias {customer} for {database}")

    def alter_alias(self, customer: str, database: str, moves: int) -> None:
        validate_alias(customer), validate_database(database)
        self.run(queries.ALTER_ALIAS, {"alias": customer, "database": database, "moves": int(moves)},
                 what=f"moving alias {customer} to {database}")

    def create_database(self, name: str, topology: TopologySettings | None = None, *, mount: bool = False) -> None:
        """CREATE DATABASE $name WAIT, with `TOPOLOGY $primaries PRIMARIES $secondaries SECONDARIES` when given (the
        counts are parameters too, checked to be plain ints); `mount`: IF NOT EXISTS, for the store an Arrow import
        left (arrow_mount.py). A WAIT that gave up (success=false) is not taken as done: polled until online."""
        validate_database(name)
        what = f"creating database {name}"
        params: dict[str, Any] = {"name": name}
        if topology is None:
            query = queries.MOUNT_DATABASE if mount else queries.CREATE_DATABASE
        else:
            counts = {"primaries": topology.primaries, "secondaries": topology.secondaries}
            if not all(type(n) is int and n >= 0 for n in counts.values()):
                raise PermanentTargetError(f"neo4j.topology must be whole numbers, got {counts}")
            query = queries.MOUNT_DATABASE_TOPOLOGY if mount else queries.CREATE_DATABASE_TOPOLOGY
            params.update(counts)
            what += f" on {counts['primaries']} primaries and {counts['secondaries']} secondaries"
        rows = self.run(query, params, what=what)
        if gave_up(rows):
            self._await_status(name, "online", what, rows)

    def allocation(self, name: str) -> list[dict[str, Any]]:
        """One row per server hosting `name` (SHOW DATABASES): status, role and the current and requested counts."""
        validate_database(name)
        return self.run(queries.DATABASE_ALLOCATION, {"name": name}, what=f"reading where database {name} runs")

    def servers(self) -> list[dict[str, Any]]:
        """SHOW SERVERS: name, address, state, health of every member; [] where the server does not list them."""
        try:
            return self.run(queries.SERVERS, what="listing servers")
        except PermanentTargetError as exc:
            if ENTERPRISE_ONLY not in str(exc):
                raise
            return []

    def drop_database(self, name: str) -> None:
        """DROP ... WAIT, then polled until SHOW DATABASES no longer lists it: a WAIT that gave up (success=false)
        leaves the database "stopping" with its name taken, and a CREATE of that name would meet "already
        exists"; Cypher 25 answers WAIT with notifications instead of rows, so the list is the one word."""
        validate_database(name)
        what = f"dropping database {name}"
        rows = self.run(queries.DROP_DATABASE, {"name": name}, what=what)
        self._await_status(name, None, what, rows)

    def _await_status(self, name: str, want: str | None, what: str, rows: list[dict[str, Any]]) -> None:
        """Poll SHOW DATABASE until `name` is in status `want` (None: no longer listed), at most
        neo4j.online_timeout seconds; then a TransientTargetError (the next attempt finds the state it left)."""
        deadline = time.monotonic() + self.settings.online_timeout
        while True:
            status = self.database_status(name)
            if (status[0] if status else None) == want:
                return
            if time.monotonic() >= deadline:
                seen = f"{status[0]}" + (f" ({status[1]})" if status[1] else "") if status else "not listed"
                waited = f"; WAIT gave up ({unfinished(rows)})" if gave_up(rows) else ""
                raise TransientTargetError(f"{what}: database {name} is {seen} after "
                                           f"{self.settings.online_timeout:g}s{waited}; it may still finish, the "
                                           "next attempt checks")
            log.info("%s: database %s is %s, waiting for %s", what, name, status[0] if status else "not listed",
                     want or "it to be gone")
            time.sleep(WAIT_POLL_SECONDS)

    def grant(self, statement: str, database: str, role: str) -> None:
        """queries.GRANT_ACCESS or GRANT_MATCH for `role` on `database` (a database, never an alias)."""
        validate_database(database)
        self.run(statement, {"database": database, "role": role},
                 what=f"granting {statement.split()[1]} on {database} to role {role!r}")

    def privilege_commands(self) -> list[str]:
        rows = self.run(queries.PRIVILEGE_COMMANDS, what="listing privileges (SHOW PRIVILEGES AS COMMANDS)")
        return [r["command"] for r in rows if isinstance(r.get("command"), str)]

    def replay(self, command: str, what: str) -> None:
        """A privilege command from `privilege_commands`, rewritten by access.py for a new, validated name."""
        self.run(command, what=what)

    def user_roles(self, user: str) -> list[str] | None:
        rows = self.run(queries.USER_ROLES, {"user": user}, what=f"reading the roles of user {user!r}")
        return sorted(rows[0]["roles"] or []) if rows else None

    def heap_percent(self) -> float | None:
        rows = self.run(queries.HEAP, what="reading heap usage")
        if not rows or not rows[0].get("max"):
            return None
        return 100.0 * float(rows[0]["used"]) / float(rows[0]["max"])

    def pagecache_percent(self) -> float | None:
        """Page cache usage from the Enterprise metrics gauge; None when the server does not publish it."""
        rows = self.run(queries.PAGECACHE, database=None, what="reading page cache usage")
        ratios = [float(r["ratio"]) for r in rows if r.get("ratio") is not None]
        return 100.0 * max(ratios) if ratios else None
