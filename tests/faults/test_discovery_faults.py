"""Faults in what lands under dataset.base_path, seen through discovery (`scan`, the sensor's view), a run's
lookup of its partition (`snapshot_for_key`) and `bluegreen check`. Each asserts: the folder is never offered as
complete, no snapshot file changed, and the message a user sees names the cause and what to do."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bluegreen_dagster.cli import main
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import InvalidName, SnapshotError
from bluegreen_dagster.snapshots import scan, snapshot_for_key
from tests.conftest import Project
from tests.faults.harness import tree_state


def check_output(capsys: pytest.CaptureFixture) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["check"])
    return code, capsys.readouterr().out


def test_symlink_out_of_base_path(project: Project, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    outside = tmp_path / "outside"
    write_snapshot(outside, "acme", 100, people=5)  # a real snapshot elsewhere
    for name in ("shadow-x", "passwd-dir"):
        (outside / "sys" / name).mkdir(parents=True)
    write_snapshot(project.data, "acme", 50, people=5)
    (project.data / "acme" / "200").symlink_to(outside / "acme" / "100")
    (project.data / "sys").symlink_to(outside / "sys")  # a link to a "system folder", with a customer-like name
    before = tree_state(project.data, outside)

    found = scan(project.data, project.settings.orchestrator.settle_seconds)
    assert [s.key for s in found.complete] == ["acme-50"]
    link = str(project.data / "acme" / "200")
    assert set(found.invalid) == {link, str(project.data / "sys")}
    for why in found.invalid.values():
        assert "symbolic link that leads outside dataset.base_path" in why  # the cause
        assert "Move the data under base_path, or replace the link" in why  # what to do
    with pytest.raises(SnapshotError, match="leads outside dataset.base_path") as err:
        snapshot_for_key(project.data, "acme-200")
    code, out = check_output(capsys)
    assert code == 1 and "leads outside dataset.base_path" in out
    assert main(["status", "--json"]) == 0
    status = capsys.readouterr().out
    assert [c["alias"] for c in json.loads(status)["customers"]] == ["acme"]  # no bogus customer 'sys'
    said = " ".join([*found.invalid, *found.invalid.values(), str(err.value), out, status])
    assert str(outside) not in said and "shadow-x" not in said and "passwd-dir" not in said
    assert tree_state(project.data, outside) == before


def test_control_characters_in_names(project: Project, capsys: pytest.CaptureFixture) -> None:
    write_snapshot(project.data, "acme", 50, people=5)
    write_snapshot(project.data, "acme", 100, people=5)
    os.rename(project.data / "acme" / "100", project.data / "acme" / "100\n")  # passes a `$`-anchored regex
    write_snapshot(project.data, "globex", 100, people=5)
    os.rename(project.data / "globex", project.data / "globex\x1b[2J")  # a terminal escape: clears the screen
    write_snapshot(project.data, "initech", 100, people=5)
    nodes = project.data / "initech" / "100" / "nodes"
    os.rename(nodes / "company-00000.parquet", nodes / "company\r-00000.parquet")
    before = tree_state(project.data)

    found = scan(project.data, project.settings.orchestrator.settle_seconds)
    assert [s.key for s in found.complete] == ["acme-50"]
    assert set(found.invalid) == {f"{project.data}/acme/100\\n", f"{project.data}/globex\\x1b[2J",
                                  f"{project.data}/initech/100"}
    for path, why in found.invalid.items():
        assert path.isprintable() and why.isprintable()  # never a raw control character in a log line
        assert "control or invisible characters" in why
        assert any(fix in why for fix in ("rename the file", "use lowercase letters", "use digits only"))
    with pytest.raises(InvalidName, match=r"100\\n"):
        snapshot_for_key(project.data, "acme-100\n")
    with pytest.raises(SnapshotError, match=r"company\\r-00000.parquet: the file name contains control"):
        snapshot_for_key(project.data, "initech-100").node_files
    code, out = check_output(capsys)
    assert code == 1 and "\x1b" not in out and "\r" not in out and "control or invisible characters" in out
    assert tree_state(project.data) == before


def test_leading_zero_timestamps(project: Project, capsys: pytest.CaptureFixture) -> None:
    write_snapshot(project.data, "acme", 100, people=5)
    shutil.copytree(project.data / "acme" / "100", project.data / "acme" / "0100")  # same time, second spelling
    before = tree_state(project.data)

    found = scan(project.data, project.settings.orchestrator.settle_seconds)
    assert [s.key for s in found.complete] == ["acme-100"]  # one time, one partition
    why = found.invalid[str(project.data / "acme" / "0100")]
    assert "leading zeros" in why and "rename the folder to '100'" in why
    with pytest.raises(InvalidName, match="rename the folder to '100'"):
        snapshot_for_key(project.data, "acme-0100")
    code, out = check_output(capsys)
    assert code == 1 and "rename the folder to '100'" in out
    assert tree_state(project.data) == before


@pytest.mark.parametrize("empty", ["nodes", "relationships", "both"])
def test_empty_folders_with_success_marker(project: Project, capsys: pytest.CaptureFixture, empty: str) -> None:
    write_snapshot(project.data, "acme", 100, people=5)
    folder = project.data / "acme" / "200"
    write_snapshot(project.data, "acme", 200, people=5)
    for sub in (["nodes", "relationships"] if empty == "both" else [empty]):
        for f in (folder / sub).iterdir():
            f.unlink()
    before = tree_state(project.data)

    found = scan(project.data, project.settings.orchestrator.settle_seconds)
    assert [s.key for s in found.complete] == ["acme-100"] and not found.waiting  # not waiting forever
    why = found.invalid[str(folder)]
    assert "has no Parquet files, yet _SUCCESS says the snapshot is finished" in why  # the cause
    assert "Write the Parquet files into" in why and "or delete the folder" in why  # what to do
    # Later, long past settle_seconds, it is still the same one invalid entry (the sensor reports it once).
    assert scan(project.data, 0, now=4e9).invalid == found.invalid
    assert snapshot_for_key(project.data, "acme-200").incomplete_reason(0) == why
    code, out = check_output(capsys)
    assert code == 1 and "ready" not in out.split("problem")[-1] and "has no Parquet files" in out
    assert tree_state(project.data) == before
