"""Outbound calls end to end, in the demo's wiring over real TCP: the dialer's AMI
Originate reaches the PBX simulator, the simulated citizen picks up and the
simulator runs the FastAGI ``returnvisit`` script, whose keys land on the work
order; and the after-call survey keyed on the same channel as the queue call.

Nothing here is faked between the pieces: AMI and FastAGI are real sockets.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from agent_console.orders_api import WORK_ORDERS
from callcenter.config import load
from callcenter.db import CallRow
from callcenter.demo import Demo, start_demo
from callcenter.orders.lifecycle import Actor, Caller, Role, State
from callcenter.orders.store import WorkOrders
from callcenter.pbx.traffic import CitizenModel
from ivr.dialer import OutboundSettings, SurveyRow, outbound_list, return_visit_of

OP = Actor("op1", Role.OPERATOR, "centre")


def fast_outbound(**over: Any) -> OutboundSettings:
    s = OutboundSettings(poll_s=0.1, visit_delay_s=0.0, visit_hours=(0, 24),
                         visit_retry_s=(0.3, 0.3), visit_result_timeout_s=30.0)
    for k, v in over.items():
        setattr(s, k, v)
    return s


async def demo_with(tmp_db: str, tmp_path: Path, citizen: CitizenModel, **kw: Any) -> Demo:
    settings = load()
    settings.recordings_root = tmp_path / "recordings"
    options: dict[str, Any] = {"rate": 0.0001, "speed": 10.0, "agents": 0,
                               "seed_users": True} | kw
    return await start_demo(settings, port=0, agi_port=0, db=tmp_db,
                            outbound=fast_outbound(), citizen=citizen, **options)


async def resolved_order(wo: WorkOrders, number: str) -> str:
    order, _ = await wo.create(OP, caller=Caller("李四", number), category="噪音扰民",
                               text="夜间施工噪音")
    await wo.step(order.id, "resolve_on_call", OP, answer="已告知夜间施工投诉渠道")
    return order.id


async def until(check: Any, seconds: float = 20.0) -> Any:
    for _ in range(int(seconds / 0.05)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    return await check()


async def test_a_completed_order_gets_its_return_visit_answered_by_the_citizens_keys(
        tmp_db: str, tmp_path: Path) -> None:
    citizen = CitizenModel(answer_rate=1.0, ring_min=1.0, ring_max=1.0,
                           keys={"returnvisit": ["1", "3"]}, seed=3)
    demo = await demo_with(tmp_db, tmp_path, citizen)
    try:
        wo = demo.runner.app[WORK_ORDERS]
        oid = await resolved_order(wo, "13912340001")

        async def evaluated() -> bool:
            return (await wo.get(oid)).state is State.EVALUATED

        assert await until(evaluated), (await wo.get(oid)).state
        history = await wo.history(oid)
        assert [str(r.step) for r in history][-2:] == ["start_return_visit", "evaluate"]
        start, answer = history[-2], history[-1]
        assert start.actor_id == "timers"  # the system started it by dialling
        assert answer.actor_id == "ivr" and answer.data["source"] == "citizen_keys"
        assert answer.data["resolved"] is True and answer.data["satisfaction_operator"] == 3
        call_id = answer.data["call_id"]
        assert re.fullmatch(r"\d+\.\d+", call_id)  # the return-visit channel's uniqueid
        # The IVR records the keys on the order first, then marks the dialer's row done.
        async def visit_done() -> Any:
            row = await return_visit_of(demo.service.store.engine, oid)
            return row if row is not None and row["status"] == "done" else None

        visit = await until(visit_done) or await return_visit_of(
            demo.service.store.engine, oid)
        assert visit is not None and visit["status"] == "done" and visit["attempts"] == 1
        # The supervisor sees it on the order.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(demo.url + "api/login",
                                 json={"username": "sup1", "password": "demo"}) as r:
                assert r.status == 200
            async with http.get(f"{demo.url}api/orders/{oid}") as r:
                doc = await r.json()
        assert doc["order"]["state"] == "evaluated"
        assert doc["return_visit"]["status"] == "done"
    finally:
        await demo.stop()


async def test_an_unanswered_return_visit_is_retried_then_handed_to_an_operator(
        tmp_db: str, tmp_path: Path) -> None:
    citizen = CitizenModel(answer_rate=0.0, busy_rate=0.0, no_answer_ring=2.0, seed=4)
    demo = await demo_with(tmp_db, tmp_path, citizen)
    try:
        wo = demo.runner.app[WORK_ORDERS]
        oid = await resolved_order(wo, "13912340002")
        engine = demo.service.store.engine

        async def manual() -> bool:
            row = await return_visit_of(engine, oid)
            return row is not None and row["status"] == "manual"

        assert await until(manual, 30.0), await return_visit_of(engine, oid)
        row = await return_visit_of(engine, oid)
        assert row["attempts"] == 3 and "no answer" in row["result"]
        steps = [str(r.step) for r in await wo.history(oid)]
        assert steps.count("visit_unreachable") == 3
        assert (await wo.get(oid)).state is State.RETURN_VISIT  # nobody answered for them
    finally:
        await demo.stop()


async def test_after_call_survey_is_stored_under_the_queue_calls_uniqueid(
        tmp_db: str, tmp_path: Path) -> None:
    citizen = CitizenModel(keys={"survey": ["3"] * 50}, seed=5)
    demo = await demo_with(tmp_db, tmp_path, citizen, rate=2.0, speed=20.0, agents=4,
                           seed_users=False)
    try:
        store = demo.service.store

        async def surveyed() -> list[SurveyRow]:
            async with store.sessions() as s:
                return list(await s.scalars(select(SurveyRow)))

        rows = await until(surveyed, 30.0)
        assert rows, "no caller was asked the after-call survey"
        assert {r.score for r in rows} == {3}
        async def the_call() -> CallRow | None:
            # The key can be stored before the service has applied the operator's hang-up
            # (the IVR runs on its own thread; the events come over AMI): wait for it.
            await demo.service.flush()
            async with store.sessions() as s:
                call = await s.get(CallRow, rows[0].call_uniqueid)
            return call if call is not None and call.outcome == "completed" else None
        call = await until(the_call, 30.0)
        assert call is not None, "the survey's call id is not a completed queue call's uniqueid"
    finally:
        await demo.stop()


async def test_a_callback_is_placed_when_an_operator_is_free_and_joins_the_queue(
        tmp_db: str, tmp_path: Path) -> None:
    from ivr.fastagi import CallbackRequest

    citizen = CitizenModel(answer_rate=1.0, ring_min=1.0, ring_max=1.0, seed=6)
    demo = await demo_with(tmp_db, tmp_path, citizen, agents=2, seed_users=False)
    try:
        telephony = demo.telephony
        assert telephony.dialer is not None
        centre = demo.service.centre

        async def operators_ready() -> bool:
            return any(a.state.value == "ready" for a in centre.agents.values())

        assert await until(operators_ready)
        await telephony.dialer.callback_requested(CallbackRequest(
            "1763863000.77", "13912340003", "hotline", "12345", "consult", "zh", "direct"))

        async def called_back() -> Any:
            return next((c for c in centre.calls.values()
                         if c.caller_num == "13912340003" and c.answered_at), None)

        call = await until(called_back)
        assert call is not None, "the call-back never reached an operator"
        assert call.queue == "hotline" and call.category == "consult"
        listed = await outbound_list(demo.service.store.engine, kind="callback")
        assert [(r["status"], r["attempts"]) for r in listed] == [("done", 1)]
    finally:
        await demo.stop()
