"""Typed domain events, translated from AMI frames.

Theory of operation
-------------------
The AMI link hands over each frame as a plain ``dict[str, str]`` plus the time it
was read.  :func:`to_event` turns the frames the hotline cares about into small
immutable dataclasses that carry their own timestamp ``at``; everything else
returns ``None``.  A frame that names a known event but lacks a field we need
raises :class:`MalformedEvent`, which the consumer logs and skips.

Nothing here reads a clock or touches IO, so traces, the simulator and a live
Asterisk all go through exactly the same translation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from acd.queue_log import QueueLogEntry

Headers = Mapping[str, str]


class MalformedEvent(ValueError):
    """A known AMI event is missing a field or carries an unusable value."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Event:
    at: float


@dataclass(frozen=True, slots=True)
class CallerJoined(Event):
    """QueueCallerJoin: the caller entered Queue(); the call is *offered*."""

    queue: str
    uniqueid: str
    channel: str
    caller_num: str
    caller_name: str
    position: int
    variables: Mapping[str, str] = field(default_factory=dict)
    linkedid: str = ""  # the call's oldest channel (Hold / Unhold name it)


@dataclass(frozen=True, slots=True)
class CallerLeft(Event):
    """QueueCallerLeave: the caller left the waiting list (answered, abandoned or exited)."""

    queue: str
    uniqueid: str


@dataclass(frozen=True, slots=True)
class CallerAbandoned(Event):
    """QueueCallerAbandon: Asterisk's record_abandoned() ran for this caller."""

    queue: str
    uniqueid: str
    hold_time: int
    original_position: int


@dataclass(frozen=True, slots=True)
class AgentRung(Event):
    """AgentCalled: a member's device is ringing for a waiting caller."""

    queue: str
    uniqueid: str
    interface: str
    member: str
    caller_num: str
    caller_name: str
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentAnswered(Event):
    """AgentConnect: the caller is connected to an operator; ``hold_time`` is the wait."""

    queue: str
    uniqueid: str
    interface: str
    member: str
    hold_time: int
    ring_time: int


@dataclass(frozen=True, slots=True)
class AgentCompleted(Event):
    """AgentComplete: the bridged call ended.  ``uniqueid`` may be missing on the wire."""

    queue: str
    uniqueid: str | None
    interface: str
    member: str
    hold_time: int
    talk_time: int
    reason: str


@dataclass(frozen=True, slots=True)
class AgentRingNoAnswer(Event):
    queue: str
    uniqueid: str
    interface: str
    member: str
    ring_ms: int


@dataclass(frozen=True, slots=True)
class AgentDumped(Event):
    """AgentDump: the operator hung up while the caller was being announced."""

    queue: str
    uniqueid: str
    interface: str
    member: str


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """The member fields Asterisk repeats in QueueMember* events and QueueStatus."""

    queue: str
    name: str
    interface: str
    paused: bool
    reason: str
    in_call: bool
    status: int
    calls_taken: int
    wrapuptime: int = 0


@dataclass(frozen=True, slots=True)
class MemberAdded(Event):
    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberRemoved(Event):
    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberPaused(Event):
    """QueueMemberPause: one per queue; ``member.paused`` says pause or unpause."""

    member: MemberInfo


@dataclass(frozen=True, slots=True)
class MemberStatus(Event):
    member: MemberInfo


@dataclass(frozen=True, slots=True)
class PbxBooted(Event):
    """FullyBooted (sent after every login): seconds since the PBX process started
    (``Uptime``) and since its last reload (``LastReload``); None when not given."""

    uptime: int | None
    last_reload: int | None


@dataclass(frozen=True, slots=True)
class CallHeld(Event):
    """Hold (Asterisk 12+, ``main/stasis_channels.c``): ``channel`` put its call on hold
    (the operator's phone; the other side hears music).  ``linkedid`` is the oldest
    channel of the call: the caller's, whose Uniqueid is the queue call's."""

    uniqueid: str
    channel: str
    linkedid: str


@dataclass(frozen=True, slots=True)
class CallUnheld(Event):
    """Unhold: the call put on hold by ``channel`` is taken back."""

    uniqueid: str
    channel: str
    linkedid: str


@dataclass(frozen=True, slots=True)
class AttendedTransferred(Event):
    """AttendedTransfer with ``Result: Success`` (Asterisk 12+, ``main/stasis_bridges.c``):
    the operator joined the caller (``transferee``, a Uniqueid) to the consultation
    leg, whose Uniqueid is its own (AMI-NOTES.md).  ``channels`` and ``uniqueids`` are
    every channel the event names (transferers, target, Local halves)."""

    transferee: str
    channels: tuple[str, ...]
    uniqueids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChannelHungup(Event):
    uniqueid: str
    channel: str
    cause: str


# ---- synthesised by the service (never on the wire)


@dataclass(frozen=True, slots=True)
class LinkChanged(Event):
    """The AMI link went up or down."""

    up: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueueCounters:
    """Asterisk's own in-memory counters from a QueueParams answer (for reconciliation only)."""

    queue: str
    completed: int
    abandoned: int
    servicelevel: int
    sl_perf: float
    sl_perf2: float


@dataclass(frozen=True, slots=True)
class WaitingEntry:
    """A QueueEntry from QueueStatus: a caller waiting right now."""

    queue: str
    uniqueid: str
    channel: str
    caller_num: str
    caller_name: str
    position: int
    wait: int


@dataclass(frozen=True, slots=True)
class ActiveChannel:
    """A CoreShowChannel line."""

    uniqueid: str
    channel: str
    application: str
    bridged: bool
    bridge_id: str = ""


@dataclass(frozen=True, slots=True)
class Resync(Event):
    """The full picture the PBX gave after a (re)connect."""

    counters: tuple[QueueCounters, ...]
    members: tuple[MemberInfo, ...]
    waiting: tuple[WaitingEntry, ...]
    channels: tuple[ActiveChannel, ...]
    has_channels: bool = True  # False when the PBX's channel list was not asked for
    #: Asterisk's queue_log lines up to this moment, when the service can read them
    #: (then every gap is rebuilt from them exactly); None: counters only.
    queue_log: tuple[QueueLogEntry, ...] | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint(Event):
    """Marks where, in the event stream, the PBX answered QueueStatus (see Resync)."""


@dataclass(frozen=True, slots=True)
class RefreshAsked(Event):
    """The service is about to ask the PBX for a QueueStatus in the middle of traffic (a
    :class:`Refresh`): from here until the answer, the state notes every member and
    caller an event names, so that the answer never overrides what those events said."""


@dataclass(frozen=True, slots=True)
class Refresh(Event):
    """A QueueStatus answer asked for in the middle of traffic because an event named a
    member or caller the state did not know.  Applied where the answer's last event
    (QueueStatusComplete) arrives in the event stream; it only adds members and waiting
    callers the state does not know, with the state the PBX gives them.  Counters, known
    visits and known members are never touched (events already account for them)."""

    members: tuple[MemberInfo, ...]
    waiting: tuple[WaitingEntry, ...]


@dataclass(frozen=True, slots=True)
class Tick(Event):
    """Time passes: lets timers (wrap-up end, alert thresholds) fire without sleeping."""


# --------------------------------------------------------------------------- translation


MAX_DURATION_S = 86_400
"""Longest duration a PBX header may carry (a day): wait, talk, ring, wrap-up, service level."""
MAX_COUNT = 10**9
"""Largest count a PBX header may carry: positions, calls taken, Completed, Abandoned."""
DURATION_KEYS = frozenset({"HoldTime", "TalkTime", "RingTime", "Wait", "Wrapuptime",
                           "ServiceLevel"})


def _int(h: Headers, key: str, default: int | None = None) -> int:
    """A whole number from a header: ASCII digits only (Arabic-Indic or full-width digits
    are not numbers), 0 … :data:`MAX_DURATION_S` for durations (:data:`DURATION_KEYS`),
    0 … :data:`MAX_COUNT` for counts.  Anything else raises :class:`MalformedEvent`,
    which the consumer logs and skips (issue 12: HoldTime 2**63 stopped the writer,
    a negative one dated an abandon tomorrow)."""
    raw = h.get(key)
    if raw is None or raw == "":
        if default is None:
            raise MalformedEvent(f"{h.get('Event', '?')}: missing {key}")
        return default
    digits = raw.strip()
    sign = digits[:1] == "-"
    body = digits[1:] if sign else digits
    if not (body.isascii() and body.isdigit()) or len(body) > 19:
        raise MalformedEvent(f"{h.get('Event', '?')}: {key}={raw[:40]!r} is not a number")
    value = -int(body) if sign else int(body)
    high = MAX_DURATION_S if key in DURATION_KEYS else MAX_COUNT
    if not 0 <= value <= high:
        raise MalformedEvent(f"{h.get('Event', '?')}: {key}={value} is out of range 0…{high}")
    return value


def _pct(h: Headers, key: str) -> float:
    """A percentage from a header (``ServicelevelPerf: 23.1``): ASCII, finite, 0 … 100."""
    raw = (h.get(key) or "0").strip()
    if not (raw.isascii() and len(raw) <= 20 and raw.replace(".", "", 1).isdigit()):
        raise MalformedEvent(f"{h.get('Event', '?')}: {key}={raw[:40]!r} is not a percentage")
    value = float(raw)
    if not 0.0 <= value <= 100.0:
        raise MalformedEvent(f"{h.get('Event', '?')}: {key}={value} is out of range 0…100")
    return value


def _req(h: Headers, key: str) -> str:
    value = h.get(key)
    if value is None or value == "":
        raise MalformedEvent(f"{h.get('Event', '?')}: missing {key}")
    return value


def channel_variables(h: Headers) -> dict[str, str]:
    """Channel variables from manager.conf ``channelvars``, as a dict.

    Asterisk 12+ repeats ``ChanVariable: NAME=value`` (one header per variable;
    the link's frames keep every value, see ``Frame.getall``); Asterisk 1.8 sent
    ``ChanVariable(NAME): value``.  Both are understood.
    """
    out: dict[str, str] = {}
    getall = getattr(h, "getall", None)
    values = getall("ChanVariable") if getall is not None else (
        [h["ChanVariable"]] if "ChanVariable" in h else [])
    for item in values:
        name, sep, value = item.partition("=")
        if sep and name:
            out.setdefault(name, value)
    for key, value in h.items():
        if key.startswith("ChanVariable(") and key.endswith(")"):
            out.setdefault(key[13:-1], value)
    return out


def _caller_num(h: Headers) -> str:
    num = h.get("CallerIDNum", "")
    return "" if num == "<unknown>" else num


def _caller_name(h: Headers) -> str:
    name = h.get("CallerIDName", "")
    return "" if name == "<unknown>" else name


def member_info(h: Headers) -> MemberInfo:
    """Member fields of QueueMemberAdded/Removed/Pause/Status and QueueStatus's QueueMember."""
    name = h.get("MemberName") or h.get("Name") or ""
    interface = h.get("Interface") or h.get("Location") or ""
    if not interface:
        raise MalformedEvent(f"{h.get('Event', '?')}: missing Interface")
    return MemberInfo(
        queue=_req(h, "Queue"),
        name=name or interface,
        interface=interface,
        paused=h.get("Paused", "0") == "1",
        reason=h.get("PausedReason", ""),
        in_call=h.get("InCall", "0") == "1",
        status=_int(h, "Status", 0),
        calls_taken=_int(h, "CallsTaken", 0),
        wrapuptime=_int(h, "Wrapuptime", 0),
    )


def _caller_joined(h: Headers, at: float) -> CallerJoined:
    return CallerJoined(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), h.get("Channel", ""), _caller_num(h),
        _caller_name(h), _int(h, "Position", 0), channel_variables(h),
        h.get("Linkedid", ""),
    )


def _caller_left(h: Headers, at: float) -> CallerLeft:
    return CallerLeft(at, _req(h, "Queue"), _req(h, "Uniqueid"))


def _caller_abandoned(h: Headers, at: float) -> CallerAbandoned:
    return CallerAbandoned(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), _int(h, "HoldTime"),
        _int(h, "OriginalPosition", 0),
    )


def _agent_rung(h: Headers, at: float) -> AgentRung:
    return AgentRung(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), _req(h, "Interface"),
        h.get("MemberName") or h["Interface"], _caller_num(h), _caller_name(h),
        channel_variables(h),
    )


def _agent_answered(h: Headers, at: float) -> AgentAnswered:
    return AgentAnswered(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), _req(h, "Interface"),
        h.get("MemberName") or h["Interface"], _int(h, "HoldTime"), _int(h, "RingTime", 0),
    )


def _agent_completed(h: Headers, at: float) -> AgentCompleted:
    return AgentCompleted(
        at, _req(h, "Queue"), h.get("Uniqueid") or None, _req(h, "Interface"),
        h.get("MemberName") or h["Interface"], _int(h, "HoldTime"), _int(h, "TalkTime"),
        h.get("Reason", ""),
    )


def _ring_no_answer(h: Headers, at: float) -> AgentRingNoAnswer:
    return AgentRingNoAnswer(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), _req(h, "Interface"),
        h.get("MemberName") or h["Interface"], _int(h, "RingTime", 0),
    )


def _agent_dumped(h: Headers, at: float) -> AgentDumped:
    return AgentDumped(
        at, _req(h, "Queue"), _req(h, "Uniqueid"), _req(h, "Interface"),
        h.get("MemberName") or h["Interface"],
    )


def _optional_int(h: Headers, key: str) -> int | None:
    raw = h.get(key)
    if raw is None or raw == "":
        return None
    return _int(h, key)


def _fully_booted(h: Headers, at: float) -> PbxBooted:
    return PbxBooted(at, _optional_int(h, "Uptime"), _optional_int(h, "LastReload"))


#: The channel snapshots an AttendedTransfer carries, by header prefix.
TRANSFER_PARTIES = ("OrigTransferer", "SecondTransferer", "Transferee", "TransferTarget",
                    "LocalOne", "LocalTwo", "DestTransferer")


def _attended_transfer(h: Headers, at: float) -> AttendedTransferred | None:
    if h.get("Result", "") != "Success" or not h.get("TransfereeUniqueid"):
        return None  # a failed transfer, or one with no transferee, joins no caller
    named = [p for p in TRANSFER_PARTIES if h.get(p + "Uniqueid")]
    return AttendedTransferred(
        at, h["TransfereeUniqueid"],
        tuple(h[p + "Channel"] for p in named if h.get(p + "Channel")),
        tuple(h[p + "Uniqueid"] for p in named))


def _hangup(h: Headers, at: float) -> ChannelHungup:
    return ChannelHungup(at, _req(h, "Uniqueid"), h.get("Channel", ""), h.get("Cause", ""))


TRANSLATORS: dict[str, Callable[[Headers, float], Event | None]] = {
    "QueueCallerJoin": _caller_joined,
    "QueueCallerLeave": _caller_left,
    "QueueCallerAbandon": _caller_abandoned,
    "AgentCalled": _agent_rung,
    "AgentConnect": _agent_answered,
    "AgentComplete": _agent_completed,
    "AgentRingNoAnswer": _ring_no_answer,
    "AgentDump": _agent_dumped,
    "QueueMemberAdded": lambda h, at: MemberAdded(at, member_info(h)),
    "QueueMemberRemoved": lambda h, at: MemberRemoved(at, member_info(h)),
    "QueueMemberPause": lambda h, at: MemberPaused(at, member_info(h)),
    "QueueMemberPaused": lambda h, at: MemberPaused(at, member_info(h)),  # Asterisk <= 12
    "QueueMemberStatus": lambda h, at: MemberStatus(at, member_info(h)),
    "Hangup": _hangup,
    "Hold": lambda h, at: CallHeld(at, _req(h, "Uniqueid"), h.get("Channel", ""),
                                   h.get("Linkedid", "")),
    "Unhold": lambda h, at: CallUnheld(at, _req(h, "Uniqueid"), h.get("Channel", ""),
                                       h.get("Linkedid", "")),
    "FullyBooted": _fully_booted,
    "AttendedTransfer": _attended_transfer,
}

# Event classes the service asks for; list responses (QueueMember, CoreShowChannel...)
# come back to the action that asked and never reach to_event().
WANTED_EVENTS = frozenset(TRANSLATORS)


def to_event(h: Headers, at: float) -> Event | None:
    """Translate one AMI event frame; ``None`` for frames the hotline ignores."""
    name = h.get("Event")
    if name is None:
        return None
    translate = TRANSLATORS.get(name)
    if translate is None:
        return None
    return translate(h, at)


def refresh_from(at: float, queue_status: list[Headers]) -> Refresh:
    """Build a :class:`Refresh` from a QueueStatus list answer (its members and
    waiting callers; the QueueParams counters are left out on purpose)."""
    picture = resync_from(at, queue_status, None)
    return Refresh(at, picture.members, picture.waiting)


def resync_from(
    at: float, queue_status: list[Headers], channels: list[Headers] | None
) -> Resync:
    """Build a :class:`Resync` from the QueueStatus and CoreShowChannels list answers
    (``channels=None``: the channels were not asked for)."""
    counters: list[QueueCounters] = []
    members: list[MemberInfo] = []
    waiting: list[WaitingEntry] = []
    for h in queue_status:
        kind = h.get("Event")
        if kind == "QueueParams":
            counters.append(
                QueueCounters(
                    _req(h, "Queue"), _int(h, "Completed", 0), _int(h, "Abandoned", 0),
                    _int(h, "ServiceLevel", 0), _pct(h, "ServicelevelPerf"),
                    _pct(h, "ServicelevelPerf2"),
                )
            )
        elif kind == "QueueMember":
            members.append(member_info(h))
        elif kind == "QueueEntry":
            waiting.append(
                WaitingEntry(
                    _req(h, "Queue"), _req(h, "Uniqueid"), h.get("Channel", ""),
                    _caller_num(h), _caller_name(h), _int(h, "Position", 0), _int(h, "Wait", 0),
                )
            )
    active = [
        ActiveChannel(
            _req(h, "Uniqueid"), h.get("Channel", ""), h.get("Application", ""),
            bool(h.get("BridgeId")), h.get("BridgeId", ""),
        )
        for h in channels or ()
        if h.get("Event") == "CoreShowChannel"
    ]
    return Resync(at, tuple(counters), tuple(members), tuple(waiting), tuple(active),
                  channels is not None)
