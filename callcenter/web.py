"""Web workers: the consoles' and wallboards' websockets served from the bus.

The core computes each live view once (``agent_console.hub``) and publishes it once:

* the wallboard: :func:`publish_wall` puts every numbered update on the Redis stream
  ``<prefix>:wall`` (:mod:`callcenter.bus`); a browser's ``stream``/``seq`` resume pair
  *is* the entry id ``<epoch>-<seq>``;
* operators' screens: :class:`ConsolesOnBus` keeps one hub client per operator whose
  screen some worker shows (the workers say so in ``<prefix>:watch`` and on the command
  stream ``<prefix>:cmd``) and puts its snapshots and updates on ``<prefix>:ops`` (in
  batches, one entry per publisher turn); each message names its screen and carries
  what the browser gets, whose ``stream``/``seq``
  (that screen's own numbering) is the resume point.  What every operator screen
  shows alike (the queue figures) is not in any screen's messages: the hub's shared
  message goes on ``<prefix>:ops`` once per change under the key ``*shared``
  (:data:`callcenter.bus.SHARED`), and each worker sends it to its operator sockets
  (and merges it into the snapshots it serves).

``callcenter web`` starts N worker processes (``--workers N``, one port shared with
SO_REUSEPORT, or one process each behind nginx, see ``config/nginx.conf``); each follows
both streams, keeps every screen's document (:class:`~callcenter.bus.KeyedFollower`)
and fans out to its own sockets (``/ws``, ``/ws/wall``); a worker that (re)starts
rebuilds them from the capped streams, and asks the core for a snapshot of a screen
whose base it lacks.  A worker holds no call state: it checks the browser's session
cookie against the shared database (sessions live there, so a browser that moves to
another worker, or whose core failed over, stays signed in).  Every other request
(pages, API, the console's actions) it relays to the active core, whose URL that core
wrote to ``<prefix>:core``; the core audits an action before it sends anything to the
PBX, as when a browser talks to it directly.  An action carries an id (``X-Action-Id``)
and is sent again with it while no core answers (a failover); the core answers a repeat
with its first answer (:mod:`agent_console.once`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from agent_console.auth import Session, User, Users
from agent_console.http import same_origin
from agent_console.hub import RESYNC, Client
from agent_console.once import HEADER as ACTION_HEADER
from agent_console.ratelimit import client_address
from agent_console.session import COOKIE, Console
from callcenter.bus import (
    SHARED,
    BusFollower,
    BusPublisher,
    Entry,
    KeyedFollower,
    MuxPublisher,
    close_redis,
    parse_resume,
)
from callcenter.config import Settings
from callcenter.db import make_engine
from callcenter.ops import Ops
from callcenter.runtime import periodic, settle_collector

log = structlog.get_logger(__name__)

WALL = "wall"
OPS = "ops"


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
                # Fallen behind (the hub's queue for it was full): the updates it missed,
                # from the stream's own buffer, as updates; a bare snapshot only when they
                # are gone (readers that are current cannot take one as an update, so it
                # goes whole to every wallboard socket: megabytes each).
                stream = self.client.stream
                missed = stream.missed(stream.id, self.client.sent_seq)
                if missed is None:
                    self.client.sent_seq = stream.seq
                    self.publisher.resync()
                else:
                    for n, text in missed:
                        self.client.sent_seq = n
                        self.publisher.update(n, json.loads(text)["ops"])
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


class _ToBus:
    """Stands in for a hub client's queue: what the hub offers is published at once
    (the web workers hold the sockets, and their own bounded queues)."""

    def __init__(self, publish: Callable[[Client, Any], None]) -> None:
        self.publish = publish
        self.client: Client | None = None
        self._early: list[Any] = []

    def bind(self, client: Client) -> None:
        self.client = client
        for item in self._early:
            self.publish(client, item)
        self._early = []

    def put_nowait(self, item: Any) -> None:
        if self.client is None:
            self._early.append(item)
        else:
            self.publish(self.client, item)

    def full(self) -> bool:
        return False

    def empty(self) -> bool:
        return True

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty


@dataclass(eq=False)
class ConsolesOnBus:
    """The core's operator screens, published once each on ``<prefix>:ops``.

    Web workers say which operators have a screen open: the hash ``<prefix>:watch``
    (username -> until, re-asserted every 30 s) and, for at once, the command stream
    ``<prefix>:cmd`` (``watch``/``snapshot`` + username).  For each watched operator the
    core's hub holds one client (not one per socket) whose updates go to the stream; a
    new client, a worker's ``snapshot`` request and a publisher gap each send a
    snapshot.  The active core also writes its own URL to ``<prefix>:core``, where the
    workers send the console's requests (pages, API, actions)."""

    console: Console
    redis_url: str
    prefix: str
    core_url: str = ""
    publisher: MuxPublisher | None = None
    clients: dict[str, Client] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    commands_seen: int = 0
    _looking_up: set[str] = field(default_factory=set)
    _shared_again_at: float = -1e9

    def __post_init__(self) -> None:
        self.publisher = MuxPublisher(self.redis_url, self.prefix, OPS,
                                      on_gap=self._resync_all,
                                      clock=self.console.service.clock)
        self.redis = aioredis.from_url(self.redis_url)
        # The browsers resume from the workers' copies (KeyedFollower keeps their last
        # updates); the core's own operator streams need none for that, and 16 updates
        # of 5,000 screens were ~50 MB the core filled over its first half hour.
        self.console.hub.keep_updates_narrow = min(self.console.hub.keep_updates_narrow, 2)

    def _publish(self, client: Client, item: Any) -> None:
        if item is not RESYNC and not isinstance(item, tuple):
            return  # a reply to one socket (pong ...): the worker answers those itself
        text = self.console.hub.next_message(client, item)
        if text is not None:
            assert self.publisher is not None
            self.publisher.add(client.stream.key, "snapshot" if item is RESYNC else "update",
                               text)

    def _shared(self, text: str) -> None:
        """The hub's shared message (the queue figures): once on the stream for every
        screen of every worker."""
        assert self.publisher is not None
        self.publisher.add(SHARED, "shared", text)

    def _shared_again(self) -> None:
        """The current shared message once more (a worker that just started, or whose
        stream entry was trimmed, has it again)."""
        text = self.console.hub.shared_text
        if text is not None:
            self._shared(text)

    def _resync_all(self) -> None:
        for client in self.clients.values():
            self.console.hub.resync(client)
        self._shared_again()  # (the gap may have dropped the last shared message)

    async def watch_many(self, usernames: list[str]) -> set[str]:
        """Hold a hub client for each operator named not held yet (their accounts read in
        one query: a worker opening 1,000 screens at once asks for all of them, and a
        query each queued the commands behind them for minutes); the usernames newly held."""
        wanted = [u for u in dict.fromkeys(usernames)
                  if u not in self.clients and u not in self._looking_up]
        if not wanted:
            return set()
        self._looking_up.update(wanted)
        try:
            rows = await self.console.users.get_many(wanted)
        finally:
            self._looking_up.difference_update(wanted)
        c = self.console
        added = set()
        for username, row in rows.items():
            if row.disabled or not row.interface or username in self.clients:
                continue
            user = User.from_row(row)
            forward = _ToBus(self._publish)
            client = c.hub.attach(c.operator_key(user), c.operator(user), narrow=True,
                                  queue=forward)
            forward.bind(client)
            self.clients[username] = client
            added.add(username)
        return added

    def unwatch(self, username: str) -> None:
        client = self.clients.pop(username, None)
        if client is not None:
            self.console.hub.detach(client)

    async def start(self) -> None:
        assert self.publisher is not None
        await self.publisher.start()
        hub = self.console.hub
        if self._shared not in hub.shared_listeners:
            hub.shared_listeners.append(self._shared)
        hub.current_shared()
        self._shared_again()
        if self.core_url:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.set(f"{self.prefix}:core", self.core_url)
        self.tasks = [asyncio.create_task(self._commands(), name="bus-commands"),
                      asyncio.create_task(self._watch_table(), name="bus-watch-table")]

    async def _watch_table(self, every: float = 10.0) -> None:
        """Who is watched, from the table the workers keep (what a core that has just
        taken over learns first), and who is no longer."""
        while True:
            try:
                table = await self.redis.hgetall(f"{self.prefix}:watch")
                now = time.time()
                wanted = {k.decode() for k, v in table.items() if float(v) > now}
                missing = sorted(wanted - self.clients.keys())
                for i in range(0, len(missing), 500):
                    await self.watch_many(missing[i:i + 500])
                for username in self.clients.keys() - wanted:
                    self.unwatch(username)
                self._shared_again()
                if self.core_url:
                    await self.redis.set(f"{self.prefix}:core", self.core_url)
            except (RedisError, OSError, ValueError) as exc:
                log.warning("bus watch table unreadable", error=str(exc))
            await asyncio.sleep(every)

    async def _commands(self) -> None:
        key, last = f"{self.prefix}:cmd", ""
        while True:
            if not last:  # from the newest command on ("$" per read would skip some)
                try:
                    newest = await self.redis.xrevrange(key, count=1)
                except (RedisError, OSError) as exc:
                    log.warning("bus commands unreadable", error=str(exc))
                    await asyncio.sleep(1.0)
                    continue
                last = newest[0][0].decode() if newest else "0-0"
            try:
                got = await self.redis.xread({key: last}, block=1000, count=500)
                batch = [fields for _k, entries in got or () for _id, fields in entries]
                if got:
                    last = got[-1][1][-1][0].decode()
                self.commands_seen += len(batch)
                await self._commands_batch(batch)
            except (RedisError, OSError) as exc:
                log.warning("bus commands unreadable", error=str(exc))
                await asyncio.sleep(1.0)

    async def _commands_batch(self, batch: list[dict[bytes, bytes]]) -> None:
        """``watch`` and ``snapshot`` commands, each operator once per batch: the new ones
        held (a new client's first message is a snapshot), the others resynced."""
        watch: dict[str, None] = {}
        again: dict[str, None] = {}
        for fields in batch:
            do = fields.get(b"do", b"").decode()
            username = fields.get(b"user", b"").decode()[:64]
            if do == "watch":
                watch[username] = None
            elif do == "snapshot":
                (again if username in self.clients else watch)[username] = None
        await self.watch_many(list(watch))
        now = time.monotonic()
        if (watch or again) and now - self._shared_again_at >= 1.0:
            # a screen opened: its worker may lack the shared figures (at most once a
            # second: 5,000 screens opening come in hundreds of batches)
            self._shared_again_at = now
            self._shared_again()
        for username in again:
            client = self.clients.get(username)
            if client is not None:
                self.console.hub.resync(client)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.console.hub.shared_listeners.remove(self._shared)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for username in list(self.clients):
            self.unwatch(username)
        assert self.publisher is not None
        await self.publisher.stop()
        await close_redis(self.redis)


# --------------------------------------------------------------------------- a worker


@dataclass(eq=False)
class Viewer:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str | None]
    token_hash: str
    key: str = WALL  # the wallboard, or an operator's view key


@dataclass(eq=False)
class Worker:
    """One web worker: the bus followers and the websockets they feed; the console's
    other requests go to the active core."""

    follower: BusFollower
    users: Users
    ops: Ops
    consoles: KeyedFollower | None = None
    redis: aioredis.Redis | None = None
    prefix: str = "hotline"
    max_queue: int = 64
    viewers: set[Viewer] = field(default_factory=set)
    operators: dict[str, set[Viewer]] = field(default_factory=dict)  # view key -> sockets
    http: Any = None  # aiohttp.ClientSession to the core
    core_url: str = ""
    core_url_at: float = 0.0
    proxied: int = 0
    retried: int = 0  # actions sent again (same X-Action-Id) while the core did not answer
    #: How long an action is sent again while no core answers (a failover: <= 10 s).
    retry_s: float = 15.0
    #: nginx's address: its X-Forwarded-For entry names the client ([web] trusted_proxies)
    trusted_proxies: frozenset[str] = frozenset()
    _asks: set[asyncio.Task[None]] = field(default_factory=set)
    #: operator sockets offered the shared message per turn of the loop (fan_out_shared),
    #: the slices spread over shared_spread_s seconds (the figures go out every 2 s)
    shared_slice: int = 50
    shared_spread_s: float = 0.4
    _shared_next: str | None = None
    _shared_task: asyncio.Task[None] | None = None

    def fan_out(self, entry: Entry) -> None:
        for v in list(self.viewers):
            _offer(v, entry.text, self.max_queue)

    def fan_out_operator(self, key: str, text: str) -> None:
        for v in list(self.operators.get(key, ())):
            _offer(v, text, self.max_queue)

    def fan_out_shared(self, text: str) -> None:
        """The operators' shared message (queue figures), parsed once, to every
        operator socket here, ``shared_slice`` sockets per turn of the event loop.

        Offered to 2,500 sockets at once, it woke 2,500 senders ahead of any screen pop
        that came meanwhile: in the scale-out bench every pop of the next ~0.5 s waited
        for the whole fan-out (p99 1.7 s).  Paced, a pop waits for at most a slice or two;
        a newer shared message replaces one still going out (it carries every figure)."""
        self._shared_next = text
        if self._shared_task is None or self._shared_task.done():
            self._shared_task = asyncio.create_task(self._pace_shared(), name="shared-fan-out")

    async def _pace_shared(self) -> None:
        try:
            while self._shared_next is not None:
                await self._paced_shared()
        except Exception:  # logged; the next shared message starts the task again
            log.exception("shared figures fan-out failed")

    async def _paced_shared(self) -> None:
        """One pass over every operator socket here.  A newer message that comes during
        it carries every figure: the sockets not reached yet get that one, and those
        already given the older one get it too, after them (so none waits for ever)."""
        text = self._shared_next
        self._shared_next = None
        todo = deque(v for vs in self.operators.values() for v in vs)
        given: list[Viewer] = []
        pause = self.shared_spread_s / max(1, -(-len(todo) // self.shared_slice))
        while todo and text is not None:
            if self._shared_next is not None:
                text, self._shared_next = self._shared_next, None
                todo.extend(given)
                given = []
            for _ in range(min(self.shared_slice, len(todo))):
                v = todo.popleft()
                if not v.ws.closed:
                    _offer(v, text, self.max_queue)
                given.append(v)
            # the senders of this slice, and any pop, run; the browsers' machines (and
            # the bench's browser processes) get the figures spread out too
            await asyncio.sleep(pause)

    def ask(self, username: str, do: str = "watch") -> None:
        """Tell the active core this worker shows ``username``'s screen (``watch``), or
        needs its snapshot again (``snapshot``): the watch table and a command."""
        if self.redis is None:
            return
        redis, prefix = self.redis, self.prefix

        async def send() -> None:
            with contextlib.suppress(RedisError, OSError):
                await redis.hset(f"{prefix}:watch", username, repr(time.time() + 120))
                await redis.xadd(f"{prefix}:cmd", {"do": do, "user": username},
                                 maxlen=10000, approximate=True)
        task = asyncio.create_task(send())
        self._asks.add(task)
        task.add_done_callback(self._asks.discard)

    async def still_watching(self) -> None:
        """Every operator whose screen is open here, re-asserted in the watch table in one
        HSET (not a task and two round trips per operator: 2,500 at once every 30 s
        each lapsed, silently, with 5,000 operators)."""
        names = {_username(key) for key in self.operators}
        if self.redis is None or not names:
            return
        until = repr(time.time() + 120)
        try:
            await self.redis.hset(f"{self.prefix}:watch", mapping=dict.fromkeys(names, until))
        except (RedisError, OSError) as exc:
            log.warning("watch table not re-asserted", error=str(exc), operators=len(names))

    def missing(self, key: str) -> None:
        if self.operators.get(key):
            self.ask(_username(key), "snapshot")

    async def core(self) -> str:
        """The active core's URL, as it wrote it to ``<prefix>:core`` (read every 2 s)."""
        now = time.monotonic()
        if self.redis is not None and (not self.core_url or now - self.core_url_at > 2.0):
            with contextlib.suppress(RedisError, OSError):
                url = await self.redis.get(f"{self.prefix}:core")
                self.core_url = url.decode() if url else ""
                self.core_url_at = now
        return self.core_url


def _offer(v: Viewer, text: str, most: int) -> None:
    if v.queue.qsize() >= most:  # a laggard: a snapshot instead
        while not v.queue.empty():
            v.queue.get_nowait()
        v.queue.put_nowait(None)
    else:
        v.queue.put_nowait(text)


def _username(key: str) -> str:
    """``op:<username>:<interface>`` (``Console.operator_key``) -> username."""
    return key.split(":", 2)[1] if key.count(":") >= 2 else ""


WORKER = web.AppKey("worker", Worker)


async def _signed_in(request: web.Request) -> tuple[Worker, Session]:
    """The worker and the signed-in session of a websocket upgrade: 403 cross-site,
    401 without a live session."""
    w = request.app[WORKER]
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-site websocket refused")
    session = await w.users.session(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPUnauthorized(text="sign in first")
    return w, session


async def wall_socket(request: web.Request) -> web.WebSocketResponse:
    """``/ws/wall`` (and ``/ws`` for supervisors): the wallboard from the bus."""
    w, session = await _signed_in(request)
    if not session.user.is_supervisor:
        raise web.HTTPForbidden(text="the wallboard is for supervisors")
    return await _serve_socket(request, w, session.token_hash, WALL)


async def live_socket(request: web.Request) -> web.WebSocketResponse:
    """``/ws``: an operator's own screen from the bus (a supervisor's: the wallboard)."""
    w, session = await _signed_in(request)
    user = session.user
    if user.is_supervisor:
        return await _serve_socket(request, w, session.token_hash, WALL)
    if w.consoles is None or not user.interface:
        raise web.HTTPForbidden(text="no live screen for this account")
    return await _serve_socket(request, w, session.token_hash,
                               f"op:{user.username}:{user.interface}")


async def _serve_socket(request: web.Request, w: Worker, token_hash: str,
                        key: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024, compress=False)
    try:
        await ws.prepare(request)
    except ConnectionResetError:  # the browser left during the handshake
        return ws
    viewer = Viewer(ws, asyncio.Queue(), token_hash, key)
    stream, seq = request.query.get("stream"), request.query.get("seq")
    missed: list[str] | None = None
    if key == WALL:
        resume = parse_resume(stream, seq)
        if resume is not None:
            found = w.follower.missed(*resume)
            missed = None if found is None else [e.text for e in found]
        w.viewers.add(viewer)
    else:
        assert w.consoles is not None
        view = w.consoles.views.get(key)
        if view is not None and stream and len(stream) <= 40 and seq and seq.isdigit():
            missed = view.missed(stream, int(seq))
        w.operators.setdefault(key, set()).add(viewer)
        w.ask(_username(key))
    if missed is None or len(missed) >= w.max_queue - 1:
        viewer.queue.put_nowait(None)  # (an operator's snapshot carries the shared figures)
    else:
        for text in missed:
            viewer.queue.put_nowait(text)
        if key != WALL and w.consoles is not None and w.consoles.shared_text is not None:
            viewer.queue.put_nowait(w.consoles.shared_text)  # the figures as they are now
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
        others = w.operators.get(key)
        if others is not None:
            others.discard(viewer)
            if not others:
                del w.operators[key]
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return ws


def _kind(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get("type") if isinstance(data, dict) else None


async def _snapshot(w: Worker, viewer: Viewer) -> str | None:
    if viewer.key == WALL:
        await w.follower.ready.wait()
        return w.follower.snapshot_message()
    assert w.consoles is not None
    for _ in range(10):  # asked again every 3 s: a core taking over, a command lost
        view = await w.consoles.wait_view(viewer.key, 3.0)
        if view is not None:
            return view.snapshot_message(w.consoles.shared_doc)
        w.ask(_username(viewer.key), "snapshot")
    return None


async def _send(w: Worker, viewer: Viewer) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        while not viewer.ws.closed:
            text = await viewer.queue.get()
            if text is None:
                text = await _snapshot(w, viewer)
                if text is None:  # the core did not answer: the page reconnects
                    await viewer.ws.close(code=1013, message=b"no live view yet; retry")
                    return
            await viewer.ws.send_str(text)


async def _bus_ready(w: Worker) -> str | None:
    if not w.follower.connected:
        return "bus unreachable"
    return None if w.follower.ready.is_set() else "no wallboard on the bus yet"


async def _sessions_loop(w: Worker, every: float = 30.0) -> None:
    """Tell the core again which operators' screens are open here (the watch table
    expires), then close the sockets whose session ended (signed out, expired,
    disabled).  A failed round is logged and the next one runs: a loop that died here
    let the watch table lapse and the core stop every screen of this worker."""
    while True:
        await asyncio.sleep(every)
        try:
            await w.still_watching()
            viewers = [*w.viewers, *(v for vs in w.operators.values() for v in vs)]
            live = await w.users.alive(v.token_hash for v in viewers)
            for v in [v for v in viewers if v.token_hash not in live]:
                await v.ws.close(code=4401, message=b"session ended")
        except Exception:  # logged; the next round tries again
            log.exception("worker's session round failed; again in 30 s")


#: Hop-by-hop headers (RFC 9110 7.6.1): not forwarded either way.
HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                 "te", "trailer", "transfer-encoding", "upgrade", "content-length"})


async def to_core(request: web.Request) -> web.StreamResponse:
    """Everything but the live sockets, relayed to the active core; its answer is
    relayed as it comes.  The browser's Host, Origin and cookies go along, so the core's
    own checks (session, CSRF, same origin) decide.

    A state-changing request (not GET/HEAD/OPTIONS) carries an id, ``X-Action-Id`` (the
    browser's own if it sent one, else one made here), and is sent again with that id
    while the core does not answer, for up to ``Worker.retry_s`` (a failover: the lease
    moves within 10 s): the core answers a repeat with the first answer and never sends
    the PBX the same action twice (:mod:`agent_console.once`).  Nothing is sent again
    once the core's answer has begun."""
    import aiohttp

    w = request.app[WORKER]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    # The client as this worker saw it (behind nginx: the entry nginx appended); the
    # core trusts its workers' address and keys its rate limit and login brake on it.
    headers["X-Forwarded-For"] = client_address(request, w.trusted_proxies)
    action = request.method not in ("GET", "HEAD", "OPTIONS")
    if action and not any(k.lower() == ACTION_HEADER.lower() for k in headers):
        headers[ACTION_HEADER] = uuid.uuid4().hex
    body = await request.read() if request.can_read_body else None
    loop = asyncio.get_running_loop()
    until = loop.time() + (w.retry_s if action else 0.0)
    w.proxied += 1
    out: web.StreamResponse | None = None
    while True:
        core = await w.core()
        if core:
            try:
                async with w.http.request(request.method, core + request.rel_url.raw_path_qs,
                                          headers=headers, data=body, allow_redirects=False,
                                          auto_decompress=False) as r:
                    out = web.StreamResponse(status=r.status, reason=r.reason)
                    for k, v in r.headers.items():
                        if k.lower() not in HOP:
                            out.headers.add(k, v)
                    await out.prepare(request)
                    async for chunk in r.content.iter_chunked(64 * 1024):
                        await out.write(chunk)
                    await out.write_eof()
                    return out
            except (aiohttp.ClientError, TimeoutError):
                w.core_url_at = 0.0  # look the active core up again next time
                if out is not None:  # the answer had begun: the browser has what came
                    return out
        if loop.time() >= until:
            break
        w.retried += 1
        await asyncio.sleep(0.5)
    if not core:
        return _unavailable("no active core has registered on the bus yet",
                            "暂无可用的主服务，请稍后重试")
    what = "the core did not answer" + ("; the action may not have been done" if action
                                        else "")
    return _unavailable(what, "主服务无响应" + ("，操作可能未执行" if action else ""))


def _unavailable(en: str, zh: str) -> web.Response:
    return web.json_response({"error": en, "error_zh": zh}, status=503,
                             headers={"Retry-After": "2"})


def make_worker_app(settings: Settings, redis_url: str, prefix: str, *,
                    clock: Callable[[], float] | None = None) -> web.Application:
    """A worker's app: ``/ws/wall`` and ``/ws`` from the bus, ``/healthz``, ``/readyz``,
    ``/metrics``; every other request relayed to the active core."""
    import aiohttp

    engine = make_engine(settings.database_url)
    ops = Ops("web")
    kw = {"clock": clock} if clock else {}
    follower = BusFollower(redis_url, prefix, WALL, on_lag=ops.bus_lag.observe, **kw)
    consoles = KeyedFollower(redis_url, prefix, OPS, on_lag=ops.bus_lag.observe, **kw)
    worker = Worker(follower, Users(engine, **kw), ops, consoles,
                    aioredis.from_url(redis_url), prefix,
                    trusted_proxies=frozenset(settings.trusted_proxies))
    follower.on_entry = worker.fan_out
    consoles.on_entry = worker.fan_out_operator
    consoles.on_missing = worker.missing
    consoles.on_shared = worker.fan_out_shared
    ops.watch_sockets(lambda: len(worker.viewers) + sum(map(len, worker.operators.values())))
    ops.checks["bus"] = lambda: _bus_ready(worker)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[WORKER] = worker

    async def lifecycle(app: web.Application) -> Any:
        worker.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=60),
            cookie_jar=aiohttp.DummyCookieJar())
        await follower.start()
        await consoles.start()
        settle_collector()
        sessions = asyncio.create_task(_sessions_loop(worker))
        ops.tasks["worker"] = lambda: [t for t in (follower._task, consoles._task, sessions)
                                       if t]
        yield
        sessions.cancel()
        if worker._shared_task is not None:
            worker._shared_task.cancel()
            await asyncio.gather(worker._shared_task, return_exceptions=True)
        for v in [*worker.viewers, *(v for vs in worker.operators.values() for v in vs)]:
            await v.ws.close(code=1001, message=b"worker stopping")
        await follower.stop()
        await consoles.stop()
        await worker.http.close()
        if worker.redis is not None:
            await close_redis(worker.redis)
        await engine.dispose()

    async def pruning(app: web.Application) -> Any:
        async with periodic("bus-views-prune", consoles.keep_s / 2, consoles.prune,
                            failed="could not prune the screens' update buffers",
                            first=False):
            yield

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(pruning)
    app.router.add_get("/ws/wall", wall_socket)
    app.router.add_get("/ws", live_socket)
    ops.add_routes(app)
    app.router.add_route("*", "/{tail:.*}", to_core)
    return app


async def run_worker(settings: Settings, host: str, port: int, redis_url: str,
                     prefix: str, *, reuse_port: bool = False) -> None:
    from callcenter.runtime import run_until_signalled

    runner = web.AppRunner(make_worker_app(settings, redis_url, prefix), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
    await site.start()
    if port == 0:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"hotline web worker {os.getpid()} on http://{host}:{port}/", flush=True)
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
