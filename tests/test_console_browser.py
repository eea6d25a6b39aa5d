"""End to end in headless Chromium: the operator console and the supervisor wallboard.

The real service, database and web app run on a loopback port; the PBX side is
:class:`tests.console_fakes.FakePbx`, which feeds the service Asterisk's event
headers (as in ../shared/ami-traces) and answers the console's AMI actions.

Screenshots go to ``$HOTLINE_SCREENSHOTS`` when set (``docs/screenshots`` holds
the committed ones), else to the test's temporary folder.  The time from an
``AgentCalled`` event entering the service to the screen pop is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from sqlalchemy import select

from agent_console.auth import seed_demo_users
from agent_console.knowledge_api import KNOWLEDGE
from agent_console.models import DraftRow, WorkOrderRow
from agent_console.server import make_app
from agent_console.session import CONSOLE
from callcenter.config import load
from callcenter.db import AuditRow
from callcenter.service import Service
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import CHEAP, FakePbx, past_call, served, started_service

HOSTILE = "<img src=x onerror=window.__pwned=1>"

pytestmark = BROWSER_MARKS


class Site:
    def __init__(self, service: Service, pbx: FakePbx, url: str, app: web.Application) -> None:
        self.service, self.pbx, self.url, self.app = service, pbx, url, app

    async def rows(self, model: Any) -> list[Any]:
        async with self.service.store.sessions() as s:
            return list(await s.scalars(select(model)))


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[Site]:
    service, pbx = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    async with served(service, app) as url:
        yield Site(service, pbx, url, app)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("HOTLINE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


async def open_page(browser: Any, site: Site, user: str, width: int, height: int,
                    timezone_id: str | None = None) -> tuple[Any, list[str]]:
    """A signed-in page; the list collects console errors and page errors (CSP included)."""
    page, problems = await sign_in(browser, site.url, user, width=width, height=height,
                                   timezone_id=timezone_id)
    await page.wait_for_url("**/" + ("wallboard" if user.startswith("sup") else "console"))
    return page, problems


async def text_is(page: Any, selector: str, text: str, timeout: float = 3000) -> None:
    await page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.textContent.trim() === t; }",
        arg=[selector, text], timeout=timeout)


OP1 = "Local/1001@agents/n"


async def test_operator_takes_a_call_from_ring_to_work_order(
        site: Site, browser: Any, shots: Path) -> None:
    earlier = time.time() - 3 * 86400
    await site.service.store.save_calls([past_call("old.7", "13812345678", earlier, name="王五")])
    article = await site.app[KNOWLEDGE].create(
        {"title": "路灯不亮怎么报修", "category": "市政设施/路灯",
         "body": "路灯不亮可拨打城管热线报修，或在政务App“随手拍”上报，一般48小时内修复。"},
        "sup1")
    page, problems = await open_page(browser, site, "op1", 1440, 900)
    await text_is(page, "#state-label", "未签入")

    # Sign in, pause with a reason (F3, then 1), ready again (F2): each an AMI action.
    await page.click("#btn-signin")
    await text_is(page, "#state-label", "空闲")
    await page.keyboard.press("F3")
    await page.wait_for_selector("#pause-menu:not([hidden])")
    await page.keyboard.press("1")
    await text_is(page, "#state-label", "示忙")
    await text_is(page, "#state-reason", "用餐")
    await page.keyboard.press("F2")
    await text_is(page, "#state-label", "空闲")
    assert [a["Action"] for a in site.pbx.actions] == [
        "QueueAdd", "QueueAdd", "QueuePause", "QueuePause"]

    # Ring: the screen pop appears at once.  Measured over a few rings.
    latencies = []
    for n in range(4):
        uid = f"1795000000.{n}"
        site.pbx.caller_joins(uid, "13812345678", HOSTILE, hotline="12345", ivr_path="1-2",
                              category="complaint")
        await site.service.drain()
        entered = time.time()
        site.pbx.ring(uid, OP1)
        await page.wait_for_selector(f"#pop[data-uniqueid='{uid}']:not([hidden])")
        shown = int(await page.get_attribute("#pop", "data-shown-at"))
        latencies.append(shown / 1000 - entered)
        if n < 3:
            site.pbx.ring_no_answer(uid, OP1)
            await text_is(page, "#state-label", "空闲")
    print(f"\nring-to-pop latency: median {statistics.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} rings")
    # The latency is a bench figure (callcenter bench), printed here, not asserted: a
    # loaded machine made this test flaky.  That the pop comes for each ring is asserted.
    # The callers waiting show in the queue list: figures the page takes from the
    # hub's shared message (one for every screen), merged into its view (common.js).
    await page.wait_for_selector("#queues li.busy")
    assert "人排队" in await page.inner_text("#queues li.busy")

    await text_is(page, "#pop-status", "来电振铃")
    await text_is(page, "#pop-caller", "13812345678")
    await text_is(page, "#pop-name", HOSTILE)  # shown as text, never as markup
    await text_is(page, "#pop-hotline", "12345")
    await text_is(page, "#pop-ivr", "菜单按键 1 › 2")  # names, never codes
    await text_is(page, "#pop-category", "投诉")
    await page.wait_for_selector("#history li")
    assert "王五" not in await page.inner_text("#history")  # only what the API gives
    assert "已完成" in await page.inner_text("#history")
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("#pop img").count() == 0

    # Answer: a draft opens prefilled with the caller's number and name and the type.
    site.pbx.answer(uid, OP1)
    await text_is(page, "#state-label", "通话中")
    await page.wait_for_selector("#draft-form:not([hidden])")
    assert await page.input_value("#draft-caller") == "13812345678"
    assert await page.input_value("#draft-caller-name") == HOSTILE
    assert await page.input_value("#draft-request-type") == "complaint"
    await text_is(page, "#draft-call", f"通话 {uid}")
    await page.keyboard.press("F4")
    assert await page.evaluate("document.activeElement.id") == "draft-text"
    text = "小区路灯三天不亮 <script>window.__pwned=2</script>"
    await page.keyboard.type(text)
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('已自动保存')")
    drafts = await site.rows(DraftRow)
    assert [(d.call_uniqueid, d.text) for d in drafts] == [(uid, text)]
    if shots:
        await page.screenshot(path=str(shots / "console-zh-CN.png"))

    # A reload keeps the draft (from the server) ...
    await page.reload()
    await page.wait_for_selector("#draft-form:not([hidden])")
    assert await page.input_value("#draft-text") == text
    # ... and text typed just before a reload is not lost either (kept in the browser).
    await page.focus("#draft-text")
    await page.keyboard.press("End")
    await page.keyboard.type("，已多次反映")
    await page.reload()
    await page.wait_for_selector("#draft-form:not([hidden])")
    assert await page.input_value("#draft-text") == text + "，已多次反映"
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('已自动保存')")
    assert [d.text for d in await site.rows(DraftRow)] == [text + "，已多次反映"]

    # A network blip: the server drops the socket; the page resumes and misses nothing.
    for ws in list(site.app[CONSOLE].sockets):
        await ws.close()
    site.pbx.complete(uid)
    await text_is(page, "#state-label", "话后整理")
    await page.wait_for_selector("#wrap:not([hidden])")
    assert "话后整理剩余" in await page.inner_text("#wrap")

    # Ctrl+S only saves the draft: nothing half-typed becomes an order.
    await page.keyboard.press("Control+s")
    await page.wait_for_function(
        "() => document.querySelector('#draft-message').textContent.startsWith('草稿已保存')")
    assert await site.rows(WorkOrderRow) == []
    # Submitting is Ctrl+Enter, with a confirmation that says what is still missing.
    await page.keyboard.press("Control+Enter")
    await page.wait_for_selector("#submit-dialog[open]")
    assert "事项分类" in await page.inner_text("#submit-missing")
    assert await page.is_disabled("#submit-go")
    await page.click("#submit-cancel")
    # The structured fields: the category tree (with its usual department), the address.
    await page.select_option("#draft-cat-1", "城市管理")
    await page.select_option("#draft-cat-2", "市政设施")
    await page.select_option("#draft-cat-3", "路灯")
    assert "市城市管理局" in await page.inner_text("#draft-cat-hint")
    await page.fill("#draft-district", "东城区")
    await page.fill("#draft-street", "幸福路街道")
    await page.fill("#draft-address", "幸福路12号")
    await page.select_option("#draft-gender", "male")
    # 直接答复 from the knowledge base: search as you type, the article fills the answer.
    await page.check("#outcome-answer")
    await page.fill("#kb-query", "路灯 报修")
    await page.locator("#kb-results button", has_text="路灯不亮怎么报修").click()
    await page.wait_for_function(
        "() => document.querySelector('#draft-answer').value.includes('城管热线')")
    assert "路灯不亮怎么报修" in await page.inner_text("#kb-chosen")
    await page.keyboard.press("Control+Enter")
    await page.wait_for_selector("#submit-dialog[open]")
    summary = await page.inner_text("#submit-summary")
    for words in ("市政设施/路灯", "东城区幸福路街道幸福路12号", "直接答复", "投诉", "男",
                  "城管热线", "依据知识库：路灯不亮怎么报修"):
        assert words in summary, words
    assert await page.inner_text("#submit-missing") == ""
    if shots:
        await page.screenshot(path=str(shots / "console-submit-zh-CN.png"))
    await page.click("#submit-go")
    await page.wait_for_selector("#draft-message[data-number]")
    number = await page.get_attribute("#draft-message", "data-number")
    orders = await site.rows(WorkOrderRow)
    assert [(o.number, o.caller, o.call_uniqueid, o.category, o.text, o.created_by, o.status)
            for o in orders] == [(number, "13812345678", uid, "市政设施/路灯",
                                  text + "，已多次反映", "op1", "resolved_on_call")]
    assert await page.get_attribute("#draft-message a", "href") == f"/orders?open={orders[0].id}"
    assert await site.app[KNOWLEDGE].uses_of_order(orders[0].id) == [article.id]
    assert await page.evaluate("window.__pwned") is None

    # English is one click away, and stays chosen.
    await text_is(page, "#state-label", "空闲", timeout=6000)  # wrap-up (3 s) is over
    site.pbx.caller_joins("1795000001.9", "13900001111", "李四", hotline="12345",
                          ivr_path="3", category="consult")
    site.pbx.ring("1795000001.9", OP1)
    site.pbx.answer("1795000001.9", OP1)
    await text_is(page, "#state-label", "通话中")
    await page.wait_for_selector("#draft-form:not([hidden])")
    await text_is(page, "#pop-category", "咨询")  # config/ivr.toml's name, never the code
    await page.click("[data-lang-toggle]")
    await text_is(page, "#state-label", "On call")
    await text_is(page, "#pop-category", "Consultation")
    await text_is(page, "#pop-queue", "12345 General service")  # the queue's title_en
    await text_is(page, "#draft-call", "call 1795000001.9")
    await page.focus("#draft-text")
    await page.keyboard.type("The estate's lift has stopped three times this week.")
    # The autosave line follows the language switch, both ways.
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('Autosaved')")
    await page.click("[data-lang-toggle]")
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('已自动保存')")
    await page.click("[data-lang-toggle]")
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('Autosaved')")
    await page.reload()
    await text_is(page, "#state-label", "On call")
    await text_is(page, "#btn-signin span", "Sign in")
    await page.wait_for_function(
        "() => document.querySelector('#draft-status').textContent.startsWith('Autosaved')")
    # Dispatch at intake: the leaf's usual department is preselected.
    await page.select_option("#draft-cat-1", "住房城建")
    await page.select_option("#draft-cat-2", "物业管理")
    await page.check("#outcome-dispatch")
    assert await page.input_value("#draft-department") == "housing"
    await page.keyboard.press("Control+Enter")
    await page.wait_for_selector("#submit-dialog[open]")
    assert "Housing and Urban-Rural Development Bureau" in await page.inner_text("#submit-summary")
    if shots:
        await page.screenshot(path=str(shots / "console-en.png"))
    await page.click("#submit-go")
    await page.wait_for_function(
        "() => (document.querySelector('#draft-message').textContent || '').includes('dispatched')")
    last = (await site.rows(WorkOrderRow))[-1]
    assert (last.category, last.status, last.caller) == ("物业管理", "dispatched", "13900001111")
    # The line saying what was submitted follows the language switch too.
    await page.click("[data-lang-toggle]")
    await text_is(page, "#draft-message span", "已受理并派单，工单号")
    await page.click("[data-lang-toggle]")
    await text_is(page, "#draft-message span", "Accepted and dispatched: order")
    # Still on the call, a reload does not bring the submitted draft back as if editable ...
    async with page.expect_response(lambda r: r.url.endswith("/api/drafts")
                                    and r.request.method == "POST") as opened:
        await page.reload()
    assert (await (await opened.value).json())["status"] == "submitted"
    await text_is(page, "#state-label", "On call")
    assert await page.is_hidden("#draft-form")
    # ... and F4 then opens a new draft, not tied to the call that already has its order.
    await page.keyboard.press("F4")
    await page.wait_for_selector("#draft-form:not([hidden])")
    await text_is(page, "#draft-call", "no call")
    assert await page.input_value("#draft-text") == ""
    orders = await site.rows(WorkOrderRow)
    assert len(orders) == 2
    assert problems == []


async def test_wallboard_figures_equal_the_metrics_api(
        site: Site, browser: Any, shots: Path) -> None:
    pbx = site.pbx
    now = time.time()
    local = datetime.fromtimestamp(now, site.service.settings.tz)
    since_midnight = (local - local.replace(hour=0, minute=0, second=0, microsecond=0))
    if since_midnight.total_seconds() < 1000:  # (it failed at 00:01 and 00:13 in CI)
        pytest.skip("the last 15 minutes' calls would straddle the centre's midnight: "
                    "'today' would hold only some of them")
    for n in range(1, 7):
        await pbx.action({"Action": "QueueAdd", "Queue": "hotline",
                          "Interface": f"Local/100{n}@agents/n", "MemberName": f"agent100{n}"})
    await pbx.action({"Action": "QueueAdd", "Queue": "hotline-en",
                      "Interface": "Local/1006@agents/n", "MemberName": "agent1006"})
    await site.service.drain()
    # Five answered (one after 20 s: outside 15 s), one abandoned, two waiting now.
    for n, (wait, talk) in enumerate([(3, 60), (8, 45), (20, 30), (5, 50), (2, 40)]):
        uid = f"1795001000.{n}"
        start = now - 900 + n * 100
        agent = f"Local/100{n + 1}@agents/n"
        pbx.caller_joins(uid, f"1370000000{n}", f"市民{n}", at=start)
        pbx.ring(uid, agent, at=start + wait - 1)
        pbx.answer(uid, agent, at=start + wait)
        pbx.complete(uid, at=start + wait + talk)
    pbx.caller_joins("1795001000.8", "13700000008", "市民8", at=now - 200)
    pbx.abandon("1795001000.8", at=now - 170)
    pbx.caller_joins("1795001000.9", "13700000009", HOSTILE, queue="hotline-en", at=now - 30)
    pbx.caller_joins("1795001001.0", "13700000010", "市民10", at=now - 95)
    for n in range(3):  # agent1002 lets the phone ring out three times in a row
        pbx.ring("1795001001.0", "Local/1002@agents/n", at=now - 90 + n * 11)
        pbx.ring_no_answer("1795001001.0", "Local/1002@agents/n", at=now - 80 + n * 11)
    await site.service.drain()
    await pbx.action({"Action": "QueuePause", "Interface": "Local/1003@agents/n",
                      "Paused": "true", "Reason": "busy"})
    await site.service.drain()
    site.service.centre.agents["Local/1003@agents/n"].since = now - 420  # paused 7 minutes

    # A browser far from the centre: every time on the board is still the centre's.
    page, problems = await open_page(browser, site, "sup1", 1600, 1000,
                                     timezone_id="America/New_York")
    await page.wait_for_selector("[data-queue='hotline'] [data-figure='offered']")
    await page.wait_for_selector("#alerts li[data-alert='paused_while_waiting:agent1003']")
    metrics = await page.evaluate(
        "fetch('/api/metrics', {headers: {Accept: 'application/json'}}).then(r => r.json())")
    live = json.loads(json.dumps(site.service.metrics_json()))
    assert (metrics["queues"], metrics["overall"]) == (live["queues"], live["overall"])
    shown: dict[str, dict[str, str]] = await page.evaluate("""() => {
        const out = {};
        for (const card of document.querySelectorAll('[data-queue]')) {
          const row = card.querySelector('tr[data-period=today]');
          const figs = {};
          for (const cell of row.querySelectorAll('[data-figure]')) figs[cell.dataset.figure] = cell.textContent;
          out[card.dataset.queue] = figs;
        }
        return out;
    }""")
    expected = {"__all__": metrics["overall"], **metrics["queues"]}
    assert set(shown) == set(expected) == {"__all__", "hotline", "hotline-en"}
    for queue, figs in expected.items():
        assert shown[queue] == {
            "offered": str(figs["offered"]), "answered": str(figs["answered"]),
            "abandoned": str(figs["abandoned"]),
            "connection_rate": f"{figs['connection_rate']:.2f}%",
            "answer_rate_sl": f"{figs['answer_rate_sl']:.2f}%",
            "abandon_rate": f"{figs['abandon_rate']:.2f}%",
            # A mean of no call is "—", not 0.0s: ASA over answered, AHT over completed.
            "asa_s": f"{figs['asa_s']:.1f}s" if figs["answered"] else "—",
            "aht_s": f"{figs['aht_s']:.1f}s" if figs["completed"] else "—"}, queue
    assert metrics["queues"]["hotline"]["offered"] == 7
    assert metrics["queues"]["hotline"]["answered"] == 5
    assert metrics["queues"]["hotline"]["answer_rate_sl"] == 80.0
    await text_is(page, "[data-queue='hotline'] [data-figure='waiting']", "1")
    alerts = await page.eval_on_selector_all("#alerts li", "els => els.map(e => e.dataset.alert)")
    assert alerts == ["longest_wait:hotline", "paused_while_waiting:agent1003",
                      "ring_no_answer:agent1002"]
    assert await page.locator("#trend canvas").count() >= 1  # the ECharts trend (issue 14)
    # The trend's axis: the centre's clock (config: Asia/Shanghai), not the browser's.
    axis = await page.evaluate(
        "() => window.echarts.getInstanceByDom(document.querySelector('#trend'))"
        ".getOption().xAxis[0].data")
    centre = ZoneInfo(site.service.settings.timezone)
    assert site.service.settings.timezone == "Asia/Shanghai"
    assert axis and axis == [datetime.fromtimestamp(p["start"], centre).strftime("%H:%M")
                             for p in site.service.snapshot()["trend"]]
    if shots:
        await page.screenshot(path=str(shots / "wallboard-zh-CN.png"))

    # Force ready needs a reason; it is audited with who and why.
    await page.click(".tile[data-agent='agent1003']")
    await page.wait_for_selector("#agent-dialog[open]")
    await page.click("#force-ready")
    assert "原因" in await page.inner_text("#agent-dialog-message")
    await page.fill("#agent-reason", "有市民排队，请回到就绪")
    await page.click("#force-ready")
    await page.wait_for_function("() => !document.querySelector('#agent-dialog').open")
    await page.wait_for_function("() => !document.querySelector("
                                 "\"#alerts li[data-alert='paused_while_waiting:agent1003']\")")
    audit = [a for a in await site.rows(AuditRow) if a.action == "force_ready"]
    assert [(a.actor, a.target, a.reason) for a in audit] == [
        ("sup1", "agent1003", "有市民排队，请回到就绪")]
    assert await page.evaluate("window.__pwned") is None

    await page.click("[data-lang-toggle]")
    await page.wait_for_function(
        "() => document.querySelector('#alerts li').textContent.includes('waited')")
    await page.reload()
    await page.wait_for_selector("[data-queue='hotline'] [data-figure='offered']")
    assert "Offered" in await page.inner_text("[data-queue='hotline'] thead")
    # The queue's title_en (config/callcenter.toml), not its Chinese title.
    await text_is(page, "[data-queue='hotline'] h2 span", "12345 General service")
    await text_is(page, ".tile[data-agent='agent1002'] .name", "话务员 2")  # display name
    if shots:
        await page.screenshot(path=str(shots / "wallboard-en.png"))
    assert problems == []


# --------------------------------------------------------------------------- the PBX simulator


@pytest.fixture
async def sim_site(tmp_db: str) -> AsyncIterator[tuple[Site, Any, Any]]:
    """The service connected over AMI/TCP to callcenter.pbx.sim, no simulated operators."""
    pbxsim = pytest.importorskip("callcenter.pbx.sim")
    pbx = pbxsim.Pbx(pbxsim.PbxConfig(
        queues=(pbxsim.QueueConfig(name="hotline"), pbxsim.QueueConfig(name="hotline-en")),
        agents=0, autologin=False, agent_breaks=False), None, start_time=time.time())
    sim = pbxsim.PbxSimServer(pbx, port=0, users={"hotline": "hotline"}, speed=1.0)
    await sim.start()
    settings = load(env={})
    settings.database_url = tmp_db
    settings.ami.host, settings.ami.port = "127.0.0.1", sim.port
    settings.ami.username = settings.ami.secret = "hotline"
    service = Service(settings)
    entered: list[tuple[float, dict[str, str]]] = []
    put = service.inbox.put_nowait

    def timed_put(item: Any) -> None:  # when each AMI event enters the service
        if item[0] is not None:
            entered.append((time.time(), item[0]))
        put(item)

    service.inbox.put_nowait = timed_put  # type: ignore[method-assign]
    await service.start()
    await seed_demo_users(service.store, passwords=CHEAP)
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    try:
        async with served(service, app) as url:
            deadline = time.monotonic() + 5
            while not service.centre.link_up:
                assert time.monotonic() < deadline, "no AMI link to the simulator"
                await asyncio.sleep(0.05)
            yield Site(service, None, url, app), sim, entered  # type: ignore[arg-type]
    finally:
        await sim.stop()


async def test_console_against_the_pbx_simulator(sim_site: tuple[Site, Any, Any],
                                                 browser: Any) -> None:
    from callcenter.pbx.traffic import CallSpec

    site, sim, entered = sim_site
    page, problems = await open_page(browser, site, "op1", 1440, 900)
    await text_is(page, "#state-label", "未签入")
    await page.click("#btn-signin")  # QueueAdd over AMI; the simulator's events move the state
    await text_is(page, "#state-label", "空闲")

    sim.sync()
    sim.pbx.inject_call(CallSpec(at=sim.pbx.now, number="13912345678", name=HOSTILE,
                                 hotline="12345", category="complaint", ivr_path="2-3",
                                 queue="hotline", ring=1.5, talk=600.0))
    sim.flush()
    sim.reschedule()
    await page.wait_for_selector("#pop.ringing:not([hidden])", timeout=5000)
    shown = int(await page.get_attribute("#pop", "data-shown-at")) / 1000
    called = next(t for t, h in entered if h.get("Event") == "AgentCalled")
    print(f"\nring-to-pop latency through the simulator's AMI: {(shown - called) * 1000:.0f} ms")
    assert shown >= called  # the pop is of this ring (its latency is a bench figure)
    await text_is(page, "#pop-caller", "13912345678")
    await text_is(page, "#pop-name", HOSTILE)
    # (HOTLINE / IVR_PATH / CATEGORY do not reach the pop from the simulator yet: it sends
    # Asterisk 12+'s "ChanVariable: NAME=value", acd.events reads "ChanVariable(NAME)".)

    await text_is(page, "#state-label", "通话中")  # the simulated phone answers after 1.5 s
    await page.wait_for_selector("#draft-form:not([hidden])")
    assert await page.input_value("#draft-caller") == "13912345678"
    await page.keyboard.press("F4")
    await page.keyboard.type("噪音扰民，夜间施工")
    await page.select_option("#draft-request-type", "complaint")
    await page.select_option("#draft-cat-1", "生态环境")
    await page.select_option("#draft-cat-2", "噪声污染")
    await page.keyboard.press("Control+Enter")
    await page.wait_for_selector("#submit-dialog[open]")
    await page.click("#submit-go")
    await page.wait_for_selector("#draft-message[data-number]")
    orders = await site.rows(WorkOrderRow)
    assert [(o.caller, o.text, o.created_by) for o in orders] == [
        ("13912345678", "噪音扰民，夜间施工", "op1")]

    await page.click("#btn-hangup")  # AMI Hangup; AgentComplete brings wrap-up, then ready
    await text_is(page, "#state-label", "话后整理")
    await text_is(page, "#state-label", "空闲", timeout=6000)
    figures = site.service.metrics_json()["queues"]["hotline"]
    assert (figures["offered"], figures["answered"], figures["abandoned"]) == (1, 1, 0)
    assert await page.evaluate("window.__pwned") is None
    assert problems == []


async def test_english_console_at_1366x768_reads_naturally_and_back_never_shows_the_login(
        site: Site, browser: Any, shots: Path) -> None:
    """The operator's laptop (1366x768), in English: the caller's history counts in words
    ("1 work order"), the confidential box's label on one line, the transfer dialog
    offering the other queues first and the call's own queue last, marked; the back
    button from the console, and /login while signed in, never show the sign-in form."""
    earlier = time.time() - 3 * 86400
    await site.service.store.save_calls([past_call("old.8", "13812345678", earlier,
                                                   category="")])
    async with site.service.store.sessions() as s, s.begin():
        s.add(WorkOrderRow(number="20261127-000001", caller="13812345678", category="路灯",
                           text="路灯不亮", created_by="op2", created_at=earlier + 60))
    page, problems = await open_page(browser, site, "op1", 1366, 768)
    await page.go_back()  # the sign-in form is not in the history
    assert not page.url.split("?")[0].endswith("/login"), page.url
    await page.goto(site.url + "/login")  # signed in: straight to the console
    await page.wait_for_url("**/console")
    await text_is(page, "#state-label", "未签入")
    await page.click("#btn-signin")
    await text_is(page, "#state-label", "空闲")
    await page.click("[data-lang-toggle]")
    await text_is(page, "#state-label", "Ready")
    site.pbx.caller_joins("1795000009.1", "13812345678", "", hotline="12345")
    site.pbx.ring("1795000009.1", OP1)
    site.pbx.answer("1795000009.1", OP1)
    await page.wait_for_selector("#draft-form:not([hidden])")
    await page.wait_for_function(
        "() => (document.querySelector('#history').textContent || '').includes('work order')")
    counts = await page.locator("#history p.muted").first.inner_text()
    assert "1 work order" in counts and "work orders" not in counts and ":" not in counts, counts
    await page.screenshot(path=str(shots / "console-en-1366x768.png"))
    assert await one_line_confidential(page)

    await page.keyboard.press("F6")
    await page.wait_for_selector("#transfer-dialog[open]")
    offered = await page.eval_on_selector_all(
        "#transfer-queues label", "ls => ls.map((l) => [l.querySelector('input').value, l.textContent])")
    assert [v for v, _ in offered] == ["queue:hotline-en", "queue:hotline"], offered
    assert offered[-1][1].endswith("(the call's own queue)") and "own queue" not in offered[0][1]
    assert await page.evaluate("document.activeElement.value") == "queue:hotline-en"
    await page.screenshot(path=str(shots / "console-transfer-en-1366x768.png"))
    await page.keyboard.press("Escape")
    await page.click("[data-lang-toggle]")
    await text_is(page, "#state-label", "通话中")
    assert await one_line_confidential(page)
    await page.screenshot(path=str(shots / "console-zh-1366x768.png"))
    assert problems == [], problems


async def one_line_confidential(page: Any) -> bool:
    """The confidential box's label is one line, as high as the request type's label."""
    mine, other = await page.evaluate("""() => [
        document.querySelector('#draft-confidential + span').getBoundingClientRect().height,
        document.querySelector('#draft-request-type').closest('label').querySelector('span')
          .getBoundingClientRect().height]""")
    assert mine <= other + 1, (mine, other)
    return True
