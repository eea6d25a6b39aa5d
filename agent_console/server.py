"""The operator console and the supervisor wallboard on aiohttp: pages, JSON API, ``/ws``.

Theory of operation
-------------------
Pages are static files; everything they show comes from ``/ws`` (see
:mod:`agent_console.hub`: a snapshot, then numbered updates, resumable) and
everything they do goes through the JSON API below.  The API never changes an
agent's state itself: it sends the AMI action (QueueAdd, QueuePause,
QueueRemove, Hangup, Redirect) and the screen moves when the PBX's events come
back through the service's consumer.

Routes (JSON unless said)::

    GET  /  /login  /console  /wallboard        pages (HTML)
    POST /api/login  {username, password}      -> {csrf, role, home, ...}; sets the cookie
    POST /api/logout                            GET /api/me
    GET  /api/live                              the caller's view (wallboard or own console)
    GET  /api/metrics                           supervisor: ``callcenter replay --json`` shape
    POST /api/agent/signin {queues?}  /api/agent/ready  /api/agent/pause {reason}
    POST /api/agent/signout
    POST /api/call/hangup {uniqueid}  /api/call/transfer {uniqueid, kind, target}
    GET  /api/calls/{uniqueid}/history          the caller's earlier calls and work orders
    GET  /api/drafts   POST /api/drafts {call_uniqueid?}
    GET|PUT /api/drafts/{id}   POST /api/drafts/{id}/submit   GET /api/work-orders/{id}
    POST /api/supervisor/agents/{name}/ready|signout {reason}   (audited)
    GET  /ws?stream=ID&seq=N                    live updates (session required)

Every POST/PUT needs the session's CSRF token in ``X-CSRF-Token`` (login aside,
which needs a JSON body and a same-origin request).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from acd.state import AgentChanged, AgentState, CallChanged, Change, LinkStateChanged
from agent_console.alerts import Thresholds
from agent_console.auth import (
    SESSION_MAX_S,
    LoginThrottle,
    Passwords,
    Session,
    User,
    Users,
)
from agent_console.http import (
    ApiError,
    int_param,
    json_errors,
    list_field,
    read_json,
    same_origin,
    security_headers,
    text_field,
)
from agent_console.hub import Client, Hub, dumps
from agent_console.models import Role
from agent_console.orders import CallerHistory, DraftError, Orders, draft_json, order_json
from agent_console.views import (
    Tracker,
    answered_by,
    call_belongs_to,
    operator_agent,
    operator_queues,
    operator_view,
    wall_agent,
    wall_agents,
    wall_view,
)
from callcenter.config import Settings
from callcenter.db import CallRow
from callcenter.pbx.ami import ActionRefused, ActionTimeout, AmiError, LinkDown
from callcenter.service import Service
from recordings.http import recording_handler
from recordings.store import RecordingStore

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "hotline_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

DEFAULT_PAUSE_REASONS = ["meal", "training", "acw", "meeting", "toilet", "busy"]
DEFAULT_DEPARTMENTS = [
    {"number": "8101", "name": "住房和城乡建设局"},
    {"number": "8102", "name": "市场监督管理局"},
    {"number": "8103", "name": "生态环境局"},
    {"number": "8104", "name": "交通运输局"},
]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """What the console offers, from the service settings (``[agents]``, ``[alerts]``,
    ``[queues.*]`` and an optional ``[console]`` table: ``transfer_context``,
    ``departments = [{number, name}, ...]``)."""

    pause_reasons: tuple[str, ...]
    queues: tuple[tuple[str, str], ...]  # (name, title)
    thresholds: Thresholds
    transfer_context: str = "transfer"
    departments: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: Settings) -> ConsoleConfig:
        console = s.raw.get("console", {}) if isinstance(s.raw.get("console"), dict) else {}
        departments = console.get("departments", DEFAULT_DEPARTMENTS)
        queues = tuple((q, s.queue_titles.get(q, q)) for q in s.queues) or (("hotline", "hotline"),)
        return cls(
            pause_reasons=tuple(s.pause_reasons or DEFAULT_PAUSE_REASONS),
            queues=queues,
            thresholds=Thresholds.from_settings(s.alerts),
            transfer_context=str(console.get("transfer_context", "transfer")),
            departments=tuple((str(d["number"]), str(d.get("name", d["number"])))
                              for d in departments if isinstance(d, dict) and "number" in d),
        )

    def public(self) -> dict[str, Any]:
        return {"pause_reasons": list(self.pause_reasons),
                "queues": [{"queue": q, "title": t} for q, t in self.queues],
                "departments": [{"number": n, "name": t} for n, t in self.departments],
                "thresholds": {k: getattr(self.thresholds, k) for k in (
                    "paused_while_waiting_s", "paused_share_pct", "ring_no_answer_count",
                    "longest_wait_s")}}


@dataclass(slots=True)
class Console:
    """Everything the handlers share (one per app)."""

    service: Service
    users: Users
    orders: Orders
    hub: Hub
    tracker: Tracker
    config: ConsoleConfig
    throttle: LoginThrottle
    caller_history: CallerHistory
    failure_delay: float
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    socket_sessions: dict[web.WebSocketResponse, str] = field(default_factory=dict)  # token hash
    senders: dict[web.WebSocketResponse, asyncio.Task[None]] = field(default_factory=dict)
    sending: dict[web.WebSocketResponse, float] = field(default_factory=dict)  # send began at
    names: dict[str, str] = field(default_factory=dict)  # member name -> display name
    # queue member (interface or member name) -> keys of the operator streams showing it
    watching: dict[str, set[str]] = field(default_factory=dict)
    _snap: tuple[float, int, dict[str, Any]] | None = None  # (at, full refresh, snapshot)
    _op_queues: tuple[int, float, dict[str, Any]] | None = None  # (full refresh, at, figures)
    _wall_agents: dict[str, Any] | None = None
    _wall_gen: int = -1
    _wall_changed: set[str] = field(default_factory=set)  # interfaces

    def snapshot(self, now: float) -> dict[str, Any]:
        """The service snapshot (figures of today, the last 15 minutes, the trend),
        shared by every view: built once per full refresh and never older than a
        refresh period.  What must be live (agents, callers waiting, the link)
        views read from the centre, so the snapshot's own list of 1,000 agents
        is not built either.
        """
        snap = self._snap
        gen = self.hub.full_refreshes
        if (snap is None or (self.hub.full and snap[1] != gen)
                or abs(now - snap[0]) >= self.hub.refresh_every):
            snap = self._snap = (now, gen, self.service.snapshot(agents=False))
        return snap[2]

    def wall(self, now: float) -> dict[str, Any]:
        return wall_view(self.snapshot(now), self.service.centre, self.tracker,
                         self.config.thresholds, now, self.names, self.wall_agents())

    def wall_agents(self) -> dict[str, Any]:
        """The wallboard's agents: only those that changed are rebuilt (all, once a
        full refresh).  A new dict each time: the stream diffs it against the old."""
        centre = self.service.centre
        cached = self._wall_agents
        changed, self._wall_changed = self._wall_changed, set()
        if (cached is None or len(cached) != len(centre.agents)
                or (self.hub.full and self._wall_gen != self.hub.full_refreshes)):
            self._wall_gen = self.hub.full_refreshes
            self._wall_agents = wall_agents(centre, self.tracker, self.names)
            return self._wall_agents
        agents = dict(cached)
        for iface in changed:
            a = centre.agents.get(iface)
            if a is None or a.name not in agents:  # gone or renamed: build them all
                self._wall_agents = wall_agents(centre, self.tracker, self.names)
                return self._wall_agents
            agents[a.name] = wall_agent(a, self.tracker, self.names)
        self._wall_agents = agents
        return agents

    def note_changes(self, changes: list[Change]) -> None:
        """(A hub listener) which agents the wallboard must rebuild."""
        for c in changes:
            if isinstance(c, AgentChanged):
                self._wall_changed.add(c.agent.interface)

    async def load_names(self) -> None:
        self.names = {u.member_name: u.display_name for u in await self.users.all()
                      if u.member_name}

    def operator_queues(self, now: float) -> dict[str, Any]:
        """The queue figures on operator screens: built once per full refresh, shared
        (and never older than two refresh periods, for ``/api/live`` when no
        operator screen is open)."""
        gen = self.hub.full_refreshes
        cached = self._op_queues
        if (cached is None or (self.hub.full and cached[0] != gen)
                or abs(now - cached[1]) > 2 * self.hub.refresh_every):
            cached = self._op_queues = (
                gen, now, operator_queues(self.snapshot(now), self.service.centre))
        return cached[2]

    def operator(self, user: User) -> Callable[[float], dict[str, Any]]:
        return lambda now: operator_view(self.service.centre, self.tracker, user,
                                         self.operator_queues(now))

    def operator_key(self, user: User) -> str:
        """The operator's stream, registered under the queue member it shows."""
        key = f"op:{user.username}:{user.interface}"
        for member in (user.interface, user.member_name):
            if member:
                self.watching.setdefault(member, set()).add(key)
        return key

    def route(self, changes: list[Change]) -> set[str] | None:
        """The operator streams a batch of changes shows on (None: every stream)."""
        keys: set[str] = set()
        watching = self.watching
        for c in changes:
            if isinstance(c, AgentChanged):
                members: tuple[str, ...] = (c.agent.interface, c.agent.name)
            elif isinstance(c, CallChanged):
                members = (c.call.interface, c.call.agent)
            elif isinstance(c, LinkStateChanged):
                return None
            else:
                continue
            for m in members:
                found = watching.get(m)
                if found:
                    keys |= found
        return keys

    def now(self) -> float:
        return self.service.clock()


CONSOLE = web.AppKey("console", Console)
# The request's session, looked up once (aiohttp < 3.12 has no RequestKey).
SESSION: Any = web.RequestKey("session", object) if hasattr(web, "RequestKey") else "session"

# --------------------------------------------------------------------------- sessions


async def current_session(request: web.Request) -> Session | None:
    if SESSION not in request:
        request[SESSION] = await request.app[CONSOLE].users.session(request.cookies.get(COOKIE))
    return request[SESSION]


async def need_session(request: web.Request, *roles: Role) -> Session:
    session = await current_session(request)
    if session is None:
        raise ApiError(401, "sign in first")
    if roles and session.user.role not in roles:
        raise ApiError(403, "your role may not do this")
    return session


async def need_operator(request: web.Request) -> tuple[Session, User]:
    session = await need_session(request, Role.OPERATOR, Role.ADMIN)
    if not session.user.interface:
        raise ApiError(409, "this account is not mapped to a queue member")
    return session, session.user


def home_for(user: User) -> str:
    if user.is_supervisor:
        return "/wallboard"
    if user.role is Role.OPERATOR:
        return "/console"
    if user.role is Role.HANDLER:
        return "/orders"
    return "/login?none=1"


@web.middleware
async def csrf_guard(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
    """Every state-changing request: same origin, and the session's CSRF token."""
    if request.method not in SAFE_METHODS:
        if not same_origin(request):
            raise ApiError(403, "cross-site request refused")
        if request.path != "/api/login":
            session = await current_session(request)
            if session is None:
                raise ApiError(401, "sign in first")
            token = request.headers.get("X-CSRF-Token", "")
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                raise ApiError(403, "missing or wrong CSRF token (X-CSRF-Token)")
    return await handler(request)


# --------------------------------------------------------------------------- pages


def page(name: str, allowed: Callable[[User], bool] | None) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if allowed is not None:
            session = await current_session(request)
            if session is None:
                raise web.HTTPFound(f"/login?next={request.path}")
            if not allowed(session.user):
                raise web.HTTPFound(home_for(session.user))
        return web.FileResponse(STATIC / name)
    return handler


async def root(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    raise web.HTTPFound(home_for(session.user) if session else "/login")


# --------------------------------------------------------------------------- login


async def api_login(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    data = await read_json(request, 4096)
    username = text_field(data, "username", max_len=64)
    password = text_field(data, "password", max_len=256, strip=False)
    ip = request.remote or ""
    now = c.now()
    wait = c.throttle.retry_after(username, ip, now)
    if wait > 0:
        log.warning("login refused: too many failures", username=username, ip=ip)
        raise ApiError(429, "too many failed sign-ins; wait and try again",
                       retry_after=math.ceil(wait))
    user = await c.users.authenticate(username, password)
    if user is None:
        failures = c.throttle.failed(username, ip, now)
        log.warning("login failed", username=username, ip=ip, failures=failures)
        await c.service.store.audit(at=now, actor=username, role="", action="login_failed",
                                    data={"ip": ip, "failures": failures})
        if c.failure_delay:
            await asyncio.sleep(c.failure_delay)
        raise ApiError(401, "wrong username or password")
    c.throttle.succeeded(username)
    if user.member_name:
        c.names[user.member_name] = user.display_name
    token, session = await c.users.open_session(user, ip)
    await c.service.store.audit(at=now, actor=user.username, role=user.role.value,
                                action="login", data={"ip": ip})
    log.info("signed in", username=user.username, role=user.role.value)
    resp = web.json_response({"csrf": session.csrf, "role": user.role.value,
                              "username": user.username, "display_name": user.display_name,
                              "home": home_for(user)})
    resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure,
                    path="/", max_age=SESSION_MAX_S)
    return resp


async def api_logout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    await c.users.close_session(session)
    await c.service.store.audit(at=c.now(), actor=session.user.username,
                                role=session.user.role.value, action="logout")
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def api_me(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    return web.json_response({"user": session.user.public(), "csrf": session.csrf,
                              "home": home_for(session.user), "config": c.config.public()},
                             dumps=dumps)


async def api_live(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
    now = c.now()
    if session.user.is_supervisor:
        doc = c.wall(now)
    else:  # the queue figures as they are now, not as operator screens last got them
        doc = operator_view(c.service.centre, c.tracker, session.user,
                            operator_queues(c.snapshot(now), c.service.centre))
    return web.json_response({"at": now, "data": doc}, dumps=dumps)


async def api_metrics(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    await need_session(request, Role.SUPERVISOR, Role.ADMIN)
    return web.json_response(c.service.metrics_json(), dumps=dumps)


# --------------------------------------------------------------------------- AMI actions


async def pbx(c: Console, action: dict[str, str], *, ignore: tuple[str, ...] = ()
              ) -> dict[str, str]:
    """Send one AMI action; its reply, or ApiError saying what the PBX said."""
    name = action["Action"]
    try:
        reply = await c.service.link.action(action)
    except LinkDown:
        raise ApiError(503, "the PBX link is down; nothing was sent") from None
    except ActionTimeout:
        raise ApiError(504, f"the PBX did not answer {name} in time") from None
    except ActionRefused as exc:
        raise ApiError(400, str(exc)) from None
    except AmiError as exc:
        raise ApiError(502, str(exc)) from None
    first = reply[0] if isinstance(reply, list) and reply else reply
    if not isinstance(first, dict):
        raise ApiError(502, f"the PBX gave no answer to {name}")
    if first.get("Response") == "Error":
        message = first.get("Message", "")
        if any(part.lower() in message.lower() for part in ignore):
            return first
        raise ApiError(502, f"the PBX refused {name}: {message}")
    return first


async def api_agent_signin(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    offered = [q for q, _ in c.config.queues]
    wanted = list_field(data, "queues", max_items=50, max_len=80) or list(user.queues) or offered
    unknown = sorted(set(wanted) - set(offered))
    if unknown:
        raise ApiError(400, f"unknown queue {unknown[0]}")
    agent = operator_agent(c.service.centre, user)
    already = set(agent.memberships) if agent else set()
    sent = []
    for queue in wanted:
        if queue in already:
            continue
        await pbx(c, {"Action": "QueueAdd", "Queue": queue, "Interface": user.interface,
                      "MemberName": user.member_name or user.username, "Paused": "false"},
                  ignore=("already there",))
        sent.append(queue)
    return web.json_response({"ok": True, "queues": sent})


async def api_agent_ready(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    _signed_in(c, user)
    await pbx(c, {"Action": "QueuePause", "Interface": user.interface, "Paused": "false"})
    return web.json_response({"ok": True})


async def api_agent_pause(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=40)
    if reason not in c.config.pause_reasons:
        raise ApiError(400, f"unknown pause reason {reason!r}")
    _signed_in(c, user)
    await pbx(c, {"Action": "QueuePause", "Interface": user.interface, "Paused": "true",
                  "Reason": reason})
    return web.json_response({"ok": True})


async def api_agent_signout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    agent = _signed_in(c, user)
    for queue in sorted(agent.memberships):
        await pbx(c, {"Action": "QueueRemove", "Queue": queue, "Interface": agent.interface},
                  ignore=("not there",))
    return web.json_response({"ok": True})


def _signed_in(c: Console, user: User) -> Any:
    agent = operator_agent(c.service.centre, user)
    if agent is None or not agent.memberships:
        raise ApiError(409, "not signed in to any queue")
    return agent


def _my_live_call(c: Console, user: User, data: dict[str, Any]) -> Any:
    uniqueid = text_field(data, "uniqueid", max_len=64)
    agent = operator_agent(c.service.centre, user)
    call = c.service.centre.calls.get(uniqueid)
    if agent is None or call is None or agent.call != uniqueid:
        raise ApiError(409, "that call is not connected to you")
    if not call.channel:
        raise ApiError(409, "the caller's channel is not known")
    return call


async def api_call_hangup(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    call = _my_live_call(c, user, await read_json(request))
    await pbx(c, {"Action": "Hangup", "Channel": call.channel})
    await c.service.store.audit(at=c.now(), actor=user.username, role=user.role.value,
                                action="hangup", target=call.uniqueid)
    return web.json_response({"ok": True})


async def api_call_transfer(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    call = _my_live_call(c, user, data)
    kind = text_field(data, "kind", max_len=20)
    target = text_field(data, "target", max_len=80)
    if kind == "queue":
        allowed = {q for q, _ in c.config.queues}
    elif kind == "department":
        allowed = {n for n, _ in c.config.departments}
    else:
        raise ApiError(400, "'kind' must be 'queue' or 'department'")
    if target not in allowed:
        raise ApiError(400, f"unknown {kind} {target!r}")
    await pbx(c, {"Action": "Redirect", "Channel": call.channel,
                  "Context": c.config.transfer_context, "Exten": target, "Priority": "1"})
    await c.service.store.audit(at=c.now(), actor=user.username, role=user.role.value,
                                action="transfer", target=call.uniqueid,
                                data={"kind": kind, "to": target})
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- supervisor


async def _supervise(request: web.Request, action: str) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request, Role.SUPERVISOR, Role.ADMIN)
    name = request.match_info["name"]
    data = await read_json(request)
    reason = text_field(data, "reason", max_len=500)
    agent = c.service.centre.agent_by_name(name)
    if agent is None:
        raise ApiError(404, f"no agent {name}")
    if not agent.memberships:
        raise ApiError(409, f"agent {name} is not signed in")
    result = "ok"
    try:
        if action == "force_ready":
            await pbx(c, {"Action": "QueuePause", "Interface": agent.interface,
                          "Paused": "false"})
        else:
            for queue in sorted(agent.memberships):
                await pbx(c, {"Action": "QueueRemove", "Queue": queue,
                              "Interface": agent.interface}, ignore=("not there",))
    except ApiError as exc:
        result = exc.message
        raise
    finally:
        await c.service.store.audit(at=c.now(), actor=session.user.username,
                                    role=session.user.role.value, action=action,
                                    target=name, reason=reason,
                                    data={"interface": agent.interface, "result": result})
        log.info("supervisor action", action=action, agent=name, by=session.user.username,
                 result=result)
    return web.json_response({"ok": True})


async def api_force_ready(request: web.Request) -> web.Response:
    return await _supervise(request, "force_ready")


async def api_force_signout(request: web.Request) -> web.Response:
    return await _supervise(request, "force_signout")


# --------------------------------------------------------------------------- history, drafts


async def api_history(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
    uniqueid = request.match_info["uniqueid"]
    if len(uniqueid) > 64:
        raise ApiError(404, "no such call")
    if session.user.is_supervisor:
        call = c.service.centre.calls.get(uniqueid)
    else:
        call = call_belongs_to(c.service.centre, session.user, uniqueid)
    if call is None:
        raise ApiError(404, "no such call of yours")
    history = await c.caller_history(call.caller_num)
    history["calls"] = [h for h in history.get("calls", []) if h.get("uniqueid") != uniqueid]
    store = request.app.get(RECORDINGS)
    user = session.user
    for h in history["calls"]:  # playable: supervisors any, an operator their own calls
        if store is not None and store.get(str(h.get("uniqueid", ""))) is not None and (
                user.is_supervisor or answered_by(user, h.get("agent"), h.get("interface"))):
            h["recording"] = f"/api/recordings/{h['uniqueid']}"
    return web.json_response({"caller": call.caller_num, **history}, dumps=dumps)


async def api_drafts(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    drafts = await c.orders.open_drafts(user.username)
    return web.json_response({"drafts": [draft_json(d) for d in drafts]}, dumps=dumps)


async def api_draft_open(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    data = await read_json(request)
    uniqueid = text_field(data, "call_uniqueid", max_len=64, required=False) or None
    if uniqueid is None:
        draft = await c.orders.open_draft(user.username)
    else:
        call = call_belongs_to(c.service.centre, user, uniqueid)
        if call is None:
            raise ApiError(404, "no such call of yours")
        draft = await c.orders.open_draft(user.username, uniqueid, caller=call.caller_num,
                                          category=call.category)
    return web.json_response(draft_json(draft), dumps=dumps)


async def _my_draft_id(request: web.Request) -> tuple[Console, User, int]:
    c = request.app[CONSOLE]
    _, user = await need_operator(request)
    return c, user, int_param(request.match_info["id"], "draft")


async def api_draft_get(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    draft = await c.orders.draft(user.username, draft_id)
    if draft is None:
        raise ApiError(404, "no such draft of yours")
    return web.json_response(draft_json(draft), dumps=dumps)


async def api_draft_save(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    data = await read_json(request, 200_000)  # 20,000 characters, escaped
    fields = {}
    for key, max_len in (("caller", 40), ("category", 60), ("text", 20000)):
        if key in data:
            fields[key] = text_field(data, key, max_len=max_len, required=False,
                                     strip=key != "text")
    try:
        draft = await c.orders.save_draft(user.username, draft_id, fields)
    except LookupError:
        raise ApiError(404, "no such draft of yours") from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(draft_json(draft), dumps=dumps)


async def api_draft_submit(request: web.Request) -> web.Response:
    c, user, draft_id = await _my_draft_id(request)
    try:
        order = await c.orders.submit(user.username, draft_id)
    except LookupError:
        raise ApiError(404, "no such draft of yours") from None
    except DraftError as exc:
        raise ApiError(409, str(exc)) from None
    log.info("work order accepted", number=order.number, by=user.username)
    return web.json_response(order_json(order), dumps=dumps)


async def api_work_order(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    session = await need_session(request)
    order = await c.orders.work_order(int_param(request.match_info["id"], "work order"))
    if order is None or not (session.user.is_supervisor
                             or order.created_by == session.user.username):
        raise ApiError(404, "no such work order")
    return web.json_response(order_json(order), dumps=dumps)


# --------------------------------------------------------------------------- websocket


async def websocket(request: web.Request) -> web.WebSocketResponse:
    c = request.app[CONSOLE]
    if not same_origin(request):
        raise ApiError(403, "cross-site websocket refused")
    session = await need_session(request, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)
    user = session.user
    stream_id = request.query.get("stream")
    try:
        seq: int | None = int(request.query["seq"]) if "seq" in request.query else None
    except ValueError:
        seq = None
    if stream_id is not None and len(stream_id) > 40:
        stream_id = None
    # No per-message deflate: with 1,000 sockets compressing each small update
    # costs more CPU than the bytes it saves on a LAN.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024, compress=False)
    await ws.prepare(request)
    if user.is_supervisor:
        client = c.hub.attach("wall", c.wall, stream_id, seq)
    else:
        client = c.hub.attach(c.operator_key(user), c.operator(user), stream_id, seq,
                              narrow=True)
    c.sockets.add(ws)
    c.socket_sessions[ws] = session.token_hash  # checked by _sessions_loop
    sender = c.senders[ws] = asyncio.create_task(_pump(c, ws, client))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _on_message(c, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                c.hub.reply(client, {"type": "error", "error": "binary messages are not accepted"})
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        c.hub.detach(client)
        c.sockets.discard(ws)
        c.socket_sessions.pop(ws, None)
        c.senders.pop(ws, None)
    return ws


def _on_message(c: Console, client: Client, text: str) -> None:
    """A client message: ``ping`` or ``resync``; anything else is answered with an error."""
    try:
        data = json.loads(text)
    except ValueError:
        c.hub.reply(client, {"type": "error", "error": "message is not JSON"})
        return
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "ping":
        c.hub.reply(client, {"type": "pong", "at": c.now()})
    elif kind == "resync":
        c.hub.resync(client)
    else:
        c.hub.reply(client, {"type": "error", "error": "unknown message type"})


async def _pump(c: Console, ws: web.WebSocketResponse, client: Client) -> None:
    """This client's sender: a slow socket stalls only this task; a dead one is closed.

    A send stuck on a client that stopped reading is ended by
    :func:`_send_watchdog` (one timer for every socket: a timeout per message,
    2,000 a second, would leave as many timer handles for the collector).
    """
    loop = asyncio.get_running_loop()
    try:
        while not ws.closed:
            item = await client.queue.get()
            text = c.hub.next_message(client, item)
            if text is None:
                continue
            c.sending[ws] = loop.time()
            await ws.send_str(text)
            del c.sending[ws]
    except (ConnectionError, RuntimeError):
        log.info("websocket client gone; closing")
        await ws.close()
    finally:
        c.sending.pop(ws, None)


async def _send_watchdog(c: Console, every: float = 1.0, limit: float = 10.0) -> None:
    """Close the sockets a send has been stuck on for more than ``limit`` s."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        stuck = [ws for ws, since in c.sending.items() if now - since > limit]
        for ws in stuck:
            log.info("websocket client too slow; closing")
            c.sending.pop(ws, None)
            sender = c.senders.get(ws)
            if sender is not None:
                sender.cancel()
        if stuck:
            await asyncio.gather(*(ws.close() for ws in stuck), return_exceptions=True)


async def _sessions_loop(c: Console, every: float = 30.0) -> None:
    """Close the sockets whose session ended (signed out, disabled, expired, idle).

    One query for every open socket each ``every`` s (it also keeps their
    sessions seen), instead of one query per socket.
    """
    while True:
        await asyncio.sleep(every)
        try:
            open_now = [(ws, h) for ws, h in c.socket_sessions.items() if not ws.closed]
            if not open_now:
                continue
            alive = await c.users.alive(h for _, h in open_now)
            ended = [ws for ws, h in open_now if h not in alive]
            await asyncio.gather(*(ws.close(code=4401, message=b"session ended")
                                   for ws in ended), return_exceptions=True)
        except Exception:
            log.exception("could not check the websockets' sessions")


# --------------------------------------------------------------------------- the app


def rings_or_connects(changes: list[Change]) -> bool:
    """Changes an operator must see at once (the screen pop), not at the next refresh."""
    return any(isinstance(c, AgentChanged) and c.new in (AgentState.RINGING, AgentState.ON_CALL)
               for c in changes)


async def _names_loop(c: Console, every: float = 60.0) -> None:
    """Operators' display names for the wallboard (accounts change from the CLI too)."""
    while True:
        try:
            await c.load_names()
        except Exception:
            log.exception("could not read the accounts")
        await asyncio.sleep(every)


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    c = app[CONSOLE]
    # What exists once the app starts (modules, classes, the service) lives for
    # good: take it out of the cyclic collector's full scans, which otherwise
    # stand the loop still for 100 ms and more with 1,000 sockets open.
    gc.freeze()
    # Fewer, not longer, collections: the young generation is collected after
    # 10,000 net allocations (not 700), so the full scans, which stand the loop
    # still for ~100 ms with 1,000 sockets, come about 14 times less often.
    threshold0, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(max(threshold0, 10_000), threshold1, threshold2)
    tasks = [asyncio.create_task(c.hub.run(), name="console-hub"),
             asyncio.create_task(_names_loop(c), name="console-names"),
             asyncio.create_task(_sessions_loop(c), name="console-sessions"),
             asyncio.create_task(_send_watchdog(c), name="console-send-watchdog")]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await c.users.flush_seen()
    except Exception:
        log.exception("could not write the sessions' last_seen")


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[CONSOLE].sockets):
        await ws.close(code=1001, message=b"server shutdown")


RECORDINGS = web.AppKey("recordings", RecordingStore)


def _scanned(store: RecordingStore) -> RecordingStore:
    store.scan()
    return store


async def _recording_actor(request: web.Request) -> User | None:
    session = await current_session(request)
    return None if session is None else session.user


def _own_call(service: Service) -> Callable[[User, str], Awaitable[bool]]:
    """An operator may play the recordings of the calls they answered themselves."""

    async def own(user: User, uniqueid: str) -> bool:
        if user.role is not Role.OPERATOR or not user.interface:
            return False
        async with service.store.sessions() as s:
            row = await s.get(CallRow, uniqueid)
        return row is not None and answered_by(user, row.agent, row.interface)

    return own


def _recording_audit(service: Service) -> Callable[[User, str], Awaitable[None]]:
    async def audit(user: User, uniqueid: str) -> None:
        await service.store.audit(at=service.clock(), actor=user.username,
                                  role=user.role.value, action="recording_played",
                                  target=uniqueid)

    return audit


def make_app(service: Service, *, passwords: Passwords | None = None,
             throttle: LoginThrottle | None = None, failure_delay: float = 0.5,
             caller_history: CallerHistory | None = None, hub: Hub | None = None,
             recordings: RecordingStore | None = None) -> web.Application:
    """The web app for one service: pages, JSON API and ``/ws``.

    ``caller_history`` is the hook for the screen pop's history (default: calls
    and the minimal work orders from the database).
    """
    engine = service.store.engine
    orders = Orders(engine, service.settings.tz, clock=service.clock)
    # The wallboards' stream at most 4 times a second; operators' screens at once
    # for a ring, else at most 10 times a second.
    hub = hub or Hub(clock=service.clock, urgent=rings_or_connects, wide_interval=0.25)
    tracker = Tracker()
    hub.listeners.append(tracker.feed)
    service.subscribers.append(hub.changed)
    console = Console(
        service=service, users=Users(engine, passwords, clock=service.clock), orders=orders,
        hub=hub, tracker=tracker, config=ConsoleConfig.from_settings(service.settings),
        throttle=throttle or LoginThrottle(), caller_history=caller_history or
        orders.caller_history, failure_delay=failure_delay,
    )
    if hub.route is None:  # a ring refreshes the screens of its agent, not all 1,100
        hub.route = console.route
    hub.listeners.append(console.note_changes)
    app = web.Application(middlewares=[json_errors, csrf_guard], client_max_size=256 * 1024)
    app[CONSOLE] = console
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_close_sockets)
    r = app.router
    r.add_get("/", root)
    r.add_get("/login", page("login.html", None))
    r.add_get("/console", page("console.html", lambda u: bool(u.interface) and u.role in (
        Role.OPERATOR, Role.ADMIN)))
    r.add_get("/wallboard", page("wallboard.html", lambda u: u.is_supervisor))
    r.add_post("/api/login", api_login)
    r.add_post("/api/logout", api_logout)
    r.add_get("/api/me", api_me)
    r.add_get("/api/live", api_live)
    r.add_get("/api/metrics", api_metrics)
    r.add_post("/api/agent/signin", api_agent_signin)
    r.add_post("/api/agent/ready", api_agent_ready)
    r.add_post("/api/agent/pause", api_agent_pause)
    r.add_post("/api/agent/signout", api_agent_signout)
    r.add_post("/api/call/hangup", api_call_hangup)
    r.add_post("/api/call/transfer", api_call_transfer)
    r.add_get("/api/calls/{uniqueid}/history", api_history)
    r.add_get("/api/drafts", api_drafts)
    r.add_post("/api/drafts", api_draft_open)
    r.add_get("/api/drafts/{id}", api_draft_get)
    r.add_put("/api/drafts/{id}", api_draft_save)
    r.add_post("/api/drafts/{id}/submit", api_draft_submit)
    r.add_get("/api/work-orders/{id}", api_work_order)
    r.add_post("/api/supervisor/agents/{name}/ready", api_force_ready)
    r.add_post("/api/supervisor/agents/{name}/signout", api_force_signout)
    r.add_get("/ws", websocket)
    app[RECORDINGS] = recordings or _scanned(RecordingStore(service.settings.recordings_root))
    r.add_get("/api/recordings/{uniqueid}", recording_handler(
        app[RECORDINGS], authorize=_recording_actor, audit=_recording_audit(service),
        own_call=_own_call(service)))
    r.add_static("/static", STATIC, follow_symlinks=False)
    from agent_console.orders_api import setup_orders  # work orders: /orders, /api/orders...
    setup_orders(app)
    from agent_console.spy import setup_spy  # listen / whisper / barge: /api/supervise/...
    setup_spy(app)
    return app
