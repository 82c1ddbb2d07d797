"""A load's progress: what the loaders report, the line the run's log records, and the display `bluegreen load`
draws from that log.

Every loader (targets/embedded, targets/neo4j arrow and cypher) calls `LoadProgress.rows(database, phase, done,
total)` as rows go in, as often as it likes; `LoadProgress` passes on one line per phase start, per
`orchestrator.progress_seconds` and per phase end. The asset hands it `context.log.info`, so the line lands in the
run's event log: the UI's run log shows it, and `RunDisplay` (fed by `watch_run`, which polls the instance's event
log for the run) parses it back with `ProgressEvent.parse`. Nothing here imports Dagster at module level: the
targets use `LoadProgress` and stay free of it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

# The machine-readable tail of a progress line: `... [progress {"database": ..., "rows": ...}]`.
_MARK = "[progress "
_TAIL = re.compile(r"\[progress (\{.*\})\]$")


@dataclass(frozen=True)
class ProgressEvent:
    """Rows of one phase of a load (e.g. `nodes`) done of that phase's total, `seconds` into the phase."""

    database: str
    phase: str
    rows: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.rows >= self.total:
            return 0.0
        return (self.total - self.rows) / self.rate if self.rate > 0 else None

    def describe(self) -> str:
        percent = 100 * self.rows / self.total if self.total else 100
        eta = self.eta_seconds
        return (f"{self.database}: {self.phase} {self.rows:,} of {self.total:,} rows ({percent:.0f}%), "
                f"{self.rate:,.0f} rows/s, ETA {'-' if eta is None else _clock(eta)}")

    def line(self) -> str:
        """What the run's log records: readable first, then the same facts as JSON for `parse`."""
        return f"{self.describe()} {_MARK}{json.dumps(asdict(self))}]"

    @classmethod
    def parse(cls, message: str) -> ProgressEvent | None:
        """The event in a log line written by `line()`, or None for any other line."""
        found = _TAIL.search(message or "")
        if not found:
            return None
        try:
            return cls(**json.loads(found.group(1)))
        except (TypeError, ValueError):
            return None


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class LoadProgress:
    """Paces a loader's progress calls into lines for `say`: the first and last of each phase, and in between at
    most one per `every` seconds. Without `say` (a target used outside a run) it does nothing."""

    def __init__(self, say: Callable[[str], None] | None = None, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.every = every
        self.clock = clock
        self._phase: tuple[str, str] | None = None
        self._started = self._last = 0.0
        self._last_rows = -1

    def rows(self, database: str, phase: str, done: int, total: int) -> None:
        if self.say is None:
            return
        now = self.clock()
        if self._phase != (database, phase):
            self._phase, self._started, self._last_rows = (database, phase), now, -1
        elif done == self._last_rows or (done < total and now - self._last < self.every):
            return
        self._last, self._last_rows = now, done
        self.say(ProgressEvent(database, phase, done, total, round(now - self._started, 3)).line())


NO_PROGRESS = LoadProgress()


def rows_in(files: list[Path]) -> int:
    """Rows in Parquet files, from their footers (no data read): a load phase's total."""
    from bluegreen_dagster.reading import open_parquet

    return sum(open_parquet(path).metadata.num_rows for path in files)


# --------------------------------------------------------------------------------------------------------------
# The display


class RunDisplay:
    """What `bluegreen load` shows while it waits: the run's state (queued, starting, running), each step as it
    starts and ends, and a bar per load phase with rows of the total, rate and ETA.

    On a terminal it is a live `rich` display (a status line over the bars); elsewhere (a pipe, CI logs) one line
    per change."""

    def __init__(self, console: Console, run_id: str) -> None:
        self.console = console
        self.run_id = run_id
        self.state = ""
        self.status = Text(f"run {run_id[:8]}")
        self.progress = Progress(TextColumn("  {task.description:<14}"), BarColumn(),
                                 TextColumn("{task.completed:>12,.0f} of {task.total:,.0f} rows"),
                                 TextColumn("{task.fields[rate]:>12}  {task.fields[eta]}"), console=console)
        self._phases: dict[tuple[str, str], TaskID] = {}
        self.live = Live(Group(self.status, self.progress), console=console, refresh_per_second=4) \
            if console.is_terminal else None

    def __enter__(self) -> RunDisplay:
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.stop()

    def _tell(self, text: str) -> None:
        if self.live:
            self.status.plain = f"run {self.run_id[:8]}: {text}"
        else:
            self.console.print(f"run {self.run_id[:8]}: {text}", highlight=False, soft_wrap=True)

    def run_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._tell(state)

    def step(self, step_key: str, what: str) -> None:
        self._tell(f"{what} {step_key}")

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)  # above the live display, if there is one

    def loaded(self, event: ProgressEvent) -> None:
        if not self.live:  # soft wrap: a log line stays one line, whatever the width
            self.console.print(event.describe(), highlight=False, soft_wrap=True)
            return
        key = (event.database, event.phase)
        eta = event.eta_seconds
        fields = {"rate": f"{event.rate:,.0f} rows/s", "eta": f"ETA {'-' if eta is None else _clock(eta)}"}
        if key not in self._phases:
            self._phases[key] = self.progress.add_task(event.phase, total=event.total, **fields)
        self.progress.update(self._phases[key], completed=event.rows, total=event.total, **fields)


def watch_run(instance, run_id: str, display: RunDisplay, *, timeout: float, poll_seconds: float = 0.5,
              queued_hint_after: float = 30):
    """Follow the run in the instance's event log until it ends: its final `DagsterRunStatus`, or None after
    `timeout` seconds (the run continues)."""
    import dagster as dg

    states = {dg.DagsterEventType.RUN_ENQUEUED: "queued", dg.DagsterEventType.RUN_DEQUEUED: "starting",
              dg.DagsterEventType.RUN_STARTING: "starting", dg.DagsterEventType.RUN_START: "running"}
    steps = {dg.DagsterEventType.STEP_START: "step started:", dg.DagsterEventType.STEP_SUCCESS: "step done:",
             dg.DagsterEventType.STEP_FAILURE: "step failed:", dg.DagsterEventType.STEP_UP_FOR_RETRY: "step will retry:",
             dg.DagsterEventType.STEP_SKIPPED: "step skipped:"}
    started = time.monotonic()
    cursor = None
    hinted = False
    while True:
        run = instance.get_run_by_id(run_id)  # read before the events: a finished run's events are all stored
        while True:
            page = instance.get_records_for_run(run_id, cursor=cursor, limit=1000)
            cursor = page.cursor
            for record in page.records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if event is None:
                    loaded = ProgressEvent.parse(entry.user_message)
                    if loaded is not None:
                        display.loaded(loaded)
                elif event.event_type in states:
                    display.run_state(states[event.event_type])
                elif event.event_type in steps and event.step_key:
                    display.step(event.step_key, steps[event.event_type])
            if not page.has_more:
                break
        if run is not None and run.is_finished:
            display.run_state(run.status.value.lower())
            return run.status
        waited = time.monotonic() - started
        if not hinted and waited > queued_hint_after and (run is None or run.status == dg.DagsterRunStatus.QUEUED):
            display.note("still queued after 30 s: is `dagster-daemon run` running on this instance?")
            hinted = True
        if waited > timeout:
            return None
        time.sleep(poll_seconds)
