"""The Neo4j Enterprise target (`target.py`), its Bolt connection (`bolt.py`) and administration (`admin.py`), its
loaders (`arrow.py` for the GDS Arrow Flight server, `cypher_loader.py` as the fallback) and every statement text
(`queries.py`)."""
