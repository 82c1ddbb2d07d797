"""A threaded TCP server speaking Bolt 5.4 to the official `neo4j` driver, answering only our own statements.

Written from the public Bolt and PackStream specifications (neo4j.com/docs/bolt). One thread per connection.

- Handshake: magic 0x6060B017 and four proposals; the reply is the plain version 5.4 when a proposal covers it
  (the driver accepts a plain 4-byte reply as well as the manifest form), otherwise 0 and the connection closes.
- Framing: chunks of at most 65535 bytes with a 2-byte big-endian length, a zero chunk ends a message; zero chunks
  between messages are NOOPs.
- Messages: HELLO, LOGON, LOGOFF, GOODBYE, RESET, RUN, BEGIN, COMMIT, ROLLBACK, PULL, DISCARD, TELEMETRY, ROUTE
  (a neo4j:// driver: the routing table of `routing_table`). Replies: SUCCESS, RECORD, FAILURE, IGNORED.
- States: CONNECTED -> HELLO -> AUTHENTICATION -> LOGON -> READY; READY -RUN-> STREAMING -PULL/DISCARD-> READY;
  READY -BEGIN-> TX_READY -RUN-> TX_STREAMING -COMMIT/ROLLBACK-> READY. Any FAILURE moves to FAILED, where every
  message except RESET and GOODBYE is IGNORED; RESET returns to READY (and rolls back an open transaction). A failed
  LOGON, or a message that is illegal in the current state, closes the connection (DEFUNCT).

Statements are recognised by their text against the constants in `bluegreen_dagster.targets.neo4j.queries` (whitespace
normalised; `{placeholder}` templates match backtick-quoted names). Anything else, except `RETURN <int> [AS x]`
connectivity checks, fails with Neo.ClientError.Statement.SyntaxError so that drift between the target and this
stand-in is loud. Writes inside an explicit transaction are applied at COMMIT and dropped by ROLLBACK/RESET.
"""

from __future__ import annotations

import itertools
import re
import socket
import socketserver
import string
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from bluegreen_dagster.targets.neo4j import queries

from .dbms import SYSTEM, Dbms, DbmsError
from .packstream import PackStreamError, Structure, pack, unpack

BOLT_MAGIC = b"\x60\x60\xb0\x17"
VERSION = (5, 4)

HELLO, GOODBYE, RESET, RUN, BEGIN, COMMIT, ROLLBACK = 0x01, 0x02, 0x0F, 0x10, 0x11, 0x12, 0x13
DISCARD, PULL, TELEMETRY, ROUTE, LOGON, LOGOFF = 0x2F, 0x3F, 0x54, 0x66, 0x6A, 0x6B
SUCCESS, RECORD, IGNORED, FAILURE = 0x70, 0x71, 0x7E, 0x7F

MESSAGE_NAMES = {HELLO: "HELLO", GOODBYE: "GOODBYE", RESET: "RESET", RUN: "RUN", BEGIN: "BEGIN", COMMIT: "COMMIT",
                 ROLLBACK: "ROLLBACK", DISCARD: "DISCARD", PULL: "PULL", TELEMETRY: "TELEMETRY", ROUTE: "ROUTE",
                 LOGON: "LOGON", LOGOFF: "LOGOFF"}


def normalise(statement: str) -> str:
    return " ".join(statement.split())


# ------------------------------------------------------------------------------------------------------------------
# Statement catalogue: every Cypher string in queries.py, matched by text


def _template_regex(template: str) -> re.Pattern[str]:
    """A regex for a queries.py template whose `{name}` fields hold backtick-quoted identifiers."""
    parts = []
    for literal, field_name, _, _ in string.Formatter().parse(normalise(template)):
        parts.append(re.escape(literal))
        if field_name is not None:
            if field_name == "labels":  # one or more :`Label`
                parts.append(r"(?P<labels>(?::`[^`]+`)*)")
            elif field_name == "properties":  # [, ]`name`: $p0[i], `other`: $p1[i] (or nothing)
                parts.append(r"(?P<properties>(?:,? ?`[^`]+`: \$p\d+\[i\])*)")
            else:
                parts.append(rf"(?P<{field_name}>`[^`]+`)")
    return re.compile("^" + "".join(parts) + "$")


def _is_template(text: str) -> bool:
    """True for str.format templates (`{label}`, `{{` escapes); False for raw Cypher with map literals `{k: v}`."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return False
    fields = [(f, spec, conv) for _, f, spec, conv in parsed if f is not None]
    return bool(fields) and all(f.isidentifier() and not spec and conv is None for f, spec, conv in fields)


# Statements the product never sends but its tests do (the opt-in Enterprise suite's teardown), as Neo4j 5's Cypher
# manual writes them (DROP ALIAS name [IF EXISTS] FOR DATABASE).
TEST_STATEMENTS = {
    "DROP_ALIAS": "DROP ALIAS $alias IF EXISTS FOR DATABASE",
    # users and roles of the reader tests (tests/test_neo4j_enterprise_optin.py)
    "CREATE_ROLE": "CREATE ROLE $role IF NOT EXISTS",
    "DROP_ROLE": "DROP ROLE $role IF EXISTS",
    "CREATE_USER": "CREATE USER $user IF NOT EXISTS SET PASSWORD $password CHANGE NOT REQUIRED",
    "DROP_USER": "DROP USER $user IF EXISTS",
    "GRANT_ROLE": "GRANT ROLE $role TO $user",
}

# A privilege command as SHOW PRIVILEGES AS COMMANDS writes it (and as access.py replays it for a new name): the
# only statements accepted that are not constants, because their text comes from the server itself.
_PRIVILEGE_COMMAND = re.compile(
    r"^(?P<verb>GRANT|DENY) (?P<action>ACCESS|TRAVERSE|MATCH|READ)(?: (?P<props>\{[^}]*\}))? "
    r"ON (?:DATABASE|GRAPH) (?P<graph>`(?:[^`]|``)+`|\*)(?: (?P<segment>(?:NODE|RELATIONSHIP)S?) \*)? "
    r"TO `(?P<role>(?:[^`]|``)+)`$")


def _statement_constants() -> dict[str, str]:
    """name -> text of every statement in queries.py (strings with a space: not the bare names like ID_PROPERTY),
    and of TEST_STATEMENTS."""
    return {**{name: value for name, value in vars(queries).items()
               if name.isupper() and isinstance(value, str) and " " in value.strip()}, **TEST_STATEMENTS}


class Catalogue:
    """Maps statement text to the queries.py constant name; built once per server from the live module."""

    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.templates: list[tuple[str, re.Pattern[str]]] = []
        for name, text in _statement_constants().items():
            if _is_template(text):
                self.templates.append((name, _template_regex(text)))
            else:
                self.exact[normalise(text)] = name

    def match(self, statement: str) -> tuple[str, dict[str, str]] | None:
        text = normalise(statement)
        if text in self.exact:
            return self.exact[text], {}
        for name, regex in self.templates:
            m = regex.match(text)
            if m:
                return name, m.groupdict()
        return None


_PROPERTIES = re.compile(r"\bPROPERTIES\s*\{(?P<entries>[^{}]*)\}")
_PROPERTY = re.compile(r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?:\$(?P<param>[A-Za-z_][A-Za-z0-9_]*)|"
                       r"(?P<int>-?\d+)|'(?P<text>[^']*)'|(?P<bool>true|false))\s*$", re.IGNORECASE)


def _properties_clause(statement: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The map of an alias statement's `PROPERTIES { key: value[, ...] }` clause (the Operations Manual's syntax for
    CREATE ALIAS and ALTER ALIAS ... SET DATABASE), values a $parameter or a literal; None without the clause."""
    clause = _PROPERTIES.search(statement)
    if clause is None:
        return None
    out: dict[str, Any] = {}
    for entry in filter(str.strip, clause.group("entries").split(",")):
        m = _PROPERTY.match(entry)
        if m is None:
            raise DbmsError("Neo.ClientError.Statement.SyntaxError", f"Invalid PROPERTIES entry {entry.strip()!r}")
        if m.group("param"):
            value = parameters[m.group("param")]
        elif m.group("int") is not None:
            value = int(m.group("int"))
        elif m.group("text") is not None:
            value = m.group("text")
        else:
            value = m.group("bool").lower() == "true"
        out[m.group("key")] = value
    return out


_RETURN_LITERAL = re.compile(r"^RETURN\s+(-?\d+)(?:\s+AS\s+`?(\w+)`?)?\s*;?$", re.IGNORECASE)
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class Result:
    """What one RUN produced: column names, rows, the summary type, and writes to apply (now or at COMMIT)."""

    def __init__(self, fields: list[str], records: list[list[Any]] | None = None, kind: str = "r",
                 apply: Callable[[], None] | None = None, stats: dict[str, int] | None = None) -> None:
        self.fields = fields
        self.records = records or []
        self.kind = kind
        self.apply = apply
        self.stats = stats or {}
        self.db: str | None = None


def _value_rows(owned: list[tuple[str, Any]]) -> list[list[Any]]:
    """count(v), min(v), max(v) per owner (label or type), as Cypher aggregates them: nulls skipped."""
    values: dict[str, list[Any]] = {}
    for owner, value in owned:
        values.setdefault(owner, [])
        if value is not None:
            values[owner].append(value)
    rows = []
    for owner, found in sorted(values.items()):
        try:
            low, high = (min(found), max(found)) if found else (None, None)
        except TypeError:  # values of kinds Python does not order (structures): bounds unknown
            low = high = None
        rows.append([owner, len(found), low, high])
    return rows


class Executor:
    """Runs recognised statements against the Dbms. Handler methods are named after the queries.py constants."""

    ADMIN = "admin"  # only on `system`
    ANY = "any"  # any database (procedures)
    DATA = "data"  # a user database or alias, online

    def __init__(self, dbms: Dbms, catalogue: Catalogue, member: str | None = None) -> None:
        self.dbms = dbms
        self.catalogue = catalogue
        self.member = member  # the cluster member (Dbms.servers) this listener is; None: the DBMS as a whole
        self._local = threading.local()

    @property
    def user(self) -> str | None:
        """Who runs the statement this thread is executing (set by `run`; one connection per thread)."""
        return getattr(self._local, "user", None)

    @user.setter
    def user(self, value: str | None) -> None:
        self._local.user = value

    scopes: dict[str, str] = {
        "GRANT_ACCESS": ADMIN, "GRANT_MATCH": ADMIN, "PRIVILEGE_COMMANDS": ADMIN, "USER_ROLES": ADMIN,
        "CREATE_ROLE": ADMIN, "DROP_ROLE": ADMIN, "CREATE_USER": ADMIN, "DROP_USER": ADMIN, "GRANT_ROLE": ADMIN,
        "COMPONENTS": ANY, "HEAP": ANY, "PAGECACHE": "home",
        "LIST_DATABASES": ADMIN, "DATABASE_STATUS": ADMIN, "COUNT_DATABASES": ADMIN, "ALIAS_TARGET": ADMIN,
        "ALIAS_FENCE": ADMIN,
        "CREATE_ALIAS": ADMIN, "ALTER_ALIAS": ADMIN, "DROP_ALIAS": ADMIN, "CREATE_DATABASE": ADMIN,
        "DROP_DATABASE": ADMIN, "DATABASE_ACCESS": ADMIN, "SERVER_COUNT": ADMIN, "SERVERS": ADMIN,
        "CREATE_DATABASE_TOPOLOGY": ADMIN, "DATABASE_ALLOCATION": ADMIN, "MOUNT_DATABASE": ADMIN,
        "MOUNT_DATABASE_TOPOLOGY": ADMIN, "SET_READ_ONLY": ADMIN, "SET_READ_WRITE": ADMIN,
        "COUNT_BY_LABEL": DATA, "COUNT_NODES": DATA, "COUNT_BY_TYPE": DATA, "COUNT_LOAD_MARKERS": DATA,
    }  # everything else (the Cypher loader's statements) is DATA

    def handled(self) -> set[str]:
        return {name[3:] for name in dir(self) if name.startswith("_q_")}

    def run(self, statement: str, parameters: dict[str, Any], db: str | None, user: str | None = None) -> Result:
        """`user` is who runs it (after impersonation); None: the admin user of tests that drive the executor."""
        if not isinstance(statement, str):
            raise DbmsError("Neo.ClientError.Request.Invalid", "RUN needs a string statement")
        self.user = user
        privilege = _PRIVILEGE_COMMAND.match(normalise(statement))
        if privilege:
            self._check_scope("GRANT_ACCESS", db)
            self.dbms.log("bolt", "PRIVILEGE_COMMAND", db=db, command=normalise(statement))
            return self._privilege(privilege.group("verb"), privilege.group("action"), privilege.group("props"),
                                   privilege.group("graph"), privilege.group("segment"), privilege.group("role"))
        literal = _RETURN_LITERAL.match(statement.strip())
        if literal:
            self.dbms.resolve(db)
            return Result([literal.group(2) or f"{literal.group(1)}"], [[int(literal.group(1))]])
        matched = self.catalogue.match(statement)
        if matched is None:
            raise DbmsError("Neo.ClientError.Statement.SyntaxError",
                            f"The Enterprise stand-in does not know this statement (not in queries.py): "
                            f"{normalise(statement)[:300]!r}")
        name, captures = matched
        handler = getattr(self, f"_q_{name}", None)
        if handler is None:
            raise DbmsError("Neo.ClientError.Statement.SyntaxError",
                            f"queries.{name} is not implemented by the Enterprise stand-in (tests/standin)")
        missing = sorted({p for p in _PARAM.findall(statement)} - set(parameters or {}))
        if missing:
            raise DbmsError("Neo.ClientError.Statement.ParameterMissing",
                            f"Expected parameter(s): {', '.join(missing)}")
        self._check_scope(name, db)
        fault = self.dbms.take_statement_fault(name)
        if fault:
            raise DbmsError(*fault)
        where = {"member": self.member} if self.member else {}
        self.dbms.log("bolt", name, db=db, parameters=dict(parameters or {}), **where, **captures)
        return handler(parameters or {}, db, **captures)

    def _check_scope(self, name: str, db: str | None) -> None:
        scope = self.scopes.get(name, self.DATA)
        target = self.dbms.resolve(db)  # DatabaseNotFound for unknown names
        on_system = target.type == "system"
        if scope == self.ADMIN and not on_system:
            raise DbmsError("Neo.ClientError.Statement.NotSystemDatabaseError",
                            f"queries.{name} is an administration command: the stand-in accepts it only on the "
                            f"system database (session database was {db!r})")
        if scope in (self.DATA, "home") and on_system:
            raise DbmsError("Neo.ClientError.Statement.NotSystemDatabaseError",
                            f"queries.{name} cannot run on the system database: it supports a restricted set of "
                            "Cypher clauses")
        if scope == self.ADMIN:
            self.dbms.require_admin(self.user, name)
        else:
            self.dbms.check_access(self.user, target)

    # --- administration ---------------------------------------------------------------------------------------

    def _q_COMPONENTS(self, p, db):
        return Result(["name", "versions", "edition"], [["Neo4j Kernel", [self.dbms.version], self.dbms.edition]])

    def _q_HEAP(self, p, db):
        return Result(["used", "max"], [list(self.dbms.heap_of(self.member))])

    def _q_PAGECACHE(self, p, db):
        ratio = self.dbms.pagecache_of(self.member) if self.dbms.edition == "enterprise" else None
        return Result(["ratio"], [] if ratio is None else [[ratio]])

    def _q_LIST_DATABASES(self, p, db):
        prefix = p["prefix"]
        out = [[row["name"], row["currentStatus"]] for row in self.dbms.show_databases()
               if row["type"] == "standard" and isinstance(prefix, str) and row["name"].startswith(prefix)]
        return Result(["name", "currentStatus"], out)

    def _q_SERVER_COUNT(self, p, db):
        return Result(["servers"], [[len(self.dbms.show_servers())]])

    def _q_SERVERS(self, p, db):
        columns = ["name", "address", "state", "health"]
        return Result(columns, [[row[c] for c in columns] for row in self.dbms.show_servers()])

    def _q_DATABASE_ALLOCATION(self, p, db):
        columns = ["serverID", "address", "role", "currentStatus", "statusMessage", "currentPrimariesCount",
                   "currentSecondariesCount", "requestedPrimariesCount", "requestedSecondariesCount"]
        return Result(columns, [[row[c] for c in columns] for row in self.dbms.show_databases()
                                if row["name"] == p["name"]])

    def _q_DATABASE_STATUS(self, p, db):
        rows = [[r["currentStatus"], r["statusMessage"]] for r in self.dbms.show_databases() if r["name"] == p["name"]]
        return Result(["currentStatus", "statusMessage"], rows)

    def _q_COUNT_DATABASES(self, p, db):
        names = {r["name"] for r in self.dbms.show_databases(count_poll=False) if r["type"] == "standard"}
        return Result(["databases"], [[len(names)]])

    def _q_ALIAS_TARGET(self, p, db):
        target = self.dbms.alias_target(p["alias"]) if isinstance(p["alias"], str) else None
        return Result(["database"], [] if target is None else [[target]])

    def _q_ALIAS_FENCE(self, p, db):
        found = self.dbms.alias_fence(p["alias"]) if isinstance(p["alias"], str) else None
        return Result(["database", "properties"], [] if found is None else [list(found)])

    def _q_CREATE_ALIAS(self, p, db):
        self.dbms._require_enterprise("CREATE ALIAS")
        properties = _properties_clause(queries.CREATE_ALIAS, p)
        return Result([], kind="s", apply=lambda: self.dbms.create_alias(p["alias"], p["database"],
                                                                         properties=properties))

    def _q_ALTER_ALIAS(self, p, db):
        self.dbms._require_enterprise("ALTER ALIAS")
        properties = _properties_clause(queries.ALTER_ALIAS, p)
        return Result([], kind="s", apply=lambda: self.dbms.alter_alias(p["alias"], p["database"],
                                                                        properties=properties))

    def _q_DROP_ALIAS(self, p, db):
        self.dbms._require_enterprise("DROP ALIAS")
        return Result([], kind="s", apply=lambda: self.dbms.drop_alias(p["alias"], if_exists=True))

    # --- security ---------------------------------------------------------------------------------------------

    def _privilege(self, verb, action, props, graph, segment, role):
        graph = "*" if graph == "*" else graph[1:-1].replace("``", "`")
        if action == "ACCESS":
            segments: tuple[str, ...] = ("",)
        elif segment:
            segments = (f"{segment.rstrip('S')} *",)
        else:  # ON GRAPH g with no segment: nodes and relationships
            segments = ("NODE *", "RELATIONSHIP *")
        properties = props or ("{*}" if action in ("MATCH", "READ") else "")
        return Result([], kind="s", apply=lambda: self.dbms.grant(verb, action, properties, graph, segments,
                                                                  role.replace("``", "`")))

    def _q_GRANT_ACCESS(self, p, db):
        return self._privilege("GRANT", "ACCESS", None, self._graph_param(p["database"]), None,
                               f"`{p['role']}`"[1:-1])

    def _q_GRANT_MATCH(self, p, db):
        return self._privilege("GRANT", "MATCH", "{*}", self._graph_param(p["database"]), None,
                               f"`{p['role']}`"[1:-1])

    @staticmethod
    def _graph_param(name: Any) -> str:
        if not isinstance(name, str):
            raise DbmsError("Neo.ClientError.Statement.ArgumentError", "Expected a string database name")
        return f"`{name}`"

    def _q_PRIVILEGE_COMMANDS(self, p, db):
        return Result(["command", "immutable"], [[c, False] for c in self.dbms.privilege_commands()])

    def _q_USER_ROLES(self, p, db):
        roles = self.dbms.roles_of(p["user"]) if isinstance(p["user"], str) else []
        return Result(["roles"], [[roles]] if roles else [])

    def _q_CREATE_ROLE(self, p, db):
        return Result([], kind="s", apply=lambda: self.dbms.create_role(p["role"]))

    def _q_DROP_ROLE(self, p, db):
        return Result([], kind="s", apply=lambda: self.dbms.drop_role(p["role"]))

    def _q_CREATE_USER(self, p, db):
        return Result([], kind="s", apply=lambda: self.dbms.create_user(p["user"], p["password"]))

    def _q_DROP_USER(self, p, db):
        return Result([], kind="s", apply=lambda: self.dbms.drop_user(p["user"]))

    def _q_GRANT_ROLE(self, p, db):
        return Result([], kind="s", apply=lambda: self.dbms.grant_role(p["role"], p["user"]))

    def _wait_rows(self) -> list[list[Any]]:
        return [["127.0.0.1:7687", "CaughtUp", "caught up", True]]

    def _q_CREATE_DATABASE(self, p, db):
        self.dbms._require_enterprise("CREATE DATABASE")
        rows, late = self.dbms.wait_rows("CREATE_DATABASE")  # success=false: it finishes `late` s later
        return Result(["address", "state", "message", "success"], rows, kind="s",
                      apply=lambda: self.dbms.finishes_in(self.dbms.create_database(p["name"]), late))

    def _q_MOUNT_DATABASE(self, p, db):
        self.dbms._require_enterprise("CREATE DATABASE")
        rows, late = self.dbms.wait_rows("MOUNT_DATABASE")
        return Result(["address", "state", "message", "success"], rows, kind="s",
                      apply=lambda: self.dbms.finishes_in(self.dbms.create_database(p["name"], if_not_exists=True),
                                                          late))

    def _q_CREATE_DATABASE_TOPOLOGY(self, p, db):
        self.dbms._require_enterprise("CREATE DATABASE")
        rows, late = self.dbms.wait_rows("CREATE_DATABASE_TOPOLOGY")
        topology = (p["primaries"], p["secondaries"])
        return Result(["address", "state", "message", "success"], rows, kind="s",
                      apply=lambda: self.dbms.finishes_in(self.dbms.create_database(p["name"], topology), late))

    def _q_MOUNT_DATABASE_TOPOLOGY(self, p, db):
        self.dbms._require_enterprise("CREATE DATABASE")
        rows, late = self.dbms.wait_rows("MOUNT_DATABASE_TOPOLOGY")
        topology = (p["primaries"], p["secondaries"])
        return Result(["address", "state", "message", "success"], rows, kind="s",
                      apply=lambda: self.dbms.finishes_in(
                          self.dbms.create_database(p["name"], topology, if_not_exists=True), late))

    def _q_DROP_DATABASE(self, p, db):
        self.dbms._require_enterprise("DROP DATABASE")
        rows, late = self.dbms.wait_rows("DROP_DATABASE")
        return Result(["address", "state", "message", "success"], rows, kind="s",
                      apply=lambda: self.dbms.drop_database(p["name"], if_exists=True, finishes_in=late))

    # --- data -------------------------------------------------------------------------------------------------

    def _sees(self, db, *segments: str) -> bool:
        target = self.dbms.resolve(db)
        return all(self.dbms.sees(self.user, target, segment) for segment in segments)

    def _q_COUNT_BY_LABEL(self, p, db):
        graph = self.dbms.counts(db)
        if not self._sees(db, "NODE *"):
            return Result(["label", "count"], [])
        with self.dbms.lock:
            return Result(["label", "count"], [[k, v] for k, v in sorted(graph.label_counts().items())])

    def _q_COUNT_NODES(self, p, db):
        graph = self.dbms.counts(db)
        with self.dbms.lock:
            return Result(["count"], [[len(graph.nodes) if self._sees(db, "NODE *") else 0]])

    def _q_COUNT_LOAD_MARKERS(self, p, db):
        graph = self.dbms.counts(db)
        with self.dbms.lock:
            markers = sum(queries.LOAD_LABEL in labels for labels in graph.nodes.values())
            return Result(["markers"], [[markers if self._sees(db, "NODE *") else 0]])

    def _q_COUNT_BY_TYPE(self, p, db):
        graph = self.dbms.counts(db)
        if not self._sees(db, "NODE *", "RELATIONSHIP *"):
            return Result(["type", "count"], [])
        with self.dbms.lock:
            return Result(["type", "count"], [[k, v] for k, v in sorted(graph.type_counts().items())])


    def _q_VALUE_STATS_NODES(self, p, db):
        graph = self.dbms.counts(db)
        with self.dbms.lock:
            owned = [(label, graph.node_properties.get(key, {}).get(p["property"]))
                     for key, labels in graph.nodes.items() for label in set(labels)]
            return Result(["owner", "count", "low", "high"], _value_rows(owned))

    def _q_VALUE_STATS_RELATIONSHIPS(self, p, db):
        graph = self.dbms.counts(db)
        with self.dbms.lock:
            owned = [(rel_type, props.get(p["property"]))
                     for (_, rel_type, _), props in zip(graph.relationships, graph.relationship_properties,
                                                        strict=True)]
            return Result(["owner", "count", "low", "high"], _value_rows(owned))

    # --- the Cypher fallback loader (cypher_loader.py) -----------------------------------------------------------
    # Not a Cypher engine: each template is executed by hand, with its exact meaning (UNWIND over the row numbers
    # of parallel lists, CREATE with static labels / type and properties, where a null value sets nothing;
    # MATCH by internal id; id(n) returned). Writes apply at COMMIT.

    @staticmethod
    def _names(captured: str) -> tuple[str, ...]:
        return tuple(re.findall(r"`([^`]+)`", captured or ""))

    @staticmethod
    def _columns(p: dict[str, Any], first: tuple[str, ...], captured: str) -> tuple[int, list[tuple[str, list]]]:
        """Row count and (property name, values) pairs; every list must be as long as the first one."""
        pairs = re.findall(r"`([^`]+)`: \$(p\d+)\[i\]", captured or "")
        lists = [p.get(name) for name in first] + [p.get(param) for _, param in pairs]
        if not all(isinstance(values, list) for values in lists) or len({len(v) for v in lists}) > 1:
            # Neo4j would index past the end of a shorter list and read null; our loader never sends that.
            raise DbmsError("Neo.ClientError.Statement.TypeError",
                            f"${', $'.join(first)} and the property lists must be lists of one length")
        return len(lists[0]), [(name, p[param]) for name, param in pairs]

    def _schema(self, db):
        self.dbms.counts(db)  # exists, not system, online
        return Result([], kind="s")

    def _q_CREATE_ID_INDEX(self, p, db, label):
        self.dbms.writable(db)
        return Result([], kind="s", apply=lambda: self.dbms.create_index(db, self._names(label)[0], "nodeId"))

    def _q_CREATE_PROPERTY_INDEX(self, p, db, label, property):  # noqa: A002 - the template's field name
        self.dbms.writable(db)
        return Result([], kind="s", apply=lambda: self.dbms.create_index(db, self._names(label)[0],
                                                                          self._names(property)[0]))

    def _q_SHOW_INDEXES(self, p, db):
        fields = ["name", "type", "labelsOrTypes", "properties", "state", "populationPercent"]
        return Result(fields, [[row[f] for f in fields] for row in self.dbms.show_indexes(db)])

    def _q_AWAIT_INDEXES(self, p, db):
        """Blocks until every index is ONLINE, at most $seconds; then fails as the procedure does."""
        self.dbms.counts(db)
        seconds = p["seconds"]
        if not isinstance(seconds, int) or seconds < 0:
            raise DbmsError("Neo.ClientError.Statement.TypeError", "db.awaitIndexes needs an integer timeout")
        remaining = self.dbms.indexes_online_in(db)
        time.sleep(min(remaining, seconds))
        if remaining > seconds:
            raise DbmsError("Neo.ClientError.Procedure.ProcedureCallFailed",
                            f"Failed to invoke procedure `db.awaitIndexes`: Caused by: "
                            f"org.neo4j.kernel.api.exceptions.schema.IndexPopulationFailedKernelException: "
                            f"Index population has not completed in {seconds}s")
        return Result([], kind="r")

    def _q_DATABASE_ACCESS(self, p, db):
        modes = sorted({r["access"] for r in self.dbms.show_databases(count_poll=False) if r["name"] == p["name"]})
        return Result(["access"], [[m] for m in modes])

    def _q_SET_READ_ONLY(self, p, db):
        return Result(["address", "state", "message", "success"], self._wait_rows(), kind="s",
                      apply=lambda: self.dbms.set_access(p["name"], "read-only"))

    def _q_SET_READ_WRITE(self, p, db):
        return Result(["address", "state", "message", "success"], self._wait_rows(), kind="s",
                      apply=lambda: self.dbms.set_access(p["name"], "read-write"))

    def _q_CREATE_LOAD_MARKER(self, p, db):
        graph = self.dbms.writable(db).graph

        def apply() -> None:
            with self.dbms.lock:
                graph.create_node((queries.LOAD_LABEL,), {})

        return Result(["created"], [[1]], kind="w", apply=apply, stats={"nodes-created": 1, "labels-added": 1})

    def _q_DELETE_LOAD_MARKER(self, p, db):
        graph = self.dbms.writable(db).graph
        with self.dbms.lock:
            markers = [key for key, labels in graph.nodes.items() if queries.LOAD_LABEL in labels]
            attached = {key for a, _, b in graph.relationships for key in (a, b)} & set(markers)
        if attached:
            raise DbmsError("Neo.ClientError.Schema.ConstraintValidationFailed",
                            "Cannot delete node, because it still has relationships. To delete this node, you must "
                            "first delete its relationships.")

        def apply() -> None:
            with self.dbms.lock:
                for key in markers:
                    graph.nodes.pop(key, None)
                    graph.node_properties.pop(key, None)

        return Result(["removed"], [[len(markers)]], kind="w", apply=apply, stats={"nodes-deleted": len(markers)})

    def _q_CREATE_NODES(self, p, db, labels, properties):
        graph = self.dbms.writable(db).graph
        count, columns = self._columns(p, ("ids",), properties)
        static_labels = self._names(labels)
        planned = []
        for i in range(count):
            props = {name: values[i] for name, values in columns if values[i] is not None}
            props["nodeId"] = p["ids"][i]
            planned.append(props)
        with self.dbms.lock:
            made = list(graph.reserve_ids(count))

        def apply() -> None:
            with self.dbms.lock:
                self.dbms.batch_taken()  # a loader batch (hold_at_batch counts them)
                for props, internal_id in zip(planned, made, strict=True):
                    graph.create_node(static_labels, props, internal_id)

        return Result(["rows", "ids"], [[list(range(count)), made]], kind="w", apply=apply,
                      stats={"nodes-created": count})

    def _q_CREATE_RELATIONSHIPS(self, p, db, type, properties):  # noqa: A002 - the template's field name
        graph = self.dbms.writable(db).graph
        count, columns = self._columns(p, ("s", "t"), properties)
        rel_type = self._names(type)[0]
        planned = []
        with self.dbms.lock:
            for i in range(count):
                a, b = ("c", p["s"][i]), ("c", p["t"][i])
                if a in graph.nodes and b in graph.nodes:  # MATCH by id: an unknown id matches nothing
                    planned.append((a, b, {name: values[i] for name, values in columns if values[i] is not None}))

        def apply() -> None:
            with self.dbms.lock:
                self.dbms.batch_taken()  # a loader batch (hold_at_batch counts them)
                for a, b, props in planned:
                    graph.relationships.append((a, rel_type, b))
                    graph.relationship_properties.append(props)

        return Result(["created"], [[len(planned)]], kind="w", apply=apply,
                      stats={"relationships-created": len(planned)})


# ------------------------------------------------------------------------------------------------------------------
# Connection handling


class ConnectionClosed(Exception):
    pass


class BoltConnection:
    def __init__(self, sock: socket.socket, server: BoltServer, connection_id: str) -> None:
        self.sock = sock
        self.server = server
        self.dbms = server.dbms
        self.executor = server.executor
        self.connection_id = connection_id
        self.state = "CONNECTED"
        self.tx_db: str | None = None
        self.user: str | None = None  # after LOGON
        self.tx_user: str | None = None  # who the open transaction runs as (impersonation)
        self.tx_writes: list[Callable[[], None]] = []
        self.results: dict[int, tuple[Result, int]] = {}  # qid -> (result, next row index)
        self.last_qid = -1
        self.qids = itertools.count()
        self.bookmarks = itertools.count(1)
        self.outbox = bytearray()
        self.send_lock = threading.Lock()  # flush() and the keep-alive NOOPs never interleave
        self.busy = False  # a request is being handled: serve()'s keep-alive thread sends NOOPs

    # --- wire -------------------------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed()
            buf += chunk
        return bytes(buf)

    def read_message(self) -> Structure:
        data = bytearray()
        while True:
            size = struct.unpack(">H", self._recv_exact(2))[0]
            if size == 0:
                if data:
                    break
                continue  # NOOP keep-alive between messages
            data += self._recv_exact(size)
        message = unpack(bytes(data))
        if not isinstance(message, Structure):
            raise PackStreamError("a Bolt message must be a structure")
        return message

    def send(self, tag: int, *fields: Any) -> None:
        body = pack(Structure(tag, list(fields)))
        out = bytearray()
        for i in range(0, len(body), 0xFFFF):
            piece = body[i:i + 0xFFFF]
            out += struct.pack(">H", len(piece)) + piece
        out += b"\x00\x00"
        self.outbox += out

    def flush(self) -> None:
        if self.outbox:
            data, self.outbox = bytes(self.outbox), bytearray()
            with self.send_lock:
                self.sock.sendall(data)

    def _keep_alive(self, period: float, stop: threading.Event) -> None:
        """A NOOP chunk at least once per `period` while a request is being handled (between messages)."""
        while not stop.wait(period):
            if self.busy:
                with self.send_lock:
                    try:
                        self.sock.sendall(b"\x00\x00")
                    except OSError:
                        return

    def success(self, metadata: dict[str, Any] | None = None) -> None:
        self.send(SUCCESS, metadata or {})

    def failure(self, code: str, message: str) -> None:
        self.send(FAILURE, {"code": code, "message": message})

    # --- protocol ---------------------------------------------------------------------------------------------

    def handshake(self) -> bool:
        if self._recv_exact(4) != BOLT_MAGIC:
            return False
        proposals = self._recv_exact(16)
        chosen = None
        for i in range(4):
            _, span, minor, major = proposals[4 * i:4 * i + 4]
            if major == VERSION[0] and minor - span <= VERSION[1] <= minor:
                chosen = VERSION
                break
        if chosen is None:
            self.sock.sendall(b"\x00\x00\x00\x00")
            return False
        self.sock.sendall(bytes((0, 0, chosen[1], chosen[0])))
        return True

    def serve(self) -> None:
        if not self.handshake():
            return
        stop = threading.Event()
        if self.server.keep_alive_seconds:
            threading.Thread(target=self._keep_alive, args=(self.server.keep_alive_seconds, stop), daemon=True,
                             name=f"{self.connection_id}-keep-alive").start()
        try:
            while self.state != "DEFUNCT":
                message = self.read_message()
                self.busy = True
                self.handle(message.tag, message.fields)
                self.flush()
                self.busy = False
        finally:
            stop.set()
            self.flush()

    def _illegal(self, tag: int) -> None:
        self.failure("Neo.ClientError.Request.Invalid",
                     f"Message {MESSAGE_NAMES.get(tag, hex(tag))} cannot be handled in state {self.state}")
        self.state = "DEFUNCT"

    def _reset_work(self) -> None:
        self.tx_db = None
        self.tx_user = None
        self.tx_writes = []
        self.results.clear()
        self.last_qid = -1

    def handle(self, tag: int, fields: list[Any]) -> None:
        name = MESSAGE_NAMES.get(tag)
        if name is None:
            self.failure("Neo.ClientError.Request.Invalid", f"Unknown message 0x{tag:02X}")
            self.state = "DEFUNCT"
            return
        if tag == GOODBYE:
            self.state = "DEFUNCT"
            return
        if tag == RESET:
            if self.state in ("CONNECTED",):
                return self._illegal(tag)
            self._reset_work()
            if self.state != "AUTHENTICATION":
                self.state = "READY"
            return self.success()
        if self.state == "FAILED":
            if tag in (RUN, PULL, DISCARD, BEGIN, COMMIT, ROLLBACK, TELEMETRY, LOGOFF):
                self.send(IGNORED)
                return
            return self._illegal(tag)
        getattr(self, f"on_{name.lower()}")(*fields)

    def _fail(self, exc: DbmsError) -> None:
        self.failure(exc.code, exc.message)
        self.tx_writes = []  # the transaction is rolled back
        self.results.clear()
        self.state = "FAILED"

    def on_hello(self, extra: dict[str, Any] | None = None, *_: Any) -> None:
        if self.state != "CONNECTED":
            return self._illegal(HELLO)
        extra = extra or {}
        if "user_agent" not in extra:
            self.failure("Neo.ClientError.Request.Invalid", "HELLO needs a user_agent")
            self.state = "DEFUNCT"
            return
        self.dbms.log("bolt", "HELLO", user_agent=extra.get("user_agent"))
        hints: dict[str, Any] = {}
        if self.server.telemetry_hint:
            hints["telemetry.enabled"] = True
        if self.server.keep_alive_seconds:
            # Neo4j's server.bolt.connection_keep_alive (1m) times connection_keep_alive_probes (2): the driver
            # takes it as its read timeout, and serve() sends a NOOP while a request runs so a live server never
            # trips it (docs/testing.md, "Bolt keep-alive").
            hints["connection.recv_timeout_seconds"] = int(self.server.keep_alive_seconds * 2)
        self.success({"server": f"Neo4j/{self.dbms.version}", "connection_id": self.connection_id, "hints": hints})
        self.state = "AUTHENTICATION"

    def on_logon(self, auth: dict[str, Any] | None = None, *_: Any) -> None:
        if self.state != "AUTHENTICATION":
            return self._illegal(LOGON)
        auth = auth or {}
        ok = auth.get("scheme") == "basic" and self.dbms.check_credentials(auth.get("principal"),
                                                                          auth.get("credentials"))
        self.dbms.log("bolt", "LOGON", principal=auth.get("principal"), ok=ok)
        if not ok:
            self.failure("Neo.ClientError.Security.Unauthorized",
                         "The client is unauthorized due to authentication failure.")
            self.state = "DEFUNCT"
            return
        self.user = auth.get("principal")
        self.success()
        self.state = "READY"

    def on_logoff(self, *_: Any) -> None:
        if self.state != "READY":
            return self._illegal(LOGOFF)
        self.success()
        self.state = "AUTHENTICATION"

    def on_telemetry(self, api: Any = None, *_: Any) -> None:
        if self.state != "READY":
            return self._illegal(TELEMETRY)
        self.dbms.log("bolt", "TELEMETRY", api=api)
        self.success()

    def on_route(self, routing: Any = None, bookmarks: Any = None, extra: Any = None, *_: Any) -> None:
        """ROUTE (Bolt 4.4+ form: routing context, bookmarks, {db, imp_user}) -> SUCCESS {rt: {ttl, db, servers}}."""
        if self.state != "READY":
            return self._illegal(ROUTE)
        name = (extra or {}).get("db") if isinstance(extra, dict) else None
        try:
            resolved = self.dbms.resolve(name)  # DatabaseNotFound for an unknown name
        except DbmsError as exc:
            return self._fail(exc)
        self.dbms.log("bolt", "ROUTE", db=name, member=self.executor.member)
        self.success({"rt": {"ttl": 300, "db": name or resolved.name,
                             "servers": self.server.routing_table(resolved)}})

    def on_begin(self, extra: dict[str, Any] | None = None, *_: Any) -> None:
        if self.state != "READY":
            return self._illegal(BEGIN)
        extra = extra or {}
        try:
            # A transaction is bound to one database when it begins: an alias that moves mid-transaction does
            # not split its reads across two databases (what readers through an alias rely on).
            self.tx_user = self._effective_user(extra)
            target = self.dbms.resolve(extra.get("db"))
            self.dbms.check_access(self.tx_user, target)  # ACCESS is checked when a transaction starts
            self.tx_db = target.name
            member = {"member": self.executor.member} if self.executor.member else {}
            self.dbms.log("bolt", "BEGIN", db=target.name, asked=extra.get("db"), **member)  # the name a reader used
        except DbmsError as exc:
            return self._fail(exc)
        self.tx_writes = []
        self.results.clear()
        self.state = "TX_READY"
        self.success()

    def on_run(self, statement: Any = None, parameters: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None, *_: Any) -> None:
        in_tx = self.state in ("TX_READY", "TX_STREAMING")
        if self.state != "READY" and not in_tx:
            return self._illegal(RUN)
        db = self.tx_db if in_tx else (extra or {}).get("db")
        if not in_tx and (extra or {}).get("bookmarks"):  # what a causally chained session waits for (Neo4j does)
            self.dbms.log("bolt", "BOOKMARKS", db=db, bookmarks=list(extra["bookmarks"]))
        try:
            user = self.tx_user if in_tx else self._effective_user(extra or {})
            result = self.executor.run(statement, parameters or {}, db, user)
            result.db = self.dbms.resolve(db).name
            took_batch = False
            if result.apply is not None:
                if in_tx:
                    self.tx_writes.append(result.apply)
                else:
                    with self.dbms.lock:
                        batches = self.dbms.batches_taken
                        result.apply()
                        took_batch = self.dbms.batches_taken > batches
            self.dbms.commit_point()  # auto-commit writes and administration commands are durable before SUCCESS
        except DbmsError as exc:
            return self._fail(exc)
        if took_batch:  # an auto-commit loader batch: durable, and a kill point
            self.dbms.hold_if_due()
        metadata: dict[str, Any] = {"fields": result.fields, "t_first": 0}
        if in_tx:
            qid = next(self.qids)
            metadata["qid"] = qid
            self.state = "TX_STREAMING"
        else:
            qid = -1
            self.state = "STREAMING"
        self.results[qid] = (result, 0)
        self.last_qid = qid
        self.success(metadata)

    def _effective_user(self, extra: dict[str, Any]) -> str | None:
        """The logged-on user, or the one named by `imp_user` (impersonation needs IMPERSONATE: admin here)."""
        if extra.get("imp_user") is None or self.user is None:
            return self.user
        return self.dbms.check_impersonation(self.user, extra["imp_user"])

    def _stream(self, tag: int, extra: dict[str, Any] | None) -> None:
        in_tx = self.state == "TX_STREAMING"
        if self.state not in ("STREAMING", "TX_STREAMING"):
            return self._illegal(tag)
        extra = extra or {}
        n = extra.get("n", -1)
        qid = extra.get("qid", -1)
        if qid == -1:
            qid = self.last_qid
        if qid not in self.results:
            self.failure("Neo.ClientError.Request.Invalid", f"No open result with qid {qid}")
            self.state = "FAILED"
            return
        result, pos = self.results[qid]
        end = len(result.records) if n is None or n < 0 else min(len(result.records), pos + n)
        if tag == PULL:
            for row in result.records[pos:end]:
                self.send(RECORD, row)
        if end < len(result.records):
            self.results[qid] = (result, end)
            self.success({"has_more": True})
            return
        del self.results[qid]
        metadata: dict[str, Any] = {"type": result.kind, "t_last": 0, "db": result.db}
        if result.stats:
            metadata["stats"] = result.stats
        if not in_tx:
            metadata["bookmark"] = f"FB:standin:{next(self.bookmarks)}"
            self.state = "READY"
        elif not self.results:
            self.state = "TX_READY"
        self.success(metadata)

    def on_pull(self, extra: dict[str, Any] | None = None, *_: Any) -> None:
        self._stream(PULL, extra)

    def on_discard(self, extra: dict[str, Any] | None = None, *_: Any) -> None:
        self._stream(DISCARD, extra)

    def on_commit(self, *_: Any) -> None:
        if self.state not in ("TX_READY", "TX_STREAMING"):
            return self._illegal(COMMIT)
        writes, self.tx_writes = self.tx_writes, []
        try:
            with self.dbms.lock:
                batches = self.dbms.batches_taken
                for write in writes:
                    write()
                took_batch = self.dbms.batches_taken > batches
            self.dbms.commit_point()
        except DbmsError as exc:
            return self._fail(exc)
        if took_batch:  # a loader batch: committed and durable, and a kill point
            self.dbms.hold_if_due()
        self._reset_work()
        self.state = "READY"
        self.success({"bookmark": f"FB:standin:{next(self.bookmarks)}"})

    def on_rollback(self, *_: Any) -> None:
        if self.state not in ("TX_READY", "TX_STREAMING"):
            return self._illegal(ROLLBACK)
        self._reset_work()
        self.state = "READY"
        self.success()


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        owner = self.server.owner
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with owner._lock:
            owner._sockets.add(self.request)
            connection_id = f"bolt-{next(owner._ids)}"
        try:
            BoltConnection(self.request, owner, connection_id).serve()
        except (ConnectionClosed, OSError, PackStreamError):
            pass
        finally:
            with owner._lock:
                owner._sockets.discard(self.request)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True
    owner: BoltServer


class BoltServer:
    """`start()` binds a free loopback port and serves in a thread; `stop()` closes every connection and joins."""

    def __init__(self, dbms: Dbms, host: str = "127.0.0.1", port: int = 0, telemetry_hint: bool = True,
                 member: str | None = None, keep_alive_seconds: float = 60.0) -> None:
        self.dbms = dbms
        self.keep_alive_seconds = keep_alive_seconds  # 0: no recv_timeout hint, no NOOPs
        self.catalogue = Catalogue()
        self.executor = Executor(dbms, self.catalogue, member)
        self.telemetry_hint = telemetry_hint
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._tcp = _TCPServer((host, port), _Handler, bind_and_activate=True)
        self._tcp.owner = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._tcp.server_address[1]

    def routing_table(self, db) -> list[dict[str, Any]]:
        """ROUTE's `servers`: the first member of `db`'s allocation writes, the others read (this listener alone when
        the members have no addresses of their own, `Dbms.server_addresses`), every member routes."""
        own = f"{self._tcp.server_address[0]}:{self.port}"
        with self.dbms.lock:
            addresses = [self.dbms.server_addresses[s] for s, _ in self.dbms.hosting(db)
                         if s in self.dbms.server_addresses]
            routers = list(self.dbms.server_addresses.values()) or [own]
        writer, readers = (addresses[:1], addresses[1:] or addresses[:1]) if addresses else ([own], [own])
        return [{"addresses": writer, "role": "WRITE"}, {"addresses": readers, "role": "READ"},
                {"addresses": routers, "role": "ROUTE"}]

    def start(self) -> BoltServer:
        self._thread = threading.Thread(target=self._tcp.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"standin-bolt-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._tcp.shutdown()
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._tcp.server_close()  # joins the connection threads (block_on_close)
        if self._thread is not None:
            self._thread.join(timeout=5)
