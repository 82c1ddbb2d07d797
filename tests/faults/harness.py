"""What every fault test shares: the four things each asserts, and one row per fault for the summary table that
tests/faults/conftest.py prints at the end of the run.

    probe = fault("corrupt parquet", project, "acme")   # the `fault` fixture; hashes the snapshot files now
    result = probe.run(instance, "acme-200")            # the job, in process, as the sensor would launch it
    probe.conclude(alias="acme-100", message=probe.message(result), mentions=["corrupt", "re-export"])

`conclude` checks, in this order, and records the row before asserting:
1. the alias serves the last good database (or moved forward to a good one): `alias`;
2. no snapshot file changed or was deleted (content hashes; files that appeared since are allowed);
3. no partial or failed database is left after the next cleanup (run here, with nothing in flight);
4. the message a user sees names the cause and what to do: every string in `mentions` is in it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.targets import make_target
from tests.conftest import Project
from tests.helpers import alias_of, run_partition


def tree_state(*roots: Path) -> dict[str, str]:
    """Every file (content hash) and link (its target) under roots, without following links."""
    state = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                if os.path.islink(path):
                    state[path] = "link:" + os.readlink(path)
                elif name in files:
                    with open(path, "rb") as fh:
                        state[path] = hashlib.file_digest(fh, "sha256").hexdigest()
    return state


def user_message(result: dg.ExecuteInProcessResult) -> str:
    """What the run shows a user, one per line: each failed check's description, then each failed step's error (a
    Failure's description; Dagster's generic "blocking asset check failed" is left out, the check says more)."""
    lines = [e.description or "" for e in result.get_asset_check_evaluations() if not e.passed]
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                lines.append(data.user_failure_data.description)
            elif data.error is not None and "DagsterAssetCheckFailedError" not in data.error.cls_name:
                lines.append(data.error.message.strip())
    return "\n".join(lines)


@dataclass
class FaultRow:
    fault: str
    survived: bool | None = None  # the alias is where it must be
    files_intact: bool | None = None
    leftovers: list[str] | None = None
    message: str = ""


ROWS: list[FaultRow] = []


class FaultProbe:
    def __init__(self, name: str, project: Project, customer: str) -> None:
        self.project, self.customer = project, customer
        self.row = FaultRow(name)
        ROWS.append(self.row)
        self.before = tree_state(project.data)

    def snapshot_files(self) -> None:
        """Hash the snapshot files again (after writing snapshots the fault needs)."""
        self.before = tree_state(self.project.data)

    def run(self, instance: dg.DagsterInstance, key: str, **tags: str) -> dg.ExecuteInProcessResult:
        return run_partition(self.project, instance, key, **tags)

    message = staticmethod(user_message)

    def alias(self) -> str | None:
        return alias_of(self.project, self.customer)

    def leftovers_after_cleanup(self, in_flight: Iterable[str] = ()) -> list[str]:
        """The next cleanup (nothing in flight unless named), then every database of the customer that is not
        online: what a crashed or failed load would leave behind."""
        keep = self.project.settings.orchestrator.keep_databases
        with make_target(self.project.settings) as target:
            rules.cleanup(target, self.customer, keep, in_flight=lambda: list(in_flight))
            return sorted(d.name for d in target.list_databases(self.customer) if d.status != "online")

    def conclude(self, *, alias: str | None, message: str, mentions: Iterable[str],
                 gone: Iterable[str] = ()) -> None:
        """Assert the four things; `gone` names databases that must not exist after the next cleanup."""
        after = tree_state(self.project.data)
        changed = sorted(p for p, digest in self.before.items() if after.get(p) != digest)
        leftovers = self.leftovers_after_cleanup()
        with make_target(self.project.settings) as target:
            remaining = {d.name for d in target.list_databases(self.customer)}
        leftovers += sorted(set(gone) & remaining)
        live = self.alias()
        mentions = list(mentions)
        missing = [m for m in mentions if m.lower() not in message.lower()]
        self.row.survived = live == alias
        self.row.files_intact = not changed
        self.row.leftovers = leftovers
        self.row.message = message.strip().splitlines()[0] if message.strip() else "(no message)"
        if missing:
            self.row.message = f"MISSING {missing}: {self.row.message}"
        assert live == alias, f"alias serves {live}, expected {alias}"
        assert not changed, f"snapshot files changed or deleted: {changed}"
        assert not leftovers, f"left after the next cleanup: {leftovers}"
        assert not missing, f"the message does not mention {missing}:\n{message}"


def run_notes(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """What a run that did not fail tells a user, one per line: every observation's description (why the alias did
    not move), every check's description, then its steps' log lines ("acme-100: already loaded; reused it")."""
    lines = [event.asset_observation_data.asset_observation.description or "" for event in result.all_events
             if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    lines += [e.description or "" for e in result.get_asset_check_evaluations()]
    lines += [entry.user_message for entry in instance.all_logs(result.run_id)
              if entry.dagster_event is None and entry.user_message]
    return "\n".join(line for line in lines if line)
