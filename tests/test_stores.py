"""The stores on both engines: the same tests on SQLite (always) and on a real PostgreSQL server started
for the session (``tests/postgres.py``); migrations from today's schema; two processes writing at once."""

from __future__ import annotations

import json
import re
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from sera.adapters.discord.store import Origin, Store
from sera.errors import SeraError
from sera.database import SQLiteDatabase, StorageError, connect, redact
from sera.plugin import Report
from sera.sessions import ENDED, SessionStore
from sera.summary import Utterance
from tests.conftest import ROOT, sera
from tests.postgres import postgres_server, postgres_url, target  # noqa: F401  (fixtures)

REPORT = Report(source="note.ogg", duration=3.0, segments=[(0.5, 2.5)], outputs={})
ALICE, BOB = 111_111_111_111_111_111, 222_222_222_222_222_222  # Discord ids need 64 bits
ROW = Utterance(str(ALICE), 1.0, 2.0, "calm", 0.8, {"calm": 0.8, "sad": 0.2}, {})


def test_settings_analyses_and_opt_outs(target: str | Path) -> None:
    store = Store(target)
    assert store.settings(7).channels == frozenset()
    store.update_settings(7, lambda s: replace(s, channels=frozenset({ALICE}), chart=True))
    assert store.settings(7).channels == {ALICE} and store.settings(7).chart
    first = store.record(REPORT, Origin(ALICE, ALICE, 7, 8, 9))
    second = store.record(REPORT, Origin(ALICE, BOB, 7, 8, 10))
    assert second > first and store.analyses_of(ALICE) == 2 and store.analyses_of(BOB) == 1
    store.set_analysis_by_others(ALICE, False)
    store.set_analysis_by_others(ALICE, False)  # twice: still one row, no error
    assert not store.analysis_by_others_allowed(ALICE) and store.analysis_by_others_allowed(BOB)
    store.close()
    reopened = Store(target)  # a restart keeps everything
    assert reopened.settings(7).chart and reopened.analyses_of(ALICE) == 2 and not reopened.analysis_by_others_allowed(ALICE)
    reopened.close()


def test_answered_messages_and_retention(target: str | Path) -> None:
    store = Store(target)
    before = time.time()
    store.update_settings(1, lambda s: replace(s, channels=frozenset({30})))
    for message, channel, guild in ((100, 10, 1), (105, 10, 1), (101, 20, None)):
        store.mark_answered(message, channel, guild, ALICE)
    store.mark_answered(105, 10, 1, ALICE)  # again: no error, one row
    store.scanned(20, None, 90)  # a mark never goes back
    assert store.was_answered(105) and not store.was_answered(106)
    channels = store.catch_up_channels()
    assert [(c.channel_id, c.guild_id, c.after) for c in channels] == [(10, 1, 105), (20, None, 101), (30, 1, None)]
    (enabled,) = channels[2].windows
    assert before <= enabled[0] <= time.time() and enabled[1] is None
    assert channels[2].enabled_at(time.time()) and not channels[2].enabled_at(before - 1) and channels[1].enabled_at(0)
    store.update_settings(1, lambda s: replace(s, channels=frozenset()))  # disabled: the window closes
    (closed,) = store.catch_up_channels()[2].windows
    assert closed[1] is not None and not store.catch_up_channels()[2].enabled_at(time.time() + 1)
    assert store.forget_answered_before(time.time() + 1) == 3  # every mark goes; where each channel got to stays
    assert [(c.channel_id, c.after) for c in store.catch_up_channels()[:2]] == [(10, 105), (20, 101)]
    store.mark_answered(107, 10, 1, ALICE)
    store.mark_answered(108, 10, 1, BOB)
    assert store.db.forget_user(str(ALICE))["answered_messages"] == 1 and store.was_answered(108) and not store.was_answered(107)
    store.record(REPORT, Origin(ALICE, ALICE, None, None, None))
    assert store.delete_older_than(time.time() - 60) == 0 and store.delete_older_than(time.time() + 1) == 1
    assert not store.was_answered(108)  # retention takes the marks of answered messages too
    store.close()


def test_sessions_consent_forget_and_retention(target: str | Path) -> None:
    db = connect(target)
    store, sessions = Store(db), SessionStore(db)
    info = sessions.start("guild", "room", str(ALICE), report_to="chan")
    sessions.add(info.id, [ROW, replace(ROW, speaker=str(BOB), start=3.0, end=4.0)])
    sessions.set_consent("guild", str(ALICE), True)
    sessions.set_consent("guild", str(ALICE), True)
    assert sessions.consenting("guild") == {str(ALICE)}
    assert [u.speaker for u in sessions.utterances(info.id)] == [str(ALICE), str(BOB)]
    assert json.loads(sessions.export_json(info.id))["utterances"][0]["probabilities"] == {"calm": 0.8, "sad": 0.2}
    store.record(REPORT, Origin(ALICE, ALICE, None, None, None))
    assert db.forget_user(str(ALICE)) == {"analyses": 1, "answered_messages": 0, "utterances": 1, "sessions_started": 1}
    assert sessions.info(info.id).info.started_by == "forgotten" and sessions.consenting("guild") == set()
    assert sessions.delete_older_than(time.time() + 1) == 0  # still live: kept whole
    sessions.finish(info.id, ENDED)
    assert sessions.delete_older_than(time.time() - 60) == 0 and sessions.delete_older_than(time.time() + 1) == 1
    assert sessions.info(info.id) is None
    db.close()


def test_a_failed_transaction_keeps_none_of_it_and_the_connection_stays_usable(target: str | Path) -> None:
    db = connect(target)
    store = Store(db)
    store.record(REPORT, Origin(ALICE, ALICE, None, None, None))
    with pytest.raises(StorageError):
        with db.transaction() as tx:
            store.delete_user_data(tx, str(ALICE))
            tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert store.analyses_of(ALICE) == 1
    store.record(REPORT, Origin(BOB, BOB, None, None, None))
    assert store.analyses_of(BOB) == 1
    db.close()


def test_migrations_are_versioned_and_sera_db_reports_them(target: str | Path, tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text(f"discord:\n  database: '{target}'\n")
    before = sera("--config", str(config), "db", "status")
    assert before.returncode == 0, before.stderr
    assert "sessions: schema 0 of 3; pending: 1 (live sessions, utterances, consent), 2 (which process runs each" in before.stdout
    assert "3 (who agreed to transcripts, per space)" in before.stdout
    assert "discord: schema 0 of 3; pending: 1 (guild settings" in before.stdout
    assert "baselines: schema 0 of 1; pending: 1 (personal baselines" in before.stdout
    upgraded = sera("--config", str(config), "db", "upgrade")
    assert "discord: applied 2 (answered messages, for the catch-up after a restart)" in upgraded.stdout
    assert "discord: applied 3 (when channels were enabled, where each catch-up got to, whose notes were answered, forgets to retry)" in upgraded.stdout
    assert "sessions: applied 3 (who agreed to transcripts, per space)" in upgraded.stdout
    assert "sessions: schema 3 of 3, up to date" in upgraded.stdout and "discord: schema 3 of 3, up to date" in upgraded.stdout
    assert "baselines: schema 1 of 1, up to date" in upgraded.stdout
    again = sera("--config", str(config), "db", "upgrade")
    assert "applied" not in again.stdout  # nothing twice
    Store(target).close()  # opening a store finds nothing to do either


# Today's schema, before versioned migrations (as the stores created it when this landed).
TODAYS_SCHEMA = """
CREATE TABLE guild_settings (guild_id INTEGER PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE analyses (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, user_id INTEGER NOT NULL,
    guild_id INTEGER, channel_id INTEGER, message_id INTEGER, duration_s REAL NOT NULL, speech_s REAL NOT NULL,
    label TEXT, confidence REAL, result TEXT NOT NULL, requested_by INTEGER);
CREATE INDEX analyses_user ON analyses (user_id);
CREATE TABLE analysis_optout (user_id INTEGER PRIMARY KEY, since REAL NOT NULL);
CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, space TEXT NOT NULL, room TEXT NOT NULL, report_to TEXT,
    started_by TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL, shed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE utterances (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id INTEGER NOT NULL REFERENCES sessions (id),
    speaker TEXT NOT NULL, start_s REAL NOT NULL, end_s REAL NOT NULL, label TEXT, confidence REAL,
    probabilities TEXT NOT NULL, outputs TEXT NOT NULL);
CREATE TABLE consent (space TEXT NOT NULL, speaker TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (space, speaker));
INSERT INTO guild_settings VALUES (7, '{"channels": [8], "chart": true}');
INSERT INTO analyses (created, user_id, duration_s, speech_s, result) VALUES (1.0, 111111111111111111, 3.0, 2.0, '{}');
INSERT INTO analysis_optout VALUES (222222222222222222, 1.0);
INSERT INTO sessions (space, room, started_by, started_at, status) VALUES ('g', 'r', 'alice', 1.0, 'ended');
INSERT INTO utterances (session_id, speaker, start_s, end_s, probabilities, outputs) VALUES (1, 'alice', 0, 1, '{}', '{}');
INSERT INTO consent VALUES ('g', 'alice', 1.0);
"""


def test_a_database_from_todays_schema_upgrades_in_place_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "sera.db"
    old = sqlite3.connect(path)
    old.executescript(TODAYS_SCHEMA)
    old.close()
    db = SQLiteDatabase(path)
    store, sessions = Store(db), SessionStore(db)
    assert (db.version("discord"), db.version("sessions")) == (3, 3)
    assert store.settings(7).channels == {8} and store.settings(7).chart
    (enabled,) = next(c for c in store.catch_up_channels() if c.channel_id == 8).windows  # enabled from the upgrade on
    assert enabled[1] is None and time.time() - enabled[0] < 60
    assert store.analyses_of(ALICE) == 1 and not store.analysis_by_others_allowed(BOB)
    assert [u.speaker for u in sessions.utterances(1)] == ["alice"] and sessions.consenting("g") == {"alice"}
    assert sessions.consenting("g", "transcripts") == set()  # agreeing to analysis never meant agreeing to transcripts
    store.mark_answered(5, 6, None)  # the new table is there
    assert store.was_answered(5)
    db.close()


@pytest.mark.parametrize("whose", ["writable by all", "another user's"])
def test_a_database_file_someone_else_controls_is_refused(tmp_path: Path, whose: str) -> None:
    path = tmp_path / "sera.db"
    Store(path).close()
    if whose == "writable by all":
        path.chmod(0o666)
        why = "every user can write to it"
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user here")
        os.chown(path, 65534, 65534)
        why = "it belongs to another user (uid 65534)"
    with pytest.raises(SeraError, match=re.escape(f"cannot use the database {path}: {why}")):
        Store(path)


def test_toggling_a_channel_keeps_a_bounded_number_of_windows(target: str | Path) -> None:
    """An admin (or a script) toggling a channel all day: the catch-up's record of when it was enabled stays small."""
    from sera.adapters.discord.store import WINDOWS_KEPT

    store = Store(target)
    for i in range(60):
        store.update_settings(7, lambda s: replace(s, channels=frozenset({99}) if i % 2 == 0 else frozenset()))
    with store.db.read() as db:
        kept = db.execute("SELECT COUNT(*) FROM channel_windows WHERE channel_id = 99").fetchone()[0]
    assert kept == WINDOWS_KEPT
    (mark,) = [m for m in store.catch_up_channels() if m.channel_id == 99]
    assert mark.windows[-1][1] is not None and len(mark.windows) == WINDOWS_KEPT  # the latest ones, the last closed
    store.close()


def test_a_postgresql_url_is_never_logged_with_its_password() -> None:
    assert redact("postgresql://sera:s3cret@db.example:5432/sera") == "postgresql://sera:***@db.example:5432/sera"
    assert redact("postgresql://sera@/sera?host=/run/pg") == "postgresql://sera@/sera?host=/run/pg"
    assert redact("postgresql://sera@db/sera?sslmode=require&password=s3cret") == "postgresql://sera@db/sera?sslmode=require&password=***"
    assert redact("postgres://db/sera?PASSWORD=s3cret&user=sera") == "postgres://db/sera?PASSWORD=***&user=sera"
    assert redact("postgresql://u:pa?ss@h/db") == "postgresql://u:***@h/db"  # a "?" inside the password
    assert redact("postgresql://h/db?pass%77ord=s3cret") == "postgresql://h/db?pass%77ord=***"  # a percent-encoded key
    assert redact("postgresql://h/db?sslpassword=s3cret") == "postgresql://h/db?sslpassword=***"  # the SSL key's password
    assert redact("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"


@pytest.mark.parametrize("url", ["postgresql://u:pa%zzss@127.0.0.1:1/db", "postgresql://127.0.0.1:1/db?password=s3%zzcret"])
def test_libpqs_own_error_never_shows_the_password(url: str) -> None:
    """libpq quotes a malformed part of the URL in its error, password included: the message masks it."""
    pytest.importorskip("psycopg", reason="needs the [postgres] extra: pip install -e '.[postgres]'")
    with pytest.raises(SeraError) as refused:
        connect(url)
    assert "zz" not in str(refused.value) and "***" in str(refused.value)


def test_sera_config_and_doctor_never_print_the_database_password(tmp_path: Path) -> None:
    config = tmp_path / "sera.yaml"
    config.write_text("discord:\n  database: postgresql://sera:s3cret@127.0.0.1:1/sera?password=other\n")
    for args in (("config", str(config)), ("-c", str(config), "doctor"), ("-c", str(config), "db", "status")):
        done = sera(*args)
        assert "s3cret" not in done.stdout + done.stderr and "other" not in done.stdout + done.stderr, args


WRITER = """
import sys, time
from dataclasses import replace
from sera.adapters.discord.store import Origin, Store
from sera.database import connect
from sera.plugin import Report
from sera.sessions import SessionStore
from sera.summary import Utterance

url, me, n, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
db = connect(url)
store, sessions = Store(db), SessionStore(db)
report = Report(source="note.ogg", duration=3.0, segments=[(0.5, 2.5)], outputs={})
time.sleep(max(0.0, start_at - time.time()))  # both processes begin writing at the same moment
session = sessions.start("guild", "room", str(me))
for i in range(n):
    store.record(report, Origin(me, me, 1, 2, me * 1000 + i))
    sessions.set_consent(f"guild-{i % 7}", f"{me}-{i}", True)
    sessions.add(session.id, [Utterance(str(me), i, i + 0.5, "calm", 0.7, {"calm": 0.7}, {})])
    store.update_settings(1, lambda s: replace(s, channels=s.channels | {me * 1000 + i}))
print(session.id)
"""


def test_two_processes_write_at_once_on_postgresql(postgres_url: str) -> None:
    """As two shards would: analyses, opt-ins, utterances and one guild's settings, written by two
    processes at the same time. No row is lost, no id is given twice, and each process's settings edits
    are seen by the other (none overwrites the other's)."""
    Store(postgres_url).close()  # the schema, once
    n, start_at = 150, time.time() + 5  # after both have imported and connected
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, postgres_url, str(me), str(n), str(start_at)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in (1, 2)]  # fmt: skip
    outputs = [w.communicate(timeout=120) for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    db = connect(postgres_url)
    store, sessions = Store(db), SessionStore(db)
    with db.read() as tx:
        ids = [row[0] for row in tx.execute("SELECT id FROM analyses")]
        consents = tx.execute("SELECT COUNT(*) FROM consent").fetchone()[0]
    assert len(ids) == len(set(ids)) == 2 * n and consents == 2 * n
    session_ids = [int(out.strip()) for out, _ in outputs]
    assert len(set(session_ids)) == 2 and all(len(sessions.utterances(s)) == n for s in session_ids)
    assert store.settings(1).channels == {me * 1000 + i for me in (1, 2) for i in range(n)}
    db.close()


def test_the_sqlite_database_is_readable_by_its_user_alone(tmp_path: Path) -> None:
    """The file, its WAL and shared-memory files 0600 in a 0700 folder, whatever the umask; and a database
    an older sera left readable by everyone is tightened when opened."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "data" / "sera" / "sera.db"
        store = Store(path)
        store.mark_answered(1, 2, None)  # a write: the WAL and shared-memory files exist now
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        assert modes == {"sera.db": 0o600, "sera.db-wal": 0o600, "sera.db-shm": 0o600}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
        store.close()
        for p in path.parent.iterdir():
            p.chmod(0o644)
        Store(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_starting_process_takes_over_only_sessions_whose_process_is_gone(target: str | Path) -> None:
    """Processes share one database: a process starting up leaves another's running session alone, takes
    over (once) one whose process died on this machine or went silent anywhere, and never both at once."""
    import socket

    from sera.sessions import STALE_SECONDS, pid_space

    db = connect(target)
    host, space, gone = socket.gethostname(), pid_space(), 2**22 + 7  # no process here has that pid
    elsewhere = SessionStore(db, owner=f"db-host-2:4242:aaaa:{space}")  # a process on another machine, alive
    here = SessionStore(db, owner=f"{host}:1:bbbb:{space}")  # pid 1 lives, but is no sera
    dead = SessionStore(db, owner=f"{host}:{gone}:cccc:{space}")  # no such pid: it died
    container = SessionStore(db, owner=f"{host}:{gone}:eeee:0123456789ab")  # the same host name, another PID namespace
    rebooted = SessionStore(db, owner=f"{host}:{gone}:ffff")  # from before pid spaces were named: silence decides
    starting = SessionStore(db, owner=f"{host}:{os.getpid()}:dddd:{space}")
    running, silent, crashed = (s.start("g", "r", "alice") for s in (elsewhere, here, dead))
    kept = [other.start("g", "r", "alice").id for other in (container, rebooted)]  # fresh heartbeats: never claimed
    assert starting.claim_orphans() == [crashed.id]  # the others vouched for theirs a moment ago
    assert here.claim_orphans([silent.id]) == [] and elsewhere.claim_orphans([running.id]) == []  # claimed by one process only
    assert starting.claim_orphans() == [crashed.id]  # until it has closed it, its own claim comes again
    with db.transaction() as tx:
        tx.execute("UPDATE sessions SET heartbeat = ? WHERE id = ?", (time.time() - STALE_SECONDS - 1, silent.id))
    elsewhere.beat([running.id])
    starting.mark_interrupted(crashed.id)
    assert starting.claim_orphans() == [silent.id]
    starting.mark_interrupted(silent.id)
    assert sorted(s.info.id for s in starting.latest("g") if s.status == "live") == sorted([running.id, *kept])
    db.close()
