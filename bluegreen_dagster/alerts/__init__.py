"""Failure alerts: `alert_for_run` says what failed and why (compose.py); `send_alert` delivers it to every
configured channel (channels.py) and never raises."""

from bluegreen_dagster.alerts.channels import configured_channels, send_alert
from bluegreen_dagster.alerts.compose import Alert, alert_for_run, blocked_switch_alert

__all__ = ["Alert", "alert_for_run", "blocked_switch_alert", "configured_channels", "send_alert"]
