"""The live bus on a real Redis: the core publishes the wallboard's numbered updates once;
followers (web workers) rebuild the same document, catch up after a (re)start, resume a
browser from the entry id it names, and start over when a new core (a new epoch) begins."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from agent_console.hub import diff
from agent_console.server import make_app
from agent_console.session import CONSOLE
from callcenter.bus import BusFollower, BusPublisher, parse_resume
from callcenter.web import make_worker_app, publish_wall
from tests.console_fakes import Person, serving, started_service
from tests.test_end_to_end import wait_for


class View:
    """A document that changes and numbers its changes, like one hub stream."""

    def __init__(self) -> None:
        self.seq, self.doc = 0, {"agents": {}, "title": "wall"}

    def change(self, pub: BusPublisher, key: str, value: Any) -> None:
        new = copy.deepcopy(self.doc)
        new["agents"][key] = value
        ops = diff(self.doc, new)
        self.doc, self.seq = new, self.seq + 1
        pub.update(self.seq, ops)


async def test_followers_rebuild_catch_up_and_resume(bus_prefix: tuple[str, str]) -> None:
    async with asyncio.timeout(60):  # a stuck Redis read fails the test, never hangs the run
        await followers_rebuild_catch_up_and_resume(*bus_prefix)


async def followers_rebuild_catch_up_and_resume(url: str, prefix: str) -> None:
    view = View()
    pub = BusPublisher(url, prefix, "wall", lambda: (view.seq, copy.deepcopy(view.doc)),
                       epoch=1_000)
    await pub.start()
    seen: list[str] = []
    early = BusFollower(url, prefix, "wall", on_entry=lambda e: seen.append(e.text),
                        block_ms=100)
    await early.start()
    try:
        for i in range(30):
            view.change(pub, f"agent{i % 7}", {"state": ["idle", "busy"][i % 2], "n": i})
            await asyncio.sleep(0)
        await wait_for(lambda: early.seq == view.seq)
        assert early.doc == view.doc and early.epoch == 1_000
        # A follower started later (a restarted worker) catches up from the stream alone.
        late = BusFollower(url, prefix, "wall", block_ms=100)
        await late.start()
        await wait_for(lambda: late.seq == view.seq)
        assert late.doc == view.doc
        await late.stop()
        # A browser that applied up to seq 25 gets 26..30 only, as the core sent them.
        stream, seq = f"bus-{early.epoch}", "25"
        missed = early.missed(*parse_resume(stream, seq))  # type: ignore[misc]
        assert [e.seq for e in missed] == [26, 27, 28, 29, 30]  # type: ignore[union-attr]
        assert json.loads(missed[0].text)["type"] == "update"  # type: ignore[index]
        assert early.missed(999, 25) is None  # another epoch: a snapshot
        assert parse_resume("bus-x", "1") is None and parse_resume("w.1", "1") is None
        # A new core (the standby taking over): a new epoch, which starts with a snapshot.
        await pub.stop()
        view2 = View()
        view2.doc["title"] = "after failover"
        pub2 = BusPublisher(url, prefix, "wall", lambda: (view2.seq, copy.deepcopy(view2.doc)),
                            epoch=500)  # a clock behind the old one still numbers after it
        await pub2.start()
        assert pub2.epoch == 1_001
        view2.change(pub2, "agent1", {"state": "idle"})
        await wait_for(lambda: early.epoch == 1_001 and early.seq == view2.seq)
        assert early.doc == view2.doc
        first_of_new = next(json.loads(t) for t in seen
                            if json.loads(t)["stream"] == "bus-1001")
        assert first_of_new["type"] == "snapshot"
        await pub2.stop()
    finally:
        await early.stop()


def _periodic_rig(url: str, prefix: str, epoch: int) -> tuple[
        list[float], View, BusPublisher, list[dict[str, Any]], BusFollower]:
    """A wallboard view publishing with a clock the test moves (snapshots every 60 s),
    and a reader that notes every message it hands on."""
    now = [1000.0]
    view = View()
    pub = BusPublisher(url, prefix, "wall", lambda: (view.seq, copy.deepcopy(view.doc)),
                       epoch=epoch, snapshot_every=60.0, clock=lambda: now[0])
    seen: list[dict[str, Any]] = []
    early = BusFollower(url, prefix, "wall", on_entry=lambda e: seen.append(
        json.loads(e.text)), block_ms=100)
    return now, view, pub, seen, early


async def test_a_periodic_snapshot_keeps_current_readers_on_updates(
        bus_prefix: tuple[str, str]) -> None:
    """The snapshot written every ``snapshot_every`` s is for late readers; one that is
    current gets the update it stands for (a wallboard snapshot is megabytes to every
    socket), and a late one still starts from it."""
    now, view, pub, seen, early = _periodic_rig(*bus_prefix, epoch=2_000)
    url, prefix = bus_prefix
    async with asyncio.timeout(60):
        await pub.start()
        await early.start()
        try:
            for i in range(3):
                view.change(pub, f"agent{i}", {"state": "idle", "n": i})
            await wait_for(lambda: early.seq == 3)
            now[0] += 61  # a periodic snapshot is due with the next entries
            for i in range(3):
                view.change(pub, f"agent{i}", {"state": "busy", "n": i})
            await wait_for(lambda: early.seq == 6)
            assert early.doc == view.doc
            assert [m["type"] for m in seen if m["seq"] > 3] == ["update"] * 3
            assert [m["seq"] for m in seen if m["seq"] > 3] == [4, 5, 6]
            kinds = [f[b"kind"] for _, f in await pub.redis.xrange(f"{prefix}:wall",
                                                                   min="2000-4")]
            assert b"snapshot" in kinds  # the late readers' starting point is there
            late = BusFollower(url, prefix, "wall", block_ms=100)
            await late.start()
            await wait_for(lambda: late.seq == 6)
            assert late.doc == view.doc
            await late.stop()
        finally:
            await early.stop()
            await pub.stop()


async def test_a_worker_serves_the_cores_wallboard_from_the_bus(
        tmp_db: str, bus_prefix: tuple[str, str]) -> None:
    async with asyncio.timeout(90):
        await a_worker_serves_the_cores_wallboard(tmp_db, *bus_prefix)


async def a_worker_serves_the_cores_wallboard(tmp_db: str, url: str, prefix: str) -> None:
    service, pbx = await started_service(tmp_db)
    app = make_app(service)
    console = app[CONSOLE]
    wall = publish_wall(console, url, prefix)
    async with serving(service, app) as (core, people):
        await wall.start()
        worker = TestServer(make_worker_app(service.settings, url, prefix))
        await worker.start_server()
        try:
            sup = Person(core)
            people.append(sup)
            assert (await sup.login("sup1"))[0] == 200
            ws_url = str(worker.make_url("/ws/wall"))
            async with sup.http.ws_connect(ws_url) as ws:
                first = json.loads((await ws.receive(timeout=10)).data)
                assert first["type"] == "snapshot" and first["stream"].startswith("bus-")
                doc, seq = first["data"], first["seq"]
                pbx.caller_joins("1795000000.1", "13800001234", queue="hotline")
                while doc.get("queues", {}).get("hotline", {}).get("waiting") != 1:
                    msg = json.loads((await ws.receive(timeout=10)).data)
                    assert msg["type"] == "update" and msg["seq"] == seq + 1
                    for op in msg["ops"]:
                        target = doc
                        for part in op[1][:-1]:
                            target = target.setdefault(part, {})
                        if op[0] == "set":
                            target[op[1][-1]] = op[2]
                        else:
                            target.pop(op[1][-1], None)
                    seq = msg["seq"]
                stream = first["stream"]
            # The core's own wallboard and the worker's copy agree.
            core_wall = console.hub.streams["wall"]
            await wait_for(lambda: core_wall.seq == seq or core_wall.seq > seq)
            # Reconnect naming the entry id: only what was missed, no snapshot.
            pbx.caller_joins("1795000000.2", "13800005678", queue="hotline")
            await wait_for(lambda: wall.publisher.last_seq > seq)
            async with sup.http.ws_connect(f"{ws_url}?stream={stream}&seq={seq}") as ws:
                msg = json.loads((await ws.receive(timeout=10)).data)
                assert msg["type"] == "update" and msg["seq"] == seq + 1
            # Not signed in, or not a supervisor: refused.
            async with aiohttp.ClientSession() as anon, anon.get(ws_url) as r:
                assert r.status == 401
            op = Person(core)
            people.append(op)
            assert (await op.login("op1"))[0] == 200
            async with op.http.get(ws_url) as r:
                assert r.status == 403
            async with sup.http.get(str(worker.make_url("/readyz"))) as r:
                assert r.status == 200, await r.text()
            async with sup.http.get(str(worker.make_url("/metrics"))) as r:
                text = await r.text()
                assert "hotline_bus_lag_seconds_count" in text
                assert "hotline_websockets 0.0" in text
        finally:
            await worker.close()
            await wall.stop()


async def test_a_shared_message_is_fanned_out_once_and_merged_into_snapshots() -> None:
    """The operators' shared figures on the keyed stream: kept, handed on once (the
    core's repeats for late readers are not sent to every socket again), and merged
    into a view's snapshot so a screen that opens is whole at once."""
    from callcenter.bus import SHARED, KeyedFollower, pack

    follower = KeyedFollower("redis://127.0.0.1:6379/0", "unused", "ops")
    handed: list[str] = []
    follower.on_shared = handed.append
    shared = json.dumps({"type": "shared", "seq": 1, "at": 1.0,
                         "data": {"queues": {"hotline": {"waiting": 3}}}})
    snap = json.dumps({"type": "snapshot", "stream": "s.1", "seq": 4, "at": 1.0,
                       "data": {"me": {"username": "op1"}, "call": None}})
    batch = [{"key": SHARED, "kind": "shared", "at": "1.0", "text": shared},
             {"key": "op:op1:x", "kind": "snapshot", "at": "1.0", "text": snap}]
    follower._take(b"1-1", {b"batch": pack(batch).encode()}, live=True)
    follower._take(b"1-2", {b"batch": pack(batch[:1]).encode()}, live=True)  # a repeat
    assert handed == [shared]
    view = follower.views["op:op1:x"]
    assert "queues" not in view.doc  # the screen's own document stays its own
    whole = json.loads(view.snapshot_message(follower.shared_doc))
    assert whole["seq"] == 4 and whole["data"]["queues"]["hotline"]["waiting"] == 3
    await follower.redis.aclose()


async def test_the_shared_message_goes_out_a_slice_per_turn_and_a_newer_one_replaces_it(
) -> None:
    """The queue figures go to a worker's 2,500 operator sockets ``shared_slice`` per
    turn of the loop, so a screen pop that arrives meanwhile waits for a slice, not for
    the whole fan-out; a newer message replaces one still going out."""
    from types import SimpleNamespace

    from callcenter.web import Viewer, Worker

    worker = Worker(None, None, None, shared_slice=10,  # type: ignore[arg-type]
                    shared_spread_s=0.0)
    viewers = [Viewer(SimpleNamespace(closed=False), asyncio.Queue(), "t",  # type: ignore[arg-type]
                      f"op:op{i}:x") for i in range(50)]
    for v in viewers:
        worker.operators.setdefault(v.key, set()).add(v)
    worker.fan_out_shared("first")
    await asyncio.sleep(0)  # the pacer's first turn: one slice
    assert sum(v.queue.qsize() for v in viewers) == 10
    worker.fan_out_operator("op:op49:x", "pop")  # a pop for a socket not offered yet
    assert viewers[49].queue.get_nowait() == "pop"  # at once, ahead of the figures
    await asyncio.sleep(0)
    worker.fan_out_shared("second")  # replaces "first" for the sockets not offered yet
    assert worker._shared_task is not None
    await worker._shared_task
    got = [[v.queue.get_nowait() for _ in range(v.queue.qsize())] for v in viewers]
    assert got[:10] == [["first", "second"]] * 10
    assert all(g[-1] == "second" for g in got) and ["first"] not in got
    assert sum(g.count("first") for g in got) == 20  # two slices had gone out


async def test_a_workers_copy_of_a_screen_is_text_and_patches_make_no_containers() -> None:
    """A worker keeps every screen's document; held as dicts, every patch left new
    long-lived containers for the cyclic collector to scan (full runs of 0.25-0.6 s with
    5,000 screens).  Held as text, 200 updates leave no new tracked object behind, and
    the document a screen opening gets is the same."""
    import gc

    from callcenter.bus import KeyedFollower, pack

    follower = KeyedFollower("redis://127.0.0.1:6379/0", "unused", "ops")
    snap = json.dumps({"type": "snapshot", "stream": "s.1", "seq": 0, "at": 1.0,
                       "data": {"agent": {"state": "idle", "n": 0}, "call": None}})
    follower._take(b"1-1", {b"batch": pack([{"key": "op:a:x", "kind": "snapshot",
                                              "at": "1.0", "text": snap}]).encode()},
                   live=True)

    def update(n: int) -> dict[str, str]:
        ops = [["set", ["agent"], {"state": "on_call" if n % 2 else "idle", "n": n}],
               ["set", ["call"], {"uniqueid": f"u{n}", "rings": [n, n + 1]}]]
        return {"key": "op:a:x", "kind": "update", "at": "2.0",
                "text": json.dumps({"type": "update", "stream": "s.1", "seq": n, "at": 2.0,
                                    "ops": ops})}

    batches = [{b"batch": pack([update(n)]).encode()} for n in range(1, 201)]
    gc.collect()
    gc.freeze()  # everything so far out of the way: what an update leaves is alone
    try:
        promoted: dict[int, object] = {}  # (held, so no address is reused)
        for n, fields in enumerate(batches, 1):
            follower._take(f"1-{n + 1}".encode(), fields, live=True)
            gc.collect(1)  # the young collections: survivors go to the old generation
            mine = _reachable(follower.views)  # (not what other threads made meanwhile)
            promoted.update((id(o), o) for o in gc.get_objects(generation=2)
                            if id(o) in mine)
    finally:
        gc.unfreeze()
    # Containers that outlived a young collection: what piles up for the full runs.
    assert len(promoted) < 100, len(promoted)  # (as dicts: two per patch, 400)
    del promoted
    view = follower.views["op:a:x"]
    assert view.seq == 200 and len(view.text.patches) < follower.keep
    assert view.doc == {"agent": {"state": "idle", "n": 200},
                        "call": {"uniqueid": "u200", "rings": [200, 201]}}
    whole = json.loads(view.snapshot_message())
    assert whole == {"type": "snapshot", "stream": "s.1", "seq": 200, "at": 2.0,
                     "data": view.doc}
    await follower.redis.aclose()


def _reachable(root: object) -> set[int]:
    """The ids of every object reachable from ``root`` (not through classes: an
    instance refers to its class, and a class to everything)."""
    import gc

    seen = {id(root)}
    todo = [root]
    while todo:
        for o in gc.get_referents(todo.pop()):
            if id(o) not in seen and not isinstance(o, type):
                seen.add(id(o))
                todo.append(o)
    return seen


async def test_a_periodic_snapshot_waits_for_the_updates_it_stands_for(
        bus_prefix: tuple[str, str]) -> None:
    """The periodic snapshot falls due while the view is already an update ahead of what
    its subscriber has queued (a turn behind): sent then it would be bare (no update in
    it), which a current reader takes whole - 1.8 MB to every wallboard socket every 30 s
    at a large centre.  It waits for the update and rides with it."""
    now, view, pub, seen, early = _periodic_rig(*bus_prefix, epoch=3_000)
    prefix = bus_prefix[1]
    async with asyncio.timeout(60):
        await pub.start()
        await early.start()
        try:
            view.change(pub, "agent1", {"state": "idle"})
            await wait_for(lambda: early.seq == 1)
            now[0] += 61
            ahead = copy.deepcopy(view.doc)
            ahead["agents"]["agent2"] = {"state": "busy"}
            ops = diff(view.doc, ahead)
            view.doc, view.seq = ahead, 2  # the view moved; its update not queued yet
            pub.wake.set()
            await asyncio.sleep(0.3)
            assert early.seq == 1  # no bare snapshot went out meanwhile
            pub.update(2, ops)  # the subscriber's turn
            await wait_for(lambda: early.seq == 2)
            assert "snapshot" not in [m["type"] for m in seen] and seen[-1]["seq"] == 2
            entries = await pub.redis.xrange(f"{prefix}:wall", min="3000-2")
            assert [f[b"kind"] for _, f in entries] == [b"snapshot"]
            assert b"ops" in entries[0][1]  # it carries its update
            assert early.doc == view.doc
        finally:
            await early.stop()
            await pub.stop()


async def test_the_wall_publisher_that_fell_behind_sends_what_it_missed_as_updates() -> None:
    """The core's wallboard subscriber fell behind (its hub queue was full): it publishes
    the updates it missed from the stream's buffer, numbered as they were, not a bare
    snapshot that every current wallboard would get whole."""
    from types import SimpleNamespace

    from agent_console.hub import Hub
    from callcenter.web import WALL, WallPublisher

    class Sink:
        def __init__(self) -> None:
            self.updates: list[int] = []
            self.resyncs = 0

        def update(self, seq: int, ops: Any) -> None:
            self.updates.append(seq)

        def resync(self) -> None:
            self.resyncs += 1

        async def start(self) -> None:
            pass

    state = {"n": 0}
    hub = Hub(clock=lambda: 1.0, max_queue=8)
    sink = Sink()
    wall = WallPublisher(SimpleNamespace(hub=hub, wall=lambda now: {"n": state["n"]}),
                         sink)  # type: ignore[arg-type]
    await wall.start()
    try:
        await asyncio.sleep(0.01)  # the first snapshot
        assert sink.resyncs == 1
        for i in range(1, 21):  # 20 updates while its pump does not run: queue overflows
            state["n"] = i
            hub.refresh()
        assert wall.client is not None and hub.streams[WALL].seq == 20
        await asyncio.sleep(0.01)
        assert sink.updates == list(range(1, 21)) and sink.resyncs == 1
    finally:
        assert wall.task is not None
        wall.task.cancel()
        await asyncio.gather(wall.task, return_exceptions=True)


async def test_a_workers_screens_hold_the_last_minute_not_the_last_eight_updates() -> None:
    """What a worker keeps to resume a screen is bounded in time (``keep_s``), and the
    prune folds quiet screens' patches: 5,000 quiet screens filling eight-update buffers
    grew a worker ~5 MB a minute for ten minutes and more (scale-out bench)."""
    from callcenter.bus import KeyedFollower, pack

    now = [1000.0]
    follower = KeyedFollower("redis://127.0.0.1:6379/0", "unused", "ops", keep_s=60.0,
                             clock=lambda: now[0])

    def message(key: str, kind: str, seq: int, data: dict[str, object]) -> dict[bytes, bytes]:
        body: dict[str, object] = {"type": kind, "stream": "s.1", "seq": seq, "at": now[0]}
        if kind == "snapshot":
            body["data"] = data
        else:
            body["ops"] = [["set", ["agent"], data]]
        return {b"batch": pack([{"key": key, "kind": kind, "at": str(now[0]),
                                 "text": json.dumps(body)}]).encode()}

    n = 0
    for key in ("op:a:x", "op:b:y"):
        n += 1
        follower._take(f"1-{n}".encode(), message(key, "snapshot", 0, {"agent": {}}),
                       live=True)
    for seq in (1, 2, 3):  # a at 1000..1020 s
        n += 1
        follower._take(f"1-{n}".encode(), message("op:a:x", "update", seq, {"n": seq}),
                       live=True)
        now[0] += 10.0
    a = follower.views["op:a:x"]
    assert a.missed("s.1", 0) is not None and len(a.missed("s.1", 0) or []) == 3
    now[0] = 1075.0  # the first update is 75 s old, the others 65 and 55
    n += 1
    follower._take(f"1-{n}".encode(), message("op:a:x", "update", 4, {"n": 4}), live=True)
    assert [seq for seq, _, _ in a.recent] == [3, 4]  # older than a minute: gone
    assert a.missed("s.1", 0) is None  # so a browser that far back gets a snapshot
    assert a.missed("s.1", 2) is not None
    now[0] = 1200.0  # a quiet two minutes: the prune lets go of the rest
    assert await follower.prune(slice_size=1) == 1
    assert not a.recent and not a.text.patches
    assert a.doc == {"agent": {"n": 4}} and a.seq == 4
    assert a.missed("s.1", 4) == []  # current: nothing missed
    assert await follower.prune() == 0  # nothing more to let go of
    await follower.redis.aclose()


def test_redis_replies_are_parsed_by_hiredis() -> None:
    """redis-py parses replies in Python unless hiredis (>= 3.2) is there, and then falls
    back silently: the core's read of the 5,000-entry watch table took 73 ms of its loop
    in Python, 6.5 ms with hiredis, and every worker parses every bus entry."""
    from redis._parsers import _AsyncHiredisParser
    from redis.asyncio.connection import DefaultParser

    assert DefaultParser is _AsyncHiredisParser
