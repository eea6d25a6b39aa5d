"""Alert rules for the supervisor's wallboard: a pure function of the live picture.

``evaluate(snapshot, thresholds, now)`` reads the wallboard's view of the centre
and returns the alerts that hold at ``now``, most urgent first.  It never reads
a clock or does IO, so a test states a picture and a time and checks the list.

The rules a 12345 centre acts on:

* ``link_down`` — the PBX link is down (with several PBXs: every one): every figure on
  the screen is stale.
* ``pbx_down`` — with several PBXs, one PBX's link is down ("PBX pbx2 连接中断"): its part
  of the picture is stale and greyed, the others stay live.
* ``pbx_restarted`` — Asterisk restarted (FullyBooted uptime) or its queue counters
  were reset, within the last :data:`PBX_RESTART_SHOWN_S`: calls it held were cut and
  the gap was settled (exactly from queue_log when readable, else estimated).
* ``longest_wait`` — a caller has waited in a queue longer than ``longest_wait_s``
  (critical from twice the threshold).
* ``paused_while_waiting`` — an agent has been paused (示忙, any reason, "busy"
  included) longer than ``paused_while_waiting_s`` while callers wait in one of
  the agent's queues.
* ``paused_share`` — paused time is more than ``paused_share_pct`` % of the agent's
  logged-in time today (judged once ``paused_share_min_s`` of logged-in time has passed).
* ``ring_no_answer`` — ``ring_no_answer_count`` rings in a row not answered.
* ``records_set_aside`` — the database refused rows for their own sake (see
  ``Service.flush``): they are kept aside in memory with their error, the rest
  are written (:func:`set_aside_alerts`).
* ``login_failures`` — an account failed to sign in repeatedly (from
  :meth:`agent_console.auth.LoginThrottle.repeated`, see :func:`login_alerts`):
  someone guessing, or an operator locked out of their own console.
* ``fastagi_refused`` — the FastAGI port refused a client or a write within the last
  :data:`FASTAGI_SHOWN_S` (see :func:`fastagi_alerts`): one alert per address; critical
  when a write was tried without a valid token (someone keying a citizen's return
  visit or survey: the 被满意 fraud) or from an address that is not a configured PBX.

Input shape (what :mod:`agent_console.views` builds; only these keys are read)::

    {"link": {"up": bool, "since": float | None, "pbx_restarted_at": float | None,
              "pbx_restart": str},
     "pbxs": {name: {"up": bool, "since": float | None, "reason": str}},  # several PBXs
     "queues": {name: {"waiting": int, "oldest_joined_at": float | None}},
     "agents": {name: {"state": str, "since": float, "reason": str, "queues": [str],
                       "paused_s": float, "paused_since": float | None,
                       "logged_in_s": float, "ring_no_answer_streak": int}}}

``paused_s`` and ``logged_in_s`` are closed totals: the running pause and the
running state are added here from ``paused_since`` and ``since``.  ``queues`` and
``agents`` may also be lists of dicts carrying ``queue`` / ``name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True, slots=True)
class Thresholds:
    paused_while_waiting_s: float = 300.0
    paused_share_pct: float = 20.0
    paused_share_min_s: float = 1800.0
    ring_no_answer_count: int = 3
    longest_wait_s: float = 60.0

    @classmethod
    def from_settings(cls, alerts: Mapping[str, float]) -> Thresholds:
        """From ``settings.alerts`` (the ``[alerts]`` table); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in alerts.items():
            if key in known:
                kwargs[key] = int(value) if key == "ring_no_answer_count" else float(value)
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    subject: str  # the queue, the agent, or "pbx"
    severity: str
    since: float | None  # when the condition began, if known
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "subject": self.subject,
                "severity": self.severity, "since": self.since, "detail": dict(self.detail)}


def _named(items: Mapping[str, Any] | Iterable[Mapping[str, Any]], key: str
           ) -> dict[str, Mapping[str, Any]]:
    if isinstance(items, Mapping):
        return dict(items)
    return {item[key]: item for item in items}


def _live(total: float, running_since: float | None, now: float) -> float:
    return total + (max(0.0, now - running_since) if running_since is not None else 0.0)


#: How long a PBX restart stays on the wallboard (seconds).
PBX_RESTART_SHOWN_S = 3600.0


def may_alert(agent: Mapping[str, Any], t: Thresholds) -> bool:
    """Whether any agent alert can hold for this agent's tile, now or later while the
    tile stays as it is: only for one paused now or earlier this shift, or with
    unanswered rings in a row (most agents are neither; the wallboard looks at 5,000
    every second, so it keeps the few that may, :meth:`Console.wall`)."""
    streak = int(agent.get("ring_no_answer_streak") or 0)
    return bool(agent.get("state") == "paused" or agent.get("paused_s")
                or agent.get("paused_since") is not None or t.paused_share_pct < 0
                or 0 < t.ring_no_answer_count <= streak)


class AlertTiles:
    """The wallboard tiles an agent alert may hold for (:func:`may_alert`), kept up to
    date as tiles are rebuilt: ``update(agents, touched, thresholds)`` with the names
    of the tiles rebuilt since the last call (None: all of them) returns them, looking
    at the touched tiles only (at all of them after None or new thresholds)."""

    def __init__(self) -> None:
        self.tiles: dict[str, Mapping[str, Any]] = {}
        self._thresholds: Thresholds | None = None

    def update(self, agents: Mapping[str, Mapping[str, Any]], touched: Iterable[str] | None,
               t: Thresholds) -> dict[str, Mapping[str, Any]]:
        if touched is None or t is not self._thresholds:
            self._thresholds = t
            self.tiles = {n: a for n, a in agents.items() if may_alert(a, t)}
            return self.tiles
        for name in touched:
            a = agents.get(name)
            if a is not None and may_alert(a, t):
                self.tiles[name] = a
            else:
                self.tiles.pop(name, None)
        return self.tiles


def evaluate(snapshot: Mapping[str, Any], thresholds: Thresholds, now: float) -> list[Alert]:
    """The alerts that hold at ``now``: critical first, then by kind and subject."""
    t = thresholds
    out: list[Alert] = []
    link = snapshot.get("link") or {}
    if not link.get("up", False):
        out.append(Alert("link_down", "pbx", CRITICAL, link.get("since"),
                         {"reason": str(link.get("reason", ""))}))
    for name, part in (snapshot.get("pbxs") or {}).items():
        if not part.get("up", True):
            out.append(Alert("pbx_down", name, CRITICAL, part.get("since"),
                             {"reason": str(part.get("reason", ""))}))
    restarted = link.get("pbx_restarted_at")
    if restarted is not None and 0 <= now - restarted <= PBX_RESTART_SHOWN_S:
        out.append(Alert("pbx_restarted", "pbx", WARNING, restarted,
                         {"what": str(link.get("pbx_restart", ""))}))
    queues = _named(snapshot.get("queues") or {}, "queue")
    for name, q in queues.items():
        oldest = q.get("oldest_joined_at")
        if q.get("waiting", 0) and oldest is not None and now - oldest > t.longest_wait_s:
            severity = CRITICAL if now - oldest > 2 * t.longest_wait_s else WARNING
            out.append(Alert("longest_wait", name, severity, oldest,
                             {"waiting": int(q["waiting"])}))
    waiting_queues = {n for n, q in queues.items() if q.get("waiting", 0)}
    for name, a in _named(snapshot.get("agents") or {}, "name").items():
        if not may_alert(a, t):
            continue
        state = a.get("state")
        streak = int(a.get("ring_no_answer_streak") or 0)
        since = float(a.get("since") or 0.0)
        if state == "paused" and now - since > t.paused_while_waiting_s:
            busy_queues = sorted(waiting_queues & set(a.get("queues") or ()))
            if busy_queues:
                out.append(Alert("paused_while_waiting", name, WARNING, since,
                                 {"reason": a.get("reason", ""), "queues": busy_queues}))
        if state != "logged_out" or a.get("logged_in_s", 0):
            running = since if state != "logged_out" else None
            logged_in = _live(float(a.get("logged_in_s") or 0.0), running, now)
            paused = _live(float(a.get("paused_s") or 0.0), a.get("paused_since"), now)
            if logged_in >= t.paused_share_min_s and logged_in > 0:
                share = 100.0 * paused / logged_in
                if share > t.paused_share_pct:
                    out.append(Alert("paused_share", name, WARNING, None,
                                     {"pct": int(share)}))
        if t.ring_no_answer_count > 0 and streak >= t.ring_no_answer_count:
            out.append(Alert("ring_no_answer", name, WARNING, None, {"count": streak}))
    order = {CRITICAL: 0, WARNING: 1}
    out.sort(key=lambda a: (order.get(a.severity, 9), a.kind, a.subject))
    return out


def login_alerts(repeated: Iterable[tuple[str, int, int, float]]) -> list[Alert]:
    """``login_failures`` alerts from (account, failures, addresses, first failure);
    critical from 20 failures or 3 addresses."""
    return [Alert("login_failures", name, CRITICAL if count >= 20 or addresses >= 3
                  else WARNING, first, {"count": count, "addresses": addresses})
            for name, count, addresses, first in repeated]


def set_aside_alerts(set_aside: Iterable[tuple[str, Any, str, float]]) -> list[Alert]:
    """One critical ``records_set_aside`` alert per table with rows the database refused."""
    per: dict[str, list[Any]] = {}
    for table, _row, error, at in set_aside:
        entry = per.setdefault(table, [0, at, error])
        entry[0] += 1
        entry[2] = error
    return [Alert("records_set_aside", table, CRITICAL, first, {"count": n, "error": error})
            for table, (n, first, error) in sorted(per.items())]


#: How long a FastAGI refusal stays on the wallboard after the last one (seconds).
FASTAGI_SHOWN_S = 3600.0

#: What a FastAGI refusal's reason (``ivr.fastagi``'s words) is, for the wallboard's text
#: (``agi.why.<kind>``) and severity: first match wins.
AGI_REFUSAL_KINDS: tuple[tuple[str, str, str], ...] = (
    # substring of the reason           kind        severity
    ("token",                           "token",    CRITICAL),
    ("address not allowed",             "address",  CRITICAL),
    ("too many connections",            "flood",    WARNING),
    ("unknown script",                  "script",   WARNING),
    ("",                                "header",   WARNING),  # every header refusal
)


def agi_refusal_kind(why: str) -> tuple[str, str]:
    """(kind, severity) of a refusal reason, from :data:`AGI_REFUSAL_KINDS`."""
    return next((kind, sev) for part, kind, sev in AGI_REFUSAL_KINDS if part in why)


def fastagi_alerts(refusals: Iterable[Mapping[str, Any]], now: float,
                   shown_s: float = FASTAGI_SHOWN_S) -> list[Alert]:
    """One ``fastagi_refused`` alert per address with a refusal in the last ``shown_s``.

    ``refusals``: ``{"peer": str, "why": str, "count": int, "last": float}`` per address
    and reason (what :class:`agent_console.session.Console` keeps from the edge's
    reports).  The alert's ``since`` is the last refusal; ``detail``: ``count`` (all
    reasons), ``why`` and ``why_kind`` of the most severe (then latest) reason.
    """
    per: dict[str, list[Mapping[str, Any]]] = {}
    for r in refusals:
        if 0 <= now - float(r.get("last", 0.0)) <= shown_s:
            per.setdefault(str(r.get("peer", "?")) or "?", []).append(r)
    order = {CRITICAL: 0, WARNING: 1}
    out = []
    for peer, rs in sorted(per.items()):
        worst = min(rs, key=lambda r: (order[agi_refusal_kind(str(r.get("why", "")))[1]],
                                       -float(r.get("last", 0.0))))
        kind, severity = agi_refusal_kind(str(worst.get("why", "")))
        out.append(Alert("fastagi_refused", peer, severity,
                         max(float(r.get("last", 0.0)) for r in rs),
                         {"count": sum(int(r.get("count", 1)) for r in rs),
                          "why": str(worst.get("why", ""))[:200], "why_kind": kind}))
    return out
