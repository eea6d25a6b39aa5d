"""The console's push path with the web app: operator screens and their shared queue
figures (agent_console.server.Console)."""

from __future__ import annotations

from agent_console.hub import apply_ops
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
    while doc1["queues"]["hotline"]["waiting"] != 1:  # within the full refresh, a second
        apply_ops(doc1, (await receive(ws1, "update"))["ops"])
    assert doc1["call"] is None and "13600000006" not in str(doc1)
    for ws in (ws1, ws2):
        await ws.close()
