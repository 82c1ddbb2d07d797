"""Start both stand-in servers (Bolt and GDS Arrow Flight) on free loopback ports around one shared Dbms.

    with start_standin(password="s3cret") as standin:
        driver = neo4j.GraphDatabase.driver(standin.bolt_uri, auth=("neo4j", "s3cret"))
        client = pyarrow.flight.FlightClient(standin.arrow_uri)
        standin.dbms.faults.reject_batch = 2

Both servers run in threads of this process and are stopped (connections closed, threads joined) on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .bolt_server import BoltServer
from .dbms import Dbms
from .flight_server import GdsArrowServer
from .persistence import DataDir


@dataclass
class Standin:
    dbms: Dbms
    bolt: BoltServer
    arrow: GdsArrowServer | None
    host: str = "127.0.0.1"

    @property
    def bolt_port(self) -> int:
        return self.bolt.port

    @property
    def arrow_port(self) -> int:
        if self.arrow is None:
            raise RuntimeError("this stand-in was started without the Arrow server (arrow=False)")
        return self.arrow.port

    @property
    def bolt_uri(self) -> str:
        return f"bolt://{self.host}:{self.bolt_port}"

    @property
    def arrow_uri(self) -> str:
        return f"grpc+tcp://{self.host}:{self.arrow_port}"

    def neo4j_settings(self) -> dict[str, Any]:
        """The `neo4j:` config section pointing at this stand-in."""
        return {"host": self.host, "bolt_port": self.bolt_port,
                "arrow_port": self.arrow.port if self.arrow else 1, "user": self.dbms.user,
                "password": self.dbms.password}


@contextmanager
def start_standin(password: str = "password", user: str = "neo4j", edition: str = "enterprise",
                  arrow: bool = True, telemetry_hint: bool = True, bolt_port: int = 0, arrow_port: int = 0,
                  listen: str = "127.0.0.1", data_dir: str | None = None,
                  **dbms_options: Any) -> Iterator[Standin]:
    """Yield a running stand-in. `arrow=False` starts no Flight server (like Neo4j without GDS Arrow). `listen`:
    the address both servers bind (0.0.0.0 in a container of the stack tests, tests/stack/). `data_dir`: keep
    the committed state there and start from what it holds (persistence.py); None keeps it in memory only."""
    dbms = Dbms(user=user, password=password, edition=edition, **dbms_options)
    if data_dir is not None:
        dbms.data_dir = DataDir(data_dir)
        dbms.data_dir.load(dbms)
    standin = Standin(dbms, BoltServer(dbms, host=listen, port=bolt_port, telemetry_hint=telemetry_hint).start(), None)
    try:
        if arrow:
            standin.arrow = GdsArrowServer(dbms, host=listen, port=arrow_port).start()
        yield standin
    finally:
        dbms.release.set()  # a connection held at a kill point (hold_at_batch) must not keep stop() waiting
        # The servers running now: a test may have replaced one (a restart on the same port).
        try:
            if standin.arrow is not None:
                standin.arrow.stop()
        finally:
            standin.bolt.stop()
