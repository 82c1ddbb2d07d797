"""Every Cypher statement the Neo4j target sends, in one place.

Names (databases, aliases) are always `$parameters`, never formatted into the text. The real-Community test
tier checks that each administration statement here is accepted by Neo4j's parser, and the Enterprise stand-in
(tests/standin) answers exactly these statements, so keep them here and nowhere else.
"""

# --- administration, always sent to the `system` database, auto-commit -------------------------------------------

COMPONENTS = "CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition"

# One row per database name (a cluster reports one row per hosting server, hence DISTINCT).
LIST_DATABASES = (
    "SHOW DATABASES YIELD name, type, currentStatus "
    "WHERE type = 'standard' AND name STARTS WITH $prefix "
    "RETURN DISTINCT name, currentStatus"
)

DATABASE_STATUS = (
    "SHOW DATABASES YIELD name, currentStatus, statusMessage "
    "WHERE name = $name RETURN currentStatus, statusMessage"
)

COUNT_DATABASES = "SHOW DATABASES YIELD name, type WHERE type = 'standard' RETURN count(DISTINCT name) AS databases"

ALIAS_TARGET = "SHOW ALIASES FOR DATABASE YIELD name, database WHERE name = $alias RETURN database"

CREATE_ALIAS = "CREATE ALIAS $alias IF NOT EXISTS FOR DATABASE $database"

ALTER_ALIAS = "ALTER ALIAS $alias SET DATABASE TARGET $database"

CREATE_DATABASE = "CREATE DATABASE $name WAIT"

# RESTRICT is the default: Neo4j itself refuses to drop a database an alias points at. Never CASCADE ALIASES.
DROP_DATABASE = "DROP DATABASE $name IF EXISTS DESTROY DATA WAIT"

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

# --- Cypher fallback loader (neo4j.loader: cypher), sent to the snapshot's own database -------------------------
# Labels and types are NOT parameters in index DDL (and not before 5.26 in CREATE): `{label}` / `{labels}` /
# `{type}` are filled only with names that passed snapshots.IDENTIFIER_RE, backtick-quoted.

ID_PROPERTY = "nodeId"  # the node property that holds the snapshot's node id (both loaders)
LOAD_LABEL = "_BluegreenLoad"  # helper label on every node while relationships are written, removed at the end

CREATE_ID_INDEX = "CREATE INDEX IF NOT EXISTS FOR (n:{label}) ON (n.nodeId)"
CREATE_LOAD_INDEX = "CREATE INDEX bluegreen_load_id IF NOT EXISTS FOR (n:_BluegreenLoad) ON (n.nodeId)"
AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"
DROP_LOAD_INDEX = "DROP INDEX bluegreen_load_id IF EXISTS"

# Dynamic labels/types `$(...)` (Cypher 5.26+): probed with EXPLAIN, the static form is the fallback.
PROBE_DYNAMIC_LABELS = "EXPLAIN CREATE (n:$($labels))-[r:$($type)]->(m)"
CREATE_NODES_DYNAMIC = (
    "UNWIND $rows AS row CREATE (n:$(row.labels):_BluegreenLoad {nodeId: row.id}) SET n += row.props "
    "RETURN count(n) AS created"
)
CREATE_NODES_STATIC = (
    "UNWIND $rows AS row CREATE (n{labels}:_BluegreenLoad {{nodeId: row.id}}) SET n += row.props "
    "RETURN count(n) AS created"
)
CREATE_RELATIONSHIPS_DYNAMIC = (
    "UNWIND $rows AS row MATCH (a:_BluegreenLoad {nodeId: row.s}) MATCH (b:_BluegreenLoad {nodeId: row.t}) "
    "CREATE (a)-[r:$(row.type)]->(b) SET r += row.props RETURN count(r) AS created"
)
CREATE_RELATIONSHIPS_STATIC = (
    "UNWIND $rows AS row MATCH (a:_BluegreenLoad {{nodeId: row.s}}) MATCH (b:_BluegreenLoad {{nodeId: row.t}}) "
    "CREATE (a)-[r:{type}]->(b) SET r += row.props RETURN count(r) AS created"
)
REMOVE_LOAD_LABEL = (
    "MATCH (n:_BluegreenLoad) WITH n LIMIT $limit REMOVE n:_BluegreenLoad RETURN count(n) AS removed"
)

ADMIN_QUERIES = {
    "CREATE_ALIAS": CREATE_ALIAS,
    "ALTER_ALIAS": ALTER_ALIAS,
    "CREATE_DATABASE": CREATE_DATABASE,
    "DROP_DATABASE": DROP_DATABASE,
}
