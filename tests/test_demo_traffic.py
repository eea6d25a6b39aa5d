"""The demo's first impressions: every queue, a call soon at any hour, repeat callers,
one clear line for every wrong option."""

from __future__ import annotations

import socket
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from callcenter.cli import main
from callcenter.config import load
from callcenter.demo import DemoError, build_sim_pbx, check_options, check_port_free
from callcenter.demo_orders import demo_callers
from callcenter.pbx.sim.wire import Frame
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig

SHANGHAI = ZoneInfo("Asia/Shanghai")
HUMAN = "Local/1001@agents/n"


def _events(frames: list[Frame], name: str) -> list[dict[str, str]]:
    return [f.headers() for f in frames if f.name == name]


@pytest.mark.parametrize("hour", [3, 10, 22])
def test_a_ready_operator_is_rung_within_15_s_at_any_hour(hour: int) -> None:
    settings = load(env={})
    t0 = datetime(2026, 11, 30, hour, 0, tzinfo=SHANGHAI).timestamp()
    pbx = build_sim_pbx(settings, seed=12345, agents=6, rate=None, peak_calls_per_hour=100.0,
                        start_time=t0, known_callers=demo_callers())
    assert set(pbx.queues) == set(settings.queues)  # hotline and hotline-en: 签入 works
    for queue in settings.queues:
        assert pbx.add_member(queue, HUMAN, "agent1001") == ""
    frames = pbx.advance(t0 + 15)
    called = [e for e in _events(frames, "AgentCalled")
              if e.get("Interface", e.get("DestChannel", "")).startswith("Local/1001@")]
    assert called, "no call rang the ready operator within 15 s"


def test_the_day_profile_follows_the_centres_clock_not_the_machines() -> None:
    settings = load(env={})
    # 02:00 UTC is 10:00 in Shanghai, the morning peak.
    t0 = datetime(2026, 11, 30, 2, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    pbx = build_sim_pbx(settings, seed=1, agents=2, rate=None, peak_calls_per_hour=100.0,
                        start_time=t0)
    traffic = pbx.traffic
    assert isinstance(traffic, RandomTraffic)
    assert traffic.config.start_hour == pytest.approx(10.0)
    assert traffic.rate_at(t0) == pytest.approx(100.0 / 3600, rel=0.1)
    # 03:00 in Shanghai: quiet, but never below the demo's floor.
    assert traffic.rate_at(t0 + 17 * 3600) == pytest.approx(0.25 * 100.0 / 3600, rel=0.01)


def test_day_shape_with_a_floor() -> None:
    traffic = RandomTraffic(TrafficConfig(peak_calls_per_hour=100, start_hour=0, floor=0.25),
                            seed=3)
    night, morning = traffic.rate_at(3 * 3600), traffic.rate_at(10.5 * 3600)
    assert night == pytest.approx(25 / 3600) and morning == pytest.approx(100 / 3600)
    with pytest.raises(ValueError):
        TrafficConfig(floor=1.5)
    with pytest.raises(ValueError):
        TrafficConfig(first_call_after=-1)


def test_repeat_callers_share_and_known_callers_call() -> None:
    known = tuple(demo_callers())
    traffic = RandomTraffic(TrafficConfig(peak_calls_per_hour=600, repeat_share=0.3,
                                          known_callers=known, first_call_after=5.0),
                            seed=7, origin=1000.0)
    calls = []
    now = 1000.0
    for _ in range(2000):
        spec = traffic.next_call(now)
        assert spec is not None
        calls.append(spec)
        now = spec.at
    assert calls[0].at == 1005.0
    seen: set[str] = {n for n, _ in known}
    repeats = 0
    for spec in calls:
        repeats += spec.number in seen
        seen.add(spec.number)
    assert 0.20 <= repeats / len(calls) <= 0.40, repeats / len(calls)
    known_numbers = {n for n, _ in known}
    assert len({c.number for c in calls} & known_numbers) >= len(known_numbers) // 2
    # A repeat caller keeps their name.
    names = {}
    for spec in calls:
        assert names.setdefault(spec.number, spec.name) == spec.name
    # Off by default: the benchmark's and the tests' streams are unchanged.
    plain = RandomTraffic(TrafficConfig(peak_calls_per_hour=600), seed=7)
    numbers = [plain.next_call(0.0).number for _ in range(300)]  # type: ignore[union-attr]
    assert len(set(numbers)) == 300


@pytest.mark.parametrize("options, words", [
    ({"speed": 0.0}, "--speed 0 must be above 0"),
    ({"rate": -1.0}, "--rate -1 must be above 0"),
    ({"agents": -3}, "--agents -3 must be between 0 and 500"),
    ({"port": 70000}, "--port 70000 is not a TCP port"),
])
def test_impossible_demo_options_are_one_line(options: dict, words: str) -> None:
    base = {"speed": 1.0, "rate": None, "agents": 6, "port": 8080, "agi_port": 0}
    with pytest.raises(DemoError, match=words):
        check_options(**{**base, **options})


def test_cli_refuses_before_any_start_up_noise(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DemoError, match="Address already in use"):
            check_port_free("127.0.0.1", port, "the web console")
        code = main(["demo", "--port", str(port), "--agi-port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "Traceback" not in err
    assert main(["demo", "--agents", "-3"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_report_on_an_empty_database_says_so(tmp_db: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = tmp_db
    assert main(["report", "--db", url, "--day", "2026-11-30"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("callcenter: no calls on 2026-11-30 in ") and err.count("\n") == 1


async def test_the_running_demo_rings_a_ready_operator_within_15_s(tmp_db: str, tmp_path) -> None:
    import asyncio
    import time

    from callcenter.demo import start_demo

    settings = load(env={})
    settings.recordings_root = tmp_path / "recordings"
    demo = await start_demo(settings, port=0, agi_port=0, db=tmp_db, agents=3,
                            seed_users=False)
    try:
        ready_at = time.monotonic()
        for queue in settings.queues:  # what the console's 签入 sends (QueueAdd)
            assert demo.sim.pbx.add_member(queue, HUMAN, "agent1001") == ""
        agents = demo.service.centre.agents
        while time.monotonic() - ready_at < 15:
            agent = agents.get(HUMAN)
            if agent is not None and agent.state.value in ("ringing", "on_call"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no call rang the ready operator within 15 s of start-up")
    finally:
        await demo.stop()


async def test_serve_knows_when_no_account_can_sign_in(tmp_db: str) -> None:
    from agent_console.auth import seed_demo_users
    from callcenter.cli import _has_accounts
    from callcenter.service import Service
    from tests.console_fakes import CHEAP, FakePbx

    settings = load(env={})
    settings.database_url = tmp_db
    service = Service(settings)
    service.link = FakePbx(service)  # type: ignore[assignment]
    await service.start()
    try:
        assert not await _has_accounts(service)  # serve prints how to make one
        await seed_demo_users(service.store, passwords=CHEAP)
        assert await _has_accounts(service)
    finally:
        await service.stop()
