"""Several PBXs seen as one centre (acd.centres), fed events with no IO."""

from __future__ import annotations

from acd import events as ev
from acd.centres import Centres
from acd.state import CallCenter

Q = "hotline"


def member(iface: str, name: str) -> ev.MemberInfo:
    return ev.MemberInfo(Q, name, iface, False, "", False, 1, 0)


def two_pbxs() -> tuple[CallCenter, CallCenter, Centres]:
    one, two = CallCenter(pbx="pbx1"), CallCenter(pbx="pbx2", key_prefix="pbx2:")
    one.apply(ev.MemberAdded(0.0, member("PJSIP/1001", "agent1001")))
    two.apply(ev.MemberAdded(0.0, member("PJSIP/2002", "agent1002")))
    two.apply(ev.MemberAdded(0.0, member("PJSIP/1001", "agent1001")))
    return one, two, Centres({"pbx1": one, "pbx2": two})


def test_agent_by_name_finds_a_member_on_any_pbx_the_busy_one_first() -> None:
    one, two, centres = two_pbxs()
    assert centres.agent_by_name("agent1002") is two.agents["PJSIP/2002"]
    assert centres.agent_by_name("agent1001") is one.agents["PJSIP/1001"]  # the home's first
    two.apply(ev.CallerJoined(1.0, Q, "9.1", "Local/s@in-1;2", "13800001111", "", 1, {}))
    two.apply(ev.AgentRung(1.0, Q, "9.1", "PJSIP/1001", "agent1001", "13800001111", ""))
    assert centres.agent_by_name("agent1001") is two.agents["PJSIP/1001"]  # ringing there
    assert centres.agent_by_name("nobody") is None


def test_agent_by_name_follows_a_rename_on_one_pbx() -> None:
    one, two, centres = two_pbxs()
    two.apply(ev.MemberAdded(2.0, member("PJSIP/2002", "agent2002")))
    assert centres.agent_by_name("agent1002") is None
    assert centres.agent_by_name("agent2002") is two.agents["PJSIP/2002"]
    one.apply(ev.MemberAdded(3.0, member("PJSIP/1001", "agent1002")))
    assert centres.agent_by_name("agent1002") is one.agents["PJSIP/1001"]
    assert centres.agent_by_name("agent1001") is two.agents["PJSIP/1001"]
