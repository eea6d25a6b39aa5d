"""The service starts while calls are waiting and talking (its first deploy, or a start
after a long stop), with the PBX's clock running - not held until it connects, as the
other simulator tests do.  It reads the simulator's queue_log: at the end every visit
of queue_log is stored exactly once with its outcome and operator - those that ended
before the service started (rebuilt from queue_log), those in progress when it
connected (its events and its first resync both tell them), and those after - with
none left open.  Bounded for CI (about 5 s of wall time for 150 PBX seconds at 40x).
"""

from __future__ import annotations

from pathlib import Path

from callcenter.db import Store
from callcenter.pbx.sim import Pbx, PbxConfig
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig, Until
from tests.queue_log_truth import assert_stored_as_logged
from tests.sim_service import sim_service, sim_settings, start_sim
from tests.test_end_to_end import all_applied, wait_for

T0 = 1_795_000_000.0
SECONDS = 150.0  # PBX seconds of arrivals


async def test_start_mid_traffic_stores_every_visit_once(tmp_db: str, tmp_path: Path) -> None:
    traffic = RandomTraffic(TrafficConfig(rate=0.8, talk_median=20.0, talk_min=5.0,
                                          patience_median=40.0, breaks_per_hour=4.0,
                                          first_call_after=1.0, flow_share=0.3,
                                          flow_queue="hotline-en"), seed=17, origin=T0)
    pbx = Pbx(PbxConfig(queues=(SimQueue(), SimQueue(name="hotline-en")), agents=6),
              Until(traffic, T0 + SECONDS), start_time=T0, seed=17)
    log_path = tmp_path / "queue_log"
    server = await start_sim(pbx, 40.0, log_path, hold_clock=False)  # the clock runs from here
    service = sim_service(server, sim_settings(server.port, tmp_db, ("hotline", "hotline-en"),
                                               queue_log=log_path))
    try:
        # Callers waiting and talking, some calls already over, when the service starts.
        await wait_for(lambda: pbx.now > T0 + 40 and len(pbx.queues["hotline"].callers) >= 1
                       and any(ch.bridge for ch in pbx.channels.values()), timeout=30)
        await service.start()
        await wait_for(lambda: service.centre.link_up, timeout=20)
        started_at = pbx.now
        await wait_for(lambda: pbx.now > T0 + SECONDS and not pbx.channels, timeout=60)
        await all_applied(service)
    finally:
        await service.stop()
        await server.stop()
    store = Store(tmp_db)
    rows = await store.calls_between(0, 2**40)
    open_rows = await store.open_calls()
    await store.close()
    logged = assert_stored_as_logged(rows, log_path, pbx)  # 0 extra, 0 lost, 0 twice
    assert sum(v.entered < started_at for v in logged.values()) >= 20  # before it started
    assert [(r.uniqueid, r.outcome) for r in open_rows] == []
