"""HTTP and websocket side of the console and wallboard (aiohttp).

The page subscribes to ``/ws``: on connect it gets a full snapshot, then a new
snapshot, numbered, whenever something changed (at most a few per second).  A
slow client never delays the event consumer or the other clients: each client
has a bounded queue; when it overflows the client is told to resync and only
the newest snapshot is kept.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from callcenter.service import Service

log = structlog.get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
SERVICE = web.AppKey("service", Service)
HUB = web.AppKey("hub", "Hub")


class Hub:
    """Numbered snapshots fanned out to websocket clients through bounded queues."""

    def __init__(self, service: Service, *, interval: float = 0.5, max_queue: int = 8) -> None:
        self.service = service
        self.interval = interval
        self.max_queue = max_queue
        self.seq = 0
        self.clients: set[asyncio.Queue[dict[str, Any]]] = set()
        self.dirty = asyncio.Event()
        self.last: dict[str, Any] | None = None
        service.subscribers.append(lambda changes: self.dirty.set())

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.max_queue)
        self.clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.clients.discard(q)

    def current(self) -> dict[str, Any]:
        self.seq += 1
        self.last = {"type": "snapshot", "seq": self.seq, "data": self.service.snapshot()}
        return self.last

    def publish(self, message: dict[str, Any]) -> None:
        for q in list(self.clients):
            if q.full():  # a laggard: drop what it has not read, keep the newest
                while not q.empty():
                    q.get_nowait()
                log.info("slow websocket client resynced")
            q.put_nowait(message)

    async def run(self) -> None:
        """Push at most every ``interval`` seconds, and at least every 2 s (clocks move)."""
        while True:
            try:
                await asyncio.wait_for(self.dirty.wait(), timeout=2.0)
            except TimeoutError:
                pass
            self.dirty.clear()
            if self.clients:
                self.publish(self.current())
            await asyncio.sleep(self.interval)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "live.html")


async def api_live(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].snapshot(), dumps=_dumps)


async def api_metrics(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].metrics_json(), dumps=_dumps)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    hub = request.app[HUB]
    q = hub.subscribe()
    try:
        await ws.send_str(_dumps(hub.current()))
        sender = asyncio.create_task(_pump(ws, q))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                    kind = data.get("type") if isinstance(data, dict) else None
                except ValueError:
                    kind = None
                if kind == "resync":
                    await ws.send_str(_dumps(hub.current()))
                else:
                    await ws.send_str(_dumps({"type": "error", "error": "unknown message"}))
            elif msg.type == WSMsgType.ERROR:
                break
        sender.cancel()
    finally:
        hub.unsubscribe(q)
    return ws


async def _pump(ws: web.WebSocketResponse, q: asyncio.Queue[dict[str, Any]]) -> None:
    while not ws.closed:
        message = await q.get()
        await ws.send_str(_dumps(message))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def _hub_ctx(app: web.Application) -> Any:
    task = asyncio.create_task(app[HUB].run())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def make_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICE] = service
    app[HUB] = Hub(service)
    app.cleanup_ctx.append(_hub_ctx)
    app.router.add_get("/", index)
    app.router.add_get("/api/live", api_live)
    app.router.add_get("/api/metrics", api_metrics)
    app.router.add_get("/ws", websocket)
    app.router.add_static("/static", STATIC)
    return app
