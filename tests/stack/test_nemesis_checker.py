"""The nemesis checker (tests/stack/nemesis.py) finds what it promises to find: fed a history in which one
guarantee is broken, it reports exactly that violation (no Docker needed; the stack test feeds it the real one)."""

from __future__ import annotations

import copy

from tests.stack.nemesis import Drop, History, Injection, check, format_table

C = ["c"]


def clean_history() -> History:
    h = History()
    h.drops = [Drop("c", 100, 10, 20, time=1000.0), Drop("c", 200, 11, 22, time=1100.0)]
    h.moves = [{"time": 1050.0, "alias": "c", "database": "c-100", "previous": None, "nodes": 10,
                "relationships": 20, "status": "online"},
               {"time": 1150.0, "alias": "c", "database": "c-200", "previous": "c-100", "nodes": 11,
                "relationships": 22, "status": "online"}]
    h.reads = [{"time": 1060.0, "customer": "c", "nodes": 10, "relationships": 20},
               {"time": 1120.0, "customer": "c", "error": "ServiceUnavailable"},
               {"time": 1130.0, "customer": "c", "nodes": 10, "relationships": 20},
               {"time": 1160.0, "customer": "c", "nodes": 11, "relationships": 22}]
    h.databases = [{"name": "c-100", "status": "online", "nodes": 10, "relationships": 20},
                   {"name": "c-200", "status": "online", "nodes": 11, "relationships": 22}]
    h.injections = [Injection("kill the daemon", 1110.0, 1115.0, "daemon")]
    return h


def rules(history: History) -> list[str]:
    return [v.rule for v in check(history, C)[0]]


def test_a_clean_history_has_no_violation_and_a_table_row_per_fault():
    violations, rows = check(clean_history(), C)
    assert violations == []
    daemon = next(r for r in rows if r["fault"] == "kill the daemon")
    assert daemon["injected"] == 1 and daemon["longest unavailability (s)"] == 10.0 and daemon["recovery (s)"] == 35.0
    assert "kill the daemon" in format_table(rows)


def test_each_broken_guarantee_is_reported():
    h = clean_history()
    h.moves[1]["nodes"] = 7  # switched to a database that did not hold the whole snapshot
    assert rules(h) == ["alias served an unverified database"]

    h = clean_history()
    h.moves.append({**h.moves[0], "time": 1200.0, "previous": "c-200"})  # back to the older snapshot
    assert rules(h) == ["alias moved to an older snapshot"]

    h = clean_history()
    del h.moves[1]  # c-200 never served
    h.databases.pop()
    assert rules(h) == ["dropped snapshot never served nor superseded"]

    h = clean_history()
    h.moves[1]["time"] = 1100.0 + 601  # served, but after the bound
    assert rules(h) == ["customer blocked longer than the bound"]

    h = clean_history()
    h.databases[1]["relationships"] = 5  # a half-loaded database left behind
    assert rules(h) == ["partial database left after reconcile"]

    h = clean_history()
    h.reads.append({"time": 1170.0, "customer": "c", "nodes": 11, "relationships": 3})
    assert rules(h) == ["a reader read an incomplete snapshot"]

    h = clean_history()
    h.moves.append({"time": 1170.0, "alias": "c", "database": None, "previous": "c-200", "nodes": None,
                    "relationships": None, "status": None})
    violations, rows = check(copy.deepcopy(h), C)
    assert [v.rule for v in violations] == ["alias disappeared after serving"]
    assert next(r for r in rows if r["fault"] == "kill the daemon")["violations"] == 1

    h = clean_history()  # a target restarted without the alias: readers are told it does not exist
    h.reads.append({"time": 1170.0, "customer": "c", "error": "ClientError: {code: Neo.ClientError.Database."
                    "DatabaseNotFound} {message: Database does not exist. Database name: 'c'.}"})
    assert rules(h) == ["alias disappeared after serving"]
    h.reads[-1]["time"] = 1040.0  # before the alias first served, "no such database" is expected
    assert rules(h) == []
