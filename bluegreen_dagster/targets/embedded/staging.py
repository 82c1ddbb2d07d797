"""Pass 2 of a load: every row, conformed to its table's schema, into one staging Parquet file per destination.

A destination is a node table, or a relationship type with one (FROM, TO) table pair (LadybugDB's COPY into a rel
table takes one pair at a time). Rows stream one record batch at a time and are appended ~`chunk_rows` per write,
so memory stays bounded; each file is then read by one COPY (`database.fill`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow.parquet import ParquetWriter

from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, labels_as_list_array
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.reading import iter_batches
from bluegreen_dagster.targets.embedded.plan import LoadPlan

# One staged destination: a node table name, or (relationship type, FROM table, TO table).
Destination = str | tuple[str, str, str]
# Destination -> (staging file, rows in it)
Staged = dict[Destination, tuple[Path, int]]


class StagingFiles:
    """Conformed rows per destination, appended to one staging Parquet file each (~chunk_rows per write)."""

    def __init__(self, folder: Path, chunk_rows: int) -> None:
        self.folder = folder
        self.chunk_rows = chunk_rows
        self.pending: dict[Destination, list[pa.RecordBatch]] = {}
        self.pending_rows: dict[Destination, int] = {}
        self.file_names: dict[Destination, str] = {}
        self.writers: dict[Destination, ParquetWriter] = {}
        self.rows: dict[Destination, int] = {}

    def __enter__(self) -> StagingFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def add(self, key: Destination, file_name: str, batch: pa.RecordBatch) -> None:
        self.file_names.setdefault(key, file_name)
        self.pending.setdefault(key, []).append(batch)
        self.pending_rows[key] = self.pending_rows.get(key, 0) + batch.num_rows
        if self.pending_rows[key] >= self.chunk_rows:
            self._flush(key)

    def finish(self) -> Staged:
        """Flush and close everything."""
        for key in list(self.pending):
            self._flush(key)
        self._close()
        return {key: (self.folder / self.file_names[key], rows) for key, rows in self.rows.items()}

    def _flush(self, key: Destination) -> None:
        batches = self.pending.pop(key, [])
        self.pending_rows.pop(key, None)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        writer = self.writers.get(key)
        if writer is None:
            writer = self.writers[key] = ParquetWriter(self.folder / self.file_names[key], table.schema,
                                                       compression="snappy")
        writer.write_table(table)
        self.rows[key] = self.rows.get(key, 0) + table.num_rows

    def _close(self) -> None:
        """Close every writer, even when one fails (a full disk fails the footer write), then raise the first error."""
        writers, self.writers = list(self.writers.values()), {}
        error: BaseException | None = None
        for writer in writers:
            try:
                writer.close()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, once all files are closed
                error = error or exc
        if error is not None:
            raise error


def _no_report(rows: int) -> None:
    pass


def stage_nodes(plan: LoadPlan, folder: Path, batch_rows: int, chunk_rows: int, on_rows=_no_report) -> Staged:
    """Node rows per node table (the table of each node's label, found through the plan's index)."""
    schemas = {name: t.arrow_schema() for name, t in plan.node_tables.items()}
    files = sorted({p for t in plan.node_tables.values() for p in t.files})
    with StagingFiles(folder, chunk_rows) as stage:
        for path, batch in iter_batches(files, NODE_COLUMNS, batch_rows):
            labels = labels_as_list_array(batch.column(LABELS))
            ids = batch.column(NODE_ID).cast(pa.int64())
            _, codes = plan.lookup(ids.to_numpy(zero_copy_only=False))
            for code in np.unique(codes).tolist():
                name = plan.table_names[code]
                mask = codes == code
                if mask.all():
                    rows, row_ids, row_labels = batch, ids, labels
                else:
                    keep = pa.array(mask)
                    rows, row_ids, row_labels = batch.filter(keep), ids.filter(keep), labels.filter(keep)
                stage.add(name, f"node-{name}.parquet", conform(rows, schemas[name], [row_ids, row_labels], path))
            on_rows(batch.num_rows)  # progress: rows read so far (targets/embedded/target.py)
        return stage.finish()


def stage_relationships(plan: LoadPlan, folder: Path, batch_rows: int, chunk_rows: int,
                        on_rows=_no_report) -> Staged:
    """Relationship rows per (type, FROM table, TO table)."""
    schemas = {name: t.arrow_schema() for name, t in plan.rel_tables.items()}
    files = sorted({p for t in plan.rel_tables.values() for p in t.files})
    with StagingFiles(folder, chunk_rows) as stage:
        for path, batch in iter_batches(files, RELATIONSHIP_COLUMNS, batch_rows):
            src = batch.column(SOURCE_ID).cast(pa.int64())
            dst = batch.column(TARGET_ID).cast(pa.int64())
            _, src_codes = plan.lookup(src.to_numpy(zero_copy_only=False))
            _, dst_codes = plan.lookup(dst.to_numpy(zero_copy_only=False))
            types = pc.dictionary_encode(batch.column(REL_TYPE).cast(pa.string()))
            type_list = types.dictionary.to_pylist()
            type_codes = types.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            keys = plan.destination_keys(type_codes, src_codes, dst_codes)
            unique = np.unique(keys)
            for key in unique.tolist():
                type_code, a, b = plan.destination(key)
                rel_type = type_list[type_code]
                if len(unique) == 1:
                    rows, s, e = batch, src, dst
                else:
                    keep = pa.array(keys == key)
                    rows, s, e = batch.filter(keep), src.filter(keep), dst.filter(keep)
                stage.add((rel_type, a, b), f"rel-{rel_type}-{a}-{b}.parquet",
                          conform(rows, schemas[rel_type], [s, e], path))
            on_rows(batch.num_rows)  # progress
        return stage.finish()


def conform(batch: pa.RecordBatch, schema: pa.Schema, head: list[pa.Array], path: Path) -> pa.RecordBatch:
    """The batch's columns in table order, cast to the table's types; missing columns as nulls."""
    arrays = list(head)
    for f in list(schema)[len(head):]:
        index = batch.schema.get_field_index(f.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(index)
        if column.type != f.type:
            try:
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                column = column.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SnapshotError(f"{path}: column {f.name!r} cannot be converted to {f.type} ({exc})") from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
