"""The smoke-query part of the gate on a real embedded database, without a Dagster run: which plans pass, which
block the switch, and the check description a user reads (each failed query by name: expected, got).

tests/test_smoke.py runs the same rules through whole runs; this file checks the report's edges in about a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen_dagster.config_smoke import SmokeQuery, SmokeSettings, WarmupQuery
from bluegreen_dagster.smoke import SmokeReport, is_empty, run_plan, same_value
from tests.embedded_helpers import demo, make_target

PEOPLE = 20
TAIL = ". The alias was not moved; the database is kept for inspection until cleanup"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("smoke")
    target = make_target(root)
    snapshot = demo(root, people=PEOPLE)
    target.load(snapshot)
    return target, snapshot.key


def run(loaded, *queries: dict, warmup: dict | None = None) -> SmokeReport:
    target, key = loaded
    plan = SmokeSettings(warmup=WarmupQuery(**warmup) if warmup else None,
                         queries=[SmokeQuery(**q) for q in queries])
    return run_plan(target, key, plan)


COUNT = "MATCH (p:Person) RETURN count(p) AS n"


def test_queries_that_hold_pass_and_say_how_many(loaded) -> None:
    key = loaded[1]
    one = run(loaded, {"name": "people", "query": COUNT, "min_rows": 1})
    assert one.passed and one.description() == f"{key}: 1 smoke query passed"
    three = run(loaded, {"name": "people", "query": COUNT, "min_rows": 1},
                {"name": "count", "query": COUNT, "column": "n", "equals": PEOPLE},
                {"name": "fast", "query": COUNT, "within_seconds": 60})
    assert three.passed and three.description() == f"{key}: 3 smoke queries passed"
    assert three.metadata()["failed"] == [] and [q["name"] for q in three.metadata()["queries"]] == [
        "people", "count", "fast"]
    assert three.outcomes[2].got.startswith("1 row in ")


def test_min_rows_is_at_least_not_more_than(loaded) -> None:
    key = loaded[1]
    names = "MATCH (p:Person) RETURN p.name AS name"
    assert run(loaded, {"name": "exact", "query": names, "min_rows": PEOPLE}).passed
    short = run(loaded, {"name": "too-many", "query": names, "min_rows": PEOPLE + 1})
    assert not short.passed
    assert short.description() == (f"{key}: smoke query 'too-many' expected at least {PEOPLE + 1} rows, got "
                                   f"{PEOPLE} rows{TAIL}")
    assert short.metadata()["failed"] == ["too-many"]
    one = run(loaded, {"name": "one", "query": COUNT, "min_rows": 2})
    assert one.description() == f"{key}: smoke query 'one' expected at least 2 rows, got 1 row{TAIL}"
    singular = run(loaded, {"name": "none", "query": "MATCH (p:Person) WHERE p.name = 'nobody' RETURN p", "min_rows": 1})
    assert singular.description() == f"{key}: smoke query 'none' expected at least 1 row, got 0 rows{TAIL}"


def test_equals_reads_the_column_of_the_first_row(loaded) -> None:
    key = loaded[1]
    wrong = run(loaded, {"name": "count", "query": COUNT, "column": "n", "equals": PEOPLE + 1})
    assert wrong.description() == (f"{key}: smoke query 'count' expected n = {PEOPLE + 1} in the first row, got "
                                   f"n = {PEOPLE}{TAIL}")
    assert run(loaded, {"name": "float", "query": COUNT, "column": "n", "equals": float(PEOPLE)}).passed
    as_text = run(loaded, {"name": "text", "query": COUNT, "column": "n", "equals": str(PEOPLE)})
    assert not as_text.passed and f"expected n = '{PEOPLE}' in the first row, got n = {PEOPLE}" in \
        as_text.description()
    missing = run(loaded, {"name": "col", "query": COUNT, "column": "m", "equals": 1})
    assert missing.description() == (f"{key}: smoke query 'col' expected m = 1 in the first row, got no column 'm' "
                                     f"(the query returns n){TAIL}")
    empty = run(loaded, {"name": "rows", "query": "MATCH (p:Person) WHERE p.name = 'nobody' RETURN p.name AS id",
                         "column": "id", "equals": 1})
    assert empty.description() == f"{key}: smoke query 'rows' expected id = 1 in the first row, got no rows{TAIL}"
    second = run(loaded, {"name": "first", "column": "id", "equals": 2,
                          "query": "UNWIND [1, 2] AS id RETURN id"})
    assert not second.passed and "got id = 1" in second.description()  # the first row, not any row


def test_a_refused_query_fails_naming_the_error(loaded) -> None:
    key = loaded[1]
    bad = run(loaded, {"name": "typo", "query": "MATCH (p:Person RETURN p", "min_rows": 1},
              {"name": "fine", "query": COUNT, "min_rows": 1})
    assert not bad.passed
    text = bad.description()
    assert text.startswith(f"{key}: smoke query 'typo' expected at least 1 row, got an error (LadybugDB refused it")
    assert text.endswith(TAIL) and "'fine'" not in text
    assert bad.outcomes[0].seconds is None and bad.metadata()["failed"] == ["typo"]


def test_the_warmup_runs_first_and_a_failed_one_blocks(loaded) -> None:
    key = loaded[1]
    warm = run(loaded, {"name": "people", "query": COUNT, "min_rows": 1}, warmup={"query": COUNT})
    assert warm.passed and warm.warmup.seconds is not None and warm.warmup.error is None
    assert warm.description() == f"{key}: 1 smoke query passed after a {warm.warmup.seconds:.2f}s warm-up"
    assert warm.metadata()["warmup_s"] == round(warm.warmup.seconds, 3) and "warmup_error" not in warm.metadata()
    only = run(loaded, warmup={"query": COUNT})
    assert only.passed and only.description() == (f"{key}: a {only.warmup.seconds:.2f}s warm-up; no smoke queries "
                                                   "configured")
    failed = run(loaded, {"name": "people", "query": COUNT, "min_rows": 1}, warmup={"query": "NOT CYPHER"})
    assert not failed.passed and failed.warmup.seconds is None
    assert failed.description().startswith(f"{key}: the warm-up query failed: LadybugDB refused it")
    assert failed.description().endswith(TAIL)
    assert failed.metadata()["warmup_error"] == failed.warmup.error and "warmup_s" not in failed.metadata()
    nothing = run(loaded)
    assert nothing.passed and nothing.warmup is None and nothing.metadata() == {
        "database": key, "queries": [], "failed": []}


def test_an_empty_plan_is_one_without_warmup_and_queries() -> None:
    assert is_empty(SmokeSettings())
    assert not is_empty(SmokeSettings(warmup=WarmupQuery(query=COUNT)))
    assert not is_empty(SmokeSettings(queries=[SmokeQuery(name="q", query=COUNT, min_rows=0)]))


@pytest.mark.parametrize(("expected", "actual", "equal"), [
    (800, 800.0, True), (800.0, 800, True), (1, 2, False), (True, 1, False), (1, True, False), (True, True, True),
    (False, False, True), ("1", 1, False), (1, "1", False), ("a", "a", True), (None, None, True), ("a", "b", False),
])
def test_a_number_equals_a_number_of_either_type_nothing_else_crosses_types(expected, actual, equal: bool) -> None:
    assert same_value(expected, actual) is equal


def test_a_long_value_is_cut_in_the_message(loaded) -> None:
    key = loaded[1]
    long = "x" * 300
    report = run(loaded, {"name": "long", "query": f"RETURN '{long}' AS v", "column": "v", "equals": "y"})
    assert report.description() == (f"{key}: smoke query 'long' expected v = 'y' in the first row, got "
                                    f"v = {repr(long)[:200]}...{TAIL}")
    exact = "x" * 198  # its repr has exactly 200 characters: shown whole
    shown = run(loaded, {"name": "exact", "query": f"RETURN '{exact}' AS v", "column": "v", "equals": "y"})
    assert f"got v = {exact!r}{TAIL}" in shown.description()


def test_every_failed_query_is_listed_in_one_description(loaded) -> None:
    key = loaded[1]
    report = run(loaded, {"name": "a", "query": COUNT, "min_rows": 2},
                 {"name": "b", "query": COUNT, "column": "n", "equals": 0})
    assert report.description() == (f"{key}: smoke query 'a' expected at least 2 rows, got 1 row; smoke query 'b' "
                                     f"expected n = 0 in the first row, got n = {PEOPLE}{TAIL}")


SLOW = ("MATCH (a:Person), (b:Person), (c:Person), (d:Person), (e:Person), (f:Person) "
        "WHERE a.age + b.age + c.age + d.age + e.age + f.age < 0 RETURN count(*) AS n")


def test_a_query_over_its_limit_is_stopped_and_fails_with_its_limit(loaded) -> None:
    key = loaded[1]
    report = run(loaded, {"name": "six-way", "query": SLOW, "within_seconds": 0.2},
                 {"name": "capped", "query": SLOW, "min_rows": 1, "timeout_seconds": 0.2})
    assert not report.passed
    first, second = report.outcomes
    assert (first.name, first.passed, first.seconds) == ("six-way", False, 0.2)
    assert first.expected == "to finish within 0.2s" and first.got.startswith("no result in time (stopped after ")
    assert (second.name, second.passed, second.seconds) == ("capped", False, 0.2)
    assert report.description().startswith(
        f"{key}: smoke query 'six-way' expected to finish within 0.2s, got no result in time (stopped after ")
    assert report.metadata()["failed"] == ["six-way", "capped"]
    assert [q["passed"] for q in report.metadata()["queries"]] == [False, False]


def test_the_metadata_holds_each_querys_outcome_and_duration(loaded) -> None:
    report = run(loaded, {"name": "rows", "query": COUNT, "min_rows": 1},
                 {"name": "fast", "query": COUNT, "within_seconds": 60},
                 {"name": "value", "query": COUNT, "column": "n", "equals": PEOPLE},
                 {"name": "typo", "query": "MATCH (p:Person RETURN p", "min_rows": 1})
    queries = report.metadata()["queries"]
    assert [(q["name"], q["passed"], q["expected"]) for q in queries] == [
        ("rows", True, "at least 1 row"), ("fast", True, "to finish within 60s"),
        ("value", True, f"n = {PEOPLE} in the first row"), ("typo", False, "at least 1 row")]
    for q in queries[:3]:
        assert isinstance(q["seconds"], float) and 0 <= q["seconds"] < 60
    assert queries[3]["seconds"] is None  # refused: it never ran


def test_failed_value_checks_say_false_and_how_long_they_took(loaded) -> None:
    key = loaded[1]
    report = run(loaded, {"name": "col", "query": "MATCH (p:Person) RETURN count(p) AS n, 1 AS one", "column": "m",
                          "equals": 1},
                 {"name": "rows", "query": "MATCH (p:Person) WHERE p.name = 'nobody' RETURN p.name AS id",
                  "column": "id", "equals": 1},
                 {"name": "value", "query": COUNT, "column": "n", "equals": 0})
    assert "got no column 'm' (the query returns n, one)" in report.description()
    for q in report.metadata()["queries"]:
        assert q["passed"] is False
        assert isinstance(q["seconds"], float) and 0 <= q["seconds"] < 60
    assert report.description().startswith(f"{key}: smoke query 'col' expected")
