"""The call-back number rule runs twice: on the server (agent_console/intake.py, which
decides) and in the console page (console.js ``callbackComplete``, which warns before
submitting).  Both must agree, or the page blocks a number the server takes or lets
through one the server refuses: the page's function is run in Chromium on the same
inputs as the server's."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from agent_console.intake import callback_complete, plain_number
from tests.conftest import BROWSER_MARKS

pytestmark = BROWSER_MARKS

CONSOLE_JS = Path(__file__).parents[1] / "agent_console" / "static" / "console.js"

#: Typed as an operator might: digits (ASCII and full-width), +, separators (ASCII,
#: full-width and the dashes an input method gives), 转, spaces, letters.
ALPHABET = ("0123456789" * 4 + "０１２３４５６７８９" + "+＋-－‐‒–—―−()（） 　转转" + "aX#*.")
EXAMPLES = ["13812345678", "010-12345678转123", "+86 138 1234 5678", "（010）１２３４５６７８",
            "12345", "1234", "010–12345678", "0101234567890123456789", "138abc", "转123",
            "+", "", "  13812345678  ", "12345转", "010-1234转 56", "++8613812345678",
            "(010)12345678转", "138－1234－5678", "12345 678 转 9"]


def _page_function() -> str:
    """console.js's ``callbackComplete``, whole (from its line to the closing brace)."""
    text = CONSOLE_JS.read_text(encoding="utf-8")
    found = re.search(r"^function callbackComplete\(number\) \{\n.*?^\}\n", text,
                      re.MULTILINE | re.DOTALL)
    assert found, "console.js has no callbackComplete"
    return found.group(0)


async def test_the_page_and_the_server_agree_on_every_call_back_number(browser: Any) -> None:
    rng = random.Random(12345)
    inputs = EXAMPLES + ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24)))
                         for _ in range(2000)]
    page = await browser.new_page()
    verdicts = await page.evaluate(
        "([source, inputs]) => { const f = new Function(source + '; return callbackComplete;')();"
        " return inputs.map((x) => f(x)); }", [_page_function(), inputs])
    server = [callback_complete(plain_number(x).strip()) for x in inputs]
    differ = [(x, p, s) for x, p, s in zip(inputs, verdicts, server, strict=True) if p != s]
    assert differ == []
    assert 100 < sum(server) < len(server) - 100  # both kinds are well represented
    assert [callback_complete(plain_number(x).strip()) for x in EXAMPLES[:6]] == [
        True, True, True, True, True, False]
