"""What cleanup says about a draining database (bluegreen.cleanup's drain rule, docs in tests/test_drain.py), and
that it works on the clock when no `now` is given, as the cleanup step and reconcile call it."""

from __future__ import annotations

import time

from bluegreen_dagster.bluegreen import cleanup
from tests.test_drain import Fake


def test_a_draining_database_is_kept_with_how_long_ago_the_alias_left_it() -> None:
    target = Fake(["acme-100", "acme-200"], alias="acme-200")
    result = cleanup(target, "acme", keep=1, in_flight=set, left_at={"acme-100": 1000.0}, drain_seconds=300,
                     now=1120.0)
    assert result.protected == {"acme-100": "draining: the alias left it 120s ago, kept for drain_seconds 300s so "
                                            "readers' transactions finish"}
    assert target.names == ["acme-100", "acme-200"]


def test_without_now_the_drain_counts_on_the_clock() -> None:
    target = Fake(["acme-100", "acme-200"], alias="acme-200")
    kept = cleanup(target, "acme", keep=1, in_flight=set, left_at={"acme-100": time.time()}, drain_seconds=3600)
    assert list(kept.protected) == ["acme-100"] and target.names == ["acme-100", "acme-200"]
    gone = cleanup(target, "acme", keep=1, in_flight=set, left_at={"acme-100": time.time() - 7200}, drain_seconds=3600)
    assert gone.dropped == ["acme-100"]
