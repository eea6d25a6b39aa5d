"""Simulator -> service over real TCP, with the link cut in the middle of calls.

A TCP proxy sits between the service and the PBX simulator; the test severs it
several times while callers wait, ring and talk.  Events sent while the link is
down are lost, as with a real Asterisk.  After the traffic has drained, the
service's counts must equal the simulator's own app_queue counters: nothing
lost, nothing counted twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from acd.state import QueueConfig
from callcenter.config import load
from callcenter.pbx.ami import AmiError
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig, Until
from callcenter.service import Service

T0 = 1_795_000_000.0


class CuttableProxy:
    """Forwards one TCP port to another; ``cut()`` severs every open connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.cuts = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [w, uw]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self) -> None:
        self.cuts += 1
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def all_applied(service: Service, timeout: float = 30.0) -> None:
    """Wait until ``service`` has applied every frame its PBX sent so far: the answer to
    a Ping comes after them on the wire (the simulator writes its pending frames before
    it answers an action) and drain() applies what was read.  A link that is down, or
    drops meanwhile, is waited for: its reconnect's resync tells the rest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await wait_for(lambda: service.centre.link_up, timeout=max(0.1, deadline - loop.time()))
        try:
            await service.link.action({"Action": "Ping"})
        except AmiError:
            if loop.time() > deadline:
                raise
            await service.drain()  # the link's down event, so that link_up says so
            continue
        await service.drain()
        return


def sim(seed: int, agents: int, rate: float, seconds: float) -> Pbx:
    traffic = RandomTraffic(
        TrafficConfig(rate=rate, talk_median=25.0, talk_min=5.0, patience_median=30.0,
                      breaks_per_hour=6.0), seed=seed, origin=T0)
    cfg = PbxConfig(queues=(SimQueue(),), agents=agents)
    return Pbx(cfg, Until(traffic, T0 + seconds), start_time=T0, seed=seed)


async def run(tmp_db: str, *, cuts: int, seed: int) -> tuple[Service, Pbx, float]:
    """The service against the simulator behind the proxy; also the PBX time at which
    the service first saw the link up (calls that began before it can only be adopted).

    The PBX clock stands still until the service has connected: a call that ended
    before the service ever saw this PBX is not the service's to count (without a
    queue_log nothing tells it), and how many such calls there are would otherwise
    depend on how long the service took to start (its migrations, a loaded machine)."""
    pbx = sim(seed, agents=5, rate=0.4, seconds=240)
    server = PbxSimServer(pbx, port=0, users={"hotline": "pw"}, speed=40.0)
    server.hold_clock()
    await server.start()
    proxy = CuttableProxy(server.port)
    await proxy.start()
    settings = load()
    settings.ami.port, settings.ami.secret = proxy.port, "pw"
    settings.ami.ping_interval = 0.5
    settings.ami.backoff_max = 0.4
    settings.database_url = tmp_db
    settings.queues = {"hotline": QueueConfig(15, 3)}
    service = Service(settings)
    await service.start()
    try:
        await wait_for(lambda: service.centre.link_up)
        connected_at = pbx.now
        server.release_clock()
        for _ in range(cuts):
            await asyncio.sleep(0.9)  # ~36 s of PBX time of calls flowing
            proxy.cut()
            await wait_for(lambda: not service.centre.link_up)
            await asyncio.sleep(0.3)  # ~12 s of PBX time nobody sees
            await wait_for(lambda: service.centre.link_up)
        # Let every call end, then one last look (as after a reconnect).
        await wait_for(lambda: pbx.now > T0 + 240 and not pbx.channels, timeout=30)
        await asyncio.sleep(0.2)
        await service.drain()
    finally:
        await service.stop()
        await proxy.close()
        await server.stop()
    return service, pbx, connected_at


@pytest.mark.parametrize("cuts,seed", [(0, 1), (3, 2), (4, 3)])
async def test_link_cuts_lose_nothing_and_double_nothing(tmp_db: str, cuts: int,
                                                         seed: int) -> None:
    service, pbx, connected_at = await run(tmp_db, cuts=cuts, seed=seed)
    q = pbx.queues["hotline"]
    assert q.completed + q.abandoned > 40  # enough traffic to mean something
    mine = service.centre.observed["hotline"]
    assert (mine.completed, mine.abandoned) == (q.completed, q.abandoned)
    assert (mine.completed_in_sl, mine.abandoned_in_sl) == (q.completed_in_sl,
                                                            q.abandoned_in_sl)
    # The stored per-call records say the same (what reports are built from).
    per = service.metrics_json(0, 2**40)["queues"]["hotline"]
    assert per["completed"] == q.completed and per["abandoned"] == q.abandoned
    assert per["waiting"] == 0
    if cuts == 0:  # only calls already in the queue at the first connect are adopted
        before = sum(1 for line in pbx.queue_log
                     if "|ENTERQUEUE|" in line and float(line.split("|", 1)[0]) <= connected_at)
        assert per["estimated"] <= before
        assert round(per["servicelevel_perf"], 1) == round(q.sl_perf, 1)
    # Every agent the PBX has logged in is known, in a state the PBX agrees with.
    members = {m.name for m in q.members.values()}
    known = {a.name for a in service.centre.agents.values() if a.memberships}
    assert known == members
