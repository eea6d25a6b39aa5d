"""Tests of the guarded AMI link, over real TCP against tests/fakeami.py."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from callcenter.pbx import ami
from callcenter.pbx.ami import (
    ActionRefused,
    ActionTimeout,
    AmiLink,
    AuthenticationFailed,
    ConnectFailed,
    FrameBuffer,
    LinkDown,
    command_output,
    parse_frame,
)
from tests.fakeami import FakeAmi, frame, reply

CALLER_FRAME = frame(
    "Event: QueueCallerJoin", "Channel: PJSIP/trunk-0000001a", "CallerIDNum: 13800138000",
    "CallerIDName: 王五", "ConnectedLineName: 欧阳娜娜", "Queue: hotline",
    "Uniqueid: 1700000000.26")


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` holds; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


class Recorder:
    """The callbacks a consumer would pass to AmiLink, recording what they see."""

    def __init__(self) -> None:
        self.events: list[dict[str, str]] = []
        self.times: list[float] = []
        self.links: list[tuple[bool, str]] = []
        self.connected = 0

    def on_event(self, headers: dict[str, str], at: float) -> None:
        self.events.append(headers)
        self.times.append(at)

    def on_link(self, up: bool, reason: str) -> None:
        self.links.append((up, reason))

    async def on_connected(self, link: AmiLink) -> None:
        self.connected += 1

    def named(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.events if e.get("Event") == name]


def make_link(port: int, rec: Recorder, **kwargs: Any) -> AmiLink:
    options: dict[str, Any] = {"action_timeout": 2.0, "backoff_initial": 0.02,
                               "backoff_max": 0.2, "ping_interval": 5.0}
    options.update(kwargs)
    secret = options.pop("secret", "s3cret")
    return AmiLink("127.0.0.1", port, "hotline", secret, on_event=rec.on_event,
                   on_link=rec.on_link, on_connected=rec.on_connected, **options)


@pytest.fixture
async def server() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def link(server: FakeAmi, rec: Recorder) -> AsyncIterator[AmiLink]:
    amilink = make_link(server.port, rec)
    await amilink.start()
    await until(lambda: amilink.up and rec.connected == 1)
    yield amilink
    await amilink.stop()


async def assert_still_working(server: FakeAmi, link: AmiLink, rec: Recorder, seq: int) -> None:
    """A normal event still arrives, an action still works, the link never dropped."""
    await server.send(frame("Event: Marker", f"Seq: {seq}"))
    await until(lambda: any(e.get("Seq") == str(seq) for e in rec.named("Marker")))
    assert await link.action({"Action": "Ping"}) == {
        "Response": "Success", "ActionID": rec_last_action_id(server), "Ping": "Pong",
        "Timestamp": "1700000000.000000"}
    assert link.up and server.connections == 1 and rec.links == [(True, "logged in")]


def rec_last_action_id(server: FakeAmi) -> str:
    return server.actions[-1]["ActionID"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------ byte-exact text


async def test_chinese_names_survive_a_split_at_every_byte(
        server: FakeAmi, link: AmiLink, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = 0
    original = ami._AmiProtocol.data_received

    def counting(self: ami._AmiProtocol, data: bytes) -> None:
        nonlocal reads
        reads += 1
        original(self, data)

    monkeypatch.setattr(ami._AmiProtocol, "data_received", counting)
    for cut in range(1, len(CALLER_FRAME)):
        await server.send(CALLER_FRAME[:cut], pause=0.001)
        await server.send(CALLER_FRAME[cut:], pause=0.001)
    await until(lambda: len(rec.named("QueueCallerJoin")) == len(CALLER_FRAME) - 1)
    assert reads >= 2 * (len(CALLER_FRAME) - 1)  # the halves really were separate reads
    for event in rec.named("QueueCallerJoin"):
        assert event["CallerIDName"] == "王五"
        assert event["ConnectedLineName"] == "欧阳娜娜"
        assert event["Uniqueid"] == "1700000000.26"


@given(cuts=st.lists(st.integers(min_value=0, max_value=3 * len(CALLER_FRAME)), max_size=12))
def test_frame_buffer_reassembles_any_chunking(cuts: list[int]) -> None:
    stream = ami.BANNER_PREFIX + b"11.0.0\r\n" + CALLER_FRAME * 3
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    buffer = FrameBuffer(banner=True)
    frames = [f for a, b in itertools.pairwise(bounds)
              for f in buffer.feed(stream[a:b])]
    assert buffer.banner == "Asterisk Call Manager/11.0.0"
    assert frames == [CALLER_FRAME[:-4]] * 3
    assert buffer.pending == 0


LONG = 24


@given(frames=st.lists(st.lists(st.tuples(st.integers(0, 2 * LONG), st.booleans()),
                                min_size=1, max_size=5), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
@example(frames=[[(19, True)]], cuts=[25])  # a line of exactly LONG bytes, cut inside its CRLF
@example(frames=[[(20, False)]], cuts=[25])
def test_frame_buffer_drops_exactly_the_overlong_lines(
        frames: list[list[tuple[int, bool]]], cuts: list[int]) -> None:
    wire = [[f"K{i}: ".encode() + b"v" * n + (b"\r" if cr else b"") for i, (n, cr) in
             enumerate(lines)] for lines in frames]
    stream = b"".join(b"\r\n".join(lines) + b"\r\n\r\n" for lines in wire)
    expected = [parse_frame(b"\r\n".join(x for x in lines if len(x) <= LONG)) for lines in wire]
    buffer = FrameBuffer(max_line=LONG)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    got = [parse_frame(f) for a, b in itertools.pairwise(bounds) for f in buffer.feed(stream[a:b])]
    assert [f for f in got if f] == [f for f in expected if f]
    assert buffer.pending == 0


def test_frame_buffer_holds_little_of_an_endless_line_or_frame() -> None:
    buffer = FrameBuffer(max_line=1024, max_frame=8192)
    assert buffer.feed(b"Event: Big\r\nData: ") == []
    for _ in range(100):
        assert buffer.feed(b"x" * 500) == []
        assert buffer.pending <= 1024
    assert buffer.feed(b"\r\nTail: kept\r\n\r\nEvent: Next\r\n\r\n") == [
        b"Event: Big\r\nTail: kept", b"Event: Next"]
    for _ in range(1000):  # 18 kB of short lines: the frame outgrows max_frame
        assert buffer.feed(b"Line: 0123456789\r\n") == []
        assert buffer.pending <= 8192
    assert buffer.feed(b"Line: end\r\n\r\nEvent: After\r\n\r\n") == [b"Event: After"]


# ------------------------------------------------------------ nothing bad goes out


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "\r\n"])
async def test_cr_lf_nul_in_value_or_key_is_refused_and_nothing_is_written(
        server: FakeAmi, link: AmiLink, bad: str) -> None:
    before = len(server.raw)
    refused: list[dict[str, str]] = [
        {"Action": "Originate", "Channel": "Local/1001@agents",
         "CallerID": f"王五 <13800138000>{bad}Action: Hangup"},
        {"Action": "Setvar", f"Variable{bad}Action: Hangup": "x"},
        {"Action": f"Ping{bad}"},
    ]
    for action in refused:
        with pytest.raises(ActionRefused) as info:
            await link.action(action)
        assert isinstance(info.value, ValueError)
        assert "\n" not in str(info.value)
        assert "13800138000" not in str(info.value)
    await link.action({"Action": "Ping"})
    written = bytes(server.raw[before:])
    assert written.startswith(b"Action: Ping\r\nActionID: ")
    assert written.count(b"\r\n\r\n") == 1 and written.endswith(b"\r\n\r\n")


async def test_bad_actions_and_credentials_are_refused(server: FakeAmi, link: AmiLink) -> None:
    for action in ({}, {"Channel": "x"}, {"Action": "Login", "Username": "x"},
                   {"Action": "Ping", "Bad: Key": "x"}, {"Action": "Ping", "N": 1.5},
                   {"Action": "Ping", "X": "1", "x": "2"}):
        with pytest.raises(ActionRefused):
            await link.action(action)
    with pytest.raises(ActionRefused):
        AmiLink("127.0.0.1", 1, "hotline", "s3cret\r\nAction: Originate",
                on_event=Recorder().on_event)


async def test_repeated_headers_and_own_action_id_are_sent(server: FakeAmi, link: AmiLink) -> None:
    server.handlers["Originate"] = lambda a: [reply(a, Message="Originate successfully queued")]
    result = await link.action({"Action": "Originate", "Channel": "Local/1001@agents",
                                "Variable": ["CASE=12345", "NAME=王五"], "ActionID": "cb-1"})
    assert result["ActionID"] == "cb-1"
    assert b"Variable: CASE=12345\r\nVariable: NAME=\xe7\x8e\x8b\xe4\xba\x94\r\n" in server.raw


# ------------------------------------------------------------ bad input survived

JUNK = {
    "garbage": b"\x16\x03\x01\x02\x00 random bytes here\r\n\r\n",
    "line without colon": b"Event: NoColon\r\nthis line has no colon\r\n\r\n",
    "cut frame": b"Event: Cut\r\nUniqueid: 17000\r\nCallerIDN" + b"\r\n\r\n",
    "missing fields": b"Event: \r\n\r\nResponse: Success\r\n\r\nUniqueid: 1\r\n\r\n",
    "unknown action id": b"Response: Success\r\nActionID: nobody-asked\r\n\r\n",
    "duplicated headers": b"Event: Dup\r\nQueue: first\r\nQueue: second\r\n\r\n",
    "NUL bytes": "Event: Nul\r\nCallerIDName: 王\x00五\r\n\r\n".encode(),
    "invalid UTF-8": b"Event: BadUtf8\r\nCallerIDName: \xe7\x8e\xff\r\n\r\n",
    "1 MB line": b"Event: Big\r\nData: " + b"x" * (1 << 20) + b"\r\nTail: kept\r\n\r\n",
    "blank frames": b"\r\n\r\n\r\n\r\n\r\n",
    "oversized frame": b"Event: Huge\r\n" + b"Line: abcdefgh\r\n" * 300_000 + b"\r\n",
}


@pytest.mark.parametrize("name", list(JUNK))
async def test_bad_input_does_not_drop_the_link(
        server: FakeAmi, link: AmiLink, rec: Recorder, name: str) -> None:
    with capture_logs() as logs:
        await server.send(JUNK[name])
        await assert_still_working(server, link, rec, 1)
    assert all("\n" not in str(v) for entry in logs for v in entry.values())
    if name == "duplicated headers":
        (dup,) = rec.named("Dup")
        assert dup["Queue"] == "first" and dup.getall("Queue") == ["first", "second"]
    if name == "NUL bytes":
        assert rec.named("Nul")[0]["CallerIDName"] == "王五"
    if name == "invalid UTF-8":
        assert rec.named("BadUtf8")[0]["CallerIDName"] == "\ufffd\ufffd"
    if name == "1 MB line":
        assert rec.named("Big") == [{"Event": "Big", "Tail": "kept"}]
        assert any(e["event"] == "ami.oversized_dropped" for e in logs)
    if name == "oversized frame":
        assert rec.named("Huge") == []
    if name in ("garbage", "line without colon", "cut frame", "NUL bytes", "invalid UTF-8"):
        assert any(e["event"] in ("ami.bad_frame", "ami.frame_ignored") for e in logs)


async def _junk_scenario(chunks: list[bytes]) -> None:
    server, rec = FakeAmi(), Recorder()
    await server.start()
    link = make_link(server.port, rec)
    try:
        await link.start()
        await until(lambda: link.up)
        for seq, junk in enumerate(chunks):
            await server.send(junk + b"\r\n\r\n" + CALLER_FRAME)
            await assert_still_working(server, link, rec, seq)
        joins = rec.named("QueueCallerJoin")
        assert len(joins) >= len(chunks)
        assert all(j["CallerIDName"] == "王五" for j in joins[-len(chunks):])
    finally:
        await link.stop()
        await server.close()


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.binary(max_size=200) | st.text(max_size=60).map(str.encode),
                       min_size=1, max_size=4))
def test_random_junk_between_valid_frames(chunks: list[bytes]) -> None:
    with capture_logs():
        asyncio.run(_junk_scenario(chunks))


async def test_bad_frames_are_logged_on_one_line_with_numbers_masked(
        server: FakeAmi, link: AmiLink, rec: Recorder) -> None:
    with capture_logs() as logs:
        await server.send(b"Event: Masked\r\nCallerIDNum: 13800138000\r\n"
                          b"Channel: Local/13912345678@agents\r\nno colon here\r\n\r\n")
        await until(lambda: bool(rec.named("Masked")))
    (entry,) = [e for e in logs if e["event"] == "ami.bad_frame"]
    assert "13800138000" not in entry["frame"] and "*******8000" in entry["frame"]
    assert "13912345678" not in entry["frame"] and "*******5678" in entry["frame"]
    assert "\r" not in entry["frame"] and "\n" not in entry["frame"]
    assert rec.named("Masked")[0]["CallerIDNum"] == "13800138000"  # delivered untouched


async def test_events_arrive_in_wire_order_with_the_read_time(server: FakeAmi) -> None:
    rec = Recorder()
    ticks = iter(range(1000, 2000))
    link = make_link(server.port, rec, clock=lambda: float(next(ticks)))
    await link.start()
    await until(lambda: link.up)
    await server.send(b"".join(frame("Event: Step", f"N: {n}") for n in range(50)))
    await until(lambda: len(rec.named("Step")) == 50)
    await link.stop()
    assert [e["N"] for e in rec.named("Step")] == [str(n) for n in range(50)]
    steps = [t for e, t in zip(rec.events, rec.times, strict=True) if e["Event"] == "Step"]
    assert len(set(steps)) < 50  # one clock reading per socket read, not per frame


async def test_a_failing_consumer_does_not_drop_the_link(server: FakeAmi) -> None:
    rec = Recorder()

    def explode(headers: dict[str, str], at: float) -> None:
        rec.on_event(headers, at)
        raise RuntimeError("consumer bug")

    link = AmiLink("127.0.0.1", server.port, "hotline", "s3cret", on_event=explode,
                   on_link=rec.on_link)
    await link.start()
    await until(lambda: link.up)
    await server.send(frame("Event: One") + frame("Event: Two"))
    await until(lambda: len(rec.named("Two")) == 1)
    assert link.up and server.connections == 1
    await link.stop()


# ------------------------------------------------------------ every action ends


async def test_action_times_out_and_the_link_stays_up(
        server: FakeAmi, link: AmiLink, rec: Recorder) -> None:
    server.ignore.add("QueueSummary")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ActionTimeout) as info:
        await link.action({"Action": "QueueSummary"}, timeout=0.2)
    assert 0.2 <= loop.time() - started < 1.0
    assert info.value.retry_safe and info.value.sent
    assert str(info.value) == "AMI action QueueSummary got no reply within 0.2 s"
    await assert_still_working(server, link, rec, 1)


async def test_pending_actions_fail_at_once_when_the_server_closes(
        server: FakeAmi, link: AmiLink, rec: Recorder) -> None:
    server.ignore.update({"QueueStatus", "Originate", "Hangup"})
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(link.action({"Action": name, "Channel": "Local/1001@agents"}))
             for name in ("QueueStatus", "Originate", "Hangup")]
    await until(lambda: all(server.count(n) for n in ("QueueStatus", "Originate", "Hangup")))
    started = loop.time()
    server.drop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert loop.time() - started < 0.5  # action_timeout is 2 s: nothing waited for it
    assert all(isinstance(r, LinkDown) for r in results)
    assert [r.retry_safe for r in results] == [True, False, True]
    assert "outcome unknown, not re-sent" in str(results[1])
    assert rec.links[-1] == (False, "connection closed by peer")
    assert link._pending == {}


async def test_originate_is_not_resent_after_reconnect(
        server: FakeAmi, link: AmiLink, rec: Recorder) -> None:
    server.ignore.add("Originate")
    task = asyncio.create_task(link.action(
        {"Action": "Originate", "Channel": "Local/13800138000@outbound", "Async": "true"}))
    await until(lambda: server.count("Originate") == 1)
    server.drop()
    with pytest.raises(LinkDown) as info:
        await task
    assert info.value.sent and not info.value.retry_safe
    await until(lambda: link.up and rec.connected == 2)
    await link.action({"Action": "Ping"})
    await asyncio.sleep(0.1)
    assert server.connections == 2
    assert server.count("Originate") == 1
    await link.stop()
    with pytest.raises(LinkDown) as never_sent:
        await link.action({"Action": "Originate", "Channel": "Local/1@x"})
    assert never_sent.value.retry_safe and not never_sent.value.sent


async def test_silent_dead_link_is_noticed_within_three_pings_and_reconnected(
        server: FakeAmi) -> None:
    rec = Recorder()
    link = make_link(server.port, rec, ping_interval=0.1)
    loop = asyncio.get_running_loop()
    await link.start()
    await until(lambda: link.up)
    await asyncio.sleep(0.6)  # six healthy intervals: the watchdog must stay quiet
    assert rec.links == [(True, "logged in")] and server.count("Ping") >= 4
    server.mute = True
    muted = loop.time()
    await until(lambda: not link.up, timeout=1.0)
    assert loop.time() - muted <= 0.3 + 0.1  # 3 intervals since the last Pong, plus slack
    assert rec.links[1] == (False, "no Ping reply within 0.3 s")
    await until(lambda: link.up and rec.connected == 2)
    assert server.connections == 2
    await link.stop()
    assert rec.links[-1] == (False, "stopped")


async def test_link_that_never_answers_a_ping_goes_down(server: FakeAmi) -> None:
    rec = Recorder()
    server.mute_after_login = True
    link = make_link(server.port, rec, ping_interval=0.05, backoff_initial=1.0)
    await link.start()
    await until(lambda: rec.links[:1] == [(True, "logged in")])
    await until(lambda: len(rec.links) == 2, timeout=0.15 + 0.1)
    assert rec.links[1] == (False, "no Ping reply within 0.15 s")
    await link.stop()



async def test_pong_stuck_behind_a_burst_of_events_keeps_the_link(server: FakeAmi) -> None:
    """A peer that keeps sending is alive, even if its Pong is late (a long backlog)."""
    rec = Recorder()
    link = make_link(server.port, rec, ping_interval=0.05)
    await link.start()
    await until(lambda: link.up)
    server.ignore.add("Ping")  # Pongs never come...
    for i in range(30):  # ...but events keep flowing for 0.45 s = 3 windows
        await server.send(frame("Event: QueueMemberStatus", f"Queue: q{i}"), pause=0.015)
    assert rec.links == [(True, "logged in")] and server.connections == 1
    await until(lambda: not link.up, timeout=0.15 + 0.1)  # then silence: down
    assert rec.links[1] == (False, "no Ping reply within 0.15 s")
    await link.stop()


# ------------------------------------------------------------ connecting


async def test_login_sends_username_secret_and_event_classes(server: FakeAmi) -> None:
    link = make_link(server.port, Recorder(), events="agent,call")
    await link.connect_once()
    await link.stop()
    (login,) = [a for a in server.actions if a["Action"] == "Login"]
    assert (login["Username"], login["Secret"], login["Events"]) == (
        "hotline", "s3cret", "agent,call")
    assert login["ActionID"]


async def test_wrong_secret_fails_fast_with_one_line(server: FakeAmi) -> None:
    link = make_link(server.port, Recorder(), secret="wrong")
    with pytest.raises(AuthenticationFailed) as info:
        await link.connect_once()
    assert str(info.value) == f"AMI login to 127.0.0.1:{server.port} failed: Authentication failed"
    assert not link.up


async def test_wrong_secret_keeps_retrying_with_growing_backoff(server: FakeAmi) -> None:
    rec = Recorder()
    link = make_link(server.port, rec, secret="wrong", backoff_initial=0.02, backoff_max=1.0)
    with capture_logs() as logs:
        await link.start()
        await until(lambda: len(server.login_times) >= 5, timeout=3.0)
        await link.stop()
    gaps = [b - a for a, b in itertools.pairwise(server.login_times)]
    assert gaps[3] > gaps[0] * 2  # 0.01-0.02 s, then 0.08-0.16 s: it backs off
    assert not link.up and rec.connected == 0 and rec.links == []
    failures = [e for e in logs if e["event"] == "ami.connect_failed"]
    assert len(failures) >= 4
    assert failures[0]["error"] == (
        f"AMI login to 127.0.0.1:{server.port} failed: Authentication failed")
    assert not any("exc_info" in e or "exception" in e for e in logs)


async def test_unreachable_port_is_one_line_then_retried_until_it_listens() -> None:
    port = free_port()
    rec = Recorder()
    link = make_link(port, rec)
    with pytest.raises(ConnectFailed) as info:
        await link.connect_once()
    assert str(info.value) == f"AMI connect to 127.0.0.1:{port} failed: Connection refused"
    await link.start()
    await asyncio.sleep(0.15)
    assert not link.up
    late = FakeAmi()
    await late.start(port)
    try:
        await until(lambda: link.up and rec.connected == 1)
    finally:
        await link.stop()
        await late.close()


async def test_start_after_connect_once_takes_over_the_session(
        server: FakeAmi, rec: Recorder) -> None:
    link = make_link(server.port, rec)
    await link.connect_once()
    await link.connect_once()  # already up: no second session
    await link.start()
    await asyncio.sleep(0.05)
    assert server.connections == 1 and rec.connected == 1
    server.drop()
    await until(lambda: link.up and rec.connected == 2)
    assert server.connections == 2
    await link.stop()


async def test_on_connected_may_resync_with_list_actions(server: FakeAmi) -> None:
    server.handlers["CoreShowChannels"] = lambda a: [
        reply(a, EventList="start", Message="Channels will follow"),
        frame("Event: CoreShowChannelsComplete", f"ActionID: {a['ActionID']}",
              "EventList: Complete", "ListItems: 0")]
    seen: list[Any] = []

    async def resync(link: AmiLink) -> None:
        seen.append(await link.action({"Action": "CoreShowChannels"}))

    link = AmiLink("127.0.0.1", server.port, "hotline", "s3cret", on_event=Recorder().on_event,
                   on_connected=resync)
    await link.connect_once()
    assert [r["Response" if i == 0 else "Event"] for i, r in enumerate(seen[0])] == [
        "Success", "CoreShowChannelsComplete"]
    await link.stop()


# ------------------------------------------------------------ panoramisk 1.4 quirks


async def test_queue_add_returns_its_single_response(server: FakeAmi, link: AmiLink) -> None:
    server.handlers["QueueAdd"] = lambda a: [reply(a, Message="Added interface to queue")]
    result = await link.action({"Action": "QueueAdd", "Queue": "hotline",
                                "Interface": "Local/1001@agents/n", "MemberName": "agent1001"},
                               timeout=1.0)
    assert isinstance(result, dict)
    assert result["Message"] == "Added interface to queue"


async def test_queue_status_returns_the_list(
        server: FakeAmi, link: AmiLink, rec: Recorder) -> None:
    def queue_status(a: dict[str, str]) -> list[bytes]:
        aid = f"ActionID: {a['ActionID']}"
        return [
            reply(a, EventList="start", Message="Queue status will follow"),
            frame("Event: QueueParams", "Queue: hotline", "Completed: 3", aid),
            frame("Event: QueueCallerJoin", "Queue: hotline", "CallerIDName: 欧阳娜娜"),
            frame("Event: QueueMember", "Queue: hotline", "Name: agent1001", aid),
            frame("Event: QueueStatusComplete", aid, "EventList: Complete", "ListItems: 2"),
        ]

    server.handlers["QueueStatus"] = queue_status
    result = await link.action({"Action": "QueueStatus", "Queue": "hotline"})
    assert isinstance(result, list)
    assert [r.get("Event", r.get("Response")) for r in result] == [
        "Success", "QueueParams", "QueueMember", "QueueStatusComplete"]
    assert rec.named("QueueCallerJoin")[0]["CallerIDName"] == "欧阳娜娜"  # not swallowed


async def test_failed_list_action_returns_its_error(server: FakeAmi, link: AmiLink) -> None:
    result = await link.action({"Action": "QueueSummary", "Queue": "nope"})
    assert result == {"Response": "Error", "ActionID": server.actions[-1]["ActionID"],
                      "Message": "Invalid/unknown command"}


@pytest.mark.parametrize(("output", "expected"), [
    (["Output: Asterisk 22.1.0 built by root"], ["Asterisk 22.1.0 built by root"]),
    (["Output: hotline has 0 calls", "Output:    Members: ", "Output: agent1001 (在线)"],
     ["hotline has 0 calls", "   Members: ", "agent1001 (在线)"]),
    ([], []),
])
async def test_command_output_is_a_list_of_lines(
        server: FakeAmi, link: AmiLink, output: list[str], expected: list[str]) -> None:
    server.handlers["Command"] = lambda a: [
        frame("Response: Success", f"ActionID: {a['ActionID']}",
              "Message: Command output follows", *output)]
    assert await link.command("queue show hotline") == expected
    result = await link.action({"Action": "Command", "Command": "queue show hotline"})
    assert isinstance(result, dict)
    assert result.get("Output", "") == "\n".join(expected)


def test_legacy_follows_command_body_is_split_into_lines() -> None:
    legacy = parse_frame(b"Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n"
                         b"line one\nline: two\n--END COMMAND--")
    assert legacy["ActionID"] == "7" and legacy.problems == ()
    assert command_output(legacy) == ["line one", "line: two"]


# ------------------------------------------------------------ parse_frame


def test_parse_frame_fast_and_careful_paths_agree_on_clean_input() -> None:
    clean = parse_frame(CALLER_FRAME[:-4])
    assert type(clean) is ami.Frame and clean.problems == () and clean.multi == {}
    assert clean["CallerIDName"] == "王五"
    careful = ami._parse_careful(CALLER_FRAME[:-4])
    assert careful == clean and careful.problems == ()


def test_parse_frame_keeps_first_of_repeated_headers_and_colon_without_space() -> None:
    parsed = parse_frame(b"Event: VarSet\r\nVariable: A\r\nVariable: B\r\nValue:\r\n"
                         b"ChanVariable(HOTLINE): 1\r\nChanVariable(CASE): 2")
    assert parsed["Variable"] == "A" and parsed.getall("Variable") == ["A", "B"]
    assert parsed["Value"] == "" and parsed.getall("Missing") == []
    assert parsed["ChanVariable(HOTLINE)"] == "1" and parsed["ChanVariable(CASE)"] == "2"
    assert parsed.problems == ()


def test_excerpt_is_bounded_for_a_huge_frame() -> None:
    text = ami.excerpt(b"Event: X\r\nData: " + b"y" * 10_000)
    assert len(text) < 200 and text.endswith("[10016 bytes]") and "\\r\\n" in text



async def test_panoramisk_testing_line_ending_change_does_not_matter(
        server: FakeAmi, link: AmiLink, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    import panoramisk.utils

    monkeypatch.setattr(panoramisk.utils, "EOL", "\n")  # what importing panoramisk.testing does
    await server.send(CALLER_FRAME)
    await until(lambda: bool(rec.named("QueueCallerJoin")))
    assert (await link.action({"Action": "Ping"}))["Ping"] == "Pong"


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["Event", "ChanVariable", "Uniqueid", "ActionID",
                                           "DestChanVariable", "Queue", "X-Y"]),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                         blacklist_characters="\r\n\x00"),
                                  max_size=12)),
                min_size=1, max_size=12))
def test_fast_path_with_repeated_keys_equals_the_careful_path(
        headers: list[tuple[str, str]]) -> None:
    from callcenter.pbx.ami import _parse_careful

    raw = "\r\n".join(f"{k}: {v}" for k, v in headers).encode()
    fast, careful = parse_frame(raw), _parse_careful(raw)
    assert dict(fast) == dict(careful)
    assert dict(fast.multi) == dict(careful.multi)
    assert fast.problems == careful.problems and fast.loose == careful.loose


async def test_stop_returns_though_a_cancellation_is_lost_on_the_way(server: FakeAmi) -> None:
    """Python 3.11's ``wait_for`` drops a cancellation that comes as its connect completes
    (gh-86296); then the connection task went on to wait for its session's end, which
    ``stop`` brought only after the task had ended: ``stop`` never returned (a test's
    teardown stood still for its 300 s).  Here the connected callback swallows the
    cancellation, as that ``wait_for`` does: ``stop`` still returns at once."""
    rec = Recorder()
    entered = asyncio.Event()

    async def connected(link: AmiLink) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # lost on the way

    link = AmiLink("127.0.0.1", server.port, "hotline", "s3cret", on_event=rec.on_event,
                   on_link=rec.on_link, on_connected=connected, action_timeout=2.0,
                   backoff_initial=0.02, backoff_max=0.2, ping_interval=5.0)
    await link.start()
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(link.stop(), 3)
    assert not link.up and rec.links[-1][0] is False
