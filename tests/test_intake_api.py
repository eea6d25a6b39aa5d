"""Orders filed by a channel (POST /api/intake/orders): keys per channel, idempotency,
the rate limit, and the CLI that makes keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_console.auth import LoginThrottle
from agent_console.intake_api import INTAKE
from agent_console.server import make_app
from callcenter.cli import main
from callcenter.orders.intake import Intake, RateLimit
from tests.console_fakes import CHEAP, Person, serving, started_service


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[tuple[Any, Intake, list[Person]]]:
    service, _ = await started_service(tmp_db)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   throttle=LoginThrottle(free=50))
    async with serving(service, app) as (server, people):
        yield server, app[INTAKE], people


def client(server: Any, people: list[Person]) -> Person:
    p = Person(server)
    people.append(p)
    return p


BODY = {"text": "小区门口井盖丢失，很危险", "caller": "13600001111", "caller_name": "陈女士",
        "location": "和平路12号", "category": "市政设施"}


async def test_a_channel_files_once_per_idempotency_key(rig: Any) -> None:
    server, intake, people = rig
    key_id, key = await intake.create_key("wechat", "12345 mini-programme")
    _, web_key = await intake.create_key("web")
    portal = client(server, people)

    async def post(body: Any, *, api_key: str = key, idem: str = "req-1") -> tuple[int, Any]:
        return await portal.call("POST", "/api/intake/orders", body, csrf=False,
                                 headers={"X-Api-Key": api_key, "Idempotency-Key": idem})

    status, doc = await post(BODY)
    assert status == 201, doc
    first = doc["order"]
    assert first["channel"] == "wechat" and first["state"] == "accepted"
    for _ in range(3):  # the client retries: always the same order, never a second one
        status, doc = await post(BODY)
        assert status == 200 and doc["order"]["number"] == first["number"]
    # Two retries racing each other still file once.
    results = await asyncio.gather(*(post(BODY, idem="race") for _ in range(5)))
    numbers = {d["order"]["number"] for s, d in results if s in (200, 201)}
    assert len(numbers) == 1 and all(s in (200, 201, 409) for s, _ in results)
    assert [s for s, _ in results].count(201) == 1
    # The same client key on another channel is another request.
    status, doc = await post(BODY, api_key=web_key)
    assert status == 201 and doc["order"]["channel"] == "web"
    orders, total = await intake.wo.list(per_page=10)
    assert total == 3
    assert sorted(o.caller.name for o in orders) == ["陈女士"] * 3
    # Wrong or missing key, bad data, missing idempotency key.
    assert (await post(BODY, api_key="hk_wechat_nope"))[0] == 401
    assert (await post(BODY, api_key=""))[0] == 401
    assert (await post({"caller": "1"}, idem="x2"))[0] == 400
    assert (await post({"text": "x", "confidential": "yes"}, idem="x3"))[0] == 400
    assert (await post(BODY, idem=""))[0] == 400
    assert (await post(BODY, idem="bad key with spaces"))[0] == 400
    # A revoked key stops at once.
    assert await intake.revoke(key_id)
    assert (await post(BODY, idem="req-9"))[0] == 401


async def test_the_rate_limit_answers_429_with_retry_after(rig: Any) -> None:
    server, intake, people = rig
    intake.limit = RateLimit(per_minute=6, burst=2)
    _, key = await intake.create_key("app")
    portal = client(server, people)
    statuses = []
    for i in range(3):
        statuses.append((await portal.call(
            "POST", "/api/intake/orders", BODY | {"text": f"第{i}件"}, csrf=False,
            headers={"X-Api-Key": key, "Idempotency-Key": f"k{i}"}))[0])
    assert statuses == [201, 201, 429]


def test_rate_limit_refills_with_time() -> None:
    limit = RateLimit(per_minute=60, burst=2)
    assert limit.take(1, 100.0) == 0 and limit.take(1, 100.0) == 0
    assert limit.take(1, 100.0) == pytest.approx(1.0)
    assert limit.take(2, 100.0) == 0  # per key
    assert limit.take(1, 101.0) == 0


def test_the_cli_creates_lists_and_revokes_keys(tmp_db: str, capsys: Any,
                                                monkeypatch: Any) -> None:
    monkeypatch.setenv("HOTLINE_DATABASE_URL", tmp_db)
    assert main(["intake-keys", "create", "email", "--label", "mailbox robot"]) == 0
    out = capsys.readouterr().out
    assert "hk_email_" in out
    assert main(["intake-keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert "mailbox robot" in listed and "hk_email_" not in listed
    assert main(["intake-keys", "revoke", "1"]) == 0
    assert main(["intake-keys", "revoke", "1"]) != 0
