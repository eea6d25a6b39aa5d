"""The whole service over real TCP: a recorded trace streamed by a fake Asterisk
through the guarded link, the consumer, the state, the database and back."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from acd.metrics import by_queue
from acd.state import Call, CallChanged, Outcome, QueueConfig
from callcenter.config import load
from callcenter.db import Store
from callcenter.pbx.replay import parse_raw, read_trace
from callcenter.service import Service
from tests.conftest import trace_dirs
from tests.fakeami import FakeAmi, frame, reply
from tests.pbx.test_replay import truth

TRACE_DIRS = trace_dirs()



def list_answer(action: dict[str, str], complete: str) -> list[bytes]:
    return [reply(action, EventList="start", Message="follows"),
            frame(f"Event: {complete}", f"ActionID: {action.get('ActionID', '')}",
                  "EventList: Complete", "ListItems: 0")]


def event_bytes(trace: Path) -> bytes:
    """The PBX's unsolicited event frames of a trace, as they were on the wire."""
    out = bytearray()
    for f in read_trace(trace):
        if f.direction == "in" and f.raw.startswith("Event:") and "ActionID" not in parse_raw(
                f.raw):
            out += f.raw.encode("utf-8")
    return bytes(out)


async def start_service(fake: FakeAmi, db_url: str, ping_interval: float = 1.0) -> Service:
    settings = load()
    settings.ami.port = fake.port
    settings.ami.secret = fake.secret
    settings.ami.ping_interval = ping_interval
    settings.database_url = db_url
    settings.queues = {"hotline": QueueConfig(15, 3)}
    service = Service(settings)
    await service.start()
    for _ in range(200):
        if service.centre.link_up:
            break
        await asyncio.sleep(0.02)
    assert service.centre.link_up
    return service


async def test_trace_streamed_over_tcp_gives_asterisk_counters(tmp_db: str) -> None:
    trace_dir = TRACE_DIRS[0]
    params, _ = truth(trace_dir)
    fake = FakeAmi()
    fake.handlers["QueueStatus"] = lambda a: list_answer(a, "QueueStatusComplete")
    fake.handlers["CoreShowChannels"] = lambda a: list_answer(a, "CoreShowChannelsComplete")
    await fake.start()
    service = await start_service(fake, tmp_db)
    try:
        data = event_bytes(trace_dir / "trace.jsonl")
        rng = random.Random(7)
        i = 0
        while i < len(data):  # cut anywhere, Chinese names included
            n = rng.randint(1, 700)
            await fake.send(data[i:i + n])
            i += n
        for _ in range(1000):  # up to 20 s on a loaded machine
            await asyncio.sleep(0.02)
            await service.drain()
            if sum(c.completed for c in service.centre.observed.values()) >= 26:
                break
        await service.flush()
        live = service.metrics_json(0, 2**40)["queues"]["hotline"]
    finally:
        await service.stop()
        await fake.close()
    p = params["hotline"]
    assert live["completed"] == int(p["Completed"])
    assert live["abandoned"] == int(p["Abandoned"])
    assert round(live["servicelevel_perf"], 1) == float(p["ServicelevelPerf"])
    assert round(live["servicelevel_perf2"], 1) == float(p["ServicelevelPerf2"])
    # The live figures carry Asterisk's smoothed Holdtime/TalkTime too (were 0).
    assert (live["asterisk_holdtime"], live["asterisk_talktime"]) == (
        int(p["Holdtime"]), int(p["TalkTime"]))
    # Chinese caller names survived every cut, byte-exact.
    store = Store(tmp_db)
    rows = await store.calls_between(0, 2**40)
    await store.close()
    names = {r.caller_name for r in rows}
    scenario = json.loads((trace_dir / "scenario.json").read_text(encoding="utf-8"))
    assert names == {c["name"] for c in scenario}
    # The figures come back from the database alone (a restart loses nothing).
    per, _ = by_queue(rows, lambda q: 15)
    assert per["hotline"].completed == int(p["Completed"])
    assert per["hotline"].servicelevel_perf2 == live["servicelevel_perf2"]


async def test_figures_survive_a_restart(tmp_db: str) -> None:
    trace_dir = TRACE_DIRS[0]
    fake = FakeAmi()
    fake.handlers["QueueStatus"] = lambda a: list_answer(a, "QueueStatusComplete")
    fake.handlers["CoreShowChannels"] = lambda a: list_answer(a, "CoreShowChannelsComplete")
    await fake.start()
    # A slow ping answer on a loaded machine drops the link, and the fake PBX does not
    # send again what it sent into the dropped one: ping rarely here.
    service = await start_service(fake, tmp_db, ping_interval=60.0)
    await fake.send(event_bytes(trace_dir / "trace.jsonl"))
    deadline = asyncio.get_running_loop().time() + 120  # a loaded machine took over 20 s
    while asyncio.get_running_loop().time() < deadline:  # ends as soon as all are in
        await asyncio.sleep(0.02)
        await service.drain()
        if sum(c.completed for c in service.centre.observed.values()) >= 26:
            break
    before = service.metrics_json()["queues"]["hotline"]
    await service.stop()
    again = await start_service(fake, tmp_db, ping_interval=60.0)
    try:
        after = again.metrics_json()["queues"]["hotline"]
    finally:
        await again.stop()
        await fake.close()
    assert after["offered"] == before["offered"] == 36
    assert after == before


async def test_stop_never_drops_the_rows_a_flush_is_writing(tmp_db: str) -> None:
    """stop() while the half-second flush is writing: the rows it took are stored (they
    were lost when stop() cancelled the flush part way - CI's wrapup flake)."""
    fake = FakeAmi()
    fake.handlers["QueueStatus"] = lambda a: list_answer(a, "QueueStatusComplete")
    fake.handlers["CoreShowChannels"] = lambda a: list_answer(a, "CoreShowChannelsComplete")
    await fake.start()
    service = await start_service(fake, tmp_db, ping_interval=60.0)
    real_save = service.store.save_calls_isolating
    writing = asyncio.Event()

    async def slow_save(rows: Any) -> Any:
        """The database answers only once stop() has begun (the link is closed)."""
        if rows:
            writing.set()
            while service.link.up:
                await asyncio.sleep(0.01)
        return await real_save(rows)

    service.store.save_calls_isolating = slow_save  # type: ignore[method-assign]
    call = Call(uniqueid="1795000000.7", queue="hotline", joined_at=1_795_000_000.0,
                outcome=Outcome.COMPLETED, answered_at=1_795_000_004.0, hold_time=4,
                agent="agent1001", ended_at=1_795_000_030.0, talk_time=26)
    service.dispatch([CallChanged(call, "completed")])
    try:
        await asyncio.wait_for(writing.wait(), 10)  # the flush loop took the row
    finally:
        await service.stop()
        await fake.close()
    store = Store(tmp_db)
    rows = await store.calls_between(0, 2**40)
    await store.close()
    assert [(r.uniqueid, r.outcome, r.talk_time) for r in rows] == [
        ("1795000000.7", "completed", 26)]


async def test_link_down_is_visible_and_states_are_audited(tmp_db: str) -> None:
    fake = FakeAmi()
    fake.handlers["QueueStatus"] = lambda a: list_answer(a, "QueueStatusComplete")
    fake.handlers["CoreShowChannels"] = lambda a: list_answer(a, "CoreShowChannelsComplete")
    await fake.start()
    service = await start_service(fake, tmp_db)
    try:
        await fake.send(frame(
            "Event: QueueMemberAdded", "Privilege: agent,all", "Queue: hotline",
            "MemberName: agent1001", "Interface: Local/1001@agents/n", "Paused: 0", "Status: 1"))
        await fake.send(frame(
            "Event: QueueMemberPause", "Privilege: agent,all", "Queue: hotline",
            "MemberName: agent1001", "Interface: Local/1001@agents/n", "Paused: 1",
            "PausedReason: busy", "Status: 1"))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if service.centre.agents.get("Local/1001@agents/n") and service.centre.agents[
                    "Local/1001@agents/n"].state == "paused":
                break
        fake.drop()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not service.snapshot()["link"]["up"]:
                break
        assert service.snapshot()["link"]["up"] is False
        await service.flush()
        rows = await service.store.agent_states("agent1001")
        steps = [(r.old, r.new, r.reason, r.cause) for r in reversed(rows)]
        assert ("logged_out", "ready", "", "QueueMemberAdded") in steps
        assert ("ready", "paused", "busy", "QueueMemberPause") in steps
        # The link comes back by itself and the state says so again.
        for _ in range(300):
            await asyncio.sleep(0.02)
            if service.snapshot()["link"]["up"]:
                break
        assert service.snapshot()["link"]["up"] is True
    finally:
        await service.stop()
        await fake.close()


def test_migration_0005_keeps_rows_and_adds_visits(sync_db: str) -> None:
    """Existing call rows become first visits of their channel; a downgrade drops
    later visits only; an upgrade again restores the columns."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, text

    from callcenter.db import alembic_config

    url = sync_db
    cfg = alembic_config(url)
    before = ScriptDirectory.from_config(cfg).get_revision("0005").down_revision
    assert isinstance(before, str)
    command.upgrade(cfg, before)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO calls (uniqueid, queue, joined_at, outcome, caller_num, caller_name, "
            "hotline, category, ivr_path, agent, interface, wrap_s, rings, ring_no_answer, "
            "estimated) VALUES ('1700000000.1', 'hotline', 1700000000, 'completed', '', '', "
            "'', '', '', '', '', 0, 0, 0, false)"))
    command.upgrade(cfg, "head")
    with engine.begin() as conn:
        row = conn.execute(text("SELECT channel_uniqueid, visit, previous_visit FROM calls"
                                )).one()
        assert tuple(row) == ("1700000000.1", 1, "")
        conn.execute(text(
            "INSERT INTO calls (uniqueid, queue, joined_at, outcome, caller_num, caller_name, "
            "hotline, category, ivr_path, agent, interface, wrap_s, rings, ring_no_answer, "
            "estimated, channel_uniqueid, visit, previous_visit, end_reason, settled) VALUES "
            "('1700000000.1#2', 'hotline-en', 1700000030, 'completed', '', '', '', '', '', '', "
            "'', 0, 0, 0, false, '1700000000.1', 2, '1700000000.1', '', '')"))
    command.downgrade(cfg, before)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT uniqueid FROM calls")).scalars().all() == [
            "1700000000.1"]
    command.upgrade(cfg, "head")
    engine.dispose()


async def test_queue_log_read_from_the_realtime_table(tmp_path: Path) -> None:
    """Asterisk's realtime queue_log backend writes a table (time, callid, queuename,
    agent, event, data1..data5): the service reads it like the file."""
    import sqlite3
    from datetime import datetime

    from callcenter.config import load
    from callcenter.service import Service

    path = tmp_path / "asterisk.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE queue_log (id INTEGER PRIMARY KEY, time TEXT, callid TEXT, "
               "queuename TEXT, agent TEXT, event TEXT, data1 TEXT, data2 TEXT, data3 TEXT, "
               "data4 TEXT, data5 TEXT)")
    t = 1_795_000_000
    stamp = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    db.executemany("INSERT INTO queue_log (time, callid, queuename, agent, event, data1, "
                   "data2, data3) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                       (str(t), "1.1", "hotline", "NONE", "ENTERQUEUE", "", "138", "1"),
                       (str(t + 3), "1.1", "hotline", "agent1001", "CONNECT", "3", "1.2", "2"),
                       (stamp, "0.9", "hotline", "NONE", "ENTERQUEUE", "", "139", "1")])
    db.commit()
    db.close()
    settings = load(env={})
    settings.database_url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    settings.queue_log = f"sqlite+aiosqlite:///{path}"
    service = Service(settings)
    entries = await service._read_queue_log(t + 10)
    assert entries is not None
    assert [(e.callid, e.event, e.data[:2]) for e in entries if e.callid == "1.1"] == [
        ("1.1", "ENTERQUEUE", ("", "138")), ("1.1", "CONNECT", ("3", "1.2"))]
    settings.queue_log = str(tmp_path / "missing")
    assert await service._read_queue_log(t) is None  # unreadable: counters estimate
    for engine in service._queue_log_engines.values():
        await engine.dispose()
    await service.store.close()
