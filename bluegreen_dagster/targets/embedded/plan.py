"""Pass 1 of a load: read only the GDS id / label / type columns and decide everything before anything is written.

`plan_load` learns the node tables (one per label; `schema_rules.check_snapshot` has refused nodes with two
different labels), the rel tables with the (FROM, TO) table pairs that
occur and each table's union of property columns; it rejects unlabeled nodes, duplicate ids and dangling
endpoints with the files named. The plan's `NodeIndex` then routes every row of pass 2 (`staging`) to its table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, labels_as_list_array
from bluegreen_dagster.names import SnapshotError, check_identifier
from bluegreen_dagster.reading import iter_batches, open_parquet
from bluegreen_dagster.schema_rules import check_snapshot
from bluegreen_dagster.snapshots import Snapshot
from bluegreen_dagster.targets.embedded.node_index import NodeIndex
from bluegreen_dagster.targets.embedded.tables import TableNames, TableSchema

NODE_GDS_COLUMNS = {NODE_ID, LABELS}
REL_GDS_COLUMNS = {SOURCE_ID, TARGET_ID, REL_TYPE}


@dataclass
class LoadPlan:
    node_tables: dict[str, TableSchema]
    rel_tables: dict[str, TableSchema]
    table_names: list[str]  # node table code -> name
    index: NodeIndex

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.index.lookup(ids)

    # A relationship's destination (type code, FROM table code, TO table code) as one int64, so a batch is split
    # by destination with one np.unique.
    def destination_keys(self, type_codes: np.ndarray, src_codes: np.ndarray, dst_codes: np.ndarray) -> np.ndarray:
        n = max(1, len(self.table_names))
        return (type_codes * n + src_codes) * n + dst_codes

    def destination(self, key: int) -> tuple[int, str, str]:
        """(type code, FROM table, TO table) of a `destination_keys` value."""
        n = max(1, len(self.table_names))
        type_code, rest = divmod(key, n * n)
        from_code, to_code = divmod(rest, n)
        return type_code, self.table_names[from_code], self.table_names[to_code]


def plan_load(snapshot: Snapshot, batch_rows: int) -> LoadPlan:
    """Pass 1: the rules every target shares (schema_rules.py), then read only the GDS id/label/type columns;
    decide tables, check ids and endpoints."""
    check_snapshot(snapshot.node_files, snapshot.relationship_files, "embedded")
    names = TableNames()
    schemas: dict[Path, pa.Schema] = {}
    plan = _plan_nodes(snapshot.node_files, batch_rows, names, schemas)
    _plan_relationships(plan, snapshot.relationship_files, batch_rows, names, schemas)
    return plan


def _plan_nodes(node_files: list[Path], batch_rows: int, names: TableNames,
                schemas: dict[Path, pa.Schema]) -> LoadPlan:
    """Node tables from each node's label (its first: a repeated label is one), and the node index (which rejects
    duplicate ids across all files)."""
    node_tables: dict[str, TableSchema] = {}
    table_names: list[str] = []
    codes_of: dict[str, int] = {}
    ids_parts: list[np.ndarray] = []
    codes_parts: list[np.ndarray] = []
    files_parts: list[np.ndarray] = []
    for file_no, path in enumerate(node_files):
        schemas[path] = open_parquet(path).schema_arrow
        unlabeled = 0
        file_tables: set[str] = set()
        for _, batch in iter_batches([path], NODE_COLUMNS, batch_rows, columns=[NODE_ID, LABELS]):
            ids = _as_int64(batch.column(0), NODE_ID, path)
            labels = labels_as_list_array(batch.column(1))
            values = labels.flatten()
            if values.null_count:
                raise SnapshotError(f"{path}: column {LABELS!r} holds null label(s) inside label lists")
            for label in pc.unique(values).to_pylist():
                check_identifier(label, "label", path)
            firsts, missing = _first_labels(labels)
            unlabeled += missing
            if missing:
                continue
            encoded = pc.dictionary_encode(firsts)
            local = []
            for label in encoded.dictionary.to_pylist():
                if label not in codes_of:
                    names.register(label, "label", path)
                    codes_of[label] = len(table_names)
                    table_names.append(label)
                    node_tables[label] = TableSchema(label, "node")
                local.append(codes_of[label])
                file_tables.add(label)
            ids_parts.append(ids)
            codes_parts.append(np.asarray(local, dtype=np.int32)[encoded.indices.to_numpy(zero_copy_only=False)])
            files_parts.append(np.full(len(ids), file_no, dtype=np.int32))
        if unlabeled:
            raise SnapshotError(
                f"{path}: {unlabeled} node(s) have no label; the embedded target stores each node in the table of "
                "its first label, so every node needs at least one"
            )
        for label in sorted(file_tables):
            node_tables[label].files.append(path)
            node_tables[label].add_properties(path, schemas[path], NODE_GDS_COLUMNS)
    for table in node_tables.values():
        table.finish_properties(schemas, NODE_GDS_COLUMNS)

    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
    codes = np.concatenate(codes_parts) if codes_parts else np.zeros(0, dtype=np.int32)
    files = np.concatenate(files_parts) if files_parts else np.zeros(0, dtype=np.int32)
    del ids_parts, codes_parts, files_parts
    order = np.argsort(ids, kind="stable")
    ids, codes, files = ids[order], codes[order], files[order]
    del order
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        where = sorted({str(node_files[f]) for f in np.concatenate([files[dup], files[dup + 1]])[:20].tolist()})
        raise SnapshotError(
            f"{len(dup)} duplicate nodeId value(s) among the node files (e.g. {_sample(ids[dup])}; in "
            f"{', '.join(where)}): nodeId must be unique across all labels and files; write each node once, "
            "with all its labels in one row"
        )
    del files
    return LoadPlan(node_tables, {}, table_names, NodeIndex(ids, codes, len(table_names)))


def _plan_relationships(plan: LoadPlan, rel_files: list[Path], batch_rows: int, names: TableNames,
                        schemas: dict[Path, pa.Schema]) -> None:
    """Rel tables: types, the (FROM, TO) pairs that occur, and endpoints that exist."""
    missing_by_file: dict[Path, int] = {}
    missing_examples: list[int] = []
    type_codes: dict[str, int] = {}
    type_names: list[str] = []
    for path in rel_files:
        schemas[path] = open_parquet(path).schema_arrow
        file_types: set[str] = set()
        columns = [SOURCE_ID, TARGET_ID, REL_TYPE]
        for _, batch in iter_batches([path], RELATIONSHIP_COLUMNS, batch_rows, columns=columns):
            src, dst = batch.column(0), batch.column(1)
            src_ok = src.is_valid().to_numpy(zero_copy_only=False)
            dst_ok = dst.is_valid().to_numpy(zero_copy_only=False)
            src_np = _ids_with_nulls(src, SOURCE_ID, path)
            dst_np = _ids_with_nulls(dst, TARGET_ID, path)
            src_found, src_codes = plan.lookup(src_np)
            dst_found, dst_codes = plan.lookup(dst_np)
            ok = src_ok & dst_ok & src_found & dst_found
            if not ok.all():
                missing_by_file[path] = missing_by_file.get(path, 0) + int((~ok).sum())
                if len(missing_examples) < 5:
                    bad = np.concatenate([src_np[src_ok & ~src_found], dst_np[dst_ok & ~dst_found]])
                    missing_examples.extend(bad[: 5 - len(missing_examples)].tolist())
            encoded = pc.dictionary_encode(_type_strings(batch.column(2), path))
            local = []
            for rel_type in encoded.dictionary.to_pylist():
                if rel_type not in type_codes:
                    check_identifier(rel_type, "relationship type", path)
                    names.register(rel_type, "relationship type", path)
                    type_codes[rel_type] = len(type_names)
                    type_names.append(rel_type)
                    plan.rel_tables[rel_type] = TableSchema(rel_type, "rel")
                local.append(type_codes[rel_type])
                file_types.add(rel_type)
            tcodes = np.asarray(local, dtype=np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]
            for key in np.unique(plan.destination_keys(tcodes[ok], src_codes[ok], dst_codes[ok])).tolist():
                type_code, from_table, to_table = plan.destination(key)
                plan.rel_tables[type_names[type_code]].pairs.add((from_table, to_table))
        for rel_type in sorted(file_types):
            plan.rel_tables[rel_type].files.append(path)
            plan.rel_tables[rel_type].add_properties(path, schemas[path], REL_GDS_COLUMNS)
    if missing_by_file:
        total = sum(missing_by_file.values())
        per_file = "; ".join(f"{p}: {n}" for p, n in missing_by_file.items())
        raise SnapshotError(
            f"{total} relationship(s) reference nodes that are not in the node files "
            f"(e.g. nodeId {', '.join(map(str, missing_examples)) or 'null'}); per file: {per_file}. Export those "
            "nodes into nodes/ too, or leave those relationships out"
        )
    for table in plan.rel_tables.values():
        table.finish_properties(schemas, REL_GDS_COLUMNS)


def _as_int64(column: pa.Array, name: str, path: Path) -> np.ndarray:
    if column.null_count:
        raise SnapshotError(f"{path}: column {name!r} has {column.null_count} null value(s); ids must be set")
    return _ids_with_nulls(column, name, path)


def _ids_with_nulls(column: pa.Array, name: str, path: Path) -> np.ndarray:
    """The ids as int64 (nulls read as 0: the caller masks them)."""
    try:
        return pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise SnapshotError(f"{path}: column {name!r} has values that do not fit INT64 ({exc}); node ids must be "
                            "signed 64-bit integers") from None


def _first_labels(labels: pa.ListArray) -> tuple[pa.Array, int]:
    """(first label of every labelled row, as a string array aligned with the rows; count of unlabeled rows).

    Unlabeled rows get null in the returned array.
    """
    offsets = labels.offsets.to_numpy(zero_copy_only=False)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    valid = labels.is_valid().to_numpy(zero_copy_only=False)
    labelled = valid & (lengths > 0)
    firsts = labels.values.take(pa.array(np.where(labelled, starts, 0).astype(np.int64))) if len(labels.values) \
        else pa.nulls(len(labels), pa.string())
    firsts = pc.if_else(pa.array(labelled), firsts, pa.scalar(None, pa.string()))
    return firsts, int((~labelled).sum())


def _type_strings(column: pa.Array, path: Path) -> pa.Array:
    column = column.cast(pa.string())
    if column.null_count or pc.any(pc.equal(column, "")).as_py():
        raise SnapshotError(f"{path}: column {REL_TYPE!r} has empty or null relationship types")
    return column


def _sample(values: np.ndarray, n: int = 5) -> str:
    return ", ".join(str(v) for v in values[:n].tolist())
