"""Call-centre reports (acd/reports.py): the report, the replay and the live wallboard give
the same figures for the same interval, and so does a restarted service; tables by
interval, hour and abandon time; operators' times from the state log; shifts; colours."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from acd import reports as rp
from acd.events import to_event
from acd.metrics import by_queue
from acd.state import Call, CallCenter, Outcome, QueueConfig
from agent_console.report_data import ReportConfig, build_report, tables, to_csv, to_xlsx
from callcenter.cli import main
from callcenter.config import load
from callcenter.db import Store
from callcenter.demo_orders import seed_report_history
from callcenter.pbx.replay import TraceEvents, read_queue_log, replay
from callcenter.service import Service
from tests.conftest import TRACES as TRACES_ROOT
from tests.conftest import trace_dirs
from tests.console_fakes import desk

TZ = ZoneInfo("Asia/Shanghai")
# Every shared trace, scenario-j (Asterisk killed and started again mid-session) included.
TRACES = trace_dirs()


def call(uid: str, joined: datetime, outcome: str, hold: int = 0, talk: int = 0,
         queue: str = "hotline", agent: str = "", hotline: str = "12345", wrap: float = 0.0,
         ivr_path: str = "direct") -> Call:
    t = joined.timestamp()
    c = Call(uid, queue, t, hotline=hotline, ivr_path=ivr_path, agent=agent)
    c.outcome = Outcome(outcome)
    c.hold_time = hold
    if outcome in ("answered", "completed"):
        c.answered_at = t + hold
    if outcome == "completed":
        c.ended_at = t + hold + talk
        c.talk_time = talk
        c.wrap_s = wrap
    return c


def at(h: int, m: int = 0, d: int = 23) -> datetime:
    return datetime(2026, 11, d, h, m, tzinfo=TZ)


def test_tables_by_interval_hour_dimension_and_abandon_time() -> None:
    calls = [
        call("1", at(9, 1), "completed", hold=10, talk=100, agent="a"),
        call("2", at(9, 20), "completed", hold=20, talk=60, agent="a", hotline="12369"),
        call("3", at(9, 40), "abandoned", hold=3),
        call("4", at(10, 5), "abandoned", hold=70, ivr_path="1-2"),
        call("5", at(10, 6), "exited", hold=5, queue="hotline-en"),
        call("6", at(8, 0, d=22), "completed", hold=1, talk=5),  # the day before
    ]
    start, end = rp.window(date(2026, 11, 23), "day", TZ)
    rep = rp.call_report(calls, start, end, "hour", short_abandon_s=5)
    assert len(rep.intervals) == 24
    nine = rep.intervals[at(9).isoformat()]
    assert (nine.offered, nine.answered, nine.abandoned, nine.answered_within_sl) == (3, 2, 1, 1)
    assert nine.connection_rate == 66.67 and nine.answer_rate_sl == 50.0
    assert rep.intervals[at(11).isoformat()].offered == 0
    assert rep.overall.offered == 5 and rep.overall.short_abandons == 1
    assert rep.overall.abandon_rate == 40.0 and rep.overall.max_wait_s == 70
    assert set(rep.queues) == {"hotline", "hotline-en"}
    assert rep.hotlines["12369"].offered == 1 and rep.hotlines["12345"].offered == 4
    assert rep.entries["menu"].offered == 1
    assert [h["offered"] for h in rep.hours][9:11] == [3, 2]
    assert [a["abandoned"] for a in rep.abandon_times] == [1, 0, 0, 0, 0, 1, 0]
    # A week and a month: rows are days; the Monday and the first of the month begin them.
    week = rp.call_report(calls, *rp.window(date(2026, 11, 25), "week", TZ), "day")
    assert len(week.intervals) == 7 and week.overall.offered == 5
    month = rp.call_report(calls, *rp.window(date(2026, 11, 2), "month", TZ), "day")
    assert len(month.intervals) == 30 and month.overall.offered == 6
    assert rp.window(date(2026, 12, 31), "month", TZ)[1] == datetime(2027, 1, 1, tzinfo=TZ)


@dataclass
class Row:
    at: float
    agent: str
    old: str
    new: str
    step: str
    reason: str = ""


def test_operator_times_from_the_state_log_clipped_to_the_window() -> None:
    t0 = at(8).timestamp()
    states = [
        Row(t0 - 600, "a", "logged_out", "ready", "login"),  # signed in before the window
        Row(t0 + 60, "a", "ready", "ringing", "ring"),
        Row(t0 + 70, "a", "ringing", "ready", "ring_end"),  # not answered
        Row(t0 + 100, "a", "ready", "ringing", "ring"),
        Row(t0 + 110, "a", "ringing", "on_call", "answer"),
        Row(t0 + 210, "a", "on_call", "wrap_up", "hangup_wrap"),
        Row(t0 + 240, "a", "wrap_up", "ready", "wrap_end"),
        Row(t0 + 300, "a", "ready", "paused", "pause", "meal"),
        Row(t0 + 900, "a", "paused", "ready", "unpause"),
        Row(t0 + 1000, "a", "ready", "logged_out", "logout"),
    ]
    c = call("1", at(8, 1), "completed", hold=50, talk=100, agent="a")
    c.answered_at = t0 + 110
    got = rp.agent_report(states, rp.calls_by_agent([c], t0, t0 + 3600), t0, t0 + 3600)["a"]
    assert got.signed_in_s == 1000 and got.ring_no_answer == 1
    assert got.calls_taken == 1 and got.talk_s == 100 and got.wrap_s == 30
    assert got.paused_s == 600 and got.paused_by_reason == {"meal": 600}
    assert got.ready_s == 1000 - 20 - 100 - 30 - 600
    assert got.agent_aht_s == 130.0 and got.pause_share == 60.0
    assert got.occupancy == 37.5  # (ringing 20 + talk 100 + wrap 30) / (that + ready 250)


def test_shifts_and_wallboard_colours() -> None:
    shifts = rp.parse_shifts([{"name": "白班", "start": "08:00", "end": "20:00"},
                              {"name": "夜班", "start": "20:00", "end": "08:00"}])
    s, a, b = rp.shift_at(at(3), shifts)  # type: ignore[misc]
    assert s.name == "夜班" and a == at(20, d=22) and b == at(8)
    assert rp.shift_at(at(12), shifts)[0].name == "白班"  # type: ignore[index]
    with pytest.raises(ValueError):
        rp.parse_shifts([{"name": "x", "start": "8 o'clock", "end": "20:00"}])
    assert shifts[1].span(date(2026, 11, 23), TZ)[1].time() == time(8)
    bounds = rp.DEFAULT_COLOURS
    assert rp.colour("answer_rate_sl", 79.9, 10, bounds) == "amber"
    assert rp.colour("answer_rate_sl", 80.0, 10, bounds) == "green"
    assert rp.colour("answer_rate_sl", 50.0, 10, bounds) == "red"
    assert rp.colour("abandon_rate", 6.0, 10, bounds) == "amber"
    assert rp.colour("answer_rate_sl", 0.0, 0, bounds) == "none"  # "0 calls", not 0.00 %
    assert rp.agent_counts(["ready", "ready", "paused"]) == {
        "ready": 2, "ringing": 0, "on_call": 0, "wrap_up": 0, "paused": 1, "logged_out": 0}


# --------------------------------------------------------------------------- exactness

def feed(service: Service, trace: Path) -> float:
    """The trace's PBX events through the service's own consumer path, as the live link
    hands them over (a new AMI session: the link goes down, then the resync with the
    queue_log the service reads); the last time."""
    log = trace.with_name("queue_log")
    events = TraceEvents(trace, read_queue_log(log) if log.is_file() else None)
    for event in events:
        service.dispatch(service.centre.apply(event))
    service.dispatch(service.centre.advance(events.last))
    return events.last


KEYS = rp.CALL_COLUMNS + ("completed", "answered_within_sl")


@pytest.mark.skipif(not TRACES, reason="no recorded traces")
@pytest.mark.parametrize("trace_dir", TRACES, ids=lambda p: p.name)
async def test_report_replay_and_wallboard_agree_and_survive_a_restart(
        trace_dir: Path, tmp_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace = trace_dir / "trace.jsonl"
    settings = load()
    settings.database_url = tmp_db
    settings.queues = {q: QueueConfig(15, 3) for q in settings.queues}
    clock = [0.0]
    service = Service(settings, clock=lambda: clock[0])
    await service.store.open()
    clock[0] = feed(service, trace) + 1
    await service.flush()
    live = service.snapshot(agents=False)
    await service.store.close()

    replayed = replay(trace, settings.queues, None, settings.default_queue_config(),
                      settings.short_abandon_s)
    day = datetime.fromtimestamp(clock[0], TZ).date()
    restarted = Service(settings, clock=lambda: clock[0])
    await restarted.store.open()
    try:
        await restarted._load_recent(1)
        after = restarted.snapshot(agents=False)
        report = await build_report(restarted.store.engine, settings, ReportConfig(),
                                    period="day", day=day, now=clock[0],
                                    sections=("calls", "agents"))
        month = await build_report(restarted.store.engine, settings, ReportConfig(),
                                   period="month", day=day, now=clock[0], sections=("calls",))
    finally:
        await restarted.store.close()
    assert live["today"]["offered"] > 0
    overall = report["calls"]["overall"]
    assert month["calls"]["overall"] == overall  # the month is read in two halves at once
    for k in KEYS:
        assert overall[k] == live["today"][k] == replayed["overall"][k] == after["today"][k], k
    for q in report["calls"]["queues"]:
        assert {k: q[k] for k in KEYS} == {k: replayed["queues"][q["queue"]][k] for k in KEYS}
    # Across an Asterisk restart the truth is its queue_log (scenario-j): the report of
    # the restarted service equals it, queue by queue.
    logged = trace_dir / "truth-queue_log.json"
    if logged.exists():
        truth = json.loads(logged.read_text(encoding="utf-8"))["queues"]
        mine = {q["queue"]: q for q in report["calls"]["queues"]}
        assert {q for q, t in truth.items() if t["offered"]} == set(mine)
        for name, q in mine.items():
            assert {k: q[k] for k in ("offered", "answered", "answered_within_sl", "completed",
                                      "abandoned", "servicelevel_perf", "servicelevel_perf2")
                    } == {k: truth[name][k] for k in ("offered", "answered",
                                                      "answered_within_sl", "completed",
                                                      "abandoned", "servicelevel_perf",
                                                      "servicelevel_perf2")}, name
    # The 15-minute interval the wallboard shows as "last 15 minutes" is a row of the report.
    quarter = rp.call_report([r for r in await _rows(tmp_db)], *rp.window(day, "day", TZ), "15m",
                             settings.servicelevel_for, settings.short_abandon_s)
    # The database's grouped sums (the report) equal the pure functions over the same rows.
    pure = rp.call_report(await _rows(tmp_db), *rp.window(day, "day", TZ), "hour",
                          settings.servicelevel_for, settings.short_abandon_s)
    assert report["calls"]["hours"] == pure.hours
    assert report["calls"]["abandon_times"] == pure.abandon_times
    assert [{k: r[k] for k in KEYS} for r in report["calls"]["intervals"]] == [
        {k: getattr(f, k) for k in KEYS} for f in pure.intervals.values()]
    start = datetime.fromisoformat(live["interval_start"]).isoformat()
    assert {k: getattr(quarter.intervals[start], k) for k in KEYS} == {
        k: live["last_15min"][k] for k in KEYS}
    # Operators: every answered call is taken by someone; on the plain trace (no
    # transfers) each operator's count equals the replay's.  In scenario-g the agent state
    # machine refuses rings during transfers (the records' rework is issue 16's).
    taken = {a["agent"]: a["calls_taken"] for a in report["agents"]}
    assert sum(taken.values()) == overall["answered"]
    if trace_dir.name == "scenario-a":
        assert {n: a["answered"] for n, a in replayed["agents"].items() if a["answered"]} == {
            n: v for n, v in taken.items() if v}
    # The files carry the same numbers.
    sheet = {tb.key: tb for tb in tables(report)}
    assert sheet["overall"].rows[0][1] == overall["offered"]
    assert to_csv(report, "queues").startswith("\ufeff队列".encode())
    assert to_xlsx(report)[:2] == b"PK"
    # `callcenter report --xlsx` (cron) writes the same tables: read it back.
    monkeypatch.setenv("HOTLINE_DATABASE_URL", tmp_db)
    out = tmp_path / "day.xlsx"
    assert await asyncio.to_thread(main, ["report", "--day", day.isoformat(), "--xlsx",
                                          str(out)]) == 0
    book = openpyxl.load_workbook(out)
    assert book["总体"]["B1"].value == "呼入量" and book["总体"]["B2"].value == overall["offered"]
    assert book["按队列"].max_row == 1 + len(report["calls"]["queues"])
    assert "承办单位考核·按渠道" in book.sheetnames  # departments by channel, in files too
    # by_queue over the stored rows is the third spelling of the same sum
    per, _ = by_queue(await _rows(tmp_db), settings.servicelevel_for, settings.short_abandon_s)
    assert sum(f.offered for f in per.values()) == overall["offered"]


async def test_the_cli_prints_the_call_tables_the_page_shows(
        tmp_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``callcenter report`` (JSON) and the reports page (``/api/reports/summary``) give
    the same call figures for the same day, and for a week of one queue."""
    asked = {(): "period=day", ("--period", "week", "--queue", "hotline"):
             "period=week&queue=hotline"}
    pages = {}
    async with desk(tmp_db) as d:
        tz = d.service.settings.tz
        assert await seed_report_history(d.service.store, tz=tz, calls=900, orders=30) > 0
        day = (datetime.now(tz) - timedelta(days=1)).date().isoformat()  # in the history
        sup = await d.as_user("sup1")
        for options, query in asked.items():
            status, pages[options] = await sup.call(
                "GET", f"/api/reports/summary?{query}&day={day}")
            assert status == 200 and pages[options]["calls"]["overall"]["offered"] > 0
    capsys.readouterr()  # the service's log lines
    for options, page in pages.items():
        assert await asyncio.to_thread(
            main, ["report", "--db", tmp_db, "--day", day, *options]) == 0
        assert json.loads(capsys.readouterr().out)["calls"] == page["calls"], options


async def test_the_demo_history_cut_off_after_its_calls_is_finished_next_time(
        store: Store) -> None:
    """A demo start cut off after the history's calls were written (a crash, Ctrl+C):
    the next start writes the state changes and the order steps still missing, and the
    calls not again."""
    from sqlalchemy import delete, func, select

    from callcenter.db import AgentStateRow, CallRow
    from callcenter.orders.store import OrderEventRow

    async def counts() -> tuple[int, int, int]:
        async with store.engine.connect() as conn:
            return tuple([(await conn.execute(select(func.count()).select_from(t))).scalar_one()
                          for t in (CallRow, AgentStateRow, OrderEventRow)])

    assert await seed_report_history(store, tz=TZ, calls=300, orders=20) == 300
    whole = await counts()
    assert all(whole)
    async with store.engine.begin() as conn:  # the cut: only the calls were written
        await conn.execute(delete(AgentStateRow))
        await conn.execute(delete(OrderEventRow))
    assert await seed_report_history(store, tz=TZ, calls=300, orders=20) == 0
    assert await counts() == whole
    assert await seed_report_history(store, tz=TZ, calls=300, orders=20) == 0  # done
    assert await counts() == whole


async def _rows(db: str) -> list[object]:
    s = Store(db)
    try:
        return list(await s.calls_between(0, 2**40))
    finally:
        await s.close()


def test_paused_share_is_measured_per_shift_not_since_the_service_started() -> None:
    from acd.state import Agent, AgentState
    from agent_console.alerts import Thresholds, evaluate
    from agent_console.views import Tracker, agent_json

    tracker = Tracker(rp.DEFAULT_SHIFTS, TZ)
    night = at(7).timestamp()
    agent = Agent("Local/1001@agents/n", "agent1001", state=AgentState.READY, since=night,
                  time_in={"paused": 3 * 3600.0, "ready": 3 * 3600.0}, paused_s=3 * 3600.0)
    rules = Thresholds(paused_share_pct=20, paused_share_min_s=1800)

    def alerts(now: float) -> list[str]:
        snap = {"link": {"up": True}, "queues": {}, "agents": {"agent1001": agent_json(
            agent, tracker)}}
        return [a.kind for a in evaluate(snap, rules, now)]

    assert tracker.roll(night, [agent]) and tracker.shift_name == "夜班"
    assert not tracker.roll(night + 60, [agent])
    assert alerts(night + 60) == ["paused_share"]  # half of the night shift paused
    # 08:00, 早班: the shares start again; an hour of ready time later, no alert.
    morning = at(8, 0).timestamp() + 2
    assert tracker.roll(morning, [agent]) and tracker.shift_name == "早班"
    assert alerts(morning + 3600) == []
    # Paused for 20 minutes of the next hour: 25 % of the shift, the alert is back.
    agent.time_in["ready"] += morning + 3600 - night
    agent.state, agent.since, agent.paused_since = AgentState.PAUSED, morning + 3600, \
        morning + 3600
    assert alerts(morning + 3600 + 1200) == ["paused_share"]


def test_one_colour_table_for_every_row_and_card_of_the_wallboard() -> None:
    """15秒接通率 50 % is the same colour in the "today" row and the "last 15 minutes"
    row, on the all-queues card and on each queue's card: one table of bounds, from the
    config, for all of them (it was red today and green in the last 15 minutes)."""
    from acd.state import CallCenter
    from agent_console.alerts import Thresholds
    from agent_console.report_data import ReportConfig
    from agent_console.session import ConsoleConfig
    from agent_console.views import Tracker, wall_view

    half = {"offered": 4, "answered": 4, "abandoned": 0, "connection_rate": 100.0,
            "answer_rate_sl": 50.0, "abandon_rate": 0.0, "asa_s": 9.0, "aht_s": 60.0}
    quiet = {"offered": 0, "answered": 0, "abandoned": 0, "connection_rate": 0.0,
             "answer_rate_sl": 0.0, "abandon_rate": 0.0, "asa_s": 0.0, "aht_s": 0.0}
    snap = {"today": half, "last_15min": half, "trend": [], "interval_start": "", "day": "",
            "queues": [{"queue": "hotline", "title": "12345", "servicelevel": 15,
                        "today": half, "last_15min": half, "agents_logged_in": 1},
                       {"queue": "hotline-en", "title": "English", "servicelevel": 15,
                        "today": half, "last_15min": quiet, "agents_logged_in": 0}]}

    def shown(bounds: dict[str, dict[str, float]]) -> list[str]:
        doc = wall_view(snap, CallCenter(), Tracker(rp.DEFAULT_SHIFTS, TZ), Thresholds(),
                        at(10).timestamp(), bounds=bounds)
        rows = [doc["colours"]] + [doc["queues"][q]["colours"] for q in ("hotline",)]
        got = [r[p]["answer_rate_sl"] for r in rows for p in ("today", "last_15min")]
        got.append(doc["queues"]["hotline-en"]["colours"]["today"]["answer_rate_sl"])
        assert doc["queues"]["hotline-en"]["colours"]["last_15min"]["answer_rate_sl"] == "none"
        return got

    assert shown(rp.DEFAULT_COLOURS) == ["red"] * 5  # below the default red bound of 60
    # The config's table ([reports.colours]) moves every row and card together, on the
    # wallboard (ConsoleConfig) and in the reports (ReportConfig) alike.
    settings = load()
    settings.raw = dict(settings.raw) | {"reports": {"colours": {
        "answer_rate_sl": {"amber": 60, "red": 40}}}}
    console, report = ConsoleConfig.from_settings(settings), ReportConfig.from_settings(settings)
    assert console.colours == report.colours
    assert shown(dict(console.colours)) == ["amber"] * 5
    assert console.colours["abandon_rate"] == rp.DEFAULT_COLOURS["abandon_rate"]
    with pytest.raises(ValueError):
        rp.parse_colours({"answer_rate_sl": {"amber": "eighty"}})


def test_hold_time_from_the_pbxs_hold_and_unhold_goes_to_the_call_and_its_operator() -> None:
    """The simulator's operator puts the caller on hold twice (Hold ... Unhold, then Hold
    until the call ends): the pure state adds the spans to the call and the operator,
    the record keeps them, and the operator report shows talk without hold, hold, and an
    AHT of talk + hold + wrap-up (Asterisk's TalkTime already holds the hold)."""
    from callcenter.pbx.sim import Pbx, PbxConfig, frame_dict
    from callcenter.pbx.sim import QueueConfig as SimQueue
    from callcenter.pbx.traffic import CallSpec, ScriptedTraffic

    t0 = at(9).timestamp()
    spec = CallSpec(at=0, number="13800000001", name="测试", ring=1, talk=60)
    pbx = Pbx(PbxConfig(queues=(SimQueue("hotline", servicelevel=15, wrapuptime=0),),
                        agents=1, agent_breaks=False),
              ScriptedTraffic([spec], origin=t0), start_time=t0, seed=1)
    centre = CallCenter({"hotline": QueueConfig(15, 0)})
    held: list[str] = []

    def step_to(second: int) -> None:
        for s in range(int(pbx.now - t0) + 1, second + 1):
            for f in pbx.advance(t0 + s):
                event = to_event(frame_dict(f.text), t0 + s)
                if event is not None:
                    centre.apply(event)

    def press(on: bool) -> None:
        member = next(iter(centre.agents.values())).interface
        assert pbx.hold(member, on)
        for f in pbx.drain():
            held.append(f.name)
            event = to_event(frame_dict(f.text), pbx.now)
            if event is not None:
                centre.apply(event)

    step_to(10)
    press(True)
    step_to(30)
    press(False)
    step_to(50)
    press(True)  # and the call ends on hold
    step_to(90)
    assert held[:2] == ["Hold", "MusicOnHoldStart"] and "Unhold" in held
    (call,) = [c for c in centre.visits.values() if c.outcome == Outcome.COMPLETED]
    agent = next(iter(centre.agents.values()))
    ended = call.ended_at - t0  # type: ignore[operator]
    assert call.on_hold_s == pytest.approx(20 + ended - 50)
    assert agent.hold_s == call.on_hold_s and call.to_row()["on_hold_s"] == call.on_hold_s
    taken = rp.calls_by_agent([call], t0, t0 + 3600)
    got = rp.agent_report([], taken, t0, t0 + 3600)[call.agent]
    assert got.hold_s == call.on_hold_s and got.talk_s == call.talk_time - call.on_hold_s
    assert got.agent_aht_s == round(got.talk_s + got.hold_s + got.wrap_s, 2)
    assert not pbx.hold(agent.interface, True)  # no call now: nothing to hold


PBX_TRACES = {"pbx1": TRACES_ROOT / "scenario-g", "pbx2": TRACES_ROOT / "scenario-j"}


@pytest.mark.skipif(not all(p.is_dir() for p in PBX_TRACES.values()),
                    reason="no recorded traces")
async def test_reports_per_pbx_add_up_to_the_centre_and_equal_each_pbxs_replay(
        tmp_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two PBXs, each fed its own recorded trace through its own centre: the call tables
    gain a row per PBX whose counts add up to the centre's, each PBX's row is that PBX's
    report (``pbx=``) and that trace's replay, from the raw rows and from a stored day
    alike; the files carry the table; an unknown PBX is refused."""
    from callcenter import report_days

    settings = load(env={})
    settings.database_url = tmp_db
    settings.ami.name = "pbx1"
    settings.more_pbxs = [type(settings.ami)(name="pbx2", port=5039)]
    settings.queues = {q: QueueConfig(15, 3) for q in settings.queues}
    clock = [0.0]
    service = Service(settings, clock=lambda: clock[0])
    await service.store.open()
    try:
        for name, d in PBX_TRACES.items():
            edge = service.edges[name]
            log = d / "queue_log"
            events = TraceEvents(d / "trace.jsonl", read_queue_log(log) if log.is_file() else None)
            for event in events:
                service.dispatch(edge.centre.apply(event))
            service.dispatch(edge.centre.advance(events.last))
            clock[0] = max(clock[0], events.last + 1)
        await service.flush()
        engine = service.store.engine
        day = datetime.fromtimestamp(clock[0], TZ).date()

        async def report(**kw: object) -> dict[str, object]:
            return await build_report(engine, settings, ReportConfig(), period="day",
                                      day=day, now=clock[0], sections=("calls",), **kw)

        whole = await report()
        calls = whole["calls"]
        assert whole["pbxs_known"] == ["pbx1", "pbx2"]
        assert [r["pbx"] for r in calls["pbxs"]] == ["pbx1", "pbx2"]
        for k in ("offered", "answered", "abandoned", "completed", "answered_within_sl",
                  "short_abandons"):
            assert sum(r[k] for r in calls["pbxs"]) == calls["overall"][k], k
        assert all(r["offered"] for r in calls["pbxs"])  # both traces have calls
        for row in calls["pbxs"]:
            mine = await report(pbx=row["pbx"])
            assert {k: row[k] for k in KEYS} == {k: mine["calls"]["overall"][k] for k in KEYS}
            assert [r["pbx"] for r in mine["calls"]["pbxs"]] == [row["pbx"]]
            replayed = replay(PBX_TRACES[row["pbx"]] / "trace.jsonl", settings.queues, None,
                              settings.default_queue_config(), settings.short_abandon_s)
            assert {k: row[k] for k in KEYS} == {k: replayed["overall"][k] for k in KEYS}
        # the same from the closed day's stored summary (its atoms keep their PBX)
        start, end = rp.window(day, "day", TZ)
        await report_days.build_day(engine, settings, start.timestamp(), end.timestamp(),
                                    end.timestamp() + 1)
        stored = await build_report(engine, settings, ReportConfig(), period="day", day=day,
                                    now=end.timestamp() + 1, sections=("calls",))
        assert stored["calls"] == (await build_report(
            engine, settings, ReportConfig(), period="day", day=day, now=end.timestamp() + 1,
            sections=("calls",), summaries=False))["calls"]
        assert stored["calls"]["pbxs"] == calls["pbxs"]
        two = await build_report(engine, settings, ReportConfig(), period="day", day=day,
                                 now=end.timestamp() + 1, sections=("calls",), pbx="pbx2")
        assert {k: two["calls"]["overall"][k] for k in KEYS} == {
            k: calls["pbxs"][1][k] for k in KEYS}
        cover = openpyxl.load_workbook(io.BytesIO(to_xlsx(two)))["说明"]
        assert cover["A3"].value == "交换机（PBX）：pbx2"  # a file says whose calls it holds
    finally:
        await service.store.close()
    # files: the table by PBX, read back
    sheet = {tb.key: tb for tb in tables(whole)}
    assert [r[:2] for r in sheet["pbxs"].rows] == [
        [r["pbx"], r["offered"]] for r in calls["pbxs"]]
    assert to_csv(whole, "pbxs").decode("utf-8-sig").startswith("交换机（PBX）,呼入量")
    out = tmp_path / "r.xlsx"
    out.write_bytes(to_xlsx(whole))
    book = openpyxl.load_workbook(out)
    assert [c.value for c in book["按交换机"]["A"]][1:] == ["pbx1", "pbx2"]
    # `callcenter report`: an unknown PBX is refused; the call tables are the page's, the
    # table by PBX included, and a known PBX limits them to its calls
    conf = tmp_path / "hotline.toml"
    conf.write_text('[[pbx]]\nname = "pbx1"\n\n[[pbx]]\nname = "pbx2"\nport = 5039\n',
                    encoding="utf-8")
    monkeypatch.setenv("HOTLINE_DATABASE_URL", tmp_db)
    args = ["--config", str(conf), "report", "--day", day.isoformat()]
    assert await asyncio.to_thread(main, [*args, "--pbx", "pbx9"]) != 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == calls
    assert await asyncio.to_thread(main, [*args, "--pbx", "pbx2"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert only["pbx"] == "pbx2" and only["calls"]["overall"] == two["calls"]["overall"]
