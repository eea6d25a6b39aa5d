"""The FastAGI port is reachable from the network: abuse must not stop the service.

panoramisk 1.4's FastAGI handler loops on ``read()`` returning ``b""``: a client that
sent part of a header and closed froze the whole process at 100 % CPU (web,
websockets, AMI); a 1 MB header line stalled the loop for seconds.  Each attack
below runs against the edge as ``callcenter serve`` runs it: the listener in a gate
process (:mod:`ivr.agi_gate`) that hands each checked conversation to the edge
(:class:`ivr.fastagi.FastAgiServer`) on a thread of this process, while a thread times
``GET /healthz`` of an aiohttp app on the test's (the service's) event loop; the worst
response time is printed (README figure) and must stay far from a stall.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web

from ivr.agi_gate import GateThread
from ivr.fastagi import AgiThread, AgiTokens, FastAgiServer, HotlineAgi, on_loop, parse_allow
from ivr.menus import load_config

ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 2.0  # panoramisk 1.4 froze for good (or stalled seconds); this machine is shared,
# so the figure is printed (README) and only a stall fails the test


class WebProbe:
    """GET /healthz every 10 ms from another thread; the worst response time seen."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/healthz"
        self.worst = 0.0
        self.count = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    r.read()
            except OSError as exc:
                self.errors.append(f"{exc!r} at +{t0 - self.t_start:.2f} s")
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.count += 1
            time.sleep(0.01)

    async def __aenter__(self) -> Self:
        self.t_start = time.perf_counter()
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()  # joined off the loop: the request in flight must be answered
        await asyncio.to_thread(self._thread.join, 15)


@pytest.fixture
async def edge() -> AsyncIterator[tuple[FastAgiServer, int, int]]:
    """The edge as the service runs it: the gate process, the scripts on a thread and loop
    of this process (GateThread), the web app on this one."""
    agi = HotlineAgi(load_config(), tokens=AgiTokens(secret="s"))
    server_edge = FastAgiServer(agi.routes(), header_timeout_s=0.5, max_clients=256,
                                run=on_loop(asyncio.get_running_loop()))
    # HOTLINE_AGI_EDGE=thread: the former design (listener on a thread of this process),
    # for the README's before/after figures.
    thread = (AgiThread(server_edge) if os.environ.get("HOTLINE_AGI_EDGE") == "thread"
              else GateThread(server_edge))
    agi_port = await thread.start("127.0.0.1", 0)
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    web_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server_edge, agi_port, web_port
    await thread.stop()
    await runner.cleanup()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except ConnectionError:  # reset: closed with our bytes unread
        return True
    except TimeoutError:
        return False
    return True


async def all_closed(edge: FastAgiServer, refused: bool = False) -> int:
    """The edge's open conversations once it has caught up (it runs on its own thread: the
    attacker can see its last socket closed before that thread has finished its turn);
    ``refused``: also until the gate's refusal has reached it."""
    for _ in range(100):
        if edge.clients == 0 and (edge.refusals or not refused):
            break
        await asyncio.sleep(0.05)
    return edge.clients


async def in_another_process(attack: str, port: int) -> Any:
    """Run the attacker in its own process: only the server's work is on our loop (and
    our GIL)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.test_fastagi_edge", attack, str(port),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return json.loads(out.decode().strip().splitlines()[-1])


async def partial_then_close(port: int) -> None:
    _, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"agi_network: yes\nagi_network_script: hot")
    await w.drain()
    w.close()


async def partial_then_silence(port: int) -> bool:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"agi_network: yes\nagi_network_script: hotline\nagi_uniq")
    await w.drain()
    return await closed_by_server(r, 3.0)


async def send_and_wait_close(port: int, data: bytes) -> bool:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
    except ConnectionError:
        return True
    ok = await closed_by_server(r, 3.0)
    w.close()
    return ok


async def many_partial_then_close(port: int) -> bool:
    await asyncio.gather(*(partial_then_close(port) for _ in range(50)))
    return True


async def five_hundred_at_once(port: int) -> bool:
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                   for _ in range(500)))
    for _, w in conns:
        w.write(b"agi_network_script: hotline\n")
    closed = await asyncio.gather(*(closed_by_server(r, 5.0) for r, _ in conns))
    for _, w in conns:
        w.close()
    return all(closed)


async def no_attack(port: int) -> bool:
    await asyncio.sleep(1.0)
    return True


ATTACKS: dict[str, Callable[[int], Awaitable[Any]]] = {
    "no attack (baseline)": no_attack,
    "partial header then close": many_partial_then_close,
    "partial header then silence": partial_then_silence,
    "1 MB line": lambda port: send_and_wait_close(port, b"agi_network_script: " + b"x" * (1 << 20)),
    "10,000 headers": lambda port: send_and_wait_close(
        port, b"".join(b"agi_h%d: v\n" % i for i in range(10_000))),
    "non-UTF-8": lambda port: send_and_wait_close(port, b"agi_network_script: \xff\xfe\x80\n\n"),
}
RUNS = {**ATTACKS, "500 connections at once": five_hundred_at_once}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_each_attack_is_closed_and_the_web_app_keeps_answering(
        edge: tuple[FastAgiServer, int, int], attack: str) -> None:
    server_edge, port, web_port = edge
    cpu = time.process_time()
    async with WebProbe(web_port) as probe:
        result = await in_another_process(attack, port)
        await asyncio.sleep(0.3)  # a spinning handler would show here
    cpu = time.process_time() - cpu
    print(f"\n{attack}: worst web response {probe.worst * 1000:.1f} ms over {probe.count} GETs"
          f" (load average {os.getloadavg()[0]:.1f}); this process's CPU {cpu * 1000:.0f} ms")
    assert result is not False, "the server did not close the connection"
    assert probe.errors == []
    assert probe.count > 5 and probe.worst < BOUND_S
    assert await all_closed(server_edge, attack != "no attack (baseline)") == 0
    assert bool(server_edge.refusals) is (attack != "no attack (baseline)"), \
        "each refusal is kept for supervisors"


async def test_500_connections_at_once(edge: tuple[FastAgiServer, int, int]) -> None:
    server_edge, port, web_port = edge
    cpu = time.process_time()
    async with WebProbe(web_port) as probe:
        closed = await in_another_process("500 connections at once", port)
        await asyncio.sleep(0.2)
    cpu = time.process_time() - cpu
    print(f"\n500 connections: worst web response {probe.worst * 1000:.1f} ms "
          f"over {probe.count} GETs (load average {os.getloadavg()[0]:.1f}); "
          f"this process's CPU {cpu * 1000:.0f} ms")
    assert closed is True
    assert probe.errors == []
    assert probe.worst < BOUND_S
    assert await all_closed(server_edge, True) == 0
    # Which of the two refusals each connection met depends on how fast this machine
    # opened the 500 (a loaded one opens them slower than the 0.5 s header limit closes
    # them); the cap itself is proved below, where the timing cannot decide it.
    whys = {r["why"] for r in server_edge.refusals}
    assert whys and whys <= {"too many connections", "headers not complete within 0.5 s"}


async def test_connections_over_the_cap_are_refused_at_once() -> None:
    agi = HotlineAgi(load_config(), tokens=AgiTokens(secret="s"))
    server_edge = FastAgiServer(agi.routes(), header_timeout_s=30.0, max_clients=8,
                                run=on_loop(asyncio.get_running_loop()))
    thread = AgiThread(server_edge)
    port = await thread.start("127.0.0.1", 0)
    try:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        for _, w in held:
            w.write(b"agi_network_script: hotline\n")  # a header begun, never finished
        await asyncio.sleep(0.3)
        extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        # Over the cap: closed long before the 30 s header limit.
        assert all(await asyncio.gather(*(closed_by_server(r, 5.0) for r, _ in extra)))
        assert [(r["why"], r["count"]) for r in server_edge.refusals] == [
            ("too many connections", 4)]
        for _, w in held + extra:
            w.close()
    finally:
        await thread.stop()


async def test_the_gate_hands_a_checked_conversation_over_and_ends_with_the_service() -> None:
    """The script runs in this process (the one writer); the gate exits when its pair
    closes, as when the service dies."""
    ran: list[bool] = []
    agi = HotlineAgi(load_config(), lookup_order=lambda number: ran.append(True) or None)
    server_edge = FastAgiServer(agi.routes(), run=on_loop(asyncio.get_running_loop()))
    agi.run = server_edge.run
    thread = GateThread(server_edge)
    port = await thread.start("127.0.0.1", 0)
    proc = thread.proc
    assert proc is not None and proc.pid != os.getpid()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"agi_network: yes\nagi_network_script: selfservice\nagi_uniqueid: 1.1\n\n")
        assert await asyncio.wait_for(r.readline(), 10) == b"ANSWER\n"
        w.write(b"200 result=0\n")
        assert (await asyncio.wait_for(r.readline(), 10)).startswith(b"GET DATA ")
        w.write(b"200 result=1234\n")  # the order number keyed: looked up by this process
        await asyncio.wait_for(r.readline(), 10)
        assert ran == [True]
        w.close()
        # A refusal made by the gate reaches this process's edge (audit, wallboard).
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"agi_network_script: nosuch\n\n")
        assert await closed_by_server(r2, 5.0)
        w2.close()
        assert await all_closed(server_edge, True) == 0
        assert [x["why"] for x in server_edge.refusals] == ["unknown script"]
    finally:
        await thread.stop()
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_only_configured_pbx_addresses_are_served() -> None:
    reported: list[tuple[str, dict[str, str]]] = []
    agi = HotlineAgi(load_config())
    server_edge = FastAgiServer(agi.routes(), parse_allow(["10.20.30.40", "192.168.1.0/24"]),
                                on_refused=lambda why, d: reported.append((why, dict(d))))
    server = await server_edge.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"agi_network_script: returnvisit\nagi_arg_1: 1\n\n")
            assert await closed_by_server(r, 2.0)
            w.close()
    finally:
        server.close()
        await server.wait_closed()
    # reported once a minute per address and reason; every attempt counted
    assert reported == [("address not allowed", {"peer": "127.0.0.1", "script": "", "count": 1})]
    [entry] = server_edge.refusals
    assert entry["count"] == 3


if __name__ == "__main__":  # the attacker's process: python -m tests.test_fastagi_edge ATTACK PORT
    print(json.dumps(asyncio.run(RUNS[sys.argv[1]](int(sys.argv[2])))))
