"""Pins are shared through the Dagster instance: what one host (or the CLI) pins, every other one sees."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster import pins
from bluegreen_dagster.names import InvalidName
from tests.postgres import Postgres, postgres  # noqa: F401 - the fixture


def test_pin_unpin_round_trip() -> None:
    with dg.instance_for_test() as instance:
        assert pins.get_pin(instance, "acme") is None
        pin = pins.set_pin(instance, "acme", "acme-100", reason="bad data in 200", by="ops@host")
        assert pins.get_pin(instance, "acme") == pin
        assert "acme is pinned to acme-100" in pin.describe() and "bad data in 200" in pin.describe()
        assert pins.pins(instance, ["acme", "globex"]) == {"acme": pin}
        assert pins.clear_pin(instance, "acme") == pin
        assert pins.get_pin(instance, "acme") is None and pins.clear_pin(instance, "acme") is None
        assert pins.pins(instance, ["acme"]) == {}


def test_a_bad_customer_name_never_reaches_the_store() -> None:
    with dg.instance_for_test() as instance, pytest.raises(InvalidName):
        pins.set_pin(instance, "acme\nx", "acme-100", reason="", by="ops")


def test_a_pin_set_on_one_host_is_seen_on_another(tmp_path: Path, postgres: Postgres,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    homes = []
    for name in ("host-a", "host-b"):
        home = tmp_path / name
        home.mkdir()
        (home / "dagster.yaml").write_text(postgres.instance_yaml())
        homes.append(home)
    with dg.DagsterInstance.from_config(str(homes[0])) as a, dg.DagsterInstance.from_config(str(homes[1])) as b:
        pin = pins.set_pin(a, "acme", "acme-100", reason="incident 42", by="ops@a")
        assert pins.get_pin(b, "acme") == pin
        pins.clear_pin(b, "acme")
        assert pins.get_pin(a, "acme") is None
