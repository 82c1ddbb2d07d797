"""A real PostgreSQL server for tests: Debian's `postgresql` package (binaries under /usr/lib/postgresql/*/bin),
`initdb` on a temporary folder, `postgres` on a free loopback port, stopped by its pid.

Skipped with the reason when the binaries are missing, unless BLUEGREEN_REQUIRE_POSTGRES=1 (CI), where that fails.
PostgreSQL refuses to run as root; as root the server runs as the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

REQUIRE_ENV = "BLUEGREEN_REQUIRE_POSTGRES"
USER = "bluegreen"
PASSWORD = "pg-test-secret"
DATABASE = "dagster"


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def instance_home(self, folder: Path, extra: str = "") -> Path:
        """`folder` made a Dagster home whose instance is this server (`instance_yaml`); returns it."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dagster.yaml").write_text(self.instance_yaml(extra))
        return folder

    def instance_yaml(self, extra: str = "") -> str:
        """dagster.yaml with this server as run, event log and schedule storage (password from $PGPASSWORD)."""
        return (f"storage:\n  postgres:\n    postgres_db:\n      username: {self.user}\n"
                f"      password:\n        env: PGPASSWORD\n      hostname: {self.host}\n"
                f"      db_name: {self.database}\n      port: {self.port}\n" + extra)


def sqlite_or_postgres_home(request: pytest.FixtureRequest, folder: Path,
                            monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Postgres | None]:
    """A Dagster home at `folder` for a fixture parametrized "sqlite" / "postgres": SQLite storage by default, the
    test PostgreSQL server (the `postgres` fixture) for "postgres"; with that server, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    if request.param != "postgres":
        return folder, None
    pg: Postgres = request.getfixturevalue("postgres")
    monkeypatch.setenv("PGPASSWORD", pg.password)
    return pg.instance_home(folder), pg


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _skip_or_fail(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)")
    pytest.skip(reason)


@contextmanager
def start_postgres() -> Iterator[Postgres]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        _skip_or_fail("PostgreSQL is not installed (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="bluegreen-pg-"))
    data = root / "data"
    as_user = None
    if os.geteuid() == 0:
        try:
            as_user = pwd.getpwnam("postgres")
        except KeyError:
            _skip_or_fail("running as root and there is no `postgres` user to run PostgreSQL as")
        os.chown(root, as_user.pw_uid, as_user.pw_gid)
    popen_user = {"user": as_user.pw_uid, "group": as_user.pw_gid} if as_user else {}
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD)
    if as_user:
        os.chown(pwfile, as_user.pw_uid, as_user.pw_gid)
    subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(pwfile),
                    "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, cwd=root,
                   **popen_user)
    port = free_port()
    log = open(root / "postgres.log", "wb")
    proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                             "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True, **popen_user)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start: " + (root / "postgres.log").read_text()[-2000:])
                time.sleep(0.1)
        _create_database(port)
        yield Postgres("127.0.0.1", port, USER, PASSWORD, DATABASE)
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _create_database(port: int) -> None:
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres")
            break
        except psycopg2.OperationalError:  # still starting up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {DATABASE}")
    conn.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with start_postgres() as pg:
        yield pg
