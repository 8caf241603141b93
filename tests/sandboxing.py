"""Stand-ins for ffmpeg that try what a compromised decoder would, and a folder they may use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may read and write, so that an unconfined stand-in could use it whoever it runs
    as (``nobody`` where sera is root): what a confined one cannot do there is the sandbox's doing."""
    folder = Path(tempfile.mkdtemp(prefix="sera-spy-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def wrapper(folder: Path, body: str, name: str = "ffmpeg") -> Path:
    """An executable shell script standing in for ffmpeg (a shell script: ``nobody`` may not run this
    interpreter, which may live in root's home)."""
    script = folder / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def without_capabilities() -> tuple[str, ...]:
    """The words that run a command as this user without any capability: for root, a process that owns
    its files as an ordinary user does, and cannot change its uid (so the sandbox's Landlock and
    seccomp are all that stand between it and sera's files)."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed to run sera without capabilities")
    return ("setpriv", "--inh-caps=-all", "--bounding-set=-all")


class Listener:
    """A TCP port on loopback that counts who connected: the decoder must not be able to."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def connections(self) -> int:
        count = 0
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1

    def close(self) -> None:
        self.socket.close()


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
