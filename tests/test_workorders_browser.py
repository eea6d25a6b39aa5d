"""The work-order page in headless Chromium: a department signs for an order and
returns another with a reason; the supervisor reviews the return and reads the
anomaly board.  The demo orders (callcenter.demo_orders) are the data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from agent_console.orders_api import WORK_ORDERS
from agent_console.server import make_app
from callcenter.demo_orders import seed_demo_orders
from callcenter.orders.lifecycle import Actor, Caller, Role
from callcenter.orders.store import WorkOrders
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import CHEAP, served, started_service

HOSTILE = "<img src=x onerror=window.__pwned=1>"

pytestmark = BROWSER_MARKS


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[tuple[str, WorkOrders]]:
    service, _ = await started_service(tmp_db)
    await seed_demo_orders(service.store, tz=service.settings.tz, passwords=CHEAP)
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    async with served(service, app) as url:
        yield url, app[WORK_ORDERS]


async def signed_in(browser: Any, url: str, user: str) -> tuple[Any, list[str]]:
    page, problems = await sign_in(browser, url, user)
    await page.wait_for_url(lambda u: "/login" not in u or "none=1" in u or "/login?" in u)
    await page.goto(url + "/orders")
    await page.wait_for_selector("#orders tr")
    return page, problems


async def test_department_signs_for_and_returns_supervisor_reviews(
        site: tuple[str, WorkOrders], browser: Any, tmp_path: Path) -> None:
    url, wo = site
    hostile, _ = await wo.create(Actor("op1", Role.OPERATOR, "centre"),
                                 caller=Caller(HOSTILE, "13700000001"), category=HOSTILE,
                                 text=HOSTILE)
    await wo.step(hostile.id, "dispatch", Actor("op1", Role.OPERATOR, "centre"),
                  department="urban_management")

    page, problems = await signed_in(browser, url, "dept1")
    rows = page.locator("#orders tr")
    assert await rows.count() >= 5
    await page.locator("#orders tr", has_text="菜市场门口").first.click()
    await page.wait_for_selector("#actions button")
    await page.locator("#actions button", has_text="签收").click()
    await page.wait_for_selector("#detail-title:has-text('办理中')")
    # Two text boxes, each saying what it is for: the reply, and the co-handler's opinion.
    for step, hint in (("答复", "答复内容"), ("协办意见", "协办意见")):
        box = page.locator("#actions .row", has=page.locator("button", has_text=step))
        assert await box.locator("textarea").get_attribute("placeholder") == hint, step
    # Return the hostile one, with a reason; its text stays text.
    await page.locator("#orders tr", has_text=HOSTILE).first.click()
    await page.wait_for_selector("#detail-title:has-text('" + hostile.number + "')")
    row = page.locator("#actions .row", has=page.locator("button", has_text="退单"))
    await row.locator("input").fill("不属本部门职责")
    await row.locator("button").click()
    await page.wait_for_selector("#detail-title:has-text('已退单')")
    assert await page.evaluate("window.__pwned") is None
    await page.screenshot(path=str(tmp_path / "orders-department.png"))
    assert problems == []

    page, problems = await signed_in(browser, url, "sup1")
    await page.click("[data-tab=returns]")
    await page.locator("#orders tr", has_text=hostile.number).click()
    row = page.locator("#actions .row", has=page.locator("button", has_text="驳回退单"))
    await row.locator("input").fill("占道经营属城管职责")
    await row.locator("button").click()
    await page.wait_for_selector("#detail-title:has-text('办理中')")
    await page.click("[data-tab=board]")
    await page.wait_for_selector("#anomalies li[data-kind=ping_pong]")
    kinds = set(await page.locator("#anomalies li").evaluate_all(
        "items => items.map(i => i.dataset.kind)"))
    assert {"ping_pong", "dispatch_cycle", "false_completion", "template_reply", "overdue",
            "repeat_after_completion", "staff_entered_satisfaction"} <= kinds
    await page.click("[data-lang-toggle]")
    await page.wait_for_selector("text=Supervision board")
    await page.screenshot(path=str(tmp_path / "orders-board.png"))
    assert problems == []
    assert [str(r.step) for r in await wo.history(hostile.id)][-2:] == ["return",
                                                                       "refuse_return"]


CALL = "1795434000.7"


@pytest.fixture
async def recorded_site(tmp_db: str, tmp_path: Path) -> AsyncIterator[tuple[str, WorkOrders]]:
    """The site with one recorded call (under tmp_path) and an order taken on it."""
    from recordings.store import RecordingStore, write_wav

    store = RecordingStore(tmp_path / "recordings")
    write_wav(store.root / "2026-11-17" / f"{CALL}.wav", 2)
    store.scan()
    service, _ = await started_service(tmp_db)
    await seed_demo_orders(service.store, tz=service.settings.tz, passwords=CHEAP)
    app = make_app(service, passwords=CHEAP, failure_delay=0, recordings=store)
    async with served(service, app) as url:
        yield url, app[WORK_ORDERS]


async def test_supervisor_plays_the_recording_of_the_orders_call(
        recorded_site: tuple[str, WorkOrders], browser: Any) -> None:
    url, wo = recorded_site
    order, _ = await wo.create(Actor("op1", Role.OPERATOR, "centre"),
                               caller=Caller("张三", "13700000002"), category="consult",
                               text="录音测试工单", call_uniqueid=CALL)
    page, problems = await signed_in(browser, url, "sup1")
    await page.locator("#orders tr", has_text=order.number).first.click()
    audio = page.locator("#detail-fields audio")
    await audio.wait_for()
    src = await audio.get_attribute("src")
    assert src == f"/api/recordings/{CALL}" and await audio.get_attribute("controls") == ""
    status = await page.evaluate(
        "src => fetch(src, {headers: {Range: 'bytes=0-99'}}).then(r => r.status)", src)
    assert status == 206
    assert problems == []

    page, problems = await signed_in(browser, url, "op1")
    await page.locator("#orders tr", has_text=order.number).first.click()
    await page.wait_for_selector(f"#detail-title:has-text('{order.number}')")
    assert await page.locator("#detail-fields audio").count() == 0
    assert problems == []


async def test_operator_records_the_citizens_answer_on_a_return_visit(
        site: tuple[str, WorkOrders], browser: Any) -> None:
    """Return visit -> evaluation in the browser: only with the call's id, as the citizen's."""
    url, wo = site
    orders, _ = await wo.list(state="return_visit", per_page=100)
    order = orders[0]
    page, problems = await signed_in(browser, url, "sup1")
    await page.locator("#orders tr", has_text=order.number).first.click()
    row = page.locator("#actions .row", has=page.locator("button", has_text="记录市民回答"))
    await row.locator("button").click()  # no call id: refused, nothing recorded
    await page.wait_for_selector("#action-message.error")
    assert (await wo.get(order.id)).state == "return_visit"
    await row.locator("select[data-field=satisfaction_operator]").select_option("3")
    await row.locator("select[data-field=satisfaction_department]").select_option("2")
    await row.locator("input[data-field=call_id]").fill("1795000000.42")
    await row.locator("button").click()
    await page.wait_for_selector("#detail-title:has-text('已评价')")
    done = await wo.get(order.id)
    assert done.state == "evaluated"
    # The refused first attempt is the only error the page saw (the 400 itself).
    assert [p for p in problems if "status of 400" not in p] == []


async def test_supervisor_acts_on_the_board_and_a_department_sees_its_inbox(
        site: tuple[str, WorkOrders], browser: Any, tmp_path: Path) -> None:
    url, wo = site
    page, problems = await signed_in(browser, url, "sup1")
    await page.click("[data-tab=board]")
    await page.wait_for_selector("#anomalies li[data-kind=ping_pong]")
    # Plain sentences with order numbers as links; no JSON anywhere.
    board = await page.inner_text("#anomalies")
    assert "{" not in board and '"order_id"' not in board
    pong = page.locator("#anomalies > li[data-kind=ping_pong]").first
    assert "被退单 2 次" in await pong.inner_text()
    assert "市城市管理局 退单，理由：" in await pong.inner_text()
    number = await pong.locator("a.order-link").first.inner_text()
    # Filters by kind and by department.
    await page.select_option("#board-kind", "template_reply")
    await page.wait_for_function("() => [...document.querySelectorAll('#anomalies > li')]"
                                 ".every(li => li.dataset.kind === 'template_reply')")
    assert "几乎相同的答复" in await page.inner_text("#anomalies")
    # The evidence names the other orders by number: each a link that opens it.
    similar = page.locator("#anomalies .evidence a.order-link").first
    await expect(similar).to_have_text(re.compile(r"^\d{8}-\d{6}$"))
    await page.select_option("#board-kind", "")
    await page.select_option("#board-department", "water_group")
    await page.wait_for_function("() => !document.querySelector('#anomalies > li[data-kind=ping_pong]')")
    await page.select_option("#board-department", "")
    await page.wait_for_selector("#anomalies > li[data-kind=ping_pong]")
    if tmp_path:
        await page.screenshot(path=str(tmp_path / "orders-board-zh-CN.png"))
    # 督办 from the board: the order is supervised and the finding handled, with who.
    pong = page.locator("#anomalies > li[data-kind=ping_pong]").first
    key = await pong.get_attribute("data-key")
    await pong.locator("input[data-field=note]").fill("多次退单，限期三日办结")
    # The deadline typed is the centre's wall time, whatever the browser's zone.
    await pong.locator("input[data-field=deadline]").fill("2030-01-02T09:30")
    await pong.locator("button[data-act=supervise]").click()
    await page.wait_for_function(
        "k => !document.querySelector(`#anomalies > li[data-key='${k}']`)", arg=key)
    await page.select_option("#board-status", "handled")
    handled = page.locator(f"#anomalies > li[data-key='{key}']")
    await handled.wait_for()
    assert "已由 sup1 于" in await handled.inner_text()
    order = next(o for o in (await wo.list(per_page=100))[0] if o.number == number)
    assert order.supervision is not None and order.supervision.reason == "多次退单，限期三日办结"
    assert order.supervision.deadline == datetime(2030, 1, 2, 9, 30,
                                                  tzinfo=ZoneInfo("Asia/Shanghai"))
    # English: the same finding in English.
    await page.click("[data-lang-toggle]")
    await page.wait_for_function("() => document.querySelector('#anomalies').textContent"
                                 ".includes('Marked handled by sup1')")
    await page.select_option("#board-status", "all")
    await page.wait_for_function("() => document.querySelector('#anomalies').textContent"
                                 ".includes('Returned 2 times')")
    # The trail: "→ department" only on dispatches; the system's actor by name.
    await page.click(f"#anomalies > li[data-key='{key}'] a.order-link")
    await page.wait_for_selector("#detail-title:has-text('" + number + "')")
    trail = await page.locator("#history li strong").all_inner_texts()
    assert any(t.startswith("Dispatch → ") for t in trail)
    assert not any("→" in t for t in trail if t.startswith(("Return", "Sign for", "Supervise")))
    assert problems == []

    # A department: the inbox with its badge, the supervised order among its lists.
    page, problems = await signed_in(browser, url, "dept1")
    await page.wait_for_selector("#inbox-badge:not([hidden])")
    assert int(await page.inner_text("#inbox-badge")) >= 3
    await page.click("[data-tab=inbox]")
    await page.wait_for_selector("#inbox-lists [data-list=supervised] li[data-order]")
    assert number in await page.inner_text("#inbox-lists [data-list=supervised]")
    assert await page.locator("#inbox-lists [data-list=new] li[data-order]").count() >= 1
    await page.screenshot(path=str(tmp_path / "orders-inbox-zh-CN.png"))
    assert problems == []


@pytest.mark.parametrize("width, height", [(1366, 768), (1920, 1080)])
async def test_english_orders_list_and_wallboard_fit_their_panels(
        site: tuple[str, WorkOrders], browser: Any, tmp_path: Path, width: int,
        height: int) -> None:
    url, _ = site
    page, problems = await sign_in(browser, url, "sup1", width=width, height=height)
    await page.wait_for_url(lambda u: "/login" not in u)
    await page.evaluate("localStorage.setItem('hotline.lang', 'en')")
    await page.goto(url + "/orders")
    await page.wait_for_selector("#orders tr")
    fits = """() => { const t = document.querySelector('.orders-table'),
                        p = document.querySelector('#list-panel');
                      return [t.scrollWidth, p.clientWidth, document.documentElement.scrollWidth]; }"""
    table, panel, doc = await page.evaluate(fits)
    assert table <= panel and doc <= width, (table, panel, doc)
    await page.locator("#orders tr").nth(1).click()  # an order open beside the list
    await page.wait_for_selector("#detail:not([hidden])")
    table, panel, doc = await page.evaluate(fits)
    assert table <= panel and doc <= width, (table, panel, doc)
    await page.screenshot(path=str(tmp_path / f"orders-en-{width}.png"))
    for lang in ("en", "zh-CN"):
        await page.evaluate(f"localStorage.setItem('hotline.lang', '{lang}')")
        await page.goto(url + "/wallboard")
        await page.wait_for_selector(".qcard .figs th")
        # No header broken per character (one line of 12 px text is ~17 px), no card scrolls.
        tall, over = await page.evaluate("""() => [
            [...document.querySelectorAll('.figs th')].filter(th => th.textContent.length < 5
                && th.getBoundingClientRect().height > 40).map(th => th.textContent),
            [...document.querySelectorAll('.qcard')].map(c => c.scrollWidth - c.clientWidth)]""")
        assert tall == [] and max(over) <= 0, (lang, tall, over)
        await page.screenshot(path=str(tmp_path / f"wallboard-{lang}-{width}.png"))
    assert problems == []


async def test_the_board_names_the_centre_in_words_when_it_answered_on_the_call(
        site: tuple[str, WorkOrders], browser: Any) -> None:
    url, wo = site
    op = Actor("op1", Role.OPERATOR, "centre")
    order, _ = await wo.create(op, caller=Caller("张三", "13812345678"), category="路灯",
                               text="路灯不亮")
    await wo.step(order.id, "resolve_on_call", op, answer="已告知报修渠道")
    await wo.step(order.id, "start_return_visit", Actor("sup1", Role.SUPERVISOR, "centre"))
    await wo.step(order.id, "reopen_at_centre", Actor("citizen", Role.CITIZEN),
                  source="citizen_keys", resolved=False)
    page, problems = await signed_in(browser, url, "sup1")
    await page.click("[data-tab=board]")
    found = page.locator("#anomalies > li[data-kind=false_completion]", has_text=order.number)
    await expect(found).to_contain_text("热线中心 于")  # never the code "centre"
    assert "centre" not in await found.inner_text()
    await page.click("[data-lang-toggle]")
    await expect(found).to_contain_text(re.compile("the hotline centre completed it at", re.IGNORECASE))
    assert problems == []


async def test_the_list_reddens_the_handling_deadline_only_when_that_one_was_missed(
        site: tuple[str, WorkOrders], browser: Any) -> None:
    """The list's 办理时限 cell shows the handling deadline: a missed first-response
    deadline names itself in the cell's tooltip (and on the trail) without turning a
    handling deadline days away red."""
    from datetime import timedelta

    url, wo = site
    op, sup = Actor("op1", Role.OPERATOR, "centre"), Actor("sup1", Role.SUPERVISOR, "centre")
    order, _ = await wo.create(op, caller=Caller("张三", "13812345678"), category="路灯",
                               text="路灯不亮，已超首次响应时限")
    await wo.step(order.id, "dispatch", sup, department="urban_management")
    order = await wo.get(order.id)
    await wo.fire_due(order.first_response_due + timedelta(minutes=1))
    assert [str(k) for k, _ in (await wo.get(order.id)).overdue] == ["first_response_overdue"]
    page, problems = await signed_in(browser, url, "sup1")
    row = page.locator("#orders tr", has_text=order.number)
    cell = row.locator("td").last
    await expect(cell).to_have_attribute("title", "首次响应时限")
    assert "overdue" not in (await cell.get_attribute("class") or "")
    await row.click()
    await expect(page.locator("#history")).to_contain_text("超时：首次响应时限")
    # Then the handling deadline passes too: now the cell is red.
    await wo.fire_due(order.handling_due + timedelta(minutes=1))
    await page.reload()
    cell = page.locator("#orders tr", has_text=order.number).locator("td").last
    await expect(cell).to_have_class(re.compile(r"\boverdue\b"))
    await expect(cell).to_have_attribute("title", "首次响应时限 · 办理时限")
    assert problems == []
