"""A Jepsen-style nemesis over the multi-host stack (tests/stack/test_docker_runs.py): a producer drops snapshots
of different sizes for three customers, readers count every alias's graph through Bolt, and the nemesis cuts run
containers off from PostgreSQL and from the target, pauses them mid-switch, kills them, kills the daemon and the
code location, restarts PostgreSQL and crashes and restarts the target mid-load. Everything seen is kept in a
`History`; `check` reads it whole and returns the violations and the one table the test prints (docs/hosts.md,
"The nemesis test")."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from tests.stack.compose import Stack
from tests.stack.docker import REPO
from tests.stack.images import APP_IMAGE

INSTANCE_NETWORK = "bluegreen-instance"  # deploy/docker-compose.docker-runs.yaml
TARGET_NETWORK = "bluegreen-target"
FAULTS = ["partition from PostgreSQL", "partition from the target", "partition from both",
          "pause mid-switch", "kill a run container", "kill the daemon", "restart PostgreSQL",
          "kill the code location", "restart the target mid-load"]
# Longer than every lock and heartbeat timeout: run monitoring's poll (15 s, deploy/dagster-docker.yaml) and the
# ~60 s after which PostgreSQL ends the session of a host that stopped answering (docs/concurrency.md).
HOLD_SECONDS = 75
# The documented bound (docs/hosts.md, "The nemesis test"): a snapshot newer than the live one is served or
# superseded within this long of its drop, faults included. It is the customer lock's wait timeout
# (bluegreen_dagster/concurrency.py), the longest any step waits for another.
BLOCKED_BOUND_SECONDS = 600.0


@dataclass
class Drop:
    customer: str
    timestamp: int
    nodes: int
    relationships: int
    time: float


@dataclass
class Injection:
    fault: str
    started: float
    ended: float = 0.0
    target: str = ""
    detail: str = ""


@dataclass
class History:
    drops: list[Drop] = field(default_factory=list)
    injections: list[Injection] = field(default_factory=list)
    moves: list[dict] = field(default_factory=list)  # the stand-in's alias log (tests/standin/alias_log.py)
    reads: list[dict] = field(default_factory=list)  # tests/stack/probe.py read
    runs: list[dict] = field(default_factory=list)  # GraphQL: runId, status, startTime, endTime, tags
    databases: list[dict] = field(default_factory=list)  # after reconcile: tests/stack/probe.py databases

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


class Producer(threading.Thread):
    """Drops a snapshot for one customer after another, each of a size no earlier snapshot of it had."""

    def __init__(self, stack: Stack, customers: list[str], history: History, every: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.stack, self.customers, self.history, self.every = stack, customers, history, every
        self.stop = threading.Event()
        self.random = random.Random(16)
        self.errors: list[str] = []

    def drop(self, customer: str) -> None:
        # Each size within 10 % of the customer's last one: even six refused or lost drops in a row shrink less
        # than the shrink gate's 50 % against the live snapshot, so every drop is one the pipeline must serve or
        # supersede, and the checker can hold it to that (a run seeing a 90 % shrink was rightly refused once).
        mine = [d.nodes for d in self.history.drops if d.customer == customer]
        near = range(1000, 3000, 7) if not mine else range(max(1000, int(mine[-1] * 0.9)),
                                                            min(3000, int(mine[-1] * 1.1)) + 1)
        people = self.random.choice([n for n in near if n not in mine])
        last = max((d.timestamp for d in self.history.drops if d.customer == customer), default=0)
        timestamp = max(int(time.time()), last + 1)
        counts = self.stack.drop_snapshot(customer, timestamp, people=people)
        self.history.drops.append(Drop(customer, timestamp, counts["nodes"], counts["relationships"], time.time()))

    def run(self) -> None:
        turn = 0
        while not self.stop.is_set():
            try:
                self.drop(self.customers[turn % len(self.customers)])
            except Exception as exc:  # noqa: BLE001 - e.g. the code location killed mid-copy: try the next turn
                self.errors.append(f"{time.time():.0f} {exc}")
            turn += 1
            self.stop.wait(self.every)


class Nemesis:
    """Injects the faults of FAULTS one after another until `deadline` (time.monotonic()), then heals all."""

    def __init__(self, stack: Stack, history: History, log: Callable[[str], None] = print) -> None:
        self.stack, self.history, self.log = stack, history, log
        self.docker = stack.docker

    # -- run containers ------------------------------------------------------------------------------------
    def workers(self) -> list[str]:
        return self.stack.run_containers()

    def worker_in_step(self, step: str, within: float) -> tuple[str | None, str]:
        """A running run container whose run has started `step` and not finished it, and that logged in the last
        30 s (not one an earlier fault left hanging), or any running one when none is seen within `within`
        seconds: (container, what it was doing)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for container in self.workers():
                logs = self.docker.run("logs", "--since", "30s", "--tail", "40", container, check=False, timeout=30)
                text = (logs.stdout + logs.stderr).decode(errors="replace")
                started = [i for i, line in enumerate(text.splitlines())
                           if step in line and "STEP_START" in line]
                done = [i for i, line in enumerate(text.splitlines())
                        if step in line and ("STEP_SUCCESS" in line or "STEP_FAILURE" in line)]
                if started and (not done or max(done) < max(started)):
                    return container, f"mid-{step}"
            time.sleep(0.3)
        workers = self.workers()
        return (workers[0], "mid-run") if workers else (None, "no run container")

    def run_of(self, container: str) -> str:
        out = self.docker.run("inspect", "-f", '{{ index .Config.Labels "dagster/run_id" }}', container,
                              check=False, timeout=30)
        return out.stdout.decode().strip()

    # -- the faults ----------------------------------------------------------------------------------------
    def partition(self, fault: str, networks: list[str], step: str) -> Injection:
        container, doing = self.worker_in_step(step, within=90)
        injection = Injection(fault, time.time(), detail=doing)
        if container is None:
            return injection
        injection.target = f"run {self.run_of(container)} (container {container[:12]})"
        for network in networks:
            self.docker.run("network", "disconnect", "-f", network, container, check=False, timeout=60)
        time.sleep(HOLD_SECONDS)
        for network in networks:
            self.docker.run("network", "connect", network, container, check=False, timeout=60)
        return injection

    def pause(self) -> Injection:
        container, doing = self.worker_in_step("alias_switch", within=120)
        injection = Injection("pause mid-switch", time.time(), detail=doing)
        if container is None:
            return injection
        injection.target = f"run {self.run_of(container)} (container {container[:12]})"
        self.docker.run("pause", container, check=False, timeout=60)
        time.sleep(HOLD_SECONDS)
        self.docker.run("unpause", container, check=False, timeout=60)
        return injection

    def kill_worker(self) -> Injection:
        container, doing = self.worker_in_step("snapshot_database", within=90)
        injection = Injection("kill a run container", time.time(), detail=doing)
        if container is not None:
            injection.target = f"run {self.run_of(container)} (container {container[:12]})"
            self.docker.run("kill", container, check=False, timeout=60)
        return injection

    def kill_service(self, fault: str, service: str) -> Injection:
        container = self.stack.container(service)
        injection = Injection(fault, time.time(), target=f"{service} (container {container[:12]})")
        self.docker.run("kill", container, check=False, timeout=60)
        time.sleep(5)
        self.docker.run("start", container, check=False, timeout=120)  # a killed container is not restarted
        return injection

    def restart_postgres(self) -> Injection:
        container = self.stack.container("postgres")
        held = len(self.workers())
        injection = Injection("restart PostgreSQL", time.time(), target=f"postgres (container {container[:12]})",
                              detail=f"{held} run containers running")
        self.docker.run("restart", "-t", "2", container, check=False, timeout=120)
        return injection

    def restart_target(self) -> Injection:
        """The target killed (a crash: no shutdown) while a run streams a load into it, and started again 5 s
        later from its data directory (the `standin-data` volume): the load's connections break, and everything
        the target had committed must come back."""
        container, doing = self.worker_in_step("snapshot_database", within=90)
        target = self.stack.container("neo4j")
        injection = Injection("restart the target mid-load", time.time(), target=f"neo4j (container {target[:12]})",
                              detail=f"{doing} of run {self.run_of(container)}" if container else doing)
        self.docker.run("kill", target, check=False, timeout=60)
        time.sleep(5)
        self.docker.run("start", target, check=False, timeout=120)  # a killed container is not restarted
        return injection

    def inject(self, fault: str) -> Injection:
        if fault == "partition from PostgreSQL":
            return self.partition(fault, [INSTANCE_NETWORK], "snapshot_database")
        if fault == "partition from the target":
            return self.partition(fault, [TARGET_NETWORK], "alias_switch")
        if fault == "partition from both":
            return self.partition(fault, [INSTANCE_NETWORK, TARGET_NETWORK], "snapshot_database")
        if fault == "pause mid-switch":
            return self.pause()
        if fault == "kill a run container":
            return self.kill_worker()
        if fault == "kill the daemon":
            return self.kill_service(fault, "daemon")
        if fault == "kill the code location":
            return self.kill_service(fault, "bluegreen-code")
        if fault == "restart the target mid-load":
            return self.restart_target()
        return self.restart_postgres()

    def run(self, deadline: float, gap: float = 10.0) -> None:
        turn = 0
        while turn < len(FAULTS) or time.monotonic() + 20 < deadline:  # every fault at least once
            fault = FAULTS[turn % len(FAULTS)]
            turn += 1
            injection = self.inject(fault)
            injection.ended = time.time()
            self.history.injections.append(injection)
            self.log(f"{fault}: {injection.target or '-'} {injection.detail} "
                     f"({injection.ended - injection.started:.0f}s)")
            time.sleep(gap)
        self.heal()

    def heal(self) -> None:
        """Every run container unpaused and on both networks; every service of the stack running."""
        for container in self.stack.run_containers(all=True):
            self.docker.run("unpause", container, check=False, timeout=60)
            for network in (INSTANCE_NETWORK, TARGET_NETWORK):
                self.docker.run("network", "connect", network, container, check=False, timeout=60)
        for service in ("postgres", "neo4j", "bluegreen-code", "webserver", "daemon"):
            self.docker.run("start", self.stack.container(service), check=False, timeout=120)


def start_reader(stack: Stack, customers: list[str]) -> str:
    """A reader host on the target's network, counting each alias's graph (tests/stack/probe.py read)."""
    out = stack.docker.run("run", "-d", "--network", TARGET_NETWORK, "--label", "bluegreen/nemesis-reader=true",
                           "-e", f"NEO4J_PASSWORD={stack.env['NEO4J_PASSWORD']}", "-v",
                           f"{REPO / 'tests'}:/opt/bluegreen/tests:ro", "-w", "/opt/bluegreen", APP_IMAGE,
                           "python3", "-m", "tests.stack.probe", "read", *customers)
    return out.stdout.decode().strip()


def probe_databases(stack: Stack) -> list[dict]:
    out = stack.docker.run("run", "--rm", "--network", TARGET_NETWORK,
                           "-e", f"NEO4J_PASSWORD={stack.env['NEO4J_PASSWORD']}", "-v",
                           f"{REPO / 'tests'}:/opt/bluegreen/tests:ro", "-w", "/opt/bluegreen", APP_IMAGE,
                           "python3", "-m", "tests.stack.probe", "databases", timeout=300)
    return [json.loads(line) for line in out.stdout.decode().splitlines() if line.startswith("{")]


def json_lines(text: bytes) -> list[dict]:
    return [json.loads(line) for line in text.decode(errors="replace").splitlines() if line.startswith("{")]


# -- the checker ---------------------------------------------------------------------------------------------

@dataclass
class Violation:
    rule: str
    time: float
    evidence: str


def _snapshot(database: str | None, customer: str) -> int | None:
    prefix = f"{customer}-"
    if not database or not database.startswith(prefix) or not database[len(prefix):].isdigit():
        return None
    return int(database[len(prefix):])


def check(history: History, customers: list[str]) -> tuple[list[Violation], list[dict]]:
    """The violations in the whole history, and the table's rows (fault, injected, violations, longest
    unavailability, recovery)."""
    violations: list[Violation] = []
    drops = {(d.customer, d.timestamp): d for d in history.drops}
    moves_of = {c: [m for m in history.moves if m["alias"] == c] for c in customers}

    for customer in customers:
        highest = None
        for move in moves_of[customer]:
            ts = _snapshot(move["database"], customer)
            drop = drops.get((customer, ts)) if ts is not None else None
            if move["database"] is None:
                if highest is not None:
                    violations.append(Violation("alias disappeared after serving", move["time"], json.dumps(move)))
                continue
            if drop is None or (move["nodes"], move["relationships"]) != (drop.nodes, drop.relationships) \
                    or move["status"] != "online":
                expected = f"{drop.nodes} nodes/{drop.relationships} relationships" if drop else "no such snapshot"
                violations.append(Violation("alias served an unverified database", move["time"],
                                            f"{json.dumps(move)}; snapshot: {expected}"))
            if highest is not None and ts is not None and ts < highest:
                violations.append(Violation("alias moved to an older snapshot", move["time"],
                                            f"{json.dumps(move)}; it had served {customer}-{highest}"))
            if ts is not None:
                highest = max(highest or ts, ts)

        # Every drop newer than what was live when it landed: served or superseded, within the bound.
        for drop in (d for d in history.drops if d.customer == customer):
            live_then = [_snapshot(m["database"], customer) for m in moves_of[customer] if m["time"] <= drop.time]
            if live_then and live_then[-1] is not None and live_then[-1] >= drop.timestamp:
                continue
            later = [m for m in moves_of[customer] if m["time"] >= drop.time
                     and (_snapshot(m["database"], customer) or 0) >= drop.timestamp]
            if not later:
                violations.append(Violation("dropped snapshot never served nor superseded", drop.time,
                                            f"{customer}-{drop.timestamp} dropped at {drop.time:.1f}"))
            elif later[0]["time"] - drop.time > BLOCKED_BOUND_SECONDS:
                violations.append(Violation("customer blocked longer than the bound", drop.time,
                                            f"{customer}-{drop.timestamp} dropped at {drop.time:.1f}, served or "
                                            f"superseded {later[0]['time'] - drop.time:.0f}s later "
                                            f"(bound {BLOCKED_BOUND_SECONDS:.0f}s)"))

        # Once served, the alias exists for every reader: a failed read is unavailability (a broken connection,
        # a target restarting), but "no such database" means the alias itself was lost, e.g. by a target that
        # came back from a restart without it (the alias log of the new process would show nothing).
        served = next((m["time"] for m in moves_of[customer] if m["database"]), None)
        for read in (r for r in history.reads if r["customer"] == customer and "error" in r):
            if served is not None and read["time"] > served and "DatabaseNotFound" in read["error"]:
                violations.append(Violation("alias disappeared after serving", read["time"], json.dumps(read)))

        # Every read a whole snapshot of that customer.
        sizes = {(d.nodes, d.relationships) for d in history.drops if d.customer == customer}
        for read in (r for r in history.reads if r["customer"] == customer and "nodes" in r):
            if (read["nodes"], read["relationships"]) not in sizes:
                violations.append(Violation("a reader read an incomplete snapshot", read["time"], json.dumps(read)))

    # No partial database once the nemesis stopped and reconcile ran.
    for database in history.databases:
        customer = next((c for c in customers if database["name"].startswith(f"{c}-")), None)
        if customer is None:
            continue
        drop = drops.get((customer, _snapshot(database["name"], customer)))
        if drop is None or (database["nodes"], database["relationships"]) != (drop.nodes, drop.relationships):
            violations.append(Violation("partial database left after reconcile", time.time(), json.dumps(database)))

    return violations, table(history, customers, violations)


def outages(history: History, customers: list[str]) -> list[tuple[float, float]]:
    """(start, end) of every streak of failed reads of one customer, after its alias first served."""
    spans = []
    for customer in customers:
        first = next((m["time"] for m in history.moves if m["alias"] == customer and m["database"]), None)
        if first is None:
            continue
        start = last = None
        for read in sorted((r for r in history.reads if r["customer"] == customer and r["time"] > first),
                           key=lambda r: r["time"]):
            if "error" in read:
                start = read["time"] if start is None else start
                last = read["time"]
            elif start is not None:
                spans.append((start, read["time"]))
                start = None
        if start is not None:
            spans.append((start, last))
    return spans


def table(history: History, customers: list[str], violations: list[Violation]) -> list[dict]:
    spans = outages(history, customers)
    move_times = sorted(m["time"] for m in history.moves if m["database"])
    rows = []
    for fault in FAULTS:
        injected = [i for i in history.injections if i.fault == fault]
        windows = [(i.started, (later[0].started if (later := [j for j in history.injections
                                                                  if j.started > i.started]) else float("inf")))
                   for i in injected]
        mine = [v for v in violations if any(a <= v.time < b for a, b in windows)]
        longest = max((end - start for start, end in spans for i in injected
                       if start < (i.ended + 120) and end > i.started), default=0.0)
        recoveries = [next((t - i.ended for t in move_times if t >= i.ended), None) for i in injected]
        known = [r for r in recoveries if r is not None]
        rows.append({"fault": fault, "injected": len(injected), "violations": len(mine),
                     "longest unavailability (s)": round(longest, 1),
                     "recovery (s)": round(max(known), 1) if known else None})
    return rows


def format_table(rows: list[dict]) -> str:
    headers = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in headers]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(r[h] if r[h] is not None else "-").ljust(w) for h, w in zip(headers, widths))
              for r in rows]
    return "\n".join(lines)
