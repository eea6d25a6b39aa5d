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
from collections import Counter
from pathlib import Path

from acd import queue_log
from acd.metrics import by_queue
from callcenter.db import Store
from callcenter.pbx.sim import Pbx, PbxConfig
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig, Until
from callcenter.service import Service
from tests.queue_log_truth import assert_stored_as_logged
from tests.sim_service import sim_service, sim_settings, start_sim
from tests.test_end_to_end import CuttableProxy, all_applied, wait_for

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


async def test_soak_cuts_restarts_and_kills_lose_nothing(tmp_db: str, tmp_path: Path) -> None:
    rng = random.Random(16)
    traffic = RandomTraffic(TrafficConfig(rate=0.9, talk_median=20.0, talk_min=5.0,
                                          patience_median=40.0, breaks_per_hour=4.0,
                                          first_call_after=1.0, flow_share=0.3,
                                          flow_queue="hotline-en"),
                            seed=16, origin=T0 + LEAD)
    # Callers come once the service is up (what happened before it ever ran is not its).
    pbx = Pbx(PbxConfig(queues=(SimQueue(), SimQueue(name="hotline-en")), agents=8),
              Until(traffic, T0 + LEAD + SECONDS), start_time=T0, seed=16)
    assert "Success" in pbx.handle_action({
        "Action": "QueueAdd", "Queue": "hotline", "Interface": "Local/1009@agents/n",
        "MemberName": "agent1009", "Wrapuptime": "30"})
    log_path = tmp_path / "queue_log"
    # the clock held until the service first sees the PBX (a loaded start is slow)
    server = await start_sim(pbx, 40.0, log_path)
    proxy = CuttableProxy(server.port)
    await proxy.start()
    settings = sim_settings(proxy.port, tmp_db, ("hotline", "hotline-en"), queue_log=log_path)
    settings.ami.ping_interval, settings.ami.backoff_max = 0.5, 0.3

    def new_service() -> Service:
        return sim_service(server, settings)

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
        # The last frames may still be on their way to a loaded service.
        await all_applied(service)
    finally:
        await service.stop()
        await proxy.close()
        await server.stop()
    assert done == {"cut": 3, "restart": 2, "kill": 2}, done
    store = Store(tmp_db)
    rows = await store.calls_between(0, 2**40)
    open_rows = await store.open_calls()
    await store.close()
    logged = assert_stored_as_logged(rows, log_path, pbx)
    assert open_rows == [], [(r.uniqueid, r.outcome) for r in open_rows]
    offered = Counter(v.queue for v in logged.values())
    assert offered["hotline"] > 200  # hundreds of calls
    assert offered["hotline-en"] > 10  # overflows and transfers
    flows = {e.event for e in queue_log.parse(log_path.read_text(encoding="utf-8"))}
    assert len({"BLINDTRANSFER", "ATTENDEDTRANSFER", "EXITWITHTIMEOUT", "COMPLETECALLER"}
               & flows) >= 3, flows  # (whether one comes off depends on the moment)
    # Asterisk's counters since its last start equal ours for the same calls.
    last = max(v.run for v in logged.values())
    last_run = [r for r in rows if (r.channel_uniqueid, r.queue) in logged
                and logged[(r.channel_uniqueid, r.queue)].run == last]
    for name, f in by_queue(last_run, lambda q: 15)[0].items():
        q = pbx.queues[name]
        assert (f.completed, f.abandoned) == (q.completed, q.abandoned), (
            name, (f.completed, f.abandoned), (q.completed, q.abandoned))
