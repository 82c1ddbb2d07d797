"""benchmarks/render.py: the report's markdown names every plot it draws, and each plot is a real PNG.

Rendering only, on fabricated numbers: speed is measured by benchmarks/report.py, never asserted here."""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.render import render  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(rows_per_s: float, rss: float) -> dict:
    return {"rows": 1000, "rows_per_s": rows_per_s, "peak_rss_mb": rss, "seconds": 1.0}


def _results() -> dict:
    embedded = {f"{f}x": {"rows": 25_100 * f, "parquet_mb": 0.4 * f, "raw_rows_per_s": 4_000_000,
                          "raw_peak_rss_mb": 200.0, "copy_rows_per_s": 300_000, "copy_peak_rss_mb": 250.0,
                          "load_rows_per_s": 200_000, "peak_rss_mb": 300.0 + f, "load_vs_copy": 0.67,
                          "load_vs_raw": 0.05} for f in (1, 4, 16)}
    arrow = {f"{f}x": {"rows": 40_000 * f, "parquet_mb": f, "read": _load(9e6, 180), "bound": _load(12e6, 200),
                       "ours": _load(8e6, 250 + f), "gdsc": _load(4e6, 300 * f), "ours_vs_gdsc": 2.0,
                       "ours_vs_bound": 0.67} for f in (1, 4, 16)}
    return {
        "machine": {"nproc": 2, "cpu": "Test CPU", "ram_gb": 23.5, "versions": {"Python": "3.11.7", "pyarrow": "25"},
                    "commit": "abc1234", "date": "2026-11-23 22:00 UTC", "loadavg_before": [1.0, 2.0, 3.0],
                    "loadavg_after": [4.0, 5.0, 6.0], "duration_s": 60, "command": "benchmarks/report.py"},
        "embedded": {"factors": [1, 4, 16], "sizes": embedded},
        "arrow": {"factors": [1, 4, 16], "base_nodes": 10_000, "graphdatascience": "2.2", "concurrency": 4,
                  "batch_size": 10_000, "repeat": 1, "sizes": arrow},
        "latency": {"snapshots": 10, "people_per_snapshot": 1000, "scan_interval_s": 5,
                    "latencies_s": [6.1, 7.0, 9.5, 6.5, 7.2, 6.8, 7.7, 8.9, 6.0, 7.4], "latency_median_s": 7.1,
                    "latency_p90_s": 9.0, "latency_min_s": 6.0, "latency_max_s": 9.5, "goal_median_s": 8.0,
                    "meets_goal": True, "floor_in_process_run_s": 2.1, "orchestration_overhead_median_s": 5.0,
                    "drop_to_run_created_s": 3.0},
        "sensor": {"goal_tick_s": 1.0, "repeats": 3, "series": [
            {"customers": c, "snapshots_per_customer": s, "snapshots_on_disk": c * (s + 3), "tick_s": 0.01 * c / 10,
             "full_scan_s": 0.001 * c * s} for c, s in ((10, 10), (10, 100), (100, 10), (100, 100))]},
        "cypher": {"skipped": "the Neo4j harness launcher is not built: run tests/neo4j_harness/build.sh"},
    }


def test_markdown_names_each_plot_and_each_plot_is_a_png(tmp_path):
    out = render(_results(), tmp_path / "RESULTS.md")
    text = out.read_text()
    images = re.findall(r"!\[[^\]]+\]\((plots/[^)]+\.png)\)", text)
    assert sorted(images) == ["plots/arrow_load.png", "plots/embedded_load.png", "plots/latency.png",
                              "plots/sensor_tick.png"]
    for image in images:
        data = (tmp_path / image).read_bytes()
        assert data.startswith(PNG_SIGNATURE), image
        width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk follows the signature
        assert width > 300 and height > 200, (image, width, height)
        assert len(data) < 150_000, (image, len(data))
    # The numbers a reader compares sit in the file, beside their limits and goals.
    assert "Test CPU" in text and "[1.0, 2.0, 3.0]" in text and "[4.0, 5.0, 6.0]" in text
    assert "**0.67x**" in text and "**2.00x**" in text
    assert "**7.1 s**" in text and "9.0 s" in text and "< 8.0 s: met" in text
    assert "Skipped: the Neo4j harness launcher is not built" in text


def test_failed_section_is_written_as_failed_and_the_rest_still_renders(tmp_path):
    results = _results()
    results["arrow"] = {"error": "RuntimeError: _ours_child exited with code 1"}
    results["latency"]["meets_goal"] = False
    text = render(results, tmp_path / "RESULTS.md").read_text()
    assert "**Failed** in this run: `RuntimeError: _ours_child exited with code 1`" in text
    assert "plots/arrow_load.png" not in text
    assert "plots/embedded_load.png" in text and "**not met** (7.1 s)" in text


def test_labels_section_shows_cpu_beside_wall_time_and_renders_older_results_without_it(tmp_path):
    def run(seconds: float, cpu: dict | None) -> dict:
        out = {"seconds": seconds, "phases": {"plan": 0.1, "staging": 0.2, "copy": seconds - 0.3},
               "copy_statements": 2, "statement_seconds": {"COPY": 0.5, "LOAD": 0.0, "CHECKPOINT": 7.25},
               "node_tables": 1, "rel_pairs": 1, "database_mb": 2.3}
        if cpu is not None:
            out["statement_cpu_seconds"] = cpu
        return out

    results = _results()
    results["labels"] = {"nodes": 2000, "relationships": 5000, "labels": 40, "many_vs_one": 12.5,
                         "one_label": run(1.0, None),  # results.json written before CPU seconds were measured
                         "many_labels": run(12.5, {"COPY": 0.25, "LOAD": 0.0, "CHECKPOINT": 3.5})}
    text = render(results, tmp_path / "RESULTS.md").read_text()
    section = text.split("## Embedded target: many labels vs one", 1)[1]
    assert "| 0.5 s (0.25 s) | 7.25 s (3.5 s) |" in section
    assert "| 0.5 s (? s) | 7.25 s (? s) |" in section
    assert "**many / one: 12.5x** (goal: at most 2x" in section
