"""A bounded property-based run against the app's own OpenAPI description (schemathesis):
every operation of ``/api/openapi.json`` (which describes every route), requests
generated from its schema and sent as a signed-in supervisor, operator and department
handler, each with a valid CSRF token; no answer may be a 500.  A 502/503/504 is
allowed only when it says the PBX refused or is away (the fake PBX does not know every
action).

Bounded, the examples split between the roles: as a supervisor schemathesis' coverage
phase (boundary values of every field) plus ``FUZZ["sup1"]`` random cases per
operation; as an operator and a department handler ``FUZZ[...]`` random cases per
operation each (the README gives the counts and the time).  The app runs in a thread
of its own, on an ephemeral port, against a fresh SQLite database, without the
request rate limit (tests/test_ratelimit.py tests that).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings

from agent_console.auth import LoginThrottle
from agent_console.openapi import complete
from agent_console.orders_api import WORK_ORDERS, openapi
from callcenter.demo_orders import seed_handlers
from tests.console_fakes import CHEAP, rig_app, started_service
from tests.test_spy import spy_support

FUZZ = {"sup1": 2, "op1": 2, "dept1": 2}  # random cases per operation, per role
SKIP = ("/api/logout",)  # would end the session the other cases use
CASES: list[tuple[str, str, str, int]] = []


def role_schema(coverage: bool) -> Any:
    schema = schemathesis.openapi.from_dict(complete(openapi())).exclude(
        path_regex="^(" + "|".join(SKIP) + ")$")
    schema.config.phases.coverage.enabled = coverage
    return schema


class Served:
    """The console's app and its service, in their own thread and event loop."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.service: Any = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)

    async def _start(self) -> None:
        self.service, pbx = await started_service(self.db_url)
        spy_support(pbx)
        app = rig_app(self.service, throttle=LoginThrottle(free=1000))
        await seed_handlers(self.service.store, app[WORK_ORDERS], passwords=CHEAP)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.service is not None:
            await self.service.stop()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """The app's address and a signed-in ``requests`` session (with its CSRF token)
    per user, made on first use."""
    db = Path(tmp_path_factory.mktemp("fuzz")) / "hotline.db"
    app = Served(f"sqlite+aiosqlite:///{db}")
    app.start()
    sessions: dict[str, Any] = {}
    try:
        yield f"http://127.0.0.1:{app.port}", sessions
    finally:
        for http, _ in sessions.values():
            http.close()
        app.stop()
        for user in FUZZ:
            mine = [c for c in CASES if c[0] == user]
            print(f"\nschemathesis as {user}: {len(mine)} cases over "
                  f"{len({m + p for _, m, p, _ in mine})} paths, "
                  f"statuses {sorted({s for *_, s in mine})}")


def signed_in(served: tuple[str, dict[str, Any]], user: str) -> tuple[str, Any, str]:
    base, sessions = served
    if user not in sessions:
        http = requests.Session()
        r = http.post(base + "/api/login", json={"username": user, "password": "demo"},
                      timeout=10)
        assert r.status_code == 200, r.text
        sessions[user] = (http, r.json()["csrf"])
    return base, *sessions[user]


def no_server_error(case: Any, base: str, http: Any, csrf: str, user: str) -> None:
    if case.headers is not None and "X-CSRF-Token" in case.headers:
        case.headers["X-CSRF-Token"] = csrf
    response = case.call(base_url=base, session=http, timeout=20, allow_redirects=False)
    status = response.status_code
    CASES.append((user, case.method, case.path, status))
    where = f"{user} {case.method} {case.path}"
    assert status != 500, f"{where}: {response.text[:300]}"
    if status >= 500:
        assert status in (502, 503, 504) and "PBX" in response.text, \
            f"{where}: {status} {response.text[:300]}"


def role_test(user: str, coverage: bool) -> Callable[..., None]:
    @role_schema(coverage).parametrize()
    @settings(max_examples=FUZZ[user], deadline=None, suppress_health_check=list(HealthCheck))
    def test(case: Any, served: tuple[str, dict[str, Any]]) -> None:
        base, http, csrf = signed_in(served, user)
        no_server_error(case, base, http, csrf, user)
    return test


test_no_input_gives_a_server_error_as_supervisor = role_test("sup1", coverage=True)
test_no_input_gives_a_server_error_as_operator = role_test("op1", coverage=False)
test_no_input_gives_a_server_error_as_department = role_test("dept1", coverage=False)
