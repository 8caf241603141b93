"""``/listen`` and ``/sessions`` through the offline harness, with DAVE-encrypted voice from four members.

The cog is the real one; only joining the channel is replaced (there is no Discord here) by a voice
client whose receive side is discord-ext-voice-recv's own ``AudioReader``, fed real encrypted RTP.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field, replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import davey
import discord
import numpy as np
import pytest

pytest.importorskip("davey", reason="voice-channel tests need the [voice] extra: pip install -e '.[voice]'")
from discord.opus import Encoder

from sera.config import Config, LiveOptions
from sera.adapters.discord.privacy import ForgetView
from sera.adapters.discord.history import SessionHistory
from sera.adapters.discord.listen import Listening
from sera.pipeline import Pipeline
from sera.sessions import INTERRUPTED
from sera.summary import Utterance
from tests.conftest import SAMPLE_NOTE, eventually, say
from tests.dave_harness import FakeVoiceClient, Speaker, VoiceServer
from sera.adapters.discord.testing import FakeInteraction, Harness, invoke
from tests.voice_sim import Clock, Turn, frames, load_speech

CHANNEL = 880_000_000_000_000_001
ROUTER_SLACK_SECONDS = 0.5
BOT, ALICE, BOB, CAROL, DAVE = 1, 1001, 1002, 1003, 1004
LINES = {
    ALICE: "We should go through the practice exam before Friday, question by question.",
    BOB: "I am so tired of this course, nothing I study ever seems to stick.",
    CAROL: "I will not be analysed, I am only here to listen to the others.",
    DAVE: "Can someone share the slides from the lecture on Monday please?",
}


@dataclass
class SentMessage:
    content: str | None
    kwargs: dict[str, Any]
    edits: list[str] = field(default_factory=list)

    async def edit(self, content: str | None = None, **kwargs: Any) -> None:
        self.edits.append(content)


@dataclass
class TextChannel:
    id: int = 770
    sent: list[SentMessage] = field(default_factory=list)

    async def send(self, content: str | None = None, **kwargs: Any) -> SentMessage:
        self.sent.append(SentMessage(content, kwargs))
        return self.sent[-1]


@dataclass
class VoiceChannel:
    id: int = CHANNEL
    members: list[Any] = field(default_factory=list)
    connect: bool = True

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def permissions_for(self, member: Any) -> discord.Permissions:
        return discord.Permissions(connect=self.connect)


@dataclass(eq=False)
class Member:
    id: int
    display_name: str
    bot: bool = False
    voice: Any = None
    guild: Any = None

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class VoiceState:
    channel: VoiceChannel | None


class Guild:
    def __init__(self, voice: VoiceChannel) -> None:
        self.id = 555
        self.name = "study group"
        self.me = Member(BOT, "sera", bot=True, guild=self)
        self.by_id: dict[int, Member] = {BOT: self.me}
        for user, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol"), (DAVE, "Dave")):
            self.by_id[user] = Member(user, name, voice=VoiceState(voice), guild=self)
        voice.members = list(self.by_id.values())

    def get_member(self, user_id: int) -> Member | None:
        return self.by_id.get(user_id)


class OfflineListening(Listening, name="Listening"):
    """The real cog; joining a channel gives a voice client fed by the test instead of Discord."""

    def __init__(self, *args: Any, server_dave: davey.DaveSession, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_dave = server_dave
        self.clients: list[FakeVoiceClient] = []
        self.refuse: Exception | None = None

    async def connect(self, channel: VoiceChannel) -> FakeVoiceClient:
        if self.refuse is not None:
            raise self.refuse
        client = FakeVoiceClient(guild=self.guild, channel=channel, dave=self.server_dave)
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    folder = tmp_path_factory.mktemp("voices")
    return {user: load_speech(str(say(text, folder / f"{user}.wav"))) for user, text in LINES.items()}


class World:
    """A harness, a guild with a voice and a text channel, DAVE sessions for everyone, the cog."""

    def __init__(self, tmp_path: Path, pipeline: Pipeline, **live: Any) -> None:
        config = Config(live=LiveOptions(enabled=True, tick_seconds=0.1, **live))
        self.harness = Harness(tmp_path, config=config, pipeline=pipeline)
        self.voice = VoiceChannel()
        self.text = TextChannel()
        self.guild = Guild(self.voice)
        server = VoiceServer(CHANNEL)
        self.bot_dave = davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, BOT, CHANNEL)
        members = {u: davey.DaveSession(davey.DAVE_PROTOCOL_VERSION, u, CHANNEL) for u in LINES}
        server.establish(self.bot_dave, list(members.values()))
        self.speakers = {u: Speaker(u, 100 + i, members[u]) for i, u in enumerate(LINES)}
        self.clock = Clock()  # the sessions' clock: frames go in ten times faster than real time
        self.cog: OfflineListening
        self.history: SessionHistory

    async def start(self) -> OfflineListening:
        bot = self.harness.bot
        await self.harness.log_in()
        self.cog = OfflineListening(bot, self.harness.pipeline, bot.sessions, self.harness.store, self.harness.config.live,
                                    server_dave=self.bot_dave)  # fmt: skip
        self.cog.guild = self.guild
        self.cog.clock = self.clock
        await bot.add_cog(self.cog)
        self.history = SessionHistory(bot.pipeline, bot.sessions)
        await bot.add_cog(self.history)
        return self.cog

    def interaction(self, user: int) -> FakeInteraction:
        interaction = self.harness.interaction(user=self.guild.by_id[user])
        interaction.guild_id = self.guild.id
        interaction.guild = self.guild
        interaction.channel = self.text
        interaction.channel_id = self.text.id
        return interaction

    def opt_in(self, *users: int) -> None:
        for user in users:
            self.harness.bot.sessions.set_consent(str(self.guild.id), str(user), True)

    def turn_on_live_feedback(self) -> None:
        self.harness.store.update_settings(self.guild.id, lambda s: replace(s, live_feedback=True))

    async def alice_talking(self, speech: dict[int, np.ndarray]) -> OfflineListening:
        """The cog, with a session Alice (opted in) started and spoke in."""
        cog = await self.start()
        self.opt_in(ALICE)
        await invoke(cog.start, self.interaction(ALICE))
        await self.talk([Turn(str(ALICE), 0.2, speech[ALICE])])
        return cog

    async def talk(self, turns: list[Turn], stamp: Callable[[int, float], int | None] = lambda user, at: None) -> None:
        """Send the turns as DAVE-encrypted RTP through the voice client, about ten times real time, with the
        session clock trailing the frames; then a pause. ``stamp`` may forge a frame's RTP
        timestamp (None: the sender's own)."""
        client = self.cog.clients[-1]
        for speaker in self.speakers.values():
            client.speaking(speaker)
        encoders = {user: Encoder() for user in self.speakers}  # each client has its own Opus encoder state
        live = self.cog.active[self.guild.id].live
        for i, (at, user, pcm) in enumerate(frames(turns)):
            # The clock trails the frames by half a second: the library's router thread hands frames over
            # a little after they are delivered, and a clock ahead of them would close utterances early.
            self.clock.now = max(self.clock.now, at - ROUTER_SLACK_SECONDS)
            speaker = self.speakers[int(user)]
            forged = stamp(int(user), at)
            honest = speaker.timestamp
            if forged is not None:
                speaker.timestamp = forged
            client.deliver(speaker.packet(encoders[int(user)].encode(pcm, 960), client.secret_key))
            if forged is not None:
                speaker.timestamp = honest + 960
            if i % 10 == 9:
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)  # the library's router thread hands over what it buffered
        await eventually(lambda: not any(track.queue for track in live.tracks.values()), 10)  # the ticks catch up
        self.clock.now += ROUTER_SLACK_SECONDS + 1.0  # a pause: every speaker's utterance closes at the next tick


def sent_texts(interaction: FakeInteraction) -> str:
    return " ".join(str(kw.get("content")) for kw in interaction.sent())


def test_the_bot_loads_every_feature_as_an_extension(tmp_path: Path, pipeline: Pipeline) -> None:
    """What ``setup_hook`` loads: one cog per feature, each from its extension's ``setup(bot)``; live
    listening only where the operator enabled it."""
    for live, expected in ((False, set()), (True, {"Listening", "SessionHistory"})):
        harness = Harness(tmp_path / str(live), config=Config(live=LiveOptions(enabled=live)), pipeline=pipeline)
        asyncio.run(harness.bot.load_cogs())
        assert set(harness.bot.cogs) == {"VoiceNotes", "CatchUp", "ServerSettings", "Privacy", "Health"} | expected
        commands = {c.name for c in harness.bot.tree.get_commands()}
        assert {"emotion", "sera", "privacy", "forget", "Analyse emotion"} <= commands
        assert ("listen" in commands) is live and ("sessions" in commands) is live
        harness.close()


@pytest.mark.slow
def test_a_study_session_from_start_to_summary(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.start()
        alice_starts = world.interaction(ALICE)
        await invoke(cog.start, alice_starts)
        (notice,) = [kw for kind, kw in alice_starts.log if kind == "followup"]
        embed = notice["embed"]
        assert "listening" in embed.title and "<@1001>" in embed.description
        assert "Nothing is recorded" in embed.description and "opted in" in embed.description
        buttons = {item.custom_id: item for item in notice["view"].children}
        assert set(buttons) == {"sera:listen:optin", "sera:listen:optout"}

        for user in (ALICE, BOB, DAVE):  # Carol never opts in; Dave opts in, then out
            await buttons["sera:listen:optin"].callback(world.interaction(user))
        dave_out = world.interaction(DAVE)
        await invoke(cog.optout, dave_out)
        assert "ignores your voice" in sent_texts(dave_out)

        turns = [Turn(str(ALICE), 0.3, speech[ALICE]), Turn(str(BOB), 2.0, speech[BOB]),
                 Turn(str(CAROL), 5.0, speech[CAROL]), Turn(str(DAVE), 9.0, speech[DAVE])]  # fmt: skip
        await world.talk(turns)
        # Rows are written while the session runs, not at the end: each utterance as soon as it closes
        # (at the latest when the session clock passes its speaker's last packet).
        await eventually(lambda: world.harness.bot.sessions.utterances(1), 15)
        assert world.harness.bot.sessions.utterances(1)

        stop = world.interaction(BOB)
        await invoke(cog.stop, stop)
        assert "Summary coming up" in sent_texts(stop)
        assert cog.active == {} and not cog.clients[-1].connected

        summary = world.text.sent[-1].kwargs
        assert summary["embed"].title.startswith("📋 Session summary")
        talk = summary["embed"].fields[0].value
        assert "<@1001>" in talk and "<@1002>" in talk and "<@1003>" not in talk and "<@1004>" not in talk
        assert [f.filename for f in summary["files"]] == ["session-1.png"]  # no notes: nobody agreed to transcripts
        rows = world.harness.bot.sessions.utterances(1)
        assert {r.speaker for r in rows} == {str(ALICE), str(BOB)}

        listed = world.interaction(ALICE)
        await invoke(world.history.list_sessions, listed)
        assert "`#1`" in sent_texts(listed) and "ended" in sent_texts(listed)
        shown = world.interaction(ALICE)
        await invoke(world.history.show, shown, 1)
        assert shown.sent()[-1]["embed"].title.startswith("📋")
        exported = world.interaction(ALICE)
        await invoke(world.history.export, exported, 1)
        names = [f.filename for f in exported.sent()[-1]["files"]]
        assert names == ["session-1.csv", "session-1.json", "session-1-notes.md"]
        for command in (world.history.show, world.history.export):  # Carol neither spoke nor started it
            carol = world.interaction(CAROL)
            await invoke(command, carol, 1)
            assert "history is for those who spoke in it" in sent_texts(carol) and "files" not in carol.sent()[-1]
            admin = world.interaction(CAROL)
            admin.permissions = discord.Permissions(manage_guild=True)
            await invoke(command, admin, 1)
            assert "history is for" not in sent_texts(admin)
        elsewhere = world.interaction(ALICE)
        elsewhere.guild_id = 999
        await invoke(world.history.show, elsewhere, 1)
        assert "No session #1 in this server" in sent_texts(elsewhere)

        forget = world.interaction(BOB)
        await world.harness.start()
        view = ForgetView(BOB, world.harness.privacy.forget_user)
        await view.confirm.callback(forget)
        assert "voice-channel utterances deleted" in sent_texts(forget)
        assert {r.speaker for r in world.harness.bot.sessions.utterances(1)} == {str(ALICE)}
        assert str(BOB) not in world.harness.bot.sessions.consenting(str(world.guild.id))

    asyncio.run(scenario())
    world.harness.close()


def test_start_needs_the_caller_in_a_voice_channel_and_the_connect_permission(tmp_path: Path, pipeline: Pipeline) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.start()
        outside = world.interaction(ALICE)
        world.guild.by_id[ALICE].voice = None
        await invoke(cog.start, outside)
        assert "Join a voice channel first" in sent_texts(outside)
        world.guild.by_id[ALICE].voice = VoiceState(world.voice)
        world.voice.connect = False
        refused = world.interaction(ALICE)
        await invoke(cog.start, refused)
        assert "Connect" in sent_texts(refused) and cog.active == {}
        world.voice.connect = True
        cog.refuse = asyncio.TimeoutError("timed out")
        timed_out = world.interaction(ALICE)
        await invoke(cog.start, timed_out)
        assert "couldn't join" in sent_texts(timed_out) and cog.active == {}
        assert "timed out" not in sent_texts(timed_out)  # the raw error goes to the log, not the channel
        cog.refuse = None
        await invoke(cog.start, world.interaction(ALICE))
        again = world.interaction(BOB)
        await invoke(cog.start, again)
        assert "already listening" in sent_texts(again)
        await cog.close()

    asyncio.run(scenario())
    world.harness.close()


def test_the_session_ends_when_the_channel_empties(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.alice_talking(speech)
        for user in LINES:  # everyone leaves; the bot is alone
            member = world.guild.by_id[user]
            world.voice.members.remove(member)
            await cog.on_voice_state_update(member, VoiceState(world.voice), VoiceState(None))
        assert cog.active == {}
        summary = world.text.sent[-1].kwargs["embed"]
        assert "everyone left" in summary.description
        assert "<@1001>" in summary.fields[0].value

    asyncio.run(scenario())
    world.harness.close()


def test_a_voice_disconnect_marks_the_session_interrupted_and_still_summarises_it(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.alice_talking(speech)
        await cog.on_voice_state_update(world.guild.me, VoiceState(world.voice), VoiceState(None))
        summary = world.text.sent[-1].kwargs["embed"]
        assert "(interrupted)" in summary.title and "disconnected" in summary.description
        assert world.harness.bot.sessions.info(1)[1] == INTERRUPTED
        assert world.harness.bot.sessions.utterances(1)

    asyncio.run(scenario())
    world.harness.close()


def test_a_failing_receive_thread_ends_the_session_as_interrupted(tmp_path: Path, pipeline: Pipeline) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.start()
        await invoke(cog.start, world.interaction(ALICE))
        loop = asyncio.get_running_loop()
        # the library calls ``after(error)`` on its own thread when its router dies
        await asyncio.to_thread(cog._receive_stopped, loop, world.guild.id, RuntimeError("socket closed"))
        await eventually(lambda: world.text.sent, 10)
        assert cog.active == {}
        assert "voice receive failed" in world.text.sent[-1].kwargs["embed"].description

    asyncio.run(scenario())
    world.harness.close()


def test_the_time_limit_ends_the_session(tmp_path: Path, pipeline: Pipeline) -> None:
    world = World(tmp_path, pipeline, max_session_minutes=0.01)

    async def scenario() -> None:
        cog = await world.start()
        await invoke(cog.start, world.interaction(ALICE))
        world.clock.now += 1.0  # past the 0.6 s limit
        await eventually(lambda: world.text.sent, 10)  # the summary is posted once the session is closed
        assert cog.active == {}
        assert "time limit" in world.text.sent[-1].kwargs["embed"].description

    asyncio.run(scenario())
    world.harness.close()


def test_sessions_a_crash_left_open_are_summarised_after_a_restart(tmp_path: Path, pipeline: Pipeline) -> None:
    first = World(tmp_path, pipeline)
    sessions = first.harness.bot.sessions
    info = sessions.start(str(first.guild.id), str(CHANNEL), str(ALICE), str(first.text.id))
    sessions.add(info.id, [Utterance(str(ALICE), 1.0, 4.0, "calm", 0.8, {"calm": 0.8, "sad": 0.2}, {})])
    first.harness.close()  # the process died with the session still "live"

    restarted = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await restarted.start()
        restarted.harness.bot.get_channel = lambda channel_id: restarted.text if channel_id == restarted.text.id else None
        restarted.harness.bot.get_guild = lambda guild_id: restarted.guild
        await cog.summarize_orphans()
        summary = restarted.text.sent[-1].kwargs["embed"]
        assert "(interrupted)" in summary.title and "restarted" in summary.description
        assert "<@1001>" in summary.fields[0].value

    asyncio.run(scenario())
    assert restarted.harness.bot.sessions.info(info.id)[1] == INTERRUPTED
    restarted.harness.close()


@pytest.mark.slow
def test_live_feedback_is_posted_then_edited_when_the_server_turned_it_on(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    world = World(tmp_path, pipeline, feedback_seconds=0.0)

    async def scenario() -> None:
        cog = await world.start()
        world.turn_on_live_feedback()
        world.opt_in(ALICE, BOB)
        await invoke(cog.start, world.interaction(ALICE))
        await world.talk([Turn(str(ALICE), 0.2, speech[ALICE]), Turn(str(BOB), 6.0, speech[BOB])])
        # Frames went in ~10x faster than real time, but a speaker's utterance closes once the session
        # clock is 0.6 s past their last packet: Bob's row (and the edit) come when real time catches up.
        def live_mood() -> list:
            return [m for m in world.text.sent if m.content and m.content.startswith("**Live mood**")]

        await eventually(lambda: (f := live_mood()) and f[0].edits and "<@1002>" in f[0].edits[-1], 15)
        feedback = live_mood()
        assert len(feedback) == 1 and "<@1001>" in feedback[0].content
        assert feedback[0].edits and "<@1002>" in feedback[0].edits[-1]
        await cog.close()

    asyncio.run(scenario())
    world.harness.close()


@pytest.mark.slow
def test_forget_mid_session_removes_the_speaker_everywhere_in_one_go(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    """Bob started the session and spoke; his /forget while it runs leaves no row, no name, no opt-in."""
    world = World(tmp_path, pipeline, feedback_seconds=0.0)

    async def scenario() -> None:
        cog = await world.start()
        await world.harness.start()
        world.turn_on_live_feedback()
        world.opt_in(ALICE, BOB)
        await invoke(cog.start, world.interaction(BOB))
        await world.talk([Turn(str(ALICE), 0.2, speech[ALICE]), Turn(str(BOB), 1.0, speech[BOB])])
        await eventually(lambda: {r.speaker for r in world.harness.bot.sessions.utterances(1)} == {str(ALICE), str(BOB)}, 15)

        ask = world.interaction(BOB)
        await invoke(world.harness.privacy.forget, ask)
        done = world.interaction(BOB)
        await ask.sent()[0]["view"].confirm.callback(done)
        assert "your name on 1 sessions you started" in sent_texts(done)
        active = cog.active[world.guild.id]
        assert str(BOB) not in active.consenting and str(BOB) not in active.moods and str(BOB) not in active.live.tracks

        await world.talk([Turn(str(BOB), 0.0, speech[BOB])])  # he is still in the channel, talking
        await invoke(cog.stop, world.interaction(ALICE))
        sessions = world.harness.bot.sessions
        assert {r.speaker for r in sessions.utterances(1)} == {str(ALICE)}
        assert str(BOB) not in sessions.consenting(str(world.guild.id))
        assert sessions.info(1).info.started_by == "forgotten"
        assert '"started_by": "forgotten"' in sessions.export_json(1)
        assert "<@1002>" not in world.text.sent[-1].kwargs["embed"].fields[0].value

    asyncio.run(scenario())
    world.harness.close()


def test_a_summary_is_posted_even_when_finishing_the_session_fails(tmp_path: Path, pipeline: Pipeline, speech, monkeypatch) -> None:
    world = World(tmp_path, pipeline)

    async def scenario() -> None:
        cog = await world.alice_talking(speech)
        await eventually(lambda: world.harness.bot.sessions.utterances(1), 15)

        def broken(*args: Any) -> None:
            raise RuntimeError("disk full")

        monkeypatch.setattr(world.harness.bot.sessions, "finish", broken)
        await invoke(cog.stop, world.interaction(ALICE))
        summary = world.text.sent[-1].kwargs["embed"]
        assert summary.title.startswith("📋 Session summary") and "<@1001>" in summary.fields[0].value

    asyncio.run(scenario())
    world.harness.close()


def test_an_orphaned_session_stays_open_until_its_summary_is_posted(tmp_path: Path, pipeline: Pipeline) -> None:
    first = World(tmp_path, pipeline)
    info = first.harness.bot.sessions.start(str(first.guild.id), str(CHANNEL), str(ALICE), str(first.text.id))
    first.harness.bot.sessions.add(info.id, [Utterance(str(ALICE), 1.0, 4.0, "calm", 0.8, {"calm": 0.8, "sad": 0.2}, {})])
    first.harness.close()  # the process died with the session still "live"

    class Refusing(TextChannel):
        async def send(self, content: str | None = None, **kwargs: Any) -> SentMessage:
            raise discord.HTTPException(type("R", (), {"status": 503, "reason": "unavailable"})(), "try later")

    for attempt, channel in enumerate((Refusing(), TextChannel())):
        world = World(tmp_path, pipeline)

        async def scenario() -> None:
            cog = await world.start()
            world.harness.bot.get_channel = lambda channel_id: channel if channel_id == channel.id else None
            world.harness.bot.get_guild = lambda guild_id: world.guild
            await cog.summarize_orphans()

        asyncio.run(scenario())
        status = world.harness.bot.sessions.info(info.id).status
        if attempt == 0:  # Discord refused the summary: the session is still open, to be posted next time
            assert status == "live"
        else:
            assert status == INTERRUPTED and "(interrupted)" in channel.sent[-1].kwargs["embed"].title
        world.harness.close()


def test_sessions_across_servers_are_capped(tmp_path: Path, pipeline: Pipeline) -> None:
    world = World(tmp_path, pipeline, max_sessions=1)

    async def scenario() -> None:
        cog = await world.start()
        await invoke(cog.start, world.interaction(ALICE))
        other = world.interaction(BOB)
        other.guild = Guild(VoiceChannel(id=CHANNEL + 1))
        other.guild.id = 556
        other.guild_id = 556
        other.user = other.guild.by_id[BOB]
        await invoke(cog.start, other)
        assert "as many voice channels as I can" in sent_texts(other)
        await cog.close()

    asyncio.run(scenario())
    world.harness.close()


@pytest.mark.slow
def test_a_forged_rtp_timestamp_does_not_cut_everyone_else(tmp_path: Path, pipeline: Pipeline, speech) -> None:
    """Through the DAVE receive path: Bob's client stamps one frame an hour ahead while Alice talks."""
    world = World(tmp_path, pipeline, max_utterance_seconds=30.0)

    async def scenario() -> None:
        cog = await world.start()
        world.opt_in(ALICE, BOB)
        await invoke(cog.start, world.interaction(ALICE))
        long_turn = np.concatenate([speech[ALICE], speech[ALICE]])
        forged = lambda user, at: 123_456 + 48_000 * 3600 if user == BOB else None  # noqa: E731
        await world.talk([Turn(str(ALICE), 0.0, long_turn), Turn(str(BOB), 1.0, speech[BOB][:8_000])], stamp=forged)
        await invoke(cog.stop, world.interaction(ALICE))
        alice = [r for r in world.harness.bot.sessions.utterances(1) if r.speaker == str(ALICE)]
        assert alice and min(r.duration for r in alice) > 1.0  # whole utterances, not 0.1 s pieces at each tick

    asyncio.run(scenario())
    world.harness.close()


def test_a_slow_session_hook_does_not_stall_the_bot(tmp_path: Path, pipeline: Pipeline, monkeypatch) -> None:
    """A plugin's session_started runs off the event loop (it once stalled the whole bot): the hook
    waits for a task on the loop, which can only run if the loop is free while the hook blocks."""
    world = World(tmp_path, pipeline)
    text = pipeline.plugins.reporter("text")
    loop_ran = threading.Event()
    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(text, "session_started", lambda session: seen.append((threading.get_ident(), loop_ran.wait(10))))

    async def scenario() -> None:
        cog = await world.start()

        async def meanwhile() -> None:
            await asyncio.sleep(0.05)
            loop_ran.set()

        task = asyncio.create_task(meanwhile())
        await invoke(cog.start, world.interaction(ALICE))
        await task
        await cog.close()

    asyncio.run(scenario())
    assert seen == [(seen[0][0], True)] and seen[0][0] != threading.get_ident()  # asyncio.run's loop is on this thread
    world.harness.close()


def test_voice_notes_are_answered_while_sessions_are_busy(tmp_path: Path, pipeline: Pipeline) -> None:
    """Live analysis has its own threads: with every one of them busy, a voice note is still answered."""
    world = World(tmp_path, pipeline, workers=1)

    async def scenario() -> None:
        cog = await world.start()
        notes = await world.harness.start()
        release = threading.Event()
        busy = cog.workers.submit(release.wait, 30)  # a session's tick that takes long
        message = world.harness.message(world.harness.attachment(SAMPLE_NOTE.read_bytes()))
        try:
            await asyncio.wait_for(notes.on_message(message), 60)
        finally:
            release.set()
        assert "embed" in message.replies[0]
        busy.result()
        await cog.close()

    asyncio.run(scenario())
    world.harness.close()


def test_a_large_export_is_compressed_or_refused_never_a_failed_upload(tmp_path: Path, pipeline: Pipeline) -> None:
    world = World(tmp_path, pipeline)
    sessions = world.harness.bot.sessions
    info = sessions.start(str(world.guild.id), str(CHANNEL), str(ALICE), str(world.text.id))
    sessions.add(info.id, [Utterance(str(ALICE), i, i + 1.0, "calm", 0.8, {"calm": 0.8, "sad": 0.2}, {}) for i in range(2_000)])
    sessions.finish(info.id, "ended")

    async def export(limit: int) -> FakeInteraction:
        if not hasattr(world, "history"):
            await world.start()
        world.guild.filesize_limit = limit
        asked = world.interaction(ALICE)
        await invoke(world.history.export, asked, info.id)
        return asked

    compressed = asyncio.run(export(100_000))
    assert [f.filename for f in compressed.sent()[-1]["files"]] == [f"session-{info.id}.csv.gz", f"session-{info.id}.json.gz",
                                                                    f"session-{info.id}-notes.md.gz"]  # fmt: skip
    refused = asyncio.run(export(1_000))
    assert "too long to export through Discord" in sent_texts(refused) and "files" not in refused.sent()[-1]
    world.harness.close()


def test_an_opt_out_the_database_refused_is_not_reported_as_done(tmp_path: Path, pipeline: Pipeline, monkeypatch) -> None:
    from sera.database import StorageError

    world = World(tmp_path, pipeline)

    def busy(*args: Any) -> None:
        raise StorageError("the database is busy (another process is writing to it); nothing was changed, try again")

    async def scenario() -> None:
        cog = await world.start()
        monkeypatch.setattr(world.harness.bot.sessions, "set_consent", busy)
        out = world.interaction(BOB)
        await invoke(cog.optout, out)
        assert sent_texts(out).startswith("Nothing was changed: the database is busy")

    asyncio.run(scenario())
    world.harness.close()
