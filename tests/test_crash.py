"""Crash test (issue 12, item 7): the real service, ``callcenter serve`` in its own process,
is killed with SIGKILL again and again while ``callcenter pbx-sim`` (another process,
real time, writing Asterisk's queue_log) carries calls and two clients file work orders
over HTTP - an operator through the console's ``POST /api/orders``, a channel through
``POST /api/intake/orders`` and an operator submitting drafts - each retrying a request
whose answer it did not get, with the same ``Idempotency-Key`` (a draft: the same
draft), as a real client would.

At the end: every order the clients sent (acknowledged with a 2xx, or retried) exists
exactly once; no call is left open in the database; every queue's and every operator's
figures in the database equal the simulator's queue_log, and its own counters
(``QueueStatus``: Completed, Abandoned, each member's CallsTaken).

Bounded for the suite: ``HOTLINE_CRASH_KILLS`` kills (default 6; the issue's run is 30),
each once the service has filed a few orders, and 0.3-1.5 s later.  Runs on SQLite, and
on PostgreSQL with ``HOTLINE_TEST_DATABASE`` like every test taking ``tmp_db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from agent_console.auth import Users
from callcenter.db import Store
from callcenter.orders.intake import Intake
from callcenter.orders.store import OrderRow, WorkOrders
from callcenter.pbx.ami import AmiLink
from tests.queue_log_truth import assert_stored_as_logged, logged_truth, stored_figures

KILLS = int(os.environ.get("HOTLINE_CRASH_KILLS", "6"))
CLI = [sys.executable, "-c", "import sys; from callcenter.cli import main; sys.exit(main())"]
SECRET = "crash-test"
PASSWORD = "crash-test-password"


class Process:
    """A child process whose output (stdout and stderr) is kept, with a wait for a line."""

    def __init__(self, name: str, log: Path) -> None:
        self.name, self.log = name, log
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._wanted: tuple[re.Pattern[str], asyncio.Future[re.Match[str]]] | None = None

    async def start(self, args: list[str], ready: str, cwd: Path) -> re.Match[str]:
        self.proc = await asyncio.create_subprocess_exec(
            *CLI, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        found: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        self._wanted = (re.compile(ready), found)
        self._reader = asyncio.create_task(self._read(self.proc))
        try:
            return await asyncio.wait_for(found, 60)
        except TimeoutError:
            raise AssertionError(f"{self.name} did not start: see {self.log}") from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        with self.log.open("ab") as out:
            while line := await proc.stdout.readline():
                out.write(line)
                if self._wanted is not None:
                    pattern, found = self._wanted
                    m = pattern.search(line.decode("utf-8", "replace"))
                    if m is not None and not found.done():
                        found.set_result(m)
        if self._wanted is not None and not self._wanted[1].done():
            self._wanted[1].set_exception(AssertionError(f"{self.name} ended: see {self.log}"))

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return code


@dataclass
class Client:
    """One client's HTTP session and, signed in, its CSRF token."""

    http: aiohttp.ClientSession
    user: str
    csrf: str = ""


class Orders:
    """Three clients filing orders while the service comes and goes: ``console``
    (``POST /api/orders`` with an Idempotency-Key per account), ``intake`` (``POST
    /api/intake/orders``, the channel's key) and ``draft`` (an operator's draft, filled
    in, then ``POST /api/drafts/{id}/submit``, whose key is the draft).  Each request is
    sent until it gets a 2xx: a lost answer, a refused connection or a 5xx is retried
    as it was."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.url = ""  # the running service's address (changes with every start)
        self.acked: dict[str, int] = {}  # text of the order -> order id the 2xx named
        self.sent: Counter[str] = Counter()  # text of the order -> attempts
        self.replayed = 0
        self.stop = asyncio.Event()

    async def run(self, kind: str) -> None:
        jar = aiohttp.CookieJar(unsafe=True)
        timeout = aiohttp.ClientTimeout(total=5)
        user = {"console": "op1", "draft": "op2"}.get(kind, "")
        async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
            me = Client(http, user)
            n = 0
            while not self.stop.is_set():
                n += 1
                text = f"crash test order {kind}-{n}: 路灯不亮，请尽快修复"
                key = f"{kind}-{n}"
                if kind == "intake":
                    status, doc = await self._until_2xx(
                        me, "POST", "/api/intake/orders", {"text": text}, "",
                        {"X-Api-Key": self.api_key, "Idempotency-Key": key}, text)
                elif kind == "console":
                    status, doc = await self._until_2xx(
                        me, "POST", "/api/orders", {"text": text}, user,
                        {"Idempotency-Key": key}, text)
                else:  # a new draft (a lost answer only leaves an unused draft behind)
                    _, d = await self._until_2xx(me, "POST", "/api/drafts", {}, user)
                    await self._until_2xx(me, "PUT", f"/api/drafts/{d['id']}", {
                        "caller": "13800000011", "text": text, "fields": {
                            "request_type": "report", "category": "市政设施/路灯"}}, user)
                    status, doc = await self._until_2xx(
                        me, "POST", f"/api/drafts/{d['id']}/submit", {}, user, {}, text)
                    doc = {"order": {"id": doc["id"]}}
                self.acked[text] = int(doc["order"]["id"])
                self.replayed += status == 200 and kind != "draft"

    async def _until_2xx(self, me: Client, method: str, path: str, body: dict[str, Any],
                         user: str, headers: dict[str, str] | None = None,
                         order: str = "") -> tuple[int, Any]:
        http = me.http
        while True:
            h = dict(headers or {})
            if user:
                if not me.csrf:
                    me.csrf = await self._login(http, user)
                    if not me.csrf:
                        await asyncio.sleep(0.1)
                        continue
                h["X-CSRF-Token"] = me.csrf
            if order:
                self.sent[order] += 1
            try:
                async with http.request(method, self.url + path, json=body, headers=h) as r:
                    status, doc = r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(0.1)  # the service is away: try again soon
                continue
            if status in (200, 201):
                return status, doc
            if user and status in (401, 403):
                me.csrf = ""  # sign in again
                continue
            assert status in (409, 429, 503) or status >= 500, (method, path, status, doc)
            await asyncio.sleep(0.1)

    async def _login(self, http: aiohttp.ClientSession, user: str) -> str:
        try:
            async with http.post(self.url + "/api/login",
                                 json={"username": user, "password": PASSWORD}) as r:
                if r.status == 200:
                    return str((await r.json())["csrf"])
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        return ""


async def pbx_counters(port: int) -> tuple[dict[str, int], dict[str, int], int]:
    """The simulator's own counters over AMI: (queue Completed/Abandoned/Calls, each
    member's CallsTaken, channels up)."""
    link = AmiLink("127.0.0.1", port, "hotline", SECRET, events="off",
                   on_event=lambda h, t: None)
    try:
        await link.connect_once()
        status = await link.action({"Action": "QueueStatus"}, idempotent=True)
        channels = await link.action({"Action": "CoreShowChannels"}, idempotent=True)
    finally:
        await link.stop()
    queue = next(h for h in status if h.get("Event") == "QueueParams")
    members = {h["Name"] if "Name" in h else h["MemberName"]: int(h["CallsTaken"])
               for h in status if h.get("Event") == "QueueMember"}
    up = sum(1 for h in channels if h.get("Event") == "CoreShowChannel")
    return ({k: int(queue[k]) for k in ("Completed", "Abandoned", "Calls")}, members, up)


async def prepare(db: str) -> str:
    """Accounts and an intake key in the new database; the key."""
    store = Store(db)
    await store.open()
    try:
        users = Users(store.engine)
        await users.add("op1", PASSWORD, "operator")
        # A console with a queue member behind it (drafts); not one the simulator has.
        await users.add("op2", PASSWORD, "operator", member_name="agent9999",
                        interface="Local/9999@agents/n")
        _, key = await Intake(WorkOrders(store.engine)).create_key("web", "crash test")
    finally:
        await store.close()
    return key


async def until(check: Any, timeout: float, what: str) -> None:
    """Wait (a few polls a second) for ``await check()`` to be true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.25)


async def test_kill_9_during_calls_and_orders_loses_nothing(tmp_db: str, tmp_path: Path) -> None:
    rng = random.Random(12)
    api_key = await prepare(tmp_db)
    log_path = tmp_path / "queue_log"
    # Arrivals for about as long as the kills take (each restart costs ~3 s here).
    calls_for = 3.5 * KILLS + 4.0
    sim = Process("pbx-sim", tmp_path / "pbx-sim.log")
    m = await sim.start(["pbx-sim", "--port", "0", "--secret", SECRET, "--agents", "4",
                         "--rate", "0.8", "--calls-for", str(calls_for), "--talk-median", "5",
                         "--patience-median", "12", "--queue-log", str(log_path),
                         "--seed", "12"], r"AMI on 127\.0\.0\.1:(\d+)", tmp_path)
    pbx_port = int(m.group(1))
    config = tmp_path / "callcenter.toml"
    config.write_text(
        f'[ami]\nhost = "127.0.0.1"\nport = {pbx_port}\nsecret = "{SECRET}"\n'
        f'ping_interval = 0.5\nbackoff_max = 0.3\n'
        f'[database]\nurl = "{tmp_db}"\n'
        f'[metrics]\nqueue_log = "{log_path}"\n', encoding="utf-8")
    orders = Orders(api_key)
    runs = 0

    async def serve() -> Process:
        nonlocal runs
        runs += 1
        p = Process(f"serve #{runs}", tmp_path / f"serve-{runs}.log")
        m = await p.start(["--config", str(config), "serve", "--port", "0", "--agi-port", "0"],
                          r"running at (http://127\.0\.0\.1:\d+)/", tmp_path)
        orders.url = m.group(1)

        async def healthy() -> bool:  # serving, not only listening
            try:
                async with aiohttp.ClientSession() as http, \
                        http.get(orders.url + "/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False
        await until(healthy, 30, f"{p.name} answers")
        return p

    service = await serve()
    clients = [asyncio.create_task(orders.run(kind)) for kind in ("console", "intake", "draft")]
    killed = 0
    try:
        for _ in range(KILLS):
            # Each life files some orders (however loaded the machine), then a little more
            # time for calls and orders in flight before the kill.
            before = len(orders.acked)

            async def moved(before: int = before) -> bool:
                return len(orders.acked) >= before + 3
            await until(moved, 60, "orders filed while the service runs")
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            assert await service.stop(signal.SIGKILL) == -signal.SIGKILL
            killed += 1
            service = await serve()
        orders.stop.set()
        await asyncio.wait_for(asyncio.gather(*clients), 60)  # each finishes its order

        async def pbx_idle() -> bool:
            _, _, up = await pbx_counters(pbx_port)
            return up == 0
        await until(pbx_idle, 120, "the simulator's last calls end")
        offered = logged_truth(log_path)[0]["hotline"]["offered"]

        async def stored() -> bool:
            store = Store(tmp_db)
            try:
                rows = await store.calls_between(0, 2**40)
                return len(rows) >= offered and not await store.open_calls()
            finally:
                await store.close()
        await until(stored, 30, "the service stores every call and settles it")
        counters, members, _ = await pbx_counters(pbx_port)
        assert await service.stop() == 0
    finally:
        orders.stop.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        with contextlib.suppress(Exception):
            await service.stop(signal.SIGKILL)
        await sim.stop()
    assert killed == KILLS

    # Orders: every one sent exists exactly once, under the id its 2xx named.
    store = Store(tmp_db)
    try:
        async with store.sessions() as s:
            filed = Counter((await s.scalars(select(OrderRow.text))).all())
            ids = {t: i for i, t in (await s.execute(select(OrderRow.id, OrderRow.text)))}
        rows = await store.calls_between(0, 2**40)
        open_rows = await store.open_calls()
    finally:
        await store.close()
    retried = sum(1 for n in orders.sent.values() if n > 1)
    kinds = Counter(t.split()[3].split("-")[0] for t in orders.acked)
    print(f"\ncrash test: {KILLS} kills, {len(orders.acked)} orders {dict(kinds)} ({retried} retried, "
          f"{orders.replayed} answered as replays), {offered} calls")
    assert set(orders.sent) == set(orders.acked)  # every request ended with a 2xx
    assert {t: n for t, n in filed.items() if n != 1} == {}  # none filed twice
    assert set(filed) == set(orders.acked)  # none lost, none extra
    assert {t: ids[t] for t in orders.acked} == orders.acked
    assert retried > 0  # the kills did land among orders, and every client filed some
    assert set(kinds) == {"console", "intake", "draft"}, kinds

    # Calls: none open, one row per queue_log visit, figures equal to the PBX's own.
    assert open_rows == [], [(r.uniqueid, r.outcome) for r in open_rows]
    assert_stored_as_logged(rows, log_path)
    per_queue, agents = stored_figures(rows)
    f = per_queue["hotline"]
    assert (f["completed"], f["abandoned"], 0) == (counters["Completed"], counters["Abandoned"],
                                                   counters["Calls"]), counters
    taken = {name: n for name, n in members.items() if n}
    ours = {agent: a[0] for (_, agent), a in agents.items()}
    assert ours == taken, (ours, taken)
