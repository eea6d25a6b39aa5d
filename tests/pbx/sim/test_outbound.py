"""The simulator's outbound side: return-visit and call-back Originates, the IVR's AGI
session kept across Queue() for the after-call survey, ChanSpy and MixMonitor.

Core-level tests drive the sans-IO :class:`Pbx` second by second; the server tests
speak AMI and FastAGI over real TCP (a tiny FastAGI script server written here).
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from callcenter.pbx.sim import (
    Frame,
    Pbx,
    PbxConfig,
    PbxSimServer,
    QueueConfig,
    frame_dict,
    parse_frame,
)
from callcenter.pbx.traffic import CallSpec, CitizenModel, ScriptedTraffic

T0 = 1_795_000_000.0
NUMBER = "13912345678"


def citizen(answer: float = 1.0, **keys: list[str]) -> CitizenModel:
    return CitizenModel(answer_rate=answer, busy_rate=0.0, ring_min=2.0, ring_max=2.0,
                        keys=keys or None, seed=1)


def pbx(agents: int = 1, answer: float = 1.0, **kw: Any) -> Pbx:
    p = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=agents,
                      agent_breaks=False), start_time=T0, seed=1, citizen=citizen(answer), **kw)
    p.drain()  # the members' QueueMemberAdded
    return p


def rv_originate(order: str = "WO-7", attempt: int = 1, port: int = 4573,
                 timeout: int = 30000) -> list[tuple[str, str]]:
    return [("Action", "Originate"), ("ActionID", f"rv-{order}-{attempt}"),
            ("Channel", f"Local/{NUMBER}@hotline-outbound"), ("Application", "AGI"),
            ("Data", f"agi://127.0.0.1:{port}/returnvisit,{order}"),
            ("CallerID", '"12345" <12345>'), ("Timeout", str(timeout)), ("Async", "true"),
            ("Variable", f"ORDER_ID={order}")]


def cb_originate(cb_id: str = "42", *, repeated: bool = False) -> list[tuple[str, str]]:
    head = [("Action", "Originate"), ("ActionID", f"cb-{cb_id}-1"),
            ("Channel", f"Local/{NUMBER}@hotline-callback"), ("Context", "hotline-queue"),
            ("Exten", "hotline"), ("Priority", "1"), ("CallerID", '"12345" <12345>'),
            ("Timeout", "30000"), ("Async", "true")]
    variables = ["QUEUE=hotline", "HOTLINE=12315", "CATEGORY=complaint", "IVR_PATH=2-9",
                 f"CALLBACK_ID={cb_id}"]
    if repeated:
        return head + [("Variable", v) for v in variables]
    return [*head, ("Variable", ",".join(variables))]


def named(frames: list[Frame], name: str) -> list[dict[str, str]]:
    return [f.headers() for f in frames if f.name == name]


def run(p: Pbx, seconds: float) -> list[Frame]:
    out: list[Frame] = []
    t = p.now
    while t < T0 + seconds:
        t = min(T0 + seconds, t + 0.5)
        out.extend(p.advance(t))
    return out


def ordered_keys(frame: Frame) -> list[str]:
    return [k for k, _ in parse_frame(frame.text)]


# --------------------------------------------------------------------------- core: citizens


def test_return_visit_not_answered_is_failure_reason_3_with_the_action_id() -> None:
    p = pbx(answer=0.0)
    reply = p.handle_action(rv_originate())
    assert reply == ("Response: Success\r\nActionID: rv-WO-7-1\r\n"
                     "Message: Originate successfully queued\r\n\r\n")
    frames = run(p, 29)
    assert [f.name for f in frames] == ["Newchannel", "Newchannel", "NewCallerid",
                                        "LocalBridge", "Newstate"]
    assert frames[0].headers()["Channel"].startswith(f"Local/{NUMBER}@hotline-outbound-")
    frames = run(p, 31)
    assert [f.name for f in frames] == ["Hangup", "Hangup", "OriginateResponse"]
    [resp] = [f for f in frames if f.name == "OriginateResponse"]
    assert ordered_keys(resp) == ["Event", "Privilege", "ActionID", "Response", "Channel",
                                  "Application", "Data", "Reason", "Uniqueid", "CallerIDNum",
                                  "CallerIDName"]
    h = resp.headers()
    assert (h["ActionID"], h["Response"], h["Reason"], h["Channel"], h["Uniqueid"]) == (
        "rv-WO-7-1", "Failure", "3", f"Local/{NUMBER}@hotline-outbound", "<null>")
    assert (h["Application"], h["Data"]) == ("AGI", "agi://127.0.0.1:4573/returnvisit,WO-7")
    assert not p.channels and not p.agi_runs


def test_busy_citizen_fails_at_once_with_reason_5() -> None:
    p = Pbx(PbxConfig(agents=0), start_time=T0,
            citizen=CitizenModel(answer_rate=0.0, busy_rate=1.0))
    p.handle_action(rv_originate())
    [resp] = named(run(p, 2), "OriginateResponse")
    assert (resp["Response"], resp["Reason"]) == ("Failure", "5")


def test_return_visit_answered_runs_the_agi_on_the_channel_then_hangs_up() -> None:
    p = pbx()
    p.handle_action(rv_originate(port=5999))
    frames = run(p, 5)
    names = [f.name for f in frames]
    assert names == ["Newchannel", "Newchannel", "NewCallerid", "LocalBridge", "Newstate",
                     "Newstate", "Newstate", "OriginateResponse"]
    one = frames[0].headers()
    up = [f.headers() for f in frames if f.name == "Newstate"]
    assert [u["ChannelStateDesc"] for u in up] == ["Ringing", "Up", "Up"]
    resp = frames[-1].headers()
    assert (resp["Response"], resp["Reason"], resp["Channel"], resp["Uniqueid"]) == (
        "Success", "4", one["Channel"], one["Uniqueid"])
    assert (resp["CallerIDNum"], resp["CallerIDName"]) == ("12345", "12345")
    [agi] = p.agi_runs
    assert (agi.channel, agi.uniqueid, agi.url, agi.args, agi.callerid) == (
        one["Channel"], one["Uniqueid"], "agi://127.0.0.1:5999/returnvisit", ("WO-7",), NUMBER)
    assert agi.variables["ORDER_ID"] == "WO-7"
    p.agi_done(agi.channel)
    frames = p.drain()
    assert [f.name for f in frames] == ["HangupRequest", "Hangup", "SoftHangupRequest",
                                        "Hangup"]
    assert not p.channels


@pytest.mark.parametrize("repeated", [False, True])
def test_callback_answered_joins_the_queue_as_a_caller_with_its_variables(
        repeated: bool) -> None:
    p = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=1,
                      agent_breaks=False, channelvars=("HOTLINE", "IVR_PATH", "CATEGORY",
                                                       "CALLBACK_ID")),
            start_time=T0, seed=1, citizen=citizen())
    p.drain()
    p.handle_action(cb_originate(repeated=repeated))
    frames = run(p, 10)
    [resp] = named(frames, "OriginateResponse")
    assert ordered_keys(next(f for f in frames if f.name == "OriginateResponse")) == [
        "Event", "Privilege", "ActionID", "Response", "Channel", "Context", "Exten", "Reason",
        "Uniqueid", "CallerIDNum", "CallerIDName"]
    assert (resp["ActionID"], resp["Response"], resp["Reason"], resp["Context"],
            resp["Exten"]) == ("cb-42-1", "Success", "4", "hotline-queue", "hotline")
    [join] = named(frames, "QueueCallerJoin")
    assert (join["Channel"], join["Uniqueid"]) == (resp["Channel"], resp["Uniqueid"])
    assert join["CallerIDNum"] == NUMBER and join["Queue"] == "hotline"
    chanvars = [v for k, v in parse_frame(
        next(f for f in frames if f.name == "QueueCallerJoin").text) if k == "ChanVariable"]
    assert chanvars == ["HOTLINE=12315", "IVR_PATH=2-9", "CATEGORY=complaint", "CALLBACK_ID=42"]
    [called] = named(frames, "AgentCalled")
    [connect] = named(frames, "AgentConnect")
    assert called["Uniqueid"] == connect["Uniqueid"] == resp["Uniqueid"]
    assert connect["MemberName"] == "agent1001"
    frames = run(p, 100)
    [done] = named(frames, "AgentComplete")
    assert done["Uniqueid"] == resp["Uniqueid"] and not p.channels


def test_callback_not_answered_is_failure_reason_3() -> None:
    p = pbx(answer=0.0)
    p.handle_action(cb_originate())
    [resp] = named(run(p, 40), "OriginateResponse")
    assert (resp["Response"], resp["Reason"], resp["Channel"], resp["Context"],
            resp["Exten"]) == ("Failure", "3", f"Local/{NUMBER}@hotline-callback",
                               "hotline-queue", "hotline")
    assert not p.queues["hotline"].callers and not p.channels


def test_citizen_model_keys_are_seeded_and_fixed_keys_win() -> None:
    a, b = CitizenModel(seed=5), CitizenModel(seed=5)
    assert [a.keys_for("returnvisit") for _ in range(20)] == [
        b.keys_for("returnvisit") for _ in range(20)]
    assert all(len(k) == 1 and set(k) <= set("123") | {""} for k in a.keys_for("survey"))
    fixed = CitizenModel(keys={"survey": ["3"]})
    assert fixed.keys_for("survey") == ["3"] and fixed.keys_for("nothing") == []
    with pytest.raises(ValueError):
        CitizenModel(answer_rate=1.5)


# --------------------------------------------------------------------------- core: IVR caller


def test_reserved_caller_ids_are_the_queue_events_and_the_end_is_reported() -> None:
    p = pbx()
    res = p.reserve_caller()
    p.now = T0 + 3  # the IVR took a while
    call = p.inject_call(CallSpec(T0 + 3, "13800001111", "A", queue="hotline", talk=10,
                                  ring=1), reserved=res)
    call.watched = True
    frames = run(p, 30)
    [join] = named(frames, "QueueCallerJoin")
    assert (join["Channel"], join["Uniqueid"]) == (res.name2, res.uid2)
    assert p.queue_exits == [(call, "agent")]
    assert call.member is not None and call.member.interface == "Local/1001@agents/n"


def test_watched_caller_hanging_up_is_reported_as_caller() -> None:
    p = pbx(agents=0)
    call = p.inject_call(CallSpec(T0, "13800001111", "A", queue="hotline", patience=5))
    call.watched = True
    run(p, 10)
    assert p.queue_exits == [(call, "caller")]


# --------------------------------------------------------------------------- core: ChanSpy


def spy_originate(phone: str = "Local/1901@agents", data: str = "Local/1001@agents,qE",
                  aid: str = "spy-1") -> list[tuple[str, str]]:
    return [("Action", "Originate"), ("ActionID", aid), ("Channel", phone),
            ("Application", "ChanSpy"), ("Data", data), ("CallerID", '"班长监听" <spy>'),
            ("Async", "true")]


def talking_pbx(talk: float = 30) -> tuple[Pbx, dict[str, str]]:
    p = pbx()
    p.inject_call(CallSpec(T0, "13800001111", "A", queue="hotline", talk=talk, ring=1))
    [connect] = named(run(p, 3), "AgentConnect")
    return p, connect


def test_chanspy_unknown_phone_is_an_error() -> None:
    p = pbx()
    assert p.handle_action(spy_originate("Local/1999@agents")) == (
        "Response: Error\r\nActionID: spy-1\r\nMessage: Originate failed\r\n\r\n")


def test_chanspy_start_and_stop_with_the_spied_call() -> None:
    p, connect = talking_pbx()
    reply = p.handle_action(spy_originate(data="Local/1001@agents,qEw"))
    assert "Originate successfully queued" in reply
    frames = run(p, 6)
    names = [f.name for f in frames]
    assert names[:4] == ["Newchannel", "Newchannel", "NewCallerid", "LocalBridge"]
    [resp] = named(frames, "OriginateResponse")
    assert (resp["ActionID"], resp["Response"], resp["Reason"], resp["Application"],
            resp["Data"], resp["CallerIDNum"], resp["CallerIDName"]) == (
        "spy-1", "Success", "4", "ChanSpy", "Local/1001@agents,qEw", "spy", "班长监听")
    start = next(f for f in frames if f.name == "ChanSpyStart")
    keys = ordered_keys(start)
    assert keys[2:4] == ["SpyerChannel", "SpyerChannelState"]
    assert "SpyeeChannel" in keys and keys.index("SpyerLinkedid") < keys.index("SpyeeChannel")
    h = start.headers()
    assert h["SpyerChannel"] == resp["Channel"]
    assert h["SpyeeChannel"] == connect["DestChannel"]  # the operator's leg in the bridge
    assert h["SpyeeChannel"].startswith("Local/1001@agents-")
    frames = run(p, 40)
    names = [f.name for f in frames]
    i = names.index("ChanSpyStop")  # just before the spied-on channel's Hangup
    assert names[i + 1] == "Hangup" and frames[i + 1].headers()["Channel"] == h["SpyeeChannel"]
    stop = named(frames, "ChanSpyStop")[0]
    assert (stop["SpyerChannel"], stop["SpyeeChannel"]) == (h["SpyerChannel"],
                                                            h["SpyeeChannel"])
    hung = [f["Channel"] for f in named(frames, "Hangup")]
    assert resp["Channel"] in hung  # option E: the supervisor leaves with the call
    assert not p.channels


def test_chanspy_with_nothing_to_spy_hangs_up_and_hangup_action_ends_a_spy() -> None:
    p = pbx()
    p.handle_action(spy_originate())
    frames = run(p, 10)
    assert not named(frames, "ChanSpyStart")
    [resp] = named(frames, "OriginateResponse")
    assert resp["Channel"] in [h["Channel"] for h in named(frames, "Hangup")]
    p2, _ = talking_pbx(talk=300)
    p2.handle_action(spy_originate(data="Local/1001@agents,qEB"))
    frames = run(p2, 8)
    [resp] = named(frames, "OriginateResponse")
    assert named(frames, "ChanSpyStart")
    reply = p2.handle_action({"Action": "Hangup", "ActionID": "h1", "Channel": resp["Channel"]})
    assert "Channel Hungup" in reply
    frames = p2.drain()
    assert [f.name for f in frames][:1] == ["ChanSpyStop"]
    assert resp["Channel"] not in p2.channels and len(p2.queues["hotline"].callers) == 0
    assert any(ch.bridge for ch in p2.channels.values())  # the spied call goes on


# --------------------------------------------------------------------------- core: MixMonitor


def test_mixmonitor_start_stop_and_unknown_channel() -> None:
    p, connect = talking_pbx(talk=12)
    assert p.handle_action({"Action": "MixMonitor", "ActionID": "m0",
                            "Channel": "Local/s@inbound-deadbeef;2", "File": "x.wav"}) == (
        "Response: Error\r\nActionID: m0\r\nMessage: No such channel\r\n\r\n")
    reply = p.handle_action({"Action": "MixMonitor", "ActionID": "m1",
                             "Channel": connect["Channel"], "File": "2026-11-23/a.wav",
                             "Options": "b"})
    assert reply == "Response: Success\r\nActionID: m1\r\n\r\n"
    [start] = [f for f in p.drain() if f.name == "MixMonitorStart"]
    assert ordered_keys(start)[2] == "Channel"
    assert start.headers()["Uniqueid"] == connect["Uniqueid"]
    frames = run(p, 30)
    names = [f.name for f in frames]
    stop = names.index("MixMonitorStop")
    assert frames[stop].headers()["Channel"] == connect["Channel"]
    assert frames[stop + 1].name == "Hangup"
    assert frames[stop + 1].headers()["Channel"] == connect["Channel"]
    [rec] = p.recordings
    assert rec.file == "2026-11-23/a.wav" and 10 <= rec.seconds <= 14


# --------------------------------------------------------------------------- over TCP


class Ami:
    """A minimal AMI client over TCP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.seen: list[dict[str, str]] = []

    @classmethod
    async def login(cls, port: int) -> Ami:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ami = cls(reader, writer)
        await reader.readline()
        ami.send([("Action", "Login"), ("Username", "hotline"), ("Secret", "hotline")])
        await ami.until(lambda f: f.get("Response") == "Success")
        return ami

    def send(self, pairs: list[tuple[str, str]]) -> None:
        self.writer.write("".join(f"{k}: {v}\r\n" for k, v in pairs).encode() + b"\r\n")

    async def until(self, pred: Callable[[dict[str, str]], bool],
                    timeout: float = 8.0) -> dict[str, str]:
        for f in self.seen:
            if pred(f):
                return f
        async def read() -> dict[str, str]:
            while True:
                raw = await self.reader.readuntil(b"\r\n\r\n")
                f = frame_dict(raw.decode())
                self.seen.append(f)
                if pred(f):
                    return f
        return await asyncio.wait_for(read(), timeout)

    async def close(self) -> None:
        self.writer.close()


Script = Callable[[dict[str, str], Callable[[str], Awaitable[str]]], Awaitable[None]]


async def fastagi(script: Script) -> tuple[asyncio.Server, list[dict[str, str]]]:
    """A FastAGI server running ``script(headers, send)`` for each connection."""
    sessions: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode().strip()):
            k, _, v = line.partition(": ")
            headers[k] = v
        sessions.append(headers)

        async def send(command: str) -> str:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.readline()).decode().strip()

        try:
            await script(headers, send)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, sessions


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def wait_for(cond: Callable[[], bool], timeout: float = 8.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_return_visit_over_tcp_agi_headers_and_keys() -> None:
    replies: list[tuple[str, str]] = []

    async def returnvisit(headers: dict[str, str], send: Callable[[str], Awaitable[str]]) -> None:
        for cmd in ["GET VARIABLE ORDER_ID", "ANSWER", 'STREAM FILE hotline/rv-intro ""',
                    "GET DATA hotline/rv-resolved 6000", "GET DATA hotline/rv-sat-operator 6000",
                    "GET DATA hotline/rv-sat-department 6000",
                    'SET VARIABLE RETURNVISIT_RESULT "answered"', "HANGUP"]:
            replies.append((cmd, await send(cmd)))

    agi, sessions = await fastagi(returnvisit)
    agi_port = port_of(agi)
    p = pbx()
    sim = PbxSimServer(p, port=0, speed=20.0,
                       citizen=citizen(returnvisit=["1", "3", ""]))
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        ami.send(rv_originate("WO-9", 2, agi_port))
        resp = await ami.until(lambda f: f.get("Event") == "OriginateResponse")
        assert (resp["ActionID"], resp["Response"], resp["Reason"]) == ("rv-WO-9-2", "Success",
                                                                        "4")
        await ami.until(lambda f: f.get("Event") == "Hangup"
                        and f.get("Channel") == resp["Channel"])
        await ami.close()
    finally:
        await sim.stop()
        agi.close()
    [h] = sessions
    assert (h["agi_network_script"], h["agi_arg_1"], h["agi_uniqueid"], h["agi_channel"],
            h["agi_callerid"]) == ("returnvisit", "WO-9", resp["Uniqueid"], resp["Channel"],
                                   NUMBER)
    assert h["agi_request"] == f"agi://127.0.0.1:{agi_port}/returnvisit"
    assert [r for _, r in replies] == ["200 result=1 (WO-9)", "200 result=0", "200 result=0",
                                       "200 result=1", "200 result=3", "200 result= (timeout)",
                                       "200 result=0", "200 result=1"]


async def test_return_visit_hung_up_mid_script_gets_minus_one() -> None:
    replies: list[str] = []
    hung_up = asyncio.Event()

    async def returnvisit(headers: dict[str, str], send: Callable[[str], Awaitable[str]]) -> None:
        replies.append(await send("ANSWER"))
        await hung_up.wait()
        replies.append(await send("GET DATA hotline/rv-resolved 6000"))

    agi, _ = await fastagi(returnvisit)
    agi_port = port_of(agi)
    sim = PbxSimServer(pbx(), port=0, speed=20.0)
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        ami.send(rv_originate(port=agi_port))
        resp = await ami.until(lambda f: f.get("Event") == "OriginateResponse")
        await wait_for(lambda: bool(replies))
        ami.send([("Action", "Hangup"), ("ActionID", "h1"), ("Channel", resp["Channel"])])
        await ami.until(lambda f: f.get("ActionID") == "h1")
        hung_up.set()
        await wait_for(lambda: len(replies) == 2)
        await ami.close()
    finally:
        await sim.stop()
        agi.close()
    assert replies == ["200 result=0", "200 result=-1"]


async def test_return_visit_not_answered_over_tcp() -> None:
    p = pbx(answer=0.0)
    sim = PbxSimServer(p, port=0, speed=50.0)
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        ami.send(rv_originate(timeout=20000))
        resp = await ami.until(lambda f: f.get("Event") == "OriginateResponse")
        assert (resp["ActionID"], resp["Response"], resp["Reason"]) == ("rv-WO-7-1", "Failure",
                                                                        "3")
        await ami.close()
    finally:
        await sim.stop()


async def test_callback_over_tcp_joins_and_is_answered() -> None:
    p = pbx()
    sim = PbxSimServer(p, port=0, speed=20.0)
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        ami.send(cb_originate("7", repeated=True))
        resp = await ami.until(lambda f: f.get("Event") == "OriginateResponse")
        assert resp["Response"] == "Success"
        join = await ami.until(lambda f: f.get("Event") == "QueueCallerJoin")
        connect = await ami.until(lambda f: f.get("Event") == "AgentConnect")
        assert join["Uniqueid"] == connect["Uniqueid"] == resp["Uniqueid"]
        assert connect["CallerIDNum"] == NUMBER
        await ami.close()
    finally:
        await sim.stop()


def ivr_script(log: list[tuple[str, str]],
               survey: bool = True) -> Script:
    async def hotline(headers: dict[str, str], send: Callable[[str], Awaitable[str]]) -> None:
        for cmd in ["ANSWER", 'SET VARIABLE HOTLINE "12345"', 'SET VARIABLE CATEGORY "city"',
                    "GET DATA hotline/welcome 5000 1", "EXEC Queue hotline,tc,,,3600"]:
            log.append((cmd, await send(cmd)))
        if log[-1][1] != "200 result=0" or not survey:
            return
        for cmd in ["GET VARIABLE MEMBERINTERFACE", "GET DATA hotline/survey 5000 1",
                    'STREAM FILE hotline/thanks ""', "HANGUP"]:
            log.append((cmd, await send(cmd)))
    return hotline


async def run_ivr(spec: CallSpec, citizen_model: CitizenModel,
                  done: Callable[[list[tuple[str, str]]], bool]
                  ) -> tuple[list[dict[str, str]], list[tuple[str, str]], Ami, Pbx]:
    log: list[tuple[str, str]] = []
    agi, sessions = await fastagi(ivr_script(log))
    p = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=1,
                      agent_breaks=False), ScriptedTraffic([spec], origin=T0 + 2),
            start_time=T0, hold_arrivals=True)
    sim = PbxSimServer(p, port=0, speed=20.0, citizen=citizen_model,
                       agi_url=f"agi://127.0.0.1:{port_of(agi)}/hotline")
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        await wait_for(lambda: done(log))
        await asyncio.sleep(0.1)
    finally:
        await sim.stop()
        agi.close()
    return sessions, log, ami, p


async def test_ivr_session_stays_open_across_the_queue_and_gets_the_survey_key() -> None:
    spec = CallSpec(0.0, "13800002222", "B", ivr_path="1", ring=1, talk=20)
    sessions, log, ami, _p = await run_ivr(spec, citizen(survey=["2"]),
                                          lambda log: any(c == "HANGUP" for c, _ in log))
    [h] = sessions
    join = await ami.until(lambda f: f.get("Event") == "QueueCallerJoin")
    assert (h["agi_uniqueid"], h["agi_channel"]) == (join["Uniqueid"], join["Channel"])
    assert join["ChanVariable"].startswith("HOTLINE=12345")
    complete = await ami.until(lambda f: f.get("Event") == "AgentComplete")
    assert complete["Reason"] == "agent" and complete["Uniqueid"] == h["agi_uniqueid"]
    assert dict(log) == {
        "ANSWER": "200 result=0", 'SET VARIABLE HOTLINE "12345"': "200 result=0",
        'SET VARIABLE CATEGORY "city"': "200 result=0",
        "GET DATA hotline/welcome 5000 1": "200 result=1",
        "EXEC Queue hotline,tc,,,3600": "200 result=0",
        "GET VARIABLE MEMBERINTERFACE": "200 result=1 (Local/1001@agents/n)",
        "GET DATA hotline/survey 5000 1": "200 result=2",
        'STREAM FILE hotline/thanks ""': "200 result=0", "HANGUP": "200 result=1"}
    await ami.close()


async def test_ivr_caller_hanging_up_while_talking_gets_minus_one() -> None:
    spec = CallSpec(0.0, "13800003333", "C", ivr_path="1", ring=1, talk=300)
    log: list[tuple[str, str]] = []
    agi, _sessions = await fastagi(ivr_script(log))
    p = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=1,
                      agent_breaks=False), ScriptedTraffic([spec], origin=T0 + 1),
            start_time=T0, hold_arrivals=True)
    sim = PbxSimServer(p, port=0, speed=20.0, agi_url=f"agi://127.0.0.1:{port_of(agi)}/hotline")
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        connect = await ami.until(lambda f: f.get("Event") == "AgentConnect")
        ami.send([("Action", "Hangup"), ("ActionID", "h1"), ("Channel", connect["Channel"])])
        await wait_for(lambda: len(log) == 5)
        complete = await ami.until(lambda f: f.get("Event") == "AgentComplete")
        await ami.close()
    finally:
        await sim.stop()
        agi.close()
    assert complete["Reason"] == "caller"
    assert log[-1] == ("EXEC Queue hotline,tc,,,3600", "200 result=-1")


async def test_ivr_caller_abandoning_gets_minus_one() -> None:
    spec = CallSpec(0.0, "13800004444", "D", ivr_path="1", patience=3)
    log: list[tuple[str, str]] = []
    agi, _sessions = await fastagi(ivr_script(log))
    p = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=0,
                      agent_breaks=False), ScriptedTraffic([spec], origin=T0 + 1),
            start_time=T0, hold_arrivals=True)
    sim = PbxSimServer(p, port=0, speed=20.0, agi_url=f"agi://127.0.0.1:{port_of(agi)}/hotline")
    await sim.start()
    try:
        await wait_for(lambda: bool(log) and log[-1][0].startswith("EXEC Queue"))
    finally:
        await sim.stop()
        agi.close()
    assert log[-1] == ("EXEC Queue hotline,tc,,,3600", "200 result=-1")
    assert p.queues["hotline"].abandoned == 1


async def test_chanspy_and_mixmonitor_over_tcp_write_a_wav(tmp_path: Path) -> None:
    p = pbx()
    sim = PbxSimServer(p, port=0, speed=20.0, recordings_root=tmp_path / "rec")
    await sim.start()
    try:
        ami = await Ami.login(sim.port)
        ami.send([("Action", "Originate"), ("ActionID", "in-1"),
                  ("Channel", "Local/s@inbound"), ("Context", "caller"), ("Exten", "s"),
                  ("Priority", "1"), ("CallerID", '"王五" <13303905758>'), ("Async", "true"),
                  ("Variable", "__TALK=8"), ("Variable", "__RINGDELAY=1")])
        connect = await ami.until(lambda f: f.get("Event") == "AgentConnect")
        ami.send([("Action", "MixMonitor"), ("ActionID", "mm-1"),
                  ("Channel", connect["Channel"]), ("File", "2026-11-23/call.wav"),
                  ("Options", "b")])
        ami.send([("Action", "MixMonitor"), ("ActionID", "mm-2"),
                  ("Channel", connect["DestChannel"]), ("File", "../x.wav")])
        ami.send([("Action", "MixMonitor"), ("ActionID", "mm-3"),
                  ("Channel", "Local/nobody-1;1"), ("File", "y.wav")])
        ok = await ami.until(lambda f: f.get("ActionID") == "mm-1")
        assert ok["Response"] == "Success"
        bad = await ami.until(lambda f: f.get("ActionID") == "mm-3")
        assert (bad["Response"], bad["Message"]) == ("Error", "No such channel")
        await ami.until(lambda f: f.get("Event") == "MixMonitorStart")
        ami.send(spy_originate(data=f"{connect['Interface'].removesuffix('/n')},qE"))
        start = await ami.until(lambda f: f.get("Event") == "ChanSpyStart")
        assert start["SpyeeChannel"] == connect["DestChannel"]
        stop = await ami.until(lambda f: f.get("Event") == "ChanSpyStop")
        assert stop["SpyerChannel"] == start["SpyerChannel"]
        await ami.until(lambda f: f.get("Event") == "Hangup"
                        and f.get("Channel") == start["SpyerChannel"])
        mm_stop = await ami.until(lambda f: f.get("Event") == "MixMonitorStop"
                                  and f.get("Channel") == connect["Channel"])
        assert mm_stop["Uniqueid"] == connect["Uniqueid"]
        await ami.until(lambda f: f.get("Event") == "MixMonitorStop"
                        and f.get("Channel") == connect["DestChannel"])
        await sim.wait_recordings()
        await ami.close()
    finally:
        await sim.stop()
    wav = tmp_path / "rec" / "2026-11-23" / "call.wav"
    with wave.open(str(wav)) as w:
        assert w.getframerate() == 8000 and 7.0 <= w.getnframes() / 8000 <= 10.0
    assert not (tmp_path / "x.wav").exists()
    assert sim.recordings_written == [wav]
