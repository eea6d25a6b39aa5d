"""``callcenter bench``: how fast, how prompt and how lean the service is under load.

Theory of operation
-------------------
Two processes, one core each.  *This* process is the system under test: the
:class:`~callcenter.service.Service` and the console's web app, exactly as
``callcenter serve`` builds them, on a temporary SQLite database.  A spawned
*load* process plays everybody else:

* the PBX: a :class:`~callcenter.pbx.sim.Pbx` (one queue, ``agents`` members
  ``Local/<1000+i>@agents/n``, constant call rate that keeps them busy) behind
  an AMI socket.  Its frames are paced by *count* (``--rate`` events per second),
  not by PBX time, so the wire rate is exactly what was asked for; a *blast*
  writes a pregenerated slice of the same stream as fast as the socket takes;
* the browsers: ``operators`` accounts ``op1``… (mapped to those members by
  :func:`agent_console.auth.default_member`) and ``wallboards`` supervisors
  ``sup1``…, each signed in through ``POST /api/login`` and holding a ``/ws``
  websocket (the ``websockets`` library).

The ring-to-screen-pop latency is measured in the load process alone (one
clock): the moment the frame carrying ``AgentCalled`` for an operator's member
was written to the AMI socket, to the moment that operator's websocket document
first shows the call.  Phases, in order:

1. *sustained*: ``--rate`` events/s for ``--duration`` s; pop latencies, RSS
   samples (``/proc/self/status``), CPU seconds (``time.process_time``);
2. *max*: a pregenerated slice blasted at once; the rate the consumer drains
   it at is the most the service takes before its backlog grows;
3. *baseline*: the same trace through bare panoramisk parsing
   (``AMIProtocol.data_received`` with a no-op ``handle_message``);
4. *work orders*: created (受理) through :class:`callcenter.orders.store.WorkOrders`;
5. *day rebuild*: ``--day-calls`` synthetic records saved with
   :meth:`Store.save_calls`, then ``calls_between`` + ``by_interval`` + ``by_queue``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from agent_console.hub import Hub
from callcenter import logs
from callcenter.pbx.sim import BANNER, AmiSession, Frame, Pbx, build_pbx
from callcenter.service import Service

log = structlog.get_logger(__name__)

PASSWORD = "bench-pass"
AMI_USER, AMI_SECRET = "bench", "bench-secret"
START_TIME = 1_795_000_000.0  # PBX clock origin: the trace is the same on every run
TALK_PLUS_RING_S = 200.0  # median talk 180 s + ring + settle (traffic.TrafficConfig)


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def bench_pbx(seed: int, agents: int, first_extension: int = 1001) -> Pbx:
    """The benchmark's PBX: calls arrive about as fast as ``agents`` members
    (``Local/<first_extension + i>@agents/n``) can take them."""
    return build_pbx(seed=seed, agents=agents, rate=max(0.05, 0.95 * agents / TALK_PLUS_RING_S),
                     start_time=START_TIME, first_extension=first_extension)


class FrameStream:
    """The PBX's frames in order, produced on demand one PBX second at a time."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.buffered: deque[Frame] = deque(pbx.drain())

    def take(self, n: int) -> list[Frame]:
        while len(self.buffered) < n:
            self.buffered.extend(self.pbx.advance(self.pbx.now + 1.0))
        return [self.buffered.popleft() for _ in range(n)]


def trace_sample(seed: int, agents: int, events: int) -> list[bytes]:
    """The first ``events`` frames of the benchmark trace, encoded as on the wire."""
    return [f.text.encode() for f in FrameStream(bench_pbx(seed, agents)).take(events)]


# =========================================================================== load process


class _AmiPeer(asyncio.Protocol):
    """The simulated Asterisk's end of the service's AMI connection."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.session = AmiSession(load.stream.pbx, {AMI_USER: AMI_SECRET})
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(BANNER.encode())
        self.load.peer = self

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for action in self.session.feed(data):
            self.transport.write(self.session.handle(action).encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.peer is self:
            self.load.peer = None


@dataclass
class _Browser:
    """One signed-in websocket client; operators remember when each call first showed."""

    username: str
    interface: str
    seen: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0


def pop_latencies(rung: Mapping[tuple[str, str], float],
                  shown: Callable[[tuple[str, str]], float | None]) -> tuple[list[float], int]:
    """Each ring paired with its screen pop: (ms from each ring written, ``rung``
    (interface, uniqueid) -> ``time.time()``, to its call first shown on that operator's
    screen, ``shown(ring)``, or None; the rings never shown).  The single-process bench
    and the scale-out bench's :class:`~callcenter.bench_scaleout.Pops` both pair so."""
    latencies, missed = [], 0
    for ring, written in rung.items():
        at = shown(ring)
        if at is None:
            missed += 1
        else:
            latencies.append((at - written) * 1000.0)
    return latencies, missed


class _Load:
    """Everything outside the service: the PBX end of AMI and the browsers."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.stream = FrameStream(bench_pbx(cfg["seed"], cfg["agents"],
                                            cfg.get("first_extension", 1001)))
        #: every member's rings are timed (a PBX-only load process of the scale-out
        #: bench: its operators' sockets are in other processes)
        self.watch_all = bool(cfg.get("watch_all", False))
        self.shown: list[tuple[str, str, float]] = []  # (interface, uniqueid, first shown)
        self.peer: _AmiPeer | None = None
        self.sent = 0
        self.rung: dict[tuple[str, str], float] = {}  # (interface, uniqueid) -> written at
        self.watched: set[str] = set()
        self.browsers: list[_Browser] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.blast_data: list[bytes] = []
        self.blast_count = 0
        self.slow_reconnects = 0
        self.slow_refused = 0

    # ---- AMI

    def _encode(self, frames: list[Frame]) -> tuple[bytes, int, list[tuple[str, str]]]:
        assert self.peer is not None
        mask = self.peer.session.mask
        wanted = [f for f in frames if f.mask & mask]
        rings = []
        for f in wanted:
            if f.name == "AgentCalled":
                h = f.headers()
                if self.watch_all or h.get("Interface") in self.watched:
                    rings.append((h["Interface"], h.get("Uniqueid", "")))
        return "".join(f.text for f in wanted).encode(), len(wanted), rings

    def _write(self, data: bytes, count: int) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)
        self.sent += count

    async def pace(self, rate: float, seconds: float) -> int:
        """Write ``rate`` events per second for ``seconds``; return the total written so far."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        done = 0
        while (now := loop.time()) - t0 < seconds:
            due = int(rate * (now - t0)) - done
            if due > 0:
                data, count, rings = self._encode(self.stream.take(due))
                self._write(data, count)
                written = time.time()
                for key in rings:
                    self.rung.setdefault(key, written)
                done += due
            await asyncio.sleep(0.002)
        rest = int(rate * seconds) - done  # a late last turn: still exactly rate x seconds
        if rest > 0:
            data, count, rings = self._encode(self.stream.take(rest))
            self._write(data, count)
            written = time.time()
            for key in rings:
                self.rung.setdefault(key, written)
        return self.sent

    def prepare_blast(self, events: int) -> int:
        frames = self.stream.take(events)
        self.blast_data, self.blast_count = [], 0
        for i in range(0, len(frames), 2000):  # whole frames: replies go in between
            data, count, _ = self._encode(frames[i:i + 2000])
            self.blast_data.append(data)
            self.blast_count += count
        return self.blast_count

    async def blast(self) -> int:
        assert self.peer is not None and self.peer.transport is not None
        for chunk in self.blast_data:
            self.peer.transport.write(chunk)
            while self.peer.transport.get_write_buffer_size() > (8 << 20):
                await asyncio.sleep(0.001)
        self.sent += self.blast_count
        self.blast_data = []
        return self.sent

    # ---- browsers

    async def sign_in(self, url: str, operators: list[str], wallboards: list[str],
                      tokens: dict[str, str] | None = None) -> dict[str, int]:
        """Sign each account in (``POST /api/login``), or take its session cookie from
        ``tokens`` (sessions opened in the database beforehand), and open its socket."""
        import aiohttp

        from agent_console.auth import default_member
        from agent_console.session import COOKIE

        ready = asyncio.Semaphore(32)
        connected: list[asyncio.Future[None]] = []
        failures = 0

        async def one(session: aiohttp.ClientSession, name: str) -> None:
            nonlocal failures
            iface = default_member(name)[1]
            browser = _Browser(name, iface)
            first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            connected.append(first)
            async with ready:
                try:
                    if tokens is not None:
                        token = tokens[name]
                    else:
                        async with session.post(url + "api/login", json={
                                "username": name, "password": PASSWORD}) as r:
                            r.raise_for_status()
                            token = r.cookies[COOKIE].value
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failures += 1
                    first.set_exception(exc)
                    return
                if iface:
                    self.watched.add(iface)
                self.browsers.append(browser)
                self.tasks.append(asyncio.create_task(self._browse(url, token, browser,
                                                                   first)))
                # at most 32 handshakes at once: thousands at the same instant time
                # out in the accept queue of a loaded machine, not in the server
                await asyncio.wait({first})

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one(session, n) for n in operators + wallboards))
        results = await asyncio.gather(*connected, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        return {"connected": len(results) - len(errors), "failed": len(errors),
                "errors": sorted({repr(e)[:160] for e in errors})[:5]}

    async def _browse(self, url: str, token: str, browser: _Browser,
                      first: asyncio.Future[None]) -> None:
        from websockets.asyncio.client import connect

        from agent_console.hub import apply_ops
        from agent_console.session import COOKIE

        ws_url = "ws" + url[len("http"):] + "ws"
        origin = url.rstrip("/")
        doc: dict[str, Any] = {}
        operator = bool(browser.interface)
        try:
            async with connect(ws_url, additional_headers={"Cookie": f"{COOKIE}={token}"},
                               origin=origin, max_size=None,  # type: ignore[arg-type]
                               open_timeout=60) as ws:
                async for text in ws:
                    at = time.time()
                    browser.messages += 1
                    browser.bytes += len(text)
                    if not first.done():
                        first.set_result(None)
                    if not operator or not _may_show_call(text):
                        continue
                    msg = json.loads(text)
                    if msg.get("type") == "snapshot":
                        doc = msg["data"]
                    elif msg.get("type") == "update":
                        apply_ops(doc, msg["ops"])
                    for uid in _calls_shown(doc):
                        if uid not in browser.seen:
                            browser.seen[uid] = at
                            self.shown.append((browser.interface, uid, at))
        except Exception as exc:  # noqa: BLE001 - a failed client is counted, not fatal
            if not first.done():
                first.set_exception(exc)

    async def slow(self, url: str, names: list[str]) -> dict[str, int]:
        """Open one websocket per account that keeps sending (a ping a second) and never
        reads; when the server cuts it, it comes back half a second later, as the page
        would (each reconnect is counted)."""
        import aiohttp

        from agent_console.session import COOKIE

        tokens: list[str] = []
        async with aiohttp.ClientSession() as session:
            for name in names:
                async with session.post(url + "api/login",
                                        json={"username": name, "password": PASSWORD}) as r:
                    r.raise_for_status()
                    tokens.append(r.cookies[COOKIE].value)
        host, port = url.split("//")[1].rstrip("/").split(":")
        self.slow_reconnects = 0
        opened = [asyncio.get_running_loop().create_future() for _ in tokens]
        for token, first in zip(tokens, opened, strict=True):
            self.tasks.append(asyncio.create_task(self._never_read(host, int(port), token,
                                                                   first)))
        results = await asyncio.gather(*opened, return_exceptions=True)
        return {"connected": sum(1 for r in results if not isinstance(r, BaseException))}

    async def _never_read(self, host: str, port: int, token: str,
                          first: asyncio.Future[None]) -> None:
        import base64
        import os
        import socket

        from agent_console.session import COOKIE

        loop = asyncio.get_running_loop()
        ping = b'{"type":"ping"}'
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (host, port))
                key = base64.b64encode(os.urandom(16)).decode()
                await loop.sock_sendall(sock, (
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nCookie: {COOKIE}={token}\r\n\r\n"
                ).encode())
                head = await loop.sock_recv(sock, 512)  # from here on nothing is read
                if not head.startswith(b"HTTP/1.1 101"):  # 429: still cooling down
                    self.slow_refused += 1
                    raise ConnectionRefusedError(head[:40])
                if not first.done():
                    first.set_result(None)
                while True:
                    mask = os.urandom(4)
                    body = bytes(b ^ mask[i % 4] for i, b in enumerate(ping))
                    await loop.sock_sendall(sock, bytes([0x81, 0x80 | len(ping)]) + mask + body)
                    await asyncio.sleep(1.0)
            except OSError as exc:
                if not first.done() and not isinstance(exc, ConnectionRefusedError):
                    first.set_exception(exc)
                    return
            finally:
                sock.close()
            self.slow_reconnects += 1
            await asyncio.sleep(0.5)

    def pops(self) -> dict[str, Any]:
        """Ring-to-screen-pop latencies for the rings written since the last call."""
        by_iface = {b.interface: b for b in self.browsers if b.interface}
        latencies, missed = pop_latencies(self.rung,
                                          lambda ring: by_iface[ring[0]].seen.get(ring[1]))
        self.rung = {}
        return {"latencies_ms": latencies, "missed": missed}

    def marks(self) -> dict[str, list[tuple[str, str, float]]]:
        """The rings written and the calls first shown since the last call, as
        (interface, uniqueid, time.time()) each: the scale-out bench pairs them across
        its load processes (one clock: the machine's)."""
        rung = [(iface, uid, at) for (iface, uid), at in self.rung.items()]
        shown, self.rung, self.shown = self.shown, {}, []
        return {"rung": rung, "shown": shown}

    async def stop(self) -> dict[str, int]:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return {"messages": sum(b.messages for b in self.browsers),
                "bytes": sum(b.bytes for b in self.browsers),
                "slow_reconnects": self.slow_reconnects, "slow_refused": self.slow_refused}


def _may_show_call(text: str) -> bool:
    """Whether an operator's message can change what :func:`_calls_shown` reads: a
    snapshot, or an update whose ops touch ``call`` or ``agent`` (their paths serialise
    as ``["call"]``/``["agent"]``).  The rest (the hub's ``shared`` message of queue
    figures, sent to every screen each time they change) the load process counts
    without parsing: its CPU is the machine's too, and the browsers it stands for run
    elsewhere."""
    if text.startswith('{"type":"shared"'):
        return False
    return '"type":"update"' not in text or '"call"' in text or '"agent"' in text


def _calls_shown(doc: dict[str, Any]) -> list[str]:
    out = []
    call = doc.get("call")
    if isinstance(call, dict) and call.get("uniqueid"):
        out.append(call["uniqueid"])
    agent = doc.get("agent")
    if isinstance(agent, dict) and agent.get("call"):
        out.append(agent["call"])
    return out


async def _load_loop(conn: Connection, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    load = _Load(cfg)
    server = await loop.create_server(lambda: _AmiPeer(load), "127.0.0.1", 0)
    conn.send({"port": server.sockets[0].getsockname()[1]})
    try:
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            op = cmd["op"]
            if op == "sign_in":
                conn.send(await load.sign_in(cmd["url"], cmd["operators"], cmd["wallboards"],
                                             cmd.get("tokens")))
            elif op == "slow":
                conn.send(await load.slow(cmd["url"], cmd["names"]))
            elif op == "pace":
                conn.send({"sent": await load.pace(cmd["rate"], cmd["seconds"])})
            elif op == "pops":
                conn.send(load.pops())
            elif op == "marks":
                conn.send(load.marks())
            elif op == "prepare_blast":
                conn.send({"events": load.prepare_blast(cmd["events"])})
            elif op == "blast":
                conn.send({"sent": await load.blast()})
            elif op == "stop":
                conn.send(await load.stop())
                return
    finally:
        server.close()


def _load_main(conn: Connection, cfg: dict[str, Any]) -> None:
    """Entry point of the spawned load process; ``cfg["nice"]`` (0..19, default 0): how
    far it lowers its own CPU priority (``os.nice``), as the load stands for other
    machines (the PBXs, the operators' PCs)."""
    if cfg.get("nice"):
        os.nice(int(cfg["nice"]))
    logs.setup("warning", "console")
    _raise_fd_limit()
    asyncio.run(_load_loop(conn, cfg))


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# =========================================================================== measurements


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) / 1024.0
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def hub_buffered_mb(hub: Hub) -> float:
    """Memory held by the hub's per-stream buffers of recent updates (for reconnects)."""
    return sum(sys.getsizeof(text) for stream in hub.streams.values()
               for _, text in stream.updates) / 1e6


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


def panoramisk_rate(frames: list[bytes], chunk: int = 65536) -> float:
    """Events per second through bare panoramisk parsing (no-op dispatch)."""
    from panoramisk.ami_protocol import AMIProtocol

    class _NullTransport(asyncio.Transport):
        def write(self, data: Any) -> None:
            pass

    seen = 0

    def count(message: Any) -> None:
        nonlocal seen
        seen += 1

    proto = AMIProtocol()
    proto.connection_made(_NullTransport())
    proto.handle_message = count  # type: ignore[method-assign]
    data = BANNER.encode() + b"".join(frames)
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    t0 = time.perf_counter()
    for c in chunks:
        proto.data_received(c)
    elapsed = time.perf_counter() - t0
    return seen / elapsed if elapsed > 0 else 0.0


async def orders_rate(url: str, count: int) -> float:
    """Work orders created (受理) per second through :class:`callcenter.orders.store.WorkOrders`."""
    from callcenter.config import Settings
    from callcenter.db import Store
    from callcenter.orders.lifecycle import Actor, Caller, Role
    from callcenter.orders.store import WorkOrders

    store = Store(url)
    await store.open()
    try:
        orders = WorkOrders(store.engine, tz=Settings().tz)
        t0 = time.perf_counter()
        for i in range(count):
            await orders.create(Actor(f"op{i % 50 + 1}", Role.OPERATOR, "centre"),
                                caller=Caller(number=f"138{i:08d}"), category="consult",
                                text=f"市民来电反映问题 {i}", call_uniqueid=f"{START_TIME:.0f}.{i}")
        return count / (time.perf_counter() - t0)
    finally:
        await store.close()


def synthetic_day(day_start: float, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` call records spread over one day, in the calls table's shape."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(count):
        joined = day_start + rng.random() * 86399
        wait = rng.expovariate(1 / 20.0)
        answered = rng.random() < 0.9
        talk = int(rng.lognormvariate(math.log(180), 0.6)) if answered else None
        rows.append({
            "uniqueid": f"{joined:.0f}.{i}", "queue": ("hotline", "hotline-en")[i % 7 == 0],
            "joined_at": joined, "caller_num": f"138{rng.randrange(10**8):08d}",
            "caller_name": "", "hotline": "12345", "category": "consult", "ivr_path": "1",
            "outcome": "completed" if answered else "abandoned", "left_at": joined + wait,
            "answered_at": joined + wait if answered else None,
            "hold_time": int(wait) if answered else None,
            "agent": f"agent{1001 + i % 200}" if answered else "",
            "interface": f"Local/{1001 + i % 200}@agents/n" if answered else "",
            "ended_at": joined + wait + talk if talk is not None else joined + wait,
            "talk_time": talk, "wrap_s": 0.0, "rings": 1 if answered else 0,
            "ring_no_answer": 0, "estimated": False,
        })
    return rows


async def day_rebuild(url: str, count: int, seed: int) -> tuple[float, float]:
    """(seconds to save, seconds to rebuild) a day of ``count`` calls."""
    from datetime import datetime

    from acd.metrics import by_interval, by_queue
    from callcenter.config import Settings
    from callcenter.db import Store

    settings = Settings()
    tz = settings.tz
    day = datetime.fromtimestamp(START_TIME, tz).replace(hour=0, minute=0, second=0,
                                                         microsecond=0).timestamp()
    rows = synthetic_day(day, count, seed)
    store = Store(url)
    await store.open()
    try:
        t0 = time.perf_counter()
        for i in range(0, len(rows), 10_000):
            await store.save_calls(rows[i:i + 10_000])
        saved = time.perf_counter() - t0
        t0 = time.perf_counter()
        calls = await store.calls_between(day, day + 86400)
        by_interval(calls, 900, tz, settings.servicelevel_for, settings.short_abandon_s)
        by_queue(calls, settings.servicelevel_for, settings.short_abandon_s)
        return saved, time.perf_counter() - t0
    finally:
        await store.close()


# =========================================================================== the monthly report

DEPARTMENTS = ("urban_management", "landscaping", "housing", "transport", "market_regulation",
               "human_resources", "ecology_environment", "water_group", "power_supply",
               "public_security", "education", "health", "civil_affairs", "subdistrict_office")
STREETS = ("人民路", "解放大道", "中山街", "建设路", "和平里", "光明巷", "新华街道", "长江路",
           "黄河路", "东风大街", "幸福村", "朝阳社区")
TOPICS = (("noise", "夜间施工噪音扰民"), ("water", "小区停水两天"), ("environment", "餐馆油烟扰民"),
          ("traffic", "路口占道经营堵车"), ("labour", "公司拖欠工资三个月"),
          ("housing", "电梯故障无人维修"), ("power", "路灯不亮"), ("consult", "咨询社保缴费"))


def _t(ts: float, tz: Any) -> dict[str, str]:
    from datetime import datetime

    return {"$t": datetime.fromtimestamp(ts, tz).isoformat()}


def synthetic_month(start: float, end: float, *, calls: int, orders: int, agents: int,
                    seed: int, tz: Any, now: float | None = None, order_id_from: int = 1
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(call records, agent state log, work-order audit records) of a centre over
    ``[start, end)``: ``calls`` calls, ``orders`` orders with their steps (dispatch,
    sign-for, returns, re-dispatch, replies, completion, return visits keyed by the
    citizen or entered by staff, reopenings, overdue flags, supervision), ``agents``
    operators signing in and pausing each day.  Nothing after ``now``; orders are
    numbered from ``order_id_from``."""
    import random

    rng = random.Random(seed)
    now = end if now is None else min(now, end)
    span = now - start
    call_rows = synthetic_day(start, 0, seed)  # the same row shape
    for i in range(calls):
        # a day's shape: most calls between 8:00 and 20:00
        day = int(rng.random() * span // 86400)
        hour = rng.choice((8, 9, 9, 10, 10, 10, 11, 11, 13, 14, 14, 15, 15, 16, 17, 19, 21, 2))
        joined = start + day * 86400 + hour * 3600 + rng.random() * 3599
        if joined >= now:
            joined = start + rng.random() * span
        wait = rng.expovariate(1 / 18.0)
        kind = rng.random()
        answered = kind < 0.88
        talk = int(rng.lognormvariate(math.log(180), 0.6)) if answered else None
        agent = f"agent{1001 + rng.randrange(agents)}" if answered else ""
        call_rows.append({
            "uniqueid": f"m{seed}.{i}", "queue": "hotline-en" if i % 23 == 0 else "hotline",
            "joined_at": joined, "caller_num": f"138{rng.randrange(10**8):08d}",
            "caller_name": "", "hotline": "12345" if i % 9 else "12369",
            "category": "consult", "ivr_path": "direct" if i % 4 else "1-2",
            "outcome": "completed" if answered else "abandoned" if kind < 0.99 else "exited",
            "left_at": joined + wait, "answered_at": joined + wait if answered else None,
            "hold_time": int(wait), "agent": agent,
            "interface": f"Local/{agent[5:]}@agents/n" if answered else "",
            "ended_at": joined + wait + (talk or 0), "talk_time": talk,
            "wrap_s": float(rng.randint(0, 30)) if answered else 0.0,
            "rings": 1 if answered else 0, "ring_no_answer": 0, "estimated": False,
        })
    states: list[dict[str, Any]] = []
    for d in range(int(span // 86400) + 1):
        for a in range(agents):
            name = f"agent{1001 + a}"
            t = start + d * 86400 + 8 * 3600 + rng.random() * 600 + (a % 3) * 8 * 3600 / 3
            if t >= now:
                continue
            row = {"agent": name, "interface": f"Local/{1001 + a}@agents/n", "cause": ""}
            seq = [("logged_out", "ready", "login", "")]
            for _ in range(rng.randint(2, 6)):
                reason = rng.choice(("meal", "training", "toilet", "busy", "meeting"))
                seq += [("ready", "paused", "pause", reason), ("paused", "ready", "unpause", "")]
            seq.append(("ready", "logged_out", "logout", ""))
            step_s = 8 * 3600 / len(seq)
            for old, new, step, reason in seq:
                if t >= now:
                    break
                states.append(row | {"at": t, "old": old, "new": new, "step": step,
                                     "reason": reason})
                t += step_s * (0.2 if step == "pause" and new == "paused" else 1.0) \
                    if new == "paused" else step_s
    events: list[dict[str, Any]] = []
    for i in range(orders):
        oid = order_id_from + i
        t = start + rng.random() * span
        category, text = rng.choice(TOPICS)
        street = rng.choice(STREETS)
        first_due, handling_due = t + 86400, t + 5 * 86400
        add = _Steps(oid, events, now, tz)
        dept = DEPARTMENTS[min(int(rng.paretovariate(1.2)) - 1, len(DEPARTMENTS) - 1)
                           if rng.random() < 0.5 else rng.randrange(len(DEPARTMENTS))]
        try:
            add("accept", "operator", "centre", t, None, "accepted", {
                "caller_name": "", "caller_number": "", "caller_address": "",
                "category": category, "text": f"{street}{text}", "location": f"{street}{i % 90}号",
                "urgency": "normal", "confidential": False,
                "first_response_due": _t(first_due, tz), "handling_due": _t(handling_due, tz)})
            if rng.random() < 0.12:
                add("resolve_on_call", "operator", "centre", t + 60, "accepted",
                    "resolved_on_call", {"answer": "已当场答复"})
                continue
            t += rng.random() * 3600
            add("dispatch", "operator", "centre", t, "accepted", "dispatched",
                {"department": dept, "co_handlers": []})
            if rng.random() < 0.08:
                t += rng.random() * 86400
                add("return", "department", dept, t, "dispatched", "returned",
                    {"department": dept}, "不属本单位职责")
                other = rng.choice([d for d in DEPARTMENTS if d != dept])
                t += rng.random() * 7200
                add("accept_return", "supervisor", "centre", t, "returned", "dispatched",
                    {"department": other, "returned_by": dept}, "改派")
                dept = other
            elif rng.random() < 0.04:
                other = rng.choice([d for d in DEPARTMENTS if d != dept])
                t += rng.random() * 7200
                add("redispatch", "operator", "centre", t, "dispatched", "dispatched",
                    {"department": other, "previous": dept}, "派错单位")
                dept = other
            late = rng.random() < 0.1
            t += rng.random() * (2 * 86400 if late else 20 * 3600)
            if t > first_due:
                add("flag_overdue", "system", "system", first_due + 1, "dispatched", "dispatched",
                    {"timer": "first_response_overdue", "deadline": _t(first_due, tz)})
                t = max(t, first_due + 2)
            add("accept_handling", "department", dept, t, "dispatched", "in_progress",
                {"department": dept})
            if rng.random() < 0.05:
                add("supervise", "supervisor", "centre", t + 60, "in_progress", "in_progress",
                    {"deadline": _t(t + 86400, tz)}, "督办")
                t += 120
            t += rng.random() * (6 if rng.random() < 0.15 else 3.5) * 86400
            add("reply", "department", dept, t, "in_progress", "replied",
                {"department": dept, "text": "已处理"})
            add("complete", "department", dept, t + 60, "replied", "completed",
                {"department": dept})
            t += 3600 + rng.random() * 86400
            add("start_return_visit", "system", "system", t, "completed", "return_visit", {})
            solved = rng.random() < 0.85
            keys = rng.random() < 0.8
            data = {"source": "citizen_keys" if keys else "operator_call", "resolved": solved,
                    "satisfaction_operator": rng.choice((1, 2, 3, 3, 3)),
                    "satisfaction_department": rng.choice((1, 2, 3, 3)) if solved else 1,
                    "call_id": None if keys else f"m{seed}.{i}"}
            role = "citizen" if keys else "operator"
            t += 600
            if solved:
                add("evaluate", role, "", t, "return_visit", "evaluated", data)
            else:
                add("reopen", role, "", t, "return_visit", "dispatched",
                    data | {"department": dept})
        except _Later:
            pass
    return call_rows, states, events


def order_rows(events: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A ``work_orders`` row for each order accepted in ``events`` (its 受理 record), with
    a channel: most by phone, the rest by the other 一号对外 channels."""
    import random

    from callcenter.orders.channels import CHANNELS

    rng = random.Random(seed)
    weights = (70, 10, 8, 5, 2, 2, 3)
    return [{"id": e["order_id"], "number": f"S{e['order_id']:09d}", "created_by": e["actor_id"],
             "created_at": e["at"], "category": e["data"].get("category", ""),
             "channel": rng.choices(CHANNELS, weights)[0], "status": "accepted"}
            for e in events if e["step"] == "accept"]


class _Later(Exception):
    """A step after ``now``: the order's story stops there."""


class _Steps:
    """Appends one order's audit records (``work_order_events`` rows) in order."""

    def __init__(self, oid: int, events: list[dict[str, Any]], now: float, tz: Any) -> None:
        self.oid, self.events, self.now, self.tz, self.seq = oid, events, now, tz, 0

    def __call__(self, step: str, role: str, unit: str, at: float, frm: str | None, to: str,
                 data: dict[str, Any], reason: str | None = None) -> None:
        from datetime import datetime

        if at >= self.now:
            raise _Later
        self.seq += 1
        self.events.append({
            "order_id": self.oid, "seq": self.seq, "step": step, "actor_id": f"{role}1",
            "role": role, "unit": unit, "at": at,
            "at_iso": datetime.fromtimestamp(at, self.tz).isoformat(), "from_state": frm,
            "to_state": to, "reason": reason, "data": data})


MONTH_TABLES = ("calls", "agent_states", "work_order_events", "work_orders")
"""The tables the month is written to: their plain indexes are dropped while it is
written and built again after (one sort per index instead of a B-tree insert per row)."""


async def bulk_insert(engine: Any, table: Any, rows: Sequence[dict[str, Any]],
                      chunk: int = 50_000) -> None:
    """Append ``rows`` (dicts keyed by column name) to ``table`` the fastest way each
    database has: PostgreSQL's ``COPY`` (asyncpg ``copy_records_to_table``), SQLite's
    ``executemany`` of one prepared ``INSERT`` with plain tuples.  A column a row leaves
    out gets the model's scalar default; JSON columns are written as JSON text.  For
    generated bench data only: no upsert, no summaries forgotten (a fresh database)."""
    from sqlalchemy import JSON

    if not rows:
        return
    # the rows' columns and those with a scalar default; the others are the database's
    cols = [c for c in table.columns
            if c.name in rows[0] or (c.default is not None and c.default.is_scalar)]
    names = [c.name for c in cols]
    defaults = {c.name: c.default.arg if c.default is not None else None for c in cols}
    dumps = {c.name for c in cols if isinstance(c.type, JSON)}

    def values(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(json.dumps(r[n], ensure_ascii=False) if n in dumps and n in r
                     else r[n] if n in r else defaults[n] for n in names)

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            raw = (await conn.get_raw_connection()).driver_connection
            for i in range(0, len(rows), chunk):
                await raw.copy_records_to_table(
                    table.name, columns=names, records=[values(r) for r in rows[i:i + chunk]])
        else:
            sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
                   f"VALUES ({', '.join('?' * len(names))})")
            for i in range(0, len(rows), chunk):
                await conn.exec_driver_sql(sql, [values(r) for r in rows[i:i + chunk]])


async def _plain_indexes(engine: Any) -> list[tuple[str, str, list[str]]]:
    """(name, table, columns) of the plain column indexes of :data:`MONTH_TABLES`
    (a unique index - it may back a constraint - or one on expressions or with its own
    method, such as a trigram GIN, is left alone)."""
    from sqlalchemy import inspect

    def read(sync: Any) -> list[tuple[str, str, list[str]]]:
        insp = inspect(sync)
        out = []
        for t in MONTH_TABLES:
            for ix in insp.get_indexes(t):
                cols = ix.get("column_names") or []
                using = str((ix.get("dialect_options") or {}).get("postgresql_using", "btree"))
                if (not cols or any(c is None for c in cols) or ix.get("expressions")
                        or using != "btree" or not ix.get("name") or ix.get("unique")):
                    continue
                out.append((ix["name"], t, list(cols)))
        return out

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def load_month(engine: Any, parts: Sequence[tuple[Any, Sequence[dict[str, Any]]]]
                     ) -> None:
    """Write ``(table, rows)`` parts into empty tables: indexes dropped, rows appended
    with :func:`bulk_insert`, indexes built again, statistics gathered."""
    indexes = await _plain_indexes(engine)
    async with engine.begin() as conn:
        for name, *_ in indexes:
            await conn.exec_driver_sql(f"DROP INDEX {name}")
    for table, rows in parts:
        await bulk_insert(engine, table, rows)
    async with engine.begin() as conn:
        for name, table, cols in indexes:
            await conn.exec_driver_sql(f"CREATE INDEX {name} ON {table} ({', '.join(cols)})")
        await conn.exec_driver_sql("ANALYZE")


async def _held(engine: Any, seed: int) -> tuple[int, int]:
    """(calls, orders) of a generated month the database already holds (0, 0 if none)."""
    from sqlalchemy import func, select

    from callcenter.db import CallRow
    from callcenter.orders.store import OrderRow

    async with engine.connect() as conn:
        mark = (await conn.execute(select(CallRow.uniqueid).where(
            CallRow.uniqueid == f"m{seed}.0"))).first()
        if mark is None:
            return 0, 0
        calls = (await conn.execute(select(func.count()).select_from(CallRow))).scalar_one()
        orders = (await conn.execute(select(func.count()).select_from(OrderRow))).scalar_one()
        return int(calls), int(orders)


def _bench_month() -> tuple[Any, Any, Any, Any, float]:
    """The month the month bench writes and rebuilds: (settings, its first day, its
    window's start and end, and ``now``: the month's last day still running, 14:00)."""
    from datetime import datetime

    from acd.reports import window
    from callcenter.config import Settings

    settings = Settings()
    first = datetime.fromtimestamp(START_TIME, settings.tz).date().replace(day=1)
    start, end = window(first, "month", settings.tz)
    return settings, first, start, end, end.timestamp() - 36_000


async def prepare_month(url: str, calls: int, orders: int, seed: int, *, agents: int = 300
                        ) -> dict[str, Any]:
    """Write the month to ``url`` unless the database already holds this month (the same
    seed, calls and orders): a kept database is measured again without writing it."""

    from sqlalchemy import delete

    from callcenter import report_days
    from callcenter.db import AgentStateRow, CallRow, ReportDayRow, Store
    from callcenter.orders import facts
    from callcenter.orders.store import OrderEventRow, OrderRow

    settings, _, start, end, now = _bench_month()
    tz = settings.tz
    store = Store(url)
    await store.open()
    out: dict[str, Any] = {"reused": False}
    try:
        if await _held(store.engine, seed) == (calls, orders):
            # what the writer would do after an upgrade that dropped some summaries
            t0 = time.perf_counter()
            out |= {"reused": True, "days_summarised": await report_days.build_due(
                store.engine, settings, now, limit=31)}
            out["day_summaries_s"] = round(time.perf_counter() - t0, 1)
            return out
        progress(f"generating the month ({calls:,} calls, {orders:,} orders)")
        t0 = time.perf_counter()
        rows, states, events = synthetic_month(start.timestamp(), end.timestamp(),
                                               calls=calls, orders=orders, agents=agents,
                                               seed=seed, tz=tz)
        # Written in time order, as a live centre appends them (rows near in time are
        # near on disk, which is what a range scan of a month reads).
        rows.sort(key=lambda r: r["joined_at"])
        states.sort(key=lambda r: r["at"])
        events.sort(key=lambda r: r["at"])
        orders_made = order_rows(events, seed)
        out |= {"generate_s": round(time.perf_counter() - t0, 1), "agent_state_rows":
                len(states), "order_events": len(events)}
        async with store.engine.begin() as conn:  # a rerun on the same database starts clean
            for table in (CallRow, AgentStateRow, OrderEventRow, OrderRow, ReportDayRow):
                await conn.execute(delete(table))
            await conn.execute(delete(facts.FACTS))
        progress(f"writing {len(rows) + len(states) + len(events) + len(orders_made):,} rows")
        t0 = time.perf_counter()
        await load_month(store.engine, [
            (CallRow.__table__, rows), (AgentStateRow.__table__, states),
            (OrderEventRow.__table__, events), (OrderRow.__table__, orders_made)])
        out["save_s"] = round(time.perf_counter() - t0, 1)
        del rows, states, events
        # What the live writers keep as they go: each order's assessment part (the order
        # store, at every step) and each closed day's summary (the service, at day end).
        progress("order facts and day summaries (what the live writers keep)")
        t0 = time.perf_counter()
        async with store.engine.begin() as conn:
            await facts.refresh(conn, [o["id"] for o in orders_made])
        out["order_facts_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        out["days_summarised"] = await report_days.build_due(store.engine, settings, now,
                                                             limit=31)
        out["day_summaries_s"] = round(time.perf_counter() - t0, 1)
    finally:
        await store.close()
    return out


async def month_report(url: str, calls: int, orders: int, seed: int, *, raw: bool = True
                       ) -> dict[str, Any]:
    """Seconds to rebuild the 月报 (every table of the reports page) from a month of a
    large centre held at ``url`` (:func:`prepare_month` first); and the figures."""

    from sqlalchemy import func, select

    from callcenter.db import AgentStateRow, Store
    from callcenter.orders.store import OrderEventRow

    settings, first, _, _, now = _bench_month()
    store = Store(url)
    await store.open()
    try:
        async with store.engine.connect() as conn:
            states = (await conn.execute(select(func.count()).select_from(AgentStateRow))
                      ).scalar_one()
            events = (await conn.execute(select(func.count()).select_from(OrderEventRow))
                      ).scalar_one()
        load = [round(x, 2) for x in os.getloadavg()]
        report, rebuilt, cpu = await rebuild_month(store.engine, settings, first, now)
        out: dict[str, Any] = {}
        if raw:
            raw_rep, raw_s, raw_cpu = await rebuild_month(store.engine, settings, first, now,
                                                          summaries=False)
            out = {"month_report_raw_s": round(raw_s, 2),
                   "month_report_raw_cpu_s": round(raw_cpu, 2),
                   "raw_equals_summaries": report == raw_rep}
    finally:
        await store.close()
    overall = report["calls"]["overall"]
    depts = report["departments"]
    return out | {
        "database": url.split(":", 1)[0], "month": first.isoformat(),
        "calls": overall["offered"], "agent_state_rows": states, "orders": orders,
        "order_events": events,
        "month_report_s": round(rebuilt, 2), "month_report_cpu_s": round(cpu, 2),
        "load_average_before": load,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "figures": {k: overall[k] for k in ("offered", "answered", "abandoned",
                                            "connection_rate", "answer_rate_sl",
                                            "servicelevel_perf", "asa_s", "aht_s")},
        "departments": [{k: d[k] for k in ("department", "received", "response_rate",
                                           "resolution_rate", "satisfaction_rate", "rank")}
                        for d in depts[:5]],
        "operators": len(report["agents"])}


async def rebuild_month(engine: Any, settings: Any, first: Any, now: float, *,
                        summaries: bool = True) -> tuple[dict[str, Any], float, float]:
    """(the 月报 holding ``first``, wall seconds, CPU seconds of this process — the
    database's threads included — to build it), from the day summaries and order facts
    (or, ``summaries=False``, from the raw records alone)."""
    from agent_console.report_data import ReportConfig, build_report

    t0, c0 = time.perf_counter(), time.process_time()
    report = await build_report(engine, settings, ReportConfig(), period="month", day=first,
                                now=now, summaries=summaries)
    return report, time.perf_counter() - t0, time.process_time() - c0



def month_main(args: argparse.Namespace) -> int:
    """``callcenter bench --month-report``: the monthly report on SQLite (and PostgreSQL),
    each database's figures printed as soon as they are measured.

    ``--keep FILE`` keeps the SQLite database there (a ``--postgres`` database is always
    kept); a database that already holds the month (same seed, calls and orders) is
    measured without being written again, so the month can be written once at low
    priority (``--month-write-only``) and the rebuild timed on its own."""
    logs.setup("warning", "console")
    calls, orders = args.month_calls, args.month_orders
    results = []
    with tempfile.TemporaryDirectory(prefix="hotline-bench-month-") as tmp:
        sqlite = Path(args.keep) if args.keep else Path(tmp) / "month.db"
        urls = ([] if args.month_no_sqlite else [f"sqlite+aiosqlite:///{sqlite.resolve()}"]
                ) + list(args.postgres or [])
        for url in urls:
            name = url.split(":")[0]
            progress(f"monthly report: {calls:,} calls, {orders:,} orders on {name}")
            wrote = asyncio.run(prepare_month(url, calls, orders, args.seed))
            if wrote["reused"]:
                progress(f"{name} already holds this month: not written again "
                         f"({wrote['days_summarised']} missing day summaries stored)")
            elif not args.json:
                print(f"{name}: written: generated {wrote['generate_s']} s, saved "
                      f"{wrote['save_s']} s; kept as written: order facts "
                      f"{wrote['order_facts_s']} s, {wrote['days_summarised']} day summaries "
                      f"{wrote['day_summaries_s']} s", flush=True)
            if args.month_write_only:
                results.append({"database": name} | wrote)
                continue
            results.append(asyncio.run(month_report(url, calls, orders, args.seed,
                                                    raw=not args.month_no_raw)) | wrote)
            if not args.json:
                _print_month(results[-1])
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    return 0


def _print_month(r: dict[str, Any]) -> None:
    print(f"{r['database']}: month {r['month']}: {r['calls']:,} calls, "
          f"{r['agent_state_rows']:,} agent state rows, {r['orders']:,} orders "
          f"({r['order_events']:,} audit records)")
    raw = (f"from the raw records alone {r['month_report_raw_s']} s "
           f"({r['month_report_raw_cpu_s']} s of CPU); equal: {r['raw_equals_summaries']}"
           if "month_report_raw_s" in r else "not rebuilt from the raw records")
    print(f"  月报 rebuilt in {r['month_report_s']} s (target <= 30 s), "
          f"{r['month_report_cpu_s']} s of CPU; {raw}; load average before "
          f"{' '.join(str(x) for x in r['load_average_before'])}, after "
          f"{' '.join(str(x) for x in r['load_average'])} (2 cores, shared)", flush=True)
    f = r["figures"]
    print(f"  offered {f['offered']:,}  answered {f['answered']:,}  abandoned "
          f"{f['abandoned']:,}  接通率 {f['connection_rate']}%  15秒接通率 "
          f"{f['answer_rate_sl']}%  ServicelevelPerf {f['servicelevel_perf']}%  "
          f"ASA {f['asa_s']} s  AHT {f['aht_s']} s  operators {r['operators']}")
    for d in r["departments"]:
        print(f"  #{d['rank']} {d['department']}: received {d['received']:,}  响应率 "
              f"{d['response_rate']}%  解决率 {d['resolution_rate']}%  满意率 "
              f"{d['satisfaction_rate']}%")


# =========================================================================== the run


@dataclass
class Plan:
    operators: int
    wallboards: int
    rate: float
    duration: float
    seed: int
    blast_events: int
    orders: int
    day_calls: int
    progress_every: float
    slow_clients: int = 0
    load_nice: int = 0


def _plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    pick: Callable[[Any, Any, Any], Any] = lambda v, q, full: v if v is not None else (
        q if quick else full)
    rate = pick(args.rate, 500.0, 1000.0)
    return Plan(
        operators=pick(args.operators, 50, 1000), wallboards=pick(args.wallboards, 5, 100),
        rate=rate, duration=pick(args.duration, 5.0, 600.0), seed=args.seed,
        blast_events=pick(args.blast_events, 20_000, 60_000),
        orders=pick(args.orders, 200, 2000), day_calls=pick(args.day_calls, 10_000, 100_000),
        progress_every=2.0 if quick else 10.0, slow_clients=args.slow_clients,
    )


class CountingService(Service):
    """The service, counting the AMI events it takes off the socket."""

    events_in = 0

    def _on_ami_event(self, headers: dict[str, str], at: float, *edge: Any) -> None:
        self.events_in += 1
        super()._on_ami_event(headers, at, *edge)


async def _ask(conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
    conn.send(msg)
    answer: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    return answer


class BenchError(Exception):
    """The run cannot go on; the message says why."""


async def _until_taken(service: CountingService, target: int, stall_s: float = 10.0) -> None:
    """Wait until ``target`` events were taken off the socket and applied."""
    last, since = service.events_in, time.perf_counter()
    while service.events_in < target:
        await asyncio.sleep(0.002)
        if service.events_in != last:
            last, since = service.events_in, time.perf_counter()
        elif time.perf_counter() - since > stall_s or not service.link.up:
            raise BenchError(f"the service stopped taking events ({service.events_in} of "
                             f"{target}; AMI link {'up' if service.link.up else 'down'})")
    await service.drain()


async def run(plan: Plan, workdir: Path) -> dict[str, Any]:
    from aiohttp import web
    from argon2 import PasswordHasher

    from agent_console.auth import Passwords, Role, Users
    from agent_console.ratelimit import UNLIMITED
    from agent_console.server import make_app
    from agent_console.session import CONSOLE
    from callcenter.config import Settings

    asyncio.get_running_loop().set_exception_handler(_quiet_resets)
    agents = max(plan.operators, 10)
    ctx = mp.get_context("spawn")
    conn, child_end = ctx.Pipe()
    child = ctx.Process(target=_load_main, name="bench-load",
                        args=(child_end, {"seed": plan.seed, "agents": agents,
                                          "nice": plan.load_nice}))
    child.start()
    result: dict[str, Any] = {"operators": plan.operators, "wallboards": plan.wallboards,
                              "agents": agents, "rate": plan.rate, "duration_s": plan.duration}
    try:
        port = (await asyncio.get_running_loop().run_in_executor(None, conn.recv))["port"]
        settings = Settings()
        settings.database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        settings.ami.host, settings.ami.port = "127.0.0.1", port
        settings.ami.username, settings.ami.secret = AMI_USER, AMI_SECRET
        service = CountingService(settings)
        await service.start()
        passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        users = Users(service.store.engine, passwords)
        operators = [f"op{i}" for i in range(1, plan.operators + 1)]
        wallboards = [f"sup{i}" for i in range(1, plan.wallboards + 1)]
        progress(f"creating {len(operators)} operator and {len(wallboards)} wallboard accounts")
        for name in operators:
            await users.add(name, PASSWORD, Role.OPERATOR)
        for name in wallboards:
            await users.add(name, PASSWORD, Role.SUPERVISOR)
        slow = [f"slow{i}" for i in range(1, plan.slow_clients + 1)]
        for name in slow:
            await users.add(name, PASSWORD, Role.SUPERVISOR)
        # No request rate limit: the bench's 1,100 browsers all sign in from 127.0.0.1.
        app = make_app(service, passwords=passwords, rate_limit=UNLIMITED)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        running = True
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
        try:
            progress("signing in and opening the websockets")
            signed = await _ask(conn, {"op": "sign_in", "url": url, "operators": operators,
                                       "wallboards": wallboards})
            result["websockets_connected"] = signed["connected"]
            result["websockets_failed"] = signed["failed"]
            progress(f"{signed['connected']} websockets open, {signed['failed']} failed")
            result["slow_clients"] = plan.slow_clients
            if slow:
                progress(f"opening {len(slow)} websockets that send and never read")
                opened = await _ask(conn, {"op": "slow", "url": url, "names": slow})
                result["slow_clients_connected"] = opened["connected"]
            await _sustained(plan, conn, service, result)
            result["hub_buffered_mb"] = round(hub_buffered_mb(app[CONSOLE].hub), 1)
            result["slow_cuts"] = app[CONSOLE].slow_cuts
            await _max_rate(plan, conn, service, result)
            await runner.cleanup()  # the server closes the sockets, then the clients stop
            running = False
            traffic = await _ask(conn, {"op": "stop"})
            result["ws_messages"] = traffic["messages"]
            result["ws_mb"] = round(traffic["bytes"] / 1e6, 1)
            result["slow_reconnects"] = traffic["slow_reconnects"]
            result["slow_refused"] = traffic["slow_refused"]
            result["events_skipped"] = service.events_skipped
        finally:
            if running:
                await runner.cleanup()
            await service.stop()
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()
    progress("baseline: the same trace through bare panoramisk")
    sample = trace_sample(plan.seed, agents, plan.blast_events)
    result["baseline_panoramisk_events_per_s"] = round(panoramisk_rate(sample))
    del sample
    result["ratio_to_baseline"] = round(
        result["max_events_per_s"] / result["baseline_panoramisk_events_per_s"], 3)
    progress(f"work orders: creating {plan.orders}")
    result["orders_per_s"] = round(await orders_rate(
        f"sqlite+aiosqlite:///{workdir / 'orders.db'}", plan.orders), 1)
    progress(f"day rebuild: {plan.day_calls} calls")
    saved, rebuilt = await day_rebuild(f"sqlite+aiosqlite:///{workdir / 'day.db'}",
                                       plan.day_calls, plan.seed)
    result["day_calls"] = plan.day_calls
    result["day_save_s"] = round(saved, 2)
    result["day_rebuild_s"] = round(rebuilt, 2)
    # Figures depend on what else runs: the machine's load beside them (1, 5, 15 min).
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _quiet_resets(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Leave out aiohttp's compressed-send tasks failing on sockets closed at shutdown."""
    if not isinstance(context.get("exception"), ConnectionResetError):
        loop.default_exception_handler(context)


async def _sustained(plan: Plan, conn: Connection, service: CountingService,
                     result: dict[str, Any]) -> None:
    progress(f"sustained: {plan.rate:g} events/s for {plan.duration:g} s")
    warmup = min(60.0, plan.duration * 0.2)
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    cpu0, in0 = time.process_time(), service.events_in

    async def sample() -> None:
        last = t0
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            samples.append((now - t0, rss_mb()[0]))
            if now - last >= plan.progress_every:
                last = now
                progress(f"  {now - t0:5.0f} s  taken {service.events_in - in0}  "
                         f"backlog {service.inbox.qsize()}  rss {samples[-1][1]:.0f} MB")

    sampler = asyncio.create_task(sample())
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        sent = (await _ask(conn, {"op": "pace", "rate": plan.rate,
                                  "seconds": plan.duration}))["sent"]
        await _until_taken(service, sent)
    finally:
        sampler.cancel()
        gc.callbacks.remove(pauses)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    taken = service.events_in - in0
    await asyncio.sleep(0.5)  # the last pops
    pops = await _ask(conn, {"op": "pops"})
    lat = pops["latencies_ms"]
    rss_now, peak = rss_mb()
    after_warmup = [r for t, r in samples if t >= warmup] or [rss_now]
    result["events_per_s"] = round(taken / elapsed, 1)
    result["events_sustained"] = taken
    result["pop_latency_ms"] = {"p50": round(percentile(lat, 50), 1),
                                "p99": round(percentile(lat, 99), 1),
                                "max": round(max(lat, default=0.0), 1)}
    result["pops"] = len(lat)
    result["pops_missed"] = pops["missed"]
    result["cpu_s_per_1000_events"] = round(cpu / taken * 1000, 4) if taken else 0.0
    result["cpu_utilisation"] = round(cpu / elapsed, 3)
    result["rss_mb_after_warmup"] = round(after_warmup[0], 1)
    result["rss_mb_end"] = round(rss_now, 1)
    result["rss_growth_pct"] = round((rss_now - after_warmup[0]) / after_warmup[0] * 100, 1)
    result["rss_mb_peak"] = round(peak, 1)
    result["gc_pause_ms_max"] = round(pauses.longest * 1000.0, 1)
    result["gc_full_collections"] = pauses.full


class GcPauses:
    """A ``gc.callbacks`` entry: the longest collection (the loop stands still) and
    how many were of the oldest generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0
        self.full = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self.started)
            self.full += info.get("generation") == 2


async def _max_rate(plan: Plan, conn: Connection, service: CountingService,
                    result: dict[str, Any]) -> None:
    progress(f"max: blasting {plan.blast_events} events")
    await _ask(conn, {"op": "prepare_blast", "events": plan.blast_events})
    in0 = service.events_in
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    conn.send({"op": "blast"})
    answer = asyncio.get_running_loop().run_in_executor(None, conn.recv)
    while service.events_in < in0 + 1:
        await asyncio.sleep(0.001)
    sent = (await answer)["sent"]
    await _until_taken(service, sent)
    elapsed = time.perf_counter() - t0
    taken = service.events_in - in0
    result["max_events_per_s"] = round(taken / elapsed, 1)
    result["max_cpu_utilisation"] = round((time.process_time() - cpu0) / elapsed, 3)
    result["rss_mb_peak"] = round(max(result["rss_mb_peak"], rss_mb()[1]), 1)


# =========================================================================== CLI


TABLE = [
    ("operators / wallboards connected", lambda r: f"{r['operators']} / {r['wallboards']}"
     f" ({r['websockets_connected']} open, {r['websockets_failed']} failed)"),
    ("AMI events/s sustained (asked)", lambda r: f"{r['events_per_s']:,.0f} ({r['rate']:g})"),
    ("AMI events/s max (drain rate)", lambda r: f"{r['max_events_per_s']:,.0f}"),
    ("bare panoramisk parsing events/s", lambda r: f"{r['baseline_panoramisk_events_per_s']:,}"),
    ("ratio to baseline", lambda r: f"{r['ratio_to_baseline'] * 100:.1f} %"),
    ("ring-to-pop ms p50 / p99 / max", lambda r: "{p50} / {p99} / {max}".format(
        **r["pop_latency_ms"]) + f"  ({r['pops']} pops, {r['pops_missed']} missed)"),
    ("RSS MB peak / after warm-up / end", lambda r: f"{r['rss_mb_peak']} / "
     f"{r['rss_mb_after_warmup']} / {r['rss_mb_end']} ({r['rss_growth_pct']:+} %)"),
    ("  of which hub update buffers MB", lambda r: f"{r['hub_buffered_mb']}"),
    ("non-reading clients (cut, refused)", lambda r: f"{r['slow_clients']}"
     f" ({r.get('slow_cuts', 0)}, {r.get('slow_refused', 0)})"),
    ("longest GC pause ms (full GCs)", lambda r: f"{r['gc_pause_ms_max']}"
     f" ({r['gc_full_collections']})"),
    ("CPU s per 1,000 events", lambda r: f"{r['cpu_s_per_1000_events']:.4f}"),
    ("work orders/s (SQLite)", lambda r: f"{r['orders_per_s']:,.1f}"),
    ("day rebuild s (calls)", lambda r: f"{r['day_rebuild_s']} ({r['day_calls']:,})"),
    ("load average 1 / 5 / 15 min", lambda r: " / ".join(map(str, r["load_average"]))),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``callcenter bench`` options (defaults: the full run; --quick: under 30 s)."""
    parser.add_argument("--operators", type=int, help="operator websockets (default 1000)")
    parser.add_argument("--wallboards", type=int, help="wallboard websockets (default 100)")
    parser.add_argument("--rate", type=float, help="AMI events/s, sustained phase (1000)")
    parser.add_argument("--duration", type=float, help="sustained phase, seconds (600)")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--blast-events", type=int, help="events in the max phase (60000)")
    parser.add_argument("--orders", type=int, help="work orders created (2000)")
    parser.add_argument("--day-calls", type=int, help="calls in the day rebuilt (100000)")
    parser.add_argument("--slow-clients", type=int, default=0,
                        help="extra wallboard websockets that send and never read (0)")
    parser.add_argument("--quick", action="store_true",
                        help="small defaults: 50 operators, 5 wallboards, 5 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--search", action="store_true",
                        help="instead: the desk's search targets (callcenter.bench_search): "
                             "knowledge base and order search")
    parser.add_argument("--articles", type=int, default=200_000,
                        help="--search: knowledge-base articles (200000; 0 skips)")
    parser.add_argument("--search-orders", type=int, default=1_000_000,
                        help="--search: work orders (1000000; 0 skips)")
    parser.add_argument("--search-pg", metavar="URL",
                        help="--search: also on PostgreSQL, in a scratch database created on "
                             "this server (e.g. postgresql://postgres@127.0.0.1:5432/postgres)")
    parser.add_argument("--search-no-sqlite", action="store_true",
                        help="--search: PostgreSQL only")
    parser.add_argument("--search-keep", metavar="DIR", type=Path,
                        help="--search: keep the order databases for the next run and reuse "
                             "them when they fit (same size, seed, schema): SQLite files in DIR, "
                             "PostgreSQL databases hotline_keep_<DIR's name>_orders_<N>_<seed> "
                             "(drop them yourself when done)")
    parser.add_argument("--search-load-only", action="store_true",
                        help="--search with --search-keep: generate the kept order databases, "
                             "measure nothing (run it niced, then measure under the bench lock)")
    parser.add_argument("--month-report", action="store_true",
                        help="only the monthly report rebuild (issue 14): a month of a large "
                             "centre written to SQLite (and --postgres URL), the 月报 rebuilt")
    parser.add_argument("--month-calls", type=int, default=2_000_000,
                        help="calls in the month (2,000,000)")
    parser.add_argument("--month-orders", type=int, default=300_000,
                        help="work orders in the month (300,000)")
    parser.add_argument("--postgres", action="append", metavar="URL",
                        help="also on this PostgreSQL database (postgresql+asyncpg://...)")
    parser.add_argument("--keep", metavar="FILE",
                        help="--month-report: keep the SQLite database in FILE; a database "
                             "already holding the month is measured without writing it again")
    parser.add_argument("--month-write-only", action="store_true",
                        help="--month-report: write the month (and its summaries), measure "
                             "nothing (run it at low priority, then measure under the lock)")
    parser.add_argument("--month-no-raw", action="store_true",
                        help="--month-report: skip the rebuild from the raw records alone")
    parser.add_argument("--month-no-sqlite", action="store_true",
                        help="--month-report: only the --postgres databases")
    so = parser.add_argument_group("scale-out (callcenter.bench_scaleout): with --web-workers")
    so.add_argument("--web-workers", type=int, default=0,
                    help="run the scale-out bench: a core, a standby, N web workers, "
                         "PostgreSQL and Redis, each its own process")
    so.add_argument("--pbxs", type=int, default=1,
                    help="simulated PBXs, each its own process, in the load and the failover "
                         "phase (1)")
    so.add_argument("--load-procs", type=int, default=0,
                    help="processes holding the browsers' websockets (default: one per "
                         "1,000 sockets)")
    so.add_argument("--database", metavar="URL",
                    help="PostgreSQL server (postgresql://postgres@127.0.0.1:5432/postgres): "
                         "a scratch database is created on it and dropped after")
    so.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    so.add_argument("--max-rate", type=float, default=10_000.0,
                    help="events/s of the max phase (10000)")
    so.add_argument("--max-seconds", type=float, default=10.0,
                    help="how long the max phase lasts, s (10; 60 and more: sustained)")
    so.add_argument("--failovers", type=int, default=3,
                    help="kill -9 of the active core, each timed (3; 0 skips)")
    so.add_argument("--load-nice", type=int, default=0, metavar="N",
                    help="the load processes (the PBX ends, the browsers) run at nice N "
                         "(0..19; 0): on a real site they are other machines; N > 0 gives "
                         "the processes measured the CPU first when the machine is short "
                         "of it (the cores busy per role are printed either way)")
    so.add_argument("--logs", metavar="DIR",
                    help="copy the core's and the workers' logs (*.out, *.err) here")
    so.add_argument("--no-single", action="store_true",
                    help="skip the single-process SQLite run beside the scale-out one")


def main_from_args(args: argparse.Namespace) -> int:
    if getattr(args, "month_report", False):
        return month_main(args)
    logs.setup("warning", "console")
    if args.search:
        from callcenter.bench_search import main as search_main

        if args.articles < 0 or args.search_orders < 0:
            print("callcenter bench: --articles and --search-orders must be >= 0",
                  file=sys.stderr)
            return 2
        if args.search_load_only and not args.search_keep:
            print("callcenter bench: --search-load-only needs --search-keep DIR",
                  file=sys.stderr)
            return 2
        return search_main(args.articles, args.search_orders, args.search_pg, args.seed,
                           args.json, sqlite=not args.search_no_sqlite,
                           keep=args.search_keep, measure=not args.search_load_only)
    _raise_fd_limit()
    plan = _plan(args)
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        try:
            result = asyncio.run(run(plan, Path(tmp)))
        except BenchError as exc:
            print(f"callcenter bench: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        for label, fmt in TABLE:
            print(f"{label:<36} {fmt(result)}")
    return 0


__all__ = ["add_arguments", "main_from_args", "panoramisk_rate", "percentile", "rss_mb",
           "synthetic_day"]
