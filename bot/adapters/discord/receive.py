"""Receiving a voice channel: consent first, then DAVE decryption, Opus decoding, and into the core.

Since March 2026 Discord encrypts voice end to end (DAVE). discord-ext-voice-recv removes only the
transport encryption, so every frame it hands over is still DAVE ciphertext; ``FrameDecryptor`` opens
it with the connection's own ``davey.DaveSession`` (which discord.py[voice] keeps through key
exchanges, epoch changes and re-initialisations; it is looked up afresh for every frame, never
cached). What other libraries learned the hard way is handled here:

- frames without DAVE's trailing marker are unencrypted (silence frames, passthrough during a
  transition, calls without E2EE) and are taken as they are;
- a frame that fails to decrypt, or that arrives before the key exchange completed, becomes 20 ms
  of silence for that speaker; it never raises into the receive thread;
- an unknown user (no decryptor yet) is the same: silence, counted.

``SeraSink.write`` runs on the library's packet-router thread. It drops the audio of anyone who has
not opted in before touching it, and otherwise only decrypts, decodes and queues: all analysis
happens in ``sera.live`` on the worker pool.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import davey
import discord
from discord.ext import voice_recv
from discord.opus import Decoder, OpusError

from sera.adapters.discord.people import who
from sera.live import FRAME_SAMPLES, SOURCE_CHANNELS, SOURCE_RATE, LiveSession

log = logging.getLogger(__name__)

DAVE_MARKER = b"\xfa\xfa"  # the last two bytes of every DAVE-encrypted frame
SILENCE = bytes(FRAME_SAMPLES * SOURCE_CHANNELS * 2)
RTP_WRAP = 1 << 32


class FrameDecryptor:
    """DAVE-decrypts received Opus frames; ``None`` means "use silence for this frame"."""

    def __init__(self, session: Callable[[], davey.DaveSession | None]) -> None:
        self._session = session
        self.counts: Counter[str] = Counter()

    def decrypt(self, user_id: int, frame: bytes) -> bytes | None:
        if not frame.endswith(DAVE_MARKER):
            self.counts["unencrypted"] += 1
            return frame
        session = self._session()
        if session is None or not session.ready:
            self.counts["before_key_exchange"] += 1
            return None
        try:
            plain = session.decrypt(user_id, davey.MediaType.audio, frame)
        except Exception as exc:  # davey raises ValueError; nothing may escape into the receive thread
            self.counts["failed"] += 1
            if self.counts["failed"] in (1, 100, 1000) or self.counts["failed"] % 10_000 == 0:
                log.warning("DAVE decryption failed for %s (%s); %d frames so far became silence",
                            who(user_id), exc, self.counts["failed"])  # fmt: skip
            return None
        self.counts["decrypted"] += 1
        return plain


class SpeakerClock:
    """Session time of a speaker's frames, from their RTP timestamps (48 kHz, wrapping at 2**32)."""

    def __init__(self) -> None:
        self._first: dict[int, tuple[int, float]] = {}

    def time(self, ssrc: int, timestamp: int, now: float) -> float:
        first = self._first.setdefault(ssrc, (timestamp, now))
        return first[1] + ((timestamp - first[0]) % RTP_WRAP) / SOURCE_RATE


class SeraSink(voice_recv.AudioSink):
    """The sink sera listens with: wants Opus (still DAVE-encrypted) and feeds PCM to a live session."""

    def __init__(self, session: LiveSession, dave: Callable[[], davey.DaveSession | None]) -> None:
        super().__init__()
        self.session = session
        self.decryptor = FrameDecryptor(dave)
        self.clock = SpeakerClock()
        self._decoders: dict[int, Decoder] = {}
        self.counts: Counter[str] = Counter()

    def wants_opus(self) -> bool:
        return True

    def write(self, user: discord.abc.User | None, data: voice_recv.VoiceData) -> None:
        try:
            self._write(user, data)
        except Exception:  # an exception here would stop the library's router thread: never let one out
            self.counts["errors"] += 1
            log.exception("dropping a voice frame after an unexpected error")

    def _write(self, user: discord.abc.User | None, data: voice_recv.VoiceData) -> None:
        if user is None:
            self.counts["unknown_speaker"] += 1  # no SSRC -> user mapping yet: nobody to ask for consent
            return
        speaker = str(user.id)
        if not self.session.consents(speaker):
            self.counts["no_consent"] += 1  # dropped unprocessed: not decrypted, not decoded
            return
        packet = data.packet
        if not packet:  # a lost packet the library stands in for; the track fills the gap with silence
            self.counts["lost"] += 1
            return
        frame = self.decryptor.decrypt(user.id, bytes(data.opus or b""))
        pcm = SILENCE if frame is None else self._decode(user.id, frame)
        at = self.clock.time(packet.ssrc, packet.timestamp, self.session.elapsed())
        self.session.feed(speaker, pcm, at)

    def _decode(self, user_id: int, frame: bytes) -> bytes:
        decoder = self._decoders.get(user_id)
        if decoder is None:
            decoder = self._decoders[user_id] = Decoder()
        try:
            return decoder.decode(frame, fec=False)
        except OpusError:
            self.counts["undecodable"] += 1
            return SILENCE

    def cleanup(self) -> None:
        self._decoders.clear()
