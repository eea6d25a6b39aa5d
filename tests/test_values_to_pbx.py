"""Values from the PBX (or an account) on their way back into AMI actions, at every place
that builds one: the recorder's ``MixMonitor``, the console's ``QueueAdd``/``Hangup``, the
supervisors' ``ChanSpy`` ``Originate`` and ``Hangup`` (the dialer's ``Originate`` and the
IVR's AGI commands: ``tests/test_dialer.py``, ``tests/test_ivr.py``).

The exact cases of issue 11 item 10: a comma or CR in a uniqueid or a channel name (a
comma starts another ``Variable`` or application argument; a CR another header), full-width
digits (a Chinese keyboard: made ASCII by NFKC) and Arabic-Indic digits (refused).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from acd.state import Call, CallChanged
from agent_console.auth import Users
from ivr.values import BadValue, ami_action, channel
from recordings.monitor import CallRecorder
from recordings.store import RecordingStore, path_for
from tests.console_fakes import CHEAP
from tests.test_spy import OP1, URL
from tests.test_spy import Rig as SpyRig
from tests.test_spy import rig as spy_rig  # noqa: F401  (the fixture)

ARABIC_INDIC = "١٩٠١"
FULL_WIDTH = "１９０１"


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize(("raw", "name"), [
    ("PJSIP/1001", "PJSIP/1001"), ("Local/1001@agents/n", "Local/1001@agents/n"),
    ("Local/1001@agents-0000002a;1", "Local/1001@agents-0000002a;1"),
    (f"PJSIP/{FULL_WIDTH}", "PJSIP/1901"), ("Ｌｏｃａｌ／１００１＠ａｇｅｎｔｓ", "Local/1001@agents"),
])
def test_channel_names_are_ascii(raw: str, name: str) -> None:
    assert channel(raw) == name


@pytest.mark.parametrize("raw", [
    f"PJSIP/{ARABIC_INDIC}", "PJSIP/1001,b", "PJSIP/1001\r", "PJSIP/1001\n",
    "PJSIP/1001\r\nAction: Hangup", 'PJSIP/"1001"', "PJSIP/1001|x", "PJSIP/10 01", "",
    "PJSIP/¹⁹⁰¹", "x" * 101])
def test_anything_else_in_a_channel_is_refused(raw: str) -> None:
    with pytest.raises(BadValue):
        channel(raw)


def test_an_action_has_its_channel_and_name_fields_checked() -> None:
    assert ami_action({"Action": "Redirect", "Channel": f"PJSIP/{FULL_WIDTH}-1",
                       "Context": "transfer", "Exten": "８００１", "Priority": "1"}) == {
        "Action": "Redirect", "Channel": "PJSIP/1901-1", "Context": "transfer",
        "Exten": "8001", "Priority": "1"}
    for bad in ({"Action": "QueueAdd", "Queue": "hotline,t", "Interface": "PJSIP/1"},
                {"Action": "QueueAdd", "Queue": "hotline", "Interface": "PJSIP/1,2"},
                {"Action": "Redirect", "Channel": "PJSIP/1", "Exten": ARABIC_INDIC}):
        with pytest.raises(BadValue):
            ami_action(bad)


# --------------------------------------------------------------------------- MixMonitor


class Sent:
    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []

    async def __call__(self, action: dict[str, Any]) -> dict[str, str]:
        self.actions.append(action)
        return {"Response": "Success"}


async def record(tmp_path: Path, uniqueid: str, chan: str) -> list[dict[str, Any]]:
    sent = Sent()
    recorder = CallRecorder(RecordingStore(tmp_path), sent)
    recorder.changed([CallChanged(Call(uniqueid, "hotline", 0.0, channel=chan), "answered")])
    await asyncio.gather(*recorder.tasks)
    await recorder.stop()
    return sent.actions


@pytest.mark.parametrize("uniqueid", ["1700000000.26,X=1", "1700000000.26\r",
                                      "1700000000.26\n", "1700000000.26\rAction: Hangup",
                                      "１７００００００００.２６", "١٧٠٠٠٠٠٠٠٠.٢٦"])
async def test_mixmonitor_is_not_sent_for_a_uniqueid_unfit_for_a_file_name(
        tmp_path: Path, uniqueid: str) -> None:
    assert await record(tmp_path, uniqueid, "PJSIP/trunk-0000001a") == []


@pytest.mark.parametrize("chan", ["PJSIP/trunk-0000001a,b", "PJSIP/trunk-1\r",
                                  f"PJSIP/{ARABIC_INDIC}-1"])
async def test_mixmonitor_is_not_sent_for_a_channel_unfit_for_ami(tmp_path: Path,
                                                                   chan: str) -> None:
    assert await record(tmp_path, "1700000000.26", chan) == []


async def test_mixmonitor_channel_digits_become_ascii(tmp_path: Path) -> None:
    assert await record(tmp_path, "1700000000.26", f"PJSIP/{FULL_WIDTH}-0000001a") == [
        {"Action": "MixMonitor", "Channel": "PJSIP/1901-0000001a",
         "File": path_for("1700000000.26"), "Options": "b"}]


# --------------------------------------------------------------------------- the console


async def test_an_operators_phone_in_full_width_digits_is_dialled_in_ascii(
        spy_rig: SpyRig) -> None:  # noqa: F811
    await Users(spy_rig.service.store.engine, CHEAP).change(
        "op1", interface=f"Local/{'１００１'}@agents/n")
    op1 = await spy_rig.as_user("op1")
    status, body = await op1.call("POST", "/api/agent/signin", {"queues": ["hotline"]})
    assert status == 200, body
    [add] = [a for a in spy_rig.pbx.actions if a["Action"] == "QueueAdd"]
    assert add["Interface"] == "Local/1001@agents/n"


async def test_an_operators_phone_in_arabic_indic_digits_is_refused_and_audited(
        spy_rig: SpyRig) -> None:  # noqa: F811
    await Users(spy_rig.service.store.engine, CHEAP).change(
        "op1", interface=f"Local/{ARABIC_INDIC}@agents/n")
    op1 = await spy_rig.as_user("op1")
    status, body = await op1.call("POST", "/api/agent/signin", {"queues": ["hotline"]})
    assert status == 409 and body["code"] == "pbx.bad_value", body
    assert "U+0661" in body["error"]
    assert [a for a in spy_rig.pbx.actions if a["Action"] == "QueueAdd"] == []
    [row] = await spy_rig.audit("agent_signin")
    assert row.data["result"].startswith("not sent to the PBX")


async def test_a_callers_channel_with_a_comma_is_not_hung_up(spy_rig: SpyRig) -> None:  # noqa: F811
    await spy_rig.on_call(OP1, "agent1001", "7,1")  # the fake PBX names it ...inbound-7,1;2
    op1 = await spy_rig.as_user("op1")
    before = len(spy_rig.pbx.actions)
    status, body = await op1.call("POST", "/api/call/hangup", {"uniqueid": "7,1"})
    assert status == 409 and body["code"] == "pbx.bad_value", body
    assert spy_rig.pbx.actions[before:] == []


# --------------------------------------------------------------------------- ChanSpy


async def test_a_supervisors_phone_in_full_width_digits_spies_in_ascii(
        spy_rig: SpyRig) -> None:  # noqa: F811
    await spy_rig.on_call(OP1, "agent1001", "7.1")
    await Users(spy_rig.service.store.engine, CHEAP).change(
        "sup1", interface=f"Local/{FULL_WIDTH}@agents")
    sup = await spy_rig.as_user("sup1")
    status, body = await sup.call("POST", URL, {"mode": "listen", "reason": "check"})
    assert status == 200, body
    [originate] = spy_rig.originates()
    assert originate["Channel"] == "Local/1901@agents"
    assert originate["Data"] == "Local/1001@agents,qE"


@pytest.mark.parametrize("phone", [f"Local/{ARABIC_INDIC}@agents", "Local/1901@agents,b",
                                   "Local/1901@agents\r"])
async def test_a_supervisors_phone_unfit_for_ami_is_refused(spy_rig: SpyRig,  # noqa: F811
                                                            phone: str) -> None:
    await spy_rig.on_call(OP1, "agent1001", "7.2")
    await Users(spy_rig.service.store.engine, CHEAP).change("sup1", interface=phone)
    sup = await spy_rig.as_user("sup1")
    status, body = await sup.call("POST", URL, {"mode": "listen", "reason": "check"})
    assert status == 409 and "not a channel the PBX can call" in body["error"], body
    assert spy_rig.originates() == []


@pytest.mark.parametrize("interface", ["Local/1003@agents,b/n", f"Local/{ARABIC_INDIC}@agents/n"])
async def test_an_agent_interface_from_the_pbx_unfit_for_chanspy_is_refused(
        spy_rig: SpyRig, interface: str) -> None:  # noqa: F811
    await spy_rig.on_call(interface, "agent1003", "7.3")
    sup = await spy_rig.as_user("sup1")
    status, body = await sup.call("POST", "/api/supervise/agent1003/spy",
                                  {"mode": "barge", "reason": "check"})
    assert status == 409 and "cannot be spied on safely" in body["error"], body
    assert spy_rig.originates() == []


async def test_stop_skips_a_channel_name_unfit_for_ami_and_hangs_up_the_rest(
        spy_rig: SpyRig) -> None:  # noqa: F811
    await spy_rig.on_call(OP1, "agent1001", "7.4")
    sup = await spy_rig.as_user("sup1")
    assert (await sup.call("POST", URL, {"mode": "listen", "reason": "check"}))[0] == 200
    bad = "Local/1901@agents-0000ff,1;1"
    spy_rig.channels[bad] = {"Event": "CoreShowChannel", "Channel": bad,
                             "Application": "ChanSpy", "CallerIDNum": "spy"}
    status, body = await sup.call("POST", "/api/supervise/spy/stop", {})
    assert status == 200, body
    hung = [a["Channel"] for a in spy_rig.pbx.actions if a["Action"] == "Hangup"]
    assert hung == ["Local/1901@agents-0000002a;1"]
