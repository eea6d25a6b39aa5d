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

The IO edge is :mod:`callcenter.pbx.sim.server`; originates to citizens and supervisor
phones, ChanSpy and MixMonitor are :mod:`callcenter.pbx.sim.outbound`.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import structlog

from callcenter.pbx.sim.admin import AdminActions
from callcenter.pbx.sim.model import (
    AFTER,
    CALLER_TRANSITIONS,
    DIALPLAN,
    GONE,
    RINGING_CALLER,
    TALKING_CALLER,
    WAITING,
    AgentCall,
    AgiRun,
    Attempt,
    Call,
    Channel,
    CitizenCall,
    IllegalTransition,
    Leg,
    Member,
    PbxConfig,
    Phone,
    Queue,
    Recording,
    Reservation,
    SpyCall,
)
from callcenter.pbx.sim.outbound import OutboundCalls
from callcenter.pbx.sim.wire import (
    AGENT,
    AGENT_SETTLE,
    BRIDGE_FIELDS,
    CALL,
    CAUSE_TEXT,
    CID_PRES,
    DEFAULT_RING,
    DEFAULT_TALK,
    DEVSTATE_NAMES,
    DEVSTATE_TEXT,
    HANGUP_LAG,
    IDLE,
    JOIN_DELAY,
    NOT_INUSE,
    RECHECK,
    RING_SCALE,
    RINGING,
    TALKING,
    TIMER_LAG,
    UNKNOWN,
    Action,
    ActionFields,
    Frame,
    error_frame,
    fmt_hms,
    fmt_num,
    local_parts,
    mask_number,
    parse_callerid,
    response_frame,
)
from callcenter.pbx.traffic import (
    CallSource,
    CallSpec,
    CitizenModel,
)

log = structlog.get_logger(__name__)

#: Seconds an operator consults the second operator before completing an attended transfer.
CONSULT_S = 3.0


# --------------------------------------------------------------------------- the core


class Pbx(OutboundCalls, AdminActions):
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
        #: Asterisk's queue_log, one line per step of every queue visit, in its own format
        #: (``time|callid|queue|agent|event|data...``); the IO edge may write it to a file.
        self.queue_log: list[str] = []
        #: (callid, queue) of visits app_queue counted completed when the operator's device
        #: went idle (Redirect, '*') whose AgentComplete and queue_log end line never came,
        #: because the process died first: queue_log alone shows them cut off.
        self.unlogged_completed: list[tuple[str, str]] = []
        self._qlog("NONE", "NONE", "NONE", "QUEUESTART")
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
                                    f"agent{phone.ext}", state_interface=(
                                        f"Custom:agent{phone.ext}" if c.custom_states else ""))
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

    def _qlog(self, callid: str, queue: str, agent: str, event: str, *data: object) -> None:
        """One queue_log line, as app_queue's ast_queue_log() writes it."""
        self.queue_log.append("|".join([str(int(self.now)), callid, queue, agent, event,
                                        *(str(d) for d in data)]))

    def restart(self) -> None:
        """Asterisk killed and started again: every channel and queue call is gone with no
        end event and no queue_log end line; counters restart at 0; persistent members
        come back; a QUEUESTART line opens the new run.  (The IO edge drops the AMI
        sessions: the process that held them is gone.)"""
        for ch in self.channels.values():  # callers in the dialplan (survey) too
            if isinstance(ch.owner, Call) and ch.owner.state != GONE:
                call = ch.owner
                call.state = GONE
                self.unlogged_completed += [(call.c2.uniqueid, leg.queue.name)
                                            for leg in call.pending]
                call.pending.clear()
        for q in self.queues.values():
            for call in q.callers:
                call.state = GONE
                for att in call.attempts:
                    att.live = False
            q.callers.clear()
            q.ringing.clear()
            q.reset()
        for phone in self.phones.values():
            call = phone.call
            if isinstance(call, Call):
                call.state = GONE
                call.counted = True
                for att in call.attempts:
                    att.live = False
            phone.call = None
            self._set_phone(phone, IDLE)
            for m in phone.memberships.values():
                m.in_call = False
                m.calls = 0
                m.last_call = 0
        self.channels.clear()
        self.started = self.now
        self._qlog("NONE", "NONE", "NONE", "QUEUESTART")
        for q in self.queues.values():
            self._update_avail(q)

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
        parts = local_parts(interface)
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
                f"PausedReason: {m.reason}\r\nRinginuse: 0\r\nWrapuptime: {m.wrapuptime}\r\n")

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
            now_i = int(self.now)
            state = "NOT_INUSE" if any(
                not (self._wrap(q, m) and m.last_call and now_i - self._wrap(q, m) < m.last_call)
                for m in q.members.values() if m.status <= NOT_INUSE and not m.paused
            ) else "INUSE"
            self._cached_device(f"Queue:{q.name}_avail", state)

    def _member_statuses(self, phone: Phone) -> None:
        """The phone's own device changed: ``QueueMemberStatus`` for each member that
        watches it (one watching a ``Custom:`` device hears of that device instead)."""
        for m in phone.memberships.values():
            if not m.custom_state:
                self._emit("QueueMemberStatus", AGENT, self._member_body(m))

    #: What a phone sets its ``Custom:`` device to in each of its states (custom_states).
    PHONE_DEVICE_STATES: ClassVar[Mapping[str, str]] = MappingProxyType(
        {IDLE: "NOT_INUSE", RINGING: "RINGING", TALKING: "INUSE"})

    def _phone_custom(self, phone: Phone, state: str) -> None:
        """With ``custom_states``: the phone sets the ``Custom:`` devices its members
        watch to ``state`` (a device name state), each only when it changes."""
        if not self.config.custom_states:
            return
        value = DEVSTATE_NAMES[state]
        for device in sorted({m.state_interface for m in phone.memberships.values()
                              if m.custom_state}):
            if self._custom.get(device) != value:
                self.set_device_state(device, state)

    @staticmethod
    def _refresh_idle(m: Member) -> None:
        """Keep ``queue.idle`` = unpaused members whose phone is idle (a cheap first filter)."""
        if m.paused or m.removed or m.phone.state != IDLE:
            m.queue.idle.pop(m.interface, None)
        else:
            m.queue.idle[m.interface] = m

    def _set_phone(self, phone: Phone, state: str, *, device_now: bool = True) -> None:
        """The phone's state; its ``Custom:`` device follows at once (the phone itself
        rang, answered or hung up), or with ``device_now=False`` after the step that
        changed it (app_queue hung up a ring: the device state reaches the queue through
        Asterisk's device-state task, after the step's own events; trace g's abandons
        show QueueCallerLeave before the member's status 1)."""
        phone.state = state
        for m in phone.memberships.values():
            self._refresh_idle(m)
        if device_now:
            self._phone_custom(phone, self.PHONE_DEVICE_STATES[state])
        elif self.config.custom_states:
            self._at(self.now, self._phone_device_follows, phone)

    def _phone_device_follows(self, phone: Phone) -> None:
        self._phone_custom(phone, self.PHONE_DEVICE_STATES[phone.state])

    def add_member(self, queue: str, interface: str, membername: str = "", penalty: int = 0,
                   paused: bool = False, reason: str = "", state_interface: str = "",
                   wrapuptime: int = 0, announce: bool = True) -> str:
        """QueueAdd; returns '' or Asterisk's error text.  ``wrapuptime`` > 0 is the
        member's own wrap-up, which wins over the queue's (app_queue ``get_wrapuptime``).
        ``announce=False``: no QueueMemberAdded reaches any client, as a service sees a
        member whose event it never got (added while its link was cut and reloaded at
        a boot after its picture was taken, or a frame it could not read)."""
        q = self.queues.get(queue)
        if q is None:
            return "Unable to add interface to queue: No such queue"
        if interface in q.members:
            return "Unable to add interface: Already there"
        phone = self._phone(interface)
        m = Member(q, membername or interface, interface, state_interface or interface, penalty,
                   int(self.now), phone, max(0, wrapuptime))
        m.custom = self._custom
        if m.custom_state and self.config.custom_states:
            # the phone set its device before signing in (trace g's members join at 1)
            self._custom.setdefault(m.state_interface, NOT_INUSE)
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
        if announce:
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

    @staticmethod
    def _wrap(q: Queue, m: Member) -> int:
        """get_wrapuptime(): the member's own wrap-up when set, else the queue's."""
        return m.wrapuptime or q.cfg.wrapuptime

    def _available(self, q: Queue, m: Member) -> bool:
        """is_member_available() with ringinuse=no: idle phone, not paused, out of wrap-up."""
        if m.interface not in q.idle or m.status > NOT_INUSE:
            return False
        wrap = self._wrap(q, m)
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
        c1.set(context=c.caller_context, app="Wait", appdata=fmt_num(spec.patience))
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

    def _flow_target(self, call: Call) -> Queue | None:
        """The second queue of the call's flow, while it is not there yet."""
        spec = call.spec
        target = self.queues.get(spec.flow_queue) if spec.flow_queue else None
        return target if target is not None and target is not call.queue else None

    def _wait_limit(self, call: Call, q: Queue) -> int:
        """Queue()'s timeout argument: the flow's own for an overflow's first queue."""
        if call.spec.flow == "overflow" and self._flow_target(call) is not None:
            return max(1, int(call.spec.flow_after))
        return q.cfg.maxwait

    def _enter_queue(self, call: Call, q: Queue, turn: bool = True) -> None:
        c2 = call.c2
        call.queue = q
        limit = self._wait_limit(call, q)
        c2.set(priority=2, app="Queue", appdata=f"{q.name},r,,,{limit or ''}")
        call.queue = q
        q.callers.append(call)
        call.pos = call.orig_pos = len(q.callers)
        call.start = int(self.now)
        if len(q.callers) == 1:
            self._cached_device(f"Queue:{q.name}", "RINGING")
        self._emit("QueueCallerJoin", AGENT, f"{c2.snap()}Queue: {q.name}\r\n"
                   f"Position: {call.pos}\r\nCount: {len(q.callers)}\r\n")
        self._qlog(c2.uniqueid, q.name, "NONE", "ENTERQUEUE", "", call.spec.number,
                   call.pos)
        self._move(call, "join")
        if limit:
            self._at(self.now + limit, self._expire, (call, call.start, q))
        if turn:
            self._try_turn(call)

    def _leave_queue(self, call: Call, abandon: bool, why: str = "ABANDON") -> None:
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
            self._qlog(call.c2.uniqueid, q.name, "NONE", why, call.pos, call.orig_pos, held)
        elif why == "EXITWITHKEY":
            self._qlog(call.c2.uniqueid, q.name, "NONE", why, "0", call.pos, call.orig_pos,
                       int(self.now) - call.start)
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
        limit = self._wait_limit(call, q)
        if limit and now_i >= call.start + limit:
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
            a2.set(app="Wait", appdata=fmt_num(ring))
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
            self._set_phone(phone, IDLE, device_now=False)
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
        self._qlog(call.c2.uniqueid, q.name, m.name, "RINGNOANSWER", ms)
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
        # the phone is answered before app_queue hears of it: its device first (trace g)
        self._phone_custom(phone, "INUSE")
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
        self._qlog(c2.uniqueid, q.name, m.name, "CONNECT", call.hold, a1.uniqueid,
                   int(self.now - att.start))
        self._move(call, "answer")
        call.member, call.a1, call.a2, call.connect_int = m, a1, a2, now_i
        call.counted = False
        call.leg_no += 1
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
            a2.set(priority=3, appdata=fmt_num(talk))
        caller_ends = (not spec.patience_from_arrival and self.traffic is not None
                       and self.traffic.caller_ends_call(spec))
        if spec.kind == "consult":  # an attended transfer's second operator answered
            self._at(self.now + AGENT_SETTLE + CONSULT_S, self._attended_done,
                     (call, call.leg_no, caller_ends, talk))
            return
        if spec.flow in ("blind", "redirect", "attended") and self._flow_target(call):
            self._at(self.now + AGENT_SETTLE + min(spec.flow_after, talk), self._transfer,
                     (call, call.leg_no))
            return
        if spec.flow in ("survey", "survey_star"):
            caller_ends = False  # the operator leaves; the caller goes on to the survey
        self._at(self.now + AGENT_SETTLE + talk, self._talk_over,
                 (call, caller_ends, call.leg_no))

    def _bridge_event(self, name: str, bridge: str, count: int, ch: Channel) -> None:
        self._emit(name, CALL, f"BridgeUniqueid: {bridge}\r\n{BRIDGE_FIELDS}"
                   f"BridgeNumChannels: {count}\r\nBridgeVideoSourceMode: none\r\n{ch.snap()}")

    def _bridge_destroy(self, bridge: str) -> None:
        self._emit("BridgeDestroy", CALL, f"BridgeUniqueid: {bridge}\r\n{BRIDGE_FIELDS}"
                   "BridgeNumChannels: 0\r\nBridgeVideoSourceMode: none\r\n")

    def _talk_over(self, arg: tuple[Call, bool, int]) -> None:
        call, caller_ends, leg = arg
        if call.state != TALKING_CALLER or leg != call.leg_no:
            return
        if caller_ends:
            self.caller_hangup(call, own=True)
        elif call.spec.flow == "survey_star":
            self._agent_star(call)
        else:
            self._agent_hangup(call, caller_stays=call.spec.flow == "survey")

    def _transfer(self, arg: tuple[Call, int]) -> None:
        """The operator (or the console) moves a talking caller to the flow's queue."""
        call, leg = arg
        target = self._flow_target(call)
        if call.state != TALKING_CALLER or leg != call.leg_no or target is None:
            return
        if call.spec.flow == "blind":
            self._blind_transfer(call, target)
        elif call.spec.flow == "attended":
            self._attended_transfer(call, target)
        else:
            self._redirect_talking(call, target, "transfer", target.name)

    def _survey(self, call: Call) -> None:
        """Queue(...,c): the caller goes on in the dialplan (the after-call survey)."""
        self._move(call, "leave")
        call.c2.bridge = ""
        call.c2.set(priority=3, app="Read", appdata="survey")
        self._at(self.now + max(1.0, call.spec.flow_after), self._caller_gone, call)

    def _agent_star(self, call: Call) -> None:
        """The operator leaves with the ``*`` disconnect (queue option ``h``): the
        operator's channel hangs up and its device goes idle - app_queue counts the
        call completed then (update_status) - but the AgentComplete comes only when
        the caller leaves the survey (the trace's c21)."""
        a1, a2, m = call.a1, call.a2, call.member
        assert a1 is not None and m is not None
        call.pending.append(self._leg(call))
        self._count_completed(call)
        self._bridge_event("BridgeLeave", call.bridge, 1, a1)
        self._hangup(a1)
        self._bridge_event("BridgeLeave", call.bridge, 0, call.c2)
        self._bridge_destroy(call.bridge)
        if a2 is not None:
            self._hangup(a2)
        self._survey(call)
        self._phone_free(m.phone)

    def _leg(self, call: Call) -> Leg:
        shape = self.traffic.partial_complete() if self.traffic is not None else ""
        return Leg(call, bare=shape == "nocaller")

    def _pending_completes(self, call: Call) -> None:
        """The AgentComplete (Reason caller, TalkTime to now) and COMPLETECALLER of every
        visit the caller moved on from: app_queue sends them when its channel hangs up."""
        for leg in call.pending:
            q, m = leg.queue, leg.member
            talk = int(self.now) - leg.connect_int
            self._emit("AgentComplete", AGENT,
                       ("" if leg.bare else call.c2.snap())
                       + f"Queue: {q.name}\r\nInterface: {m.interface}\r\n"
                       f"MemberName: {m.name}\r\nHoldTime: {leg.hold}\r\n"
                       f"TalkTime: {talk}\r\nReason: caller\r\n")
            self._qlog(call.c2.uniqueid, q.name, m.name, "COMPLETECALLER", leg.hold, talk,
                       leg.orig_pos)
        call.pending.clear()

    def _blind_transfer(self, call: Call, target: Queue) -> None:
        """AMI BlindTransfer of the operator's channel to ``target``@transfer, in the
        recorded order: BlindTransfer, AgentComplete (Reason transfer, BLINDTRANSFER
        in queue_log), the bridge torn down, the caller joins ``target``, the
        operator's channels hang up and its device goes idle, then the new queue rings."""
        c2, a1, a2, m = call.c2, call.a1, call.a2, call.member
        assert a1 is not None and m is not None
        context, exten = "transfer", target.name
        self._emit("BlindTransfer", CALL,
                   f"Result: Success\r\n{a1.render('Transferer')}{c2.render('Transferee')}"
                   f"BridgeUniqueid: {call.bridge}\r\n{BRIDGE_FIELDS}"
                   "BridgeNumChannels: 2\r\nBridgeVideoSourceMode: none\r\nIsExternal: Yes\r\n"
                   f"Context: {context}\r\nExtension: {exten}\r\n")
        self._complete(call, "transfer", (exten, context))
        self._bridge_event("BridgeLeave", call.bridge, 1, c2)
        self._bridge_event("BridgeLeave", call.bridge, 0, a1)
        self._bridge_destroy(call.bridge)
        if a2 is not None:
            self._hangup_req(a2, soft=False)
        self._move(call, "redirect")
        c2.bridge = ""
        c2.set(context=context, exten=exten, priority=1)
        self._enter_queue(call, target, turn=False)
        self._hangup(a1)
        if a2 is not None:
            self._hangup_req(a2, soft=True)
            self._hangup(a2)
        self._phone_free(m.phone)
        self._try_turn(call)

    def _attended_transfer(self, call: Call, target: Queue) -> None:
        """The operator's attended transfer (AMI Atxfer) to ``target``@transfer: the caller
        is held while a consultation leg - a Local channel pair with Uniqueids of its
        own - joins ``target`` as a caller of its own (AMI-NOTES.md)."""
        m = call.member
        assert m is not None
        spec = CallSpec(at=self.now, number=m.phone.ext, name=m.name,
                        hotline=call.spec.hotline, category=call.spec.category,
                        ivr_path=call.spec.ivr_path, queue=target.name, ring=2.0,
                        talk=call.spec.talk, kind="consult")
        consult = Call(spec, target)
        consult.joined_to = call
        base = f"Local/{target.name}@transfer-{self._next_local():08x}"
        link = call.c1.linkedid
        c1 = consult.c1 = self._new_channel(base + ";1", 0, "transfer", target.name, link,
                                            call.c1.vars, consult)
        c2 = consult.c2 = self._new_channel(base + ";2", 4, "transfer", target.name, link,
                                            call.c1.vars, consult)
        self._chan("MusicOnHoldStart", call.c2, "Class: default\r\n")
        self._chan("Newchannel", c1)
        self._chan("Newchannel", c2)
        for ch in (c1, c2):
            ch.set(cid_num=m.phone.ext, cid_name=m.name)
        self._local_bridge(c1, c2, "transfer", target.name, "Yes")
        c2.set(state=6)
        c1.set(state=6)
        self._chan("Newstate", c2)
        self._chan("Newstate", c1)
        self._enter_queue(consult, target)

    def _attended_done(self, arg: tuple[Call, int, bool, float]) -> None:
        """The first operator hangs up after the consultation: AttendedTransfer, the
        first visit's AgentComplete (Reason transfer, ATTENDEDTRANSFER in queue_log),
        the first operator's channels go; the caller talks on with the second
        operator, whose visit is the consultation leg's (its own Uniqueid)."""
        consult, leg, caller_ends, talk = arg
        orig = consult.joined_to
        if (consult.state != TALKING_CALLER or leg != consult.leg_no or orig is None
                or orig.state != TALKING_CALLER or orig.a1 is None or consult.a1 is None):
            return
        a1, a2, m = orig.a1, orig.a2, orig.member
        assert m is not None
        bridge = self._bridge_id()
        self._chan("MusicOnHoldStop", orig.c2)
        self._emit("AttendedTransfer", CALL,
                   f"Result: Success\r\n{a1.render('OrigTransferer')}"
                   f"OrigBridgeUniqueid: {orig.bridge}\r\n{consult.c1.render('SecondTransferer')}"
                   f"DestType: Bridge\r\nDestBridgeUniqueid: {bridge}\r\n"
                   f"{orig.c2.render('Transferee')}{consult.a1.render('TransferTarget')}"
                   "IsExternal: Yes\r\n")
        self._complete(orig, "transfer", ("BRIDGE", bridge), kind="ATTENDEDTRANSFER")
        self._bridge_event("BridgeLeave", orig.bridge, 1, orig.c2)
        self._bridge_event("BridgeLeave", orig.bridge, 0, a1)
        self._bridge_destroy(orig.bridge)
        self._hangup(a1)
        if a2 is not None:
            self._hangup(a2)
        self._move(orig, "leave")
        orig.c2.set(app="Bridge", appdata="")
        orig.c2.bridge = consult.c1.bridge = bridge
        self._emit("BridgeCreate", CALL, f"BridgeUniqueid: {bridge}\r\n{BRIDGE_FIELDS}"
                   "BridgeNumChannels: 0\r\nBridgeVideoSourceMode: none\r\n")
        self._bridge_event("BridgeEnter", bridge, 1, orig.c2)
        self._bridge_event("BridgeEnter", bridge, 2, consult.c1)
        self._phone_free(m.phone)
        self._at(self.now + talk, self._talk_over, (consult, caller_ends, consult.leg_no))

    def _after_end(self, call: Call) -> None:
        """A consultation leg ended: the caller it carried hangs up with it; one that was
        never answered gives the caller back to the first operator."""
        orig, call.joined_to = call.joined_to, None
        if orig is None:
            return
        if orig.state == AFTER:
            self.caller_hangup(orig)
        elif orig.state == TALKING_CALLER:
            self._chan("MusicOnHoldStop", orig.c2)
            self._at(self.now + 5.0, self._talk_over, (orig, False, orig.leg_no))

    def _redirect_talking(self, call: Call, target: Queue | None, context: str,
                          exten: str) -> None:
        """AMI Redirect of a talking caller's channel (the console's transfer), as the
        trace's c19 shows: no transfer event; the caller leaves the bridge and joins
        ``target`` (or goes on in the dialplan); the operator's channels hang up and its
        device goes idle, which is when app_queue counts the first call completed; that
        call's AgentComplete (Reason caller) comes only when the caller hangs up."""
        c2, a1, a2, m = call.c2, call.a1, call.a2, call.member
        assert a1 is not None and m is not None
        call.pending.append(self._leg(call))
        self._count_completed(call)
        self._bridge_event("BridgeLeave", call.bridge, 1, c2)
        self._move(call, "redirect")
        c2.bridge = ""
        c2.set(context=context, exten=exten, priority=1)
        if target is not None:
            self._enter_queue(call, target)
        else:
            self._move(call, "leave")
            c2.set(app="Playback", appdata="")
            self._at(self.now + self.config.after_queue_hold, self._caller_gone, call)
        self._bridge_event("BridgeLeave", call.bridge, 0, a1)
        self._bridge_destroy(call.bridge)
        self._hangup(a1)
        if a2 is not None:
            self._hangup(a2)
        self._phone_free(m.phone)

    def _complete(self, call: Call, reason: str, transfer: tuple[str, str] = ("", ""),
                  kind: str = "BLINDTRANSFER") -> None:
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
        event = {"agent": "COMPLETEAGENT", "caller": "COMPLETECALLER"}.get(reason)
        if event is not None:
            self._qlog(call.c2.uniqueid, q.name, m.name, event, call.hold, talk, call.orig_pos)
        else:
            self._qlog(call.c2.uniqueid, q.name, m.name, kind, *transfer, call.hold,
                       talk, call.orig_pos)
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

    def _agent_hangup(self, call: Call, caller_stays: bool = False) -> None:
        """The operator hangs up: the recorded order of a COMPLETEAGENT.  With
        ``caller_stays`` (``Queue(...,c)``) the caller goes on to the survey."""
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
        if caller_stays:
            self._survey(call)
            self._phone_free(call.member.phone)
            return
        self._hangup_req(c2, soft=True)
        self._hangup_req(c1, soft=False)
        self._hangup(c2)
        self._pending_completes(call)  # (the trace: right after the caller's ;2 hangs up)
        self._hangup_req(c1, soft=True)
        self._hangup(c1)
        self._move(call, "hangup")
        self._phone_free(call.member.phone)
        self._after_end(call)
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
            self._pending_completes(call)
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
            self._pending_completes(call)
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
        self._after_end(call)

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
        target = self._flow_target(call) if call.spec.flow == "overflow" else None
        self._leave_queue(call, abandon=why == "timeout",
                          why="EXITWITHTIMEOUT" if why == "timeout" else "EXITWITHKEY")
        self._move(call, "leave")
        if why == "timeout" and target is not None:
            self._enter_queue(call, target)  # the dialplan's next Queue(), same channel
            return
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

        Interrupting Queue() counts as an abandon in app_queue, as a hang-up would.  A
        caller talking to an operator leaves the bridge (see :meth:`_redirect_talking`).
        """
        if call.state == GONE:
            return False
        if call.state == TALKING_CALLER:
            self._redirect_talking(call, self.queues.get(exten), context, exten)
            return True
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

    def hold(self, interface: str, on: bool = True) -> bool:
        """The operator's phone puts its queue call on hold (or takes it back): ``Hold`` /
        ``Unhold`` on the operator's channel, with the call's ``Linkedid``, as chan_pjsip
        raises them on a re-INVITE (Asterisk 12+); the caller hears music meanwhile.
        False when the operator is on no queue call."""
        phone = self.phones.get(self._phone(interface).device)
        call = phone.call if phone is not None else None
        if not isinstance(call, Call) or call.state != TALKING_CALLER or call.a1 is None:
            return False
        self._chan("Hold" if on else "Unhold", call.a1, "MusicClass: default\r\n" if on else "")
        self._chan("MusicOnHoldStart" if on else "MusicOnHoldStop", call.c2,
                   "Class: default\r\n" if on else "")
        return True

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
        a2.set(priority=3, app="Wait", appdata=fmt_num(length))
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
        f = ActionFields(action)
        name = f.get("action").lower()
        aid = f.get("actionid")
        handler = self._handlers().get(name)
        if handler is None:
            return error_frame(aid, "Invalid/unknown command")
        return handler(f, aid)

    def _handlers(self) -> dict[str, Callable[[ActionFields, str], str]]:
        return {
            "queuestatus": self._act_queue_status, "queuesummary": self._act_queue_summary,
            "queueadd": self._act_queue_add, "queueremove": self._act_queue_remove,
            "queuepause": self._act_queue_pause, "queuereset": self._act_queue_reset,
            "originate": self._act_originate, "hangup": self._act_hangup,
            "redirect": self._act_redirect, "coreshowchannels": self._act_core_show_channels,
            "command": self._act_command, "setvar": self._act_setvar,
            "mixmonitor": self._act_mixmonitor,
            **self.admin_handlers(self._act_command),  # CoreSettings, ModuleCheck, ... (admin.py)
        }

    def _act_mixmonitor(self, f: ActionFields, aid: str) -> str:
        """app_mixmonitor's manager action: MixMonitorStart now, MixMonitorStop at hang-up."""
        name = f.get("channel")
        if not name:
            return error_frame(aid, "No channel specified")
        ch = self.channels.get(name)
        if ch is None:
            return error_frame(aid, "No such channel")
        file = f.get("file") or f"{ch.uniqueid}.wav"
        if name not in self._mixmon:
            self._mixmon[name] = (file, self.now, f.get("options"))
            self._chan("MixMonitorStart", ch)
        return response_frame(aid)

    def _act_queue_add(self, f: ActionFields, aid: str) -> str:
        queue, interface = f.get("queue"), f.get("interface")
        if not queue or not interface:
            return error_frame(aid, "'Queue' and 'Interface' not specified.")
        try:
            penalty = int(f.get("penalty") or 0)
        except ValueError:
            return error_frame(aid, "Invalid penalty")
        try:
            wrapuptime = int(f.get("wrapuptime") or 0)
        except ValueError:
            return error_frame(aid, "Invalid wrapuptime")
        err = self.add_member(queue, interface, f.get("membername"), penalty,
                              f.flag("paused"), f.get("reason"), f.get("stateinterface"),
                              wrapuptime)
        return error_frame(aid, err) if err else response_frame(aid, Message="Added interface to queue")

    def _act_queue_remove(self, f: ActionFields, aid: str) -> str:
        queue, interface = f.get("queue"), f.get("interface")
        if not queue or not interface:
            return error_frame(aid, "Need 'Queue' and 'Interface' parameters.")
        err = self.remove_member(queue, interface)
        return error_frame(aid, err) if err else response_frame(aid, Message="Removed interface from queue")

    def _act_queue_pause(self, f: ActionFields, aid: str) -> str:
        interface, paused = f.get("interface"), f.get("paused")
        if not interface or not paused:
            return error_frame(aid, "Need 'Interface' and 'Paused' parameters.")
        on = f.flag("paused")
        err = self.pause_member(interface, on, f.get("reason"), f.get("queue"))
        if err:
            return error_frame(aid, err)
        return response_frame(aid, Message=f"Interface {'paused' if on else 'unpaused'} successfully")

    def _act_queue_reset(self, f: ActionFields, aid: str) -> str:
        err = self.reset_queue(f.get("queue"))
        return error_frame(aid, err) if err else response_frame(aid,
                                                      Message="Queue stats reset successfully")

    def _act_queue_status(self, f: ActionFields, aid: str) -> str:
        qname, member = f.get("queue"), f.get("member")
        tail = f"ActionID: {aid}\r\n" if aid else ""
        now_i = int(self.now)
        out = [response_frame(aid, EventList="start", Message="Queue status will follow")]
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
                           f"Wrapuptime: {m.wrapuptime}\r\n{tail}\r\n")
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

    def _act_queue_summary(self, f: ActionFields, aid: str) -> str:
        qname = f.get("queue")
        tail = f"ActionID: {aid}\r\n" if aid else ""
        now_i = int(self.now)
        out = [response_frame(aid, EventList="start", Message="Queue summary will follow")]
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

    def _act_command(self, f: ActionFields, aid: str) -> str:
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
        head = response_frame(aid, Message="Command output follows")[:-2]
        return f"{head}{body}\r\n"

    def _act_core_show_channels(self, f: ActionFields, aid: str) -> str:
        head = f"ActionID: {aid}\r\n" if aid else ""
        out = [response_frame(aid, EventList="start", Message="Channels will follow")]
        for ch in self.channels.values():
            out.append(f"Event: CoreShowChannel\r\n{head}{ch.snap()}Application: {ch.app}\r\n"
                       f"ApplicationData: {ch.appdata}\r\n"
                       f"Duration: {fmt_hms(self.now - ch.created)}\r\nBridgeId: {ch.bridge}\r\n\r\n")
        out.append(f"Event: CoreShowChannelsComplete\r\n{head}EventList: Complete\r\n"
                   f"ListItems: {len(self.channels)}\r\n\r\n")
        return "".join(out)

    def _act_setvar(self, f: ActionFields, aid: str) -> str:
        name, value, channel = f.get("variable"), f.get("value"), f.get("channel")
        if not name:
            return error_frame(aid, "No variable specified")
        if name.upper().startswith("DEVICE_STATE(") and name.endswith(")"):
            err = self.set_device_state(name[13:-1], value)
            return error_frame(aid, err) if err else response_frame(aid, Message="Variable Set")
        if channel:
            ch = self.channels.get(channel)
            if ch is None:
                return error_frame(aid, "Channel specified does not exist")
            ch.set(vars={**ch.vars, name: value})
        return response_frame(aid, Message="Variable Set")

    def _act_hangup(self, f: ActionFields, aid: str) -> str:
        name = f.get("channel")
        if not name:
            return error_frame(aid, "No channel specified")
        if not self.hangup_channel(name):
            return error_frame(aid, "No such channel")
        return response_frame(aid, Message="Channel Hungup")

    def _act_redirect(self, f: ActionFields, aid: str) -> str:
        name, exten = f.get("channel"), f.get("exten")
        if not name or not exten:
            return error_frame(aid, "Channel and Exten not specified")
        ch = self.channels.get(name)
        call = ch.owner if ch is not None else None
        if not isinstance(call, Call) or ch not in (call.c1, call.c2):
            return error_frame(aid, "Channel specified does not exist")
        if not self.redirect(call, f.get("context") or self.config.inbound_context, exten):
            return error_frame(aid, "Redirect failed")
        return response_frame(aid, Message="Redirect successful")

    def _act_originate(self, f: ActionFields, aid: str) -> str:
        target = f.get("channel")
        if not target:
            return error_frame(aid, "Channel not specified")
        variables: dict[str, str] = {}
        for item in f.variables:
            key, _, value = item.partition("=")
            variables[key.lstrip("_").upper()] = value
        parts = local_parts(target)
        number, name = parse_callerid(f.get("callerid"))
        c = self.config
        if parts and parts[1] in (c.outbound_context, c.callback_context):
            return self._originate_citizen(f, aid, parts[0], parts[1], variables, (number, name))
        if parts and f"Local/{parts[0]}@{parts[1]}" in self.supervisors:
            if f.get("application").lower() != "chanspy" or not f.get("data"):
                return error_frame(aid, "Originate failed")
            spy = SpyCall(parts[0], aid, f.get("data"), (number, name))
            self._at(self.now, self._spy_dial, spy)
            return response_frame(aid, Message="Originate successfully queued")

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
            response = response_frame(aid, Message="Originate successfully queued")
            log.debug("pbx_sim.call_injected", caller=mask_number(spec.number),
                      queue=self._queue_for(spec).name)
            self._at(self.now, lambda s: self.inject_call(s, aid), spec)
            return response
        phone = self.phones.get(f"Local/{parts[0]}@{parts[1]}") if parts else None
        if phone is None:  # only the simulated Local operator phones can be called
            return error_frame(aid, "Originate failed")
        self._at(self.now, lambda _: self.originate_agent(
            phone, aid, f.get("context") or "default", f.get("exten") or "s", num("TALK"),
            num("RINGDELAY")), None)
        return response_frame(aid, Message="Originate successfully queued")

    # ------------------------------------------------------------------ introspection

    def counters(self, queue: str) -> dict[str, float]:
        """Asterisk's in-memory counters of one queue, as QueueParams reports them."""
        q = self.queues[queue]
        return {"completed": q.completed, "abandoned": q.abandoned,
                "completed_in_sl": q.completed_in_sl, "abandoned_in_sl": q.abandoned_in_sl,
                "holdtime": q.holdtime, "talktime": q.talktime,
                "sl_perf": round(q.sl_perf, 1), "sl_perf2": round(q.sl_perf2, 1),
                "waiting": len(q.callers)}
