"""``callcenter demo`` end to end: the simulated citizens go through the FastAGI IVR."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from sqlalchemy import select

from callcenter.config import load
from callcenter.db import AuditRow
from callcenter.demo import start_demo
from ivr.menus import load_config as load_ivr_config


async def test_demo_callers_come_through_the_fastagi_ivr(tmp_db: str, tmp_path: Path) -> None:
    settings = load()
    settings.recordings_root = tmp_path / "recordings"
    demo = await start_demo(settings, port=0, agi_port=0, db=tmp_db, rate=2.0, speed=5.0,
                            agents=0, seed_users=False)
    try:
        assert demo.agi_port > 0
        calls = demo.service.centre.calls
        for _ in range(400):
            if calls:
                break
            await asyncio.sleep(0.025)
        assert calls, "no call joined the queue"
        ivr = load_ivr_config()
        call = next(iter(calls.values()))
        # The default IVR has no menus: IVR_PATH is "direct" (the traffic model's own
        # paths look like "2-3"), HOTLINE is a configured number.
        assert call.ivr_path == "direct"
        assert call.hotline in ivr.hotlines
    finally:
        await demo.stop()


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # 127.0.0.1


async def _login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(url + "api/login", json={"username": username, "password": "demo"}
                         ) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["csrf"])


async def test_demo_recordings_play_for_supervisors_only_and_are_audited(
        tmp_db: str, tmp_path: Path) -> None:
    settings = load()
    settings.recordings_root = tmp_path / "recordings"
    demo = await start_demo(settings, port=0, agi_port=0, db=tmp_db, rate=1.0, speed=60.0,
                            agents=4)
    try:
        recorder = demo.telephony.recorder
        assert recorder is not None  # MixMonitor through AMI; the simulator writes the WAV
        store = recorder.store
        for _ in range(600):
            if len(store):
                break
            await asyncio.sleep(0.05)
        assert len(store), "no completed call was recorded"
        uniqueid = next(iter(store._by_uniqueid))
        path = store.file(uniqueid)
        assert path is not None and path.is_relative_to(settings.recordings_root.resolve())
        size = path.stat().st_size
        url = f"{demo.url}api/recordings/{uniqueid}"
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as r:
            assert r.status == 401
        async with _browser() as sup:
            await _login(sup, demo.url, "sup1")
            async with sup.get(url, headers={"Range": "bytes=0-99"}) as r:
                assert r.status == 206
                assert r.headers["Content-Range"] == f"bytes 0-99/{size}"
                assert (await r.read())[:4] == b"RIFF"
            async with sup.get(url) as r:
                assert r.status == 200 and len(await r.read()) == size
        async with _browser() as op:
            await _login(op, demo.url, "op1")
            async with op.get(url, headers={"Range": "bytes=0-99"}) as r:
                assert r.status == 403
        async with demo.service.store.engine.connect() as conn:
            rows = (await conn.execute(select(AuditRow).where(
                AuditRow.action == "recording_played"))).all()
        assert [(row.actor, row.role, row.target) for row in rows] == [
            ("sup1", "supervisor", uniqueid)] * 2
        # The order taken on that call offers the recording on its page, to supervisors.
        async with _browser() as sup:
            csrf = await _login(sup, demo.url, "sup1")
            async with sup.post(demo.url + "api/orders", headers={"X-CSRF-Token": csrf},
                                json={"text": "路灯不亮", "caller": "13800001111",
                                      "category": "consult", "call_uniqueid": uniqueid}) as r:
                assert r.status == 201, await r.text()
                order_id = (await r.json())["order"]["id"]
            async with sup.get(f"{demo.url}api/orders/{order_id}") as r:
                assert (await r.json())["recording"] == f"/api/recordings/{uniqueid}"
        async with _browser() as op:
            await _login(op, demo.url, "op1")
            async with op.get(f"{demo.url}api/orders/{order_id}") as r:
                assert r.status == 200 and (await r.json())["recording"] is None
    finally:
        await demo.stop()
