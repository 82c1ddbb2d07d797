"""What an alert says: from a failed Dagster run (the run record and its event log) to an `Alert` with the
customer, the snapshot, the failed step, the real cause and a link to the run.

The real cause is not what Dagster prints at the run level:
- a failed blocking check fails its step with "DagsterAssetCheckFailedError: 1 blocking asset check failed"; the
  cause is the check's own description (what differed), from its ASSET_CHECK_EVALUATION event;
- a step that raised `dg.Failure` carries the description; any other exception is wrapped in
  "Error occurred while executing op ...", and the cause is the innermost exception;
- a run whose worker process vanished is failed from outside ("marked as failed from outside the execution
  context", run monitoring, a code server noticing its child died); the cause is that the run worker died, with the
  signal or exit code when an engine event recorded it, else "process gone".
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

import dagster as dg

from bluegreen_dagster import records
from bluegreen_dagster.names import InvalidName, parse_partition_key
from bluegreen_dagster.records import CUSTOMER_TAG, PARTITION_TAG, WILL_RETRY_TAG

AlertKind = Literal["verification_blocked", "run_worker_died", "run_failed"]

# Messages Dagster writes when a run's worker is gone and someone else fails the run (1.13: the default message of
# `report_run_failed`, run monitoring's worker health check, the forced mark after a failed termination).
_WORKER_GONE = (
    "marked as failed from outside the execution context",
    "Detected run worker status",
    "forcibly marked as failed",
    "run worker",
)
# Run monitoring's time limits: the run did not die, it was stopped for taking too long.
_TIMED_OUT = ("Run timed out due to taking longer than", "Exceeded maximum runtime")
# Engine events that say how the worker process ended (`dagster._utils.get_run_crash_explanation`).
_CRASH_RE = re.compile(r"(terminated by signal \d+ \(\w+\)|unexpectedly exited with code -?\d+)")

_EVENTS = {
    dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED, dg.DagsterEventType.STEP_UP_FOR_RETRY, dg.DagsterEventType.ENGINE_EVENT,
    dg.DagsterEventType.PIPELINE_FAILURE,
}


@dataclass(frozen=True)
class Alert:
    """One alert, the same for every channel. `text()` is the human message; `payload()` the structured form."""

    kind: AlertKind
    customer: str | None
    snapshot: str | None        # the snapshot's timestamp
    partition: str | None       # partition key = database name
    step: str | None
    cause: str
    action: str                 # what happens next / how to retry
    run_id: str | None = None
    run_url: str | None = None
    job: str | None = None
    will_retry: bool = False    # Dagster's run retries will re-launch this run: not a failure for good yet

    @property
    def title(self) -> str:
        failed = "load failed" if self.partition or not self.job else f"{self.job} failed"
        what = {"verification_blocked": "verification blocked the switch",
                "run_worker_died": "the run worker died",
                "run_failed": failed}[self.kind]
        who = f"{self.customer} snapshot {self.snapshot}" if self.customer and self.snapshot \
            else self.partition or self.customer or (f"run {self.run_id[:8]}" if self.run_id else "a run")
        return f"bluegreen: {who}: {what}"

    def text(self) -> str:
        lines = [self.title,
                 f"customer: {self.customer or '-'}   snapshot: {self.snapshot or '-'}   step: {self.step or '-'}",
                 f"cause: {self.cause}",
                 self.action]
        if self.run_url:
            lines.append(f"run: {self.run_url}")
        return "\n".join(lines)

    def payload(self) -> dict:
        return {"event": "bluegreen.alert", "title": self.title, **asdict(self), "text": self.text()}


def run_url(webserver_url: str | None, run_id: str) -> str | None:
    return f"{webserver_url.rstrip('/')}/runs/{run_id}" if webserver_url else None


def _who(run: dg.DagsterRun) -> tuple[str | None, str | None, str | None]:
    """(customer, timestamp, partition key) from the run's tags; a foreign key keeps only what is known."""
    key = run.tags.get(PARTITION_TAG)
    if key:
        try:
            sid = parse_partition_key(key)
            return sid.customer, sid.timestamp, key
        except InvalidName:
            pass
    return run.tags.get(CUSTOMER_TAG), None, key


def _retry_hint(customer: str | None, timestamp: str | None) -> str:
    ui = "re-execute the run in the UI (Runs -> this run -> Re-execute)"
    if customer and timestamp:
        return f"`bluegreen load {customer} {timestamp}` or {ui}"
    return ui


def _innermost(error) -> str:
    """The deepest cause of a SerializableErrorInfo chain, as "Type: message" on one line."""
    while error is not None and (error.cause is not None or error.context is not None):
        error = error.cause or error.context
    if error is None:
        return ""
    return error.message.strip()


def _step_cause(event: dg.DagsterEvent) -> str:
    data = event.event_specific_data
    if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    if data is not None and data.error is not None:
        return _innermost(data.error) or data.error.message.strip()
    return event.message or "the step failed without an error message"


def _interrupted(event: dg.DagsterEvent) -> bool:
    error = event.event_specific_data.error if event.event_specific_data is not None else None
    while error is not None:
        if error.cls_name == "DagsterExecutionInterruptedError":
            return True
        error = error.cause or error.context
    return False


def _check_name(evaluation) -> str:
    return f"{evaluation.check_name} (check on {evaluation.asset_key.to_user_string()})"


def blocked_switch_alert(customer: str, timestamp: str, check: str, cause: str, *, run_id: str | None = None,
                         webserver_url: str | None = None, job: str | None = None) -> Alert:
    """A switch refused before the alias moved (a failed verification, a refused plausibility gate, a failed smoke
    query), for code that blocks a switch without failing its run."""
    url = run_url(webserver_url, run_id) if run_id else None
    return Alert(kind="verification_blocked", customer=customer, snapshot=str(timestamp),
                 partition=f"{customer}-{timestamp}", step=check, cause=cause,
                 action="The alias was not moved; it still serves the last good database. Fix the snapshot at its "
                        f"source, then drop it again or retry: {_retry_hint(customer, str(timestamp))}.",
                 run_id=run_id, run_url=url, job=job)


def alert_for_run(instance: dg.DagsterInstance, run: dg.DagsterRun, webserver_url: str | None) -> Alert:
    """The alert for a failed run, with the real cause read from the run's event log."""
    customer, timestamp, key = _who(run)
    url = run_url(webserver_url, run.run_id)
    entries = instance.all_logs(run.run_id, of_type=_EVENTS)
    events = [(e, e.dagster_event) for e in entries if e.dagster_event is not None]
    auto = run.tags.get(WILL_RETRY_TAG) == "true"
    common = {"customer": customer, "snapshot": timestamp, "partition": key, "run_id": run.run_id, "run_url": url,
              "job": run.job_name, "will_retry": auto}
    retry = _retry_hint(customer, timestamp)
    next_step = "Dagster retries the run automatically." if auto else f"To retry: {retry}."

    failed_checks = records.failed_blocking_checks(instance, run.run_id)
    if failed_checks:
        evaluation = list(failed_checks.values())[-1]
        alert = blocked_switch_alert(customer or "", timestamp or "", _check_name(evaluation),
                                     evaluation.description or f"check {evaluation.check_name} did not pass",
                                     run_id=run.run_id, webserver_url=webserver_url, job=run.job_name)
        return Alert(**{**asdict(alert), **common})

    step_failures = [ev for _, ev in events if ev.event_type == dg.DagsterEventType.STEP_FAILURE]
    if step_failures:
        event = step_failures[-1]
        if _interrupted(event):  # SIGTERM/SIGINT reached the worker: its error says only the exception's name
            return Alert(kind="run_worker_died", step=event.step_key,
                         cause=f"the run worker died during step {event.step_key}: interrupted (SIGTERM or "
                               "SIGINT; its daemon, code server or container was stopped)",
                         action=f"The alias was not moved. {next_step}", **common)
        retries = sum(1 for _, ev in events
                      if ev.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and ev.step_key == event.step_key)
        cause = _step_cause(event) + (f" (after {retries + 1} attempts)" if retries else "")
        return Alert(kind="run_failed", step=event.step_key, cause=cause,
                     action=f"The alias was not moved. Fix the cause, then: {retry}." if not auto
                     else f"The alias was not moved. {next_step}", **common)

    # No step failed: the run itself failed, from inside (resources, job loading) or from outside (worker gone).
    run_failures = [(entry, ev) for entry, ev in events if ev.event_type == dg.DagsterEventType.PIPELINE_FAILURE]
    message = (run_failures[-1][1].message or "") if run_failures else ""
    data = run_failures[-1][1].event_specific_data if run_failures else None
    finished = {ev.step_key for _, ev in events if ev.event_type in (
        dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED)}
    in_progress = [ev.step_key for _, ev in events
                   if ev.event_type == dg.DagsterEventType.STEP_START and ev.step_key not in finished]
    step = in_progress[-1] if in_progress else None
    crash = next((m.group(1) for entry, ev in reversed(events) if ev.event_type == dg.DagsterEventType.ENGINE_EVENT
                  for m in [_CRASH_RE.search(ev.message or "")] if m), None)
    reason = getattr(data, "failure_reason", None)
    error = getattr(data, "error", None)
    timed_out = any(s in message for s in _TIMED_OUT)
    worker_gone = not timed_out and (crash is not None or any(s in message for s in _WORKER_GONE)
                                     or reason in records.WORKER_DIED)

    if worker_gone and error is None:
        how = crash or _outside_detail(message)
        if crash and "SIGKILL" in crash:
            how += "; often the out-of-memory killer, or the worker was killed with its daemon or host"
        where = f" during step {step}" if step else ""
        return Alert(kind="run_worker_died", step=step, cause=f"the run worker died{where}: {how}",
                     action=f"The alias was not moved. {next_step}", **common)

    engine_errors = [ev.event_specific_data.error for _, ev in events
                     if ev.event_type == dg.DagsterEventType.ENGINE_EVENT and ev.event_specific_data is not None
                     and getattr(ev.event_specific_data, "error", None) is not None]
    detail = _innermost(error) if error is not None else (_innermost(engine_errors[-1]) if engine_errors else "")
    cause = detail or message.strip() or "the run failed without an error message; see the run's logs"
    return Alert(kind="run_failed", step=step, cause=cause,
                 action=f"The alias was not moved. Fix the cause, then: {retry}." if not auto
                 else f"The alias was not moved. {next_step}", **common)


def _outside_detail(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else ""
    if "marked as failed from outside" in first or not first:
        return "process gone (no exit status was recorded; killed with its daemon or host?)"
    return first
