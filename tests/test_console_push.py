"""The console's push path with the web app: operator screens and their shared queue
figures (agent_console.server.Console)."""

from __future__ import annotations

import json
from typing import Any

from agent_console.hub import apply_ops
from agent_console.session import CONSOLE
from tests.test_console_api import OP2, Rig, receive, rig  # noqa: F401 - rig is a fixture


async def test_api_live_shows_the_queue_as_it_is_now(rig: Rig) -> None:  # noqa: F811
    op = await rig.as_user("op1")
    await op.call("POST", "/api/agent/signin")
    await rig.settle()
    _, live = await op.call("GET", "/api/live")
    assert live["data"]["queues"]["hotline"]["waiting"] == 0
    rig.pbx.caller_joins("5.1", "13500000005", "甲")
    await rig.service.drain()  # no hub refresh in between: /api/live builds its own figures
    _, live = await op.call("GET", "/api/live")
    assert live["data"]["queues"]["hotline"]["waiting"] == 1


async def test_a_ring_pops_on_its_operator_and_the_queue_figures_follow(rig: Rig) -> None:  # noqa: F811
    op1, op2 = await rig.as_user("op1"), await rig.as_user("op2")
    for p in (op1, op2):
        await p.call("POST", "/api/agent/signin")
    await rig.settle()
    ws1, ws2 = await op1.ws(), await op2.ws()
    doc1 = (await receive(ws1, "snapshot"))["data"]
    doc2 = (await receive(ws2, "snapshot"))["data"]
    rig.pbx.caller_joins("6.1", "13600000006", "乙")
    rig.pbx.ring("6.1", OP2)
    await rig.service.drain()
    while doc2["call"] is None:
        apply_ops(doc2, (await receive(ws2, "update"))["ops"])
    assert doc2["call"]["caller_num"] == "13600000006"
    while doc1["queues"]["hotline"]["waiting"] != 1:  # within shared_every (5 s)
        doc1.update((await receive(ws1, "shared", timeout=12))["data"])
    assert doc1["call"] is None and "13600000006" not in str(doc1)
    for ws in (ws1, ws2):
        await ws.close()


def _apply(doc: dict[str, Any], msg: dict[str, Any]) -> None:
    """What the page's Live does (static/common.js): updates patch, shared replaces."""
    if msg["type"] == "update":
        apply_ops(doc, msg["ops"])
    elif msg["type"] == "shared":
        doc.update(msg["data"])


async def test_queue_figures_alone_make_one_shared_message_not_one_per_operator(
        rig: Rig) -> None:  # noqa: F811
    """A caller joining changes only the figures every screen shares: the hub builds one
    ``shared`` message (each screen gets that text), no operator stream moves, and each
    operator's screen shows the new figures; a screen that reconnects and resumes gets
    the figures as they are now after what it missed."""
    c = rig.app[CONSOLE]
    op1, op2 = await rig.as_user("op1"), await rig.as_user("op2")
    for p in (op1, op2):
        await p.call("POST", "/api/agent/signin")
    await rig.settle()
    ws1, ws2 = await op1.ws(), await op2.ws()
    snap1, snap2 = await receive(ws1, "snapshot"), await receive(ws2, "snapshot")
    doc1, doc2 = snap1["data"], snap2["data"]
    assert doc1["queues"]["hotline"]["waiting"] == 0  # the snapshot carries the figures
    ops = [st for st in c.hub.streams.values() if st.narrow]
    assert len(ops) == 2
    seqs = {st.key: st.seq for st in ops}
    shared_before = c.hub.shared_seq
    made: list[str] = []
    c.hub.shared_listeners.append(made.append)

    rig.pbx.caller_joins("7.1", "13700000007", "丙")
    await rig.service.drain()
    got1 = await receive(ws1, "shared", timeout=12)  # within shared_every (5 s)
    got2 = await receive(ws2, "shared", timeout=12)
    assert got1 == got2 and got1["data"]["queues"]["hotline"]["waiting"] == 1
    assert c.hub.shared_seq == shared_before + 1 and len(made) == 1  # one, for both
    assert json.loads(made[0]) == got1
    assert {st.key: st.seq for st in ops} == seqs  # no operator stream changed
    for doc, got in ((doc1, got1), (doc2, got2)):
        _apply(doc, got)
        assert doc["queues"]["hotline"]["waiting"] == 1 and doc["call"] is None
    await ws1.close()

    # Away, then resumed: nothing of its own missed, so no snapshot, but the figures.
    rig.pbx.caller_joins("7.2", "13700000008", "丁")
    await rig.service.drain()
    while doc2["queues"]["hotline"]["waiting"] != 2:
        _apply(doc2, await receive(ws2, timeout=12))
    again = await op1.ws(f"?stream={snap1['stream']}&seq={snap1['seq']}")
    first = await receive(again, timeout=5)
    assert first["type"] == "shared", first
    _apply(doc1, first)
    assert doc1 == doc2 | {"me": doc1["me"], "agent": doc1["agent"]}
    assert doc1["queues"]["hotline"]["waiting"] == 2
    for ws in (again, ws2):
        await ws.close()


async def test_a_wallboard_tile_follows_a_call_counted_without_an_agent_change(
        rig: Rig) -> None:  # noqa: F811
    """AgentComplete after the operator's device went not-in-use adds the call to their
    talk time and calls taken with no AgentChanged (the state moved before): the call's
    change alone brings the tile up to date, not the next sweep of every tile (30 s
    later, then all 5,000 tiles at once: a megabyte to every wallboard)."""
    from types import SimpleNamespace

    from acd.state import CallChanged

    op = await rig.as_user("op2")
    await op.call("POST", "/api/agent/signin")
    await rig.settle()
    console = rig.app[CONSOLE]
    agent = rig.service.centre.agents[OP2]
    before = console.wall_agents()[agent.name]["calls_taken"]
    agent.calls_taken += 1  # what the completion did, its AgentChanged long gone
    agent.talk_s += 42.0
    call = SimpleNamespace(interface=OP2, pbx=agent.pbx)
    console.note_changes([CallChanged(call, "completed")])  # type: ignore[arg-type]
    tile = console.wall_agents()[agent.name]
    assert tile["calls_taken"] == before + 1 and tile["talk_s"] == agent.talk_s


async def test_the_wallboard_tiles_are_swept_a_slice_at_a_time(rig: Rig) -> None:  # noqa: F811
    """Every tile is rebuilt once per the hub's ``sweep_every`` (what a change missed),
    a ``refresh_every`` share of them per build, never all at once after the first
    build (5,000 tiles rebuilt and diffed at once held the core ~200 ms every 30 s)."""
    import itertools
    import math

    for name in ("op1", "op2"):
        await (await rig.as_user(name)).call("POST", "/api/agent/signin")
    await rig.settle()
    console = rig.app[CONSOLE]
    hub = console.hub
    console._wall_agents = None
    t0 = 1_000_000.0
    tiles = console.wall_agents(t0)  # the first build: every tile
    n = len(tiles)
    assert n >= 2
    per_build = math.ceil(n * hub.refresh_every / hub.sweep_every)
    rebuilt: list[set[str]] = []
    period = round(hub.sweep_every / hub.refresh_every)
    for step in range(1, 3 * period + 1):
        now = t0 + step * hub.refresh_every
        new = console.wall_agents(now)
        assert new == tiles  # nothing changed: the same tiles, rebuilt or not
        rebuilt.append({k for k in new if new[k] is not tiles[k]})
        tiles = new
    assert max(len(r) for r in rebuilt) <= per_build
    for name in tiles:  # each tile rebuilt once per period, on a steady beat
        steps = [i for i, r in enumerate(rebuilt, 1) if name in r]
        assert len(steps) >= 2 and {b - a for a, b in itertools.pairwise(steps)} == {period}
    # Built four times a second (the board while things change): the pace is the
    # clock's, so still each tile once per period, not once per four builds' worth.
    start = t0 + (3 * period + 1) * hub.refresh_every
    counts = dict.fromkeys(tiles, 0)
    for quarter in range(4 * 2 * period):
        new = console.wall_agents(start + quarter * hub.refresh_every / 4)
        for k in new:
            counts[k] += new[k] is not tiles[k]
        tiles = new
    assert set(counts.values()) == {2}, counts
