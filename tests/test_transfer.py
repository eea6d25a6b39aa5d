"""The operator's transfer against the PBX's own dialplan.

A real Asterisk 22 answers ``Redirect`` to an extension its context lacks with
"Redirect successful" and then drops the caller (``sent to invalid extension but no
invalid handler: context,exten,priority=transfer,hotline,1``); the console said
``{"ok": true}``.  Now the console asks ``Command: dialplan show <target>@transfer``
first (Asterisk's answer for a missing one: ``Response: Error`` / ``Message: Command
output follows`` / ``Output: There is no existence of hotline@transfer extension``)
and a target the PBX cannot take is an error on the operator's screen, in Chinese
and English, with nothing sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from agent_console.auth import LoginThrottle
from agent_console.server import make_app
from callcenter.db import AuditRow
from callcenter.pbx.sim.admin import Dialplan
from tests.console_fakes import CHEAP, serving, started_service
from tests.test_console_api import OP1, Rig


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Rig]:
    service, pbx = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   throttle=LoginThrottle(free=3, base_s=30))
    async with serving(service, app) as (server, people):
        r = Rig(service, pbx, server, app, people)
        await r.settle()
        yield r

#: The [transfer] context the project shipped before (the recorded failure).
OLD_TRANSFER = """
[transfer]
exten => _hotline.,1,Queue(${EXTEN},t,,,3600)
 same => n,Hangup()
exten => _8XXX,1,NoOp(transfer to department line ${EXTEN})
 same => n,Dial(PJSIP/${EXTEN}@departments,60,tT)
 same => n,Hangup()
"""


async def _connected(rig: Rig, uid: str) -> object:
    op1 = await rig.as_user("op1")
    await op1.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins(uid, "13900000001", "乙")
    rig.pbx.ring(uid, OP1)
    rig.pbx.answer(uid, OP1)
    await rig.settle()
    return op1


async def test_a_target_the_dialplan_lacks_is_an_error_and_nothing_is_sent(rig: Rig) -> None:
    rig.pbx.dialplan = Dialplan.parse(OLD_TRANSFER)
    op1 = await _connected(rig, "7.1")
    status, body = await op1.call("POST", "/api/call/transfer",
                                  {"uniqueid": "7.1", "kind": "queue", "target": "hotline"})
    assert status == 409
    assert body["code"] == "transfer_target_missing"
    assert "hotline@transfer" in body["error"] and "hotline@transfer" in body["error_zh"]
    assert rig.pbx.actions[-1] == {"Action": "Command",
                                   "Command": "dialplan show hotline@transfer"}
    assert rig.pbx.count("Redirect") == 0
    async with rig.service.store.sessions() as s:
        row = (await s.scalars(select(AuditRow).where(AuditRow.action == "transfer"))).one()
    assert row.actor == "op1" and "no extension" in row.data["result"]


async def test_the_shipped_dialplan_takes_every_queue_and_department(rig: Rig) -> None:
    rig.pbx.dialplan = Dialplan.load()
    op1 = await _connected(rig, "7.2")
    status, body = await op1.call("POST", "/api/call/transfer",
                                  {"uniqueid": "7.2", "kind": "queue", "target": "hotline-en"})
    assert status == 200, body
    assert rig.pbx.actions[-2:] == [
        {"Action": "Command", "Command": "dialplan show hotline-en@transfer"},
        {"Action": "Redirect", "Channel": rig.service.centre.calls["7.2"].channel,
         "Context": "transfer", "Exten": "hotline-en", "Priority": "1"}]


async def test_departments_offered_are_the_work_order_departments(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    status, me = await op1.call("GET", "/api/me")
    assert status == 200
    config = me.get("config") or (await op1.call("GET", "/api/config"))[1]
    names = [d["name"] for d in config["departments"]]
    assert "市城市管理局" in names and "市燃气集团" in names and len(names) == 18
    # and in English for the English page (the dialog showed Chinese names there)
    english = {d["name"]: d["name_en"] for d in config["departments"]}
    assert english["市城市管理局"] == "Urban Management Bureau" and all(english.values())


async def test_fastagi_refusals_are_audited_and_shown_to_supervisors(rig: Rig) -> None:
    from callcenter.telephony import audit_refusal

    refuse = audit_refusal(rig.service)
    await refuse("token not issued by this service",
                 {"script": "returnvisit", "key": "WO-1", "uniqueid": "1.2", "peer": "10.0.0.9"})
    await refuse("address not allowed", {"peer": "203.0.113.7", "script": ""})
    sup = await rig.as_user("sup1")
    status, body = await sup.call("GET", "/api/fastagi/refusals")
    assert status == 200
    assert [(r["peer"], r["why"]) for r in body["refusals"]] == [
        ("203.0.113.7", "address not allowed"),
        ("10.0.0.9", "token not issued by this service")]
    assert body["refusals"][1]["details"]["key"] == "WO-1"
    op1 = await rig.as_user("op1")
    assert (await op1.call("GET", "/api/fastagi/refusals"))[0] == 403
