"""Opt-in: end-to-end against a REAL Neo4j Enterprise 5.x (+ GDS Arrow) server. Skipped unless NEO4J_URI is set.

    NEO4J_URI=bolt://localhost:7687 NEO4J_PASSWORD=... [NEO4J_USER=neo4j] [GDS_ARROW_PORT=8491] \
        .venv/bin/pytest -m neo4j_enterprise tests/test_neo4j_enterprise_optin.py

Without GDS_ARROW_PORT the Cypher loader is used. Creates databases named `bgtest<random>-<timestamp>` and an
alias `bgtest<random>`, and removes them at the end. This is the only test that settles the UNVERIFIED points of
the reference (string properties over Arrow, LOAD_DONE timing, alias error codes).
"""

from __future__ import annotations

import os
import secrets
from urllib.parse import urlparse

import pytest

from bluegreen_dagster import bluegreen
from bluegreen_dagster.config import Settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError, TargetError
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget

pytestmark = [
    pytest.mark.neo4j_enterprise,
    pytest.mark.skipif(not os.environ.get("NEO4J_URI"), reason="set NEO4J_URI (and NEO4J_PASSWORD, optional "
                                                                "GDS_ARROW_PORT) to run against Neo4j Enterprise"),
]


@pytest.fixture
def target():
    uri = urlparse(os.environ["NEO4J_URI"])
    arrow_port = os.environ.get("GDS_ARROW_PORT")
    settings = Settings.model_validate({"target": "neo4j", "neo4j": {
        "host": uri.hostname or "localhost", "bolt_port": uri.port or 7687,
        "user": os.environ.get("NEO4J_USER", "neo4j"), "password": os.environ.get("NEO4J_PASSWORD", ""),
        "tls": uri.scheme.endswith("+s"), "loader": "arrow" if arrow_port else "cypher",
        "arrow_port": int(arrow_port or 8491), "batch_size": 5_000, "online_timeout": 300}})
    with Neo4jTarget(settings) as t:
        yield t


def test_load_verify_switch_cleanup(target, tmp_path):
    customer = f"bgtest{secrets.token_hex(3)}"
    timestamps = [1767741527, 1767741600, 1767741700]
    try:
        health = target.health()
        assert health.measurements["edition"] == "enterprise", health.measurements
        for ts in timestamps:
            write_snapshot(tmp_path / "data", customer, ts, people=2_000)
            snapshot = snapshot_at(tmp_path / "data", customer, ts)
            expected = expected_counts(snapshot)
            report = target.load(snapshot)
            assert (report.nodes, report.relationships) == (expected.nodes, expected.relationships)
            assert target.load(snapshot).reused  # idempotent re-run
            assert bluegreen.verify(target, snapshot.key, expected) == expected
            result = bluegreen.switch_if_newest(target, snapshot.key, expected)
            assert result.switched and target.alias_target(customer) == snapshot.key

        newest = f"{customer}-{timestamps[-1]}"
        with pytest.raises(PermanentTargetError, match="alias"):
            target.drop_database(newest)  # RESTRICT: the live target cannot be dropped

        cleaned = bluegreen.cleanup(target, customer, keep=1, in_flight=set)
        assert sorted(cleaned.dropped) == sorted(f"{customer}-{ts}" for ts in timestamps[:-1])
        assert [d.name for d in target.list_databases(customer)] == [newest]
    finally:
        problems = _remove_everything(target, customer)
    if problems:  # reported after the test's own result, never instead of it
        pytest.fail(f"could not clean up on the server: {'; '.join(problems)}")


def _remove_everything(target: Neo4jTarget, customer: str) -> list[str]:
    problems = []
    try:  # test-only statement (not in queries.py); its parse is checked in test_neo4j_community.py
        target.admin.run("DROP ALIAS $alias IF EXISTS FOR DATABASE", {"alias": customer})
    except TargetError as exc:
        problems.append(str(exc))
    try:
        for info in target.list_databases(customer):
            target.drop_database(info.name)
    except TargetError as exc:
        problems.append(str(exc))
    return problems
