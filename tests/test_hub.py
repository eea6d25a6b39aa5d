"""The push hub alone (agent_console.hub): narrow streams, routed and urgent refreshes.

With 1,000 operators connected, a ring must rebuild the ringing operator's
screen, not all 1,100; these tests count the builds.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from agent_console.hub import Hub, adopt, diff
from agent_console.live import _pump, _send_watchdog


class Views:
    """Builders that count how often each stream was built."""

    def __init__(self) -> None:
        self.state: dict[str, int] = {}
        self.built: dict[str, int] = {}

    def build(self, key: str) -> Any:
        self.state.setdefault(key, 0)
        self.built.setdefault(key, 0)

        def view(now: float) -> dict[str, Any]:
            self.built[key] += 1
            return {"n": self.state[key]}
        return view

    def reset(self) -> None:
        self.built = dict.fromkeys(self.built, 0)


def updates(client: Any, hub: Hub) -> list[dict[str, Any]]:
    out = []
    while not client.queue.empty():
        text = hub.next_message(client, client.queue.get_nowait())
        if text is not None:
            out.append(json.loads(text))
    return out


def test_a_routed_refresh_rebuilds_the_named_narrow_streams_and_the_wide_ones() -> None:
    views = Views()
    hub = Hub(clock=lambda: 1.0)
    a = hub.attach("op:a", views.build("op:a"), narrow=True)
    b = hub.attach("op:b", views.build("op:b"), narrow=True)
    wall = hub.attach("wall", views.build("wall"))
    for c in (a, b, wall):
        updates(c, hub)
    views.reset()
    views.state.update({"op:a": 1, "op:b": 1, "wall": 1})
    assert hub.refresh({"op:a"}) == 2
    assert views.built == {"op:a": 1, "op:b": 0, "wall": 1}
    assert [m["type"] for m in updates(a, hub)] == ["update"] and updates(b, hub) == []
    views.reset()
    assert hub.refresh({"op:b"}, wide=False) == 1  # urgent: that screen alone
    assert views.built == {"op:a": 0, "op:b": 1, "wall": 0}
    views.reset()
    hub.refresh()  # full: every stream
    assert views.built == {"op:a": 1, "op:b": 1, "wall": 1}


def test_narrow_streams_keep_fewer_updates_for_resuming() -> None:
    hub = Hub(clock=lambda: 1.0)
    op = hub.attach("op:a", lambda now: {}, narrow=True)
    wall = hub.attach("wall", lambda now: {})
    assert op.stream.updates.maxlen == 16 and wall.stream.updates.maxlen == 256
    n = {"v": 0}
    op.stream.build = lambda now: {"n": n["v"]}
    for i in range(1, 41):
        n["v"] = i
        hub.refresh()
        updates(op, hub)
    assert op.stream.seq == 40 and [s for s, _ in op.stream.updates] == list(range(25, 41))
    assert op.stream.missed(op.stream.id, 30) is not None
    assert op.stream.missed(op.stream.id, 10) is None  # gone: a snapshot instead


async def test_an_urgent_change_refreshes_only_the_screens_it_is_routed_to() -> None:
    views = Views()
    hub = Hub(clock=lambda: 1.0, min_interval=5.0, refresh_every=60.0,
              urgent=lambda changes: "ring" in changes,
              route=lambda changes: {c for c in changes if c.startswith("op:")})
    clients = [hub.attach(k, views.build(k), narrow=k != "wall")
               for k in ("op:a", "op:b", "wall")]
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.sleep(0.05)
        for c in clients:
            updates(c, hub)
        views.reset()
        views.state.update({"op:a": 1, "op:b": 1, "wall": 1})
        hub.changed(["op:a", "ring"])  # type: ignore[list-item]
        await asyncio.sleep(0.05)
        assert views.built == {"op:a": 1, "op:b": 0, "wall": 0}  # at once, that screen alone
        assert [m["ops"] for m in updates(clients[0], hub)] == [[["set", ["n"], 1]]]
        hub.changed(["op:b"])  # type: ignore[list-item]  # not urgent: the normal cadence
        await asyncio.sleep(0.05)
        assert views.built["op:b"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_change_no_route_can_place_rebuilds_everything() -> None:
    views = Views()
    hub = Hub(clock=lambda: 1.0, min_interval=0.01, refresh_every=60.0,
              route=lambda changes: None)
    for k in ("op:a", "op:b"):
        hub.attach(k, views.build(k), narrow=True)
    task = asyncio.create_task(hub.run())
    try:
        await asyncio.sleep(0.05)
        views.reset()
        hub.changed(["link down"])  # type: ignore[list-item]
        await asyncio.sleep(0.05)
        assert views.built == {"op:a": 1, "op:b": 1}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_narrow_stream_nobody_watched_is_brought_up_to_date_on_return() -> None:
    views = Views()
    hub = Hub(clock=lambda: 1.0, min_interval=0.01, refresh_every=60.0,
              route=lambda changes: set())
    first = hub.attach("op:a", views.build("op:a"), narrow=True)
    snap = updates(first, hub)[0]
    hub.detach(first)
    views.state["op:a"] = 7  # changed while nobody watched; no route named it
    task = asyncio.create_task(hub.run())
    try:
        again = hub.attach("op:a", views.build("op:a"), snap["stream"], snap["seq"],
                           narrow=True)
        await asyncio.sleep(0.05)
        got = updates(again, hub)
        assert [(m["type"], m["seq"]) for m in got] == [("update", snap["seq"] + 1)]
        assert got[0]["ops"] == [["set", ["n"], 7]]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_kept_document_takes_only_the_values_that_changed() -> None:
    shared = {"a": {"w": 2}, "b": {"w": 0}}  # e.g. the queue figures every operator shows
    old = {"me": {"u": 1}, "agent": {"state": "ready"}, "queues": {"a": {"w": 1}, "b": {"w": 0}},
           "gone": 1}
    me = old["me"]
    new = {"me": {"u": 1}, "agent": {"state": "ringing"}, "queues": shared, "call": {"id": "1"}}
    kept = adopt(old, new, diff(old, new))
    assert kept is old and kept == new
    assert kept["me"] is me and kept["queues"] is shared
    assert shared == {"a": {"w": 2}, "b": {"w": 0}}  # never changed by the hub


async def test_a_send_stuck_on_a_client_that_stopped_reading_is_ended() -> None:
    hub = Hub(clock=lambda: 1.0)
    client = hub.attach("wall", lambda now: {"n": 1})

    class StuckSocket:
        closed = False

        async def send_str(self, text: str) -> None:
            await asyncio.Event().wait()  # the client's window is full: never returns

        async def close(self, **_: Any) -> None:
            self.closed = True

    class Transport:  # nothing buffered that we can see: only the stuck send tells
        aborted = False

        def is_closing(self) -> bool:
            return self.aborted

        def get_write_buffer_size(self) -> int:
            return 0

        def get_extra_info(self, name: str) -> None:
            return None

        def abort(self) -> None:
            self.aborted = True

    ws = StuckSocket()
    transport = Transport()
    c = SimpleNamespace(hub=hub, sending={}, senders={}, transports={ws: transport},
                        backlog_since={}, max_unsent_bytes=1 << 20, max_unsent_age_s=0.05,
                        slow_cuts=0, socket_sessions={}, slow_cooldown={})
    c.senders[ws] = asyncio.create_task(_pump(c, ws, client))  # type: ignore[arg-type]
    dog = asyncio.create_task(_send_watchdog(c, every=0.01))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.03)
        assert ws in c.sending and not ws.closed  # sending the snapshot, not yet too long
        await asyncio.sleep(0.2)
        assert ws.closed and c.senders[ws].cancelled() and c.sending == {}
        assert transport.aborted and c.slow_cuts == 1
    finally:
        dog.cancel()
        await asyncio.gather(dog, return_exceptions=True)


async def test_a_full_refresh_sweeps_the_narrow_streams_a_slice_at_a_time() -> None:
    """The clock-driven full refresh rebuilds every wide stream, but of the narrow ones
    (operator screens, which no clock changes) only the next slice of a sweep: a pass
    over all of them begins every ``sweep_every`` and each is rebuilt once in it, not all
    5,000 every second; a new shift (``rebuild_all``) rebuilds all at once."""
    views = Views()
    keys = [f"op:{i}" for i in range(10)]
    now = {"t": 100.0}
    hub = Hub(clock=lambda: now["t"], min_interval=0.01, refresh_every=0.05,
              sweep_every=0.25, route=lambda changes: set())
    for k in keys:
        hub.attach(k, views.build(k), narrow=True)
    hub.attach("wall", views.build("wall"))
    views.reset()
    for _ in range(5):  # five full refreshes: one pass, each screen once
        await hub._full_refresh()
        now["t"] += 0.05
    assert views.built["wall"] == 5
    assert {k: views.built[k] for k in keys} == dict.fromkeys(keys, 1)
    assert hub.sweeps == 1
    views.reset()
    await hub._full_refresh()  # 0.25 s after the first pass began: the next begins
    assert sum(views.built[k] for k in keys) == 2 and hub.sweeps == 2
    views.reset()
    hub.rebuild_all()
    await hub._full_refresh()
    assert views.built == dict.fromkeys([*keys, "wall"], 1) and hub.sweeps == 3
    views.reset()
    now["t"] += 0.05
    await hub._full_refresh()  # that pass was whole: the next one waits its turn
    assert sum(views.built[k] for k in keys) == 0 and views.built["wall"] == 1


async def test_a_view_that_fails_does_not_stop_the_others() -> None:
    """One screen's build raising (a bug, a bad value) is logged; the rest of the refresh
    goes on, the wide streams and the routed screens included."""
    views = Views()
    hub = Hub(clock=lambda: 1.0, route=lambda changes: set())

    def broken(now: float) -> dict[str, Any]:
        raise RuntimeError("broken view")

    hub.attach("op:a", views.build("op:a"), narrow=True)
    bad = hub.attach("op:bad", lambda now: {}, narrow=True)
    bad.stream.build = broken
    hub.attach("wall", views.build("wall"))
    views.reset()
    views.state.update({"op:a": 1, "wall": 1})
    hub.changed(["op:a", "op:bad"])  # type: ignore[list-item]
    hub._pending |= {"op:a", "op:bad"}
    assert await hub._full_refresh() == 2  # op:a and the wall, op:bad logged
    assert views.built == {"op:a": 1, "wall": 1}


async def test_the_shared_figures_go_out_at_most_every_shared_every() -> None:
    """The queue figures every operator screen shows go to every operator socket: sent
    at most every ``shared_every`` however often the full refresh runs (a link change,
    which rebuilds everything, sends them at once)."""
    now = {"t": 100.0}
    figures = {"waiting": 0}
    hub = Hub(clock=lambda: now["t"], refresh_every=1.0, shared_every=2.0)
    hub.shared_build = lambda at: dict(figures)
    sent: list[str] = []
    hub.shared_listeners.append(sent.append)
    for step in range(6):  # a full refresh a second, the figures changing each time
        figures["waiting"] = step + 1
        await hub._full_refresh()
        now["t"] += 1.0
    assert [json.loads(t)["data"]["waiting"] for t in sent] == [1, 3, 5]
    figures["waiting"] = 9
    hub.rebuild_all()
    await hub._full_refresh()
    assert json.loads(sent[-1])["data"]["waiting"] == 9
