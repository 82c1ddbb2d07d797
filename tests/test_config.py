from pathlib import Path

import pytest

from bluegreen_dagster.config import ConfigError, load_settings, parse_settings
from bluegreen_dagster.config_neo4j import Neo4jSettings


def test_defaults_match_the_documented_ones(tmp_path: Path) -> None:
    s = parse_settings({}, root=tmp_path, env={})
    assert s.target == "embedded"
    assert s.orchestrator.scan_interval == 10
    assert s.orchestrator.max_concurrent_loads == 1
    assert s.orchestrator.keep_databases == 2
    assert s.neo4j.arrow_port == 8491
    assert s.dataset.base_path == tmp_path / "data"  # relative paths resolve against the config's folder


def test_env_vars_expand_with_defaults(tmp_path: Path) -> None:
    raw = {"target": "neo4j", "neo4j": {"host": "${H:-db.internal}", "password": "${PW}", "bolt_port": "${PORT}"}}
    s = parse_settings(raw, root=tmp_path, env={"PW": "s3cret", "PORT": "7688"})
    assert s.neo4j.host == "db.internal"
    assert s.neo4j.bolt_port == 7688
    assert s.neo4j.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_missing_env_var_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neo4j\.password: environment variable NEO4J_PASSWORD is not set"):
        parse_settings({"neo4j": {"password": "${NEO4J_PASSWORD}"}}, root=tmp_path, env={})


def test_wrong_value_names_the_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"orchestrator\.scan_interval: .*'often'"):
        parse_settings({"orchestrator": {"scan_interval": "often"}}, root=tmp_path, env={})
    with pytest.raises(ConfigError, match=r"orchestrator\.keep_databases: .*greater than or equal to 1"):
        parse_settings({"orchestrator": {"keep_databases": 0}}, root=tmp_path, env={})
    with pytest.raises(ConfigError, match=r"target: "):
        parse_settings({"target": "postgres"}, root=tmp_path, env={})


def test_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"orchestrator\.scan_intervall: unknown key"):
        parse_settings({"orchestrator": {"scan_intervall": 5}}, root=tmp_path, env={})


def test_neo4j_target_needs_a_password_and_never_echoes_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neo4j.password is empty"):
        parse_settings({"target": "neo4j"}, root=tmp_path, env={})
    with pytest.raises(ConfigError) as err:
        parse_settings({"neo4j": {"password": "hunter2", "bolt_port": "x"}}, root=tmp_path, env={})
    assert "hunter2" not in str(err.value)


def test_bluegreen_config_selects_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text("orchestrator:\n  keep_databases: 5\n")
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(cfg))
    assert load_settings().orchestrator.keep_databases == 5
    monkeypatch.setenv("BLUEGREEN_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml not found"):
        load_settings()


def test_shipped_config_yaml_is_valid_and_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    s = load_settings(Path(__file__).parent.parent / "config.yaml")
    assert s.target == "embedded"
    assert s.orchestrator.scan_interval == 5  # shipped for latency; unset, it defaults to 10


def test_state_path_is_gone_and_says_so(tmp_path: Path) -> None:
    """Its lock files were replaced by the Dagster instance; an old config names the key to remove."""
    with pytest.raises(ConfigError, match=r"orchestrator\.state_path: unknown key"):
        parse_settings({"orchestrator": {"state_path": "x"}}, root=tmp_path, env={})


def test_each_target_resource_carries_its_whole_section_and_the_password_only_as_its_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No field is listed by hand between config.yaml and the target: a field added to a section's model in
    config.py arrives in the target unchanged (here: every field, set to a non-default value)."""
    import dagster as dg
    import yaml

    from bluegreen_dagster.resources import load_resources

    monkeypatch.setenv("PW_FOR_TEST", "s3cret-value")
    neo4j = {"host": "db.internal", "bolt_port": 7688, "arrow_port": 8492, "user": "loader", "tls": True,
             "tls_ca_file": "ca.pem", "concurrency": 8, "loader": "cypher", "batch_size": 500, "online_timeout": 60,
             "stall_timeout": 120, "arrow_string_properties": True, "arrow_nulls": "nan",
             "uri": "bolt+s://db.internal:7688", "topology": {"primaries": 3, "secondaries": 1}}
    orchestrator = {"max_databases": 7, "heap_threshold_percent": 70, "pagecache_threshold_percent": 75,
                    "progress_seconds": 0.5}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"target": "neo4j", "neo4j": {**neo4j, "password": "${PW_FOR_TEST}"},
                                   "orchestrator": orchestrator}))
    resources = load_resources(cfg)
    assert resources.settings.env_name("neo4j.password") == "PW_FOR_TEST"
    target = resources.target
    assert target.password == dg.EnvVar("PW_FOR_TEST") and "s3cret-value" not in repr(target)
    assert set(target.neo4j) == set(Neo4jSettings.model_fields) - {"password"}
    rebuilt = resources.initialized().target.settings()
    assert rebuilt.neo4j == resources.settings.neo4j  # every field, the password included
    assert rebuilt.neo4j.tls_ca_file == tmp_path / "ca.pem"
    assert rebuilt.orchestrator.max_databases == 7 and rebuilt.orchestrator.progress_seconds == 0.5
    assert resources.pipeline.settings().orchestrator == resources.settings.orchestrator


def test_a_value_that_only_contains_a_variable_is_not_a_variable_name(tmp_path: Path) -> None:
    s = parse_settings({"neo4j": {"password": "pre-${PW}", "host": "${H}"}}, root=tmp_path, env={"PW": "x", "H": "h"})
    assert s.env_name("neo4j.password") is None and s.env_name("neo4j.host") == "H"
