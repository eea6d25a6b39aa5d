"""Forwarded actions done once (``agent_console/once.py``): the same ``X-Action-Id``
sent twice reaches the PBX once and gets the first answer -- from the same core, at
the same moment, and from the standby that took over (a second core on the same
database); a web worker sends an action again, same id, when its core did not answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from agent_console.once import KEEP_S, LEDGER, PRUNE_EVERY, ActionLedger
from callcenter.db import AuditRow, ForwardedActionRow
from callcenter.service import Service
from callcenter.web import WORKER, Worker, to_core
from tests.console_fakes import Person, desk


async def signed_in(d: Any) -> Person:
    p = await d.as_user("op1")
    assert (await p.call("POST", "/api/agent/signin"))[0] == 200
    await d.service.drain()
    d.pbx.actions.clear()
    return p


def once(action_id: str) -> dict[str, str]:
    return {"X-Action-Id": action_id}


async def audit_rows(d: Any, action_id: str) -> list[AuditRow]:
    async with d.service.store.sessions() as s:
        return list(await s.scalars(select(AuditRow).where(AuditRow.action_id == action_id)))


async def test_the_same_action_id_twice_reaches_the_pbx_once(tmp_db: str) -> None:
    async with desk(tmp_db) as d:
        p = await signed_in(d)
        first = await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                             headers=once("pause-0000001"))
        again = await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                             headers=once("pause-0000001"))
        assert first[0] == 200 and again == first
        assert d.pbx.count("QueuePause") == 1
        (row,) = await audit_rows(d, "pause-0000001")  # the id is on its audit row
        assert (row.action, row.data["result"]) == ("agent_pause", "ok")
        # At the same moment (a worker's retry racing its first try): still once.
        both = await asyncio.gather(*(p.call("POST", "/api/agent/ready",
                                             headers=once("ready-0000002"))
                                      for _ in range(2)))
        assert both[0] == both[1] and both[0][0] == 200
        assert d.pbx.count("QueuePause") == 2  # the pause, then one unpause
        # A refusal is an answer too: repeated, not run again.
        d.pbx.refuse["QueuePause"] = "Interface not found"
        refused = await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                               headers=once("pause-0000003"))
        d.pbx.refuse.clear()
        assert await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                            headers=once("pause-0000003")) == refused
        assert refused[0] >= 400 and d.pbx.count("QueuePause") == 3
        # Without an id: as before, each request runs.
        await p.call("POST", "/api/agent/ready")
        await p.call("POST", "/api/agent/ready")
        assert d.pbx.count("QueuePause") == 5


async def test_an_id_is_one_request_of_one_account_and_well_formed(tmp_db: str) -> None:
    async with desk(tmp_db) as d:
        p = await signed_in(d)
        assert (await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                             headers=once("shared-000001")))[0] == 200
        status, body = await p.call("POST", "/api/agent/ready", headers=once("shared-000001"))
        assert status == 409 and "another request" in body["error"]
        other = await d.as_user("op2")
        assert (await other.call("POST", "/api/agent/pause", {"reason": "meal"},
                                 headers=once("shared-000001")))[0] == 409
        for bad in ("short", "x" * 65, "bad id!!", "中文中文中文中文"):
            status, _ = await p.call("POST", "/api/agent/ready", headers=once(bad))
            assert status == 400, bad
        assert d.pbx.count("QueuePause") == 1
        # Signing in is no action on the desk: its answer is a new session, each time.
        fresh = d.person()
        logins = [await fresh.call("POST", "/api/login", {"username": "op3", "password": "demo"},
                                   headers=once("login-000001")) for _ in range(2)]
        assert [s for s, _ in logins] == [200, 200] and logins[0][1]["csrf"] != logins[1][1]["csrf"]


@asynccontextmanager
async def ledger_app(tmp_db: str, every: float,
                     prune: Callable[[], Awaitable[int]] | None = None
                     ) -> AsyncIterator[tuple[Service, Person, list[float]]]:
    """The console's app pruning old claims every ``every`` s (through ``prune`` in
    place of the ledger's own, when given): its service, op1 signed in, and when each
    prune began (the first at start, awaited here)."""
    began: list[float] = []

    def setup(app: web.Application) -> None:
        app[PRUNE_EVERY] = every
        ledger = app[LEDGER]
        real = prune or ledger.prune

        async def noted() -> int:
            began.append(time.monotonic())
            return await real()

        ledger.prune = noted  # type: ignore[method-assign]

    async with desk(tmp_db, setup=setup) as d:
        deadline = time.monotonic() + 3
        while not began:
            assert time.monotonic() < deadline, "no prune at start"
            await asyncio.sleep(0.01)
        yield d.service, await d.as_user("op1"), began


async def claims(service: Service) -> set[str]:
    async with service.store.sessions() as s:
        return set(await s.scalars(select(ForwardedActionRow.action_id)))


async def make_a_day_old(service: Service, action_id: str) -> None:
    async with service.store.sessions() as s, s.begin():
        (await s.get(ForwardedActionRow, action_id)).at -= KEEP_S + 1


async def test_a_request_never_deletes_old_claims(tmp_db: str) -> None:
    """Deleting old claims is no request's work (it cost a request a 503 when it
    failed): not the first request with an id, nor any after."""
    async with ledger_app(tmp_db, every=3600.0) as (service, p, began):
        deletes: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("DELETE") and "forwarded_actions" in statement:
                deletes.append(statement)

        sync_engine = service.store.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", seen)
        try:
            assert (await p.call("POST", "/api/agent/signin", headers=once("signin-0001")))[0] == 200
            await make_a_day_old(service, "signin-0001")
            for i in range(3):
                status, _ = await p.call("POST", "/api/agent/ready", headers=once(f"ready-000{i}"))
                assert status == 200
        finally:
            event.remove(sync_engine, "before_cursor_execute", seen)
        assert deletes == [] and len(began) == 1  # only the app's prune at start
        assert {"signin-0001", "ready-0000", "ready-0002"} <= await claims(service)


async def test_the_apps_periodic_task_deletes_claims_a_day_old_and_outlives_a_failure(
        tmp_db: str) -> None:
    failing = [True]

    async def prune() -> int:
        if failing[0]:
            raise OperationalError("DELETE", {}, Exception("database away"))
        return await ledger_prune[0]()

    ledger_prune: list[Callable[[], Awaitable[int]]] = []
    async with ledger_app(tmp_db, every=0.05, prune=prune) as (service, p, began):
        ledger_prune.append(ActionLedger(service.store.engine, service.clock).prune)
        for action in ("signin", "ready"):
            path = f"/api/agent/{action}"
            assert (await p.call("POST", path, headers=once(f"{action}-0001")))[0] == 200
        await make_a_day_old(service, "signin-0001")
        failing[0] = False
        turns = len(began)
        deadline = time.monotonic() + 3
        while "signin-0001" in await claims(service):
            assert time.monotonic() < deadline, "the old claim was never deleted"
            await asyncio.sleep(0.05)
        assert len(began) > turns and await claims(service) == {"ready-0001"}


async def test_the_standby_answers_a_repeat_from_the_database_and_never_twice(
        tmp_db: str) -> None:
    """Core A did the action and answered; the worker, not having the answer (A died),
    sends it to core B: B gives A's answer and its PBX gets nothing.  A claim with an
    audit row but no answer (A died between the PBX and the answer) is refused as
    lost; a claim without an audit row (A died before it) runs on B."""
    async with desk(tmp_db) as a:
        p = await signed_in(a)
        answer_a = await p.call("POST", "/api/agent/pause", {"reason": "meal"},
                                headers=once("failover-01"))
        assert answer_a[0] == 200 and a.pbx.count("QueuePause") == 1
        at = time.time()
        async with a.service.store.sessions() as s, s.begin():
            # A died mid-action: claimed and audited (so perhaps sent), never answered ...
            s.add(ForwardedActionRow(action_id="failover-02", at=at, actor="op1",
                                     method="POST", path="/api/agent/ready"))
            s.add(AuditRow(at=at, actor="op1", role="operator", action="agent_ready",
                           target="agent1001", data={"result": "pending"},
                           action_id="failover-02"))
            # ... or claimed and killed before its audit row: nothing reached the PBX.
            s.add(ForwardedActionRow(action_id="failover-03", at=at, actor="op1",
                                     method="POST", path="/api/agent/ready"))
        async with desk(tmp_db) as b:  # core B: the same database, a PBX of its own
            service_b, pbx_b = b.service, b.pbx
            on_b = Person(b.server)  # the same browser (cookie, CSRF) through the worker
            await on_b.http.close()
            on_b.http, on_b.csrf = p.http, p.csrf
            # (B's PBX has the operator as a member, as a resynchronised standby knows.)
            assert (await on_b.call("POST", "/api/agent/signin"))[0] == 200
            await service_b.drain()
            pbx_b.actions.clear()
            assert await on_b.call("POST", "/api/agent/pause", {"reason": "meal"},
                                   headers=once("failover-01")) == answer_a
            status, body = await on_b.call("POST", "/api/agent/ready",
                                           headers=once("failover-02"))
            assert (status, body["code"]) == (409, "action.answer_lost")
            assert pbx_b.actions == []
            status, _ = await on_b.call("POST", "/api/agent/ready",
                                        headers=once("failover-03"))
            assert pbx_b.count("QueuePause") == 1  # run once, on B
            assert await on_b.call("POST", "/api/agent/ready",
                                   headers=once("failover-03")) == (status, _)
            assert pbx_b.count("QueuePause") == 1
            # An answer of 503 (nothing done: the PBX link was down) is not kept.
            pbx_b.link_up = False
            status, _ = await on_b.call("POST", "/api/agent/pause", {"reason": "meal"},
                                        headers=once("failover-04"))
            assert status == 503
            pbx_b.link_up = True
            assert (await on_b.call("POST", "/api/agent/pause", {"reason": "meal"},
                                    headers=once("failover-04")))[0] == 200
            assert pbx_b.count("QueuePause") == 2
        assert a.pbx.count("QueuePause") == 1


async def test_a_worker_sends_an_action_again_with_its_id_when_the_core_did_not_answer(
        ) -> None:
    """Core A drops the connection (killed mid-request); the worker finds core B and
    sends the same request with the same X-Action-Id.  A read is never sent again."""
    seen: dict[str, list[tuple[str, str | None]]] = {"a": [], "b": []}
    worker = Worker(None, None, None, retry_s=5.0)  # type: ignore[arg-type]
    worker.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def core_a(request: web.Request) -> web.StreamResponse:
        seen["a"].append((request.method, request.headers.get("X-Action-Id")))
        worker.core_url = str(server_b.make_url(""))  # B took over meanwhile
        assert request.transport is not None
        request.transport.close()  # A dies before it answers
        return web.Response()

    async def core_b(request: web.Request) -> web.Response:
        seen["b"].append((request.method, request.headers.get("X-Action-Id")))
        return web.json_response({"ok": True, "on": "b"})

    cores = []
    for handler in (core_a, core_b):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        cores.append(TestServer(app))
    server_a, server_b = cores
    front = web.Application()
    front[WORKER] = worker
    front.router.add_route("*", "/{tail:.*}", to_core)
    browser_side = TestServer(front)
    try:
        for s in (server_a, server_b, browser_side):
            await s.start_server()
        worker.core_url = str(server_a.make_url(""))
        async with aiohttp.ClientSession() as browser:
            async with browser.post(browser_side.make_url("/api/agent/pause"),
                                    json={"reason": "meal"}) as r:
                assert (r.status, await r.json()) == (200, {"ok": True, "on": "b"})
            (method, action_id), = seen["a"]
            assert method == "POST"
            assert seen["b"] == [("POST", action_id)] and action_id and len(action_id) >= 8
            assert worker.retried >= 1
            worker.core_url = str(server_a.make_url(""))
            async with browser.get(browser_side.make_url("/api/live")) as r:
                assert r.status == 503  # a read: not sent again
            assert seen["a"][-1] == ("GET", None) and len(seen["b"]) == 1
    finally:
        await worker.http.close()
        for s in (browser_side, server_a, server_b):
            await s.close()


def test_answer_lost_is_explained_in_both_languages() -> None:
    from agent_console.session import STATIC

    zh, en = (STATIC / "i18n.js").read_text(encoding="utf-8").split('"en": {')
    assert '"apierr.action.answer_lost":' in zh and '"apierr.action.answer_lost":' in en
