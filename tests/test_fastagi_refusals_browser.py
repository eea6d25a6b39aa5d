"""In headless Chromium: what the FastAGI edge refused is an alert on the wallboard.

The real service, database and web app run on a loopback port; the FastAGI edge runs on
its own thread as ``callcenter serve`` starts it, with the service's refusal hook
(:func:`callcenter.telephony.audit_refusal`: the audit row, then the wallboard).  A
client sends half a header and closes, then a return visit's keys arrive with a forged
token: the supervisor's wallboard shows one critical alert for that address, in Chinese,
then in English, and ``GET /api/fastagi/refusals`` lists both.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent_console.server import make_app
from agent_console.session import CONSOLE
from callcenter.service import Service
from callcenter.telephony import audit_refusal
from ivr.agi_gate import start_agi_server
from ivr.fastagi import AgiThread, AgiTokens, HotlineAgi
from ivr.menus import load_config
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import CHEAP, served, started_service
from tests.test_ivr import FakeAsterisk

pytestmark = BROWSER_MARKS


class Site:
    def __init__(self, service: Service, app: web.Application, url: str,
                 edge: AgiThread) -> None:
        self.service, self.app, self.url, self.edge = service, app, url, edge


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[Site]:
    service, _pbx = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    async with served(service, app) as url:
        on_refused = audit_refusal(service, app[CONSOLE])
        agi = HotlineAgi(load_config(), tokens=AgiTokens(secret="s"), on_refused=on_refused)
        edge = await start_agi_server(agi, "127.0.0.1", 0, on_refused=on_refused)
        try:
            yield Site(service, app, url, edge)
        finally:
            await edge.stop()


async def half_a_header_then_close(port: int) -> None:
    _, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"agi_network: yes\nagi_network_script: return")
    await w.drain()
    w.close()


async def test_refusals_are_a_critical_alert_on_the_wallboard_in_zh_and_en(
        site: Site, browser: Any, tmp_path: Path) -> None:
    await half_a_header_then_close(site.edge.port)
    await FakeAsterisk(site.edge.port, "returnvisit", {"agi_arg_1": "WO-7"},
                       keys=["1", "3", "3"], token="00" * 16).run()
    shots = Path(os.environ.get("HOTLINE_SCREENSHOTS") or tmp_path)
    alert = "li[data-alert='fastagi_refused:127.0.0.1']"
    for width, height in ((1366, 768), (1920, 1080)):
        page, problems = await sign_in(browser, site.url, "sup1", width=width, height=height)
        await page.wait_for_url("**/wallboard")
        await page.wait_for_selector(alert, timeout=8000)
        await page.wait_for_function(
            "s => (document.querySelector(s)?.textContent || '').includes('次请求')",
            arg=alert, timeout=8000)
        zh = (await page.text_content(alert)) or ""
        assert await page.get_attribute(alert, "class") == "critical"
        assert "IVR 端口（FastAGI）拒绝了来自 127.0.0.1 的 2 次请求" in zh
        assert "没有有效令牌却试图写入回访或满意度按键" in zh
        await page.screenshot(path=str(shots / f"wallboard-fastagi-refused-{width}x{height}.png"))
        await page.click("[data-lang-toggle]")
        await page.wait_for_function(
            "s => (document.querySelector(s)?.textContent || '').startsWith('The IVR port')",
            arg=alert, timeout=8000)
        en = (await page.text_content(alert)) or ""
        assert "refused 2 requests from 127.0.0.1" in en
        assert "a write without a valid token" in en
        if width == 1366:
            await page.screenshot(path=str(shots / "wallboard-fastagi-refused-en-1366x768.png"))
        status, body = await page.evaluate(
            "async () => { const r = await fetch('/api/fastagi/refusals');"
            " return [r.status, await r.json()]; }")
        assert status == 200
        assert sorted(r["why"] for r in body["refusals"]) == [
            "closed before the end of the headers", "token not issued by this service"]
        await page.evaluate("localStorage.removeItem('hotline.lang')")
        assert problems == []
        await page.context.close()
