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

import bisect
import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, KeysView
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple, Protocol


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


class _Sums:
    """One queue's running sums over one interval: each call's part added when it is
    put and taken away when it is put again, so no figure is ever recomputed from the
    calls.  ``holds``: how many answered or abandoned calls waited each number of
    seconds (their maximum is ``max_wait_s``); ``answers``/``completions``: the
    (answered at, order, wait) and (ended at, order, talk) samples in time order (equal
    times in the order the calls were first put), for app_queue's smoothing."""

    __slots__ = ("answers", "completions", "counts", "holds", "wrap_us")

    def __init__(self) -> None:
        self.counts = [0] * len(_COUNTED)
        self.wrap_us = 0  # completed calls' wrap-up, in whole microseconds (exact sums)
        self.holds: dict[int, int] = {}
        self.answers: list[tuple[float, int, int]] = []
        self.completions: list[tuple[float, int, int]] = []

    def figures(self) -> Figures:
        f = Figures()
        for name, value in zip(_COUNTED, self.counts, strict=True):
            setattr(f, name, value)
        f.wait_total_s = float(f.wait_total_s)
        f.talk_total_s = float(f.talk_total_s)
        f.handle_total_s = f.talk_total_s + self.wrap_us / 1e6
        f.max_wait_s = max(self.holds, default=0)
        _rates(f)
        return f


#: The additive figures a call adds to its interval's sums (``handle_total_s`` is
#: talk plus wrap-up: the wrap-up part is summed apart, in microseconds).
_COUNTED = ("offered", "answered", "completed", "abandoned", "exited", "interrupted",
            "dropped", "waiting", "answered_within_sl", "completed_in_sl",
            "abandoned_in_sl", "short_abandons", "estimated", "wait_total_s",
            "talk_total_s")
_AT = {name: i for i, name in enumerate(_COUNTED)}


class _Part(NamedTuple):
    """What one call adds to its interval, kept so that putting it again can take the
    old part away (the call object itself changes in place, so its old values are gone
    by then).  ``order``: the call's first put, which orders samples of equal time."""

    bucket: int
    queue: str
    order: int
    outcome: str
    hold: int
    talk: int
    wrap_us: int
    estimated: bool
    answered_at: float
    ended_at: float


class MetricsBook:
    """Live figures kept per 15-minute interval as running sums, updated call by call.

    ``put`` a call whenever it changes (the same object again, or a database row with
    the same attribute names): its old part is taken from its interval's sums and its
    new part added, in O(log n) for n calls in the interval.  ``figures(start, end)``
    adds up the intervals in range, so "today" and "the last 15 minutes" stay cheap
    with a hundred thousand calls a day, and the book holds a small record per call
    (:class:`_Part`), not the call.  Same definitions as :func:`figures` (a test puts
    random calls and changes both ways and compares); wrap-up is summed in whole
    microseconds, so ``handle_total_s`` may differ from a float sum in the last digits
    (never in ``aht_s``).  ``forget_before`` lets go of old days (the service keeps
    today and yesterday); ``seal`` lets go of the records of calls that can no longer
    change (the state has let go of them), keeping their sums, so a long-running
    core's book holds a record only per call the state still holds."""

    def __init__(
        self,
        servicelevel: Callable[[str], int] = lambda q: 15,
        short_abandon_s: int = 0,
        width_s: int = 900,
    ) -> None:
        self.servicelevel = servicelevel
        self.short_abandon_s = short_abandon_s
        self.width_s = width_s
        self._parts: dict[str, _Part] = {}  # visit key -> what the call adds now
        self._sums: dict[int, dict[str, _Sums]] = {}  # bucket -> queue -> sums
        self._cache: dict[int, dict[str, Figures]] = {}
        self._order = 0
        self._queues: dict[str, str] = {}  # one string per queue name (not one per call)

    def bucket(self, ts: float) -> int:
        return int(ts // self.width_s * self.width_s)

    def put(self, call: CallLike) -> None:
        key = getattr(call, "visit_id", "") or call.uniqueid  # type: ignore[attr-defined]
        old = self._parts.get(key)
        queue = self._queues.setdefault(call.queue, call.queue)
        if old is None:
            self._order += 1
        part = _Part(self.bucket(call.joined_at), queue,
                     old.order if old is not None else self._order,
                     str(call.outcome), call.hold_time or 0, call.talk_time or 0,
                     round((call.wrap_s or 0.0) * 1e6),
                     bool(getattr(call, "estimated", False)),
                     call.answered_at or 0.0, call.ended_at or 0.0)
        if part == old:
            return
        if old is not None:
            self._add(old, -1)
        self._add(part, 1)
        self._parts[key] = part

    def _add(self, p: _Part, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) one call's part; the mirror of
        :func:`figures` for one call."""
        per = self._sums.setdefault(p.bucket, {})
        sums = per.get(p.queue)
        if sums is None:
            sums = per[p.queue] = _Sums()
        self._cache.pop(p.bucket, None)
        sl = self.servicelevel(p.queue)
        counts = sums.counts
        counts[_AT["offered"]] += sign
        counts[_AT["estimated"]] += sign * p.estimated
        outcome, hold = p.outcome, p.hold
        if outcome in ANSWERED:
            counts[_AT["answered"]] += sign
            counts[_AT["wait_total_s"]] += sign * hold
            counts[_AT["answered_within_sl"]] += sign * (hold <= sl)
            _count(sums.holds, hold, sign)
            _sample(sums.answers, (p.answered_at, p.order, hold), sign)
            if outcome == "completed":
                counts[_AT["completed"]] += sign
                counts[_AT["talk_total_s"]] += sign * p.talk
                sums.wrap_us += sign * p.wrap_us
                counts[_AT["completed_in_sl"]] += sign * (hold <= sl)
                _sample(sums.completions, (p.ended_at, p.order, p.talk), sign)
            elif outcome == "interrupted":
                counts[_AT["interrupted"]] += sign
        elif outcome == "abandoned":
            counts[_AT["abandoned"]] += sign
            _count(sums.holds, hold, sign)
            counts[_AT["abandoned_in_sl"]] += sign * (hold <= sl)
            counts[_AT["short_abandons"]] += sign * (hold < self.short_abandon_s)
        elif outcome in ("exited", "dropped", "waiting"):
            counts[_AT[outcome]] += sign
        if not counts[_AT["offered"]]:  # its last call moved to another queue or interval
            del per[p.queue]
            if not per:
                del self._sums[p.bucket]

    def _bucket_figures(self, b: int) -> dict[str, Figures]:
        cached = self._cache.get(b)
        if cached is None:
            cached = self._cache[b] = {q: s.figures()
                                       for q, s in sorted(self._sums.get(b, {}).items())}
        return cached

    def figures(self, start: float, end: float) -> tuple[dict[str, Figures], Figures]:
        """Per queue and overall for calls that joined in [start, end) (interval-aligned).
        Asterisk's smoothed Holdtime/TalkTime are run over the range's last
        :data:`SMOOTH_TAIL` samples (older ones no longer move the integer result); for a
        range ending in the past they are approximate once :meth:`drop_old_samples` has
        run (the service asks only for ranges ending now)."""
        per_queue: dict[str, list[Figures]] = defaultdict(list)
        buckets = [b for b in sorted(self._sums) if start <= b < end]
        for b in buckets:
            for q, f in self._bucket_figures(b).items():
                per_queue[q].append(f)
        per = {q: combine(fs) for q, fs in sorted(per_queue.items())}
        for q, f in per.items():
            f.asterisk_holdtime = smoothed(self._tail(buckets, q, "answers"))
            f.asterisk_talktime = smoothed(self._tail(buckets, q, "completions"),
                                           first_is_value=True)
        return per, combine(per.values())

    def _tail(self, buckets: list[int], queue: str, which: str) -> list[int]:
        """The last SMOOTH_TAIL samples of one kind, in time order (newest buckets first,
        one bucket more than needed: a call ends after the bucket it joined in; of each
        bucket only its own last SMOOTH_TAIL can be among them)."""
        chosen: list[list[tuple[float, int, int]]] = []
        count, extra = 0, 1
        for b in reversed(buckets):
            sums = self._sums[b].get(queue)
            samples = getattr(sums, which) if sums is not None else None
            if samples:
                chosen.append(samples[-SMOOTH_TAIL:])
                count += len(samples)
            if count >= SMOOTH_TAIL:
                if extra == 0:
                    break
                extra -= 1
        merged = list(heapq.merge(*reversed(chosen)))
        return [v for _, _, v in merged[-SMOOTH_TAIL:]]

    def drop_old_samples(self) -> int:
        """Let go of the smoothing samples that no range ending now can read: of each
        queue's answers and completions, all but those of the newest intervals that hold
        :data:`SMOOTH_TAIL` of them and three intervals more (:meth:`_tail` reads up to
        one more, for "today" and "the last 15 minutes" alike; the service asks the book
        for no other range).  Counts and sums stay; returns how many samples went.  Each
        interval keeps up to twice SMOOTH_TAIL samples of each kind per queue (~0.7 MB a
        book at 20 calls/s), so without this a core at that rate held ~270 MB more a day
        across a centre's and three PBXs' books until :meth:`forget_before`."""
        dropped = 0
        newest_first = sorted(self._sums, reverse=True)
        queues = {q for per in self._sums.values() for q in per}
        for queue in sorted(queues):
            for which in ("answers", "completions"):
                count, extra = 0, 4  # (_tail reads one interval past SMOOTH_TAIL; 3 more)
                for b in newest_first:
                    sums = self._sums[b].get(queue)
                    if sums is None:
                        continue
                    samples: list[tuple[float, int, int]] = getattr(sums, which)
                    if extra == 0:
                        dropped += len(samples)
                        samples.clear()
                        continue
                    count += len(samples)
                    if count >= SMOOTH_TAIL:
                        extra -= 1
        return dropped

    def series(self, start: float, end: float) -> list[tuple[int, Figures]]:
        """Overall figures of each interval in [start, end), for trend charts."""
        out = []
        for b in range(self.bucket(start), int(end), self.width_s):
            if b in self._sums:
                out.append((b, combine(self._bucket_figures(b).values())))
            else:
                out.append((b, Figures()))
        return out

    def forget_before(self, ts: float) -> None:
        first = self.bucket(ts)
        self._parts = {k: p for k, p in self._parts.items() if p.bucket >= first}
        for b in [b for b in self._sums if b < first]:
            del self._sums[b]
            self._cache.pop(b, None)

    def seal(self, keys: Iterable[str]) -> int:
        """These calls (visit keys, as ``put`` reads them) can no longer change: their
        records go and their parts stay in the sums.  Returns how many records went
        (an unknown or sealed key is skipped).  A sealed call put again would count
        twice, so only the caller that puts knows what to seal: the service seals the
        visits the state has let go of (:meth:`acd.state.CallCenter.collect_finished`),
        which no event can change any more."""
        parts, gone = self._parts, 0
        for key in keys:
            if parts.pop(key, None) is not None:
                gone += 1
        return gone

    def records(self) -> KeysView[str]:
        """The visit keys the book holds a record of (not yet sealed or forgotten)."""
        return self._parts.keys()

    def __len__(self) -> int:
        """Records held: calls put and not yet sealed or forgotten."""
        return len(self._parts)


def _count(holds: dict[int, int], hold: int, sign: int) -> None:
    n = holds.get(hold, 0) + sign
    if n:
        holds[hold] = n
    else:
        del holds[hold]


def _sample(samples: list[tuple[float, int, int]], sample: tuple[float, int, int],
            sign: int) -> None:
    """Add or take away one sample.  Of an interval only its own last SMOOTH_TAIL can be
    among any range's last SMOOTH_TAIL, so past twice that the oldest are let go (a
    sample taken away that was let go already is simply not there; each older sample
    weighs (3/4)^n, nothing in the integer result)."""
    if sign > 0:
        bisect.insort(samples, sample)
        if len(samples) > 2 * SMOOTH_TAIL:
            del samples[:-SMOOTH_TAIL]
        return
    i = bisect.bisect_left(samples, sample)
    if i < len(samples) and samples[i] == sample:
        del samples[i]
