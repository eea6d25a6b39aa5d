"""The simulator's queue_log as the truth a live service's stored visits are checked against
(the soak, call-flow and crash tests): one place that reads the log and compares.

``queue_log`` is written by the PBX simulator in Asterisk's format (acd.queue_log parses it);
a visit is one ENTERQUEUE of one channel in one queue, keyed ``(channel uniqueid, queue)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from acd import queue_log
from acd.metrics import by_queue
from callcenter.pbx.sim import Pbx

#: What is counted answered (answered, completed or cut off while talking), as acd.metrics.
ANSWERED = ("answered", "completed", "interrupted")

QueueFigures = dict[str, dict[str, int]]
"""Per queue: ``{"offered", "answered", "completed", "abandoned"}`` counts."""
AgentFigures = dict[tuple[str, str], list[int]]
"""Per (queue, operator): ``[answered, completed]``."""


def logged_visits(path: Path, pbx: Pbx | None = None,
                  stored: dict[tuple[str, str], str] | None = None
                  ) -> list[queue_log.LoggedVisit]:
    """The simulator's queue_log as visits.  With ``pbx``: a visit app_queue counted
    completed when its operator left (``*``, a Redirect) whose end line a restart took
    from queue_log (``Pbx.unlogged_completed``) is completed, as Asterisk counted it -
    or, given the service's ``stored`` outcome of it, ``interrupted`` when that is what
    the service has: only a service that saw the operator leave can know better than
    queue_log."""
    found = queue_log.visits(queue_log.parse(path.read_text(encoding="utf-8")))
    unlogged = set(pbx.unlogged_completed) if pbx is not None else set()
    for v in found:
        if (v.callid, v.queue) in unlogged and v.outcome == "interrupted":
            seen = (stored or {}).get((v.callid, v.queue))
            v.outcome = "interrupted" if seen == "interrupted" else "completed"
    return found


def logged_truth(path: Path, pbx: Pbx | None = None,
                 stored: dict[tuple[str, str], str] | None = None
                 ) -> tuple[QueueFigures, AgentFigures]:
    """Per queue (offered, answered, completed, abandoned) and per (queue, operator)
    [answered, completed] from the simulator's queue_log (see :func:`logged_visits`)."""
    per_queue: QueueFigures = {}
    per_agent: AgentFigures = {}
    for v in logged_visits(path, pbx, stored):
        q = per_queue.setdefault(v.queue, {"offered": 0, "answered": 0, "completed": 0,
                                           "abandoned": 0})
        q["offered"] += 1
        if v.outcome in ANSWERED:
            q["answered"] += 1
            per_agent.setdefault((v.queue, v.agent), [0, 0])[0] += 1
        if v.outcome == "completed":
            q["completed"] += 1
            per_agent[(v.queue, v.agent)][1] += 1
        if v.outcome == "abandoned":
            q["abandoned"] += 1
    return per_queue, per_agent


def stored_figures(rows: Sequence[Any]) -> tuple[QueueFigures, AgentFigures]:
    """The same figures as :func:`logged_truth` from the service's stored visits
    (``Store.calls_between`` rows): per queue through acd.metrics.by_queue, as the
    reports count them, and per (queue, operator) [answered, completed]."""
    per, _ = by_queue(rows, lambda q: 15)
    per_queue = {q: {"offered": f.offered, "answered": f.answered, "completed": f.completed,
                     "abandoned": f.abandoned} for q, f in per.items()}
    per_agent: AgentFigures = {}
    for r in rows:
        if r.outcome in ANSWERED:
            a = per_agent.setdefault((r.queue, r.agent), [0, 0])
            a[0] += 1
            a[1] += r.outcome == "completed"
    return per_queue, per_agent


def assert_stored_as_logged(rows: Sequence[Any], path: Path, pbx: Pbx | None = None
                            ) -> dict[tuple[str, str], queue_log.LoggedVisit]:
    """Assert the stored visits ``rows`` are queue_log's at ``path``: each logged visit
    stored once with the logged outcome and none stored that was not logged, and so the
    same figures per queue and per operator (``pbx``: see :func:`logged_visits`).
    Returns the logged visits by ``(channel uniqueid, queue)``; AssertionError names
    what differs."""
    seen = {(r.channel_uniqueid, r.queue): r.outcome for r in rows}
    logged = {(v.callid, v.queue): v for v in logged_visits(path, pbx, seen)}
    mismatch = sorted((r.uniqueid, r.outcome, r.settled, r.agent,
                       logged[(r.channel_uniqueid, r.queue)].outcome if (
                           r.channel_uniqueid, r.queue) in logged else None)
                      for r in rows if (r.channel_uniqueid, r.queue) not in logged
                      or logged[(r.channel_uniqueid, r.queue)].outcome != r.outcome)
    missing = sorted((k[0], v.outcome, v.entered) for k, v in logged.items() if k not in seen)
    assert mismatch == [] and missing == [], "\n".join(map(str, mismatch + missing))
    want_queue, want_agent = logged_truth(path, pbx, seen)
    got_queue, got_agent = stored_figures(rows)
    assert got_queue == want_queue, (got_queue, want_queue)
    assert got_agent == want_agent, (got_agent, want_agent)
    # Nothing stored twice: one row per queue_log ENTERQUEUE.
    offered = sum(q["offered"] for q in want_queue.values())
    assert len(rows) == len({r.uniqueid for r in rows}) == offered, (len(rows), offered)
    return logged
