"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder, ``pg_ctl start`` on a
Unix socket there (no TCP port), a fresh database per test, stopped at the end of the session.

Debian's ``postgresql`` package (installed by ``.ci/run``) keeps the server programs in
``/usr/lib/postgresql/<version>/bin``. Where they are missing the PostgreSQL tests are skipped with the
reason, except where ``SERA_REQUIRE_POSTGRES`` is set (CI sets it): there they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_databases = itertools.count()


def server_programs() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def unavailable(reason: str) -> None:
    if os.environ.get("SERA_REQUIRE_POSTGRES"):
        pytest.fail(f"PostgreSQL is required here (SERA_REQUIRE_POSTGRES) but {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason} (apt-get install postgresql; .ci/run does)")


class Server:
    """A running cluster; ``database()`` gives the URL of a new, empty database on it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="sera-pg-"))
        # initdb refuses to run as root: as root, the cluster belongs to the postgres user (Debian's package creates it)
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "sera", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-o",
                  f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=50", "start")  # fmt: skip

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.run_as, str(self.bin / program), *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}")

    def url(self, name: str = "postgres") -> str:
        return f"postgresql://sera@/{name}?host={self.folder}"

    def database(self) -> str:
        import psycopg

        name = f"test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    bin_dir = server_programs()
    if bin_dir is None:
        unavailable("the server programs (initdb, pg_ctl) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    server = Server(bin_dir)
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Server) -> str:
    """A new, empty database on the session's server."""
    return postgres_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a database goes, once per engine: a SQLite file, or a fresh database on the session's server."""
    if request.param == "sqlite":
        return tmp_path / "sera.db"
    return request.getfixturevalue("postgres_url")
