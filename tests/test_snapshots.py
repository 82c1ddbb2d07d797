import os
import time
from pathlib import Path

import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import (
    InvalidName,
    SnapshotError,
    expected_counts,
    iter_batches,
    NODE_COLUMNS,
    parse_partition_key,
    partition_key,
    scan,
    snapshot_at,
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
    (folder / "_SUCCESS").touch()  # even with a marker: no relationships yet
    found = scan(tmp_path, settle_seconds=0)
    assert [s.key for s in found.complete] == ["acme-301"]
    assert "no Parquet files" in found.waiting[str(folder)]


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
    assert counts.labels == {"Person": 100, "Employee": 10, "Company": 2}
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
