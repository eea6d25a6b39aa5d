"""Operators' consoles on the bus (a real Redis): the core publishes each open operator
screen once on ``<prefix>:ops``; web workers serve the console (its requests relayed
to the active core, its websocket from the stream).  An action through a worker is
audited by the core and sent to the PBX once; the screen pop reaches the browser over
the bus; a browser resumes on another worker, and on a worker started afterwards,
from the ``stream``/``seq`` it last applied, with the same cookie (sessions live in the
database); a worker with no core answers 503 in both languages, sending nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from sqlalchemy import func, select

from agent_console.hub import apply_ops
from agent_console.server import make_app
from agent_console.session import CONSOLE
from callcenter.bus import SHARED, unpack
from callcenter.db import AuditRow
from callcenter.web import WORKER, ConsolesOnBus, make_worker_app
from tests.console_fakes import Person, serving, started_service


async def until(ws: aiohttp.ClientWebSocketResponse, state: dict[str, Any],
                done: Any) -> None:
    """Apply the socket's messages to ``state`` (doc, stream, seq) until ``done(doc)``;
    each update must follow the last one applied."""
    while not done(state["doc"]):
        msg = json.loads((await ws.receive(timeout=10)).data)
        if msg["type"] == "snapshot":
            state.update(doc=msg["data"], stream=msg["stream"], seq=msg["seq"])
        elif msg["type"] == "update" and msg["seq"] > state["seq"]:
            assert msg["stream"] == state["stream"] and msg["seq"] == state["seq"] + 1, msg
            apply_ops(state["doc"], msg["ops"])
            state["seq"] = msg["seq"]
        elif msg["type"] == "shared":  # the figures every screen shares (common.js)
            state["doc"].update(msg["data"])


async def numbered(ws: aiohttp.ClientWebSocketResponse, state: dict[str, Any]) -> Any:
    """The next numbered message (snapshot or update); shared ones on the way applied."""
    while True:
        msg = json.loads((await ws.receive(timeout=10)).data)
        if msg["type"] != "shared":
            return msg
        state["doc"].update(msg["data"])


async def test_operator_consoles_are_served_by_web_workers_from_the_bus(
        tmp_db: str, bus_prefix: tuple[str, str]) -> None:
    async with asyncio.timeout(90):
        await consoles_on_the_bus(tmp_db, *bus_prefix)


async def consoles_on_the_bus(tmp_db: str, url: str, prefix: str) -> None:
    service, pbx = await started_service(tmp_db)
    app = make_app(service)
    async with serving(service, app) as (core, people):
        consoles = ConsolesOnBus(app[CONSOLE], url, prefix, str(core.make_url("")).rstrip("/"))
        await consoles.start()
        workers = [TestServer(make_worker_app(service.settings, url, prefix))
                   for _ in range(2)]
        for w in workers:
            await w.start_server()
        try:
            op = Person(workers[0])
            people.append(op)
            assert (await op.login("op1"))[0] == 200  # through the worker, to the core
            status, page = await op.call("GET", "/console")
            assert status == 200 and "<html" in page.lower()
            ws = await op.ws()
            state: dict[str, Any] = {"doc": None, "seq": -1}
            await until(ws, state, lambda d: d is not None)
            assert state["doc"]["me"]["username"] == "op1" and state["doc"]["agent"] is None
            assert list(consoles.clients) == ["op1"]  # one hub client, not one per socket

            # An action from the worker reaches the core: audited, sent to the PBX once.
            status, body = await op.call("POST", "/api/agent/signin", {})
            assert status == 200, body
            assert pbx.count("QueueAdd") == 2  # hotline, hotline-en: once each
            async with service.store.engine.connect() as conn:
                audits = await conn.scalar(select(func.count()).select_from(AuditRow)
                                           .where(AuditRow.action == "agent_signin"))
            assert audits == 1
            await until(ws, state, lambda d: d["agent"] is not None)  # from PBX events

            # The screen pop comes over the bus.
            iface = state["doc"]["me"]["interface"]
            pbx.caller_joins("1795000000.1", "13800001234", queue="hotline")
            pbx.ring("1795000000.1", iface)
            await until(ws, state, lambda d: d["call"] is not None)
            assert state["doc"]["call"]["uniqueid"] == "1795000000.1"
            # The caller joining changed the figures every screen shares: one shared
            # message on the bus (not one per operator), applied by the screen.
            await until(ws, state, lambda d: d.get("queues", {}).get("hotline", {})
                        .get("waiting") == 1)
            shared = [r for _id, f in await consoles.redis.xrange(f"{prefix}:ops")
                      for r in unpack(f[b"batch"].decode()) if r[0] == SHARED]
            assert shared and all(r[1] == "shared" for r in shared)
            assert json.loads(shared[-1][3])["data"]["queues"]["hotline"]["waiting"] >= 1
            await ws.close()

            # Missed while away; resumed on the other worker with the same cookie.
            pbx.answer("1795000000.1", iface)
            stream, seq = state["stream"], state["seq"]
            other = await op.http.ws_connect(
                str(workers[1].make_url(f"/ws?stream={stream}&seq={seq}")))
            first = await numbered(other, state)
            assert first["type"] == "update" and first["seq"] == seq + 1, first
            apply_ops(state["doc"], first["ops"])
            state["seq"] = first["seq"]
            await until(other, state, lambda d: d["agent"]["state"] == "on_call")
            await other.close()

            # A worker started now catches up from the stream: it resumes the browser too.
            pbx.complete("1795000000.1")
            late = TestServer(make_worker_app(service.settings, url, prefix))
            await late.start_server()
            workers.append(late)
            stream, seq = state["stream"], state["seq"]
            again = await op.http.ws_connect(
                str(late.make_url(f"/ws?stream={stream}&seq={seq}")))
            first = await numbered(again, state)
            assert first["type"] == "update" and first["seq"] == seq + 1, first
            await again.close()

            # No core: a worker refuses the request in both languages and sends nothing.
            await consoles.stop()
            await consoles.redis.set(f"{prefix}:core", "http://127.0.0.1:9")
            late.app[WORKER].core_url_at = 0.0  # (it reads the URL every 2 s)
            before = len(pbx.actions)
            status, body = await Person(late).call("POST", "/api/agent/ready", {})
            assert status == 503 and body["error_zh"] and body["error"], body
            assert len(pbx.actions) == before
        finally:
            for w in workers:
                await w.close()
            await consoles.stop()
