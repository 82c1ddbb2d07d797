"""Where alerts go: Slack (incoming webhook and/or bot token), e-mail over SMTP, a generic JSON webhook, Sentry.

`send_alert` is the one entry point. Each configured channel runs in its own thread, so a slow one cannot hold up
the others; each gets `alerts.attempts` tries with a doubling backoff (0.5 s, 1 s, ...) and a per-try timeout, and
stops at once on an answer a retry cannot change (a 4xx, an unknown Slack channel). Nothing raises into the caller:
a failure is logged, with every configured secret masked, and the result says which channels delivered.
"""

from __future__ import annotations

import email.policy
import functools
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

from bluegreen_dagster.alerts.compose import Alert
from bluegreen_dagster.config_alerts import AlertSettings

FIRST_BACKOFF_SECONDS = 0.5


class Permanent(Exception):
    """A refusal that another try will not change (bad URL, bad token, unknown channel)."""


def _secrets(settings: AlertSettings) -> list[str]:
    values = [settings.slack.webhook_url, settings.slack.bot_token, settings.email.password, settings.webhook.url,
              settings.sentry.dsn, *settings.webhook.headers.values()]
    return [v.get_secret_value() for v in values if v.get_secret_value()]


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _post_json(url: str, body: dict | bytes, timeout: float, headers: dict[str, str] | None = None,
               content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        # 408/429/5xx may pass on the next try; any other 4xx is a wrong URL, token or payload.
        if exc.code < 500 and exc.code not in (408, 429):
            raise Permanent(f"HTTP {exc.code} {exc.reason}") from None
        raise RuntimeError(f"HTTP {exc.code} {exc.reason}") from None


def _slack_blocks(alert: Alert) -> list[dict]:
    fields = [f"*Customer*\n{alert.customer or '-'}", f"*Snapshot*\n{alert.snapshot or '-'}",
              f"*Step*\n{alert.step or '-'}", f"*Run*\n<{alert.run_url}|{alert.run_id[:8]}>" if alert.run_url
              else f"*Run*\n{(alert.run_id or '-')[:8]}"]
    return [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Cause*\n{alert.cause[:2900]}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": alert.action[:2900]}]},
    ]


def _slack_webhook(alert: Alert, settings: AlertSettings) -> None:
    _post_json(settings.slack.webhook_url.get_secret_value(),
               {"text": alert.text(), "blocks": _slack_blocks(alert)}, settings.timeout_seconds)


def _slack_bot(alert: Alert, settings: AlertSettings) -> None:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    # No retry handlers of the SDK's own: the attempts are ours, bounded and logged.
    client = WebClient(token=settings.slack.bot_token.get_secret_value(), base_url=settings.slack.api_url,
                       timeout=int(max(1, settings.timeout_seconds)), retry_handlers=[])
    try:
        client.chat_postMessage(channel=settings.slack.channel, text=alert.text(), blocks=_slack_blocks(alert))
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown error") if exc.response is not None else str(exc)
        if error in ("ratelimited", "service_unavailable", "request_timeout", "internal_error", "fatal_error"):
            raise RuntimeError(f"Slack answered {error}") from None
        raise Permanent(f"Slack answered {error}") from None


def _email(alert: Alert, settings: AlertSettings) -> None:
    cfg = settings.email
    # No folding below 998 characters (RFC 5322): Python folds a long subject right after "Subject:".
    message = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    message["Subject"] = alert.title
    message["From"] = cfg.sender
    message["To"] = ", ".join(cfg.to)
    message.set_content(alert.text() + "\n")
    context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.security == "ssl":
        smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=settings.timeout_seconds, context=context)
    else:
        smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=settings.timeout_seconds)
    with smtp:
        if cfg.security == "starttls":
            smtp.starttls(context=context)
        if cfg.user:
            try:
                smtp.login(cfg.user, cfg.password.get_secret_value())
            except smtplib.SMTPAuthenticationError as exc:
                raise Permanent(f"SMTP login as {cfg.user} refused ({exc.smtp_code})") from None
        smtp.send_message(message)


def _webhook(alert: Alert, settings: AlertSettings) -> None:
    headers = {k: v.get_secret_value() for k, v in settings.webhook.headers.items()}
    _post_json(settings.webhook.url.get_secret_value(), alert.payload(), settings.timeout_seconds, headers)


@functools.lru_cache(maxsize=16)
def _sentry_envelopes(alert: Alert, dsn: str, environment: str) -> tuple[bytes, ...]:
    """The alert as Sentry envelopes, built once per alert so a retried post re-sends the same event id."""
    import sentry_sdk
    from sentry_sdk.transport import Transport

    envelopes: list[bytes] = []

    class Collect(Transport):
        def capture_envelope(self, envelope) -> None:
            envelopes.append(envelope.serialize())

    # A client of our own, not sentry_sdk.init(): no global hooks, integrations or threads in the caller's process.
    client = sentry_sdk.Client(dsn=dsn, transport=Collect, default_integrations=False,
                               auto_enabling_integrations=False, environment=environment)
    try:
        scope = sentry_sdk.Scope(client=client)
        for tag in ("customer", "snapshot", "step", "kind", "partition", "run_id"):
            value = getattr(alert, tag)
            if value:
                scope.set_tag(tag, value[:200])
        scope.set_context("bluegreen", alert.payload())
        scope.fingerprint = ["bluegreen", alert.kind, alert.customer or "-", alert.step or "-"]
        client.capture_event({"message": f"{alert.title}: {alert.cause}", "level": "error", "logger": "bluegreen"},
                             scope=scope)
        client.flush(timeout=1)
    finally:
        client.close()
    if not envelopes:
        raise Permanent("sentry-sdk produced no event (check alerts.sentry.dsn)")
    return tuple(envelopes)


def _sentry(alert: Alert, settings: AlertSettings) -> None:
    """sentry-sdk builds the event (tags, fingerprint, context, SDK info) and its envelope; we post the envelope to
    the DSN's envelope endpoint ourselves, so delivery is synchronous, retried by us and known to have happened."""
    from sentry_sdk.utils import Dsn

    dsn = settings.sentry.dsn.get_secret_value()
    auth = Dsn(dsn).to_auth("bluegreen-dagster")
    for body in _sentry_envelopes(alert, dsn, settings.sentry.environment):
        _post_json(auth.get_api_url(), body, settings.timeout_seconds, {"X-Sentry-Auth": auth.to_header()},
                   content_type="application/x-sentry-envelope")


def configured_channels(settings: AlertSettings) -> dict[str, Callable[[Alert, AlertSettings], None]]:
    """The channels whose address is set; everything else is off."""
    channels: dict[str, Callable[[Alert, AlertSettings], None]] = {}
    if settings.slack.webhook_url.get_secret_value():
        channels["slack_webhook"] = _slack_webhook
    if settings.slack.bot_token.get_secret_value() and settings.slack.channel:
        channels["slack_bot"] = _slack_bot
    if settings.email.host and settings.email.to:
        channels["email"] = _email
    if settings.webhook.url.get_secret_value():
        channels["webhook"] = _webhook
    if settings.sentry.dsn.get_secret_value():
        channels["sentry"] = _sentry
    return channels


def _deliver(name: str, send: Callable[[Alert, AlertSettings], None], alert: Alert, settings: AlertSettings,
             secrets: list[str]) -> tuple[bool, list[tuple[str, str]]]:
    """(delivered, log lines) for one channel; the lines are logged by the caller's thread."""
    lines: list[tuple[str, str]] = []
    delay = FIRST_BACKOFF_SECONDS
    for attempt in range(1, settings.attempts + 1):
        try:
            send(alert, settings)
            lines.append(("info", f"alert sent to {name}" + (f" (attempt {attempt})" if attempt > 1 else "")))
            return True, lines
        except Exception as exc:  # a channel must never take the caller down
            error = redact(f"{type(exc).__name__}: {exc}" if not isinstance(exc, Permanent) else str(exc), secrets)
            if isinstance(exc, Permanent) or attempt == settings.attempts:
                lines.append(("error", f"alert channel {name} failed after {attempt} attempt(s), skipped: {error}"))
                return False, lines
            retrying = f"alert channel {name}: attempt {attempt}/{settings.attempts} failed: {error}; "
            lines.append(("warning", retrying + f"retrying in {delay:g}s"))
            time.sleep(delay)
            delay *= 2
    return False, lines


def send_alert(alert: Alert, settings: AlertSettings, log) -> dict[str, bool]:
    """Send `alert` to every configured channel; returns {channel: delivered}. Never raises.

    `log` is a logger or Dagster's context.log. Worst case for a channel that is down: `attempts` tries of at most
    `timeout_seconds` each plus the backoff, all channels in parallel.
    """
    try:
        channels = configured_channels(settings)
        if not channels:
            return {}
        secrets = _secrets(settings)
        with ThreadPoolExecutor(max_workers=len(channels), thread_name_prefix="bluegreen-alert") as pool:
            futures = {name: pool.submit(_deliver, name, send, alert, settings, secrets)
                       for name, send in channels.items()}
        results = {}
        for name, future in futures.items():
            delivered, lines = future.result()
            for level, line in lines:
                getattr(log, level)(line)
            results[name] = delivered
        return results
    except Exception as exc:  # defensive: composing or logging must not crash the sensor either
        try:
            log.error(f"sending the alert failed: {type(exc).__name__}")
        except Exception:
            pass
        return {}
