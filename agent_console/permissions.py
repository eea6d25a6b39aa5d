"""Who may do what: one literal table, enforced in one place.

Theory of operation
-------------------
:data:`ROUTES` names, for every route the console's app serves (method and the
route's path as registered), the account roles that may use it, and the scope
rule its handler applies on top (``own call``, ``own draft``, ``department``...).
:func:`permission_guard` (an aiohttp middleware, mounted by ``make_app``) looks
the matched route up before any handler runs:

* no entry in the table: refused, 403, and logged as an error — a new route
  must be written into the table to be served at all (and ``tests/
  test_permissions.py`` walks every registered route for every role from this
  table, so a route without an entry fails the suite);
* ``PUBLIC``: served to anyone;
* otherwise: no session is 401 (pages: a redirect to ``/login``), a role not
  listed is 403 (pages: a redirect to the account's home page).

Work-order steps (``POST /api/orders/{id}/steps``) have their own column,
:data:`STEPS`: the account roles that may take each step.  The step itself is
checked where the order's state is known, by the pure order core
(:data:`callcenter.orders.lifecycle.ALLOWED_ROLES`, mapped from account roles by
``callcenter.orders.store.ACCOUNT_ROLES``, plus the department rules: only the
lead department may sign for, return, reply, complete), which also keeps every
refused attempt for supervision (被满意 attempts); ``tests/test_permissions.py``
checks that the core's table is exactly this one.

The department/ownership rule (:func:`order_visible`): the call centre (operators,
supervisors, admins) is one unit and the first point of contact for every order
(首接负责制: whoever answers the citizen's next call must see the order), so it
sees every order; a department's handler sees only the orders its department
handles or handled.  ``GET /api/orders/{id}`` and ``GET /api/work-orders/{id}``
both apply it.

Why these rows (the README's "who may do what" repeats them): returns 退单 are
reviewed by the centre's supervisors, not by operators (accept / refuse a return);
supervision 督办 and the reports are supervisors'; listen-in and forcing an
agent ready or out are supervisors'; an operator acts only on their own calls,
drafts and agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from agent_console.http import ApiError
from agent_console.models import Role

log = structlog.get_logger(__name__)

O, S, H, A = Role.OPERATOR, Role.SUPERVISOR, Role.HANDLER, Role.ADMIN
CENTRE = frozenset({O, S, A})
SUPERVISORS = frozenset({S, A})
STAFF = frozenset({O, S, H, A})
OPERATORS = frozenset({O, A})  # a console with a queue member behind it
HANDLERS = frozenset({H})
READERS = frozenset({S, A, H})  # the reports: the centre's supervisors and departments
SIGNED_IN = STAFF


@dataclass(frozen=True, slots=True)
class Access:
    """One row: who may use a route, and the extra rule its handler applies."""

    roles: frozenset[Role] | None  # None: public, no session needed
    scope: str = ""  # the handler's own rule on top of the role, for the reader
    page: bool = False  # an HTML page: refusals redirect instead of 401/403


PUBLIC = Access(None)

ROUTES: dict[tuple[str, str], Access] = {
    # pages
    ("GET", "/"): PUBLIC,  # redirects to the account's home page or /login
    ("GET", "/login"): Access(None, page=True),
    ("GET", "/console"): Access(OPERATORS, "account mapped to a queue member", page=True),
    ("GET", "/wallboard"): Access(SUPERVISORS, page=True),
    ("GET", "/orders"): Access(STAFF, page=True),
    ("GET", "/static"): PUBLIC,  # the pages' scripts and styles
    # sessions
    ("POST", "/api/login"): PUBLIC,
    ("POST", "/api/logout"): Access(SIGNED_IN),
    ("GET", "/api/me"): Access(SIGNED_IN),
    ("GET", "/api/openapi.json"): PUBLIC,
    # operations (callcenter/ops.py): for the load balancer and the scraper; no caller data
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # live picture
    ("GET", "/api/live"): Access(CENTRE, "operators: their own agent"),
    ("GET", "/ws"): Access(CENTRE, "operators: their own agent"),
    ("GET", "/ws/wall"): Access(SUPERVISORS),  # the wallboard (web workers serve it too)
    ("GET", "/api/metrics"): Access(SUPERVISORS),
    # the operator's own agent and calls
    ("POST", "/api/agent/signin"): Access(OPERATORS, "own agent"),
    ("POST", "/api/agent/ready"): Access(OPERATORS, "own agent"),
    ("POST", "/api/agent/pause"): Access(OPERATORS, "own agent"),
    ("POST", "/api/agent/signout"): Access(OPERATORS, "own agent"),
    ("POST", "/api/call/hangup"): Access(OPERATORS, "own live call"),
    ("POST", "/api/call/transfer"): Access(OPERATORS, "own live call"),
    ("GET", "/api/calls/{uniqueid}/history"): Access(CENTRE, "operators: own calls"),
    ("GET", "/api/recordings/{uniqueid}"): Access(CENTRE, "operators: calls they answered"),
    # drafts and the console's work orders
    ("GET", "/api/drafts"): Access(OPERATORS, "own drafts"),
    ("POST", "/api/drafts"): Access(OPERATORS, "own calls"),
    ("GET", "/api/drafts/{id}"): Access(OPERATORS, "own drafts"),
    ("PUT", "/api/drafts/{id}"): Access(OPERATORS, "own drafts"),
    ("POST", "/api/drafts/{id}/submit"): Access(OPERATORS, "own drafts"),
    # The intake form's lists (config/intake.toml): departments read its names too.
    ("GET", "/api/intake-form"): Access(STAFF),
    ("GET", "/api/callers"): Access(CENTRE),  # lookup by phone number: calls and orders
    ("GET", "/api/work-orders/{id}"): Access(STAFF, "order_visible"),
    # supervisors acting on agents and calls
    ("POST", "/api/supervisor/agents/{name}/ready"): Access(SUPERVISORS),
    ("POST", "/api/supervisor/agents/{name}/signout"): Access(SUPERVISORS),
    ("POST", "/api/supervise/{name}/spy"): Access(SUPERVISORS),
    ("POST", "/api/supervise/spy/stop"): Access(SUPERVISORS, "own spy call"),
    ("GET", "/api/supervise/spy"): Access(SUPERVISORS, "own spy call"),
    # work orders
    ("POST", "/api/orders"): Access(CENTRE),
    ("GET", "/api/orders"): Access(STAFF, "handlers: own department"),
    ("GET", "/api/orders/{id}"): Access(STAFF, "order_visible"),
    ("POST", "/api/orders/{id}/steps"): Access(STAFF, "order_visible, then STEPS"),
    ("POST", "/api/orders/{id}/knowledge"): Access(CENTRE, "order_visible"),
    ("GET", "/api/supervision/anomalies"): Access(SUPERVISORS),
    ("POST", "/api/supervision/anomalies/ack"): Access(SUPERVISORS),  # audited: who, when
    ("GET", "/api/orders/inbox"): Access(HANDLERS, "own department"),
    ("GET", "/api/departments"): Access(STAFF),
    ("GET", "/api/departments/suggest"): Access(STAFF),
    ("GET", "/api/reports/orders"): Access(SUPERVISORS),
    ("GET", "/api/outbound"): Access(SUPERVISORS),
    ("GET", "/api/fastagi/refusals"): Access(SUPERVISORS),
    ("GET", "/api/set-aside"): Access(SUPERVISORS),  # rows the database refused
    # reports (agent_console/reports_api.py)
    ("GET", "/reports"): Access(READERS, page=True),
    ("GET", "/reports/print"): Access(READERS, page=True),
    ("GET", "/api/reports/summary"): Access(READERS, "handlers: own department"),
    ("GET", "/api/reports/export.csv"): Access(READERS, "handlers: own department"),
    ("GET", "/api/reports/export.xlsx"): Access(READERS, "handlers: own department"),
    ("GET", "/api/reports/bursts"): Access(SUPERVISORS),
    # knowledge base (agent_console/knowledge_api.py)
    ("GET", "/knowledge"): Access(STAFF, page=True),
    ("GET", "/api/knowledge/search"): Access(STAFF),
    ("GET", "/api/knowledge/categories"): Access(STAFF),
    ("GET", "/api/knowledge/articles"): Access(STAFF),
    ("POST", "/api/knowledge/articles"): Access(SUPERVISORS),
    ("GET", "/api/knowledge/articles/{id}"): Access(STAFF),
    ("PUT", "/api/knowledge/articles/{id}"): Access(SUPERVISORS),
    ("POST", "/api/knowledge/articles/{id}/retire"): Access(SUPERVISORS),
    ("POST", "/api/knowledge/articles/{id}/restore"): Access(SUPERVISORS),
    ("GET", "/api/knowledge/articles/{id}/versions/{version}"): Access(STAFF),
    ("GET", "/api/knowledge/stats"): Access(SUPERVISORS),
    # finding, duplicates and merging (agent_console/orders_api.py, callcenter/orders/merge.py)
    ("GET", "/api/orders/duplicates"): Access(CENTRE),
    ("GET", "/api/orders/{id}/duplicates"): Access(CENTRE, "order_visible"),
    ("POST", "/api/orders/{id}/merge"): Access(SUPERVISORS, "并案: open orders only"),
    ("POST", "/api/orders/{id}/unmerge"): Access(SUPERVISORS),
    # channels filing orders (agent_console/intake_api.py): no session, a channel's API key
    ("POST", "/api/intake/orders"): Access(None, "X-Api-Key of a channel, rate-limited"),
}
"""(method, route path as registered) -> who may use it.  HEAD follows GET."""

STEPS: dict[str, frozenset[Role]] = {
    "resolve_on_call": CENTRE,  # 直接答复
    "dispatch": CENTRE,  # 派单
    "redispatch": CENTRE,  # 改派
    "add_co_handler": CENTRE,  # 加派
    "accept_handling": HANDLERS,  # 签收 (lead department)
    "return": HANDLERS,  # 退单 (lead department)
    "accept_return": SUPERVISORS,  # the centre's supervisors review returns
    "refuse_return": SUPERVISORS,
    "co_reply": HANDLERS,  # 协办意见 (co-handling department)
    "reply": HANDLERS,  # 答复 (lead department)
    "complete": HANDLERS,  # 办结 (lead department)
    "reject_completion": CENTRE,
    "start_return_visit": CENTRE,
    "visit_unreachable": CENTRE,
    "answer": frozenset({O, S}),  # a citizen's answer heard on a recorded call
    "evaluate": frozenset({O, S}),
    "reopen": frozenset({O, S}),
    "reopen_at_centre": frozenset({O, S}),
    "supervise": SUPERVISORS,  # 督办
    "flag_overdue": frozenset(),  # the timers only
}
"""Work-order step (``POST /api/orders/{id}/steps`` ``step``) -> account roles that may take it."""


def route_key(request: web.Request) -> tuple[str, str] | None:
    """The request's row key, or None when no route matched (aiohttp answers 404/405)."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def access_for(request: web.Request) -> Access | None:
    key = route_key(request)
    return None if key is None else ROUTES.get(key)


def order_visible(role: Role, department: str | None, order: Any) -> bool:
    """The department/ownership rule: the centre sees every order; a handler only those
    its department handles (lead or co-handler) or handled before (dispatch history)."""
    if role in CENTRE:
        return True
    if role is not H or not department:
        return False
    return department in order.handling_units or any(
        d.department == department for d in order.dispatch_history)


def home_for_role(role: Role) -> str:
    return {O: "/console", S: "/wallboard", A: "/wallboard", H: "/orders"}.get(role, "/login")


SessionLookup = Callable[[web.Request], Awaitable[Any]]


def permission_guard(current_session: SessionLookup) -> Any:
    """The middleware enforcing :data:`ROUTES` (``current_session(request)`` -> session
    with ``.user.role``, or None)."""
    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        key = route_key(request)
        if key is None:
            return await handler(request)
        access = ROUTES.get(key)
        if access is None:
            log.error("route without a permission entry refused", method=key[0], path=key[1])
            raise ApiError(403, "this route has no entry in the permissions table",
                           zh="此路由未列入权限表")
        if access.roles is None:
            return await handler(request)
        session = await current_session(request)
        if session is None:
            if access.page:
                raise web.HTTPFound(f"/login?next={request.path}")
            raise ApiError(401, "sign in first", zh="请先登录")
        if session.user.role not in access.roles:
            if access.page:
                raise web.HTTPFound(home_for_role(session.user.role))
            log.info("refused by role", method=key[0], path=key[1],
                     role=session.user.role.value, username=session.user.username)
            raise ApiError(403, "your role may not do this", zh="您的角色无权执行此操作")
        return await handler(request)

    return guard
