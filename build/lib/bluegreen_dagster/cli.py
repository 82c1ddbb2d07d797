"""`bluegreen`: the small command line around the Dagster project.

    bluegreen demo                      demo data + `dagster dev` on the embedded target
    bluegreen demo-data                 write demo snapshots for a few customers
    bluegreen simulate-snapshot -c X    drop one new snapshot for customer X, atomically
    bluegreen status [--json]           alias target, its age and retained databases per customer
    bluegreen check                     preflight: config, target health, snapshots found (exit 1 on a problem)
    bluegreen register CUSTOMER TS      add a snapshot's partition (no dagster command can), print how to run it
    bluegreen load CUSTOMER TS          register, then `dagster asset materialize` that partition
    bluegreen metrics                   Prometheus exporter of the same facts as `status`

Every command reads $BLUEGREEN_CONFIG (default ./config.yaml). Commands that use the Dagster instance default
DAGSTER_HOME to `.dagster_home` next to the config file, the same one `bluegreen demo` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bluegreen_dagster.config import ConfigError, Settings, config_path, load_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import (
    InvalidName,
    parse_partition_key,
    partition_key,
    scan,
    snapshot_at,
    validate_customer,
)
from bluegreen_dagster.targets import TargetError, make_target

console = Console(stderr=True)
DEMO_CUSTOMERS = ("acme-corp", "globex", "initech")
ASSET_SELECTION = "health_check,snapshot_database,alias_switch,cleanup"


def dagster_home(settings_file: Path) -> Path:
    """$DAGSTER_HOME, or `.dagster_home` beside the config file, created with our instance settings."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings_file.resolve().parent / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text((Path(__file__).parent / "dagster_instance.yaml").read_text())
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# --------------------------------------------------------------------------------------------------------------
# status


def collect_status(settings: Settings, now: float | None = None) -> list[dict]:
    """Per customer found under dataset.base_path: alias, its target and age, retained databases, reader path."""
    now = time.time() if now is None else now
    base = settings.dataset.base_path
    customers = []
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            customers.append(validate_customer(folder.name))
        except InvalidName:
            continue  # the sensor reports these
    rows = []
    with make_target(settings) as target:
        for customer in customers:
            current = target.alias_target(customer)
            try:
                sid = parse_partition_key(current) if current else None
            except InvalidName:
                sid = None  # an alias someone pointed at a database of their own
            created = sid.created_at if sid else None
            databases = sorted(target.list_databases(customer), key=lambda d: d.name)
            rows.append({
                "customer": customer,
                "alias": customer,
                "target_database": current,
                "snapshot_timestamp": sid.timestamp if sid else None,
                "age_seconds": round(now - created.timestamp()) if created else None,
                "databases": [{"name": d.name, "status": d.status} for d in databases],
                "reader": target.reader_location(customer),
            })
    return rows


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s" if minutes else f"{secs}s"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rows = collect_status(settings)
    if args.json:
        print(json.dumps({"target": settings.target, "customers": rows}, indent=2))
        return 0
    table = Table(title=f"bluegreen status ({settings.target} target)")
    for column in ("customer", "alias target", "age", "retained databases", "reader opens"):
        table.add_column(column, overflow="fold")  # never hide a database name behind an ellipsis
    for row in rows:
        retained = ", ".join(f"{d['name']}{'' if d['status'] == 'online' else ' (' + d['status'] + ')'}"
                             for d in row["databases"]) or "-"
        table.add_row(row["customer"], row["target_database"] or "[yellow]no alias yet[/]", _age(row["age_seconds"]),
                      retained, row["reader"] or "-")
    Console().print(table)
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Preflight for a new deployment: what the pipeline will see, and every problem in one place."""
    out = Console()
    out.print(f"config {config_path().resolve()}: valid, target [bold]{settings.target}[/]")
    found = scan(settings.dataset.base_path, settings.orchestrator.settle_seconds)
    out.print(f"snapshots under {settings.dataset.base_path}: {len(found.complete)} complete, "
              f"{len(found.waiting)} waiting, {len(found.invalid)} invalid")
    problems = [f"{path}: {why}" for path, why in found.invalid.items()]
    try:
        with make_target(settings) as target:
            health = target.health()
    except TargetError as exc:
        problems.append(str(exc))
    else:
        out.print("target health: " + ", ".join(f"{k}={v}" for k, v in health.measurements.items()))
        problems += health.problems
    for problem in problems:
        out.print(f"[red]problem:[/] {problem}")
    out.print("[green]ready[/]" if not problems else f"[red]{len(problems)} problem(s)[/]")
    return 1 if problems else 0


# --------------------------------------------------------------------------------------------------------------
# data


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    base = settings.dataset.base_path
    now = int(time.time())
    for customer in args.customers:
        for i in range(args.snapshots):
            ts = now - (args.snapshots - 1 - i) * 60
            snap = snapshot_at(base, customer, ts)
            if snap.path.exists():
                continue
            write_snapshot(base, customer, ts, people=args.people)
            console.print(f"wrote {snap.path} ({args.people:,} people)")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    ts = args.timestamp or int(time.time())
    path = write_snapshot(settings.dataset.base_path, args.customer, ts, people=args.people,
                          success_marker=not args.no_success_marker)
    console.print(f"dropped snapshot {path} (partition {partition_key(args.customer, ts)})")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Dagster


def _register(args: argparse.Namespace, settings: Settings) -> str:
    import dagster as dg

    from bluegreen_dagster.partitions import snapshot_partitions

    snap = snapshot_at(settings.dataset.base_path, args.customer, args.timestamp)
    if not snap.path.is_dir():
        raise FileNotFoundError(f"no snapshot folder at {snap.path}")
    dagster_home(config_path())
    with dg.DagsterInstance.get() as instance:
        if instance.has_dynamic_partition(snapshot_partitions.name, snap.key):
            console.print(f"partition {snap.key} already registered")
        else:
            instance.add_dynamic_partitions(snapshot_partitions.name, [snap.key])
            console.print(f"registered partition {snap.key}")
    return snap.key


def materialize_command(key: str) -> list[str]:
    return ["dagster", "asset", "materialize", "-m", "bluegreen_dagster.definitions",
            "--select", ASSET_SELECTION, "--partition", key]


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    key = _register(args, settings)
    console.print("run it with:\n  DAGSTER_HOME=" + os.environ["DAGSTER_HOME"] + " " + " ".join(materialize_command(key)))
    return 0


def cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    key = _register(args, settings)
    command = materialize_command(key)
    command[0] = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    return subprocess.call(command)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    if settings.target == "embedded" and not any(scan(settings.dataset.base_path, 0).complete):
        cmd_demo_data(argparse.Namespace(customers=list(DEMO_CUSTOMERS), snapshots=1, people=args.people), settings)
    home = dagster_home(config_path())
    workspace = config_path().resolve().parent / "workspace.yaml"
    console.print(f"[bold]Dagster UI:[/] http://{args.host}:{args.port}   DAGSTER_HOME={home}\n"
                  "Drop a new snapshot from another terminal:  .venv/bin/bluegreen simulate-snapshot --customer acme-corp\n"
                  "Then watch the run in the UI (Runs) and check:  .venv/bin/bluegreen status")
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    os.execv(command[0], command)
    return 0  # not reached


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    from bluegreen_dagster.metrics import serve

    serve(settings, args.port)
    return 0


# --------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bluegreen", description="Blue/green graph snapshot refreshes on Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write demo data if there is none, then start `dagster dev`")
    p.add_argument("--people", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("demo-data", help="write demo snapshots for a few customers")
    p.add_argument("--customers", type=lambda s: s.split(","), default=list(DEMO_CUSTOMERS))
    p.add_argument("--snapshots", type=int, default=1, help="snapshots per customer")
    p.add_argument("--people", type=int, default=5000, help="Person nodes per snapshot (x3 KNOWS, x1 WORKS_AT)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("simulate-snapshot", help="drop one new snapshot atomically")
    p.add_argument("--customer", "-c", required=True)
    p.add_argument("--people", type=int, default=5000)
    p.add_argument("--timestamp", type=int, default=None, help="default: now, as epoch seconds")
    p.add_argument("--no-success-marker", action="store_true", help="no _SUCCESS: completes after settle_seconds")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("status", help="alias target, age and retained databases per customer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="preflight: config, target reachable and healthy, snapshots found")
    p.set_defaults(func=cmd_check)

    for name, func, text in (("register", cmd_register, "add a snapshot's dynamic partition"),
                             ("load", cmd_load, "add a snapshot's partition and materialize it now")):
        p = sub.add_parser(name, help=text)
        p.add_argument("customer")
        p.add_argument("timestamp")
        p.set_defaults(func=func)

    p = sub.add_parser("metrics", help="serve Prometheus metrics (alias age, databases) on /metrics")
    p.add_argument("--port", type=int, default=9108)
    p.set_defaults(func=cmd_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return args.func(args, settings)
    except (ConfigError, InvalidName, TargetError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
