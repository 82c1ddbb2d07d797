"""The stand-in's model of one Neo4j DBMS, shared by its Bolt server and its GDS Arrow Flight server.

Thread-safe: every public method takes one re-entrant lock, so the two servers (each multi-threaded) and the test
thread see one consistent state. Tests read and set the knobs directly (`dbms.password = ...`,
`dbms.faults.reject_batch = 2`) or through the helper methods.

Rules enforced (Neo4j Enterprise 5.x, see /work/shared/reference/neo4j.md §2):
- database names and alias names share one namespace and are case-insensitive (normalised to lowercase);
- CREATE of a taken name fails with Neo.ClientError.Database.ExistingDatabaseFound;
- DROP DATABASE is RESTRICT: it fails with Neo.ClientError.Database.ExistingAliasFound while a local alias targets
  the database, even with IF EXISTS;
- an alias must target a database, never another alias (Neo.ClientError.Database.IllegalAliasChain);
- an unknown database or alias is Neo.ClientError.Database.DatabaseNotFound;
- `dbms.max_databases` (counted over every database including `system`) gives
  Neo.DatabaseError.Database.DatabaseLimitReached;
- Community edition refuses every CREATE/DROP DATABASE and ALIAS command with
  Neo.ClientError.Statement.UnsupportedAdministrationCommand.

An Arrow import (GDS `v1/CREATE_DATABASE` ... `v1/RELATIONSHIP_LOAD_DONE`) lives in `imports` while it is open
(state "loading"): it is NOT listed by SHOW DATABASES, like on the real server, where the store is only registered
when the import finishes. Finishing writes the store files (`stores`) and then registers the database, which may be
delayed by the `faults` knobs (hidden for N polls, "starting" for N polls, never registered so that the client's
`CREATE DATABASE $n WAIT` fallback has to mount the files).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .persistence import DataDir

SYSTEM = "system"
DEFAULT_DB = "neo4j"

# 5.26-era rules: 3-63 chars of ASCII letters, digits, '.', '-'; first a letter; no trailing '.'/'-'.
_DB_NAME_RE = re.compile(r"^[a-z][a-z0-9.-]{1,61}[a-z0-9]$")


class DbmsError(Exception):
    """A Neo4j status code and message, sent as a Bolt FAILURE (or mapped to a gRPC status by the Arrow server)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ArrowError(Exception):
    """A gRPC status name (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, ...) and message for the Flight server."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass
class Graph:
    """Contents of one database: enough to answer counts, plus the data for tests that want to look."""

    nodes: dict[Any, tuple[str, ...]] = field(default_factory=dict)  # id -> labels
    node_properties: dict[Any, dict[str, Any]] = field(default_factory=dict)
    relationships: list[tuple[Any, str, Any]] = field(default_factory=list)  # (source, type, target)
    relationship_properties: list[dict[str, Any]] = field(default_factory=list)
    next_key: int = 0

    def reserve_ids(self, count: int) -> range:
        """Internal ids for nodes a statement creates, `id(n)`: assigned when it runs, never reused (as in Neo4j
        while nothing is deleted). A node's key is ("c", id), which never collides with Arrow node ids."""
        self.next_key += count
        return range(self.next_key - count + 1, self.next_key + 1)

    def create_node(self, labels: tuple[str, ...], properties: dict[str, Any], internal_id: int | None = None) -> int:
        """A node made by Cypher CREATE (at commit); returns its internal id."""
        if internal_id is None:
            internal_id = self.reserve_ids(1)[0]
        self.nodes[("c", internal_id)] = tuple(dict.fromkeys(labels))
        self.node_properties[("c", internal_id)] = dict(properties)
        return internal_id

    def label_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for labels in self.nodes.values():
            counts.update(set(labels))
        return dict(counts)

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(rel_type for _, rel_type, _ in self.relationships))


@dataclass
class Database:
    name: str
    type: str = "standard"  # "system" | "standard"
    status: str = "online"  # online | starting | offline ...
    status_message: str = ""
    graph: Graph = field(default_factory=Graph)
    polls_until_online: int = 0  # while > 0 the database reports "starting"
    polls_until_visible: int = 0  # while > 0 SHOW DATABASES does not list it yet
    created_at: float = field(default_factory=time.time)
    access: str = "read-write"  # ALTER DATABASE ... SET ACCESS READ ONLY / READ WRITE
    # (label, property) -> when its population finishes (time.time()); LOOKUP indexes are implicit.
    indexes: dict[tuple[str, str], float] = field(default_factory=dict)
    # CREATE DATABASE ... TOPOLOGY p PRIMARIES s SECONDARIES; None: every member hosts it as a primary.
    topology: tuple[int, int] | None = None
    # A CREATE or DROP whose WAIT gave up finishes later (time.time()): "starting" / "stopping" until then.
    online_at: float = 0.0
    gone_at: float = 0.0


@dataclass(frozen=True)
class Privilege:
    """One graph privilege of a role, stored against a DATABASE name (an alias is resolved when granting: "a GRANT
    on an alias is executed on the resolved graph", reference neo4j.md §2.10) or `*`."""

    verb: str  # GRANT | DENY
    action: str  # ACCESS | TRAVERSE | READ | MATCH
    properties: str  # "{*}" for READ/MATCH, "" otherwise
    database: str  # a database name, or "*"
    segment: str  # "" (ACCESS), "NODE *", "RELATIONSHIP *"
    role: str

    def command(self) -> str:
        """As SHOW PRIVILEGES AS COMMANDS writes it."""
        graph = "*" if self.database == "*" else f"`{self.database}`"
        if self.action == "ACCESS":
            return f"{self.verb} ACCESS ON DATABASE {graph} TO `{self.role}`"
        action = f"{self.action} {self.properties}" if self.properties else self.action
        return f"{self.verb} {action} ON GRAPH {graph} {self.segment} TO `{self.role}`"


@dataclass
class User:
    password: str
    roles: set[str] = field(default_factory=set)


ADMIN_ROLE = "admin"
PUBLIC_ROLE = "PUBLIC"


@dataclass
class ArrowImport:
    """An open GDS Arrow database import (a database in state "loading")."""

    name: str
    id_type: str = "INTEGER"
    id_property: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    phase: str = "nodes"  # nodes -> relationships -> done
    graph: Graph = field(default_factory=Graph)
    node_rows: int = 0  # rows received (the LOAD_DONE counts), duplicates included
    relationship_rows: int = 0
    batches: int = 0
    open_puts: int = 0
    state: str = "loading"


@dataclass
class Faults:
    """Fault injection for tests. All default to "behave like a healthy server"."""

    # Arrow v1/CREATE_DATABASE fails with this gRPC status (e.g. "UNAVAILABLE", "INTERNAL", "PERMISSION_DENIED").
    refuse_create: str | None = None
    # Any action fails with a gRPC status: {"v1/NODE_LOAD_DONE": "INTERNAL"}.
    fail_action: dict[str, str] = field(default_factory=dict)
    # The DoPut stream is dropped (UNAVAILABLE, as gRPC reports a lost connection) after this many acked batches,
    # counted per import across all its streams.
    drop_put_after_batches: int | None = None
    # The n-th batch (1-based, per import, all streams) is rejected with INVALID_ARGUMENT.
    reject_batch: int | None = None
    # After RELATIONSHIP_LOAD_DONE: SHOW DATABASES does not list the database for this many polls ...
    hidden_polls: int = 0
    # ... then reports it as "starting" for this many polls before "online".
    starting_polls: int = 0
    # False: the import writes the store files but never registers the database (client must CREATE ... WAIT).
    register_after_import: bool = True
    # Where leftover store files (of an import whose database was never registered) are refused without force:
    # "create" (at v1/CREATE_DATABASE) or "finish" (at v1/RELATIONSHIP_LOAD_DONE, where GdsParallelBatchImporter
    # checks, reference neo4j.md §1.8).
    store_checked_at: str = "create"
    # The import finishes but the database fails to start: it is listed with currentStatus "offline".
    start_fails: bool = False
    # Bolt: statement name in queries.py (e.g. "ALTER_ALIAS") -> (code, message), failed once per entry in list.
    fail_statement: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    # After RELATIONSHIP_LOAD_DONE replied, GDS is still writing and starting the store for this many seconds
    # before the database is listed (or, with register_after_import False, before its files are complete). A
    # CREATE DATABASE of that name meanwhile mounts an incomplete store (an empty graph here) and GDS then fails
    # to start its own ("Unable to start database", only logged): the mount race.
    register_after_seconds: float = 0.0
    # WAIT that gives up (reference neo4j.md §2.2, §2.12): statement name in queries.py (CREATE_DATABASE,
    # MOUNT_DATABASE, DROP_DATABASE) -> seconds. Its WAIT answers success=false at once and the operation finishes
    # that many seconds later; meanwhile the database is listed "starting" (create) or "stopping" (drop).
    wait_gives_up: dict[str, float] = field(default_factory=dict)


class Dbms:
    """One DBMS: databases, aliases, credentials, limits, health numbers, Arrow imports, fault knobs, event log."""

    def __init__(self, user: str = "neo4j", password: str = "password", edition: str = "enterprise",
                 version: str = "5.26.0", max_databases: int = 100, arrow_enabled: bool = True) -> None:
        self.lock = threading.RLock()
        self.user = user
        self.password = password
        self.edition = edition
        self.version = version
        self.max_databases = max_databases
        self.arrow_enabled = arrow_enabled
        self.heap_used = 256 * 1024 * 1024
        self.heap_max = 1024 * 1024 * 1024
        self.pagecache_ratio: float | None = 0.25  # None: the metric is absent (as on Community)
        self.faults = Faults()
        self.index_population_seconds = 0.0  # how long a new property index stays POPULATING
        # Cluster members (SHOW SERVERS); every member hosts every database, one SHOW DATABASES row each.
        # `member_status[(database, server)]` overrides what one member reports (e.g. "unknown", "deallocating").
        self.servers: list[str] = ["server-1"]
        self.member_status: dict[tuple[str, str], str] = {}
        # Per member (tests set them): its Bolt address in SHOW SERVERS (tests/standin/server.py's start_cluster
        # gives each member a listener of its own), its SHOW SERVERS state, its heap (used, max) and page cache.
        self.server_addresses: dict[str, str] = {}
        self.server_state: dict[str, str] = {}
        self.server_heap: dict[str, tuple[int, int]] = {}
        self.server_pagecache: dict[str, float | None] = {}
        # (database, server): allocated to that member, which has not reported it yet (no SHOW DATABASES row).
        self.unlisted: set[tuple[str, str]] = set()
        self.databases: dict[str, Database] = {
            SYSTEM: Database(SYSTEM, type="system"),
            DEFAULT_DB: Database(DEFAULT_DB),
        }
        self.aliases: dict[str, str] = {}  # alias -> database name
        # alias -> its PROPERTIES (CREATE ALIAS ... PROPERTIES {...}, ALTER ALIAS ... SET DATABASE PROPERTIES {...})
        self.alias_properties: dict[str, dict[str, Any]] = {}
        self.imports: dict[str, ArrowImport] = {}
        self.stores: dict[str, Graph] = {}  # store files on disk that no database has mounted (yet)
        self.mounting: dict[str, tuple[float, Graph]] = {}  # GDS still writing/starting: name -> (until, graph)
        self.events: list[tuple[str, str, dict[str, Any]]] = []  # (server, what, details)
        # Security (Enterprise): the admin user, roles, graph privileges. `admin` may do everything (IMPERSONATE
        # included); PUBLIC, which every user has, gives ACCESS on the default database only (as Neo4j does).
        self.users: dict[str, User] = {user: User(password, {ADMIN_ROLE})}
        self.roles: set[str] = {ADMIN_ROLE, PUBLIC_ROLE}
        self.privileges: set[Privilege] = {Privilege("GRANT", "ACCESS", "", DEFAULT_DB, "", PUBLIC_ROLE)}
        # Restarts (persistence.py): with a data directory every commit point writes the durable state first.
        self.data_dir: DataDir | None = None
        # A kill point for restart tests: once `hold_at_batch` data batches were taken (Arrow DoPut batches
        # received, Cypher loader batches committed), every connection taking a batch stops answering until
        # `release` is set, while other statements are answered; `on_hold` hears the first (the CLI prints it).
        self.hold_at_batch: int | None = None
        self.batches_taken = 0
        self.on_hold: Callable[[int], None] | None = None
        self.release = threading.Event()
        self._held = False

    # ----------------------------------------------------------------------------------------------------------
    # helpers for tests

    def log(self, server: str, what: str, **details: Any) -> None:
        with self.lock:
            self.events.append((server, what, details))

    def events_of(self, what: str) -> list[dict[str, Any]]:
        with self.lock:
            return [details for _, w, details in self.events if w == what]

    def fail_next(self, statement: str, code: str, message: str = "injected failure", times: int = 1) -> None:
        """The next `times` runs of queries.<statement> fail with `code`."""
        with self.lock:
            self.faults.fail_statement.setdefault(statement, []).extend([(code, message)] * times)

    def take_statement_fault(self, statement: str) -> tuple[str, str] | None:
        with self.lock:
            queue = self.faults.fail_statement.get(statement)
            return queue.pop(0) if queue else None

    def commit_point(self) -> None:
        """A change is about to be acknowledged to a client: with a data directory it is on disk first."""
        if self.data_dir is not None:
            self.data_dir.save(self)

    def batch_taken(self) -> None:
        with self.lock:
            self.batches_taken += 1

    def hold_if_due(self) -> None:
        """Block this connection (outside the lock) once `hold_at_batch` batches were taken, until `release`."""
        if self.hold_at_batch is None:
            return
        with self.lock:
            due = self.batches_taken >= self.hold_at_batch
            first, self._held = due and not self._held, self._held or due
        if first:
            self.log("standin", "HELD", batches=self.batches_taken)
            if self.on_hold is not None:
                self.on_hold(self.batches_taken)
        if due:
            self.release.wait()

    def add_database(self, name: str, nodes: dict[Any, tuple[str, ...]] | None = None,
                     relationships: list[tuple[Any, str, Any]] | None = None, status: str = "online") -> Database:
        """Create a database directly (test set-up), bypassing edition checks."""
        with self.lock:
            name = name.lower()
            self._check_name_free(name)
            db = Database(name, status=status, graph=Graph(dict(nodes or {}), {}, list(relationships or []), []))
            self.databases[name] = db
            return db

    def database_names(self, include_system: bool = False) -> list[str]:
        with self.lock:
            self._settle()
            return sorted(n for n, d in self.databases.items() if include_system or d.type == "standard")

    # ----------------------------------------------------------------------------------------------------------
    # authentication

    def check_credentials(self, principal: Any, credentials: Any) -> bool:
        with self.lock:
            if principal == self.user:  # tests change `dbms.password` directly
                return credentials == self.password
            user = self.users.get(principal) if isinstance(principal, str) else None
            return user is not None and credentials == user.password

    # ----------------------------------------------------------------------------------------------------------
    # users, roles, privileges (Enterprise)

    def create_role(self, role: Any) -> None:
        with self.lock:
            self._require_enterprise("CREATE ROLE")
            self.roles.add(str(role))

    def drop_role(self, role: Any) -> None:
        with self.lock:
            self._require_enterprise("DROP ROLE")
            self.roles.discard(str(role))
            self.privileges = {p for p in self.privileges if p.role != role}
            for user in self.users.values():
                user.roles.discard(str(role))

    def create_user(self, name: Any, password: Any, roles: tuple[str, ...] = ()) -> None:
        with self.lock:
            self._require_enterprise("CREATE USER")
            self.users.setdefault(str(name), User(str(password)))
            for role in roles:
                self.grant_role(role, name)

    def drop_user(self, name: Any) -> None:
        with self.lock:
            if name != self.user:
                self.users.pop(str(name), None)

    def grant_role(self, role: Any, user: Any) -> None:
        with self.lock:
            self._require_enterprise("GRANT ROLE")
            if role not in self.roles:
                raise DbmsError("Neo.ClientError.General.InvalidArguments",
                                f"Failed to grant role '{role}' to user '{user}': Role does not exist.")
            if user not in self.users:
                raise DbmsError("Neo.ClientError.General.InvalidArguments",
                                f"Failed to grant role '{role}' to user '{user}': User does not exist.")
            self.users[user].roles.add(role)

    def roles_of(self, user: str) -> list[str]:
        with self.lock:
            return sorted(self.users[user].roles | {PUBLIC_ROLE}) if user in self.users else []

    def grant(self, verb: str, action: str, properties: str, graph: Any, segments: tuple[str, ...],
              role: Any) -> None:
        """GRANT/DENY on `graph` (a database, an alias resolved NOW, or `*`) to `role`."""
        with self.lock:
            self._require_enterprise(f"{verb} {action}")
            if not isinstance(graph, str) or not isinstance(role, str):
                raise DbmsError("Neo.ClientError.Statement.ArgumentError", "Expected string graph and role names")
            if role not in self.roles:
                raise DbmsError("Neo.ClientError.General.InvalidArguments",
                                f"Failed to {verb.lower()} {action} privilege to role '{role}': Role does not "
                                "exist.")
            database = "*" if graph == "*" else self.resolve(graph).name
            for segment in segments:
                self.privileges.add(Privilege(verb, action, properties, database, segment, role))

    def privilege_commands(self) -> list[str]:
        """SHOW PRIVILEGES AS COMMANDS: every role's privileges, the admin role's on `*` included."""
        with self.lock:
            self._require_enterprise("SHOW PRIVILEGES")
            admin = [Privilege("GRANT", "ACCESS", "", "*", "", ADMIN_ROLE),
                     Privilege("GRANT", "MATCH", "{*}", "*", "NODE *", ADMIN_ROLE),
                     Privilege("GRANT", "MATCH", "{*}", "*", "RELATIONSHIP *", ADMIN_ROLE)]
            return [p.command() for p in sorted(self.privileges | set(admin), key=lambda p: p.command())]

    def _allowed(self, user: str, database: str, actions: tuple[str, ...], segment: str) -> bool:
        roles = set(self.roles_of(user))
        if ADMIN_ROLE in roles:
            return True
        relevant = [p for p in self.privileges if p.role in roles and p.action in actions
                    and p.database in (database, "*") and p.segment == segment]
        return any(p.verb == "GRANT" for p in relevant) and not any(p.verb == "DENY" for p in relevant)

    def check_access(self, user: str | None, db: Database) -> None:
        """A transaction of `user` on `db` may start (ACCESS), else Neo.ClientError.Security.Forbidden."""
        with self.lock:
            if user is None or db.type == "system" or self._allowed(user, db.name, ("ACCESS",), ""):
                return
            raise DbmsError("Neo.ClientError.Security.Forbidden",
                            f"Database access is not allowed for user '{user}' with roles "
                            f"[{', '.join(self.roles_of(user))}].")

    def sees(self, user: str | None, db: Database, segment: str) -> bool:
        """Whether `user` sees the elements of `segment` ("NODE *" / "RELATIONSHIP *") of `db`: without
        TRAVERSE (MATCH includes it) a query does not fail, it finds nothing (Neo4j's behaviour)."""
        with self.lock:
            return user is None or self._allowed(user, db.name, ("MATCH", "TRAVERSE"), segment)

    def check_impersonation(self, user: str, imp_user: Any) -> str:
        with self.lock:
            if ADMIN_ROLE not in self.roles_of(user):
                raise DbmsError("Neo.ClientError.Security.Forbidden",
                                f"Impersonation of user '{imp_user}' is not allowed for user '{user}' "
                                "(IMPERSONATE missing).")
            if not isinstance(imp_user, str) or imp_user not in self.users:
                raise DbmsError("Neo.ClientError.Security.Forbidden",
                                f"Impersonation of user '{imp_user}' failed: the user does not exist.")
            return imp_user

    def require_admin(self, user: str | None, command: str) -> None:
        with self.lock:
            if user is not None and ADMIN_ROLE not in self.roles_of(user):
                raise DbmsError("Neo.ClientError.Security.Forbidden",
                                f"Permission denied for {command} (user '{user}').")

    # ----------------------------------------------------------------------------------------------------------
    # name resolution

    @staticmethod
    def validate_database_name(name: Any) -> str:
        if not isinstance(name, str):
            raise DbmsError("Neo.ClientError.Statement.ArgumentError",
                            f"Expected parameter to be a string, got {type(name).__name__}")
        lowered = name.lower()
        if lowered.startswith("_") or lowered.startswith(SYSTEM):
            raise DbmsError("Neo.ClientError.Statement.ArgumentError",
                            f"The provided database name '{name}' contains a reserved prefix ('_' or 'system').")
        if not _DB_NAME_RE.match(lowered) or ".." in lowered:
            raise DbmsError(
                "Neo.ClientError.Statement.ArgumentError",
                f"The provided database name '{name}' is invalid: use 3-63 ASCII letters, digits, '.' and '-', "
                "starting with a letter and not ending with '.' or '-'.")
        return lowered

    def _check_name_free(self, name: str) -> None:
        if name in self.databases:
            raise DbmsError("Neo.ClientError.Database.ExistingDatabaseFound",
                            f"Failed to create the specified database '{name}': Database already exists.")
        if name in self.aliases:
            raise DbmsError("Neo.ClientError.Database.ExistingDatabaseFound",
                            f"Failed to create the specified database '{name}': "
                            "Database name or alias already exists.")

    def resolve(self, name: str | None) -> Database:
        """The database a session's `db` (database or alias name; None = home database) refers to."""
        with self.lock:
            self._settle()
            key = (name or DEFAULT_DB).lower()
            key = self.aliases.get(key, key)
            db = self.databases.get(key)
            if db is None:
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Graph not found: {name or DEFAULT_DB}")
            return db

    def _require_enterprise(self, command: str) -> None:
        if self.edition != "enterprise":
            raise DbmsError("Neo.ClientError.Statement.UnsupportedAdministrationCommand",
                            f"Unsupported administration command: {command}")

    def _visible(self, db: Database, count_poll: bool) -> bool:
        if db.polls_until_visible > 0:
            if count_poll:
                db.polls_until_visible -= 1
            return False
        return True

    def _status(self, db: Database, count_poll: bool) -> str:
        if db.gone_at:
            return "stopping"
        if db.online_at:
            if time.time() < db.online_at:
                return "starting"
            db.online_at, db.status = 0.0, "online"
        if db.polls_until_online > 0:
            if count_poll:
                db.polls_until_online -= 1
                if db.polls_until_online == 0 and db.status == "starting":
                    db.status = "online"
            return "starting"
        return db.status

    # ----------------------------------------------------------------------------------------------------------
    # SHOW DATABASES / SHOW ALIASES

    def hosting(self, db: Database) -> list[tuple[str, str]]:
        """(server, role) of every member hosting `db`: with a TOPOLOGY, the first p Enabled members as primaries
        and the next s as secondaries (a fixed allocation, so tests know where it lands); else every member."""
        if db.topology is None or db.type == "system":
            return [(server, "primary") for server in self.servers]
        primaries, secondaries = db.topology
        enabled = [s for s in self.servers if self.server_state.get(s, "Enabled") == "Enabled"]
        return ([(s, "primary") for s in enabled[:primaries]]
                + [(s, "secondary") for s in enabled[primaries:primaries + secondaries]])

    def show_databases(self, count_poll: bool = True) -> list[dict[str, Any]]:
        """One row per visible database and hosting member (OPS listing-databases: current*Count counts the rows of
        that role that are online, requested*Count is the TOPOLOGY asked for). Each call is one status poll."""
        with self.lock:
            self._settle()
            rows = []
            for db in sorted(self.databases.values(), key=lambda d: d.name):
                if not self._visible(db, count_poll):
                    continue
                status = self._status(db, count_poll)
                hosts = self.hosting(db)
                states = {server: self.member_status.get((db.name, server), status) for server, _ in hosts
                          if (db.name, server) not in self.unlisted}
                requested = db.topology or (len(hosts), 0)
                counts = {f"current{kind}Count": sum(1 for server, role in hosts
                                                     if role == wanted and states.get(server) == "online")
                          for kind, wanted in (("Primaries", "primary"), ("Secondaries", "secondary"))}
                for server, role in hosts:
                    if (db.name, server) in self.unlisted:
                        continue
                    rows.append({
                        "name": db.name,
                        "type": db.type,
                        "aliases": sorted(a for a, t in self.aliases.items() if t == db.name),
                        "serverID": server,
                        "address": self.server_addresses.get(server, f"{server}:7687"),
                        "role": role,
                        **counts,
                        "requestedPrimariesCount": requested[0],
                        "requestedSecondariesCount": requested[1],
                        "currentStatus": states[server],
                        "requestedStatus": "online",
                        "statusMessage": db.status_message,
                        "access": db.access,
                        "default": db.name == DEFAULT_DB,
                        "home": db.name == DEFAULT_DB,
                    })
            return rows

    def show_servers(self) -> list[dict[str, Any]]:
        with self.lock:
            self._require_enterprise("SHOW SERVERS")
            return [{"name": s, "address": self.server_addresses.get(s, f"{s}:7687"),
                     "state": self.server_state.get(s, "Enabled"), "health": "Available"} for s in self.servers]

    def show_aliases(self) -> list[dict[str, Any]]:
        with self.lock:
            self._require_enterprise("SHOW ALIASES")
            return [{"name": a, "database": t, "location": "local", "composite": None,
                     "properties": dict(self.alias_properties.get(a, {}))}
                    for a, t in sorted(self.aliases.items())]

    # ----------------------------------------------------------------------------------------------------------
    # administration (Cypher against `system`)

    def create_database(self, name: Any, topology: tuple[Any, Any] | None = None,
                        if_not_exists: bool = False) -> Database | None:
        """CREATE DATABASE $name [IF NOT EXISTS] [TOPOLOGY p PRIMARIES s SECONDARIES] WAIT: mounts existing store
        files of that name if there are any (incomplete ones while GDS still writes them). A topology the Enabled
        members cannot satisfy is refused (OPS clustering/databases). IF NOT EXISTS: None when the name is taken."""
        with self.lock:
            self._require_enterprise("CREATE DATABASE")
            name = self.validate_database_name(name)
            self._settle()
            if if_not_exists and (name in self.databases or name in self.aliases):
                return None
            if topology is not None:
                topology = self._check_topology(*topology)
            self._check_name_free(name)
            if name in self.mounting:  # the mount race: GDS has not finished this store
                self.log("bolt", "MOUNTED_INCOMPLETE_STORE", name=name)
                self.stores.setdefault(name, Graph())
            if len(self.databases) >= self.max_databases:
                raise DbmsError("Neo.DatabaseError.Database.DatabaseLimitReached",
                                f"Failed to create the specified database '{name}': The total limit of databases "
                                f"is already reached. To create more you need to either drop databases or change "
                                f"the limit via the config setting 'dbms.max_databases' (={self.max_databases})")
            db = Database(name, graph=self.stores.pop(name, None) or Graph(), topology=topology)
            self.databases[name] = db
            return db

    def _check_topology(self, primaries: Any, secondaries: Any) -> tuple[int, int]:
        if not all(type(n) is int for n in (primaries, secondaries)) or primaries < 1 or secondaries < 0:
            raise DbmsError("Neo.ClientError.Statement.ArgumentError",
                            "TOPOLOGY needs a positive integer of primaries and a non-negative one of secondaries")
        enabled = sum(1 for s in self.servers if self.server_state.get(s, "Enabled") == "Enabled")
        if primaries + secondaries > enabled:
            raise DbmsError("Neo.ClientError.General.InvalidArguments",
                            f"Unable to allocate {primaries} primaries and {secondaries} secondaries: only {enabled} "
                            "enabled server(s) in the cluster")
        return primaries, secondaries

    def heap_of(self, server: str | None) -> tuple[int, int]:
        """(used, max) heap bytes of one member (`server_heap`), else of the DBMS (`heap_used`, `heap_max`)."""
        with self.lock:
            return self.server_heap.get(server or "", (self.heap_used, self.heap_max))

    def pagecache_of(self, server: str | None) -> float | None:
        with self.lock:
            return self.server_pagecache.get(server or "", self.pagecache_ratio)

    def drop_database(self, name: Any, if_exists: bool = True, finishes_in: float = 0.0) -> bool:
        """DROP DATABASE $name [IF EXISTS] (RESTRICT, DESTROY DATA). True when something was dropped.
        `finishes_in`: a WAIT that gave up, the database is listed "stopping" that long (its name still taken)."""
        with self.lock:
            self._require_enterprise("DROP DATABASE")
            self._settle()
            if not isinstance(name, str):
                raise DbmsError("Neo.ClientError.Statement.ArgumentError", "Expected a string database name")
            name = name.lower()
            if name == SYSTEM:
                raise DbmsError("Neo.ClientError.Statement.NotSystemDatabaseError",
                                "Not allowed to delete system database.")
            if name in self.aliases:
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Failed to delete the specified database '{name}': '{name}' is a database alias, "
                                "not a database. Use DROP ALIAS.")
            targeted_by = sorted(a for a, t in self.aliases.items() if t == name)
            if targeted_by:  # RESTRICT, even with IF EXISTS
                raise DbmsError("Neo.ClientError.Database.ExistingAliasFound",
                                f"Failed to delete the specified database '{name}': Database '{name}' is referenced "
                                f"by alias(es): {', '.join(targeted_by)}. Drop the aliases first or use CASCADE "
                                "ALIASES.")
            # DESTROY DATA deletes the files of a registered database only: store files that no database mounted
            # (an Arrow import whose database was never registered) stay on disk, as Neo4j does not know them;
            # only `CREATE DATABASE` (mount) or an Arrow create with force=true gets rid of them.
            if name not in self.databases:
                if if_exists:
                    return False
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Failed to delete the specified database '{name}': Database does not exist.")
            if finishes_in:
                self.databases[name].gone_at = self.databases[name].gone_at or time.time() + finishes_in
                return True
            del self.databases[name]
            # The grants on a dropped database go with it.
            self.privileges = {p for p in self.privileges if p.database != name}
            return True

    def alias_target(self, alias: Any) -> str | None:
        with self.lock:
            self._require_enterprise("SHOW ALIASES")
            return self.aliases.get(str(alias).lower())

    def _alias_target_database(self, alias: str, database: Any, verb: str) -> str:
        if not isinstance(database, str):
            raise DbmsError("Neo.ClientError.Statement.ArgumentError", "Expected a string database name")
        database = database.lower()
        if database in self.aliases:
            raise DbmsError("Neo.ClientError.Database.IllegalAliasChain",
                            f"Failed to {verb} the specified database alias '{alias}': Database alias cannot "
                            f"target another alias ('{database}').")
        if database not in self.databases:
            raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                            f"Failed to {verb} the specified database alias '{alias}': Database '{database}' does "
                            "not exist.")
        if self.databases[database].type == "system":
            raise DbmsError("Neo.ClientError.Statement.ArgumentError",
                            f"Failed to {verb} the specified database alias '{alias}': the system database cannot "
                            "be aliased.")
        return database

    def create_alias(self, alias: Any, database: Any, if_not_exists: bool = True,
                     properties: dict[str, Any] | None = None) -> bool:
        """CREATE ALIAS $alias [IF NOT EXISTS] FOR DATABASE $database [PROPERTIES {...}]. True when an alias was
        created (IF NOT EXISTS on an existing one changes nothing, its properties neither)."""
        with self.lock:
            self._require_enterprise("CREATE ALIAS")
            if not isinstance(alias, str) or not alias or alias.endswith(".") or \
                    alias.lower().startswith(("_", SYSTEM)):
                raise DbmsError("Neo.ClientError.Statement.ArgumentError", f"Invalid alias name {alias!r}")
            alias = alias.lower()
            if alias in self.aliases or alias in self.databases:
                if if_not_exists:
                    return False
                raise DbmsError("Neo.ClientError.Database.ExistingDatabaseFound",
                                f"Failed to create the specified database alias '{alias}': Database name or alias "
                                "already exists.")
            self.aliases[alias] = self._alias_target_database(alias, database, "create")
            self.alias_properties[alias] = _alias_properties(properties)
            return True

    def alias_fence(self, alias: Any) -> tuple[str, dict[str, Any]] | None:
        """SHOW ALIASES FOR DATABASE YIELD name, database, properties: (database, properties) of one alias."""
        with self.lock:
            self._require_enterprise("SHOW ALIASES")
            alias = str(alias).lower()
            if alias not in self.aliases:
                return None
            return self.aliases[alias], dict(self.alias_properties.get(alias, {}))

    def alter_alias(self, alias: Any, database: Any = None, properties: dict[str, Any] | None = None) -> None:
        """ALTER ALIAS $alias SET DATABASE [TARGET $database] [PROPERTIES {...}]: one atomic write (only the clauses
        given change; PROPERTIES replaces the whole map)."""
        with self.lock:
            self._require_enterprise("ALTER ALIAS")
            alias = str(alias).lower()
            if alias not in self.aliases:
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Failed to alter the specified database alias '{alias}': Database alias does not "
                                "exist.")
            target = self.aliases[alias] if database is None else self._alias_target_database(alias, database,
                                                                                                 "alter")
            self.aliases[alias] = target
            if properties is not None:
                self.alias_properties[alias] = _alias_properties(properties)

    def drop_alias(self, alias: Any, if_exists: bool = True) -> bool:
        with self.lock:
            self._require_enterprise("DROP ALIAS")
            alias = str(alias).lower()
            if alias not in self.aliases:
                if if_exists:
                    return False
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Failed to delete the specified database alias '{alias}': Database alias does not "
                                "exist.")
            del self.aliases[alias]
            self.alias_properties.pop(alias, None)
            return True

    def set_access(self, name: Any, access: str) -> None:
        """ALTER DATABASE $name SET ACCESS READ ONLY | READ WRITE."""
        with self.lock:
            self._require_enterprise("ALTER DATABASE")
            db = self.databases.get(str(name).lower())
            if db is None or db.type == "system":
                raise DbmsError("Neo.ClientError.Database.DatabaseNotFound",
                                f"Failed to alter the specified database '{name}': Database does not exist.")
            db.access = access

    # ----------------------------------------------------------------------------------------------------------
    # indexes (on a data database)

    def create_index(self, name: str | None, label: str, prop: str) -> None:
        with self.lock:
            db = self.writable(name)
            db.indexes.setdefault((label, prop), time.time() + self.index_population_seconds)

    def show_indexes(self, name: str | None) -> list[dict[str, Any]]:
        with self.lock:
            db = self.resolve(name)
            now = time.time()
            rows = [{"name": "index_lookup_nodes", "type": "LOOKUP", "labelsOrTypes": None, "properties": None,
                     "state": "ONLINE", "populationPercent": 100.0},
                    {"name": "index_lookup_rels", "type": "LOOKUP", "labelsOrTypes": None, "properties": None,
                     "state": "ONLINE", "populationPercent": 100.0}]
            for (label, prop), ready_at in sorted(db.indexes.items()):
                done = ready_at <= now
                share = 100.0 if done else max(0.0, 100.0 * (1 - (ready_at - now) /
                                                             max(self.index_population_seconds, 1e-9)))
                rows.append({"name": f"index_{label}_{prop}", "type": "RANGE", "labelsOrTypes": [label],
                             "properties": [prop], "state": "ONLINE" if done else "POPULATING",
                             "populationPercent": round(share, 1)})
            return rows

    def indexes_online_in(self, name: str | None) -> float:
        """Seconds until every index of the database is ONLINE (0: all are)."""
        with self.lock:
            db = self.resolve(name)
            return max([0.0, *(ready_at - time.time() for ready_at in db.indexes.values())])

    def writable(self, name: str | None) -> Database:
        """The online database behind `name`, refusing writes when it is read-only."""
        with self.lock:
            db = self.resolve(name)
            self.counts(name)
            if db.access == "read-only":
                raise DbmsError("Neo.ClientError.General.ForbiddenOnReadOnlyDatabase",
                                f"Writing in read access mode not allowed. Attempted write to read-only database "
                                f"'{db.name}'.")
            return db

    # ----------------------------------------------------------------------------------------------------------
    # data

    def counts(self, name: str | None) -> Graph:
        """The graph behind a session database (alias resolved); it must be online."""
        with self.lock:
            db = self.resolve(name)
            if db.type == "system":
                raise DbmsError("Neo.ClientError.Statement.NotSystemDatabaseError",
                                "This is an administration command and it should be executed against the system "
                                "database: data queries cannot run on 'system'.")
            status = self._status(db, count_poll=False)
            if status != "online":
                raise DbmsError("Neo.TransientError.General.DatabaseUnavailable",
                                f"Database '{db.name}' is unavailable (currentStatus {status}).")
            return db.graph

    # ----------------------------------------------------------------------------------------------------------
    # Arrow import lifecycle (the Flight server validates the batches; this keeps the state)

    def arrow_create(self, name: Any, body: dict[str, Any]) -> ArrowImport:
        with self.lock:
            self._settle()
            if self.faults.refuse_create:
                raise ArrowError(self.faults.refuse_create,
                                 f"Arrow database import '{name}' refused (injected fault)")
            try:
                name = self.validate_database_name(name)
            except DbmsError as exc:
                raise ArrowError("INVALID_ARGUMENT", exc.message) from None
            if name in self.imports:
                raise ArrowError("ALREADY_EXISTS", f"An import process with the name '{name}' is already running.")
            leftover = (name in self.stores or name in self.mounting) and self.faults.store_checked_at == "create"
            if name in self.databases or name in self.aliases or (leftover and not body.get("force")):
                raise ArrowError("ALREADY_EXISTS", f"The database [{name}] already exists. The graph export "
                                                   "procedure can only create new databases.")
            id_type = str(body.get("id_type", "INTEGER")).upper()
            if id_type not in ("INTEGER", "STRING"):
                raise ArrowError("INVALID_ARGUMENT", f"Unknown id_type '{id_type}': expected INTEGER or STRING")
            if body.get("force"):
                self.stores.pop(name, None)  # force=true deletes old store files
                if self.mounting.pop(name, None):  # under GDS's feet: the race arrow_mount.py avoids
                    self.log("arrow", "REPLACED_STORE_BEING_REGISTERED", name=name)
            imp = ArrowImport(name, id_type=id_type, id_property=body.get("id_property"), options=dict(body))
            self.imports[name] = imp
            return imp

    def arrow_import(self, name: Any) -> ArrowImport:
        with self.lock:
            imp = self.imports.get(str(name).lower()) if isinstance(name, str) else None
            if imp is None:
                raise ArrowError("NOT_FOUND", f"No import process with the name '{name}' is running.")
            return imp

    def arrow_abort(self, name: Any) -> None:
        with self.lock:
            imp = self.arrow_import(name)
            imp.state = "aborted"
            del self.imports[imp.name]

    def arrow_finish(self, imp: ArrowImport) -> None:
        """After RELATIONSHIP_LOAD_DONE: write the store, register and start the database (GdsParallelBatchImporter)."""
        with self.lock:
            self.imports.pop(imp.name, None)
            imp.state = "done"
            leftover = (imp.name in self.stores or imp.name in self.mounting) and not imp.options.get("force")
            if imp.name in self.databases or imp.name in self.aliases or leftover:
                raise ArrowError("ALREADY_EXISTS", f"The database [{imp.name}] already exists. The graph export "
                                                   "procedure can only create new databases.")
            if self.faults.register_after_seconds:  # GDS still writing and starting the store
                self.mounting[imp.name] = (time.time() + self.faults.register_after_seconds, imp.graph)
                return
            self._register_import(imp.name, imp.graph)

    def _register_import(self, name: str, graph: Graph) -> None:
        """GDS's end of an import: register and start the database, or leave the store files unmounted."""
        with self.lock:
            if name in self.databases or name in self.aliases:  # someone mounted it first
                self.log("arrow", "GDS_UNABLE_TO_START", name=name)
                return
            if not self.faults.register_after_import or len(self.databases) >= self.max_databases:
                self.stores[name] = graph  # files on disk, not mounted; logged as "Unable to start"
                return
            db = Database(name, graph=graph, polls_until_visible=self.faults.hidden_polls,
                          polls_until_online=self.faults.starting_polls)
            if self.faults.start_fails:
                db.status, db.status_message = "offline", "Unable to start database (injected fault)"
                db.polls_until_online = 0
            elif db.polls_until_online:
                db.status = "starting"
            self.databases[name] = db

    # ----------------------------------------------------------------------------------------------------------
    # what finishes later: a WAIT that gave up, GDS registering its store

    def wait_rows(self, statement: str) -> tuple[list[list[Any]], float]:
        """The rows of a Cypher 5 WAIT (address, state, message, success) for queries.<statement>, and in how
        many seconds the operation really finishes (0: done before the answer)."""
        with self.lock:
            late = self.faults.wait_gives_up.get(statement, 0.0)
            if late:
                return [["127.0.0.1:7687", "TimedOut", "the time limit was up before the operation finished",
                         False]], late
            return [["127.0.0.1:7687", "CaughtUp", "caught up", True]], 0.0

    def finishes_in(self, db: Database | None, seconds: float) -> None:
        """A CREATE whose WAIT gave up: the database it made is "starting" for `seconds` more."""
        with self.lock:
            if db is not None and seconds:
                db.status, db.online_at = "starting", time.time() + seconds

    def _settle(self) -> None:
        """Apply what has finished by now (called under the lock by every look at the databases)."""
        now = time.time()
        for name, db in list(self.databases.items()):
            if db.gone_at and db.gone_at <= now:
                del self.databases[name]
                self.privileges = {p for p in self.privileges if p.database != name}
        for name, (until, graph) in list(self.mounting.items()):
            if until <= now:
                del self.mounting[name]
                self._register_import(name, graph)


def _alias_properties(properties: dict[str, Any] | None) -> dict[str, Any]:
    """An alias's PROPERTIES as Neo4j keeps them: keys in lower case (its manual shows `{nameContainsSpace: true}`
    listed as `{namecontainsspace: TRUE}`), values as given."""
    return {str(key).lower(): value for key, value in (properties or {}).items()}
