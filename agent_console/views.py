"""What each kind of screen is shown: the supervisor's wallboard and one operator's console.

A view is plain JSON built from the service's snapshot and the live
:class:`~acd.state.CallCenter`.  Views hold only values that change when
something happens (state, ``since`` timestamps, closed totals), never values
that grow with the clock (``in_state_s``): the browser adds the running part
itself, so an idle centre sends nothing and a diff is small.

An operator's view carries their own agent and their own call only (the full
caller number, for the screen pop); the wallboard sees every agent and masked
numbers of the callers waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, tzinfo
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

from acd.centres import best_agent
from acd.reports import DEFAULT_SHIFTS, Shift, agent_counts, colour, shift_at
from acd.state import Agent, AgentChanged, AgentState, Call, CallCenter, Change, LinkStateChanged
from agent_console.alerts import Thresholds, evaluate
from agent_console.auth import User
from callcenter.service import mask_number


class Tracker:
    """What the views need beyond the core's state, kept from the stream of changes.

    * consecutive unanswered rings per agent (the core counts them all; an
      answer or a new login starts the count again);
    * when the PBX link last changed;
    * each agent's paused and logged-in totals when the current shift began, so
      the paused-share alert is measured per shift (班次), not since the service
      started (:meth:`roll`, called with the clock by the console).
    """

    def __init__(self, shifts: tuple[Shift, ...] = DEFAULT_SHIFTS,
                 tz: tzinfo | None = None) -> None:
        self.rna_base: dict[str, int] = {}
        self.link_since: float | None = None
        self.pbx_since: dict[str, float] = {}  # each PBX's link last changed
        self.shifts = shifts
        self.tz = tz or ZoneInfo("Asia/Shanghai")
        self.shift_name = ""
        self.shift_start: float | None = None
        self.shift_end: float | None = None
        self.shift_base: dict[str, tuple[float, float]] = {}  # agent -> (paused, logged in)

    def roll(self, now: float, agents: Iterable[Agent]) -> bool:
        """At the first call after a shift began, note every agent's live totals; True
        when a new shift began (the views must be rebuilt)."""
        if self.shift_end is not None and self.shift_start is not None and \
                self.shift_start <= now < self.shift_end:
            return False
        found = shift_at(datetime.fromtimestamp(now, self.tz), self.shifts)
        first = self.shift_start is None
        if found is None:
            self.shift_name, self.shift_start, self.shift_end = "", now, now + 60
        else:
            shift, a, b = found
            self.shift_name, self.shift_start, self.shift_end = \
                shift.name, a.timestamp(), b.timestamp()
        # The first look: the service's totals began with it, within this shift or not.
        self.shift_base = {} if first else {
            ag.name: (ag.paused_total(now), logged_in_total(ag, now)) for ag in agents}
        return True

    def feed(self, changes: list[Change]) -> None:
        for c in changes:
            if isinstance(c, AgentChanged) and c.step in ("answer", "login", "login_paused"):
                self.rna_base[c.agent.name] = c.agent.ring_no_answer
            elif isinstance(c, LinkStateChanged):
                self.link_since = c.at
                self.pbx_since[c.pbx] = c.at

    def rna_streak(self, agent: Agent) -> int:
        return max(0, agent.ring_no_answer - self.rna_base.get(agent.name, 0))


def logged_in_total(a: Agent, now: float) -> float:
    """Seconds signed in, the running state included."""
    closed = sum(v for k, v in a.time_in.items() if k != AgentState.LOGGED_OUT.value)
    return closed + (a.time_in_state(now) if a.state is not AgentState.LOGGED_OUT else 0.0)


def agent_json(a: Agent, tracker: Tracker) -> dict[str, Any]:
    """One agent; ``paused_s`` and ``logged_in_s`` are closed totals of the current
    shift (the running state is added by whoever reads them, with ``since``)."""
    base_paused, base_logged = tracker.shift_base.get(a.name, (0.0, 0.0))
    return {
        "name": a.name, "interface": a.interface, "state": a.state.value, "reason": a.reason,
        "paused": a.paused, "since": a.since, "queues": sorted(a.memberships),
        "answered": a.answered, "ring_no_answer": a.ring_no_answer,
        "ring_no_answer_streak": tracker.rna_streak(a),
        "paused_s": round(a.paused_s - base_paused, 1), "paused_since": a.paused_since,
        "logged_in_s": round(sum(v for k, v in a.time_in.items()
                                 if k != AgentState.LOGGED_OUT.value) - base_logged, 1),
        "talk_s": a.talk_s, "calls_taken": a.calls_taken, "call": a.call,
        "wrap_until": a.wrap_until,
    }


def call_json(c: Call, title: str, title_en: str = "") -> dict[str, Any]:
    """One call as its operator sees it: the full caller number, for the screen pop
    (``queue_title`` / ``queue_title_en``: its queue's title in Chinese / English)."""
    return {
        "uniqueid": c.uniqueid, "queue": c.queue, "queue_title": title,
        "queue_title_en": title_en,
        "caller_num": c.caller_num, "caller_name": c.caller_name, "hotline": c.hotline,
        "category": c.category, "ivr_path": c.ivr_path, "joined_at": c.joined_at,
        "answered_at": c.answered_at, "hold_time": c.hold_time, "outcome": c.outcome.value,
        "rings": c.rings,
    }


def _oldest(centre: CallCenter, queue: str) -> float | None:
    waiting = centre.waiting_in(queue)
    return min(c.joined_at for c in waiting) if waiting else None


def _link(centre: CallCenter, tracker: Tracker) -> dict[str, Any]:
    """The PBX link as it is now (not as the snapshot, which may be a second old, saw it)."""
    restart = centre.last_restart
    return {"up": centre.link_up, "reason": centre.link_reason, "since": tracker.link_since,
            "pbx_restarted_at": restart.at if restart else None,
            "pbx_restart": restart.what if restart else ""}


def pbx_parts(snap: Mapping[str, Any], centre: Any, tracker: Tracker,
              bounds: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """Each PBX's part of the wallboard when there are several (else None): the
    snapshot's figures per PBX with its link read live, so one PBX down greys only
    its own part (and raises its ``pbx_down`` alert)."""
    parts = snap.get("pbxs") or []
    if len(parts) < 2 or not hasattr(centre, "links"):
        return None
    links = centre.links()
    out = {}
    for p in parts:
        up, reason = links.get(p["name"], (p["up"], p["reason"]))
        own = centre.by_pbx.get(p["name"])
        # this PBX's waiting callers, when its centre is known here
        joined = ([c.joined_at for w in own.waiting.values() for c in w.values()]
                  if own is not None else None)
        out[p["name"]] = p | {"up": up, "reason": "" if up else reason,
                              "waiting": p["waiting"] if joined is None else len(joined),
                              "oldest_joined_at": min(joined or (), default=None),
                              "since": tracker.pbx_since.get(p["name"]),
                              "colours": colours(p["today"], bounds)}
    return out


def wall_agent(a: Agent, tracker: Tracker, names: Mapping[str, str]) -> dict[str, Any]:
    """One agent as the wallboard shows it."""
    return agent_json(a, tracker) | {"operator": names.get(a.name, "")}


def wall_agents(centre: CallCenter, tracker: Tracker, names: Mapping[str, str]
                ) -> dict[str, Any]:
    """Every operator by member name.  With several PBXs an operator signed in on each is
    one member per PBX: their tile shows the one that matters now
    (:func:`acd.centres.best_agent`) and names its ``pbx``."""
    if not hasattr(centre, "agents_of"):
        return {a.name: wall_agent(a, tracker, names)
                for a in sorted(centre.agents.values(), key=lambda a: a.name)}
    by_name: dict[str, list[Agent]] = {}
    for a in centre.agents.values():
        by_name.setdefault(a.name, []).append(a)
    return {name: wall_operator(group, tracker, names) for name, group in sorted(by_name.items())}


def wall_operator(members: list[Agent], tracker: Tracker, names: Mapping[str, str]
                  ) -> dict[str, Any]:
    """One operator's tile from their members on several PBXs."""
    a = best_agent(members)
    assert a is not None
    return wall_agent(a, tracker, names) | {"pbx": a.pbx}


COLOURED = ("connection_rate", "answer_rate_sl", "abandon_rate", "asa_s", "aht_s")


def colours(figures: Mapping[str, Any] | None,
            bounds: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """The colour of each coloured figure (``"none"`` when nothing was offered)."""
    f = figures or {}
    return {k: colour(k, float(f.get(k, 0.0)), int(f.get("offered", 0)), bounds)
            for k in COLOURED}


def wall_view(snap: dict[str, Any], centre: CallCenter, tracker: Tracker,
              thresholds: Thresholds, now: float, names: Mapping[str, str] | None = None,
              agents: dict[str, Any] | None = None,
              bounds: Mapping[str, Mapping[str, float]] | None = None,
              extra_alerts: Iterable[Any] = (),
              alert_agents: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The supervisor's picture: every queue and agent, figures, trend and alerts.

    ``names`` maps a queue member name to the operator's display name;
    ``agents`` is :func:`wall_agents` when the caller keeps it up to date itself, and
    ``alert_agents`` those of them for which :func:`~agent_console.alerts.may_alert`
    (the alerts are evaluated over those alone: the same alerts).
    The callers waiting, the link and the agents are read live; the figures come
    from ``snap`` (the console refreshes it about once a second).
    """
    names = names or {}
    queues: dict[str, Any] = {}
    for q in snap["queues"]:
        name = q["queue"]
        waiting = centre.waiting_in(name)
        queues[name] = {
            "queue": name, "title": q["title"], "title_en": q.get("title_en", ""),
            "servicelevel": q["servicelevel"],
            "waiting": len(waiting), "oldest_joined_at": _oldest(centre, name),
            "today": q["today"], "last_15min": q["last_15min"],
            "agents_logged_in": q["agents_logged_in"],
            "colours": {"today": colours(q["today"], bounds or {}),
                        "last_15min": colours(q["last_15min"], bounds or {})},
            "callers": [{"uniqueid": c.uniqueid, "caller": mask_number(c.caller_num),
                         "name": c.caller_name, "hotline": c.hotline, "joined_at": c.joined_at}
                        for c in waiting[:20]],
        }
    doc_agents = agents if agents is not None else wall_agents(centre, tracker, names)
    doc: dict[str, Any] = {
        "link": _link(centre, tracker),
        "queues": queues,
        "today": snap["today"],
        "last_15min": snap["last_15min"],
        "agents": doc_agents,
        "trend": snap["trend"],
        "interval_start": snap["interval_start"],
        "day": snap["day"],
        "thresholds": asdict(thresholds),
        "agent_counts": agent_counts(
            a.state.value for a in centre.agents.values()) if not hasattr(centre, "agents_of")
        else agent_counts(map(itemgetter("state"), doc_agents.values())),
        "colours": {"today": colours(snap["today"], bounds or {}),
                    "last_15min": colours(snap["last_15min"], bounds or {})},
        "colour_bounds": {k: dict(v) for k, v in (bounds or {}).items()},
        "shift": {"name": tracker.shift_name, "start": tracker.shift_start},
    }
    pbxs = pbx_parts(snap, centre, tracker, bounds or {})
    if pbxs is not None:
        doc["pbxs"] = pbxs
    looked_at = doc if alert_agents is None else {**doc, "agents": alert_agents}
    alerts = evaluate(looked_at, thresholds, now) + list(extra_alerts)
    doc["alerts"] = {a.key: a.as_dict() for a in alerts}
    return doc


def own_centre(centre: Any, agent: Agent | None) -> Any:
    """The centre of the agent's own PBX (with several PBXs a Uniqueid is looked up
    there, never across PBXs); the centre itself with one."""
    by_pbx = getattr(centre, "by_pbx", None)
    if by_pbx is None or agent is None:
        return centre
    return by_pbx.get(agent.pbx, centre)


def operator_agent(centre: CallCenter, user: User) -> Agent | None:
    """The queue member this operator account is (by interface, else by member name).
    With several PBXs the operator may be a member on each: the one on a call or
    ringing, else one in a queue (:func:`acd.centres.best_agent`)."""
    if hasattr(centre, "agents_of"):
        return best_agent(centre.agents_of(user.interface, user.member_name))
    agent = centre.agents.get(user.interface) if user.interface else None
    if agent is None and user.member_name:
        agent = centre.agent_by_name(user.member_name)
    return agent


def operator_queues(snap: dict[str, Any], centre: CallCenter) -> dict[str, Any]:
    """How busy the queues are, as every operator's screen shows it.

    Built once and shared by every operator view (the console refreshes it at
    most once a second, so a caller joining does not change 1,000 screens).
    """
    return {q["queue"]: {"queue": q["queue"], "title": q["title"],
                         "title_en": q.get("title_en", ""),
                         "waiting": len(centre.waiting_in(q["queue"])),
                         "oldest_joined_at": _oldest(centre, q["queue"])}
            for q in snap["queues"]}


def operator_view(centre: CallCenter, tracker: Tracker, user: User,
                  queues: dict[str, Any], *, with_queues: bool = True) -> dict[str, Any]:
    """One operator's picture: their agent, their call, how busy the queues are.

    ``queues`` is :func:`operator_queues`, shared by every operator (its titles name
    the calls).  ``with_queues=False``: the picture without ``"queues"`` (a live
    screen gets them as the hub's shared message, :mod:`agent_console.hub`).
    """
    agent = operator_agent(centre, user)
    own = own_centre(centre, agent)  # the operator's PBX: its calls, its link
    call = last = None
    if agent is not None:
        if agent.call and agent.call in own.calls:
            c = own.calls[agent.call]
            call = call_json(c, *_title(queues, c.queue))
        if agent.last_call and agent.last_call != agent.call and agent.last_call in own.calls:
            c = own.calls[agent.last_call]
            last = call_json(c, *_title(queues, c.queue))
    return {
        "me": user.public(),
        "link": {"up": own.link_up, "reason": own.link_reason,
                 "since": tracker.pbx_since.get(agent.pbx, tracker.link_since)
                 if own is not centre and agent is not None else tracker.link_since},
        "agent": agent_json(agent, tracker) if agent is not None else None,
        "call": call,
        "last_call": last,
        **({"queues": queues} if with_queues else {}),
    }


def _title(queues: dict[str, Any], queue: str) -> tuple[str, str]:
    q = queues.get(queue)
    return (q["title"], q.get("title_en", "")) if q else (queue, "")


def answered_by(user: User, agent: str | None, interface: str | None) -> bool:
    """Whether a call taken by member ``agent`` on ``interface`` was this user's."""
    mine = {user.member_name, user.interface} - {""}
    return agent in mine or interface in mine


def call_belongs_to(centre: CallCenter, user: User, uniqueid: str) -> Call | None:
    """The call if it is (or was, recently) this operator's, else None (with several
    PBXs: on the PBX the operator is on)."""
    agent = operator_agent(centre, user)
    call = own_centre(centre, agent).calls.get(uniqueid)
    if call is None:
        return None
    if answered_by(user, call.agent, call.interface):
        return call
    if agent is not None and uniqueid in (agent.call, agent.last_call):
        return call
    return None
