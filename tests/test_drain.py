"""The drain (bluegreen.cleanup, drain.py): a database the alias left survives cleanup for drain_seconds after
that switch, whatever keep_databases says, and is dropped after it."""

from __future__ import annotations

import dagster as dg

from bluegreen_dagster.bluegreen import cleanup
from bluegreen_dagster.records import left_alias_at
from bluegreen_dagster.targets.base import DatabaseInfo


class Fake:
    """Just what cleanup reads and does."""

    def __init__(self, names: list[str], alias: str) -> None:
        self.names, self.alias, self.dropped = list(names), alias, []

    def alias_target(self, customer):
        return self.alias

    def list_databases(self, customer):
        return [DatabaseInfo(n, "online") for n in self.names]

    def drop_database(self, name):
        assert name != self.alias
        self.names.remove(name)
        self.dropped.append(name)


def test_the_database_the_alias_left_survives_cleanup_inside_drain_seconds_and_is_dropped_after():
    target = Fake(["acme-100", "acme-200", "acme-300"], alias="acme-300")
    left = {"acme-200": 1000.0, "acme-100": 400.0}
    inside = cleanup(target, "acme", keep=1, in_flight=set, left_at=left, drain_seconds=300, now=1000.0 + 299)
    assert inside.dropped == ["acme-100"] and target.names == ["acme-200", "acme-300"]
    assert "draining" in inside.protected["acme-200"]
    after = cleanup(target, "acme", keep=1, in_flight=set, left_at=left, drain_seconds=300, now=1000.0 + 300)
    assert after.dropped == ["acme-200"] and target.names == ["acme-300"]


def test_drain_does_not_change_what_keep_databases_keeps():
    target = Fake(["acme-100", "acme-200", "acme-300"], alias="acme-300")
    result = cleanup(target, "acme", keep=2, in_flight=set, left_at={"acme-200": 990.0}, now=1000.0)
    assert result.kept == ["acme-300", "acme-200"] and result.dropped == ["acme-100"]


def test_left_alias_at_reads_the_switches_dagster_recorded():
    from bluegreen_dagster.live_graph import ROLLBACK, SWITCH, record_live

    instance = dg.DagsterInstance.ephemeral()
    for serves, previous, how in (("acme-100", None, SWITCH), ("acme-200", "acme-100", SWITCH),
                                  ("acme-300", "acme-200", SWITCH), ("acme-200", "acme-300", ROLLBACK),
                                  ("acme-300", "acme-200", SWITCH)):  # a rollback and forward again
        record_live(instance, "acme", serves, previous, how=how, by="test")
    left = left_alias_at(instance, "acme")
    assert set(left) == {"acme-100", "acme-200", "acme-300"}
    assert left["acme-200"] > left["acme-300"] > left["acme-100"]  # the LAST time each was left
