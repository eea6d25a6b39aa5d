"""Call-centre reports: the tables a 12345 centre publishes, as pure functions of records.

Theory of operation
-------------------
Every table is built from the per-call records (:class:`acd.metrics.CallLike`) and
the agents' state log, with the figures of :mod:`acd.metrics`: a call is grouped
once by its *atom* ``(interval, queue, hotline, entry)`` and :func:`acd.metrics.figures`
runs over each atom with the queue's own service level; every other table (per
interval, per queue, per hotline, per entry, overall) is :func:`acd.metrics.combine`
of atoms.  That is the same sum the live wallboard's :class:`~acd.metrics.MetricsBook`
makes of its 15-minute buckets and the same definition ``callcenter replay`` prints,
so the three agree figure for figure (the smoothed ``asterisk_*`` values are
app_queue's running averages and exist only for one queue's whole stream).

Intervals (``PERIODS``): ``15m``, ``hour``, ``day``, ``week`` (Monday) and ``month``
in the centre's time zone; a call belongs to the interval in which it joined the
queue.  Agents' times come from the append-only state log (``agent_states``: at,
agent, old, new, step, reason), clipped to the window, so a report for any shift
can be rebuilt after a restart.

Nothing here reads the clock or the database: the caller passes the window and
``now`` (the end of the data, for a window still running).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any, Protocol

from acd.centres import pbx_of
from acd.metrics import ANSWERED, CallLike, Figures, combine, figures, pct

PERIODS = ("15m", "hour", "day", "week", "month")
"""Report intervals, narrowest first."""

ABANDON_BUCKETS = (5, 10, 15, 30, 60, 120)
"""Upper bounds (s, exclusive) of the abandon-time distribution; the last bucket is open."""


# --------------------------------------------------------------------------- definitions

@dataclass(frozen=True, slots=True)
class Definition:
    """A figure's name on screen and in files, and what it counts (shown one click away)."""

    key: str
    zh: str
    en: str
    rule: str  # the definition, Chinese first
    unit: str = ""  # "%", "s" or "" (a count)


DEFINITIONS: dict[str, Definition] = {d.key: d for d in (
    Definition("offered", "呼入量", "Offered",
               "进入队列的呼叫数（QueueCallerJoin），IVR 内的时间不计等待。Every queue entry."),
    Definition("answered", "接通量", "Answered",
               "接通到话务员的呼叫数（AgentConnect，接通时计）。Connected to an operator."),
    Definition("abandoned", "放弃量", "Abandoned",
               "Asterisk 的 callsabandoned（QueueCallerAbandon：排队中挂机、超时、空队列等）。"),
    Definition("short_abandons", "短时放弃", "Short abandons",
               "等待不足 short_abandon_s 秒即放弃的呼叫，单独列出，不悄悄剔除。"),
    Definition("connection_rate", "接通率", "Connection rate",
               "接通量 ÷ 呼入量 × 100。Answered / offered.", "%"),
    Definition("connection_rate_excl_short", "接通率（剔除短时放弃）",
               "Connection rate excl. short abandons",
               "接通量 ÷ (呼入量 − 短时放弃) × 100。", "%"),
    Definition("answer_rate_sl", "15秒接通率", "15-s answer rate",
               "等待 ≤ 服务水平阈值（15 秒）接通的呼叫 ÷ 接通量 × 100（接通时计）。"
               "Answered within the threshold / answered.", "%"),
    Definition("inclusive_sl", "15秒接通率（含放弃）", "Inclusive service level",
               "等待 ≤ 15 秒接通 ÷ 呼入量 × 100（QueueMetrics 的 inclusive SLA；"
               "VICIdial 的报表也以呼入为分母）。", "%"),
    Definition("servicelevel_perf", "ServicelevelPerf", "ServicelevelPerf",
               "Asterisk：阈值内完成 ÷ 已完成（callscompleted，挂机时计）× 100。"
               "Divides by completed calls, not by offered.", "%"),
    Definition("servicelevel_perf2", "ServicelevelPerf2", "ServicelevelPerf2",
               "Asterisk：(阈值内完成 + 阈值内放弃) ÷ (已完成 + 放弃) × 100。", "%"),
    Definition("abandon_rate", "放弃率", "Abandon rate", "放弃量 ÷ 呼入量 × 100。", "%"),
    Definition("asa_s", "平均应答速度", "ASA",
               "已接通呼叫的平均等待秒数（Asterisk HoldTime）。Mean wait of answered calls.",
               "s"),
    Definition("aht_s", "平均处理时长", "AHT",
               "已完成呼叫的平均（通话 + 保持 + 话后整理）秒数；Asterisk 的 TalkTime 已含保持。"
               "Mean talk + hold + wrap-up.", "s"),
    Definition("max_wait_s", "最长等待", "Longest wait",
               "区间内接通或放弃的呼叫中最长的等待秒数。", "s"),
    Definition("calls_taken", "接听量", "Calls taken",
               "该话务员接通的呼叫数（接通时计）。Calls connected to this operator."),
    Definition("talk_s", "通话时长", "Talk",
               "已完成呼叫的通话秒数合计，不含保持（Asterisk 的 TalkTime 减去保持时长）。"
               "Talk excluding hold.", "s"),
    Definition("hold_s", "保持时长", "Hold",
               "已完成呼叫在通话中被保持的秒数合计（AMI Hold 至 Unhold；呼叫在保持中结束则"
               "计到结束）。Time on hold (AMI Hold ... Unhold).", "s"),
    Definition("wrap_s", "话后整理", "Wrap-up", "话后整理（wrap-up）状态的秒数合计。", "s"),
    Definition("agent_aht_s", "平均处理时长", "AHT",
               "（通话 + 保持 + 话后整理）÷ 已完成呼叫数（行业定义：talk + hold + after-call "
               "work）；等于 Asterisk 的 TalkTime（含保持）加话后整理。", "s"),
    Definition("ring_no_answer", "振铃未接", "Ring, no answer",
               "振铃后未接起（RINGNOANSWER，状态 ringing → ready/paused）的次数。"),
    Definition("signed_in_s", "签入时长", "Signed in", "不在“签出”状态的秒数。", "s"),
    Definition("ready_s", "就绪时长", "Ready", "空闲就绪等待来电的秒数。", "s"),
    Definition("paused_s", "示忙时长", "Paused", "示忙（任何原因）的秒数，另按原因分列。", "s"),
    Definition("occupancy", "占用率", "Occupancy",
               "（振铃 + 通话 + 话后整理）÷（就绪 + 振铃 + 通话 + 话后整理）× 100。", "%"),
    Definition("pause_share", "示忙占比", "Pause share", "示忙时长 ÷ 签入时长 × 100。", "%"),
)}

CALL_COLUMNS = ("offered", "answered", "abandoned", "short_abandons", "connection_rate",
                "connection_rate_excl_short", "answer_rate_sl", "inclusive_sl",
                "servicelevel_perf", "servicelevel_perf2", "abandon_rate", "asa_s", "aht_s",
                "max_wait_s")
"""The call figures of every call table, in order."""

AGENT_COLUMNS = ("calls_taken", "talk_s", "hold_s", "wrap_s", "agent_aht_s", "ring_no_answer",
                 "signed_in_s", "ready_s", "paused_s", "occupancy", "pause_share")


# --------------------------------------------------------------------------- intervals

def period_start(moment: datetime, period: str) -> datetime:
    """Start of the ``period`` holding local time ``moment`` (aware)."""
    if period == "15m":
        return moment.replace(minute=moment.minute // 15 * 15, second=0, microsecond=0)
    if period == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


def next_start(start: datetime, period: str) -> datetime:
    """The start of the interval after the one beginning at ``start`` (local wall time)."""
    tz = start.tzinfo
    if period == "15m":
        return (start + timedelta(minutes=15)).astimezone(tz)
    if period == "hour":
        return (start + timedelta(hours=1)).astimezone(tz)
    day = start.date()
    if period == "day":
        day += timedelta(days=1)
    elif period == "week":
        day += timedelta(days=7)
    elif period == "month":
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return datetime.combine(day, time(), tz)


def window(day: date, period: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """The ``day`` / ``week`` / ``month`` holding ``day``: ``[start, end)`` in local time."""
    if period not in ("day", "week", "month"):
        raise ValueError("a report window is a day, a week or a month")
    start = period_start(datetime.combine(day, time(), tz), period)
    return start, next_start(start, period)


def interval_for(period: str) -> str:
    """The rows of a report over ``period``: hours of a day, days of a week or a month."""
    return {"day": "hour", "week": "day", "month": "day"}[period]


def entry_of(call: Any) -> str:
    """How the caller reached the queue: ``direct`` (the number dialled chose it) or
    ``menu`` (keys in the IVR), from the ``IVR_PATH`` the IVR set."""
    path = getattr(call, "ivr_path", "") or ""
    return "direct" if path in ("", "direct") else "menu"


# --------------------------------------------------------------------------- calls

@dataclass(slots=True)
class CallReport:
    """Every call table for one window.  ``intervals`` maps the local start of each
    interval (ISO text) to its overall figures; the dimension tables map a queue,
    hotline number, entry or PBX to figures; ``hours`` counts offered / answered /
    abandoned by hour of day (0-23); ``abandon_times`` counts abandons by wait."""

    start: datetime
    end: datetime
    interval: str
    overall: Figures
    intervals: dict[str, Figures]
    queues: dict[str, Figures]
    hotlines: dict[str, Figures]
    entries: dict[str, Figures]
    hours: list[dict[str, int]]
    abandon_times: list[dict[str, Any]]
    pbxs: dict[str, Figures] = field(default_factory=dict)


def abandon_bucket(wait: int) -> int:
    """Index into :data:`ABANDON_BUCKETS` (``len`` for the open last bucket)."""
    for i, bound in enumerate(ABANDON_BUCKETS):
        if wait < bound:
            return i
    return len(ABANDON_BUCKETS)


def abandon_labels() -> list[str]:
    lows = (0, *ABANDON_BUCKETS)
    return [f"{lo}-{hi}s" for lo, hi in zip(lows, ABANDON_BUCKETS, strict=False)] + [
        f"≥{ABANDON_BUCKETS[-1]}s"]


@dataclass(slots=True)
class Atom:
    """The figures of the calls sharing one 15-minute slice (``joined_at // 900``), queue,
    hotline number, entry and PBX, with their abandon-time counts (:data:`ABANDON_BUCKETS`).
    Every table of a report is a sum of atoms; the database edge may build atoms with
    one grouped query (the test checks it against :func:`atoms_of`).  ``pbx`` is the
    name of the PBX the calls were on (a record stored before several PBXs existed
    names none: the home PBX's)."""

    slice: int
    queue: str
    hotline: str
    entry: str
    figures: Figures
    abandons: list[int]
    pbx: str = ""


def atoms_of(calls: Iterable[CallLike], start: float, end: float,
             servicelevel: Callable[[str], int] = lambda q: 15, short_abandon_s: int = 0,
             queue: str | None = None, *, home: str = "", pbx: str | None = None
             ) -> list[Atom]:
    """Calls that joined in ``[start, end)`` (unix seconds), grouped into atoms, each
    computed by :func:`acd.metrics.figures` with its queue's service level.  A call
    naming no PBX is ``home``'s; ``queue`` / ``pbx`` keep only that queue's / PBX's."""
    groups: dict[tuple[int, str, str, str, str], list[CallLike]] = defaultdict(list)
    for c in calls:
        t = c.joined_at
        on = pbx_of(c, home)
        if start <= t < end and (queue is None or c.queue == queue) and (
                pbx is None or on == pbx):
            groups[(int(t // 900), c.queue, getattr(c, "hotline", "") or "",
                    entry_of(c), on)].append(c)
    out = []
    for (piece, q, hotline, entry, on), cs in groups.items():
        abandons = [0] * (len(ABANDON_BUCKETS) + 1)
        for c in cs:
            if str(c.outcome) == "abandoned":
                abandons[abandon_bucket(c.hold_time or 0)] += 1
        out.append(Atom(piece, q, hotline, entry,
                        figures(cs, servicelevel(q), short_abandon_s), abandons, on))
    return out


def call_report(
    calls: Iterable[CallLike],
    start: datetime,
    end: datetime,
    interval: str,
    servicelevel: Callable[[str], int] = lambda q: 15,
    short_abandon_s: int = 0,
    *,
    queue: str | None = None,
    home: str = "",
    pbx: str | None = None,
) -> CallReport:
    """Every call table for calls that joined in ``[start, end)`` (aware datetimes),
    one row per ``interval`` (one of :data:`PERIODS`); only ``queue`` / ``pbx`` when
    given (a call naming no PBX is ``home``'s)."""
    return report_from_atoms(atoms_of(calls, start.timestamp(), end.timestamp(), servicelevel,
                                      short_abandon_s, queue, home=home, pbx=pbx),
                             start, end, interval)


def report_from_atoms(atoms: Iterable[Atom], start: datetime, end: datetime, interval: str
                      ) -> CallReport:
    """The tables of :class:`CallReport` as sums (:func:`acd.metrics.combine`) of atoms."""
    if interval not in PERIODS:
        raise ValueError(f"interval must be one of {', '.join(PERIODS)}")
    tz = start.tzinfo
    hours = [{"hour": h, "offered": 0, "answered": 0, "abandoned": 0} for h in range(24)]
    abandons = [0] * (len(ABANDON_BUCKETS) + 1)
    slots: dict[int, tuple[str, int]] = {}  # 15-minute slice -> (interval label, local hour)
    groups: list[dict[str, list[Figures]]] = [defaultdict(list) for _ in range(5)]
    every: list[Figures] = []
    for a in atoms:
        slot = slots.get(a.slice)
        if slot is None:  # a 15-minute slice lies in one local hour (offsets are 15-min)
            local = datetime.fromtimestamp(a.slice * 900, tz)
            slot = slots[a.slice] = (period_start(local, interval).isoformat(), local.hour)
        label, hour = slot
        f = a.figures
        for i, key in enumerate((label, a.queue, a.hotline, a.entry, a.pbx)):
            groups[i][key].append(f)
        every.append(f)
        h = hours[hour]
        h["offered"] += f.offered
        h["answered"] += f.answered
        h["abandoned"] += f.abandoned
        for i, n in enumerate(a.abandons):
            abandons[i] += n

    def by(index: int) -> dict[str, Figures]:
        return {k: combine(v) for k, v in sorted(groups[index].items())}

    labels = abandon_labels()
    return CallReport(
        start=start, end=end, interval=interval, overall=combine(every),
        intervals=_all_intervals(start, end, interval, by(0)), queues=by(1), hotlines=by(2),
        entries=by(3), pbxs=by(4), hours=hours,
        abandon_times=[{"wait": labels[i], "abandoned": n} for i, n in enumerate(abandons)],
    )


def _all_intervals(start: datetime, end: datetime, interval: str,
                   found: dict[str, Figures]) -> dict[str, Figures]:
    """Every interval of the window, empty ones included (a chart needs the gaps)."""
    out: dict[str, Figures] = {}
    at = period_start(start, interval)
    while at < end:
        key = at.isoformat()
        out[key] = found.get(key, Figures())
        at = next_start(at, interval)
    for key, f in found.items():  # a DST fold can give labels the walk did not
        out.setdefault(key, f)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- agents

class StateRow(Protocol):
    at: float
    agent: str
    old: str
    new: str
    step: str
    reason: str


@dataclass(slots=True)
class AgentFigures:
    """One operator's figures over a window (see :data:`DEFINITIONS`)."""

    agent: str
    calls_taken: int = 0
    completed: int = 0
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrap_s: float = 0.0
    agent_aht_s: float = 0.0
    ring_no_answer: int = 0
    signed_in_s: float = 0.0
    ready_s: float = 0.0
    ringing_s: float = 0.0
    on_call_s: float = 0.0
    paused_s: float = 0.0
    occupancy: float = 0.0
    pause_share: float = 0.0
    paused_by_reason: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in (
            (name, getattr(self, name)) for name in self.__slots__)} | {
            "paused_by_reason": {r: round(s, 1) for r, s in sorted(self.paused_by_reason.items())}}


RING_NOT_ANSWERED = frozenset({"ring_end", "ring_end_paused"})


Taken = tuple[int, int, float, float]
"""An operator's calls: (taken, completed, talk seconds and hold seconds of the completed)."""


def calls_by_agent(calls: Iterable[CallLike], start: float, end: float) -> dict[str, Taken]:
    """Per operator, :data:`Taken` for the calls answered in ``[start, end)`` (a call
    counts for whoever answered it, when).  Talk is Asterisk's TalkTime, hold included."""
    out: dict[str, Taken] = {}
    for c in calls:
        at = c.answered_at
        name = getattr(c, "agent", "") or ""
        outcome = str(c.outcome)
        if at is None or not name or not start <= at < end or outcome not in ANSWERED:
            continue
        taken, completed, talk, hold = out.get(name, (0, 0, 0.0, 0.0))
        done = outcome == "completed"
        out[name] = (taken + 1, completed + done, talk + ((c.talk_time or 0) if done else 0),
                     hold + ((getattr(c, "on_hold_s", 0.0) or 0.0) if done else 0.0))
    return out


def agent_report(states: Sequence[StateRow], taken: Mapping[str, Taken],
                 start: float, end: float) -> dict[str, AgentFigures]:
    """Per operator over ``[start, end)`` (unix seconds; ``end`` no later than now).

    ``states`` is the state log in time order; rows before ``start`` only set the
    state an agent was in when the window opened.  ``taken`` is
    :func:`calls_by_agent` for the same window.
    """
    out: dict[str, AgentFigures] = {}
    current: dict[str, tuple[str, float, str]] = {}  # agent -> (state, since, reason)

    def get(name: str) -> AgentFigures:
        f = out.get(name)
        if f is None:
            f = out[name] = AgentFigures(name)
        return f

    def close(name: str, until: float) -> None:
        state, since, reason = current[name]
        lo, hi = max(since, start), min(until, end)
        if hi <= lo or state == "logged_out":
            return
        f, span = get(name), hi - lo
        f.signed_in_s += span
        if state == "ready":
            f.ready_s += span
        elif state == "ringing":
            f.ringing_s += span
        elif state == "on_call":
            f.on_call_s += span
        elif state == "wrap_up":
            f.wrap_s += span
        elif state == "paused":
            f.paused_s += span
            key = reason or "—"
            f.paused_by_reason[key] = f.paused_by_reason.get(key, 0.0) + span

    for row in states:
        if row.at >= end:
            break
        if row.agent in current:
            close(row.agent, row.at)
        current[row.agent] = (row.new, row.at, row.reason or "")
        if row.at >= start and row.old == "ringing" and row.step in RING_NOT_ANSWERED:
            get(row.agent).ring_no_answer += 1
    for name in list(current):
        close(name, end)
    for name, (calls_taken, completed, talk, hold) in taken.items():
        f = get(name)
        # talk without hold, so that talk + hold + wrap-up is the time handled
        f.calls_taken, f.completed = calls_taken, completed
        f.talk_s, f.hold_s = float(talk) - hold, float(hold)
    for f in out.values():
        _agent_rates(f)
    return dict(sorted(out.items()))


def _agent_rates(f: AgentFigures) -> None:
    busy = f.ringing_s + f.on_call_s + f.wrap_s
    f.occupancy = pct(busy, busy + f.ready_s)
    f.pause_share = pct(f.paused_s, f.signed_in_s)
    f.agent_aht_s = (round((f.talk_s + f.hold_s + f.wrap_s) / f.completed, 2)
                     if f.completed else 0.0)


AGENT_SUMS = ("calls_taken", "completed", "talk_s", "hold_s", "wrap_s", "ring_no_answer",
              "signed_in_s", "ready_s", "ringing_s", "on_call_s", "paused_s")
"""An operator's figures that add up over days (the rates are worked out after)."""


def agent_days(states: Sequence[StateRow],
               days: Sequence[tuple[float, float, Mapping[str, Taken]]]
               ) -> list[dict[str, AgentFigures]]:
    """:func:`agent_report` for each ``(start, end, taken)`` day, each from the state
    log of the 24 hours before its start on (the state an agent was in at midnight is
    known when it changed within the day before) - the rule every day's figures follow,
    stored or not.  ``states`` in time order, from a day before the first start."""
    ats = [r.at for r in states]
    out = []
    for start, end, taken in days:
        first = bisect_left(ats, start - 86400)
        out.append(agent_report(states[first:], taken, start, end))
    return out


def merge_agents(days: Iterable[Mapping[str, AgentFigures]]) -> dict[str, AgentFigures]:
    """Operators' figures over several days: the day figures summed in day order
    (:data:`AGENT_SUMS`, pauses by reason), the rates worked out from the sums."""
    out: dict[str, AgentFigures] = {}
    for day in days:
        for name, d in day.items():
            f = out.get(name)
            if f is None:
                f = out[name] = AgentFigures(name)
            for k in AGENT_SUMS:
                setattr(f, k, getattr(f, k) + getattr(d, k))
            for reason, s in d.paused_by_reason.items():
                f.paused_by_reason[reason] = f.paused_by_reason.get(reason, 0.0) + s
    for f in out.values():
        _agent_rates(f)
    return dict(sorted(out.items()))


def agent_to_json(f: AgentFigures) -> dict[str, Any]:
    """What ``report_days`` keeps of a day's figures (exact: floats as they are)."""
    return {k: getattr(f, k) for k in AGENT_SUMS} | {"paused_by_reason": f.paused_by_reason}


def agent_from_json(name: str, d: Mapping[str, Any]) -> AgentFigures:
    f = AgentFigures(name, paused_by_reason=dict(d.get("paused_by_reason") or {}))
    for k in AGENT_SUMS:
        setattr(f, k, d[k])
    _agent_rates(f)
    return f


# --------------------------------------------------------------------------- shifts

@dataclass(frozen=True, slots=True)
class Shift:
    """班次: a named daily span of local time; ``end`` <= ``start`` runs past midnight."""

    name: str
    start: time
    end: time

    def span(self, day: date, tz: tzinfo) -> tuple[datetime, datetime]:
        """The shift that begins on ``day``."""
        a = datetime.combine(day, self.start, tz)
        b = datetime.combine(day if self.end > self.start else day + timedelta(days=1),
                             self.end, tz)
        return a, b


DEFAULT_SHIFTS = (Shift("早班", time(8), time(16)), Shift("中班", time(16), time(0)),
                  Shift("夜班", time(0), time(8)))


def parse_shifts(items: Iterable[Mapping[str, Any]]) -> tuple[Shift, ...]:
    """``[{name = "早班", start = "08:00", end = "16:00"}, ...]`` (``ValueError`` if bad)."""
    out = []
    for item in items:
        try:
            out.append(Shift(str(item["name"]), time.fromisoformat(str(item["start"])),
                             time.fromisoformat(str(item["end"]))))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a shift needs name, start and end as HH:MM: {item!r}") from None
    return tuple(out)


def shift_at(moment: datetime, shifts: Sequence[Shift]) -> tuple[Shift, datetime, datetime] | None:
    """The shift running at local time ``moment`` and its span, or None (no shift then)."""
    tz = moment.tzinfo
    if tz is None:
        raise ValueError("shift_at needs an aware datetime")
    for day in (moment.date(), moment.date() - timedelta(days=1)):
        for s in shifts:
            a, b = s.span(day, tz)
            if a <= moment < b:
                return s, a, b
    return None


# --------------------------------------------------------------------------- wallboard

def agent_counts(states: Iterable[str]) -> dict[str, int]:
    """Agents by state, every state named (zero included), for the wallboard."""
    out = dict.fromkeys(("ready", "ringing", "on_call", "wrap_up", "paused", "logged_out"), 0)
    for s, n in Counter(states).items():  # (counted in C: 5,000 tiles a second)
        out[str(s)] = out.get(str(s), 0) + n
    return out


def colour(key: str, value: float, offered: int, thresholds: Mapping[str, Mapping[str, float]]
           ) -> str:
    """``"none"`` when nothing was offered, else ``"red"``, ``"amber"`` or ``"green"``.

    ``thresholds[key]`` holds ``amber`` and ``red`` bounds; a figure where higher
    is better (a rate) turns amber *below* its bound, one where lower is better
    (``abandon_rate``, ``asa_s``, ``aht_s``) *above* (``"higher_is_better": 0``).
    """
    if not offered:
        return "none"
    t = thresholds.get(key)
    if not t:
        return "green"
    better_high = bool(t.get("higher_is_better", key not in LOWER_IS_BETTER))
    for level in ("red", "amber"):
        bound = t.get(level)
        if bound is None:
            continue
        if (value < bound) if better_high else (value > bound):
            return level
    return "green"


LOWER_IS_BETTER = frozenset({"abandon_rate", "asa_s", "aht_s", "max_wait_s"})

DEFAULT_COLOURS: dict[str, dict[str, float]] = {
    "answer_rate_sl": {"amber": 80.0, "red": 60.0},
    "connection_rate": {"amber": 90.0, "red": 80.0},
    "abandon_rate": {"amber": 5.0, "red": 10.0},
    "asa_s": {"amber": 15.0, "red": 30.0},
}
"""Wallboard colour bounds when the config names none (``[reports.colours.<figure>]``)."""


def parse_colours(raw: Any) -> dict[str, dict[str, float]]:
    """The one colour table of the wallboard (every row and card: today, the last 15
    minutes, each queue): :data:`DEFAULT_COLOURS` overlaid with ``[reports.colours]``,
    e.g. ``answer_rate_sl = {amber = 80, red = 60}``.  ``ValueError`` if a bound is not
    a number."""
    out = {k: dict(v) for k, v in DEFAULT_COLOURS.items()}
    try:
        for key, bounds in dict(raw or {}).items():
            out[str(key)] = {str(k): float(v) for k, v in dict(bounds).items()}
    except (TypeError, ValueError):
        raise ValueError("[reports.colours]: each figure is a table {amber = N, red = N}"
                         ) from None
    return out
