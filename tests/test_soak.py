"""Soak: hundreds of calls through the PBX simulator while the AMI link is cut, Asterisk is
killed and started again, and the service is killed (no flush, as ``kill -9``) and started
again - in a random order.  A share of the calls take the flows of issue 16 (blind,
attended and Redirect transfers into the second queue, queue timeouts that overflow into
it, callers going on to the after-call survey after a hang-up or the ``*`` disconnect),
and one operator has her own 30 s wrap-up.  The service reads the simulator's queue_log (written in
Asterisk's format), so every gap is rebuilt exactly: at the end every queue's and every
operator's figures in the database equal the simulator's queue_log, no visit is lost or
stored twice, and none is left open.  Bounded for CI (about 12 s of wall time for 300
PBX seconds at 40x).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from acd import queue_log
from acd.metrics import by_queue
from acd.state import FINAL, QueueConfig
from callcenter.config import load
from callcenter.db import Store
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig
from callcenter.service import Service
from tests.test_end_to_end import CuttableProxy, Until, wait_for

T0 = 1_795_000_000.0
SECONDS = 300.0
LEAD = 60.0  # PBX seconds before the first caller


async def kill(service: Service) -> None:
    """Stop the service the way kill -9 does: nothing more is written (rows not yet
    flushed are lost), the AMI socket just closes."""
    for task in service._tasks:
        task.cancel()
    await asyncio.gather(*service._tasks, return_exceptions=True)
    await service.link.stop()
    await service.store.close()


def logged_visits(path: Path, pbx: Pbx | None = None,
                  stored: dict[tuple[str, str], str] | None = None
                  ) -> list[queue_log.LoggedVisit]:
    """The simulator's queue_log as visits.  With ``pbx``: a visit app_queue counted
    completed when its operator left (``*``, a Redirect) whose end line a restart took
    from queue_log (``Pbx.unlogged_completed``) is completed, as Asterisk counted it -
    or, given the service's ``stored`` outcome of it, ``interrupted`` when that is what
    the service has: only a service that saw the operator leave can know better than
    queue_log."""
    found = queue_log.visits(queue_log.parse(path.read_text(encoding="utf-8")))
    unlogged = set(pbx.unlogged_completed) if pbx is not None else set()
    for v in found:
        if (v.callid, v.queue) in unlogged and v.outcome == "interrupted":
            seen = (stored or {}).get((v.callid, v.queue))
            v.outcome = "interrupted" if seen == "interrupted" else "completed"
    return found


def logged_truth(path: Path, pbx: Pbx | None = None,
                 stored: dict[tuple[str, str], str] | None = None
                 ) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], list[int]]]:
    """Per queue (offered, answered, completed, abandoned) and per (queue, operator)
    [answered, completed] from the simulator's queue_log (see :func:`logged_visits`)."""
    per_queue: dict[str, dict[str, int]] = {}
    per_agent: dict[tuple[str, str], list[int]] = {}
    for v in logged_visits(path, pbx, stored):
        q = per_queue.setdefault(v.queue, {"offered": 0, "answered": 0, "completed": 0,
                                           "abandoned": 0})
        q["offered"] += 1
        if v.outcome in ("answered", "completed", "interrupted"):
            q["answered"] += 1
            per_agent.setdefault((v.queue, v.agent), [0, 0])[0] += 1
        if v.outcome == "completed":
            q["completed"] += 1
            per_agent[(v.queue, v.agent)][1] += 1
        if v.outcome == "abandoned":
            q["abandoned"] += 1
    return per_queue, per_agent


async def test_soak_cuts_restarts_and_kills_lose_nothing(tmp_db: str, tmp_path: Path) -> None:
    rng = random.Random(16)
    traffic = RandomTraffic(TrafficConfig(rate=0.9, talk_median=20.0, talk_min=5.0,
                                          patience_median=40.0, breaks_per_hour=4.0,
                                          first_call_after=1.0, flow_share=0.3,
                                          flow_queue="hotline-en"),
                            seed=16, origin=T0 + LEAD)
    # Callers come once the service is up (what happened before it ever ran is not its).
    pbx = Pbx(PbxConfig(queues=(SimQueue(), SimQueue(name="hotline-en")), agents=8),
              Until(traffic, T0 + LEAD + SECONDS), start_time=T0, seed=16)  # type: ignore[arg-type]
    assert "Success" in pbx.handle_action({
        "Action": "QueueAdd", "Queue": "hotline", "Interface": "Local/1009@agents/n",
        "MemberName": "agent1009", "Wrapuptime": "30"})
    log_path = tmp_path / "queue_log"
    server = PbxSimServer(pbx, port=0, users={"hotline": "pw"}, speed=40.0, queue_log=log_path)
    server.hold_clock()  # until the service first sees the PBX (a loaded start is slow)
    await server.start()
    proxy = CuttableProxy(server.port)
    await proxy.start()
    settings = load(env={})
    settings.ami.port, settings.ami.secret = proxy.port, "pw"
    settings.ami.ping_interval, settings.ami.backoff_max = 0.5, 0.3
    settings.database_url = tmp_db
    settings.queues = {"hotline": QueueConfig(15, 3), "hotline-en": QueueConfig(15, 3)}
    settings.queue_log = str(log_path)

    def new_service() -> Service:
        return Service(settings, clock=server.virtual_now)

    service = new_service()
    await service.start()
    done: dict[str, int] = {"cut": 0, "restart": 0, "kill": 0}
    try:
        await wait_for(lambda: service.centre.link_up)
        server.release_clock()
        plan = ["cut", "restart", "kill", "cut", "kill", "restart", "cut"]
        rng.shuffle(plan)
        for what in plan:
            await asyncio.sleep(rng.uniform(0.6, 1.0))  # 24-40 PBX seconds of calls
            if what == "cut":
                proxy.cut()
                await asyncio.sleep(0.25)
            elif what == "restart":
                server.restart_pbx()
                proxy.cut()
                await asyncio.sleep(0.25)
            else:
                await kill(service)
                await asyncio.sleep(0.25)  # ~10 PBX seconds nobody sees
                service = new_service()
                await service.start()
            done[what] += 1
            await wait_for(lambda s=service: s.centre.link_up, timeout=10)
        await wait_for(lambda: pbx.now > T0 + LEAD + SECONDS and not pbx.channels, timeout=30)
        # The last frames may still be on their way to a loaded service: give it until
        # it holds nothing open (the checks below say what, if it never gets there).
        try:
            await wait_for(lambda: all(c.outcome in FINAL for c in service.centre.visits.values()))
        except AssertionError:
            pass
        await service.drain()
    finally:
        await service.stop()
        await proxy.close()
        await server.stop()
    assert done == {"cut": 3, "restart": 2, "kill": 2}, done
    store = Store(tmp_db)
    rows = await store.calls_between(0, 2**40)
    open_rows = await store.open_calls()
    await store.close()
    seen = {(r.channel_uniqueid, r.queue): r.outcome for r in rows}
    want_queue, want_agent = logged_truth(log_path, pbx, seen)
    assert want_queue["hotline"]["offered"] > 200  # hundreds of calls
    assert want_queue["hotline-en"]["offered"] > 10  # overflows and transfers
    flows = {e.event for e in queue_log.parse(log_path.read_text(encoding="utf-8"))}
    assert len({"BLINDTRANSFER", "ATTENDEDTRANSFER", "EXITWITHTIMEOUT", "COMPLETECALLER"}
               & flows) >= 3, flows  # (whether one comes off depends on the moment)
    logged = {(v.callid, v.queue): v for v in logged_visits(log_path, pbx, seen)}
    mismatch = sorted((r.uniqueid, r.outcome, r.settled, r.agent,
                       logged[(r.channel_uniqueid, r.queue)].outcome if (
                           r.channel_uniqueid, r.queue) in logged else None)
                      for r in rows if (r.channel_uniqueid, r.queue) not in logged
                      or logged[(r.channel_uniqueid, r.queue)].outcome != r.outcome)
    stored = {(r.channel_uniqueid, r.queue) for r in rows}
    missing = sorted((k[0], v.outcome, v.entered) for k, v in logged.items() if k not in stored)
    assert mismatch == [] and missing == [], "\n".join(map(str, mismatch + missing))
    per, _ = by_queue(rows, lambda q: 15)
    got: dict[str, Any] = {q: {"offered": f.offered, "answered": f.answered,
                               "completed": f.completed, "abandoned": f.abandoned}
                           for q, f in per.items()}
    assert got == want_queue, (got, want_queue)
    assert open_rows == [], [(r.uniqueid, r.outcome) for r in open_rows]
    agents: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if r.outcome in ("answered", "completed", "interrupted"):
            a = agents.setdefault((r.queue, r.agent), [0, 0])
            a[0] += 1
            a[1] += r.outcome == "completed"
    assert agents == want_agent, (agents, want_agent)
    # Nothing stored twice: one row per queue_log ENTERQUEUE.
    assert len(rows) == len({r.uniqueid for r in rows}) == sum(
        w["offered"] for w in want_queue.values())
    # Asterisk's counters since its last start equal ours for the same calls.
    last = max(v.run for v in logged.values())
    last_run = [r for r in rows if (r.channel_uniqueid, r.queue) in logged
                and logged[(r.channel_uniqueid, r.queue)].run == last]
    for name, f in by_queue(last_run, lambda q: 15)[0].items():
        q = pbx.queues[name]
        assert (f.completed, f.abandoned) == (q.completed, q.abandoned), (
            name, (f.completed, f.abandoned), (q.completed, q.abandoned))
