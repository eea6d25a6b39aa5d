"""IVR: the pure menu machine, and the FastAGI scripts over real TCP with a fake Asterisk."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer, QueueConfig
from callcenter.pbx.traffic import CallSpec, ScriptedTraffic
from ivr.agi_gate import start_agi_server
from ivr.fastagi import (
    AgiThread,
    AgiTokens,
    CallbackRequest,
    HotlineAgi,
    inbound_token,
    last4,
)
from ivr.menus import (
    DEFAULT_CONFIG,
    Answered,
    CallbackRequested,
    Collect,
    EnterQueue,
    IvrConfigError,
    IvrSession,
    NoAnswer,
    Play,
    SetVar,
    load_config,
    parse_config,
    return_visit,
)

CONFIG = load_config()

HOTLINES = {"12345": "consult", "12349": "civil_affairs", "12315": "market_regulation",
            "12369": "environment", "12333": "social_security", "12319": "urban_construction",
            "12320": "health"}


def with_menus(**over: Any) -> Any:
    """The shipped config with the language menu and the main DTMF menu switched on."""
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    data["language"]["enabled"] = True
    data["hotlines"]["12345"]["menu"] = "main"
    data.update(over)
    return parse_config(data)


def variables(commands: Sequence[Any]) -> dict[str, str]:
    return {c.name: c.value for c in commands if isinstance(c, SetVar)}


# -- the pure core --------------------------------------------------------------------------

@pytest.mark.parametrize(("number", "category"), sorted(HOTLINES.items()))
def test_number_dialled_picks_category_and_goes_straight_to_the_queue(number: str,
                                                                       category: str) -> None:
    out = IvrSession(CONFIG, number).start()
    assert out[0] == Play("hotline/welcome")
    assert not any(isinstance(c, Collect) for c in out)
    assert variables(out) == {"HOTLINE": number, "CATEGORY": category, "IVR_PATH": "direct",
                              "LANG": "zh"}
    assert out[-1] == EnterQueue("hotline")


def test_unlisted_number_keeps_its_number_and_gets_12345s_category_and_queue() -> None:
    out = IvrSession(CONFIG, "12399").start()
    assert variables(out)["HOTLINE"] == "12399"
    assert variables(out)["CATEGORY"] == "consult"
    assert out[-1] == EnterQueue("hotline")


def test_the_dialplans_category_wins() -> None:
    out = IvrSession(CONFIG, "12345", category="health").start()
    assert variables(out)["CATEGORY"] == "health"


def test_language_then_menu_then_submenu() -> None:
    s = IvrSession(with_menus(), "12345")
    assert s.start()[-1] == Collect("hotline/choose-language", 4000)
    assert s.on_digits("2") == [Collect("hotline/main-menu", 5000)]
    assert s.on_digits("2") == [Collect("hotline/complaint-menu", 5000)]
    out = s.on_digits("1")
    assert variables(out) == {"HOTLINE": "12345", "CATEGORY": "market_regulation",
                              "IVR_PATH": "2-2-1", "LANG": "en"}
    assert out[-1] == EnterQueue("hotline-en")
    with pytest.raises(RuntimeError):
        s.on_digits("1")


def test_invalid_keys_and_timeouts_retry_then_queue_with_defaults() -> None:
    s = IvrSession(with_menus(), "12345")
    s.start()
    assert s.on_timeout() == [Collect("hotline/choose-language", 4000)]  # 1 retry
    assert s.on_digits("9") == [Collect("hotline/main-menu", 5000)]  # gave up: default zh
    assert s.on_digits("7") == [Play("hotline/invalid"), Collect("hotline/main-menu", 5000)]
    assert s.on_digits("") == [Play("hotline/no-input"), Collect("hotline/main-menu", 5000)]
    out = s.on_timeout()  # retries exhausted: never dropped
    assert variables(out) == {"HOTLINE": "12345", "CATEGORY": "consult", "IVR_PATH": "direct",
                              "LANG": "zh"}
    assert out[-1] == EnterQueue("hotline")


def test_callback_offered_only_when_the_wait_is_long() -> None:
    assert IvrSession(CONFIG, "12345", expected_wait={"hotline": 119}).start()[-1] \
        == EnterQueue("hotline")
    s = IvrSession(CONFIG, "12315", expected_wait={"hotline": 120})
    assert s.start()[-1] == Collect("hotline/callback-offer", 5000)
    out = s.on_digits("1")
    assert CallbackRequested("hotline", "12315", "market_regulation", "zh", "1") in out
    assert not any(isinstance(c, EnterQueue) for c in out)
    s = IvrSession(CONFIG, "12315", expected_wait={"hotline": 300})
    s.start()
    assert s.on_timeout()[-1] == EnterQueue("hotline")  # silence: keep waiting in the queue


def test_bad_config_is_refused() -> None:
    with pytest.raises(IvrConfigError):
        with_menus(default_hotline="110")
    with pytest.raises(IvrConfigError):
        parse_config({"hotlines": {"12345": {"category": "c", "queue": "q", "menu": "nope"}}})


def test_return_visit_questionnaire() -> None:
    q = return_visit()
    assert q.start() == [Collect("hotline/rv-resolved", 6000)]
    assert q.on_digits("5") == [Play("hotline/invalid"), Collect("hotline/rv-resolved", 6000)]
    assert q.on_digits("2") == [Collect("hotline/rv-sat-operator", 6000)]
    q.on_digits("3")
    assert q.on_digits("1") == [Answered({"resolved": False, "sat_operator": 3,
                                          "sat_department": 1})]
    q = return_visit()
    q.start()
    q.on_timeout()
    q.on_timeout()
    assert q.on_timeout() == [NoAnswer({})]


def test_last4() -> None:
    assert last4("13800138000") == "*******8000"
    assert last4("110") == "110"


# -- FastAGI over TCP -------------------------------------------------------------------------

SECRET = "shared-dialplan-secret"


def agi(config: Any = None, **kwargs: Any) -> HotlineAgi:
    """The scripts with the test's shared secret (AGI_TOKEN as the dialplan computes it)."""
    kwargs.setdefault("tokens", AgiTokens(secret=SECRET))
    return HotlineAgi(config or CONFIG, **kwargs)


@dataclass
class FakeAsterisk:
    """Asterisk's side of a FastAGI connection, scripted.

    ``keys`` answer each GET DATA in turn: digits, "" for a timeout, "HANGUP"
    for a caller hanging up (``200 result=-1``).  Every other command gets
    ``200 result=0``; GET VARIABLE answers from ``channel_vars``.
    """
    port: int
    script: str
    headers: dict[str, str] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    channel_vars: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    queue_result: str = "0"  # "-1": the caller hung up while in Queue()
    token: str | None = None  # AGI_TOKEN; None: the dialplan's for uniqueid 1700000000.42
    missing: set[str] = field(default_factory=set)  # prompts "not found" (result=-1 endpos=0)

    async def run(self) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = {"agi_network": "yes", "agi_network_script": self.script,
                "agi_request": f"agi://127.0.0.1/{self.script}", "agi_channel": "PJSIP/trunk-1",
                "agi_language": "zh", "agi_uniqueid": "1700000000.42",
                "agi_callerid": "13800138000", "agi_calleridname": "unknown",
                "agi_dnid": "12345", "agi_extension": "12345", "agi_context": "inbound",
                "agi_priority": "2", **self.headers}
        writer.write("".join(f"{k}: {v}\n" for k, v in head.items()).encode() + b"\n")
        await writer.drain()
        while line := await asyncio.wait_for(reader.readline(), 5):
            command = line.decode().rstrip("\n")
            self.commands.append(command)
            writer.write((self.answer(command) + "\n").encode())
            await writer.drain()
        writer.close()
        return self.commands

    def answer(self, command: str) -> str:
        if command.startswith("GET DATA"):
            key = self.keys.pop(0) if self.keys else ""
            if key == "HANGUP":
                return "200 result=-1"
            return f"200 result={key} (timeout)" if key == "" else f"200 result={key}"
        if command.startswith("EXEC Queue"):
            return f"200 result={self.queue_result}"
        if command.startswith("STREAM FILE") and command.split()[2] in self.missing:
            return "200 result=-1 endpos=0"
        if command == "GET VARIABLE AGI_TOKEN":
            token = inbound_token(SECRET, "1700000000.42") if self.token is None else self.token
            return f"200 result=1 ({token})"
        if command.startswith("GET VARIABLE"):
            value = self.channel_vars.get(command.split()[2])
            return f"200 result=1 ({value})" if value is not None else "200 result=0"
        return "200 result=0"


@dataclass
class Recorder:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[AgiThread] = []

    async def start(agi: HotlineAgi) -> int:
        server = await start_agi_server(agi, "127.0.0.1", 0)
        servers.append(server)
        return server.port

    yield start
    for s in servers:
        await s.stop()


def set_vars(commands: list[str]) -> dict[str, str]:
    out = {}
    for c in commands:
        if c.startswith("SET VARIABLE "):
            _, _, name, value = c.split(" ", 3)
            out[name] = value.strip('"')
    return out


async def test_hotline_direct_path_sets_variables_and_queues(serve: Any) -> None:
    port = await serve(agi(CONFIG))
    cmds = await FakeAsterisk(port, "hotline", {"agi_dnid": "12369",
                                                "agi_extension": "12369"}).run()
    assert cmds[0] == "ANSWER"
    assert 'STREAM FILE hotline/welcome ""' in cmds
    assert set_vars(cmds) == {"HOTLINE": "12369", "CATEGORY": "environment",
                              "IVR_PATH": "direct", "LANG": "zh"}
    # Queue() returned unanswered (no MEMBERINTERFACE): no survey, the script hangs up.
    assert cmds[-3:] == ["EXEC Queue hotline,tc,,,3600", "GET VARIABLE MEMBERINTERFACE",
                         "HANGUP"]


async def test_after_call_survey_on_the_same_channel(serve: Any) -> None:
    surveys = Recorder()
    port = await serve(agi(CONFIG, on_survey=surveys))
    fake = FakeAsterisk(port, "hotline", keys=["9", "2"],
                        channel_vars={"MEMBERINTERFACE": "Local/1001@agents"})
    cmds = await fake.run()
    i = cmds.index("EXEC Queue hotline,tc,,,3600")
    assert cmds[i + 1] == "GET VARIABLE MEMBERINTERFACE"
    assert cmds[i + 2:].count("GET DATA hotline/survey 6000 1") == 2  # "9" is not a score
    assert surveys.calls == [("1700000000.42", 2)]
    assert cmds[-2:] == ['STREAM FILE hotline/thanks ""', "HANGUP"]


async def test_no_survey_when_the_caller_hung_up_in_the_queue(serve: Any) -> None:
    surveys = Recorder()
    port = await serve(agi(CONFIG, on_survey=surveys))
    fake = FakeAsterisk(port, "hotline", channel_vars={"MEMBERINTERFACE": "Local/1001@agents"},
                        queue_result="-1")
    cmds = await fake.run()
    assert cmds[-1] == "EXEC Queue hotline,tc,,,3600"
    assert surveys.calls == []


async def test_survey_silence_is_stored_as_no_score(serve: Any) -> None:
    surveys = Recorder()
    port = await serve(agi(CONFIG, on_survey=surveys))
    await FakeAsterisk(port, "hotline", keys=["", "", "", ""],
                       channel_vars={"MEMBERINTERFACE": "Local/1001@agents"}).run()
    assert surveys.calls == [("1700000000.42", None)]


async def test_hotline_menus_with_bad_key_and_timeout(serve: Any) -> None:
    port = await serve(agi(with_menus()))
    fake = FakeAsterisk(port, "hotline", keys=["2", "8", "", "3"])
    cmds = await fake.run()
    assert cmds.count("GET DATA hotline/main-menu 5000 1") == 3
    assert 'STREAM FILE hotline/invalid ""' in cmds
    assert 'STREAM FILE hotline/no-input ""' in cmds
    assert set_vars(cmds) == {"HOTLINE": "12345", "CATEGORY": "suggestion", "IVR_PATH": "2-3",
                              "LANG": "en"}
    assert "EXEC Queue hotline-en,tc,,,3600" in cmds


async def test_hotline_caller_hangs_up_in_a_menu(serve: Any) -> None:
    port = await serve(agi(with_menus()))
    cmds = await FakeAsterisk(port, "hotline", keys=["1", "HANGUP"]).run()
    assert cmds[-1] == "GET DATA hotline/main-menu 5000 1"
    assert not any(c.startswith(("SET VARIABLE", "EXEC Queue")) for c in cmds)


async def test_hotline_callback_request(serve: Any) -> None:
    got = Recorder()
    port = await serve(agi(CONFIG, expected_wait=lambda: {"hotline": 600.0}, on_callback=got))
    cmds = await FakeAsterisk(port, "hotline", keys=["1"]).run()
    assert got.calls == [(CallbackRequest("1700000000.42", "13800138000", "hotline", "12345",
                                          "consult", "zh", "1", "", "1700000000.42"),)]
    assert cmds[-2:] == ['STREAM FILE hotline/callback-confirm ""', "HANGUP"]
    assert not any(c.startswith("EXEC Queue") for c in cmds)


async def test_selfservice_looks_up_the_order(serve: Any) -> None:
    looked: list[str] = []

    async def lookup(number: str) -> str | None:
        looked.append(number)
        return "processing" if number == "20260001" else None

    port = await serve(agi(CONFIG, lookup_order=lookup))
    cmds = await FakeAsterisk(port, "selfservice", keys=["", "999", "20260001#"]).run()
    assert looked == ["999", "20260001"]
    assert 'STREAM FILE hotline/order-not-found ""' in cmds
    assert set_vars(cmds) == {"ORDER_STATUS": "processing"}
    assert cmds[-2:] == ['STREAM FILE hotline/order-status-processing ""', "HANGUP"]


async def test_survey_stores_the_key(serve: Any) -> None:
    got = Recorder()
    port = await serve(agi(CONFIG, on_survey=got))
    await FakeAsterisk(port, "survey", {"agi_arg_1": "1700000000.7"}, keys=["4", "3"]).run()
    assert got.calls == [("1700000000.7", 3)]
    await FakeAsterisk(port, "survey", {"agi_uniqueid": "1700000000.43"}, keys=["", "", ""],
                       token=inbound_token(SECRET, "1700000000.43")).run()
    assert got.calls[-1] == ("1700000000.43", None)


async def test_returnvisit_records_the_citizens_keys(serve: Any) -> None:
    answers, silent = Recorder(), Recorder()
    tokens = AgiTokens(secret=SECRET)
    port = await serve(agi(CONFIG, on_answer=answers, on_no_answer=silent, tokens=tokens))
    cmds = await FakeAsterisk(port, "returnvisit", {"agi_arg_1": "WO-1"},
                              keys=["1", "9", "3", "2"],
                              token=tokens.issue("returnvisit", "WO-1")).run()
    assert answers.calls == [("WO-1", True, 3, 2, "1700000000.42")]
    assert set_vars(cmds) == {"RETURNVISIT_RESULT": "answered"}
    assert "GET DATA hotline/rv-sat-department 6000 1" in cmds
    assert silent.calls == []


async def test_returnvisit_order_from_channel_variable_and_not_solved(serve: Any) -> None:
    answers = Recorder()
    tokens = AgiTokens()
    port = await serve(agi(CONFIG, on_answer=answers, tokens=tokens))
    await FakeAsterisk(port, "returnvisit", channel_vars={"ORDER_ID": "WO-9"},
                       keys=["2", "HANGUP"], token=tokens.issue("returnvisit", "WO-9")).run()
    assert answers.calls == [("WO-9", False, None, None, "1700000000.42")]


@pytest.mark.parametrize("keys", [["", "", ""], ["HANGUP"], ["7", "", "8"]])
async def test_returnvisit_no_answer(serve: Any, keys: list[str]) -> None:
    answers, silent = Recorder(), Recorder()
    tokens = AgiTokens()
    port = await serve(agi(CONFIG, on_answer=answers, on_no_answer=silent, tokens=tokens))
    cmds = await FakeAsterisk(port, "returnvisit", {"agi_arg_1": "WO-2"}, keys=keys,
                              token=tokens.issue("returnvisit", "WO-2")).run()
    assert answers.calls == []
    assert silent.calls == [("WO-2", "1700000000.42")]
    if keys != ["HANGUP"]:
        assert set_vars(cmds) == {"RETURNVISIT_RESULT": "no_answer"}


# -- the PBX simulator as Asterisk's FastAGI client -----------------------------------------------

async def test_pbx_simulator_runs_callers_through_the_fastagi_ivr(serve: Any) -> None:
    callbacks = Recorder()
    port = await serve(agi(with_menus(), expected_wait=lambda: {"hotline-en": 999.0},
                                  on_callback=callbacks))
    calls = [CallSpec(1.0, "13800001111", "A", hotline="12315", ivr_path="1"),
             CallSpec(2.0, "13800002222", "B", hotline="12345", ivr_path="2-3"),
             CallSpec(3.0, "13800003333", "C", hotline="12345", ivr_path="2-1-1")]
    t0 = 1_795_000_000.0
    pbx = Pbx(PbxConfig(queues=(QueueConfig("hotline", maxwait=0),
                                QueueConfig("hotline-en", maxwait=0)),
                        agents=0, agent_breaks=False),
              ScriptedTraffic(calls, origin=t0), start_time=t0, hold_arrivals=True)
    sim = PbxSimServer(pbx, port=0, speed=50.0, agi_url=f"agi://127.0.0.1:{port}/hotline",
                       agi_secret=SECRET)
    sim.missing_prompts = {"hotline/welcome", "hotline/main-menu"}  # a PBX without sounds
    await sim.start()
    try:
        for _ in range(200):
            if len(pbx.queues["hotline"].callers) + len(pbx.queues["hotline-en"].callers) == 2 \
                    and callbacks.calls:
                break
            await asyncio.sleep(0.02)
    finally:
        await sim.stop()
    [a] = pbx.queues["hotline"].callers
    [b] = pbx.queues["hotline-en"].callers
    assert (a.spec.hotline, a.spec.category, a.spec.ivr_path) == ("12315", "market_regulation",
                                                                  "1")  # chose Chinese
    assert (b.spec.hotline, b.spec.category, b.spec.ivr_path) == ("12345", "suggestion", "2-3")
    [(request,)] = callbacks.calls
    assert (request.callerid, request.queue, request.category) == ("13800003333", "hotline-en",
                                                                   "consult")


def test_agi_url_needs_held_arrivals() -> None:
    with pytest.raises(ValueError):
        PbxSimServer(Pbx(), agi_url="agi://127.0.0.1:4573/hotline")


async def test_returnvisit_without_an_order_hangs_up(serve: Any) -> None:
    answers, silent = Recorder(), Recorder()
    port = await serve(agi(CONFIG, on_answer=answers, on_no_answer=silent))
    cmds = await FakeAsterisk(port, "returnvisit", keys=["1"]).run()
    assert cmds == ["GET VARIABLE ORDER_ID", "HANGUP"]
    assert answers.calls == silent.calls == []


# -- as a real Asterisk 22.10.1 answers (AMI-NOTES, "FastAGI as a real Asterisk speaks it") ------

async def test_the_dialplans_hotline_and_category_win_over_dnid_unknown_and_exten_s(
        serve: Any) -> None:
    port = await serve(agi(CONFIG))
    cmds = await FakeAsterisk(port, "hotline", {"agi_dnid": "unknown", "agi_extension": "s",
                                                "agi_context": "inbound-ivr"},
                              channel_vars={"HOTLINE": "12315",
                                            "CATEGORY": "market_regulation"}).run()
    assert set_vars(cmds)["HOTLINE"] == "12315"
    assert set_vars(cmds)["CATEGORY"] == "market_regulation"


async def test_a_category_not_in_the_list_falls_back_to_the_hotlines(serve: Any) -> None:
    port = await serve(agi(CONFIG))
    cmds = await FakeAsterisk(port, "hotline", {"agi_dnid": "unknown", "agi_extension": "s"},
                              channel_vars={"HOTLINE": "12369", "CATEGORY": "12369"}).run()
    assert set_vars(cmds)["CATEGORY"] == "environment"


async def test_a_missing_prompt_is_skipped_and_the_menu_still_takes_keys(serve: Any) -> None:
    from structlog.testing import capture_logs

    from ivr.fastagi import MISSING_PROMPTS

    MISSING_PROMPTS.clear()
    port = await serve(agi(with_menus()))
    with capture_logs() as logs:
        for _ in range(2):
            fake = FakeAsterisk(port, "hotline", keys=["2", "3"],
                                missing={"hotline/welcome", "hotline/main-menu"})
            cmds = await fake.run()
            # 200 result=-1 endpos=0 is not a hang-up: the keys are still taken
            assert set_vars(cmds)["IVR_PATH"] == "2-3"
            assert "EXEC Queue hotline-en,tc,,,3600" in cmds
    assert [e["prompt"] for e in logs if e["event"] == "prompt_not_played"] == [
        "hotline/welcome"]  # once per prompt, not per call (GET DATA plays its own)


async def test_a_real_hangup_ends_the_script(serve: Any) -> None:
    """``HANGUP`` (Asterisk's notice to a FastAGI script) ends it at once."""
    port = await serve(agi(CONFIG))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network_script: hotline\nagi_uniqueid: 1700000000.9\n\n")
    seen = []
    while line := await asyncio.wait_for(reader.readline(), 5):
        seen.append(line.decode().strip())
        writer.write(b"HANGUP\n" if seen[-1].startswith("STREAM FILE") else b"200 result=0\n")
    writer.close()
    assert seen[-1] == 'STREAM FILE hotline/welcome ""'


# -- writes need a token only the service could have issued ----------------------------------

async def test_returnvisit_keys_without_a_valid_token_are_refused_and_reported(
        serve: Any) -> None:
    answers, silent, refused = Recorder(), Recorder(), Recorder()
    tokens = AgiTokens(secret=SECRET)
    port = await serve(agi(CONFIG, on_answer=answers, on_no_answer=silent, tokens=tokens,
                           on_refused=refused))
    # anyone who reaches the port: a made-up token, then the dialplan's inbound token
    for token in ("00" * 16, inbound_token(SECRET, "1700000000.42")):
        cmds = await FakeAsterisk(port, "returnvisit", {"agi_arg_1": "WO-7"},
                                  keys=["1", "3", "3"], token=token).run()
        assert not any(c.startswith("GET DATA") for c in cmds)
    # a token issued for another order, then the right one twice
    other = tokens.issue("returnvisit", "WO-8")
    await FakeAsterisk(port, "returnvisit", {"agi_arg_1": "WO-7"}, keys=["1"],
                       token=other).run()
    good = tokens.issue("returnvisit", "WO-7")
    for _ in range(2):
        await FakeAsterisk(port, "returnvisit", {"agi_arg_1": "WO-7"}, keys=["1", "3", "3"],
                           token=good).run()
    assert answers.calls == [("WO-7", True, 3, 3, "1700000000.42")]
    assert silent.calls == []
    assert [why for why, _ in refused.calls] == [
        "token not issued by this service", "token not issued by this service",
        "token issued for another call", "token not issued by this service"]


async def test_inbound_writes_need_the_dialplans_token_once(serve: Any) -> None:
    surveys, callbacks, refused = Recorder(), Recorder(), Recorder()
    port = await serve(agi(CONFIG, on_survey=surveys, on_callback=callbacks,
                           on_refused=refused, expected_wait=lambda: {"hotline": 600.0}))
    await FakeAsterisk(port, "hotline", keys=["1"], token="forged").run()
    assert callbacks.calls == [] and refused.calls[-1][0] == "token not issued by this service"
    await FakeAsterisk(port, "hotline", keys=["1"]).run()  # the dialplan's token
    await FakeAsterisk(port, "hotline", keys=["1"]).run()  # the same call again
    assert len(callbacks.calls) == 1 and refused.calls[-1][0] == "token already used"


async def test_scripts_run_on_their_own_thread_and_reach_the_service_only_on_its_loop(
        serve: Any) -> None:
    """One writer: the FastAGI edge has its own thread and loop (a burst of connections
    costs that loop), but every callback and the token check run on the service's."""
    service_loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool, bool]] = []  # (what, on the service's loop, on this thread)

    def where(what: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        seen.append((what, running is service_loop,
                     threading.current_thread() is threading.main_thread()))

    class Tokens(AgiTokens):
        def redeem(self, *args: Any) -> str | None:
            where("redeem")
            return super().redeem(*args)

    async def on_survey(call_id: str, score: int | None) -> None:
        where("on_survey")

    def waits() -> dict[str, float]:
        where("expected_wait")
        return {"hotline": 600.0}

    scripts_on: list[bool] = []
    hotline = agi(CONFIG, on_survey=on_survey, on_callback=lambda req: where("on_callback"),
                  expected_wait=waits, tokens=Tokens(secret=SECRET))
    original = hotline.hotline

    async def spy_thread(channel: Any) -> None:
        scripts_on.append(asyncio.get_running_loop() is service_loop)
        await original(channel)

    hotline.hotline = spy_thread  # type: ignore[method-assign]
    port = await serve(hotline)
    await FakeAsterisk(port, "hotline", keys=["1"]).run()
    await FakeAsterisk(port, "survey", {"agi_uniqueid": "1700000000.43"}, keys=["2"],
                       token=inbound_token(SECRET, "1700000000.43")).run()
    assert scripts_on == [False]  # the conversation itself ran on the FastAGI loop
    assert [w for w, _, _ in seen] == ["expected_wait", "redeem", "on_callback", "redeem",
                                       "on_survey"]
    assert all(on_loop and on_main for _, on_loop, on_main in seen), seen
