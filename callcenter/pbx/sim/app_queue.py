"""An AMI-speaking PBX simulator: Asterisk 20/22 with app_queue, driven by a traffic model.

Theory of operation
-------------------
Asterisk cannot run here, so the service, the demo, the tests and the
benchmarks talk to this module exactly as to a real Asterisk manager
interface.  It has two layers.

*The sans-IO core* (:class:`Pbx`) owns a virtual clock (``now``, epoch
seconds) and a heap of timed callbacks.  ``advance(t)`` runs every callback
due up to ``t`` in (time, insertion) order and returns the AMI event frames
they produced; ``handle_action()`` answers one AMI action at ``now``.  Nothing
in the core reads a clock, touches a socket or uses global state, so a test
drives it second by second and gets the same frames every time.

The core models what ``apps/app_queue.c`` does, with the timings measured on
the recorded Asterisk 22 trace (``ami-traces/scenario-a``):

* A caller is a Local channel pair ``Local/s@inbound-XXXXXXXX;1/;2``.  ``;1``
  sits in the ``caller`` context, ``;2`` answers (Answer() waits ~0.5 s for
  media) and enters ``Queue()``: QueueCallerJoin, start = ``int(now)``.
* ``wait_our_turn``: a waiting caller checks once a second (RECHECK) whether it
  may ring somebody: with ``autofill=no`` only the head caller may (the trace
  behaves so: one caller rings at a time), with ``autofill=yes`` (the default
  here) the n-th waiting caller may when at least n members are available.  A member is available when not paused, not ringing or talking
  (``ringinuse=no``) and out of wrap-up (``int(now) - wrapuptime >= lastcall``).
* ``try_calling``: the strategy picks the member(s) (rrmemory rings the next
  member after the last one rung, leastrecent the one idle longest, ringall
  every available one); AgentCalled + DialBegin; the operator's phone answers
  after the traffic model's ring delay, or AgentRingNoAnswer fires after the
  queue's ring ``timeout`` and the caller retries ``retry`` seconds later.
* Answer: QueueCallerLeave, AgentConnect (HoldTime = ``int(now) - start``),
  the queue's smoothed holdtime ``(3*old + hold) >> 2`` (the first sample after
  a start or QueueReset is taken as is, as recalc_holdtime() does), a bridge.
* End of talk (operator or caller hangs up): AgentComplete, and only *then*
  ``callscompleted`` (+``callscompletedinsl`` when the wait was
  ``<= servicelevel``) and the smoothed talktime (first completed call taken
  as is), as ``update_queue()`` does.
* A caller hanging up while waiting or ringing: QueueCallerAbandon,
  ``callsabandoned`` (+``callsabandonedinsl`` when ``<= servicelevel``).
  Leaving by a key is not an abandon; the Queue() timeout is.

Every event is rendered from templates whose header names and order are those
of the trace (channel snapshot fields, ``ChanVariable: NAME=value`` lines for
manager.conf ``channelvars`` appended after them as ``manager_channels.c``
does, then the event's own fields), with ``Privilege`` and CRLF framing.
Uniqueids are ``<int(now)>.<sequence>``, Local channel suffixes a shared hex
counter, bridge ids seeded UUIDs.  Channel snapshots are cached strings, so a
frame is a handful of string joins.

*The IO edge* (:class:`PbxSimServer`) is a thin asyncio TCP server: banner,
per-connection :class:`AmiSession` (login, event mask, ping, logoff), a timer
that advances the core to ``v0 + (monotonic - m0) * speed`` in slices of at
most ``batch`` frames and writes each client the frames its mask allows, one
write per slice.  A core too busy to keep up lags behind the wall clock rather
than bursting; a client whose unsent bytes exceed a bound is dropped instead of
stalling the others.  Opt-in (``agi_url``, ``--agi-url``): the core holds each
arrival (``hold_arrivals``) and the edge first runs it through the FastAGI IVR
as Asterisk's ``AGI()`` would (:func:`run_agi`), the caller pressing the digits
of its ``ivr_path``; the call then joins the queue the script chose.  The AGI
session stays open while the caller is in Queue(): ``agi_uniqueid``/``agi_channel``
are the ``;2`` channel's (allocated ahead, :meth:`Pbx.reserve_caller`) that the
queue events carry.  When the operator hangs up first ``EXEC Queue`` gets
``200 result=0`` and the script may ``GET VARIABLE MEMBERINTERFACE`` (``200 result=1
(Local/1001@agents/n)``) and play the survey (``GET DATA`` answered with the
citizen model's key); a caller who hangs up, abandons or leaves the queue gets
``200 result=-1``.  The core emits the caller's Hangup at the end of the bridge as
the trace shows, so the survey conversation finishes after that Hangup event.

Outbound and supervision (all additive: nothing happens unless the action is sent)
------------------------------------------------------------------------------
* ``Originate`` of ``Local/<number>@hotline-outbound`` / ``@hotline-callback``
  (a citizen; :class:`~callcenter.pbx.traffic.CitizenModel` decides answer, ring time,
  keys): Newchannel ``;1`` (Down), Newchannel ``;2`` (Ring), NewCallerid ``;1``
  (the Originate's CallerID), LocalBridge, Newstate ``;1`` Ringing.  Not answered:
  Hangup ``;2``, Hangup ``;1`` (cause 19, or 17 busy), then ``OriginateResponse``
  ``Response: Failure``, ``Channel: Local/<number>@<context>``, ``Reason: 3`` (rang
  out at the model's ring-out or the ``Timeout``) or ``5`` (busy, after 1 s),
  ``Uniqueid: <null>``.  Answered: Newstate ``;2`` Up, Newstate ``;1`` Up,
  ``OriginateResponse`` ``Success``, ``Channel``/``Uniqueid`` of ``;1``, ``Reason: 4``.
  Header order is manager.c's: ``ActionID, Response, Channel, Application, Data``
  (or ``Context, Exten``) ``, Reason, Uniqueid, CallerIDNum, CallerIDName``.  The
  trunk leg ``;2`` dials is not modelled as a channel.
  - ``Application: AGI`` / ``Data: agi://host:port/script,arg1,...``: the IO edge
    runs the script on ``;1`` (:attr:`Pbx.agi_runs`); when it ends ``;1`` and ``;2``
    hang up (HangupRequest, Hangup ``;1``, SoftHangupRequest, Hangup ``;2``).
  - ``Context: hotline-queue`` / ``Exten: <queue>``: ``;1`` (caller ID set to the
    citizen's number: NewCallerid) joins the queue as an ordinary caller with the
    Originate's variables as channel variables (QueueCallerJoin, AgentCalled ...).
* ``Originate`` of a supervisor phone (``Local/1901@agents`` ... 1904) with
  ``Application: ChanSpy`` / ``Data: <prefix>,<options>``: Newchannel x2,
  NewCallerid, LocalBridge, DialBegin; ~1 s later Newstate x2 Up, DialEnd ANSWER,
  OriginateResponse Success (``Application: ChanSpy``, ``Data``, ``Reason: 4``);
  then ``ChanSpyStart`` (``Spyer*`` then ``Spyee*`` channel snapshots) on the first
  bridged channel whose name starts with the prefix.  When it hangs up:
  ``ChanSpyStop`` (same fields) just before its Hangup, and with option ``E`` the
  supervisor's channels hang up; without ``E`` the scan resumes.  A Hangup action on
  the spyer ends it (ChanSpyStop first).  Real ChanSpy with nothing to spy on keeps
  scanning (beeping) until the spyer hangs up; the sim scans once a second for
  ``spy_wait`` (5 s) and then hangs the spyer up.  Listen/whisper/barge (``w``,
  ``B``) only change audio in Asterisk; the sim logs the mode.  Any other phone:
  ``Response: Error`` ``Message: Originate failed``.
* ``MixMonitor`` (``Channel``, ``File``, ``Options``): unknown channel ``Response:
  Error`` / ``Message: No such channel`` (app_mixmonitor's text), else ``Response:
  Success`` (ActionID only) and ``MixMonitorStart`` (the channel's snapshot); when
  the channel hangs up ``MixMonitorStop`` (snapshot) just before its Hangup, and a
  :class:`Recording` in :attr:`Pbx.recordings` for the IO edge to write.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from callcenter.pbx.traffic import (
    CallSource,
    CallSpec,
    CitizenModel,
    RandomTraffic,
    ScriptedTraffic,
    TrafficConfig,
    load_scenario,
)

log = structlog.get_logger(__name__)

BANNER = "Asterisk Call Manager/11.0.0\r\n"

# Timings measured on the recorded Asterisk 22 trace (seconds).
JOIN_DELAY = 0.502  # Answer() waits ~0.5 s for media before Queue() starts
RECHECK = 1.0009  # wait_our_turn() polls once a second (+~1 ms per loop)
RING_SCALE = 1.001  # the operators' Wait(RINGDELAY) took ring * 1.001 s
AGENT_SETTLE = 0.517  # operator hangs up ~0.517 s after the talk time (Answer + Wait)
HANGUP_LAG = 0.003  # caller's Wait(PATIENCE) ends ~3 ms late
TIMER_LAG = 0.001  # ring timeout and retry fire ~1 ms late
DEFAULT_RING, DEFAULT_TALK = 2.0, 60.0  # an operator's phone when no traffic model drives it
SPY_RING = 1.0  # a supervisor phone rings this long before it answers a ChanSpy originate
SPY_WAIT = 5.0  # ChanSpy with nothing to spy on: the sim's spyer hangs up after this
CAUSE_TEXT = {0: "Unknown", 16: "Normal Clearing", 17: "User busy",
              19: "User alerting, no answer"}

# manager.h EVENT_FLAG_* bits and their names, as in manager.conf read=/Events:.
EVENT_FLAGS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4,
    "agent": 1 << 5, "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9,
    "cdr": 1 << 10, "dialplan": 1 << 11, "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 14,
    "aoc": 1 << 15, "test": 1 << 16, "security": 1 << 17, "message": 1 << 18,
}
ALL_EVENTS = sum(EVENT_FLAGS.values())
CALL = (EVENT_FLAGS["call"], "call,all")
AGENT = (EVENT_FLAGS["agent"], "agent,all")
SYSTEM = (EVENT_FLAGS["system"], "system,all")

UNKNOWN = "<unknown>"
STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
DEVSTATE_NAMES = {"UNKNOWN": 0, "NOT_INUSE": 1, "INUSE": 2, "BUSY": 3, "INVALID": 4,
                  "UNAVAILABLE": 5, "RINGING": 6, "RINGINUSE": 7, "ONHOLD": 8}
DEVSTATE_TEXT = {0: "Unknown", 1: "Not in use", 2: "In use", 3: "Busy", 4: "Invalid",
                 5: "Unavailable", 6: "Ringing", 7: "Ring+Inuse", 8: "On Hold"}
CID_PRES = "CID-CallingPres: 0 (Presentation Allowed, Not Screened)\r\n"
BRIDGE_FIELDS = ("BridgeType: basic\r\nBridgeTechnology: simple_bridge\r\n"
                 "BridgeCreator: <unknown>\r\nBridgeName: <unknown>\r\n")

NOT_INUSE, INUSE = 1, 2  # ast_device_state values used for members
IDLE, RINGING, TALKING = "idle", "ringing", "talking"  # an operator phone


class Frame(NamedTuple):
    """One AMI event as written on the wire: name, privilege class bits, CRLF text."""

    name: str
    mask: int
    text: str

    def headers(self) -> dict[str, str]:
        """The frame's headers (first of repeated ones) as a dict."""
        return frame_dict(self.text)


def parse_frame(text: str) -> list[tuple[str, str]]:
    """Split one AMI frame into ``(key, value)`` pairs, keeping order and repeats."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        out.append((key, value.removeprefix(" ")) if sep else (line, ""))
    return out


def frame_dict(text: str) -> dict[str, str]:
    """An AMI frame's headers as a dict (the first of repeated headers wins)."""
    d: dict[str, str] = {}
    for key, value in parse_frame(text):
        d.setdefault(key, value)
    return d


def event_mask(value: str | None) -> int:
    """manager.c's ``Events:`` parsing: on/off, a number, or a comma list of classes."""
    if value is None:
        return ALL_EVENTS
    v = value.strip().lower()
    if v in ("on", "yes", "true", "all", "1"):
        return ALL_EVENTS
    if v in ("off", "no", "false", "0", ""):
        return 0
    if v.isdigit():
        return int(v)
    mask = 0
    for name in v.split(","):
        mask |= ALL_EVENTS if name.strip() == "all" else EVENT_FLAGS.get(name.strip(), 0)
    return mask


def mask_number(number: str) -> str:
    """A caller number fit for a log line: every digit but the last four hidden."""
    return "*" * max(0, len(number) - 4) + number[-4:]


def _hms(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue as queues.conf would define it (the trace's settings by default)."""

    name: str = "hotline"
    strategy: str = "rrmemory"  # rrmemory, ringall, leastrecent, fewestcalls, linear, random
    servicelevel: int = 15
    timeout: float = 10.0  # how long one member rings before AgentRingNoAnswer
    retry: float = 1.0  # pause before the caller tries the members again
    wrapuptime: int = 3
    autofill: bool = True
    maxlen: int = 0
    maxwait: int = 120  # Queue()'s timeout argument; 0 waits for ever
    weight: int = 0


@dataclass(frozen=True, slots=True)
class PbxConfig:
    """The simulated Asterisk: queues, operator phones and manager.conf ``channelvars``."""

    queues: tuple[QueueConfig, ...] = (QueueConfig(),)
    agents: int = 8
    first_extension: int = 1001
    autologin: bool = True
    agent_breaks: bool = True
    channelvars: tuple[str, ...] = ("HOTLINE", "IVR_PATH", "CATEGORY")
    inbound_context: str = "inbound"
    caller_context: str = "caller"
    agent_context: str = "agents"
    hotline_queues: Mapping[str, str] = field(default_factory=dict)
    after_queue_hold: float = 20.0
    # Outbound calls to citizens (return visit, call-back) and supervisor phones (ChanSpy).
    outbound_context: str = "hotline-outbound"
    callback_context: str = "hotline-callback"
    queue_context: str = "hotline-queue"
    supervisors: tuple[str, ...] = ("1901", "1902", "1903", "1904")
    spy_ring: float = SPY_RING
    spy_wait: float = SPY_WAIT

    def __post_init__(self) -> None:
        if not self.queues:
            raise ValueError("at least one queue is needed")
        if len({q.name for q in self.queues}) != len(self.queues):
            raise ValueError("queue names must be unique")


# --------------------------------------------------------------------------- model objects


class Channel:
    """A channel and its cached AMI snapshot strings (plain and ``Dest``-prefixed)."""

    __slots__ = (
        "_dsnap",
        "_snap",
        "app",
        "appdata",
        "bridge",
        "chanvars",
        "cid_name",
        "cid_num",
        "conn_name",
        "conn_num",
        "context",
        "created",
        "exten",
        "linkedid",
        "name",
        "owner",
        "priority",
        "state",
        "uniqueid",
        "vars",
    )

    def __init__(self, name: str, state: int, context: str, exten: str, uniqueid: str,
                 linkedid: str, created: float, variables: Mapping[str, str],
                 chanvars: tuple[str, ...], owner: Any) -> None:
        self.name, self.state, self.context, self.exten = name, state, context, exten
        self.cid_num = self.cid_name = self.conn_num = self.conn_name = UNKNOWN
        self.priority = 1
        self.uniqueid, self.linkedid, self.created = uniqueid, linkedid, created
        self.app = self.appdata = self.bridge = ""
        self.vars, self.chanvars, self.owner = variables, chanvars, owner
        self._snap: str | None = None
        self._dsnap: str | None = None

    def set(self, **changes: Any) -> None:
        """Change snapshot fields and drop the cached strings."""
        for key, value in changes.items():
            setattr(self, key, value)
        self._snap = self._dsnap = None

    def render(self, p: str) -> str:
        """The channel snapshot with header prefix ``p`` (``""``, ``Dest``, ``LocalOne``...)."""
        s = (f"{p}Channel: {self.name}\r\n{p}ChannelState: {self.state}\r\n"
             f"{p}ChannelStateDesc: {STATE_DESC[self.state]}\r\n"
             f"{p}CallerIDNum: {self.cid_num}\r\n{p}CallerIDName: {self.cid_name}\r\n"
             f"{p}ConnectedLineNum: {self.conn_num}\r\n{p}ConnectedLineName: {self.conn_name}\r\n"
             f"{p}Language: en\r\n{p}AccountCode: \r\n{p}Context: {self.context}\r\n"
             f"{p}Exten: {self.exten}\r\n{p}Priority: {self.priority}\r\n"
             f"{p}Uniqueid: {self.uniqueid}\r\n{p}Linkedid: {self.linkedid}\r\n")
        if self.chanvars:
            s += "".join(f"{p}ChanVariable: {v}={self.vars.get(v, '')}\r\n" for v in self.chanvars)
        return s

    def snap(self) -> str:
        if self._snap is None:
            self._snap = self.render("")
        return self._snap

    def dsnap(self) -> str:
        if self._dsnap is None:
            self._dsnap = self.render("Dest")
        return self._dsnap


class Phone:
    """A simulated operator phone: answers queue calls after the traffic model's ring delay."""

    __slots__ = (
        "attempt",
        "call",
        "context",
        "device",
        "ext",
        "local",
        "memberships",
        "on_break",
        "state",
    )

    def __init__(self, device: str, ext: str, context: str, local: bool) -> None:
        self.device, self.ext, self.context, self.local = device, ext, context, local
        self.state = IDLE
        self.attempt: Attempt | None = None
        self.call: Call | AgentCall | None = None
        self.memberships: dict[str, Member] = {}
        self.on_break = ""

    @property
    def status(self) -> int:
        """The device state app_queue sees (a Local channel shows INUSE only once answered)."""
        return INUSE if self.state == TALKING else NOT_INUSE


class Member:
    """A queue member (one interface in one queue) with app_queue's per-member fields."""

    __slots__ = (
        "calls",
        "custom",
        "custom_state",
        "in_call",
        "interface",
        "last_call",
        "last_pause",
        "login_time",
        "name",
        "paused",
        "penalty",
        "phone",
        "qpos",
        "queue",
        "reason",
        "removed",
        "state_interface",
    )

    def __init__(self, queue: Queue, name: str, interface: str, state_interface: str,
                 penalty: int, login_time: int, phone: Phone) -> None:
        self.queue, self.name, self.interface = queue, name, interface
        self.state_interface, self.penalty, self.login_time = state_interface, penalty, login_time
        self.calls = self.last_call = self.last_pause = self.qpos = 0
        self.in_call = self.paused = self.removed = False
        self.reason = ""
        self.phone = phone
        self.custom: dict[str, int] = {}
        self.custom_state = state_interface.startswith("Custom:")

    @property
    def status(self) -> int:
        """The state of ``StateInterface``: a ``Custom:`` device if set so, else the phone."""
        if self.custom_state:
            return self.custom.get(self.state_interface, 0)
        return INUSE if self.phone.state == TALKING else NOT_INUSE


class Queue:
    """A call queue: members in order, waiting callers in order, Asterisk's counters."""

    __slots__ = (
        "abandoned",
        "abandoned_in_sl",
        "callers",
        "cfg",
        "completed",
        "completed_in_sl",
        "holdtime",
        "idle",
        "members",
        "mixed_penalties",
        "name",
        "order",
        "ringing",
        "rrpos",
        "talktime",
    )

    def __init__(self, cfg: QueueConfig) -> None:
        self.cfg, self.name = cfg, cfg.name
        self.members: dict[str, Member] = {}
        self.callers: list[Call] = []
        self.order: list[Member] = []  # members in queue order (Member.qpos)
        self.mixed_penalties = False
        self.idle: dict[str, Member] = {}  # unpaused members whose phone is idle
        self.ringing: set[Call] = set()  # callers with a member ringing right now
        self.rrpos = 0
        self.reset()

    def reset(self) -> None:
        """clear_queue(): what a restart, reload or QueueReset forgets."""
        self.holdtime = self.talktime = 0
        self.completed = self.abandoned = self.completed_in_sl = self.abandoned_in_sl = 0

    @property
    def sl_perf(self) -> float:
        """ServicelevelPerf: completed within the service level / completed x 100."""
        return 100.0 * self.completed_in_sl / self.completed if self.completed else 0.0

    @property
    def sl_perf2(self) -> float:
        """ServicelevelPerf2: (completed + abandoned within SL) / (completed + abandoned) x 100."""
        total = self.completed + self.abandoned
        return 100.0 * (self.completed_in_sl + self.abandoned_in_sl) / total if total else 0.0


# A caller's states and the events that move it: anything else is a bug and raises.
DIALPLAN, WAITING, RINGING_CALLER, TALKING_CALLER, AFTER, GONE = (
    "dialplan", "waiting", "ringing", "talking", "after", "gone")
CALLER_TRANSITIONS: dict[tuple[str, str], str] = {
    (DIALPLAN, "join"): WAITING,
    (DIALPLAN, "hangup"): GONE,
    (DIALPLAN, "redirect"): DIALPLAN,
    (DIALPLAN, "leave"): AFTER,
    (WAITING, "ring"): RINGING_CALLER,
    (WAITING, "hangup"): GONE,
    (WAITING, "leave"): AFTER,
    (WAITING, "redirect"): DIALPLAN,
    (RINGING_CALLER, "no_answer"): WAITING,
    (RINGING_CALLER, "answer"): TALKING_CALLER,
    (RINGING_CALLER, "hangup"): GONE,
    (RINGING_CALLER, "leave"): AFTER,
    (RINGING_CALLER, "redirect"): DIALPLAN,
    (TALKING_CALLER, "hangup"): GONE,
    (AFTER, "hangup"): GONE,
    (AFTER, "redirect"): DIALPLAN,
}


class IllegalTransition(RuntimeError):
    """A caller was asked to do something its state does not allow."""


class Call:
    """One caller: its Local channel pair, queue entry and, once answered, the operator side."""

    __slots__ = (
        "a1",
        "a2",
        "attempts",
        "bridge",
        "c1",
        "c2",
        "connect_int",
        "counted",
        "hold",
        "in_sl",
        "member",
        "orig_pos",
        "pos",
        "queue",
        "spec",
        "start",
        "state",
        "turn_gen",
        "watched",
    )

    def __init__(self, spec: CallSpec, queue: Queue) -> None:
        self.spec, self.queue = spec, queue
        self.watched = False  # the IO edge waits for its end (an AGI session in Queue())
        self.state = DIALPLAN
        self.start = self.pos = self.orig_pos = self.connect_int = self.hold = self.turn_gen = 0
        self.attempts: list[Attempt] = []
        self.member: Member | None = None
        self.a1: Channel | None = None
        self.a2: Channel | None = None
        self.bridge = ""
        self.in_sl = self.counted = False

    c1: Channel
    c2: Channel


class Attempt:
    """One member being rung for one caller."""

    __slots__ = ("a1", "a2", "call", "live", "member", "phone", "start")

    def __init__(self, call: Call, member: Member, a1: Channel, a2: Channel | None,
                 start: float) -> None:
        self.call, self.member, self.phone = call, member, member.phone
        self.a1, self.a2, self.start = a1, a2, start
        self.live = True


class AgentCall:
    """A call originated to an operator phone (not a queue call)."""

    __slots__ = ("a1", "a2", "action_id", "context", "exten", "live", "phone")

    def __init__(self, phone: Phone, a1: Channel, a2: Channel | None, action_id: str,
                 context: str, exten: str) -> None:
        self.phone, self.a1, self.a2, self.action_id = phone, a1, a2, action_id
        self.context, self.exten = context, exten
        self.live = True


class CitizenCall:
    """An Originate to a citizen's number (``Local/<n>@hotline-outbound`` or ``-callback``).

    ``app`` set: the answered channel runs that application (AGI: the IO edge runs the
    FastAGI script, see :attr:`Pbx.agi_runs`).  Otherwise it goes to ``context``/``exten``
    (a queue name in ``hotline-queue``: it joins that queue as a caller).
    """

    __slots__ = ("a1", "a2", "action_id", "app", "appdata", "cid_name", "cid_num", "context",
                 "dial_context", "exten", "live", "number", "timeout", "up", "variables")

    def __init__(self, number: str, dial_context: str, action_id: str, app: str, appdata: str,
                 context: str, exten: str, cid: tuple[str, str], timeout: float,
                 variables: dict[str, str]) -> None:
        self.number, self.dial_context, self.action_id = number, dial_context, action_id
        self.app, self.appdata, self.context, self.exten = app, appdata, context, exten
        self.cid_num, self.cid_name = cid
        self.timeout, self.variables = timeout, variables
        self.a1: Channel | None = None
        self.a2: Channel | None = None
        self.live = True
        self.up = False


class SpyCall:
    """A supervisor phone originated into ChanSpy(<prefix>,<options>)."""

    __slots__ = ("a1", "a2", "action_id", "cid_name", "cid_num", "data", "deadline", "ext",
                 "live", "mode", "options", "prefix", "spyee")

    def __init__(self, ext: str, action_id: str, data: str, cid: tuple[str, str]) -> None:
        self.ext, self.action_id, self.data = ext, action_id, data
        self.prefix, _, self.options = data.partition(",")
        self.mode = "barge" if "B" in self.options else (
            "whisper" if "w" in self.options else "listen")
        self.cid_num, self.cid_name = cid
        self.a1: Channel | None = None
        self.a2: Channel | None = None
        self.spyee: Channel | None = None
        self.live = True
        self.deadline = 0.0


class AgiRun(NamedTuple):
    """A channel that reached ``AGI(url,args)``: the IO edge runs the FastAGI script on it."""

    channel: str
    uniqueid: str
    url: str  # agi://host:port/script
    args: tuple[str, ...]
    callerid: str
    calleridname: str
    context: str
    exten: str
    variables: dict[str, str]


class Recording(NamedTuple):
    """A MixMonitor that stopped: ``file`` as given in the action, ``seconds`` recorded."""

    file: str
    seconds: float
    channel: str
    uniqueid: str


class Reservation(NamedTuple):
    """Channel names and uniqueids allocated ahead for a caller (the IVR runs on ``;2``)."""

    name1: str
    uid1: str
    name2: str
    uid2: str


Action = Sequence[tuple[str, str]]


class _Fields:
    """An AMI action's headers: case-insensitive lookup plus every ``Variable`` line."""

    __slots__ = ("d", "variables")

    def __init__(self, action: Action | Mapping[str, str]) -> None:
        pairs = list(action.items()) if isinstance(action, Mapping) else list(action)
        self.d: dict[str, str] = {}
        self.variables: list[str] = []
        for key, value in pairs:
            k = key.strip().lower()
            if k == "variable":  # several headers and/or a comma (or |) separated list
                self.variables.extend(v.strip() for v in re.split(r"[|,]", value) if v.strip())
            self.d.setdefault(k, value.strip())

    def get(self, key: str, default: str = "") -> str:
        return self.d.get(key, default)

    def flag(self, key: str) -> bool:
        return self.d.get(key, "").lower() in ("1", "yes", "true", "on")


def _response(aid: str, response: str = "Success", **headers: str | int) -> str:
    lines = [f"Response: {response}\r\n"]
    if aid:
        lines.append(f"ActionID: {aid}\r\n")
    lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
    return "".join(lines) + "\r\n"


def _error(aid: str, message: str) -> str:
    return _response(aid, "Error", Message=message)


def _parse_callerid(text: str) -> tuple[str, str]:
    """``"王五" <13303905758>`` -> (number, name)."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, num = text[:-1].rpartition("<")
        return num.strip(), name.strip().strip('"')
    return (text, "") if text.replace("+", "").isdigit() else ("", text.strip('"'))


def _local_parts(interface: str) -> tuple[str, str] | None:
    """``Local/1001@agents/n`` -> (``1001``, ``agents``)."""
    if not interface.startswith("Local/") or "@" not in interface:
        return None
    ext, _, rest = interface[6:].partition("@")
    return ext, rest.split("/", 1)[0]


# --------------------------------------------------------------------------- the core


class Pbx:
    """The sans-IO simulated Asterisk (see the module docstring)."""

    def __init__(self, config: PbxConfig | None = None, traffic: CallSource | None = None, *,
                 start_time: float = 1_795_000_000.0, seed: int = 0,
                 hold_arrivals: bool = False, citizen: CitizenModel | None = None) -> None:
        self.config = config or PbxConfig()
        self.traffic = traffic
        # Citizens called back or visited: answer or not, keys pressed (own RNG).
        self.citizen = citizen or CitizenModel(seed=seed)
        # What the IO edge must do (the core stays sans-IO): FastAGI scripts to run on
        # answered channels, recordings to write, watched queue calls that ended
        # (call, "agent" | "caller" | "left").
        self.agi_runs: list[AgiRun] = []
        self.recordings: list[Recording] = []
        self.queue_exits: list[tuple[Call, str]] = []
        self._mixmon: dict[str, tuple[str, float, str]] = {}
        self._spied: dict[str, list[SpyCall]] = {}
        # With hold_arrivals the traffic model's callers wait in held_arrivals for the
        # IO edge (a FastAGI IVR run) to inject them; otherwise they join at once.
        self.hold_arrivals = hold_arrivals
        self.held_arrivals: list[CallSpec] = []
        self.now = self.started = start_time
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._out: list[Frame] = []
        self._uid = 0
        self._local = 0
        self._originated = 0
        self._ids = random.Random(f"pbx-sim-ids-{seed}")
        self.queues: dict[str, Queue] = {q.name: Queue(q) for q in self.config.queues}
        self.phones: dict[str, Phone] = {}
        self.channels: dict[str, Channel] = {}
        self._devices: dict[str, str] = {}
        self._custom: dict[str, int] = {}
        self.script_responses: list[str] = []
        c = self.config
        self.supervisors = {f"Local/{ext}@{c.agent_context}": ext for ext in c.supervisors}
        own = [self._phone(f"Local/{c.first_extension + i}@{c.agent_context}/n")
               for i in range(c.agents)]
        if c.autologin:
            for q in self.queues.values():
                for phone in own:
                    self.add_member(q.name, f"Local/{phone.ext}@{phone.context}/n",
                                    f"agent{phone.ext}")
        if c.agent_breaks and traffic is not None:
            for phone in own:
                self._plan_break(phone)
        if traffic is not None:
            self._plan_arrival()

    # ------------------------------------------------------------------ clock and output

    def advance(self, to_time: float, max_frames: int = 0) -> list[Frame]:
        """Run every timed event due up to ``to_time``; return the frames produced since last.

        With ``max_frames`` it stops early (``now`` stays at the last event run) once that
        many frames are pending, so an IO edge can write between slices.
        """
        heap = self._heap
        while heap and heap[0][0] <= to_time:
            when, _, fn, arg = heapq.heappop(heap)
            self.now = when
            fn(arg)
            if max_frames and len(self._out) >= max_frames:
                return self.drain()
        self.now = max(self.now, to_time)
        return self.drain()

    def drain(self) -> list[Frame]:
        """The frames produced since the last call (events of actions included)."""
        out, self._out = self._out, []
        return out

    def next_event_time(self) -> float | None:
        """When the next timed event is due, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def _at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, arg))

    def schedule_action(self, at: float, action: Action | Mapping[str, str]) -> None:
        """Run an AMI action at PBX time ``at`` (scripted drivers); responses are kept."""
        self._at(at, lambda a: self.script_responses.append(self.handle_action(a)), action)

    def _emit(self, name: str, cls: tuple[int, str], body: str) -> None:
        self._out.append(Frame(name, cls[0], f"Event: {name}\r\nPrivilege: {cls[1]}\r\n{body}\r\n"))

    def _chan(self, name: str, ch: Channel, extra: str = "") -> None:
        self._out.append(Frame(name, CALL[0],
                               f"Event: {name}\r\nPrivilege: call,all\r\n{ch.snap()}{extra}\r\n"))

    def _hangup_req(self, ch: Channel, soft: bool, cause: int = 16) -> None:
        self._chan("SoftHangupRequest" if soft else "HangupRequest", ch, f"Cause: {cause}\r\n")

    def _hangup(self, ch: Channel, cause: int = 16) -> None:
        if self._spied and ch.name in self._spied:
            self._spyee_gone(ch)
        if self._mixmon and ch.name in self._mixmon:
            file, start, _ = self._mixmon.pop(ch.name)
            self._chan("MixMonitorStop", ch)
            self.recordings.append(Recording(file, self.now - start, ch.name, ch.uniqueid))
        text = CAUSE_TEXT.get(cause, "Unknown")
        self._chan("Hangup", ch, f"Cause: {cause}\r\nCause-txt: {text}\r\n")
        self.channels.pop(ch.name, None)

    def _device(self, device: str, state: str) -> None:
        self._out.append(Frame("DeviceStateChange", CALL[0],
                               "Event: DeviceStateChange\r\nPrivilege: call,all\r\n"
                               f"Device: {device}\r\nState: {state}\r\n\r\n"))

    # ------------------------------------------------------------------ identifiers

    def _uniqueid(self) -> str:
        uid = f"{int(self.now)}.{self._uid}"
        self._uid += 1
        return uid

    def _next_local(self) -> int:
        n = self._local
        self._local += 1
        return n

    def _bridge_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def _new_channel(self, name: str, state: int, context: str, exten: str, linkedid: str,
                     variables: Mapping[str, str], owner: Any, uid: str = "") -> Channel:
        uid = uid or self._uniqueid()
        ch = Channel(name, state, context, exten, uid, linkedid or uid, self.now, variables,
                     self.config.channelvars, owner)
        self.channels[name] = ch
        return ch

    # ------------------------------------------------------------------ phones and members

    def _phone(self, interface: str) -> Phone:
        parts = _local_parts(interface)
        device = f"Local/{parts[0]}@{parts[1]}" if parts else interface
        phone = self.phones.get(device)
        if phone is None:
            if parts:
                phone = Phone(device, parts[0], parts[1], True)
            else:
                phone = Phone(device, interface.partition("/")[2] or interface,
                              self.config.agent_context, False)
            self.phones[device] = phone
        return phone

    def _member_body(self, m: Member) -> str:
        return (f"Queue: {m.queue.name}\r\nMemberName: {m.name}\r\nInterface: {m.interface}\r\n"
                f"StateInterface: {m.state_interface}\r\nMembership: dynamic\r\n"
                f"Penalty: {m.penalty}\r\nCallsTaken: {m.calls}\r\nLastCall: {m.last_call}\r\n"
                f"LastPause: {m.last_pause}\r\nLoginTime: {m.login_time}\r\n"
                f"InCall: {int(m.in_call)}\r\nStatus: {m.status}\r\nPaused: {int(m.paused)}\r\n"
                f"PausedReason: {m.reason}\r\nRinginuse: 0\r\nWrapuptime: 0\r\n")

    def _cached_device(self, device: str, state: str) -> None:
        """A cachable custom device (``Queue:...``): DeviceStateChange only when it changes."""
        if self._devices.get(device) != state:
            self._devices[device] = state
            self._device(device, state)

    def _update_avail(self, q: Queue) -> None:
        """The ``Queue:<name>_avail`` device, re-evaluated on member changes only.

        NOT_INUSE while some member is unpaused, out of wrap-up and not in use (a
        ringing Local channel member still counts, as in the trace).
        """
        if q.members or f"Queue:{q.name}_avail" in self._devices:
            now_i, wrap = int(self.now), q.cfg.wrapuptime
            state = "NOT_INUSE" if any(
                not (wrap and m.last_call and now_i - wrap < m.last_call)
                for m in q.members.values() if m.status <= NOT_INUSE and not m.paused
            ) else "INUSE"
            self._cached_device(f"Queue:{q.name}_avail", state)

    def _member_statuses(self, phone: Phone) -> None:
        for m in phone.memberships.values():
            self._emit("QueueMemberStatus", AGENT, self._member_body(m))

    @staticmethod
    def _refresh_idle(m: Member) -> None:
        """Keep ``queue.idle`` = unpaused members whose phone is idle (a cheap first filter)."""
        if m.paused or m.removed or m.phone.state != IDLE:
            m.queue.idle.pop(m.interface, None)
        else:
            m.queue.idle[m.interface] = m

    def _set_phone(self, phone: Phone, state: str) -> None:
        phone.state = state
        for m in phone.memberships.values():
            self._refresh_idle(m)

    def add_member(self, queue: str, interface: str, membername: str = "", penalty: int = 0,
                   paused: bool = False, reason: str = "", state_interface: str = "") -> str:
        """QueueAdd; returns '' or Asterisk's error text."""
        q = self.queues.get(queue)
        if q is None:
            return "Unable to add interface to queue: No such queue"
        if interface in q.members:
            return "Unable to add interface: Already there"
        phone = self._phone(interface)
        m = Member(q, membername or interface, interface, state_interface or interface, penalty,
                   int(self.now), phone)
        m.custom = self._custom
        m.qpos = len(q.members)
        q.members[interface] = m
        q.order.append(m)
        q.mixed_penalties = len({o.penalty for o in q.order}) > 1
        phone.memberships[q.name] = m
        if paused:
            m.paused, m.reason, m.last_pause = True, reason, int(self.now)
        self._refresh_idle(m)
        self._cached_device(f"Queue:{q.name}_pause_{interface}",
                            "INUSE" if paused else "NOT_INUSE")
        self._emit("QueueMemberAdded", AGENT, self._member_body(m))
        self._update_avail(q)
        return ""

    def remove_member(self, queue: str, interface: str) -> str:
        """QueueRemove; returns '' or Asterisk's error text.  A call in progress goes on."""
        q = self.queues.get(queue)
        if q is None:
            return "Unable to remove interface from queue: No such queue"
        m = q.members.pop(interface, None)
        if m is None:
            return "Unable to remove interface: Not there"
        m.removed = True
        self._refresh_idle(m)
        q.order = list(q.members.values())
        for i, other in enumerate(q.order):
            other.qpos = i
        q.mixed_penalties = len({o.penalty for o in q.order}) > 1
        if m.phone.memberships.get(q.name) is m:
            del m.phone.memberships[q.name]
        self._emit("QueueMemberRemoved", AGENT, self._member_body(m))
        self._update_avail(q)
        return ""

    def pause_member(self, interface: str, paused: bool, reason: str = "",
                     queue: str = "") -> str:
        """QueuePause in one queue, or (no queue) in every queue the interface is in."""
        if queue:
            q = self.queues.get(queue)
            targets = [q.members[interface]] if q is not None and interface in q.members else []
        else:
            targets = [q.members[interface] for q in self.queues.values()
                       if interface in q.members]
        if not targets:
            return "Interface not found"
        for m in targets:
            m.paused = paused
            self._refresh_idle(m)
            if paused:
                m.reason, m.last_pause = reason, int(self.now)
            else:
                m.reason = ""
            self._cached_device(f"Queue:{m.queue.name}_pause_{interface}",
                                "INUSE" if paused else "NOT_INUSE")
            self._update_avail(m.queue)
            self._emit("QueueMemberPause", AGENT, self._member_body(m))
        return ""

    def reset_queue(self, queue: str = "") -> str:
        """QueueReset: forget a queue's (or every queue's) counters, as clear_queue() does.

        Members lose calls/lastcall and their call start, so a call in progress is never
        counted as completed afterwards.
        """
        targets = [self.queues[queue]] if queue in self.queues else (
            [] if queue else list(self.queues.values()))
        if not targets:
            return "Error encountered while resetting queue stats"
        for q in targets:
            q.reset()
            for m in q.members.values():
                m.calls = m.last_call = 0
                call = m.phone.call
                if isinstance(call, Call) and call.member is m:
                    call.counted = True
        return ""

    def _available(self, q: Queue, m: Member) -> bool:
        """is_member_available() with ringinuse=no: idle phone, not paused, out of wrap-up."""
        if m.interface not in q.idle or m.status > NOT_INUSE:
            return False
        wrap = q.cfg.wrapuptime
        return not (wrap and m.last_call and int(self.now) - wrap < m.last_call)

    def _count_available(self, q: Queue, enough: int) -> int:
        """How many members are available, counting no further than ``enough``."""
        n = 0
        for m in q.idle.values():
            if self._available(q, m):
                n += 1
                if n >= enough:
                    break
        return n

    # ------------------------------------------------------------------ traffic and breaks

    def _plan_arrival(self) -> None:
        assert self.traffic is not None
        spec = self.traffic.next_call(self.now)
        if spec is not None:
            self._at(max(spec.at, self.now), self._arrival, spec)

    def _arrival(self, spec: CallSpec) -> None:
        self._plan_arrival()
        self._originated += 1
        if self.hold_arrivals:
            self.held_arrivals.append(spec)
            return
        self.inject_call(spec, action_id=f"sim-{self._originated}")

    def _plan_break(self, phone: Phone) -> None:
        assert self.traffic is not None
        plan = self.traffic.next_break()
        if plan is not None:
            after, length, reason = plan
            self._at(self.now + after, self._start_break, (phone, length, reason))

    def _start_break(self, arg: tuple[Phone, float, str]) -> None:
        phone, length, reason = arg
        interface = f"Local/{phone.ext}@{phone.context}/n"
        if not phone.memberships or any(m.paused for m in phone.memberships.values()):
            self._plan_break(phone)
        elif phone.state != IDLE:
            self._at(self.now + 30.0, self._start_break, arg)
        else:
            phone.on_break = reason
            self.pause_member(interface, True, reason)
            self._at(self.now + length, self._end_break, phone)

    def _end_break(self, phone: Phone) -> None:
        interface = f"Local/{phone.ext}@{phone.context}/n"
        if any(m.paused and m.reason == phone.on_break for m in phone.memberships.values()):
            self.pause_member(interface, False)
        phone.on_break = ""
        self._plan_break(phone)

    # ------------------------------------------------------------------ callers

    def _move(self, call: Call, event: str) -> None:
        nxt = CALLER_TRANSITIONS.get((call.state, event))
        if nxt is None:
            raise IllegalTransition(f"caller {call.c2.name} in {call.state} cannot {event}")
        call.state = nxt
        if nxt == RINGING_CALLER:
            call.queue.ringing.add(call)
        else:
            call.queue.ringing.discard(call)

    def _queue_for(self, spec: CallSpec) -> Queue:
        name = spec.queue or self.config.hotline_queues.get(spec.hotline, "")
        return self.queues.get(name) or next(iter(self.queues.values()))

    def reserve_caller(self) -> Reservation:
        """Allocate now the channel names and uniqueids of a caller that joins later
        (:meth:`inject_call` with ``reserved``): an IVR runs on ``;2`` before it exists here."""
        base = f"Local/s@{self.config.inbound_context}-{self._next_local():08x}"
        uid1 = self._uniqueid()
        return Reservation(base + ";1", uid1, base + ";2", self._uniqueid())

    def inject_call(self, spec: CallSpec, action_id: str = "",
                    reserved: Reservation | None = None) -> Call:
        """A caller arrives now (as Originate of ``Local/s@inbound`` does): channels, then join."""
        c = self.config
        call = Call(spec, self._queue_for(spec))
        variables = spec.variables()
        if reserved is None:
            reserved = self.reserve_caller()
        c1 = call.c1 = self._new_channel(reserved.name1, 0, c.inbound_context, "s", "",
                                         variables, call, reserved.uid1)
        c2 = call.c2 = self._new_channel(reserved.name2, 4, c.inbound_context, "s", c1.uniqueid,
                                         variables, call, reserved.uid2)
        self._chan("Newchannel", c1)
        self._chan("Newchannel", c2)
        num, name = spec.number or UNKNOWN, spec.name or UNKNOWN
        c1.set(cid_num=num, cid_name=name)
        self._chan("NewCallerid", c1, CID_PRES)
        c1.set(conn_num=num, conn_name=name)
        self._chan("NewConnectedLine", c1)
        c2.set(cid_num=num, cid_name=name, conn_num=num, conn_name=name)
        self._chan("NewCallerid", c2, CID_PRES)
        self._chan("NewConnectedLine", c2)
        self._local_bridge(c1, c2, c.inbound_context, "s", "Yes")
        self._emit("DialBegin", CALL, f"{c1.dsnap()}DialString: s@{c.inbound_context}\r\n")
        c2.set(state=6)
        self._chan("Newstate", c2)
        c1.set(state=6)
        self._chan("Newstate", c1)
        self._emit("DialEnd", CALL, f"{c1.dsnap()}DialStatus: ANSWER\r\n")
        self._emit("OriginateResponse", CALL,
                   (f"ActionID: {action_id}\r\n" if action_id else "")
                   + f"Response: Success\r\nChannel: {c1.name}\r\nContext: {c.caller_context}\r\n"
                   f"Exten: s\r\nReason: 4\r\nUniqueid: {c1.uniqueid}\r\n"
                   f"CallerIDNum: {c1.cid_num}\r\nCallerIDName: {c1.cid_name}\r\n")
        device = f"Local/s@{c.inbound_context}"
        self._device(device, "INUSE")
        self._device(device, "INUSE")
        c1.set(context=c.caller_context, app="Wait", appdata=_num(spec.patience))
        c2.set(app="Answer")
        self._at(self.now + JOIN_DELAY, self._join, call)
        if spec.patience is not None and spec.patience_from_arrival:
            self._at(self.now + spec.patience + HANGUP_LAG, self._patience_over, call)
        return call

    def _local_bridge(self, one: Channel, two: Channel, context: str, exten: str,
                      optimize: str) -> None:
        self._emit("LocalBridge", CALL,
                   f"{one.render('LocalOne')}{two.render('LocalTwo')}Context: {context}\r\n"
                   f"Exten: {exten}\r\nLocalOptimization: {optimize}\r\n")

    def _join(self, call: Call) -> None:
        if call.state != DIALPLAN:
            return
        q = call.queue
        if q.cfg.maxlen and len(q.callers) >= q.cfg.maxlen:  # QUEUESTATUS=FULL
            self._at(self.now + 1.0, self._caller_gone, call)
            return
        spec = call.spec
        self._enter_queue(call, q)
        if spec.patience is not None and not spec.patience_from_arrival:
            self._at(self.now + spec.patience + HANGUP_LAG, self._patience_over, call)
        if spec.exit_key_after is not None:
            self._at(self.now + spec.exit_key_after, self._exit_key, call)

    def _enter_queue(self, call: Call, q: Queue) -> None:
        c2 = call.c2
        c2.set(priority=2, app="Queue", appdata=f"{q.name},r,,,{q.cfg.maxwait or ''}")
        call.queue = q
        q.callers.append(call)
        call.pos = call.orig_pos = len(q.callers)
        call.start = int(self.now)
        if len(q.callers) == 1:
            self._cached_device(f"Queue:{q.name}", "RINGING")
        self._emit("QueueCallerJoin", AGENT, f"{c2.snap()}Queue: {q.name}\r\n"
                   f"Position: {call.pos}\r\nCount: {len(q.callers)}\r\n")
        self._move(call, "join")
        if q.cfg.maxwait:
            self._at(self.now + q.cfg.maxwait, self._expire, (call, call.start, q))
        self._try_turn(call)

    def _leave_queue(self, call: Call, abandon: bool) -> None:
        q = call.queue
        q.callers.remove(call)
        for i, other in enumerate(q.callers, 1):
            other.pos = i
        if abandon:  # record_abandoned()
            held = int(self.now) - call.start
            q.abandoned += 1
            if held <= q.cfg.servicelevel:
                q.abandoned_in_sl += 1
            self._emit("QueueCallerAbandon", AGENT,
                       f"{call.c2.snap()}Queue: {q.name}\r\nPosition: {call.pos}\r\n"
                       f"OriginalPosition: {call.orig_pos}\r\nHoldTime: {held}\r\n")
        if not q.callers:
            self._cached_device(f"Queue:{q.name}", "NOT_INUSE")
        self._emit("QueueCallerLeave", AGENT, f"{call.c2.snap()}Queue: {q.name}\r\n"
                   f"Position: {call.pos}\r\nCount: {len(q.callers)}\r\n")

    def _schedule_turn(self, call: Call, delay: float) -> None:
        call.turn_gen += 1
        self._at(self.now + delay, self._on_turn, (call, call.turn_gen))

    def _on_turn(self, arg: tuple[Call, int]) -> None:
        call, gen = arg
        if gen == call.turn_gen:
            self._try_turn(call)

    def _try_turn(self, call: Call) -> None:
        """One pass of wait_our_turn()/try_calling(): ring somebody, or check again later."""
        if call.state != WAITING:
            return
        q = call.queue
        now_i = int(self.now)
        if q.cfg.maxwait and now_i >= call.start + q.cfg.maxwait:
            self._exit_queue(call, "timeout")
            return
        if not q.idle:
            our_turn = False
        elif q.cfg.autofill and q.cfg.strategy != "ringall":
            ahead = call.pos - 1 - sum(1 for other in q.ringing if other.pos < call.pos)
            our_turn = self._count_available(q, ahead + 1) > ahead
        else:
            our_turn = call.pos == 1 and self._count_available(q, 1) > 0
        if not our_turn:
            self._schedule_turn(call, RECHECK)
            return
        chosen = self._choose(q)
        self._move(call, "ring")
        call.attempts = [self._dial(call, m) for m in chosen]

    def _choose(self, q: Queue) -> list[Member]:
        """The strategy's pick among the available members (lowest penalty first)."""
        strategy = q.cfg.strategy
        if strategy in ("rrmemory", "linear") and not q.mixed_penalties:
            n = len(q.order)  # the first available member in (cyclic) queue order
            start = q.rrpos if strategy == "rrmemory" else 0
            for i in range(n):
                m = q.order[(start + i) % n]
                if self._available(q, m):
                    if strategy == "rrmemory":
                        q.rrpos = m.qpos + 1
                    return [m]
        avl = [m for m in q.idle.values() if self._available(q, m)]
        best_penalty = min(m.penalty for m in avl)
        avl = [m for m in avl if m.penalty == best_penalty]
        if strategy == "ringall":
            return avl
        if strategy == "leastrecent":
            return [min(avl, key=lambda m: m.last_call)]
        if strategy == "fewestcalls":
            return [min(avl, key=lambda m: m.calls)]
        if strategy == "random":
            return [self._ids.choice(avl)]
        if strategy == "linear":
            return [min(avl, key=lambda m: m.qpos)]
        # rrmemory: members at or after rrpos first, then wrap around (metric 1000 + pos)
        rrpos = q.rrpos
        pick = min(avl, key=lambda m: (m.qpos < rrpos, m.qpos))
        q.rrpos = pick.qpos + 1
        return [pick]

    def _dial(self, call: Call, m: Member) -> Attempt:
        phone = m.phone
        c2, spec = call.c2, call.spec
        num, name = c2.cid_num, c2.cid_name
        link = call.c1.uniqueid
        ctx, ext = phone.context, phone.ext
        vars_ = call.c1.vars
        if phone.local:
            base = f"Local/{ext}@{ctx}-{self._next_local():08x}"
            a1 = self._new_channel(base + ";1", 0, ctx, ext, link, vars_, call)
            a2: Channel | None = self._new_channel(base + ";2", 4, ctx, ext, link, vars_, call)
            self._chan("Newchannel", a1)
            self._chan("Newchannel", a2)
            a1.set(cid_num=num, cid_name=name)
            self._chan("NewCallerid", a1, CID_PRES)
            a2.set(cid_num=num, cid_name=name, conn_num=num, conn_name=name)
            self._chan("NewCallerid", a2, CID_PRES)
            self._chan("NewConnectedLine", a2)
            self._local_bridge(a1, a2, ctx, ext, "No")
        else:
            a1 = self._new_channel(f"{m.interface}-{self._next_local():08x}", 0, ctx, ext, link,
                                   vars_, call)
            a2 = None
            self._chan("Newchannel", a1)
            a1.set(cid_num=num, cid_name=name)
            self._chan("NewCallerid", a1, CID_PRES)
        before = a1.dsnap()
        a1.set(exten="s", conn_num=num, conn_name=name, app="AppQueue",
               appdata="(Outgoing Line)")
        q = call.queue
        who = f"Queue: {q.name}\r\nInterface: {m.interface}\r\nMemberName: {m.name}\r\n"
        self._emit("AgentCalled", AGENT, f"{c2.snap()}{a1.dsnap()}{who}")
        self._emit("DialBegin", CALL, f"{c2.snap()}{before}DialString: {m.interface}\r\n")
        if a2 is None:
            a1.set(state=5)
            self._chan("Newstate", a1)
        att = Attempt(call, m, a1, a2, self.now)
        self._set_phone(phone, RINGING)
        phone.attempt = att
        if self.traffic is not None:
            ring = self.traffic.ring_delay(spec)
        else:
            ring = DEFAULT_RING if spec.ring is None else spec.ring
        if a2 is not None:
            a2.set(app="Wait", appdata=_num(ring))
        timeout = q.cfg.timeout
        if ring is not None and (not timeout or ring * RING_SCALE < timeout + TIMER_LAG):
            self._at(self.now + ring * RING_SCALE, self._answer, att)
        if timeout:
            self._at(self.now + timeout + TIMER_LAG, self._ring_timeout, att)
        return att

    def _legs_down_first(self, att: Attempt) -> None:
        """First half of dropping a ringing operator leg (before the caller's queue exit)."""
        if att.a2 is not None:
            self._hangup_req(att.a2, soft=False, cause=0)
        self._hangup(att.a1, cause=0)
        self._chan("NewConnectedLine", att.a1)

    def _legs_down_second(self, att: Attempt) -> None:
        """Second half: the ``;2`` leg goes, the phone is idle again."""
        if att.a2 is not None:
            self._hangup_req(att.a2, soft=True)
            self._hangup(att.a2, cause=0)
        phone = att.phone
        att.live = False
        if phone.attempt is att:
            self._set_phone(phone, IDLE)
            phone.attempt = None
            self._device(phone.device, "NOT_INUSE")
            self._device(phone.device, "NOT_INUSE")

    def _dial_end(self, att: Attempt, status: str) -> None:
        self._emit("DialEnd", CALL, f"{att.call.c2.snap()}{att.a1.dsnap()}DialStatus: {status}\r\n")

    def _ring_timeout(self, att: Attempt, ring_ms: int | None = None) -> None:
        """rna(): the member did not answer; the caller tries again after ``retry``."""
        if not att.live:
            return
        call, m = att.call, att.member
        q = call.queue
        ms = ring_ms if ring_ms is not None else int(q.cfg.timeout * 1000)
        self._emit("AgentRingNoAnswer", AGENT,
                   f"{call.c2.snap()}{att.a1.dsnap()}Queue: {q.name}\r\n"
                   f"Interface: {m.interface}\r\nMemberName: {m.name}\r\nRingTime: {ms}\r\n")
        self._dial_end(att, "NOANSWER")
        self._dial_end(att, "CANCEL")
        self._legs_down_first(att)
        self._legs_down_second(att)
        if not any(a.live for a in call.attempts):
            self._move(call, "no_answer")
            self._schedule_turn(call, q.cfg.retry + TIMER_LAG)

    def _answer(self, att: Attempt) -> None:
        if not att.live or att.call.state != RINGING_CALLER:
            return
        call, m, phone = att.call, att.member, att.phone
        q, c2, a1, a2 = call.queue, call.c2, att.a1, att.a2
        for other in call.attempts:
            if other is not att and other.live:
                self._dial_end(other, "CANCEL")
                self._legs_down_first(other)
                self._legs_down_second(other)
        att.live = False
        if a2 is not None:
            a2.set(state=6, priority=2)
            self._chan("Newstate", a2)
        a1.set(state=6)
        self._chan("Newstate", a1)
        self._chan("NewConnectedLine", a1)
        self._dial_end(att, "ANSWER")
        self._leave_queue(call, abandon=False)
        now_i = int(self.now)
        call.hold = now_i - call.start
        # recalc_holdtime(): the first sample since start/reset is taken as is
        q.holdtime = call.hold if q.completed + q.abandoned == 0 else (
            (3 * q.holdtime + call.hold) >> 2)
        call.in_sl = call.hold <= q.cfg.servicelevel
        self._emit("AgentConnect", AGENT,
                   f"{c2.snap()}{a1.dsnap()}Queue: {q.name}\r\nInterface: {m.interface}\r\n"
                   f"MemberName: {m.name}\r\nHoldTime: {call.hold}\r\n"
                   f"RingTime: {int(self.now - att.start)}\r\n")
        self._move(call, "answer")
        call.member, call.a1, call.a2, call.connect_int = m, a1, a2, now_i
        self._set_phone(phone, TALKING)
        phone.attempt, phone.call = None, call
        m.in_call = True
        self._device(phone.device, "INUSE")
        self._member_statuses(phone)
        self._device(phone.device, "INUSE")
        call.bridge = self._bridge_id()
        self._emit("BridgeCreate", CALL, f"BridgeUniqueid: {call.bridge}\r\n{BRIDGE_FIELDS}"
                   "BridgeNumChannels: 0\r\nBridgeVideoSourceMode: none\r\n")
        for mq in list(phone.memberships.values()):
            self._update_avail(mq.queue)
        a1.bridge = c2.bridge = call.bridge
        self._bridge_event("BridgeEnter", call.bridge, 1, a1)
        self._bridge_event("BridgeEnter", call.bridge, 2, c2)
        spec = call.spec
        if self.traffic is not None:
            talk = self.traffic.talk_time(spec)
        else:
            talk = DEFAULT_TALK if spec.talk is None else spec.talk
        if a2 is not None:
            a2.set(priority=3, appdata=_num(talk))
        caller_ends = (not spec.patience_from_arrival and self.traffic is not None
                       and self.traffic.caller_ends_call(spec))
        self._at(self.now + AGENT_SETTLE + talk, self._talk_over, (call, caller_ends))

    def _bridge_event(self, name: str, bridge: str, count: int, ch: Channel) -> None:
        self._emit(name, CALL, f"BridgeUniqueid: {bridge}\r\n{BRIDGE_FIELDS}"
                   f"BridgeNumChannels: {count}\r\nBridgeVideoSourceMode: none\r\n{ch.snap()}")

    def _bridge_destroy(self, bridge: str) -> None:
        self._emit("BridgeDestroy", CALL, f"BridgeUniqueid: {bridge}\r\n{BRIDGE_FIELDS}"
                   "BridgeNumChannels: 0\r\nBridgeVideoSourceMode: none\r\n")

    def _talk_over(self, arg: tuple[Call, bool]) -> None:
        call, caller_ends = arg
        if call.state != TALKING_CALLER:
            return
        if caller_ends:
            self.caller_hangup(call, own=True)
        else:
            self._agent_hangup(call)

    def _complete(self, call: Call, reason: str) -> None:
        """AgentComplete, then update_queue(): completed (+in SL) and smoothed talktime."""
        q, m = call.queue, call.member
        assert m is not None and call.a1 is not None
        now_i = int(self.now)
        talk = now_i - call.connect_int
        shape = "nocaller" if m.removed else (
            self.traffic.partial_complete() if self.traffic is not None else "")
        self._emit("AgentComplete", AGENT,
                   ("" if shape == "nocaller" else call.c2.snap())
                   + ("" if shape == "nodest" else call.a1.dsnap())
                   + f"Queue: {q.name}\r\nInterface: {m.interface}\r\nMemberName: {m.name}\r\n"
                   f"HoldTime: {call.hold}\r\nTalkTime: {talk}\r\nReason: {reason}\r\n")
        self._count_completed(call)

    def _count_completed(self, call: Call) -> None:
        """update_queue(), once per answered call (guarded like member->starttime)."""
        if call.counted:
            return
        call.counted = True
        q, m = call.queue, call.member
        assert m is not None
        now_i = int(self.now)
        talk = now_i - call.connect_int
        q.completed += 1
        if call.in_sl:
            q.completed_in_sl += 1
        q.talktime = talk if q.completed == 1 else (3 * q.talktime + talk) >> 2
        m.in_call = False
        same = [o for o in m.phone.memberships.values() if o.interface == m.interface]
        if m not in same:
            same.append(m)
        for other in same:  # shared_lastcall: the interface's members in every queue
            other.calls += 1
            other.last_call = now_i

    def _phone_free(self, phone: Phone) -> None:
        self._set_phone(phone, IDLE)
        phone.call = None
        self._device(phone.device, "NOT_INUSE")
        self._member_statuses(phone)
        self._device(phone.device, "NOT_INUSE")
        for m in list(phone.memberships.values()):
            self._update_avail(m.queue)

    def _caller_devices(self) -> None:
        device = f"Local/s@{self.config.inbound_context}"
        busy = any(ch.context in (self.config.inbound_context, self.config.caller_context)
                   for ch in self.channels.values())
        state = "INUSE" if busy else "NOT_INUSE"
        self._device(device, state)
        self._device(device, state)

    def _agent_hangup(self, call: Call) -> None:
        """The operator hangs up: the recorded order of a COMPLETEAGENT."""
        c1, c2, a1, a2 = call.c1, call.c2, call.a1, call.a2
        assert a1 is not None and call.member is not None
        if a2 is not None:
            a2.set(priority=4)
            self._hangup_req(a2, soft=True)
            self._hangup_req(a1, soft=False)
            self._hangup(a2)
        else:
            self._hangup_req(a1, soft=False)
        self._complete(call, "agent")
        self._bridge_event("BridgeLeave", call.bridge, 1, a1)
        self._hangup(a1)
        self._bridge_event("BridgeLeave", call.bridge, 0, c2)
        self._bridge_destroy(call.bridge)
        self._hangup_req(c2, soft=True)
        self._hangup_req(c1, soft=False)
        self._hangup(c2)
        self._hangup_req(c1, soft=True)
        self._hangup(c1)
        self._move(call, "hangup")
        self._phone_free(call.member.phone)
        self._caller_devices()
        if call.watched:
            self._queue_exit(call, "agent")

    def _patience_over(self, call: Call) -> None:
        if call.spec.patience_from_arrival:
            if call.state != GONE:
                self.caller_hangup(call, own=True)
        elif call.state in (WAITING, RINGING_CALLER):
            self.caller_hangup(call, own=True)

    def _caller_gone(self, call: Call) -> None:
        if call.state in (DIALPLAN, AFTER):
            self.caller_hangup(call, own=True)

    def caller_hangup(self, call: Call, own: bool = False) -> None:
        """The caller hangs up, whatever it is doing (``own``: its own Wait() ended)."""
        c1, c2 = call.c1, call.c2
        if call.state == GONE:
            return
        if own:
            c1.set(priority=2)
        state = call.state
        self._hangup_req(c1, soft=True)
        self._hangup_req(c2, soft=False)
        if state == TALKING_CALLER:
            a1, a2, m = call.a1, call.a2, call.member
            assert a1 is not None and m is not None
            self._complete(call, "caller")
            self._hangup(c1)
            self._bridge_event("BridgeLeave", call.bridge, 1, c2)
            self._bridge_event("BridgeLeave", call.bridge, 0, a1)
            if a2 is not None:
                self._hangup_req(a2, soft=False)
            self._hangup(a1)
            self._bridge_destroy(call.bridge)
            self._hangup_req(c2, soft=True)
            if a2 is not None:
                self._hangup_req(a2, soft=True)
            self._hangup(c2)
            if a2 is not None:
                self._hangup(a2)
            self._move(call, "hangup")
            self._phone_free(m.phone)
        else:
            self._hangup(c1)
            live = [a for a in call.attempts if a.live] if state == RINGING_CALLER else []
            for att in live:
                self._dial_end(att, "CANCEL")
                self._dial_end(att, "CANCEL")
                self._legs_down_first(att)
            if state in (WAITING, RINGING_CALLER):
                self._leave_queue(call, abandon=True)
            self._hangup_req(c2, soft=True)
            self._hangup(c2)
            for att in live:
                self._legs_down_second(att)
            self._move(call, "hangup")
        self._caller_devices()
        if call.watched:
            self._queue_exit(call, "caller")

    def _drop_attempts(self, call: Call) -> None:
        for att in call.attempts:
            if att.live:
                self._dial_end(att, "CANCEL")
                self._legs_down_first(att)
                self._legs_down_second(att)

    def _exit_queue(self, call: Call, why: str) -> None:
        """The caller leaves Queue() alive: by a key (not abandoned) or on timeout (abandoned)."""
        if call.state not in (WAITING, RINGING_CALLER):
            return
        if call.state == RINGING_CALLER:
            self._drop_attempts(call)
        self._leave_queue(call, abandon=why == "timeout")
        self._move(call, "leave")
        if call.watched:
            self._queue_exit(call, "left")
        call.c2.set(priority=3, app="VoiceMail" if why == "key" else "Playback", appdata="")
        self._at(self.now + (self.config.after_queue_hold if why == "key" else 1.0),
                 self._caller_gone, call)

    def _exit_key(self, call: Call) -> None:
        self._exit_queue(call, "key")

    def _expire(self, arg: tuple[Call, int, Queue]) -> None:
        call, start, q = arg
        if call.state == WAITING and call.queue is q and call.start == start:
            self._exit_queue(call, "timeout")

    def redirect(self, call: Call, context: str, exten: str) -> bool:
        """Redirect a caller: into another queue (when ``exten`` names one) or out of the queue.

        Interrupting Queue() counts as an abandon in app_queue, as a hang-up would.
        A caller already talking to an operator is not moved (False).
        """
        if call.state in (TALKING_CALLER, GONE):
            return False
        if call.state == RINGING_CALLER:
            self._drop_attempts(call)
        if call.state in (WAITING, RINGING_CALLER):
            self._leave_queue(call, abandon=True)
        self._move(call, "redirect")
        call.c2.set(context=context, exten=exten, priority=1)
        target = self.queues.get(exten)
        if target is not None:
            self._enter_queue(call, target)
        else:
            self._move(call, "leave")
            call.c2.set(app="Playback", appdata="")
            self._at(self.now + self.config.after_queue_hold, self._caller_gone, call)
            if call.watched:
                self._queue_exit(call, "left")
        return True

    def _queue_exit(self, call: Call, how: str) -> None:
        """A watched caller's Queue() is over: tell the IO edge once (``queue_exits``)."""
        call.watched = False
        self.queue_exits.append((call, how))

    def set_device_state(self, device: str, state: str) -> str:
        """``Setvar DEVICE_STATE(Custom:x)=STATE``: members watching that device follow it.

        As in app_queue's update_status(), a member going back to NOT_INUSE while on
        a queue call has that call counted as completed at once (AMI-NOTES.md).
        """
        value = DEVSTATE_NAMES.get(state.strip().upper())
        if not device.startswith("Custom:") or value is None:
            return "Invalid device or state"
        old = self._custom.get(device, 0)
        self._custom[device] = value
        self._device(device, state.strip().upper())
        if old == value:
            return ""
        for q in self.queues.values():
            for m in q.members.values():
                if m.state_interface != device:
                    continue
                call = m.phone.call
                if (value == NOT_INUSE and m.in_call and isinstance(call, Call)
                        and call.member is m):
                    self._count_completed(call)
                self._emit("QueueMemberStatus", AGENT, self._member_body(m))
            self._update_avail(q)
        return ""

    # ------------------------------------------------------------------ calls to operators

    def originate_agent(self, phone: Phone, action_id: str, context: str, exten: str,
                        talk: float | None, ring: float | None) -> None:
        """Originate to an operator phone (an outbound or internal call, not a queue call)."""
        if phone.state != IDLE:
            self._emit("OriginateResponse", CALL,
                       (f"ActionID: {action_id}\r\n" if action_id else "")
                       + f"Response: Failure\r\nChannel: Local/{phone.ext}@{phone.context}\r\n"
                       f"Context: {context}\r\nExten: {exten}\r\nReason: 5\r\n"
                       f"Uniqueid: <null>\r\nCallerIDNum: <unknown>\r\nCallerIDName: <unknown>\r\n")
            return
        base = f"Local/{phone.ext}@{phone.context}-{self._next_local():08x}"
        a1 = self._new_channel(base + ";1", 0, phone.context, phone.ext, "", {}, None)
        a2 = self._new_channel(base + ";2", 4, phone.context, phone.ext, a1.uniqueid, {}, None)
        call = AgentCall(phone, a1, a2, action_id, context, exten)
        a1.owner = a2.owner = call
        self._chan("Newchannel", a1)
        self._chan("Newchannel", a2)
        self._local_bridge(a1, a2, phone.context, phone.ext, "No")
        self._emit("DialBegin", CALL,
                   f"{a1.dsnap()}DialString: {phone.ext}@{phone.context}/n\r\n")
        self._set_phone(phone, RINGING)
        phone.call = call
        delay = ring if ring is not None else DEFAULT_RING
        self._at(self.now + delay * RING_SCALE, self._agent_call_up, (call, talk))

    def _agent_call_up(self, arg: tuple[AgentCall, float | None]) -> None:
        call, talk = arg
        if not call.live:
            return
        phone, a1, a2 = call.phone, call.a1, call.a2
        assert a2 is not None
        a2.set(state=6, priority=2)
        self._chan("Newstate", a2)
        a1.set(state=6, context=call.context, exten=call.exten)
        self._chan("Newstate", a1)
        self._emit("DialEnd", CALL, f"{a1.dsnap()}DialStatus: ANSWER\r\n")
        self._emit("OriginateResponse", CALL,
                   (f"ActionID: {call.action_id}\r\n" if call.action_id else "")
                   + f"Response: Success\r\nChannel: {a1.name}\r\nContext: {call.context}\r\n"
                   f"Exten: {call.exten}\r\nReason: 4\r\nUniqueid: {a1.uniqueid}\r\n"
                   f"CallerIDNum: <unknown>\r\nCallerIDName: <unknown>\r\n")
        self._set_phone(phone, TALKING)
        self._device(phone.device, "INUSE")
        self._member_statuses(phone)
        for m in list(phone.memberships.values()):
            self._update_avail(m.queue)
        length = talk if talk is not None else DEFAULT_TALK
        a2.set(priority=3, app="Wait", appdata=_num(length))
        self._at(self.now + AGENT_SETTLE + length, self._agent_call_down, call)

    def _agent_call_down(self, call: AgentCall) -> None:
        if not call.live:
            return
        call.live = False
        a1, a2, phone = call.a1, call.a2, call.phone
        assert a2 is not None
        self._hangup_req(a2, soft=True)
        self._hangup_req(a1, soft=False)
        self._hangup(a2)
        self._hangup(a1)
        if phone.state == TALKING:
            self._phone_free(phone)
        else:
            self._set_phone(phone, IDLE)
            phone.call = None

    def hangup_channel(self, name: str) -> bool:
        """The Hangup action: end the call the named channel belongs to."""
        ch = self.channels.get(name)
        if ch is None:
            return False
        owner = ch.owner
        if isinstance(owner, AgentCall):
            self._agent_call_down(owner)
        elif isinstance(owner, CitizenCall):
            self._citizen_down(owner)
        elif isinstance(owner, SpyCall):
            self._spy_down(owner)
        elif isinstance(owner, Call):
            if ch is owner.c1 or ch is owner.c2:
                self.caller_hangup(owner)
            elif owner.state == TALKING_CALLER and ch in (owner.a1, owner.a2):
                self._agent_hangup(owner)
            else:  # a ringing operator leg rejected: rna() with the time rung so far
                for att in owner.attempts:
                    if att.live and ch in (att.a1, att.a2):
                        self._ring_timeout(att, int((self.now - att.start) * 1000))
        return True

    # ------------------------------------------------------------------ AMI actions

    def handle_action(self, action: Action | Mapping[str, str]) -> str:
        """Answer one AMI action at ``now``: the response text (and list events) for the
        requester; broadcast events go to the output drained by :meth:`advance`."""
        f = _Fields(action)
        name = f.get("action").lower()
        aid = f.get("actionid")
        handler = self._handlers().get(name)
        if handler is None:
            return _error(aid, "Invalid/unknown command")
        return handler(f, aid)

    def _handlers(self) -> dict[str, Callable[[_Fields, str], str]]:
        return {
            "queuestatus": self._act_queue_status, "queuesummary": self._act_queue_summary,
            "queueadd": self._act_queue_add, "queueremove": self._act_queue_remove,
            "queuepause": self._act_queue_pause, "queuereset": self._act_queue_reset,
            "originate": self._act_originate, "hangup": self._act_hangup,
            "redirect": self._act_redirect, "coreshowchannels": self._act_core_show_channels,
            "command": self._act_command, "setvar": self._act_setvar,
            "mixmonitor": self._act_mixmonitor,
        }

    def _act_mixmonitor(self, f: _Fields, aid: str) -> str:
        """app_mixmonitor's manager action: MixMonitorStart now, MixMonitorStop at hang-up."""
        name = f.get("channel")
        if not name:
            return _error(aid, "No channel specified")
        ch = self.channels.get(name)
        if ch is None:
            return _error(aid, "No such channel")
        file = f.get("file") or f"{ch.uniqueid}.wav"
        if name not in self._mixmon:
            self._mixmon[name] = (file, self.now, f.get("options"))
            self._chan("MixMonitorStart", ch)
        return _response(aid)

    def _act_queue_add(self, f: _Fields, aid: str) -> str:
        queue, interface = f.get("queue"), f.get("interface")
        if not queue or not interface:
            return _error(aid, "'Queue' and 'Interface' not specified.")
        try:
            penalty = int(f.get("penalty") or 0)
        except ValueError:
            return _error(aid, "Invalid penalty")
        err = self.add_member(queue, interface, f.get("membername"), penalty,
                              f.flag("paused"), f.get("reason"), f.get("stateinterface"))
        return _error(aid, err) if err else _response(aid, Message="Added interface to queue")

    def _act_queue_remove(self, f: _Fields, aid: str) -> str:
        queue, interface = f.get("queue"), f.get("interface")
        if not queue or not interface:
            return _error(aid, "Need 'Queue' and 'Interface' parameters.")
        err = self.remove_member(queue, interface)
        return _error(aid, err) if err else _response(aid, Message="Removed interface from queue")

    def _act_queue_pause(self, f: _Fields, aid: str) -> str:
        interface, paused = f.get("interface"), f.get("paused")
        if not interface or not paused:
            return _error(aid, "Need 'Interface' and 'Paused' parameters.")
        on = f.flag("paused")
        err = self.pause_member(interface, on, f.get("reason"), f.get("queue"))
        if err:
            return _error(aid, err)
        return _response(aid, Message=f"Interface {'paused' if on else 'unpaused'} successfully")

    def _act_queue_reset(self, f: _Fields, aid: str) -> str:
        err = self.reset_queue(f.get("queue"))
        return _error(aid, err) if err else _response(aid,
                                                      Message="Queue stats reset successfully")

    def _act_queue_status(self, f: _Fields, aid: str) -> str:
        qname, member = f.get("queue"), f.get("member")
        tail = f"ActionID: {aid}\r\n" if aid else ""
        now_i = int(self.now)
        out = [_response(aid, EventList="start", Message="Queue status will follow")]
        items = 0
        for q in self.queues.values():
            if qname and q.name != qname:
                continue
            out.append(f"Event: QueueParams\r\nQueue: {q.name}\r\nMax: {q.cfg.maxlen}\r\n"
                       f"Strategy: {q.cfg.strategy}\r\nCalls: {len(q.callers)}\r\n"
                       f"Holdtime: {q.holdtime}\r\nTalkTime: {q.talktime}\r\n"
                       f"Completed: {q.completed}\r\nAbandoned: {q.abandoned}\r\n"
                       f"ServiceLevel: {q.cfg.servicelevel}\r\n"
                       f"ServicelevelPerf: {q.sl_perf:.1f}\r\n"
                       f"ServicelevelPerf2: {q.sl_perf2:.1f}\r\nWeight: {q.cfg.weight}\r\n"
                       f"{tail}\r\n")
            items += 1
            for m in q.members.values():
                if member and member not in (m.interface, m.name):
                    continue
                out.append(f"Event: QueueMember\r\nQueue: {q.name}\r\nName: {m.name}\r\n"
                           f"Location: {m.interface}\r\nStateInterface: {m.state_interface}\r\n"
                           f"Membership: dynamic\r\nPenalty: {m.penalty}\r\n"
                           f"CallsTaken: {m.calls}\r\nLastCall: {m.last_call}\r\n"
                           f"LastPause: {m.last_pause}\r\nLoginTime: {m.login_time}\r\n"
                           f"InCall: {int(m.in_call)}\r\nStatus: {m.status}\r\n"
                           f"Paused: {int(m.paused)}\r\nPausedReason: {m.reason}\r\n"
                           f"Wrapuptime: 0\r\n{tail}\r\n")
                items += 1
            for c in q.callers:
                out.append(f"Event: QueueEntry\r\nQueue: {q.name}\r\nPosition: {c.pos}\r\n"
                           f"Channel: {c.c2.name}\r\nUniqueid: {c.c2.uniqueid}\r\n"
                           f"CallerIDNum: {c.c2.cid_num}\r\nCallerIDName: {c.c2.cid_name}\r\n"
                           f"ConnectedLineNum: {c.c2.conn_num}\r\n"
                           f"ConnectedLineName: {c.c2.conn_name}\r\n"
                           f"Wait: {now_i - c.start}\r\nPriority: 0\r\n{tail}\r\n")
                items += 1
        out.append(f"Event: QueueStatusComplete\r\n{tail}EventList: Complete\r\n"
                   f"ListItems: {items}\r\n\r\n")
        return "".join(out)

    def _act_queue_summary(self, f: _Fields, aid: str) -> str:
        qname = f.get("queue")
        tail = f"ActionID: {aid}\r\n" if aid else ""
        now_i = int(self.now)
        out = [_response(aid, EventList="start", Message="Queue summary will follow")]
        items = 0
        for q in self.queues.values():
            if qname and q.name != qname:
                continue
            members = list(q.members.values())
            available = sum(1 for m in members if m.status <= NOT_INUSE and not m.paused)
            longest = max((now_i - c.start for c in q.callers), default=0)
            out.append(f"Event: QueueSummary\r\nQueue: {q.name}\r\nLoggedIn: {len(members)}\r\n"
                       f"Available: {available}\r\nCallers: {len(q.callers)}\r\n"
                       f"HoldTime: {q.holdtime}\r\nTalkTime: {q.talktime}\r\n"
                       f"LongestHoldTime: {longest}\r\n{tail}\r\n")
            items += 1
        out.append(f"Event: QueueSummaryComplete\r\n{tail}EventList: Complete\r\n"
                   f"ListItems: {items}\r\n\r\n")
        return "".join(out)

    def queue_show(self, name: str) -> list[str]:
        """The CLI's ``queue show <name>`` lines, as Asterisk 22 prints them."""
        q = self.queues[name]
        now_i = int(self.now)
        head = (f"{q.name} has {len(q.callers)} calls "
                f"(max {q.cfg.maxlen if q.cfg.maxlen else 'unlimited'}) in "
                f"'{q.cfg.strategy}' strategy ({q.holdtime}s holdtime, {q.talktime}s talktime), "
                f"W:{q.cfg.weight}, C:{q.completed}, A:{q.abandoned}, SL:{q.sl_perf:2.1f}%, "
                f"SL2:{q.sl_perf2:2.1f}% within {q.cfg.servicelevel}s")
        lines = [head]
        if q.members:
            lines.append("   Members: ")
            for m in q.members.values():
                s = f"      {m.name}"
                if m.name != m.interface:
                    s += f" ({m.interface})"
                if m.penalty:
                    s += f" with penalty {m.penalty}"
                s += " (ringinuse disabled) (dynamic)"
                if m.in_call:
                    s += " (in call)"
                if m.paused:
                    s += (f" (paused{':' + m.reason if m.reason else ''} was "
                          f"{now_i - m.last_pause} secs ago)")
                s += f" ({DEVSTATE_TEXT[m.status]})"
                s += (f" has taken {m.calls} calls (last was {now_i - m.last_call} secs ago)"
                      if m.calls else " has taken no calls yet")
                s += f" (login was {now_i - m.login_time} secs ago)"
                lines.append(s)
        else:
            lines.append("   No Members")
        if q.callers:
            lines.append("   Callers: ")
            for c in q.callers:
                wait = now_i - c.start
                lines.append(f"      {c.pos}. {c.c2.name} (wait: {wait // 60}:{wait % 60:02d}, "
                             "prio: 0)")
        else:
            lines.append("   No Callers")
        lines.append("")
        return lines

    def _act_command(self, f: _Fields, aid: str) -> str:
        words = f.get("command").split()
        if words[:2] == ["queue", "show"]:
            names = words[2:] or list(self.queues)
            lines: list[str] = []
            for n in names:
                lines.extend(self.queue_show(n) if n in self.queues else [f"No such queue: {n}."])
        elif words[:3] == ["core", "show", "uptime"]:
            up = int(self.now - self.started)
            lines = [f"System uptime: {up} seconds", f"Last reload: {up} seconds"]
        else:
            cmd = " ".join(words)
            more = f"(type 'core show help {cmd}' for other possible commands)"
            lines = [f"No such command '{cmd}' {more}"]
        body = "".join(f"Output: {line}\r\n" for line in lines)
        head = _response(aid, Message="Command output follows")[:-2]
        return f"{head}{body}\r\n"

    def _act_core_show_channels(self, f: _Fields, aid: str) -> str:
        head = f"ActionID: {aid}\r\n" if aid else ""
        out = [_response(aid, EventList="start", Message="Channels will follow")]
        for ch in self.channels.values():
            out.append(f"Event: CoreShowChannel\r\n{head}{ch.snap()}Application: {ch.app}\r\n"
                       f"ApplicationData: {ch.appdata}\r\n"
                       f"Duration: {_hms(self.now - ch.created)}\r\nBridgeId: {ch.bridge}\r\n\r\n")
        out.append(f"Event: CoreShowChannelsComplete\r\n{head}EventList: Complete\r\n"
                   f"ListItems: {len(self.channels)}\r\n\r\n")
        return "".join(out)

    def _act_setvar(self, f: _Fields, aid: str) -> str:
        name, value, channel = f.get("variable"), f.get("value"), f.get("channel")
        if not name:
            return _error(aid, "No variable specified")
        if name.upper().startswith("DEVICE_STATE(") and name.endswith(")"):
            err = self.set_device_state(name[13:-1], value)
            return _error(aid, err) if err else _response(aid, Message="Variable Set")
        if channel:
            ch = self.channels.get(channel)
            if ch is None:
                return _error(aid, "Channel specified does not exist")
            ch.set(vars={**ch.vars, name: value})
        return _response(aid, Message="Variable Set")

    def _act_hangup(self, f: _Fields, aid: str) -> str:
        name = f.get("channel")
        if not name:
            return _error(aid, "No channel specified")
        if not self.hangup_channel(name):
            return _error(aid, "No such channel")
        return _response(aid, Message="Channel Hungup")

    def _act_redirect(self, f: _Fields, aid: str) -> str:
        name, exten = f.get("channel"), f.get("exten")
        if not name or not exten:
            return _error(aid, "Channel and Exten not specified")
        ch = self.channels.get(name)
        call = ch.owner if ch is not None else None
        if not isinstance(call, Call) or ch not in (call.c1, call.c2):
            return _error(aid, "Channel specified does not exist")
        if not self.redirect(call, f.get("context") or self.config.inbound_context, exten):
            return _error(aid, "Redirect failed")
        return _response(aid, Message="Redirect successful")

    def _act_originate(self, f: _Fields, aid: str) -> str:
        target = f.get("channel")
        if not target:
            return _error(aid, "Channel not specified")
        variables: dict[str, str] = {}
        for item in f.variables:
            key, _, value = item.partition("=")
            variables[key.lstrip("_").upper()] = value
        parts = _local_parts(target)
        number, name = _parse_callerid(f.get("callerid"))
        c = self.config
        if parts and parts[1] in (c.outbound_context, c.callback_context):
            return self._originate_citizen(f, aid, parts[0], parts[1], variables, (number, name))
        if parts and f"Local/{parts[0]}@{parts[1]}" in self.supervisors:
            if f.get("application").lower() != "chanspy" or not f.get("data"):
                return _error(aid, "Originate failed")
            spy = SpyCall(parts[0], aid, f.get("data"), (number, name))
            self._at(self.now, self._spy_dial, spy)
            return _response(aid, Message="Originate successfully queued")

        def num(key: str) -> float | None:
            try:
                return float(variables[key]) if variables.get(key) else None
            except ValueError:
                return None

        if parts and parts[1] == self.config.inbound_context:
            exten = parts[0]
            hotline = variables.get("HOTLINE") or (exten if exten.isdigit() else "12345")
            spec = CallSpec(
                at=self.now, number=number, name=name, hotline=hotline,
                category=variables.get("CATEGORY", "consult"),
                ivr_path=variables.get("IVR_PATH", "1"),
                queue=variables.get("QUEUE") or (exten if exten in self.queues else None),
                patience=num("PATIENCE"), patience_from_arrival=True, ring=num("RINGDELAY"),
                talk=num("TALK"), kind="originate")
            response = _response(aid, Message="Originate successfully queued")
            log.debug("pbx_sim.call_injected", caller=mask_number(spec.number),
                      queue=self._queue_for(spec).name)
            self._at(self.now, lambda s: self.inject_call(s, aid), spec)
            return response
        phone = self.phones.get(f"Local/{parts[0]}@{parts[1]}") if parts else None
        if phone is None:  # only the simulated Local operator phones can be called
            return _error(aid, "Originate failed")
        self._at(self.now, lambda _: self.originate_agent(
            phone, aid, f.get("context") or "default", f.get("exten") or "s", num("TALK"),
            num("RINGDELAY")), None)
        return _response(aid, Message="Originate successfully queued")

    # ------------------------------------------------------------------ calls to citizens

    def _originate_citizen(self, f: _Fields, aid: str, number: str, context: str,
                           variables: dict[str, str], cid: tuple[str, str]) -> str:
        if not number:
            return _error(aid, "Originate failed")
        try:
            timeout = float(f.get("timeout") or 30000) / 1000.0
        except ValueError:
            timeout = 30.0
        app = f.get("application")
        cc = CitizenCall(number, context, aid, app, f.get("data") if app else "",
                         "" if app else (f.get("context") or "default"),
                         "" if app else (f.get("exten") or "s"),
                         (cid[0] or UNKNOWN, cid[1] or UNKNOWN), timeout, variables)
        log.debug("pbx_sim.citizen_originate", number=mask_number(number), context=context,
                  app=app or f"{cc.context},{cc.exten}")
        self._at(self.now, self._citizen_dial, cc)
        return _response(aid, Message="Originate successfully queued")

    def _citizen_dial(self, cc: CitizenCall) -> None:
        """The Local pair towards the citizen: ``;2`` dials out the trunk, ``;1`` rings."""
        base = f"Local/{cc.number}@{cc.dial_context}-{self._next_local():08x}"
        vars_ = dict(cc.variables)
        a1 = cc.a1 = self._new_channel(base + ";1", 0, cc.dial_context, cc.number, "", vars_, cc)
        a2 = cc.a2 = self._new_channel(base + ";2", 4, cc.dial_context, cc.number, a1.uniqueid,
                                       vars_, cc)
        self._chan("Newchannel", a1)
        self._chan("Newchannel", a2)
        a1.set(cid_num=cc.cid_num, cid_name=cc.cid_name)
        self._chan("NewCallerid", a1, CID_PRES)
        self._local_bridge(a1, a2, cc.dial_context, cc.number, "No")
        a2.set(app="Dial", appdata=f"PJSIP/{cc.number}@trunk,{int(cc.timeout)}")
        citizen = self.citizen
        if citizen.answers():
            ring = citizen.ring_time()
            if ring < cc.timeout:
                a1.set(state=5)
                self._chan("Newstate", a1)
                self._at(self.now + ring, self._citizen_up, cc)
                return
            reason = 3
        else:
            reason = citizen.no_answer_reason()
        if reason == 5:  # busy at once
            self._at(self.now + 1.0, self._citizen_fail, (cc, 5))
        else:  # rings until the originate's Timeout (or the model's ring-out)
            a1.set(state=5)
            self._chan("Newstate", a1)
            self._at(self.now + min(cc.timeout, citizen.no_answer_ring), self._citizen_fail,
                     (cc, 3))

    def _originate_response(self, cc: CitizenCall | SpyCall, ok: bool, reason: int,
                            channel: str, uniqueid: str) -> None:
        """manager.c's OriginateResponse: Application/Data or Context/Exten variant."""
        if isinstance(cc, SpyCall):
            where = f"Application: ChanSpy\r\nData: {cc.data}\r\n"
        elif cc.app:
            where = f"Application: {cc.app}\r\nData: {cc.appdata}\r\n"
        else:
            where = f"Context: {cc.context}\r\nExten: {cc.exten}\r\n"
        self._emit("OriginateResponse", CALL,
                   (f"ActionID: {cc.action_id}\r\n" if cc.action_id else "")
                   + f"Response: {'Success' if ok else 'Failure'}\r\nChannel: {channel}\r\n"
                   f"{where}Reason: {reason}\r\nUniqueid: {uniqueid}\r\n"
                   f"CallerIDNum: {cc.cid_num}\r\nCallerIDName: {cc.cid_name}\r\n")

    def _citizen_fail(self, arg: tuple[CitizenCall, int]) -> None:
        cc, reason = arg
        if not cc.live:
            return
        cc.live = False
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        cause = 17 if reason == 5 else 19
        self._hangup(a2, cause)
        self._hangup(a1, cause)
        self._originate_response(cc, False, reason, f"Local/{cc.number}@{cc.dial_context}",
                                 "<null>")

    def _citizen_up(self, cc: CitizenCall) -> None:
        """The citizen answers: OriginateResponse Success, then the application or the queue."""
        if not cc.live:
            return
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        cc.up = True
        a2.set(state=6, priority=2)
        self._chan("Newstate", a2)
        a1.set(state=6)
        self._chan("Newstate", a1)
        self._originate_response(cc, True, 4, a1.name, a1.uniqueid)
        queue = self.queues.get(cc.exten) if not cc.app else None
        if cc.app:
            a1.set(app=cc.app, appdata=cc.appdata)
            if cc.app.lower() == "agi":
                url, *args = [p.strip() for p in cc.appdata.split(",")]
                self.agi_runs.append(AgiRun(a1.name, a1.uniqueid, url, tuple(args), cc.number,
                                            UNKNOWN, cc.dial_context, cc.number,
                                            dict(a1.vars)))
            else:  # nothing else is simulated: the application ends at once
                self._at(self.now + 1.0, self._citizen_down, cc)
        elif queue is not None and cc.context == self.config.queue_context:
            self._callback_join(cc, queue)
        else:
            self._at(self.now + 1.0, self._citizen_down, cc)

    def _callback_join(self, cc: CitizenCall, queue: Queue) -> None:
        """``;1`` runs ``hotline-queue,<queue>,1``: Queue() as a caller with the call's variables."""
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        v = cc.variables
        spec = CallSpec(at=self.now, number=cc.number, name="", queue=queue.name,
                        hotline=v.get("HOTLINE", "12345"), category=v.get("CATEGORY", "consult"),
                        ivr_path=v.get("IVR_PATH", ""), kind="callback")
        call = Call(spec, queue)
        call.c2, call.c1 = a1, a2  # c2: the channel in the queue; c1: the leg to the citizen
        a1.owner = a2.owner = call
        a1.set(context=self.config.queue_context, exten=queue.name, cid_num=cc.number)
        self._chan("NewCallerid", a1, CID_PRES)
        a1.set(app="Answer", appdata="")
        self._at(self.now + JOIN_DELAY, self._join, call)

    def _citizen_down(self, cc: CitizenCall) -> None:
        if not cc.live:
            return
        cc.live = False
        a1, a2 = cc.a1, cc.a2
        assert a1 is not None and a2 is not None
        if not cc.up:  # hung up while ringing (Hangup action): no answer
            self._hangup(a2, 16)
            self._hangup(a1, 16)
            self._originate_response(cc, False, 3, f"Local/{cc.number}@{cc.dial_context}",
                                     "<null>")
            return
        self._hangup_req(a1, soft=False)
        self._hangup(a1)
        self._hangup_req(a2, soft=True)
        self._hangup(a2)

    def agi_done(self, channel: str) -> None:
        """The IO edge's FastAGI script on ``channel`` ended: the channel hangs up."""
        ch = self.channels.get(channel)
        if ch is not None and isinstance(ch.owner, CitizenCall):
            self._citizen_down(ch.owner)

    # ------------------------------------------------------------------ ChanSpy

    def _spy_dial(self, spy: SpyCall) -> None:
        ctx = self.config.agent_context
        base = f"Local/{spy.ext}@{ctx}-{self._next_local():08x}"
        a1 = spy.a1 = self._new_channel(base + ";1", 0, ctx, spy.ext, "", {}, spy)
        a2 = spy.a2 = self._new_channel(base + ";2", 4, ctx, spy.ext, a1.uniqueid, {}, spy)
        self._chan("Newchannel", a1)
        self._chan("Newchannel", a2)
        a1.set(cid_num=spy.cid_num or UNKNOWN, cid_name=spy.cid_name or UNKNOWN)
        self._chan("NewCallerid", a1, CID_PRES)
        self._local_bridge(a1, a2, ctx, spy.ext, "No")
        self._emit("DialBegin", CALL, f"{a1.dsnap()}DialString: {spy.ext}@{ctx}\r\n")
        self._at(self.now + self.config.spy_ring * RING_SCALE, self._spy_up, spy)

    def _spy_up(self, spy: SpyCall) -> None:
        if not spy.live:
            return
        a1, a2 = spy.a1, spy.a2
        assert a1 is not None and a2 is not None
        a2.set(state=6, priority=2)
        self._chan("Newstate", a2)
        a1.set(state=6, app="ChanSpy", appdata=spy.data)
        self._chan("Newstate", a1)
        self._emit("DialEnd", CALL, f"{a1.dsnap()}DialStatus: ANSWER\r\n")
        self._originate_response(spy, True, 4, a1.name, a1.uniqueid)
        log.debug("pbx_sim.chanspy", spyer=a1.name, prefix=spy.prefix, mode=spy.mode,
                  options=spy.options)
        spy.deadline = self.now + self.config.spy_wait
        self._spy_scan(spy)

    def _spy_scan(self, spy: SpyCall) -> None:
        """ChanSpy's channel scan: the first bridged channel whose name starts with the prefix."""
        if not spy.live or spy.spyee is not None:
            return
        prefix = spy.prefix.lower()
        target = next((ch for ch in self.channels.values()
                       if ch.bridge and ch.owner is not spy and ch.name.lower().startswith(prefix)),
                      None) if prefix else None
        if target is None:
            if self.now >= spy.deadline:
                self._spy_down(spy)
            else:
                self._at(self.now + 1.0, self._spy_scan, spy)
            return
        assert spy.a1 is not None
        spy.spyee = target
        self._spied.setdefault(target.name, []).append(spy)
        self._emit("ChanSpyStart", CALL, f"{spy.a1.render('Spyer')}{target.render('Spyee')}")

    def _spy_stop(self, spy: SpyCall) -> None:
        target = spy.spyee
        if target is None or spy.a1 is None:
            return
        spy.spyee = None
        spies = self._spied.get(target.name, [])
        if spy in spies:
            spies.remove(spy)
        if not spies:
            self._spied.pop(target.name, None)
        self._emit("ChanSpyStop", CALL, f"{spy.a1.render('Spyer')}{target.render('Spyee')}")

    def _spyee_gone(self, ch: Channel) -> None:
        """The spied-on channel hangs up: ChanSpyStop; option E ends the spyer, else it scans."""
        for spy in list(self._spied.get(ch.name, [])):
            self._spy_stop(spy)
            if "E" in spy.options:
                self._at(self.now, self._spy_down, spy)
            else:
                spy.deadline = self.now + self.config.spy_wait
                self._at(self.now + 1.0, self._spy_scan, spy)

    def _spy_down(self, spy: SpyCall) -> None:
        if not spy.live:
            return
        spy.live = False
        self._spy_stop(spy)
        a1, a2 = spy.a1, spy.a2
        assert a1 is not None and a2 is not None
        self._hangup_req(a1, soft=False)
        self._hangup(a1)
        self._hangup_req(a2, soft=True)
        self._hangup(a2)

    # ------------------------------------------------------------------ introspection

    def counters(self, queue: str) -> dict[str, float]:
        """Asterisk's in-memory counters of one queue, as QueueParams reports them."""
        q = self.queues[queue]
        return {"completed": q.completed, "abandoned": q.abandoned,
                "completed_in_sl": q.completed_in_sl, "abandoned_in_sl": q.abandoned_in_sl,
                "holdtime": q.holdtime, "talktime": q.talktime,
                "sl_perf": round(q.sl_perf, 1), "sl_perf2": round(q.sl_perf2, 1),
                "waiting": len(q.callers)}


# --------------------------------------------------------------------------- AMI sessions


class AmiSession:
    """One manager connection's protocol state: login, event mask and session actions."""

    def __init__(self, pbx: Pbx, users: Mapping[str, str]) -> None:
        self.pbx = pbx
        self.users = users
        self.username = ""
        self.authenticated = False
        self.mask = 0
        self.closing = False
        self._buf = b""

    def feed(self, data: bytes) -> list[list[tuple[str, str]]]:
        """Bytes in, complete action frames out (CRLF or LF line ends)."""
        self._buf += data
        frames = []
        while True:
            buf = self._buf
            i, j = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
            if i < 0 and j < 0:
                break
            end, skip = (i, 4) if i >= 0 and (j < 0 or i < j) else (j, 2)
            raw, self._buf = buf[:end], buf[end + skip:]
            fields = parse_frame(raw.decode("utf-8", errors="replace"))
            if fields:
                frames.append(fields)
        return frames

    def handle(self, action: list[tuple[str, str]]) -> str:
        """The reply to one action; sets ``closing`` after Logoff or a failed login."""
        f = _Fields(action)
        name, aid = f.get("action").lower(), f.get("actionid")
        if not name:
            return _error(aid, "Missing action in request")
        if name == "login":
            return self._login(f, aid)
        if name == "logoff":
            self.closing = True
            return _response(aid, "Goodbye", Message="Thanks for all the fish.")
        if not self.authenticated:
            return _error(aid, "Authentication Required")
        if name == "ping":
            return _response(aid, Ping="Pong", Timestamp=f"{self.pbx.now:.6f}")
        if name == "events":
            self.mask = event_mask(f.get("eventmask", "off"))
            return _response(aid, Events="On" if self.mask else "Off")
        return self.pbx.handle_action(action)

    def _login(self, f: _Fields, aid: str) -> str:
        user, secret = f.get("username"), f.get("secret")
        if user not in self.users or self.users[user] != secret:
            self.closing = True
            log.warning("pbx_sim.login_failed", username=user)
            return _error(aid, "Authentication failed")
        self.username, self.authenticated = user, True
        self.mask = event_mask(f.d.get("events"))
        text = _response(aid, Message="Authentication accepted")
        if self.mask & SYSTEM[0]:
            up = int(self.pbx.now - self.pbx.started)
            text += (f"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: {up}\r\n"
                     f"LastReload: {up}\r\nStatus: Fully Booted\r\n\r\n")
        return text


# --------------------------------------------------------------------------- the TCP edge


class _Client(asyncio.Protocol):
    """One TCP connection: bytes to the session, replies and events back."""

    def __init__(self, server: PbxSimServer) -> None:
        self.server = server
        self.session = AmiSession(server.pbx, server.users)
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = str(transport.get_extra_info("peername"))
        if self.server.sndbuf:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.sndbuf)
        self.server.clients.add(self)
        transport.write(BANNER.encode())
        log.info("pbx_sim.client_connected", peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        log.info("pbx_sim.client_disconnected", peer=self.peer, user=self.session.username)

    def data_received(self, data: bytes) -> None:
        for action in self.session.feed(data):
            if self.transport is None or self.transport.is_closing():
                return
            self.server.sync()
            self.server.flush()
            reply = self.session.handle(action)
            self.transport.write(reply.encode())
            self.server.service()
            self.server.flush()
            if self.session.closing:
                self.transport.close()
                return
        self.server.reschedule()

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.server.max_client_buffer:
            log.warning("pbx_sim.client_dropped", peer=self.peer, user=self.session.username,
                        reason="not reading", buffered=self.transport.get_write_buffer_size())
            self.server.clients.discard(self)
            self.transport.abort()


class AgiOutcome(NamedTuple):
    """What a FastAGI script did with a call: variables set, the queue entered (if any)."""
    variables: dict[str, str]
    queue: str | None
    commands: list[str]


class QueueEnd(NamedTuple):
    """How an ``EXEC Queue`` ended for :func:`run_agi`'s ``on_queue``: the result to reply
    (0: the caller is still on the line, -1: hung up), channel variables app_queue set
    (``MEMBERINTERFACE``) and the keys the caller presses from then on."""
    result: int
    variables: dict[str, str]
    keys: list[str]


async def run_agi(url: str, headers: Mapping[str, str], keys: Sequence[str], *,
                  timeout: float = 10.0, variables: Mapping[str, str] | None = None,
                  on_queue: Callable[[str, dict[str, str]], Any] | None = None,
                  alive: Callable[[], bool] | None = None) -> AgiOutcome:
    """Play Asterisk's side of ``AGI(agi://host:port/script)``: send the agi_ headers,
    answer each command, press ``keys`` one per GET DATA (then time out).

    ``GET VARIABLE`` answers from ``variables`` and what the script set.  ``EXEC Queue``
    ends the conversation unless ``on_queue(queue, variables)`` is given: it is awaited
    (the caller is in Queue()) and its :class:`QueueEnd` is the reply; on 0 the script
    goes on (``GET VARIABLE MEMBERINTERFACE``, the survey's GET DATA ...), on -1 the
    channel is gone.  Ends at ``HANGUP`` (after its reply) or when the script closes;
    once ``alive()`` is false (the channel was hung up) the next command gets
    ``200 result=-1`` and the connection is closed.
    """
    rest = url.removeprefix("agi://")
    hostport, _, script = rest.partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host or "127.0.0.1", int(port or 4573)), timeout)
    chan_vars: dict[str, str] = dict(variables or {})
    set_vars: dict[str, str] = {}
    queue: str | None = None
    commands: list[str] = []
    pending = list(keys)
    try:
        head = {"agi_network": "yes", "agi_network_script": script, "agi_request": url,
                **headers}
        writer.write("".join(f"{k}: {v}\n" for k, v in head.items()).encode() + b"\n")
        await writer.drain()
        while line := await asyncio.wait_for(reader.readline(), timeout):
            command = line.decode().strip()
            if not command:
                continue
            commands.append(command)
            reply = "200 result=0"
            done = False
            if alive is not None and not alive():
                reply, done = "200 result=-1", True
            elif command.startswith("GET DATA"):
                key = pending.pop(0) if pending else ""
                reply = f"200 result={key}" if key else "200 result= (timeout)"
            elif command.startswith("SET VARIABLE "):
                _, _, name, value = (command + " ").split(" ", 3)
                set_vars[name] = chan_vars[name] = value.strip().strip('"')
            elif command.startswith("GET VARIABLE "):
                name = command.split(" ", 2)[2].strip()
                value = chan_vars.get(name)
                reply = f"200 result=1 ({value})" if value is not None else "200 result=0"
            elif command.startswith("EXEC Queue "):
                queue = command.split(" ", 2)[2].split(",", 1)[0].strip().strip('"')
                if on_queue is None:
                    break  # the caller is in Queue(); the script's part is over
                end: QueueEnd = await on_queue(queue, dict(set_vars))
                reply = f"200 result={end.result}"
                chan_vars.update(end.variables)
                pending = list(end.keys)
                done = end.result < 0
            elif command == "HANGUP":
                reply, done = "200 result=1", True
            writer.write(f"{reply}\n".encode())
            await writer.drain()
            if done:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the script closed the connection: it is done
    finally:
        writer.close()
    return AgiOutcome(set_vars, queue, commands)


class PbxSimServer:
    """The asyncio TCP server around a :class:`Pbx`, paced at ``speed`` PBX seconds per second.

    With ``agi_url`` (and a core built with ``hold_arrivals=True``) every caller of
    the traffic model first runs that FastAGI script as Asterisk would, pressing the
    digits of its ``ivr_path``; the variables the script sets and the queue it
    enters go on the call.  A caller whose script ends without a queue (a
    call-back request) never joins; an unreachable script lets the call join as is.
    The AGI session stays open while the caller is in Queue() (``agi_uniqueid`` and
    ``agi_channel`` are those of the caller's ``;2`` channel in the queue events):
    when the operator hangs up first, ``EXEC Queue`` returns ``200 result=0``,
    ``GET VARIABLE MEMBERINTERFACE`` gives the member's interface and the survey's
    ``GET DATA`` the citizen model's key; otherwise it returns ``200 result=-1``.  The
    core still emits the caller's Hangup when the bridge ends (as the trace does),
    so the survey conversation finishes after that Hangup event.

    Channels answered into ``AGI(url,args)`` (a return-visit Originate) run that
    FastAGI script the same way (``agi_arg_N``, ``GET VARIABLE`` from the channel's
    variables, keys from ``citizen``); the channel hangs up when the script ends.
    With ``recordings_root`` every MixMonitor that stops writes a small tone WAV
    (length = time recorded, at most 20 s) to ``recordings_root / File``; absolute
    paths and ``..`` are refused (nothing written, a warning logged).
    """

    def __init__(self, pbx: Pbx, *, host: str = "127.0.0.1", port: int = 5038,
                 users: Mapping[str, str] | None = None, speed: float = 1.0,
                 max_client_buffer: int = 4 << 20, tick: float = 0.005, batch: int = 2000,
                 sndbuf: int | None = None, agi_url: str | None = None,
                 citizen: CitizenModel | None = None,
                 recordings_root: Path | str | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if agi_url is not None and not pbx.hold_arrivals:
            raise ValueError("agi_url needs a Pbx built with hold_arrivals=True")
        self.pbx = pbx
        if citizen is not None:
            pbx.citizen = citizen
        self.recordings_root = Path(recordings_root) if recordings_root is not None else None
        self.recordings_written: list[Path] = []
        self._queue_waiters: dict[Call, asyncio.Future[tuple[str, str]]] = {}
        self._write_tasks: set[asyncio.Future[Any]] = set()
        self.agi_url = agi_url
        self._agi_tasks: set[asyncio.Task[None]] = set()
        self._agi_seq = 0
        self.host = host
        self._port = port
        self.users = dict(users or {"hotline": "hotline"})
        self.speed = speed
        self.max_client_buffer = max_client_buffer
        self.tick = tick
        self.batch = batch
        self.sndbuf = sndbuf
        self._lagging = False
        self.clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._timer_at = 0.0
        self._v0 = pbx.now
        self._m0 = 0.0
        self.frames_sent = 0
        self._pending: list[Frame] = []

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), self.host, self._port)
        self._v0, self._m0 = self.pbx.now, loop.time()
        self.reschedule()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._agi_tasks):
            task.cancel()
        for fut in self._queue_waiters.values():
            fut.cancel()
        self._queue_waiters.clear()
        if self._write_tasks:
            await asyncio.gather(*self._write_tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        self.clients.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def virtual_now(self) -> float:
        return self._v0 + (asyncio.get_running_loop().time() - self._m0) * self.speed

    def sync(self) -> bool:
        """Advance the core towards the wall clock's virtual time, one slice of at most
        ``batch`` frames (they wait for flush); True when it is not there yet."""
        target = self.virtual_now()
        self._pending.extend(self.pbx.advance(target, self.batch))
        nxt = self.pbx.next_event_time()
        behind = nxt is not None and nxt <= target
        if behind and target - self.pbx.now > 2 * self.speed and not self._lagging:
            log.warning("pbx_sim.behind_real_time", lag_pbx_seconds=round(target - self.pbx.now))
        self._lagging = behind
        return behind

    def flush(self) -> None:
        """Write every pending frame to each logged-in client its mask allows."""
        frames = self._pending + self.pbx.drain()
        self._pending = []
        if not frames:
            return
        self.frames_sent += len(frames)
        by_mask: dict[int, bytes] = {}
        for client in list(self.clients):
            s = client.session
            if not s.authenticated or not s.mask:
                continue
            data = by_mask.get(s.mask)
            if data is None:
                data = "".join(fr.text for fr in frames if fr.mask & s.mask).encode()
                by_mask[s.mask] = data
            if data:
                client.send(data)

    def _task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._agi_tasks.add(task)
        task.add_done_callback(self._agi_tasks.discard)

    def _start_ivr(self) -> None:
        """Hand each held arrival to the FastAGI script (one task per caller)."""
        for spec in self.pbx.held_arrivals:
            self._task(self._ivr_call(spec))
        self.pbx.held_arrivals.clear()

    def service(self) -> None:
        """Do what the core asks of the IO edge: AGI scripts on answered channels, the
        ends of watched queue calls, recordings to write."""
        pbx = self.pbx
        if self.agi_url is not None and pbx.held_arrivals:
            self._start_ivr()
        if pbx.agi_runs:
            runs, pbx.agi_runs = pbx.agi_runs, []
            for run in runs:
                self._task(self._channel_agi(run))
        if pbx.queue_exits:
            exits, pbx.queue_exits = pbx.queue_exits, []
            for call, how in exits:
                fut = self._queue_waiters.pop(call, None)
                if fut is not None and not fut.done():
                    member = call.member.interface if call.member is not None else ""
                    fut.set_result((how, member))
        if pbx.recordings:
            recs, pbx.recordings = pbx.recordings, []
            for rec in recs:
                self._write_recording(rec)

    def _write_recording(self, rec: Recording) -> None:
        root = self.recordings_root
        if root is None:
            return
        rel = Path(rec.file)
        if not rec.file or rel.is_absolute() or ".." in rel.parts or rec.file.startswith("\\"):
            log.warning("pbx_sim.recording_refused", file=rec.file, channel=rec.channel)
            return
        path = root / rel
        seconds = min(max(rec.seconds, 0.0), 20.0)
        freq = 300.0 + (sum(map(ord, rec.uniqueid)) % 8) * 60.0

        def write() -> None:
            from recordings.store import write_wav
            write_wav(path, seconds, freq)
            self.recordings_written.append(path)

        fut = asyncio.get_running_loop().run_in_executor(None, write)
        self._write_tasks.add(fut)
        fut.add_done_callback(self._write_tasks.discard)

    async def wait_recordings(self) -> None:
        """Until every recording handed to a thread so far is written (tests)."""
        while self._write_tasks:
            await asyncio.gather(*list(self._write_tasks), return_exceptions=True)

    async def _channel_agi(self, run: AgiRun) -> None:
        """``AGI(agi://.../script,args)`` on an answered originated channel."""
        script = run.url.removeprefix("agi://").partition("/")[2]
        headers = {"agi_channel": run.channel, "agi_language": "en", "agi_type": "Local",
                   "agi_uniqueid": run.uniqueid, "agi_version": "22.0.0",
                   "agi_callerid": run.callerid, "agi_calleridname": run.calleridname,
                   "agi_callingpres": "0", "agi_callingani2": "0", "agi_callington": "0",
                   "agi_callingtns": "0", "agi_dnid": "unknown", "agi_rdnis": "unknown",
                   "agi_context": run.context, "agi_extension": run.exten,
                   "agi_priority": "1", "agi_enhanced": "0.0", "agi_accountcode": "",
                   "agi_threadid": str(140000000000000 + self._agi_seq)}
        self._agi_seq += 1
        for i, arg in enumerate(run.args, 1):
            headers[f"agi_arg_{i}"] = arg
        keys = self.pbx.citizen.keys_for(script)
        try:
            await run_agi(run.url, headers, keys, variables=run.variables, timeout=30.0,
                          alive=lambda: run.channel in self.pbx.channels)
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("pbx_sim.agi_failed", error=str(exc), channel=run.channel,
                        script=script)
        self.pbx.agi_done(run.channel)
        self.service()
        self.flush()
        self.reschedule()

    async def _ivr_call(self, spec: CallSpec) -> None:
        assert self.agi_url is not None
        self._agi_seq += 1
        res = self.pbx.reserve_caller()
        headers = {"agi_channel": res.name2, "agi_uniqueid": res.uid2,
                   "agi_callerid": spec.number or "unknown", "agi_calleridname": spec.name,
                   "agi_dnid": spec.hotline, "agi_extension": spec.hotline,
                   "agi_context": self.pbx.config.inbound_context, "agi_language": "zh"}
        keys = [k for k in spec.ivr_path if k in "0123456789*#"]
        joined: list[Call] = []

        async def on_queue(queue: str, v: dict[str, str]) -> QueueEnd:
            call = self.pbx.inject_call(replace(
                spec, at=self.pbx.now, hotline=v.get("HOTLINE", spec.hotline),
                category=v.get("CATEGORY", spec.category),
                ivr_path=v.get("IVR_PATH", spec.ivr_path),
                queue=queue if queue in self.pbx.queues else spec.queue), reserved=res)
            call.watched = True
            joined.append(call)
            fut: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
            self._queue_waiters[call] = fut
            self.flush()
            self.reschedule()
            how, member = await fut
            if how == "agent":
                return QueueEnd(0, {"MEMBERINTERFACE": member},
                                self.pbx.citizen.keys_for("survey"))
            return QueueEnd(-1, {}, [])

        try:
            out = await run_agi(self.agi_url, headers, keys, on_queue=on_queue)
        except (TimeoutError, OSError, ValueError) as exc:
            log.warning("pbx_sim.agi_failed", error=str(exc), caller=mask_number(spec.number))
            if not joined:
                self.pbx.inject_call(replace(spec, at=self.pbx.now), reserved=res)
        else:
            if out.queue is None:
                log.info("pbx_sim.ivr_left", caller=mask_number(spec.number))
                return
        self.flush()
        self.reschedule()

    def _tick(self) -> None:
        self._timer = None
        behind = self.sync()
        self.service()
        self.flush()
        if behind:  # let the sockets drain and actions in, then go on at once
            loop = asyncio.get_running_loop()
            self._timer_at = loop.time()
            self._timer = loop.call_soon(self._tick)
        else:
            self.reschedule()

    def reschedule(self) -> None:
        """Arm the timer for the core's next event (at most every ``tick`` seconds)."""
        loop = asyncio.get_running_loop()
        nxt = self.pbx.next_event_time()
        delay = 1.0 if nxt is None else min(1.0, max(self.tick, (nxt - self.virtual_now())
                                                     / self.speed))
        at = loop.time() + delay
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._tick)


# --------------------------------------------------------------------------- entry points


def build_pbx(*, seed: int, agents: int, queues: Sequence[QueueConfig | str] | None = None,
              rate: float | None = None, scenario: str | Path | None = None,
              start_time: float | None = None, start_hour: float = 9.5,
              peak_calls_per_hour: float = 120.0,
              channelvars: Sequence[str] = ("HOTLINE", "IVR_PATH", "CATEGORY"),
              hold_arrivals: bool = False) -> Pbx:
    """A Pbx with random (or constant-rate, or scripted) traffic, ready to advance."""
    qcfgs = tuple(q if isinstance(q, QueueConfig) else QueueConfig(name=q)
                  for q in (queues or [QueueConfig()]))
    t0 = time.time() if start_time is None else start_time
    traffic: CallSource
    if scenario is not None:
        traffic = ScriptedTraffic(load_scenario(scenario), origin=t0 + 1.0)
    else:
        traffic = RandomTraffic(TrafficConfig(rate=rate, start_hour=start_hour,
                                              peak_calls_per_hour=peak_calls_per_hour),
                                seed=seed, origin=t0)
    config = PbxConfig(queues=qcfgs, agents=agents, channelvars=tuple(channelvars),
                       agent_breaks=scenario is None)
    return Pbx(config, traffic, start_time=t0, seed=seed, hold_arrivals=hold_arrivals)


def pregenerate(pbx: Pbx, seconds: float, step: float = 1.0) -> list[Frame]:
    """Run the core flat out for ``seconds`` of PBX time and return every frame (benchmarks)."""
    out: list[Frame] = []
    end = pbx.now + seconds
    t = pbx.now
    while t < end:
        t = min(end, t + step)
        out.extend(pbx.advance(t))
    return out


async def run_pbx_sim(host: str, port: int, *, seed: int, speed: float, agents: int,
                      queues: Sequence[QueueConfig | str] | None = None,
                      users: Mapping[str, str], rate: float | None = None,
                      scenario: str | Path | None = None, start_hour: float = 9.5,
                      peak_calls_per_hour: float = 120.0,
                      ready: Callable[[PbxSimServer], None] | None = None,
                      agi_url: str | None = None,
                      recordings_root: str | Path | None = None) -> None:
    """Serve a simulated Asterisk on ``host:port`` until cancelled."""
    pbx = build_pbx(seed=seed, agents=agents, queues=queues, rate=rate, scenario=scenario,
                    start_hour=start_hour, peak_calls_per_hour=peak_calls_per_hour,
                    hold_arrivals=agi_url is not None)
    server = PbxSimServer(pbx, host=host, port=port, users=users, speed=speed, agi_url=agi_url,
                          recordings_root=recordings_root)
    await server.start()
    user, secret = next(iter(users.items()))
    print(f"pbx-sim: AMI on {host}:{server.port} user {user!r} secret {secret!r} "
          f"({agents} agents, queues {', '.join(pbx.queues)}, speed {speed:g}x, seed {seed})",
          flush=True)
    log.info("pbx_sim.listening", host=host, port=server.port, agents=agents, speed=speed)
    if ready is not None:
        ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``callcenter pbx-sim`` options."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5038)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--speed", type=float, default=1.0, help="PBX seconds per second")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--rate", type=float, default=None,
                        help="constant calls per second instead of the daily profile")
    parser.add_argument("--peak", type=float, default=120.0,
                        help="calls per hour at the daily peak (default 120)")
    parser.add_argument("--start-hour", type=float, default=9.5,
                        help="time of day the simulation starts at (default 9.5 = 09:30)")
    parser.add_argument("--queue", action="append", dest="queues", default=None,
                        help="queue name (repeat for several; default hotline)")
    parser.add_argument("--scenario", default=None, help="scenario.json to replay")
    parser.add_argument("--username", default="hotline")
    parser.add_argument("--secret", default="hotline")
    parser.add_argument("--agi-url", default=None,
                        help="run each caller through this FastAGI script first, "
                             "e.g. agi://127.0.0.1:4573/hotline")
    parser.add_argument("--recordings-root", default=None,
                        help="write a tone WAV here for every MixMonitor that stops")


async def main_from_args(args: argparse.Namespace) -> None:
    """Run the simulator from parsed ``add_arguments`` options."""
    await run_pbx_sim(args.host, args.port, seed=args.seed, speed=args.speed,
                      agents=args.agents, queues=args.queues,
                      users={args.username: args.secret}, rate=args.rate,
                      scenario=args.scenario, start_hour=args.start_hour,
                      peak_calls_per_hour=args.peak, agi_url=args.agi_url,
                      recordings_root=getattr(args, "recordings_root", None))


__all__ = [
    "ALL_EVENTS", "EVENT_FLAGS", "AgiOutcome", "AgiRun", "AmiSession", "CitizenCall", "Frame",
    "Pbx", "PbxConfig", "PbxSimServer", "QueueConfig", "QueueEnd", "Recording", "Reservation",
    "SpyCall", "add_arguments", "build_pbx", "event_mask", "frame_dict", "main_from_args",
    "mask_number", "parse_frame", "pregenerate", "run_agi", "run_pbx_sim",
]
