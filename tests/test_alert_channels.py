"""How alerts are delivered: each channel against a real local receiver started here (HTTP for Slack and the JSON
webhook, Sentry's envelope endpoint, aiosmtpd for e-mail, with STARTTLS), a channel that is down, masked secrets,
the alerts config, and the call a run-failure sensor makes."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import ssl
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.alerts import alert_for_run, blocked_switch_alert, send_alert
from bluegreen_dagster.config_alerts import AlertSettings
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from tests.helpers import free_port
from tests.test_alerts import KEY, WEB, alias_switch, refused_load, snapshot_database, verify_counts

ALERT = blocked_switch_alert("acme-corp", "1767741527", "verify_counts (check on snapshot_database)",
                             "acme-corp-1767741527: Person: expected 300 nodes, found 299",
                             run_id="5e1f0c2a-0000-4000-8000-000000000000", webserver_url=WEB)
SECRET = "T000-B000-s3cretXYZ"


@contextmanager
def http_receiver(status: int = 200, body: bytes = b'{"ok": true}'):
    """An HTTP server on 127.0.0.1:<free port> that records every POST: (path, headers, body)."""
    received: list[tuple[str, dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append((self.path, dict(self.headers), data))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def settings(**channels) -> AlertSettings:
    return AlertSettings.model_validate({"dagster_webserver_url": WEB, "timeout_seconds": 2, **channels})


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test_alerts")
    return logging.getLogger("test_alerts")


def test_nothing_configured_sends_nothing(log) -> None:
    assert send_alert(ALERT, AlertSettings(), log) == {}


def test_slack_webhook_and_json_webhook_receive_the_alert(log, caplog) -> None:
    with http_receiver() as (url, received):
        result = send_alert(ALERT, settings(slack={"webhook_url": f"{url}/services/{SECRET}"},
                                            webhook={"url": f"{url}/hook", "headers": {"Authorization": "Bearer tok"}}),
                            log)
    assert result == {"slack_webhook": True, "webhook": True}
    by_path = {path: (headers, json.loads(body)) for path, headers, body in received}
    slack = by_path[f"/services/{SECRET}"][1]
    assert "expected 300 nodes, found 299" in slack["text"] and ALERT.run_url in slack["text"]
    assert any("expected 300 nodes" in b.get("text", {}).get("text", "") for b in slack["blocks"])
    headers, hook = by_path["/hook"]
    assert headers["Authorization"] == "Bearer tok"
    assert (hook["event"], hook["kind"], hook["customer"], hook["snapshot"]) == \
        ("bluegreen.alert", "verification_blocked", "acme-corp", "1767741527")
    assert hook["run_url"] == f"{WEB}/runs/{ALERT.run_id}" and hook["cause"] == ALERT.cause
    assert SECRET not in caplog.text


def test_slack_bot_posts_through_the_web_api(log) -> None:
    with http_receiver() as (url, received):
        result = send_alert(ALERT, settings(slack={"bot_token": "xoxb-123-secret", "channel": "#data-alerts",
                                                   "api_url": f"{url}/api/"}), log)
    assert result == {"slack_bot": True}
    path, headers, body = received[0]
    assert path == "/api/chat.postMessage" and headers["Authorization"] == "Bearer xoxb-123-secret"
    sent = json.loads(body)
    assert sent["channel"] == "#data-alerts" and "expected 300 nodes, found 299" in sent["text"]


def test_slack_bot_refused_is_not_retried_and_does_not_raise(log, caplog) -> None:
    with http_receiver(body=b'{"ok": false, "error": "channel_not_found"}') as (url, received):
        result = send_alert(ALERT, settings(slack={"bot_token": "xoxb-123-secret", "channel": "#nope",
                                                   "api_url": f"{url}/api/"}), log)
    assert result == {"slack_bot": False} and len(received) == 1
    assert "channel_not_found" in caplog.text and "xoxb-123-secret" not in caplog.text


def test_a_channel_that_is_down_is_retried_briefly_logged_and_skipped(log, caplog) -> None:
    port = free_port()  # nothing listens here
    started = time.monotonic()
    with http_receiver() as (url, received):
        result = send_alert(ALERT, settings(attempts=3, webhook={"url": f"http://127.0.0.1:{port}/{SECRET}"},
                                            slack={"webhook_url": f"{url}/ok"},
                                            email={"host": "127.0.0.1", "port": port, "security": "none",
                                                   "to": ["oncall@example.com"]}), log)
    elapsed = time.monotonic() - started
    assert result == {"slack_webhook": True, "webhook": False, "email": False}
    assert [path for path, _, _ in received] == ["/ok"]  # the healthy channel was not held up
    assert elapsed < 5, f"a down channel held the caller for {elapsed:.1f}s"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "webhook" in r.getMessage()]
    assert len(warnings) == 2  # attempts 1 and 2 retried, attempt 3 gave up
    assert "alert channel webhook failed after 3 attempt(s), skipped" in caplog.text
    assert "alert channel email failed after 3 attempt(s)" in caplog.text
    assert SECRET not in caplog.text


def test_secrets_in_an_error_message_are_masked(log, caplog) -> None:
    # A URL without its scheme (a common slip): urllib's error quotes the whole URL, secret path included.
    result = send_alert(ALERT, settings(attempts=1, webhook={"url": f"hooks.example.com/{SECRET}"}), log)
    assert result == {"webhook": False}
    assert "unknown url type" in caplog.text and SECRET not in caplog.text and "***" in caplog.text


def test_a_4xx_answer_is_not_retried(log, caplog) -> None:
    with http_receiver(status=404, body=b"no_service") as (url, received):
        result = send_alert(ALERT, settings(slack={"webhook_url": f"{url}/{SECRET}"}), log)
    assert result == {"slack_webhook": False} and len(received) == 1
    assert "HTTP 404" in caplog.text


def test_sentry_event_arrives_at_the_envelope_endpoint(log, caplog) -> None:
    with http_receiver() as (url, received):
        host = url.removeprefix("http://")
        result = send_alert(ALERT, settings(sentry={"dsn": f"http://publickey123@{host}/42",
                                                    "environment": "test"}), log)
    assert result == {"sentry": True}
    path, headers, body = received[0]
    assert path == "/api/42/envelope/"
    assert "sentry_key=publickey123" in headers["X-Sentry-Auth"]
    _, item_header, event = (json.loads(line) for line in body.decode().strip().split("\n"))
    assert item_header["type"] == "event"
    assert event["tags"]["customer"] == "acme-corp" and event["tags"]["snapshot"] == "1767741527"
    assert event["tags"]["step"].startswith("verify_counts") and event["environment"] == "test"
    assert "expected 300 nodes, found 299" in event["message"] and event["level"] == "error"
    assert event["contexts"]["bluegreen"]["run_url"] == ALERT.run_url
    assert "publickey123" not in caplog.text


# ---- e-mail over SMTP ------------------------------------------------------------------------------------------

@contextmanager
def smtp_server(tls_context: ssl.SSLContext | None = None, credentials: tuple[str, str] | None = None):
    """aiosmtpd on 127.0.0.1:<free port>; STARTTLS offered (and required) when a TLS context is given."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    messages: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            messages.append(envelope)
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = credentials is not None and (auth_data.login.decode(), auth_data.password.decode()) == credentials
        return AuthResult(success=ok, handled=False)

    kwargs = {}
    if tls_context is not None:
        kwargs = {"tls_context": tls_context, "require_starttls": True}
    if credentials is not None:
        kwargs.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield controller.port, messages
    finally:
        controller.stop()


def test_email_over_plain_smtp(log) -> None:
    with smtp_server() as (port, messages):
        result = send_alert(ALERT, settings(email={"host": "127.0.0.1", "port": port, "security": "none",
                                                   "sender": "bluegreen@example.com",
                                                   "to": ["oncall@example.com", "data@example.com"]}), log)
    assert result == {"email": True}
    envelope = messages[0]
    assert envelope.rcpt_tos == ["oncall@example.com", "data@example.com"]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == "bluegreen: acme-corp snapshot 1767741527: verification blocked the switch"
    assert mail["To"] == "oncall@example.com, data@example.com" and mail["From"] == "bluegreen@example.com"
    body = mail.get_content()
    assert "expected 300 nodes, found 299" in body and ALERT.run_url in body


def test_email_with_starttls_and_login(tmp_path: Path, log, caplog) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with smtp_server(server_context, credentials=("alerts", "smtp-pw-987")) as (port, messages):
        email = {"host": "127.0.0.1", "port": port, "security": "starttls", "ca_file": str(ca_file),
                 "user": "alerts", "password": "smtp-pw-987", "to": ["oncall@example.com"]}
        assert send_alert(ALERT, settings(email=email), log) == {"email": True}
        assert "expected 300 nodes" in messages[0].content.decode()
        # Without the private CA the server's certificate is refused; a wrong password is refused once, not retried.
        assert send_alert(ALERT, settings(attempts=1, email={**email, "ca_file": None}), log) == {"email": False}
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        assert send_alert(ALERT, settings(email={**email, "password": "wrong-pw"}), log) == {"email": False}
        assert "SMTP login as alerts refused" in caplog.text
    assert len(messages) == 1
    assert "smtp-pw-987" not in caplog.text and "wrong-pw" not in caplog.text


# ---- configuration ---------------------------------------------------------------------------------------------

def test_the_shipped_config_example_parses_and_turns_channels_on(tmp_path: Path) -> None:
    """The commented `alerts:` block of config.yaml, uncommented, is valid and each channel it sets is on."""
    import yaml

    from bluegreen_dagster.alerts import configured_channels
    from bluegreen_dagster.config import parse_settings

    repo = Path(__file__).resolve().parent.parent
    text = (repo / "config.yaml").read_text()
    block = text[text.index("# alerts:"):].split("\n\n")[0]  # up to the blank line before the next section
    uncommented = "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))
    env = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/x", "SMTP_PASSWORD": "pw",
           "ALERT_WEBHOOK_URL": "https://hooks.example.com/x", "ALERT_WEBHOOK_TOKEN": "t",
           "SENTRY_DSN": "https://key@sentry.example.com/1"}
    alerts = parse_settings(yaml.safe_load(uncommented), root=tmp_path, env=env).alerts
    assert list(configured_channels(alerts)) == ["slack_webhook", "email", "webhook", "sentry"]
    assert "https://hooks.slack.com" not in repr(alerts) and "key@" not in repr(alerts)
    assert configured_channels(parse_settings(yaml.safe_load(text), root=tmp_path, env=env).alerts) == {}


def test_half_configured_channels_are_refused_without_echoing_secrets(tmp_path: Path) -> None:
    from bluegreen_dagster.config import ConfigError, parse_settings

    with pytest.raises(ConfigError, match=r"alerts\.email\.to: .*at least one recipient") as err:
        parse_settings({"alerts": {"email": {"host": "smtp.example.com", "password": "hunter2"}}}, root=tmp_path)
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match=r"alerts\.slack\.channel: .*needs a channel") as err:
        parse_settings({"alerts": {"slack": {"bot_token": "xoxb-secret-1"}}}, root=tmp_path)
    assert "xoxb-secret-1" not in str(err.value)


# ---- the run-failure sensor's call ----------------------------------------------------------------------------

def test_a_run_failure_sensor_sends_the_alert_of_a_real_failed_run() -> None:
    """How sensors.py uses it: a run-failure sensor calls notify_run_failure with the alerts settings."""
    from bluegreen_dagster.alerts import notify_run_failure

    with http_receiver() as (url, received):
        alerts = settings(webhook={"url": f"{url}/hook"})

        @dg.run_failure_sensor(name="alert_on_failure")
        def alert_on_failure(context: dg.RunFailureSensorContext) -> None:
            assert notify_run_failure(context, alerts) == {"webhook": True}

        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [KEY])
            result = dg.materialize([snapshot_database, verify_counts, alias_switch], partition_key=KEY,
                                    instance=instance, raise_on_error=False, tags={"customer": "acme-corp"})
            context = dg.build_run_status_sensor_context(
                sensor_name="alert_on_failure", dagster_event=result.get_run_failure_event(),
                dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
            alert_on_failure(context)
    payload = json.loads(received[0][2])
    assert payload["kind"] == "verification_blocked" and payload["run_id"] == result.run_id
    assert payload["cause"] == "acme-corp-1767741527: Person: expected 300 nodes, found 299"


def test_a_run_that_dagster_will_retry_is_not_alerted_yet() -> None:
    from bluegreen_dagster.alerts import notify_run_failure

    with http_receiver() as (url, received), \
            dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [KEY])
        result = dg.materialize([refused_load], partition_key=KEY, instance=instance, raise_on_error=False,
                                tags={"customer": "acme-corp", "dagster/max_retries": "1"})
        alert = alert_for_run(instance, result.dagster_run, WEB)
        assert alert.will_retry and "Dagster retries the run automatically" in alert.action
        context = dg.build_run_status_sensor_context(
            sensor_name="alert_on_failure", dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
        assert notify_run_failure(context, settings(webhook={"url": f"{url}/hook"})) == {}
    assert received == []


def test_a_retried_sentry_post_resends_the_same_event(log) -> None:
    """A 503 from Sentry is retried with the same event id, so a post that did arrive is not counted twice."""
    with http_receiver(status=503, body=b"busy") as (url, received):
        host = url.removeprefix("http://")
        result = send_alert(ALERT, settings(attempts=2, sentry={"dsn": f"http://k@{host}/7"}), log)
    assert result == {"sentry": False} and len(received) == 2
    ids = {json.loads(body.decode().split("\n")[0])["event_id"] for _, _, body in received}
    assert len(ids) == 1


def test_the_docs_show_the_webhook_payload_as_sent() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    section = page[page.index("The JSON webhook receives:"):]
    example = json.loads(section[section.index("```json") + 7:section.index("```", section.index("```json") + 7)])
    assert set(example) == set(ALERT.payload())
