"""Replay a recorded AMI trace through the same translation, state and metrics.

A trace is JSON lines ``{"t": unix time, "dir": "in"|"out", "raw": frame}`` (see
``tests/data/ami-traces/README.md``).  Unsolicited events from the PBX are fed as
they come.  Frames carrying an ``ActionID`` answer one of the recorder's own
actions and are the PBX's opinion, not events - except the answer to the first
``QueueStatus`` of each AMI session, which is what the live service asks at every
(re)connect: it is fed as a :class:`~acd.events.Resync`, exactly as the service
does.  A closing QueueStatus later in a session can therefore never leak into the
figures.

A trace may span several AMI sessions (a reconnect, an Asterisk restart): each
banner line (``Asterisk Call Manager/...``, the only ``in`` records without the
closing blank line) starts a new session; the link is taken as down from the
last frame of the previous session.  When Asterisk's ``queue_log`` lies beside the
trace (or is given), each gap is rebuilt from it exactly, as the live service does
when it can read the queue_log; otherwise Asterisk's counters estimate the gap
(records marked ``estimated``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from acd import events as ev
from acd import queue_log as qlog_mod
from acd.metrics import ANSWERED, by_queue, queue_json
from acd.queue_log import QueueLogEntry
from acd.state import CallCenter, QueueConfig
from callcenter.pbx.ami import parse_frame

log = structlog.get_logger(__name__)


class TraceError(Exception):
    """The trace cannot be read; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Frame:
    t: float
    direction: str
    raw: str
    line: int


def parse_raw(raw: str) -> dict[str, str]:
    """Headers of one frame; the first value of a repeated header wins."""
    headers: dict[str, str] = {}
    for line in raw.split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep or not key:
            continue
        headers.setdefault(key.strip(), value.removeprefix(" "))
    return headers


def is_banner_frame(direction: str, raw: str) -> bool:
    """The greeting line that opens an AMI session (no closing blank line)."""
    return direction == "in" and raw.startswith("Asterisk Call Manager/") and (
        not raw.endswith("\r\n\r\n"))


def read_trace(path: str | Path) -> Iterator[Frame]:
    """Frames of a trace, checked; :class:`TraceError` on anything unreadable."""
    p = Path(path)
    try:
        fh = p.open("r", encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {p}: {exc.strerror}") from None
    with fh:
        count = 0
        try:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    t, direction, raw = float(record["t"]), record["dir"], record["raw"]
                except (ValueError, KeyError, TypeError):
                    raise TraceError(
                        f"{p}:{number}: not a trace record (truncated or not JSON lines?)"
                    ) from None
                if direction not in ("in", "out") or not isinstance(raw, str):
                    raise TraceError(f"{p}:{number}: bad record (dir={direction!r})")
                is_banner = is_banner_frame(direction, raw)
                if not is_banner and not raw.endswith("\r\n\r\n"):
                    raise TraceError(f"{p}:{number}: frame is cut off (no closing blank line)")
                count += 1
                yield Frame(t, direction, raw, number)
        except UnicodeDecodeError as exc:
            raise TraceError(f"{p}: not UTF-8 text ({exc.reason})") from None
        if count == 0:
            raise TraceError(f"{p}: empty trace")


def replay(
    path: str | Path,
    queues: dict[str, QueueConfig] | None = None,
    servicelevel: int | None = None,
    default: QueueConfig | None = None,
    short_abandon_s: int = 0,
    states_at: Sequence[float] = (),
    queue_log: str | Path | None = None,
    use_queue_log: bool = True,
) -> dict[str, object]:
    """Feed a trace's events to a fresh :class:`CallCenter`; return the final figures.

    ``states_at``: seconds from the trace's first frame at which every agent's state
    is reported (``"agent_states"``: one ``{"t", "agents": {name: state}}`` each).
    ``queue_log``: Asterisk's queue_log for the same session; by default the file
    named ``queue_log`` beside the trace, if there is one (``use_queue_log=False``:
    counters only, as a service that cannot read the log).
    """
    configs = {q: QueueConfig(c.servicelevel, c.wrapuptime) for q, c in (queues or {}).items()}
    default = default or QueueConfig()
    if servicelevel is not None:
        for c in configs.values():
            c.servicelevel = servicelevel
        default = QueueConfig(servicelevel, default.wrapuptime)
    centre = CallCenter(configs, default)
    log_path = Path(queue_log) if queue_log is not None else Path(path).with_name("queue_log")
    qlog = read_queue_log(log_path) if use_queue_log and log_path.is_file() else None
    probes = sorted(states_at)
    states: list[dict[str, object]] = []
    trace = TraceEvents(path, qlog)
    for event in trace:
        while probes and trace.first is not None and event.at > trace.first + probes[0]:
            t = probes.pop(0)
            centre.advance(trace.first + t)
            states.append({"t": t, "agents": {a.name: a.state.value
                                              for a in centre.agents.values()}})
        centre.apply(event)
    first, last, skipped, sessions = trace.first, trace.last, trace.skipped, trace.sessions
    for t in probes:
        centre.advance((first or 0.0) + t)
        states.append({"t": t, "agents": {a.name: a.state.value
                                          for a in centre.agents.values()}})
    centre.advance(last)
    calls = list(centre.visits.values())
    per_queue, overall = by_queue(calls, lambda q: centre.config(q).servicelevel, short_abandon_s)
    agents = {
        a.name: {
            "answered": a.answered,
            "ring_no_answer": a.ring_no_answer,
            "paused_s": round(a.paused_total(last), 2),
            "talk_s": round(a.talk_s, 2),
            "calls_taken": a.calls_taken,
            "completed": sum(1 for c in calls if c.agent == a.name and c.outcome == "completed"),
        }
        for a in sorted(centre.agents.values(), key=lambda a: a.name)
    }
    by_member: dict[str, dict[str, dict[str, int]]] = {}
    for c in calls:
        if c.agent and c.outcome in ANSWERED:
            m = by_member.setdefault(c.queue, {}).setdefault(
                c.agent, {"answered": 0, "completed": 0, "talk_s": 0})
            m["answered"] += 1
            if c.outcome == "completed":
                m["completed"] += 1
                m["talk_s"] += c.talk_time or 0
    out: dict[str, object] = {
        "queues": {q: queue_json(f) for q, f in per_queue.items()},
        "queue_agents": {q: dict(sorted(m.items())) for q, m in sorted(by_member.items())},
        "overall": queue_json(overall),
        "agents": agents,
        "skipped_events": skipped,
        "ami_sessions": sessions,
        "queue_log": str(log_path) if qlog is not None else None,
    }
    if states_at:
        out["agent_states"] = states
    return out


class TraceEvents:
    """The events a trace feeds a :class:`CallCenter`, in order, as the live service
    would apply them: the PBX's unsolicited events, and per AMI session a link-down
    (from a new banner), the :class:`~acd.events.Checkpoint` and the
    :class:`~acd.events.Resync` of its first ``QueueStatus`` answer (with the
    queue_log lines written up to then, when ``qlog`` is given).  After iterating:
    ``first`` / ``last`` (the first frame's and the last ``in`` frame's time),
    ``skipped`` (malformed events) and ``sessions``."""

    def __init__(self, path: str | Path, qlog: list[QueueLogEntry] | None = None) -> None:
        self.path, self.qlog = path, qlog
        self.first: float | None = None
        self.last = 0.0
        self.skipped = 0
        self.sessions = 0

    def __iter__(self) -> Iterator[ev.Event]:
        resync_id: str | None = None  # ActionID of the session's first QueueStatus
        resync_seen = False
        answer: list[dict[str, str]] = []
        for frame in read_trace(self.path):
            # Frames read together share a time: keep them strictly increasing, in wire order.
            frame = replace(frame, t=max(frame.t, self.last + 1e-6))
            if self.first is None:
                self.first = frame.t
            if is_banner_frame(frame.direction, frame.raw):
                self.sessions += 1
                if self.sessions > 1:
                    yield ev.LinkChanged(self.last, False, "AMI session ended (new banner)")
                resync_id, resync_seen, answer = None, False, []
                continue
            headers = parse_frame(frame.raw.encode("utf-8"))
            if frame.direction == "out":
                if not resync_seen and headers.get("Action", "").lower() == "queuestatus":
                    resync_id, resync_seen = headers.get("ActionID"), True
                continue
            self.last = max(self.last, frame.t)
            if "ActionID" in headers:
                if resync_id is not None and headers.get("ActionID") == resync_id:
                    if headers.get("Event") == "QueueStatusComplete":
                        yield ev.Checkpoint(frame.t)
                        yield _gap_from_queue_log(ev.resync_from(frame.t, answer, None),
                                                  self.qlog)
                        resync_id = None
                    elif "Event" in headers:
                        answer.append(headers)
                continue
            if "Event" not in headers:
                continue
            try:
                event = ev.to_event(headers, frame.t)
            except ev.MalformedEvent as exc:
                self.skipped += 1
                log.warning("malformed event skipped", line=frame.line, error=str(exc))
                continue
            if event is not None:
                yield event


def read_queue_log(path: Path) -> list[QueueLogEntry]:
    """Asterisk's queue_log file as entries; :class:`TraceError` when unreadable."""
    try:
        return qlog_mod.parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise TraceError(f"cannot read queue_log {path}: {exc.strerror}") from None


def _gap_from_queue_log(resync: ev.Resync, qlog: list[QueueLogEntry] | None) -> ev.Resync:
    """The resync, with the queue_log lines written up to its moment (the live service
    reads the log when it resynchronises; later lines do not exist yet)."""
    if qlog is None:
        return resync
    return replace(resync, queue_log=tuple(e for e in qlog if e.at <= resync.at + 1))
