"""The tables a snapshot becomes: one node table per label, one rel table per relationship type.

A table's property columns are the union of its files' columns, checked as each file is added: names that
LadybugDB cannot take or that clash case-insensitively, types it cannot store, and types that differ between files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from bluegreen_dagster.columns import LABELS, NODE_ID
from bluegreen_dagster.names import SnapshotError, check_identifier
from bluegreen_dagster.targets.embedded.column_types import (
    STRING,
    ColumnType,
    column_type,
    merge_types,
)

# LadybugDB's internal properties; a data column with one of these names cannot be created.
RESERVED_PROPERTIES = {"_id", "_label", "_src", "_dst"}


@dataclass
class TableSchema:
    name: str
    kind: str  # "node" or "rel"
    properties: dict[str, ColumnType] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)  # property -> first file that had it
    files: list[Path] = field(default_factory=list)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # rel tables: (from table, to table)

    def arrow_schema(self) -> pa.Schema:
        if self.kind == "node":
            head = [pa.field(NODE_ID, pa.int64()), pa.field(LABELS, pa.list_(pa.string()))]
        else:
            # names no data column can have (they fail IDENTIFIER_RE); COPY maps columns by position
            head = [pa.field("from id", pa.int64()), pa.field("to id", pa.int64())]
        return pa.schema(head + [pa.field(name, t.arrow) for name, t in self.properties.items()])

    def add_properties(self, path: Path, schema: pa.Schema, skip: set[str]) -> None:
        """Add one file's property columns (all but `skip`) to the table's union."""
        lower_seen = {name.lower(): name for name in self.properties}
        lower_seen.update({s.lower(): s for s in skip})
        for f in schema:
            if f.name in skip:
                continue
            check_identifier(f.name, "property column", path)
            if f.name.lower() in RESERVED_PROPERTIES:
                raise SnapshotError(f"{path}: property column {f.name!r} is a name LadybugDB reserves; rename it")
            if pa.types.is_null(f.type):
                continue  # all-null column: typed by another file, or STRING (see finish_properties)
            ctype = column_type(f.type)
            if ctype is None:
                raise SnapshotError(
                    f"{path}: column {f.name!r} has type {f.type}, which the embedded target cannot store (supported: "
                    "integers, floats, bool, strings, dictionary strings, lists of these, timestamps, dates)"
                )
            clash = lower_seen.get(f.name.lower())
            if clash is not None and clash != f.name:
                raise SnapshotError(
                    f"{path}: column {f.name!r} clashes with {clash!r} of {self.kind} table {self.name}: "
                    "LadybugDB property names are case-insensitive"
                )
            if f.name in self.properties:
                merged = merge_types(self.properties[f.name], ctype)
                if merged is None:
                    raise SnapshotError(
                        f"{path}: column {f.name!r} has type {f.type} ({ctype.ddl}), but {self.origin[f.name]} has "
                        f"{self.properties[f.name].ddl} for {self.name}; use one type in all files"
                    )
                self.properties[f.name] = merged
            else:
                self.properties[f.name] = ctype
                self.origin[f.name] = path
                lower_seen[f.name.lower()] = f.name

    def finish_properties(self, schemas: dict[Path, pa.Schema], skip: set[str]) -> None:
        """Columns that are all-null (type null) in every file become STRING."""
        for path in self.files:
            for f in schemas[path]:
                if f.name not in skip and pa.types.is_null(f.type) and f.name not in self.properties:
                    self.properties[f.name] = STRING
                    self.origin[f.name] = path


class TableNames:
    """Table names across labels and types; LadybugDB names are case-insensitive, so clashes are errors."""

    def __init__(self) -> None:
        self.by_lower: dict[str, tuple[str, str, Path]] = {}  # lower -> (name, kind, first file)

    def register(self, name: str, kind: str, path: Path) -> None:
        seen = self.by_lower.get(name.lower())
        if seen is None:
            self.by_lower[name.lower()] = (name, kind, path)
        elif seen[:2] != (name, kind):
            raise SnapshotError(
                f"{path}: {kind} {name!r} clashes with {seen[1]} {seen[0]!r} from {seen[2]}: LadybugDB table names "
                "are case-insensitive and shared by labels and relationship types"
            )
