"""``callcenter bench --search`` at a tiny size: the bulk load puts back every index and
full-text trigger it set aside, the index finds the loaded words, and each figure
carries the load average it was taken at."""

from __future__ import annotations

import time

from sqlalchemy import text

from callcenter import bench_search
from callcenter.db import Store
from callcenter.orders.search import find_orders, parse_query
from callcenter.orders.store import WorkOrders


async def test_bulk_load_restores_indexes_and_triggers_and_the_index_finds_words(
        tmp_db: str) -> None:
    store = Store(tmp_db)
    await store.open()
    try:
        postgres = store.engine.dialect.name == "postgresql"
        schema = ("SELECT indexname FROM pg_indexes WHERE tablename = 'work_orders'"
                  if postgres else "SELECT name FROM sqlite_master WHERE tbl_name = "
                  "'work_orders' AND type IN ('index', 'trigger')")
        async with store.engine.connect() as conn:
            before = set((await conn.execute(text(schema))).scalars())
        samples, _ = await bench_search.load_orders(store, 500, 7, time.time())
        async with store.engine.connect() as conn:
            assert set((await conn.execute(text(schema))).scalars()) == before
            assert (await conn.execute(text("SELECT count(*) FROM work_orders"))).scalar() == 500
        assert len(samples) == 64
        wo = WorkOrders(store.engine, tz=bench_search.TZ)
        found, total, _ = await find_orders(wo, parse_query("路灯"))
        assert total > 0 and all("路灯" in f.order.category for f in found)
        found, total, _ = await find_orders(wo, parse_query("路灯"), department="water_group")
        assert all(f.order.lead_department == "water_group" for f in found)
        result = await bench_search.measure_orders(store, samples, time.time())
        assert result["searches"]["words: 路灯"]["runs"] == 30
    finally:
        await store.close()


async def test_each_figure_says_the_load_average() -> None:
    lines: list[str] = []
    result = await bench_search.run(300, 0, None, 7, lines.append)
    kb = result["knowledge_sqlite"]
    assert kb["articles"] == 300 and kb["mean_hits"] > 0
    assert len(kb["load_average"]) == 3
    assert any("load average" in line for line in lines)
