"""The embedded target: one LadybugDB file per snapshot, a symlink per customer as the alias.

A reader opens `aliases/<customer>.lbug` read-only and always gets a complete database. Modules, in load order:

    column_types.py  Arrow -> LadybugDB column types
    tables.py        the tables a snapshot becomes and their property columns
    node_index.py    node id -> node table, to resolve relationship endpoints
    plan.py          pass 1: reads the id / label / type columns, decides tables, rejects bad ids and endpoints
    staging.py       pass 2: every row, conformed, into one staging Parquet file per destination table
    database.py      one LadybugDB file: CREATE TABLE, one COPY per staged file, counts
    store.py         the folders (databases/, loading/, aliases/), the load lock, the alias symlink swap
    target.py        EmbeddedTarget, the GraphTarget the pipeline calls

Graph model:

* One node table per label, one label per node. LadybugDB keeps each node in one table and `MATCH (n:A)` reads
  table A only, so a node with two different labels could not read like Neo4j under both: such snapshots are
  refused before anything is created (`schema_rules.py`, docs/types.md). The labels as written (a repeated label
  is one label) stay in the `labels STRING[]` property. Nodes without any label are refused too.
* One rel table per relationship type, with every (FROM, TO) table pair that occurs in the data.
* `nodeId` is the INT64 primary key of every node table; node ids must be unique across all labels.

Why stage to Parquet instead of COPY chunk after chunk straight from Arrow: LadybugDB accepts COPY into a non-empty
table, but each such COPY costs time proportional to what the table already holds (measured: 3M relationships in
250k-row chunks took 5x as long as one COPY, node tables 4x), so chunked COPY is quadratic in the table size. One
COPY per staged file lets LadybugDB read the file itself in bounded memory (its buffer pool, `buffer_pool_mb`,
spills beyond that).

The only structure that grows with the graph is the node-id index (`node_index.py`): a direct lookup array when ids
are dense (2 bytes per id in the range), else sorted int64 ids + table codes (12 bytes per node).
"""

from bluegreen_dagster.targets.embedded.target import EmbeddedTarget

__all__ = ["EmbeddedTarget"]
