"""bluegreen-dagster: blue/green graph database refreshes from Parquet snapshots, orchestrated by Dagster.

Start at `definitions.py` (what Dagster loads) and `assets.py` (the steps of one refresh).
"""
