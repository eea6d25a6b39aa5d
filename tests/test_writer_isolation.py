"""One bad value must not stop the writer (issue 12, item 6).

The PBX's numbers are range-checked where they are parsed (acd/events.py: HoldTime
2**63, a negative HoldTime, Arabic-Indic digits are dropped with a log line); and the
database writer (Service.flush -> Store.*_isolating) writes the rest of a batch when
one row is refused, keeps the refused row aside with its error and raises an alert,
instead of retrying the batch for ever.  With HOTLINE_TEST_DATABASE set this runs on
PostgreSQL too, where an over-long string is refused as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select, text

from acd import events as ev
from agent_console.alerts import set_aside_alerts
from agent_console.auth import seed_demo_users
from agent_console.server import make_app
from callcenter.config import load
from callcenter.db import CallRow
from callcenter.service import Service
from tests.console_fakes import CHEAP, Person


def call_row(uid: str, **over: Any) -> dict[str, Any]:
    row = {"uniqueid": uid, "queue": "hotline", "joined_at": 1_700_000_000.0,
           "caller_num": "13800000000", "caller_name": "张三", "hotline": "12345",
           "category": "", "ivr_path": "", "outcome": "abandoned", "left_at": 1_700_000_030.0,
           "answered_at": None, "hold_time": 30, "agent": "", "interface": "",
           "ended_at": None, "talk_time": None, "wrap_s": 0.0, "rings": 0,
           "ring_no_answer": 0, "estimated": False}
    return row | over


@pytest.fixture
async def service(tmp_db: str) -> AsyncIterator[Service]:
    settings = load(env={})
    settings.database_url = tmp_db
    s = Service(settings)
    await s.store.open()
    try:
        yield s
    finally:
        await s.store.close()


async def stored(service: Service) -> list[str]:
    async with service.store.sessions() as s:
        return sorted(r.uniqueid for r in await s.scalars(select(CallRow)))


async def test_a_refused_row_is_set_aside_and_the_rest_are_written(service: Service) -> None:
    bad = {"hold_time": 9223372036854775808}  # 2**63: no INTEGER column takes it
    if service.store.engine.dialect.name == "postgresql":
        bad["caller_name"] = "名" * 500  # VARCHAR(120)
    for uid, over in (("1.1", {}), ("1.2", bad), ("1.3", {})):
        service._dirty_calls[uid] = call_row(uid, **over)
    service._agent_rows.append({"at": 1.0, "agent": "agent1001", "interface": "Local/1001",
                                "old": "ready", "new": "paused", "step": "pause",
                                "reason": "meal", "cause": ""})
    await service.flush()
    assert await stored(service) == ["1.1", "1.3"]
    assert [(t, r["uniqueid"]) for t, r, _, _ in service.set_aside] == [("calls", "1.2")]
    error = service.set_aside[0][2]
    assert error and len(error) <= 200
    assert service._dirty_calls == {} and service._agent_rows == []  # not retried for ever
    assert len(await service.store.agent_states()) == 1
    # later batches go on being written
    service._dirty_calls["1.4"] = call_row("1.4")
    await service.flush()
    assert await stored(service) == ["1.1", "1.3", "1.4"]
    alerts = set_aside_alerts(service.set_aside)
    assert [(a.kind, a.subject, a.severity, a.detail["count"]) for a in alerts] == [
        ("records_set_aside", "calls", "critical", 1)]


async def test_set_aside_rows_are_stored_listed_and_survive_a_restart(tmp_db: str) -> None:
    settings = load(env={})
    settings.database_url = tmp_db
    first = Service(settings)
    await first.store.open()
    try:
        first._dirty_calls["3.1"] = call_row("3.1", hold_time=2**63)
        first._dirty_calls["3.2"] = call_row("3.2")
        await first.flush()
        assert [r["uniqueid"] for _, r, _, _ in first.set_aside] == ["3.1"]
    finally:
        await first.store.close()
    # A new process (kill -9 or a restart): the row is still there, and still an alert.
    again = Service(settings)
    await again.store.open()
    try:
        kept = await again.store.set_aside_rows()
        assert [(t, r["uniqueid"], r["hold_time"]) for t, r, _, _ in kept] == [
            ("calls", "3.1", 2**63)]
        again.set_aside.extend(await again.store.set_aside_rows(since=again.clock() - 86400))
        assert [a.detail["count"] for a in set_aside_alerts(again.set_aside)] == [1]
        # Supervisors list them (the caller's number masked); others may not.
        app = make_app(again, passwords=CHEAP, failure_delay=0)
        await seed_demo_users(again.store, passwords=CHEAP)
        async with TestServer(app) as server:
            sup, op = Person(server), Person(server)
            try:
                assert (await sup.login("sup1"))[0] == 200
                assert (await op.login("op1"))[0] == 200
                status, doc = await sup.call("GET", "/api/set-aside")
                assert status == 200 and doc["total"] == 1, doc
                (item,) = doc["rows"]
                assert item["table"] == "calls" and item["error"]
                assert item["row"]["uniqueid"] == "3.1"
                assert item["row"]["caller_num"] == "*******0000"
                assert (await op.call("GET", "/api/set-aside"))[0] == 403
            finally:
                await sup.http.close()
                await op.http.close()
    finally:
        await again.store.close()


async def test_set_aside_rows_wait_for_the_database_to_come_back(service: Service) -> None:
    async with service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE set_aside RENAME TO set_aside_away"))
    service._dirty_calls["4.1"] = call_row("4.1", hold_time=2**63)
    await service.flush()
    assert len(service._aside_unstored) == 1 and len(service.set_aside) == 1
    async with service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE set_aside_away RENAME TO set_aside"))
    await service.flush()
    assert service._aside_unstored == []
    assert [r["uniqueid"] for _, r, _, _ in await service.store.set_aside_rows()] == ["4.1"]


async def test_when_the_database_is_away_every_row_is_kept(service: Service) -> None:
    async with service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE calls RENAME TO calls_away"))
    service._dirty_calls["2.1"] = call_row("2.1")
    await service.flush()
    assert list(service._dirty_calls) == ["2.1"] and not service.set_aside
    async with service.store.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE calls_away RENAME TO calls"))
    await service.flush()
    assert await stored(service) == ["2.1"] and service._dirty_calls == {}


AGENT_COMPLETE = {"Event": "AgentComplete", "Queue": "hotline", "Uniqueid": "1",
                  "Interface": "Local/1001@agents/n", "MemberName": "agent1001",
                  "TalkTime": "20", "Reason": "caller"}


@pytest.mark.parametrize(("hold", "why"), [
    ("9223372036854775808", "out of range"),  # 2**63
    ("99999999999999999999999", "not a number"),
    ("-5", "out of range"),  # would date an abandon tomorrow
    ("86401", "out of range"),  # longer than a day
    ("١٢", "not a number"),  # Arabic-Indic digits
    ("１２", "not a number"),  # full-width digits
    ("1e3", "not a number"),
])
def test_pbx_numbers_out_of_range_or_not_ascii_are_dropped(hold: str, why: str) -> None:
    with pytest.raises(ev.MalformedEvent, match=why):
        ev.to_event({**AGENT_COMPLETE, "HoldTime": hold}, 1.0)
    abandon = {"Event": "QueueCallerAbandon", "Queue": "hotline", "Uniqueid": "1",
               "HoldTime": hold, "Position": "1", "OriginalPosition": "1"}
    with pytest.raises(ev.MalformedEvent, match=why):
        ev.to_event(abandon, 1.0)


def test_pbx_numbers_in_range_pass() -> None:
    event = ev.to_event({**AGENT_COMPLETE, "HoldTime": "86400"}, 1.0)
    assert event is not None and event.hold_time == 86400  # type: ignore[attr-defined]
    with pytest.raises(ev.MalformedEvent, match="out of range"):
        ev.to_event({"Event": "QueueMemberStatus", "Queue": "q", "Interface": "i",
                     "CallsTaken": str(10**9 + 1)}, 1.0)
    counters = ev.resync_from(1.0, [{"Event": "QueueParams", "Queue": "q", "Completed": "5",
                                     "ServicelevelPerf": "23.1"}], []).counters
    assert counters[0].completed == 5
    for perf in ("nan", "inf", "101", "٢٣"):
        with pytest.raises(ev.MalformedEvent):
            ev.resync_from(1.0, [{"Event": "QueueParams", "Queue": "q",
                                  "ServicelevelPerf": perf}], [])
