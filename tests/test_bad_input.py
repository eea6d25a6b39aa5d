"""No input gives a 500 (issue 12, item 2): the hand-written cases, for every route of the
permissions table, as an operator and as a supervisor.

* a body whose every text field holds a lone UTF-16 surrogate (valid JSON);
* a body nested 10,000 deep (and one just past MAX_DEPTH);
* numbers out of range (2**64, -1, 1e400) in every field;
* a lone surrogate, a 5,000-digit number and Arabic-Indic digits in path and query;
* a 5,000-digit Range header on a recording.

Each refused request is a 4xx with a one-line reason in English and Chinese.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent_console.http import MAX_DEPTH
from agent_console.permissions import ROUTES
from tests.test_console_api import Rig, rig  # noqa: F401 - rig is a fixture

LONE = "\\ud800"  # as written in the JSON text
FIELDS = ("reason", "text", "mode", "kind", "target", "uniqueid", "call_uniqueid", "caller",
          "category", "username", "password", "step", "department", "queues", "answer",
          "caller_name", "address", "location", "urgency", "title", "body", "q", "note")
API = sorted(k for k in ROUTES if k[1].startswith("/api/") and k[1] != "/api/logout")
BODY_ROUTES = [k for k in API if k[0] in ("POST", "PUT")]


def concrete(path: str, value: str = "1") -> str:
    return re.sub(r"{\w+}", value, path)


def assert_refusal(status: int, body: Any, where: str) -> None:
    assert 400 <= status < 500, f"{where}: {status} {str(body)[:200]}"
    assert isinstance(body, dict) and body.get("error") and body.get("error_zh"), where
    assert "\n" not in body["error"] and "\n" not in body["error_zh"], where


@pytest.mark.parametrize("who", ["op1", "sup1"])
async def test_lone_surrogates_in_every_text_field_are_refused(rig: Rig, who: str) -> None:  # noqa: F811
    p = await rig.as_user(who)
    raw = ("{" + ", ".join(f'"{f}": "a{LONE}b"' for f in FIELDS) + "}").encode()
    for method, path in BODY_ROUTES:
        status, body = await p.call(method, concrete(path), raw=raw)
        if status in (401, 403, 404, 405):  # the role or the route refused it first
            continue
        assert_refusal(status, body, f"{who} {method} {path}")
    assert rig.pbx.actions == []  # nothing with a surrogate (or at all) reached the PBX


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000])
async def test_deeply_nested_json_is_refused(rig: Rig, depth: int) -> None:  # noqa: F811
    sup = await rig.as_user("sup1")
    raw = ('{"reason": ' + "[" * depth + "]" * depth + "}").encode()
    for method, path in BODY_ROUTES:
        status, body = await sup.call(method, concrete(path), raw=raw)
        if status in (401, 403, 404, 405):
            continue
        assert_refusal(status, body, f"{method} {path} depth {depth}")


async def test_numbers_out_of_range_never_give_a_500(rig: Rig) -> None:  # noqa: F811
    for who in ("op1", "sup1"):
        p = await rig.as_user(who)
        for number in ("18446744073709551616", "-1", "1e400", "9" * 5000):
            raw = ("{" + ", ".join(f'"{f}": {number}' for f in FIELDS + (
                "article_id", "version", "resolved", "satisfaction_operator")) + "}").encode()
            for method, path in BODY_ROUTES:
                status, body = await p.call(method, concrete(path), raw=raw)
                assert status < 500 or status in (502, 503), f"{method} {path}: {body}"
                if status >= 400:
                    assert body.get("error_zh"), path


@pytest.mark.parametrize("value", ["%ED%A0%80", "9" * 5000, "%D9%A1%D9%A2", "-1",
                                   "%EF%BC%91"])
async def test_hostile_path_and_query_values_never_give_a_500(rig: Rig, value: str) -> None:  # noqa: F811
    sup = await rig.as_user("sup1")
    op = await rig.as_user("op1")
    query = "&".join(f"{k}={value}" for k in (
        "state", "department", "page", "per_page", "kind", "status", "text", "q", "from", "to",
        "period", "format", "day", "queue", "table", "limit", "category", "days", "seq",
        "stream"))
    for p in (sup, op):
        for method, path in API:
            url = concrete(path, value) + ("?" + query if method == "GET" else "")
            status, body = await p.call(method, url, body={})
            assert status < 500 or status in (502, 503), f"{method} {url[:80]}: {body}"
            if len(url) > 8000:  # aiohttp's parser refuses the request line (400, text)
                assert 400 <= status < 500
            elif status >= 400:
                assert isinstance(body, dict) and body.get("error_zh"), f"{method} {path}"


async def test_a_5000_digit_range_header_is_416(rig: Rig, tmp_path: Any) -> None:  # noqa: F811
    from agent_console.session import RECORDINGS

    store = rig.server.app[RECORDINGS]
    uid = "1700000000.42"
    wav = store.root / "2023-11-14" / f"{uid}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    wav.write_bytes(b"RIFF" + b"\0" * 100)
    store.scan()
    if store.get(uid) is None:
        pytest.skip("this store indexes recordings another way")
    sup = await rig.as_user("sup1")
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000, "bytes=١-٢"):
        status, body = await sup.call("GET", f"/api/recordings/{uid}",
                                      headers={"Range": header})
        assert status == 416, (header[:20], status, body)
        assert body["error_zh"]
