"""The snapshot's columns as Arrow types: one home for the type predicates and for reading the `labels` column,
used by the snapshot reader (`snapshots.py`) and by every loader (`targets/`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def plain(t: pa.DataType) -> pa.DataType:
    """The type a dictionary-encoded column decodes to; any other type as it is."""
    return t.value_type if pa.types.is_dictionary(t) else t


def decoded(column: pa.Array) -> pa.Array:
    """The column with dictionary encoding undone, so casts and kernels see plain values."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def is_integer(t: pa.DataType) -> bool:
    return pa.types.is_integer(plain(t))


def is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(plain(t))


def is_string(t: pa.DataType) -> bool:
    t = plain(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_list(t: pa.DataType) -> bool:
    t = plain(t)
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def labels_as_list_array(column: pa.Array) -> pa.ListArray:
    """The `labels` column as list<string>, whether it holds one label per row (a string: "" or null means no
    label) or lists of labels (a null row stays null; loaders decide whether that is an error)."""
    column = decoded(column)
    if is_string(column.type):
        column = column.cast(pa.string())
        present = pc.fill_null(pc.not_equal(column, ""), False).to_numpy(zero_copy_only=False)
        offsets = np.zeros(len(column) + 1, dtype=np.int32)
        np.cumsum(present.astype(np.int32), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), column.filter(pa.array(present)))
    if is_list(column.type):
        return column.cast(pa.list_(pa.string()))
    raise TypeError(f"labels column has type {column.type}; expected string or list<string>")


def labels_as_lists(column: pa.Array) -> list[list[str]]:
    """The `labels` column as Python lists (a null row reads as no label)."""
    return [labels or [] for labels in labels_as_list_array(column).to_pylist()]
