"""Reports from per-day summaries and order facts (callcenter/report_days.py,
callcenter/orders/facts.py) equal reports from the raw records, figure for figure:
on a generated month with calls across midnight, fractional wrap-ups, a call completed
after its day was summarised, calls a restart settled late, orders with receipts on
both sides of a window's edge, and an order stepped through the real order store."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from acd import reports as rp
from agent_console.report_data import ReportConfig, build_report, tables
from callcenter import report_days
from callcenter.bench import order_rows, synthetic_month
from callcenter.config import load
from callcenter.db import AgentStateRow, ReportDayRow, Store
from callcenter.orders import facts
from callcenter.orders.lifecycle import Actor, Caller, Role
from callcenter.orders.store import OrderEventRow, OrderRow, WorkOrders

OP = Actor("op1", Role.OPERATOR, "centre")
SUP = Actor("sup1", Role.SUPERVISOR, "centre")
HOUSING = Actor("dept2", Role.DEPARTMENT, "housing")


def call_row(uid: str, joined: float, outcome: str, *, wait: int = 8, talk: int = 0,
             agent: str = "agent1001", estimated: bool = False) -> dict[str, Any]:
    answered = outcome in ("answered", "completed")
    return {"uniqueid": uid, "queue": "hotline", "joined_at": joined, "caller_num": "",
            "caller_name": "", "hotline": "12345", "category": "", "ivr_path": "direct",
            "outcome": outcome, "left_at": joined + wait,
            "answered_at": joined + wait if answered else None, "hold_time": wait,
            "agent": agent if answered else "", "interface": "",
            "ended_at": joined + wait + talk if outcome == "completed" else None,
            "talk_time": talk if outcome == "completed" else None, "wrap_s": 2.75,
            "rings": 1, "ring_no_answer": 0, "estimated": estimated}


async def test_month_week_and_day_from_summaries_equal_them_from_raw_records(
        store: Store) -> None:
    settings = load()
    tz, engine = settings.tz, store.engine
    first = date(2026, 11, 1)
    start, end = rp.window(first, "month", tz)
    now = datetime(2026, 11, 20, 10, 30, tzinfo=tz).timestamp()  # the 20th still running
    rows, states, events = synthetic_month(start.timestamp(), end.timestamp(), calls=1500,
                                           orders=300, agents=8, seed=3, tz=tz, now=now,
                                           order_id_from=100_000)
    for i, r in enumerate(rows):  # the live writer's wrap-ups are not whole seconds
        r["wrap_s"] += (i % 7) / 3
    midnight = datetime(2026, 11, 6, tzinfo=tz).timestamp()
    across = call_row("across", midnight - 10, "answered", wait=22)  # answered at 00:00:12
    rows.append(across)
    await store.save_calls(rows)
    made = order_rows(events, 3)
    async with engine.begin() as conn:
        await conn.execute(insert(AgentStateRow), states)
        await conn.execute(insert(OrderEventRow), events)
        await conn.execute(insert(OrderRow), made)
        await facts.refresh(conn, [o["id"] for o in made])
    # One order through the real store: it keeps its own facts at every step.
    wo = WorkOrders(engine, tz=tz, clock=lambda: now)
    t = datetime(2026, 11, 12, 23, 0, tzinfo=tz)
    order, _ = await wo.create(OP, caller=Caller("张三", "13812345678"), category="物业",
                               text="电梯故障", at=t, channel="wechat")
    await wo.step(order.id, "dispatch", OP, at=t + timedelta(minutes=5), department="housing")
    await wo.step(order.id, "redispatch", OP, at=t + timedelta(hours=2), reason="派错",
                  department="urban_management")  # the next day: receipts on both sides
    async with engine.connect() as conn:
        stored = (await conn.execute(select(facts.FACTS).where(
            facts.FACTS.c.order_id == int(order.id)))).all()
    assert {r.department for r in stored} == {"housing", "urban_management"}
    assert {r.channel for r in stored} == {"wechat"}

    assert await report_days.build_due(engine, settings, now, limit=100) > 19
    async with engine.connect() as conn:
        november = (await conn.execute(select(func.count()).select_from(ReportDayRow).where(
            ReportDayRow.day_start >= start.timestamp(),
            ReportDayRow.day_start < now))).scalar_one()
    assert november == 2 * 19  # 1st-19th: calls and agents; the 20th is read raw

    async def both(period: str, day: date, **kw: Any) -> dict[str, Any]:
        got = [await build_report(engine, settings, ReportConfig(), period=period, day=day,
                                  now=now, summaries=s, **kw) for s in (True, False)]
        assert got[0] == got[1], (period, day)
        return got[0]

    month = await both("month", first)
    assert month["calls"]["overall"]["offered"] == len(rows)
    assert sum(a["calls_taken"] for a in month["agents"]) == month["calls"]["overall"]["answered"]
    channels = {r["channel"] for r in month["department_channels"]}
    assert {"phone", "wechat"} <= channels
    for d in month["departments"]:  # the channels add up to the department
        assert d["received"] == sum(r["received"] for r in month["department_channels"]
                                    if r["department"] == d["department"])
    await both("week", date(2026, 11, 12))
    await both("day", date(2026, 11, 13))  # the order's second receipt
    await both("day", date(2026, 11, 20))
    await both("month", first, queue="hotline", department="housing")
    assert {tb.key for tb in tables(month)} >= {"departments", "department_channels"}

    # Late records: the call across midnight completes, and a restart settles a call of
    # the 7th from Asterisk's counters.  The days they touch lose their summaries in
    # the same write; the reports stay equal, and count them.
    across |= {"outcome": "completed", "ended_at": midnight + 300, "talk_time": 288}
    settled = call_row("settled", midnight + 86400 + 3600, "abandoned", wait=40,
                       estimated=True)
    await store.save_calls([across, settled])
    async with engine.connect() as conn:
        left = {float(a) for (a,) in await conn.execute(select(ReportDayRow.day_start))}
    assert {midnight - 86400, midnight, midnight + 86400} & left == set()
    again = await both("month", first)
    assert again["calls"]["overall"]["offered"] == len(rows) + 1
    assert again["calls"]["overall"]["completed"] == month["calls"]["overall"]["completed"] + 1
    assert await report_days.build_due(engine, settings, now, limit=100) == 3
    assert await both("month", first) == again


async def test_the_services_writer_stores_closed_days_and_waits_after_start(tmp_db: str) -> None:
    """After a flush the writer stores the newest closed day without a summary, one per
    flush; at start-up it waits a minute; with every day stored it looks again later."""
    from callcenter.service import Service

    settings = load()
    settings.database_url = tmp_db
    tz = settings.tz
    clock = [datetime(2026, 11, 20, 10, 0, tzinfo=tz).timestamp()]
    service = Service(settings, clock=lambda: clock[0])
    await service.store.open()
    try:
        yesterday = datetime(2026, 11, 19, 9, 0, tzinfo=tz).timestamp()
        await service.store.save_calls([call_row("y1", yesterday, "completed", talk=60)])
        service._summaries_due = clock[0] + 60  # as start() leaves it
        await service.summarise()

        async def days() -> list[float]:
            async with service.store.engine.connect() as conn:
                return sorted({float(a) for (a,) in await conn.execute(
                    select(ReportDayRow.day_start))})

        assert await days() == []
        clock[0] += 61
        await service.summarise()
        assert await days() == [datetime(2026, 11, 19, tzinfo=tz).timestamp()]  # newest
        await service.summarise()
        assert len(await days()) == 2
        report = await build_report(service.store.engine, settings, ReportConfig(),
                                    period="day", day=date(2026, 11, 19), now=clock[0],
                                    sections=("calls",))
        assert report["calls"]["overall"]["completed"] == 1
    finally:
        await service.store.close()



async def test_the_month_benchs_bulk_write_is_the_month_and_is_kept_for_measuring_again(
        tmp_db: str) -> None:
    """``callcenter bench --month-report`` writes its month with COPY / one prepared
    INSERT, indexes dropped and built again: the rows are all there, the indexes are
    back, the report from the summaries equals the one from the raw records; a second
    run on the kept database writes nothing and stores only missing day summaries."""
    from sqlalchemy import inspect

    from callcenter.bench import MONTH_TABLES, START_TIME, month_report, prepare_month

    async def indexes() -> set[str]:
        async with store.engine.connect() as conn:
            return await conn.run_sync(lambda s: {
                ix["name"] for t in MONTH_TABLES for ix in inspect(s).get_indexes(t)})

    store = Store(tmp_db)
    await store.open()
    before = await indexes()
    wrote = await prepare_month(tmp_db, 3000, 300, 5, agents=6)
    assert not wrote["reused"] and wrote["days_summarised"] >= 29  # the 30th is running
    assert await indexes() == before
    async with store.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(OrderEventRow))
                 ).scalar_one()
    assert count == wrote["order_events"] > 300
    async with store.engine.begin() as conn:  # as an upgrade that drops stored days would
        await conn.execute(ReportDayRow.__table__.delete().where(
            ReportDayRow.section == "calls", ReportDayRow.day_start < START_TIME))
    await store.close()
    again = await prepare_month(tmp_db, 3000, 300, 5, agents=6)
    assert again["reused"] and again["days_summarised"] >= 19  # 1-17 Nov, 30-31 Oct
    got = await month_report(tmp_db, 3000, 300, 5)
    assert got["calls"] == 3000 and got["raw_equals_summaries"] is True
    assert got["order_events"] == wrote["order_events"]


async def test_a_home_pbx_row_stored_before_0013_shares_its_atom_with_the_named_ones(
        store: Store) -> None:
    """Rows naming no PBX (stored before migration 0013) and rows naming the home PBX
    are one PBX's calls: the grouped query gives one atom for them, as atoms_of does,
    and so does a stored day."""
    settings = load()
    home = settings.ami.name
    at = datetime(2026, 11, 3, 10, 0, tzinfo=settings.tz).timestamp()
    old, new = call_row("old", at, "completed", talk=60), call_row("new", at + 5, "abandoned")
    await store.save_calls([old | {"pbx": ""}, new | {"pbx": home}])
    atoms = await report_days.load_call_atoms(store.engine, settings, at - 900, at + 900)
    assert [(a.slice, a.queue, a.pbx) for a in atoms] == [(int(at // 900), "hotline", home)]
    rows = await store.calls_between(at - 900, at + 900)
    (expected,) = rp.atoms_of(rows, at - 900, at + 900, settings.servicelevel_for,
                              settings.short_abandon_s, home=home)
    assert atoms[0].figures.offered == expected.figures.offered == 2
    assert atoms[0].abandons == expected.abandons
    day = rp.window(date(2026, 11, 3), "day", settings.tz)
    await report_days.build_day(store.engine, settings, day[0].timestamp(),
                                day[1].timestamp(), day[1].timestamp() + 1)
    async with store.engine.connect() as conn:
        (stored,) = (await conn.execute(select(ReportDayRow).where(
            ReportDayRow.section == "calls"))).all()
    assert len(stored.data) == 1
