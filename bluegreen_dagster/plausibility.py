"""The plausibility gate: a verified database still must look like a graph this customer could really have before
the alias moves to it. Verification proves the database equals its snapshot; this catches a snapshot that is
itself wrong (a producer bug that writes empty or truncated files with `_SUCCESS`).

Rules, checked by the blocking check `plausible` (assets.py) and again right before the switch, under the
customer's lock (`bluegreen.switch_if_newest`), against whatever is live then:
- an empty graph (no nodes) never goes live;
- node or relationship count may not shrink by more than `max_shrink_percent` against the live database, unless
  the run carries the override (tag `bluegreen/allow_shrink=true`, or `bluegreen load --allow-shrink`).
"""

from __future__ import annotations

from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.records import ALLOW_SHRINK_TAG
from bluegreen_dagster.targets.base import PermanentTargetError


class Implausible(PermanentTargetError):
    """The switch was refused by the gate; the message names both counts and how to override."""


def shrink_percent(live: int, new: int) -> float:
    return 0.0 if live <= 0 or new >= live else (live - new) * 100.0 / live


def check(new: GraphCounts, live: GraphCounts | None, *, max_shrink_percent: float, new_name: str,
          live_name: str | None, allow_shrink: bool = False) -> None:
    """Raise Implausible when `new` must not replace `live` (None: the customer has no live database yet)."""
    if new.nodes == 0:
        raise Implausible(f"{new_name} is an empty graph (0 nodes, {new.relationships} relationships): refusing to "
                          "switch to it. Fix the producer and drop a new snapshot")
    if live is None or allow_shrink:
        return
    problems = []
    for what, before, after in (("nodes", live.nodes, new.nodes),
                                ("relationships", live.relationships, new.relationships)):
        shrink = shrink_percent(before, after)
        if shrink > max_shrink_percent:
            problems.append(f"{what} {before:,} -> {after:,} (-{shrink:.0f}%)")
    if problems:
        raise Implausible(
            f"{new_name} shrinks against the live {live_name}: {'; '.join(problems)}, more than "
            f"max_shrink_percent={max_shrink_percent:g}. The database is kept for inspection. If the shrink is "
            f"intended, re-run the partition with the run tag {ALLOW_SHRINK_TAG}=true (or `bluegreen load "
            "--allow-shrink`)")
