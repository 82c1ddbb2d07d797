"""Wires the pieces into the Definitions that `dagster dev -w workspace.yaml` and `dagster asset materialize
-m bluegreen_dagster.definitions` load.

config.yaml ($BLUEGREEN_CONFIG or ./config.yaml) is read once, here, into the resources (resources.py); a bad file
fails when the code location loads, with the key's name. Assets and sensor functions are module-level and take
the resources as arguments; only what Dagster needs at definition time is built here from the same settings: the
job's RetryPolicy, the sensor's interval and the schedules' crons (schedules.py).
"""

import dagster as dg

from bluegreen_dagster.assets import CHECKS, STEPS
from bluegreen_dagster.freshness import build_freshness
from bluegreen_dagster.jobs import build_load_snapshot_job, rollback_job
from bluegreen_dagster.live_graph import live_graph
from bluegreen_dagster.records import SNAPSHOT_SENSOR
from bluegreen_dagster.resources import Resources, load_resources
from bluegreen_dagster.schedules import ASSETS as OPERATIONS_ASSETS
from bluegreen_dagster.schedules import build_jobs, build_schedules
from bluegreen_dagster.sensors import build_alert_sensor, snapshot_sensor


def build_definitions(resources: Resources) -> dg.Definitions:
    orchestrator = resources.settings.orchestrator
    load_snapshot = build_load_snapshot_job(orchestrator)
    sensor = dg.sensor(name=SNAPSHOT_SENSOR, job=load_snapshot, minimum_interval_seconds=orchestrator.scan_interval,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description=f"Watches {resources.settings.dataset.base_path} for complete snapshots; one "
                                   "partition and one run each.")(snapshot_sensor)
    fresh_check, freshness_sensor = build_freshness(resources.settings)
    return dg.Definitions(
        assets=[*STEPS, live_graph, *OPERATIONS_ASSETS],
        asset_checks=[*CHECKS, fresh_check],
        jobs=[load_snapshot, rollback_job, *build_jobs()],
        sensors=[sensor, build_alert_sensor(resources.settings.alerts), freshness_sensor],
        schedules=build_schedules(orchestrator, load_snapshot),
        resources=resources.as_dict(),
        # `dagster asset materialize` runs the implicit asset job: in-process too, like load_snapshot.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """What workspace.yaml and `-m bluegreen_dagster.definitions` load; reads config.yaml when the location loads
    (importing this module reads nothing, so tests build their own with `build_definitions`)."""
    return build_definitions(load_resources())
