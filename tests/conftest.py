from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Recorded real-Asterisk traces and the bug-report cases, kept in the repository
#: (tests/data, copied from the shared folder with their READMEs); HOTLINE_SHARED
#: points the suite at another copy of the same layout.
SHARED = Path(os.environ.get("HOTLINE_SHARED") or ROOT / "tests" / "data")
TRACES = SHARED / "ami-traces"
CASES = SHARED / "ami-cases"


def trace_dirs() -> list[Path]:
    return sorted(p for p in TRACES.glob("*/") if (p / "trace.jsonl").exists())


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.glob("*/") if (p / "expected.json").exists())


@pytest.fixture
def tmp_db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"


@pytest.fixture
async def store(tmp_db: str) -> AsyncIterator[Any]:
    """A migrated database on a fresh SQLite file (callcenter.db.Store), closed after."""
    from callcenter.db import Store

    s = Store(tmp_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a downloaded browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium driven by Playwright, closed after the test."""
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(browser: Any, base_url: str, user: str, *, width: int = 1400,
                  height: int = 900) -> tuple[Any, list[str]]:
    """A page signed in as ``user`` (password ``demo``) at ``base_url`` (no trailing /),
    left where the login sent it; the list collects console and page errors (CSP too)."""
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN")
    context.set_default_timeout(8000)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(base_url + "/login")
    await page.fill("#username", user)
    await page.fill("#password", "demo")
    await page.press("#password", "Enter")
    return page, problems
