"""保密件: a department handling a confidential order sees the request, never who
called.  One walk over every route the app serves (and the live stream) as the
department's handler, with a confidential order of theirs in every state of its
handling; the caller's name, number and exact address must appear nowhere."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, WSServerHandshakeError, web
from sqlalchemy import select

from agent_console.auth import LoginThrottle
from agent_console.orders_api import WORK_ORDERS
from agent_console.server import make_app
from agent_console.session import CONSOLE
from callcenter.db import AuditRow
from callcenter.demo_orders import seed_handlers
from tests.console_fakes import CHEAP, Person, serving, started_service

NAME, NUMBER, ADDRESS = "欧阳保密", "13957316420", "幸福路88号3单元502室"
SECRETS = (NAME, NUMBER, "5731642", ADDRESS, "3单元502", "欧阳")


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[tuple[web.Application, Person, Person, Person,
                                                  str]]:
    service, _ = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   throttle=LoginThrottle(free=50))
    await seed_handlers(service.store, app[WORK_ORDERS], passwords=CHEAP)
    async with serving(service, app) as (server, people):
        who = []
        for name in ("op1", "sup1", "dept1"):
            p = Person(server)
            people.append(p)
            assert (await p.login(name))[0] == 200
            who.append(p)
        op, sup, dept = who
        status, doc = await op.call("POST", "/api/orders", {
            "caller": NUMBER, "caller_name": NAME, "address": ADDRESS, "confidential": True,
            "category": "违法建设", "location": "幸福路88号楼顶",
            "text": f"举报楼顶违章搭建，回电{NUMBER}。", "call_uniqueid": "1700000000.9"})
        assert status == 201, doc
        oid = doc["order"]["id"]
        # a duplicate of it, so that duplicates and merges have something to show
        status, doc = await op.call("POST", "/api/orders", {
            "caller": NUMBER, "caller_name": NAME, "address": ADDRESS, "confidential": True,
            "category": "违法建设", "location": "幸福路88号楼顶", "text": "举报楼顶违章搭建"})
        assert (await sup.call("POST", f"/api/orders/{oid}/merge", {
            "followers": [doc["order"]["id"]], "reason": "同一举报"}))[0] == 200
        for p, body in ((op, {"step": "dispatch", "department": "urban_management"}),
                        (dept, {"step": "accept_handling"}),
                        (dept, {"step": "reply", "text": "已责令拆除。"})):
            status, doc = await p.call("POST", f"/api/orders/{oid}/steps", body)
            assert status == 200, doc
            assert_hidden(doc, f"step {body['step']}") if p is dept else None
        yield app, op, sup, dept, oid


def assert_hidden(payload: Any, where: str) -> None:
    text = payload if isinstance(payload, str) else repr(payload)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaks in {where}: {text[:300]}"


def readable(raw: bytes) -> str:
    """The text of an answer: UTF-8, or the XML inside an XLSX file."""
    if raw[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            return "".join(z.read(n).decode("utf-8", "replace") for n in z.namelist())
    return raw.decode("utf-8", "replace")


QUERIES = {
    "/api/orders": ["", "q=违章", "q=" + NUMBER, "q=欧阳", "format=csv", "confidential=1"],
    "/api/knowledge/search": ["q=违章"],
    "/api/reports/export.csv": ["", "table=orders"],
    "/api/reports/summary": [""],
    "/api/reports/export.xlsx": [""],
    "/api/orders/duplicates": ["caller=" + NUMBER + "&text=举报楼顶违章搭建"],
}


async def test_a_department_never_sees_who_called(rig: Any) -> None:
    app, _op, sup, dept, oid = rig
    walked = 0
    for route in app.router.routes():
        if route.method != "GET":
            continue
        path = route.resource.canonical
        concrete = (path.replace("{id}", oid).replace("{version}", "1")
                    .replace("{uniqueid}", "1700000000.9").replace("{name}", "agent1001"))
        if path == "/static" or path == "/ws":
            continue
        for query in QUERIES.get(path, [""]):
            url = dept.url(concrete + ("?" + query if query else ""))
            async with dept.http.get(url, allow_redirects=False) as r:
                body = readable(await r.read())
            assert r.status < 500, (path, r.status)
            assert_hidden(body, f"GET {concrete}?{query} ({r.status})")
            walked += 1
    assert walked >= 40
    # The live stream: a handler gets none at all (the centre's picture only), and the
    # centre's stream carries calls, never work orders.
    with pytest.raises(WSServerHandshakeError) as refused:
        async with dept.http.ws_connect(dept.url("/ws")):
            pass
    assert refused.value.status == 403
    async with sup.http.ws_connect(sup.url("/ws")) as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT and "snapshot" in msg.data
        assert_hidden(msg.data, "/ws (centre)")
    # The department sees the request and the place, so it can act.
    status, doc = await dept.call("GET", f"/api/orders/{oid}")
    assert status == 200 and doc["order"]["location"] == "幸福路88号楼顶"
    assert "违章搭建" in doc["order"]["text"] and doc["order"]["caller_name"] is None


async def test_a_supervisor_sees_the_identity_and_it_is_audited(rig: Any) -> None:
    app, op, sup, _dept, oid = rig
    _, doc = await sup.call("GET", "/api/orders?confidential=1")
    assert NAME not in repr(doc) and NUMBER not in repr(doc)  # lists mask it
    status, doc = await sup.call("GET", f"/api/orders/{oid}")
    assert status == 200 and doc["order"]["caller_name"] == NAME and doc["order"]["caller_number"] == NUMBER
    store = app[CONSOLE].service.store
    async with store.sessions() as s:
        rows = list(await s.scalars(select(AuditRow).where(
            AuditRow.action == "confidential_identity_viewed")))
    assert [(r.actor, r.target) for r in rows] == [("sup1", doc["order"]["number"])]
    status, _ = await sup.call("GET", f"/api/work-orders/{oid}")  # the console's route too
    async with store.sessions() as s:
        assert len(list(await s.scalars(select(AuditRow).where(
            AuditRow.action == "confidential_identity_viewed")))) == 2
    # An operator sees it masked.
    _status, doc = await op.call("GET", f"/api/orders/{oid}")
    assert doc["order"]["caller_name"] == "欧***" and NUMBER not in repr(doc["order"])
