"""Department assessment (三率 and more) and hotspots, as pure functions of the audit trail.

Theory of operation
-------------------
The work orders' audit records (:class:`~callcenter.orders.lifecycle.AuditRecord`,
table ``work_order_events``) say everything that happened to an order, who did it
and when.  :func:`assess` folds them order by order (in ``seq`` order) and gives
each department a :class:`DepartmentFigures` for the orders it *received* in the
window (a dispatch, a re-dispatch or an accepted return naming it as the lead
department): the cohort.  What became of those orders afterwards (up to the end
of the records) counts for that cohort, so each rate's numerator is a part of its
denominator.  The rules, after Beijing's 接诉即办 monthly ranking:

* 响应率 ``response_rate`` = received orders the department signed for (签收) no
  later than the order's first-response deadline / received orders;
* 按时办结率 ``on_time_rate`` = orders it completed (办结) no later than the handling
  deadline / orders it completed;
* 解决率 ``resolution_rate`` = orders whose latest return-visit answer says
  *solved* / orders with an answer — only the citizen's own key presses
  (``source = citizen_keys``, actor role ``citizen``) count, never an entry by staff;
* 满意率 ``satisfaction_rate`` = answers scoring the department 满意 (3) or 基本满意 (2)
  / answers that scored the department — citizens' keys only, as above;
* 退单率 ``return_rate`` = orders it returned (退单) / received;
* 改派率 ``redispatch_rate`` = orders the centre re-dispatched away from it / received;
* 重办率 ``reopen_rate`` = orders reopened to it after the citizen said *not solved* /
  orders it completed;
* ``overdue``: orders whose first-response or handling deadline passed while it was
  the lead department; ``supervised``: orders put under 督办 while it was the lead.

Rates are percentages with two decimals, ``None`` when the denominator is 0 (a
ranking puts them last).  Hotspots (:func:`hotspots`) count new orders by
category, street and keyword; :func:`bursts` flags a street whose orders in the
last hours far exceed its usual rate (the supervisor's alert).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from callcenter.orders.lifecycle import AnswerSource, AuditRecord, Role, Step, TimerKind

RATE_DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "received": ("受理量", "Orders received", "派给本单位（主办）的工单数：派单、改派、退单后重派。"),
    "response_rate": ("响应率", "Response rate",
                      "在首次响应时限内签收的工单 ÷ 收到的工单 × 100。"),
    "on_time_rate": ("按时办结率", "On-time completion",
                     "在办理时限内办结的工单 ÷ 已办结的工单 × 100。"),
    "resolution_rate": ("解决率", "Resolution rate",
                        ("回访中市民按键表示“已解决”的工单 ÷ 有市民按键回访结果的工单 × 100"
                         "（仅市民本人按键，不含工作人员录入）。")),
    "satisfaction_rate": ("满意率", "Satisfaction rate",
                          ("市民按键对承办单位评“满意”或“基本满意”的次数 ÷ 评价次数 × 100"
                           "（仅市民本人按键）。")),
    "return_rate": ("退单率", "Return rate", "本单位退回的工单 ÷ 收到的工单 × 100。"),
    "redispatch_rate": ("改派率", "Re-dispatch rate",
                        "中心从本单位改派走的工单 ÷ 收到的工单 × 100。"),
    "reopen_rate": ("重办率", "Reopen rate",
                    "市民表示“未解决”后重新交办本单位的工单 ÷ 已办结的工单 × 100。"),
    "overdue": ("超期数", "Overdue", "本单位主办期间首次响应或办理时限已过的工单数。"),
    "supervised": ("督办数", "Supervised", "本单位主办期间被督办的工单数。"),
}
"""key -> (Chinese name, English name, definition): what the page shows one click away."""

RANKED_BY = ("response_rate", "resolution_rate", "satisfaction_rate")
"""三率: the ranking sorts by their mean, best first."""


def rate(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


@dataclass(slots=True)
class DepartmentFigures:
    department: str
    received: int = 0
    responded_in_time: int = 0
    completed: int = 0
    completed_in_time: int = 0
    answered: int = 0  # orders with a citizen's own answer
    solved: int = 0
    scored: int = 0  # citizens' department scores
    satisfied: int = 0
    returned: int = 0
    redispatched: int = 0
    reopened: int = 0
    overdue: int = 0
    supervised: int = 0
    response_rate: float | None = None
    on_time_rate: float | None = None
    resolution_rate: float | None = None
    satisfaction_rate: float | None = None
    return_rate: float | None = None
    redispatch_rate: float | None = None
    reopen_rate: float | None = None
    score: float | None = None  # mean of the 三率 present
    rank: int | None = None

    def finish(self) -> DepartmentFigures:
        self.response_rate = rate(self.responded_in_time, self.received)
        self.on_time_rate = rate(self.completed_in_time, self.completed)
        self.resolution_rate = rate(self.solved, self.answered)
        self.satisfaction_rate = rate(self.satisfied, self.scored)
        self.return_rate = rate(self.returned, self.received)
        self.redispatch_rate = rate(self.redispatched, self.received)
        self.reopen_rate = rate(self.reopened, self.completed)
        present = [v for v in (getattr(self, k) for k in RANKED_BY) if v is not None]
        self.score = round(sum(present) / len(present), 2) if present else None
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Event(NamedTuple):
    """One audit record as the fold reads it: times as unix seconds (deadlines in
    ``data`` too), step and role as their plain values.  :func:`event_of` makes one
    from an :class:`AuditRecord`; the database edge builds them straight from rows."""

    order_id: str
    seq: int
    step: str
    role: str
    unit: str
    at: float
    data: Mapping[str, Any]


DEADLINE_KEYS = ("first_response_due", "handling_due", "deadline")


def event_of(r: AuditRecord) -> Event:
    data = {k: (v.timestamp() if isinstance(v, datetime) else v) for k, v in r.data.items()}
    return Event(r.order_id, r.seq, str(r.step), str(r.role), r.unit, r.at.timestamp(), data)


def citizens_own(r: Event) -> bool:
    """A return-visit answer the citizen keyed in themselves (never one staff entered)."""
    return r.role == _CITIZEN and r.data.get("source") == _CITIZEN_KEYS


_CITIZEN, _CITIZEN_KEYS = str(Role.CITIZEN), str(AnswerSource.CITIZEN_KEYS)


def _seq(r: Event) -> int:
    return r.seq


@dataclass(slots=True)
class _Track:
    """What the fold remembers about one order while reading its records."""

    lead: str | None = None
    first_due: float | None = None
    handling_due: float | None = None
    cohort: set[str] = field(default_factory=set)  # departments that received it in the window
    responded: set[str] = field(default_factory=set)
    done: dict[str, bool] = field(default_factory=dict)  # completed by -> in time (latest)
    answer: tuple[str, bool] | None = None  # (department, solved), the latest citizen answer
    flags: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


RECEIVE_STEPS = frozenset({Step.DISPATCH, Step.REDISPATCH, Step.ACCEPT_RETURN})

# The steps as plain strings: the fold compares millions of them.
_ACCEPT, _REDISPATCH, _HANDLING, _RETURN, _COMPLETE, _EVALUATE, _REOPEN, _OVERDUE, \
    _SUPERVISE = (str(s) for s in (Step.ACCEPT, Step.REDISPATCH, Step.ACCEPT_HANDLING,
                                   Step.RETURN, Step.COMPLETE, Step.EVALUATE, Step.REOPEN,
                                   Step.FLAG_OVERDUE, Step.SUPERVISE))
_RECEIVE = frozenset(str(s) for s in RECEIVE_STEPS)
_DEADLINE_TIMERS = frozenset({str(TimerKind.FIRST_RESPONSE), str(TimerKind.HANDLING)})


COUNTS = ("received", "responded_in_time", "completed", "completed_in_time", "answered",
          "solved", "scored", "satisfied", "returned", "redispatched", "reopened", "overdue",
          "supervised")
"""The counts behind every rate: sums over orders, so any set of orders' figures is the
sum of their parts (:func:`total`) and a stored part (``order_facts``) adds up exactly."""


def assess(records: Iterable[Event], start: float, end: float
           ) -> dict[str, DepartmentFigures]:
    """Each department's figures for the orders it received in ``[start, end)`` (unix
    seconds), ranked: :func:`total` of :func:`fold_order` over each order's records."""
    return total(part for recs in by_order(records).values()
                 for part in fold_order(recs, start, end).values())


def by_order(records: Iterable[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for r in records:
        out[r.order_id].append(r)
    return out


def total(parts: Iterable[DepartmentFigures]) -> dict[str, DepartmentFigures]:
    """Parts (:func:`fold_order`'s, or stored ones) summed per department, the rates
    worked out, ranked."""
    out: dict[str, DepartmentFigures] = {}
    for p in parts:
        f = out.get(p.department)
        if f is None:
            f = out[p.department] = DepartmentFigures(p.department)
        for k in COUNTS:
            setattr(f, k, getattr(f, k) + getattr(p, k))
    return rank(f.finish() for f in out.values())


def fold_order(recs: list[Event], start: float, end: float) -> dict[str, DepartmentFigures]:
    """One order's part of each department's counts (rates not worked out), for the
    departments that received it in ``[start, end)``.

    The window only decides which receipts (:data:`RECEIVE_STEPS` naming a department)
    put a department in the cohort: for any window that holds *all* of an order's
    receipts the part is the same, which is what lets ``order_facts`` store it once."""
    recs.sort(key=_seq)
    t = _Track()
    scores: list[tuple[str, int]] = []
    for r in recs:
        step, d, at = r.step, r.data, r.at
        if step == _ACCEPT:
            t.first_due, t.handling_due = d.get("first_response_due"), d.get("handling_due")
        elif step in _RECEIVE:
            previous = t.lead
            t.lead = str(d.get("department") or "") or None
            if step == _REDISPATCH and previous and previous in t.cohort:
                t.flags["redispatched"].add(previous)
            if t.lead and start <= at < end:
                t.cohort.add(t.lead)
        elif step == _HANDLING:
            if t.first_due is None or at <= t.first_due:
                t.responded.add(r.unit)
        elif step == _RETURN:
            t.flags["returned"].add(r.unit)
        elif step == _COMPLETE:
            t.done[r.unit] = t.handling_due is None or at <= t.handling_due
        elif step == _EVALUATE or step == _REOPEN:
            if t.lead and citizens_own(r):
                t.answer = (t.lead, step == _EVALUATE)
                score = d.get("satisfaction_department")
                if isinstance(score, int) and t.lead in t.cohort:
                    scores.append((t.lead, score))
            if step == _REOPEN:
                if t.lead:  # whoever heard the answer, the order went back
                    t.flags["reopened"].add(t.lead)
                if "handling_due" in d:
                    t.handling_due = d["handling_due"]
        elif step == _OVERDUE:
            if t.lead and d.get("timer") in _DEADLINE_TIMERS:
                t.flags["overdue"].add(t.lead)
        elif step == _SUPERVISE and t.lead:
            t.flags["supervised"].add(t.lead)
    out: dict[str, DepartmentFigures] = {}
    for name in t.cohort:
        f = out[name] = DepartmentFigures(name, received=1)
        f.responded_in_time = int(name in t.responded)
        if name in t.done:
            f.completed = 1
            f.completed_in_time = int(t.done[name])
        if t.answer is not None and t.answer[0] == name:
            f.answered = 1
            f.solved = int(t.answer[1])
        for flag in ("returned", "redispatched", "reopened", "overdue", "supervised"):
            setattr(f, flag, int(name in t.flags.get(flag, ())))
    for name, score in scores:  # only departments of the cohort score
        f = out[name]
        f.scored += 1
        f.satisfied += score >= 2
    return out


def receipts(recs: Iterable[Event]) -> list[float]:
    """When the order was received by a named department (the moments a window must
    hold for :func:`fold_order`'s part to be the window's)."""
    return [r.at for r in recs if r.step in _RECEIVE and r.data.get("department")]


def rank(figures: Iterable[DepartmentFigures]) -> dict[str, DepartmentFigures]:
    """Best 三率 mean first (ties by name); departments without any rate come last."""
    ordered = sorted(figures, key=lambda f: (f.score is None, -(f.score or 0.0), f.department))
    for i, f in enumerate(ordered, 1):
        f.rank = i if f.score is not None else None
    return {f.department: f for f in ordered}


# --------------------------------------------------------------------------- hotspots

STREET = re.compile(r"[\u4e00-\u9fa5A-Za-z0-9]{1,12}?(?:大道|大街|街道|路|街|巷|胡同|弄|里|镇|乡|村|社区|小区)")
"""A street-ish place name in a free-text location (the first match counts)."""

DEFAULT_KEYWORDS = ("噪音", "噪声", "停水", "停电", "漏水", "油烟", "垃圾", "占道", "违建", "违章建筑",
                    "拖欠工资", "欠薪", "路灯", "井盖", "积水", "堵车", "供暖", "暖气", "物业", "施工",
                    "异味", "污水", "电梯", "退费", "食品安全", "充电桩", "扰民", "停车")
"""Keywords counted in the order text when the config names none."""


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What a hotspot counts of one order: when accepted, its category, street, text."""

    at: datetime
    category: str
    street: str
    text: str


def street_of(location: str) -> str:
    m = STREET.search(location or "")
    return m.group(0) if m else ""


def new_orders(records: Iterable[Event], tz: Any) -> list[NewOrder]:
    """Every accepted order (受理 record) as a :class:`NewOrder` (local time ``tz``)."""
    out = []
    for r in records:
        if r.step == Step.ACCEPT:
            d = r.data
            location = str(d.get("location") or d.get("caller_address") or "")
            out.append(NewOrder(datetime.fromtimestamp(r.at, tz), str(d.get("category") or ""),
                                street_of(location),
                                str(d.get("text") or "")))
    return out


def count(orders: Iterable[NewOrder], keywords: Sequence[str]) -> dict[str, Counter[str]]:
    c: dict[str, Counter[str]] = {"categories": Counter(), "streets": Counter(),
                                  "keywords": Counter()}
    for o in orders:
        if o.category:
            c["categories"][o.category] += 1
        if o.street:
            c["streets"][o.street] += 1
        for k in keywords:
            if k in o.text:
                c["keywords"][k] += 1
    return c


def hotspots(orders: Sequence[NewOrder], week_start: datetime, keywords: Sequence[str] = (),
             top: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Top categories, streets and keywords of the week from ``week_start`` (local
    Monday), each beside last week and the same ISO week a year before."""
    keywords = tuple(keywords) or DEFAULT_KEYWORDS
    year, week, _ = week_start.isocalendar()
    try:
        ago = datetime.fromisocalendar(year - 1, week, 1).replace(tzinfo=week_start.tzinfo)
    except ValueError:  # week 53 that the year before does not have
        ago = datetime.fromisocalendar(year - 1, 52, 1).replace(tzinfo=week_start.tzinfo)
    spans = {"this_week": week_start, "last_week": week_start - timedelta(days=7),
             "last_year": ago}
    counts = {name: count((o for o in orders if a <= o.at < a + timedelta(days=7)), keywords)
              for name, a in spans.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("categories", "streets", "keywords"):
        now = counts["this_week"][kind]
        out[kind] = [{"name": name, "this_week": n,
                      "last_week": counts["last_week"][kind].get(name, 0),
                      "last_year": counts["last_year"][kind].get(name, 0),
                      "change": n - counts["last_week"][kind].get(name, 0)}
                     for name, n in now.most_common(top)]
    return out


@dataclass(frozen=True, slots=True)
class Burst:
    """A sudden rise: ``count`` orders about ``street`` in the last ``hours``."""

    street: str
    count: int
    usual: float  # the street's mean count per such span over the baseline days
    since: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"street": self.street, "count": self.count, "usual": round(self.usual, 2),
                "since": self.since.isoformat()}


def bursts(orders: Iterable[NewOrder], now: datetime, *, hours: float = 2.0,
           baseline_days: int = 7, min_count: int = 5, factor: float = 3.0) -> list[Burst]:
    """Streets with at least ``min_count`` new orders in the last ``hours`` and more
    than ``factor`` times their usual count per ``hours`` over the ``baseline_days``
    before; most orders first."""
    since = now - timedelta(hours=hours)
    base_from = since - timedelta(days=baseline_days)
    recent: Counter[str] = Counter()
    before: Counter[str] = Counter()
    for o in orders:
        if not o.street:
            continue
        if since <= o.at <= now:
            recent[o.street] += 1
        elif base_from <= o.at < since:
            before[o.street] += 1
    spans = baseline_days * 24 / hours
    out = [Burst(s, n, before[s] / spans, since) for s, n in recent.items()
           if n >= min_count and n > factor * before[s] / spans]
    return sorted(out, key=lambda b: (-b.count, b.street))


def period_rows(figures: Mapping[str, DepartmentFigures], names: Mapping[str, str]
                ) -> list[dict[str, Any]]:
    """The ranking as table rows, the department's display name beside its id."""
    return [f.as_dict() | {"name": names.get(d, d)} for d, f in figures.items()]
