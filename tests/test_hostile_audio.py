"""Files a stranger can send, made by the tests with real ffmpeg: ffmpeg may read only the file itself,
within bounded memory, time and output, without the bot's secrets and without leaving the upload on disk."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pydub import AudioSegment

from sera.audio import SAMPLE_RATE, decode
from sera.errors import AudioError
from tests.conftest import ROOT, encode, tone


def ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *arguments], check=True)


@pytest.fixture(scope="module")
def host_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file on the bot's host that a crafted upload must not be able to reach."""
    path = tmp_path_factory.mktemp("host") / "private.ts"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=3", "-c:a", "mp2", "-f", "mpegts", str(path))
    return path


@pytest.mark.slow
def test_many_huge_video_streams_cost_no_memory_and_the_audio_still_decodes(tmp_path: Path) -> None:
    """12 PNG streams of 8192x8192 beside 2 s of Opus, named .webm: ffmpeg used 2.4 GB probing them."""
    hostile = tmp_path / "voice-message.webm"
    ffmpeg("-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi", "-i", "color=c=red:s=8192x8192:d=0.04:r=25",
           *[a for _ in range(12) for a in ("-map", "1:v")], "-map", "0:a", "-c:v", "png", "-c:a", "libopus",
           "-f", "matroska", str(hostile))  # fmt: skip
    assert hostile.stat().st_size < 5_000_000
    # A fresh interpreter, so that the peak memory of its children is this decode's ffmpeg alone.
    script = (
        "import resource, sys; from sera.audio import decode; "
        "samples = decode(open(sys.argv[1], 'rb').read()); "
        "print(samples.size, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(hostile)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    size, peak_kib = map(int, done.stdout.split())
    assert abs(size / SAMPLE_RATE - 2.0) < 0.1  # the first audio stream, decoded
    assert peak_kib < 300_000, f"ffmpeg peaked at {peak_kib / 1024:.0f} MiB"


def test_the_address_space_limit_stops_ffmpeg_not_the_bot() -> None:
    from sera.audio import Limits

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


@pytest.fixture
def spy_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """ffmpeg behind a wrapper that records its environment and the upload folder while it runs."""
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    seen = {"env": tmp_path / "env.json", "listing": tmp_path / "listing.txt", "uploads": uploads}
    wrapper = tmp_path / "ffmpeg"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump(dict(os.environ), open({str(seen['env'])!r}, 'w'))\n"
        f"open({str(seen['listing'])!r}, 'w').write('\\n'.join(os.listdir({str(uploads)!r})))\n"
        f"os.execv({AudioSegment.converter if os.sep in AudioSegment.converter else '/usr/bin/ffmpeg'!r}, ['ffmpeg', *sys.argv[1:]])\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(AudioSegment, "converter", str(wrapper))
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))
    monkeypatch.setenv("TMPDIR", str(uploads))
    return seen


def test_ffmpeg_never_sees_the_discord_token(spy_ffmpeg: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2Nzg5.secret-token")
    decode((ROOT / "examples" / "voice-note.ogg").read_bytes())
    environment = json.loads(spy_ffmpeg["env"].read_text())
    assert "DISCORD_TOKEN" not in environment
    assert not any("secret-token" in value for value in environment.values())


def test_the_upload_is_never_written_to_disk(spy_ffmpeg: dict[str, Path]) -> None:
    samples = decode((ROOT / "examples" / "voice-note.ogg").read_bytes())
    assert samples.size > SAMPLE_RATE
    assert spy_ffmpeg["listing"].read_text() == ""  # nothing in the temporary folder while ffmpeg ran
    assert list(spy_ffmpeg["uploads"].iterdir()) == []


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
    from sera.audio import Limits, run_bounded

    code, out, err = run_bounded(["-v", "debug", "-i", "pipe:0", "-f", "s16le", "pipe:1"], Limits(), data=bytes(broken))
    assert len(err) <= 4_096 and out


def test_the_bot_takes_its_token_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sera.config import Config
    from sera.adapters.discord.app import token

    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2Nzg5.secret-token")
    assert token(Config()) == "MTIzNDU2Nzg5.secret-token"
    assert "DISCORD_TOKEN" not in os.environ
