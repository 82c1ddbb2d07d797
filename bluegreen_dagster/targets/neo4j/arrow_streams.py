"""Parquet to DoPut streams: work units (row-group windows of the snapshot's files), a bounded read-ahead per stream,
parallel streams, and stall detection by lack of acknowledged batches.

Memory is bounded by design, not by file sizes: at most `concurrency` streams, each holding one decoded
`DECODE_ROWS` batch (column chunks are read through a `READ_BUFFER`, page by page), `READ_AHEAD` slices waiting,
and one on the wire. A big file is split into its row groups, so its rows are sent by several streams at once
(GDS takes node ids from any stream; each row is sent exactly once).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.progress import LoadProgress
from bluegreen_dagster.targets.base import TransientTargetError
from bluegreen_dagster.targets.neo4j.arrow_schema import FilePlan
from bluegreen_dagster.targets.neo4j.flight_client import FlightConnection

log = logging.getLogger(__name__)

READ_AHEAD = 8  # batches (slices) waiting per stream while the previous one is on the wire
# Column chunks are read through a buffer of this size, page by page, rather than whole: memory does not grow with
# the producer's row-group size.
READ_BUFFER = 1 << 20
# Parquet is decoded (and cast) this many rows at a time, then sent in slices of `neo4j.batch_size`: decoding
# small batches costs more per row.
DECODE_ROWS = 65_536
MIN_UNIT_ROWS = 250_000  # small row groups are sent together, so a stream is not opened per few thousand rows


@dataclass(frozen=True)
class Unit:
    """One DoPut stream: consecutive row groups of one file."""

    plan: FilePlan
    row_groups: tuple[int, ...]
    rows: int


def units_of(plans: list[FilePlan]) -> list[Unit]:
    units = []
    for plan in plans:
        meta = pq.ParquetFile(plan.path).metadata
        group: list[int] = []
        rows = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            rows += meta.row_group(rg).num_rows
            if rows >= MIN_UNIT_ROWS:
                units.append(Unit(plan, tuple(group), rows))
                group, rows = [], 0
        if group and rows:
            units.append(Unit(plan, tuple(group), rows))
    return units


class _Stopped(Exception):
    """A sibling stream failed or stalled; this one stops quietly."""


class _StreamEnded(Exception):
    """The server closed a DoPut stream without an ack and without an error status."""


_END = object()


def _read_ahead(unit: Unit, batch_size: int, stop: threading.Event) -> Iterator[pa.RecordBatch]:
    """The unit's batches, cast by its plan, decoded by a helper thread up to READ_AHEAD batches ahead (Parquet
    decoding and the network write both release the GIL, so they overlap)."""
    slots: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    halt = threading.Event()  # the consumer is gone (finished, failed or stopped)

    def put(item) -> bool:
        while not (halt.is_set() or stop.is_set()):
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            # Page checksums verified, as reading.open_parquet does for every other read.
            pf = pq.ParquetFile(unit.plan.path, pre_buffer=False, buffer_size=READ_BUFFER,
                                page_checksum_verification=True)
            decode = max(batch_size, DECODE_ROWS)
            for big in pf.iter_batches(batch_size=decode, row_groups=list(unit.row_groups), use_threads=True):
                big = unit.plan.apply(big)
                for offset in range(0, big.num_rows, batch_size):  # zero-copy slices of batch_size rows
                    if not put(big.slice(offset, batch_size)):
                        return
            put(_END)
        except SnapshotError as exc:
            put(exc)
        except (pa.ArrowException, OSError) as exc:
            put(SnapshotError(f"{unit.plan.path}: could not be read to the end ({exc}); replace the file and re-run"))

    thread = threading.Thread(target=produce, name="arrow-read", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = slots.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set():
                    raise _Stopped() from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()


@dataclass
class _Lane:
    """What one worker thread is doing, for the stall check and the progress line."""

    unit: Unit | None = None
    last_ack: float = field(default_factory=time.monotonic)


@dataclass
class UploadResult:
    rows: int = 0
    bytes: int = 0


class Uploader:
    """Sends all units of one entity over up to `concurrency` parallel DoPut streams."""

    def __init__(self, conn: FlightConnection, database: str, entity: str, *, batch_size: int, concurrency: int,
                 stall_timeout: float, heartbeat: float, progress: LoadProgress) -> None:
        self.conn = conn
        self.database = database
        self.entity = entity
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.stall_timeout = stall_timeout
        self.heartbeat = heartbeat
        self.progress = progress
        self.descriptor = flight.FlightDescriptor.for_command(json.dumps(
            {"name": "PUT_COMMAND", "version": "v1", "body": {"name": database, "entity_type": entity}}).encode())
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.result = UploadResult()
        self.errors: list[BaseException] = []
        self.running = 0
        self.changed = threading.Event()  # all workers finished, or one failed

    # -- one stream ---------------------------------------------------------------------------------------------

    def _send(self, unit: Unit, lane: _Lane) -> None:
        what = f"sending {self.entity}s of {unit.plan.path.name} into {self.database}"
        batches = _read_ahead(unit, self.batch_size, self.stop)
        first = next(batches, None)
        if first is None:
            return
        for attempt in (1, 2):
            acked = 0
            options, header = self.conn.options(deadline=False)  # a deadline would cover the whole stream
            writer = None
            try:
                writer, reader = self.conn.client().do_put(self.descriptor, unit.plan.schema, options)
                lane.last_ack = time.monotonic()
                for batch in chain([first], batches):
                    if self.stop.is_set():
                        raise _Stopped()
                    writer.write_batch(batch)
                    if reader.read() is None:  # one ack per batch; none: the server ended the stream
                        writer.close()  # raises the server's status
                        raise _StreamEnded()
                    acked += 1
                    lane.last_ack = time.monotonic()
                    with self.lock:
                        self.result.rows += batch.num_rows
                        self.result.bytes += batch.nbytes
                writer.done_writing()
                writer.close()
                writer = None
                return
            except flight.FlightUnauthenticatedError as exc:
                # The token expired between calls. Nothing of this stream was accepted yet: safe to send again.
                if attempt == 2 or acked:
                    raise self.conn.map_error(exc, what) from None
                self.conn.reauthenticate(header)
            except _StreamEnded:
                raise TransientTargetError(f"{what}: the GDS Arrow server ended the stream without acknowledging "
                                           "a batch; the import is aborted and the step will retry") from None
            except (pa.ArrowException, OSError) as exc:
                if isinstance(exc, SnapshotError):
                    raise
                if self.stop.is_set():
                    raise _Stopped() from None
                raise self.conn.map_error(exc, what) from None
            finally:
                if writer is not None:
                    try:
                        writer.close()
                    except (pa.ArrowException, OSError):
                        pass

    def _work(self, units: queue.Queue, lane: _Lane) -> None:
        try:
            while not self.stop.is_set():
                try:
                    unit = units.get_nowait()
                except queue.Empty:
                    return
                lane.unit, lane.last_ack = unit, time.monotonic()
                self._send(unit, lane)
                lane.unit = None
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the coordinating thread
            with self.lock:
                self.errors.append(exc)
            self.stop.set()
        finally:
            lane.unit = None
            with self.lock:
                self.running -= 1
                if self.running == 0 or self.errors:
                    self.changed.set()

    # -- all streams --------------------------------------------------------------------------------------------

    def run(self, units: list[Unit]) -> UploadResult:
        pending: queue.Queue = queue.Queue()
        for unit in units:
            pending.put(unit)
        total = sum(u.rows for u in units)
        lanes = [_Lane() for _ in range(max(1, min(self.concurrency, len(units))))]
        threads = [threading.Thread(target=self._work, args=(pending, lane), daemon=True,
                                    name=f"arrow-{self.entity}-{i}") for i, lane in enumerate(lanes)]
        self.running = len(threads)
        for t in threads:
            t.start()
        tick = min(1.0, self.stall_timeout / 4, self.heartbeat)
        phase = f"{self.entity}s"
        self.progress.rows(self.database, phase, 0, total)
        while not self.changed.wait(tick):
            now = time.monotonic()
            stalled = [lane.unit for lane in lanes if lane.unit is not None and now - lane.last_ack > self.stall_timeout]
            if stalled:
                self.stop.set()
                unit = stalled[0]
                raise TransientTargetError(
                    f"sending {self.entity}s of {unit.plan.path.name} into {self.database}: no batch acknowledged "
                    f"by the GDS Arrow server at {self.conn.where} for {self.stall_timeout:g}s (neo4j.stall_timeout); "
                    "the stream is stalled, the import is aborted and the step will retry")
            self.progress.rows(self.database, phase, self.result.rows, total)  # paced by LoadProgress
        self.stop.set()
        if self.errors:  # streams still blocked on the server end when the import is aborted
            raise self.errors[0]
        self.progress.rows(self.database, phase, self.result.rows, total)
        for t in threads:
            t.join()
        return self.result
