"""The reports page in headless Chromium, on the demo's data (its orders and this month's
history): a supervisor switches day -> month, reads a definition, downloads the XLSX and a
CSV (read back here), prints the 日报; a department sees its own 三率 and nothing else.

``HOTLINE_SCREENSHOTS=docs/screenshots`` keeps the screenshots (1366x768, 1920x1080)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from agent_console.server import make_app
from callcenter.demo_orders import seed_demo_orders, seed_report_history
from callcenter.service import Service
from tests.conftest import BROWSER_MARKS, sign_in
from tests.console_fakes import CHEAP, served, started_service

pytestmark = BROWSER_MARKS
SHOTS = os.environ.get("HOTLINE_SCREENSHOTS")


def history_day(service: Service) -> str:
    """A day whose month holds the seeded history: today, or yesterday on the 1st (the
    history is written for the days before today, from the month a week ago)."""
    today = datetime.fromtimestamp(service.clock(), service.settings.tz).date()
    return (today - timedelta(days=1) if today.day == 1 else today).isoformat()


@pytest.fixture
async def site(tmp_db: str) -> AsyncIterator[tuple[str, Service]]:
    service, _ = await started_service(tmp_db)
    tz = service.settings.tz
    await seed_demo_orders(service.store, tz=tz, passwords=CHEAP)
    assert await seed_report_history(service.store, tz=tz, calls=3000, orders=400) > 0
    assert await seed_report_history(service.store, tz=tz) == 0  # once only
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    async with served(service, app) as url:
        yield url, service


async def shoot(page: Any, tmp_path: Path, name: str) -> None:
    """Screenshots at the two sizes the README shows (kept only with HOTLINE_SCREENSHOTS)."""
    folder = Path(SHOTS) if SHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    for w, h in ((1366, 768), (1920, 1080)):
        await page.set_viewport_size({"width": w, "height": h})
        await page.wait_for_timeout(300)  # charts follow the resize
        await page.screenshot(path=str(folder / f"{name}-{w}x{h}.png"))


async def test_supervisor_reads_switches_downloads_and_prints(
        site: tuple[str, Service], browser: Any, tmp_path: Path) -> None:
    url, service = site
    day = history_day(service)
    page, problems = await sign_in(browser, url, "sup1", width=1366, height=768)
    await page.wait_for_url("**/wallboard")
    await page.wait_for_selector("#agent-states .count")
    assert await page.locator("#trend canvas").count() == 1  # ECharts, not the old SVG
    await page.click("a.reports-link")
    await page.wait_for_selector("[data-table=overall] tbody tr")
    assert await page.locator("[data-period=day]").get_attribute("aria-pressed") == "true"
    assert await page.locator("[data-table=intervals] tbody tr").count() == 24
    for chart in ("intervals", "hours", "abandons", "departments"):
        assert await page.locator(f"#chart-{chart} canvas").count() == 1, chart
    # one PBX: no PBX picker, no table by PBX (the whole centre is the one PBX)
    assert await page.locator("#pbx-box").is_hidden()
    assert await page.locator("[data-table=pbxs]").count() == 0

    # Day -> month: a row per day of the month, and the month's history is in it.
    await page.fill("#day", day)
    await page.dispatch_event("#day", "change")
    await page.click("[data-period=month]")
    await page.wait_for_selector("[data-period=month][aria-pressed=true]")
    # The button is pressed before the month's figures arrive: wait for its rows.
    await page.wait_for_function(
        "() => document.querySelectorAll('[data-table=intervals] tbody tr').length >= 28")
    assert "period=month" in page.url
    month = await (await page.request.get(
        url + f"/api/reports/summary?period=month&day={day}")).json()
    offered = month["calls"]["overall"]["offered"]
    assert offered >= 3000 * 0.5
    cells = page.locator("[data-table=overall] tbody td")
    assert await cells.nth(1).text_content() == str(offered)
    await shoot(page, tmp_path, "reports-month")

    # A figure's definition is one click away: Asterisk's SL divides by completed calls.
    await page.click("[data-table=overall] th button[data-def=servicelevel_perf]")
    assert "已完成" in (await page.text_content("#def-rule") or "")
    await page.click("#definition button")

    # XLSX: every table a sheet, the same numbers as the page.
    async with page.expect_download() as got:
        await page.click("#xlsx")
    download = await got.value
    assert download.suggested_filename.endswith(".xlsx")
    book = openpyxl.load_workbook(io.BytesIO(Path(await download.path()).read_bytes()))
    assert {"总体", "分时段", "按队列", "话务员", "承办单位考核", "热点·街道"} <= set(book.sheetnames)
    assert book["总体"]["B1"].value == "呼入量" and book["总体"]["B2"].value == offered
    assert book["分时段"].max_row - 1 == len(month["calls"]["intervals"])
    ranked = [r[1].value for r in book["承办单位考核"].iter_rows(min_row=2)]
    assert ranked == [d["name"] for d in month["departments"]] and ranked

    # CSV: UTF-8 with BOM, Chinese headers, read back.
    async with page.expect_download() as got:
        await page.click("[data-csv=departments]")
    raw = Path(await (await got.value).path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:4] == ["排名", "承办单位", "受理量", "响应率（%）"]
    assert len(rows) - 1 == len(month["departments"])

    # Back to the day, and print its 日报: headed with the centre's name and the day.
    await page.click("[data-period=day]")
    await page.wait_for_selector("[data-period=day][aria-pressed=true]")
    assert await page.locator("[data-table=intervals] tbody tr").count() == 24
    await shoot(page, tmp_path, "reports-day")
    async with page.context.expect_page() as opened:
        await page.click("#print")
    sheet = await opened.value
    await sheet.wait_for_selector("[data-table=overall] tbody tr")
    assert await sheet.text_content("#print-centre") == "12345政务服务便民热线"
    title = await sheet.text_content("#print-title") or ""
    assert title.startswith("日报") and month["day"] in title
    await sheet.emulate_media(media="print")
    assert not await sheet.locator("header.topbar").is_visible()
    assert await sheet.locator("#print-title").is_visible()
    pdf = await sheet.pdf(format="A4", landscape=True)
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    await sheet.emulate_media(media="screen")
    await shoot(sheet, tmp_path, "report-print-day")
    assert problems == []


async def test_a_department_sees_only_its_own_figures(
        site: tuple[str, Service], browser: Any, tmp_path: Path) -> None:
    url, service = site
    day = history_day(service)
    page, problems = await sign_in(browser, url, "dept1", width=1366, height=768)
    await page.wait_for_url("**/orders")
    await page.goto(url + f"/reports?period=month&day={day}")
    await page.wait_for_selector("[data-table=departments] tbody tr")
    tables = await page.locator("#tables section").evaluate_all(
        "els => els.map(e => e.dataset.table)")
    # no call centre figures, no other department: its own 三率, and by channel
    assert tables == ["departments", "department_channels"]
    rows = page.locator("[data-table=departments] tbody tr")
    assert await rows.count() == 1
    assert "城市管理" in (await rows.first.text_content() or "")
    split = await page.locator("[data-table=department_channels] tbody tr").all_text_contents()
    assert split and all("城市管理" in r for r in split)
    heads = await page.locator("[data-table=departments] th").all_text_contents()
    assert {"响应率（%）", "解决率（%）", "满意率（%）"} <= set(heads)
    assert await page.locator("#queue-box").is_hidden()
    # Asking for another department gives its own all the same.
    other = await (await page.request.get(
        url + f"/api/reports/summary?period=month&day={day}&department=housing")).json()
    assert [d["department"] for d in other["departments"]] == ["urban_management"]
    assert "calls" not in other and "agents" not in other
    await shoot(page, tmp_path, "reports-department")
    # The 三率 chart's legend follows the language, as the tables' headers do.
    legend = ("() => echarts.getInstanceByDom(document.querySelector('#chart-departments'))"
              ".getOption().series.map(s => s.name)")
    assert await page.evaluate(legend) == ["响应率", "解决率", "满意率"]
    await page.click("[data-lang-toggle]")
    english = [other["definitions"][k]["en"]
               for k in ("response_rate", "resolution_rate", "satisfaction_rate")]
    assert english == ["Response rate", "Resolution rate", "Satisfaction rate"]
    await page.wait_for_function(f"() => ({legend})()[0] === 'Response rate'")
    assert await page.evaluate(legend) == english
    assert problems == []


async def test_with_two_pbxs_the_supervisor_picks_one_or_the_whole_centre(
        tmp_db: str, browser: Any) -> None:
    """Several ``[[pbx]]``: the page shows the 交换机 picker (whole centre by default) and
    the 按交换机 table; picking a PBX limits the call tables to its calls, and the rows
    of the two PBXs add up to the centre's."""
    from sqlalchemy import text

    from agent_console.auth import seed_demo_users
    from callcenter.config import load
    from tests.console_fakes import FakePbx

    settings = load(env={})
    settings.database_url = tmp_db
    settings.ami.name = "pbx1"
    settings.more_pbxs = [type(settings.ami)(name="pbx2", port=5039)]
    service = Service(settings)
    for n in ("pbx1", "pbx2"):
        service.edges[n].link = FakePbx(service, n)  # type: ignore[assignment]
    await service.start()
    await seed_demo_users(service.store, passwords=CHEAP)
    tz = service.settings.tz
    await seed_report_history(service.store, tz=tz, calls=600, orders=20)
    async with service.store.engine.begin() as conn:  # a third of the calls on pbx2
        await conn.execute(text("UPDATE calls SET pbx = 'pbx2' WHERE "
                                "CAST(SUBSTR(uniqueid, LENGTH(uniqueid)) AS INTEGER) % 3 = 0"))
        await conn.execute(text("DELETE FROM report_days"))
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    async with served(service, app) as url:
        page, problems = await sign_in(browser, url, "sup1", width=1366, height=768)
        await page.wait_for_url("**/wallboard")
        day = history_day(service)
        await page.goto(url + f"/reports?period=month&day={day}")
        await page.wait_for_selector("[data-table=pbxs] tbody tr")
        assert await page.locator("#pbx-box").is_visible()
        assert await page.locator("#pbx").input_value() == ""  # the whole centre
        whole = await (await page.request.get(
            url + f"/api/reports/summary?period=month&day={day}")).json()
        rows = whole["calls"]["pbxs"]
        assert [r["pbx"] for r in rows] == ["pbx1", "pbx2"] and all(r["offered"] for r in rows)
        assert sum(r["offered"] for r in rows) == whole["calls"]["overall"]["offered"]
        cells = page.locator("[data-table=overall] tbody td")
        assert await cells.nth(1).text_content() == str(whole["calls"]["overall"]["offered"])
        await page.select_option("#pbx", "pbx2")
        await page.wait_for_function(
            "n => document.querySelector('[data-table=overall] tbody td:nth-child(2)')"
            ".textContent === String(n)", arg=rows[1]["offered"])
        assert "pbx=pbx2" in page.url
        assert await page.locator("[data-table=pbxs] tbody tr").count() == 1
        assert "pbx=pbx2" in (await page.get_attribute("#xlsx", "href") or "")
        bad = await page.request.get(
            url + f"/api/reports/summary?period=month&day={day}&pbx=pbx9")
        assert bad.status == 400
        assert problems == []
