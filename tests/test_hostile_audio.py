"""Files a stranger can send, made by the tests with real ffmpeg: ffmpeg may read only the file itself,
within bounded memory, time and output, without the bot's secrets and without leaving the upload on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sera.audio import SAMPLE_RATE, Limits, decode, memory_file, run_bounded
from sera.errors import AudioError
from tests.conftest import ROOT, SAMPLE_NOTE, encode, tone
from tests.sandboxing import open_folder, wrapper  # noqa: F401 (a fixture)


def ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *arguments], check=True)


@pytest.fixture(scope="module")
def host_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file on the bot's host that a crafted upload must not be able to reach."""
    path = tmp_path_factory.mktemp("host") / "private.ts"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=3", "-c:a", "mp2", "-f", "mpegts", str(path))
    return path


@pytest.mark.slow
def test_huge_video_streams_cost_no_memory_and_the_audio_still_decodes(tmp_path: Path) -> None:
    """Six PNG streams of 8192x8192 beside 2 s of Opus, named .webm: ffmpeg used 2.4 GB probing twelve."""
    hostile = tmp_path / "voice-message.webm"
    ffmpeg("-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi", "-i", "color=c=red:s=8192x8192:d=0.04:r=25",
           *[a for _ in range(6) for a in ("-map", "1:v")], "-map", "0:a", "-c:v", "png", "-c:a", "libopus",
           "-f", "matroska", str(hostile))  # fmt: skip
    assert hostile.stat().st_size < 5_000_000
    samples, peak_kib = decode_in_a_fresh_process(hostile)
    assert abs(samples / SAMPLE_RATE - 2.0) < 0.1  # the first audio stream, decoded
    assert peak_kib < 300_000, f"ffmpeg peaked at {peak_kib / 1024:.0f} MiB"


def decode_in_a_fresh_process(path: Path) -> tuple[int, int]:
    """(samples decoded, peak memory of the children in KiB) in a fresh interpreter, so that the peak is
    this decode's ffmpeg alone; samples is -1 when the file was refused."""
    script = (
        "import resource, sys; from sera.audio import decode; from sera.errors import AudioError\n"
        "try:\n    size = decode(open(sys.argv[1], 'rb').read()).size\nexcept AudioError as e:\n    size = -1; print(e, file=sys.stderr)\n"
        "print(size, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    size, peak_kib = map(int, done.stdout.split())
    return size, peak_kib


@pytest.mark.parametrize("container", ["ogg", "mp4", "matroska"])
def test_a_small_file_of_hundreds_of_streams_is_refused_at_once(tmp_path: Path, container: str) -> None:
    """999 Ogg streams in 200 KB drove ffmpeg to 700 MB; past MAX_STREAMS the demuxer stops, in bounded memory."""
    from sera.audio import MAX_STREAMS

    hostile = tmp_path / "voice-message.bin"
    ffmpeg("-f", "lavfi", "-i", "sine=d=0.5", *[a for _ in range(300) for a in ("-map", "0:a")],
           "-c:a", "aac" if container == "mp4" else "libopus", "-b:a", "8k", "-f", container, str(hostile))  # fmt: skip
    with pytest.raises(AudioError, match=f"it holds more than {MAX_STREAMS} streams"):
        decode(hostile.read_bytes())
    samples, peak_kib = decode_in_a_fresh_process(hostile)
    assert samples == -1 and peak_kib < 150_000


def test_an_absurd_sample_rate_or_channel_count_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 1 MHz, 8-channel stream cost 19-30 s of CPU; ffmpeg announces the stream before decoding it."""
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=1000000:cl=7.1", "-t", "0.05", str(tmp_path / "fast.wav"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=hexadecagonal", "-t", "0.05", str(tmp_path / "wide.wav"))
    with pytest.raises(AudioError, match="1,000,000 Hz with 8 channels is no recording"):
        decode(tmp_path / "fast.wav")
    with pytest.raises(AudioError, match="48,000 Hz with 16 channels is no recording"):
        decode(tmp_path / "wide.wav")
    ffmpeg("-f", "lavfi", "-i", "sine=r=192000:d=0.5", "-ac", "8", str(tmp_path / "studio.wav"))  # the limits themselves pass
    assert abs(decode(tmp_path / "studio.wav").size / SAMPLE_RATE - 0.5) < 0.01


@pytest.mark.slow
def test_ffmpeg_cpu_time_is_bounded_not_only_its_wall_time(tmp_path: Path) -> None:
    """Forty minutes of 48 kHz FLAC take about 3.5 s of CPU: with one CPU second allowed, and wall time to
    spare, the CPU limit stops it, and the user hears it took too long."""


    long = tmp_path / "long.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=r=48000:d=2400", "-c:a", "flac", str(long))
    generous = Limits(max_bytes=1 << 30, max_seconds=2500, timeout_seconds=120, cpu_seconds=60)
    assert decode(long, generous).size == 2400 * SAMPLE_RATE
    started = time.monotonic()
    with pytest.raises(AudioError, match="took too long"):
        decode(long, replace(generous, cpu_seconds=1))
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_the_memory_floor_is_the_configs_minimum(tmp_path: Path) -> None:
    """Ten-minute ogg, m4a and mp3 notes decode within the least the config allows (320 MB); below ffmpeg's
    own floor every note fails, so the config refuses such a value rather than call every note corrupt."""

    from sera.config import AudioOptions, build
    from sera.errors import ConfigError

    floor = AudioOptions.__dataclass_fields__["decode_memory_mb"].metadata["sera.bounds"].min
    for suffix, codec in ((".ogg", "libopus"), (".m4a", "aac"), (".mp3", "libmp3lame")):
        note = tmp_path / f"ten{suffix}"
        ffmpeg("-f", "lavfi", "-i", "sine=f=220:d=600", "-ac", "2", "-ar", "48000", "-c:a", codec, str(note))
        assert decode(note, Limits(max_memory_bytes=int(floor) << 20)).size == 600 * SAMPLE_RATE
    with pytest.raises(ConfigError, match="'audio.decode_memory_mb' must be between 320 and 65536, not 256"):
        build(AudioOptions, {"decode_memory_mb": 256}, "sera.yaml", prefix="audio.")


def test_the_address_space_limit_stops_ffmpeg_not_the_bot() -> None:


    with pytest.raises(AudioError, match="could not read this audio"):
        decode(Path(ROOT / "examples" / "voice-note.ogg"), Limits(max_memory_bytes=8 << 20))


def test_a_ten_minute_voice_note_still_decodes(tmp_path: Path) -> None:
    note = tmp_path / "long.ogg"
    ffmpeg("-f", "lavfi", "-i", "sine=f=220:d=600", "-c:a", "libopus", "-b:a", "24k", str(note))
    samples = decode(note.read_bytes())
    assert abs(samples.size / SAMPLE_RATE - 600.0) < 0.5


def test_an_hls_playlist_sent_as_a_voice_note_cannot_read_host_files(host_file: Path) -> None:
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{host_file}\n#EXT-X-ENDLIST\n".encode()
    with pytest.raises(AudioError, match="could not read this audio"):
        decode(playlist)


def test_an_ffconcat_list_sent_as_mp3_cannot_read_files_beside_the_upload(host_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(host_file.parent))  # where an upload would have been written
    with pytest.raises(AudioError, match="could not read this audio"):
        decode(f"ffconcat version 1.0\nfile '{host_file.name}'\n".encode())


@pytest.mark.parametrize("suffix", [".m3u8", ".ffconcat"])
def test_playlists_on_disk_are_not_followed_by_sera_analyze(tmp_path: Path, host_file: Path, suffix: str) -> None:
    listing = tmp_path / f"list{suffix}"
    if suffix == ".m3u8":
        listing.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{host_file}\n#EXT-X-ENDLIST\n")
    else:
        listing = host_file.parent / "list.ffconcat"  # beside the file it names
        listing.write_text(f"ffconcat version 1.0\nfile '{host_file.name}'\n")
    with pytest.raises(AudioError, match="could not read this audio"):
        decode(listing)


def test_a_path_is_never_read_as_an_ffmpeg_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encode(tone(1.0), SAMPLE_RATE, tmp_path / "a.wav")
    (tmp_path / "concat:a.wav|a.wav").write_bytes(b"not audio at all\n" * 10)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AudioError, match="could not read this audio"):
        decode("concat:a.wav|a.wav")  # the file of that name, which is no audio; never a.wav twice


def test_ffmpeg_never_sees_the_discord_token(open_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2Nzg5.secret-token")
    code, out, _ = run_bounded([], Limits(), binary=str(wrapper(open_folder, "env\n")))
    assert code == 0 and b"PATH=" in out  # the spy ran
    assert b"DISCORD_TOKEN" not in out and b"secret-token" not in out


def test_the_upload_reaches_ffmpeg_in_memory_never_on_disk(open_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg reads the upload from an anonymous memory file; the temporary folder stays empty."""
    monkeypatch.setattr(tempfile, "tempdir", str(open_folder))
    monkeypatch.setenv("TMPDIR", str(open_folder))
    spy = wrapper(open_folder, 'for a; do case "$a" in file:*) readlink "${a#file:}"; wc -c < "${a#file:}";; esac; done\n')
    note = SAMPLE_NOTE.read_bytes()
    with memory_file(note) as (url, data, fd):
        code, out, _ = run_bounded(["-i", url], Limits(), data=data, pass_fds=() if fd is None else (fd,), binary=str(spy))
    where, size = out.decode().splitlines()
    assert where.startswith("/memfd:sera-upload") and int(size) == len(note)
    assert list(open_folder.iterdir()) == [spy]
    assert decode(note).size > SAMPLE_RATE


def test_an_mp4_with_its_index_at_the_end_decodes_from_memory(tmp_path: Path) -> None:
    path = encode(tone(2.0), SAMPLE_RATE, tmp_path / "x.m4a", "-c:a", "aac")  # ffmpeg writes moov last
    assert path.read_bytes().rfind(b"moov") > path.read_bytes().rfind(b"mdat")
    assert abs(decode(path.read_bytes()).size / SAMPLE_RATE - 2.0) < 0.1


def test_without_memfd_bytes_go_through_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")
    note = (ROOT / "examples" / "voice-note.ogg").read_bytes()
    np.testing.assert_array_equal(decode(note), decode(ROOT / "examples" / "voice-note.ogg"))


def test_ffmpeg_complaints_are_kept_to_a_short_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt stream makes ffmpeg complain once per packet; the log line stays short."""
    good = encode(tone(20.0), SAMPLE_RATE, tmp_path / "x.mp3", "-c:a", "libmp3lame").read_bytes()
    rng = np.random.default_rng(0)
    broken = bytearray(good)
    for i in rng.integers(2_000, len(broken), 3_000):
        broken[i] = rng.integers(0, 256)


    code, out, err = run_bounded(["-v", "debug", "-i", "pipe:0", "-f", "s16le", "pipe:1"], Limits(), data=bytes(broken))
    assert len(err) <= 4_096 and out


def test_the_bot_takes_its_token_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.config import Config
    from sera.adapters.discord.app import token

    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2Nzg5.secret-token")
    assert token(Config()) == "MTIzNDU2Nzg5.secret-token"
    assert "DISCORD_TOKEN" not in os.environ


# A stand-in for the bot: it takes its token (as ``sera run`` does) and holds another user's upload in a
# memfd. Then a child of the same user that is not the decoder (whatever else the bot or its user runs)
# tries to read the bot's environment and open files through /proc. ``plain`` is the control: the
# bot made dumpable again.
BOT = """
import os, subprocess, sys
from sera.config import Config
from sera.adapters.discord.app import token
secret = token(Config())
other = os.memfd_create("sera-upload")
os.write(other, b"OTHER-USERS-AUDIO")
if sys.argv[2] == "plain":
    import ctypes; ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
print(subprocess.run([sys.argv[1]], capture_output=True, env={"PATH": os.defpath}).stdout.decode(errors="replace"))
"""
PROBE = 'cat /proc/$PPID/environ; for fd in /proc/$PPID/fd/*; do case "$(readlink "$fd")" in /memfd:*) cat "$fd";; esac; done\n'


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv (util-linux) to take the bot's capabilities away")
def test_a_non_dumpable_bot_shuts_proc_to_children_of_its_own_user(open_folder: Path) -> None:
    """The same uid for bot and child, and no capability to override it (as for a bot run by an ordinary
    user): the reads work on a dumpable process (the control) and fail once the bot is non-dumpable."""
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-all") if os.geteuid() == 0 else ()
    probe = wrapper(open_folder, PROBE)
    env = dict(os.environ, DISCORD_TOKEN="MTIzNDU2Nzg5.secret-token")
    for how, readable in (("plain", True), ("confined", False)):
        done = subprocess.run([*drop, sys.executable, "-c", BOT, str(probe), how], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert done.returncode == 0, done.stderr
        assert ("secret-token" in done.stdout) is readable and ("OTHER-USERS-AUDIO" in done.stdout) is readable, how


def test_the_token_can_come_from_a_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.adapters.discord.app import token
    from sera.config import Config

    (tmp_path / "DISCORD_TOKEN").write_text("MTIzNDU2Nzg5.from-a-credential\n")
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert token(Config()) == "MTIzNDU2Nzg5.from-a-credential"
