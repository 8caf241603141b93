"""A local stand-in for a Discord voice server: DAVE key exchange, encrypted RTP, a receiving voice client.

DAVE's group key is agreed over MLS, with the voice server as MLS "external sender": it announces its
signing key, then proposes adding each member's key package; one member commits, the others join
through the Welcome. ``VoiceServer`` plays that role with a real P-256 key (``cryptography``), so two
or more real ``davey.DaveSession`` objects reach a shared epoch and genuinely encrypted Opus frames can
be fed through sera's receive path. Proposals are MLS 1.0 PublicMessages (RFC 9420), built here byte
by byte: the exact wire format is the point of the test.

``FakeVoiceClient`` is just enough of ``discord.ext.voice_recv.VoiceRecvClient`` for the library's own
``AudioReader`` (transport decryption, jitter buffer, packet router) to run on datagrams the test
"sends" with ``deliver``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("davey", reason="voice-channel tests need the [voice] extra: pip install -e '.[voice]'")
pytest.importorskip("nacl", reason="voice-channel tests need the [voice] extra: pip install -e '.[voice]'")

import struct
from dataclasses import dataclass, field
from typing import Any

import davey
import nacl.secret
import nacl.utils
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from discord.ext.voice_recv.reader import AudioReader

MLS_VERSION = 1
PUBLIC_MESSAGE = 1
SENDER_EXTERNAL = 2
CONTENT_PROPOSAL = 2
PROPOSAL_ADD = 1
CREDENTIAL_BASIC = 1
TRANSPORT_MODE = "aead_xchacha20_poly1305_rtpsize"
OPUS_PAYLOAD_TYPE = 0x78
SAMPLES_PER_FRAME = 960


def varint(n: int) -> bytes:
    """MLS variable-length integer (RFC 9420, section 2.1.2)."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return (0x4000 | n).to_bytes(2, "big")
    return (0x8000_0000 | n).to_bytes(4, "big")


def vector(data: bytes) -> bytes:
    return varint(len(data)) + data


class VoiceServer:
    """The MLS external sender of one voice channel."""

    def __init__(self, channel_id: int) -> None:
        self.channel_id = channel_id
        self._key = ec.generate_private_key(ec.SECP256R1())

    def external_sender(self) -> bytes:
        """Opcode 25's payload: the signing key and a basic credential."""
        public = self._key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return vector(public) + CREDENTIAL_BASIC.to_bytes(2, "big") + vector(b"\x00")

    def add_proposals(self, epoch: int, key_packages: list[bytes]) -> bytes:
        """Opcode 27's append payload: one signed Add proposal per key package."""
        return vector(b"".join(self._add(epoch, kp) for kp in key_packages))

    def _add(self, epoch: int, key_package: bytes) -> bytes:
        content = (
            vector(self.channel_id.to_bytes(8, "big"))  # group id
            + epoch.to_bytes(8, "big")
            + bytes([SENDER_EXTERNAL]) + (0).to_bytes(4, "big")  # external sender #0
            + vector(b"")  # authenticated data
            + bytes([CONTENT_PROPOSAL]) + PROPOSAL_ADD.to_bytes(2, "big") + key_package
        )  # fmt: skip
        wire = MLS_VERSION.to_bytes(2, "big") + PUBLIC_MESSAGE.to_bytes(2, "big")
        to_sign = vector(b"MLS 1.0 FramedContentTBS") + vector(wire + content)
        signature = self._key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        return wire + content + vector(signature)

    def establish(self, committer: davey.DaveSession, joiners: list[davey.DaveSession]) -> None:
        """Run the key exchange: ``committer`` commits the additions, ``joiners`` process the Welcome."""
        for session in [committer, *joiners]:
            session.set_external_sender(self.external_sender())
        packages = [s.get_serialized_key_package() for s in joiners]
        committer.get_serialized_key_package()
        result = committer.process_proposals(davey.ProposalsOperationType.append, self.add_proposals(committer.epoch or 0, packages))
        assert result is not None and result.welcome is not None
        committer.process_commit(result.commit)
        for session in joiners:
            session.process_welcome(result.welcome)


@dataclass
class Speaker:
    """One member's sending side: DAVE session, SSRC, RTP counters and transport nonce."""

    user_id: int
    ssrc: int
    dave: davey.DaveSession
    sequence: int = 0
    timestamp: int = 123_456
    nonce: int = 0

    def packet(self, opus: bytes, secret_key: bytes, encrypt: bool = True) -> bytes:
        """One RTP datagram as the voice server relays it: DAVE-encrypted Opus inside transport encryption."""
        payload = self.dave.encrypt_opus(opus) if encrypt else opus
        header = struct.pack(">BBHII", 0x80, OPUS_PAYLOAD_TYPE, self.sequence & 0xFFFF, self.timestamp & 0xFFFF_FFFF, self.ssrc)
        nonce = bytearray(24)
        struct.pack_into(">I", nonce, 0, self.nonce)
        box = nacl.secret.Aead(secret_key)
        sealed = box.encrypt(payload, header, bytes(nonce)).ciphertext
        self.sequence += 1
        self.timestamp += SAMPLES_PER_FRAME
        self.nonce += 1
        return header + sealed + bytes(nonce[:4])


@dataclass(frozen=True)
class FakeMember:
    id: int
    display_name: str
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


class _Connection:
    def __init__(self, dave: davey.DaveSession) -> None:
        self.dave_session: davey.DaveSession | None = dave
        self.listeners: list[Any] = []
        self.socket = None  # the keep-alive thread fails to send and stops, as when disconnected

    def add_socket_listener(self, callback: Any) -> None:
        self.listeners.append(callback)

    def remove_socket_listener(self, callback: Any) -> None:
        self.listeners.remove(callback)


@dataclass
class FakeVoiceClient:
    """What ``AudioReader`` and sera's listening cog use of a ``VoiceRecvClient``."""

    guild: Any
    channel: Any
    dave: davey.DaveSession
    secret_key: bytes = field(default_factory=lambda: nacl.utils.random(32))
    mode: str = TRANSPORT_MODE
    connected: bool = True

    def __post_init__(self) -> None:
        self._connection = _Connection(self.dave)
        self._ssrc_to_id: dict[int, int] = {}
        self._reader: AudioReader | None = None
        self.client = self

    # the parts of VoiceRecvClient the reader calls
    def _get_id_from_ssrc(self, ssrc: int) -> int | None:
        return self._ssrc_to_id.get(ssrc)

    def get_user(self, user_id: int) -> Any:
        return None

    def dispatch_sink(self, *args: Any, **kwargs: Any) -> None:
        pass

    def wait_until_connected(self, timeout: float | None = None) -> bool:
        return False

    def is_connected(self) -> bool:
        return self.connected

    def stop_listening(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    # the parts sera calls
    def listen(self, sink: Any, *, after: Any = None) -> None:
        self._reader = AudioReader(sink, self, after=after)  # type: ignore[arg-type]
        self._reader.start()

    async def disconnect(self, *, force: bool = False) -> None:
        self.connected = False

    # the test's side: what the voice server announces and sends
    def speaking(self, speaker: Speaker) -> None:
        """Opcode 5 (SPEAKING): from now on the speaker's SSRC maps to their user id."""
        self._ssrc_to_id[speaker.ssrc] = speaker.user_id
        if self._reader is not None:
            self._reader.packet_router.set_user_id(speaker.ssrc, speaker.user_id)

    def deliver(self, datagram: bytes) -> None:
        for callback in list(self._connection.listeners):
            callback(datagram)
