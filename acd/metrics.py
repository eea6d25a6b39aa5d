"""Hotline figures from per-call records.

Theory of operation
-------------------
Every figure is a pure function of per-call records (:class:`acd.state.Call`, or a
database row with the same attribute names), so the live wallboard, the replay
of a trace, a report for any interval and a rebuild after a restart all compute
the same numbers the same way.  Definitions (see README "Metrics" and
``../shared/METRICS.md``):

* clock start is queue entry (``QueueCallerJoin``); wait is Asterisk's ``HoldTime``;
* **offered** every queue entry; **answered** connected to an operator
  (``AgentConnect``); **completed** answered and ended (``AgentComplete``), as
  Asterisk's ``callscompleted``; **abandoned** as Asterisk's ``callsabandoned``
  (``QueueCallerAbandon``); **exited** left unanswered otherwise (key, transfer);
  **interrupted** answered and cut by a PBX failure (counted answered, never
  completed); **dropped** waiting when the PBX failed (neither answered nor
  abandoned, as in Asterisk's own count);
* 接通率 ``connection_rate`` = answered / settled offered, where settled offered
  leaves out the callers still **waiting** (shown beside it as ``waiting``): a
  caller still in the queue is not yet a lost call;
* 15秒接通率 ``answer_rate_sl`` = answered with wait <= servicelevel / answered;
* ``servicelevel_perf`` = completed in SL / completed (Asterisk's ServicelevelPerf);
* ``servicelevel_perf2`` = (completed in SL + abandoned in SL) / (completed + abandoned);
* ``inclusive_sl`` = answered in SL / offered;
* ``asa_s`` mean wait of answered calls; ``aht_s`` mean talk + wrap-up of completed calls.

Rates are percentages rounded to two decimals; a rate whose denominator is zero
is 0.0, as Asterisk prints it.  Calls are attributed to the interval in which
they joined the queue.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol


class CallLike(Protocol):
    queue: str
    joined_at: float
    outcome: str
    hold_time: int | None
    answered_at: float | None
    ended_at: float | None
    talk_time: int | None
    wrap_s: float


#: Outcomes that were connected to an operator (an ``interrupted`` visit was answered,
#: then the PBX died before it ended).
ANSWERED = ("answered", "completed", "interrupted")


def pct(num: float, den: float) -> float:
    return round(100.0 * num / den, 2) if den else 0.0


@dataclass(slots=True)
class Figures:
    offered: int = 0
    answered: int = 0
    completed: int = 0
    abandoned: int = 0
    exited: int = 0
    interrupted: int = 0
    dropped: int = 0
    waiting: int = 0
    answered_within_sl: int = 0
    completed_in_sl: int = 0
    abandoned_in_sl: int = 0
    short_abandons: int = 0
    connection_rate: float = 0.0
    connection_rate_excl_short: float = 0.0
    answer_rate_sl: float = 0.0
    servicelevel_perf: float = 0.0
    servicelevel_perf2: float = 0.0
    inclusive_sl: float = 0.0
    abandon_rate: float = 0.0
    asa_s: float = 0.0
    aht_s: float = 0.0
    avg_talk_s: float = 0.0
    max_wait_s: int = 0
    asterisk_holdtime: int = 0
    asterisk_talktime: int = 0
    estimated: int = 0
    wait_total_s: float = 0.0  # sums behind the averages, so figures can be combined
    talk_total_s: float = 0.0
    handle_total_s: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def figures(calls: Iterable[CallLike], servicelevel: int = 15,
            short_abandon_s: int = 0) -> Figures:
    """All figures for one set of calls (one queue, or several with one service level)."""
    f = Figures()
    waits = 0
    handle = 0.0
    talk = 0
    answered_order: list[tuple[float, int]] = []
    completed_order: list[tuple[float, int]] = []
    first_end = float("inf")  # the first completion or abandon (app_queue's reset point)
    for c in calls:
        f.offered += 1
        f.estimated += bool(getattr(c, "estimated", False))
        outcome = str(c.outcome)
        hold = c.hold_time or 0
        if outcome in ANSWERED:
            f.answered += 1
            waits += hold
            if hold <= servicelevel:
                f.answered_within_sl += 1
            answered_order.append((c.answered_at or 0.0, hold))
            f.max_wait_s = max(f.max_wait_s, hold)
            if outcome == "completed":
                f.completed += 1
                t = c.talk_time or 0
                talk += t
                handle += t + (c.wrap_s or 0.0)
                completed_order.append((c.ended_at or 0.0, t))
                first_end = min(first_end, c.ended_at or 0.0)
                if hold <= servicelevel:
                    f.completed_in_sl += 1
            elif outcome == "interrupted":
                f.interrupted += 1
        elif outcome == "abandoned":
            first_end = min(first_end, c.ended_at or c.joined_at)
            f.abandoned += 1
            f.max_wait_s = max(f.max_wait_s, hold)
            if hold <= servicelevel:
                f.abandoned_in_sl += 1
            if hold < short_abandon_s:
                f.short_abandons += 1
        elif outcome == "exited":
            f.exited += 1
        elif outcome == "dropped":
            f.dropped += 1
        elif outcome == "waiting":
            f.waiting += 1
    f.wait_total_s, f.talk_total_s, f.handle_total_s = float(waits), float(talk), handle
    _rates(f)
    # In time order (stable: equal times keep the order the calls came in).
    answered_order.sort(key=_first)
    completed_order.sort(key=_first)
    f.asterisk_holdtime = smoothed_holdtime(answered_order, first_end)
    f.asterisk_talktime = smoothed((t for _, t in completed_order), first_is_value=True)
    return f


def _first(sample: tuple[float, int]) -> float:
    return sample[0]


def smoothed_holdtime(samples: Iterable[tuple[float, int]], first_end: float) -> int:
    """app_queue's ``recalc_holdtime()``: each answer's wait is taken as it is while the
    queue has neither completed nor abandoned a call (before ``first_end``), and smoothed
    after that.  ``samples``: (answered at, wait) in time order."""
    value = 0
    for at, hold in samples:
        value = hold if at < first_end else (3 * value + hold) >> 2
    return value


def smoothed(samples: Iterable[int], first_is_value: bool = False) -> int:
    """app_queue's running value: new = (3 * old + sample) / 4 in integers.

    ``first_is_value``: the first sample is taken as it is (``update_queue()`` sets
    ``talktime`` outright when ``callscompleted == 1``; ``recalc_holdtime()`` always
    smooths, from 0)."""
    value = 0
    for i, s in enumerate(samples):
        value = s if first_is_value and i == 0 else (3 * value + s) >> 2
    return value


def by_queue(
    calls: Iterable[CallLike],
    servicelevel: Callable[[str], int] = lambda q: 15,
    short_abandon_s: int = 0,
) -> tuple[dict[str, Figures], Figures]:
    """Figures per queue and overall.  Overall uses each queue's own threshold."""
    groups: dict[str, list[CallLike]] = defaultdict(list)
    for c in calls:
        groups[c.queue].append(c)
    per = {q: figures(cs, servicelevel(q), short_abandon_s) for q, cs in sorted(groups.items())}
    return per, combine(per.values())


def combine(parts: Iterable[Figures]) -> Figures:
    """Overall figures from per-queue figures (counts add, rates recomputed)."""
    f = Figures()
    for p in parts:
        for name in _ADDITIVE:
            setattr(f, name, getattr(f, name) + getattr(p, name))
        f.max_wait_s = max(f.max_wait_s, p.max_wait_s)
    _rates(f)
    return f


_ADDITIVE = ("offered", "answered", "completed", "abandoned", "exited", "interrupted",
             "dropped", "waiting",
             "answered_within_sl", "completed_in_sl", "abandoned_in_sl", "short_abandons",
             "estimated", "wait_total_s", "talk_total_s", "handle_total_s")


STORED_FIELDS = (*_ADDITIVE, "max_wait_s")
"""What :func:`combine` reads of a part: a stored part (a day's atoms in ``report_days``)
keeps these and gives back, through :func:`combine`, the very same figures."""


def _rates(f: Figures) -> None:
    """Every rate and average from the counts and totals (see the module docstring)."""
    f.connection_rate = pct(f.answered, f.offered - f.waiting)
    f.connection_rate_excl_short = pct(f.answered, f.offered - f.waiting - f.short_abandons)
    f.answer_rate_sl = pct(f.answered_within_sl, f.answered)
    f.servicelevel_perf = pct(f.completed_in_sl, f.completed)
    f.servicelevel_perf2 = pct(f.completed_in_sl + f.abandoned_in_sl, f.completed + f.abandoned)
    f.inclusive_sl = pct(f.answered_within_sl, f.offered)
    f.abandon_rate = pct(f.abandoned, f.offered)
    f.asa_s = round(f.wait_total_s / f.answered, 2) if f.answered else 0.0
    f.aht_s = round(f.handle_total_s / f.completed, 2) if f.completed else 0.0
    f.avg_talk_s = round(f.talk_total_s / f.completed, 2) if f.completed else 0.0


def interval_start(ts: float, width_s: int, tz: tzinfo) -> datetime:
    """Start of the interval (15 minutes, a day...) holding ``ts``, in local time."""
    local = datetime.fromtimestamp(ts, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if width_s >= 86400:
        return midnight
    offset = int((local - midnight).total_seconds()) // width_s * width_s
    return midnight + timedelta(seconds=offset)


def by_interval(
    calls: Iterable[CallLike],
    width_s: int,
    tz: tzinfo,
    servicelevel: Callable[[str], int] = lambda q: 15,
    short_abandon_s: int = 0,
) -> dict[datetime, tuple[dict[str, Figures], Figures]]:
    """Figures per interval (by queue-entry time): 900 for 15 minutes, 86400 for days."""
    groups: dict[datetime, list[CallLike]] = defaultdict(list)
    for c in calls:
        groups[interval_start(c.joined_at, width_s, tz)].append(c)
    return {start: by_queue(cs, servicelevel, short_abandon_s)
            for start, cs in sorted(groups.items())}


REPLAY_QUEUE_KEYS = (
    "offered", "answered", "abandoned", "answered_within_sl", "connection_rate",
    "answer_rate_sl", "servicelevel_perf", "servicelevel_perf2", "asa_s", "aht_s",
)


def queue_json(f: Figures) -> dict[str, float | int]:
    """The replay/API shape: the required keys first, then the rest."""
    d = f.as_dict()
    out = {k: d[k] for k in REPLAY_QUEUE_KEYS}
    out.update({k: v for k, v in d.items() if k not in out})
    return out


#: Samples the live book runs app_queue's smoothing over: each older sample weighs
#: (3/4)^n, so beyond a few hundred the integer result no longer depends on them.
SMOOTH_TAIL = 400


class MetricsBook:
    """Live figures kept per 15-minute interval, recomputed only where calls changed.

    ``put`` a call whenever it changes; ``figures(start, end)`` combines the
    intervals in range, so "today" and "the last 15 minutes" stay cheap with a
    hundred thousand calls a day.  Same definitions as :func:`figures`.
    """

    def __init__(
        self,
        servicelevel: Callable[[str], int] = lambda q: 15,
        short_abandon_s: int = 0,
        width_s: int = 900,
    ) -> None:
        self.servicelevel = servicelevel
        self.short_abandon_s = short_abandon_s
        self.width_s = width_s
        self._calls: dict[int, dict[str, CallLike]] = defaultdict(dict)
        self._cache: dict[int, dict[str, Figures]] = {}
        # bucket -> queue -> (answered (at, hold) samples, completed (at, talk) samples)
        self._samples: dict[int, dict[str, tuple[list[tuple[float, int]],
                                                  list[tuple[float, int]]]]] = {}

    def bucket(self, ts: float) -> int:
        return int(ts // self.width_s * self.width_s)

    def put(self, call: CallLike) -> None:
        b = self.bucket(call.joined_at)
        self._calls[b][getattr(call, "visit_id", "") or call.uniqueid] = call
        self._cache.pop(b, None)
        self._samples.pop(b, None)

    def _bucket_figures(self, b: int) -> dict[str, Figures]:
        cached = self._cache.get(b)
        if cached is None:
            cached = by_queue(self._calls[b].values(), self.servicelevel, self.short_abandon_s)[0]
            self._cache[b] = cached
        return cached

    def figures(self, start: float, end: float) -> tuple[dict[str, Figures], Figures]:
        """Per queue and overall for calls that joined in [start, end) (interval-aligned).
        Asterisk's smoothed Holdtime/TalkTime are run over the range's last
        :data:`SMOOTH_TAIL` samples (older ones no longer move the integer result)."""
        per_queue: dict[str, list[Figures]] = defaultdict(list)
        buckets = [b for b in sorted(self._calls) if start <= b < end]
        for b in buckets:
            for q, f in self._bucket_figures(b).items():
                per_queue[q].append(f)
        per = {q: combine(fs) for q, fs in sorted(per_queue.items())}
        for q, f in per.items():
            f.asterisk_holdtime = smoothed(self._tail(buckets, q, 0))
            f.asterisk_talktime = smoothed(self._tail(buckets, q, 1), first_is_value=True)
        return per, combine(per.values())

    def _bucket_samples(self, b: int) -> dict[str, tuple[list[tuple[float, int]],
                                                         list[tuple[float, int]]]]:
        cached = self._samples.get(b)
        if cached is None:
            cached = {}
            for c in self._calls[b].values():
                outcome = str(c.outcome)
                if outcome not in ANSWERED:
                    continue
                held, talked = cached.setdefault(c.queue, ([], []))
                held.append((c.answered_at or 0.0, c.hold_time or 0))
                if outcome == "completed":
                    talked.append((c.ended_at or 0.0, c.talk_time or 0))
            for held, talked in cached.values():
                held.sort(key=_first)
                talked.sort(key=_first)
            self._samples[b] = cached
        return cached

    def _tail(self, buckets: list[int], queue: str, which: int) -> list[int]:
        """The last SMOOTH_TAIL samples of one kind, in time order (newest buckets first,
        one bucket more than needed: a call ends after the bucket it joined in)."""
        chosen: list[list[tuple[float, int]]] = []
        count, extra = 0, 1
        for b in reversed(buckets):
            samples = self._bucket_samples(b).get(queue)
            if samples:
                chosen.append(samples[which])
                count += len(samples[which])
            if count >= SMOOTH_TAIL:
                if extra == 0:
                    break
                extra -= 1
        merged = list(heapq.merge(*reversed(chosen), key=_first))
        return [v for _, v in merged[-SMOOTH_TAIL:]]

    def series(self, start: float, end: float) -> list[tuple[int, Figures]]:
        """Overall figures of each interval in [start, end), for trend charts."""
        out = []
        for b in range(self.bucket(start), int(end), self.width_s):
            if b in self._calls:
                out.append((b, combine(self._bucket_figures(b).values())))
            else:
                out.append((b, Figures()))
        return out

    def forget_before(self, ts: float) -> None:
        for b in [b for b in self._calls if b < self.bucket(ts)]:
            del self._calls[b]
            self._cache.pop(b, None)
            self._samples.pop(b, None)

    def __len__(self) -> int:
        return sum(len(c) for c in self._calls.values())
