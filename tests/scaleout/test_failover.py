"""The bounded failover test: two real ``callcenter serve`` processes against one
PostgreSQL (a database of the test's own) and Redis on loopback, two simulated PBXs
(``[[pbx]]``), each in a process of its own carrying calls.  The active core is killed
with SIGKILL in the middle of the traffic; the standby must take the lease within the
issue's 10 s, resynchronise every PBX and settle each gap from that PBX's queue_log, so
that in the end the database holds every queue visit of every queue_log exactly once,
with its outcome and its PBX, none left open, and each PBX's per-queue figures equal its
queue_log's and its app_queue's own counters (0 calls lost, 0 doubled).  A web worker (a fourth process) keeps an operator's console open
through it all: the socket stays up, the new core's screen arrives on it as a snapshot,
and the same session cookie works against the new core (sessions live in the database).
Actions through the worker are done once: one sent before the kill and sent again after
it (same ``X-Action-Id``) gets its first answer from the new core, one sent in the gap
is sent again by the worker until the new core answers; each makes one draft.
One failover, about 12 s of calls; skipped (with the reason) only when PostgreSQL or
Redis does not answer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis import asyncio as aioredis
from sqlalchemy import text

from agent_console.auth import Users
from callcenter.db import make_engine
from callcenter.scaleout import CoreProcess, SimProcess, core_config, reconcile

TRAFFIC_S = 12.0  # PBX (= wall) seconds of callers
KILL_AFTER_S = 5.0  # the active core dies this long after the first caller
LEASE_WITHIN_S = 10.0  # the bound: kill -9 -> the standby holds the lease
PBXS = ("pbx1", "pbx2")  # two simulated Asterisks, each its own process and queue_log


async def newest_epoch(redis: str, prefix: str) -> int:
    r = aioredis.from_url(redis)
    try:
        top = await r.xrevrange(f"{prefix}:wall", count=1)
    finally:
        await r.aclose()
    return int(top[0][0].decode().split("-")[0]) if top else 0


async def next_snapshot(ws: aiohttp.ClientWebSocketResponse,
                        not_of: str = "") -> dict[str, Any]:
    """The next snapshot on the socket (of a stream other than ``not_of``)."""
    while True:
        msg = json.loads((await ws.receive(timeout=60)).data)
        if msg["type"] == "snapshot" and msg["stream"] != not_of:
            return dict(msg)


async def test_kill9_of_the_active_core_loses_and_doubles_no_call(
        own_pg_db: str, redis_or_skip: tuple[str, str], tmp_path: Path) -> None:
    redis, prefix = redis_or_skip
    qlogs = {name: tmp_path / f"queue_log.{name}" for name in PBXS}
    sims = {name: SimProcess(qlogs[name], agents=4, rate=0.7, seed=15 + i)
            for i, name in enumerate(PBXS)}
    ports = {name: await sim.start() for name, sim in sims.items()}
    more = tuple((name, ports[name], qlogs[name]) for name in PBXS[1:])
    cores = [CoreProcess(core_config(tmp_path / f"{x}.toml", name=PBXS[0],
                                     ami_port=ports[PBXS[0]], secret=sims[PBXS[0]].secret,
                                     database_url=own_pg_db, queue_log_path=qlogs[PBXS[0]],
                                     redis_url=redis, prefix=prefix, more_pbxs=more),
                         tmp_path, f"core-{x}") for x in "ab"]
    worker = CoreProcess(cores[0].config, tmp_path, "web", web=True)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        for core in (*cores, worker):  # at once: whichever takes the lease is active
            await core.start()
        async with asyncio.timeout(120):
            while not any(core.log_has("lease taken") for core in cores):
                await asyncio.sleep(0.05)
        a, b = cores if cores[0].log_has("lease taken") else cores[::-1]
        await a.wait_serving(120)
        assert await b.wait_for("another core is active", 120), b.tail()  # one active
        assert not b.log_has("lease taken")
        assert await a.wait_for("resynchronised with the PBX", 60, len(PBXS)), a.tail()
        epoch_a = 0
        for _ in range(100):  # the active core's wallboard is on the bus
            if epoch_a := await newest_epoch(redis, prefix):
                break
            await asyncio.sleep(0.1)
        assert epoch_a, "the active core published nothing to Redis"
        # An operator signs in through a web worker and opens the console's socket.
        engine = make_engine(own_pg_db)
        await Users(engine).add("op9", "failover-pw", "operator", member_name="agent1009",
                                interface="Local/1009@agents/n")
        await engine.dispose()
        site = f"http://127.0.0.1:{await worker.wait_serving(120)}"
        async with browser.post(f"{site}/api/login", json={"username": "op9",
                                "password": "failover-pw"}) as r:
            assert r.status == 200, await r.text()
            csrf = (await r.json())["csrf"]
        # An action through the worker, with the id a worker's retry would carry.
        draft = {"json": {}, "headers": {"X-CSRF-Token": csrf, "X-Action-Id": "failover-d1"}}
        async with browser.post(f"{site}/api/drafts", **draft) as r:
            assert r.status == 200, await r.text()
            first_draft = await r.json()
        ws = await browser.ws_connect(f"{site}/ws")
        first = await next_snapshot(ws)
        assert first["data"]["me"]["username"] == "op9"

        for sim in sims.values():
            await sim.command(do="go", seconds=TRAFFIC_S)
        await asyncio.sleep(KILL_AFTER_S)
        before = [await sim.command(do="status") for sim in sims.values()]
        # calls in flight on every PBX when it dies
        assert all(st["offered"] >= 2 and st["channels"] > 0 for st in before), before
        a.kill9()
        killed = time.monotonic()
        # An action sent while no core answers: the worker sends it again, same id, until
        # the standby does.
        draft2 = {"json": {}, "headers": {"X-CSRF-Token": csrf, "X-Action-Id": "failover-d2"}}
        in_the_gap = asyncio.create_task(browser.post(f"{site}/api/drafts", **draft2))
        assert await b.wait_for("lease taken", LEASE_WITHIN_S), b.tail()
        took = time.monotonic() - killed
        await b.wait_serving(120)
        assert await b.wait_for("resynchronised with the PBX", 60, len(PBXS)), b.tail()
        print(f"failover: lease taken {took:.2f} s after kill -9; "
              f"{sum(st['offered'] for st in before)} calls offered before it")
        for _ in range(100):  # the standby's wallboard is a new epoch on the same stream
            if await newest_epoch(redis, prefix) > epoch_a:
                break
            await asyncio.sleep(0.1)
        assert await newest_epoch(redis, prefix) > epoch_a
        # The console's socket stayed open; the new core's screen came on it.
        again = await next_snapshot(ws, not_of=first["stream"])
        assert again["data"]["me"]["username"] == "op9"
        async with browser.get(f"{site}/api/me") as r:  # the same cookie, the new core
            assert r.status == 200 and (await r.json())["user"]["username"] == "op9"
        # The first action again (a worker that never saw its answer): the new core gives
        # the first answer from the database and does not do it twice.
        async with browser.post(f"{site}/api/drafts", **draft) as r:
            assert (r.status, r.headers.get("X-Action-Repeat")) == (200, "first")
            assert await r.json() == first_draft
        gap = await in_the_gap
        print(f"action in the gap: {gap.status} after {time.monotonic() - killed:.2f} s")
        assert gap.status == 200, await gap.text()
        gap.release()
        engine = make_engine(own_pg_db)
        async with engine.connect() as conn:
            drafts = (await conn.execute(text(
                "SELECT count(*) FROM drafts WHERE owner = 'op9'"))).scalar_one()
        await engine.dispose()
        assert drafts == 2  # each action once
        await ws.close()

        final = {name: await sim.idle(timeout=90) for name, sim in sims.items()}
        deadline = time.monotonic() + 30
        while not (r := await reconcile(own_pg_db, qlogs)).exact \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the core's batches flush every 0.5 s
        await b.stop()  # SIGTERM: the last batch is written
        r = await reconcile(own_pg_db, qlogs)
    finally:
        await browser.close()
        for core in (*cores, worker):
            await core.stop()
        for sim in sims.values():
            await sim.stop()
    print(f"reconciled: {r.logged} visits logged, {r.stored} stored; {r.per_queue_db}")
    assert r.logged > 10 and r.stored == r.logged, (r.logged, r.stored)
    assert (r.lost, r.doubled, r.wrong, r.still_open) == ([], [], [], []), r
    assert r.per_queue_db == r.per_queue_log
    # Each simulator's app_queue counters (Completed, Abandoned) say the same.
    assert {q: {"completed": f["completed"], "abandoned": f["abandoned"]}
            for q, f in r.per_queue_db.items()} == {
        f"{name}/{q}": c for name, st in final.items() for q, c in st["queues"].items()}
    assert sum(f["offered"] for f in r.per_queue_db.values()) == sum(
        st["offered"] for st in final.values())
