"""Web workers: the wallboards' websockets served from the bus, beside the core.

The core computes the wallboard once and :func:`publish_wall` puts every numbered update
on the Redis stream ``<prefix>:wall`` (:mod:`callcenter.bus`).  ``callcenter web``
starts N worker processes (``--workers N``, one port shared with SO_REUSEPORT, or one
process each behind nginx, see ``config/nginx.conf``); each follows the stream and fans
it out to its own ``/ws/wall`` sockets.  A worker holds no call state: it checks the
browser's session cookie against the shared database (sessions live there, so a
browser that moves to another worker, or to the standby core, stays signed in) and
relays.  A reconnecting browser sends the ``stream``/``seq`` pair it last applied, which
is the Redis entry id; it gets what it missed from the worker's recent entries, or a
snapshot.  Operators' consoles (narrow, per-person streams) stay on the core's ``/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from agent_console.auth import Users
from agent_console.http import same_origin
from agent_console.hub import RESYNC, Client
from agent_console.session import COOKIE, Console
from callcenter.bus import BusFollower, BusPublisher, Entry, parse_resume
from callcenter.config import Settings
from callcenter.db import make_engine
from callcenter.ops import Ops

log = structlog.get_logger(__name__)

WALL = "wall"


def bus_settings(settings: Settings) -> tuple[str, str]:
    """(Redis URL, key prefix) from ``[bus]`` (or HOTLINE_REDIS_URL); URL "" = no bus."""
    bus = settings.raw.get("bus", {})
    url = os.environ.get("HOTLINE_REDIS_URL") or str(bus.get("redis_url", ""))
    return url, str(bus.get("prefix", "hotline"))


# --------------------------------------------------------------------------- core side


@dataclass(eq=False)
class WallPublisher:
    """The core's wallboard stream, subscribed like one more screen, onto the bus."""

    console: Console
    publisher: BusPublisher
    client: Client | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        hub = self.console.hub
        self.client = hub.attach(WALL, self.console.wall)
        await self.publisher.start()
        self.task = asyncio.create_task(self._pump(), name="wall-to-bus")

    def _snapshot(self) -> tuple[int, dict[str, Any]]:
        stream = self.console.hub.streams[WALL]
        return stream.seq, stream.doc

    async def _pump(self) -> None:
        assert self.client is not None
        while True:
            item = await self.client.queue.get()
            if item is RESYNC:
                self.client.sent_seq = self.client.stream.seq
                self.publisher.resync()
            elif isinstance(item, tuple):
                n, text = item
                if n > self.client.sent_seq:
                    self.client.sent_seq = n
                    self.publisher.update(n, json.loads(text)["ops"])

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.client:
            self.console.hub.detach(self.client)
        await self.publisher.stop()


def publish_wall(console: Console, url: str, prefix: str) -> WallPublisher:
    stream: list[WallPublisher] = []
    publisher = BusPublisher(url, prefix, WALL, lambda: stream[0]._snapshot(),
                             clock=console.service.clock)
    stream.append(WallPublisher(console, publisher))
    return stream[0]


# --------------------------------------------------------------------------- a worker


@dataclass(eq=False)
class Viewer:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str | None]
    token_hash: str


@dataclass(eq=False)
class Worker:
    """One web worker: a bus follower and the websockets it feeds."""

    follower: BusFollower
    users: Users
    ops: Ops
    max_queue: int = 64
    viewers: set[Viewer] = field(default_factory=set)

    def fan_out(self, entry: Entry) -> None:
        for v in list(self.viewers):
            if v.queue.qsize() >= self.max_queue:  # a laggard: a snapshot instead
                while not v.queue.empty():
                    v.queue.get_nowait()
                v.queue.put_nowait(None)
            else:
                v.queue.put_nowait(entry.text)


WORKER = web.AppKey("worker", Worker)


async def wall_socket(request: web.Request) -> web.WebSocketResponse:
    w = request.app[WORKER]
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-site websocket refused")
    session = await w.users.session(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPUnauthorized(text="sign in first")
    if not session.user.is_supervisor:
        raise web.HTTPForbidden(text="the wallboard is for supervisors")
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024, compress=False)
    await ws.prepare(request)
    viewer = Viewer(ws, asyncio.Queue(), session.token_hash)
    resume = parse_resume(request.query.get("stream"), request.query.get("seq"))
    missed = w.follower.missed(*resume) if resume else None
    if missed is None or len(missed) >= w.max_queue:
        viewer.queue.put_nowait(None)
    else:
        for e in missed:
            viewer.queue.put_nowait(e.text)
    w.viewers.add(viewer)
    sender = asyncio.create_task(_send(w, viewer))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                kind = _kind(msg.data)
                if kind == "ping":
                    viewer.queue.put_nowait(json.dumps({"type": "pong",
                                                        "at": w.follower.clock()}))
                elif kind == "resync":
                    viewer.queue.put_nowait(None)
                else:
                    viewer.queue.put_nowait(json.dumps({"type": "error",
                                                        "error": "unknown message type"}))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        w.viewers.discard(viewer)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return ws


def _kind(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get("type") if isinstance(data, dict) else None


async def _send(w: Worker, viewer: Viewer) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        while not viewer.ws.closed:
            text = await viewer.queue.get()
            if text is None:
                await w.follower.ready.wait()
                text = w.follower.snapshot_message()
            await viewer.ws.send_str(text)


async def _bus_ready(w: Worker) -> str | None:
    if not w.follower.connected:
        return "bus unreachable"
    return None if w.follower.ready.is_set() else "no wallboard on the bus yet"


async def _sessions_loop(w: Worker, every: float = 30.0) -> None:
    """Close the sockets whose session ended (signed out, expired, disabled)."""
    while True:
        await asyncio.sleep(every)
        live = await w.users.alive(v.token_hash for v in w.viewers)
        for v in [v for v in w.viewers if v.token_hash not in live]:
            await v.ws.close(code=4401, message=b"session ended")


def make_worker_app(settings: Settings, redis_url: str, prefix: str, *,
                    clock: Callable[[], float] | None = None) -> web.Application:
    """A worker's app: ``/ws/wall``, ``/healthz``, ``/readyz``, ``/metrics``."""
    engine = make_engine(settings.database_url)
    ops = Ops("web")
    kw = {"clock": clock} if clock else {}
    follower = BusFollower(redis_url, prefix, WALL, on_lag=ops.bus_lag.observe, **kw)
    worker = Worker(follower, Users(engine, **kw), ops)
    follower.on_entry = worker.fan_out
    ops.watch_sockets(lambda: len(worker.viewers))
    ops.checks["bus"] = lambda: _bus_ready(worker)
    app = web.Application()
    app[WORKER] = worker

    async def lifecycle(app: web.Application) -> Any:
        await follower.start()
        sessions = asyncio.create_task(_sessions_loop(worker))
        ops.tasks["worker"] = lambda: [t for t in (follower._task, sessions) if t]
        yield
        sessions.cancel()
        for v in list(worker.viewers):
            await v.ws.close(code=1001, message=b"worker stopping")
        await follower.stop()
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/ws/wall", wall_socket)
    ops.add_routes(app)
    return app


async def run_worker(settings: Settings, host: str, port: int, redis_url: str,
                     prefix: str, *, reuse_port: bool = False) -> None:
    from callcenter.runtime import run_until_signalled

    runner = web.AppRunner(make_worker_app(settings, redis_url, prefix), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
    print(f"hotline web worker {os.getpid()} on http://{host}:{port}/ws/wall", flush=True)
    try:
        await run_until_signalled()
    finally:
        await runner.cleanup()


def run_workers(argv_of_one: list[str], n: int) -> int:
    """Start ``n`` worker processes sharing one port; stop them all on a signal or
    when one dies (systemd or the operator restarts the unit)."""
    procs = [subprocess.Popen([sys.executable, "-m", "callcenter.cli", *argv_of_one])
             for _ in range(n)]

    def stop(*_: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(p.poll() is None for p in procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[0].wait(timeout=1.0)
    finally:
        stop()
        for p in procs:
            p.wait()
    return max(p.returncode or 0 for p in procs)
