"""The console's HTTP API, sessions, CSRF, roles and the resumable websocket.

A real :class:`~callcenter.service.Service` (its consumer, database and metrics)
runs behind aiohttp's test server; the PBX is :class:`tests.console_fakes.FakePbx`,
which answers the console's AMI actions and sends back the events Asterisk would.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from acd.state import AgentState, Outcome
from agent_console.alerts import AGI_REFUSAL_KINDS
from agent_console.auth import LoginThrottle, Users, seed_demo_users
from agent_console.http import CSP
from agent_console.hub import RESYNC, Hub, apply_ops, diff
from agent_console.knowledge_api import KNOWLEDGE
from agent_console.models import DraftRow, WorkOrderRow
from agent_console.orders_api import WORK_ORDERS
from agent_console.server import make_app
from agent_console.session import CONSOLE, STATIC
from agent_console.users_cli import add_arguments, main_from_args
from callcenter.config import load
from callcenter.db import AuditRow
from callcenter.orders.lifecycle import order_view, redact
from callcenter.service import Service
from tests.console_fakes import (
    CHEAP,
    Desk,
    FakePbx,
    Person,
    past_call,
    rig_app,
    serving,
    started_service,
)

OP1 = "Local/1001@agents/n"
OP2 = "Local/1002@agents/n"


class Rig(Desk):
    """The console's app behind a test server, with the console's own waits."""

    async def settle(self) -> None:
        """Every event applied and the hub has pushed what changed."""
        await self.service.drain()
        self.service.subscribers[-1]([])  # wake the hub at once
        await asyncio.sleep(0.15)

    def view_agent(self, interface: str) -> Any:
        return self.service.centre.agents.get(interface)


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Rig]:
    service, pbx = await started_service(tmp_db)
    # Without the request rate limit: test_bad_input sends ~900 requests through this rig.
    app = rig_app(service, throttle=LoginThrottle(free=3, base_s=30))
    async with serving(service, app) as (server, people):
        r = Rig(service, pbx, server, app, people)
        await r.settle()
        yield r


async def receive(ws: aiohttp.ClientWebSocketResponse, kind: str | None = None,
                  timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive_json(timeout=max(0.01, deadline - time.monotonic()))
        if kind is None or msg["type"] == kind:
            return msg


async def until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- login


async def test_login_sets_a_strict_httponly_cookie_and_returns_csrf(rig: Rig) -> None:
    p = rig.person()
    async with p.http.post(p.url("/api/login"), json={"username": "op1", "password": "demo"}
                           ) as r:
        assert r.status == 200
        body = await r.json()
        cookie = r.headers["Set-Cookie"]
    assert body["role"] == "operator" and body["home"] == "/console" and len(body["csrf"]) > 30
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    p.csrf = body["csrf"]
    status, me = await p.call("GET", "/api/me")
    assert status == 200 and me["csrf"] == body["csrf"]
    assert me["user"]["member"] == "agent1001" and me["user"]["interface"] == OP1
    assert me["config"]["pause_reasons"] == ["meal", "training", "acw", "meeting", "toilet",
                                             "busy"]


async def test_wrong_password_and_unknown_user_look_the_same(rig: Rig) -> None:
    p = rig.person()
    assert await p.login("op1", "wrong") == (401, {"error": "wrong username or password",
                                                         "error_zh": "用户名或密码错误"})
    assert await p.login("nobody", "demo") == (401, {"error": "wrong username or password",
                                                         "error_zh": "用户名或密码错误"})
    assert (await p.call("GET", "/api/me"))[0] == 401


async def test_repeated_failed_logins_are_slowed_and_audited(rig: Rig) -> None:
    p = rig.person()
    for _ in range(4):  # three free failures, then each one costs a wait
        assert (await p.login("op2", "guess"))[0] == 401
    status, body = await p.login("op2", "demo")  # even the right password must wait
    assert status == 429 and body["retry_after"] >= 1 and "秒后再试" in body["error_zh"]
    assert (await p.login("op3", "demo"))[0] == 200  # other accounts on the address are not
    async with rig.service.store.sessions() as s:
        rows = list(await s.scalars(select(AuditRow).where(AuditRow.action.in_(
            ("login_failed", "login_throttled"))).order_by(AuditRow.id)))
    assert [(r.actor, r.action) for r in rows] == [("op2", "login_failed")] * 4 + [
        ("op2", "login_throttled")]
    assert rows[3].data["failures"] == 4


async def test_failed_logins_become_an_alert_supervisors_see(rig: Rig) -> None:
    sup = await rig.as_user("sup1")
    p = rig.person()
    for _ in range(4):
        assert (await p.login("op4", "guess"))[0] == 401
    rig.service.clock = lambda: time.time() + 31  # past the throttle's wait (30 s)
    assert (await p.login("op4", "guess"))[0] == 401
    status, live = await sup.call("GET", "/api/live")
    assert status == 200
    alert = live["data"]["alerts"]["login_failures:op4"]
    assert alert["detail"] == {"count": 5, "addresses": 1} and alert["severity"] == "warning"


def test_login_throttle_waits_grow_per_account_and_address_and_never_lock() -> None:
    th = LoginThrottle(free=3, window_s=900, base_s=2, max_s=60, alert_after=5)
    for t in (100, 101, 102):
        th.failed("op1", "10.0.0.1", t)
    assert th.retry_after("op1", "10.0.0.1", 102) == 0  # three free failures
    th.failed("op1", "10.0.0.1", 103)
    assert th.retry_after("op1", "10.0.0.1", 104) == 1  # 2 s after the 4th failure
    th.failed("op1", "10.0.0.1", 105)
    assert th.retry_after("op1", "10.0.0.1", 105) == 4  # then 4 s, 8 s, ...
    # an outsider hammering op1 from elsewhere slows only themselves
    for t in range(106, 200):
        th.failed("op1", "203.0.113.9", t)
    assert th.retry_after("op1", "203.0.113.9", 200) == 59  # capped at 60 s, not locked
    assert th.retry_after("op1", "10.0.0.7", 200) == 0  # op1 at another desk signs in
    # a centre floor behind one NAT address: one operator's typos slow nobody else
    assert th.retry_after("op2", "10.0.0.1", 200) == 0
    assert th.repeated(200)[0][:3] == ("op1", 99, 2)  # the supervisors' alert
    assert th.retry_after("op1", "203.0.113.9", 200 + 900) == 0  # the window forgets
    assert th.repeated(200 + 900) == []
    th.succeeded("op1", "10.0.0.1")
    assert th.retry_after("op1", "10.0.0.1", 200) == 0


def test_login_throttle_memory_is_bounded() -> None:
    th = LoginThrottle(max_keys=100)
    for n in range(1000):
        th.failed(f"name{n}", "198.51.100.1", 100 + n)
    assert len(th._by_pair) == 100
    assert th.retry_after("name999", "198.51.100.1", 1100) == 0  # the newest are kept
    assert th.failed("name999", "198.51.100.1", 1100) == 2


async def test_logout_ends_the_session(rig: Rig) -> None:
    p = await rig.as_user("sup1")
    assert (await p.call("POST", "/api/logout"))[0] == 200
    assert (await p.call("GET", "/api/metrics"))[0] == 401


async def test_demo_users_are_seeded_once(rig: Rig) -> None:
    assert await seed_demo_users(rig.service.store, passwords=CHEAP) == []
    names = [u.username for u in await Users(rig.service.store.engine, CHEAP).all()]
    assert names == ["op1", "op2", "op3", "op4", "op5", "op6", "op7", "op8", "sup1"]


# --------------------------------------------------------------------------- CSRF and roles


async def test_state_changes_need_the_csrf_token(rig: Rig) -> None:
    p = await rig.as_user("op1")
    status, body = await p.call("POST", "/api/agent/signin", csrf=False)
    assert status == 403 and "CSRF" in body["error"]
    status, _ = await p.call("POST", "/api/agent/signin", headers={"X-CSRF-Token": "x" * 43})
    assert status == 403
    assert rig.pbx.count("QueueAdd") == 0  # nothing reached the PBX
    assert (await p.call("POST", "/api/agent/signin"))[0] == 200
    assert rig.pbx.count("QueueAdd") == 2


async def test_cross_site_requests_are_refused(rig: Rig) -> None:
    p = await rig.as_user("op1")
    status, body = await p.call("POST", "/api/agent/signin",
                                headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body["error"]
    status, _ = await p.call("POST", "/api/login", {"username": "op1", "password": "demo"},
                             headers={"Origin": "http://evil.example"})
    assert status == 403


async def test_without_a_session_the_api_answers_401(rig: Rig) -> None:
    p = rig.person()
    for method, path in [("GET", "/api/metrics"), ("GET", "/api/live"), ("GET", "/api/drafts"),
                         ("POST", "/api/agent/ready"), ("POST", "/api/logout")]:
        status, body = await p.call(method, path)
        assert status == 401 and body == {"error": "sign in first", "error_zh": "请先登录"}, path


async def test_wrong_role_is_refused(rig: Rig) -> None:
    op = await rig.as_user("op1")
    sup = await rig.as_user("sup1")
    assert await op.call("GET", "/api/metrics") == (403, {"error": "your role may not do this",
                                                                "error_zh": "您的角色无权执行此操作"})
    status, _ = await op.call("POST", "/api/supervisor/agents/agent1002/ready", {"reason": "x"})
    assert status == 403
    assert (await sup.call("POST", "/api/agent/ready"))[0] == 403
    assert (await sup.call("GET", "/api/drafts"))[0] == 403


async def test_pages_send_people_to_their_own_screen(rig: Rig) -> None:
    anon, op, sup = rig.person(), await rig.as_user("op1"), await rig.as_user("sup1")
    for who, path, where in [(anon, "/console", "/login?next=/console"),
                             (anon, "/", "/login"), (op, "/", "/console"),
                             (op, "/wallboard", "/console"), (sup, "/console", "/wallboard"),
                             (op, "/login", "/console"), (sup, "/login?next=/x", "/wallboard")]:
        async with who.http.get(who.url(path), allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == where, (path, where)
    async with sup.http.get(sup.url("/wallboard")) as r:
        assert r.status == 200 and "wallboard.js" in await r.text()
    async with anon.http.get(anon.url("/login")) as r:  # a back step to it asks again
        assert r.status == 200 and "login.js" in await r.text()
        assert r.headers["Cache-Control"] == "no-store"


async def test_the_reports_list_the_queues_the_console_lists(rig: Rig) -> None:
    sup = await rig.as_user("sup1")
    status, me = await sup.call("GET", "/api/me")
    assert status == 200
    status, report = await sup.call("GET", "/api/reports/summary")
    assert status == 200
    assert report["queues_known"] == me["config"]["queues"]
    assert {"queue": "hotline-en", "title": me["config"]["queues"][1]["title"],
            "title_en": "12345 English service"} in report["queues_known"]
    home = rig.service.settings.ami.name  # a PBX is checked against Settings.pbx_names
    assert (await sup.call("GET", f"/api/reports/summary?pbx={home}"))[0] == 200
    status, body = await sup.call("GET", "/api/reports/summary?pbx=nope")
    assert (status, body["error"]) == (400, "unknown pbx")


async def test_metrics_api_is_the_replay_shape_for_the_live_state(rig: Rig) -> None:
    rig.pbx.caller_joins("1.1", "13800000001", "甲")
    rig.pbx.abandon("1.1")
    await rig.settle()
    sup = await rig.as_user("sup1")
    status, body = await sup.call("GET", "/api/metrics")
    assert status == 200
    assert body == json.loads(json.dumps(rig.service.metrics_json()))
    assert body["queues"]["hotline"]["offered"] == 1
    assert body["queues"]["hotline"]["abandoned"] == 1


# --------------------------------------------------------------------------- bad input


async def test_bad_json_is_answered_with_json_errors(rig: Rig) -> None:
    p = await rig.as_user("op1")
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'"text"', 400, "JSON object"),
        (json.dumps({"reason": 5}).encode(), 400, "'reason' must be a string"),
        (json.dumps({"reason": ""}).encode(), 400, "must not be empty"),
        (json.dumps({"reason": "x" * 41}).encode(), 400, "too long"),
        (json.dumps({"reason": "sleeping"}).encode(), 400, "unknown pause reason"),
        (b"{}", 400, "'reason' is required"),
        (b"\xff\xfe", 400, "not valid JSON"),
    ]
    for raw, status, words in cases:
        got, body = await p.call("POST", "/api/agent/pause", raw=raw)
        assert (got, words in body["error"]) == (status, True), raw
    got, body = await p.call("POST", "/api/agent/pause", raw=b"x" * 70_000)
    assert got == 413 and "too large" in body["error"]
    got, body = await p.call("POST", "/api/agent/pause", raw=b'{"reason": "meal"}',
                             headers={"Content-Type": "text/plain"})
    assert got == 400 and "application/json" in body["error"]


async def test_unknown_routes_and_ids_are_json_404(rig: Rig) -> None:
    p = await rig.as_user("op1")
    assert await p.call("GET", "/api/nothing-here") == (404, {"error": "no such API route",
                                                                     "error_zh": "未找到"})
    assert (await p.call("GET", "/api/drafts/abc"))[0] == 404
    assert (await p.call("GET", "/api/drafts/99999999999999999999999"))[0] == 404
    assert (await p.call("GET", "/api/drafts/12345"))[0] == 404
    assert (await p.call("GET", "/api/calls/nope/history"))[0] == 404
    status, body = await p.call("DELETE", "/api/drafts/1")
    assert status == 405 and body == {"error": "method not allowed", "error_zh": "不支持此方法"}


async def test_draft_text_size_is_limited(rig: Rig) -> None:
    p = await rig.as_user("op1")
    _, draft = await p.call("POST", "/api/drafts", {})
    status, body = await p.call("PUT", f"/api/drafts/{draft['id']}", {"text": "字" * 20000})
    assert status == 200 and len(body["text"]) == 20000  # escaped, that is 120 kB of JSON
    status, body = await p.call("PUT", f"/api/drafts/{draft['id']}", {"text": "a" * 20001})
    assert status == 413 and "too long" in body["error"]
    status, body = await p.call("PUT", f"/api/drafts/{draft['id']}", {"text": "a" * 300_000})
    assert status == 413 and "too large" in body["error"]
    status, body = await p.call("PUT", f"/api/drafts/{draft['id']}", {"text": ["a"]})
    assert status == 400


# --------------------------------------------------------------------------- agent actions


async def test_agent_state_moves_only_when_the_pbx_says_so(rig: Rig) -> None:
    p = await rig.as_user("op1")
    rig.pbx.silent = True  # the PBX accepts the action but its events are late
    assert await p.call("POST", "/api/agent/signin") == (200, {"ok": True,
                                                               "queues": ["hotline",
                                                                          "hotline-en"]})
    await rig.settle()
    _, live = await p.call("GET", "/api/live")
    assert live["data"]["agent"] is None  # not faked locally
    rig.pbx.release()
    await rig.settle()
    _, live = await p.call("GET", "/api/live")
    assert live["data"]["agent"]["state"] == "ready"
    assert live["data"]["agent"]["queues"] == ["hotline", "hotline-en"]
    assert [a["Action"] for a in rig.pbx.actions] == ["QueueAdd", "QueueAdd"]
    assert rig.pbx.actions[0] == {"Action": "QueueAdd", "Queue": "hotline", "Interface": OP1,
                                  "MemberName": "agent1001", "Paused": "false"}


async def test_pause_ready_and_signout_are_ami_actions(rig: Rig) -> None:
    p = await rig.as_user("op1")
    assert (await p.call("POST", "/api/agent/ready"))[0] == 409  # not signed in yet
    await p.call("POST", "/api/agent/signin")
    await rig.settle()
    assert (await p.call("POST", "/api/agent/pause", {"reason": "meal"}))[0] == 200
    await rig.settle()
    agent = rig.view_agent(OP1)
    assert (agent.state.value, agent.reason) == ("paused", "meal")
    assert rig.pbx.actions[-1] == {"Action": "QueuePause", "Interface": OP1, "Paused": "true",
                                   "Reason": "meal"}
    assert (await p.call("POST", "/api/agent/ready"))[0] == 200
    await rig.settle()
    assert rig.view_agent(OP1).state.value == "ready"
    assert (await p.call("POST", "/api/agent/signout"))[0] == 200
    await rig.settle()
    assert rig.view_agent(OP1).state.value == "logged_out"
    assert [a["Action"] for a in rig.pbx.actions[-2:]] == ["QueueRemove", "QueueRemove"]


async def test_pbx_refusals_and_a_down_link_are_reported(rig: Rig) -> None:
    p = await rig.as_user("op1")
    rig.pbx.refuse["QueueAdd"] = "Unable to add interface to queue: Not there"
    status, body = await p.call("POST", "/api/agent/signin")
    assert status == 502 and "Not there" in body["error"]
    assert body["code"] == "pbx.not_member" and body["action"] == "QueueAdd"
    # The demo's old fault: a queue the PBX does not have; the console explains it.
    rig.pbx.refuse["QueueAdd"] = "Unable to add interface to queue: No such queue"
    status, body = await p.call("POST", "/api/agent/signin")
    assert (status, body["code"]) == (502, "pbx.no_queue") and body["queue"] in ("hotline",
                                                                                 "hotline-en")
    rig.pbx.refuse["QueueAdd"] = "Something new"
    status, body = await p.call("POST", "/api/agent/signin")
    assert (body["code"], body["pbx_message"]) == ("pbx.refused", "Something new")
    rig.pbx.link_up = False
    status, body = await p.call("POST", "/api/agent/signin")
    assert status == 503 and "link is down" in body["error"] and body["code"] == "pbx.down"


def test_every_pbx_error_code_is_explained_in_both_languages() -> None:
    from agent_console.session import PBX_REFUSALS

    js = (STATIC / "i18n.js").read_text(encoding="utf-8")
    zh, en = js.split('"en": {')
    codes = {code for _, code in PBX_REFUSALS} | {"pbx.down", "pbx.timeout", "pbx.refused"}
    for code in codes:
        assert f'"apierr.{code}":' in zh and f'"apierr.{code}":' in en, code


async def test_hangup_and_transfer_act_on_the_operators_own_call(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    op2 = await rig.as_user("op2")
    await op1.call("POST", "/api/agent/signin")
    await op2.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins("5.1", "13900000001", "乙")
    rig.pbx.ring("5.1", OP1)
    rig.pbx.answer("5.1", OP1)
    await rig.settle()
    channel = rig.service.centre.calls["5.1"].channel
    assert (await op2.call("POST", "/api/call/hangup", {"uniqueid": "5.1"}))[0] == 409
    status, body = await op1.call("POST", "/api/call/transfer",
                                  {"uniqueid": "5.1", "kind": "department", "target": "9999"})
    assert status == 400 and "unknown department" in body["error"]
    status, _ = await op1.call("POST", "/api/call/transfer",
                               {"uniqueid": "5.1", "kind": "department", "target": "8102"})
    assert status == 200
    assert rig.pbx.actions[-1] == {"Action": "Redirect", "Channel": channel,
                                   "Context": "transfer", "Exten": "8102", "Priority": "1"}
    await rig.settle()
    assert rig.service.centre.calls["5.1"].outcome.value == "completed"
    rig.pbx.caller_joins("5.2", "13900000002", "丙")
    rig.pbx.ring("5.2", OP1)
    rig.pbx.answer("5.2", OP1)
    await rig.settle()
    assert (await op1.call("POST", "/api/call/hangup", {"uniqueid": "5.2"}))[0] == 200
    assert rig.pbx.actions[-1]["Action"] == "Hangup"


# --------------------------------------------------------------------------- supervisor


async def test_supervisor_actions_need_a_reason_and_are_audited(rig: Rig) -> None:
    op = await rig.as_user("op2")
    sup = await rig.as_user("sup1")
    await op.call("POST", "/api/agent/signin")
    await rig.settle()
    await op.call("POST", "/api/agent/pause", {"reason": "busy"})
    await rig.settle()
    url = "/api/supervisor/agents/agent1002/ready"
    assert (await sup.call("POST", url, {}))[0] == 400
    assert (await sup.call("POST", url, {"reason": "   "}))[0] == 400
    assert (await sup.call("POST", "/api/supervisor/agents/agent9999/ready",
                           {"reason": "x"}))[0] == 404
    assert (await sup.call("POST", url, {"reason": "3 callers waiting"}))[0] == 200
    await rig.settle()
    assert rig.view_agent(OP2).state.value == "ready"
    assert (await sup.call("POST", "/api/supervisor/agents/agent1002/signout",
                           {"reason": "end of shift"}))[0] == 200
    await rig.settle()
    assert rig.view_agent(OP2).state.value == "logged_out"
    async with rig.service.store.sessions() as s:
        rows = list(await s.scalars(select(AuditRow).where(
            AuditRow.action.in_(["force_ready", "force_signout"])).order_by(AuditRow.id)))
    assert [(r.actor, r.role, r.action, r.target, r.reason) for r in rows] == [
        ("sup1", "supervisor", "force_ready", "agent1002", "3 callers waiting"),
        ("sup1", "supervisor", "force_signout", "agent1002", "end of shift")]


# --------------------------------------------------------------------------- drafts and work orders


async def test_a_draft_files_one_order_on_a_double_click_or_after_a_crash(rig: Rig) -> None:
    from callcenter.orders.lifecycle import Caller
    from callcenter.orders.store import account_actor

    op1 = await rig.as_user("op1")
    draft_body = {"caller": "13800000011", "text": "小区路灯不亮",
                  "fields": {"request_type": "report", "category": "市政设施/路灯"}}

    async def draft() -> int:
        _, d = await op1.call("POST", "/api/drafts", {})
        assert (await op1.call("PUT", f"/api/drafts/{d['id']}", draft_body))[0] == 200
        return int(d["id"])

    # A double click: three submits at once, one order.
    first = await draft()
    results = await asyncio.gather(*(op1.call("POST", f"/api/drafts/{first}/submit")
                                     for _ in range(3)))
    ids = {body["id"] for status, body in results if status == 200}
    assert len(ids) == 1 and all(st in (200, 409) for st, _ in results), results
    # The service died after writing the order, before marking the draft (the order's
    # claim on the draft id was written with it): the retry takes that order and its step.
    second = await draft()
    wo = rig.server.app[WORK_ORDERS]
    actor = account_actor("op1", "operator", None, wo.config.directory.centre.id)
    filed, _ = await wo.create(actor, text="小区路灯不亮", category="市政设施/路灯",
                               caller=Caller(number="13800000011"),
                               once=("draft", str(second)))
    status, body = await op1.call("POST", f"/api/drafts/{second}/submit",
                                  {"outcome": "dispatch", "department": "urban_management"})
    assert status == 200 and body["id"] == filed.id, body
    assert body["order"]["state"] == "dispatched"
    async with rig.service.store.sessions() as s:
        orders = list(await s.scalars(select(WorkOrderRow)))
        marked = await s.scalar(select(DraftRow.work_order_id).where(DraftRow.id == second))
    assert len(orders) == 2 and marked == int(filed.id)


async def test_draft_on_answer_then_work_order(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    op2 = await rig.as_user("op2")
    await op1.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins("7.1", "13700000007", "丁", category="complaint", ivr_path="2-1")
    rig.pbx.ring("7.1", OP1)
    rig.pbx.answer("7.1", OP1)
    await rig.settle()
    assert (await op2.call("POST", "/api/drafts", {"call_uniqueid": "7.1"}))[0] == 404
    status, d = await op1.call("POST", "/api/drafts", {"call_uniqueid": "7.1"})
    assert status == 200
    # Prefilled from the pop: number and name; the IVR's code became a request type, not
    # a category (the form shows names; the category comes from the tree).
    assert (d["caller"], d["category"], d["call_uniqueid"], d["text"]) == (
        "13700000007", "", "7.1", "")
    assert d["fields"] == {"caller_name": "丁", "request_type": "complaint",
                           "reply_method": "phone"}
    again = await op1.call("POST", "/api/drafts", {"call_uniqueid": "7.1"})
    assert again[1]["id"] == d["id"]  # one draft per call
    status, body = await op1.call("POST", f"/api/drafts/{d['id']}/submit")
    assert status == 400 and set(body["missing"]) == {"text", "category"}
    for bad in ({"gender": "x"}, {"request_type": "nonsense"}, {"confidential": "yes"},
                {"address": "a" * 201}, {"district": "东城区\x00"}, ["not", "an", "object"]):
        status, body = await op1.call("PUT", f"/api/drafts/{d['id']}", {"fields": bad})
        assert status == 400, bad
    status, saved = await op1.call("PUT", f"/api/drafts/{d['id']}", {
        "text": "路灯不亮 <script>alert(1)</script>",
        "fields": {"category": "市政设施/路灯", "district": "东城区", "street": "幸福路街道",
                   "address": "幸福路12号门口", "gender": "female", "urgency": "urgent",
                   "callback": "13900000009", "unknown_key": "ignored"}})
    assert status == 200 and saved["version"] == 2
    assert saved["fields"]["caller_name"] == "丁" and "unknown_key" not in saved["fields"]
    assert (await op2.call("GET", f"/api/drafts/{d['id']}"))[0] == 404
    assert (await op2.call("PUT", f"/api/drafts/{d['id']}", {"text": "x"}))[0] == 404
    _, mine = await op1.call("GET", "/api/drafts")
    assert [x["id"] for x in mine["drafts"]] == [d["id"]]
    assert (await op2.call("GET", "/api/drafts"))[1] == {"drafts": []}
    # 直接答复 needs the answer given; then the order is closed on the call.
    status, body = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {"outcome": "answer"})
    assert status == 400 and body["missing"] == ["answer"]
    assert (await op1.call("POST", f"/api/drafts/{d['id']}/submit",
                           {"outcome": "telepathy"}))[0] == 400
    status, done = await op1.call("POST", f"/api/drafts/{d['id']}/submit",
                                  {"outcome": "answer", "answer": "已告知报修电话并登记。"})
    assert status == 200, done
    day = datetime.now(rig.service.settings.tz).strftime("%Y%m%d")
    order = done["order"]
    assert done["number"] == order["number"] == f"{day}-000001"
    assert (order["state"], order["category"], order["caller_name"], order["caller_number"],
            order["caller_callback"], order["request_type"], order["caller_gender"],
            order["location"], order["urgency"], order["on_call_answer"]) == (
        "resolved_on_call", "市政设施/路灯", "丁", "13700000007", "13900000009", "complaint",
        "female", "东城区幸福路街道幸福路12号门口", "urgent", "已告知报修电话并登记。")
    again = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {"outcome": "accept"})
    assert again[1]["id"] == done["id"]  # submitted once; a retry returns the same order
    assert (await op1.call("PUT", f"/api/drafts/{d['id']}", {"text": "late"}))[0] == 409
    # Dispatch at intake, confidential: the department never sees who called.
    _, second = await op1.call("POST", "/api/drafts", {})
    await op1.call("PUT", f"/api/drafts/{second['id']}", {
        "caller": "13800000008", "text": "举报小区内违章搭建",
        "fields": {"request_type": "report", "category": "违章搭建", "confidential": True,
                   "callback": "13900000010", "reply_method": "sms"}})
    status, body = await op1.call("POST", f"/api/drafts/{second['id']}/submit",
                                  {"outcome": "dispatch", "department": "nowhere"})
    assert status == 400 and body["missing"] == ["department"]
    status, sent = await op1.call("POST", f"/api/drafts/{second['id']}/submit",
                                  {"outcome": "dispatch", "department": "urban_management"})
    assert status == 200 and sent["number"] == f"{day}-000002"
    assert (sent["order"]["state"], sent["order"]["lead_department"]) == (
        "dispatched", "urban_management")
    async with rig.service.store.sessions() as s:
        orders = list(await s.scalars(select(WorkOrderRow).order_by(WorkOrderRow.id)))
        drafts = list(await s.scalars(select(DraftRow)))
    assert [o.text for o in orders] == ["路灯不亮 <script>alert(1)</script>", "举报小区内违章搭建"]
    assert [o.status for o in orders] == ["resolved_on_call", "dispatched"]
    assert {d.status for d in drafts} == {"submitted"}
    # the centre is one unit (the rule of /api/orders/{id}, agent_console.permissions)
    assert (await op2.call("GET", f"/api/work-orders/{done['id']}"))[0] == 200
    assert (await op1.call("GET", f"/api/work-orders/{done['id']}"))[0] == 200
    wo = rig.server.app[WORK_ORDERS]
    confidential = await wo.get(sent["id"])
    as_department = redact(order_view(confidential), "department")
    assert (as_department["caller_number"], as_department["caller_callback"]) == (None, None)
    assert redact(order_view(confidential), "supervisor")["caller_callback"] == "13900000010"
    # The operator's lookup by number, and the pop's open orders with state and deadline.
    status, found = await op1.call("GET", "/api/callers?number=13700000007")
    assert status == 200 and [w["number"] for w in found["work_orders"]] == [done["number"]]
    assert found["work_orders"][0]["status"] == "resolved_on_call"
    assert found["work_orders"][0]["handling_due"] > 0
    for bad in ("", "abc", "1" * 41, "1;DROP"):
        assert (await op1.call("GET", "/api/callers?number=" + bad))[0] == 400
    status, lists = await op1.call("GET", "/api/intake-form")
    assert status == 200 and [t["name"] for t in lists["request_types"]] == [
        "咨询", "求助", "投诉", "举报", "建议", "表扬", "其他"]
    lamps = [leaf for top in lists["categories"] for mid in top["children"]
             for leaf in mid["children"] if leaf["label"] == "市政设施/路灯"]
    assert lamps and lamps[0]["departments"][0]["id"] == "urban_management"


async def test_an_answer_on_the_call_from_a_knowledge_base_article(rig: Rig) -> None:
    kb = rig.server.app[KNOWLEDGE]
    article = await kb.create({"title": "社保卡丢失补办", "body": "可到就近社保网点或通过官方App补办。",
                               "category": "社会保险"}, "sup1")
    op1 = await rig.as_user("op1")
    _, d = await op1.call("POST", "/api/drafts", {})
    await op1.call("PUT", f"/api/drafts/{d['id']}", {
        "caller": "13700000011", "text": "社保卡丢了怎么补办",
        "fields": {"request_type": "consult", "category": "社会保险"}})
    for bad in (0, "1", True, article.id + 1000):
        status, _ = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {
            "outcome": "answer", "answer": "x", "article_id": bad})
        assert status == 400, bad
    status, _body = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {
        "outcome": "dispatch", "department": "human_resources", "article_id": article.id})
    assert status == 400  # an article goes with an answer, not a dispatch
    status, done = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {
        "outcome": "answer", "answer": "可到就近社保网点补办。", "article_id": article.id})
    assert status == 200, done
    assert (done["order"]["state"], done["order"]["article_id"]) == (
        "resolved_on_call", str(article.id))
    assert await kb.uses_of_order(int(done["id"])) == [article.id]


def test_a_call_back_number_is_one_that_can_be_dialled() -> None:
    """回复号码: digits, a leading +, separators and 转 before an extension are taken as
    typed (full-width ones from a Chinese IME made plain); letters never; and an order
    needs 5 to 20 digits before any extension."""
    from agent_console.intake import (
        IntakeConfig,
        IntakeError,
        callback_complete,
        clean_fields,
        problems_for_submit,
    )
    from callcenter.orders.store import OrderConfig

    config = IntakeConfig.load(OrderConfig.load().directory)
    for typed in ("1", "138", "+86 138-0000-1234", "(010) 1234 5678转12", "010-1234转"):
        assert clean_fields(config, {"callback": typed}) == {"callback": typed}
    assert clean_fields(config, {"callback": "１３８００００１２３４"}) == {
        "callback": "13800001234"}
    assert clean_fields(config, {"callback": "138—0000—1234"}) == {"callback": "138-0000-1234"}
    assert clean_fields(config, {"callback": "010-12345678 转 123"}) == {
        "callback": "010-12345678 转 123"}
    with pytest.raises(IntakeError, match="longer than 40"):  # measured once made plain
        clean_fields(config, {"callback": "⑳" * 25})
    for bad in ("138abc", "13800001234 ext 5", "+86+138", "1;DROP", "转123转4"):
        with pytest.raises(IntakeError) as refused:
            clean_fields(config, {"callback": bad})
        assert "回复号码" in refused.value.zh
    for number, good in (("13800001234", True), ("010-12345678转123", True),
                         ("12345", True), ("1234", False), ("1" * 21, False),
                         ("转12345", False), ("", False)):
        assert callback_complete(number) is good, number
    base = {"request_type": "consult", "category": "其他"}
    assert problems_for_submit(base | {"callback": "138"}, "问", "13700000007") == ["callback"]
    assert problems_for_submit(base | {"callback": "13800001234"}, "问", "") == []
    assert problems_for_submit(base, "问", "13700000007") == []


async def test_a_draft_refuses_letters_in_the_call_back_number(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    _, d = await op1.call("POST", "/api/drafts", {})
    status, body = await op1.call("PUT", f"/api/drafts/{d['id']}",
                                  {"fields": {"callback": "138 call me"}})
    assert status == 400 and "'callback'" in body["error"] and "回复号码" in body["error_zh"]
    assert body["code"] == "intake.callback"  # the page's own words, in its language
    await op1.call("PUT", f"/api/drafts/{d['id']}", {
        "caller": "13700000007", "text": "咨询",
        "fields": {"request_type": "consult", "category": "其他", "callback": "138"}})
    status, body = await op1.call("POST", f"/api/drafts/{d['id']}/submit", {})
    assert status == 400 and body["missing"] == ["callback"]


def test_the_shipped_intake_configuration_is_consistent() -> None:
    from agent_console.intake import IntakeConfig
    from callcenter.orders.store import OrderConfig

    directory = OrderConfig.load().directory
    config = IntakeConfig.load(directory)
    assert len(config.leaves) >= 40 and all(leaf.departments for leaf in config.leaves.values())
    assert config.leaves["市政设施/道路破损"].departments == ("urban_management", "transport")
    assert set(config.districts) >= {"东城区", "高新区"}
    # English names for the English UI: every node, district and street has one.
    assert config.leaves["市政设施/路灯"].label_en == "Municipal facilities/Street lights"
    public = config.public(directory)
    assert all(d["name_en"] != d["name"] and len(d["streets_en"]) == len(d["streets"])
               and not set(d["streets_en"]) & set(d["streets"]) for d in public["districts"])
    assert all(leaf.label_en != leaf.label for leaf in config.leaves.values())
    # name_en is optional: the Chinese stands in; a street may be a bare name.
    plain = IntakeConfig.from_mapping({
        "category": [{"name": "城市管理", "children": [{"name": "路灯", "name_en": "Lights"},
                                                      {"name": "井盖"}]}],
        "district": [{"name": "东城区", "streets": ["东华街道", {"name": "幸福路街道",
                                                               "name_en": "Xingfu Rd"}]}]},
        directory).public(directory)
    assert [n["label_en"] for n in plain["categories"][0]["children"]] == ["Lights", "井盖"]
    assert plain["districts"] == [{"name": "东城区", "name_en": "东城区",
                                   "streets": ["东华街道", "幸福路街道"],
                                   "streets_en": ["东华街道", "Xingfu Rd"]}]
    with pytest.raises(ValueError):
        IntakeConfig.from_mapping({"category": [{"name": "x", "children": [
            {"name": "y", "departments": ["no_such_bureau"]}]}]}, directory)


async def test_caller_history_for_the_screen_pop(rig: Rig) -> None:
    earlier = time.time() - 86400
    await rig.service.store.save_calls([past_call("old.1", "13600000006", earlier, name="戊",
                                                  hold=5, talk=60, wrap_s=0.0)])
    op1 = await rig.as_user("op1")
    op2 = await rig.as_user("op2")
    await op1.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins("8.1", "13600000006", "戊")
    rig.pbx.ring("8.1", OP1)
    await rig.settle()
    status, h = await op1.call("GET", "/api/calls/8.1/history")
    assert status == 200 and h["caller"] == "13600000006"
    assert [c["uniqueid"] for c in h["calls"]] == ["old.1"]
    assert h["work_orders"] == []
    assert (await op2.call("GET", "/api/calls/8.1/history"))[0] == 404


async def test_caller_history_hook_can_be_replaced(tmp_db: str) -> None:
    settings = load(env={})
    settings.database_url = tmp_db
    service = Service(settings)
    service.link = FakePbx(service)  # type: ignore[assignment]

    async def history(caller: str) -> dict[str, list[dict[str, Any]]]:
        return {"calls": [], "work_orders": [{"number": "X-" + caller}]}

    app = make_app(service, passwords=CHEAP, caller_history=history)
    assert app[CONSOLE].caller_history is history


# --------------------------------------------------------------------------- websocket


async def test_websocket_needs_a_session(rig: Rig) -> None:
    p = rig.person()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await p.ws()
    assert err.value.status == 401


async def test_websocket_answers_bad_messages_and_keeps_going(rig: Rig) -> None:
    p = await rig.as_user("op1")
    ws = await p.ws()
    assert (await receive(ws))["type"] == "snapshot"
    await ws.send_str("not json {")
    assert await receive(ws) == {"type": "error", "error": "message is not JSON"}
    await ws.send_json({"type": "make-coffee"})
    assert await receive(ws) == {"type": "error", "error": "unknown message type"}
    await ws.send_json([1, 2, 3])
    assert (await receive(ws))["type"] == "error"
    await ws.send_bytes(b"\x00\x01")
    assert await receive(ws) == {"type": "error", "error": "binary messages are not accepted"}
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    await ws.send_json({"type": "resync"})
    assert (await receive(ws))["type"] == "snapshot"
    await ws.close()


async def test_operator_sees_only_their_own_agent_and_call(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    op2 = await rig.as_user("op2")
    await op1.call("POST", "/api/agent/signin")
    await op2.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins("9.1", "13500000009", "己")
    rig.pbx.ring("9.1", OP2)
    await rig.settle()
    ws1, ws2 = await op1.ws(), await op2.ws()
    doc1, doc2 = (await receive(ws1, "snapshot"))["data"], (await receive(ws2, "snapshot"))["data"]
    assert doc1["agent"]["name"] == "agent1001" and doc1["call"] is None
    assert doc2["agent"]["state"] == "ringing"
    assert doc2["call"]["caller_num"] == "13500000009"  # the full number, for the pop
    assert "13500000009" not in json.dumps(doc1, ensure_ascii=False)
    assert "agents" not in doc1
    sup = await rig.as_user("sup1")
    ws3 = await sup.ws()
    wall = (await receive(ws3, "snapshot"))["data"]
    assert set(wall["agents"]) == {"agent1001", "agent1002"}
    assert wall["queues"]["hotline"]["callers"][0]["caller"] == "*******0009"
    for ws in (ws1, ws2, ws3):
        await ws.close()


async def test_websocket_resume_after_a_dropped_connection(rig: Rig) -> None:
    op = await rig.as_user("op1")
    other_tab = await rig.as_user("op1")
    await op.call("POST", "/api/agent/signin")
    await rig.settle()
    ws = await op.ws()
    first = await receive(ws, "snapshot")
    doc, stream, seq = first["data"], first["stream"], first["seq"]
    keeper = await other_tab.ws()  # keeps the stream moving while the first one is away
    await receive(keeper, "snapshot")
    rig.pbx.caller_joins("3.1", "13300000003", "庚", hotline="12345", ivr_path="1")
    rig.pbx.ring("3.1", OP1)
    await rig.settle()
    update = await receive(ws, "update")
    assert update["stream"] == stream and update["seq"] == seq + 1
    apply_ops(doc, update["ops"])
    seq = update["seq"]
    assert doc["agent"]["state"] == "ringing" and doc["call"]["uniqueid"] == "3.1"
    await ws.close()  # the network drops; the call goes on meanwhile
    rig.pbx.answer("3.1", OP1)
    await rig.settle()
    rig.pbx.complete("3.1")
    await rig.settle()

    ws = await op.ws(f"?stream={stream}&seq={seq}")
    missed = []
    while True:  # the updates it missed, in order, and no snapshot
        msg = await receive(ws)
        assert msg["type"] == "update"
        missed.append(msg["seq"])
        apply_ops(doc, msg["ops"])
        if doc["agent"]["state"] != "on_call" and doc["call"] is None:
            break
    assert missed == list(range(seq + 1, seq + 1 + len(missed))) and len(missed) >= 2
    fresh = await op.ws()
    assert (await receive(fresh, "snapshot"))["data"] == doc
    # A number it cannot have, or a stream from before a restart: a fresh snapshot.
    for query in (f"?stream={stream}&seq={missed[-1] + 50}", f"?stream=other.1&seq={seq}",
                  "?stream=x&seq=notanumber"):
        again = await op.ws(query)
        assert (await receive(again))["type"] == "snapshot", query
        await again.close()
    for w in (ws, keeper, fresh):
        await w.close()


async def test_resume_while_nobody_watched_gets_the_change_as_the_next_update(rig: Rig) -> None:
    op = await rig.as_user("op1")
    await op.call("POST", "/api/agent/signin")
    await rig.settle()
    ws = await op.ws()
    first = await receive(ws, "snapshot")
    await ws.close()
    await rig.settle()
    await op.call("POST", "/api/agent/pause", {"reason": "training"})
    await rig.settle()
    ws = await op.ws(f"?stream={first['stream']}&seq={first['seq']}")
    msg = await receive(ws)
    while msg["type"] == "shared":  # the queue figures as they are now (not numbered)
        msg = await receive(ws)
    assert msg["type"] == "update" and msg["seq"] == first["seq"] + 1
    doc = apply_ops(first["data"], msg["ops"])
    assert (doc["agent"]["state"], doc["agent"]["reason"]) == ("paused", "training")
    await ws.close()


async def test_the_wallboard_stream_carries_alerts(rig: Rig) -> None:
    sup = await rig.as_user("sup1")
    ws = await sup.ws()
    doc = (await receive(ws, "snapshot"))["data"]
    assert doc["alerts"] == {}
    rig.pbx.caller_joins("4.1", "13400000004", "辛", at=time.time() - 130)
    await rig.settle()
    update = await receive(ws, "update")
    doc = apply_ops(doc, update["ops"])
    assert doc["alerts"]["longest_wait:hotline"]["severity"] == "critical"
    await ws.close()


async def test_an_agents_alert_comes_and_goes_with_their_tile(rig: Rig) -> None:
    """The wallboard looks for agent alerts only among the tiles that may hold one
    (Console keeps them as tiles are rebuilt): three rings not answered bring
    ``ring_no_answer`` for that agent, and an answered call takes it away."""
    op1 = await rig.as_user("op1")
    await op1.call("POST", "/api/agent/signin")
    await rig.settle()
    sup = await rig.as_user("sup1")
    ws = await sup.ws()
    doc = (await receive(ws, "snapshot"))["data"]

    async def alerts_until(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        nonlocal doc
        while not pred(doc["alerts"]):
            doc = apply_ops(doc, (await receive(ws, "update", timeout=5))["ops"])
        return doc["alerts"]

    for n in range(3):
        rig.pbx.caller_joins(f"9.{n}", "13900000009", "壬")
        rig.pbx.ring(f"9.{n}", OP1)
        rig.pbx.ring_no_answer(f"9.{n}", OP1)
    await rig.settle()
    got = await alerts_until(lambda a: any(k.startswith("ring_no_answer:") for k in a))
    (key,) = [k for k in got if k.startswith("ring_no_answer:")]
    assert got[key]["detail"]["count"] == 3
    rig.pbx.ring("9.2", OP1)
    rig.pbx.answer("9.2", OP1)
    await rig.settle()
    await alerts_until(lambda a: key not in a)
    await ws.close()


# --------------------------------------------------------------------------- the hub alone


def test_diff_and_apply_round_trip() -> None:
    old = {"agents": {"a": {"state": "ready"}, "b": {"state": "paused"}}, "link": {"up": True},
           "call": None, "gone": 1}
    new = {"agents": {"a": {"state": "ringing"}, "c": {"state": "ready"}}, "link": {"up": True},
           "call": {"uniqueid": "1"}}
    ops = diff(old, new)
    assert ["del", ["gone"]] in ops and ["del", ["agents", "b"]] in ops
    assert ["set", ["agents", "a"], {"state": "ringing"}] in ops
    assert not any(op[1] == ["link"] for op in ops)
    assert apply_ops(json.loads(json.dumps(old)), ops) == new
    assert diff(new, new) == []


async def test_a_slow_client_is_resynced_and_never_holds_up_the_others() -> None:
    hub = Hub(clock=lambda: 1000.0, max_queue=4)
    state = {"n": 0}
    fast = hub.attach("wall", lambda now: {"n": state["n"]})
    slow = hub.attach("wall", lambda now: {"n": state["n"]})
    seen: list[int] = []

    def read(client: Any) -> list[dict[str, Any]]:
        out = []
        while not client.queue.empty():
            text = hub.next_message(client, client.queue.get_nowait())
            if text is not None:
                out.append(json.loads(text))
        return out

    assert [m["type"] for m in read(fast)] == ["snapshot"]
    for n in range(1, 21):
        state["n"] = n
        assert hub.refresh() == 1  # synchronous: never waits for any socket
        seen += [m["seq"] for m in read(fast)]
    assert seen == list(range(1, 21))  # the reader got every update, in order
    assert slow.queue.qsize() <= 4 and slow.resyncs >= 1
    got = read(slow)
    assert got[0]["type"] == "snapshot" and got[0]["seq"] == 20 and got[0]["data"] == {"n": 20}
    assert [m for m in got[1:] if m["type"] == "update"] == []  # older updates are skipped


def test_missed_updates_come_from_the_buffer_or_not_at_all() -> None:
    hub = Hub(clock=lambda: 1.0, max_queue=64)
    state = {"n": 0}
    c = hub.attach("s", lambda now: {"n": state["n"]})
    stream = c.stream
    for n in range(1, 301):
        state["n"] = n
        hub.refresh()
        while not c.queue.empty():
            c.queue.get_nowait()
    assert stream.seq == 300 and stream.updates[0][0] == 45  # 256 kept
    assert [n for n, _ in stream.missed(stream.id, 290) or []] == list(range(291, 301))
    assert stream.missed(stream.id, 300) == []
    assert stream.missed(stream.id, 10) is None  # gone: a snapshot instead
    assert stream.missed("other", 290) is None
    late = hub.attach("s", lambda now: {}, stream.id, 200)
    assert late.queue.get_nowait() is RESYNC  # 100 missed is more than its queue holds


# --------------------------------------------------------------------------- headers and pages


async def test_strict_security_headers_everywhere(rig: Rig) -> None:
    p = rig.person()
    for path in ("/login", "/static/console.js", "/api/me"):
        async with p.http.get(p.url(path)) as r:
            assert r.headers["Content-Security-Policy"] == CSP, path
            assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
    async with p.http.get(p.url("/api/me")) as r:
        assert r.headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_or_handlers() -> None:
    for page in STATIC.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag, (page.name, tag)
        assert all(not body.strip() for body in re.findall(
            r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL)), page.name
        assert re.search(r"\son[a-z]+\s*=", html) is None, page.name
        assert "style=" not in html, page.name
    for script in STATIC.glob("*.js"):
        js = script.read_text(encoding="utf-8")
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js, script.name
        assert "eval(" not in js and "document.write" not in js, script.name


def test_every_ui_string_exists_in_both_languages() -> None:
    js = (STATIC / "i18n.js").read_text(encoding="utf-8")
    zh, en = js.split('"en": {')
    keys_zh = set(re.findall(r'^\s+"([a-z_0-9.]+)":', zh, re.MULTILINE))
    keys_en = set(re.findall(r'^\s+"([a-z_0-9.]+)":', en, re.MULTILINE))
    # "x_one": English's form of "x" for a count of one (i18n.js t); Chinese has none
    singular = {k for k in keys_en if k.endswith("_one")}
    assert {k.removesuffix("_one") for k in singular} <= keys_en - singular
    assert keys_zh == keys_en - singular and len(keys_zh) > 100
    used: set[str] = set()
    for f in STATIC.glob("*.*"):
        if f.name != "i18n.js":
            text = f.read_text(encoding="utf-8")
            used |= set(re.findall(r'data-i18n(?:-\w+)?="([a-z_0-9.]+)"', text))
            used |= set(re.findall(r'\bt\("([a-z_0-9.]+)"', text))
    # t("state." + state), t("draft.submitted_" + outcome) and the like
    dynamic = {p for p in used if p.endswith((".", "_"))}
    # states and reasons go through i18n.js; the intake form's few closed lists here
    assert dynamic == {"outcome.", "alert.", "urgency.", "outcome_pick.", "missing.",
                       "agi.why.", "draft.submitted_"}
    used |= {f"state.{s.value}" for s in AgentState} | {f"outcome.{o.value}" for o in Outcome}
    used |= {f"urgency.{u}" for u in ("normal", "urgent", "emergency")}
    used |= {f"{p}{o}" for p in ("outcome_pick.", "draft.submitted_")
             for o in ("accept", "answer", "dispatch")}
    used |= {f"missing.{m}" for m in ("text", "request_type", "category", "callback", "answer",
                                      "department")}
    used |= {f"ostate.{s}" for s in ("accepted", "dispatched", "in_progress", "replied",
                                     "completed", "return_visit", "evaluated",
                                     "resolved_on_call", "returned")}
    used |= {f"alert.{kind}" for kind in ("link_down", "longest_wait", "paused_while_waiting",
                                          "paused_share", "ring_no_answer", "pbx_restarted",
                                          "fastagi_refused")}
    used |= {f"agi.why.{kind}" for _, kind, _ in AGI_REFUSAL_KINDS}
    used |= {f"reason.{r}" for r in load(env={}).pause_reasons}
    assert used - dynamic <= keys_zh, used - dynamic - keys_zh


def test_the_console_page_has_no_chinese_outside_the_dictionary() -> None:
    """Every Chinese word the console shows comes from i18n.js (so English is English): in
    console.html only inside an element marked data-i18n, in console.js only in comments."""
    cjk = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
    html = (STATIC / "console.html").read_text(encoding="utf-8")
    html = re.sub(r"<title>.*?</title>", "", html)  # console.js sets it per language
    bare = re.sub(r"<(\w+)[^>]*\bdata-i18n(?:-\w+)?=[^>]*>[^<]*</\1>", "", html)
    assert not cjk.findall(bare), [line for line in bare.splitlines() if cjk.search(line)]
    js = (STATIC / "console.js").read_text(encoding="utf-8")
    code = re.sub(r"(^|\s)//.*$", "", js, flags=re.MULTILINE)
    assert not cjk.findall(code), [line for line in code.splitlines() if cjk.search(line)]


# --------------------------------------------------------------------------- users CLI


def test_users_command_line(tmp_db: str, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    url = tmp_db
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)
    parser = argparse.ArgumentParser(prog="callcenter users")
    add_arguments(parser)

    def run(*argv: str, stdin: str = "") -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return main_from_args(parser.parse_args(argv))

    assert run("add", "op12", "--role", "operator", "--password-stdin", stdin="s3cret!\n") == 0
    assert "agent1012" in capsys.readouterr().out
    assert run("add", "op12", "--role", "operator", "--password-stdin", stdin="x1234\n") == 2
    assert "already exists" in capsys.readouterr().err
    assert run("add", "alice", "--role", "operator", "--password-stdin", stdin="abcd\n") == 2
    assert "--member" in capsys.readouterr().err
    assert run("add", "bob", "--role", "handler", "--password-stdin", stdin="ab\n") == 2
    assert run("add", "alice", "--role", "operator", "--member", "agent2001",
               "--interface", "PJSIP/2001", "--queues", "hotline", "--password-stdin",
               stdin="abcd\n") == 0
    assert run("set", "op12", "--interface", "Local/2012@agents/n", "--member",
               "agent2012") == 0
    assert run("passwd", "op12", "--password-stdin", stdin="n3w-pass\n") == 0
    assert run("add", "sam", "--role", "supervisor") == 2  # no terminal to ask
    capsys.readouterr()
    assert run("list") == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "PJSIP/2001" in listing and "queues hotline" in listing
    assert "Local/2012@agents/n" in listing

    async def check() -> tuple[bool, bool, bool]:
        from callcenter.db import Store
        store = Store(url)
        try:
            users = Users(store.engine)
            new_ok = await users.authenticate("op12", "n3w-pass") is not None
            old_ok = await users.authenticate("op12", "s3cret!") is not None
            return new_ok, old_ok, (await users.get("op12")).password_hash.startswith(
                "$argon2id$")
        finally:
            await store.close()

    assert asyncio.run(check()) == (True, False, True)
    assert run("disable", "op12") == 0
    assert asyncio.run(check())[0] is False  # a disabled account cannot sign in
    assert run("enable", "op12") == 0
    assert asyncio.run(check())[0] is True
    assert run("disable", "nobody") == 2


async def test_an_operator_hears_the_recordings_of_their_own_calls_only(rig: Rig) -> None:
    from agent_console.session import RECORDINGS
    from recordings.store import path_for, write_wav

    earlier = int(time.time() - 86400)
    mine, theirs = f"{earlier}.11", f"{earlier + 60}.12"
    store = rig.server.app[RECORDINGS]
    rows = []
    for uid, agent, interface in ((mine, "agent1001", "Local/1001@agents/n"),
                                  (theirs, "agent1003", "Local/1003@agents/n")):
        write_wav(store.root / path_for(uid), 0.2, 440)
        store.add(uid, path_for(uid))
        rows.append({
            "uniqueid": uid, "queue": "hotline", "joined_at": float(uid.split(".")[0]),
            "caller_num": "13600000007", "caller_name": "己", "hotline": "12345",
            "category": "general", "ivr_path": "", "outcome": "completed", "left_at": None,
            "answered_at": None, "hold_time": 5, "agent": agent, "interface": interface,
            "ended_at": None, "talk_time": 30, "wrap_s": 0.0, "rings": 1,
            "ring_no_answer": 0, "estimated": False})
    await rig.service.store.save_calls(rows)
    op1 = await rig.as_user("op1")
    await op1.call("POST", "/api/agent/signin")
    await rig.settle()
    rig.pbx.caller_joins("9.1", "13600000007", "己")
    rig.pbx.ring("9.1", OP1)
    await rig.settle()
    status, h = await op1.call("GET", "/api/calls/9.1/history")
    assert status == 200
    offered = {c["uniqueid"]: c.get("recording") for c in h["calls"]}
    assert offered == {mine: f"/api/recordings/{mine}", theirs: None}

    async def play(person: Person, uid: str) -> int:
        async with person.http.get(person.url(f"/api/recordings/{uid}")) as r:
            body = await r.read()
            assert r.status != 200 or body[:4] == b"RIFF"
            return r.status

    assert await play(op1, mine) == 200
    assert await play(op1, theirs) == 403
    assert await play(await rig.as_user("sup1"), theirs) == 200


def test_every_ivr_category_code_is_named_from_the_one_configured_list() -> None:
    """The pop and history name a CATEGORY from config/ivr.toml's [categories] (issue 13):
    every code the dialplan, the hotlines, the menus and the demo's traffic set is there, with
    a Chinese and an English name, and the browser has no second list of its own."""
    from callcenter.pbx.traffic import CATEGORIES
    from ivr.menus import category_labels
    from ivr.menus import load_config as load_ivr_config

    ivr = load_ivr_config()
    labels = category_labels(ivr)
    dialplan = (STATIC.parents[1] / "config" / "asterisk" / "extensions.conf").read_text(
        encoding="utf-8")
    codes = {h.category for h in ivr.hotlines.values()} | {c for c, _ in CATEGORIES}
    codes |= {o.category for m in ivr.menus.values() for o in m.options.values() if o.category}
    codes |= set(re.findall(r"__CATEGORY=(\w+)", dialplan))
    assert len(codes) >= 9 and codes <= set(labels), codes - set(labels)
    for code in codes:
        zh, en = labels[code]["zh"], labels[code]["en"]
        assert re.fullmatch(r"[\u4e00-\u9fff]+", zh) and re.fullmatch(r"[A-Z][a-z ]+", en), code
    assert (labels["consult"], labels["social_security"]) == (
        {"zh": "咨询", "en": "Consultation"}, {"zh": "人社", "en": "Social security"})
    assert '"cat.' not in (STATIC / "i18n.js").read_text(encoding="utf-8")


async def test_the_intake_form_serves_the_ivr_category_names(rig: Rig) -> None:
    op1 = await rig.as_user("op1")
    status, body = await op1.call("GET", "/api/intake-form")
    assert status == 200
    assert body["ivr_categories"]["complaint"] == {"zh": "投诉", "en": "Complaint"}
    assert "general" not in body["ivr_categories"]  # unknown: the pop shows the code itself
