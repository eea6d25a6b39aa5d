"""Who may do what (agent_console.permissions): every route the app serves, for every role,
walked from the table itself, so a route without an entry fails here.

For each registered route and each of anonymous / operator / supervisor / handler /
admin, one request with placeholder path values: a role in the row must get past
the guard (whatever the handler then says, never 401/403 from the guard and never
a 5xx), a role not in it must be refused (401 without a session, 403 with one;
pages redirect).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from agent_console.auth import LoginThrottle, Users
from agent_console.models import Role
from agent_console.orders_api import WORK_ORDERS
from agent_console.permissions import ROUTES, STEPS, order_visible
from agent_console.server import make_app
from callcenter.demo_orders import seed_handlers
from callcenter.orders.lifecycle import ALLOWED_ROLES, Step
from callcenter.orders.store import ACCOUNT_ROLES
from tests.console_fakes import CHEAP, Person, serving, started_service

ACCOUNTS = {Role.OPERATOR: "op1", Role.SUPERVISOR: "sup1", Role.HANDLER: "dept1",
            Role.ADMIN: "root1"}
GUARD_REFUSALS = {"sign in first", "your role may not do this",
                  "this route has no entry in the permissions table"}


def registered(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD follows GET)."""
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        found.add((route.method, route.resource.canonical))
    return sorted(found)


def concrete(path: str) -> str:
    """A path with placeholder values: ids are 1 (the first order), names agent1001."""
    if path == "/static":
        return "/static/common.js"
    return (path.replace("{id}", "1").replace("{version}", "1").replace("{name}", "agent1001")
            .replace("{uniqueid}", "1700000000.1"))


@pytest.fixture
async def served(tmp_db: str) -> AsyncIterator[tuple[web.Application, Any, dict[Role | None,
                                                                                  Person]]]:
    service, _ = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   throttle=LoginThrottle(free=50))
    await seed_handlers(service.store, app[WORK_ORDERS], passwords=CHEAP)
    await Users(service.store.engine, CHEAP).add("root1", "demo", Role.ADMIN)
    async with serving(service, app) as (server, people):
        who: dict[Role | None, Person] = {None: Person(server)}
        people.append(who[None])
        for role, name in ACCOUNTS.items():
            p = Person(server)
            people.append(p)
            status, body = await p.login(name)
            assert status == 200, body
            who[role] = p
        # one order, so that /api/orders/1 exists
        status, body = await who[Role.OPERATOR].call("POST", "/api/orders", {"text": "路灯不亮"})
        assert status == 201, body
        yield app, server, who


def test_every_row_names_known_roles_and_every_step_is_in_the_table() -> None:
    for key, access in ROUTES.items():
        assert access.roles is None or access.roles <= set(Role), key
    step_names = {str(s) for s in Step if s is not Step.ACCEPT} | {"answer"}
    assert set(STEPS) == step_names


def test_the_step_column_is_the_order_cores_table() -> None:
    """The core checks steps (and keeps refused attempts); it must agree with the table."""
    for step, roles in STEPS.items():
        core_step = Step.EVALUATE if step == "answer" else Step(step)
        core = {r for r, c in ACCOUNT_ROLES.items() if c in ALLOWED_ROLES[core_step]}
        assert {r.value for r in roles} == core, step
    assert Role.OPERATOR not in STEPS["accept_return"] | STEPS["refuse_return"]


async def test_every_route_for_every_role(served: Any) -> None:
    app, _, who = served
    routes = registered(app)
    missing = [r for r in routes if r not in ROUTES]
    assert missing == [], f"routes without a row in agent_console.permissions.ROUTES: {missing}"
    stale = [k for k in ROUTES if k not in routes]
    assert stale == [], f"rows for routes the app does not serve: {stale}"
    checked = 0
    # signing out ends the session the later rows need: walk it last
    for method, path in sorted(routes, key=lambda r: r == ("POST", "/api/logout")):
        access = ROUTES[(method, path)]
        for role, person in who.items():
            allowed = access.roles is None or (role is not None and role in access.roles)
            body = {} if method != "GET" else None
            async with person.http.request(
                    method, person.url(concrete(path)), allow_redirects=False,
                    json=body, headers={"X-CSRF-Token": person.csrf} if person.csrf else {},
            ) as r:
                status = r.status
                text = (await r.read()).decode("utf-8", "replace")
            where = f"{method} {path} as {role}: {status} {text[:120]}"
            assert status < 500 or status in (502, 503, 504), where  # the PBX said no
            if allowed:
                assert not (status in (401, 403) and any(g in text for g in GUARD_REFUSALS)), \
                    where
                if access.page:
                    assert status in (200, 302), where
            elif access.page:
                assert status == 302, where
            else:
                assert status == (401 if role is None else 403), where
            checked += 1
    assert checked == len(routes) * 5


async def test_a_route_without_an_entry_is_refused(served: Any) -> None:
    """The guard refuses a route the table does not know (as a new route would be)."""
    _, _, who = served
    row = ROUTES.pop(("GET", "/api/departments"))
    try:
        status, body = await who[Role.SUPERVISOR].call("GET", "/api/departments")
    finally:
        ROUTES[("GET", "/api/departments")] = row
    assert status == 403 and "permissions table" in body["error"]


async def test_operators_may_not_review_a_return_supervisors_may(served: Any) -> None:
    _, _, who = served
    op, dept, sup = who[Role.OPERATOR], who[Role.HANDLER], who[Role.SUPERVISOR]
    for p, body in ((op, {"step": "dispatch", "department": "urban_management"}),
                    (dept, {"step": "return", "reason": "不属本单位职责"})):
        status, doc = await p.call("POST", "/api/orders/1/steps", body)
        assert status == 200, doc
    for step, data in (("accept_return", {"department": "housing"}), ("refuse_return", {})):
        status, doc = await op.call("POST", "/api/orders/1/steps",
                                    {"step": step, "reason": "改派", **data})
        assert status == 403, doc
    status, doc = await sup.call("POST", "/api/orders/1/steps",
                                 {"step": "refuse_return", "reason": "属本单位职责"})
    assert status == 200 and doc["order"]["state"] == "in_progress", doc


async def test_both_order_routes_follow_one_rule(served: Any) -> None:
    """/api/orders/{id} and /api/work-orders/{id}: the centre sees every order, a handler
    only its department's (before dispatch: none)."""
    app, server, who = served
    # a second operator's view of op1's order; a handler before and after dispatch
    op2 = Person(server)
    assert (await op2.login("op2"))[0] == 200
    try:
        for path in ("/api/orders/1", "/api/work-orders/1"):
            assert (await op2.call("GET", path))[0] == 200, path
            assert (await who[Role.SUPERVISOR].call("GET", path))[0] == 200, path
            assert (await who[Role.HANDLER].call("GET", path))[0] == 404, path
        assert (await who[Role.OPERATOR].call("POST", "/api/orders/1/steps", {
            "step": "dispatch", "department": "urban_management"}))[0] == 200
        for path in ("/api/orders/1", "/api/work-orders/1"):
            assert (await who[Role.HANDLER].call("GET", path))[0] == 200, path
        order = await app[WORK_ORDERS].get("1")
        assert order_visible(Role.HANDLER, "urban_management", order)
        assert not order_visible(Role.HANDLER, "housing", order)
        assert not order_visible(Role.HANDLER, None, order)
    finally:
        await op2.http.close()
