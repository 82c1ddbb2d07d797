"""Run every benchmark and rewrite benchmarks/RESULTS.md (and benchmarks/plots/*.png) from scratch.

    .venv/bin/pip install -e ".[dev,bench]"
    .venv/bin/python benchmarks/report.py            # the full report, ~20-25 min on 2 shared CPUs
    .venv/bin/python benchmarks/report.py --quick    # small sizes, ~2-3 min: checks that everything runs

Sections, each measured next to its limit or peer in the same run: embedded load and the GDS Arrow loader at
1x / 4x / 16x, drop-to-switch latency under `dagster dev`, sensor tick time against snapshots on disk, and the
Cypher loader against a naive script when the Neo4j Community launcher is built. A section that fails is written
as failed, with its error, and the others still run. The raw numbers are kept beside the markdown in
results.json; `--render-only` re-renders from it without measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import bench_arrow_vs_gdsc, bench_cypher_loader, bench_embedded_load  # noqa: E402
from benchmarks import bench_labels, bench_latency, bench_sensor_tick  # noqa: E402
from benchmarks.render import render  # noqa: E402

FACTORS = (1, 4, 16)
# Sizes that keep the full report under ~25 min on 2 shared CPUs; --quick for a smoke run.
FULL = {"embedded_people": 50_000, "embedded_repeat": 2, "arrow_nodes": 250_000, "arrow_repeat": 2, "latency_drops": 10,
        "latency_people": 1000, "scan_interval": 5, "sensor_sizes": [(100, 10), (100, 100), (1000, 10), (1000, 100)],
        "sensor_repeats": 3, "cypher_people": 25_000, "cypher_repeat": 3, "cypher_warmup": 1}
QUICK = {"embedded_people": 5_000, "embedded_repeat": 1, "arrow_nodes": 10_000, "arrow_repeat": 1, "latency_drops": 3,
         "latency_people": 500, "scan_interval": 5, "sensor_sizes": [(10, 10), (100, 10)], "sensor_repeats": 1,
         "cypher_people": 2_000, "cypher_repeat": 1, "cypher_warmup": 0}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"Python": platform.python_version()}
    for package in ("pyarrow", "ladybug", "graphdatascience", "dagster", "neo4j"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(ram_gb, 1), "versions": versions,
            "commit": commit.stdout.strip() or "?", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _section(name: str, func) -> dict:
    """Run one section; a failure is recorded (and printed) instead of ending the report."""
    started = time.perf_counter()
    before = [round(x, 1) for x in os.getloadavg()]
    measured_at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"[report] {name} ...", file=sys.stderr, flush=True)
    try:
        result = func()
    except Exception as exc:  # noqa: BLE001 - the report must say which section failed and still render the rest
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["section_seconds"] = round(time.perf_counter() - started, 1)
    result["run"] = {"at": measured_at, "seconds": result["section_seconds"], "loadavg_before": before,
                     "loadavg_after": [round(x, 1) for x in os.getloadavg()]}
    print(f"[report] {name} done in {result['section_seconds']} s", file=sys.stderr, flush=True)
    return result


def _embedded(sizes: dict) -> dict:
    people = sizes["embedded_people"]
    repeat = sizes["embedded_repeat"]
    return {"factors": list(FACTORS), "base_people": people, "repeat": repeat,
            "sizes": {f"{f}x": bench_embedded_load.measure(people * f, repeat=repeat) for f in FACTORS}}


def _arrow(sizes: dict) -> dict:
    try:
        import graphdatascience  # noqa: F401
    except ImportError:
        return {"skipped": 'graphdatascience is not installed: `.venv/bin/pip install -e ".[bench]"`'}
    out = bench_arrow_vs_gdsc.series(sizes["arrow_nodes"], FACTORS, repeat=sizes["arrow_repeat"])
    return {**out, "factors": list(FACTORS), "repeat": sizes["arrow_repeat"]}


def _sensor(sizes: dict) -> dict:
    series = bench_sensor_tick.tick_series(sizes["sensor_sizes"], sizes["sensor_repeats"])
    return {"series": series, "goal_tick_s": 1.0, "repeats": sizes["sensor_repeats"]}


def _cypher(sizes: dict) -> dict:
    if (why := bench_cypher_loader.unavailable()) is not None:
        return {"skipped": why}
    return bench_cypher_loader.run(sizes["cypher_people"], repeat=sizes["cypher_repeat"],
                                   warmup=sizes["cypher_warmup"])


def measure(quick: bool, only: set[str] | None = None) -> dict:
    sizes = QUICK if quick else FULL
    sections = {
        "embedded": lambda: _embedded(sizes),
        "arrow": lambda: _arrow(sizes),
        "latency": lambda: bench_latency.run(sizes["latency_drops"], sizes["latency_people"], sizes["scan_interval"]),
        "sensor": lambda: _sensor(sizes),
        "cypher": lambda: _cypher(sizes),
        "labels": lambda: bench_labels.measure(),  # 40 labels vs one, the embedded target's default sizes
    }
    started = time.perf_counter()
    results: dict = {"machine": {**machine(), "loadavg_before": [round(x, 1) for x in os.getloadavg()]}}
    for name, func in sections.items():
        if only is None or name in only:
            results[name] = _section(name, func)
    results["machine"]["loadavg_after"] = [round(x, 1) for x in os.getloadavg()]
    results["machine"]["duration_s"] = round(time.perf_counter() - started)
    results["machine"]["command"] = "benchmarks/report.py" + (" --quick" if quick else "")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run of ~2-3 min")
    parser.add_argument("--only", help="comma-separated sections: embedded,arrow,latency,sensor,cypher,labels")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--render-only", action="store_true", help="re-render from results.json next to --out")
    args = parser.parse_args()
    data = args.out.parent / "results.json"
    if args.render_only:
        results = json.loads(data.read_text())
    elif args.only:  # re-measure some sections; the others keep their numbers (each section says when it ran)
        results = json.loads(data.read_text()) if data.exists() else {}
        fresh = measure(args.quick, set(args.only.split(",")))
        results.update({k: v for k, v in fresh.items() if k != "machine"})
        results.setdefault("machine", fresh["machine"])
        data.write_text(json.dumps(results, indent=1) + "\n")
    else:
        results = measure(args.quick)
        data.write_text(json.dumps(results, indent=1) + "\n")
    print(render(results, args.out))


if __name__ == "__main__":
    main()
