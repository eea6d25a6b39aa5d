"""Work-order numbers from the per-day counter in memory (WorkOrders.create).

The counter starts from ``max(number)`` once per day; a number another writer
took meanwhile is refused by the unique constraint and the counter re-reads.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from callcenter.db import Store
from callcenter.orders.lifecycle import Actor, Caller, Role
from callcenter.orders.store import OrderEventRow, OrderRow, WorkOrders

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)
OP = Actor("op1", Role.OPERATOR, "centre")


async def create(wo: WorkOrders, at: datetime = T0) -> str:
    order, record = await wo.create(OP, caller=Caller("张三", "13812345678"), category="供水",
                                    text="停水", at=at, call_uniqueid="1.1")
    got = await wo.get(order.id)
    assert got == order and record.order_id == order.id
    return order.number


async def test_two_writers_never_share_a_number_and_leave_no_gap(store: Store) -> None:
    one = WorkOrders(store.engine, tz=TZ)
    other = WorkOrders(store.engine, tz=TZ)  # e.g. another process on the same database
    assert await create(one) == "20261123-000001"
    assert await create(other) == "20261123-000002"  # its counter starts from max()
    assert await create(one) == "20261123-000003"  # stale counter: refused, re-read
    assert await create(one) == "20261123-000004"
    assert await create(other) == "20261123-000005"
    assert await create(one, T0 + timedelta(days=1)) == "20261124-000001"


async def test_concurrent_creates_get_distinct_numbers(store: Store) -> None:
    wo = WorkOrders(store.engine, tz=TZ)
    numbers = await asyncio.gather(*(create(wo) for _ in range(20)))
    assert sorted(numbers) == [f"20261123-{i:06d}" for i in range(1, 21)]
    async with store.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(OrderRow)) == 20
        assert await conn.scalar(select(func.count()).select_from(OrderEventRow)) == 20


async def test_the_row_holds_every_column_and_the_snapshot(store: Store) -> None:
    wo = WorkOrders(store.engine, tz=TZ)
    order, _ = await wo.create(OP, caller=Caller("李四", "13900000000"), category="噪音",
                               text="夜间施工", at=T0, location="幸福路", call_uniqueid="9.9")
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(OrderRow.__table__))).one()._mapping
    assert (row["number"], row["caller"], row["caller_name"], row["category"],
            row["location"], row["call_uniqueid"], row["created_by"], row["version"]) == (
        order.number, "13900000000", "李四", "噪音", "幸福路", "9.9", "op1", 1)
    assert row["snapshot"]["id"] == order.id and row["snapshot"]["number"] == order.number
    assert row["status"] == str(order.state) and row["created_at"] == T0.timestamp()
