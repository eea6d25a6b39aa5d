"""In headless Chromium: a supervisor listens in on an operator's call from the wallboard.

The real service, database and web app (with the spy routes) run on a loopback
port; the PBX is :class:`tests.console_fakes.FakePbx` taught Originate,
CoreShowChannels and Hangup by :func:`tests.test_spy.spy_support`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from callcenter.db import AuditRow
from callcenter.service import Service
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import FakePbx, served, started_service
from tests.test_spy import OP1, SUP_PHONE, spy_app, spy_support

pytestmark = BROWSER_MARKS


class Site:
    def __init__(self, service: Service, pbx: FakePbx, url: str) -> None:
        self.service, self.pbx, self.url = service, pbx, url
        self.channels = spy_support(pbx)

    def sent(self, name: str) -> list[dict[str, str]]:
        return [a for a in self.pbx.actions if a["Action"] == name]


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[Site]:
    service, pbx = await started_service(tmp_db)
    async with served(service, spy_app(service)) as url:
        yield Site(service, pbx, url)


async def wallboard(browser: Any, site: Site) -> tuple[Any, list[str]]:
    page, problems = await sign_in(browser, site.url, "sup1", width=1600, height=1000)
    await page.wait_for_url("**/wallboard")
    return page, problems


async def text_is(page: Any, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.textContent.trim() === t; }",
        arg=[selector, text], timeout=4000)


async def test_supervisor_listens_in_from_the_wallboard_and_stops(
        site: Site, browser: Any, tmp_path: Path) -> None:
    await site.pbx.action({"Action": "QueueAdd", "Queue": "hotline", "Interface": OP1,
                           "MemberName": "agent1001", "Paused": "false"})
    await site.pbx.action({"Action": "QueueAdd", "Queue": "hotline",
                           "Interface": "Local/1002@agents/n", "MemberName": "agent1002",
                           "Paused": "false"})
    site.pbx.caller_joins("9.1", "13800000001", "张三")
    site.pbx.ring("9.1", OP1)
    site.pbx.answer("9.1", OP1)
    page, problems = await wallboard(browser, site)

    # An idle agent: the dialog says listening needs a call, the buttons are off.
    await page.click(".tile[data-agent=agent1002]")
    await text_is(page, "#spy-hint", "座席通话中时才能监听、耳语或强插。")
    assert await page.is_disabled("[data-spy=listen]")
    await page.click("#agent-cancel")

    # The agent on a call: a reason, Listen, a confirmation naming agent and mode.
    await page.click(".tile.st-on_call[data-agent=agent1001]")
    assert await page.is_enabled("[data-spy=listen]")
    await page.click("[data-spy=listen]")  # no reason yet: asked for one, nothing sent
    await text_is(page, "#agent-dialog-message", "原因（必填，将记入审计日志）")
    await page.fill("#agent-reason", "质检抽听")
    site.pbx.refuse["Originate"] = "Originate failed"  # first the PBX says no
    await page.click("[data-spy=listen]")
    confirm = (await page.text_content("#spy-confirm-text")) or ""
    assert "「监听」" in confirm and "agent1001" in confirm and SUP_PHONE in confirm
    assert site.sent("Originate") == []  # a click on a mode alone sends nothing
    shots = Path(os.environ.get("HOTLINE_SCREENSHOTS") or tmp_path)
    await page.screenshot(path=str(shots / "wallboard-spy-confirm.png"))
    await page.click("#spy-go")
    await text_is(page, "#agent-dialog-message",  # the PBX's refusal, translated (pbx.refused)
                  "电话系统拒绝了「Originate」（Originate failed）。请重试；反复出现请联系值班长。")
    del site.pbx.refuse["Originate"]

    await page.click("[data-spy=listen]")
    await page.click("#spy-go")
    await page.wait_for_selector("#spy-bar:not([hidden])")
    assert site.sent("Originate")[-1] == {
        "Action": "Originate", "ActionID": "spy-2", "Channel": SUP_PHONE,
        "Application": "ChanSpy", "Data": "Local/1001@agents,qE",
        "CallerID": '"班长监听" <spy>', "Async": "true"}
    bar = (await page.text_content("#spy-bar-text")) or ""
    assert bar.startswith("正在监听：") and "agent1001" in bar
    await text_is(page, "#spy-bar-message", f"正在呼叫您的话机 {SUP_PHONE}，接听后开始")
    assert await page.get_attribute("#spy-bar", "data-mode") == "listen"
    await page.wait_for_selector(".tile.spied[data-agent=agent1001]")
    await page.screenshot(path=str(shots / "wallboard-spy.png"))

    # A reload keeps the bar; while listening, the dialog offers no second spy call.
    await page.reload()
    await page.wait_for_selector("#spy-bar:not([hidden])")
    await page.wait_for_selector(".tile.spied[data-agent=agent1001]")
    await page.click(".tile[data-agent=agent1001]")
    assert await page.is_disabled("[data-spy=barge]")
    await page.click("#agent-cancel")

    # Stop: the supervisor's spy channel is hung up and the bar goes.
    await page.click("#spy-stop")
    await page.wait_for_selector("#spy-bar", state="hidden")
    assert site.sent("Hangup") == [{"Action": "Hangup",
                                    "Channel": "Local/1901@agents-0000002a;1"}]
    assert site.channels == {}

    async with site.service.store.sessions() as s:
        rows = list(await s.scalars(select(AuditRow).where(
            AuditRow.action.in_(["spy", "spy_stop"])).order_by(AuditRow.id)))
    assert [(r.action, r.target, r.reason, r.data["result"]) for r in rows] == [
        ("spy", "agent1001", "质检抽听", "the PBX refused Originate: Originate failed"),
        ("spy", "agent1001", "质检抽听", "ok"),
        ("spy_stop", "agent1001", "", "stopped")]
    # The only console errors: the browser's note of the PBX refusal's 502.
    assert all("502" in p for p in problems), problems
