"""Pure call-center state: calls, queues and agents, fed typed events.

Theory of operation
-------------------
:class:`CallCenter` is the one place that knows what is happening right now.  It
is fed :mod:`acd.events` in AMI order by a single consumer and returns a list of
:class:`Change` objects saying what moved; the edges (database, websocket push,
alerts) act on those changes.  It never reads the clock: every event carries its
own ``at`` and :meth:`CallCenter.advance` lets timers (the end of wrap-up) fire.

A record is kept per **queue visit**, not per channel: one channel (one
``Uniqueid``) may visit several queues (blind transfer, ``Redirect``, queue
timeout then overflow, re-entry), and each visit is offered, answered,
abandoned or exited in its own queue.  The first visit's key (``visit_id``) is
the ``Uniqueid``; later ones are ``<Uniqueid>#<n>`` and name the visit before
them (``previous``), so the call as a whole keeps its path.

The end of a visit follows app_queue (``update_status``/``update_queue``): it
is counted completed at the first of (a) ``AgentComplete`` and (b) the
member's device going not-in-use (``QueueMemberStatus`` ``Status: 1``) while
connected to it.  After a ``Redirect`` or the ``*`` disconnect with
``Queue(...,c)``, (b) comes first and the visit's ``AgentComplete`` arrives
only when the caller leaves the dialplan - maybe while the same operator is on
the next call.  An ``AgentComplete`` is therefore matched to its own visit by
the caller's ``Uniqueid`` first, and by ``(queue, interface)`` only when it
lacks the caller's fields (AMI-NOTES.md); a late or duplicate one confirms the
visit it belongs to and never ends another.  The talk time counted (Asterisk's
smoothed ``TalkTime``, the operator's handle time) ends when the operator left.
Wrap-up is the member's own ``Wrapuptime`` when it has one, else the queue's.

Agents follow :data:`AGENT_TRANSITIONS`, a literal table.  Pausing is per queue
in Asterisk; an agent counts as paused when paused in every queue they are in.
A pause that arrives while ringing or talking is remembered (``paused``) and
takes effect when the call ends, as in app_queue.  An event that would make an
illegal transition raises :class:`IllegalTransition` inside the machine; the
centre logs it as an anomaly and leaves the agent unchanged.

After every (re)connect the link feeds a :class:`~acd.events.Resync`: the
PBX's own picture (members, waiting callers, live channels, queue counters).
Calls we lost sight of are settled from it, and Asterisk's ``Completed`` /
``Abandoned`` counters are compared with what we observed since the previous
resync, so that calls that began and ended while the link was down are still
counted, exactly once (such records are marked ``estimated``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from acd import events as ev
from acd import queue_log

# --------------------------------------------------------------------------- agents


class AgentState(StrEnum):
    LOGGED_OUT = "logged_out"
    READY = "ready"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


S = AgentState

#: (state, step) -> next state.  Anything not listed is illegal.
AGENT_TRANSITIONS: dict[tuple[AgentState, str], AgentState] = {
    (S.LOGGED_OUT, "login"): S.READY,
    (S.LOGGED_OUT, "login_paused"): S.PAUSED,
    (S.READY, "ring"): S.RINGING,
    (S.READY, "pause"): S.PAUSED,
    (S.READY, "unpause"): S.READY,
    (S.READY, "logout"): S.LOGGED_OUT,
    (S.RINGING, "answer"): S.ON_CALL,
    (S.RINGING, "ring_end"): S.READY,
    (S.RINGING, "ring_end_paused"): S.PAUSED,
    (S.RINGING, "pause"): S.RINGING,  # the phone keeps ringing; pause applies after
    (S.RINGING, "unpause"): S.RINGING,
    (S.RINGING, "logout"): S.LOGGED_OUT,
    (S.ON_CALL, "hangup"): S.READY,
    (S.ON_CALL, "hangup_wrap"): S.WRAP_UP,
    (S.ON_CALL, "hangup_paused"): S.PAUSED,
    (S.ON_CALL, "hangup_logged_out"): S.LOGGED_OUT,
    (S.ON_CALL, "pause"): S.ON_CALL,  # takes effect at hang-up
    (S.ON_CALL, "unpause"): S.ON_CALL,
    (S.ON_CALL, "logout"): S.ON_CALL,  # removed from the queue mid-call: the call goes on
    (S.WRAP_UP, "wrap_end"): S.READY,
    (S.WRAP_UP, "ring"): S.RINGING,
    (S.WRAP_UP, "pause"): S.PAUSED,
    (S.WRAP_UP, "unpause"): S.WRAP_UP,
    (S.WRAP_UP, "logout"): S.LOGGED_OUT,
    (S.PAUSED, "pause"): S.PAUSED,  # reason changed
    (S.PAUSED, "unpause"): S.READY,
    (S.PAUSED, "ring"): S.RINGING,  # paused in one queue, rung from another
    (S.PAUSED, "logout"): S.LOGGED_OUT,
}


#: QueueMemberStatus ``Status`` of a device that is not in use (AST_DEVICE_NOT_INUSE).
DEVICE_NOT_INUSE = 1
#: Seconds after a QueueCallerLeave with a member still ringing for that caller before
#: the ring counts as over: an answered caller's AgentConnect follows its leave in the
#: same millisecond in traces g and j.  A member macro or gosub, or an AGI of Queue()'s,
#: runs between the two (app_queue's try_calling): one longer than this shows the
#: operator a ring end and a new ring before the answer.
LEFT_RING_GRACE_S = 2.0


#: Events that come from the PBX itself (not the service's own link, resync or clock).
_PBX_EVENTS = frozenset({
    ev.CallerJoined, ev.CallerLeft, ev.CallerAbandoned, ev.AgentRung, ev.AgentAnswered,
    ev.AgentCompleted, ev.AgentRingNoAnswer, ev.AgentDumped, ev.MemberAdded, ev.MemberRemoved,
    ev.MemberPaused, ev.MemberStatus, ev.ChannelHungup, ev.PbxBooted, ev.CallHeld,
    ev.CallUnheld, ev.AttendedTransferred})

#: Seconds a queue_log time (whole seconds, Asterisk's clock) may differ from the time an
#: event was read (clock skew, a busy link): the same channel rarely visits one queue twice
#: that quickly.
LOG_SLACK_S = 10
#: How far before the last event seen a gap's rebuild looks for visits never seen.
GAP_LOOKBACK_S = 30

#: Seconds two FullyBooted answers may disagree on the boot time without a restart
#: (Uptime is whole seconds; the answer takes a moment to arrive).
BOOT_SLACK_S = 3


class IllegalTransition(ValueError):
    def __init__(self, agent: str, state: AgentState, step: str) -> None:
        super().__init__(f"agent {agent}: no step {step!r} from state {state.value!r}")
        self.agent, self.state, self.step = agent, state, step


@dataclass(slots=True)
class Agent:
    """One operator's device (queue member interface) and its time in each state."""

    interface: str
    name: str
    state: AgentState = S.LOGGED_OUT
    pbx: str = ""  # the PBX this member is on ("" with a single, unnamed PBX)
    since: float = 0.0
    reason: str = ""  # pause reason while paused
    paused: bool = False  # Asterisk's pause flag (may be set while on a call)
    paused_since: float | None = None
    paused_s: float = 0.0
    time_in: dict[str, float] = field(default_factory=dict)
    memberships: dict[str, ev.MemberInfo] = field(default_factory=dict)
    call: str | None = None  # uniqueid ringing or connected
    last_call: str | None = None
    last_visit: str | None = None  # visit_id of the call whose wrap-up runs or ran last
    wrap_until: float | None = None
    answered: int = 0
    ring_no_answer: int = 0
    talk_s: float = 0.0
    hold_s: float = 0.0  # time its calls spent on hold (Hold ... Unhold), inside talk_s
    calls_taken: int = 0  # as Asterisk's CallsTaken: completed calls since the last login

    def step(self, step: str) -> AgentState:
        """The state ``step`` leads to, or :class:`IllegalTransition`."""
        try:
            return AGENT_TRANSITIONS[(self.state, step)]
        except KeyError:
            raise IllegalTransition(self.name, self.state, step) from None

    def time_in_state(self, at: float) -> float:
        return max(0.0, at - self.since)

    def paused_total(self, at: float) -> float:
        live = at - self.paused_since if self.paused_since is not None else 0.0
        return self.paused_s + max(0.0, live)

    def snapshot(self, at: float) -> dict[str, object]:
        return {
            "interface": self.interface,
            "name": self.name,
            "pbx": self.pbx,
            "state": self.state.value,
            "reason": self.reason,
            "paused": self.paused,
            "since": self.since,
            "in_state_s": round(self.time_in_state(at), 1),
            "queues": sorted(self.memberships),
            "answered": self.answered,
            "ring_no_answer": self.ring_no_answer,
            "paused_s": round(self.paused_total(at), 1),
            "talk_s": self.talk_s,
            "calls_taken": self.calls_taken,
            "call": self.call,
        }


# --------------------------------------------------------------------------- calls


class Outcome(StrEnum):
    WAITING = "waiting"
    ANSWERED = "answered"  # connected, still talking
    COMPLETED = "completed"  # connected and ended (Asterisk's callscompleted)
    ABANDONED = "abandoned"  # Asterisk's callsabandoned
    EXITED = "exited"  # left the queue unanswered without abandoning (key, transfer)
    INTERRUPTED = "interrupted"  # answered, then the PBX died: never completed (queue_log: no end)
    DROPPED = "dropped"  # waiting when the PBX died: neither answered nor abandoned


#: Outcomes of a visit that is over (a record that will not change again).
FINAL = frozenset({Outcome.COMPLETED, Outcome.ABANDONED, Outcome.EXITED, Outcome.INTERRUPTED,
                   Outcome.DROPPED})


@dataclass(slots=True)
class Call:
    """One caller's visit to one queue: the per-call record all metrics come from."""

    uniqueid: str
    queue: str
    joined_at: float
    caller_num: str = ""
    caller_name: str = ""
    hotline: str = ""
    category: str = ""
    ivr_path: str = ""
    channel: str = ""
    position: int = 0
    outcome: Outcome = Outcome.WAITING
    left_at: float | None = None
    answered_at: float | None = None
    hold_time: int | None = None  # Asterisk's HoldTime at connection / abandon
    agent: str = ""  # member name
    interface: str = ""
    ended_at: float | None = None
    talk_time: int | None = None
    wrap_s: float = 0.0
    on_hold_s: float = 0.0  # Hold ... Unhold while connected; part of talk_time
    held_since: float | None = None  # on hold now, since
    linkedid: str = ""  # the call's oldest channel (not stored: Hold / Unhold find it)
    rings: int = 0
    ring_no_answer: int = 0
    estimated: bool = False  # settled from a resync, not seen event by event
    visit_id: str = ""  # the record's key: the Uniqueid for a first visit, else "<uid>#<n>"
    visit: int = 1  # 1 for the channel's first queue, 2 for the next...
    previous: str = ""  # visit_id of the channel's visit before this one
    end_reason: str = ""  # AgentComplete Reason (agent, caller, transfer) or device_idle...
    settled: str = ""  # how a visit we lost sight of was closed: queue_log, counters,
    #                    pbx_restart, service_restart ("" when seen event by event)
    pbx: str = ""  # the PBX the call is on: its Uniqueid is only unique there

    def __post_init__(self) -> None:
        if not self.visit_id:
            self.visit_id = self.uniqueid

    @property
    def key(self) -> str:
        """The channel's key across PBXs: its Uniqueid on the home PBX, else
        ``<pbx>:<Uniqueid>`` (the visit key without its ``#<n>``)."""
        return self.visit_id.partition("#")[0]

    def to_row(self) -> dict[str, object]:
        """The database row (``uniqueid`` holds the visit key; see migration 0005)."""
        return {
            "uniqueid": self.visit_id,
            "channel_uniqueid": self.uniqueid,
            "visit": self.visit,
            "previous_visit": self.previous,
            "end_reason": self.end_reason,
            "settled": self.settled,
            "queue": self.queue,
            "joined_at": self.joined_at,
            "caller_num": self.caller_num,
            "caller_name": self.caller_name,
            "hotline": self.hotline,
            "category": self.category,
            "ivr_path": self.ivr_path,
            "outcome": self.outcome.value,
            "left_at": self.left_at,
            "answered_at": self.answered_at,
            "hold_time": self.hold_time,
            "agent": self.agent,
            "interface": self.interface,
            "ended_at": self.ended_at,
            "talk_time": self.talk_time,
            "wrap_s": self.wrap_s,
            "on_hold_s": self.on_hold_s,
            "rings": self.rings,
            "ring_no_answer": self.ring_no_answer,
            "estimated": self.estimated,
            "pbx": self.pbx,
        }


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class CallChanged:
    call: Call
    what: str  # joined | answered | completed | abandoned | exited | wrap_up | resync
    #            | confirmed | held | unheld | transferred ...


@dataclass(frozen=True, slots=True)
class AgentChanged:
    agent: Agent
    at: float
    old: AgentState
    new: AgentState
    step: str
    reason: str
    cause: str  # the event or action that moved it


@dataclass(frozen=True, slots=True)
class QueueChanged:
    queue: str


@dataclass(frozen=True, slots=True)
class LinkStateChanged:
    up: bool
    reason: str
    at: float
    pbx: str = ""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something the PBX said that does not fit: logged, never fatal."""

    at: float
    what: str


@dataclass(frozen=True, slots=True)
class PbxRestarted:
    """Asterisk restarted (FullyBooted uptime) or its queue counters were reset."""

    at: float
    booted_at: float | None  # when the new process booted; None when only a reset is known
    what: str


@dataclass(frozen=True, slots=True)
class ResyncWanted:
    """The PBX named a member or caller the state does not know, or said it is booted.

    ``full``: the PBX (re)booted; the edge asks for its full picture again (QueueStatus +
    CoreShowChannels, a :class:`~acd.events.Resync`).  Otherwise the edge asks for a
    QueueStatus only and feeds its answer as a :class:`~acd.events.Refresh`, which only
    adds what the state does not know (issue 11, item 5)."""

    at: float
    why: str
    full: bool = False


Change = (CallChanged | AgentChanged | QueueChanged | LinkStateChanged | Anomaly
          | PbxRestarted | ResyncWanted)


@dataclass(slots=True)
class Counters:
    """What we observed, mirroring Asterisk's in-memory queue counters."""

    completed: int = 0
    completed_in_sl: int = 0
    abandoned: int = 0
    abandoned_in_sl: int = 0


_COUNTER_FIELDS = ("completed", "completed_in_sl", "abandoned", "abandoned_in_sl")


def _copy(c: Counters) -> Counters:
    return Counters(c.completed, c.completed_in_sl, c.abandoned, c.abandoned_in_sl)


@dataclass(slots=True)
class QueueConfig:
    servicelevel: int = 15
    wrapuptime: int = 0


# --------------------------------------------------------------------------- the centre


def call_key_prefix(pbx: str, home: str) -> str:
    """What starts the record keys of calls on ``pbx`` (migration 0013): nothing on the
    home PBX (or when no PBX is named), so a single PBX's keys are its bare Uniqueids;
    ``"<pbx>:"`` on another, since each Asterisk numbers its own Uniqueids.  The one
    rule for :class:`CallCenter`'s ``key_prefix`` and :meth:`ivr.fastagi.AgiPbxs.call_key`."""
    return "" if not pbx or pbx == home else f"{pbx}:"


class CallCenter:
    """Calls, queues and agents; ``apply(event) -> changes``.  No IO, no clock."""

    def __init__(
        self,
        queues: dict[str, QueueConfig] | None = None,
        default: QueueConfig | None = None,
        keep_finished: int = 5000,
        *,
        pbx: str = "",
        key_prefix: str = "",
    ) -> None:
        #: The PBX this centre models (one CallCenter per Asterisk: Uniqueids, interfaces,
        #: counters and boot times are only meaningful per PBX).  Every Call and Agent
        #: made here carries it.  ``key_prefix`` starts every visit key (``visit_id``),
        #: e.g. ``"pbx2:"``, so records of several PBXs never share a key; the home PBX
        #: has none, so a single PBX's keys are the bare Uniqueids they always were.
        self.pbx = pbx
        self.key_prefix = key_prefix
        self.queue_config = dict(queues or {})
        self.default_config = default or QueueConfig()
        self.calls: dict[str, Call] = {}  # each channel's latest visit, by uniqueid
        self.visits: dict[str, Call] = {}  # every live and recently finished visit, by visit_id
        # (queue, interface) -> visits counted completed when the member's device went
        # idle, whose AgentComplete has not come yet (Redirect, '*' then the survey)
        self._unconfirmed: dict[tuple[str, str], list[str]] = {}
        self.booted_at: float | None = None  # the PBX process's boot time (FullyBooted)
        self.reloaded_at: float | None = None
        self._restart_pending: str = ""  # why the next resync must treat the PBX as new
        self._at_down: dict[str, Counters] = {}  # our counters when the link went down
        self._service_restarted = False  # open visits came back from the database
        self._last_pbx_event = float("inf")  # time of the last event the PBX sent
        self.last_restart: PbxRestarted | None = None  # the latest restart or reset seen
        self.finished: list[Call] = []  # finished calls not yet collected by the caller
        #: Visit keys the prunes of :meth:`collect_finished` let go of, not yet taken by
        #: the caller (no event can change those visits any more: the figures' books
        #: seal their records).
        self.let_go: list[str] = []
        #: uniqueid -> its last visit number, of channels whose visits were let go of
        #: (the newest 4 x keep_finished): a channel back in a queue after that gets the
        #: next visit key, not its first one again (the figures' books have sealed that
        #: key: a visit under it would count twice, and its row would overwrite the first).
        self._gone: dict[str, int] = {}
        self.agents: dict[str, Agent] = {}  # by interface
        #: member name -> the interfaces of that name, each once (agents_named)
        self._named: dict[str, list[str]] = {}
        self.waiting: dict[str, dict[str, Call]] = {}  # queue -> uniqueid -> call (join order)
        self.connected: dict[tuple[str, str], str] = {}  # (queue, interface) -> visit_id
        self.observed: dict[str, Counters] = {}
        self.link_up = False
        self.link_reason = "not connected yet"
        self.now = 0.0
        self.keep_finished = keep_finished
        self._baseline: dict[str, tuple[ev.QueueCounters, Counters]] = {}
        self._down_at: float | None = None
        self._checkpoint: dict[str, Counters] | None = None
        self._before_resync: dict[str, Counters] = {}
        self._synthetic = 0
        # Indexes so that one event does not visit every agent (keyed by id(agent)):
        self._ringing: dict[int, Agent] = {}  # agents in RINGING (an answer stops the others)
        self._wrapping: dict[int, Agent] = {}  # agents with a wrap-up timer set
        self._wrap_due: float | None = None  # no timer is due before this (may be early)
        #: uniqueid -> (when it left, the agents ringing for it then): callers who left
        #: the queue unanswered (QueueCallerLeave) while members' phones rang for them;
        #: unless AgentConnect follows within LEFT_RING_GRACE_S, those rings are over
        #: (see advance(); in the order they left, so the first not due ends the look).
        self._left_ringing: dict[str, tuple[float, list[Agent]]] = {}
        self._linked: dict[str, str] = {}  # Linkedid -> the queue caller's Uniqueid
        # Between RefreshAsked and Refresh: the interfaces and Uniqueids events named
        # (the Refresh leaves them to those events); None when no refresh is asked.
        self._touched: tuple[set[str], set[str]] | None = None
        self._handlers = {
            ev.CallerJoined: self._caller_joined,
            ev.CallerLeft: self._caller_left,
            ev.CallerAbandoned: self._caller_abandoned,
            ev.AgentRung: self._agent_rung,
            ev.AgentAnswered: self._agent_answered,
            ev.AgentCompleted: self._agent_completed,
            ev.AgentRingNoAnswer: self._ring_no_answer,
            ev.AgentDumped: self._agent_dumped,
            ev.MemberAdded: self._member_added,
            ev.MemberRemoved: self._member_removed,
            ev.MemberPaused: self._member_paused,
            ev.MemberStatus: self._member_status,
            ev.ChannelHungup: self._channel_hungup,
            ev.CallHeld: self._call_held,
            ev.CallUnheld: self._call_unheld,
            ev.AttendedTransferred: self._attended_transferred,
            ev.LinkChanged: self._link_changed,
            ev.Resync: self._resync,
            ev.Checkpoint: self._take_checkpoint,
            ev.RefreshAsked: self._refresh_asked,
            ev.Refresh: self._refresh,
            ev.PbxBooted: self._pbx_booted,
            ev.Tick: lambda e: [],
        }

    # ---- public

    def config(self, queue: str) -> QueueConfig:
        return self.queue_config.get(queue, self.default_config)

    def apply(self, event: ev.Event) -> list[Change]:
        """Apply one event; return what changed.  Timers due before it fire first."""
        changes = self.advance(event.at)
        if type(event) in _PBX_EVENTS:
            self._last_pbx_event = event.at
            if self._touched is not None:
                self._note_touched(event)
        handler = self._handlers.get(type(event))
        if handler is not None:
            changes.extend(handler(event))
        return changes

    def advance(self, at: float) -> list[Change]:
        """Move the clock to ``at`` and fire the timers that are due: wrap-ups over, and
        rings for callers who left the queue unanswered."""
        self.now = max(self.now, at)
        changes = self._left_rings_over() if self._left_ringing else []
        if self._wrap_due is None or self._wrap_due > self.now:
            return changes  # no wrap-up timer is due (the earliest is kept, not searched for)
        due = [a for a in self._wrapping.values()
               if a.wrap_until is not None and a.wrap_until <= self.now]
        if len(due) > 1:  # in the agents' own order, as a scan of all agents would give
            rank = {id(a): i for i, a in enumerate(self.agents.values())}
            due.sort(key=lambda a: rank.get(id(a), 0))
        for agent in due:
            end = agent.wrap_until
            assert end is not None
            agent.wrap_until = None
            self._wrapping.pop(id(agent), None)
            if agent.state is S.WRAP_UP:
                changes += self._move(agent, "wrap_end", end, "wrap-up over")
        self._wrap_due = min((a.wrap_until for a in self._wrapping.values()
                              if a.wrap_until is not None), default=None)
        return changes

    def _left_rings_over(self) -> list[Change]:
        """The rings for callers who left the queue unanswered (an exit key; a queue's
        timeout comes as QueueCallerAbandon, as trace g shows) more than
        :data:`LEFT_RING_GRACE_S` ago: over, at the time the caller left, for the agents
        that rang for it then and were not rung again since (a caller back in a queue
        with the same Uniqueid).  QueueCallerLeave names no member and comes before AgentConnect for
        an answered caller too (DialEnd ANSWER, QueueCallerLeave, AgentConnect in the same
        millisecond in traces g and j), so only a leave that no AgentConnect followed is
        a ring's end.  Where the member's StateInterface rings (traces g and j) its
        QueueMemberStatus 1 ends the ring at once (:meth:`_member_status`); a Local
        channel's own state (trace a) says nothing of a ring, so this is its only end."""
        changes: list[Change] = []
        while self._left_ringing:
            uid, (left_at, agents) = next(iter(self._left_ringing.items()))
            if left_at + LEFT_RING_GRACE_S > self.now:
                break
            del self._left_ringing[uid]
            for agent in agents:  # still ringing for it, and not rung again since it left
                if (agent.state is S.RINGING and agent.call == uid
                        and agent.since <= left_at):
                    agent.call = None
                    changes += self._end_ring(agent, left_at, "caller gone")
        return changes

    def waiting_in(self, queue: str) -> list[Call]:
        return list(self.waiting.get(queue, {}).values())

    def longest_wait(self, queue: str | None, at: float) -> float:
        queues = [queue] if queue else list(self.waiting)
        starts = [c.joined_at for q in queues for c in self.waiting.get(q, {}).values()]
        return max(0.0, at - min(starts)) if starts else 0.0

    def queues(self) -> list[str]:
        names = set(self.queue_config) | set(self.waiting) | set(self.observed)
        for agent in self.agents.values():
            names.update(agent.memberships)
        return sorted(names)

    def agent_by_name(self, name: str) -> Agent | None:
        """The first member (in the order they appeared) named ``name``, or None."""
        found = self.agents_named(name)
        return found[0] if found else None

    def agents_named(self, name: str) -> list[Agent]:
        """Every member named ``name``, in the order they appeared.  By an index
        :meth:`_agent` keeps (each interface under its current name only): every
        operator screen asks this of every PBX its member is not on, once a second, and
        a scan made that O(members) each."""
        found = [self.agents[i] for i in self._named.get(name, ())]
        if len(found) > 1:
            order = {iface: n for n, iface in enumerate(self.agents)}
            found.sort(key=lambda a: order[a.interface])
        return found

    def collect_finished(self) -> list[Call]:
        """Hand over finished visits (for storage) and forget the old ones (their keys
        are added to :attr:`let_go`)."""
        done, self.finished = self.finished, []
        if len(self.visits) > self.keep_finished + self.keep_finished // 4:
            # (pruned at 1.25x, not 2x: the peak is what a long-running core's memory
            # settles at, and 10,000 visits a PBX took 24 minutes to reach in the bench)
            live = {vid: c for vid, c in self.visits.items() if c.outcome not in FINAL}
            live |= {vid: self.visits[vid] for vids in self._unconfirmed.values()
                     for vid in vids if vid in self.visits}
            # an operator's wrap-up adds to the visit it follows when it ends
            live |= {a.last_visit: self.visits[a.last_visit] for a in self._wrapping.values()
                     if a.last_visit and a.last_visit in self.visits}
            recent = [c for vid, c in self.visits.items() if vid not in live]
            # the last to end are kept (a long call just over, a channel's visit before the
            # queue it was transferred to), not the last to join
            recent.sort(key=lambda c: c.ended_at or c.left_at or c.joined_at)
            kept = recent[-self.keep_finished:]
            gone = recent[:len(recent) - len(kept)]
            self.let_go += [c.visit_id for c in gone]
            self.visits = live | {c.visit_id: c for c in kept}
            calls = {uid: c for uid, c in self.calls.items()
                     if self.visits.get(c.visit_id) is c}
            for c in gone:
                if c.uniqueid not in calls:
                    # (re-inserted, so the newest are last; the highest visit number kept)
                    self._gone[c.uniqueid] = max(c.visit, self._gone.pop(c.uniqueid, 0))
            for uid in list(self._gone)[:max(0, len(self._gone) - 4 * self.keep_finished)]:
                del self._gone[uid]
            self.calls = calls
        return done

    def restore(self, calls: Iterable[Call], last_seen: float) -> None:
        """Visits a previous run of the service stored (read back from the database): the
        open ones are held as they were until the first resync settles them; the recent
        finished ones are only known, so that a rebuild from queue_log does not make
        them again.  The gap runs from ``last_seen``, the latest moment the stored
        records speak of."""
        for call in calls:
            self.visits[call.visit_id] = call
            latest = self.calls.get(call.uniqueid)
            if latest is None or latest.visit < call.visit:
                self.calls[call.uniqueid] = call
            if call.outcome is Outcome.WAITING:
                self.waiting.setdefault(call.queue, {})[call.uniqueid] = call
            elif call.outcome is Outcome.ANSWERED and call.interface:
                self.connected[(call.queue, call.interface)] = call.visit_id
        self._down_at = last_seen
        self._at_down = {}
        self._service_restarted = True

    def _unseen_id(self, at: float) -> str:
        """A key for a call known only from a count or a lone event (unique across runs)."""
        self._synthetic += 1
        return f"unseen-{int(at)}-{self._synthetic}"

    def visits_of(self, uniqueid: str) -> list[Call]:
        """A channel's queue visits still held in memory, first to last."""
        last = self.calls.get(uniqueid)
        out: list[Call] = []
        while last is not None and last.uniqueid == uniqueid:
            out.append(last)
            last = self.visits.get(last.previous) if last.previous else None
        return out[::-1]

    # ---- helpers

    def _agent(self, interface: str, name: str) -> Agent:
        agent = self.agents.get(interface)
        if agent is None:
            agent = Agent(interface=interface, name=name or interface, since=self.now,
                          pbx=self.pbx)
            self.agents[interface] = agent
            self._named.setdefault(agent.name, []).append(interface)
        elif name and agent.name != name:
            was = self._named[agent.name]
            was.remove(interface)
            if not was:
                del self._named[agent.name]
            agent.name = name
            self._named.setdefault(name, []).append(interface)
        return agent

    def _move(self, agent: Agent, step: str, at: float, cause: str) -> list[Change]:
        try:
            new = agent.step(step)
        except IllegalTransition as exc:
            return [Anomaly(at, str(exc))]
        return self._enter(agent, new, step, at, cause)

    def _enter(
        self, agent: Agent, new: AgentState, step: str, at: float, cause: str
    ) -> list[Change]:
        old = agent.state
        reason = agent.reason if new is S.PAUSED else ""
        if new is old and not (new is S.PAUSED and step == "pause"):
            return []  # e.g. paused while talking: the flag moved, the state did not
        agent.time_in[old.value] = agent.time_in.get(old.value, 0.0) + max(0.0, at - agent.since)
        changes: list[Change] = []
        if old is S.WRAP_UP and agent.last_visit:
            last = self.visits.get(agent.last_visit)
            if last is not None:  # wrap-up is part of the call's handle time: store it
                last.wrap_s += max(0.0, at - agent.since)
                changes.append(CallChanged(last, "wrap_up"))
        agent.state = new
        agent.since = at
        if new is S.RINGING:
            self._ringing[id(agent)] = agent
        else:
            self._ringing.pop(id(agent), None)
        if new is S.WRAP_UP:
            last = self.visits.get(agent.last_visit or "")
            wrap = self.wrapuptime(agent, last.queue) if last is not None else 0
            agent.wrap_until = at + wrap
            self._wrapping[id(agent)] = agent
            if self._wrap_due is None or agent.wrap_until < self._wrap_due:
                self._wrap_due = agent.wrap_until
        else:
            agent.wrap_until = None
            self._wrapping.pop(id(agent), None)
        changes.append(AgentChanged(agent, at, old, new, step, reason, cause))
        return changes

    def _set_pause(self, agent: Agent, paused: bool, reason: str, at: float) -> None:
        if paused and not agent.paused:
            agent.paused_since = at
        elif not paused and agent.paused and agent.paused_since is not None:
            agent.paused_s += max(0.0, at - agent.paused_since)
            agent.paused_since = None
        agent.paused = paused
        agent.reason = reason if paused else ""

    def _counters(self, queue: str) -> Counters:
        c = self.observed.get(queue)
        if c is None:
            c = self.observed[queue] = Counters()
        return c

    def _finish(self, call: Call) -> None:
        self.finished.append(call)
        if call.linkedid and self._linked.get(call.linkedid) == call.uniqueid:
            del self._linked[call.linkedid]

    def _unwait(self, call: Call) -> None:
        self.waiting.get(call.queue, {}).pop(call.uniqueid, None)

    def wrapuptime(self, agent: Agent, queue: str) -> int:
        """The member's own ``Wrapuptime`` when set (> 0), else the queue's (app_queue
        ``get_wrapuptime()``)."""
        member = agent.memberships.get(queue)
        if member is not None and member.wrapuptime > 0:
            return member.wrapuptime
        return self.config(queue).wrapuptime

    def _after_call_step(self, agent: Agent, queue: str) -> str:
        if not agent.memberships:
            return "hangup_logged_out"
        if agent.paused:
            return "hangup_paused"
        return "hangup_wrap" if self.wrapuptime(agent, queue) > 0 else "hangup"

    def _visit(self, uniqueid: str, queue: str) -> Call | None:
        """The channel's latest visit to ``queue`` still in memory."""
        call = self.calls.get(uniqueid)
        while call is not None and call.queue != queue:
            call = self.visits.get(call.previous) if call.previous else None
        return call if call is not None and call.uniqueid == uniqueid else None

    def _new_visit(self, uniqueid: str, queue: str, joined_at: float, **fields: object) -> Call:
        """A new record for the channel's next queue visit, linked to the one before."""
        before = self.calls.get(uniqueid)
        # the visit before: the one held, or one let go of (its number only)
        last = before.visit if before is not None else self._gone.pop(uniqueid, 0)
        if not last:
            call = Call(uniqueid=uniqueid, queue=queue, joined_at=joined_at, pbx=self.pbx,
                        visit_id=self.key_prefix + uniqueid)
        else:
            n = last + 1
            call = Call(uniqueid=uniqueid, queue=queue, joined_at=joined_at, pbx=self.pbx,
                        visit_id=f"{self.key_prefix}{uniqueid}#{n}", visit=n,
                        previous=before.visit_id if before is not None else
                        self.key_prefix + uniqueid + (f"#{last}" if last > 1 else ""))
        if before is not None:
            for name in ("caller_num", "caller_name", "hotline", "category", "ivr_path",
                         "channel"):
                setattr(call, name, getattr(before, name))
        for name, value in fields.items():
            if value not in ("", None):
                setattr(call, name, value)
        self.calls[uniqueid] = call
        self.visits[call.visit_id] = call
        return call

    # ---- queue callers

    def _caller_joined(self, e: ev.CallerJoined) -> list[Change]:
        known = self.calls.get(e.uniqueid)
        if known is not None and known.queue == e.queue and (
                known.outcome is Outcome.WAITING or self._from_log(known, e.at)
                or self._open_from_log(known)):
            return []  # already known (from a resync or queue_log): never count twice
        changes: list[Change] = []
        if known is not None and known.outcome is Outcome.WAITING:
            # It left its last queue without our seeing QueueCallerLeave.
            self._unwait(known)
            known.outcome, known.left_at, known.ended_at = Outcome.EXITED, e.at, e.at
            known.end_reason = "next_queue"
            self._finish(known)
            changes.append(CallChanged(known, "exited"))
        call = self._new_visit(
            e.uniqueid, e.queue, e.at, caller_num=e.caller_num, caller_name=e.caller_name,
            channel=e.channel, position=e.position, hotline=e.variables.get("HOTLINE", ""),
            category=e.variables.get("CATEGORY", ""), ivr_path=e.variables.get("IVR_PATH", ""),
        )
        self.waiting.setdefault(e.queue, {})[e.uniqueid] = call
        if e.linkedid and e.linkedid != e.uniqueid:
            call.linkedid = e.linkedid
            self._linked[e.linkedid] = e.uniqueid
        self._counters(e.queue)
        return changes + [CallChanged(call, "joined"), QueueChanged(e.queue)]

    def _caller_left(self, e: ev.CallerLeft) -> list[Change]:
        call = self._visit(e.uniqueid, e.queue)
        if call is None:
            return [Anomaly(e.at, f"QueueCallerLeave for unknown caller {e.uniqueid}"),
                    ResyncWanted(e.at, "QueueCallerLeave for a caller never seen")]
        self._unwait(call)
        if call.left_at is None:
            call.left_at = e.at
        if call.outcome is Outcome.WAITING:
            # Answered callers get AgentConnect right after; the rest exited.
            call.outcome = Outcome.EXITED
            if ringing := self._ringing_for(call.uniqueid):
                self._left_ringing.pop(call.uniqueid, None)  # (the newest last)
                self._left_ringing[call.uniqueid] = (e.at, ringing)
            return [CallChanged(call, "exited"), QueueChanged(e.queue)]
        return [QueueChanged(e.queue)]

    def _caller_abandoned(self, e: ev.CallerAbandoned) -> list[Change]:
        call = self._visit(e.uniqueid, e.queue)
        if call is not None and call.outcome is Outcome.ABANDONED:
            return []  # a duplicate
        if call is None or call.outcome in FINAL or call.outcome is Outcome.ANSWERED:
            call = self._new_visit(e.uniqueid, e.queue, e.at - e.hold_time)
            call.estimated = True
        self._unwait(call)
        call.outcome = Outcome.ABANDONED
        call.hold_time = e.hold_time
        call.left_at = call.left_at or e.at
        call.ended_at = e.at
        counters = self._counters(e.queue)
        counters.abandoned += 1
        if e.hold_time <= self.config(e.queue).servicelevel:
            counters.abandoned_in_sl += 1
        changes: list[Change] = [CallChanged(call, "abandoned"), QueueChanged(e.queue)]
        changes += self._stop_ringing_for(call, e.at)
        self._finish(call)
        return changes

    def _stop_ringing_for(self, call: Call, at: float) -> list[Change]:
        changes: list[Change] = []
        for agent in self._ringing_for(call.uniqueid):
            agent.call = None
            changes += self._end_ring(agent, at, "caller gone")
        return changes

    def _end_ring(self, agent: Agent, at: float, cause: str) -> list[Change]:
        """A ring over unanswered: back to ready, or to paused if the member is."""
        return self._move(agent, "ring_end_paused" if agent.paused else "ring_end", at, cause)

    def _ringing_for(self, uniqueid: str) -> list[Agent]:
        """The agents whose phone rings for this call, in the agents' order."""
        found = [a for a in self._ringing.values() if a.call == uniqueid]
        if len(found) > 1:
            order = {id(a): i for i, a in enumerate(self.agents.values())}
            found.sort(key=lambda a: order[id(a)])
        return found

    # ---- agents and calls

    def _agent_rung(self, e: ev.AgentRung) -> list[Change]:
        agent = self._agent(e.interface, e.member)
        call = self._visit(e.uniqueid, e.queue)
        unknown_caller: list[Change] = []
        if call is not None:
            call.rings += 1
        else:
            unknown_caller.append(ResyncWanted(e.at, "AgentCalled for a caller never seen"))
        before = agent.call
        if agent.state is not S.ON_CALL:  # (a ring while talking is an anomaly below)
            agent.call = e.uniqueid
        if agent.state is S.RINGING:
            earlier = self.calls.get(before) if before else None
            if before in (None, e.uniqueid) or (
                    earlier is not None and earlier.outcome is Outcome.WAITING):
                return unknown_caller  # (ringinuse=yes: rung for two waiting callers)
            # Rung for another call: the last ring ended unseen (its caller left the
            # queue, which stops the ringing with no event naming the member): end it,
            # so the screen pops the caller ringing now, not the one gone.
            return (unknown_caller
                    + self._end_ring(agent, e.at, "AgentCalled for another call")
                    + self._move(agent, "ring", e.at, "AgentCalled"))
        changes: list[Change] = unknown_caller
        if agent.state is S.LOGGED_OUT:  # rung before we saw them join (e.g. at connect)
            changes += self._move(agent, "login", e.at, "AgentCalled before membership")
            changes.append(ResyncWanted(e.at, f"AgentCalled for unknown member {e.member}"))
        return changes + self._move(agent, "ring", e.at, "AgentCalled")

    def _agent_answered(self, e: ev.AgentAnswered) -> list[Change]:
        self._left_ringing.pop(e.uniqueid, None)  # its leave was an answer
        call = self._visit(e.uniqueid, e.queue)
        changes: list[Change] = []
        if call is not None and call.outcome is not Outcome.WAITING and (
                self._from_log(call, e.at - e.hold_time) or self._open_from_log(call)
        ) and call.agent == e.member:
            return []  # queue_log already told this answer
        if call is None or call.outcome not in (Outcome.WAITING, Outcome.EXITED):
            # joined while we were not looking
            call = self._new_visit(e.uniqueid, e.queue, e.at - e.hold_time)
            call.estimated = True
            changes.append(ResyncWanted(e.at, "AgentConnect for a caller never seen"))
        self._unwait(call)
        call.outcome = Outcome.ANSWERED
        call.answered_at = e.at
        call.left_at = call.left_at or e.at
        call.hold_time = e.hold_time
        call.agent, call.interface = e.member, e.interface
        self.connected[(e.queue, e.interface)] = call.visit_id
        agent = self._agent(e.interface, e.member)
        agent.call = agent.last_call = e.uniqueid
        agent.last_visit = call.visit_id
        agent.answered += 1
        changes += [CallChanged(call, "answered"), QueueChanged(e.queue)]
        if agent.state is S.LOGGED_OUT:
            changes += self._move(agent, "login", e.at, "AgentConnect before membership")
            changes.append(ResyncWanted(e.at, f"AgentConnect for unknown member {e.member}"))
        if agent.state is not S.RINGING:  # a ring we missed: go through it
            changes += self._move(agent, "ring", e.at, "AgentConnect")
        changes += self._move(agent, "answer", e.at, "AgentConnect")
        # Other members rung for the same caller (ringall) stop ringing.
        for other in self._ringing_for(e.uniqueid):
            if other is agent:
                continue
            other.call = None
            changes += self._end_ring(other, e.at, "answered elsewhere")
        return changes

    def _completed_visit(self, e: ev.AgentCompleted) -> Call | None:
        """The visit an AgentComplete closes: the caller's Uniqueid first; queue +
        member only when the event lacks the caller's fields."""
        key = (e.queue, e.interface)
        if e.uniqueid:
            call = self._visit(e.uniqueid, e.queue)
            if call is not None and call.outcome in (Outcome.ANSWERED, Outcome.COMPLETED,
                                                     Outcome.WAITING, Outcome.EXITED):
                return call  # (waiting: its AgentConnect was lost in a gap)
            return None
        pending = [self.visits[v] for v in self._unconfirmed.get(key, ()) if v in self.visits]
        current = self.visits.get(self.connected.get(key, ""))
        # A late AgentComplete carries the visit's own HoldTime: prefer the visit it fits.
        for call in [*pending, *([current] if current else [])]:
            if call.hold_time == e.hold_time:
                return call
        # A visit already counted (device idle) whose wait for this event was lost with a
        # restart of the service: its HoldTime, and its TalkTime running from its answer.
        for call in reversed(self.visits.values()):
            if (call.queue == e.queue and call.interface == e.interface
                    and call.outcome is Outcome.COMPLETED and call.hold_time == e.hold_time
                    and call.answered_at is not None
                    and abs(call.answered_at + e.talk_time - e.at) <= LOG_SLACK_S):
                return call
        if current is not None:
            return current
        return pending[0] if pending else None

    def _agent_completed(self, e: ev.AgentCompleted) -> list[Change]:
        call = self._completed_visit(e)
        if call is not None and call.outcome is Outcome.COMPLETED:
            return self._confirm(call, e)
        changes: list[Change] = []
        if call is None:  # answered while we were not looking: the event has it all
            uid = e.uniqueid or self._unseen_id(e.at)
            call = self._new_visit(uid, e.queue, e.at - e.talk_time - e.hold_time)
            call.answered_at = e.at - e.talk_time
            call.hold_time = e.hold_time
            call.agent, call.interface = e.member, e.interface
            call.estimated = True
            call.outcome = Outcome.ANSWERED
        if call.outcome in (Outcome.WAITING, Outcome.EXITED):  # answered unseen
            self._unwait(call)
            call.outcome, call.estimated = Outcome.ANSWERED, True
            call.answered_at = call.left_at = e.at - e.talk_time
            call.agent, call.interface = e.member, e.interface
        if call.hold_time is None or call.estimated:
            call.hold_time = e.hold_time  # the PBX's own figure beats our guess
        if not call.agent:
            call.agent, call.interface = e.member, e.interface
        call.end_reason = e.reason
        changes += self._complete(call, e.at, e.talk_time, "AgentComplete")
        return changes

    def _confirm(self, call: Call, e: ev.AgentCompleted) -> list[Change]:
        """The AgentComplete of a visit already counted when the operator's device went
        idle (or a duplicate): it settles nothing else and moves no agent."""
        pending = self._unconfirmed.get((call.queue, call.interface), [])
        if call.visit_id not in pending:
            return [Anomaly(e.at, f"duplicate AgentComplete for {call.visit_id}")]
        pending.remove(call.visit_id)
        if not pending:
            self._unconfirmed.pop((call.queue, call.interface), None)
        if e.at - (call.ended_at or e.at) < 1.0:
            call.talk_time = e.talk_time  # same moment: Asterisk's own figure
        call.end_reason = e.reason or call.end_reason
        return [CallChanged(call, "confirmed")]

    def _complete(self, call: Call, at: float, talk_time: int, cause: str,
                  live: bool = True) -> list[Change]:
        """Count a connected visit completed (app_queue ``update_queue``) and release
        its operator if they are still on it (``live=False``: settled after a gap; the
        resync that follows gives the operator the state the PBX reports)."""
        self.connected.pop((call.queue, call.interface), None)
        self._end_hold(call, at)
        call.outcome = Outcome.COMPLETED
        call.ended_at = at
        call.talk_time = talk_time
        counters = self._counters(call.queue)
        counters.completed += 1
        if (call.hold_time or 0) <= self.config(call.queue).servicelevel:
            counters.completed_in_sl += 1
        changes: list[Change] = [CallChanged(call, "completed"), QueueChanged(call.queue)]
        agent = self.agents.get(call.interface) if call.interface else None
        if agent is not None:
            agent.talk_s += talk_time
            agent.calls_taken += 1
            # agent.call is None when the call began before we could see it (at connect)
            if live and agent.call in (None, call.uniqueid) and agent.state is S.ON_CALL:
                agent.call = None
                agent.last_call, agent.last_visit = call.uniqueid, call.visit_id
                changes += self._move(agent, self._after_call_step(agent, call.queue), at,
                                      cause)
            elif agent.call == call.uniqueid:
                agent.call = None
        self._finish(call)
        return changes

    def _held_call(self, e: ev.CallHeld | ev.CallUnheld) -> Call | None:
        """The connected queue call a Hold / Unhold belongs to, by the call's oldest
        channel (``Linkedid``: the one that reached the queue, or the ``;1`` half of a
        Local channel that did), else the held channel is the caller's own."""
        for uid in (self._linked.get(e.linkedid), e.linkedid, e.uniqueid):
            call = self.calls.get(uid) if uid else None
            if call is not None and call.outcome is Outcome.ANSWERED:
                return call
        return None

    def _call_held(self, e: ev.CallHeld) -> list[Change]:
        call = self._held_call(e)
        if call is None or call.held_since is not None:
            return []
        call.held_since = e.at
        return [CallChanged(call, "held")]

    def _call_unheld(self, e: ev.CallUnheld) -> list[Change]:
        call = self._held_call(e)
        if call is None or call.held_since is None:
            return []
        self._end_hold(call, e.at)
        return [CallChanged(call, "unheld")]

    def _attended_transferred(self, e: ev.AttendedTransferred) -> list[Change]:
        """An attended transfer completed: the caller (``transferee``) now takes the place
        of the consultation leg, a queue caller with its own Uniqueid (a Local channel
        whose other half the event may name instead), answered or still waiting.  That visit
        continues the caller's call: it names the caller's visit as the one before it
        (``previous``) and carries the caller's identity, so the call keeps its path."""
        first = self.calls.get(e.transferee)
        if first is None:
            return []  # the caller's visit was not seen (a gap): nothing to link
        named = set(e.channels)
        named |= {n[:-1] + ("2" if n.endswith(";1") else "1") for n in e.channels
                  if n.endswith((";1", ";2"))}  # a Local channel's other half
        uniqueids = set(e.uniqueids) - {e.transferee}
        # Answered by the second operator, or still waiting in the queue when the first
        # one hung up (a "blond" transfer: the caller waits on in the leg's place).
        legs = [self.visits.get(vid) for vid in self.connected.values()]
        legs += [c for waiting in self.waiting.values() for c in waiting.values()]
        for leg in legs:
            if (leg is None or leg.uniqueid == first.uniqueid or leg.previous
                    or not (leg.uniqueid in uniqueids or leg.channel in named)):
                continue
            leg.previous = first.visit_id
            for name in ("caller_num", "caller_name", "hotline", "category", "ivr_path"):
                if getattr(first, name):
                    setattr(leg, name, getattr(first, name))
            return [CallChanged(leg, "transferred")]
        return []

    def _end_hold(self, call: Call, at: float) -> None:
        """Close a hold still running (Unhold, or the call ended on hold): its time
        goes to the call and to its operator."""
        if call.held_since is None:
            return
        span = max(0.0, at - call.held_since)
        call.held_since = None
        call.on_hold_s += span
        agent = self.agents.get(call.interface) if call.interface else None
        if agent is not None:
            agent.hold_s += span

    def _ring_no_answer(self, e: ev.AgentRingNoAnswer) -> list[Change]:
        agent = self._agent(e.interface, e.member)
        agent.ring_no_answer += 1
        call = self._visit(e.uniqueid, e.queue)
        if call is not None:
            call.ring_no_answer += 1
        if agent.state is not S.RINGING:
            return []
        agent.call = None
        return self._end_ring(agent, e.at, "AgentRingNoAnswer")

    def _agent_dumped(self, e: ev.AgentDumped) -> list[Change]:
        agent = self._agent(e.interface, e.member)
        if agent.state is S.RINGING:
            agent.call = None
            return self._move(agent, "ring_end", e.at, "AgentDump")
        return []

    # ---- membership and pause

    def _member_added(self, e: ev.MemberAdded) -> list[Change]:
        m = e.member
        agent = self._agent(m.interface, m.name)
        first = not agent.memberships
        agent.memberships[m.queue] = m
        changes: list[Change] = [QueueChanged(m.queue)]
        if first:
            agent.calls_taken = 0
        if first and agent.state is S.LOGGED_OUT:
            self._set_pause(agent, m.paused, m.reason, e.at)
            changes += self._move(agent, "login_paused" if m.paused else "login", e.at,
                                  "QueueMemberAdded")
        else:
            changes += self._pause_from_memberships(agent, e.at, "QueueMemberAdded")
        return changes

    def _member_removed(self, e: ev.MemberRemoved) -> list[Change]:
        m = e.member
        agent = self._agent(m.interface, m.name)
        agent.memberships.pop(m.queue, None)
        changes: list[Change] = [QueueChanged(m.queue)]
        if not agent.memberships:
            self._set_pause(agent, False, "", e.at)
            if agent.state is not S.LOGGED_OUT:
                changes += self._move(agent, "logout", e.at, "QueueMemberRemoved")
        else:
            changes += self._pause_from_memberships(agent, e.at, "QueueMemberRemoved")
        return changes

    def _member_paused(self, e: ev.MemberPaused) -> list[Change]:
        m = e.member
        agent = self._agent(m.interface, m.name)
        if m.queue not in agent.memberships and agent.state is S.LOGGED_OUT:
            return [Anomaly(e.at, f"pause for {m.name}, who is not in {m.queue}"),
                    ResyncWanted(e.at, f"QueueMemberPause for unknown member {m.name}")]
        agent.memberships[m.queue] = m
        return [QueueChanged(m.queue)] + self._pause_from_memberships(
            agent, e.at, "QueueMemberPause")

    def _pause_from_memberships(self, agent: Agent, at: float, cause: str) -> list[Change]:
        members = list(agent.memberships.values())
        paused = bool(members) and all(m.paused for m in members)
        reason = next((m.reason for m in members if m.paused and m.reason), "")
        if paused == agent.paused and reason == agent.reason:
            return []
        self._set_pause(agent, paused, reason, at)
        if agent.state is S.LOGGED_OUT:
            return []
        return self._move(agent, "pause" if paused else "unpause", at, cause)

    def _member_status(self, e: ev.MemberStatus) -> list[Change]:
        """QueueMemberStatus.  A member whose device goes not-in-use while connected to
        a caller of this queue has left that call: app_queue's ``update_status()`` counts
        it completed now (``update_queue``), before any AgentComplete.  A member still
        ringing for a caller who no longer waits has stopped ringing: ready again (or
        paused)."""
        m = e.member
        agent = self.agents.get(m.interface)
        if agent is None:
            return [ResyncWanted(e.at, f"QueueMemberStatus for unknown member {m.name}")]
        before = agent.memberships.get(m.queue)
        if before is not None:
            agent.memberships[m.queue] = m
        changes: list[Change] = []
        if (m.status == DEVICE_NOT_INUSE and agent.state is S.RINGING
                and agent.call is not None
                and ((rung := self.calls.get(agent.call)) is None
                     or rung.outcome is not Outcome.WAITING)):
            # The phone stopped ringing because its caller left the queue unanswered
            # (QueueCallerLeave: a timeout, an exit key), which names no member: over.
            # (While the caller still waits, the ring's own end is AgentRingNoAnswer.)
            agent.call = None
            changes += self._end_ring(agent, e.at, "caller gone")
        key = (m.queue, m.interface)
        vid = self.connected.get(key)
        if m.status == DEVICE_NOT_INUSE and vid is not None and (
                before is None or before.status != DEVICE_NOT_INUSE):
            call = self.visits.get(vid)
            if call is not None and call.outcome is Outcome.ANSWERED:
                call.end_reason = "device_idle"
                self._unconfirmed.setdefault(key, []).append(vid)
                talk = max(0, int(e.at) - int(call.answered_at or e.at))
                changes += self._complete(call, e.at, talk, "device not in use")
        return changes

    def _channel_hungup(self, e: ev.ChannelHungup) -> list[Change]:
        call = self.calls.get(e.uniqueid)
        if call is not None and call.outcome is Outcome.EXITED and call.ended_at is None:
            call.ended_at = e.at
            self._finish(call)
            return [CallChanged(call, "exited")]
        return []

    # ---- link and resync

    def _link_changed(self, e: ev.LinkChanged) -> list[Change]:
        self.link_up = e.up
        self.link_reason = e.reason
        if not e.up:
            self._touched = None  # a refresh in flight is lost with the link
        if not e.up and self._down_at is None:
            # From the last event the PBX's link delivered: frames in flight when it
            # broke were lost with it.
            self._down_at = min(e.at, self._last_pbx_event)
            self._at_down = {q: _copy(c) for q, c in self.observed.items()}
        return [LinkStateChanged(e.up, e.reason, e.at, self.pbx)]

    def _pbx_booted(self, e: ev.PbxBooted) -> list[Change]:
        """FullyBooted (sent after every login): when the PBX process booted.  A boot
        later than the one we knew means Asterisk restarted - its queue counters began
        again at zero and the calls it held are gone; the next resync settles them."""
        changes: list[Change] = [ResyncWanted(e.at, "PBX fully booted", full=True)]
        if e.uptime is None:
            return changes
        booted = e.at - e.uptime
        held_before_boot = self.booted_at is None and any(
            c.outcome not in FINAL and c.joined_at < booted - BOOT_SLACK_S
            for c in self.visits.values())  # restored after a service restart
        if held_before_boot or (
                self.booted_at is not None and booted > self.booted_at + BOOT_SLACK_S):
            self._restart_pending = (
                f"Asterisk restarted: up {e.uptime} s at the reconnect; its counters and "
                "the calls it held were lost")
            self.last_restart = PbxRestarted(e.at, booted, self._restart_pending)
            changes += [self.last_restart, Anomaly(e.at, self._restart_pending)]
        self.booted_at = booted
        if e.last_reload is not None:
            self.reloaded_at = e.at - e.last_reload
        return changes

    def _refresh_asked(self, e: ev.RefreshAsked) -> list[Change]:
        """From here until the Refresh, note what the PBX's events name."""
        self._touched = (set(), set())
        return []

    def _note_touched(self, e: ev.Event) -> None:
        """Remember the member interface and caller Uniqueid an event names (its news is
        at least as new as the QueueStatus answer still in flight)."""
        assert self._touched is not None
        members, callers = self._touched
        interface = getattr(e, "interface", None)
        if interface:
            members.add(interface)
        member = getattr(e, "member", None)
        if isinstance(member, ev.MemberInfo):
            members.add(member.interface)
        uniqueid = getattr(e, "uniqueid", None)
        if uniqueid:
            callers.add(uniqueid)

    def _refresh(self, e: ev.Refresh) -> list[Change]:
        """A QueueStatus asked for mid-traffic, applied where its answer ended in the
        event stream: add the members and waiting callers the state does not know, as
        the PBX has them.  Never touches counters, known visits, or what a member we
        know is doing; skips whatever an event named while the answer was on its way
        (that event is at least as new).  Returns the changes (joined visits, agents'
        new states)."""
        if self._touched is None:
            return []  # not asked on this link (it went down meanwhile): the resync rules
        touched_members, touched_callers = self._touched
        self._touched = None
        if not self.link_up or self._down_at is not None:
            return []  # a gap is open: the reconnect's full resync settles everything
        at = e.at
        changes: list[Change] = []
        by_interface: dict[str, dict[str, ev.MemberInfo]] = {}
        for m in e.members:
            by_interface.setdefault(m.interface, {})[m.queue] = m
        again = False  # a name skipped below and still unknown: ask once more
        for interface, listed in by_interface.items():
            if interface in touched_members:
                known = self.agents.get(interface)
                again |= known is None or any(q not in known.memberships for q in listed)
                continue
            known = self.agents.get(interface)
            new = {q: m for q, m in listed.items()
                   if known is None or q not in known.memberships}
            if not new:
                continue
            agent = self._agent(interface, next(iter(new.values())).name)
            agent.memberships.update(new)
            changes += [QueueChanged(q) for q in new]
            if agent.state is not S.LOGGED_OUT:  # logged in by a ring or an answer
                changes += self._pause_from_memberships(agent, at, "QueueStatus")
                continue
            members = list(agent.memberships.values())
            paused = all(m.paused for m in members)
            reason = next((m.reason for m in members if m.paused and m.reason), "")
            self._set_pause(agent, paused, reason, at)
            target = (S.ON_CALL if any(m.in_call for m in members)
                      else S.PAUSED if paused else S.READY)
            changes += self._enter(agent, target, "resync", at, "QueueStatus (refresh)")
        for w in e.waiting:
            if w.uniqueid in touched_callers:
                again |= self._visit(w.uniqueid, w.queue) is None
                continue
            call = self._adopt_waiting(w, at)
            if call is not None:
                self._counters(w.queue)
                changes += [CallChanged(call, "joined"), QueueChanged(w.queue)]
        if again:
            changes.append(ResyncWanted(at, "named by an event while the refresh was asked"))
        return changes

    def _adopt_waiting(self, w: ev.WaitingEntry, at: float) -> Call | None:
        """A caller QueueStatus lists as waiting that this state never saw join: a new
        visit, waiting since ``at - w.wait``, marked estimated.  None when the visit is
        known (waiting, or it moved on after the picture was taken: events read while
        QueueStatus was answered come before the answer)."""
        known = self._visit(w.uniqueid, w.queue)
        if known is not None and (known.outcome is Outcome.WAITING
                                  or known.joined_at >= at - w.wait - LOG_SLACK_S):
            return None
        call = self._new_visit(w.uniqueid, w.queue, at - w.wait, caller_num=w.caller_num,
                               caller_name=w.caller_name, channel=w.channel,
                               position=w.position)
        call.estimated = True
        self.waiting.setdefault(w.queue, {})[w.uniqueid] = call
        return call

    def _take_checkpoint(self, e: ev.Checkpoint) -> list[Change]:
        """Our counters at the point in the event stream where the PBX answered QueueStatus."""
        self._checkpoint = {q: _copy(c) for q, c in self.observed.items()}
        return []

    def _mine_at_answer(self, queue: str) -> Counters:
        """Our counters as of the PBX's answer, plus what this resync has settled so far."""
        now = self._counters(queue)
        if self._checkpoint is None:
            return _copy(now)
        snap = self._checkpoint.get(queue, Counters())
        before = self._before_resync.get(queue, Counters())
        return Counters(*(getattr(snap, k) + getattr(now, k) - getattr(before, k)
                          for k in _COUNTER_FIELDS))

    def _cut_by_restart(self, at: float) -> list[Change]:
        """Visits the old PBX process held when it died: never completed nor abandoned
        in Asterisk's own count (queue_log has no end line for them either)."""
        changes: list[Change] = []
        booted = self.booted_at if self.booted_at is not None else at
        end = self._down_at if self._down_at is not None else booted
        for call in [c for c in self.visits.values() if c.outcome not in FINAL]:
            # Uptime is whole seconds: a call that joined within a second of the boot
            # may be the new process's; and queue_log's word, when read, is final.
            if call.joined_at >= booted - 1.0 or call.settled == "queue_log":
                continue
            self._unwait(call)
            self.connected.pop((call.queue, call.interface), None)
            call.outcome = (Outcome.INTERRUPTED if call.outcome is Outcome.ANSWERED
                            else Outcome.DROPPED)
            call.left_at = call.left_at or end
            call.ended_at = end
            if call.outcome is Outcome.INTERRUPTED:
                call.talk_time = max(0, int(end) - int(call.answered_at or end))
            call.settled, call.estimated, call.end_reason = "pbx_restart", True, "pbx_restart"
            self._finish(call)
            changes.append(CallChanged(call, call.outcome.value))
        self._unconfirmed.clear()
        for agent in self.agents.values():
            agent.call = None
        return changes

    def _resync(self, e: ev.Resync) -> list[Change]:
        at = e.at
        changes: list[Change] = []
        restarted = self._restart_pending
        self._before_resync = {q: _copy(c) for q, c in self.observed.items()}
        # With queue_log every gap is rebuilt from it; what it does not tell yet arrives
        # as live events (the link is up while it is read), so counters settle nothing.
        from_log = e.queue_log is not None
        if from_log and self._down_at is not None:
            changes += self._rebuild_from_log(e.queue_log or (), at)
        if restarted:
            changes += self._cut_by_restart(at)
        self.link_up = True
        self.link_reason = "resynchronised"
        channels = {c.uniqueid: c for c in e.channels}
        waiting_now = {w.uniqueid: w for w in e.waiting}

        # 1. Calls we believed were waiting.
        vanished: dict[str, list[Call]] = {}
        for queue in list(self.waiting):
            for call in list(self.waiting[queue].values()):
                if call.uniqueid in waiting_now or call.joined_at >= at or from_log:
                    continue  # still waiting, or joined after the PBX's picture was asked for
                self._unwait(call)
                chan = channels.get(call.uniqueid)
                if chan is not None and chan.bridged:
                    call.outcome = Outcome.ANSWERED
                    call.answered_at = call.left_at = at
                    call.hold_time = int(at - call.joined_at)
                    call.estimated = True
                    self._attach_operator(call, chan, e)
                    changes.append(CallChanged(call, "resync"))
                else:
                    vanished.setdefault(queue, []).append(call)
        # 2. Calls waiting that we never saw join.
        for w in e.waiting:
            call = self._adopt_waiting(w, at)
            if call is not None:
                changes.append(CallChanged(call, "joined"))
        # 3. Answered calls whose caller is no longer bridged ended while we were away
        #    (only when the PBX listed its channels: no list is no evidence).  With
        #    queue_log only a caller still up but no longer with the operator: a
        #    Redirect or the '*' disconnect, whose end line (and AgentComplete) comes
        #    when the caller leaves, but which app_queue counted completed when the
        #    operator's device went idle - while we were away.
        forced: dict[str, list[Call]] = {}
        answered = [c for c in self.visits.values() if c.outcome is Outcome.ANSWERED]
        for call in answered if e.has_channels else []:
            if call.answered_at is not None and call.answered_at > at:
                continue
            chan = channels.get(call.uniqueid)
            if chan is not None and chan.bridged and self.calls.get(call.uniqueid) is call:
                continue
            if from_log:
                if chan is None:
                    continue  # gone: queue_log (read now or next time) has its end
                self.connected.pop((call.queue, call.interface), None)
                call.end_reason, call.settled = "device_idle", "queue_log"
                self._unconfirmed.setdefault((call.queue, call.interface), []).append(
                    call.visit_id)
                changes += self._complete(call, at, int(at - (call.answered_at or at)),
                                          "resync", live=False)
                continue
            self.connected.pop((call.queue, call.interface), None)
            if call.estimated:  # its wait is a guess: let the counters place it
                forced.setdefault(call.queue, []).append(call)
                continue
            call.estimated, call.settled = True, self._settled_by()
            changes += self._complete(call, at, int(at - (call.answered_at or at)), "resync",
                                      live=False)
        # 4. Asterisk's counters settle what began and ended while we were away.
        for qc in e.counters:
            if from_log:
                self._baseline[qc.queue] = (qc, self._mine_at_answer(qc.queue))
                continue
            changes += self._reconcile(qc, vanished.pop(qc.queue, []),
                                       forced.pop(qc.queue, []), at, bool(restarted))
        for calls in forced.values():  # queue without counters
            for call in calls:
                changes += self._settle(call, Outcome.COMPLETED, (call.hold_time or 0) <= (
                    self.config(call.queue).servicelevel), at)
        for calls in vanished.values():  # queue without counters: assume abandoned
            for call in calls:
                changes += self._settle(call, Outcome.ABANDONED,
                                        at - call.joined_at <= self.config(call.queue).servicelevel,
                                        at)
        # 5. Agents: membership and pause as the PBX has them.
        changes += self._resync_agents(e.members, at)
        self._down_at = None
        self._checkpoint = None
        self._restart_pending = ""
        self._service_restarted = False
        changes.append(LinkStateChanged(True, "resynchronised", at, self.pbx))
        changes += [QueueChanged(q) for q in self.queues()]
        return changes

    def _rebuild_from_log(self, entries: Iterable[queue_log.QueueLogEntry],
                          at: float) -> list[Change]:
        """Settle the gap exactly from Asterisk's queue_log: the visits we held open, and
        every visit that began while we could not see (per call and per operator)."""
        if self._down_at is None:
            return []  # first connect: what came before is not the service's to count
        since = self._down_at
        logged = queue_log.visits(entries)
        changes: list[Change] = []
        used: set[int] = set()
        matched: set[int] = set()
        for call in [c for c in self.visits.values() if c.outcome not in FINAL]:
            fits = [v for v in logged if v.callid == call.uniqueid and v.queue == call.queue
                    and v.entered <= call.joined_at + LOG_SLACK_S]
            if fits:
                used.add(id(fits[-1]))
                matched.add(id(call))
                changes += self._apply_logged(call, fits[-1])
        per_key: dict[tuple[str, str], int] = {}  # logged visits of one channel to one queue
        for v in logged:
            per_key[(v.callid, v.queue)] = per_key.get((v.callid, v.queue), 0) + 1
        for v in logged:
            if id(v) in used or v.entered < since - GAP_LOOKBACK_S:
                continue
            # A visit we already hold for it (seen, or settled from a lone event whose
            # times are estimates): the same visit, not a new one.  The channel's only
            # visit to that queue is the same whatever the times (a loaded service reads
            # an event late, and stamps it so).
            held = [c for c in self.visits_of(v.callid) if c.queue == v.queue
                    and id(c) not in matched]
            same = [c for c in held if c.estimated or abs(c.joined_at - v.entered)
                    <= LOG_SLACK_S] or (held if per_key[(v.callid, v.queue)] == 1 else [])
            if same:
                matched.add(id(same[0]))
                continue
            call = self._new_visit(v.callid, v.queue, v.entered, caller_num=v.caller_num)
            if v.outcome == "waiting":
                self.waiting.setdefault(v.queue, {})[v.callid] = call
            call.settled = "queue_log"
            changes.append(CallChanged(call, "joined"))
            changes += self._apply_logged(call, v)
        return changes

    def _apply_logged(self, call: Call, v: queue_log.LoggedVisit) -> list[Change]:
        """Give a visit the fate queue_log records for it."""
        if v.outcome == "waiting":
            return []
        call.settled, call.estimated = "queue_log", False
        if v.answered_at is not None:
            call.answered_at, call.hold_time = v.answered_at, v.hold
            agent = self.agent_by_name(v.agent)
            call.agent = v.agent
            call.interface = agent.interface if agent is not None else call.interface
        before = _copy(self._counters(call.queue))
        changes: list[Change]
        self._unwait(call)
        end = v.ended_at if v.ended_at is not None else (self._down_at or call.joined_at)
        call.left_at = call.left_at or v.answered_at or end
        if v.outcome == "answered":  # still talking: its AgentComplete will end it
            call.outcome = Outcome.ANSWERED
            agent = self.agents.get(call.interface) if call.interface else None
            if agent is not None:
                self.connected[(call.queue, call.interface)] = call.visit_id
                agent.call = agent.last_call = call.uniqueid
                agent.last_visit = call.visit_id
            return [CallChanged(call, "answered")]
        if v.outcome == "completed":
            call.outcome = Outcome.ANSWERED
            call.end_reason = v.end_reason
            changes = self._complete(call, end, v.talk or 0, "queue_log", live=False)
        elif v.outcome == "abandoned":
            call.outcome, call.hold_time, call.ended_at = Outcome.ABANDONED, v.hold, end
            call.end_reason = v.end_reason
            counters = self._counters(call.queue)
            counters.abandoned += 1
            counters.abandoned_in_sl += (v.hold or 0) <= self.config(call.queue).servicelevel
            self._finish(call)
            changes = [CallChanged(call, "abandoned")] + self._stop_ringing_for(call, end)
        else:  # exited, interrupted, dropped
            call.outcome, call.ended_at, call.end_reason = Outcome(v.outcome), end, v.end_reason
            self.connected.pop((call.queue, call.interface), None)
            self._finish(call)
            changes = [CallChanged(call, v.outcome)]
        if self._restart_pending and self.booted_at is not None and end < self.booted_at:
            # Counted by the old process: not in the new process's counters.
            down = self._at_down.setdefault(call.queue, Counters())
            now = self._counters(call.queue)
            for k in _COUNTER_FIELDS:
                setattr(down, k, getattr(down, k) + getattr(now, k) - getattr(before, k))
        return changes

    @staticmethod
    def _from_log(call: Call, joined_at: float) -> bool:
        """The visit was rebuilt from queue_log and this event tells the same visit."""
        return call.settled == "queue_log" and abs(call.joined_at - joined_at) <= LOG_SLACK_S

    @staticmethod
    def _open_from_log(call: Call) -> bool:
        """The visit was rebuilt from queue_log as still talking: a channel cannot join
        (or be connected in) the queue it is still in, so a QueueCallerJoin or
        AgentConnect for that queue is this visit's own, read after the rebuild however
        late (a service starting or catching up mid-traffic), whatever its time."""
        return call.settled == "queue_log" and call.outcome is Outcome.ANSWERED

    def _settled_by(self) -> str:
        return "service_restart" if self._service_restarted else "counters"

    def _attach_operator(self, call: Call, chan: ev.ActiveChannel, e: ev.Resync) -> None:
        """The operator a caller was bridged to while the link was down: the member whose
        device channel shares the caller's bridge (``Local/1001@agents-0001;1`` is the
        channel of member ``Local/1001@agents/n``; ``PJSIP/1001-0002`` of ``PJSIP/1001``)."""
        if not chan.bridge_id:
            return
        peers = [c.channel for c in e.channels
                 if c.bridge_id == chan.bridge_id and c.uniqueid != chan.uniqueid]
        for m in e.members:
            if m.queue != call.queue:
                continue
            device = m.interface.removesuffix("/n")
            if any(p.startswith(device + "-") or p == device for p in peers):
                call.agent, call.interface = m.name, m.interface
                self.connected[(call.queue, m.interface)] = call.visit_id
                agent = self._agent(m.interface, m.name)
                agent.call = agent.last_call = call.uniqueid
                agent.last_visit = call.visit_id
                return

    def _settle(self, call: Call, outcome: Outcome, in_sl: bool, at: float) -> list[Change]:
        """Close a call we lost sight of, as the PBX's counters say it ended."""
        sl = self.config(call.queue).servicelevel
        seen_wait = max(0, int(at - call.joined_at))
        call.estimated = True
        call.settled = self._settled_by()
        self._unwait(call)
        call.left_at = call.ended_at = at
        call.hold_time = min(seen_wait, sl) if in_sl else max(seen_wait, sl + 1)
        counters = self._counters(call.queue)
        if outcome is Outcome.ABANDONED:
            counters.abandoned += 1
            counters.abandoned_in_sl += in_sl
        elif outcome is Outcome.COMPLETED:
            call.answered_at = at
            call.talk_time = 0
            self.connected.pop((call.queue, call.interface), None)
            counters.completed += 1
            counters.completed_in_sl += in_sl
        call.outcome = outcome
        self._finish(call)
        return [CallChanged(call, outcome.value)]

    def _reconcile(self, qc: ev.QueueCounters, vanished: list[Call], completed: list[Call],
                   at: float, restarted: bool = False) -> list[Change]:
        """Settle lost calls so that our counts move exactly as Asterisk's did.

        The differences between Asterisk's counters now and at the previous
        resync, less what we observed in between, are the calls we missed:
        first the callers we saw waiting whose channels are gone, then records
        for calls that began and ended while the link was down.  The in-SL
        counts come from ServicelevelPerf/ServicelevelPerf2 (one decimal:
        exact while fewer than 1,000 calls are settled at once).
        """
        mine = self._mine_at_answer(qc.queue)
        base = self._baseline.get(qc.queue)
        changes: list[Change] = []
        if restarted:
            # A new PBX process: its counters count from zero, since its boot; ours
            # from the moment we lost sight of the old one.
            zero = ev.QueueCounters(qc.queue, 0, 0, qc.servicelevel, 0.0, 0.0)
            base = (zero, _copy(self._at_down.get(qc.queue, mine)))
        if base is None or qc.completed < base[0].completed or qc.abandoned < base[0].abandoned:
            # First sight of this PBX, or its counters were reset: nothing to compare with.
            if base is not None:
                what = f"queue {qc.queue}: PBX counters were reset (QueueReset or reload)"
                self.last_restart = PbxRestarted(at, None, what)
                changes += [Anomaly(at, what), self.last_restart]
            sl = self.config(qc.queue).servicelevel
            for call in vanished:
                changes += self._settle(call, Outcome.ABANDONED, at - call.joined_at <= sl, at)
            for call in completed:
                changes += self._settle(call, Outcome.COMPLETED, (call.hold_time or 0) <= sl, at)
        else:
            ast0, mine0 = base
            ast_in_sl = round(qc.sl_perf * qc.completed / 100)
            ast0_in_sl = round(ast0.sl_perf * ast0.completed / 100)
            ast_both = round(qc.sl_perf2 * (qc.completed + qc.abandoned) / 100)
            ast0_both = round(ast0.sl_perf2 * (ast0.completed + ast0.abandoned) / 100)
            miss = {
                Outcome.COMPLETED: (qc.completed - ast0.completed) - (
                    mine.completed - mine0.completed),
                Outcome.ABANDONED: (qc.abandoned - ast0.abandoned) - (
                    mine.abandoned - mine0.abandoned),
            }
            miss_sl = {Outcome.COMPLETED: (ast_in_sl - ast0_in_sl) - (
                mine.completed_in_sl - mine0.completed_in_sl)}
            miss_sl[Outcome.ABANDONED] = (ast_both - ast0_both) - (
                mine.completed_in_sl + mine.abandoned_in_sl
                - mine0.completed_in_sl - mine0.abandoned_in_sl) - miss_sl[Outcome.COMPLETED]
            sl = self.config(qc.queue).servicelevel
            # A caller who had waited beyond SL before the link went down cannot be
            # in SL: settle those first, each with the outcome whose quota fits best.
            down = self._down_at if self._down_at is not None else at
            for call in completed:  # answered while away, ended while away
                in_sl = miss_sl[Outcome.COMPLETED] > 0 and down - call.joined_at <= sl
                miss[Outcome.COMPLETED] -= 1
                miss_sl[Outcome.COMPLETED] -= in_sl
                changes += self._settle(call, Outcome.COMPLETED, in_sl, at)
            for call in sorted(vanished, key=lambda c: (down - c.joined_at <= sl, c.joined_at)):
                can_be_in_sl = down - call.joined_at <= sl
                fits = [o for o in (Outcome.ABANDONED, Outcome.COMPLETED) if miss[o] > 0 and (
                    miss_sl[o] > 0 if can_be_in_sl else miss[o] > miss_sl[o])]
                left = [o for o in (Outcome.ABANDONED, Outcome.COMPLETED) if miss[o] > 0]
                outcome = (fits or left or [Outcome.EXITED])[0]
                in_sl = False
                if outcome is not Outcome.EXITED:
                    in_sl = can_be_in_sl and miss_sl[outcome] > 0
                    miss[outcome] -= 1
                    miss_sl[outcome] -= in_sl
                changes += self._settle(call, outcome, in_sl, at)
            changes += self._unseen_calls(qc.queue, miss, miss_sl, at)
        self._baseline[qc.queue] = (qc, self._mine_at_answer(qc.queue))
        return changes

    def _unseen_calls(self, queue: str, miss: dict[Outcome, int], miss_sl: dict[Outcome, int],
                      at: float) -> list[Change]:
        """Records for calls that began and ended entirely while the link was down."""
        changes: list[Change] = []
        if miss[Outcome.COMPLETED] > 0 or miss[Outcome.ABANDONED] > 0:
            changes.append(Anomaly(
                at, f"queue {queue}: {max(miss[Outcome.COMPLETED], 0)} completed and "
                f"{max(miss[Outcome.ABANDONED], 0)} abandoned calls happened while the PBX "
                "link was down; counted from its counters"))
        for outcome in (Outcome.COMPLETED, Outcome.ABANDONED):
            for i in range(max(miss[outcome], 0)):
                call = self._new_visit(self._unseen_id(at), queue, at)
                call.estimated = True
                changes += self._settle(call, outcome, i < miss_sl[outcome], at)
        return changes

    def _resync_agents(self, members: Iterable[ev.MemberInfo], at: float) -> list[Change]:
        by_interface: dict[str, dict[str, ev.MemberInfo]] = {}
        for m in members:
            by_interface.setdefault(m.interface, {})[m.queue] = m
        changes: list[Change] = []
        for interface in set(by_interface) | set(self.agents):
            mine = by_interface.get(interface, {})
            any_member = next(iter(mine.values()), None)
            agent = self._agent(interface, any_member.name if any_member else "")
            agent.memberships = dict(mine)
            members_list = list(mine.values())
            paused = bool(members_list) and all(m.paused for m in members_list)
            reason = next((m.reason for m in members_list if m.paused and m.reason), "")
            in_call = any(m.in_call for m in members_list) or any(
                k[1] == interface for k in self.connected)
            self._set_pause(agent, paused, reason, at)
            if not members_list:
                target = S.ON_CALL if in_call and agent.state is S.ON_CALL else S.LOGGED_OUT
            elif in_call:
                target = S.ON_CALL
            elif paused:
                target = S.PAUSED
            elif agent.state in (S.WRAP_UP, S.RINGING):
                target = agent.state
            else:
                target = S.READY
            if target is S.RINGING and agent.call not in self.calls:
                target = S.READY
            if target is not agent.state:
                # The PBX's word overrides the table: recorded with its cause.
                changes += self._enter(agent, target, "resync", at, "resync")
            if target is not S.ON_CALL and target is not S.RINGING:
                agent.call = None
        return changes
