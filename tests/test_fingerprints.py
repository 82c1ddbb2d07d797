"""fingerprints.prepare_load on the embedded target: what happens to an existing database before a load, for each
combination of recorded fingerprint, alias and runs in flight (the Dagster path is in tests/faults/)."""

from __future__ import annotations

import pytest

from bluegreen_dagster import fingerprints
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets import TransientTargetError, make_target
from tests.conftest import Project


@pytest.fixture
def loaded(project: Project):
    """acme-100 loaded on the embedded target; yields (target, snapshot)."""
    write_snapshot(project.data, "acme", 100, people=10)
    snapshot = snapshot_at(project.data, "acme", 100)
    with make_target(project.settings) as target:
        target.load(snapshot)
        yield target, snapshot


def names(target) -> list[str]:
    return [d.name for d in target.list_databases("acme")]


def test_same_fingerprint_or_no_database_does_nothing(project: Project, loaded) -> None:
    target, snapshot = loaded
    fp = snapshot.fingerprint()
    assert fingerprints.prepare_load(target, snapshot, fp, fp, in_flight=list) is None
    other = snapshot_at(project.data, "acme", 200)
    write_snapshot(project.data, "acme", 200, people=10)
    assert fingerprints.prepare_load(target, other, other.fingerprint(), "sha256:old", in_flight=list) is None
    assert names(target) == ["acme-100"]


def test_a_changed_database_is_dropped_unless_live_or_loading(loaded) -> None:
    target, snapshot = loaded
    fp = snapshot.fingerprint()
    with pytest.raises(TransientTargetError, match="another run is loading it"):
        fingerprints.prepare_load(target, snapshot, fp, "sha256:0123456789abcdef", in_flight=lambda: ["acme-100"])
    target.point_alias("acme", "acme-100")
    with pytest.raises(fingerprints.LiveSnapshotChanged, match="acme-100 is live .* 0123456789ab loaded"):
        fingerprints.prepare_load(target, snapshot, fp, "sha256:0123456789abcdef", in_flight=list)
    assert names(target) == ["acme-100"]


def test_without_a_record_a_live_database_is_reused_and_another_reloaded(loaded) -> None:
    target, snapshot = loaded
    fp = snapshot.fingerprint()
    target.point_alias("acme", "acme-100")
    said = fingerprints.prepare_load(target, snapshot, fp, None, in_flight=list)
    assert "no recorded fingerprint" in said and "reused" in said and names(target) == ["acme-100"]

    write_snapshot(target.settings.dataset.base_path, "acme", 200, people=10)
    newer = snapshot_at(target.settings.dataset.base_path, "acme", 200)
    target.load(newer)
    target.point_alias("acme", "acme-200")
    said = fingerprints.prepare_load(target, snapshot, fp, None, in_flight=list)
    assert "no fingerprint was recorded" in said and "dropped it" in said and names(target) == ["acme-200"]


def test_run_key_names_the_partition_and_the_content() -> None:
    assert fingerprints.run_key("acme-100", "sha256:" + "ab" * 32) == "acme-100@abababababab"
