"""Where sera keeps its rows: one database per process, shared by every store, with one way to write.

Two engines behind the same small interface. **SQLite** (the default, embedded: a file, nothing to run)
in WAL mode, so readers never wait on the writer; ``synchronous=FULL``, so a committed row (an analysis,
an opt-out, a ``/forget``) survives a power cut, not only a crash (sera commits a few rows a second at
most, so the extra fsync is cheap); ``secure_delete``, so deleted rows are overwritten, not left readable
in free pages. **PostgreSQL** (``discord.database: postgresql://...``, through psycopg 3) for bots whose
processes run on several machines: they cannot share one SQLite file.

Stores write portable SQL: ``?`` placeholders, ``ON CONFLICT``, ``RETURNING``; the few words the
engines spell differently (an auto-increment key, a 64-bit integer, a float, a row lock) come from the
engine (``types``, ``for_update``). The schema is versioned per component (``migrate``): a component
lists its migrations in order, each database records how far it got, and ``sera db upgrade`` (or opening
a store) applies the rest, one transaction each.

Every write goes through ``transaction``: it commits, or it rolls back and raises ``StorageError``.
A failed write (another process holding the lock past the busy timeout, a full disk, a lost server)
therefore never leaves the shared connection inside an open transaction, where every later write would
silently wait for a commit that never comes and be lost at restart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from sera.errors import SeraError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_SECONDS = 5.0
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StorageError(SeraError):
    """The database refused a read or write; nothing of that write was kept."""


class Connection(Protocol):
    """What stores use inside ``read`` and ``transaction``: sqlite3's connection API, ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...


class HoldsUserData(Protocol):
    """A store that keeps rows about a person registers itself (``Database.holds_user_data``), so that
    ``/forget`` and retention reach it without anyone listing the stores by hand."""

    def delete_user_data(self, tx: Connection, user: str) -> dict[str, int]:
        """Inside ``tx``: delete what this store keeps about ``user``; return counts by kind."""
        ...

    def delete_expired(self, tx: Connection, cutoff: float) -> dict[str, int]:
        """Inside ``tx``: delete what this store keeps from before ``cutoff`` (Unix time, retention)."""
        ...


@dataclass(frozen=True)
class Migration:
    """One step of a component's schema. ``sql`` may name ``{id}`` (an auto-increment primary key),
    ``{bigint}`` (Discord's 64-bit ids), ``{real}`` (a double) and ``{blob}`` (bytes), which each engine spells its way;
    ``before``, when given, runs first in the same transaction (an in-place fix only one engine needs);
    ``after`` last (rows the new tables start with)."""

    version: int
    name: str
    sql: str
    before: Callable[[Database, Connection], None] | None = None
    after: Callable[[Database, Connection], None] | None = None  # data moved into what ``sql`` made, same transaction


class Database:
    """The engine-independent part: the user-data registry, ``forget_user`` and migrations."""

    engine = ""
    types: dict[str, str] = {}
    for_update = ""  # appended to a SELECT that reads a row it is about to rewrite

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._holders: list[HoldsUserData] = []

    def transaction(self) -> Any:
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def columns(self, tx: Connection, table: str) -> set[str]:
        raise NotImplementedError

    def holds_user_data(self, store: HoldsUserData) -> None:
        """Register a store of people's data: ``forget_user`` and ``expire`` reach it from then on. One
        that cannot be forgotten or expired is refused: it would keep people's data past both."""
        for hook in ("delete_user_data", "delete_expired"):
            if not callable(getattr(store, hook, None)):
                raise TypeError(f"{type(store).__name__} keeps people's data but has no {hook}")
        self._holders.append(store)

    def expire(self, cutoff: float) -> dict[str, int]:
        """Every registered store's rows from before ``cutoff``, deleted in one transaction (retention)."""
        return self._in_every_store(lambda store, tx: store.delete_expired(tx, cutoff))

    def forget_user(self, user: str) -> dict[str, int]:
        """Every registered store's rows about ``user``, deleted in one transaction: all or nothing."""
        return self._in_every_store(lambda store, tx: store.delete_user_data(tx, user))

    def _in_every_store(self, delete: Callable[[HoldsUserData, Connection], dict[str, int]]) -> dict[str, int]:
        deleted: dict[str, int] = {}
        with self.transaction() as tx:
            for store in self._holders:
                deleted.update(delete(store, tx))
        return deleted

    def apply(self, schema: str) -> None:
        """Run ``schema``'s statements (``CREATE ... IF NOT EXISTS``) in one transaction."""
        with self.transaction() as tx:
            self._script(tx, schema)

    def version(self, component: str) -> int:
        with self.transaction() as tx:
            return self._version(tx, component)

    def migrate(self, component: str, migrations: Sequence[Migration]) -> list[Migration]:
        """Apply ``component``'s migrations this database has not had, in order, each in a transaction
        of its own (and under a lock, so two processes starting at once apply each step once)."""
        applied = []
        for migration in migrations:
            with self.transaction() as tx:
                self._lock_migrations(tx, component)
                if self._version(tx, component) >= migration.version:
                    continue
                if migration.before:
                    migration.before(self, tx)
                self._script(tx, migration.sql)
                if migration.after:
                    migration.after(self, tx)
                tx.execute(
                    "INSERT INTO schema_versions (component, version, name, applied) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version, name = excluded.name, applied = excluded.applied",
                    (component, migration.version, migration.name, time.time()),
                )
            log.info("database: %s schema %d applied (%s)", component, migration.version, migration.name)
            applied.append(migration)
        return applied

    def _script(self, tx: Connection, sql: str) -> None:
        """Each ``;``-separated statement of ``sql``, with this engine's spelling of ``{id}``, ``{bigint}``, ``{real}``."""
        for statement in filter(str.strip, sql.format(**self.types).split(";")):
            tx.execute(statement)

    def _version(self, tx: Connection, component: str) -> int:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            f" name TEXT NOT NULL, applied {self.types['real']} NOT NULL)"
        )
        row = tx.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
        return int(row[0]) if row else 0

    def _lock_migrations(self, tx: Connection, component: str) -> None:
        """Serialise migrations across processes; SQLite's write transaction already does."""


class SQLiteDatabase(Database):
    """One connection shared across threads, serialised by a lock (SQLite calls take microseconds)."""

    engine = "sqlite"
    types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "bigint": "INTEGER", "real": "REAL", "blob": "BLOB"}

    def __init__(self, path: Path, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        super().__init__()
        self.path = path
        try:
            private_file(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
        except (sqlite3.Error, OSError) as exc:
            raise SeraError(f"cannot open the database {path}: {exc}") from None

    def __str__(self) -> str:
        return str(self.path)

    def columns(self, tx: Connection, table: str) -> set[str]:
        return {row[1] for row in tx.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``with db.transaction() as connection:`` writes that are all kept or, on any error, none."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error("begin", exc) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _storage_error("write", exc) from None
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise _storage_error("read", exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def private_folder(folder: Path) -> Path:
    """``folder``, created (with its parents) readable by this user alone where it does not exist yet."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for part in reversed(missing):
        part.mkdir(mode=0o700, exist_ok=True)
    return folder


def untrusted(info: os.stat_result) -> str | None:
    """Why a file sera keeps (database, status) must not be used as it is: owned by another user, or
    writable by every user (anyone could have planted or changed what it says); None when it is sera's."""
    if info.st_uid != os.geteuid():
        return f"it belongs to another user (uid {info.st_uid}), not to the user sera runs as (uid {os.geteuid()})"
    if info.st_mode & stat.S_IWOTH:
        return "every user can write to it"
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    return None


def private_file(path: Path) -> None:
    """Make the SQLite file (and its ``-wal`` and ``-shm``, which SQLite creates with the database file's
    permissions) readable by this user alone: created 0600 in a 0700 folder where it is new, tightened
    to 0600 where an older sera left it readable by other local users. One that another user owns, or
    every user may write, is refused: sera will not keep people's data in a file someone else controls."""
    private_folder(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            info = file.lstat()
        except FileNotFoundError:
            continue
        if why := untrusted(info):
            raise SeraError(f"cannot use the database {file}: {why}; move it away, or fix its owner and mode (chmod 600)")
        if info.st_mode & 0o077:
            file.chmod(0o600)
            log.info("database: %s was readable by other users; now 0600", file)


class _Portable:
    """A psycopg connection that takes the stores' ``?`` placeholders."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return self._connection.execute(sql.replace("?", "%s"), parameters)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        cursor = self._connection.cursor()
        cursor.executemany(sql.replace("?", "%s"), rows)
        return cursor


class PostgresDatabase(Database):
    """One psycopg connection per process, shared across threads under a lock, as with SQLite: sera's
    writes are a few short transactions a second, and every call already runs off the event loop."""

    engine = "postgresql"
    types = {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "bigint": "BIGINT", "real": "DOUBLE PRECISION", "blob": "BYTEA"}
    for_update = " FOR UPDATE"

    def __init__(self, url: str, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise SeraError("discord.database is a PostgreSQL URL, but psycopg is not installed: pip install 'sera-voice[postgres]'") from None
        self._psycopg = psycopg
        self.url = url
        try:
            # autocommit: every unit of work is an explicit ``transaction()`` block (BEGIN ... COMMIT)
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=max(2, round(busy_timeout)),
                                       options=f"-c lock_timeout={round(busy_timeout * 1000)}")  # fmt: skip
        except psycopg.Error as exc:
            raise SeraError(f"cannot open the database {redact(url)}: {scrub(str(exc), url).strip()}") from None

    def __str__(self) -> str:
        return redact(self.url)

    def columns(self, tx: Connection, table: str) -> set[str]:
        return {r[0] for r in tx.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))}

    def _lock_migrations(self, tx: Connection, component: str) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (zlib.crc32(f"sera:{component}".encode()),))

    def transaction(self) -> AbstractContextManager[Connection]:
        return self._block("write")

    def read(self) -> AbstractContextManager[Connection]:
        """Reads in a transaction too: one consistent snapshot, however many statements."""
        return self._block("read")

    @contextmanager
    def _block(self, what: str) -> Iterator[Connection]:
        with self._lock:
            try:
                with self._db.transaction():  # BEGIN ... COMMIT, or ROLLBACK on any error
                    yield _Portable(self._db)
            except self._psycopg.Error as exc:
                raise _storage_error(what, exc, self.url) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def connect(target: str | Path, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Database:
    """A ``postgresql://`` URL opens PostgreSQL; anything else is the path of a SQLite file."""
    if isinstance(target, str) and target.startswith(POSTGRES_SCHEMES):
        return PostgresDatabase(target, busy_timeout)
    return SQLiteDatabase(Path(target), busy_timeout)


SECRET_KEYS = ("password", "sslpassword")  # what libpq reads from a connection URL that must never be shown


def redact(url: str) -> str:
    """A database URL fit for a log line or a printout: every secret libpq would read from it masked."""
    return scrub(url, url)


def scrub(text: str, url: str) -> str:
    """``text`` (the URL itself, or libpq's message about it, which can quote a malformed part) with the
    URL's secrets masked in every spelling it may hold: as written, and percent-decoded or encoded."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        for spelling in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if spelling:
                text = text.replace(spelling, "***")
    return text


def _secrets(url: str) -> set[str]:
    """The password and SSL key password a URL carries: read as libpq reads them (psycopg's
    ``conninfo_to_dict``) where psycopg is installed and the URL parses, and also by hand, as written
    (``user:PASSWORD@`` and ``?password=``, keys percent-decoded and in any case), so that a URL libpq
    refuses, or a machine without psycopg, still shows none."""
    found: set[str] = set()
    try:
        from psycopg.conninfo import conninfo_to_dict

        found |= {str(value) for key, value in conninfo_to_dict(url).items() if key in SECRET_KEYS and value}
    except Exception:  # no psycopg, or a URL libpq refuses: the hand-made reading below still holds
        pass
    rest = url.partition("://")[2]
    credentials, at, _ = rest.rpartition("@")
    if at and ":" in credentials.split("/", 1)[0]:
        found.add(credentials.split("/", 1)[0].split(":", 1)[1])
    for pair in rest.partition("?")[2].split("&"):
        key, equals, value = pair.partition("=")
        if equals and unquote(key).lower() in SECRET_KEYS and value:
            found.add(value)
    return found


def _storage_error(what: str, exc: Exception, url: str = "") -> StorageError:
    text = scrub(str(exc), url) if url else str(exc)
    log.error("database %s failed: %s", what, text)
    if any(word in text for word in ("locked", "busy", "lock timeout", "could not serialize", "deadlock")):
        return StorageError("the database is busy (another process is writing to it); nothing was changed, try again")
    return StorageError(f"the database failed ({text.strip()}); nothing was changed")
