"""FastAGI with several PBXs: a session carries its PBX, so the same Uniqueid on two PBXs
is two calls (each Asterisk numbers its own; two simulators started alike send the same
strings).  The PBX comes from the peer's address matched to ``[[pbx]]`` (``agi``, else
``host``), or from the dialplan's ``HOTLINE_PBX`` when the address does not tell."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.config import ConfigError, load
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer, QueueConfig
from callcenter.pbx.sim.agi import QueueEnd, run_agi
from callcenter.pbx.traffic import CallSpec, ScriptedTraffic
from callcenter.service import Service as HotlineService
from callcenter.telephony import agi_pbxs
from ivr.agi_gate import start_agi_server
from ivr.fastagi import AgiPbxs, AgiThread, AgiTokens, HotlineAgi, parse_allow
from ivr.menus import load_config
from tests.scaleout.test_pbxs import pbx_table, write
from tests.test_end_to_end import wait_for

SECRET = "scale-agi-secret"
UID = "1795000060.17"  # what both simulated PBXs send for their first caller


def settings(tmp_path: Path, *tables: str) -> Any:
    return load(write(tmp_path, "".join(tables)), env={})


class Service:
    """What the scripts hand the service: survey keys and call-back requests, in order."""

    def __init__(self) -> None:
        self.surveys: list[tuple[str, int | None]] = []
        self.callbacks: list[Any] = []
        self.refused: list[tuple[str, dict[str, str]]] = []

    def survey(self, call_id: str, score: int | None) -> None:
        self.surveys.append((call_id, score))

    def callback(self, req: Any) -> None:
        self.callbacks.append(req)

    def refuse(self, why: str, details: Any) -> None:
        self.refused.append((why, dict(details)))


@pytest.fixture
async def agi_port() -> AsyncIterator[Any]:
    servers: list[AgiThread] = []

    async def start(pbxs: AgiPbxs, service: Service, waits: float = 0.0) -> int:
        agi = HotlineAgi(load_config(), tokens=AgiTokens(secret=SECRET), pbxs=pbxs,
                         on_survey=service.survey, on_callback=service.callback,
                         on_refused=service.refuse,
                         expected_wait=lambda: {"hotline": waits})
        server = await start_agi_server(agi, "127.0.0.1", 0, allow=["127.0.0.0/8"],
                                        on_refused=service.refuse)
        servers.append(server)
        return server.port

    yield start
    for s in servers:
        await s.stop()


async def caller(port: int, *, source: str = "127.0.0.1", pbx_variable: str | None = None,
                 keys: tuple[str, ...] = (), survey_key: str = "2") -> None:
    """One inbound call as a simulated Asterisk runs it: the dialplan's AGI_TOKEN for the
    Uniqueid, the IVR, Queue() answered by an operator, then the survey key."""
    variables = {"AGI_TOKEN": hashlib.sha1((SECRET + UID).encode()).hexdigest(),
                 "HOTLINE": "12345"}
    if pbx_variable is not None:
        variables["HOTLINE_PBX"] = pbx_variable

    async def answered(queue: str, v: dict[str, str]) -> QueueEnd:
        return QueueEnd(0, {"MEMBERINTERFACE": "Local/1001@agents"}, [survey_key])

    await run_agi(f"agi://127.0.0.1:{port}/hotline",
                  {"agi_uniqueid": UID, "agi_channel": "PJSIP/trunk-00000001",
                   "agi_callerid": "13800138000", "agi_dnid": "unknown",
                   "agi_extension": "s", "agi_context": "inbound-ivr"},
                  list(keys), variables=variables, on_queue=answered, source=source,
                  timeout=5.0)


async def test_the_same_uniqueid_on_two_pbxs_told_apart_by_address(
        tmp_path: Path, agi_port: Any) -> None:
    s = settings(tmp_path, pbx_table("pbx1", 5038),
                 pbx_table("pbx2", 5038, host="127.0.0.2"))
    service = Service()
    port = await agi_port(agi_pbxs(s), service)
    await caller(port, source="127.0.0.1")
    await caller(port, source="127.0.0.2", survey_key="3")
    # Two calls, keyed as the call records key them: bare on the home PBX.
    assert service.surveys == [(UID, 2), (f"pbx2:{UID}", 3)]
    assert service.refused == []
    await caller(port, source="127.0.0.2")  # the same call of pbx2 again: spent
    assert len(service.surveys) == 2
    assert [why for why, _ in service.refused] == ["token already used"]
    assert service.refused[0][1]["pbx"] == "pbx2"


async def test_pbxs_sharing_an_address_are_told_apart_by_the_dialplans_variable(
        tmp_path: Path, agi_port: Any) -> None:
    """The simulators (and PBXs behind one NAT) share an address: HOTLINE_PBX decides;
    without it, or naming a PBX of another address, nothing is written."""
    s = settings(tmp_path, pbx_table("pbx1", 5038), pbx_table("pbx2", 5039),
                 pbx_table("pbx3", 5038, host="127.0.0.3"))
    service = Service()
    port = await agi_port(agi_pbxs(s), service, waits=600.0)
    await caller(port, pbx_variable="pbx1")
    await caller(port, pbx_variable="pbx2", survey_key="1")
    assert service.surveys == [(UID, 2), (f"pbx2:{UID}", 1)]
    await caller(port)  # no HOTLINE_PBX: pbx1 or pbx2?
    await caller(port, pbx_variable="pbx3")  # pbx3 is on 127.0.0.3
    assert len(service.surveys) == 2
    assert [why for why, _ in service.refused] == [
        "which PBX is unknown: several PBXs share this address and HOTLINE_PBX is not set",
        "which PBX is unknown: HOTLINE_PBX names a PBX this address is not"]
    # A call-back request (key "1" at the offer) carries its PBX and its key.
    await caller(port, source="127.0.0.3", keys=("1",))
    (req,) = service.callbacks
    assert (req.uniqueid, req.pbx, req.key) == (UID, "pbx3", f"pbx3:{UID}")


async def test_two_pbx_simulators_on_one_host_with_the_same_uniqueids(
        tmp_path: Path, agi_port: Any) -> None:
    """Two simulated Asterisks started alike (as ``callcenter demo --pbxs 2`` runs them):
    their callers get the same Uniqueids, and each asks for a call-back; each request
    is accepted once, under its own PBX's key (the simulator sets HOTLINE_PBX)."""
    s = settings(tmp_path, pbx_table("pbx1", 5038), pbx_table("pbx2", 5039))
    service = Service()
    port = await agi_port(agi_pbxs(s), service, waits=600.0)
    t0 = 1_795_000_000.0
    sims = []
    for name in ("pbx1", "pbx2"):
        pbx = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),), agents=0,
                            agent_breaks=False),
                  ScriptedTraffic([CallSpec(1.0, "13800001111", "A", ivr_path="1")],
                                  origin=t0), start_time=t0, hold_arrivals=True)
        sims.append(PbxSimServer(pbx, port=0, speed=50.0, name=name, agi_secret=SECRET,
                                 agi_url=f"agi://127.0.0.1:{port}/hotline"))
    try:
        for sim in sims:
            await sim.start()
        await wait_for(lambda: len(service.callbacks) == 2, timeout=5)
    finally:
        for sim in sims:
            await sim.stop()
    assert service.refused == []
    a, b = sorted(service.callbacks, key=lambda r: r.pbx)
    assert a.uniqueid == b.uniqueid  # the collision the PBX tells apart
    assert (a.pbx, a.key, b.pbx, b.key) == ("pbx1", a.uniqueid, "pbx2", f"pbx2:{b.uniqueid}")


@pytest.mark.parametrize("peer,variable,expected", [
    ("10.0.0.1", "", ("a", "")),                       # a's own address
    ("10.0.0.9", "", ("b", "")),                       # in b's network
    ("::ffff:10.0.0.1", "", ("a", "")),                # IPv4-mapped
    ("10.0.1.5", "", (None, "several PBXs share this address and HOTLINE_PBX is not set")),
    ("10.0.1.5", "c", ("c", "")),
    ("10.0.1.5", "a", (None, "HOTLINE_PBX names a PBX this address is not")),
    ("192.0.2.1", "", ("d", "")),                      # no one claims it: d's is unknown
    ("10.0.0.1", "d", (None, "HOTLINE_PBX names a PBX this address is not")),
])
def test_which_pbx_rule_table(peer: str, variable: str, expected: tuple[Any, str]) -> None:
    pbxs = AgiPbxs(home="a", addresses={
        "a": parse_allow(["10.0.0.1"]), "b": parse_allow(["10.0.0.8/29"]),
        "c": parse_allow(["10.0.1.0/24"]), "e": parse_allow(["10.0.1.0/24"]), "d": ()})
    assert pbxs.which(peer, variable) == expected
    assert pbxs.call_key("a", UID) == UID and pbxs.call_key("c", UID) == f"c:{UID}"


def test_one_pbx_is_always_the_home_and_keys_stay_bare() -> None:
    one = AgiPbxs(home="pbx1", addresses={"pbx1": parse_allow(["10.0.0.1"])})
    assert one.which("192.0.2.1") == ("pbx1", "") and not one.needs_variable("192.0.2.1")
    assert AgiPbxs().which("?") == ("", "") and AgiPbxs().call_key("", UID) == UID


def test_a_bad_agi_address_is_refused_with_the_key_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pbx\[1\] \(pbx2\)\.agi: 'gw\.example' is not"):
        settings(tmp_path, pbx_table("pbx1", 5038),
                 pbx_table("pbx2", 5039, agi=["gw.example"]))
    s = settings(tmp_path, pbx_table("pbx1", 5038, host="pbx1.example"),
                 pbx_table("pbx2", 5039, agi=["10.1.0.0/16"]))
    pbxs = agi_pbxs(s)  # a host name is not resolved: pbx1's address is unknown
    assert pbxs.which("10.1.2.3") == ("pbx2", "") and pbxs.which("10.9.9.9") == ("pbx1", "")


def test_the_centres_and_the_fastagi_key_a_call_alike(tmp_path: Path) -> None:
    s = settings(tmp_path, pbx_table("pbx1", 5038), pbx_table("pbx2", 5039))
    service, pbxs = HotlineService(s), agi_pbxs(s)
    assert {name: c.key_prefix + UID for name, c in service.centres.items()} == {
        name: pbxs.call_key(name, UID) for name in ("pbx1", "pbx2")} == {
        "pbx1": UID, "pbx2": f"pbx2:{UID}"}
