"""Wires the pieces into the Definitions that `dagster dev -w workspace.yaml` and `dagster asset materialize
-m bluegreen_dagster.definitions` load. Settings come from $BLUEGREEN_CONFIG or ./config.yaml; a bad file fails
here, when the code location loads, with the key's name.
"""

import dagster as dg

from bluegreen_dagster.assets import build_assets
from bluegreen_dagster.config import config_path, load_settings
from bluegreen_dagster.jobs import build_load_snapshot_job
from bluegreen_dagster.resources import BluegreenResource
from bluegreen_dagster.sensors import alert_on_failure, build_snapshot_sensor

settings = load_settings()
steps = build_assets(settings)
load_snapshot = build_load_snapshot_job(steps)

defs = dg.Definitions(
    assets=[s for s in steps if not isinstance(s, dg.AssetChecksDefinition)],
    asset_checks=[s for s in steps if isinstance(s, dg.AssetChecksDefinition)],
    jobs=[load_snapshot],
    sensors=[build_snapshot_sensor(settings, load_snapshot), alert_on_failure],
    resources={"bluegreen": BluegreenResource(config_path=str(config_path().resolve()))},
)
