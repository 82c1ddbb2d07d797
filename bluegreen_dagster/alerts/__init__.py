"""Failure alerts: `alert_for_run` says what failed and why (compose.py); `send_alert` delivers it to every
configured channel (channels.py) and never raises. `notify_run_failure` is both, for a run-failure sensor."""

from __future__ import annotations

import dagster as dg

from bluegreen_dagster.alerts.channels import configured_channels, send_alert
from bluegreen_dagster.alerts.compose import Alert, alert_for_run, blocked_switch_alert
from bluegreen_dagster.config_alerts import AlertSettings
from bluegreen_dagster.records import CUSTOMER_TAG, PARTITION_TAG

__all__ = ["Alert", "alert_for_run", "blocked_switch_alert", "configured_channels", "notify_run_failure",
           "send_alert"]


def notify_run_failure(context: dg.RunFailureSensorContext, settings: AlertSettings) -> dict[str, bool]:
    """Log the failed run's alert in the sensor's tick log and send it; {channel: delivered}. Never raises.

    A run that Dagster's run retries will re-launch has not failed for good: it is logged, not sent."""
    try:
        alert = alert_for_run(context.instance, context.dagster_run, settings.dagster_webserver_url)
    except Exception as exc:  # an unreadable event log must not stop the alert: say what is known
        run = context.dagster_run
        context.log.warning(f"could not read run {run.run_id}'s events ({type(exc).__name__}); alerting without them")
        alert = Alert(kind="run_failed", customer=run.tags.get(CUSTOMER_TAG), snapshot=None,
                      partition=run.tags.get(PARTITION_TAG), step=None,
                      cause=context.failure_event.message or "see the run's logs", action="See the run in the UI.",
                      run_id=run.run_id, run_url=f"{settings.dagster_webserver_url.rstrip('/')}/runs/{run.run_id}",
                      job=run.job_name)
    if alert.will_retry:
        context.log.info(f"{alert.title}; Dagster retries the run, so no alert is sent yet. Cause: {alert.cause}")
        return {}
    context.log.error(alert.text())
    return send_alert(alert, settings, context.log)
