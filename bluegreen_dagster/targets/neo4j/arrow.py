"""The GDS Arrow loader: one Neo4j database per snapshot, created through the GDS Arrow Flight server (protocol v1).

Sequence (reference neo4j.md §1.4): `v1/CREATE_DATABASE` -> DoPut node streams (one ack per batch) ->
`v1/NODE_LOAD_DONE` (node_count checked) -> DoPut relationship streams -> `v1/RELATIONSHIP_LOAD_DONE`
(relationship_count checked). On any failure after the create: `v1/ABORT`, drop what was made, raise the cause.

Where each concern lives:
- `arrow_schema.py`: what is sent (types, nulls, labels), planned once per file and checked on the Parquet footers
  before anything is created;
- `arrow_streams.py`: row-group windows, read-ahead, parallel DoPut streams, stall detection;
- `flight_client.py`: the connection, token refresh, deadlines only on short calls, error mapping;
- `arrow_mount.py`: after RELATIONSHIP_LOAD_DONE, waiting for GDS to register the database (never a CREATE
  while GDS may still be writing or starting its store).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bluegreen_dagster.config import Neo4jSettings
from bluegreen_dagster.progress import NO_PROGRESS, LoadProgress
from bluegreen_dagster.schema_rules import check_snapshot
from bluegreen_dagster.snapshots import Snapshot
from bluegreen_dagster.targets.base import LoadReport, PermanentTargetError, TargetError, TransientTargetError
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.arrow_schema import FilePlan, plan_and_check
from bluegreen_dagster.targets.neo4j.arrow_streams import Uploader, units_of
from bluegreen_dagster.targets.neo4j.flight_client import AlreadyExists, FlightConnection

log = logging.getLogger(__name__)

CREATE_DATABASE = "v1/CREATE_DATABASE"
NODE_LOAD_DONE = "v1/NODE_LOAD_DONE"
RELATIONSHIP_LOAD_DONE = "v1/RELATIONSHIP_LOAD_DONE"
ABORT = "v1/ABORT"


class ArrowLoader:
    """Creates database `snapshot.key` through the GDS Arrow server. `drop` removes a half-made database;
    `is_unregistered` tells whether Neo4j lists no database of a name, and GDS is not about to register one
    (arrow_mount.stays_unregistered): then leftover store files of an earlier import of this very snapshot may be
    replaced with force=true. `say` receives the progress lines."""

    def __init__(self, settings: Neo4jSettings, drop: Callable[[str], None] | None = None,
                 is_unregistered: Callable[[str], bool] | None = None, *, say: Callable[[str], None] | None = None,
                 progress: LoadProgress = NO_PROGRESS, **connection: float) -> None:
        self.settings = settings
        self.progress = progress  # rows sent so far, per entity (bluegreen_dagster/progress.py)
        self.drop = drop
        self.is_unregistered = is_unregistered
        self.say = say or log.info
        self.conn = FlightConnection(settings, say=self.say, **connection)
        self.where = self.conn.where

    def close(self) -> None:
        self.conn.close()

    def check_protocol(self) -> None:
        types = self.conn.list_action_types()
        if CREATE_DATABASE not in types:
            raise PermanentTargetError(
                f"GDS Arrow server at {self.where} is not running/enabled/licensed or speaks no v1 protocol "
                f"(it offers no {CREATE_DATABASE}; actions: {', '.join(sorted(types)) or 'none'})")

    def plan(self, snapshot: Snapshot) -> tuple[list[FilePlan], list[FilePlan]]:
        """Every file planned and checked from its footers: bad input fails here, before anything is created."""
        check_snapshot(snapshot.node_files, snapshot.relationship_files, "arrow")
        return ([plan_and_check(p, "node", self.settings) for p in snapshot.node_files],
                [plan_and_check(p, "relationship", self.settings) for p in snapshot.relationship_files])

    # -- the whole load ----------------------------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> LoadReport:
        database = snapshot.key
        start = time.monotonic()
        nodes, relationships = self.plan(snapshot)
        self.check_protocol()
        try:
            result = self._attempt(database, nodes, relationships, force=False)
        except AlreadyExists as exc:
            # Store files of an earlier attempt at this snapshot whose database was never registered: DROP DATABASE
            # cannot remove them, and force=false refuses them forever (at CREATE_DATABASE or only at
            # RELATIONSHIP_LOAD_DONE). Neo4j lists no database of this name, not even after the wait GDS gets to
            # register one (is_unregistered): replace them, once.
            if self.is_unregistered is None:
                raise
            if not self.is_unregistered(database):  # not listed when the load began: GDS registered it since
                raise TransientTargetError(f"{exc}; Neo4j lists {database} now (GDS registered an earlier import of "
                                           "this snapshot): the retry finds it and reuses it once online") from None
            log.warning("%s: store files of an earlier, unregistered import exist (%s); loading again with "
                        "force=true", database, exc)
            result = self._attempt(database, nodes, relationships, force=True)
        result.seconds = time.monotonic() - start
        log.info("arrow load %s: %d nodes, %d relationships, %d bytes in %.1fs", database, result.nodes,
                 result.relationships, result.bytes_read, result.seconds)
        return result

    def _upload(self, database: str, entity: str, plans: list[FilePlan]):
        s = self.settings
        return Uploader(self.conn, database, entity, batch_size=s.batch_size, concurrency=s.concurrency,
                        stall_timeout=s.stall_timeout, heartbeat=self.conn.heartbeat,
                        progress=self.progress).run(units_of(plans))

    def _attempt(self, database: str, node_plans: list[FilePlan], rel_plans: list[FilePlan], *,
                 force: bool) -> LoadReport:
        body = {"name": database, "id_type": "INTEGER", "id_property": queries.ID_PROPERTY,
                "concurrency": self.settings.concurrency, "force": force}
        self.conn.action(CREATE_DATABASE, body)  # refused: nothing was created, nothing to abort
        try:
            nodes = self._upload(database, "node", node_plans)
            reply = self.conn.long_action(NODE_LOAD_DONE, {"name": database})
            if int(reply.get("node_count", -1)) != nodes.rows:
                raise PermanentTargetError(f"{database}: sent {nodes.rows} nodes but the GDS Arrow server counted "
                                           f"{reply.get('node_count')}")
            rels = self._upload(database, "relationship", rel_plans)
            reply = self.conn.long_action(RELATIONSHIP_LOAD_DONE, {"name": database})
            if int(reply.get("relationship_count", -1)) != rels.rows:
                raise PermanentTargetError(f"{database}: sent {rels.rows} relationships but the GDS Arrow server "
                                           f"counted {reply.get('relationship_count')}")
        except BaseException as exc:
            # "Already exists" at finalisation about a database Neo4j does list is someone else's: never drop it.
            try:
                mine = not isinstance(exc, AlreadyExists) or (self.is_unregistered is not None
                                                               and self.is_unregistered(database))
            except TargetError:  # GDS may still be registering it: never drop
                mine = False
            dropped = self.abort_and_drop(database, exc, drop=mine)
            if isinstance(exc, TransientTargetError) and mine:
                # The user sees this message on the retried step: say whether anything half-loaded is left.
                if dropped:
                    raise type(exc)(f"{exc}; the import was aborted and {database} dropped, nothing is left "
                                    "behind") from None
                raise type(exc)(f"{exc}; {database} could not be dropped now (the server did not answer): an "
                                "unfinished import ends at a restart or after gds.arrow.abortion_timeout, and the "
                                "next load of this snapshot drops a leftover database") from None
            raise
        return LoadReport(database, nodes.rows, rels.rows, nodes.bytes + rels.bytes, 0.0)

    def abort_and_drop(self, database: str, cause: BaseException, *, drop: bool = True) -> bool:
        """True when the database was dropped (failures are logged, never raised)."""
        log.warning("arrow load of %s failed (%s): aborting the import%s", database, self.conn.scrub(str(cause))[:300],
                    " and dropping the database" if drop else "")
        try:
            self.conn.action(ABORT, {"name": database})
        except TargetError as exc:  # NOT_FOUND once the import finished or never started: nothing to abort
            log.info("v1/ABORT %s: %s", database, exc)
        if drop and self.drop is not None:
            try:
                self.drop(database)
                return True
            except TargetError as exc:
                log.error("could not drop %s after a failed load: %s", database, exc)
        return False
