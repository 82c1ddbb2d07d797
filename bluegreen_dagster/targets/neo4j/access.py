"""Readers' access follows the alias: grants on a new database before the alias moves to it, then proof.

Neo4j stores a privilege against the database an alias resolved to when it was granted, never against the alias
(docs/neo4j-readers.md). A role granted ACCESS and MATCH on `acme-corp` can read the database the alias pointed
at that day only; after a switch its users meet "Database access is not allowed" (no ACCESS) or an empty graph
(no TRAVERSE/MATCH). So before every move of the alias (switch, rollback, unpin, reconcile, all through
`Neo4jTarget.point_alias`), `prepare_readers`:

1. replays for the new database every read privilege (GRANT or DENY of ACCESS, TRAVERSE, READ, MATCH) that any
   role has on the current target, from `SHOW PRIVILEGES AS COMMANDS` with the name swapped (a DENY is carried
   too: what a role may not see on the old database it may not see on the new one);
2. grants ACCESS and MATCH {*} to the roles of `neo4j.reader_roles` and `customers.<name>.reader_roles`;
3. proves it: counts the new database's nodes as each user of `neo4j.reader_users` (and the customer's) through
   `impersonated_user`. A refusal, or fewer nodes than the loading user sees, raises ReadersCannotRead, which
   names the user, their roles and the missing privilege; the alias does not move.

Grants on a dropped database go with it (Neo4j removes them with the database).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from bluegreen_dagster.config import Settings
from bluegreen_dagster.targets.base import PermanentTargetError, validate_database
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.admin import Admin
from bluegreen_dagster.targets.neo4j.bolt import ReadRefused

log = logging.getLogger(__name__)

# The privileges a reader needs to see a graph; anything else (writes, schema, administration) is not carried.
READ_ACTIONS = ("ACCESS", "TRAVERSE", "READ", "MATCH")
# `ON GRAPH `name`` / `ON DATABASE `name`` in a command of SHOW PRIVILEGES AS COMMANDS (our names always need
# backticks: they contain '-'). A doubled backtick is an escaped one.
_ON_NAME = re.compile(r"\bON (?:GRAPH|DATABASE) `((?:[^`]|``)+)`")
_TO_ROLE = re.compile(r"\bTO `?((?:[^`]|``)+?)`?$")


class ReadersCannotRead(PermanentTargetError):
    """A configured reader cannot read the database the alias is about to move to."""


def carried_commands(commands: Iterable[str], old: str, new: str) -> tuple[list[str], list[str]]:
    """(commands to run for `new`, commands left out with why) from the read privileges naming `old`.

    Only whole commands of the form `GRANT|DENY <read action> ... ON GRAPH|DATABASE `old` ... TO role` are
    carried; `new` is a validated snapshot database name, so the text put into the statement is known-safe."""
    validate_database(new)
    carried, skipped = [], []
    for command in commands:
        words = command.split()
        if len(words) < 2 or words[0] not in ("GRANT", "DENY"):
            continue
        on = [m for m in _ON_NAME.finditer(command) if m.group(1).replace("``", "`") == old]
        if not on:
            continue  # about another database, or `*` (which covers the new one already)
        if words[1] == "IMMUTABLE":
            skipped.append(f"{command} (immutable privileges can only be granted with auth disabled)")
            continue
        if words[1] not in READ_ACTIONS:
            continue
        m = on[0]
        carried.append(command[:m.start(1)] + new + command[m.end(1):])
    return carried, skipped


def _role_of(command: str) -> str:
    m = _TO_ROLE.search(command)
    return m.group(1) if m else "?"


class ReaderAccess:
    """The grants and the proof for one Neo4j target (`Neo4jTarget.prepare_readers` calls `prepare`)."""

    def __init__(self, settings: Settings, admin: Admin) -> None:
        self.settings = settings
        self.admin = admin

    def roles_for(self, customer: str) -> list[str]:
        own = self.settings.customers.get(customer)
        return list(dict.fromkeys([*self.settings.neo4j.reader_roles, *(own.reader_roles if own else [])]))

    def users_for(self, customer: str) -> list[str]:
        own = self.settings.customers.get(customer)
        return list(dict.fromkeys([*self.settings.neo4j.reader_users, *(own.reader_users if own else [])]))

    def prepare(self, database: str, customer: str, current: str | None) -> None:
        """Grant on `database` what readers of `customer` have on `current` (the alias target, or None) plus the
        configured roles, then prove each configured reader user can read it. Raises ReadersCannotRead."""
        validate_database(database)
        if current and current != database:
            carried, skipped = carried_commands(self.admin.privilege_commands(), current, database)
            for command in carried:
                self.admin.replay(command, what=f"carrying a privilege of role {_role_of(command)!r} from "
                                                f"{current} to {database}")
            for why in skipped:
                log.warning("%s: not carried to %s: %s", current, database, why)
            if carried:
                log.info("%s: %d read privilege(s) carried from %s (roles %s)", database, len(carried), current,
                         ", ".join(sorted({_role_of(c) for c in carried})))
        for role in self.roles_for(customer):
            self.admin.grant(queries.GRANT_ACCESS, database, role)
            self.admin.grant(queries.GRANT_MATCH, database, role)
        users = self.users_for(customer)
        if users:
            self.prove(database, users)

    def prove(self, database: str, users: list[str]) -> None:
        """Count `database` as each user; every user must see every node the loading user sees."""
        what = f"counting {database}"
        expected = int(self.admin.read(database, queries.COUNT_NODES, what)[0]["count"])
        problems = []
        for user in users:
            try:
                rows = self.admin.read_as(user, database, queries.COUNT_NODES, f"{what} as reader {user!r}")
            except ReadRefused as exc:
                problems.append(f"reader {user!r} {self._roles(user)} is refused on {database}: {exc}; missing "
                                f"ACCESS ON DATABASE {database} (list a role of theirs in neo4j.reader_roles, or "
                                f"grant ACCESS on the alias target; IMPERSONATE for {self.settings.neo4j.user!r} "
                                "if the message says impersonation)")
                continue
            seen = int(rows[0]["count"]) if rows else 0
            if seen < expected:
                problems.append(f"reader {user!r} {self._roles(user)} sees {seen} of {expected} nodes of "
                                f"{database}: missing MATCH (or TRAVERSE and READ) ON GRAPH {database}")
            else:
                log.info("reader %r reads %s: %d nodes", user, database, seen)
        if problems:
            raise ReadersCannotRead("the alias stays where it is: " + "; ".join(problems))

    def _roles(self, user: str) -> str:
        try:
            roles = self.admin.user_roles(user)
        except PermanentTargetError:
            return "(roles not readable)"
        return "(no such user)" if roles is None else f"(roles {', '.join(roles) or 'none'})"


__all__ = ["READ_ACTIONS", "ReaderAccess", "ReadersCannotRead", "carried_commands"]
