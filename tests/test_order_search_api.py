"""Finding orders (GET /api/orders with q and filters), channels on creation, and
duplicates / merging (并案) through the console's real app."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from callcenter.db import AuditRow
from callcenter.orders.search import Query, find_orders
from tests.console_fakes import Desk, Person, desk


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Desk]:
    async with desk(tmp_db) as d:
        yield d


async def create(p: Person, **body: Any) -> dict[str, Any]:
    status, doc = await p.call("POST", "/api/orders", {"text": "诉求", **body})
    assert status == 201, doc
    return doc["order"]


async def numbers(p: Person, query: str, expect: int = 200) -> list[str]:
    status, doc = await p.call("GET", "/api/orders?" + query)
    assert status == expect, doc
    return [o["number"] for o in doc["orders"]] if status == 200 else []


async def test_search_box_and_filters(rig: Desk) -> None:
    op, sup, dept = (await rig.as_user("op1"), await rig.as_user("sup1"),
                     await rig.as_user("dept1"))
    light = await create(op, caller="13811112222", caller_name="王小明", category="市政设施/路灯",
                         text="幸福小区东门路灯不亮已经三天", location="幸福小区东门")
    noise = await create(op, caller="13933334444", caller_name="李华", category="噪声",
                         text="工地夜间施工噪音扰民", urgency="urgent", channel="wechat")
    secret = await create(sup, caller="13755556666", caller_name="赵秘密", category="违法建设",
                          text="举报楼顶违章搭建", confidential=True, channel="mayor_mailbox")
    for o in (light, secret):
        status, _ = await op.call("POST", f"/api/orders/{o['id']}/steps",
                                  {"step": "dispatch", "department": "urban_management"})
        assert status == 200
    assert await numbers(op, "q=" + light["number"]) == [light["number"]]
    assert await numbers(op, "q=" + light["number"][:8]) == [
        secret["number"], noise["number"], light["number"]]  # newest first
    assert await numbers(op, "q=138-1111-2222") == [light["number"]]
    assert await numbers(op, "q=路灯") == [light["number"]]
    assert await numbers(op, "q=灯不亮") == [light["number"]]  # any substring of the text
    assert await numbers(op, "q=幸福小区") == [light["number"]]  # the place
    assert await numbers(op, "q=王小") == [light["number"]]  # the caller's name (centre)
    assert await numbers(op, "q=路灯 噪音") == []  # all words must match
    assert await numbers(op, "channel=wechat") == [noise["number"]]
    assert await numbers(op, "urgency=urgent") == [noise["number"]]
    assert await numbers(op, "state=dispatched&sort=number") == [light["number"], secret["number"]]
    assert await numbers(op, "state=accepted,dispatched&sort=-number") == [
        secret["number"], noise["number"], light["number"]]
    assert await numbers(op, "category=市政设施") == [light["number"]]  # and below
    assert await numbers(op, "confidential=1") == [secret["number"]]
    assert await numbers(op, "mine=1") == [noise["number"], light["number"]]
    assert await numbers(op, "department=urban_management&sort=created") == [
        light["number"], secret["number"]]
    today = light["accepted_at"][:10]
    assert len(await numbers(op, f"from={today}&to={today}")) == 3
    assert await numbers(op, "due=overdue") == []
    assert await numbers(op, "due=soon") == []  # handling takes working days
    due = datetime.fromisoformat(noise["handling_due"]).timestamp()
    soon, _, _ = await find_orders(rig.wo, Query(due_soon=True), now=due - 3600)
    late, _, _ = await find_orders(rig.wo, Query(overdue=True), now=due + 1)
    assert noise["number"] in {f.order.number for f in soon}
    assert noise["number"] in {f.order.number for f in late}
    assert noise["number"] not in {f.order.number for f in (await find_orders(
        rig.wo, Query(due_soon=True), now=due + 1))[0]}
    for bad in ("state=nope", "sort=password", "channel=fax", "from=2026-02-30", "due=late",
                "confidential=maybe", "q=" + "x" * 101, "department=nowhere", "per_page=0"):
        await numbers(op, bad, expect=400)
    # A department finds its own orders only, and a confidential one never by its caller.
    assert await numbers(dept, "q=路灯") == [light["number"]]
    assert await numbers(dept, "q=噪音") == []
    assert await numbers(dept, "q=13755556666") == []
    assert await numbers(dept, "q=赵秘") == []
    assert await numbers(dept, "q=违章搭建") == [secret["number"]]  # the request itself
    await numbers(dept, "department=housing", expect=403)
    # A supervisor's list masks a confidential caller (the order itself shows it, audited).
    status, doc = await sup.call("GET", "/api/orders?confidential=1")
    row = doc["orders"][0]
    assert row["caller_name"] == "赵**" and "5556666" not in str(row["caller_number"])
    assert row["channel"] == "mayor_mailbox"
    # The CSV export is the same list, redacted the same way.
    status, text = await dept.call("GET", "/api/orders?format=csv&q=违章")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["number"] for r in rows] == [secret["number"]]
    assert "赵" not in text and "13755556666" not in text


async def test_channel_is_recorded_and_checked(rig: Desk) -> None:
    sup = await rig.as_user("sup1")
    for channel in ("web", "wechat", "app", "letter", "email", "mayor_mailbox", "phone"):
        order = await create(sup, channel=channel, text=f"来自{channel}的诉求")
        assert order["channel"] == channel
        status, doc = await sup.call("GET", f"/api/orders/{order['id']}")
        assert doc["order"]["channel"] == channel
    status, _ = await sup.call("POST", "/api/orders", {"text": "x", "channel": "carrier pigeon"})
    assert status == 400


LIGHT = "光明路与建设路交叉口的路灯坏了，晚上一片漆黑"


async def test_duplicates_merge_follow_and_unmerge(rig: Desk) -> None:
    op, sup, dept = (await rig.as_user("op1"), await rig.as_user("sup1"),
                     await rig.as_user("dept1"))
    texts = [LIGHT, "光明路建设路交叉口路灯坏了，晚上一片漆黑", "光明路与建设路交叉口的路灯坏了，晚上很黑",
             "光明路与建设路交叉口路灯坏了一片漆黑"]
    orders = [await create(op, caller=f"1380000000{i}", category="市政设施/路灯",
                           location="光明路与建设路交叉口", text=t) for i, t in enumerate(texts)]
    other = await create(op, caller="13900000009", category="噪声", text="广场舞音响太吵")
    status, doc = await op.call("GET", "/api/orders/duplicates?" + "&".join((
        "caller=13800000000", "location=光明路与建设路交叉口", "category=市政设施/路灯",
        "text=" + LIGHT)))
    assert status == 200
    found = {c["number"]: c["reasons"] for c in doc["candidates"]}
    assert set(found) == {o["number"] for o in orders}
    assert found[orders[0]["number"]] == ["same_caller", "same_place", "similar_text"]
    assert other["number"] not in found
    lead, followers = orders[0], orders[1:]
    status, doc = await op.call("GET", f"/api/orders/{lead['id']}/duplicates")
    assert {c["id"] for c in doc["candidates"]} == {o["id"] for o in followers}
    ids = [o["id"] for o in followers]
    status, _ = await op.call("POST", f"/api/orders/{lead['id']}/merge",
                              {"followers": [int(i) for i in ids], "reason": "同一路灯"})
    assert status == 403  # supervisors merge
    status, doc = await sup.call("POST", f"/api/orders/{lead['id']}/merge",
                                 {"followers": [int(i) for i in ids]})
    assert status == 400  # a reason is required
    status, doc = await sup.call("POST", f"/api/orders/{lead['id']}/merge",
                                 {"followers": [int(i) for i in ids], "reason": "同一路灯，五人反映"})
    assert status == 200, doc
    assert sorted(f["id"] for f in doc["followers"]) == sorted(ids)
    status, doc = await sup.call("POST", f"/api/orders/{followers[0]['id']}/merge",
                                 {"followers": [other["id"]], "reason": "x"})
    assert status == 409  # a follower cannot lead
    assert await numbers(sup, "followers=0&category=市政设施") == [lead["number"]]
    # The lead is handled once; the followers follow it to the same reply and completion.
    await op.call("POST", f"/api/orders/{lead['id']}/steps",
                  {"step": "dispatch", "department": "urban_management"})
    await dept.call("POST", f"/api/orders/{lead['id']}/steps", {"step": "accept_handling"})
    await dept.call("POST", f"/api/orders/{lead['id']}/steps",
                    {"step": "reply", "text": "已更换灯具，恢复照明。"})
    status, doc = await dept.call("POST", f"/api/orders/{lead['id']}/steps",
                                  {"step": "complete"})
    assert status == 200 and doc["order"]["state"] == "completed"
    for f in followers:
        status, doc = await sup.call("GET", f"/api/orders/{f['id']}")
        assert doc["order"]["state"] == "completed"  # each waits for its own return visit
        assert doc["order"]["replies"][0]["text"] == "已更换灯具，恢复照明。"
        assert doc["order"]["merged_into"] == {"id": lead["id"], "number": lead["number"]}
        assert doc["order"]["caller_number"] != lead["caller_number"]
        assert {h["actor_id"] for h in doc["history"][1:]} == {f"merge:{lead['number']}"}
        assert all("并案" in (h["reason"] or "") for h in doc["history"][1:])
    status, doc = await sup.call("POST", f"/api/orders/{followers[0]['id']}/unmerge",
                                 {"reason": "误并"})
    assert status == 200 and doc["was_following"] == lead["id"]
    async with rig.service.store.sessions() as s:
        audit = list(await s.scalars(select(AuditRow).where(
            AuditRow.action.in_(["order_merged", "order_unmerged"])).order_by(AuditRow.id)))
    assert [(a.action, a.actor, a.target) for a in audit] == [
        *(("order_merged", "sup1", f["number"]) for f in followers),
        ("order_unmerged", "sup1", followers[0]["number"])]
    assert audit[0].reason == "同一路灯，五人反映"


async def test_intake_fields_are_filters_and_a_number_opens_its_order(rig: Desk) -> None:
    """Migration 0012's columns: 诉求类型, district / street, 回复方式, gender."""
    from callcenter.orders.lifecycle import Actor, Caller, Intake, Role

    actor = Actor("op1", Role.OPERATOR, rig.wo.config.directory.centre.id)
    complaint, _ = await rig.wo.create(
        actor, caller=Caller("丁", "13800001111"), category="噪声", text="夜间施工",
        intake=Intake(request_type="complaint", gender="female", district="和平区",
                      street="南市街道", reply_method="sms"))
    consult, _ = await rig.wo.create(
        actor, caller=Caller("王", "13800002222"), category="社保", text="社保卡补办",
        intake=Intake(request_type="consult", gender="male", district="河西区",
                      street="友谊路街道", reply_method="phone"))
    op = await rig.as_user("op1")
    assert await numbers(op, "request_type=complaint") == [complaint.number]
    assert await numbers(op, "request_type=consult&reply_method=phone") == [consult.number]
    assert await numbers(op, "district=和平区") == [complaint.number]
    assert await numbers(op, "district=和平区&street=友谊路街道") == []
    assert await numbers(op, "street=友谊路街道") == [consult.number]
    assert await numbers(op, "gender=female") == [complaint.number]
    assert await numbers(op, "reply_method=nonsense") == []
    await numbers(op, "district=" + "区" * 65, expect=400)
    await numbers(op, "page=600&per_page=20", expect=400)  # past MAX_OFFSET: narrow it
    status, doc = await op.call("GET", f"/api/orders/{complaint.number}")
    assert status == 200 and doc["order"]["id"] == complaint.id
    assert doc["order"]["request_type"] == "complaint"
    status, _ = await op.call("GET", "/api/orders/20991231-999999")
    assert status == 404
