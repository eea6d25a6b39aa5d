"""/healthz, /readyz and /metrics of a real core (Service on the PBX simulator over TCP),
and the PBX's name on the service's log lines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from callcenter.config import load
from callcenter.ops import Ops
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig
from callcenter.service import Service
from tests.test_end_to_end import wait_for

T0 = 1_795_000_000.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def core(tmp_db: str) -> AsyncIterator[tuple[Service, PbxSimServer, TestClient[Any, Any],
                                                     Ops]]:
    traffic = RandomTraffic(TrafficConfig(rate=2.0, talk_median=10.0, talk_min=3.0,
                                          patience_median=30.0), seed=5, origin=T0)
    pbx = Pbx(PbxConfig(queues=(SimQueue(),), agents=4), traffic, start_time=T0, seed=5)
    server = PbxSimServer(pbx, port=0, users={"hotline": "pw"}, speed=20.0)
    await server.start()
    settings = load(env={})
    settings.ami.name = "pbx-east"
    settings.ami.port, settings.ami.secret = server.port, "pw"
    settings.ami.ping_interval, settings.ami.backoff_max = 0.5, 0.3
    settings.database_url = tmp_db
    service = Service(settings)
    ops = Ops("core")
    ops.watch_service(service)
    ops.watch_sockets(lambda: 3)
    app = web.Application()
    ops.add_routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield service, server, client, ops
    finally:
        await client.close()
        await service.stop()
        await server.stop()


async def test_ready_only_with_the_link_up_and_metrics_carry_the_pbx(core: Any) -> None:
    service, server, client, _ = core
    r = await client.get("/readyz")
    assert r.status == 503  # not started: no link yet
    assert "pbx pbx-east" in (await r.json())["failing"]
    await service.start()
    await wait_for(lambda: service.centre.link_up)
    await wait_for(lambda: service.events_applied > 50)
    r = await client.get("/readyz")
    assert r.status == 200, await r.text()
    assert (await client.get("/healthz")).status == 200
    await asyncio.sleep(0.7)  # one flush at least
    m = samples(await (await client.get("/metrics")).text())
    pbx = (("pbx", "pbx-east"),)
    assert m[("hotline_ami_events_total", pbx)] >= 50
    assert m[("hotline_pbx_link_up", pbx)] == 1
    assert ("hotline_consumer_backlog", pbx) in m
    assert m[("hotline_db_flush_seconds_count", pbx)] >= 1
    assert m[("hotline_websockets", ())] == 3
    # The PBX goes away: not ready, and the gauge says so.
    await server.stop()
    await wait_for(lambda: not service.centre.link_up)
    r = await client.get("/readyz")
    assert r.status == 503 and "AMI link down" in (await r.json())["failing"]["pbx pbx-east"]
    m = samples(await (await client.get("/metrics")).text())
    assert m[("hotline_pbx_link_up", pbx)] == 0


async def test_health_fails_when_a_service_task_dies(core: Any) -> None:
    service, _, client, _ = core
    await service.start()
    assert (await client.get("/healthz")).status == 200
    ticker = next(t for t in service._tasks if t.get_name() == "ticker")
    ticker.cancel()  # (the consumer's death would also hang stop()'s drain)
    await asyncio.gather(ticker, return_exceptions=True)
    r = await client.get("/healthz")
    assert r.status == 503 and (await r.json())["dead"] == {"service ticker": "cancelled"}


async def test_log_lines_of_the_service_carry_the_pbx_name(core: Any) -> None:
    service, _, _, _ = core
    captured = structlog.testing.LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
    try:
        await service.start()
        await wait_for(lambda: service.centre.link_up)
        await wait_for(lambda: any(e["event"] == "PBX link up" for e in captured.entries))
    finally:
        structlog.configure(**old)
    link_lines = [e for e in captured.entries if e["event"] in ("PBX link up", "ami.link_up")]
    assert link_lines and all(e.get("pbx") == "pbx-east" for e in link_lines)
    assert "pbx" not in structlog.contextvars.get_contextvars()  # the caller's own stays clean


async def test_what_the_cores_memory_settles_at_is_on_the_metrics_page(core: Any) -> None:
    """The visits each state holds, those it has let go of, and the books' records: a
    state that keeps 3 finished visits lets go of the rest, its books seal them, and the
    page shows it (the scale-out bench reads the let-go counter for its warm-up)."""
    service, _, client, _ = core
    service.home.centre.keep_finished = 3
    await service.start()
    await wait_for(lambda: service.home.visits_let_go > 0, timeout=30.0)
    m = samples(await (await client.get("/metrics")).text())
    pbx = (("pbx", "pbx-east"),)
    held = m[("hotline_visits_held", pbx)]
    assert m[("hotline_visits_let_go_total", pbx)] >= 1
    assert held >= 3  # the kept finished ones and the live ones
    assert m[("hotline_book_records", pbx)] <= held
    figures = service.book.figures(0, 4e9)[1]
    assert figures.offered >= held + m[("hotline_visits_let_go_total", pbx)] - 1
