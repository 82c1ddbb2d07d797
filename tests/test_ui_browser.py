"""The Dagster UI in a real browser: what an operator looks at, on the demo data, through Debian's Chromium.

One webserver and one daemon (`-w workspace.yaml`, our instance settings, a throwaway DAGSTER_HOME, the embedded
target) serve the whole module. `bluegreen demo-data` writes one snapshot per demo customer; once their aliases
are live, a good snapshot (`bluegreen simulate-snapshot`) and a corrupt one (a Parquet file that is not Parquet)
are dropped, and the tests read the pages: the partitions of `snapshot_database` with their metadata, the run the
sensor launched for the new snapshot, the failed run and its cause, each customer's live graph (the partitions of
`live_graph`) and the failed freshness check of the customer whose live graph is older than its max_age.

Screenshots go to $BLUEGREEN_UI_ARTIFACTS (default /tmp/bluegreen-ui-artifacts), printed at the end. Needs
/usr/bin/chromium (Debian's `chromium`) and the `playwright` package (dev extra); never downloads a browser.
Skipped without them, unless BLUEGREEN_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.names import parse_partition_key
from tests.conftest import Project, make_project
from tests.dagster_processes import bluegreen, running_daemon, running_webserver, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BLUEGREEN_UI_ARTIFACTS", "/tmp/bluegreen-ui-artifacts"))
CUSTOMERS = ("acme-corp", "globex", "initech")  # what `bluegreen demo-data` writes
GOOD, BAD = "acme-corp", "globex"  # the customer that gets a new snapshot, the one that gets a corrupt one
STALE = "initech"  # its max_age (1 s) has passed by the time the pages are read: its freshness check fails


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


_missing = _browser_missing()
if _missing and os.environ.get("BLUEGREEN_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"BLUEGREEN_REQUIRE_BROWSER=1 but {_missing}")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.skipif(bool(_missing), reason=f"browser test: {_missing}")]


@dataclass
class UI:
    project: Project
    url: str
    page: object  # playwright.sync_api.Page
    daemon_log: Path
    good_key: str = ""
    bad_key: str = ""
    bad_file: Path | None = None
    demo_keys: dict[str, str] = field(default_factory=dict)  # customer -> the demo snapshot's database
    dialog_dismissed: bool = False
    shots: list[Path] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        path = ARTIFACTS / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path

    def open(self, path: str) -> None:
        self.page.goto(self.url + path)

    def text(self) -> str:
        return self.page.inner_text("body")


def flat(text: str) -> str:
    """Page text with every run of whitespace (newlines, no-break spaces between tags) as one space."""
    return " ".join(text.split())


def status(project: Project) -> dict[str, str | None]:
    """Customer -> the database its alias serves, from `bluegreen status --json`."""
    rows = json.loads(bluegreen(project, "status", "--json").stdout)["customers"]
    return {row["customer"]: row["target_database"] for row in rows}


def rows_of(folder: Path) -> int:
    """Nodes + relationships of a snapshot folder, counted from its Parquet footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.glob("*/*.parquet"))


def drop_corrupt_snapshot(project: Project, customer: str, timestamp: int) -> Path:
    """A snapshot whose relationships are fine and whose node file is not Parquet at all; returns that file."""
    good = sorted((project.data / customer).iterdir())[-1]
    tmp = project.data / customer / f".{timestamp}.tmp"
    (tmp / "nodes").mkdir(parents=True)
    (tmp / "relationships").mkdir()
    for rel in (good / "relationships").glob("*.parquet"):
        (tmp / "relationships" / rel.name).write_bytes(rel.read_bytes())
    (tmp / "nodes" / "people-truncated.parquet").write_bytes(b"PAR1 this producer crashed mid-write")
    (tmp / "_SUCCESS").touch()
    tmp.rename(project.data / customer / str(timestamp))
    return project.data / customer / str(timestamp) / "nodes" / "people-truncated.parquet"


def dismiss_first_visit_dialog(page, timeout_ms: int = 30_000) -> bool:
    """Dagster 1.13 greets a fresh instance on localhost with "Join the Dagster community" (1 s after load) and
    its backdrop swallows every click until "Skip" is pressed. Returns whether it was there."""
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    try:
        dialog.wait_for(state="visible", timeout=timeout_ms)
    except Exception:  # playwright's TimeoutError: no dialog on this version/instance
        return False
    dialog.get_by_role("button", name="Skip").click()
    dialog.wait_for(state="hidden", timeout=10_000)
    return True


def metadata_value(page, key: str) -> str:
    """The value cell of the metadata table row whose key cell is exactly `key`."""
    row = page.locator("tr").filter(has=page.get_by_text(key, exact=True))
    return row.first.locator("td").nth(1).inner_text().strip()


def run_row(ui: UI, partition: str, status_text: str, timeout: float):
    """Reload the Runs page until the run of `partition` shows `status_text`; returns its table row."""
    def row():
        ui.open("/runs")
        # The Runs table is virtualized: each row is a div with a data-index, not a <tr>.
        r = ui.page.locator("[data-index]").filter(has_text=f"partition: {partition}")
        try:
            r.first.wait_for(timeout=5_000)
        except Exception:
            return None
        return r.first if status_text in r.first.inner_text() else None

    return wait_for(row, timeout, f"a run of {partition} with status {status_text} on the Runs page",
                    ui.daemon_log, interval=1)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    root = tmp_path_factory.mktemp("ui")
    project = make_project(root, orchestrator={"scan_interval": 5}, customers={STALE: {"max_age": 1}})
    bluegreen(project, "demo-data", "--people", "300")
    began = time.monotonic()
    with running_daemon(project) as daemon_log, running_webserver(project) as url, sync_playwright() as pw:
        demo_keys = wait_for(lambda: (live := status(project)) and all(live.get(c) for c in CUSTOMERS) and live,
                             180, "every demo customer's alias", daemon_log, interval=2)
        loaded = time.monotonic()
        # The operator's next moves, dropped now so both runs proceed while the first pages are read.
        ts = int(time.time())
        bluegreen(project, "simulate-snapshot", "--customer", GOOD, "--people", "400", "--timestamp", str(ts))
        bad_file = drop_corrupt_snapshot(project, BAD, ts)
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        state = UI(project, url, page, daemon_log, good_key=f"{GOOD}-{ts}", bad_key=f"{BAD}-{ts}", bad_file=bad_file,
                   demo_keys=demo_keys)
        state.open("/assets/snapshot_database?view=partitions")
        state.dialog_dismissed = dismiss_first_visit_dialog(page)
        try:
            yield state
        finally:
            browser.close()
            print(f"\nui: demo loaded in {loaded - began:.0f}s, browser part {time.monotonic() - loaded:.0f}s; "
                  f"screenshots in {ARTIFACTS}:\n  " + "\n  ".join(str(s) for s in state.shots))


def test_first_visit_dialog_is_dismissed(ui: UI) -> None:
    assert ui.dialog_dismissed, "Dagster's first-visit dialog did not appear on a fresh instance"
    assert not ui.page.get_by_role("dialog").is_visible()
    ui.page.get_by_text("Partitions", exact=True).first.wait_for()
    ui.shot("asset-partitions-after-dialog")


def test_partitions_page_shows_each_loaded_snapshot_with_rows_and_database(ui: UI) -> None:
    for customer, key in ui.demo_keys.items():
        ui.open(f"/assets/snapshot_database?view=partitions&partition={key}")
        # The metadata table of this partition's latest materialization.
        ui.page.locator("tr").filter(has=ui.page.get_by_text("database", exact=True)).first.wait_for()
        body = ui.text()
        assert re.search(rf"{re.escape(key)}\s+Materialized", body), f"{key} is not shown as Materialized"
        assert metadata_value(ui.page, "database") == key
        folder = ui.project.data / customer / parse_partition_key(key).timestamp
        assert metadata_value(ui.page, "rows").replace(",", "") == str(rows_of(folder))
        ui.shot(f"partition-{customer}")


def test_dropped_snapshot_runs_from_the_sensor_and_succeeds(ui: UI) -> None:
    row = run_row(ui, ui.good_key, "Success", 120)
    assert "snapshot_sensor" in row.inner_text(), f"not launched by the sensor: {row.inner_text()}"
    ui.shot("runs-sensor-run-succeeded")
    row.locator("a[href*='/runs/']").first.click()  # the run id
    ui.page.get_by_text('Finished execution of run for "load_snapshot"').first.wait_for()
    text = ui.text()
    assert "Launched by snapshot_sensor" in flat(text) and f"partition: {ui.good_key}" in text
    for step in ("health_check", "snapshot_database", "alias_switch", "cleanup"):
        assert step in text, f"step {step} missing on the run page"
    assert status(ui.project)[GOOD] == ui.good_key, "the UI says success but the alias did not move"
    ui.shot("run-page-sensor-run-success")


def test_failed_snapshot_shows_its_cause_on_the_run_page(ui: UI) -> None:
    row = run_row(ui, ui.bad_key, "Failure", 120)
    row.locator("a[href*='/runs/']").first.click()
    ui.page.get_by_text(ui.bad_file.name).first.wait_for()  # the cause names the file...
    text = ui.text()
    # ...and says what is wrong with it, in the same message.
    assert re.search(rf"{re.escape(ui.bad_file.name)}[^\n]*(not a readable|corrupt|invalid|magic bytes)", text,
                     re.IGNORECASE), "the run page names the file but not what is wrong with it"
    assert "Launched by snapshot_sensor" in flat(text) and f"partition: {ui.bad_key}" in text
    assert status(ui.project)[BAD] == ui.demo_keys[BAD], "the alias moved away from the last good database"
    ui.shot("run-page-failed-snapshot-cause")


def test_each_customers_live_graph_shows_what_serves_and_since_when(ui: UI) -> None:
    """The catalog's asset `live_graph` has one partition per customer; a partition's page shows, without the
    Events tab, the database its alias serves and since when (the latest materialization's metadata)."""
    live = status(ui.project)
    for customer in CUSTOMERS:
        ui.open(f"/assets/live_graph?view=partitions&partition={customer}")
        ui.page.locator("tr").filter(has=ui.page.get_by_text("serves", exact=True)).first.wait_for()
        assert re.search(rf"{re.escape(customer)}\s+Materialized", ui.text()), f"{customer} is not Materialized"
        assert "External Asset" not in ui.text()  # a declared asset of the code location
        assert metadata_value(ui.page, "serves") == live[customer], f"{customer}: the UI and the target disagree"
        since = metadata_value(ui.page, "since")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", since), since
        ui.shot(f"live-graph-{customer}")


def test_a_stale_live_graph_is_a_failed_freshness_check(ui: UI) -> None:
    """initech's max_age is 1 s: the sensor live_graph_freshness records a failed `live_graph_fresh` that names it;
    the customers without a max_age are not judged."""
    def failed_check():
        ui.open("/assets/live_graph?view=checks")
        try:
            ui.page.get_by_text("live_graph_fresh").first.wait_for(timeout=10_000)
        except Exception:
            return None
        text = flat(ui.text())
        return text if "Failed" in text else None

    try:
        text = wait_for(failed_check, 150, "a failed live_graph_fresh on the live_graph page", ui.daemon_log,
                        interval=3)
    finally:
        ui.shot("live-graph-freshness-check")
    ui.page.get_by_text("live_graph_fresh").first.click()
    ui.page.get_by_text(f"{STALE}: STALE").first.wait_for(timeout=30_000)
    body = flat(ui.text())
    assert "1 of 1 customers stale" in body  # only initech has a max_age
    ui.shot("live-graph-freshness-check-detail")
