"""The decoder's sandbox: a compromised ffmpeg, as sera runs it, can read none of sera's files, write
nothing, open no socket and see no other process, whatever uid sera runs as; and where the sandbox
cannot be set up, nothing is decoded unless the operator opted out."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sera import audio, sandbox
from sera.audio import Limits, SandboxUnavailable, decode, memory_file, run_bounded
from sera.errors import AudioError
from tests.conftest import ROOT, SAMPLE_NOTE, sera
from tests.sandboxing import Listener, open_folder, run, without_capabilities, wrapper  # noqa: F401 (a fixture)

TOKEN, ROWS = "MTIzNDU2Nzg5.secret-token", "ANALYSES-ALREADY-KEPT"


def test_a_compromised_ffmpeg_can_touch_none_of_seras_files(open_folder: Path) -> None:
    """A script named ``ffmpeg`` first on PATH stands in for an ffmpeg a crafted upload took over. Run
    directly by sera's user (the control) it reads the token's credential and the database, truncates
    the database, connects to a local port and lists the processes; run by ``sera analyze`` (as sera's
    user without capabilities: an ordinary user's powers) it can do none of it."""
    credentials, state = open_folder / "credentials", open_folder / "state"
    credentials.mkdir()
    state.mkdir()
    (credentials / "DISCORD_TOKEN").write_text(TOKEN)
    database = state / "sera.db"
    report = open_folder / "report"
    listener = Listener()
    folder = open_folder / "bin"
    folder.mkdir(mode=0o755)
    fake = wrapper(folder, (
        f"{{ cat {credentials}/DISCORD_TOKEN; cat {database}; ls /proc; }} > {report} 2>/dev/null\n"
        f"( : > {database} ) 2>/dev/null\n"
        f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{listener.port}' 2>/dev/null\n"
    ))  # fmt: skip
    database.write_text(ROWS)
    for path, mode in ((credentials / "DISCORD_TOKEN", 0o600), (database, 0o600), (credentials, 0o700), (state, 0o700)):
        path.chmod(mode)  # sera's own files, as a systemd unit and sera itself leave them
    drop = without_capabilities()
    try:
        control = run([*drop, str(fake)])
        assert control.returncode == 0, control.stderr
        seen = report.read_text()
        assert TOKEN in seen and ROWS in seen and "self" in seen  # it read both files and listed /proc
        assert database.read_text() == "" and listener.connections() == 1  # it wiped the database and connected

        database.write_text(ROWS)
        report.unlink()
        env = dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}")
        confined = run([*drop, sys.executable, "-m", "sera", "analyze", str(SAMPLE_NOTE)], env=env, cwd=ROOT)
        assert confined.returncode == 2 and "could not read this audio" in confined.stderr, confined.stderr
        assert not report.exists()  # it could create no file (and so read nothing out)
        assert database.read_text() == ROWS  # nothing already stored is lost
        assert listener.connections() == 0
    finally:
        listener.close()


HUNT = ('sleep 0.5; for fd in /proc/[0-9]*/fd/*; do case "$(readlink "$fd")" in /memfd:sera-upload*) cat "$fd";; esac; done 2>/dev/null; '
        'sleep 0.5\n')  # fmt: skip


def test_two_decodes_at_once_cannot_read_each_others_uploads(open_folder: Path) -> None:
    """Each stand-in looks through /proc for every upload held open while the other is running. Unconfined
    (the control, the same user for both) each finds the other's; confined, neither does."""
    hunter = wrapper(open_folder, HUNT)
    uploads = {name: f"UPLOAD-{name}-".encode() * 100 for name in "AB"}
    found: dict[str, bytes] = {}

    def hunt(name: str, confined: bool) -> None:
        with memory_file(uploads[name]) as (_, _, fd):
            if confined:
                found[name] = run_bounded([], Limits(), pass_fds=(fd,), binary=str(hunter))[1]
            else:
                found[name] = subprocess.run([str(hunter)], pass_fds=(fd,), capture_output=True, timeout=30).stdout

    for confined in (False, True):
        threads = [threading.Thread(target=hunt, args=(name, confined)) for name in "AB"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        crossed = b"UPLOAD-B" in found["A"] and b"UPLOAD-A" in found["B"]
        assert crossed is not confined, f"confined={confined}: {found}"
        assert b"UPLOAD-B" not in found["A"] and b"UPLOAD-A" not in found["B"] if confined else True


def test_the_sandbox_refuses_rather_than_run_unconfined(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Landlock (an old kernel, or one without it in lsm=): the program is never started."""
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    with pytest.raises(sandbox.Refused, match="Landlock is not available"):
        sandbox.landlock("/bin/true")
    with pytest.raises(sandbox.Refused, match="no seccomp filter for the sparc64 architecture"):
        sandbox.seccomp_program("sparc64", os.getpid())


@pytest.fixture
def no_sandbox(open_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where the sandbox cannot be set up: it refuses every strict run as the real one does
    (its line, its exit code), and a lenient one (the operator's opt-out) goes on to the real sandbox."""
    refusing = open_folder / "sandbox.py"
    refusing.write_text(
        "import os, sys\n"
        f"if sys.argv[1] == 'strict':\n    print({sandbox.PREFIX!r} + 'Landlock is not available', file=sys.stderr); sys.exit({sandbox.UNCONFINED_EXIT})\n"
        f"os.execv(sys.executable, [sys.executable, '-I', '-S', {str(audio.SANDBOX)!r}, *sys.argv[1:]])\n"
    )
    monkeypatch.setattr(audio, "SANDBOX", refusing)
    audio.sandbox_refusal.cache_clear()
    yield
    audio.sandbox_refusal.cache_clear()


def test_without_a_sandbox_nothing_is_decoded_unless_the_operator_opted_out(no_sandbox: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SandboxUnavailable, match="this server cannot decode safely right now") as refused:
        decode(SAMPLE_NOTE)
    assert "Landlock is not available" in refused.value.reason
    assert "Landlock is not available" in caplog.text and "sera doctor" in caplog.text  # the operator's line, once
    assert decode(SAMPLE_NOTE, Limits(confined=False)).size > 16_000  # opted out: decoded

    config = tmp_path / "sera.yaml"
    result = sera("analyze", str(SAMPLE_NOTE))
    assert result.returncode == 2 and "cannot decode safely" in result.stderr
    doctor = sera("doctor")
    assert "✘ decoder sandbox: Landlock is not available" in doctor.stdout
    assert "audio.confine_decoder: false" in doctor.stdout  # the knowing opt-out, named
    config.write_text("audio:\n  confine_decoder: false\n")
    assert sera("--config", str(config), "analyze", str(SAMPLE_NOTE)).returncode == 0


def test_doctor_names_the_sandbox_where_it_works() -> None:
    doctor = sera("doctor")
    assert f"✔ decoder sandbox: Landlock ABI {sandbox.landlock_abi()}" in doctor.stdout


def test_the_seccomp_filter_is_valid_on_every_architecture_it_knows() -> None:
    for machine in sandbox.SYSCALLS:
        program = sandbox.seccomp_program(machine, 4242)
        assert len(program) % 8 == 0 and len(program) // 8 < 255  # every jump fits in 8 bits


def test_a_stranger_cannot_make_sera_quote_a_tag(tmp_path: Path) -> None:
    """A FLAC whose title holds a forged ``Stream #0:0: Audio:`` line (a harmless stream) and a ping: the
    real stream, 384 kHz 7.1, is refused from ffprobe's numbers, and the message holds none of the tag."""
    forged = tmp_path / "note.flac"
    title = "hi\n  Stream #0:0: Audio: flac, 16000 Hz, mono, s16\n<@123456789> https://evil.example/x"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=384000:cl=7.1", "-t", "0.2",
                    "-metadata", f"title={title}", str(forged)], check=True)  # fmt: skip
    with pytest.raises(AudioError) as refused:
        decode(forged)
    assert str(refused.value) == "could not read this audio: 384,000 Hz with 8 channels is no recording (at most 192,000 Hz and 8 channels)"


SIGNALLER = """#!/usr/bin/python3
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
target, calls = int(sys.argv[1]), {"x86_64": (129, 302), "aarch64": (138, 261)}[os.uname().machine]
info = ctypes.create_string_buffer(128)
struct.pack_into("iii", info, 0, 15, 0, -1)  # SIGTERM, as sigqueue() sends it
queued = libc.syscall(calls[0], target, 15, info)  # rt_sigqueueinfo: kill() by another name
zero = (ctypes.c_uint64 * 2)(0, 0)
limited = libc.syscall(calls[1], target, 7, zero, None)  # prlimit64: the target's RLIMIT_NOFILE to 0
print(queued, limited, libc.syscall(calls[1], 0, 7, None, ctypes.byref(zero)), os.kill(os.getpid(), 0))
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="the stand-in is a /usr/bin/python3 script (Debian's python3)")
def test_a_compromised_ffmpeg_can_neither_signal_nor_limit_another_process(open_folder: Path) -> None:
    """Not only kill(): rt_sigqueueinfo sends any signal too, and prlimit64 sets another process's limits.
    Run directly as sera's user (the control) the stand-in kills a process of that user; confined, both
    calls are refused, while its own limits and signals to itself still work."""
    signaller = wrapper(open_folder, "")
    signaller.write_text(SIGNALLER)
    drop = without_capabilities()
    for confined in (False, True):
        target = subprocess.Popen([*drop, "sleep", "30"])
        try:
            through_sera = [sys.executable, "-c", "import sys\nfrom sera.audio import Limits, run_bounded\n"
                            "print(run_bounded(sys.argv[2:], Limits(), binary=sys.argv[1])[1].decode())"]  # fmt: skip
            done = run([*drop, *(through_sera if confined else []), str(signaller), str(target.pid)], cwd=ROOT)
            queued, limited, own, _ = done.stdout.split()
            if confined:
                assert (queued, limited, own) == ("-1", "-1", "0"), done.stdout + done.stderr
                assert target.poll() is None  # still running
                assert " 0 " not in Path(f"/proc/{target.pid}/limits").read_text().split("Max open files")[1].splitlines()[0]
            else:
                assert queued == "0" and target.wait(10) == -15  # the control: the other process is gone
        finally:
            target.kill()
            target.wait()
