"""The simulator's configuration and model objects: queues, members, channels, calls,
attempts and the outbound/ChanSpy/recording records the core keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog

from callcenter.pbx.sim.wire import (
    IDLE,
    INUSE,
    NOT_INUSE,
    SPY_RING,
    SPY_WAIT,
    STATE_DESC,
    TALKING,
    UNKNOWN,
)
from callcenter.pbx.traffic import (
    CallSpec,
)

log = structlog.get_logger(__name__)


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
    #: The operators' members watch ``Custom:agent<ext>`` (``StateInterface``) and their
    #: phones set it: RINGING when rung, INUSE on answering, NOT_INUSE when down, so each
    #: ring shows ``QueueMemberStatus`` 6, then 2 or 1, as the Asterisk of traces g and j
    #: did (its README: "the simulated phone sets RINGING → INUSE → NOT_INUSE").  Off, a
    #: member watches its own Local interface, as in trace a: no 6, and no status at all
    #: for a ring that ends unanswered.  A member added by ``QueueAdd`` with a ``Custom:``
    #: StateInterface follows its phone the same way while this is on.
    custom_states: bool = False

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
        "wrapuptime",
    )

    def __init__(self, queue: Queue, name: str, interface: str, state_interface: str,
                 penalty: int, login_time: int, phone: Phone, wrapuptime: int = 0) -> None:
        self.queue, self.name, self.interface = queue, name, interface
        self.state_interface, self.penalty, self.login_time = state_interface, penalty, login_time
        self.calls = self.last_call = self.last_pause = self.qpos = 0
        self.in_call = self.paused = self.removed = False
        self.reason = ""
        self.phone = phone
        self.custom: dict[str, int] = {}
        self.custom_state = state_interface.startswith("Custom:")
        self.wrapuptime = wrapuptime  # the member's own (QueueAdd Wrapuptime); 0 = the queue's

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
    (TALKING_CALLER, "redirect"): DIALPLAN,  # BlindTransfer, the console's Redirect
    (TALKING_CALLER, "leave"): AFTER,  # Queue(...,c): the operator left, the survey goes on
    (AFTER, "hangup"): GONE,
    (AFTER, "redirect"): DIALPLAN,
    (AFTER, "join"): WAITING,  # the dialplan goes on into the next queue (overflow)
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
        "joined_to",
        "leg_no",
        "member",
        "orig_pos",
        "pending",
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
        self.leg_no = 0  # answered visits so far (a timer of an earlier one is stale)
        self.pending: list[Leg] = []  # answered visits whose AgentComplete is still to come
        self.joined_to: Call | None = None  # an attended transfer's consultation leg: the caller

    c1: Channel
    c2: Channel


class Leg:
    """An answered queue visit the caller has moved on from (the console's ``Redirect``,
    the operator's ``*`` disconnect) whose AgentComplete app_queue sends only when the
    caller's channel finally hangs up (``queue_stasis_data`` of app_queue.c)."""

    __slots__ = ("bare", "connect_int", "hold", "member", "orig_pos", "queue")

    def __init__(self, call: Call, bare: bool) -> None:
        assert call.member is not None
        self.queue, self.member, self.hold = call.queue, call.member, call.hold
        self.connect_int, self.orig_pos = call.connect_int, call.orig_pos
        self.bare = bare  # sent without the caller's channel fields (as the trace's c30)


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
