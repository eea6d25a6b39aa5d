"""Asterisk's queue_log, read as per-visit records (pure: text in, records out).

Theory of operation
-------------------
app_queue writes one line per step of every queue visit, to a file
(``/var/log/asterisk/queue_log``) or, through the realtime ``queue_log`` backend,
to a database table with the same fields::

    time|callid|queuename|agent|event|data1|data2|data3|data4|data5

Unlike the AMI counters, which live in memory and restart at zero, the log keeps
every call across link cuts, service restarts and Asterisk restarts, so a gap in
what the service saw can be rebuilt from it exactly.  :func:`visits` folds the
lines into one :class:`LoggedVisit` per ``ENTERQUEUE``, with the outcome
app_queue counts (``record_abandoned()`` for ABANDON, EXITEMPTY,
EXITWITHTIMEOUT, WITHDRAW and SYSCOMPAT; ``update_queue()`` for COMPLETEAGENT,
COMPLETECALLER, BLINDTRANSFER and ATTENDEDTRANSFER; EXITWITHKEY is neither).
A ``QUEUESTART`` line starts a new Asterisk process: visits still open at that
point were cut by the restart and have no end line (``interrupted`` when
answered, ``dropped`` when waiting).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QueueLogEntry:
    """One queue_log line: ``at`` in whole Unix seconds, as Asterisk writes it."""

    at: float
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...] = ()

    def num(self, i: int) -> int:
        """Field ``data{i+1}`` as a whole number of seconds (0 when absent or garbled)."""
        try:
            return max(0, min(int(self.data[i]), 86_400))
        except (IndexError, ValueError):
            return 0


#: Events app_queue counts in ``callsabandoned``, and where each keeps the wait.
ABANDON_WAIT_FIELD = {"ABANDON": 2, "EXITEMPTY": 2, "EXITWITHTIMEOUT": 2, "WITHDRAW": 2,
                      "SYSCOMPAT": 2}
#: Events that end an answered visit (``update_queue``): (hold field, talk field).
COMPLETE_FIELDS = {"COMPLETEAGENT": (0, 1), "COMPLETECALLER": (0, 1),
                   "BLINDTRANSFER": (2, 3), "ATTENDEDTRANSFER": (2, 3)}


def parse(text: str) -> list[QueueLogEntry]:
    """Lines of a queue_log file; lines that are not queue_log lines are skipped."""
    out: list[QueueLogEntry] = []
    for line in text.splitlines():
        parts = line.rstrip("\r").split("|")
        if len(parts) < 5:
            continue
        try:
            at = float(parts[0])
        except ValueError:
            continue
        out.append(QueueLogEntry(at, parts[1], parts[2], parts[3], parts[4], tuple(parts[5:])))
    return out


def from_rows(rows: Iterable[dict[str, object]]) -> list[QueueLogEntry]:
    """Rows of the realtime ``queue_log`` table (time, callid, queuename, agent, event,
    data1..data5 or data), oldest first."""
    out: list[QueueLogEntry] = []
    for r in rows:
        raw_time = r.get("time")
        try:
            at = float(raw_time.timestamp() if hasattr(raw_time, "timestamp")  # type: ignore[union-attr]
                       else str(raw_time))
        except (TypeError, ValueError):
            continue
        if r.get("data1") is not None or "data1" in r:
            data = tuple(str(r.get(f"data{i}") or "") for i in range(1, 6))
        else:
            data = tuple(str(r.get("data") or "").split("|"))
        out.append(QueueLogEntry(at, str(r.get("callid") or ""), str(r.get("queuename") or ""),
                                 str(r.get("agent") or ""), str(r.get("event") or ""), data))
    out.sort(key=lambda e: e.at)
    return out


@dataclass(slots=True)
class LoggedVisit:
    """One ENTERQUEUE and what followed, as queue_log tells it."""

    callid: str
    queue: str
    entered: float
    caller_num: str = ""
    outcome: str = "waiting"  # waiting answered completed abandoned exited interrupted dropped
    hold: int | None = None
    agent: str = ""
    answered_at: float | None = None
    ended_at: float | None = None
    talk: int | None = None
    end_reason: str = ""
    run: int = 0  # which Asterisk process (counted by QUEUESTART lines)
    lines: list[str] = field(default_factory=list)


def visits(entries: Iterable[QueueLogEntry]) -> list[LoggedVisit]:
    """One record per queue visit, in order of entry."""
    out: list[LoggedVisit] = []
    open_: dict[tuple[str, str], LoggedVisit] = {}
    run = 0
    for e in entries:
        if e.event == "QUEUESTART":
            for v in open_.values():  # the process died with them
                v.outcome = "interrupted" if v.outcome == "answered" else "dropped"
                v.end_reason = "pbx_restart"
            open_.clear()
            run += 1
            continue
        key = (e.callid, e.queue)
        if e.event == "ENTERQUEUE":
            v = LoggedVisit(e.callid, e.queue, e.at, caller_num=e.data[1] if len(e.data) > 1
                            else "", run=run)
            out.append(v)
            open_[key] = v
            continue
        v = open_.get(key)
        if v is None:
            continue
        v.lines.append(e.event)
        if e.event == "CONNECT":
            v.outcome, v.hold, v.agent, v.answered_at = "answered", e.num(0), e.agent, e.at
        elif e.event in COMPLETE_FIELDS:
            hold_i, talk_i = COMPLETE_FIELDS[e.event]
            v.outcome, v.ended_at = "completed", e.at
            v.hold, v.talk = e.num(hold_i), e.num(talk_i)
            v.agent = v.agent or e.agent
            v.end_reason = e.event.lower()
            del open_[key]
        elif e.event in ABANDON_WAIT_FIELD:
            v.outcome, v.ended_at = "abandoned", e.at
            v.hold = e.num(ABANDON_WAIT_FIELD[e.event])
            v.end_reason = e.event.lower()
            del open_[key]
        elif e.event == "EXITWITHKEY":
            v.outcome, v.ended_at, v.hold = "exited", e.at, e.num(3)
            v.end_reason = "exitwithkey"
            del open_[key]
    return out
