"""The `alerts:` section of `config.yaml` (loaded by config.py): where failure alerts go (bluegreen_dagster/alerts/).

Every channel is off until its address is set; secrets (webhook URLs, tokens, the SMTP password, the Sentry DSN) are
SecretStr so they never print, and come from ${VAR} in config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from bluegreen_dagster.config_section import Section


class SlackAlertSettings(Section):
    webhook_url: SecretStr = SecretStr("")      # incoming webhook
    bot_token: SecretStr = SecretStr("")        # xoxb-... bot token, used with `channel` (chat.postMessage)
    channel: str = Field("", validate_default=True)
    api_url: str = "https://slack.com/api/"     # Slack Web API base; changed only for a proxy (or a test)

    @field_validator("channel")
    @classmethod
    def _token_needs_channel(cls, channel: str, info: ValidationInfo) -> str:
        # A field validator, not a model one: its error shows only this field's value, never the token.
        token = info.data.get("bot_token")
        if token is not None and token.get_secret_value() and not channel:
            raise ValueError("a Slack bot_token needs a channel to post to, e.g. channel: \"#data-alerts\"")
        return channel


class EmailAlertSettings(Section):
    host: str = ""                              # SMTP server; e-mail is off while empty
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    ca_file: Path | None = None                 # PEM with the CA of a private SMTP server; system store otherwise
    user: str = ""
    password: SecretStr = SecretStr("")
    sender: str = "bluegreen@localhost"
    to: list[str] = Field([], validate_default=True)

    @field_validator("to")
    @classmethod
    def _host_needs_recipients(cls, to: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("host") and not to:
            raise ValueError("e-mail alerts need at least one recipient, e.g. to: [oncall@example.com]")
        return to


class WebhookAlertSettings(Section):
    url: SecretStr = SecretStr("")              # receives a JSON object per alert (see README, "Alerts")
    headers: dict[str, SecretStr] = {}          # e.g. Authorization: Bearer ${ALERT_WEBHOOK_TOKEN}


class SentryAlertSettings(Section):
    dsn: SecretStr = SecretStr("")
    environment: str = "production"


class AlertSettings(Section):
    # Base of the links in alerts: <url>/runs/<run_id>.
    dagster_webserver_url: str = "http://127.0.0.1:3000"
    attempts: int = Field(3, ge=1, le=10)        # per channel, with backoff; a channel that stays down is skipped
    timeout_seconds: float = Field(5, gt=0, le=60)
    slack: SlackAlertSettings = SlackAlertSettings()
    email: EmailAlertSettings = EmailAlertSettings()
    webhook: WebhookAlertSettings = WebhookAlertSettings()
    sentry: SentryAlertSettings = SentryAlertSettings()
