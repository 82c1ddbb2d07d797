"""The Neo4j Enterprise target: one database per snapshot, loaded through GDS Arrow (or Cypher), a per-customer
alias switched with `ALTER ALIAS`, old databases dropped with `DROP DATABASE ... RESTRICT` semantics.

Composition: `admin.Admin` (Bolt, `system` database), `arrow.ArrowLoader` (GDS Arrow Flight v1) and
`cypher_loader.CypherLoader` (fallback). Every statement text lives in `queries.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

from bluegreen_dagster import value_stats
from bluegreen_dagster.config import Settings
from bluegreen_dagster.names import InvalidName, parse_partition_key, validate_customer
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.snapshots import Snapshot
from bluegreen_dagster.targets.base import UNDECIDED_STATUSES, DatabaseInfo, GraphTarget, Health, LoadReport
from bluegreen_dagster.targets.base import PermanentTargetError, QueryResult, TargetError, TransientTargetError
from bluegreen_dagster.targets.base import Fence, FenceMoved, validate_alias, validate_database
from bluegreen_dagster.targets.neo4j import arrow_mount, queries, readiness
from bluegreen_dagster.targets.neo4j.access import ReaderAccess
from bluegreen_dagster.targets.neo4j.admin import Admin
from bluegreen_dagster.targets.neo4j.cluster import allocation_pending

log = logging.getLogger(__name__)

# The session names the database (never query text); still, only plain database names are accepted.
_DATABASE_NAME_RE = re.compile(r"^[a-z][a-z0-9.-]{1,62}$")


class Neo4jTarget(GraphTarget):
    kind = "neo4j"

    def __init__(self, settings: Settings, *, admin: Admin | None = None, poll_interval: float = 1.0) -> None:
        self.settings = settings
        self.neo4j = settings.neo4j
        self.admin = admin or Admin(settings.neo4j)
        self.poll_interval = poll_interval
        # The last counts `count` read of each database (verification's, right before a move): what `_await_served`
        # expects reads through the alias to answer, without counting the database again.
        self._counted: dict[str, GraphCounts] = {}

    def close(self) -> None:
        self.admin.close()

    # ---------------------------------------------------------------------------------------------------------
    # health

    def health(self, snapshot: Snapshot | None = None) -> Health:
        """Measured on `system` (the page cache on the home database, which `system` refuses); a measure that cannot
        be read is "unknown", never a failure. On a cluster, heap and page cache are measured on every server that
        can host the new database (`_server_health`), each over its threshold a problem naming the server."""
        orch = self.settings.orchestrator
        health = Health()
        components = self.admin.components()  # raises TransientTargetError when unreachable
        health.measurements["version"] = components["version"]
        health.measurements["edition"] = components["edition"]

        servers = self._measured(self.admin.servers, "the cluster's servers") or []
        if len(servers) > 1:
            self._server_health(servers, health)
        else:
            self._memory(self.admin, health)
        databases = self._measured(self.admin.count_databases, "the number of databases")
        health.measurements["databases"] = "unknown" if databases is None else databases
        if databases is not None and databases >= orch.max_databases:
            health.problems.append(f"{databases} standard databases, max_databases is {orch.max_databases}: "
                                   "wait for cleanup or lower keep_databases")
        if snapshot is not None:
            health.measurements["snapshot_bytes"] = snapshot.size_bytes
        return health

    @staticmethod
    def _measured(read, what: str):
        """`read()`, or None when the server does not answer it (reported as unknown by the caller)."""
        try:
            return read()
        except TargetError as exc:
            log.info("%s not readable: %s", what, exc)
            return None

    def _memory(self, admin: Admin, health: Health, server: str = "") -> None:
        """Heap and page-cache use of the server `admin` talks to, checked against the thresholds."""
        orch = self.settings.orchestrator
        suffix, where = (f"@{server}", f"server {server}: ") if server else ("", "")
        for key, read, limit, setting in (
                ("heap_percent", admin.heap_percent, orch.heap_threshold_percent, "heap_threshold_percent"),
                ("pagecache_percent", admin.pagecache_percent, orch.pagecache_threshold_percent,
                 "pagecache_threshold_percent")):
            value = self._measured(read, f"{where}{key}")  # pagecache: Community, or metrics disabled
            health.measurements[key + suffix] = "unknown" if value is None else round(value, 1)
            if value is not None and value > limit:
                what = "heap" if key == "heap_percent" else "page cache"
                health.problems.append(f"{where}{what} {value:.1f}% used, over {setting} {limit:g}%")

    def _server_health(self, servers: list[dict], health: Health) -> None:
        """Every server the system database may allocate the new database to (state Enabled; Cordoned, Free and
        Deallocating ones get no new databases) is measured through its own Bolt address from SHOW SERVERS."""
        hosts = [s for s in servers if s.get("state") == "Enabled"]
        health.measurements["servers"] = len(servers)
        for server in hosts:
            name = str(server.get("name") or server.get("address"))
            try:
                member = self.admin.for_server(str(server.get("address") or ""))
            except PermanentTargetError as exc:
                log.info("server %s not measured: %s", name, exc)
                health.measurements[f"heap_percent@{name}"] = "unknown"
                health.measurements[f"pagecache_percent@{name}"] = "unknown"
                continue
            try:
                self._memory(member, health, name)
            finally:
                member.close()
        for key in ("heap_percent", "pagecache_percent"):  # the worst server, for the one-number views
            values = [v for k, v in health.measurements.items() if k.startswith(key + "@") and v != "unknown"]
            health.measurements[key] = max(values) if values else "unknown"

    # ---------------------------------------------------------------------------------------------------------
    # load

    def _status(self, name: str) -> tuple[str, str] | None:
        return self.admin.database_status(name)

    def load(self, snapshot: Snapshot) -> LoadReport:
        name = validate_database(snapshot.key)
        start = time.monotonic()
        status = self._status(name)
        if status is not None:
            current, message = status
            if current == "online":
                counts = self.count(name)
                if counts.nodes and queries.LOAD_LABEL not in counts.labels:
                    log.info("%s already exists and is online: reusing it", name)
                    readiness.make_ready(self.admin, self.neo4j, name, counts.labels, poll_seconds=self.poll_interval)
                    return LoadReport(name, counts.nodes, counts.relationships, 0, 0.0, reused=True)
                # Empty, or still carrying the Cypher loader's helper label: an interrupted load. Start again.
                log.warning("%s is online but its load never finished: dropping it and loading again", name)
                self.admin.drop_database(name)
            elif current in UNDECIDED_STATUSES:  # coming up, or a cluster member not answering: never drop
                raise TransientTargetError(f"database {name} exists and is {current}; try again when it is online")
            else:
                # A leftover of a failed attempt at this same snapshot (offline, dirty, initial...): start again.
                log.warning("%s exists in status %s (%s): dropping it and loading again", name, current, message)
                self.admin.drop_database(name)

        planned = snapshot.file_state()
        if self.neo4j.loader == "arrow":
            from bluegreen_dagster.targets.neo4j.arrow import ArrowLoader

            servers = self.admin.server_count()
            if servers > 1 and not self.neo4j.arrow_on_cluster:
                raise PermanentTargetError(
                    f"neo4j.loader is arrow but the DBMS is a cluster of {servers} servers: a GDS Arrow import builds "
                    "the store on the one server GDS runs on, which the cluster does not replicate. Use "
                    "neo4j.loader: cypher, or set neo4j.arrow_on_cluster: true if you know what GDS does there")

            loader = ArrowLoader(self.neo4j, drop=self.admin.drop_database, progress=self.progress,
                                 is_unregistered=lambda n: arrow_mount.stays_unregistered(
                                     self.admin, self.neo4j, n, snapshot.size_bytes, poll_seconds=self.poll_interval))
            try:
                result = loader.load(snapshot)  # aborts and drops by itself on failure
            finally:
                loader.close()
            try:
                snapshot.require_unchanged_since(planned)
                arrow_mount.await_registration(self.admin, self.neo4j, name, snapshot.size_bytes,
                                               topology=self.settings.topology_for(snapshot.id.customer),
                                               poll_seconds=self.poll_interval)
                self.wait_online(name)
            except BaseException:
                self._drop_quietly(name)
                raise
        else:
            from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader

            CypherLoader.check(snapshot)  # bad input refused before the database exists
            self.admin.create_database(name, self.settings.topology_for(snapshot.id.customer))
            try:
                self.wait_online(name)
                result = CypherLoader(self.admin, self.neo4j.batch_size, self.progress).write(name, snapshot)
                snapshot.require_unchanged_since(planned)
            except BaseException:
                self._drop_quietly(name)
                raise
        # Ready before live: the same indexes and read-only mode whichever loader built it.
        ready = time.monotonic()
        try:
            readiness.make_ready(self.admin, self.neo4j, name, self.count(name).labels,
                                 poll_seconds=self.poll_interval)
        except PermanentTargetError:
            self._drop_quietly(name)
            raise
        phases = {**result.phases, "indexes_online": time.monotonic() - ready}
        return dataclasses.replace(result, seconds=time.monotonic() - start, phases=phases)

    def _drop_quietly(self, name: str) -> None:
        try:
            self.admin.drop_database(name)
        except TargetError as exc:
            log.error("could not drop %s after a failed load: %s", name, exc)

    def wait_online(self, name: str) -> None:
        """Poll until `currentStatus = 'online'` and, on a cluster, every allocated server runs it (`_allocated`);
        never creates (an Arrow-made store is arrow_mount.py's)."""
        deadline = time.monotonic() + self.neo4j.online_timeout
        status: tuple[str, str] | None = None
        while True:
            status = self._status(name)
            if status is not None and status[0] == "online" and self._allocated(name, deadline):
                return
            now = time.monotonic()
            if status is not None and status[0] == "quarantined":
                raise PermanentTargetError(f"database {name} is quarantined: {status[1]}")
            if now >= deadline:
                seen = f"status {status[0]}" + (f": {status[1]}" if status[1] else "") if status else "not listed"
                raise TransientTargetError(f"database {name} is not online after {self.neo4j.online_timeout:g}s "
                                           f"({seen}); see the Neo4j debug log")
            time.sleep(self.poll_interval)

    def _allocated(self, name: str, deadline: float) -> bool:
        """Every server allocated to `name` reports online and the running copies equal the requested ones
        (cluster.allocation_pending); until then progress is logged. True at once on a single server."""
        last_said = 0.0
        while (pending := allocation_pending(self.admin.allocation(name))) is not None:
            if time.monotonic() >= deadline:
                raise TransientTargetError(f"database {name} is not running on every allocated server after "
                                           f"neo4j.online_timeout {self.neo4j.online_timeout:g}s ({pending}); "
                                           "see SHOW SERVERS and the debug log of the servers named")
            if time.monotonic() - last_said >= 5 * self.poll_interval:
                log.info("%s: waiting for the cluster: %s", name, pending)
                last_said = time.monotonic()
            time.sleep(self.poll_interval)
        return True

    # ---------------------------------------------------------------------------------------------------------
    # reading

    def count(self, database: str) -> GraphCounts:
        """Counts read from `database` (a snapshot database, or any existing one such as Community's `neo4j`)."""
        if not isinstance(database, str) or not _DATABASE_NAME_RE.match(database):
            raise PermanentTargetError(f"refusing to count {database!r}: not a Neo4j database name")
        what = f"counting {database}"
        counts = self._counts(self.admin.read(database, queries.COUNT_NODES, what),
                              self.admin.read(database, queries.COUNT_BY_LABEL, what),
                              self.admin.read(database, queries.COUNT_BY_TYPE, what))
        self._counted[database] = counts
        return counts

    def value_stats(self, database: str, expected: dict) -> dict | None:
        """Per (label or type, property) of `expected`: non-null count, min and max (value_stats.py). None with
        `neo4j.arrow_nulls: nan` on the Arrow loader, which stores NaN where the snapshot has no value."""
        if not isinstance(database, str) or not _DATABASE_NAME_RE.match(database):
            raise PermanentTargetError(f"refusing to read {database!r}: not a Neo4j database name")
        if self.neo4j.loader == "arrow" and self.neo4j.arrow_nulls == "nan":
            return None
        found = {}
        for kind, query in (("label", queries.VALUE_STATS_NODES), ("type", queries.VALUE_STATS_RELATIONSHIPS)):
            for name in sorted({p for k, _, p in expected if k == kind}):
                rows = self.admin.read(database, query, f"checking the values of {name} in {database}",
                                       {"property": name})
                for row in rows:
                    if row["owner"] != queries.LOAD_LABEL:
                        found[(kind, row["owner"], name)] = value_stats.PropertyStats(
                            int(row["count"]), value_stats.comparable(row["low"]),
                            value_stats.comparable(row["high"]))
        return found

    def read_query(self, database: str, query: str, *, timeout_seconds: float, keep_rows: int = 1) -> QueryResult:
        """`query` in a READ transaction on `database` (a snapshot database, or e.g. Community's `neo4j`)."""
        if not isinstance(database, str) or not _DATABASE_NAME_RE.match(database):
            raise PermanentTargetError(f"refusing to query {database!r}: not a Neo4j database name")
        return self.admin.read_only_query(database, query, timeout=timeout_seconds, keep_rows=keep_rows)

    @staticmethod
    def _counts(nodes: list[dict], labels: list[dict], types: list[dict]) -> GraphCounts:
        by_type = {r["type"]: int(r["count"]) for r in types}
        return GraphCounts(nodes=int(nodes[0]["count"]) if nodes else 0, relationships=sum(by_type.values()),
                           labels={r["label"]: int(r["count"]) for r in labels}, types=by_type)

    def list_databases(self, customer: str) -> list[DatabaseInfo]:
        validate_alias(customer)
        out = []
        for name, status in self.admin.list_databases(customer):
            try:
                sid = parse_partition_key(name)
            except InvalidName:
                continue
            if sid.customer == customer:
                out.append(DatabaseInfo(name, self._completeness(name) if status == "online" else status))
        return sorted(out, key=lambda d: parse_partition_key(d.name).ts)

    def _completeness(self, name: str) -> str:
        """An online database is "incomplete" while the Cypher loader's marker is there or nothing was written
        yet (a load writing it now, or one cut off, e.g. by a server restart): cleanup drops it unless a run loads
        it, and nothing switches, reuses or rolls back to it (they all want "online"). "unknown" if it cannot be
        read now, e.g. dropped since SHOW DATABASES listed it (cleanup waits for that; the next listing decides)."""
        what = f"checking whether {name} was loaded completely"
        try:
            if self.admin.read(name, queries.COUNT_LOAD_MARKERS, what)[0]["markers"]:
                return "incomplete"
            return "online" if self.admin.read(name, queries.COUNT_NODES, what)[0]["count"] else "incomplete"
        except TargetError as exc:
            log.warning("%s", exc)
            return "unknown"

    def alias_target(self, customer: str) -> str | None:
        return self.admin.alias_target(customer)

    def prepare_readers(self, database: str, customer: str) -> None:
        """Readers' access follows the alias (access.py): grants on `database`, then proof, before any move."""
        if self.neo4j.reader_access_follows_alias:
            ReaderAccess(self.settings, self.admin).prepare(database, customer, self.admin.alias_target(customer))

    def drain_seconds(self) -> float:
        return self.settings.orchestrator.drain_seconds

    def point_alias(self, customer: str, database: str) -> None:
        self.move_alias(customer, database, expect=None)

    def alias_fence(self, customer: str) -> Fence:
        return Fence(*self.admin.alias_fence(customer))

    def move_alias(self, customer: str, database: str, *, expect: Fence | None) -> None:
        """Every move of the alias comes here (switch, rollback, unpin, reconcile): readers first, then the fence
        compared with `expect` right before the one statement that moves the alias and raises its fence (Neo4j
        has no conditional ALTER ALIAS: the window left is one Bolt round trip, docs/concurrency.md)."""
        validate_alias(customer)
        validate_database(database)
        self.prepare_readers(database, customer)
        now = self.alias_fence(customer)
        if expect is not None and now != expect:
            raise FenceMoved(f"alias {customer} moved since it was read (it was {expect.database or '(none)'}, "
                             f"move {expect.moves}; it is {now.database or '(none)'}, move {now.moves}); "
                             f"not moved to {database}")
        if now.database is None:
            self.admin.create_alias(customer, database, now.moves + 1)
        elif now.database != database:
            self.admin.alter_alias(customer, database, now.moves + 1)
        current = self.admin.alias_target(customer)
        if current != database:
            raise PermanentTargetError(f"alias {customer} points at {current!r} after moving it to {database}")
        self._await_served(customer, database)

    def _await_served(self, customer: str, database: str) -> None:
        """After a move, read as readers read: through the alias, routed to a reader member on a cluster and
        chained to the move's bookmark, until it answers with `database`'s counts (a member that has not applied
        the move yet still serves the old graph), at most neo4j.online_timeout. `database`'s own counts are those
        verification just read; while the alias answers others, they are read again with each try."""
        want = self._counted.pop(database, None)
        if want is None:
            want = self.count(database)
        deadline = time.monotonic() + self.neo4j.online_timeout
        while (seen := self.count(customer)) != want:
            if time.monotonic() >= deadline:
                raise TransientTargetError(
                    f"alias {customer} was moved to {database}, but reads through it still answer another graph "
                    f"after neo4j.online_timeout {self.neo4j.online_timeout:g}s ({seen.nodes} nodes, {database} has "
                    f"{want.nodes}): a reader member has not applied the move; see SHOW ALIASES on each server")
            log.info("alias %s: reads through it do not answer %s yet, waiting", customer, database)
            time.sleep(self.poll_interval)
            want = self.count(database)

    def drop_database(self, database: str) -> None:
        self.admin.drop_database(database)

    def reader_location(self, customer: str) -> str | None:
        validate_customer(customer)
        scheme = ("neo4j" if self.neo4j.routing else "bolt") + ("+s" if self.neo4j.tls else "")
        return f"{scheme}://{self.neo4j.host}:{self.neo4j.bolt_port} database={customer}"


__all__ = ["Neo4jTarget"]
