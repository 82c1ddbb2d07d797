"""The embedded target's answer to verify's value check (value_stats.py): per table and property, the non-null
count and bounds, grouped by each distinct label in the `labels` property, as the snapshot side counts them."""

from __future__ import annotations

import os

import ladybug as lb

from bluegreen_dagster.columns import LABELS
from bluegreen_dagster.names import IDENTIFIER_RE
from bluegreen_dagster.value_stats import Key, PropertyStats, ValueStats, comparable

MB = 1024 * 1024


def database_value_stats(path: str | os.PathLike[str], expected: ValueStats) -> ValueStats:
    wanted: dict[tuple[str, str], bool] = {}  # (kind, property) -> bounds compared
    for (kind, _, name), stats in expected.items():
        wanted[(kind, name)] = wanted.get((kind, name), False) or stats.low is not None
    db = lb.Database(str(path), read_only=True, buffer_pool_size=256 * MB)
    try:
        conn = lb.Connection(db)
        try:
            found: ValueStats = {}
            for table, kind in _rows(conn.execute("CALL show_tables() RETURN name, type")):
                if kind not in ("NODE", "REL") or not IDENTIFIER_RE.match(table):
                    continue
                entity = "label" if kind == "NODE" else "type"
                columns = {row[0] for row in _rows(conn.execute(f"CALL table_info('{table}') RETURN name"))}
                props = [p for p in sorted(columns) if (entity, p) in wanted and IDENTIFIER_RE.match(p)]
                if not props:
                    continue
                parts = []
                for p in props:
                    parts.append(f"count(x.`{p}`)")
                    if wanted[(entity, p)]:
                        parts += [f"min(x.`{p}`)", f"max(x.`{p}`)"]
                if entity == "label":
                    query = (f"MATCH (x:`{table}`) UNWIND list_distinct(x.`{LABELS}`) AS owner "
                             f"RETURN owner, {', '.join(parts)}")
                else:
                    query = f"MATCH ()-[x:`{table}`]->() RETURN '{table}', {', '.join(parts)}"
                for row in _rows(conn.execute(query)):
                    owner, values = row[0], iter(row[1:])
                    for p in props:
                        count = next(values)
                        low = high = None
                        if wanted[(entity, p)]:
                            low, high = comparable(next(values)), comparable(next(values))
                        key: Key = (entity, owner, p)
                        stats = PropertyStats(count, low, high)
                        found[key] = found[key].merged(stats) if key in found else stats
            return found
        finally:
            conn.close()
    finally:
        db.close()


def _rows(result) -> list[list]:
    out = []
    while result.has_next():
        out.append(result.get_next())
    return out
