"""Pre-switch smoke queries and warm-up (smoke.py, the blocking check `smoke_queries`).

- embedded: through the load_snapshot job on real LadybugDB files (pass; fail by rows, by value, by time; a write
  refused; warm-up duration; per-customer plans; the alert a failure sends; config errors);
- Neo4j: `read_query` and a whole plan against the real Community server (tests/neo4j_community.py), and the job
  against the Enterprise stand-in, which answers only the statements it models: a query it does not know is
  refused, as a real server refuses a query it cannot run.
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.alerts import alert_for_run
from bluegreen_dagster.config import ConfigError, Settings, parse_settings
from bluegreen_dagster.config_smoke import SmokeSettings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.smoke import run_plan
from bluegreen_dagster.targets.base import PermanentTargetError, QueryRefused, QueryTimedOut
from tests.conftest import Project
from tests.helpers import STANDIN_PASSWORD, alias_of, databases, make_neo4j_project, run_partition

# With 200 demo people: 200^4 = 1.6e9 combinations, far beyond any limit below (LadybugDB stops it promptly).
SLOW = ("MATCH (a:Person), (b:Person), (c:Person), (d:Person) WHERE a.age + b.age + c.age + d.age < 0 "
        "RETURN count(*) AS n")
PEOPLE = "MATCH (p:Person) RETURN p.nodeId AS id"
KNOWS = "MATCH ()-[r:KNOWS]->() RETURN count(r) AS knows"
# On the 50 people of the Community fixture: 50^5 = 312M combinations, far beyond a 1 s transaction timeout.
COMMUNITY_SLOW = ("MATCH (a:Person), (b:Person), (c:Person), (d:Person), (e:Person) "
                  "WHERE a.nodeId + b.nodeId + c.nodeId + d.nodeId + e.nodeId < 0 RETURN count(*) AS n")


def check(result: dg.ExecuteInProcessResult, name: str = "smoke_queries") -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def values(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {k: v.value for k, v in evaluation.metadata.items()}


def smoke(project: Project, queries: list[dict], **more) -> None:
    project.reconfigure(smoke={"queries": queries, **more})


def live_then_blocked(project: Project, queries: list[dict]) -> dg.ExecuteInProcessResult:
    """acme-100 goes live without smoke queries; acme-200 then runs with `queries` (expected to block it)."""
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=200)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        smoke(project, queries)
        result = run_partition(project, instance, "acme-200")
    assert not result.success
    assert not result.asset_materializations_for_node("alias_switch")  # the switch was skipped
    assert alias_of(project, "acme") == "acme-100"
    assert databases(project, "acme") == ["acme-100", "acme-200"]  # kept for inspection until cleanup
    return result


# --- embedded, through the job -----------------------------------------------------------------------------------


def test_passing_smoke_queries_let_the_switch_happen_and_report_each_query(project: Project) -> None:
    smoke(project, [{"name": "people", "query": PEOPLE, "min_rows": 200},
                    {"name": "knows", "query": KNOWS, "column": "knows", "equals": 600},
                    {"name": "fast", "query": KNOWS, "within_seconds": 30}])
    write_snapshot(project.data, "acme", 100, people=200)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert result.success
    evaluation = check(result)
    assert evaluation.passed and evaluation.description == "acme-100: 3 smoke queries passed"
    reported = {q["name"]: q for q in values(evaluation)["queries"]}
    assert reported["people"]["got"] == "200 rows" and reported["people"]["expected"] == "at least 200 rows"
    assert reported["knows"]["got"] == "knows = 600"
    assert reported["fast"]["passed"] and reported["fast"]["seconds"] < 30
    assert alias_of(project, "acme") == "acme-100"
    # It ran after the other checks (the gate evaluates them in order), on the verified database, before the switch.
    assert [e.check_name for e in result.get_asset_check_evaluations()] == ["verify_counts", "plausible",
                                                                           "smoke_queries"]
    started = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert started.index("gate") < started.index("alias_switch")


def test_too_few_rows_block_the_switch_and_name_the_query(project: Project) -> None:
    result = live_then_blocked(project, [{"name": "enough-people", "query": PEOPLE, "min_rows": 1000}])
    evaluation = check(result)
    assert not evaluation.passed
    assert "smoke query 'enough-people' expected at least 1000 rows, got 200 rows" in evaluation.description
    assert evaluation.description.startswith("acme-200: ")
    assert values(evaluation)["failed"] == ["enough-people"]


def test_a_wrong_value_blocks_the_switch(project: Project) -> None:
    result = live_then_blocked(project, [{"name": "knows-edges", "query": KNOWS, "column": "knows", "equals": 601}])
    assert "smoke query 'knows-edges' expected knows = 601 in the first row, got knows = 600" in \
        check(result).description


def test_a_value_of_another_type_or_a_missing_column_is_not_equal(project: Project) -> None:
    result = live_then_blocked(project, [
        {"name": "as-text", "query": KNOWS, "column": "knows", "equals": "600"},
        {"name": "typo", "query": KNOWS, "column": "know", "equals": 600}])
    description = check(result).description
    assert "'as-text' expected knows = '600' in the first row, got knows = 600" in description
    assert "'typo' expected know = 600 in the first row, got no column 'know' (the query returns knows)" in description


def test_a_query_over_its_time_limit_is_stopped_and_blocks_the_switch(project: Project) -> None:
    started = time.monotonic()
    result = live_then_blocked(project, [{"name": "four-way", "query": SLOW, "within_seconds": 0.5}])
    description = check(result).description
    assert "smoke query 'four-way' expected to finish within 0.5s, got no result in time" in description
    assert time.monotonic() - started < 60  # stopped at its limit, not run to its end


def test_queries_are_read_only(project: Project) -> None:
    write = "CREATE (p:Person {nodeId: 999999, labels: ['Person']}) RETURN p.nodeId AS id"
    result = live_then_blocked(project, [{"name": "sneaky-write", "query": write, "min_rows": 1}])
    description = check(result).description
    assert "'sneaky-write' expected at least 1 row, got an error" in description
    assert "read-only" in description
    from bluegreen_dagster.targets import make_target

    with make_target(project.settings) as target:  # nothing was written
        assert target.count("acme-200").labels["Person"] == 200


def test_warmup_runs_first_and_its_duration_is_in_the_metadata(project: Project) -> None:
    smoke(project, [{"name": "people", "query": PEOPLE, "min_rows": 1}],
          warmup={"query": "MATCH (p:Person)-[r]->(q) RETURN count(*)"})
    write_snapshot(project.data, "acme", 100, people=200)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert result.success
    evaluation = check(result)
    seen = values(evaluation)
    assert isinstance(seen["warmup_s"], float) and seen["warmup_s"] > 0
    assert f"after a {seen['warmup_s']:.2f}s warm-up" in evaluation.description


def test_a_failing_warmup_blocks_the_switch(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=200)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        smoke(project, [], warmup={"query": SLOW, "timeout_seconds": 0.3})
        result = run_partition(project, instance, "acme-200")
    assert not result.success and alias_of(project, "acme") == "acme-100"
    evaluation = check(result)
    assert "the warm-up query failed: stopped after" in evaluation.description
    assert "warmup_error" in values(evaluation)


def test_per_customer_plans_replace_by_name_and_add(project: Project) -> None:
    project.reconfigure(
        smoke={"queries": [{"name": "big-graph", "query": PEOPLE, "min_rows": 150}]},
        customers={"globex": {"smoke": {"queries": [
            {"name": "big-graph", "query": PEOPLE, "min_rows": 20},             # globex is small: its own limit
            {"name": "knows", "query": KNOWS, "column": "knows", "equals": 90}]}}})
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "globex", 100, people=30)
    write_snapshot(project.data, "initech", 100, people=30)
    with dg.instance_for_test() as instance:
        acme = run_partition(project, instance, "acme-100")
        globex = run_partition(project, instance, "globex-100")
        initech = run_partition(project, instance, "initech-100")
    assert acme.success and globex.success
    assert [q["name"] for q in values(check(acme))["queries"]] == ["big-graph"]
    assert {q["name"]: q["got"] for q in values(check(globex))["queries"]} == {"big-graph": "30 rows",
                                                                               "knows": "knows = 90"}
    # A customer without its own section gets the global plan, which a 30-person graph fails.
    assert not initech.success
    assert "'big-graph' expected at least 150 rows, got 30 rows" in check(initech).description
    assert alias_of(project, "initech") is None


def test_without_smoke_queries_the_check_passes_and_says_so(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert result.success and check(result).description.startswith("no smoke queries configured")


def test_a_failed_smoke_query_is_alerted_by_the_alert_sensor(project: Project) -> None:
    """The project's own alert_on_failure sensor (sensors.py), evaluated for the failed run, posts to a local
    webhook receiver started here."""
    import json

    from tests.test_alert_channels import http_receiver

    write_snapshot(project.data, "acme", 200, people=200)
    smoke(project, [{"name": "enough-people", "query": PEOPLE, "min_rows": 1000}])
    with http_receiver() as (url, received):
        project.reconfigure(alerts={"webhook": {"url": f"{url}/hook"}})
        defs = project.defs
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-200"])
            result = defs.resolve_job_def("load_snapshot").execute_in_process(
                partition_key="acme-200", instance=instance, raise_on_error=False)
            context = dg.build_run_status_sensor_context(
                sensor_name="alert_on_failure", dagster_event=result.get_run_failure_event(),
                dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
            defs.resolve_sensor_def("alert_on_failure")(context)
    [(path, _headers, body)] = received
    alert = json.loads(body)
    assert path == "/hook" and alert["kind"] == "verification_blocked" and alert["partition"] == "acme-200"
    assert alert["step"] == "smoke_queries (check on snapshot_database)"
    assert alert["cause"] == check(result).description
    assert "'enough-people' expected at least 1000 rows, got 200 rows" in alert["cause"]


def test_after_a_failed_verification_smoke_queries_do_not_run_and_the_alert_names_verification(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    real_count = EmbeddedTarget.count

    def short_by_one(self, database):
        counts = real_count(self, database)
        return type(counts)(counts.nodes - 1, counts.relationships, counts.labels, counts.types)

    monkeypatch.setattr(EmbeddedTarget, "count", short_by_one)
    write_snapshot(project.data, "acme", 200, people=20)
    smoke(project, [{"name": "people", "query": PEOPLE, "min_rows": 1}])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-200"])
        result = project.job().execute_in_process(partition_key="acme-200", instance=instance, raise_on_error=False)
        alert = alert_for_run(instance, result.dagster_run, None)
    assert [e.check_name for e in result.get_asset_check_evaluations() if not e.passed] == ["verify_counts"]
    failure = next(e for e in result.get_step_failure_events() if e.step_key == "gate")
    assert "smoke_queries not run: verify_counts failed first" in failure.event_specific_data.error.message
    assert alert.step.startswith("verify_counts") and "expected 21, found 20" in alert.cause


# --- configuration -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("smoke_section", "message"), [
    ({"queries": [{"name": "a", "query": "RETURN 1", "min_row": 1}]}, "smoke.queries.0.min_row: unknown key"),
    ({"queries": [{"name": "a", "query": "RETURN 1"}]}, "needs exactly one expectation"),
    ({"queries": [{"name": "a", "query": "RETURN 1", "min_rows": 1, "within_seconds": 2}]},
     "(it has min_rows, within_seconds)"),
    ({"queries": [{"name": "a", "query": "RETURN 1 AS x", "equals": 1}]}, "column and equals go together"),
    ({"queries": [{"name": "a", "query": "RETURN 1", "within_seconds": 1, "timeout_seconds": 5}]},
     "within_seconds is its own time limit"),
    ({"queries": [{"name": "a", "query": "RETURN 1", "min_rows": 1}] * 2}, "two smoke queries are named 'a'"),
    ({"queries": [{"name": "a b", "query": "RETURN 1", "min_rows": 1}]}, "smoke.queries.0.name"),
    ({"queries": [{"name": "a", "query": "", "min_rows": 1}]}, "smoke.queries.0.query"),
    ({"warmup": {"query": "RETURN 1", "timeout": 5}}, "smoke.warmup.timeout: unknown key"),
])
def test_bad_smoke_config_names_the_key(tmp_path: Path, smoke_section: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({"smoke": smoke_section}, root=tmp_path)
    assert message in str(err.value)


def test_bad_customer_smoke_config_names_the_customer_and_never_the_password(tmp_path: Path) -> None:
    raw = {"target": "neo4j", "neo4j": {"password": "${PW}"},
           "customers": {"acme": {"smoke": {"queries": [{"name": "a", "query": "RETURN 1", "rows": 3}]}}}}
    with pytest.raises(ConfigError) as err:
        parse_settings(raw, root=tmp_path, env={"PW": "s3cret-pw-value"})
    assert "customers.acme.smoke.queries.0.rows: unknown key" in str(err.value)
    assert "s3cret-pw-value" not in str(err.value)


def test_the_shipped_config_and_its_commented_example_are_valid(tmp_path: Path) -> None:
    import yaml

    repo = Path(__file__).resolve().parent.parent
    lines = (repo / "config.yaml").read_text().splitlines()
    example = []
    for line in lines[lines.index("# smoke:"):]:  # the commented example, up to the first line that is not
        if not line.startswith("# "):
            break
        example.append(line[2:])
    settings = parse_settings(yaml.safe_load("\n".join(example)), root=tmp_path)
    assert len(settings.smoke.queries) == 3 and settings.smoke.warmup is not None
    acme = settings.smoke_for("acme-corp")
    assert acme.warmup is None and [q.name for q in acme.queries] == [q.name for q in settings.smoke.queries[1:]] + \
        ["people-exist"]
    assert parse_settings(yaml.safe_load("\n".join(lines)), root=tmp_path).smoke == SmokeSettings()


def test_the_merge_keeps_global_queries_and_lets_a_customer_drop_the_warmup() -> None:
    settings = Settings.model_validate({
        "smoke": {"warmup": {"query": "RETURN 1"},
                  "queries": [{"name": "a", "query": "RETURN 1", "min_rows": 1},
                              {"name": "b", "query": "RETURN 2", "min_rows": 1}]},
        "customers": {"acme": {"smoke": {"warmup": None, "queries": [{"name": "b", "query": "RETURN 3",
                                                                       "within_seconds": 1}]}},
                      "globex": {"max_shrink_percent": 90}}})
    acme = settings.smoke_for("acme")
    assert acme.warmup is None and [(q.name, q.query) for q in acme.queries] == [("a", "RETURN 1"), ("b", "RETURN 3")]
    assert settings.smoke_for("globex") == settings.smoke
    assert settings.smoke_for("initech").warmup is not None


# --- Neo4j: the real Community server ------------------------------------------------------------------------------


@pytest.fixture
def community(neo4j_community):
    from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
    from tests.test_neo4j_community import make_settings

    uri, _user, password = neo4j_community
    target = Neo4jTarget(make_settings(uri, password))
    target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")
    target.admin.run("UNWIND range(1, 50) AS i CREATE (:Person {nodeId: i, name: 'p' + i})", database="neo4j")
    yield target, password
    target.admin.run("MATCH (n) DETACH DELETE n", database="neo4j")
    target.close()


@pytest.mark.neo4j_community
def test_community_read_query_returns_columns_rows_and_count(community) -> None:
    target, _ = community
    result = target.read_query("neo4j", "MATCH (p:Person) RETURN p.nodeId AS id, p.name AS name ORDER BY id",
                               timeout_seconds=10, keep_rows=2)
    assert result.columns == ["id", "name"]
    assert result.rows == [[1, "p1"], [2, "p2"]] and result.row_count == 50
    assert 0 < result.seconds < 10


@pytest.mark.neo4j_community
def test_community_refuses_a_write_in_the_read_session(community) -> None:
    target, password = community
    with pytest.raises(QueryRefused) as err:
        target.read_query("neo4j", "CREATE (p:Person {nodeId: 999}) RETURN p", timeout_seconds=10)
    assert "Neo.ClientError.Statement.AccessMode" in str(err.value) and password not in str(err.value)
    assert target.admin.run("MATCH (p:Person) RETURN count(p) AS n", database="neo4j")[0]["n"] == 50


@pytest.mark.neo4j_community
def test_community_stops_a_query_at_its_transaction_timeout(community) -> None:
    target, _ = community
    started = time.monotonic()
    with pytest.raises(QueryTimedOut, match="stopped by Neo4j"):
        target.read_query("neo4j", COMMUNITY_SLOW, timeout_seconds=1)
    assert time.monotonic() - started < 20  # 50^5 = 312M rows would take far longer; the server stopped it


@pytest.mark.neo4j_community
def test_community_reports_a_syntax_error_and_refuses_a_bad_name(community) -> None:
    target, _ = community
    with pytest.raises(QueryRefused) as err:
        target.read_query("neo4j", "MATCH (p:Person RETURN p", timeout_seconds=10)
    assert "SyntaxError" in str(err.value)
    with pytest.raises(PermanentTargetError, match="not a Neo4j database name"):
        target.read_query("neo4j`; DROP", "RETURN 1", timeout_seconds=10)


@pytest.mark.neo4j_community
def test_community_runs_a_whole_plan(community) -> None:
    target, _ = community
    plan = SmokeSettings.model_validate({
        "warmup": {"query": "MATCH (n) RETURN count(n)"},
        "queries": [{"name": "people", "query": "MATCH (p:Person) RETURN p", "min_rows": 50},
                    {"name": "first", "query": "MATCH (p:Person {nodeId: 1}) RETURN p.name AS name",
                     "column": "name", "equals": "p1"},
                    {"name": "count", "query": "MATCH (p:Person) RETURN count(p) AS n", "column": "n",
                     "equals": 51},
                    {"name": "quick", "query": "MATCH (p:Person) RETURN count(p)", "within_seconds": 5},
                    {"name": "slow", "query": COMMUNITY_SLOW, "within_seconds": 1},
                    {"name": "few", "query": "MATCH (p:Person) RETURN p", "min_rows": 51}]})
    report = run_plan(target, "neo4j", plan)
    assert report.warmup is not None and report.warmup.seconds is not None and report.warmup.error is None
    assert [(o.name, o.passed) for o in report.outcomes] == [
        ("people", True), ("first", True), ("count", False), ("quick", True), ("slow", False), ("few", False)]
    description = report.description()
    assert "smoke query 'count' expected n = 51 in the first row, got n = 50" in description
    assert "smoke query 'slow' expected to finish within 1s, got no result in time (stopped by Neo4j" in description
    assert "smoke query 'few' expected at least 51 rows, got 50 rows" in description


# --- Neo4j through the job: the Enterprise stand-in ----------------------------------------------------------------


@pytest.fixture
def standin_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin):
    project = make_neo4j_project(tmp_path, monkeypatch, standin, orchestrator={"keep_databases": 2})
    return project, standin, STANDIN_PASSWORD


def test_standin_job_passes_queries_the_server_answers(standin_project) -> None:
    project, standin, _ = standin_project
    # The stand-in answers the node count (queries.COUNT_NODES) from its model and literal RETURNs.
    smoke(project, [{"name": "nodes", "query": "MATCH (n) RETURN count(n) AS count", "column": "count",
                     "equals": 51},
                    {"name": "alive", "query": "RETURN 1 AS ok", "min_rows": 1}])
    write_snapshot(project.data, "acme", 100, people=50)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert result.success, check(result).description
    assert check(result).passed
    assert standin.dbms.alias_target("acme") == "acme-100"


def test_standin_job_blocks_on_a_wrong_value_and_on_a_refused_query(standin_project) -> None:
    project, standin, password = standin_project
    write_snapshot(project.data, "acme", 100, people=50)
    write_snapshot(project.data, "acme", 200, people=50)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        smoke(project, [{"name": "nodes", "query": "MATCH (n) RETURN count(n) AS count", "column": "count",
                         "equals": 1000},
                        {"name": "unknown", "query": "MATCH (p:Person) RETURN p.name AS name", "min_rows": 1}])
        result = run_partition(project, instance, "acme-200")
    assert not result.success
    description = check(result).description
    assert "smoke query 'nodes' expected count = 1000 in the first row, got count = 51" in description
    assert "smoke query 'unknown' expected at least 1 row, got an error (Neo4j refused it: " \
           "Neo.ClientError.Statement.SyntaxError" in description
    assert standin.dbms.alias_target("acme") == "acme-100"
    assert "acme-200" in standin.dbms.database_names()  # kept for inspection
    assert password not in "\n".join(str(e) for e in result.all_events)


def test_standin_read_query_maps_what_the_server_answers() -> None:
    """`Neo4jTarget.read_query` over real Bolt: a forbidden read is refused for good, an unavailable database and a
    server that is gone are transient (the step's RetryPolicy retries them); the password is never in a message."""
    from bluegreen_dagster.targets.base import TransientTargetError
    from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
    from tests.standin.server import start_standin

    password = "standin-secret-pw"
    with start_standin(password=password, arrow=False) as standin:
        standin.dbms.add_database("acme-100", nodes={1: ("Person",), 2: ("Person",)})
        settings = Settings.model_validate({"target": "neo4j", "neo4j": standin.neo4j_settings()})
        target = Neo4jTarget(settings)
        count = "MATCH (n) RETURN count(n) AS count"
        assert target.read_query("acme-100", count, timeout_seconds=5).rows == [[2]]
        faults = standin.dbms.faults.fail_statement
        faults["COUNT_NODES"] = [("Neo.ClientError.Security.Forbidden", "Read access denied")]
        with pytest.raises(QueryRefused, match="Neo.ClientError.Security.Forbidden: Read access denied"):
            target.read_query("acme-100", count, timeout_seconds=5)
        faults["COUNT_NODES"] = [("Neo.TransientError.General.DatabaseUnavailable", "acme-100 is unavailable")]
        with pytest.raises(TransientTargetError, match="busy or unavailable"):
            target.read_query("acme-100", count, timeout_seconds=5)
        standin.bolt.stop()
        target.admin.close()  # a fresh connection to the stopped server
        with pytest.raises(TransientTargetError, match="cannot reach Neo4j") as err:
            target.read_query("acme-100", count, timeout_seconds=5)
        assert password not in str(err.value)
        target.close()
