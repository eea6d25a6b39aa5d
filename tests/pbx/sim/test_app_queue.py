"""The PBX simulator against the recorded Asterisk 22 trace, its counters, its TCP edge and seeds.

The sans-IO core re-runs ``ami-traces/scenario-a`` (scenario.json plus the driver's
pause/remove/add actions taken from the trace) and must produce, call by call, the
events Asterisk produced: same names in an order Asterisk was seen to use, the same
header fields in the same order, the same values, at the same moments, and in the
end Asterisk's own QueueStatus/QueueSummary/``queue show`` figures.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import pytest

from callcenter.pbx.sim import (
    Frame,
    Pbx,
    PbxConfig,
    QueueConfig,
    add_arguments,
    event_mask,
    frame_dict,
    mask_number,
    parse_frame,
)
from callcenter.pbx.traffic import (
    CallSpec,
    RandomTraffic,
    ScriptedTraffic,
    TrafficConfig,
    load_scenario,
    profile_at,
)
from tests.conftest import TRACES

SCENARIO = TRACES / "scenario-a"
needs_trace = pytest.mark.skipif(not (SCENARIO / "trace.jsonl").exists(),
                                 reason="no ../shared/ami-traces/scenario-a")

KEY_EVENTS = {"QueueCallerJoin", "AgentCalled", "AgentConnect", "AgentComplete",
              "QueueCallerAbandon", "AgentRingNoAnswer", "QueueCallerLeave"}


@dataclass(frozen=True)
class Ev:
    """One event frame with the time it was read (trace) or emitted (simulator)."""

    t: float
    fields: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return self.fields[0][1]

    @property
    def d(self) -> dict[str, str]:
        return frame_dict_from(self.fields)


def frame_dict_from(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    d: dict[str, str] = {}
    for k, v in fields:
        d.setdefault(k, v)
    return d


# --------------------------------------------------------------------------- scenario-a


@cache
def trace() -> tuple[float, list[Ev], list[tuple[float, dict[str, str]]]]:
    """(banner time, events read from Asterisk, actions the driver sent)."""
    records = [json.loads(line) for line in
               (SCENARIO / "trace.jsonl").read_text(encoding="utf-8").splitlines()]
    t0 = records[0]["t"]
    events = [Ev(r["t"], tuple(parse_frame(r["raw"]))) for r in records
              if r["dir"] == "in" and "\r\nPrivilege: " in r["raw"]]  # not list items
    actions = [(r["t"], frame_dict(r["raw"])) for r in records if r["dir"] == "out"]
    return t0, events, actions


@cache
def scenario_run() -> tuple[Pbx, list[Ev]]:
    """Re-run scenario.json in the core with the trace's queue settings and driver actions."""
    t0, _, actions = trace()
    calls = load_scenario(SCENARIO / "scenario.json")
    originates = [t for t, a in actions if a["Action"] == "Originate"]
    first_add = next(t for t, a in actions if a["Action"] == "QueueAdd")
    # the driver started ~2 s after connecting; its clock offset, measured on its originates
    origin = t0 + sum(o - t0 - c.at for o, c in zip(originates, calls, strict=True)) / len(calls)
    config = PbxConfig(queues=(QueueConfig("hotline", "rrmemory", servicelevel=15, timeout=10,
                                           retry=1, wrapuptime=3, autofill=False),),
                       agents=4, channelvars=(), agent_breaks=False)
    pbx = Pbx(config, ScriptedTraffic(calls, origin=origin), start_time=first_add, seed=7)
    for t, action in actions:  # agent1003 busy/unpause, agent1001 meal/unpause, 1002 out/in
        if action["Action"] in ("QueuePause", "QueueRemove") or (
                action["Action"] == "QueueAdd" and t > first_add + 1):
            pbx.schedule_action(t, action)
    events = [Ev(pbx.now, tuple(parse_frame(f.text))) for f in pbx.drain()]
    end = t0 + 244.5  # just before the driver's final QueueStatus
    while (when := pbx.next_event_time()) is not None and when <= end:
        events.extend(Ev(when, tuple(parse_frame(f.text))) for f in pbx.advance(when))
    pbx.advance(end)
    return pbx, events


def by_call(events: list[Ev]) -> dict[str, list[Ev]]:
    """Each caller's events (its channels, its operator legs, its bridge), keyed by number."""
    number: dict[str, str] = {}
    bridge_of: dict[str, str] = {}
    for e in events:
        d = e.d
        if e.name == "QueueCallerJoin":
            number[d["Linkedid"]] = d["CallerIDNum"]
        elif e.name == "BridgeEnter":
            bridge_of[d["BridgeUniqueid"]] = d["Linkedid"]
    out: dict[str, list[Ev]] = defaultdict(list)
    for e in events:
        d = e.d
        link = d.get("Linkedid") or d.get("DestLinkedid") or d.get("LocalOneLinkedid")
        if e.name == "OriginateResponse":
            link = d["Uniqueid"]
        elif e.name in ("BridgeCreate", "BridgeDestroy"):
            link = bridge_of.get(d["BridgeUniqueid"])
        if link in number:
            out[number[link]].append(e)
    return out


def kind(events: list[Ev]) -> str:
    names = [e.name for e in events]
    rna = "+rna" if "AgentRingNoAnswer" in names else ""
    if "QueueCallerAbandon" in names:
        return ("abandoned ringing" if "AgentCalled" in names else "abandoned waiting") + rna
    reason = next(e.d["Reason"] for e in events if e.name == "AgentComplete")
    return f"completed by {reason}{rna}"


def phases(events: list[Ev]) -> list[tuple[str, ...]]:
    """A call's events cut into bursts of one instant (Asterisk's threads race inside one)."""
    out: list[list[str]] = []
    last = None
    for e in events:
        if last is None or e.t - last > 0.1:
            out.append([])
        out[-1].append(e.name)
        last = e.t
    return [tuple(p) for p in out]


@needs_trace
def test_scenario_a_counters_equal_asterisks_own_answers() -> None:
    pbx, _ = scenario_run()
    truth = (SCENARIO / "truth.txt").read_text(encoding="utf-8").replace("\n", "\r\n")
    blocks = [frame_dict(b) for b in truth.split("\r\n\r\n") if b.strip()]
    status = [frame_dict(b) for b in pbx.handle_action(
        {"Action": "QueueStatus", "ActionID": "drv-69", "Queue": "hotline"}).split("\r\n\r\n")
        if b.strip()]
    for want in (b for b in blocks if b.get("Event") in ("QueueParams", "QueueMember")):
        got = next(b for b in status if b.get("Event") == want["Event"]
                   and b.get("Name") == want.get("Name"))
        assert got == want, want.get("Name", "QueueParams")
    summary = frame_dict(pbx.handle_action({"Action": "QueueSummary", "ActionID": "drv-70",
                                            "Queue": "hotline"}).split("\r\n\r\n")[1])
    assert summary == next(b for b in blocks if b.get("Event") == "QueueSummary")
    assert pbx.counters("hotline") == {
        "completed": 26, "abandoned": 10, "completed_in_sl": 6, "abandoned_in_sl": 1,
        "holdtime": 68, "talktime": 21, "sl_perf": 23.1, "sl_perf2": 19.4, "waiting": 0}


@needs_trace
def test_scenario_a_queue_show_matches_the_cli() -> None:
    pbx, _ = scenario_run()
    t0, _, _ = trace()
    pbx.advance(t0 + 244.572)  # when the driver asked
    reply = pbx.handle_action({"Action": "Command", "ActionID": "drv-71",
                               "Command": "queue show hotline"})
    truth = (SCENARIO / "truth.txt").read_text(encoding="utf-8")
    want = next(b for b in truth.split("\n\n") if "ActionID: drv-71" in b).splitlines()
    got = reply.split("\r\n")[:-2]
    assert got[:5] == want[:5] and got[-2:] == want[-2:]  # response, head line, callers
    assert sorted(got[5:-2]) == sorted(want[5:-2])  # members (Asterisk lists in hash order)
    assert len(got) == len(want) == 11


@needs_trace
def test_scenario_a_every_call_has_the_traces_outcome_and_event_names() -> None:
    _, trace_events, _ = trace()
    _, sim_events = scenario_run()
    want, got = by_call(trace_events), by_call(sim_events)
    assert set(got) == set(want) and len(want) == 36
    seen_phases = {p for events in want.values() for p in phases(events)}
    sequences: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for events in want.values():
        sequences[kind(events)].add(tuple(e.name for e in events))
    kinds = Counter()
    for number, events in got.items():
        assert kind(events) == kind(want[number]), number
        kinds[kind(events)] += 1
        assert len(phases(events)) == len(phases(want[number])), number
        for phase in phases(events):
            assert phase in seen_phases, (number, phase)
        if "rna" not in kind(events):  # the one rna call is checked burst by burst above
            assert tuple(e.name for e in events) in sequences[kind(events)], number
    assert kinds == {"completed by agent": 25, "completed by caller": 1,
                     "abandoned waiting": 8, "abandoned ringing": 1,
                     "abandoned ringing+rna": 1}


@needs_trace
def test_scenario_a_header_fields_and_their_order_are_asterisks() -> None:
    _, trace_events, _ = trace()
    _, sim_events = scenario_run()
    shapes: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for e in trace_events:
        shapes[e.name].add(tuple(k for k, _ in e.fields))
    emitted = {e.name for e in sim_events}
    assert emitted <= set(shapes), emitted - set(shapes)
    for e in sim_events:
        assert tuple(k for k, _ in e.fields) in shapes[e.name], e.name
    for e in sim_events:
        assert e.d["Privilege"] == next(t.d["Privilege"] for t in trace_events
                                        if t.name == e.name)


@needs_trace
def test_scenario_a_values_and_timing_match_call_by_call() -> None:
    """Channel names, uniqueid sequence numbers, states, contexts, priorities, hold and talk
    times, positions: every header of every call event, and when it came (within 50 ms)."""
    _, trace_events, _ = trace()
    _, sim_events = scenario_run()

    def keyed(events: list[Ev]) -> dict[tuple[str, ...], list[Ev]]:
        out: dict[tuple[str, ...], list[Ev]] = defaultdict(list)
        for e in events:
            d = e.d
            if e.name == "AgentComplete":  # one per call; Asterisk sometimes drops a side
                out[(e.name,)].append(e)
            else:
                out[(e.name, d.get("Channel", ""), d.get("DestChannel", ""),
                     d.get("LocalOneChannel", ""))].append(e)
        return out

    def norm(key: str, value: str) -> str:  # the epoch part differs when the ms-offset does
        return value.rsplit(".", 1)[-1] if key.endswith(("Uniqueid", "Linkedid")) else value

    want, got = by_call(trace_events), by_call(sim_events)
    compared = 0
    for number, events in want.items():
        mine = keyed(got[number])
        for key, theirs in keyed(events).items():
            assert len(mine[key]) == len(theirs), (number, key)
            for a, b in zip(theirs, mine[key], strict=True):
                da, db = a.d, b.d
                for field, value in da.items():
                    if field in ("BridgeUniqueid", "ActionID"):
                        continue
                    assert norm(field, db.get(field, "?")) == norm(field, value), (
                        number, key, field)
                    compared += 1
                if a.name in KEY_EVENTS:
                    assert abs(a.t - b.t) < 0.05, (number, a.name, b.t - a.t)
    assert compared > 25000


@needs_trace
def test_scenario_a_device_and_member_events_are_the_traces() -> None:
    _, trace_events, _ = trace()
    _, sim_events = scenario_run()

    def summary(events: list[Ev]) -> Counter[tuple[str, ...]]:
        out: Counter[tuple[str, ...]] = Counter()
        for e in events:
            d = e.d
            if e.name == "DeviceStateChange":
                device = d["Device"].split("@")[0] if d["Device"].startswith("Local/1") else (
                    d["Device"])
                out[(e.name, device, d["State"])] += 1
            elif e.name.startswith("QueueMember"):
                out[(e.name, d["MemberName"], d["Status"], d["Paused"], d["CallsTaken"],
                     d["PausedReason"])] += 1
        return out

    assert summary(sim_events) == summary(trace_events)


# --------------------------------------------------------------------------- counter semantics


T0 = 1_800_000_000.0


def one_queue_pbx(calls: list[CallSpec], agents: int = 1) -> Pbx:
    cfg = QueueConfig("hotline", servicelevel=15, timeout=10, retry=1, wrapuptime=0)
    return Pbx(PbxConfig(queues=(cfg,), agents=agents, agent_breaks=False),
               ScriptedTraffic(calls, origin=T0), start_time=T0, seed=1)


def params(pbx: Pbx) -> dict[str, str]:
    text = pbx.handle_action({"Action": "QueueStatus", "Queue": "hotline"})
    return next(frame_dict(b) for b in text.split("\r\n\r\n") if "QueueParams" in b)


def caller(at: float, number: str, *, talk: float = 30, ring: float = 1,
           patience: float | None = None) -> CallSpec:
    return CallSpec(at=at, number=number, name="测试", patience=patience,
                    patience_from_arrival=True, ring=ring, talk=talk)


def advance_to(pbx: Pbx, seconds: float) -> list[Frame]:
    return pbx.advance(T0 + seconds)


def test_completed_is_counted_when_the_call_ends_not_when_it_is_answered() -> None:
    pbx = one_queue_pbx([caller(0, "13800000001", ring=4, talk=30)])  # answered at +4.5 s
    frames = advance_to(pbx, 10)
    connect = next(f.headers() for f in frames if f.name == "AgentConnect")
    assert connect["HoldTime"] == "4"
    p = params(pbx)
    assert (p["Completed"], p["Holdtime"], p["Calls"]) == ("0", "4", "0")
    frames = advance_to(pbx, 60)
    done = next(f.headers() for f in frames if f.name == "AgentComplete")
    # the operator's Answer() adds ~0.5 s, as in the trace (talk 25 -> TalkTime 26)
    assert (done["Reason"], done["HoldTime"], done["TalkTime"]) == ("agent", "4", "31")
    p = params(pbx)
    assert (p["Completed"], p["TalkTime"], p["ServicelevelPerf"]) == ("1", "31", "100.0")


def test_service_level_abandons_and_smoothed_hold_time() -> None:
    # one operator: A talks 40 s; B waits behind A (>15 s, answered out of SL);
    # C hangs up after 20 s of waiting (abandon out of SL), D after 5 s (abandon within SL)
    pbx = one_queue_pbx([caller(0, "13800000001", ring=1, talk=40),
                         caller(1, "13800000002", ring=1, talk=10),
                         caller(2, "13800000003", patience=20.6),
                         caller(3, "13800000004", patience=5.6)])
    frames = advance_to(pbx, 200)
    holds = [int(f.headers()["HoldTime"]) for f in frames if f.name == "AgentConnect"]
    abandons = [f.headers() for f in frames if f.name == "QueueCallerAbandon"]
    assert holds[0] == 1 and holds[1] > 15
    assert sorted(int(a["HoldTime"]) for a in abandons) == [5, 20]
    c = pbx.counters("hotline")
    assert (c["completed"], c["completed_in_sl"], c["abandoned"], c["abandoned_in_sl"]) == (
        2, 1, 2, 1)
    assert c["holdtime"] == (3 * holds[0] + holds[1]) >> 2  # first sample taken as is
    p = params(pbx)
    assert (p["ServicelevelPerf"], p["ServicelevelPerf2"], p["Abandoned"]) == (
        "50.0", "50.0", "2")


def test_exit_by_key_is_not_abandoned_and_queue_reset_forgets() -> None:
    spec = CallSpec(at=0, number="13800000005", name="王芳", exit_key_after=3.0)
    pbx = one_queue_pbx([spec], agents=0)
    frames = advance_to(pbx, 60)
    assert [f.name for f in frames if f.name.startswith("QueueCaller")] == [
        "QueueCallerJoin", "QueueCallerLeave"]
    assert pbx.counters("hotline")["abandoned"] == 0
    pbx2 = one_queue_pbx([caller(0, "13800000006", patience=3)], agents=0)
    pbx2.advance(T0 + 10)
    assert params(pbx2)["Abandoned"] == "1"
    assert "reset successfully" in pbx2.handle_action({"Action": "QueueReset",
                                                       "Queue": "hotline"})
    assert (params(pbx2)["Abandoned"], params(pbx2)["Completed"]) == ("0", "0")


def test_custom_device_back_to_not_in_use_counts_the_call_early() -> None:
    pbx = one_queue_pbx([], agents=0)
    pbx.handle_action({"Action": "QueueAdd", "Queue": "hotline",
                       "Interface": "Local/2001@agents/n", "MemberName": "agent2001",
                       "StateInterface": "Custom:agent2001"})
    pbx.inject_call(caller(T0, "13800000007", ring=1, talk=60))
    pbx.advance(T0 + 5)
    pbx.handle_action({"Action": "Setvar", "Variable": "DEVICE_STATE(Custom:agent2001)",
                       "Value": "INUSE"})
    assert params(pbx)["Completed"] == "0"
    pbx.handle_action({"Action": "Setvar", "Variable": "DEVICE_STATE(Custom:agent2001)",
                       "Value": "NOT_INUSE"})
    assert params(pbx)["Completed"] == "1"  # counted now, while still talking
    frames = pbx.advance(T0 + 120)
    assert any(f.name == "AgentComplete" for f in frames)
    assert params(pbx)["Completed"] == "1"  # and not a second time at hang-up


def test_originate_injects_a_caller_with_channel_variables_and_actions_act_on_it() -> None:
    pbx = Pbx(PbxConfig(queues=(QueueConfig("hotline"), QueueConfig("hotline-en")), agents=0,
                        agent_breaks=False), start_time=T0)
    reply = pbx.handle_action([("Action", "Originate"), ("ActionID", "o1"),
                               ("Channel", "Local/s@inbound"), ("Context", "caller"),
                               ("Exten", "s"), ("Priority", "1"), ("Async", "true"),
                               ("CallerID", '"李四" <13912345678>'),
                               ("Variable", "HOTLINE=12315"), ("Variable", "CATEGORY=market"),
                               ("Variable", "__TALK=20")])
    assert reply == ("Response: Success\r\nActionID: o1\r\n"
                     "Message: Originate successfully queued\r\n\r\n")
    frames = pbx.advance(T0 + 1)
    response = next(f.headers() for f in frames if f.name == "OriginateResponse")
    assert (response["ActionID"], response["CallerIDName"]) == ("o1", "李四")
    join = next(f for f in frames if f.name == "QueueCallerJoin")
    assert ("ChanVariable: HOTLINE=12315\r\nChanVariable: IVR_PATH=1\r\n"
            "ChanVariable: CATEGORY=market\r\nQueue: hotline\r\n") in join.text
    channel = join.headers()["Channel"]
    entries = pbx.handle_action({"Action": "QueueStatus", "ActionID": "s"})
    assert f"Event: QueueEntry\r\nQueue: hotline\r\nPosition: 1\r\nChannel: {channel}" in entries
    moved = pbx.handle_action({"Action": "Redirect", "Channel": channel, "Context": "inbound",
                               "Exten": "hotline-en", "Priority": "1"})
    assert "Redirect successful" in moved
    frames = pbx.advance(T0 + 2)
    assert [(f.name, f.headers()["Queue"]) for f in frames if f.name.startswith("QueueCaller")
            ] == [("QueueCallerAbandon", "hotline"), ("QueueCallerLeave", "hotline"),
                  ("QueueCallerJoin", "hotline-en")]
    listing = pbx.handle_action({"Action": "CoreShowChannels", "ActionID": "c"})
    assert listing.count("Event: CoreShowChannel\r\nActionID: c\r\n") == 2
    assert "ListItems: 2\r\n" in listing
    assert "Channel Hungup" in pbx.handle_action({"Action": "Hangup", "Channel": channel})
    frames = pbx.advance(T0 + 3)
    assert [f.name for f in frames].count("Hangup") == 2 and not pbx.channels
    assert "No such channel" in pbx.handle_action({"Action": "Hangup", "Channel": channel})


def test_pause_without_queue_pauses_every_queue_once_each() -> None:
    pbx = Pbx(PbxConfig(queues=(QueueConfig("hotline"), QueueConfig("hotline-en")), agents=2,
                        agent_breaks=False), start_time=T0)
    pbx.drain()
    reply = pbx.handle_action({"Action": "QueuePause", "ActionID": "p",
                               "Interface": "Local/1002@agents/n", "Paused": "true",
                               "Reason": "training"})
    assert "Interface paused successfully" in reply
    pauses = [f.headers() for f in pbx.drain() if f.name == "QueueMemberPause"]
    assert [(p["Queue"], p["Paused"], p["PausedReason"]) for p in pauses] == [
        ("hotline", "1", "training"), ("hotline-en", "1", "training")]
    assert "Interface not found" in pbx.handle_action(
        {"Action": "QueuePause", "Interface": "Local/9999@agents/n", "Paused": "false"})


def test_ringall_sip_phones_queue_timeout_and_calls_to_operators() -> None:
    ringall = Pbx(PbxConfig(queues=(QueueConfig(strategy="ringall"),), agents=3,
                            agent_breaks=False),
                  ScriptedTraffic([caller(0, "13800000011", ring=2, talk=10)], origin=T0),
                  start_time=T0)
    frames = ringall.advance(T0 + 30)
    assert [f.name for f in frames].count("AgentCalled") == 3
    assert sorted(f.headers()["DialStatus"] for f in frames  # the queue's dials only
                  if f.name == "DialEnd" and "Channel" in f.headers()) == [
        "ANSWER", "CANCEL", "CANCEL"]
    assert ringall.counters("hotline")["completed"] == 1 and not ringall.channels

    sip = Pbx(PbxConfig(agents=0, agent_breaks=False),
              ScriptedTraffic([caller(1, "13800000012", ring=2, talk=10)], origin=T0),
              start_time=T0)
    sip.handle_action({"Action": "QueueAdd", "Queue": "hotline", "Interface": "PJSIP/2001",
                       "MemberName": "张工"})
    frames = sip.advance(T0 + 30)
    legs = {f.headers()["Channel"] for f in frames if f.name == "Newchannel"}
    assert "PJSIP/2001-00000001" in legs and len(legs) == 3
    done = next(f.headers() for f in frames if f.name == "AgentComplete")
    assert (done["Interface"], done["MemberName"], done["Reason"]) == ("PJSIP/2001", "张工",
                                                                       "agent")

    patient = Pbx(PbxConfig(queues=(QueueConfig(maxwait=30),), agents=0, agent_breaks=False),
                  ScriptedTraffic([CallSpec(at=0, number="13800000013", name="丙")], origin=T0),
                  start_time=T0)
    frames = patient.advance(T0 + 60)
    gave_up = next(f.headers() for f in frames if f.name == "QueueCallerAbandon")
    assert gave_up["HoldTime"] == "30" and patient.counters("hotline")["abandoned"] == 1

    outbound = Pbx(PbxConfig(agents=2, agent_breaks=False), start_time=T0)
    outbound.drain()
    outbound.handle_action({"Action": "Originate", "ActionID": "cb", "Async": "true",
                            "Channel": "Local/1001@agents", "Context": "callback",
                            "Exten": "13800000014", "Priority": "1", "Variable": "TALK=20"})
    frames = outbound.advance(T0 + 5)
    assert next(f.headers() for f in frames if f.name == "OriginateResponse")["ActionID"] == "cb"
    assert [f.headers()["Status"] for f in frames if f.name == "QueueMemberStatus"] == ["2"]
    outbound.inject_call(caller(T0 + 5, "13800000015", ring=1))
    frames = outbound.advance(T0 + 10)  # the busy operator is not rung
    rung = [f.headers()["MemberName"] for f in frames if f.name == "AgentCalled"]
    assert rung == ["agent1002"]


# --------------------------------------------------------------------------- determinism


def random_stream(seed: int, minutes: float = 40) -> list[str]:
    t0 = 1_800_000_000.0
    traffic = RandomTraffic(TrafficConfig(peak_calls_per_hour=400, start_hour=10),
                            seed=seed, origin=t0)
    pbx = Pbx(PbxConfig(agents=6), traffic, start_time=t0, seed=seed)
    return [f.text for f in pbx.advance(t0 + minutes * 60)]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b, c = random_stream(11), random_stream(11), random_stream(12)
    assert a == b and len(a) > 2000
    assert a != c
    names = Counter(frame_dict(t)["Event"] for t in a)
    assert names["QueueCallerJoin"] > 100 and names["QueueMemberPause"] > 0
    assert all(t.endswith("\r\n\r\n") and "\n" not in t.replace("\r\n", "") for t in a)


def test_traffic_profile_numbers_and_names() -> None:
    night, morning = profile_at(TrafficConfig().profile, 3 * 3600), profile_at(
        TrafficConfig().profile, 10 * 3600)
    assert morning > 20 * night
    traffic = RandomTraffic(TrafficConfig(peak_calls_per_hour=3600, start_hour=0), seed=1,
                            origin=0.0)
    calls = []
    while (spec := traffic.next_call(calls[-1].at if calls else 0.0)) and spec.at < 86400:
        calls.append(spec)
    per_hour = Counter(int(c.at // 3600) for c in calls)
    assert per_hour[10] > 10 * per_hour[3]
    assert all(len(c.number) == 11 and c.number.startswith("13") for c in calls)
    assert all(2 <= len(c.name) <= 3 for c in calls)
    assert {c.hotline for c in calls} >= {"12345", "12315", "12369"}
    rate = RandomTraffic(TrafficConfig(rate=5.0), seed=1, origin=100.0)
    times = [rate.next_call(100.0).at for _ in range(3)]  # type: ignore[union-attr]
    assert times == pytest.approx([100.0, 100.2, 100.4])


def test_helpers_masks_and_cli_options() -> None:
    assert mask_number("13303905758") == "*******5758"
    assert event_mask("off") == 0 and event_mask("agent,call") == 32 | 2
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.username, args.secret) == (
        "127.0.0.1", 5038, "hotline", "hotline")
