"""``callcenter bench --search`` at a tiny size: the bulk load puts back every index and
full-text trigger it set aside, the index finds the loaded words, and each figure
carries the load average it was taken at."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from callcenter import bench_search
from callcenter.db import Store
from callcenter.orders import search
from callcenter.orders.search import find_orders, parse_query
from callcenter.orders.store import WorkOrders


async def test_bulk_load_restores_indexes_and_triggers_and_the_index_finds_words(
        tmp_db: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(bench_search, "SEARCH_RUNS", 3)
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
        assert result["searches"]["words: 路灯"]["runs"] == 3
    finally:
        await store.close()


async def test_each_figure_says_the_load_average() -> None:
    lines: list[str] = []
    result = await bench_search.run(300, 0, None, 7, lines.append)
    kb = result["knowledge_sqlite"]
    assert kb["articles"] == 300 and kb["mean_hits"] > 0
    assert len(kb["load_average"]) == 3
    assert any("load average" in line for line in lines)


async def test_a_page_is_the_same_whichever_plan_the_count_chose(
        tmp_db: str, monkeypatch: Any) -> None:
    """PostgreSQL picks the page's plan from the count (more than COUNT_CAP matches:
    walk the sort order's index; fewer: fetch the matches and sort them); SQLite walks
    for common words too.  With the cap lowered, the same searches take the other plan
    and must give the same pages."""
    store = Store(tmp_db)
    await store.open()
    try:
        samples, _ = await bench_search.load_orders(store, 400, 11, time.time())
        wo = WorkOrders(store.engine, tz=bench_search.TZ)
        name = samples[0]["caller_name"][:1]
        queries = [parse_query("路灯"), parse_query("暖气不热"), parse_query("光明路 幸福家园"),
                   parse_query(name), replace(parse_query("路灯"), sort="due"),
                   replace(parse_query("停水"), sort="-number"),
                   replace(parse_query("路灯"), states=["in_progress", "dispatched"])]

        async def pages(**reader: Any) -> list[list[str]]:
            out = []
            for q in queries:
                for page in (1, 2):
                    found, _, _ = await find_orders(wo, q, page=page, per_page=7, **reader)
                    out.append([f.order.number for f in found])
            return out

        for reader, least in (({}, 20), ({"department": "urban_management",
                                            "sees_identity": False}, 5)):
            few = await pages(**reader)
            monkeypatch.setattr(search, "COUNT_CAP", 3)
            monkeypatch.setattr(search, "COMMON_WORDS", 3)
            many = await pages(**reader)
            monkeypatch.undo()
            assert many == few
            assert sum(map(len, few)) > least  # the searches found orders
    finally:
        await store.close()


async def test_a_kept_database_is_reused_and_one_of_another_schema_generated_again(
        tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(bench_search, "SEARCH_RUNS", 2)
    lines: list[str] = []
    first = await bench_search.run(0, 300, None, 7, lines.append, keep=tmp_path, measure=False)
    assert first["orders_sqlite"]["reused"] is False
    assert "searches" not in first["orders_sqlite"] and any("not measured" in x for x in lines)
    kept = tmp_path / "search-orders-300-7.db"
    second = await bench_search.run(0, 300, None, 7, lines.append, keep=tmp_path)
    assert second["orders_sqlite"]["reused"] is True
    assert second["orders_sqlite"]["searches"]["words: 路灯"]["runs"] == 2
    with sqlite3.connect(kept) as conn:  # as if loaded by code of an older schema
        value = json.loads(conn.execute(f"SELECT value FROM {bench_search.META}").fetchone()[0])
        conn.execute(f"UPDATE {bench_search.META} SET value = ?",
                     (json.dumps({**value, "head": "0001"}),))
    third = await bench_search.run(0, 300, None, 7, lines.append, keep=tmp_path, measure=False)
    assert third["orders_sqlite"]["reused"] is False
    with sqlite3.connect(kept) as conn:
        assert conn.execute("SELECT count(*) FROM work_orders").fetchone()[0] == 300
