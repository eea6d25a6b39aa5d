"""The console's web app: ``make_app`` builds the ``Console`` and mounts every route
(pages and API from ``console_api``, ``/ws`` from ``live``, work orders from ``orders_api``,
listen-in from ``spy``, recordings).  Nothing but entry points and tests imports this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from agent_console.auth import (
    LoginThrottle,
    Passwords,
    User,
    Users,
)
from agent_console.console_api import (
    api_agent_pause,
    api_agent_ready,
    api_agent_signin,
    api_agent_signout,
    api_call_hangup,
    api_call_transfer,
    api_caller_lookup,
    api_draft_get,
    api_draft_open,
    api_draft_save,
    api_draft_submit,
    api_drafts,
    api_fastagi_refusals,
    api_force_ready,
    api_force_signout,
    api_history,
    api_intake,
    api_live,
    api_login,
    api_logout,
    api_me,
    api_metrics,
    api_set_aside,
    api_work_order,
    login_page,
    root,
)
from agent_console.http import (
    json_errors,
    security_headers,
)
from agent_console.hub import Hub
from agent_console.intake import IntakeConfig
from agent_console.intake_api import setup_intake
from agent_console.knowledge_api import setup_knowledge
from agent_console.live import (
    close_sockets,
    hub_ctx,
    rings_or_connects,
    slow_client_gate,
    websocket,
)
from agent_console.models import Role
from agent_console.once import LEDGER, ActionLedger, action_once, prune_ctx
from agent_console.orders import CallerHistory, Orders
from agent_console.orders_api import setup_orders
from agent_console.permissions import permission_guard
from agent_console.ratelimit import RATE_LIMITER, RateLimiter, RateSettings
from agent_console.reports_api import setup_reports
from agent_console.session import (
    CONSOLE,
    RECORDINGS,
    STATIC,
    Console,
    ConsoleConfig,
    csrf_guard,
    current_session,
    page,
)
from agent_console.spy import setup_spy
from agent_console.views import (
    Tracker,
    answered_by,
)
from callcenter.db import CallRow
from callcenter.ops import Ops
from callcenter.service import Service
from ivr.menus import category_labels
from ivr.menus import load_config as load_ivr_config
from recordings.http import recording_handler
from recordings.store import RecordingStore


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
             recordings: RecordingStore | None = None,
             rate_limit: RateSettings | None = None) -> web.Application:
    """The web app for one service: pages, JSON API and ``/ws``.

    ``rate_limit``: the request rate limit (default: the service settings' ``[web]``
    values; :mod:`agent_console.ratelimit`).

    ``caller_history`` is the hook for the screen pop's history (default: calls
    and the minimal work orders from the database).
    """
    engine = service.store.engine
    orders = Orders(engine, service.settings.tz, clock=service.clock)
    # The wallboards' stream at most 4 times a second; operators' screens at once
    # for a ring, else at most 10 times a second; the queue figures every operator
    # screen shows (waiting, the longest wait, which the page counts on by itself) at
    # most every 5 s, as an ACD desktop's queue statistics: each send goes to every
    # operator socket (5,000 at a large centre); every second, then every 2 s, it was
    # the web workers' largest cost (a send a socket is a system call: 40 % of a
    # worker's CPU at 2 s in the scale-out bench) and held the pops up behind it.
    hub = hub or Hub(clock=service.clock, urgent=rings_or_connects, wide_interval=0.25,
                     shared_every=5.0)
    cfg = ConsoleConfig.from_settings(service.settings)
    tracker = Tracker(cfg.shifts, service.settings.tz)
    hub.listeners.append(tracker.feed)
    service.subscribers.append(hub.changed)
    console = Console(
        service=service, users=Users(engine, passwords, clock=service.clock), orders=orders,
        hub=hub, tracker=tracker, config=cfg,
        throttle=throttle or LoginThrottle(), caller_history=caller_history or
        orders.caller_history, failure_delay=failure_delay,
    )
    if hub.route is None:  # a ring refreshes the screens of its agent, not all 1,100
        hub.route = console.route
    if hub.shared_build is None:  # the queue figures: one message for every screen
        hub.shared_build = console.shared
    hub.listeners.append(console.note_changes)
    st = service.settings
    limiter = RateLimiter(rate_limit or RateSettings(
        st.rate_session_per_s, st.rate_session_burst, st.rate_address_per_s,
        st.rate_address_burst, frozenset(st.trusted_proxies)), clock=service.clock)
    # Errors as JSON; the rate limit; then who may use the route
    # (agent_console.permissions.ROUTES); then CSRF; then a forwarded action's id
    # (agent_console.once: a worker's repeat gets the first answer).
    app = web.Application(middlewares=[json_errors, limiter.middleware(), slow_client_gate,
                                       permission_guard(current_session), csrf_guard,
                                       action_once],
                          client_max_size=256 * 1024)
    app[CONSOLE] = console
    app[LEDGER] = ActionLedger(engine, service.clock)
    app[RATE_LIMITER] = limiter
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(hub_ctx)
    app.cleanup_ctx.append(prune_ctx)  # old X-Action-Id claims, off the request path
    app.on_shutdown.append(close_sockets)
    r = app.router
    r.add_get("/", root)
    r.add_get("/login", login_page)
    r.add_get("/console", page("console.html", lambda u: bool(u.interface)))
    r.add_get("/wallboard", page("wallboard.html", None))
    r.add_post("/api/login", api_login)
    r.add_post("/api/logout", api_logout)
    r.add_get("/api/me", api_me)
    r.add_get("/api/fastagi/refusals", api_fastagi_refusals)
    r.add_get("/api/set-aside", api_set_aside)
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
    ops = Ops("core")  # /healthz, /readyz, /metrics
    ops.watch_service(service)
    ops.watch_sockets(lambda: len(console.sockets))
    ops.add_routes(app)
    r.add_get("/ws/wall", websocket)  # the wallboard's; web workers serve it from the bus
    app[RECORDINGS] = recordings or _scanned(RecordingStore(service.settings.recordings_root))
    r.add_get("/api/recordings/{uniqueid}", recording_handler(
        app[RECORDINGS], authorize=_recording_actor, audit=_recording_audit(service),
        own_call=_own_call(service)))
    r.add_static("/static", STATIC, follow_symlinks=False)
    work_orders = setup_orders(app)  # work orders: /orders, /api/orders...
    console.intake = IntakeConfig.load(work_orders.config.directory)
    console.ivr_categories = category_labels(load_ivr_config())
    r.add_get("/api/intake-form", api_intake)
    r.add_get("/api/callers", api_caller_lookup)
    setup_knowledge(app)  # knowledge base: /knowledge, /api/knowledge/...
    setup_intake(app, work_orders)  # channels filing orders: /api/intake/orders (API key)
    setup_reports(app)  # reports: /reports, /api/reports/summary, exports, bursts
    setup_spy(app)  # listen / whisper / barge: /api/supervise/...
    return app
