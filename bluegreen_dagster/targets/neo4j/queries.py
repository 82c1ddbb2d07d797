"""Every Cypher statement the Neo4j target sends, in one place.

Names (databases, aliases) are always `$parameters`, never formatted into the text. The real-Community test
tier checks that each administration statement here is accepted by Neo4j's parser, and the Enterprise stand-in
(tests/standin) answers exactly these statements, so keep them here and nowhere else.
"""

# --- administration, always sent to the `system` database, auto-commit -------------------------------------------

COMPONENTS = "CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition"

# One row per database and hosting server (a cluster): admin.py merges them into one state per database.
LIST_DATABASES = (
    "SHOW DATABASES YIELD name, type, currentStatus "
    "WHERE type = 'standard' AND name STARTS WITH $prefix "
    "RETURN name, currentStatus"
)

SERVER_COUNT = "SHOW SERVERS YIELD name RETURN count(name) AS servers"

DATABASE_STATUS = (
    "SHOW DATABASES YIELD name, currentStatus, statusMessage "
    "WHERE name = $name RETURN currentStatus, statusMessage"
)

COUNT_DATABASES = "SHOW DATABASES YIELD name, type WHERE type = 'standard' RETURN count(DISTINCT name) AS databases"

ALIAS_TARGET = "SHOW ALIASES FOR DATABASE YIELD name, database WHERE name = $alias RETURN database"

# The alias carries its fence (fence.py) as PROPERTIES, written in the same statement as its target: `served` (the
# database it was pointed at) and `moves` (raised by every move). Neo4j shows property keys in lower case.
ALIAS_FENCE = ("SHOW ALIASES FOR DATABASE YIELD name, database, properties WHERE name = $alias "
               "RETURN database, properties")

CREATE_ALIAS = ("CREATE ALIAS $alias IF NOT EXISTS FOR DATABASE $database "
                "PROPERTIES { served: $database, moves: $moves }")

ALTER_ALIAS = "ALTER ALIAS $alias SET DATABASE TARGET $database PROPERTIES { served: $database, moves: $moves }"

CREATE_DATABASE = "CREATE DATABASE $name WAIT"
# On a cluster (neo4j.topology): the counts are parameters as well (Neo4j 5.26 and later).
CREATE_DATABASE_TOPOLOGY = "CREATE DATABASE $name TOPOLOGY $primaries PRIMARIES $secondaries SECONDARIES WAIT"

# Where a database runs: one row per hosting server, with the copies running now and the copies asked for
# (cluster.py reads them: every row online and current == requested before the database is verified).
DATABASE_ALLOCATION = (
    "SHOW DATABASES YIELD name, serverID, address, role, currentStatus, statusMessage, currentPrimariesCount, "
    "currentSecondariesCount, requestedPrimariesCount, requestedSecondariesCount WHERE name = $name "
    "RETURN serverID, address, role, currentStatus, statusMessage, currentPrimariesCount, currentSecondariesCount, "
    "requestedPrimariesCount, requestedSecondariesCount"
)

# The members of a cluster and the Bolt address of each (health measures every server that can host a database).
SERVERS = "SHOW SERVERS YIELD name, address, state, health RETURN name, address, state, health"
# Mounts the store files a GDS Arrow import left unregistered (arrow_mount.py). IF NOT EXISTS: a no-op when GDS
# registered the database after all ("GDS got there first"), never an "already exists" race.
MOUNT_DATABASE = "CREATE DATABASE $name IF NOT EXISTS WAIT"
MOUNT_DATABASE_TOPOLOGY = ("CREATE DATABASE $name IF NOT EXISTS TOPOLOGY $primaries PRIMARIES $secondaries SECONDARIES "
                           "WAIT")

# RESTRICT is the default: Neo4j itself refuses to drop a database an alias points at. Never CASCADE ALIASES.
DROP_DATABASE = "DROP DATABASE $name IF EXISTS DESTROY DATA WAIT"

# --- readers (access.py): privileges follow the alias ----------------------------------------------------------------
# Privileges are stored against the database an alias resolved to when granted, never against the alias: a new
# database has none until they are granted on it by name. Both grants name a database, never an alias.
GRANT_ACCESS = "GRANT ACCESS ON DATABASE $database TO $role"
GRANT_MATCH = "GRANT MATCH {*} ON GRAPH $database TO $role"
# Every role's privileges as replayable commands; access.py keeps the read ones naming the current target and sends
# them again with the new database's (validated, backtick-quoted) name in its place.
PRIVILEGE_COMMANDS = "SHOW PRIVILEGES AS COMMANDS"
USER_ROLES = "SHOW USERS YIELD user, roles WHERE user = $user RETURN roles"

# --- ready before live (readiness.py): on the snapshot's own database, then the system database ---------------------
# `{label}` and `{property}` are names that passed names.IDENTIFIER_RE, backtick-quoted.
CREATE_PROPERTY_INDEX = "CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.{property})"
SHOW_INDEXES = (
    "SHOW INDEXES YIELD name, type, labelsOrTypes, properties, state, populationPercent "
    "RETURN name, type, labelsOrTypes, properties, state, populationPercent"
)
DATABASE_ACCESS = "SHOW DATABASES YIELD name, access WHERE name = $name RETURN DISTINCT access"
SET_READ_ONLY = "ALTER DATABASE $name SET ACCESS READ ONLY WAIT"
SET_READ_WRITE = "ALTER DATABASE $name SET ACCESS READ WRITE WAIT"

HEAP = (
    "CALL dbms.queryJmx('java.lang:type=Memory') YIELD attributes "
    "RETURN attributes.HeapMemoryUsage.value.properties.used AS used, "
    "attributes.HeapMemoryUsage.value.properties.max AS max"
)

# Enterprise metrics gauge; absent on Community (then reported as unknown, not as a failure).
# Runs on the HOME database (a session without a database), not on `system`: the system database refuses the
# WITH that `YIELD ... WHERE` plans into ("supports a restricted set of Cypher clauses", seen on 5.26.30).
PAGECACHE = (
    "CALL dbms.queryJmx('neo4j.metrics:*') YIELD name, attributes "
    "WHERE name CONTAINS 'page_cache.usage_ratio' RETURN attributes.Value.value AS ratio"
)

# --- data, sent to the snapshot's own database --------------------------------------------------------------------

COUNT_BY_LABEL = "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS count"
COUNT_NODES = "MATCH (n) RETURN count(n) AS count"
COUNT_BY_TYPE = "MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS count"
# verify's value check (value_stats.py), one scan per property; the property name is a parameter.
VALUE_STATS_NODES = ("MATCH (n) UNWIND labels(n) AS label WITH label, n[$property] AS v "
                     "RETURN label AS owner, count(v) AS count, min(v) AS low, max(v) AS high")
VALUE_STATS_RELATIONSHIPS = ("MATCH ()-[r]->() WITH type(r) AS owner, r[$property] AS v "
                             "RETURN owner, count(v) AS count, min(v) AS low, max(v) AS high")

# --- Cypher fallback loader (neo4j.loader: cypher), sent to the snapshot's own database -------------------------
# Labels, types and property names are not parameters in DDL or in static patterns: `{label}`, `{labels}`,
# `{type}` and `{properties}` are filled only with names that passed names.IDENTIFIER_RE, backtick-quoted.
# `{properties}` is `` `name`: $p0[i], `age`: $p1[i] `` (for nodes preceded by ", ", after the nodeId).
# Rows travel as parallel lists, one per column (`$ids`, `$p0`, `$p1`, ...), indexed by `i`: far less for the
# driver to pack than one map per row. A null in a list leaves that property unset, as Neo4j does for null.

ID_PROPERTY = "nodeId"  # the node property that holds the snapshot's node id (both loaders)

# One marker node carries this label while a load runs and is deleted last: a database that still has it was
# interrupted (Neo4jTarget.load drops and reloads it instead of reusing it). Data cannot use it (leading '_').
LOAD_LABEL = "_BluegreenLoad"
CREATE_LOAD_MARKER = "CREATE (m:_BluegreenLoad) RETURN count(m) AS created"
DELETE_LOAD_MARKER = "MATCH (m:_BluegreenLoad) DELETE m RETURN count(m) AS removed"
# Both counts come from Neo4j's count store (no scan): cheap enough for every listing of a customer's databases.
COUNT_LOAD_MARKERS = "MATCH (m:_BluegreenLoad) RETURN count(m) AS markers"

CREATE_ID_INDEX = "CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.nodeId)"
AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"

# One label set per statement (static labels: cached plans, no per-row label resolution). Returns the new nodes'
# internal ids paired with their row numbers; relationships then find their endpoints with NodeByIdSeek (no helper
# label on every node, no helper index, no removal pass). `id()` is deprecated in Cypher 5 without a replacement
# for this use (elementId seeks measured slower); ids are not reused while nothing is deleted, as during a load.
CREATE_NODES = (
    "UNWIND range(0, size($ids) - 1) AS i CREATE (n{labels} {{nodeId: $ids[i]{properties}}}) "
    "RETURN collect(i) AS rows, collect(id(n)) AS ids"
)
CREATE_RELATIONSHIPS = (
    "UNWIND range(0, size($s) - 1) AS i MATCH (a) WHERE id(a) = $s[i] MATCH (b) WHERE id(b) = $t[i] "
    "CREATE (a)-[r:{type} {{{properties}}}]->(b) RETURN count(r) AS created"
)

ADMIN_QUERIES = {
    "CREATE_ALIAS": CREATE_ALIAS,
    "ALTER_ALIAS": ALTER_ALIAS,
    "CREATE_DATABASE": CREATE_DATABASE,
    "CREATE_DATABASE_TOPOLOGY": CREATE_DATABASE_TOPOLOGY,
    "MOUNT_DATABASE": MOUNT_DATABASE,
    "MOUNT_DATABASE_TOPOLOGY": MOUNT_DATABASE_TOPOLOGY,
    "DROP_DATABASE": DROP_DATABASE,
    "GRANT_ACCESS": GRANT_ACCESS,
    "GRANT_MATCH": GRANT_MATCH,
    "PRIVILEGE_COMMANDS": PRIVILEGE_COMMANDS,
    "SET_READ_ONLY": SET_READ_ONLY,
    "SET_READ_WRITE": SET_READ_WRITE,
}
