"""Health audit: the target's health, recorded on a schedule so the UI keeps its history.

Each run materializes `target_health` with what `GraphTarget.health()` measures (embedded: free disk, databases;
Neo4j: heap and page cache use, databases, version). Numeric metadata plots over time in the UI (Catalog ->
target_health -> Plots). The check `target_healthy` fails when the target is unreachable or over a threshold, with
the reason; an unreachable target is recorded like that, not as a crashed run.
"""


import time

import dagster as dg

from bluegreen_dagster.reconcile import GROUP
from bluegreen_dagster.resources import TargetResource
from bluegreen_dagster.targets import TargetError

HEALTH_CHECK = "target_healthy"


@dg.asset(group_name=GROUP, kinds={"python"},
          check_specs=[dg.AssetCheckSpec(HEALTH_CHECK, asset="target_health",
                                         description="The target is reachable and under its health thresholds")])
def target_health(context: dg.AssetExecutionContext, target: TargetResource):
    """The target's health now: reachable, heap, page cache, databases, free disk (whatever the target measures)."""
    started = time.monotonic()
    try:
        with target.open() as graph:
            health = graph.health()
    except TargetError as exc:
        context.log.warning(f"{target.kind} target unreachable or refused the health check: {exc}")
        yield dg.MaterializeResult(metadata={"target": target.kind, "reachable": False, "error": str(exc),
                                             "probe_s": round(time.monotonic() - started, 3)})
        yield dg.AssetCheckResult(check_name=HEALTH_CHECK, passed=False,
                                  description=f"{target.kind} target not reachable: {exc}")
        return
    problems = "; ".join(health.problems)
    context.log.info(f"{target.kind} target: {health.measurements}" + (f"; problems: {problems}" if problems else ""))
    yield dg.MaterializeResult(metadata={"target": target.kind, "reachable": True, **health.measurements,
                                         "problems": problems, "probe_s": round(time.monotonic() - started, 3)})
    yield dg.AssetCheckResult(check_name=HEALTH_CHECK, passed=health.ok, metadata=dict(health.measurements),
                              description=problems or f"{target.kind} target healthy")
