"""Node id -> node table, the one structure of a load that grows with the graph."""

from __future__ import annotations

import numpy as np


class NodeIndex:
    """Node id -> node table code, for resolving relationship endpoints.

    Dense ids (the usual GDS export: a range with few gaps) get a direct lookup array (2-4 bytes per id in the
    range); sparse ids fall back to binary search in the sorted ids (12 bytes per node).
    """

    def __init__(self, sorted_ids: np.ndarray, codes: np.ndarray, ntables: int) -> None:
        self.dense: np.ndarray | None = None
        self.ids, self.codes = sorted_ids, codes
        self.low = int(sorted_ids[0]) if len(sorted_ids) else 0
        span = int(sorted_ids[-1]) - self.low + 1 if len(sorted_ids) else 0
        if 0 < span <= 4 * len(sorted_ids) + 4096:
            dense = np.full(span, -1, dtype=np.int16 if ntables < 2**15 else np.int32)
            dense[sorted_ids - self.low] = codes
            self.dense, self.ids, self.codes = dense, np.zeros(0, np.int64), np.zeros(0, np.int32)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, node table codes; meaningless where not found) for an array of node ids."""
        if self.dense is not None:
            offset = ids - self.low
            inside = (offset >= 0) & (offset < len(self.dense))
            codes = self.dense[np.where(inside, offset, 0)].astype(np.int64)
            found = inside & (codes >= 0)
            return found, np.where(found, codes, 0)
        if len(self.ids) == 0:
            return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        return found, self.codes[pos].astype(np.int64)
