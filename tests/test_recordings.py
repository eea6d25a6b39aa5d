"""Recordings: safe paths, the index, retention, and playback with Range, roles and audit."""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from acd.state import Call, CallChanged, Outcome
from recordings.http import RangeNotSatisfiable, parse_range, recording_handler
from recordings.monitor import MISSING_LOG_EVERY_S, CallRecorder
from recordings.store import RecordingStore, UnsafePath, path_for, write_wav

DAY = 86400
NOW = 1_790_000_000.0
OLD = f"{int(NOW - 40 * DAY)}.7"
NEW = f"{int(NOW - 2 * DAY)}.8"


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    root = tmp_path / "rec"
    for uid, hz in ((OLD, 440), (NEW, 660)):
        write_wav(root / path_for(uid), 0.5, hz)
    (tmp_path / "secret.wav").write_bytes(b"RIFF-not-yours")
    s = RecordingStore(root)
    s.scan()
    return s


async def test_a_recording_that_never_comes_is_logged_once_per_call_then_counted(
        tmp_path: Path) -> None:
    """Asterisk wrote no file: each call is counted once (its completion and its
    MixMonitorStop both ask for the file), and logged at most once a minute with the
    number of calls missing since the last line."""
    async def send(action: dict[str, Any]) -> dict[str, str]:
        return {"Response": "Success"}

    clock = [100.0]
    recorder = CallRecorder(RecordingStore(tmp_path), send, wait_s=0.0,
                            clock=lambda: clock[0])

    async def missing(*uids: str) -> None:
        calls = [Call(uid, "hotline", 0.0, channel=f"PJSIP/trunk-{uid}") for uid in uids]
        recorder.changed([CallChanged(c, "answered") for c in calls])
        await asyncio.gather(*recorder.tasks)
        for c in calls:
            c.outcome = Outcome.COMPLETED
            recorder.changed([CallChanged(c, "completed")])
            recorder.on_ami_event({"Event": "MixMonitorStop", "Channel": c.channel}, 0.0)
        await asyncio.gather(*recorder.tasks)

    with capture_logs() as logs:
        await missing("1700000000.1", "1700000000.2", "1700000000.3")
        clock[0] += MISSING_LOG_EVERY_S
        await missing("1700000000.4")
    assert [(e["call"], e["calls"]) for e in logs if e["event"] == "recording_missing"] == [
        ("1700000000.1", 1), ("1700000000.4", 3)]
    assert (recorder.failed, recorder.started, recorder.tasks) == (4, {}, set())


async def test_a_missing_file_is_looked_for_less_often_as_the_wait_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first look after ``poll_s``, then each pause twice the last up to 2 s, to
    ``wait_s`` in all: ~8 looks in 10 s, not 40 (a PBX writing no files, or the bench,
    had every answered call poll 4 times a second)."""
    from recordings import monitor

    async def send(action: dict[str, Any]) -> dict[str, str]:
        return {"Response": "Success"}

    pauses: list[float] = []

    async def no_sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(monitor.asyncio, "sleep", no_sleep)
    recorder = CallRecorder(RecordingStore(tmp_path), send, wait_s=10.0, poll_s=0.25)
    await recorder._index("1700000000.9")
    assert pauses == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.25] and recorder.failed == 1


async def test_the_recordings_waited_for_are_found_by_call_and_by_channel(
        tmp_path: Path) -> None:
    """Each call's recording is known by its (PBX, channel) and back; a channel that
    records a later call no longer names the first; all forgotten once indexed."""
    sent: list[dict[str, Any]] = []

    async def send(action: dict[str, Any]) -> dict[str, str]:
        sent.append(action)
        return {"Response": "Success"}

    recorder = CallRecorder(RecordingStore(tmp_path), send, wait_s=0.0)
    first = Call("1700000000.1", "hotline", 0.0, channel="PJSIP/trunk-1")
    again = Call("1700000000.2", "hotline", 0.0, channel="PJSIP/trunk-1")  # same channel
    recorder.changed([CallChanged(first, "answered")])
    recorder.changed([CallChanged(first, "answered")])  # once only
    await asyncio.gather(*recorder.tasks)
    assert recorder.started == {("", "PJSIP/trunk-1"): first.uniqueid} and len(sent) == 1
    recorder.changed([CallChanged(again, "answered")])
    await asyncio.gather(*recorder.tasks)
    assert recorder.started == {("", "PJSIP/trunk-1"): again.uniqueid}
    assert recorder._started_where == {again.uniqueid: {("", "PJSIP/trunk-1")}}
    again.outcome = Outcome.COMPLETED
    recorder.changed([CallChanged(again, "completed")])
    await asyncio.gather(*recorder.tasks)
    assert (recorder.started, recorder._started_where, recorder.failed) == ({}, {}, 1)


def test_write_wav_is_a_real_wav(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a" / "t.wav", 1.25, 425)
    with wave.open(str(p)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 10000
        assert max(w.readframes(100)) > 0


def test_path_for_uses_the_calls_utc_day() -> None:
    assert path_for("1700000000.42") == "2023-11-14/1700000000.42.wav"
    with pytest.raises(ValueError):
        path_for("../1.2")


@pytest.mark.parametrize("name", [
    "", "../secret.wav", "2026-01-01/../../secret.wav", "/etc/passwd", "a\x00b.wav",
    "..\\secret.wav", "~/x.wav", ".",
])
def test_resolve_refuses_names_outside_the_root(store: RecordingStore, name: str) -> None:
    with pytest.raises(UnsafePath):
        store.resolve(name)


def test_resolve_refuses_symlinks_escaping_the_root(store: RecordingStore,
                                                    tmp_path: Path) -> None:
    (store.root / "evil.wav").symlink_to(tmp_path / "secret.wav")
    (store.root / "outdir").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        store.resolve("evil.wav")
    with pytest.raises(UnsafePath):
        store.resolve("outdir/secret.wav")
    assert store.resolve(path_for(NEW)).is_file()


def test_scan_indexes_by_uniqueid_and_links_orders(store: RecordingStore,
                                                   tmp_path: Path) -> None:
    (store.root / "9.9.wav").symlink_to(tmp_path / "secret.wav")
    (store.root / "notes.wav").write_bytes(b"x")
    assert store.scan() == 2
    rec = store.get(NEW)
    assert rec is not None and rec.path == path_for(NEW) and rec.size > 8000
    store.link_order(NEW, "WO-1")
    store.link_order(OLD, "WO-1")
    assert [r.uniqueid for r in store.for_order("WO-1")] == [OLD, NEW]
    assert store.for_order("WO-2") == []


def test_retention_dry_run_then_real(store: RecordingStore) -> None:
    old_file = store.resolve(path_for(OLD))
    dry = store.apply_retention(NOW, 30)
    assert dry.dry_run and [r.uniqueid for r in dry.removed] == [OLD]
    assert dry.bytes == old_file.stat().st_size
    assert old_file.exists() and len(store) == 2
    real = store.apply_retention(NOW, 30, dry_run=False)
    assert [r.uniqueid for r in real.removed] == [OLD]
    assert not old_file.exists() and store.get(OLD) is None and store.get(NEW) is not None


def test_retention_keeps_recordings_held_by_orders(store: RecordingStore) -> None:
    store.link_order(OLD, "WO-7")
    report = store.apply_retention(NOW, 30, dry_run=False, hold={"WO-7"})
    assert report.removed == () and [r.uniqueid for r in report.kept_for_orders] == [OLD]
    assert store.get(OLD) is not None


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-10", (90, 99)),
    ("bytes=-500", (0, 99)), ("bytes=95-500", (95, 99)), ("items=0-1", None),
    ("bytes=0-1,5-6", None),
])
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=-0", "bytes=-", "bytes=x-1",
                                    "bytes=" + "9" * 5000 + "-", "bytes=-" + "1" * 5000,
                                    "bytes=١-٢", "bytes=１-２"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


# -- over HTTP ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Actor:
    username: str
    role: str


TOKENS = {"boss": Actor("boss", "supervisor"), "op": Actor("op1", "operator")}


@pytest.fixture
async def client(store: RecordingStore) -> AsyncIterator[tuple[TestClient[Any, Any], list[Any]]]:
    audited: list[tuple[str, str]] = []

    async def authorize(request: web.Request) -> Actor | None:
        return TOKENS.get(request.headers.get("X-Token", ""))

    def audit(actor: Actor, uniqueid: str) -> None:
        audited.append((actor.username, uniqueid))

    app = web.Application()
    app.router.add_get("/api/recordings/{uniqueid}",
                       recording_handler(store, authorize=authorize, audit=audit))
    async with TestClient(TestServer(app)) as c:
        yield c, audited


BOSS = {"X-Token": "boss"}


async def test_whole_file_and_ranges(client: Any, store: RecordingStore) -> None:
    c, audited = client
    data = store.resolve(path_for(NEW)).read_bytes()
    r = await c.get(f"/api/recordings/{NEW}", headers=BOSS)
    assert r.status == 200 and await r.read() == data
    assert r.headers["Accept-Ranges"] == "bytes" and r.headers["Content-Type"] == "audio/wav"
    r = await c.get(f"/api/recordings/{NEW}", headers={**BOSS, "Range": "bytes=0-43"})
    assert r.status == 206 and await r.read() == data[:44]
    assert r.headers["Content-Range"] == f"bytes 0-43/{len(data)}"
    r = await c.get(f"/api/recordings/{NEW}", headers={**BOSS, "Range": "bytes=-100"})
    assert r.status == 206 and await r.read() == data[-100:]
    assert r.headers["Content-Range"] == f"bytes {len(data) - 100}-{len(data) - 1}/{len(data)}"
    r = await c.get(f"/api/recordings/{NEW}", headers={**BOSS, "Range": "bytes=5000-"})
    assert r.status == 206 and await r.read() == data[5000:]
    assert audited == [("boss", NEW)] * 4


async def test_unsatisfiable_range_is_416(client: Any, store: RecordingStore) -> None:
    c, audited = client
    size = store.resolve(path_for(NEW)).stat().st_size
    r = await c.get(f"/api/recordings/{NEW}", headers={**BOSS, "Range": f"bytes={size}-"})
    assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    assert audited == []


async def test_unauthenticated_401_wrong_role_403(client: Any) -> None:
    c, audited = client
    assert (await c.get(f"/api/recordings/{NEW}")).status == 401
    assert (await c.get(f"/api/recordings/{NEW}", headers={"X-Token": "op"})).status == 403
    assert audited == []


@pytest.mark.parametrize("name", ["..%2Fsecret.wav", "1.2", "%2e%2e", "..", "nope"])
async def test_unknown_and_traversal_names_are_404(client: Any, name: str) -> None:
    c, audited = client
    r = await c.get(f"/api/recordings/{name}", headers=BOSS)
    assert r.status == 404
    assert audited == []


async def test_raw_traversal_over_the_socket(client: Any) -> None:
    c, _ = client
    url = f"http://{c.host}:{c.port}/api/recordings/%2e%2e%2f%2e%2e%2fsecret.wav"
    async with ClientSession() as s, s.get(url, headers=BOSS) as r:
        assert r.status == 404
        assert b"RIFF-not-yours" not in await r.read()


async def test_a_recording_swapped_for_an_escaping_symlink_is_refused(
        client: Any, store: RecordingStore, tmp_path: Path) -> None:
    c, audited = client
    target = store.resolve(path_for(NEW))
    os.unlink(target)
    target.symlink_to(tmp_path / "secret.wav")
    r = await c.get(f"/api/recordings/{NEW}", headers=BOSS)
    assert r.status == 404 and audited == []


@given(st.integers(min_value=1, max_value=10_000), st.text(max_size=20))
def test_parse_range_never_leaves_the_file(size: int, spec: str) -> None:
    try:
        got = parse_range(f"bytes={spec}", size)
    except RangeNotSatisfiable:
        return
    if got is not None:
        first, last = got
        assert 0 <= first <= last < size


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.lists(st.sampled_from(["..", ".", "a", "2026-01-01", "x.wav", "/", "\\", "\x00",
                                 "%2e", "~", "outside", "link"]), max_size=6))
def test_resolve_stays_inside_the_root(tmp_path: Path, parts: list[str]) -> None:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    if not (root / "link").is_symlink():
        (root / "link").symlink_to(tmp_path)
    store = RecordingStore(root)
    try:
        path = store.resolve("/".join(parts).replace("//", "/"))
    except UnsafePath:
        return
    assert path.is_relative_to(store.root) and path != store.root


async def test_an_operator_plays_only_their_own_calls(store: RecordingStore) -> None:
    audited: list[tuple[str, str]] = []
    owner = {NEW: "op1"}

    async def authorize(request: web.Request) -> Actor | None:
        return TOKENS.get(request.headers.get("X-Token", ""))

    async def own_call(actor: Actor, uniqueid: str) -> bool:
        return owner.get(uniqueid) == actor.username

    app = web.Application()
    app.router.add_get("/api/recordings/{uniqueid}", recording_handler(
        store, authorize=authorize, audit=lambda a, u: audited.append((a.username, u)),
        own_call=own_call))
    async with TestClient(TestServer(app)) as c:
        op = {"X-Token": "op"}
        assert (await c.get(f"/api/recordings/{NEW}", headers=op)).status == 200
        assert (await c.get(f"/api/recordings/{OLD}", headers=op)).status == 403
        assert (await c.get(f"/api/recordings/{OLD}", headers=BOSS)).status == 200
        assert (await c.get("/api/recordings/..%2Fx", headers=op)).status == 403
    assert audited == [("op1", NEW), ("boss", OLD)]
