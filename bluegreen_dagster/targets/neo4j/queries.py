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
PAGECACHE = (
    "CALL dbms.queryJmx('neo4j.metrics:*') YIELD name, attributes "
    "WHERE name CONTAINS 'page_cache.usage_ratio' RETURN attributes.Value.value AS ratio"
)

# --- data, sent to the snapshot's own database --------------------------------------------------------------------

COUNT_BY_LABEL = "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS count"
COUNT_NODES = "MATCH (n) RETURN count(n) AS count"
COUNT_BY_TYPE = "MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS count"

ADMIN_QUERIES = {
    "CREATE_ALIAS": CREATE_ALIAS,
    "ALTER_ALIAS": ALTER_ALIAS,
    "CREATE_DATABASE": CREATE_DATABASE,
    "DROP_DATABASE": DROP_DATABASE,
}
