"""`bluegreen`: the small command line around the Dagster project.

    bluegreen demo                      demo data + `dagster dev` on the embedded target
    bluegreen demo-data                 write demo snapshots for a few customers
    bluegreen simulate-snapshot -c X    drop one new snapshot for customer X, atomically
    bluegreen status [--json] [--wide]  alias target, its age and retained databases per customer
    bluegreen check                     preflight: config, target health, snapshots found (exit 1 on a problem)
    bluegreen register CUSTOMER TS      add a snapshot's partition (no dagster command can), print how to run it
    bluegreen load CUSTOMER TS          register, submit a load_snapshot run through the run queue, show its progress
    bluegreen trigger CUSTOMER TS       the same as `load` (its older name)
    bluegreen metrics                   Prometheus exporter: `status` facts plus loads, runs and sensor ticks
    bluegreen doctor                    one PASS/FAIL/SKIP line per part of the deployment (exit 1 on a failure)
    bluegreen rollback CUSTOMER         move the alias back to a retained, verified database [--to DB] [--pin]
    bluegreen unpin CUSTOMER            clear a pin: the next snapshot switches as usual

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
import uuid
from pathlib import Path

from rich.console import Console

from bluegreen_dagster.config import ConfigError, config_path, dagster_home
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.doctor import HEARTBEAT_MAX_AGE
from bluegreen_dagster.names import InvalidName, SnapshotError, partition_key
from bluegreen_dagster.records import ALLOW_SHRINK_TAG
from bluegreen_dagster.resources import Resources, load_resources
from bluegreen_dagster.snapshots import Snapshot, scan, snapshot_at
from bluegreen_dagster.status import collect_status, print_status
from bluegreen_dagster.targets import TargetError

console = Console(stderr=True, soft_wrap=True)  # messages hold paths and keys: never broken inside them
DEMO_CUSTOMERS = ("acme-corp", "globex", "initech")
ASSET_SELECTION = "health_check,snapshot_database,alias_switch,cleanup"


INSTANCE_TEMPLATE = Path(__file__).parent / "dagster_instance.yaml"


def instance_yaml(max_concurrent_loads: int) -> str:
    """Our instance settings, with the load pool's default limit set to `orchestrator.max_concurrent_loads`."""
    text = INSTANCE_TEMPLATE.read_text()
    marker = "default_limit: 1  # = orchestrator.max_concurrent_loads"
    if marker not in text:
        raise AssertionError(f"{INSTANCE_TEMPLATE} lost its pool default_limit line")
    return text.replace(marker, f"default_limit: {max_concurrent_loads}  # = orchestrator.max_concurrent_loads")


def prepare_dagster_home(max_concurrent_loads: int = 1) -> Path:
    """`config.dagster_home()`, created with our instance settings if new, and exported for Dagster."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    instance_file = home / "dagster.yaml"
    if not instance_file.exists():
        instance_file.write_text(instance_yaml(max_concurrent_loads))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# --------------------------------------------------------------------------------------------------------------
# status


def cmd_status(args: argparse.Namespace, resources: Resources) -> int:
    from bluegreen_dagster.pins import pins
    from bluegreen_dagster.snapshots import customers

    live = resources.initialized()
    with _instance(resources) as instance:
        pinned = pins(instance, list(customers(live.pipeline.base)))
    rows = collect_status(live.pipeline.base, live.target, pins=pinned)
    if args.json:
        print(json.dumps({"target": live.target.kind, "customers": [r.as_dict() for r in rows]}, indent=2))
        return 0
    print_status(Console(), rows, live.target.kind, wide=args.wide)
    return 0


def cmd_check(args: argparse.Namespace, resources: Resources) -> int:
    """Preflight for a new deployment: what the pipeline will see, and every problem in one place."""
    settings = resources.settings
    out = Console(soft_wrap=True)  # no line breaks inside paths and problems: they stay whole to copy
    out.print(f"config {config_path().resolve()}: valid, target [bold]{settings.target}[/]")
    found = scan(settings.dataset.base_path, settings.orchestrator.settle_seconds)
    out.print(f"snapshots under {settings.dataset.base_path}: {len(found.complete)} complete, "
              f"{len(found.waiting)} waiting, {len(found.invalid)} invalid")
    problems = [f"{path}: {why}" for path, why in found.invalid.items()]
    try:
        with resources.initialized().target.open() as target:
            health = target.health()
    except (TargetError, ConfigError) as exc:
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


def cmd_demo_data(args: argparse.Namespace, resources: Resources) -> int:
    base = resources.settings.dataset.base_path
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


def cmd_simulate(args: argparse.Namespace, resources: Resources) -> int:
    ts = args.timestamp or int(time.time())
    path = write_snapshot(resources.settings.dataset.base_path, args.customer, ts, people=args.people,
                          success_marker=not args.no_success_marker)
    console.print(f"dropped snapshot {path} (partition {partition_key(args.customer, ts)})")
    return 0


# --------------------------------------------------------------------------------------------------------------
# Dagster


def _instance(resources: Resources):
    import dagster as dg

    from bluegreen_dagster.concurrency import sync_pool_limit

    prepare_dagster_home(resources.settings.orchestrator.max_concurrent_loads)
    instance = dg.DagsterInstance.get()
    sync_pool_limit(instance, resources.settings.orchestrator.max_concurrent_loads)
    return instance


def _register(args: argparse.Namespace, resources: Resources) -> Snapshot:
    from bluegreen_dagster.partitions import snapshot_partitions

    snap = snapshot_at(resources.settings.dataset.base_path, args.customer, args.timestamp)
    if not snap.path.is_dir():
        raise FileNotFoundError(f"no snapshot folder at {snap.path}")
    with _instance(resources) as instance:
        if instance.has_dynamic_partition(snapshot_partitions.name, snap.key):
            console.print(f"partition {snap.key} already registered")
        else:
            instance.add_dynamic_partitions(snapshot_partitions.name, [snap.key])
            console.print(f"registered partition {snap.key}")
    return snap


def workspace_file(args: argparse.Namespace) -> Path:
    if getattr(args, "workspace", None):
        return Path(args.workspace)
    here = Path("workspace.yaml")
    return here if here.is_file() else config_path().resolve().parent / "workspace.yaml"


def launch_command(snap: Snapshot, run_id: str, workspace: Path, allow_shrink: bool = False) -> list[str]:
    """`dagster job launch`: the run goes through the instance's run coordinator, i.e. the queue and its
    per-customer limit, like the sensor's runs."""
    tags = {"dagster/partition": snap.key, "customer": snap.id.customer}
    if allow_shrink:
        tags[ALLOW_SHRINK_TAG] = "true"
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    return [dagster, "job", "launch", "-w", str(workspace), "-j", "load_snapshot", "--run-id", run_id,
            "--tags", json.dumps(tags)]


def cmd_register(args: argparse.Namespace, resources: Resources) -> int:
    snap = _register(args, resources)
    console.print("run it with:\n  DAGSTER_HOME=" + os.environ["DAGSTER_HOME"] + " bluegreen load "
                  + f"{snap.id.customer} {snap.id.timestamp}")
    return 0


def cmd_load(args: argparse.Namespace, resources: Resources) -> int:
    """`bluegreen load` (and `trigger`): the one way the CLI submits a load. It needs the instance and the
    workspace, not a webserver: the partition is added to the instance and the run goes through the instance's
    run queue with `dagster job launch`, like the sensor's runs. While it waits it follows the run's event log."""
    import dagster as dg

    from bluegreen_dagster.progress import RunDisplay, watch_run

    snap = _register(args, resources)
    run_id = str(uuid.uuid4())
    done = subprocess.run(launch_command(snap, run_id, workspace_file(args), args.allow_shrink),
                          capture_output=True, text=True)
    if done.returncode != 0:
        console.print(done.stdout[-2000:] + done.stderr[-3000:])
        raise RuntimeError(f"could not submit the run for {snap.key} (dagster job launch exited {done.returncode})")
    console.print(f"submitted run {run_id} for {snap.key} to the run queue")
    if args.no_wait:
        return 0
    with dg.DagsterInstance.get() as instance, RunDisplay(console, run_id) as display:
        status = watch_run(instance, run_id, display, timeout=args.timeout)
    if status is None:
        console.print(f"run {run_id} not finished after {args.timeout:g}s; it continues (see the UI)")
        return 1
    console.print(f"run {run_id} {status.value.lower()}")
    return 0 if status == dg.DagsterRunStatus.SUCCESS else 1


def cmd_demo(args: argparse.Namespace, resources: Resources) -> int:
    settings = resources.settings
    if settings.target == "embedded" and not any(scan(settings.dataset.base_path, 0).complete):
        cmd_demo_data(argparse.Namespace(customers=list(DEMO_CUSTOMERS), snapshots=1, people=args.people), resources)
    home = prepare_dagster_home(settings.orchestrator.max_concurrent_loads)
    workspace = config_path().resolve().parent / "workspace.yaml"
    console.print(f"[bold]Dagster UI:[/] http://{args.host}:{args.port}   DAGSTER_HOME={home}\n"
                  "Drop a new snapshot from another terminal:  .venv/bin/bluegreen simulate-snapshot --customer acme-corp\n"
                  "Then watch the run in the UI (Runs) and check:  .venv/bin/bluegreen status")
    dagster = shutil.which("dagster") or str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    os.execv(command[0], command)
    return 0  # not reached


def cmd_rollback(args: argparse.Namespace, resources: Resources) -> int:
    """Move the alias back now, on this host, under the customer's lock (the `rollback` job does the same in the UI)."""
    from bluegreen_dagster.rollback import RollbackRefused, rollback

    live = resources.initialized()
    with _instance(resources) as instance, live.target.open() as graph:
        try:
            result = rollback(instance, graph, live.pipeline.base, args.customer, to=args.to, pin=args.pin,
                              reason=args.reason, on_wait=console.print)
        except RollbackRefused as exc:
            console.print(f"[red]rollback refused:[/] {exc}")
            return 1
    console.print(result.describe())
    return 0


def cmd_unpin(args: argparse.Namespace, resources: Resources) -> int:
    from bluegreen_dagster.rollback import unpin

    live = resources.initialized()
    with _instance(resources) as instance, live.target.open() as graph:
        _, text = unpin(instance, graph, args.customer)
    console.print(text)
    return 0


def cmd_metrics(args: argparse.Namespace, resources: Resources) -> int:
    from bluegreen_dagster.metrics import serve

    serve(resources.initialized(), args.port, args.host)
    return 0


def cmd_doctor(args: argparse.Namespace, resources: None) -> int:
    from bluegreen_dagster.doctor import Options, run_doctor

    return run_doctor(Options(webserver_url=args.webserver_url, heartbeat_max_age=args.heartbeat_max_age,
                              timeout=args.timeout))


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
    p.add_argument("--wide", action="store_true", help="also the path (or URI) a reader opens")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("check", help="preflight: config, target reachable and healthy, snapshots found")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("register", help="add a snapshot's dynamic partition")
    p.add_argument("customer")
    p.add_argument("timestamp")
    p.set_defaults(func=cmd_register)

    for name, text in (("load", "add a snapshot's partition, run it through the run queue, show its progress"),
                       ("trigger", "the same as `load` (from a machine without this instance: trigger.py's "
                                   "trigger_load over the webserver's GraphQL API)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("customer")
        p.add_argument("timestamp")
        p.add_argument("--workspace", help="workspace.yaml (default: ./workspace.yaml, else beside the config file)")
        p.add_argument("--no-wait", action="store_true", help="return once the run is queued")
        p.add_argument("--allow-shrink", action="store_true",
                       help="let this snapshot go live although it shrinks more than max_shrink_percent")
        p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the run (default 3600)")
        p.set_defaults(func=cmd_load)

    p = sub.add_parser("rollback", help="move a customer's alias back to a retained, verified database")
    p.add_argument("customer")
    p.add_argument("--to", help="the database to serve (default: the newest older one that is online and verifies)")
    p.add_argument("--pin", action="store_true", help="keep the alias there: newer snapshots load but do not switch")
    p.add_argument("--reason", default="", help="why; recorded with the rollback and the pin")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("unpin", help="clear a customer's pin; the next snapshot switches as usual")
    p.add_argument("customer")
    p.set_defaults(func=cmd_unpin)

    p = sub.add_parser("metrics", help="serve Prometheus metrics (alias age, loads, runs, sensor ticks) on /metrics")
    p.add_argument("--port", type=int, default=9108)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all: Prometheus scrapes it)")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("doctor", help="check every part of the deployment, one PASS/FAIL/SKIP line each")
    p.add_argument("--webserver-url", help="the webserver (default: alerts.dagster_webserver_url of config.yaml)")
    p.add_argument("--heartbeat-max-age", type=float, default=HEARTBEAT_MAX_AGE,
                   help=f"seconds after which a daemon heartbeat counts as stale (default {HEARTBEAT_MAX_AGE:g}; "
                        "it beats every 30)")
    p.add_argument("--timeout", type=float, default=5, help="seconds per network check (default 5)")
    p.set_defaults(func=cmd_doctor, own_config=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # doctor reads the config itself: an invalid one is one of its FAIL lines, not an error before it starts
        resources = None if getattr(args, "own_config", False) else load_resources()
        return args.func(args, resources)
    except (ConfigError, InvalidName, SnapshotError, TargetError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
