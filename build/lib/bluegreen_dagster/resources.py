"""The Dagster resource that hands steps the settings and the configured graph target.

Its only config is the path of `config.yaml` (empty: $BLUEGREEN_CONFIG or ./config.yaml). Settings are read from
the file inside the run, so secrets such as the Neo4j password never become resource config that the UI shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import PrivateAttr

from bluegreen_dagster.config import Settings, load_settings
from bluegreen_dagster.targets import GraphTarget, make_target


class BluegreenResource(dg.ConfigurableResource):
    """Settings from config.yaml and a connection to the target they select."""

    config_path: str = ""

    _settings: Settings | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path or None)
        return self._settings

    @contextmanager
    def target(self) -> Iterator[GraphTarget]:
        target = make_target(self.settings)
        try:
            yield target
        finally:
            target.close()
