"""``/ws``: the live stream of each page (a snapshot, then numbered updates, resumable;
see :mod:`agent_console.hub`), the per-socket pump, the watchdog for slow clients, the
sessions and names loops, and the hub's lifetime in the app (``hub_ctx``).

Slow clients.  A client that stops reading (a frozen tab, a hostile script that keeps
sending and never reads) would hold its unsent updates in the kernel's send queue and
in the transport's buffer, and a graceful close never ends while data is unsent (the
issue-12 fault: 300 such clients took the service from 88 to 263 MB).  Once a second
:func:`_send_watchdog` measures each socket's *unsent backlog* (the transport's buffer
plus the kernel's send queue, ``TIOCOUTQ``) and its age (since it last stayed under
:data:`BACKLOG_FLOOR` with no send stuck); past ``Console.max_unsent_bytes`` (512 KiB)
or ``Console.max_unsent_age_s`` (2 s) the socket is cut: a close frame with code
:data:`CLOSE_TOO_SLOW` (4408) if it goes out within a second, then the transport is
aborted, which frees its buffers at once.  The session may open a socket again after
a cool-down that doubles with each cut (2, 4, 8 … 60 s; before that ``/ws`` answers
429 with ``Retry-After``), so a client that never reads spends most of its time
disconnected instead of holding buffers.  The page (``static/common.js``) reconnects
on 4408 after the cool-down and resumes from its last update number.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import fcntl
import json
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from acd.state import AgentChanged, AgentState, Change
from agent_console.auth import token_hash
from agent_console.http import (
    ApiError,
    same_origin,
)
from agent_console.hub import Client
from agent_console.session import CONSOLE, COOKIE, Console, need_session
from callcenter.runtime import settle_collector, wait_within

log = structlog.get_logger(__name__)

CLOSE_TOO_SLOW = 4408
"""Close code for a client cut for not reading; the page reconnects and resumes."""
BACKLOG_FLOOR = 64 * 1024
"""Unsent bytes below which a socket counts as keeping up."""


# --------------------------------------------------------------------------- websocket


async def websocket(request: web.Request) -> web.WebSocketResponse:
    c = request.app[CONSOLE]
    if not same_origin(request):
        raise ApiError(403, "cross-site websocket refused")
    session = await need_session(request)
    user = session.user
    stream_id = request.query.get("stream")
    try:
        seq: int | None = int(request.query["seq"]) if "seq" in request.query else None
    except ValueError:
        seq = None
    if stream_id is not None and len(stream_id) > 40:
        stream_id = None
    # No per-message deflate: with 1,000 sockets compressing each small update
    # costs more CPU than the bytes it saves on a LAN.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=16 * 1024, compress=False)
    await ws.prepare(request)
    if user.is_supervisor:
        client = c.hub.attach("wall", c.wall, stream_id, seq)
    else:
        client = c.hub.attach(c.operator_key(user), c.operator(user), stream_id, seq,
                              narrow=True, shared=True)
    c.sockets.add(ws)
    c.transports[ws] = request.transport
    c.socket_sessions[ws] = session.token_hash  # checked by _sessions_loop
    sender = c.senders[ws] = asyncio.create_task(_pump(c, ws, client))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                _on_message(c, client, msg.data)
            elif msg.type == WSMsgType.BINARY:
                c.hub.reply(client, {"type": "error", "error": "binary messages are not accepted"})
            elif msg.type == WSMsgType.ERROR:
                break
    finally:  # forget the socket first: a cancelled handler may not get past an await
        sender.cancel()
        c.hub.detach(client)
        c.sockets.discard(ws)
        c.socket_sessions.pop(ws, None)
        c.senders.pop(ws, None)
        c.transports.pop(ws, None)
        c.backlog_since.pop(ws, None)
        await asyncio.gather(sender, return_exceptions=True)
    return ws


@web.middleware
async def slow_client_gate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    """``/ws`` for a session cut for not reading and still cooling down: 429 with
    Retry-After, before any database work (a hostile client may retry many times a
    second).  Mounted ahead of the permission guard."""
    if request.path == "/ws":
        c = request.app[CONSOLE]
        cooling = c.slow_cooldown.get(token_hash(request.cookies.get(COOKIE) or ""))
        if cooling is not None and c.now() < cooling[1]:
            wait = max(1, round(cooling[1] - c.now()))
            raise ApiError(429, f"this page was cut for not reading its updates; reconnect "
                           f"in {wait} s", zh=f"页面未及时接收数据已被断开，请 {wait} 秒后重连",
                           retry_after=wait)
    return await handler(request)


def _on_message(c: Console, client: Client, text: str) -> None:
    """A client message: ``ping`` or ``resync``; anything else is answered with an error."""
    try:
        data = json.loads(text)
    except ValueError:
        c.hub.reply(client, {"type": "error", "error": "message is not JSON"})
        return
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "ping":
        c.hub.reply(client, {"type": "pong", "at": c.now()})
    elif kind == "resync":
        c.hub.resync(client)
    else:
        c.hub.reply(client, {"type": "error", "error": "unknown message type"})


async def _pump(c: Console, ws: web.WebSocketResponse, client: Client) -> None:
    """This client's sender: a slow socket stalls only this task; a dead one is closed.

    A send stuck on a client that stopped reading is ended by
    :func:`_send_watchdog` (one timer for every socket: a timeout per message,
    2,000 a second, would leave as many timer handles for the collector).
    """
    loop = asyncio.get_running_loop()
    try:
        while not ws.closed:
            item = await client.queue.get()
            text = c.hub.next_message(client, item)
            if text is None:
                continue
            c.sending[ws] = loop.time()
            await ws.send_str(text)
            del c.sending[ws]
    except (ConnectionError, RuntimeError):
        log.info("websocket client gone; closing")
        await ws.close()
    finally:
        c.sending.pop(ws, None)


def unsent_bytes(transport: Any) -> int:
    """Bytes written to this socket that the client has not taken yet: the transport's
    buffer plus, on Linux, the kernel's send queue (``TIOCOUTQ``)."""
    if transport is None or transport.is_closing():
        return 0
    n = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None and hasattr(termios, "TIOCOUTQ"):
        try:
            n += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                b"\0\0\0\0"))[0]
        except OSError:
            pass
    return n


async def _send_watchdog(c: Console, every: float = 1.0) -> None:
    """Once every ``every`` s: cut the sockets whose unsent backlog passed its bound
    (bytes, or age).  See the module's docstring."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        cut: list[tuple[web.WebSocketResponse, int, float]] = []
        for ws, transport in list(c.transports.items()):
            unsent = unsent_bytes(transport)
            stuck = c.sending.get(ws)
            if unsent >= BACKLOG_FLOOR or (stuck is not None and now - stuck > every):
                since = c.backlog_since.setdefault(ws, now)
            else:
                c.backlog_since.pop(ws, None)
                continue
            if unsent > c.max_unsent_bytes or now - since > c.max_unsent_age_s:
                cut.append((ws, unsent, now - since))
        for ws, unsent, age in cut:
            log.info("websocket client too slow; cut", unsent_bytes=unsent, age_s=round(age, 1))
            c.slow_cuts += 1
            _cool_down(c, c.socket_sessions.get(ws))
            c.backlog_since.pop(ws, None)
            c.sending.pop(ws, None)
            sender = c.senders.get(ws)
            if sender is not None:
                sender.cancel()
        if cut:
            await asyncio.gather(*(_cut(c, ws) for ws, _, _ in cut), return_exceptions=True)
            if now - c.trimmed_at >= TRIM_EVERY_S:
                c.trimmed_at = now
                release_freed_memory()


TRIM_EVERY_S = 5.0
"""After cutting slow clients, give freed memory back to the system at most this often."""


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim(0)``).

    The buffers a cut client held (its transport's backlog, aiohttp's reader and
    writer) are freed to the C allocator, which keeps them in its heap: RSS stays up
    until the next connections happen to reuse them.  Trimming after a round of cuts
    returns them at once (a few ms for a heap of ~100 MB).  False where the C library
    has no ``malloc_trim`` (musl, macOS)."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim is False:
        return False
    _trim(0)
    return True


_trim: Any = None


def _cool_down(c: Console, token_hash: str | None, most_s: float = 60.0) -> None:
    if token_hash is None:
        return
    now = c.now()
    if len(c.slow_cooldown) > 10_000:  # forget the cool-downs that are over
        c.slow_cooldown = {k: v for k, v in c.slow_cooldown.items() if v[1] > now}
    cuts = c.slow_cooldown.get(token_hash, (0, 0.0))[0] + 1
    c.slow_cooldown[token_hash] = (cuts, now + min(most_s, 2.0 ** cuts))


async def _cut(c: Console, ws: web.WebSocketResponse) -> None:
    """Close with CLOSE_TOO_SLOW if that goes out within a second; then abort the
    transport, whatever it still holds (a graceful close waits for a reader)."""
    transport = c.transports.get(ws)
    try:
        await wait_within(ws.close(code=CLOSE_TOO_SLOW, message=b"too slow; reconnect"),
                               1.0)
    except (TimeoutError, ConnectionError, RuntimeError):
        pass
    if transport is not None:  # even when closing: a close with unsent data never ends
        transport.abort()


async def _sessions_loop(c: Console, every: float = 30.0) -> None:
    """Close the sockets whose session ended (signed out, disabled, expired, idle).

    One query for every open socket each ``every`` s (it also keeps their
    sessions seen), instead of one query per socket.
    """
    while True:
        await asyncio.sleep(every)
        try:
            open_now = [(ws, h) for ws, h in c.socket_sessions.items() if not ws.closed]
            if not open_now:
                continue
            alive = await c.users.alive(h for _, h in open_now)
            ended = [ws for ws, h in open_now if h not in alive]
            await asyncio.gather(*(ws.close(code=4401, message=b"session ended")
                                   for ws in ended), return_exceptions=True)
        except Exception:
            log.exception("could not check the websockets' sessions")


# --------------------------------------------------------------------------- the app


def rings_or_connects(changes: list[Change]) -> bool:
    """Changes an operator must see at once (the screen pop), not at the next refresh."""
    return any(isinstance(c, AgentChanged) and c.new in (AgentState.RINGING, AgentState.ON_CALL)
               for c in changes)


async def _names_loop(c: Console, every: float = 60.0) -> None:
    """Operators' display names for the wallboard (accounts change from the CLI too)."""
    while True:
        try:
            await c.load_names()
        except Exception:
            log.exception("could not read the accounts")
        await asyncio.sleep(every)


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    c = app[CONSOLE]
    settle_collector()
    tasks = [asyncio.create_task(c.hub.run(), name="console-hub"),
             asyncio.create_task(_names_loop(c), name="console-names"),
             asyncio.create_task(_sessions_loop(c), name="console-sessions"),
             asyncio.create_task(_send_watchdog(c), name="console-send-watchdog")]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await c.users.flush_seen()
    except Exception:
        log.exception("could not write the sessions' last_seen")


async def close_sockets(app: web.Application) -> None:
    for ws in list(app[CONSOLE].sockets):
        await ws.close(code=1001, message=b"server shutdown")
