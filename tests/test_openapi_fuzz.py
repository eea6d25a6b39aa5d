"""A bounded property-based run against the app's own OpenAPI description (schemathesis):
every operation of ``/api/openapi.json`` (which describes every route), requests
generated from its schema and sent as a signed-in supervisor with a valid CSRF token;
no answer may be a 500.  A 502/503/504 is allowed only when it says the PBX refused
or is away (the fake PBX does not know every action).

Bounded: ``MAX_EXAMPLES`` cases per operation (the README gives the count and the
time); the app runs in a thread of its own, on an ephemeral port, against a fresh
SQLite database.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
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
from agent_console.server import make_app
from callcenter.demo_orders import seed_handlers
from tests.console_fakes import CHEAP, started_service
from tests.test_spy import spy_support

MAX_EXAMPLES = 6
SKIP = ("/api/logout",)  # would end the session the other cases use

schema = schemathesis.openapi.from_dict(complete(openapi())).exclude(
    path_regex="^(" + "|".join(SKIP) + ")$")
CASES: list[tuple[str, str, int]] = []


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
        app = make_app(self.service, passwords=CHEAP, failure_delay=0,
                       throttle=LoginThrottle(free=1000))
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
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str]]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "hotline.db"
    served = Served(f"sqlite+aiosqlite:///{db}")
    served.start()
    base = f"http://127.0.0.1:{served.port}"
    http = requests.Session()
    try:
        r = http.post(base + "/api/login", json={"username": "sup1", "password": "demo"},
                      timeout=10)
        assert r.status_code == 200, r.text
        yield base, http, r.json()["csrf"]
    finally:
        http.close()
        served.stop()
        print(f"\nschemathesis: {len(CASES)} cases over "
              f"{len({m + p for m, p, _ in CASES})} paths, "
              f"statuses {sorted({s for _, _, s in CASES})}")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case: Any, supervisor: tuple[str, Any, str]) -> None:
    base, http, csrf = supervisor
    if case.headers is not None and "X-CSRF-Token" in case.headers:
        case.headers["X-CSRF-Token"] = csrf
    response = case.call(base_url=base, session=http, timeout=20, allow_redirects=False)
    status = response.status_code
    CASES.append((case.method, case.path, status))
    where = f"{case.method} {case.formatted_path if hasattr(case, 'formatted_path') else ''}"
    assert status != 500, f"{where}: {response.text[:300]}"
    if status >= 500:
        assert status in (502, 503, 504) and "PBX" in response.text, \
            f"{where}: {status} {response.text[:300]}"
