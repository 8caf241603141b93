"""Opening a file a person named (a config, an audio file) so that what is checked is what is read.

The file is opened first (without blocking, so a FIFO cannot hang the open) and then examined through
the open handle: a name swapped for a link or a device between a check and the read changes nothing,
and a folder, a pipe or a device is refused before a byte is read from it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegular(ValueError):
    """The name is not a regular file; ``kind`` says what it is ("folder", "pipe", "device or socket")."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is a {kind}, not a regular file")
        self.kind = kind


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file; ``OSError`` where it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular(path, "folder" if stat.S_ISDIR(mode) else "pipe" if stat.S_ISFIFO(mode) else "device or socket")
    return os.fdopen(fd, "rb")
