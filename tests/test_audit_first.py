"""Audit before action (agent_console.session.audited): every endpoint that changes an
agent, a call or an order writes its audit row first; when that write fails, nothing is
sent to the PBX and the answer is 503; when the action fails, the row says so; a lone
UTF-16 surrogate in a ``reason`` is refused (400) before anything happens.

The failing write is real: the ``audit`` table is renamed away under the running app.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text

from callcenter.db import AuditRow
from tests.console_fakes import serving, started_service
from tests.test_spy import OP1, Rig, spy_app


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Rig]:
    service, pbx = await started_service(tmp_db)
    app = spy_app(service)
    async with serving(service, app) as (server, people):
        r = Rig(service, pbx, server, app)
        r.people = people
        await r.settle()
        yield r


async def break_audit(rig: Rig) -> None:
    async with rig.service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit RENAME TO audit_away"))


async def mend_audit(rig: Rig) -> None:
    async with rig.service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_away RENAME TO audit"))


async def rows(rig: Rig, action: str) -> list[AuditRow]:
    async with rig.service.store.sessions() as s:
        return list(await s.scalars(select(AuditRow).where(AuditRow.action == action)
                                    .order_by(AuditRow.id)))


async def operator_on_call(rig: Rig) -> Any:
    op = await rig.as_user("op1")
    assert (await op.call("POST", "/api/agent/signin"))[0] == 200
    await rig.settle()
    rig.pbx.caller_joins("9.1", "13800000009", "李四")
    rig.pbx.ring("9.1", OP1)
    rig.pbx.answer("9.1", OP1)
    await rig.settle()
    return op


# (who, method, path, body, needs the operator on a call, audit action)
ENDPOINTS = [
    ("op1", "/api/agent/signin", {}, False, "agent_signin"),
    ("op1", "/api/agent/ready", {}, True, "agent_ready"),
    ("op1", "/api/agent/pause", {"reason": "meal"}, True, "agent_pause"),
    ("op1", "/api/agent/signout", {}, True, "agent_signout"),
    ("op1", "/api/call/hangup", {"uniqueid": "9.1"}, True, "hangup"),
    ("op1", "/api/call/transfer", {"uniqueid": "9.1", "kind": "queue", "target": "hotline"},
     True, "transfer"),
    ("sup1", "/api/supervisor/agents/agent1001/ready", {"reason": "队列积压"}, True,
     "force_ready"),
    ("sup1", "/api/supervisor/agents/agent1001/signout", {"reason": "下班"}, True,
     "force_signout"),
    ("sup1", "/api/supervise/agent1001/spy", {"mode": "listen", "reason": "质检"}, True, "spy"),
    ("sup1", "/api/supervise/spy/stop", {"reason": "结束"}, False, "spy_stop"),
]


@pytest.mark.parametrize(("who", "path", "body", "on_call", "action"), ENDPOINTS,
                         ids=[e[4] for e in ENDPOINTS])
async def test_a_failed_audit_write_sends_nothing_to_the_pbx(
        rig: Rig, who: str, path: str, body: dict[str, Any], on_call: bool,
        action: str) -> None:
    if on_call:
        await operator_on_call(rig)
    person = await rig.as_user(who)
    sent = len(rig.pbx.actions)
    await break_audit(rig)
    try:
        status, doc = await person.call("POST", path, body)
    finally:
        await mend_audit(rig)
    assert status == 503, doc
    assert "audit" in doc["error"] and doc["error_zh"]
    assert rig.pbx.actions[sent:] == []
    # and with the table back, the same request is audited before it acts
    status, doc = await person.call("POST", path, body)
    assert status < 500 or status in (502, 503), doc
    written = await rows(rig, action)
    assert len(written) == 1 and written[0].data["result"] != "pending"


@pytest.mark.parametrize("path", ["/api/supervisor/agents/agent1001/ready",
                                  "/api/supervisor/agents/agent1001/signout",
                                  "/api/supervise/agent1001/spy"])
async def test_a_lone_surrogate_in_the_reason_is_refused_before_anything(
        rig: Rig, path: str) -> None:
    await operator_on_call(rig)
    sup = await rig.as_user("sup1")
    sent = len(rig.pbx.actions)
    status, doc = await sup.call("POST", path, raw=(
        b'{"mode": "listen", "reason": "\\ud800"}'))
    assert status == 400 and "surrogate" in doc["error"], doc
    assert "代理项" in doc["error_zh"]
    assert rig.pbx.actions[sent:] == []
    assert await rows(rig, "spy") == [] and await rows(rig, "force_ready") == []


async def test_the_row_is_written_before_the_action_and_says_when_it_failed(rig: Rig) -> None:
    if rig.service.store.engine.dialect.name != "sqlite":
        pytest.skip("reads the audit table with sqlite3 while the action is being sent")
    await operator_on_call(rig)
    sup = await rig.as_user("sup1")
    seen: list[list[str]] = []
    plain = rig.pbx._queuepause

    def pause(a: dict[str, str]) -> dict[str, str]:  # what the audit log held as it was sent
        db = rig.service.store.engine.url.database
        with sqlite3.connect(str(db)) as conn:
            seen.append([r[0] for r in conn.execute("SELECT action FROM audit")])
        return plain(a)

    rig.pbx._queuepause = pause  # type: ignore[method-assign]
    assert (await sup.call("POST", "/api/supervisor/agents/agent1001/ready",
                           {"reason": "积压"}))[0] == 200
    assert seen and "force_ready" in seen[0]
    rig.pbx.refuse["QueuePause"] = "Interface not found"
    status, _ = await sup.call("POST", "/api/supervisor/agents/agent1001/ready",
                               {"reason": "再试"})
    assert status == 502
    last = (await rows(rig, "force_ready"))[-1]
    assert last.reason == "再试" and last.data["result"].startswith("the PBX refused")


async def test_an_order_step_whose_audit_record_cannot_be_written_changes_nothing(
        rig: Rig) -> None:
    """Order steps write the order and its audit record in one transaction."""
    from agent_console.orders_api import WORK_ORDERS
    from callcenter.demo_orders import seed_handlers
    from tests.console_fakes import CHEAP

    wo = rig.app[WORK_ORDERS]
    await seed_handlers(rig.service.store, wo, passwords=CHEAP)
    op = await rig.as_user("op1")
    status, body = await op.call("POST", "/api/orders", {"text": "路灯不亮"})
    assert status == 201, body
    oid = body["order"]["id"]
    async with rig.service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE work_order_events RENAME TO events_away"))
    try:
        status, body = await op.call("POST", f"/api/orders/{oid}/steps",
                                     {"step": "dispatch", "department": "urban_management"})
    finally:
        async with rig.service.store.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE events_away RENAME TO work_order_events"))
    assert status == 503 and body["error_zh"], body
    assert (await wo.get(oid)).state.value == "accepted"
    assert [str(r.step) for r in await wo.history(oid)] == ["accept"]
