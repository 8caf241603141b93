"""The model files sera ships, checked before they are loaded.

``models/SHA256SUMS`` (in the package, beside the models) holds each shipped file's sha256, in
``sha256sum``'s format. A file it lists that no longer matches (a truncated copy, a disk error, an edit)
is refused with one line naming it, instead of being run. Files it does not list (an operator's own
models, or any in a folder without the list) are not checked. ``sera train`` records the sums of the
files it writes, so a retrained model is shipped with its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sera.errors import ModelError

SUMS = "SHA256SUMS"
CHUNK_BYTES = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sums(folder: Path) -> dict[str, str]:
    """File name -> sha256, as the folder's ``SHA256SUMS`` lists them (empty where there is none)."""
    try:
        lines = (folder / SUMS).read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {name.lstrip("*"): digest for digest, _, name in (line.partition("  ") for line in lines if line.strip())}


def verify(path: Path) -> None:
    """Refuse a listed model file whose bytes are not the ones listed."""
    expected = sums(path.parent).get(path.name)
    if expected is not None and sha256(path) != expected:
        raise ModelError(f"{path} is not the file sera shipped (its sha256 differs): reinstall sera-voice, or restore it from git")


def record(path: Path) -> None:
    """List ``path``'s sha256 in its folder's ``SHA256SUMS`` (training, after writing a model)."""
    listed = {**sums(path.parent), path.name: sha256(path)}
    (path.parent / SUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(listed.items())))
