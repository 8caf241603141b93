"""Voice channels through the real receive path: DAVE-encrypted RTP -> voice_recv's reader -> SeraSink -> live session.

The DAVE sessions are real ``davey`` sessions that completed an MLS key exchange with a local stand-in
for the voice server (``tests/dave_harness.py``); the frames are real Opus from libopus; the datagrams
go through discord-ext-voice-recv's own transport decryption, jitter buffer and packet router.
"""

from __future__ import annotations

import time
from pathlib import Path

import davey
import numpy as np
import pytest

pytest.importorskip("davey", reason="voice-channel tests need the [voice] extra: pip install -e '.[voice]'")
from discord.opus import Encoder

from sera.config import LiveOptions
from sera.adapters.discord.receive import FrameDecryptor, SeraSink
from sera.live import LiveSession
from sera.sessions import SessionStore
from tests.dave_harness import FakeVoiceClient, Speaker, VoiceServer
from tests.voice_sim import Clock, Turn, frames, load_speech, speech_extent

CHANNEL = 927_310_423_890_473_011
BOT, ALICE, BOB, CAROL = 1001, 2002, 3003, 4004


def dave(user: int) -> davey.DaveSession:
    return davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, user, CHANNEL)


@pytest.fixture()
def group() -> tuple[VoiceServer, davey.DaveSession, davey.DaveSession, davey.DaveSession]:
    server = VoiceServer(CHANNEL)
    bot, alice, bob = dave(BOT), dave(ALICE), dave(BOB)
    server.establish(bot, [alice, bob])
    return server, bot, alice, bob


def opus_frame(seed: int = 0) -> bytes:
    """One 20 ms Opus frame of a 48 kHz stereo tone."""
    t = np.arange(960) / 48_000
    wave = (0.3 * np.sin(2 * np.pi * (220 + 10 * seed) * t) * 32767).astype("<i2")
    return Encoder().encode(np.repeat(wave, 2).tobytes(), 960)


# -- DAVE decryption ------------------------------------------------------------------------------------


def test_key_exchange_with_the_stand_in_server_gives_every_member_the_same_epoch(group):
    _, bot, alice, bob = group
    assert bot.ready and alice.ready and bob.ready
    assert bot.epoch == alice.epoch == bob.epoch == 1
    assert sorted(bot.get_user_ids()) == sorted(str(u) for u in (BOT, ALICE, BOB))


def test_encrypted_frames_are_decrypted_per_sender(group):
    _, bot, alice, bob = group
    decryptor = FrameDecryptor(lambda: bot)
    frame_a, frame_b = opus_frame(1), opus_frame(2)
    sealed_a, sealed_b = alice.encrypt_opus(frame_a), bob.encrypt_opus(frame_b)
    assert sealed_a != frame_a and sealed_a.endswith(b"\xfa\xfa")
    assert decryptor.decrypt(ALICE, sealed_a) == frame_a
    assert decryptor.decrypt(BOB, sealed_b) == frame_b
    assert decryptor.counts["decrypted"] == 2


def test_unencrypted_passthrough_frames_are_accepted(group):
    _, bot, *_ = group
    decryptor = FrameDecryptor(lambda: bot)
    plain = opus_frame(3)
    assert decryptor.decrypt(ALICE, plain) == plain
    assert decryptor.counts["unencrypted"] == 1


def test_a_frame_that_fails_to_decrypt_becomes_silence_without_raising(group):
    _, bot, alice, _ = group
    decryptor = FrameDecryptor(lambda: bot)
    sealed = bytearray(alice.encrypt_opus(opus_frame()))
    sealed[3] ^= 0xFF  # tampered in transit
    assert decryptor.decrypt(ALICE, bytes(sealed)) is None
    assert decryptor.decrypt(ALICE, alice.encrypt_opus(opus_frame())[:-7] + b"\x00" * 5 + b"\xfa\xfa") is None
    assert decryptor.counts["failed"] == 2


def test_a_user_without_a_decryptor_gets_silence(group):
    _, bot, alice, _ = group
    stranger = 9009
    decryptor = FrameDecryptor(lambda: bot)
    assert decryptor.decrypt(stranger, alice.encrypt_opus(opus_frame())) is None


def test_frames_before_the_key_exchange_completes_are_dropped(group):
    server, _, alice, _ = group
    fresh = dave(BOT)
    fresh.set_external_sender(server.external_sender())
    decryptor = FrameDecryptor(lambda: fresh)
    assert not fresh.ready
    assert decryptor.decrypt(ALICE, alice.encrypt_opus(opus_frame())) is None
    no_session = FrameDecryptor(lambda: None)
    assert no_session.decrypt(ALICE, alice.encrypt_opus(opus_frame())) is None
    assert decryptor.counts["before_key_exchange"] == 1


def test_a_reinitialised_session_decrypts_again_after_the_new_key_exchange(group):
    """Discord re-creates the MLS group (a new epoch 1) when members change protocol or rejoin: the
    speaker must be heard again afterwards, not left silent for the rest of the session."""
    _, bot, alice, _ = group
    decryptor = FrameDecryptor(lambda: bot)  # looked up per frame, like the connection's session
    assert decryptor.decrypt(ALICE, alice.encrypt_opus(opus_frame())) is not None
    in_flight = alice.encrypt_opus(opus_frame())
    bot.reinit(davey.DAVE_PROTOCOL_VERSION, BOT, CHANNEL)
    alice.reinit(davey.DAVE_PROTOCOL_VERSION, ALICE, CHANNEL)
    assert decryptor.decrypt(ALICE, in_flight) is None  # old key, mid-exchange: silence, no exception
    VoiceServer(CHANNEL).establish(bot, [alice])
    frame = opus_frame(4)
    assert decryptor.decrypt(ALICE, alice.encrypt_opus(frame)) == frame


# -- the whole receive path ----------------------------------------------------------------------------


class _Guild:
    def __init__(self, members: dict[int, object]) -> None:
        self.members = members
        self.id = 555

    def get_member(self, user_id: int) -> object | None:
        return self.members.get(user_id)


def _speakers(group) -> tuple[VoiceServer, davey.DaveSession, list[Speaker]]:
    server, bot, alice, bob = group
    carol = dave(CAROL)
    # Carol joins later: the group is re-formed with everyone (a new MLS group, as Discord does).
    for session, user in ((bot, BOT), (alice, ALICE), (bob, BOB)):
        session.reinit(davey.DAVE_PROTOCOL_VERSION, user, CHANNEL)
    server.establish(bot, [alice, bob, carol])
    return server, bot, [Speaker(ALICE, 11, alice), Speaker(BOB, 22, bob), Speaker(CAROL, 33, carol)]


@pytest.mark.slow
def test_encrypted_speech_through_the_receive_path_is_analysed_only_for_those_who_opted_in(
    group, pipeline, tmp_path: Path, speech_wav: Path
):
    from tests.dave_harness import FakeMember

    _, bot, speakers = _speakers(group)
    members = {s.user_id: FakeMember(s.user_id, f"user{s.user_id}") for s in speakers}
    voice = FakeVoiceClient(guild=_Guild(members), channel=None, dave=bot)
    store = SessionStore(tmp_path / "sera.db")
    info = store.start("555", "777", str(ALICE))
    opted_in = {str(ALICE), str(BOB)}
    clock = Clock()  # packets go in faster than real time: the session's clock follows them
    live = LiveSession(pipeline, store, info, LiveOptions(enabled=True), consents=opted_in.__contains__, clock=clock)
    sink = SeraSink(live, lambda: voice._connection.dave_session)
    voice.listen(sink)
    for speaker in speakers:
        voice.speaking(speaker)

    speech = load_speech(str(speech_wav))
    turns = [Turn(str(ALICE), 0.5, speech), Turn(str(BOB), 2.0, speech), Turn(str(CAROL), 1.0, speech)]
    by_user = {str(s.user_id): s for s in speakers}
    encoders = {user: Encoder() for user in by_user}  # each client has its own Opus encoder state
    for i, (at, speaker_id, pcm) in enumerate(frames(turns)):
        speaker = by_user[speaker_id]
        clock.now = at
        voice.deliver(speaker.packet(encoders[speaker_id].encode(pcm, 960), voice.secret_key))
        if i % 50 == 0:
            time.sleep(0.005)  # let the router thread keep up, as real 20 ms pacing would
    deadline = time.monotonic() + 10
    while sum(len(t.queue) for t in live.tracks.values()) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    voice.stop_listening()
    summary = live.finish()

    rows = store.utterances(info.id)
    assert {r.speaker for r in rows} == {str(ALICE), str(BOB)}  # Carol never opted in: no rows
    assert sink.counts["no_consent"] > 100  # her frames were dropped, undecrypted
    assert sink.decryptor.counts["decrypted"] > 200 and sink.decryptor.counts["failed"] == 0
    assert all(r.label for r in rows)
    alice = [r for r in rows if r.speaker == str(ALICE)]
    # Each speaker's timeline is anchored at the arrival of their first packet (RTP timestamps are
    # per sender), and these arrived faster than real time, so check the utterance's extent, not its offset.
    assert alice[-1].end - alice[0].start == pytest.approx(speech_extent(speech), abs=0.4)
    assert all(t.late == 0 for t in live.tracks.values())
    assert {s.speaker for s in summary.speakers} == {str(ALICE), str(BOB)}
    assert summary.speakers[0].share == pytest.approx(0.5, abs=0.05)
    store.close()
