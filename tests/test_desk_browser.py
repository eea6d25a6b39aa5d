"""The desk in headless Chromium, on the demo's orders and articles: a supervisor
finds the broken-streetlight reports, bookmarks the search, and merges three
duplicates into the first (并案); a department opens a confidential order and
never sees who called; the knowledge base answers as one types.

Screenshots (1366x768 and 1920x1080) go to ``$HOTLINE_SCREENSHOTS`` when set
(``docs/screenshots`` holds the committed ones), else to the test's folder.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from agent_console.knowledge_api import KNOWLEDGE
from agent_console.orders_api import WORK_ORDERS
from agent_console.server import make_app
from callcenter.demo_orders import CLUSTER, seed_demo_orders
from callcenter.orders.knowledge import load_demo_articles
from callcenter.orders.lifecycle import Actor, Caller, Role
from callcenter.orders.merge import follow, followers_of
from callcenter.orders.store import WorkOrders
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import CHEAP, served, started_service

pytestmark = BROWSER_MARKS
SIZES = ((1366, 768), (1920, 1080))


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("HOTLINE_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[tuple[str, WorkOrders]]:
    service, _ = await started_service(tmp_db)
    await seed_demo_orders(service.store, tz=service.settings.tz, passwords=CHEAP)
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    await load_demo_articles(app[KNOWLEDGE])
    async with served(service, app) as url:
        yield url, app[WORK_ORDERS]


async def orders_page(browser: Any, url: str, user: str, size: tuple[int, int],
                      path: str = "/orders", timezone_id: str | None = None
                      ) -> tuple[Any, list[str]]:
    page, problems = await sign_in(browser, url, user, width=size[0], height=size[1],
                                   timezone_id=timezone_id)
    await page.wait_for_url(lambda u: "/login" not in u)
    await page.goto(url + path)
    await page.wait_for_selector("#orders tr")
    return page, problems


async def until(check: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def no_overflow(page: Any) -> None:
    """Nothing wider than the window (no horizontal scrollbar on the page)."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= await page.evaluate("window.innerWidth"), width


async def test_supervisor_searches_and_merges_three_duplicates(
        site: tuple[str, WorkOrders], browser: Any, shots: Path) -> None:
    url, wo = site
    # A browser far from the centre: the times shown are still the centre's.
    page, problems = await orders_page(browser, url, "sup1", SIZES[0],
                                       timezone_id="America/New_York")
    await page.fill("#find-q", "光明路")
    await expect(page.locator("#orders tr")).to_have_count(5)
    assert "q=%E5%85%89%E6%98%8E%E8%B7%AF" in page.url  # the search is in the address
    # Sort by number, ascending: the first report leads.
    await page.click("th[data-sort=number]")
    await page.click("th[data-sort=number]")
    await until(lambda: "sort=number" in page.url)
    cluster = sorted(o.number for o in (await wo.list(per_page=100))[0] if "光明路" in o.text)
    lead_number = cluster[0]
    first = page.locator("#orders tr").first
    await expect(first.locator("a.order-link")).to_have_text(lead_number)
    await first.locator("a.order-link").click()
    await page.wait_for_selector(f"#detail-title:has-text('{lead_number}')")
    await page.wait_for_selector(".dup-list li")
    assert await page.locator(".dup-list li").count() == len(CLUSTER) - 1
    boxes = page.locator(".dup-list input[type=checkbox]")
    for i in range(3):
        await boxes.nth(i).check()
    await page.fill("[data-field=merge-reason]", "同一路灯，多人反映")
    for width, height in SIZES:
        await page.set_viewport_size({"width": width, "height": height})
        await no_overflow(page)
        await page.screenshot(path=str(shots / f"orders-merge-{width}x{height}.png"))
    await page.click("#merge-button")
    await page.wait_for_selector(".merge-followers")
    assert "3" in await page.locator(".merge-followers").inner_text()
    assert "已并案 3 件" in await page.locator("#action-message").inner_text()
    # The bookmark: the same URL in a fresh page shows the same search and order.
    bookmark = page.url
    assert "open=" in bookmark
    again = await page.context.new_page()
    await again.goto(bookmark)
    await expect(again.locator("#orders tr")).to_have_count(5)
    assert await again.input_value("#find-q") == "光明路"
    await again.wait_for_selector(f"#detail-title:has-text('{lead_number}')")
    await again.wait_for_selector(".merge-followers")
    # With followers hidden, one order is left for the streetlight.
    await again.check("#find-followers")
    await expect(again.locator("#orders tr")).to_have_count(2)
    # An order number in the trail (a 督办 reason naming another report) opens that order.
    lead = next(o for o in (await wo.list(per_page=100))[0] if o.number == lead_number)
    centre = wo.config.directory.centre.id
    await wo.step(lead.id, "supervise", Actor("sup1", Role.SUPERVISOR, centre),
                  reason=f"与 {cluster[-1]} 同一路灯，一并督办",
                  deadline=wo.now() + timedelta(days=3))
    await page.reload()
    trail_link = page.locator(f"#history a.order-link:has-text('{cluster[-1]}')")
    await expect(trail_link).to_have_count(1)
    for width, height in SIZES:
        await page.set_viewport_size({"width": width, "height": height})
        await trail_link.scroll_into_view_if_needed()
        await no_overflow(page)
        await page.screenshot(path=str(shots / f"orders-trail-link-{width}x{height}.png"))
    await trail_link.click()
    await page.wait_for_selector(f"#detail-title:has-text('{cluster[-1]}')")
    # The intake fields are filters too, kept in the address like the others.
    await again.select_option("#find-request_type", "complaint")
    await until(lambda: "request_type=complaint" in again.url)
    await again.close()
    status, doc = await page.context.request.get(url + f"/api/orders/{lead.id}"), None
    doc = await status.json()
    assert len(doc["order"]["followers"]) == 3
    # The lead is dispatched, its followers follow: their trail says why in the UI's
    # language (the reason merge.py writes, and its actor), never Chinese in English.
    dept = wo.config.directory.departments[0].id
    await wo.step(lead.id, "dispatch", Actor("sup1", Role.SUPERVISOR, centre), department=dept)
    handler = Actor("dept1", Role.DEPARTMENT, dept)
    await wo.step(lead.id, "accept_handling", handler)
    await wo.step(lead.id, "reply", handler, text="路灯已于今日修复。")
    await follow(wo, int(lead.id))  # the API does this after a step; here the step was direct
    follower = (await followers_of(wo, int(lead.id)))[0]
    await page.goto(url + f"/orders?open={follower.id}")
    await page.wait_for_selector(f"#history li:has-text('{lead_number}')")
    assert f"并案：随主件 {lead_number} 办理" in await page.inner_text("#history")
    accepted = (await wo.get(str(follower.id))).accepted_at.astimezone(ZoneInfo("Asia/Shanghai"))
    fields = await page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '#detail-fields dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))""")
    assert fields["受理时间"] == f"{accepted.year}/{accepted.month}/{accepted.day} " \
        f"{accepted:%H:%M:%S}"
    await page.click("[data-lang-toggle]")
    await page.wait_for_selector(f"#history li:has-text('Merged: handled with lead order {lead_number}')")
    trail = await page.inner_text("#history")
    assert f"Merge (lead order {lead_number})" in trail and "并案" not in trail
    # The category in English too (config/intake.toml name_en), in the detail and list.
    fields = await page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        '#detail-fields dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))""")
    assert fields["Category"] == "Street lights"
    assert problems == []


async def test_supervisor_files_a_letter_from_the_mayors_mailbox(
        site: tuple[str, WorkOrders], browser: Any) -> None:
    url, _ = site
    page, problems = await orders_page(browser, url, "sup1", SIZES[0])
    await page.click("#new-order")
    await page.select_option("#new-channel", "mayor_mailbox")
    await page.fill("#new-name", "孙先生")
    await page.fill("#new-caller", "13700002005")
    await page.fill("#new-location", STREETLIGHT)
    await page.fill("#new-category", "路灯")
    await page.fill("#new-text", "光明路与建设路交叉口的路灯坏了，晚上一片漆黑。")
    await page.wait_for_selector("#new-duplicates .dup")  # the same light, already reported
    await page.screenshot(path=str(Path(os.environ.get("HOTLINE_SCREENSHOTS") or "/tmp")
                                   / "orders-new-1366x768.png")) if os.environ.get(
        "HOTLINE_SCREENSHOTS") else None
    await page.click("#new-submit")
    await page.wait_for_selector("#detail-title")
    assert "已受理" in await page.locator("#action-message").inner_text()
    assert "市长信箱" in await page.locator("#detail-fields").inner_text()
    assert problems == []


STREETLIGHT = "光明路与建设路交叉口"
NAME, NUMBER, ADDRESS = "欧阳保密", "13957316420", "幸福路88号3单元502室"


async def test_a_department_sees_a_confidential_order_without_the_caller(
        site: tuple[str, WorkOrders], browser: Any, shots: Path) -> None:
    url, wo = site
    op = Actor("op1", Role.OPERATOR, "centre")
    order, _ = await wo.create(op, caller=Caller(NAME, NUMBER, ADDRESS), category="违法建设",
                               text=f"举报幸福路88号楼顶违章搭建，回电{NUMBER}。",
                               location="幸福路88号楼顶", confidential=True, channel="wechat")
    await wo.step(order.id, "dispatch", op, department="urban_management")
    for width, height in SIZES:
        page, problems = await orders_page(browser, url, "dept1", (width, height),
                                           f"/orders?q=违章搭建&open={order.id}")
        await page.wait_for_selector(f"#detail-title:has-text('{order.number}')")
        html = await page.content()
        for secret in (NAME, NUMBER, ADDRESS, "5731642"):
            assert secret not in html
        assert "楼顶违章搭建" in html and "（已隐藏）" in await page.locator(
            "#detail-fields").inner_text()
        await no_overflow(page)
        await page.screenshot(path=str(shots / f"orders-confidential-dept-{width}x{height}.png"))
        assert problems == []
        await page.context.close()


async def test_the_knowledge_base_answers_as_one_types(
        site: tuple[str, WorkOrders], browser: Any, shots: Path) -> None:
    url, _ = site
    for width, height in SIZES:
        page, problems = await sign_in(browser, url, "sup1", width=width, height=height)
        await page.wait_for_url(lambda u: "/login" not in u)
        await page.goto(url + "/knowledge")
        await page.wait_for_selector("#kb-results li")
        await page.fill("#kb-q", "公积金租房")
        await expect(page.locator("#kb-results li").first).to_contain_text("住房公积金怎么提取用于租房")
        await page.locator("#kb-results li").first.click()
        await page.wait_for_selector("#kb-history li")
        assert await page.input_value("#f-title") == "住房公积金怎么提取用于租房？"
        await no_overflow(page)
        await page.screenshot(path=str(shots / f"knowledge-{width}x{height}.png"))
        assert problems == []
        await page.context.close()


async def test_a_double_click_on_save_writes_one_article(
        site: tuple[str, WorkOrders], browser: Any) -> None:
    url, _ = site
    page, problems = await sign_in(browser, url, "sup1", width=1366, height=768)
    await page.wait_for_url(lambda u: "/login" not in u)
    await page.goto(url + "/knowledge")
    await page.wait_for_selector("#kb-results li")
    before = (await (await page.request.get(url + "/api/knowledge/articles")).json())["total"]
    await page.click("#kb-new")
    await page.fill("#f-title", "双击保存只建一条")
    await page.fill("#f-category", "测试/双击")
    await page.fill("#f-body", "同一条知识，点两下保存也只有一条。")
    await page.dblclick("#kb-save")
    await expect(page.locator("#kb-message")).to_contain_text("已保存（第 1 版）")
    await expect(page.locator("#kb-save")).to_be_enabled()
    listed = (await (await page.request.get(url + "/api/knowledge/articles")).json())
    assert listed["total"] == before + 1
    assert [a["title"] for a in listed["articles"]].count("双击保存只建一条") == 1
    assert problems == []
    await page.context.close()
