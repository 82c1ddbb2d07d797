"""Faults in the snapshot data itself, run through the real job in process on the embedded target.

The customer `acme` always has a good live database first (acme-100); the faulty snapshot is acme-200. Each test
ends with `probe.conclude` (tests/faults/harness.py): the alias serves the last good database (or moved forward to
a good one), no snapshot file changed, nothing partial or failed is left after the next cleanup, and the message a
user sees names the file / column and what to fix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.targets.embedded import target as embedded_target
from tests.conftest import Project
from tests.faults.harness import run_notes, tree_state
from tests.helpers import alias_of, databases, failed_step, metadata, run_partition

GOOD, BAD = "acme-100", "acme-200"


def live(project: Project, instance: dg.DagsterInstance, people: int = 30) -> None:
    """acme-100 loaded, verified and live."""
    write_snapshot(project.data, "acme", 100, people=people)
    assert run_partition(project, instance, GOOD).success
    assert alias_of(project, "acme") == GOOD


def snapshot_file(project: Project, relative: str, ts: int = 200) -> Path:
    return project.data / "acme" / str(ts) / relative


def rewrite(path: Path, change) -> None:
    """Replace a Parquet file of a finished snapshot with `change(table)` (the producer's bug)."""
    pq.write_table(change(pq.read_table(path)), path)


def no_retries(result: dg.ExecuteInProcessResult) -> bool:
    return not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


# ---------------------------------------------------------------------------------------------------------------
# Files that cannot be read, or lack what the GDS convention requires


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def _garbage_inside(path: Path) -> None:
    """Footer intact, data pages overwritten: the file opens and fails while its rows are read."""
    data = bytearray(path.read_bytes())
    data[4:len(data) // 2] = os.urandom(len(data) // 2 - 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _garbage, _garbage_inside], ids=["truncated", "garbage", "pages"])
@pytest.mark.parametrize("relative", ["nodes/person-00000.parquet", "relationships/knows-00000.parquet"])
def test_corrupt_parquet(project: Project, fault, damage, relative: str) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        damage(snapshot_file(project, relative))
        probe = fault(f"corrupt parquet ({damage.__name__.strip('_')}, {relative.split('/')[0]})", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
    assert BAD not in databases(project, "acme")
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=[str(snapshot_file(project, relative)), "Parquet", "replace it with a complete Parquet file",
                             "run the partition again: bluegreen load acme 200"])


def _flip_a_byte_that_reads_silently(path: Path) -> None:
    """Rewrite the file with page checksums (pq.write_table(..., write_page_checksum=True)), then flip one byte of
    its `name` column's pages: one that pyarrow, not verifying checksums, reads as other valid names without error."""
    good = pq.read_table(path)
    pq.write_table(good, path, write_page_checksum=True)
    column = pq.ParquetFile(path).metadata.row_group(0).column(good.schema.get_field_index("name"))
    start = column.dictionary_page_offset or column.data_page_offset
    original = path.read_bytes()
    for position in range(start + 16, start + column.total_compressed_size):
        data = bytearray(original)
        data[position] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            read = pq.ParquetFile(path).read()
            read.validate(full=True)  # still valid UTF-8: nothing downstream would notice either
            if not read.equals(good):
                return
        except (pa.ArrowException, OSError):
            pass
    raise AssertionError("no byte of the name column reads back silently changed")


def test_a_flipped_byte_is_caught_by_the_page_checksums(project: Project, fault) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        damaged = snapshot_file(project, "nodes/person-00000.parquet")
        _flip_a_byte_that_reads_silently(damaged)
        probe = fault("corrupt parquet (one flipped byte, page checksums)", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=[str(damaged), "could not be read to the end", "checksum",
                             "replace it with a complete Parquet file", "bluegreen load acme 200"])


REQUIRED = [("nodes/person-00000.parquet", "nodeId"), ("nodes/person-00000.parquet", "labels"),
            ("relationships/knows-00000.parquet", "sourceNodeId"),
            ("relationships/knows-00000.parquet", "targetNodeId"),
            ("relationships/knows-00000.parquet", "relationshipType")]


@pytest.mark.parametrize("relative, column", REQUIRED, ids=[c for _, c in REQUIRED])
def test_missing_required_column(project: Project, fault, relative: str, column: str) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        rewrite(snapshot_file(project, relative), lambda t: t.drop_columns([column]))
        probe = fault(f"missing column {column}", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=[str(snapshot_file(project, relative)), f"missing required column '{column}'",
                             "run the partition again: bluegreen load acme 200"])


def _as(column: str, arrow_type: pa.DataType):
    def change(table: pa.Table) -> pa.Table:
        values = table.column(column)
        if pa.types.is_string(arrow_type) and not pa.types.is_string(values.type):
            values = pa.array([str(v) for v in values.to_pylist()], arrow_type)
        elif pa.types.is_integer(arrow_type) and not pa.types.is_integer(values.type):
            values = pa.array(range(len(values)), arrow_type)
        else:
            values = values.cast(arrow_type)
        return table.set_column(table.schema.get_field_index(column), column, values)
    return change


WRONG_TYPES = [("nodes/person-00000.parquet", "nodeId", pa.string(), "int"),
               ("nodes/person-00000.parquet", "nodeId", pa.float64(), "int"),
               ("nodes/company-00000.parquet", "labels", pa.int64(), "string or list"),
               ("relationships/works_at-00000.parquet", "targetNodeId", pa.string(), "int"),
               ("relationships/works_at-00000.parquet", "relationshipType", pa.int32(), "string")]


@pytest.mark.parametrize("relative, column, arrow_type, expected", WRONG_TYPES,
                         ids=[f"{c}-{t}" for _, c, t, _ in WRONG_TYPES])
def test_wrong_column_type(project: Project, fault, relative: str, column: str, arrow_type: pa.DataType,
                           expected: str) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        if column == "labels":
            rewrite(snapshot_file(project, relative), lambda t: t.set_column(
                t.schema.get_field_index("labels"), "labels", pa.array(range(len(t)), pa.int64())))
        else:
            rewrite(snapshot_file(project, relative), _as(column, arrow_type))
        probe = fault(f"wrong type ({column} as {arrow_type})", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=[str(snapshot_file(project, relative)), f"column '{column}' has type",
                             f"expected {expected}", "run the partition again: bluegreen load acme 200"])


def test_node_ids_beyond_int64(project: Project, fault) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        companies = snapshot_file(project, "nodes/company-00000.parquet")
        rewrite(companies, lambda t: t.set_column(0, "nodeId", pa.array([2**63 + i for i in range(len(t))],
                                                                          pa.uint64())))
        probe = fault("node ids beyond int64 (uint64)", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=[str(companies), "column 'nodeId' holds 9223372036854775808, above 2^63-1",
                             "signed 64-bit integer", "bluegreen load acme 200"])


# ---------------------------------------------------------------------------------------------------------------
# Graphs that do not hold together


def test_relationship_to_a_missing_node(project: Project, fault) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        dangling = snapshot_file(project, "relationships/dangling-00000.parquet")
        pq.write_table(pa.table({"sourceNodeId": pa.array([1, 2], pa.int64()),
                                 "targetNodeId": pa.array([999_999, 3], pa.int64()),
                                 "relationshipType": ["KNOWS", "KNOWS"]}), dangling)
        probe = fault("relationship to a missing node", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database"
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=["1 relationship(s) reference nodes that are not in the node files", "999999",
                             f"{dangling}: 1", "run the partition again: bluegreen load acme 200"])


def test_duplicate_node_ids_across_files(project: Project, fault) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        robots = snapshot_file(project, "nodes/robot-00000.parquet")
        pq.write_table(pa.table({"nodeId": pa.array([5, 6, 7], pa.int64()),
                                 "labels": pa.array([["Robot"]] * 3, pa.list_(pa.string()))}), robots)
        probe = fault("duplicate node ids across files", project, "acme")
        result = probe.run(instance, BAD)
    assert not result.success and failed_step(result) == "snapshot_database"
    probe.conclude(alias=GOOD, message=probe.message(result),
                   mentions=["3 duplicate nodeId value(s)", "5, 6, 7", str(robots),
                             str(snapshot_file(project, "nodes/person-00000.parquet")), "unique",
                             "run the partition again: bluegreen load acme 200"])


# ---------------------------------------------------------------------------------------------------------------
# Snapshots that change while the pipeline looks at them


def test_snapshot_still_being_written(project: Project, fault) -> None:
    with dg.instance_for_test() as instance:
        live(project, instance)
        folder = write_snapshot(project.data, "acme", 200, people=30, success_marker=False)
        (folder / "nodes" / "person-00001.parquet").write_bytes(b"PAR1")  # the producer is mid-file
        probe = fault("snapshot still being written", project, "acme")
        result = probe.run(instance, BAD)
        assert not result.success and failed_step(result) == "health_check"
        assert databases(project, "acme") == [GOOD]
        probe.conclude(alias=GOOD, message=probe.message(result),
                       mentions=[f"snapshot {folder} is not complete", "no _SUCCESS marker", "files changed",
                                 "write _SUCCESS last", "run the partition again"])

        # The producer finishes: the same partition now loads and goes live.
        write_snapshot(project.data, "acme", 300, people=30)  # its files, finished (a donor)
        os.replace(project.data / "acme" / "300" / "nodes" / "person-00000.parquet",
                   folder / "nodes" / "person-00001.parquet")
        (folder / "nodes" / "person-00001.parquet").unlink()
        (folder / "_SUCCESS").touch()
        assert run_partition(project, instance, BAD).success
    assert alias_of(project, "acme") == BAD


# What the producer does to acme-200 while it loads, and where the load is then: adds a node file once the files
# are planned, rewrites a relationship file with other rows before it is staged, or removes one once all is staged;
# or is still writing a file in place ("cut short": half of it is there when the load reads it, then it finishes).
CHANGES = {"added": ("stage_relationships", "nodes/robot-00000.parquet", 33),
           "rewrote": ("stage_relationships", "relationships/knows-00000.parquet", 31),
           "removed": ("fill", "relationships/works_at-00000.parquet", 31),
           "cut short": ("stage_nodes", "nodes/person-00000.parquet", 31)}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_snapshot_changing_during_the_load_is_never_loaded_as_a_mix(project: Project, fault, monkeypatch,
                                                                      change: str) -> None:
    phase, relative, nodes_after = CHANGES[change]
    with dg.instance_for_test() as instance:
        live(project, instance)
        folder = write_snapshot(project.data, "acme", 200, people=30)
        path = folder / relative
        probe = fault(f"a file {change.replace('rewrote', 'rewritten')} during the load", project, "acme")
        real = getattr(embedded_target, phase)
        changed: list[str] = []
        whole: list[bytes] = []

        def the_producer_changes_a_file_meanwhile(*args, **kwargs):
            if not changed:
                changed.append(str(path))
                if change == "added":
                    pq.write_table(pa.table({"nodeId": pa.array([1000, 1001], pa.int64()),
                                             "labels": pa.array([["Robot"]] * 2, pa.list_(pa.string()))}), path)
                elif change == "rewrote":
                    rewrite(path, lambda t: t.slice(0, 60))
                elif change == "cut short":
                    whole.append(path.read_bytes())
                    with open(path, "r+b") as fh:  # in place, as a producer that writes without renaming
                        fh.truncate(len(whole[0]) // 2)
                else:
                    path.unlink()
                # The producer's own change is not the pipeline's: every other file must stay as it was.
                probe.before.pop(str(path), None)
                if path.exists():
                    probe.before[str(path)] = tree_state(path.parent)[str(path)]
            return real(*args, **kwargs)

        monkeypatch.setattr(embedded_target, phase, the_producer_changes_a_file_meanwhile)
        result = probe.run(instance, BAD)
        assert changed and not result.success and failed_step(result) == "snapshot_database" and no_retries(result)
        assert databases(project, "acme") == [GOOD]
        probe.conclude(alias=GOOD, message=probe.message(result),
                       mentions=[f"{folder} changed while it was being loaded",
                                 f"{'rewrote' if change == 'cut short' else change} {path}",
                                 "nothing was loaded", "must not change a snapshot after writing _SUCCESS",
                                 "run the partition again: bluegreen load acme 200"])

        if whole:
            path.write_bytes(whole[0])  # the producer finishes the file
        again = run_partition(project, instance, BAD)  # now the snapshot holds still: what it holds loads
    assert again.success and alias_of(project, "acme") == BAD
    assert metadata(again, "snapshot_database")["nodes"] == nodes_after


# ---------------------------------------------------------------------------------------------------------------
# The same snapshot twice, and snapshots in the wrong order


def _sensor(project: Project) -> dg.SensorDefinition:
    return next(s for s in project.defs.sensors if s.name == "snapshot_sensor")


def _tick(project: Project, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=project.resources.as_dict())
    result = _sensor(project)(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_the_same_snapshot_dropped_twice_and_a_rerun(project: Project, fault, tmp_path: Path) -> None:
    project.reconfigure(orchestrator={"settle_seconds": 0})
    with dg.instance_for_test() as instance:
        write_snapshot(project.data, "acme", 100, people=30)
        first = _tick(project, instance, None)
        assert [r.partition_key for r in first.run_requests] == [GOOD]
        assert run_partition(project, instance, GOOD).success

        # The producer drops the same snapshot again: deleted and re-copied, same files, new mtimes.
        shutil.copytree(project.data / "acme" / "100", tmp_path / "copy")
        shutil.rmtree(project.data / "acme" / "100")
        shutil.copytree(tmp_path / "copy", project.data / "acme" / "100")
        probe = fault("same snapshot dropped twice / re-run", project, "acme")
        second = _tick(project, instance, first.cursor)
        assert not second.run_requests  # the sensor launches a snapshot once

        rerun = probe.run(instance, GOOD)  # an operator re-runs the loaded partition
        assert rerun.success
        assert metadata(rerun, "snapshot_database")["reused"] is True
        assert metadata(rerun, "alias_switch")["switched"] is False
        assert instance.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME) == [GOOD]  # no duplicate partition
        assert databases(project, "acme") == [GOOD]
        probe.conclude(alias=GOOD, message=run_notes(instance, rerun),
                       mentions=[f"{GOOD}: already loaded; reused it", f"alias acme already points at {GOOD}"])


def test_an_older_snapshot_after_a_newer_one_is_live(project: Project, fault) -> None:
    project.reconfigure(orchestrator={"keep_databases": 1})
    with dg.instance_for_test() as instance:
        write_snapshot(project.data, "acme", 300, people=30)
        assert run_partition(project, instance, "acme-300").success
        write_snapshot(project.data, "acme", 200, people=40)  # late, and older than the live one
        probe = fault("older snapshot after a newer one", project, "acme")
        late = probe.run(instance, BAD)
        assert late.success  # loaded and verified ...
        assert {e.check_name: e.passed for e in late.get_asset_check_evaluations()} == {
            "verify_counts": True, "plausible": True, "smoke_queries": True}
        assert metadata(late, "alias_switch")["switched"] is False  # ... never switched to
        assert BAD in databases(project, "acme")  # kept by its own run; the next cleanup applies keep_databases
        probe.conclude(alias="acme-300", gone=[BAD], message=run_notes(instance, late),
                       mentions=["alias acme stays on acme-300: it is newer than acme-200",
                                 "acme-300 is live and newer: this database will not be switched to"])
    assert databases(project, "acme") == ["acme-300"]


def test_two_snapshots_finishing_in_reverse_order(project: Project, fault, monkeypatch) -> None:
    """acme-200 starts first; acme-300 starts while acme-200 verifies and finishes first. The newer one switches,
    the older one never takes the alias back, and acme-300's cleanup leaves acme-200 alone while it runs."""
    from bluegreen_dagster import bluegreen as rules

    project.reconfigure(orchestrator={"keep_databases": 1})
    with dg.instance_for_test() as instance:
        live(project, instance)
        write_snapshot(project.data, "acme", 200, people=30)
        write_snapshot(project.data, "acme", 300, people=35)
        probe = fault("two snapshots finishing in reverse order", project, "acme")
        real_verify = rules.verify
        newer: list[dg.ExecuteInProcessResult] = []

        def verify_while_the_newer_run_finishes(graph, database, expected):
            if database == BAD and not newer:
                newer.append(run_partition(project, instance, "acme-300"))
            return real_verify(graph, database, expected)

        monkeypatch.setattr(rules, "verify", verify_while_the_newer_run_finishes)
        older = probe.run(instance, BAD)
        [newer_result] = newer
        assert newer_result.success and older.success
        assert metadata(newer_result, "alias_switch")["alias_target"] == "acme-300"
        assert metadata(newer_result, "cleanup")["protected"] == {BAD: "still loading"}
        assert metadata(older, "alias_switch")["switched"] is False
        probe.conclude(alias="acme-300", gone=[BAD, GOOD], message=run_notes(instance, older),
                       mentions=["alias acme stays on acme-300: it is newer than acme-200"])
