"""Supervisor listen / whisper / barge: ``agent_console.spy`` behind the fake PBX.

The real service, database and web app run behind aiohttp's test server; the PBX
is :class:`tests.console_fakes.FakePbx` with :func:`spy_support` added: it answers
``Originate`` as Asterisk does for ``Async: true`` ("successfully queued") and
keeps the supervisor's spy channel, which ``CoreShowChannels`` lists and
``Hangup`` ends.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from agent_console.auth import Users, seed_demo_users
from agent_console.server import make_app
from agent_console.spy import SPY_DESK, setup_spy, spy_channels, spy_target
from callcenter.db import AuditRow
from callcenter.service import Service
from tests.console_fakes import CHEAP, FakePbx, Person, serving, started_service

OP1 = "Local/1001@agents/n"
OP2 = "Local/1002@agents/n"
SUP_PHONE = "Local/1901@agents"


def spy_support(pbx: FakePbx) -> dict[str, dict[str, str]]:
    """Teach the fake PBX Originate, CoreShowChannels and Hangup of spy channels.

    Returns the live channels (name -> CoreShowChannel event), which the test
    may add to.
    """
    channels: dict[str, dict[str, str]] = {}
    numbers = itertools.count(0x2A)
    plain_hangup = pbx._hangup

    def originate(a: dict[str, str]) -> dict[str, str]:
        base = f"{a['Channel']}-{next(numbers):08x}"
        channels[base + ";1"] = {"Event": "CoreShowChannel", "Channel": base + ";1",
                                 "Application": a["Application"],
                                 "ApplicationData": a["Data"], "CallerIDNum": "spy"}
        channels[base + ";2"] = {"Event": "CoreShowChannel", "Channel": base + ";2",
                                 "Application": "Dial", "ApplicationData": "PJSIP/1901",
                                 "CallerIDNum": "spy"}
        return {"Response": "Success", "Message": "Originate successfully queued"}

    def core_show_channels(a: dict[str, str]) -> list[dict[str, str]]:
        return [{"Response": "Success", "EventList": "start",
                 "Message": "Channels will follow"}, *channels.values(),
                {"Event": "CoreShowChannelsComplete", "EventList": "Complete",
                 "ListItems": str(len(channels))}]

    def hangup(a: dict[str, str]) -> dict[str, str]:
        name = a["Channel"]
        if name in channels:
            del channels[name]
            channels.pop(name[:-2] + ";2", None)  # the Local pair goes together
            return {"Response": "Success", "Message": "Channel Hungup"}
        return plain_hangup(a)

    pbx._originate = originate  # type: ignore[attr-defined]
    pbx._coreshowchannels = core_show_channels  # type: ignore[attr-defined]
    pbx._hangup = hangup  # type: ignore[method-assign]
    return channels


def spy_app(service: Service) -> web.Application:
    """The console's app with the spy routes (added here until make_app does it)."""
    app = make_app(service, passwords=CHEAP, failure_delay=0)
    if not any(getattr(r.resource, "canonical", "") == "/api/supervise/spy/stop"
               for r in app.router.routes()):
        setup_spy(app)
    return app


class Rig:
    def __init__(self, service: Service, pbx: FakePbx, server: TestServer,
                 app: web.Application) -> None:
        self.service, self.pbx, self.server, self.app = service, pbx, server, app
        self.channels = spy_support(pbx)
        self.people: list[Person] = []

    async def as_user(self, username: str) -> Person:
        p = Person(self.server)
        self.people.append(p)
        status, body = await p.call("POST", "/api/login",
                                    {"username": username, "password": "demo"})
        assert status == 200, body
        p.csrf = body["csrf"]
        return p

    async def settle(self) -> None:
        await self.service.drain()
        await asyncio.sleep(0.05)

    async def on_call(self, interface: str, member: str, uid: str) -> None:
        """``member`` signed in to the hotline queue and talking to a caller."""
        await self.pbx.action({"Action": "QueueAdd", "Queue": "hotline",
                               "Interface": interface, "MemberName": member,
                               "Paused": "false"})
        self.pbx.caller_joins(uid, "13800000001", "张三")
        self.pbx.ring(uid, interface)
        self.pbx.answer(uid, interface)
        await self.settle()

    async def audit(self, *actions: str) -> list[AuditRow]:
        async with self.service.store.sessions() as s:
            return list(await s.scalars(select(AuditRow).where(
                AuditRow.action.in_(actions)).order_by(AuditRow.id)))

    def originates(self) -> list[dict[str, str]]:
        return [a for a in self.pbx.actions if a["Action"] == "Originate"]


@pytest.fixture
async def rig(tmp_db: str) -> AsyncIterator[Rig]:
    service, pbx = await started_service(tmp_db)
    app = spy_app(service)
    async with serving(service, app) as (server, people):
        r = Rig(service, pbx, server, app)
        r.people = people
        await r.settle()
        yield r


URL = "/api/supervise/agent1001/spy"


# --------------------------------------------------------------------------- the Originate


@pytest.mark.parametrize(("mode", "options"), [
    ("listen", "qE"), ("whisper", "qEw"), ("barge", "qEB")])
async def test_each_mode_sends_chanspy_through_originate(rig: Rig, mode: str,
                                                        options: str) -> None:
    await rig.on_call(OP1, "agent1001", "7.1")
    sup = await rig.as_user("sup1")
    status, body = await sup.call("POST", URL, {"mode": mode, "reason": "quality check"})
    assert status == 200, body
    assert rig.originates() == [{
        "Action": "Originate", "ActionID": "spy-1", "Channel": SUP_PHONE,
        "Application": "ChanSpy", "Data": f"Local/1001@agents,{options}",
        "CallerID": '"班长监听" <spy>', "Async": "true"}]
    assert body["spy"]["agent"] == "agent1001" and body["spy"]["mode"] == mode
    assert body["spy"]["call"] == "7.1" and body["spy"]["action_id"] == "spy-1"
    assert SUP_PHONE in body["message"]


async def test_a_spy_request_is_audited_with_who_agent_mode_reason_and_result(
        rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.2")
    sup = await rig.as_user("sup1")
    assert (await sup.call("POST", URL, {"mode": "whisper", "reason": "新人辅导"}))[0] == 200
    [row] = await rig.audit("spy")
    assert (row.actor, row.role, row.action, row.target, row.reason) == (
        "sup1", "supervisor", "spy", "agent1001", "新人辅导")
    assert row.data == {"mode": "whisper", "phone": SUP_PHONE, "interface": OP1,
                        "action_id": "spy-1", "call": "7.2", "target": "Local/1001@agents",
                        "result": "ok"}
    assert row.at > 0


async def test_status_shows_the_spy_call_until_the_agents_call_ends(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.3")
    sup = await rig.as_user("sup1")
    assert (await sup.call("GET", "/api/supervise/spy"))[1] == {"spy": None, "phone": SUP_PHONE}
    await sup.call("POST", URL, {"mode": "listen", "reason": "check"})
    status, body = await sup.call("GET", "/api/supervise/spy")
    assert status == 200 and body["spy"]["agent"] == "agent1001"
    # A second spy call while one runs is refused: the phone is busy.
    status, body = await sup.call("POST", URL, {"mode": "barge", "reason": "now"})
    assert status == 409 and "stop it first" in body["error"]
    assert len(rig.originates()) == 1
    rig.pbx.complete("7.3")  # ChanSpy's E option ends the spy call with the agent's call
    await rig.settle()
    assert (await sup.call("GET", "/api/supervise/spy"))[1]["spy"] is None


# --------------------------------------------------------------------------- stop


async def test_stop_hangs_up_only_the_supervisors_own_spy_channel(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.4")
    rig.channels["Local/1902@agents-00000001;1"] = {
        "Event": "CoreShowChannel", "Channel": "Local/1902@agents-00000001;1",
        "Application": "ChanSpy", "CallerIDNum": "spy"}  # another supervisor's
    rig.channels["Local/1901@agents-00000002;1"] = {
        "Event": "CoreShowChannel", "Channel": "Local/1901@agents-00000002;1",
        "Application": "Dial", "CallerIDNum": "1901"}  # sup1's phone, not spying
    sup = await rig.as_user("sup1")
    await sup.call("POST", URL, {"mode": "barge", "reason": "caller abusive"})
    status, body = await sup.call("POST", "/api/supervise/spy/stop", {})
    assert status == 200, body
    assert body["channels"] == ["Local/1901@agents-0000002a;1"]
    hangups = [a for a in rig.pbx.actions if a["Action"] == "Hangup"]
    assert hangups == [{"Action": "Hangup", "Channel": "Local/1901@agents-0000002a;1"}]
    assert sorted(rig.channels) == ["Local/1901@agents-00000002;1",
                                    "Local/1902@agents-00000001;1"]
    assert (await sup.call("GET", "/api/supervise/spy"))[1]["spy"] is None
    [row] = await rig.audit("spy_stop")
    assert (row.actor, row.target) == ("sup1", "agent1001")
    assert row.data["result"] == "stopped" and row.data["mode"] == "barge"
    # Nothing left to stop: still fine, and said so.
    status, body = await sup.call("POST", "/api/supervise/spy/stop", {})
    assert status == 200 and body == {"ok": True, "channels": [],
                                      "message": "no spy call was running"}


def test_spy_channels_and_targets() -> None:
    chans = [{"Event": "CoreShowChannel", "Channel": n, "Application": app, "CallerIDNum": cid}
             for n, app, cid in [
                 ("Local/1901@agents-0000000a;1", "", "spy"),          # still ringing
                 ("Local/1901@agents-0000000a;2", "Dial", "spy"),      # goes with ;1
                 ("Local/1901@agents-0000000b;1", "ChanSpy", "x"),
                 ("Local/19010@agents-0000000c;1", "ChanSpy", "spy"),  # another phone
                 ("PJSIP/1901-00000001", "ChanSpy", "spy")]]
    assert spy_channels(chans, SUP_PHONE) == ["Local/1901@agents-0000000a;1",
                                              "Local/1901@agents-0000000b;1"]
    assert spy_channels(chans, "PJSIP/1901") == ["PJSIP/1901-00000001"]
    assert spy_target("Local/1001@agents/n") == "Local/1001@agents"
    assert spy_target("Local/1001@agents") == "Local/1001@agents"
    assert spy_target("PJSIP/1001") == "PJSIP/1001"


# --------------------------------------------------------------------------- refusals


async def test_refused_when_the_agent_is_not_on_a_live_call(rig: Rig) -> None:
    await rig.pbx.action({"Action": "QueueAdd", "Queue": "hotline", "Interface": OP2,
                          "MemberName": "agent1002", "Paused": "false"})
    await rig.settle()
    sup = await rig.as_user("sup1")
    status, body = await sup.call("POST", "/api/supervise/agent1002/spy",
                                  {"mode": "listen", "reason": "check"})
    assert status == 409 and "not on a call" in body["error"]
    status, body = await sup.call("POST", "/api/supervise/agent9999/spy",
                                  {"mode": "listen", "reason": "check"})
    assert status == 404 and body["error"] == "no agent agent9999"
    rig.pbx.caller_joins("7.5", "13800000002")
    rig.pbx.ring("7.5", OP2)  # ringing is not yet a call to listen to
    await rig.settle()
    assert (await sup.call("POST", "/api/supervise/agent1002/spy",
                           {"mode": "listen", "reason": "check"}))[0] == 409
    assert rig.originates() == []
    rows = await rig.audit("spy")
    assert [r.data["result"] for r in rows] == [
        "agent agent1002 is not on a call now (ready); you can listen only to a live call",
        "no agent agent9999",
        "agent agent1002 is not on a call now (ringing); you can listen only to a live call"]


async def test_refused_when_the_supervisor_has_no_phone(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.6")
    await Users(rig.service.store.engine, CHEAP).change("sup1", interface="")
    sup = await rig.as_user("sup1")
    status, body = await sup.call("POST", URL, {"mode": "listen", "reason": "check"})
    assert status == 409
    assert body["error"] == ("your account has no phone; set one with "
                             "`callcenter users set sup1 --interface ...` "
                             "(e.g. Local/1901@agents)")
    assert (await sup.call("POST", "/api/supervise/spy/stop", {}))[0] == 409
    assert rig.originates() == []
    [row] = await rig.audit("spy")
    assert row.data["result"].startswith("your account has no phone")


async def test_only_supervisors_and_admins_may_spy(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.7")
    op = await rig.as_user("op2")
    for method, path in (("POST", URL), ("POST", "/api/supervise/spy/stop"),
                         ("GET", "/api/supervise/spy")):
        status, body = await op.call(method, path, {"mode": "listen", "reason": "x"})
        assert status == 403 and body["error"] == "your role may not do this"
    anonymous = Person(rig.server)
    rig.people.append(anonymous)
    assert (await anonymous.call("POST", URL, {"mode": "listen", "reason": "x"}))[0] == 401
    assert rig.originates() == []


async def test_hostile_input_is_refused_with_a_clear_message(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.8")
    sup = await rig.as_user("sup1")
    cases: list[tuple[Any, int, str]] = [
        ({"mode": "record", "reason": "x"}, 400, "'mode' must be one of listen, whisper, barge"),
        ({"mode": ["listen"], "reason": "x"}, 400, "'mode' must be one of"),
        ({"reason": "x"}, 400, "'mode' must be one of"),
        ({"mode": "listen"}, 400, "'reason' is required"),
        ({"mode": "listen", "reason": "  "}, 400, "'reason' must not be empty"),
        ({"mode": "listen", "reason": 5}, 400, "'reason' must be a string"),
        ({"mode": "listen", "reason": "x" * 501}, 400, "'reason' is too long"),
        ({"mode": "listen", "reason": "a\x00b"}, 400, "'reason' must not contain NUL"),
        (["listen"], 400, "request body must be a JSON object"),
    ]
    for body, status, message in cases:
        got, answer = await sup.call("POST", URL, body)
        assert got == status and answer["error"].startswith(message), (body, answer)
    got, answer = await sup.call("POST", URL, raw=b"{mode: listen")
    assert got == 400 and answer["error"] == "request body is not valid JSON"
    got, answer = await sup.call("POST", URL, raw=b"{" + b" " * 9000 + b"}")
    assert got == 413
    got, answer = await sup.call("POST", "/api/supervise/" + "a" * 200 + "/spy",
                                 {"mode": "listen", "reason": "x"})
    assert got == 404
    got, answer = await sup.call("POST", URL, {"mode": "listen", "reason": "x"}, csrf=False)
    assert got == 403 and "CSRF" in answer["error"]
    assert rig.originates() == []


async def test_an_agent_interface_that_would_smuggle_chanspy_options_is_refused(
        rig: Rig) -> None:
    await rig.on_call("Local/1003@agents,B", "agent1003", "7.9")
    sup = await rig.as_user("sup1")
    status, body = await sup.call("POST", "/api/supervise/agent1003/spy",
                                  {"mode": "listen", "reason": "x"})
    assert status == 409 and "cannot be spied on safely" in body["error"]
    assert rig.originates() == []


async def test_pbx_refusal_and_link_down_are_reported_and_audited(rig: Rig) -> None:
    await rig.on_call(OP1, "agent1001", "7.10")
    sup = await rig.as_user("sup1")
    rig.pbx.refuse["Originate"] = "Originate failed"
    status, body = await sup.call("POST", URL, {"mode": "listen", "reason": "x"})
    assert status == 502 and body["error"] == "the PBX refused Originate: Originate failed"
    assert (await sup.call("GET", "/api/supervise/spy"))[1]["spy"] is None
    del rig.pbx.refuse["Originate"]
    rig.pbx.link_up = False
    status, body = await sup.call("POST", URL, {"mode": "listen", "reason": "x"})
    assert status == 503 and "link is down" in body["error"]
    status, body = await sup.call("POST", "/api/supervise/spy/stop", {})
    assert status == 503
    rows = await rig.audit("spy", "spy_stop")
    assert [(r.action, r.data["result"]) for r in rows] == [
        ("spy", "the PBX refused Originate: Originate failed"),
        ("spy", "the PBX link is down; nothing was sent"),
        ("spy_stop", "the PBX link is down; nothing was sent")]
    assert [r.data["action_id"] for r in rows[:2]] == ["spy-1", "spy-2"]


async def test_setup_spy_keeps_the_push_hub_last_among_subscribers(rig: Rig) -> None:
    desk = rig.app[SPY_DESK]
    assert rig.service.subscribers[0] == desk.changed
    assert rig.service.subscribers[-1] != desk.changed


# --------------------------------------------------------------------------- demo accounts


async def test_demo_supervisor_has_a_phone_and_an_old_one_is_given_it(rig: Rig) -> None:
    users = Users(rig.service.store.engine, CHEAP)
    row = await users.get("sup1")
    assert row is not None and row.interface == SUP_PHONE and row.member_name == ""
    await users.change("sup1", interface="")
    assert await seed_demo_users(rig.service.store, passwords=CHEAP) == []
    row = await users.get("sup1")
    assert row is not None and row.interface == SUP_PHONE
    await users.change("sup1", interface="PJSIP/7001")  # a choice made on purpose stays
    await seed_demo_users(rig.service.store, passwords=CHEAP)
    row = await users.get("sup1")
    assert row is not None and row.interface == "PJSIP/7001"
    op = await users.get("op1")
    assert op is not None and op.interface == OP1
