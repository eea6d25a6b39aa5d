"""WorkOrders (callcenter.orders.store): the pure core's steps, persisted.

Each test runs migrations on a fresh SQLite file; times are given explicitly
(``at=`` and ``fire_due(now)``), never slept for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy import create_engine, inspect

from agent_console.auth import Passwords
from agent_console.orders import Orders
from callcenter.db import Store, alembic_config
from callcenter.demo_orders import seed_demo_orders
from callcenter.orders.lifecycle import (
    Actor,
    Caller,
    IllegalStep,
    NotAllowed,
    Role,
    State,
    Step,
    TimerKind,
    Urgency,
)
from callcenter.orders.store import (
    OrderConflict,
    OrderNotFound,
    WorkOrders,
    order_from_json,
    order_to_json,
)

TZ = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=TZ)  # a Monday
OP = Actor("op1", Role.OPERATOR, "centre")
SUP = Actor("sup1", Role.SUPERVISOR, "centre")
URBAN = Actor("dept1", Role.DEPARTMENT, "urban_management")
HOUSING = Actor("dept2", Role.DEPARTMENT, "housing")
CHEAP = Passwords(PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def wo(store: Store, clock: Clock) -> WorkOrders:
    return WorkOrders(store.engine, tz=TZ, clock=clock)


async def new(wo: WorkOrders, at: datetime = T0, **over: object) -> str:
    fields: dict = {"caller": Caller("张三", "13812345678"), "category": "占道经营",
                    "text": "流动摊贩占道经营", "at": at} | over
    order, _ = await wo.create(OP, **fields)
    return order.id


async def test_numbers_are_date_and_sequence_per_local_day(wo: WorkOrders) -> None:
    first = await wo.get(await new(wo))
    second = await wo.get(await new(wo, T0 + timedelta(minutes=1)))
    late = await wo.get(await new(wo, datetime(2026, 11, 23, 23, 30, tzinfo=TZ)))
    next_day = await wo.get(await new(wo, datetime(2026, 11, 23, 16, 30, tzinfo=ZoneInfo("UTC"))))
    assert [first.number, second.number, late.number] == [
        "20261123-000001", "20261123-000002", "20261123-000003"]
    assert next_day.number == "20261124-000001"  # 00:30 in Shanghai


async def test_create_is_checked_by_the_core_before_anything_is_written(
        wo: WorkOrders, store: Store) -> None:
    with pytest.raises(IllegalStep):
        await wo.create(OP, caller=Caller(), category="", text="   ", at=T0)
    with pytest.raises(NotAllowed):
        await wo.create(URBAN, caller=Caller(), category="", text="x", at=T0)
    assert await wo.event_count() == 0
    assert (await wo.list())[1] == 0


async def test_snapshot_round_trips_every_field(wo: WorkOrders) -> None:
    oid = await new(wo, urgency=Urgency.URGENT, confidential=True, location="东风路")
    await wo.step(oid, "dispatch", OP, at=T0 + timedelta(minutes=5),
                  department="urban_management", co_handlers=["housing"])
    await wo.step(oid, "accept_handling", URBAN, at=T0 + timedelta(minutes=10))
    await wo.step(oid, "supervise", SUP, reason="限期", at=T0 + timedelta(minutes=11),
                  deadline=T0 + timedelta(days=1))
    await wo.step(oid, "co_reply", HOUSING, at=T0 + timedelta(minutes=12), text="配合")
    await wo.step(oid, "reply", URBAN, at=T0 + timedelta(hours=1), text="已处理")
    await wo.step(oid, "complete", URBAN, at=T0 + timedelta(hours=2))
    await wo.step(oid, "start_return_visit", SUP, at=T0 + timedelta(hours=3))
    await wo.record_citizen_keys(oid, False, 2, 1, "ivr-1", at=T0 + timedelta(hours=4))
    order = await wo.get(oid)
    assert order_from_json(order_to_json(order)) == order
    assert order.state is State.DISPATCHED and order.reopen_count == 1
    assert order.handling_due > T0 + timedelta(hours=4)  # a fresh handling period


async def test_every_successful_step_appends_exactly_one_event_and_nothing_is_deleted(
        wo: WorkOrders, store: Store) -> None:
    oid = await new(wo)
    steps = [("dispatch", OP, {"department": "urban_management"}, None),
             ("return", URBAN, {}, "不属本部门"),
             ("refuse_return", SUP, {}, "属城管职责"),
             ("reply", URBAN, {"text": "已处理"}, None),
             ("complete", URBAN, {}, None)]
    for n, (step, actor, data, reason) in enumerate(steps, start=2):
        await wo.step(oid, step, actor, reason=reason, at=T0 + timedelta(minutes=n), **data)
        assert await wo.event_count() == n
    history = await wo.history(oid)
    assert [r.seq for r in history] == [1, 2, 3, 4, 5, 6]
    assert [str(r.step) for r in history] == [
        "accept", "dispatch", "return", "refuse_return", "reply", "complete"]
    assert [(d.department, d.lead) for d in await wo.dispatches(oid)] == [
        ("urban_management", True)]


async def test_a_refused_step_changes_nothing_and_is_kept_as_an_attempt(wo: WorkOrders) -> None:
    oid = await new(wo)
    with pytest.raises(IllegalStep):
        await wo.step(oid, "complete", URBAN, at=T0 + timedelta(minutes=1))
    with pytest.raises(IllegalStep):  # not now, and not by an operator's hand either
        await wo.step(oid, "evaluate", OP, at=T0 + timedelta(minutes=2),
                      source="citizen_keys", resolved=True, satisfaction_operator=3)
    assert await wo.event_count() == 1
    assert (await wo.get(oid)).version == 1
    attempts = await wo.attempts(oid)
    assert [(a.step, a.error) for a in attempts] == [("complete", "IllegalStep"),
                                                    ("evaluate", "IllegalStep")]
    kinds = [a.kind for a in await wo.anomalies(T0 + timedelta(minutes=3))]
    assert kinds.count("staff_entered_satisfaction") == 1


async def test_unknown_orders(wo: WorkOrders) -> None:
    for bad in ("42", "abc", "-1", "0"):
        with pytest.raises(OrderNotFound):
            await wo.step(bad, "dispatch", OP, department="housing")


async def test_two_people_acting_at_once_cannot_both_succeed(wo: WorkOrders) -> None:
    oid = await new(wo)
    await wo.step(oid, "dispatch", OP, at=T0 + timedelta(minutes=1),
                  department="urban_management")
    results = await asyncio.gather(
        *(wo.step(oid, "accept_handling", URBAN, at=T0 + timedelta(minutes=2))
          for _ in range(4)), return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, OrderConflict | IllegalStep) for r in results
               if isinstance(r, BaseException))
    assert await wo.event_count() == 3


async def test_timers_fire_once_with_a_fake_now(wo: WorkOrders) -> None:
    oid = await new(wo)  # normal: first response in 30 minutes, handling in 5 working days
    assert await wo.fire_due(T0 + timedelta(minutes=29)) == []
    fired = await wo.fire_due(T0 + timedelta(minutes=31))
    assert [(r.step, r.data["timer"], r.actor_id) for r in fired] == [
        (Step.FLAG_OVERDUE, TimerKind.FIRST_RESPONSE, "timers")]
    assert await wo.fire_due(T0 + timedelta(minutes=40)) == []
    fired = await wo.fire_due(T0 + timedelta(days=8))
    assert [r.data["timer"] for r in fired] == [TimerKind.HANDLING]
    assert (await wo.get(oid)).overdue[-1][0] is TimerKind.HANDLING
    kinds = {a.evidence["deadline"] for a in await wo.anomalies(T0 + timedelta(days=8))
             if a.kind == "overdue"}
    assert kinds == {"first_response", "handling"}


async def test_citizen_keys_start_the_return_visit_and_only_count_from_the_ivr(
        wo: WorkOrders) -> None:
    oid = await new(wo)
    await wo.step(oid, "resolve_on_call", OP, at=T0 + timedelta(minutes=3), answer="已告知")
    order, record = await wo.record_citizen_keys(oid, True, 3, None, "ivr-9",
                                                 at=T0 + timedelta(days=1))
    assert order.state is State.EVALUATED and record.actor_id == "ivr"
    assert [str(r.step) for r in await wo.history(oid)][-2:] == ["start_return_visit",
                                                                 "evaluate"]
    report = await wo.report(date(2026, 11, 23), date(2026, 11, 23))
    assert report[0]["satisfaction_operator"] == {"answers": 1, "mean": 3.0,
                                                  "satisfied_share": 1.0}
    assert report[0]["resolved_on_call_rate"] == 1.0


async def test_orders_saved_from_console_drafts_are_adopted_on_their_first_step(
        wo: WorkOrders, store: Store, clock: Clock) -> None:
    drafts = Orders(store.engine, TZ, clock=clock)
    draft = await drafts.open_draft("op1", "1700.1", caller="13700000000", category="供水")
    await drafts.save_draft("op1", draft.id, {"text": "停水三天了"})
    row = await drafts.submit("op1", draft.id)
    clock.at = T0 + timedelta(minutes=5)
    order, _ = await wo.step(str(row.id), "dispatch", OP, department="water_group")
    assert order.number == row.number and order.state is State.DISPATCHED
    assert [str(r.step) for r in await wo.history(str(row.id))] == ["accept", "dispatch"]
    history = await wo.caller_history("13700000000")
    assert history["work_orders"][0]["open"] is True


async def test_caller_history_lists_open_orders_first(wo: WorkOrders) -> None:
    done = await new(wo)
    await wo.step(done, "resolve_on_call", OP, at=T0 + timedelta(minutes=1), answer="已答复")
    await wo.record_citizen_keys(done, True, 3, None, None, at=T0 + timedelta(minutes=5))
    still_open = await new(wo, T0 - timedelta(days=3))
    history = await wo.caller_history("13812345678")
    assert [(w["id"], w["open"]) for w in history["work_orders"]] == [
        (int(still_open), True), (int(done), False)]


async def test_demo_seed_has_every_state_and_every_anomaly(store: Store, clock: Clock) -> None:
    numbers = await seed_demo_orders(store, tz=TZ, clock=clock, passwords=CHEAP)
    assert len(numbers) >= 15
    assert await seed_demo_orders(store, tz=TZ, clock=clock, passwords=CHEAP) == []
    wo = WorkOrders(store.engine, tz=TZ, clock=clock)
    orders, _ = await wo.list(per_page=100)
    assert {str(o.state) for o in orders} == {str(s) for s in State}
    kinds = Counter(a.kind for a in await wo.anomalies())
    assert set(kinds) == {"ping_pong", "dispatch_cycle", "false_completion", "template_reply",
                          "overdue", "repeat_after_completion", "staff_entered_satisfaction"}
    assert await wo.department_of("dept1") == "urban_management"
    assert await wo.department_of("dept2") == "housing"
    mine, _ = await wo.list(department="urban_management", per_page=100)
    assert len(mine) >= 5


async def test_300_orders_created_and_dispatched_leave_two_events_each(wo: WorkOrders) -> None:
    """Many orders in a row (their speed is a `callcenter bench` figure, not asserted here)."""
    n = 300
    for i in range(n):
        order, _ = await wo.create(OP, caller=Caller(number=f"1390000{i:04d}"),
                                   category="供水", text=f"第{i}件", at=T0)
        await wo.step(order.id, "dispatch", OP, at=T0, department="water_group")
    assert await wo.event_count() == 2 * n


def test_migration_0003_downgrades_and_upgrades_again(sync_db: str) -> None:
    url = sync_db
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    assert "work_order_events" in inspect(create_engine(url)).get_table_names()
    command.downgrade(cfg, "0002")
    engine = create_engine(url)
    assert "work_order_events" not in inspect(engine).get_table_names()
    assert "snapshot" not in {c["name"] for c in inspect(engine).get_columns("work_orders")}
    command.upgrade(cfg, "head")
    columns = {c["name"] for c in inspect(create_engine(url)).get_columns("work_orders")}
    assert {"snapshot", "version", "lead_department", "urgency"} <= columns
