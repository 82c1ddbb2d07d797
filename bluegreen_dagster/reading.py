"""Reading a snapshot's Parquet files: open them, check the required columns, stream record batches, and count
what the files promise (the numbers verification compares against the loaded database)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bluegreen_dagster.columns import (
    LABELS,
    NODE_COLUMNS,
    REL_TYPE,
    RELATIONSHIP_COLUMNS,
    decoded,
    is_integer,
    is_list,
    is_string,
    labels_as_lists,
    plain,
)
from bluegreen_dagster.names import SnapshotError, printable


def open_parquet(path: Path) -> pq.ParquetFile:
    """The file, with its page checksums verified while reading when the producer wrote them: without them, a
    flipped byte in a data page often reads as different values with no error (tests/faults/test_data_faults.py).
    Costs nothing measurable (CRC32 per page)."""
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise SnapshotError(f"{printable(path)}: not a readable Parquet file ({printable(exc)}); replace it with "
                            "a complete Parquet file") from None


# How to write a required column of each kind, for the message that says a column has the wrong type.
_KIND_FIX = {"int": "an integer type such as int64", "string": "string", "list": "list<string>"}


def require_columns(path: Path, schema: pa.Schema, required: dict[str, tuple[str, ...]]) -> None:
    """Every column name once, and every required column there with a type of the kinds allowed; SnapshotError
    naming the file, the column and how to write it otherwise."""
    for column in schema.names:
        if schema.names.count(column) > 1:
            raise SnapshotError(f"{printable(path)}: column {printable(column)!r} appears {schema.names.count(column)} "
                                "times; a column name may appear once per file: rename or drop the copies")
    for column, kinds in required.items():
        if column not in schema.names:
            raise SnapshotError(f"{printable(path)}: missing required column {column!r} "
                                f"(has {printable(', '.join(schema.names))}); every file in this folder needs "
                                f"{', '.join(required)} (the GDS column names, case-sensitive)")
        arrow_type = schema.field(column).type
        ok = any(
            (kind == "int" and is_integer(arrow_type))
            or (kind == "string" and is_string(arrow_type))
            or (kind == "list" and is_list(arrow_type) and is_string(plain(arrow_type).value_type))
            for kind in kinds
        )
        if not ok:
            raise SnapshotError(f"{printable(path)}: column {column!r} has type {arrow_type}, "
                                f"expected {' or '.join(kinds)}; write it as "
                                f"{' or '.join(_KIND_FIX[k] for k in kinds)}")


def iter_batches(files: list[Path], required: dict[str, tuple[str, ...]], batch_size: int,
                 columns: list[str] | None = None) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream record batches from Parquet files, checking the GDS columns first. Memory stays at one batch."""
    for path in files:
        pf = open_parquet(path)
        require_columns(path, pf.schema_arrow, required)
        try:
            for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
                yield path, batch
        except (pa.ArrowException, OSError) as exc:
            raise SnapshotError(f"{printable(path)}: could not be read to the end ({printable(exc)}); replace it "
                                "with a complete Parquet file") from None


@dataclass(frozen=True)
class GraphCounts:
    """Node and relationship counts, in total and per label / type: what verify compares."""

    nodes: int
    relationships: int
    labels: dict[str, int]
    types: dict[str, int]
    # The snapshot's per-property value statistics (value_stats.py), for verify's value check; None when not read.
    values: dict | None = field(default=None, compare=False, repr=False)

    def differences(self, actual: GraphCounts) -> list[str]:
        """Human-readable differences, expected (self) vs actual; empty when they match."""
        out = []
        if self.nodes != actual.nodes:
            out.append(f"nodes: expected {self.nodes}, found {actual.nodes}")
        if self.relationships != actual.relationships:
            out.append(f"relationships: expected {self.relationships}, found {actual.relationships}")
        for kind, want, got in (("label", self.labels, actual.labels), ("type", self.types, actual.types)):
            for name in sorted(set(want) | set(got)):
                if want.get(name, 0) != got.get(name, 0):
                    out.append(f"{kind} {printable(name)}: expected {want.get(name, 0)}, found {got.get(name, 0)}")
        return out

    def as_metadata(self) -> dict[str, int]:
        return {"nodes": self.nodes, "relationships": self.relationships,
                **{f"label:{k}": v for k, v in sorted(self.labels.items())},
                **{f"type:{k}": v for k, v in sorted(self.types.items())}}


def count_files(node_files: list[Path], relationship_files: list[Path]) -> GraphCounts:
    """Counts the files promise, from the label and type columns, and the value statistics of every property (one
    more pass over the files)."""
    labels: Counter[str] = Counter()
    types: Counter[str] = Counter()
    nodes = relationships = 0
    for _, batch in iter_batches(node_files, NODE_COLUMNS, 65_536, columns=[LABELS]):
        nodes += batch.num_rows
        for node_labels in labels_as_lists(batch.column(0)):
            labels.update(set(node_labels))
    for _, batch in iter_batches(relationship_files, RELATIONSHIP_COLUMNS, 65_536, columns=[REL_TYPE]):
        relationships += batch.num_rows
        for value in decoded(batch.column(0)).value_counts().to_pylist():
            types[value["values"]] += value["counts"]
    from bluegreen_dagster.value_stats import snapshot_stats

    return GraphCounts(nodes, relationships, dict(labels), dict(types),
                       values=snapshot_stats(node_files, relationship_files))
