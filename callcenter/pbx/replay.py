"""Replay a recorded AMI trace through the same translation, state and metrics.

A trace is JSON lines ``{"t": unix time, "dir": "in"|"out", "raw": frame}`` (see
``../shared/ami-traces/README.md``).  Only unsolicited events from the PBX are
fed: frames carrying an ``ActionID`` answer one of the recorder's own actions
(QueueStatus, CoreShowChannels...) and are the PBX's opinion, not events, so the
closing QueueStatus answer can never leak into the figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from acd import events as ev
from acd.metrics import by_queue, queue_json
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
                is_banner = count == 0 and direction == "in" and raw.startswith("Asterisk")
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
) -> dict[str, object]:
    """Feed a trace's events to a fresh :class:`CallCenter`; return the final figures."""
    configs = {q: QueueConfig(c.servicelevel, c.wrapuptime) for q, c in (queues or {}).items()}
    default = default or QueueConfig()
    if servicelevel is not None:
        for c in configs.values():
            c.servicelevel = servicelevel
        default = QueueConfig(servicelevel, default.wrapuptime)
    centre = CallCenter(configs, default)
    last = 0.0
    skipped = 0
    for frame in read_trace(path):
        if frame.direction != "in":
            continue
        last = max(last, frame.t)
        headers = parse_frame(frame.raw.encode("utf-8"))
        if "Event" not in headers or "ActionID" in headers:
            continue
        try:
            event = ev.to_event(headers, frame.t)
        except ev.MalformedEvent as exc:
            skipped += 1
            log.warning("malformed event skipped", line=frame.line, error=str(exc))
            continue
        if event is not None:
            centre.apply(event)
    centre.advance(last)
    calls = list(centre.calls.values())
    per_queue, overall = by_queue(calls, lambda q: centre.config(q).servicelevel, short_abandon_s)
    agents = {
        a.name: {
            "answered": a.answered,
            "ring_no_answer": a.ring_no_answer,
            "paused_s": round(a.paused_total(last), 2),
            "talk_s": round(a.talk_s, 2),
            "calls_taken": a.calls_taken,
        }
        for a in sorted(centre.agents.values(), key=lambda a: a.name)
    }
    return {
        "queues": {q: queue_json(f) for q, f in per_queue.items()},
        "overall": queue_json(overall),
        "agents": agents,
        "skipped_events": skipped,
    }
