"""The simulator's call flows against the real Asterisk 22 recording ``scenario-g``.

For each flow the recording holds (its README's timeline), the queue events of one
caller - joins, leaves, abandons, connects, completes with their Reason, the transfer
event, the caller channel's hang-up, and the operator answering the next caller while
the first is still in the survey - come in the same order with the same key fields
from the simulator as from the real Asterisk, and the events that carry a shape
(AgentComplete, BlindTransfer, QueueMemberAdded) have the same headers.  The recording
has no attended transfer; that flow follows app_queue.c (``handle_attended_transfer``)
and AMI-NOTES.md, and is checked by ``tests/test_call_flows.py`` only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callcenter.pbx.sim import Pbx, PbxConfig, frame_dict
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import ScriptedTraffic
from tests.test_call_flows import CASES, QUEUES, T0

TRACE = Path(__file__).parents[2] / "data" / "ami-traces" / "scenario-g" / "trace.jsonl"
KEY = ("QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "AgentConnect",
       "AgentComplete", "BlindTransfer", "AttendedTransfer", "Hangup")
#: The caller (Uniqueid of its queue channel) whose flow the recording shows (README).
RECORDED = {"blind": "1795982518.9", "redirect": "1795982625.73",
            "overflow": "1795982618.71", "survey": "1795982549.23",
            "survey_star": "1795982685.93"}


def real_events() -> list[dict[str, str]]:
    out = []
    for line in TRACE.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["dir"] == "in" and rec["raw"].startswith("Event:"):
            out.append(frame_dict(rec["raw"]))
    return out


def sim_events(name: str) -> tuple[list[dict[str, str]], str]:
    case = CASES[name]
    cfg = PbxConfig(queues=tuple(SimQueue(name=q) for q in QUEUES), agents=case.agents,
                    agent_breaks=False, channelvars=())
    pbx = Pbx(cfg, ScriptedTraffic(case.calls), start_time=T0, seed=16)
    for action in case.actions:
        pbx.handle_action(action)
    events = [frame_dict(f.text) for f in pbx.drain() + pbx.advance(T0 + 300)]
    first = next(e for e in events if e["Event"] == "QueueCallerJoin")
    return events, first["Uniqueid"]


def flow_of(events: list[dict[str, str]], uid: str, with_next: bool) -> list[tuple[str, ...]]:
    """The caller's key events as (event, queue, reason), up to its channel's hang-up and
    the AgentCompletes that follow it at once; with ``with_next`` also ("next",) each time an
    operator of this caller answers another caller meanwhile (repeats folded)."""
    members: set[tuple[str, str]] = set()  # (queue, member) that answered this caller
    out: list[tuple[str, ...]] = []
    hung = False
    for e in events:
        name, mine = e["Event"], uid in (e.get("Uniqueid"), e.get("TransfereeUniqueid"))
        bare = name == "AgentComplete" and "Uniqueid" not in e and (
            e.get("Queue"), e.get("MemberName")) in members
        if name == "AgentConnect" and not mine and not hung and with_next and any(
                m == e.get("MemberName") for _, m in members):
            item: tuple[str, ...] = ("next",)
        elif name in KEY and (mine or bare) and (not hung or name == "AgentComplete"):
            if name == "Hangup" and e.get("Channel", "").endswith(";1"):
                continue  # the caller's ;1 half: when it goes differs with the dialplan
            item = (name, e.get("Queue", ""), e.get("Reason", ""))
            hung = hung or name == "Hangup"
            if name == "AgentConnect":
                members.add((e["Queue"], e["MemberName"]))
        elif hung:
            break  # the caller is gone and the next call's events begin
        else:
            continue
        if not out or out[-1] != item:
            out.append(item)
    return out


def shape(e: dict[str, str]) -> set[str]:
    return {k for k in e if "ChanVariable" not in k and k not in ("Privilege", "ActionID")}


@pytest.mark.parametrize("name", list(RECORDED))
def test_flow_has_the_recorded_events_in_the_recorded_order(name: str) -> None:
    real = real_events()
    events, uid = sim_events(name)
    survey = name.startswith("survey")
    want = flow_of(real, RECORDED[name], with_next=survey)
    got = flow_of(events, uid, with_next=survey)
    assert got == want
    # The flow's own events have the recorded headers (an ordinary AgentComplete, Reason
    # agent, sometimes lacks its Dest fields on a real Asterisk: not the flow's).
    for kind in ("AgentComplete", "BlindTransfer"):
        real_one = [shape(e) for e in real if e["Event"] == kind and e.get("Reason") != "agent"
                    and RECORDED[name] in (e.get("Uniqueid"), e.get("TransfereeUniqueid"))]
        sim_one = [shape(e) for e in events if e["Event"] == kind and e.get("Reason") != "agent"
                   and uid in (e.get("Uniqueid"), e.get("TransfereeUniqueid"))]
        assert sim_one == real_one, kind


def test_member_wrapuptime_has_the_recorded_shape() -> None:
    real = next(e for e in real_events() if e["Event"] == "QueueMemberAdded"
                and e.get("Wrapuptime") == "30")
    events, _ = sim_events("wrapup")
    sim = next(e for e in events if e["Event"] == "QueueMemberAdded")
    assert sim["Wrapuptime"] == "30"
    assert shape(sim) == shape(real)
