"""The work-order API (agent_console.orders_api) behind the console's real app.

A real Service (database, migrations) runs behind aiohttp's test server with the
hand-written FakePbx as its link; people sign in with their own cookie jars.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from agent_console.session import CONSOLE, STATIC
from callcenter.db import AuditRow
from callcenter.orders.lifecycle import State, Step, Urgency
from ivr.dialer import STATUSES
from tests.console_fakes import Desk, Person, desk


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Desk]:
    async with desk(tmp_db) as d:
        yield d


NEW = {"caller": "13812345678", "caller_name": "张三", "call_uniqueid": "1700000000.1",
       "category": "占道经营", "text": "菜市场门口流动摊贩占道经营，联系电话13912345678。",
       "urgency": "normal", "confidential": False}


async def create(op: Person, **over: Any) -> dict[str, Any]:
    status, body = await op.call("POST", "/api/orders", NEW | over)
    assert status == 201, body
    return body["order"]


async def step(p: Person, order_id: str, expect: int = 200, **body: Any) -> Any:
    status, doc = await p.call("POST", f"/api/orders/{order_id}/steps", body)
    assert status == expect, doc
    return doc


# --------------------------------------------------------------------------- lifecycle


async def test_full_lifecycle_from_call_to_citizen_evaluation(rig: Desk) -> None:
    op = await rig.as_user("op1")
    dept = await rig.as_user("dept1")
    sup = await rig.as_user("sup1")
    order = await create(op)
    assert order["state"] == "accepted" and order["number"].endswith("-000001")
    assert order["caller_number"] == "13812345678"  # the operator sees the full number
    oid = order["id"]
    counts = [await rig.wo.event_count()]

    async def take(p: Person, **body: Any) -> dict[str, Any]:
        doc = await step(p, oid, **body)
        counts.append(await rig.wo.event_count())
        assert counts[-1] == counts[-2] + 1  # exactly one audit row per successful step
        return doc["order"]

    assert (await take(op, step="dispatch", department="urban_management",
                       co_handlers=["housing"]))["state"] == "dispatched"
    assert (await take(dept, step="accept_handling"))["state"] == "in_progress"
    assert (await take(dept, step="reply", text="已清理占道摊贩，并安排巡查。"))["state"] == \
        "replied"
    assert (await take(dept, step="complete"))["state"] == "completed"
    assert (await take(sup, step="start_return_visit"))["state"] == "return_visit"
    done, record = await rig.wo.record_citizen_keys(oid, True, 3, 2, "ivr-77")
    assert done.state == "evaluated" and record.data["source"] == "citizen_keys"
    status, doc = await sup.call("GET", f"/api/orders/{oid}")
    assert status == 200
    steps = [h["step"] for h in doc["history"]]
    assert steps == ["accept", "dispatch", "accept_handling", "reply", "complete",
                     "start_return_visit", "evaluate"]
    assert [h["seq"] for h in doc["history"]] == list(range(1, 8))
    assert doc["order"]["evaluations"][0]["satisfaction_department"] == 2
    assert [d["department"] for d in doc["dispatches"]] == ["urban_management", "housing"]
    # The accepting record's caller identity follows the reader's role.
    status, doc = await dept.call("GET", f"/api/orders/{oid}")
    assert status == 200 and doc["history"][0]["data"]["caller_number"] == "13812345678"


async def test_operator_records_an_answer_heard_on_a_recorded_call(rig: Desk) -> None:
    op = await rig.as_user("op1")
    order = await create(op)
    await step(op, order["id"], step="resolve_on_call", answer="已告知办理流程。")
    await step(op, order["id"], step="start_return_visit")
    await step(op, order["id"], 403, step="answer", resolved=True, satisfaction_operator=3)
    doc = await step(op, order["id"], step="answer", resolved=True, satisfaction_operator=3,
                     call_id="1700000100.5")
    assert doc["order"]["state"] == "evaluated"
    assert doc["record"]["data"]["source"] == "operator_call"


async def test_staff_cannot_record_satisfaction_and_the_attempt_is_flagged(rig: Desk) -> None:
    op, dept, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                     await rig.as_user("sup1"))
    oid = (await create(op))["id"]
    await step(op, oid, step="dispatch", department="urban_management")
    await step(dept, oid, step="accept_handling")
    await step(dept, oid, step="reply", text="已处理。")
    await step(dept, oid, step="complete")
    await step(dept, oid, 409, step="evaluate", source="citizen_keys", resolved=True,
               satisfaction_department=3)  # not even in a return visit yet
    await step(sup, oid, step="start_return_visit")
    before = await rig.wo.event_count()
    # A department entering the citizen's verdict, and an operator faking key presses.
    await step(dept, oid, 403, step="evaluate", source="citizen_keys", resolved=True,
               satisfaction_department=3)
    await step(op, oid, 403, step="evaluate", source="citizen_keys", resolved=True,
               satisfaction_operator=3)
    assert await rig.wo.event_count() == before
    status, doc = await sup.call("GET", "/api/supervision/anomalies?kind=staff_entered_satisfaction")
    assert status == 200
    assert doc["counts"] == {"staff_entered_satisfaction": 3}
    assert {a["evidence"]["actor_id"] for a in doc["anomalies"]} == {"dept1", "op1"}
    assert all(a["order_ids"] == [oid] for a in doc["anomalies"])


async def test_ping_pong_is_flagged_with_its_evidence(rig: Desk) -> None:
    op, urban, housing, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                               await rig.as_user("dept2"), await rig.as_user("sup1"))
    oid = (await create(op, text="楼顶违章搭建彩钢房。"))["id"]
    await step(op, oid, step="dispatch", department="urban_management")
    await step(urban, oid, step="return", reason="小区内违建应由住建部门处理。")
    await step(sup, oid, step="accept_return", reason="改派住建局", department="housing")
    await step(housing, oid, step="return", reason="违建查处属城管职责。")
    await step(sup, oid, step="accept_return", reason="改派回城管局", department="urban_management")
    status, doc = await sup.call("GET", "/api/supervision/anomalies")
    assert status == 200
    kinds = {a["kind"]: a for a in doc["anomalies"]}
    assert kinds["ping_pong"]["order_ids"] == [oid]
    assert kinds["ping_pong"]["evidence"]["returns"] == 2
    assert [s["department"] for s in kinds["ping_pong"]["evidence"]["steps"]] == [
        "urban_management", "housing"]
    assert kinds["dispatch_cycle"]["evidence"]["lead_path"] == [
        "urban_management", "housing", "urban_management"]
    assert (await op.call("GET", "/api/supervision/anomalies"))[0] == 403


async def test_the_board_names_orders_filters_and_records_who_handled_what(rig: Desk) -> None:
    op, urban, housing, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                               await rig.as_user("dept2"), await rig.as_user("sup1"))
    created = await create(op, text="楼顶违章搭建彩钢房。")
    oid = created["id"]
    await step(op, oid, step="dispatch", department="urban_management")
    await step(urban, oid, step="return", reason="小区内违建应由住建部门处理。")
    await step(sup, oid, step="accept_return", reason="改派住建局", department="housing")
    await step(housing, oid, step="return", reason="违建查处属城管职责。")
    await step(sup, oid, step="accept_return", reason="改派回城管局", department="urban_management")
    _, doc = await sup.call("GET", "/api/supervision/anomalies")
    pong = next(a for a in doc["anomalies"] if a["kind"] == "ping_pong")
    assert pong["orders"] == [{"id": oid, "number": created["number"], "state": "dispatched",
                               "lead_department": "urban_management"}]
    assert pong["departments"] == ["housing", "urban_management"] and pong["ack"] is None
    assert len(pong["key"]) == 16
    # Filters: by kind, by department, by handled state.
    _, only = await sup.call("GET", "/api/supervision/anomalies?kind=ping_pong")
    assert [a["kind"] for a in only["anomalies"]] == ["ping_pong"]
    _, water = await sup.call("GET", "/api/supervision/anomalies?department=water_group")
    assert water["anomalies"] == []
    for bad in ("department=nowhere", "status=maybe"):
        assert (await sup.call("GET", "/api/supervision/anomalies?" + bad))[0] == 400
    # Handled, with who and when; audited; gone from the open list.
    assert (await sup.call("POST", "/api/supervision/anomalies/ack",
                           {"key": "0" * 16}))[0] == 404
    assert (await sup.call("POST", "/api/supervision/anomalies/ack", {"key": "x"}))[0] == 400
    assert (await op.call("POST", "/api/supervision/anomalies/ack",
                          {"key": pong["key"]}))[0] == 403
    status, acked = await sup.call("POST", "/api/supervision/anomalies/ack",
                                   {"key": pong["key"], "note": "已督办，限期三日"})
    assert status == 200 and acked["ack"]["by"] == "sup1"
    _, open_ = await sup.call("GET", "/api/supervision/anomalies?status=open")
    assert pong["key"] not in {a["key"] for a in open_["anomalies"]}
    _, handled = await sup.call("GET", "/api/supervision/anomalies?status=handled")
    done = next(a for a in handled["anomalies"] if a["key"] == pong["key"])
    assert (done["ack"]["by"], done["ack"]["note"]) == ("sup1", "已督办，限期三日")
    async with rig.service.store.sessions() as s:
        rows = list(await s.scalars(select(AuditRow).where(
            AuditRow.action == "anomaly_acknowledged")))
    assert [(r.actor, r.target) for r in rows] == [("sup1", pong["key"])]


async def test_a_departments_inbox_new_sent_back_supervised_and_due_soon(rig: Desk) -> None:
    op, urban, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                      await rig.as_user("sup1"))
    fresh = await create(op, text="井盖缺失。", urgency="emergency")
    await step(op, fresh["id"], step="dispatch", department="urban_management")
    back = await create(op, text="路灯不亮。")
    await step(op, back["id"], step="dispatch", department="urban_management")
    await step(urban, back["id"], step="return", reason="非本单位职责。")
    await step(sup, back["id"], step="refuse_return", reason="路灯属城管，请办理。")
    watched = await create(op, text="占道经营。")
    await step(op, watched["id"], step="dispatch", department="urban_management")
    await step(urban, watched["id"], step="accept_handling")
    deadline = (datetime.now(UTC) + timedelta(hours=6)).isoformat()
    await step(sup, watched["id"], step="supervise", reason="多次投诉，限期办理。",
               deadline=deadline)
    other = await create(op, text="物业问题。")
    await step(op, other["id"], step="dispatch", department="housing")
    status, box = await urban.call("GET", "/api/orders/inbox")
    assert status == 200 and box["department"] == "urban_management"
    assert [o["id"] for o in box["new"]] == [fresh["id"]]
    assert [o["id"] for o in box["sent_back"]] == [back["id"]]
    assert box["sent_back"][0]["sent_back"]["reason"] == "路灯属城管，请办理。"
    assert [o["id"] for o in box["supervised"]] == [watched["id"]]
    assert {o["id"] for o in box["due_soon"]} >= {fresh["id"], watched["id"]}
    assert other["id"] not in {o["id"] for v in box.values() if isinstance(v, list) for o in v}
    assert box["total"] == sum(len(box[k]) for k in ("new", "sent_back", "supervised",
                                                      "due_soon"))
    assert (await op.call("GET", "/api/orders/inbox"))[0] == 403


async def test_return_needs_a_reason_and_only_the_lead_department_may_return(rig: Desk) -> None:
    op, urban, housing = (await rig.as_user("op1"), await rig.as_user("dept1"),
                          await rig.as_user("dept2"))
    oid = (await create(op))["id"]
    await step(op, oid, step="dispatch", department="urban_management")
    await step(urban, oid, 400, step="return", reason="   ")
    await step(housing, oid, 404, step="return", reason="不是我们的")  # not theirs: unseen
    await step(urban, oid, step="return", reason="不属本部门职责")
    await step(urban, oid, 409, step="accept_handling")  # returned: not now


# --------------------------------------------------------------------------- bad input


async def test_bad_input_gets_clear_json_errors(rig: Desk) -> None:
    op = await rig.as_user("op1")
    assert (await op.call("POST", "/api/orders", NEW | {"confidential": "yes"}))[0] == 400
    assert (await op.call("POST", "/api/orders", NEW | {"text": 123}))[0] == 400
    assert (await op.call("POST", "/api/orders", NEW | {"urgency": "asap"}))[0] == 400
    assert (await op.call("POST", "/api/orders", NEW | {"text": "  "}))[0] == 400
    status, body = await op.call("POST", "/api/orders", NEW | {"text": "长" * 20_001})
    assert status == 413 and "error" in body
    status, body = await op.call("POST", "/api/orders", raw=b'{"text": "x"' + b" " * 300_000
                                 + b"}")
    assert status == 413
    assert (await op.call("POST", "/api/orders", raw=b"[1, 2]"))[0] == 400
    assert (await op.call("POST", "/api/orders", raw=b"{not json"))[0] == 400
    oid = (await create(op))["id"]
    assert (await op.call("GET", "/api/orders/999999"))[0] == 404
    assert (await op.call("GET", "/api/orders/abc"))[0] == 404
    await step(op, "999999", 404, step="dispatch", department="housing")
    await step(op, oid, 400, step="fly")
    await step(op, oid, 400, step="dispatch", department="nowhere")
    await step(op, oid, 400, step="dispatch", department="housing", co_handlers="water_group")
    await step(op, oid, 400, step="dispatch", department="housing", colour="red")
    await step(op, oid, 409, step="complete")
    status, body = await op.call("GET", "/api/orders?state=flying")
    assert status == 400 and body["error"].startswith("'state'")
    assert (await op.call("GET", "/api/orders?page=0"))[0] == 400
    assert (await op.call("GET", "/api/orders?per_page=1000"))[0] == 400
    assert (await op.call("GET", "/api/reports/orders"))[0] == 403


async def test_a_retried_create_with_an_idempotency_key_files_once(rig: Desk) -> None:
    op, sup = await rig.as_user("op1"), await rig.as_user("sup1")

    async def post(p: Person, key: str, **over: Any) -> tuple[int, Any]:
        return await p.call("POST", "/api/orders", NEW | over,
                            headers={"Idempotency-Key": key})

    status, first = await post(op, "desk3:0001")
    assert status == 201, first
    for _ in range(2):  # the answer was lost; the client sends the same request again
        status, again = await post(op, "desk3:0001")
        assert status == 200 and again["order"]["id"] == first["order"]["id"], again
    # Retries file once; the same key from another account is its own request.
    results = [await post(op, "desk3:0002") for _ in range(3)]
    assert [s for s, _ in results] == [201, 200, 200]
    status, other = await post(sup, "desk3:0001")
    assert status == 201 and other["order"]["id"] != first["order"]["id"]
    assert (await post(op, "bad key"))[0] == 400
    assert (await post(op, "x" * 81))[0] == 400
    # A refused create (bad input) leaves no claim: the same key files once fixed.
    assert (await post(op, "desk3:0003", urgency="asap"))[0] == 400
    assert (await post(op, "desk3:0003"))[0] == 201
    _, total = await rig.wo.list(per_page=50)
    assert total == 4


async def test_roles_csrf_and_sign_in_are_enforced(rig: Desk) -> None:
    op, dept, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                     await rig.as_user("sup1"))
    assert (await dept.call("POST", "/api/orders", NEW))[0] == 403  # handlers do not accept
    oid = (await create(op))["id"]
    status, body = await op.call("POST", f"/api/orders/{oid}/steps",
                                 {"step": "dispatch", "department": "housing"}, csrf=False)
    assert status == 403 and "CSRF" in body["error"]
    await step(op, oid, 403, step="supervise", reason="催办",
               deadline=(datetime.now().astimezone() + timedelta(days=1)).isoformat())
    await step(sup, oid, 400, step="supervise", reason="催办", deadline="tomorrow")
    await step(sup, oid, step="supervise", reason="催办",
               deadline=(datetime.now().astimezone() + timedelta(days=1)).isoformat())
    anonymous = Person(rig.server)
    rig.people.append(anonymous)
    assert (await anonymous.call("GET", "/api/orders"))[0] == 401
    assert (await anonymous.call("POST", "/api/orders", NEW))[0] == 401


# --------------------------------------------------------------------------- reading


async def test_departments_see_their_own_orders_and_confidential_callers_are_hidden(
        rig: Desk) -> None:
    op, urban, housing, sup = (await rig.as_user("op1"), await rig.as_user("dept1"),
                               await rig.as_user("dept2"), await rig.as_user("sup1"))
    mine = (await create(op))["id"]
    secret = (await create(op, confidential=True))["id"]
    other = (await create(op))["id"]
    await step(op, mine, step="dispatch", department="urban_management")
    await step(op, secret, step="dispatch", department="urban_management")
    await step(op, other, step="dispatch", department="housing")
    status, doc = await urban.call("GET", "/api/orders")
    assert status == 200 and {o["id"] for o in doc["orders"]} == {mine, secret}
    shown = {o["id"]: o for o in doc["orders"]}
    assert shown[mine]["caller_number"] == "13812345678"
    assert shown[secret]["caller_number"] is None and shown[secret]["caller_name"] is None
    assert "13912345678" not in shown[secret]["text"]  # numbers in the text are masked
    assert (await urban.call("GET", f"/api/orders/{other}"))[0] == 404
    assert (await urban.call("GET", "/api/orders?department=housing"))[0] == 403
    status, doc = await housing.call("GET", "/api/orders")
    assert [o["id"] for o in doc["orders"]] == [other]
    status, doc = await op.call("GET", f"/api/orders/{secret}")
    assert doc["order"]["caller_number"] == "138****5678"  # operators: masked
    assert doc["history"][0]["data"]["caller_number"] == "138****5678"
    status, doc = await sup.call("GET", f"/api/orders/{secret}")
    assert doc["order"]["caller_number"] == "13812345678"  # supervisors: full


async def test_list_pages_and_filters(rig: Desk) -> None:
    op = await rig.as_user("op1")
    ids = [(await create(op, text=f"第{i}件诉求"))["id"] for i in range(5)]
    await step(op, ids[0], step="dispatch", department="housing")
    status, doc = await op.call("GET", "/api/orders?per_page=2&page=2")
    assert status == 200 and doc["total"] == 5 and doc["page"] == 2
    assert [o["id"] for o in doc["orders"]] == [ids[2], ids[1]]  # newest first
    status, doc = await op.call("GET", "/api/orders?state=dispatched")
    assert [o["id"] for o in doc["orders"]] == [ids[0]]
    status, doc = await op.call("GET", "/api/orders?department=housing")
    assert [o["id"] for o in doc["orders"]] == [ids[0]]
    numbers = sorted(int(o["number"].split("-")[1]) for o in
                     (await op.call("GET", "/api/orders"))[1]["orders"])
    assert numbers == [1, 2, 3, 4, 5]


async def test_suggest_departments_and_directory(rig: Desk) -> None:
    op = await rig.as_user("op1")
    status, doc = await op.call("GET", "/api/departments/suggest?text=小区电梯坏了物业不管")
    assert status == 200 and doc["suggestions"][0]["id"] == "housing"
    assert "电梯" in doc["suggestions"][0]["matched"]
    status, doc = await op.call("GET", "/api/departments")
    assert status == 200 and any(d["id"] == "urban_management" for d in doc["departments"])


async def test_reports_in_json_and_csv(rig: Desk) -> None:
    op, sup, dept = (await rig.as_user("op1"), await rig.as_user("sup1"),
                     await rig.as_user("dept1"))
    a = (await create(op))["id"]
    b = (await create(op))["id"]
    await step(op, a, step="resolve_on_call", answer="已答复")
    await step(op, b, step="dispatch", department="urban_management")
    await step(dept, b, step="return", reason="不属本部门")
    today = rig.wo.now().date().isoformat()
    status, doc = await sup.call("GET", f"/api/reports/orders?from={today}&to={today}")
    assert status == 200
    [row] = doc["rows"]
    assert row["orders"] == 2 and row["resolved_on_call_rate"] == 0.5
    assert row["returns_by_department"] == {"urban_management": 1}
    assert row["satisfaction_operator"]["answers"] == 0
    status, text = await sup.call("GET", f"/api/reports/orders?from={today}&to={today}"
                                  "&format=csv&period=week")
    assert status == 200
    lines = text.strip().splitlines()
    assert lines[0].startswith("\ufeff周期,起始日,工单数") and lines[1].startswith("week,")
    assert "urban_management=1" in lines[1]
    assert (await sup.call("GET", "/api/reports/orders?from=2026-13-01"))[0] == 400
    assert (await sup.call("GET", "/api/reports/orders?format=xml"))[0] == 400


async def test_openapi_describes_the_routes(rig: Desk) -> None:
    p = Person(rig.server)
    rig.people.append(p)
    status, doc = await p.call("GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    for path in ("/api/orders", "/api/orders/{id}", "/api/orders/{id}/steps",
                 "/api/supervision/anomalies", "/api/departments/suggest",
                 "/api/reports/orders"):
        assert path in doc["paths"]
    assert "answer" in doc["paths"]["/api/orders/{id}/steps"]["post"]["requestBody"][
        "content"]["application/json"]["schema"]["properties"]["step"]["enum"]


async def test_screen_pop_history_shows_the_callers_open_orders(rig: Desk) -> None:
    op = await rig.as_user("op1")
    await create(op)
    console = rig.server.app[CONSOLE]
    assert console.caller_history == rig.wo.caller_history
    history = await console.caller_history("13812345678")
    [entry] = history["work_orders"]
    assert entry["open"] is True and entry["status"] == "accepted"


async def test_orders_page_is_served_to_handlers(rig: Desk) -> None:
    dept = await rig.as_user("dept1")
    status, text = await dept.call("GET", "/orders")
    assert status == 200 and "orders.js" in text and "<script>" not in text


def test_the_order_page_strings_exist_in_both_languages() -> None:
    js = (STATIC / "orders.js").read_text(encoding="utf-8")
    table = js[js.index("const STRINGS = {"):js.index("function tr(")]
    zh, en = table.split('"en": {')
    keys_zh = set(re.findall(r'"([a-z_0-9. ]+)":', zh))
    keys_en = set(re.findall(r'"([a-z_0-9. ]+)":', en))
    assert keys_zh == keys_en and len(keys_zh) >= 80
    html = (STATIC / "orders.html").read_text(encoding="utf-8")
    used = set(re.findall(r'\btr\("([a-z_0-9.]+)"', js)) | set(
        re.findall(r'data-o18n="([a-z_0-9.]+)"', html))
    dynamic = {k for k in used if k.endswith(".")}
    assert dynamic == {"state.", "step.", "urgency.", "kind.", "in.", "survey.", "visit.",
                       "followup.", "ev.false.", "ev.overdue.", "inbox."}
    used |= {f"ev.false.{r}" for r in ("citizen_unsolved", "completion_rejected",
                                       "no_citizen_contact")}
    used |= {f"ev.overdue.{d}" for d in ("first_response", "handling", "supervision")}
    used |= {f"inbox.{k}" for k in ("new", "sent_back", "supervised", "due_soon")}
    used |= {f"state.{s}" for s in State} | {f"step.{s}" for s in Step}
    used |= {f"urgency.{u}" for u in Urgency} | {f"in.{f}" for f in ("text", "answer")}
    used |= {f"survey.{n}" for n in ("1", "2", "3", "none")}
    used |= {f"visit.{s}" for s in (*STATUSES, "attempts")}
    used |= {f"followup.{k}" for k in ("return_visit", "callback")}
    used |= {f"visit.result.{r}" for r in ("resolved", "not resolved")}
    used |= {f"kind.{k}" for k in ("ping_pong", "dispatch_cycle", "false_completion",
                                   "template_reply", "overdue", "repeat_after_completion",
                                   "staff_entered_satisfaction")}
    assert used - dynamic <= keys_zh, used - dynamic - keys_zh


async def test_numbers_quoted_in_an_on_call_answer_are_masked_for_operators(rig: Desk) -> None:
    op, sup = await rig.as_user("op1"), await rig.as_user("sup1")
    oid = (await create(op, confidential=True))["id"]
    await step(op, oid, step="resolve_on_call", answer="请拨打13912345678联系街道。")
    status, doc = await op.call("GET", f"/api/orders/{oid}")
    assert status == 200 and "13912345678" not in json.dumps(doc, ensure_ascii=False)
    assert "139****5678" in doc["order"]["on_call_answer"]
    status, doc = await sup.call("GET", f"/api/orders/{oid}")
    assert doc["history"][-1]["data"]["answer"] == "请拨打13912345678联系街道。"
