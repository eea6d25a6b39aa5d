"""What every console handler shares: the ``Console`` (one per app), sessions and roles,
the CSRF guard, pages, and ``pbx()`` which sends one AMI action and turns the PBX's
answer into an ``ApiError``.

Imported by the route modules (``console_api``, ``live``, ``orders_api``, ``spy``) and by
``server``; imports none of them.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from acd.reports import DEFAULT_COLOURS, DEFAULT_SHIFTS, Shift, parse_shifts
from acd.state import AgentChanged, CallChanged, Change, LinkStateChanged
from agent_console.alerts import (
    AlertTiles,
    Thresholds,
    fastagi_alerts,
    login_alerts,
    set_aside_alerts,
)
from agent_console.auth import (
    LoginThrottle,
    Session,
    User,
    Users,
)
from agent_console.http import (
    ApiError,
    same_origin,
)
from agent_console.hub import Hub
from agent_console.intake import IntakeConfig
from agent_console.models import Role
from agent_console.orders import CallerHistory, Orders
from agent_console.report_data import ReportConfig
from agent_console.views import (
    Tracker,
    operator_queues,
    operator_view,
    wall_agent,
    wall_agents,
    wall_operator,
    wall_view,
)
from callcenter.config import Settings
from callcenter.db import ACTION_ID, AuditRow
from callcenter.pbx.ami import ActionRefused, ActionTimeout, AmiError, LinkDown
from callcenter.service import Service
from ivr.values import BadValue, ami_action
from recordings.store import RecordingStore

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "hotline_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_KEY_PATHS = ("/api/intake/",)
"""Routes authenticated by an API key, not a session (agent_console.intake_api)."""

DEFAULT_PAUSE_REASONS = ["meal", "training", "acw", "meeting", "toilet", "busy"]
def transfer_departments(path: Path | None = None) -> list[dict[str, str]]:
    """The departments an operator can transfer to: every ``[[department]]`` of
    ``config/departments.toml`` (the work orders' own list) with a ``line``."""
    import tomllib

    from callcenter.orders.store import CONFIG_DIR

    with open(path or CONFIG_DIR / "departments.toml", "rb") as f:
        data = tomllib.load(f)
    return [{"number": str(d["line"]), "name": str(d.get("name", d["line"])), "id": str(d["id"]),
             "name_en": str(d.get("name_en", ""))}
            for d in data.get("department", []) if isinstance(d, dict) and d.get("line")]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """What the console offers, from the service settings (``[agents]``, ``[alerts]``,
    ``[queues.*]`` and an optional ``[console]`` table: ``transfer_context``; the
    transfer targets are the queues and :func:`transfer_departments`)."""

    pause_reasons: tuple[str, ...]
    queues: tuple[tuple[str, str], ...]  # (name, title)
    thresholds: Thresholds
    transfer_context: str = "transfer"
    departments: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    shifts: tuple[Shift, ...] = DEFAULT_SHIFTS
    colours: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: dict(DEFAULT_COLOURS))
    timezone: str = "Asia/Shanghai"  # the centre's ([metrics] timezone): pages show times in it
    queue_titles_en: Mapping[str, str] = field(default_factory=dict)  # [queues.X] title_en
    department_names_en: Mapping[str, str] = field(default_factory=dict)  # line -> name_en

    @classmethod
    def from_settings(cls, s: Settings) -> ConsoleConfig:
        console = s.raw.get("console", {}) if isinstance(s.raw.get("console"), dict) else {}
        departments = transfer_departments()
        queues = tuple((q, s.queue_titles.get(q, q)) for q in s.queues) or (("hotline", "hotline"),)
        reports = s.raw.get("reports", {}) if isinstance(s.raw.get("reports"), dict) else {}
        return cls(
            shifts=parse_shifts(reports["shifts"]) if reports.get("shifts") else DEFAULT_SHIFTS,
            timezone=s.timezone,
            colours=ReportConfig.from_settings(s).colours,
            pause_reasons=tuple(s.pause_reasons or DEFAULT_PAUSE_REASONS),
            queues=queues,
            queue_titles_en={q: t for q, t in s.queue_titles_en.items() if t},
            thresholds=Thresholds.from_settings(s.alerts),
            transfer_context=str(console.get("transfer_context", "transfer")),
            departments=tuple((str(d["number"]), str(d.get("name", d["number"])))
                              for d in departments if isinstance(d, dict) and "number" in d),
            department_names_en={str(d["number"]): str(d["name_en"]) for d in departments
                                 if isinstance(d, dict) and d.get("name_en")},
        )

    def queue_list(self) -> list[dict[str, str]]:
        """The queues as pages list them: ``{"queue", "title", "title_en"}`` each, in the
        config's order (``title_en`` "" = the Chinese title)."""
        return [{"queue": q, "title": t, "title_en": self.queue_titles_en.get(q, "")}
                for q, t in self.queues]

    def public(self) -> dict[str, Any]:
        return {"pause_reasons": list(self.pause_reasons),
                "queues": self.queue_list(),
                "departments": [{"number": n, "name": t,
                                 "name_en": self.department_names_en.get(n, "")}
                                for n, t in self.departments],
                "timezone": self.timezone,
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
    intake: IntakeConfig | None = None  # the intake form's lists (set by make_app)
    # config/ivr.toml's [categories] as {code: {"zh", "en"}} (set by make_app)
    ivr_categories: dict[str, dict[str, str]] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    socket_sessions: dict[web.WebSocketResponse, str] = field(default_factory=dict)  # token hash
    senders: dict[web.WebSocketResponse, asyncio.Task[None]] = field(default_factory=dict)
    sending: dict[web.WebSocketResponse, float] = field(default_factory=dict)  # send began at
    # the slow-client brake (agent_console.live._send_watchdog): each socket's transport,
    # when its backlog began, the bounds, and how many sockets were cut
    transports: dict[web.WebSocketResponse, Any] = field(default_factory=dict)
    backlog_since: dict[web.WebSocketResponse, float] = field(default_factory=dict)
    max_unsent_bytes: int = 512 * 1024
    max_unsent_age_s: float = 2.0
    slow_cuts: int = 0
    trimmed_at: float = -1e9  # loop time of the last malloc_trim after cuts (live.py)
    # session (token hash) -> (cuts, not before): a client cut for not reading comes back
    # after a cool-down that doubles with each cut (2, 4 … 60 s)
    slow_cooldown: dict[str, tuple[int, float]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # member name -> display name
    # queue member (interface or member name) -> keys of the operator streams showing it
    watching: dict[str, set[str]] = field(default_factory=dict)
    _snap: tuple[float, int, dict[str, Any]] | None = None  # (at, full refresh, snapshot)
    _op_queues: tuple[int, float, dict[str, Any]] | None = None  # (full refresh, at, figures)
    _wall_agents: dict[str, Any] | None = None
    _wall_gen: int = -1
    _wall_sweep: list[tuple[str, str]] = field(default_factory=list)  # (pbx, interface)
    _wall_sweep_at: float = -math.inf
    _wall_sweep_n: int = 0  # members in the pass under way
    _wall_changed: set[tuple[str, str]] = field(default_factory=set)  # (pbx, interface)
    _wall_touched: set[str] | None = None  # tiles rebuilt since the alerts looked (None: all)
    _alert_tiles: AlertTiles = field(default_factory=AlertTiles)
    extra_alerts: list[Any] = field(default_factory=list)  # e.g. hotspot bursts (alerts.Alert)
    # (peer, why) -> {"peer", "why", "count", "last"}: what the FastAGI edge refused
    # (fastagi_refused); the wallboard shows it as alerts (alerts.fastagi_alerts)
    agi_refusals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def fastagi_refused(self, why: str, details: Mapping[str, Any], at: float) -> None:
        """Note a FastAGI refusal for the wallboard (the edge reports one per address and
        reason at most once a minute, with its running ``count``; a refused write
        comes each time).  At most 200 address-reason pairs are kept, the oldest go."""
        peer = str(details.get("peer", "") or "?")[:64]
        key = (peer, why[:200])
        entry = self.agi_refusals.pop(key, None) or {"peer": peer, "why": why[:200],
                                                     "count": 0}
        try:
            counted = int(details.get("count", 0))
        except (TypeError, ValueError):
            counted = 0
        entry["count"] = max(entry["count"] + 1, counted)
        entry["last"] = at
        self.agi_refusals[key] = entry
        while len(self.agi_refusals) > 200:
            self.agi_refusals.pop(next(iter(self.agi_refusals)))

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
        if self.tracker.roll(now, self.service.centre.agents.values()):
            self._wall_agents = None  # every agent's shift totals start again
            self.hub.rebuild_all()  # (on operator screens too)
        agents = self.wall_agents(now)
        return wall_view(self.snapshot(now), self.service.centre, self.tracker,
                         self.config.thresholds, now, self.names, agents,
                         self.config.colours,
                         [*self.extra_alerts, *login_alerts(self.throttle.repeated(now)),
                          *set_aside_alerts(self.service.set_aside),
                          *fastagi_alerts(self.agi_refusals.values(), now)],
                         alert_agents=self._alert_agents(agents))

    def _alert_agents(self, agents: dict[str, Any]) -> dict[str, Any]:
        """The wallboard's agents an alert may hold for, with the tiles
        :meth:`wall_agents` rebuilt since looked at again (:class:`AlertTiles`)."""
        touched, self._wall_touched = self._wall_touched, set()
        return self._alert_tiles.update(agents, touched, self.config.thresholds)

    def wall_agents(self, now: float | None = None) -> dict[str, Any]:
        """The wallboard's agents: only those that changed are rebuilt, and at ``now``
        the next slice of a sweep that rebuilds every tile once per the hub's
        ``sweep_every`` (anything a change missed), as the hub sweeps the operator
        screens; all of them when the hub rebuilds every stream.  A new dict each time:
        the stream diffs it against the old.  (All 5,000 tiles rebuilt and diffed at
        once every 30 s held the core's loop for ~200 ms: the scale-out bench's
        longest screen pops.)"""
        centre = self.service.centre
        cached = self._wall_agents
        changed, self._wall_changed = self._wall_changed, set()
        several = len(self.service.edges) > 1  # one tile per operator, not per member
        if (cached is None or (len(cached) != len(centre.agents) and not several)
                or (self.hub.full and self._wall_gen != self.hub.rebuilds)):
            self._wall_gen = self.hub.rebuilds
            self._wall_agents = wall_agents(centre, self.tracker, self.names)
            self._wall_touched = None
            self._wall_sweep, self._wall_sweep_at = [], -math.inf if now is None else now
            return self._wall_agents
        if now is not None:
            changed |= self._wall_sweep_slice(now)
        agents = dict(cached)
        for pbx, iface in changed:
            a = self.service.centre_of(pbx).agents.get(iface)
            if a is None or a.name not in agents:  # gone, new or renamed: build them all
                self._wall_agents = wall_agents(centre, self.tracker, self.names)
                self._wall_touched = None
                return self._wall_agents
            agents[a.name] = wall_operator(self.service.members_of(iface, a.name),
                                           self.tracker, self.names) if several \
                else wall_agent(a, self.tracker, self.names)
            if self._wall_touched is not None:
                self._wall_touched.add(a.name)
        self._wall_agents = agents
        return agents

    def _wall_sweep_slice(self, now: float) -> set[tuple[str, str]]:
        """The tiles this build rebuilds in turn: a pass over every member begins every
        ``sweep_every`` and is paced by the clock, not by the builds (the board is
        built every second, every 0.25 s while things change, and for ``/api/live``):
        by ``now`` the share ``(now - start + refresh_every) / sweep_every`` is done."""
        at, every = self._wall_sweep_at, self.hub.sweep_every
        if not self._wall_sweep:
            if now - at < every and now >= at:
                return set()  # this pass is done; the next begins on time
            self._wall_sweep_at = at = now
            self._wall_sweep = [(a.pbx, a.interface) for a in self.service.agents()]
            self._wall_sweep_n = len(self._wall_sweep)  # the pass's size
        if now < at:  # the clock stepped back: the rest of the pass now
            due = len(self._wall_sweep)
        else:
            share = min(1.0, (now - at + self.hub.refresh_every) / every)
            done = self._wall_sweep_n - len(self._wall_sweep)
            due = max(0, math.ceil(self._wall_sweep_n * share) - done)
        part = self._wall_sweep[:due]
        del self._wall_sweep[:due]
        return set(part)

    def note_changes(self, changes: list[Change]) -> None:
        """(A hub listener) which agents the wallboard must rebuild; a new shift."""
        if self.tracker.roll(self.service.clock(), self.service.centre.agents.values()):
            self._wall_agents = None
            self.hub.rebuild_all()
        for c in changes:
            if isinstance(c, AgentChanged):
                self._wall_changed.add((c.agent.pbx, c.agent.interface))
            elif isinstance(c, CallChanged) and c.call.interface and \
                    c.call.interface in self.service.centre_of(c.call.pbx).agents:
                # a call's end counts on its operator's tile (talk time, calls taken) with
                # no AgentChanged when they had already left the call (device not in use)
                self._wall_changed.add((c.call.pbx, c.call.interface))

    async def load_names(self) -> None:
        self.names = await self.users.display_names()

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
        """The build of an operator's live stream: their own picture, without the queue
        figures every screen shares (those are :meth:`shared`, one message for all)."""
        return lambda now: operator_view(self.service.centre, self.tracker, user,
                                         self.operator_queues(now), with_queues=False)

    def shared(self, now: float) -> dict[str, Any]:
        """What every operator screen shows alike (the hub's ``shared_build``):
        ``{"queues": operator_queues}``."""
        return {"queues": self.operator_queues(now)}

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
    """The request's session, or 401.  Roles are the permissions table's business
    (:mod:`agent_console.permissions`); ``roles`` here only narrows further."""
    session = await current_session(request)
    if session is None:
        raise ApiError(401, "sign in first")
    if roles and session.user.role not in roles:
        raise ApiError(403, "your role may not do this")
    return session


async def need_operator(request: web.Request) -> tuple[Session, User]:
    session = await need_session(request)
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
        if request.path != "/api/login" and not request.path.startswith(API_KEY_PATHS):
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
    """A static page; roles are checked by the permissions table, ``allowed`` adds a rule
    of the account (e.g. the console needs a queue member)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if allowed is not None:
            session = await current_session(request)
            if session is None:
                raise web.HTTPFound(f"/login?next={request.path}")
            if not allowed(session.user):
                raise web.HTTPFound(home_for(session.user))
        return web.FileResponse(STATIC / name)
    return handler


# --------------------------------------------------------------------------- audit, then act


@dataclass(slots=True)
class AuditEntry:
    """An audit row written before its action; ``data`` may gain details meanwhile."""

    id: int
    data: dict[str, Any]
    result: str = "ok"


AUDIT_FAILED = ("could not write the audit record; nothing was done",
                "审计记录写入失败，未执行任何操作")


@asynccontextmanager
async def audited(c: Console, user: User, action: str, *, target: str = "", reason: str = "",
                  data: dict[str, Any] | None = None) -> AsyncIterator[AuditEntry]:
    """The rule for every action on an agent, a call or an order: validate (the caller,
    before this), write the audit record, then act (the body), then record the outcome.

    The row is written with ``result: "pending"`` before the body runs; if it cannot be
    written (a database fault, a value it refuses) the body never runs and the request
    is refused with 503 — nothing reaches the PBX unaudited.  When the body ends, the
    row's ``result`` becomes ``entry.result`` ("ok" unless the body set another), or
    the refusal's message when it raised (``failed: <exception>`` for anything else).  Only ``data.result`` of a row is ever updated.
    """
    record = {**(data or {}), "result": "pending"}
    store = c.service.store
    try:
        async with store.engine.begin() as conn:
            audit_id = (await conn.execute(
                AuditRow.__table__.insert().values(
                    at=c.now(), actor=user.username, role=user.role.value, action=action,
                    target=target[:120], reason=reason, data=record,
                    action_id=ACTION_ID.get())
                .returning(AuditRow.id))).scalar_one()
    except (SQLAlchemyError, ValueError, OSError) as exc:  # ValueError: text it refuses
        log.error("audit write failed; action not taken", action=action, actor=user.username,
                  error=type(exc).__name__)
        raise ApiError(503, AUDIT_FAILED[0], zh=AUDIT_FAILED[1]) from None
    entry = AuditEntry(audit_id, record)
    try:
        yield entry
    except ApiError as exc:  # its message says what failed ("the PBX refused ...")
        entry.result = exc.message
        raise
    except BaseException as exc:
        entry.result = f"failed: {type(exc).__name__}"
        raise
    finally:
        entry.data["result"] = entry.result
        try:
            async with store.engine.begin() as conn:
                await conn.execute(AuditRow.__table__.update()
                                   .where(AuditRow.id == entry.id).values(data=entry.data))
        except (SQLAlchemyError, ValueError, OSError) as exc:  # the action happened; its row says "pending"
            log.error("audit outcome not written", action=action, audit_id=entry.id,
                      result=entry.result, error=type(exc).__name__)
        log.info("audited action", action=action, actor=user.username, target=target[:120],
                 result=entry.result)


# --------------------------------------------------------------------------- AMI actions


#: Asterisk's refusal texts (``Message:``) the console explains: substring -> code.
#: The browser shows ``apierr.<code>`` in the operator's language with what to do.
PBX_REFUSALS = (
    ("no such queue", "pbx.no_queue"),
    ("not there", "pbx.not_member"),
    ("interface not found", "pbx.not_member"),
    ("no such channel", "pbx.no_channel"),
    ("channel not specified", "pbx.no_channel"),
)


def pbx_refusal(name: str, action: dict[str, str], message: str) -> ApiError:
    """A 502 for the PBX's refusal of ``name``: English text plus a ``code`` to translate."""
    lowered = message.lower()
    code = next((c for part, c in PBX_REFUSALS if part in lowered), "pbx.refused")
    return ApiError(502, f"the PBX refused {name}: {message}", code=code, action=name,
                    queue=action.get("Queue", ""), pbx_message=message[:200])


async def pbx(c: Console, action: dict[str, str], *, ignore: tuple[str, ...] = (),
              to: str = "") -> dict[str, str]:
    """Send one AMI action to PBX ``to`` (the one that owns the channel or member; ""
    = the home PBX); its reply, or ApiError saying what the PBX said.

    Errors carry ``code`` (``pbx.down``, ``pbx.timeout``, ``pbx.no_queue``,
    ``pbx.not_member``, ``pbx.no_channel``, ``pbx.refused``, ``pbx.bad_value``) for the
    browser to explain.  Channel, interface, queue, context and extension fields pass
    :func:`ivr.values.ami_action` first (they come from the PBX or an account; full-width
    digits become ASCII): a comma, CR, quote or non-ASCII digit is a 409 and nothing is
    sent.
    """
    name = action["Action"]
    try:
        action = ami_action(action)
    except BadValue as exc:
        raise ApiError(409, f"not sent to the PBX: {exc}", code="pbx.bad_value",
                       action=name) from None
    try:
        reply = await c.service.link_for(to).action(action)
    except LinkDown:
        where = f"PBX {to}" if to and len(c.service.edges) > 1 else "PBX"
        raise ApiError(503, f"the {where} link is down; nothing was sent", code="pbx.down",
                       action=name, pbx=to) from None
    except ActionTimeout:
        raise ApiError(504, f"the PBX did not answer {name} in time", code="pbx.timeout",
                       action=name) from None
    except ActionRefused as exc:
        raise ApiError(400, str(exc)) from None
    except AmiError as exc:
        raise ApiError(502, str(exc), code="pbx.refused", action=name,
                       pbx_message=str(exc)[:200]) from None
    first = reply[0] if isinstance(reply, list) and reply else reply
    if not isinstance(first, dict):
        raise ApiError(502, f"the PBX gave no answer to {name}", code="pbx.timeout",
                       action=name)
    if first.get("Response") == "Error":
        message = first.get("Message", "")
        if any(part.lower() in message.lower() for part in ignore):
            return first
        raise pbx_refusal(name, action, message)
    return first


RECORDINGS = web.AppKey("recordings", RecordingStore)
