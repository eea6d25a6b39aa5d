"""Names the state does not know, mid-traffic (issue 11, item 5): the service asks the PBX
for a QueueStatus and applies its answer as a Refresh where it arrives in the event
stream - it adds the unknown members (with their pause and reason) and waiting callers,
and never a counter.  Played by the PBX simulator over real TCP: members app_queue gained
without the service seeing QueueMemberAdded (``add_member(announce=False)``), a caller
whose QueueCallerJoin the service never got (``PbxSimServer.lose``); at the end the
service's counters equal the simulator's and every visit is stored once.
"""

from __future__ import annotations

from pathlib import Path

from acd.state import FINAL, AgentState
from callcenter.db import Store
from callcenter.pbx.sim import Pbx, PbxConfig
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import CallSpec, ScriptedTraffic
from tests.sim_service import sim_service, sim_settings, start_sim
from tests.test_end_to_end import wait_for

T0 = 1_795_000_000.0
Q = "hotline"
ALICE, BOB = "Local/1005@agents/n", "Local/1006@agents/n"


async def test_unknown_member_and_caller_become_known_without_double_counting(
        tmp_db: str, tmp_path: Path) -> None:
    calls = [CallSpec(at=T0 + 5, number="13800000001", name="市民1", ring=4.0, talk=20.0),
             CallSpec(at=T0 + 40, number="13800000002", name="市民2", ring=4.0, talk=10.0)]
    cfg = PbxConfig(queues=(SimQueue(name=Q),), agents=1, agent_breaks=False)
    pbx = Pbx(cfg, ScriptedTraffic(calls), start_time=T0, seed=11)
    # agent1001 is paused: the callers can only go to a member the service does not know.
    assert "Success" in pbx.handle_action({"Action": "QueuePause", "Queue": Q, "Paused": "1",
                                           "Interface": "Local/1001@agents/n"})
    server = await start_sim(pbx, 20.0, tmp_path / "queue_log")
    service = sim_service(server, sim_settings(server.port, tmp_db, [Q]))
    await service.start()
    try:
        centre = service.centre
        await wait_for(lambda: centre.link_up and "Local/1001@agents/n" in centre.agents
                       and centre.agents["Local/1001@agents/n"].state is AgentState.PAUSED)
        # After the service's picture: two members whose QueueMemberAdded it never got,
        # and the first caller's QueueCallerJoin lost.
        assert pbx.add_member(Q, ALICE, "agent1005", announce=False) == ""
        assert pbx.add_member(Q, BOB, "agent1006", paused=True, reason="培训",
                              announce=False) == ""
        server.lose["QueueCallerJoin"] = 1
        server.release_clock()
        # AgentCalled names Alice (and a caller never seen): a refresh makes both known
        # while Alice's phone still rings, and Bob with her pause and reason.
        await wait_for(lambda: ALICE in centre.agents and Q in centre.agents[ALICE].memberships)
        await wait_for(lambda: BOB in centre.agents)
        bob = centre.agents[BOB]
        assert bob.state is AgentState.PAUSED and bob.paused and bob.reason == "培训"
        assert set(bob.memberships) == {Q}
        await wait_for(lambda: pbx.now > T0 + 70 and not pbx.channels, timeout=30)
        await wait_for(lambda: all(c.outcome in FINAL for c in centre.visits.values()))
        await wait_for(lambda: centre.agents[ALICE].state is AgentState.READY)
        await service.drain()
        assert service.home.refreshes >= 1
        alice = centre.agents[ALICE]
        assert set(alice.memberships) == {Q} and not alice.paused
        assert alice.answered == 2
        # The caller whose Join was lost came from the refresh's QueueEntry (her number
        # is in no other event the state reads), the second from her own Join.
        by_num = {c.caller_num: c for c in centre.visits.values()}
        assert set(by_num) == {"13800000001", "13800000002"}
        assert by_num["13800000001"].estimated and not by_num["13800000002"].estimated
    finally:
        await service.stop()
        await server.stop()
    # Counted as app_queue counted: each caller once, completed.
    sim, mine = pbx.queues[Q], service.centre.observed[Q]
    assert (mine.completed, mine.abandoned, mine.completed_in_sl, mine.abandoned_in_sl) == (
        sim.completed, sim.abandoned, sim.completed_in_sl, sim.abandoned_in_sl) == (2, 0, 2, 0)
    store = Store(service.settings.database_url)
    rows = await store.calls_between(0, 2**40)
    await store.close()
    assert sorted(r.outcome for r in rows) == ["completed", "completed"]
    assert {r.agent for r in rows} == {"agent1005"}
