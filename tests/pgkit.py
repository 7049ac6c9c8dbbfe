"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temp dir, a free port.

``pg_server`` (session scope) starts one server; ``pg_url`` hands each test a fresh
empty database on it. Without PostgreSQL binaries the tests that need them skip
with the reason printed, except under CI (``CI=true``), where they fail instead.
As root, the server runs as the ``postgres`` user (``initdb`` refuses root).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT_S = 30


class PostgresUnavailable(RuntimeError):
    pass


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb); install them: apt-get install -y postgresql"
        )
    return Path(candidates[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgServer:
    """One running server; ``stop`` removes it and its files."""

    root: Path
    port: int
    bin_dir: Path
    run_as: str | None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, *, durable: bool = False) -> PgServer:
        """Start a server; ``durable`` keeps fsync on (benchmarks), tests turn it off."""
        bin_dir = _bin_dir()
        run_as = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        if run_as:
            entry = pwd.getpwnam(run_as)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server = cls(root, free_port(), bin_dir, run_as)
        data = root / "data"
        server._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--no-sync")  # fmt: skip
        options = [
            "-c", f"port={server.port}", "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={root}", "-c", "max_connections=300",
            "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        if not durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]  # fmt: skip
        server._run("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w",
                    "-t", str(START_TIMEOUT_S), "-o", " ".join(options), "start")  # fmt: skip
        return server

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresUnavailable(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip()[-800:]} {detail}"
            )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def unavailable(reason: str) -> None:
    """Skip with the reason printed; under CI a missing PostgreSQL is a failure."""
    message = f"PostgreSQL unavailable: {reason}"
    print(message)
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run the PostgreSQL tests)")
    pytest.skip(reason=message)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError, KeyError) as exc:
        unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """Each storage backend in turn, migrated: a contract test runs against both."""
    from bot.server.storage import open_database

    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    db = open_database(url, tmp_path / "data" / "sluice.db")
    yield db
    db.close()


@pytest.fixture
def reopen() -> Iterator[Callable[[Any], Any]]:
    """Opens a second handle on the same database, as another replica would; closes it after."""
    from bot.server.storage.postgres import PostgresDatabase
    from bot.server.storage.sqlite import SqliteDatabase

    opened: list[Any] = []

    def open_again(db: Any) -> Any:
        if isinstance(db, PostgresDatabase):
            handle: Any = PostgresDatabase(db._url)
        else:
            assert isinstance(db, SqliteDatabase)
            handle = SqliteDatabase(db.path)
        opened.append(handle)
        return handle

    yield open_again
    for handle in opened:
        handle.close()
