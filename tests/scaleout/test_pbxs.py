"""Several PBXs (``[[pbx]]``): three simulated Asterisks, one service, one consumer.

Each simulator is an independent PBX with its own traffic, members and app_queue
counters; their Uniqueids and interfaces are the same strings (same start time, same
member names), as two real Asterisks' may be.  The service's figures per PBX must equal
each simulator's own counters, the centre's their sum, and one PBX killed must grey only
its own part.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from acd.events import LinkChanged
from acd.state import QueueConfig
from agent_console.alerts import Thresholds
from agent_console.views import Tracker, wall_view
from callcenter.config import ConfigError, load
from callcenter.db import Store
from callcenter.ops import Ops
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig, Until
from callcenter.service import Service
from tests.scaleout.test_ops import samples
from tests.test_end_to_end import wait_for

T0 = 1_795_000_000.0
LEAD = 60.0  # PBX seconds before the first caller: the service is connected by then
SECONDS = 150.0
NAMES = ("pbx1", "pbx2", "pbx3")


def sim(seed: int) -> Pbx:
    """One PBX: 4 operators, 0.3 callers a second for SECONDS after LEAD."""
    traffic = RandomTraffic(TrafficConfig(rate=0.3, talk_median=25.0, talk_min=5.0,
                                          patience_median=30.0, breaks_per_hour=6.0,
                                          first_call_after=1.0), seed=seed, origin=T0 + LEAD)
    return Pbx(PbxConfig(queues=(SimQueue(),), agents=4), Until(traffic, T0 + LEAD + SECONDS),
               start_time=T0, seed=seed)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callcenter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def pbx_table(name: str, port: int, **over: Any) -> str:
    keys = {"name": name, "host": "127.0.0.1", "port": port, "user": "hotline",
            "secret": "pw"} | over
    return "[[pbx]]\n" + "".join(
        f"{k} = {v if isinstance(v, int) else repr(v).replace(chr(39), chr(34))}\n"
        for k, v in keys.items())


# ---- configuration


def test_single_ami_table_is_one_pbx_named_as_configured(tmp_path: Path) -> None:
    s = load(write(tmp_path, '[ami]\nname = "yc-ast"\nport = 5039\n'), env={})
    assert [(p.name, p.port) for p in s.pbxs] == [("yc-ast", 5039)]
    assert s.ami is s.pbxs[0] and s.more_pbxs == []
    assert load(env={}).pbxs[0].name == "pbx1"


def test_pbx_tables_give_several_pbxs_home_first(tmp_path: Path) -> None:
    text = (pbx_table("a", 5038) + pbx_table("b", 5039, queues=["hotline"], events="agent")
            + '[ami]\nping_interval = 2.0\n')
    s = load(write(tmp_path, text), env={"HOTLINE_AMI_SECRET_B": "from-env"})
    assert [p.name for p in s.pbxs] == ["a", "b"] and s.ami.name == "a"
    assert s.pbx_names == ("a", "b")  # what reports and the CLI check a --pbx against
    b = s.pbxs[1]
    assert (b.port, b.username, b.secret, b.events, b.queues) == (
        5039, "hotline", "from-env", "agent", ("hotline",))
    assert b.ping_interval == 2.0  # [ami]'s timings are the tables' defaults
    assert b.hosts("hotline") and not b.hosts("hotline-en") and s.pbxs[0].hosts("hotline-en")


@pytest.mark.parametrize("text,message", [
    (pbx_table("a", 5038) + pbx_table("a", 5039), "used twice"),
    (pbx_table("a", 5038) + pbx_table("A", 5039), "used twice"),
    (pbx_table("a", 5038) + pbx_table("b", 5038), "same host and port"),
    (pbx_table("a", 0), "not a TCP port"),
    (pbx_table("a", 70000), "not a TCP port"),
    (pbx_table("a", 5038).replace("5038", '"5038"'), "must be int"),
    (pbx_table("a:b", 5038), "letters, digits"),
    (pbx_table("a", 5038, sercet="x"), "unknown key 'sercet'"),
    ("[[pbx]]\nhost = \"h\"\n", "needs a name"),
    (pbx_table("a", 5038, queues="hotline"), "list of queue names"),
    (pbx_table("a", 5038, host="bad host"), "not a host"),
    ("[ami]\nport = 99999\n", "not a TCP port"),
])
def test_bad_pbx_tables_are_refused_with_the_key_named(tmp_path: Path, text: str,
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), env={})


# ---- three simulated PBXs


async def run_three(tmp_db: str, tmp_path: Path, kill: str | None
                    ) -> tuple[Service, dict[str, Pbx], dict]:
    """Three simulators (seeds 1-3, same start time), each writing its own queue_log, and
    the service reading each PBX's; ``kill`` stops one simulator (and its AMI port) part
    way.  Returns the service, the simulators and the wallboard seen while it was down."""
    pbxs = {name: sim(seed) for seed, name in enumerate(NAMES, 1)}
    logs = {name: tmp_path / f"{name}.queue_log" for name in NAMES}
    servers = {name: PbxSimServer(p, port=0, users={"hotline": "pw"}, speed=40.0,
                                  queue_log=logs[name])
               for name, p in pbxs.items()}
    for server in servers.values():
        await server.start()
    settings = load(env={})
    settings.ami.name, settings.ami.port, settings.ami.secret = "pbx1", servers["pbx1"].port, "pw"
    settings.ami.queue_log = str(logs["pbx1"])
    settings.more_pbxs = [type(settings.ami)(name=n, port=servers[n].port, secret="pw",
                                             ping_interval=0.5, backoff_max=0.4,
                                             queue_log=str(logs[n]))
                          for n in NAMES[1:]]
    settings.ami.ping_interval, settings.ami.backoff_max = 0.5, 0.4
    settings.database_url = tmp_db
    settings.queues = {"hotline": QueueConfig(15, 3)}
    service = Service(settings, clock=servers["pbx1"].virtual_now)
    await service.start()
    wall: dict = {}
    try:
        await wait_for(lambda: all(c.link_up for c in service.centres.values()))
        if kill is not None:
            # killed with calls flowing: 40 PBX seconds after its first callers
            await wait_for(lambda: pbxs[kill].now > T0 + LEAD + 40
                           and pbxs[kill].queues["hotline"].completed > 0, timeout=30)
            await servers[kill].stop()
            await wait_for(lambda: not service.centres[kill].link_up)
            await service.drain()
            tracker = Tracker()
            tracker.feed([])
            wall = wall_view(service.snapshot(), service.centre, tracker, Thresholds(),
                             service.clock())
            ops = Ops("core")
            ops.watch_service(service)
            wall["_metrics"] = samples(generate_latest(ops.registry).decode())
            wall["_ready"] = await ops.ready()
        live = [p for n, p in pbxs.items() if n != kill]
        await wait_for(lambda: all(p.now > T0 + LEAD + SECONDS and not p.channels for p in live),
                       timeout=30)
        await asyncio.sleep(0.2)
        await service.drain()
    finally:
        await service.stop()
        for server in servers.values():
            await server.stop()
    return service, pbxs, wall


@pytest.mark.parametrize("kill", [None, "pbx2"])
async def test_three_pbxs_figures_per_pbx_and_centre_equal_the_pbxs_counters(
        tmp_db: str, tmp_path: Path, kill: str | None) -> None:
    service, pbxs, wall = await run_three(tmp_db, tmp_path, kill)
    figures = service.metrics_json(0, 2**40)
    total_completed = total_abandoned = 0
    for name, p in pbxs.items():
        q = p.queues["hotline"]
        mine = service.centres[name].observed["hotline"]
        part = figures["pbxs"][name]["queues"]["hotline"]
        total_completed += part["completed"]
        total_abandoned += part["abandoned"]
        if name == kill:  # what it said before it died: never more than it counted
            assert part["completed"] <= q.completed and part["abandoned"] <= q.abandoned
            assert figures["pbxs"][name]["link_up"] is False
            continue
        assert q.completed + q.abandoned > 15, name  # traffic enough to mean something
        assert (part["completed"], part["abandoned"], part["waiting"]) == (
            q.completed, q.abandoned, 0), name
        assert (mine.completed, mine.abandoned, mine.completed_in_sl, mine.abandoned_in_sl) == (
            q.completed, q.abandoned, q.completed_in_sl, q.abandoned_in_sl), name
        # Members are the same names on every PBX, each known on its own PBX.
        members = {m.name for m in q.members.values()}
        assert {a.name for a in service.centres[name].agents.values()
                if a.memberships} == members
        assert {a.pbx for a in service.centres[name].agents.values()} == {name}
    centre = figures["queues"]["hotline"]
    assert (centre["completed"], centre["abandoned"]) == (total_completed, total_abandoned)
    assert figures["overall"]["offered"] == sum(
        figures["pbxs"][n]["overall"]["offered"] for n in NAMES)

    # Stored: one record per visit per PBX, although the PBXs' Uniqueids collide.
    store = Store(tmp_db)
    try:
        rows = await store.calls_between(0, 2**40)
    finally:
        await store.close()
    by_pbx = {n: [r for r in rows if r.pbx == n] for n in NAMES}
    for name in NAMES:
        done = [r for r in by_pbx[name] if r.outcome in ("completed", "abandoned")]
        assert len(done) == figures["pbxs"][name]["overall"]["completed"] + \
            figures["pbxs"][name]["overall"]["abandoned"]
    bare = {r.channel_uniqueid for r in by_pbx["pbx1"]}
    assert bare & {r.channel_uniqueid for r in by_pbx["pbx2"]}, "simulators share Uniqueids"
    assert all(r.uniqueid == r.channel_uniqueid for r in by_pbx["pbx1"] if r.visit == 1)
    assert all(r.uniqueid.startswith("pbx2:") for r in by_pbx["pbx2"])

    if kill is not None:
        parts = wall["pbxs"]
        assert [n for n, p in parts.items() if not p["up"]] == [kill]
        assert wall["link"]["up"] is True  # the centre is live; only its part is greyed
        assert f"pbx_down:{kill}" in wall["alerts"]
        assert "link_down:pbx" not in wall["alerts"]
        assert not [k for k in wall["alerts"] if k.startswith("pbx_down:") and
                    not k.endswith(kill)]
        # Metrics per PBX; the core stays ready while any PBX is up.
        m = wall["_metrics"]
        assert {n: m[("hotline_pbx_link_up", (("pbx", n),))] for n in NAMES} == {
            "pbx1": 1, "pbx2": 0, "pbx3": 1}
        events = {n: m[("hotline_ami_events_total", (("pbx", n),))] for n in NAMES}
        assert all(v > 0 for v in events.values()), events
        assert wall["_ready"][0] is True, wall["_ready"]


# ---- actions go to the PBX that owns the channel or member

OP1 = "Local/1001@agents/n"


@pytest.fixture
async def two(tmp_db: str) -> Any:
    """The console on a service with two fake PBXs: pbx1 hosts every queue, pbx2 only
    ``hotline``.  op1's phone is OP1 on both (as in a deployment where every PBX can
    reach every operator's phone)."""
    from agent_console.auth import Users, seed_demo_users
    from tests.console_fakes import CHEAP, FakePbx, serving
    from tests.test_spy import Rig, spy_app

    settings = load(env={})
    settings.database_url = tmp_db
    settings.ami.name = "pbx1"
    settings.more_pbxs = [type(settings.ami)(name="pbx2", port=5039, queues=("hotline",))]
    service = Service(settings)
    fakes = {n: FakePbx(service, n) for n in ("pbx1", "pbx2")}
    for n, fake in fakes.items():
        service.edges[n].link = fake
    await service.start()
    await seed_demo_users(service.store, passwords=CHEAP)
    await Users(service.store.engine, CHEAP).change("op1", interface=OP1)
    async with serving(service, spy_app(service)) as (server, people):
        rig = Rig(service, fakes["pbx1"], server, server.app)
        rig.people = people
        rig.fakes = fakes  # type: ignore[attr-defined]
        await service.drain()
        yield rig


def sent(fake: Any, name: str) -> list[dict[str, str]]:
    return [a for a in fake.actions if a["Action"] == name]


async def test_sign_in_goes_to_every_pbx_hosting_the_queue_and_call_actions_to_the_calls(
        two: Any) -> None:
    from tests.test_spy import spy_support

    f1, f2 = two.fakes["pbx1"], two.fakes["pbx2"]
    op = await two.as_user("op1")
    status, body = await op.call("POST", "/api/agent/signin", {"queues": ["hotline"]})
    assert status == 200, body
    assert body["sent_to"] == [["hotline", "pbx1"], ["hotline", "pbx2"]]
    await two.settle()
    status, body = await op.call("POST", "/api/agent/signin", {"queues": ["hotline-en"]})
    assert status == 200 and body["sent_to"] == [["hotline-en", "pbx1"]]  # pbx2 lacks it
    await two.settle()
    assert [a["Queue"] for a in sent(f1, "QueueAdd")] == ["hotline", "hotline-en"]
    assert [a["Queue"] for a in sent(f2, "QueueAdd")] == ["hotline"]

    # The same Uniqueid waits on pbx1 and is connected to op1 on pbx2.
    f1.caller_joins("1.7", "13800000001")
    f2.caller_joins("1.7", "13900000002")
    f2.ring("1.7", OP1)
    f2.answer("1.7", OP1)
    await two.settle()
    status, live = await op.call("GET", "/api/live")
    assert live["data"]["call"]["caller_num"] == "13900000002"  # pbx2's caller, not pbx1's
    status, body = await op.call("POST", "/api/call/hangup", {"uniqueid": "1.7"})
    assert status == 200, body
    # (both PBXs name the caller's channel alike: only the PBX it goes to tells them apart)
    assert [a["Channel"] for a in sent(f2, "Hangup")] == ["Local/s@inbound-17;2"]
    assert sent(f1, "Hangup") == [] and "1.7" in f1.channels  # pbx1's caller untouched
    await two.settle()

    # Pause / ready: on both PBXs op1 is a member on.
    status, _ = await op.call("POST", "/api/agent/pause", {"reason": "meal"})
    assert status == 200
    assert len(sent(f1, "QueuePause")) == len(sent(f2, "QueuePause")) == 1

    # A supervisor listening in: ChanSpy on the PBX that carries the call.
    spy_support(f2)
    f2.caller_joins("2.1", "13900000003")
    await op.call("POST", "/api/agent/ready", {})
    await two.settle()
    f2.ring("2.1", OP1)
    f2.answer("2.1", OP1)
    await two.settle()
    sup = await two.as_user("sup1")
    status, body = await sup.call("POST", "/api/supervise/agent1001/spy",
                                  {"mode": "listen", "reason": "质检抽查"})
    assert status == 200, body
    assert len(sent(f2, "Originate")) == 1 and sent(f1, "Originate") == []

    # pbx2 down: sign-in skips it (and says so); pbx1 keeps working.
    f2.link_up = False
    f2._put((None, LinkChanged(two.service.clock(), False, "connection refused")))
    await two.settle()
    status, body = await op.call("POST", "/api/agent/signout", {})
    assert status == 503 and body.get("pbx") == "pbx2", body  # told which PBX is down
    assert sent(f1, "QueueRemove"), "pbx1's members were removed first"
