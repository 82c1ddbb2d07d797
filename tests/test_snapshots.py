import os
import shutil
import time
from pathlib import Path

import pytest

from bluegreen_dagster.columns import NODE_COLUMNS
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.names import (
    InvalidName,
    SnapshotError,
    parse_partition_key,
    partition_key,
)
from bluegreen_dagster.reading import iter_batches
from bluegreen_dagster.snapshots import (
    customers,
    expected_counts,
    scan,
    snapshot_at,
    snapshot_for_key,
)


def test_key_round_trip() -> None:
    key = partition_key("acme-corp", 1767741527)
    assert key == "acme-corp-1767741527"
    sid = parse_partition_key(key)
    assert (sid.customer, sid.timestamp, sid.ts) == ("acme-corp", "1767741527", 1767741527)
    assert sid.created_at.year == 2026


@pytest.mark.parametrize("customer", ["Acme", "acme_corp", "acme/x", "acme,x", "acme|x", "a...b", "-acme",
                                      "acme-", "1acme", "ac", "system-x", "acme corp", ""])
def test_bad_customer_names_are_refused(customer: str) -> None:
    with pytest.raises(InvalidName):
        partition_key(customer, 1)


@pytest.mark.parametrize("timestamp", ["2026-01-01", "17677.41", "x", "", "1" * 21])
def test_bad_timestamps_are_refused(timestamp: str) -> None:
    with pytest.raises(InvalidName):
        partition_key("acme", timestamp)


def test_names_longer_than_neo4j_allows_are_refused() -> None:
    with pytest.raises(InvalidName, match="at most 63"):
        partition_key("a" * 60, 1767741527)


@pytest.mark.parametrize("key", ["acme", "acme-", "ACME-1", "acme-1.5", "acme-1-x", "system-1"])
def test_parse_refuses_what_build_would_not_make(key: str) -> None:
    with pytest.raises(InvalidName):
        parse_partition_key(key)


def test_ordering_is_by_time_not_text() -> None:
    assert parse_partition_key("acme-99") < parse_partition_key("acme-100")


def test_success_marker_or_settle_time_completes_a_snapshot(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=20)
    write_snapshot(tmp_path, "acme", 200, people=20, success_marker=False)
    found = scan(tmp_path, settle_seconds=60)
    assert [s.key for s in found.complete] == ["acme-100"]
    assert "no _SUCCESS marker" in found.waiting[str(tmp_path / "acme" / "200")]
    later = time.time() + 61
    assert [s.key for s in scan(tmp_path, settle_seconds=60, now=later).complete] == ["acme-100", "acme-200"]


def test_half_written_snapshot_is_never_complete(tmp_path: Path) -> None:
    folder = tmp_path / "acme" / "300"
    (folder / "nodes").mkdir(parents=True)
    write_snapshot(tmp_path, "acme", 301, people=5)
    (folder / "nodes" / "part.parquet").write_bytes((tmp_path / "acme/301/nodes/company-00000.parquet").read_bytes())
    found = scan(tmp_path, settle_seconds=3600)
    assert [s.key for s in found.complete] == ["acme-301"]
    assert "no Parquet files" in found.waiting[str(folder)]


def test_finished_snapshot_without_files_is_invalid_not_waiting(tmp_path: Path) -> None:
    """_SUCCESS with an empty relationships/ (or nodes/) will never complete: invalid, with what to do."""
    folder = tmp_path / "acme" / "300"
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir()
    write_snapshot(tmp_path, "acme", 301, people=5)
    (folder / "nodes" / "part.parquet").write_bytes((tmp_path / "acme/301/nodes/company-00000.parquet").read_bytes())
    (folder / "_SUCCESS").touch()
    found = scan(tmp_path, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-301"] and not found.waiting
    why = found.invalid[str(folder)]
    assert "relationships has no Parquet files" in why and "_SUCCESS" in why and "Write the Parquet files" in why
    assert snapshot_at(tmp_path, "acme", 300).incomplete_reason(0) == why


def test_invalid_folders_are_reported_not_loaded(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    (tmp_path / "Bad_Customer" / "100" / "nodes").mkdir(parents=True)
    (tmp_path / "acme" / "yesterday").mkdir()
    (tmp_path / "acme" / ".100.tmp-1").mkdir()  # a producer's temporary folder is ignored
    found = scan(tmp_path, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-100"]
    assert set(found.invalid) == {str(tmp_path / "Bad_Customer"), str(tmp_path / "acme" / "yesterday")}


def test_expected_counts_per_label_and_type(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=100)
    counts = expected_counts(snapshot_at(tmp_path, "acme", 100))
    assert counts.labels == {"Person": 100, "Company": 2}
    assert counts.types == {"KNOWS": 300, "WORKS_AT": 100}
    assert (counts.nodes, counts.relationships) == (102, 400)


def test_corrupt_parquet_error_names_the_file(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=10)
    bad = tmp_path / "acme/100/nodes/person-00000.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SnapshotError, match="person-00000.parquet: not a readable Parquet file"):
        expected_counts(snapshot_at(tmp_path, "acme", 100))


def test_missing_column_error_names_file_and_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "n.parquet"
    pq.write_table(pa.table({"id": [1, 2], "labels": ["A", "B"]}), f)
    with pytest.raises(SnapshotError, match=r"n.parquet: missing required column 'nodeId'"):
        list(iter_batches([f], NODE_COLUMNS, 10))


def test_write_snapshot_is_atomic_and_never_overwrites(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    assert not [p for p in (tmp_path / "acme").iterdir() if p.name.startswith(".")]
    with pytest.raises(FileExistsError):
        write_snapshot(tmp_path, "acme", 100, people=5)
    assert os.path.exists(tmp_path / "acme/100/_SUCCESS")


# --------------------------------------------------------------------------------------------------------------
# Paths: nothing outside base_path is read or named


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every folder os.scandir is asked to list during the test."""
    calls: list[str] = []
    real = os.scandir

    def recording(path="."):
        if not isinstance(path, int):  # shutil.rmtree lists by file descriptor
            calls.append(os.path.realpath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", recording)
    return calls


def _everything_said(found) -> str:
    return " ".join([*found.waiting, *found.waiting.values(), *found.invalid, *found.invalid.values(),
                     *(str(s.path) for s in found.complete)])


def test_customer_link_to_a_system_folder_is_reported_without_its_contents(tmp_path: Path, listed) -> None:
    base, outside = tmp_path / "data", tmp_path / "etc"
    for name in ("cron-daily", "ssh", "systemd"):
        (outside / name / "nodes").mkdir(parents=True)
    write_snapshot(base, "acme", 100, people=5)
    (base / "etc").symlink_to(outside)  # 'etc' is a valid customer name
    found = scan(base, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-100"]
    assert set(found.invalid) == {str(base / "etc")}
    assert "leads outside dataset.base_path" in found.invalid[str(base / "etc")]
    said = _everything_said(found)
    assert not any(name in said for name in ("cron-daily", "ssh", "systemd")) and str(outside) not in said
    assert not any(p.startswith(str(outside)) for p in listed)
    assert customers(base) == ["acme"]  # no bogus customer in `status`


def test_snapshot_nodes_or_file_linked_outside_is_invalid_and_never_loaded(tmp_path: Path, listed) -> None:
    base, outside = tmp_path / "data", tmp_path / "elsewhere"
    write_snapshot(outside, "acme", 100, people=5)
    write_snapshot(base, "acme", 150, people=5)
    (base / "acme" / "200").symlink_to(outside / "acme" / "100")  # a whole snapshot folder
    write_snapshot(base, "acme", 300, people=5)
    shutil.rmtree(base / "acme/300/nodes")
    (base / "acme/300/nodes").symlink_to(outside / "acme/100/nodes")  # one data folder
    write_snapshot(base, "acme", 400, people=5)
    (base / "acme/400/nodes/extra.parquet").symlink_to(outside / "acme/100/nodes/company-00000.parquet")

    found = scan(base, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-150"]
    assert set(found.invalid) == {str(base / f"acme/{ts}") for ts in (200, 300, 400)}
    assert found.invalid[str(base / "acme/300")].startswith(f"{base}/acme/300/nodes is a symbolic link")
    assert found.invalid[str(base / "acme/400")].startswith(f"{base}/acme/400/nodes/extra.parquet is a symbolic")
    assert all("leads outside dataset.base_path" in why for why in found.invalid.values())
    assert str(outside) not in _everything_said(found)
    assert not any(p.startswith(str(outside)) for p in listed)
    # A run for one of those partitions refuses with the same words instead of reading outside.
    with pytest.raises(SnapshotError, match="leads outside dataset.base_path"):
        snapshot_for_key(base, "acme-200")
    for ts in (300, 400):
        with pytest.raises(SnapshotError, match="leads outside dataset.base_path"):
            snapshot_for_key(base, f"acme-{ts}").node_files
    assert not any(p.startswith(str(outside)) for p in listed)


def test_links_that_stay_inside_base_path_are_followed(tmp_path: Path) -> None:
    base = tmp_path / "data"
    write_snapshot(base, "acme", 100, people=5)
    (base / "acme" / "200").symlink_to(base / "acme" / "100")
    (base / "globex").symlink_to("acme")  # relative link, resolved inside
    found = scan(base, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-100", "globex-100", "acme-200", "globex-200"]
    assert not found.invalid
    assert expected_counts(snapshot_for_key(base, "globex-200")).nodes == 6


def test_base_path_itself_may_be_a_link(tmp_path: Path) -> None:
    write_snapshot(tmp_path / "real", "acme", 100, people=5)
    (tmp_path / "data").symlink_to(tmp_path / "real")
    assert [s.key for s in scan(tmp_path / "data", settle_seconds=0).complete] == ["acme-100"]
    assert snapshot_for_key(tmp_path / "data", "acme-100").node_files


# --------------------------------------------------------------------------------------------------------------
# Names on disk


def test_control_characters_in_folder_and_file_names_are_reported_escaped(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    (tmp_path / "acme\n" / "100" / "nodes").mkdir(parents=True)
    (tmp_path / "acme" / "200\x1b[2J").mkdir()
    write_snapshot(tmp_path, "acme", 300, people=5)
    os.rename(tmp_path / "acme/300/nodes/company-00000.parquet", tmp_path / "acme/300/nodes/co\rmpany.parquet")
    found = scan(tmp_path, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-100"]
    assert set(found.invalid) == {f"{tmp_path}/acme\\n", f"{tmp_path}/acme/200\\x1b[2J", f"{tmp_path}/acme/300"}
    for text in [*found.invalid, *found.invalid.values()]:
        assert text.isprintable()
    assert "co\\rmpany.parquet: the file name contains control" in found.invalid[f"{tmp_path}/acme/300"]
    with pytest.raises(SnapshotError, match=r"co\\rmpany"):
        snapshot_at(tmp_path, "acme", 300).node_files


def test_leading_zeros_are_invalid_with_the_canonical_spelling(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5)
    (tmp_path / "acme" / "0100").mkdir()
    found = scan(tmp_path, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-100"]
    assert "rename the folder to '100'" in found.invalid[str(tmp_path / "acme" / "0100")]


# --------------------------------------------------------------------------------------------------------------
# Scanning only what is new


def test_newer_than_skips_old_folders_without_looking_at_them(tmp_path: Path, listed) -> None:
    for ts in (100, 200, 300):
        write_snapshot(tmp_path, "acme", ts, people=3)
    write_snapshot(tmp_path, "globex", 100, people=3)
    (tmp_path / "acme" / "150").mkdir()  # would be "waiting" if looked at
    (tmp_path / "acme" / "yesterday").mkdir()
    found = scan(tmp_path, settle_seconds=60, newer_than={"acme": 200})
    assert [s.key for s in found.complete] == ["globex-100", "acme-300"]
    assert not found.waiting and set(found.invalid) == {str(tmp_path / "acme" / "yesterday")}
    looked = {p for p in listed if p.startswith(str(tmp_path / "acme") + "/")}
    assert looked and all(p.startswith(str(tmp_path / "acme" / "300")) for p in looked)
    assert scan(tmp_path, settle_seconds=60, newer_than={}).waiting  # empty mapping: everything examined


# --------------------------------------------------------------------------------------------------------------
# Fingerprint


def test_fingerprint_changes_with_content_even_at_the_same_size(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_snapshot(tmp_path, "acme", 100, people=5)
    snap = snapshot_at(tmp_path, "acme", 100)
    before = snap.fingerprint()
    assert before.startswith("sha256:") and snap.fingerprint() == before
    target = tmp_path / "acme/100/nodes/company-00000.parquet"
    # Same rows in another order: same size and the same Parquet footer, different content.
    pq.write_table(pa.table({"nodeId": [1, 2, 3, 4], "labels": ["A", "B", "A", "B"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"nodeId": [2, 1, 3, 4], "labels": ["B", "A", "A", "B"]}), tmp_path / "b.parquet")
    a, b = (tmp_path / "a.parquet").read_bytes(), (tmp_path / "b.parquet").read_bytes()
    assert len(a) == len(b) and a[-200:] == b[-200:] and a != b
    target.write_bytes(a)
    with_a = snap.fingerprint()
    stat = target.stat()
    os.replace(tmp_path / "b.parquet", target)  # replaced: same size, and the old mtime put back
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with_b = snap.fingerprint()
    assert len({before, with_a, with_b}) == 3

    (tmp_path / "acme/100/_SUCCESS").write_text("done")  # markers and hidden files are not snapshot files
    (tmp_path / "acme/100/nodes/.tmp.parquet").write_bytes(b"x")
    assert snap.fingerprint() == with_b
    os.rename(target, target.with_name("company-renamed.parquet"))
    assert snap.fingerprint() != with_b


def test_identical_snapshots_have_identical_fingerprints(tmp_path: Path) -> None:
    write_snapshot(tmp_path, "acme", 100, people=5, seed=1)
    write_snapshot(tmp_path, "globex", 100, people=5, seed=1)
    write_snapshot(tmp_path, "initech", 100, people=5, seed=2)
    prints = [snapshot_at(tmp_path, c, 100).fingerprint() for c in ("acme", "globex", "initech")]
    assert prints[0] == prints[1] != prints[2]
