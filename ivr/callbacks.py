"""Calling citizens back: the call-back queue and the return-visit scheduler (pure).

Theory of operation
-------------------
*Call-back queue.*  A caller who pressed "call me back" (the IVR's
``callback_requested``) leaves the line but keeps their place: the request
remembers when they asked.  When an operator of that queue is free the
service asks :meth:`CallbackQueue.agent_free`, passing since when the oldest
caller still on the line has been waiting; the oldest request is called back
first, and only if it asked before that caller joined -- so nobody is
overtaken.  The answer is an :class:`OriginateCallback` command (the service
turns it into an AMI Originate).  A call-back that fails is retried at the
same place after ``retry_after_s``; after ``max_attempts`` it is given up with
:class:`CallbackGaveUp` so an operator can follow up.

*Return visits* 回访.  A completed work order is added with the citizen's
number; :meth:`ReturnVisitScheduler.due` yields :class:`DialReturnVisit` for
every visit whose next attempt is due and inside the calling hours.  The FastAGI
``returnvisit`` script reports ``answered`` or ``no_answer``; a no-answer is
retried after the next delay of ``schedule`` and, when the schedule is spent,
handed to an operator with :class:`HandToOperator` (a manual return visit).

Both classes are fed their time (``at``, epoch seconds) and never read a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

# -- call-backs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackEntry:
    id: str
    queue: str
    number: str
    requested_at: float  # the caller's place in line
    variables: Mapping[str, str] = field(default_factory=dict)  # HOTLINE, CATEGORY, ...
    attempts: int = 0
    not_before: float = 0.0
    in_flight: bool = False


@dataclass(frozen=True)
class OriginateCallback:
    """Call ``number`` back now and connect them to the free operator ``agent``."""
    id: str
    queue: str
    number: str
    agent: str
    attempt: int
    variables: Mapping[str, str]


@dataclass(frozen=True)
class CallbackGaveUp:
    id: str
    queue: str
    number: str
    attempts: int


class CallbackQueue:
    def __init__(self, *, retry_after_s: float = 300.0, max_attempts: int = 3) -> None:
        self.retry_after_s = retry_after_s
        self.max_attempts = max_attempts
        self._entries: dict[str, CallbackEntry] = {}

    def request(self, id: str, queue: str, number: str, at: float,
                variables: Mapping[str, str] | None = None) -> CallbackEntry:
        """A caller asked to be called back at ``at``; a repeated id keeps its first place."""
        if id in self._entries:
            return self._entries[id]
        entry = CallbackEntry(id, queue, number, at, dict(variables or {}))
        self._entries[id] = entry
        return entry

    def waiting(self, queue: str) -> list[CallbackEntry]:
        """Requests of ``queue`` in the order they will be called back."""
        return sorted((e for e in self._entries.values() if e.queue == queue),
                      key=lambda e: (e.requested_at, e.id))

    def position(self, id: str) -> int | None:
        """1-based place among the call-backs of the same queue."""
        entry = self._entries.get(id)
        if entry is None:
            return None
        return [e.id for e in self.waiting(entry.queue)].index(id) + 1

    def agent_free(self, queue: str, agent: str, at: float,
                   oldest_waiting_since: float | None = None) -> list[OriginateCallback]:
        """An operator of ``queue`` is free: call back the first request due, if it is
        ahead of the oldest caller still waiting on the line (``oldest_waiting_since``)."""
        for e in self.waiting(queue):
            if e.in_flight or e.not_before > at:
                continue
            if oldest_waiting_since is not None and e.requested_at > oldest_waiting_since:
                return []
            e = replace(e, attempts=e.attempts + 1, in_flight=True)
            self._entries[e.id] = e
            return [OriginateCallback(e.id, queue, e.number, agent, e.attempts,
                                      dict(e.variables))]
        return []

    def answered(self, id: str) -> None:
        """The citizen was reached: the request is done."""
        self._entries.pop(id, None)

    def release(self, id: str) -> None:
        """The call-back was never placed (the PBX link was down): not an attempt."""
        e = self._entries.get(id)
        if e is not None and e.in_flight:
            self._entries[id] = replace(e, in_flight=False, attempts=max(0, e.attempts - 1))

    def restore(self, entry: CallbackEntry) -> None:
        """Put back a request saved before a restart (a call in flight is retried)."""
        self._entries[entry.id] = replace(entry, in_flight=False)

    def get(self, id: str) -> CallbackEntry | None:
        return self._entries.get(id)

    def queues(self) -> list[str]:
        """The queues with call-backs waiting, sorted."""
        return sorted({e.queue for e in self._entries.values()})

    def failed(self, id: str, at: float) -> list[CallbackGaveUp]:
        """The call-back did not reach the citizen: retry later at the same place, or give up."""
        e = self._entries.get(id)
        if e is None:
            return []
        if e.attempts >= self.max_attempts:
            del self._entries[id]
            return [CallbackGaveUp(e.id, e.queue, e.number, e.attempts)]
        self._entries[id] = replace(e, in_flight=False, not_before=at + self.retry_after_s)
        return []

    def __len__(self) -> int:
        return len(self._entries)


# -- return visits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReturnVisit:
    order_id: str
    number: str
    next_at: float
    attempts: int = 0
    in_flight: bool = False


@dataclass(frozen=True)
class DialReturnVisit:
    """Originate the return-visit call: the channel runs AGI(agi://.../returnvisit,<order>)."""
    order_id: str
    number: str
    attempt: int


@dataclass(frozen=True)
class HandToOperator:
    """Automatic attempts are spent: an operator makes the return visit by hand."""
    order_id: str
    number: str
    attempts: int


DEFAULT_SCHEDULE = (2 * 3600.0, 24 * 3600.0)  # retry after 2 h, then after a day


class ReturnVisitScheduler:
    def __init__(self, *, schedule: Sequence[float] = DEFAULT_SCHEDULE,
                 hours: tuple[int, int] = (9, 20), timezone: str = "Asia/Shanghai") -> None:
        """``schedule``: the delays before each retry (its length = retries);
        ``hours``: local calling hours [start, end)."""
        self.schedule = tuple(schedule)
        self.hours = hours
        self.tz = ZoneInfo(timezone)
        self._visits: dict[str, ReturnVisit] = {}

    def calling_time(self, at: float) -> float:
        """``at`` if inside the calling hours, else the next opening."""
        local = datetime.fromtimestamp(at, self.tz)
        start, end = self.hours
        if start <= local.hour < end:
            return at
        opening = local.replace(hour=start, minute=0, second=0, microsecond=0)
        if local.hour >= end:
            opening += timedelta(days=1)
        return opening.timestamp()

    def add(self, order_id: str, number: str, at: float) -> ReturnVisit:
        """Schedule the return visit of a completed order, first attempt at ``at``."""
        visit = ReturnVisit(order_id, number, self.calling_time(at))
        self._visits[order_id] = visit
        return visit

    def cancel(self, order_id: str) -> None:
        self._visits.pop(order_id, None)

    def due(self, at: float) -> list[DialReturnVisit]:
        """The calls to place now, oldest first; they stay in flight until a result."""
        out = []
        for v in sorted(self._visits.values(), key=lambda v: (v.next_at, v.order_id)):
            if v.in_flight or v.next_at > at or self.calling_time(at) != at:
                continue
            v = replace(v, attempts=v.attempts + 1, in_flight=True)
            self._visits[v.order_id] = v
            out.append(DialReturnVisit(v.order_id, v.number, v.attempts))
        return out

    def result(self, order_id: str, outcome: str, at: float) -> list[HandToOperator]:
        """``answered`` ends the visit; ``no_answer`` (or busy, failed) retries or hands over."""
        v = self._visits.get(order_id)
        if v is None:
            return []
        if outcome == "answered":
            del self._visits[order_id]
            return []
        if v.attempts > len(self.schedule):
            del self._visits[order_id]
            return [HandToOperator(order_id, v.number, v.attempts)]
        delay = self.schedule[v.attempts - 1]
        self._visits[order_id] = replace(v, in_flight=False,
                                         next_at=self.calling_time(at + delay))
        return []

    def get(self, order_id: str) -> ReturnVisit | None:
        return self._visits.get(order_id)

    def release(self, order_id: str) -> None:
        """The call was never placed (the PBX link was down): not an attempt."""
        v = self._visits.get(order_id)
        if v is not None and v.in_flight:
            self._visits[order_id] = replace(v, in_flight=False,
                                             attempts=max(0, v.attempts - 1))

    def restore(self, visit: ReturnVisit) -> None:
        """Put back a visit saved before a restart (a call in flight is retried)."""
        self._visits[visit.order_id] = replace(visit, in_flight=False)

    def __len__(self) -> int:
        return len(self._visits)
