"""A protocol-level STAND-IN for Neo4j Enterprise 5.x + GDS Arrow Flight, for tests. This is NOT Neo4j.

Neo4j Enterprise and a licensed GDS Arrow server cannot run in CI, so these tests talk to two small servers that
speak the real wire protocols on real loopback sockets: the production code (the official `neo4j` Python driver and
the `pyarrow.flight` client) talks to them unchanged.

What it models (`dbms.Dbms`, shared by both servers, thread-safe):
- Bolt 5.4 (`bolt_server`): handshake, chunking, PackStream, HELLO/LOGON basic auth, auto-commit and explicit
  transactions, PULL/DISCARD streaming, FAILED/IGNORED/RESET semantics, TELEMETRY.
- Exactly the Cypher statements in `bluegreen_dagster/targets/neo4j/queries.py`, recognised by their text
  (`{label}`-style templates match backtick-quoted names), including the Cypher fallback loader's UNWIND writes
  (each executed by hand, `id(n)` included). Any other statement fails
  with Neo.ClientError.Statement.SyntaxError, so drift is loud; a test checks every queries.py statement has a
  handler. Administration statements are
  accepted only on `system` (stricter than Neo4j, which routes them there itself).
- Databases with states (an Arrow import is "loading" and not listed; "starting" then "online"; "offline" when a
  start fails), node/relationship contents to answer counts per label and type, local aliases, the shared
  name namespace, RESTRICT on DROP DATABASE (ExistingAliasFound), ExistingDatabaseFound, IllegalAliasChain,
  DatabaseNotFound, `dbms.max_databases`, user/password, heap and page-cache numbers, Community-edition refusal of
  administration commands (UnsupportedAdministrationCommand).
- GDS Arrow v1 (`flight_server`): basic-token handshake with a Bearer token, `v1/CREATE_DATABASE`, PUT_COMMAND
  DoPut streams with one ack per batch, `v1/NODE_LOAD_DONE` / `v1/RELATIONSHIP_LOAD_DONE` with received counts,
  `v1/ABORT`, input validation (int64 ids > 0, known relationship endpoints, non-null labels, the property types
  the GDS docs list: relationship properties double only, strings only behind a switch), NaN for null floats,
  expiring tokens, slow LOAD_DONE, stalled streams, and gRPC statuses as in reference §1.7.
- Fault injection (`Dbms.faults`, `Dbms.fail_next`, and the Flight server's attributes): refuse the create, fail
  any action, drop a DoPut stream after k batches (or reset its TCP connection via `tcp_proxy.TcpProxy`), stall
  it, report leftover store files at finalisation, reject batch k, keep a finished database hidden or "starting" for N polls, never register it (so the
  client must `CREATE DATABASE ... WAIT` to mount the store), register it only N seconds after
  RELATIONSHIP_LOAD_DONE (`register_after_seconds`: a CREATE meanwhile mounts an incomplete store, logged
  MOUNTED_INCOMPLETE_STORE), fail to start it, fail any statement once, answer a CREATE/DROP WAIT with
  success=false while the operation finishes seconds later (`wait_gives_up`).
- An event log (`Dbms.events`) of what the clients sent, for assertions such as "ABORT was sent".
- Restarts (`persistence.py`, `--data-dir`): committed state written before each commit is answered and read at
  start; open transactions and unfinished Arrow imports are lost, as on Neo4j (docs/testing.md, "The stand-in
  across a restart"). `--hold-at-batch` stops loads at a batch so a test can kill the process there.

What it deliberately does NOT model:
- A Cypher engine: no parser, no planner, no general MATCH/CREATE; index statements are accepted no-ops.
- Store files: an Arrow import whose database is never registered leaves its store behind; DROP DATABASE IF
  EXISTS does not remove it (Neo4j does not know it), CREATE DATABASE mounts it, an Arrow create with force=true
  replaces it. This follows GdsParallelBatchImporter (reference §1.6) and is UNVERIFIED against a real server.
- Replication: cluster members (`Dbms.servers`, each optionally with a Bolt listener of its own,
  `BoltServer(member=...)`) share one state; a member's lag is only what a test sets (`member_status`,
  `unlisted`). ROUTE answers a routing table (first hosting member writes, the others read); bookmarks are opaque
  counters, logged but never waited for.
- TLS on either server, Bolt 5.5+ features (GQL status objects in FAILURE), notifications, impersonation, re-auth.
- Timing: WAIT returns at once (success=false only where `wait_gives_up` says so); GDS `abortion_timeout` is not
  enforced; nothing is slow unless a test sets `register_after_seconds`, `wait_gives_up` or the Flight server's
  `batch_delay`, `load_done_delay`, `token_ttl` or `stall_after_batches`.
- ALREADY_EXISTS is sent as gRPC UNKNOWN with an "Already exists: ..." message (pyarrow cannot raise that status
  from Python); error messages resemble Neo4j's but are not copies.
- The UNVERIFIED points of reference §1 (exact property types, whether LOAD_DONE waits for the database to start,
  the id_property default, the exact alias error codes) follow the reference's best guess; only a real licensed
  server can settle them (the opt-in `neo4j_enterprise` tests).

Start both servers with `tests.standin.server.start_standin()`.
"""
