"""Pure call-center state: calls, queues and agents, fed typed events.

Theory of operation
-------------------
:class:`CallCenter` is the one place that knows what is happening right now.  It
is fed :mod:`acd.events` in AMI order by a single consumer and returns a list of
:class:`Change` objects saying what moved; the edges (database, websocket push,
alerts) act on those changes.  It never reads the clock: every event carries its
own ``at`` and :meth:`CallCenter.advance` lets timers (the end of wrap-up) fire.

Calls are keyed by the caller channel's ``Uniqueid`` in the queue.  The end of a
call (``AgentComplete``) is matched on ``(queue, interface)`` first, because a
real Asterisk may send it without the caller's fields (AMI-NOTES.md).

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
    since: float = 0.0
    reason: str = ""  # pause reason while paused
    paused: bool = False  # Asterisk's pause flag (may be set while on a call)
    paused_since: float | None = None
    paused_s: float = 0.0
    time_in: dict[str, float] = field(default_factory=dict)
    memberships: dict[str, ev.MemberInfo] = field(default_factory=dict)
    call: str | None = None  # uniqueid ringing or connected
    last_call: str | None = None
    wrap_until: float | None = None
    answered: int = 0
    ring_no_answer: int = 0
    talk_s: float = 0.0
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
    rings: int = 0
    ring_no_answer: int = 0
    estimated: bool = False  # settled from a resync, not seen event by event

    def to_row(self) -> dict[str, object]:
        return {
            "uniqueid": self.uniqueid,
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
            "rings": self.rings,
            "ring_no_answer": self.ring_no_answer,
            "estimated": self.estimated,
        }


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class CallChanged:
    call: Call
    what: str  # joined | answered | completed | abandoned | exited | wrap_up | resync


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


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something the PBX said that does not fit: logged, never fatal."""

    at: float
    what: str


Change = CallChanged | AgentChanged | QueueChanged | LinkStateChanged | Anomaly


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


class CallCenter:
    """Calls, queues and agents; ``apply(event) -> changes``.  No IO, no clock."""

    def __init__(
        self,
        queues: dict[str, QueueConfig] | None = None,
        default: QueueConfig | None = None,
        keep_finished: int = 5000,
    ) -> None:
        self.queue_config = dict(queues or {})
        self.default_config = default or QueueConfig()
        self.calls: dict[str, Call] = {}  # live and recently finished, by uniqueid
        self.finished: list[Call] = []  # finished calls not yet collected by the caller
        self.agents: dict[str, Agent] = {}  # by interface
        self.waiting: dict[str, dict[str, Call]] = {}  # queue -> uniqueid -> call (join order)
        self.connected: dict[tuple[str, str], str] = {}  # (queue, interface) -> uniqueid
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
            ev.LinkChanged: self._link_changed,
            ev.Resync: self._resync,
            ev.Checkpoint: self._take_checkpoint,
            ev.Tick: lambda e: [],
        }

    # ---- public

    def config(self, queue: str) -> QueueConfig:
        return self.queue_config.get(queue, self.default_config)

    def apply(self, event: ev.Event) -> list[Change]:
        """Apply one event; return what changed.  Timers due before it fire first."""
        changes = self.advance(event.at)
        handler = self._handlers.get(type(event))
        if handler is not None:
            changes.extend(handler(event))
        return changes

    def advance(self, at: float) -> list[Change]:
        """Move the clock to ``at`` and fire the wrap-up timers that are due."""
        self.now = max(self.now, at)
        if self._wrap_due is None or self._wrap_due > self.now:
            return []  # no wrap-up timer is due (the earliest is kept, not searched for)
        due = [a for a in self._wrapping.values()
               if a.wrap_until is not None and a.wrap_until <= self.now]
        if len(due) > 1:  # in the agents' own order, as a scan of all agents would give
            rank = {id(a): i for i, a in enumerate(self.agents.values())}
            due.sort(key=lambda a: rank.get(id(a), 0))
        changes: list[Change] = []
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
        for agent in self.agents.values():
            if agent.name == name:
                return agent
        return None

    def collect_finished(self) -> list[Call]:
        """Hand over finished calls (for storage) and forget the old ones."""
        done, self.finished = self.finished, []
        if len(self.calls) > self.keep_finished * 2:
            live = {
                uid: c for uid, c in self.calls.items()
                if c.outcome in (Outcome.WAITING, Outcome.ANSWERED) and c.ended_at is None
            }
            recent = [c for c in self.calls.values() if c.uniqueid not in live]
            recent.sort(key=lambda c: c.joined_at)
            self.calls = live | {c.uniqueid: c for c in recent[-self.keep_finished:]}
        return done

    # ---- helpers

    def _agent(self, interface: str, name: str) -> Agent:
        agent = self.agents.get(interface)
        if agent is None:
            agent = Agent(interface=interface, name=name or interface, since=self.now)
            self.agents[interface] = agent
        elif name and agent.name != name:
            agent.name = name
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
        if old is S.WRAP_UP and agent.last_call:
            last = self.calls.get(agent.last_call)
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
            wrap = self.config(self.calls[agent.last_call].queue).wrapuptime if (
                agent.last_call in self.calls) else 0
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

    def _unwait(self, call: Call) -> None:
        self.waiting.get(call.queue, {}).pop(call.uniqueid, None)

    def _after_call_step(self, agent: Agent) -> str:
        if not agent.memberships:
            return "hangup_logged_out"
        if agent.paused:
            return "hangup_paused"
        queue = self.calls[agent.last_call].queue if agent.last_call in self.calls else ""
        return "hangup_wrap" if self.config(queue).wrapuptime > 0 else "hangup"

    # ---- queue callers

    def _caller_joined(self, e: ev.CallerJoined) -> list[Change]:
        known = self.calls.get(e.uniqueid)
        if known is not None and known.queue == e.queue and known.outcome is Outcome.WAITING:
            return []  # already known (e.g. from a resync): never count twice
        call = Call(
            uniqueid=e.uniqueid, queue=e.queue, joined_at=e.at, caller_num=e.caller_num,
            caller_name=e.caller_name, channel=e.channel, position=e.position,
            hotline=e.variables.get("HOTLINE", ""), category=e.variables.get("CATEGORY", ""),
            ivr_path=e.variables.get("IVR_PATH", ""),
        )
        self.calls[e.uniqueid] = call
        self.waiting.setdefault(e.queue, {})[e.uniqueid] = call
        self._counters(e.queue)
        return [CallChanged(call, "joined"), QueueChanged(e.queue)]

    def _caller_left(self, e: ev.CallerLeft) -> list[Change]:
        call = self.calls.get(e.uniqueid)
        if call is None or call.queue != e.queue:
            return [Anomaly(e.at, f"QueueCallerLeave for unknown caller {e.uniqueid}")]
        self._unwait(call)
        if call.left_at is None:
            call.left_at = e.at
        if call.outcome is Outcome.WAITING:
            # Answered callers get AgentConnect right after; the rest exited.
            call.outcome = Outcome.EXITED
        return [QueueChanged(e.queue)]

    def _caller_abandoned(self, e: ev.CallerAbandoned) -> list[Change]:
        call = self.calls.get(e.uniqueid)
        if call is None:
            call = Call(uniqueid=e.uniqueid, queue=e.queue, joined_at=e.at - e.hold_time)
            call.estimated = True
            self.calls[e.uniqueid] = call
        if call.outcome is Outcome.ABANDONED:
            return []
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
            step = "ring_end_paused" if agent.paused else "ring_end"
            changes += self._move(agent, step, at, "caller gone")
        return changes

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
        call = self.calls.get(e.uniqueid)
        if call is not None:
            call.rings += 1
        agent.call = e.uniqueid
        if agent.state is S.RINGING:
            return []
        changes: list[Change] = []
        if agent.state is S.LOGGED_OUT:  # rung before we saw them join (e.g. at connect)
            changes += self._move(agent, "login", e.at, "AgentCalled before membership")
        return changes + self._move(agent, "ring", e.at, "AgentCalled")

    def _agent_answered(self, e: ev.AgentAnswered) -> list[Change]:
        call = self.calls.get(e.uniqueid)
        if call is None:  # joined while we were not looking
            call = Call(uniqueid=e.uniqueid, queue=e.queue, joined_at=e.at - e.hold_time)
            call.estimated = True
            self.calls[e.uniqueid] = call
        self._unwait(call)
        call.outcome = Outcome.ANSWERED
        call.answered_at = e.at
        call.left_at = call.left_at or e.at
        call.hold_time = e.hold_time
        call.agent, call.interface = e.member, e.interface
        self.connected[(e.queue, e.interface)] = e.uniqueid
        agent = self._agent(e.interface, e.member)
        agent.call = agent.last_call = e.uniqueid
        agent.answered += 1
        changes: list[Change] = [CallChanged(call, "answered"), QueueChanged(e.queue)]
        if agent.state is S.LOGGED_OUT:
            changes += self._move(agent, "login", e.at, "AgentConnect before membership")
        if agent.state is not S.RINGING:  # a ring we missed: go through it
            changes += self._move(agent, "ring", e.at, "AgentConnect")
        changes += self._move(agent, "answer", e.at, "AgentConnect")
        # Other members rung for the same caller (ringall) stop ringing.
        for other in self._ringing_for(e.uniqueid):
            if other is agent:
                continue
            other.call = None
            step = "ring_end_paused" if other.paused else "ring_end"
            changes += self._move(other, step, e.at, "answered elsewhere")
        return changes

    def _agent_completed(self, e: ev.AgentCompleted) -> list[Change]:
        uid = self.connected.pop((e.queue, e.interface), None)
        if uid is None and e.uniqueid:
            uid = e.uniqueid
        call = self.calls.get(uid) if uid else None
        if call is None:  # answered while we were not looking: the event has it all
            self._synthetic += 1
            uid = uid or f"unseen-{self._synthetic}"
            call = Call(uniqueid=uid, queue=e.queue, joined_at=e.at - e.talk_time - e.hold_time)
            call.answered_at = e.at - e.talk_time
            call.hold_time = e.hold_time
            call.agent, call.interface = e.member, e.interface
            call.estimated = True
            self.calls[uid] = call
        if call.outcome is Outcome.COMPLETED:
            return []
        call.outcome = Outcome.COMPLETED
        call.ended_at = e.at
        call.talk_time = e.talk_time
        if call.hold_time is None or call.estimated:
            call.hold_time = e.hold_time  # the PBX's own figure beats our guess
        counters = self._counters(e.queue)
        counters.completed += 1
        if (call.hold_time or 0) <= self.config(e.queue).servicelevel:
            counters.completed_in_sl += 1
        agent = self._agent(e.interface, e.member)
        agent.talk_s += e.talk_time
        agent.calls_taken += 1
        agent.last_call = call.uniqueid
        if agent.call == call.uniqueid:
            agent.call = None
        changes: list[Change] = [CallChanged(call, "completed"), QueueChanged(e.queue)]
        if agent.state is S.ON_CALL:
            changes += self._move(agent, self._after_call_step(agent), e.at, "AgentComplete")
        self._finish(call)
        return changes

    def _ring_no_answer(self, e: ev.AgentRingNoAnswer) -> list[Change]:
        agent = self._agent(e.interface, e.member)
        agent.ring_no_answer += 1
        call = self.calls.get(e.uniqueid)
        if call is not None:
            call.ring_no_answer += 1
        if agent.state is not S.RINGING:
            return []
        agent.call = None
        step = "ring_end_paused" if agent.paused else "ring_end"
        return self._move(agent, step, e.at, "AgentRingNoAnswer")

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
            return [Anomaly(e.at, f"pause for {m.name}, who is not in {m.queue}")]
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
        m = e.member
        agent = self.agents.get(m.interface)
        if agent is not None and m.queue in agent.memberships:
            agent.memberships[m.queue] = m
        return []

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
        if not e.up and self._down_at is None:
            self._down_at = e.at
        return [LinkStateChanged(e.up, e.reason, e.at)]

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

    def _resync(self, e: ev.Resync) -> list[Change]:
        at = e.at
        changes: list[Change] = []
        self._before_resync = {q: _copy(c) for q, c in self.observed.items()}
        self.link_up = True
        self.link_reason = "resynchronised"
        channels = {c.uniqueid: c for c in e.channels}
        waiting_now = {w.uniqueid: w for w in e.waiting}

        # 1. Calls we believed were waiting.
        vanished: dict[str, list[Call]] = {}
        for queue in list(self.waiting):
            for call in list(self.waiting[queue].values()):
                if call.uniqueid in waiting_now or call.joined_at >= at:
                    continue  # still waiting, or joined after the PBX's picture was asked for
                self._unwait(call)
                chan = channels.get(call.uniqueid)
                if chan is not None and chan.bridged:
                    call.outcome = Outcome.ANSWERED
                    call.answered_at = call.left_at = at
                    call.hold_time = int(at - call.joined_at)
                    call.estimated = True
                    changes.append(CallChanged(call, "resync"))
                else:
                    vanished.setdefault(queue, []).append(call)
        # 2. Calls waiting that we never saw join.
        for w in e.waiting:
            if w.uniqueid in self.calls and self.calls[w.uniqueid].outcome is Outcome.WAITING:
                continue
            call = Call(uniqueid=w.uniqueid, queue=w.queue, joined_at=at - w.wait,
                        caller_num=w.caller_num, caller_name=w.caller_name, channel=w.channel,
                        position=w.position, estimated=True)
            self.calls[w.uniqueid] = call
            self.waiting.setdefault(w.queue, {})[w.uniqueid] = call
            changes.append(CallChanged(call, "joined"))
        # 3. Answered calls whose caller is no longer bridged ended while we were away.
        forced: dict[str, list[Call]] = {}
        for call in [c for c in self.calls.values() if c.outcome is Outcome.ANSWERED]:
            if call.answered_at is not None and call.answered_at > at:
                continue
            chan = channels.get(call.uniqueid)
            if chan is not None and chan.bridged:
                continue
            self.connected.pop((call.queue, call.interface), None)
            if call.estimated:  # its wait is a guess: let the counters place it
                forced.setdefault(call.queue, []).append(call)
                continue
            call.outcome = Outcome.COMPLETED
            call.ended_at = at
            call.talk_time = int(at - (call.answered_at or at))
            call.estimated = True
            counters = self._counters(call.queue)
            counters.completed += 1
            if (call.hold_time or 0) <= self.config(call.queue).servicelevel:
                counters.completed_in_sl += 1
            self._finish(call)
            changes.append(CallChanged(call, "completed"))
        # 4. Asterisk's counters settle what began and ended while we were away.
        for qc in e.counters:
            changes += self._reconcile(qc, vanished.pop(qc.queue, []),
                                       forced.pop(qc.queue, []), at)
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
        changes.append(LinkStateChanged(True, "resynchronised", at))
        changes += [QueueChanged(q) for q in self.queues()]
        return changes

    def _settle(self, call: Call, outcome: Outcome, in_sl: bool, at: float) -> list[Change]:
        """Close a call we lost sight of, as the PBX's counters say it ended."""
        sl = self.config(call.queue).servicelevel
        seen_wait = max(0, int(at - call.joined_at))
        call.estimated = True
        call.left_at = call.ended_at = at
        call.hold_time = min(seen_wait, sl) if in_sl else max(seen_wait, sl + 1)
        counters = self._counters(call.queue)
        if outcome is Outcome.ABANDONED:
            counters.abandoned += 1
            counters.abandoned_in_sl += in_sl
        elif outcome is Outcome.COMPLETED:
            call.answered_at = at
            call.talk_time = 0
            counters.completed += 1
            counters.completed_in_sl += in_sl
        call.outcome = outcome
        self._finish(call)
        return [CallChanged(call, outcome.value)]

    def _reconcile(self, qc: ev.QueueCounters, vanished: list[Call], completed: list[Call],
                   at: float) -> list[Change]:
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
        if base is None or qc.completed < base[0].completed or qc.abandoned < base[0].abandoned:
            # First sight of this PBX, or its counters were reset: nothing to compare with.
            if base is not None:
                changes.append(Anomaly(at, f"queue {qc.queue}: PBX counters were reset"))
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
                self._synthetic += 1
                call = Call(uniqueid=f"unseen-{self._synthetic}", queue=queue, joined_at=at,
                            estimated=True)
                self.calls[call.uniqueid] = call
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
