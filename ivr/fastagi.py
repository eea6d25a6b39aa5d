"""The FastAGI edge: Asterisk's ``AGI(agi://host:4573/<script>)`` served with panoramisk.

Scripts (``agi_network_script``):

``hotline``
    Runs :class:`ivr.menus.IvrSession` for an inbound call: the dialled number
    (``agi_dnid`` or ``agi_extension``) picks the hotline, the channel gets
    ``HOTLINE``, ``CATEGORY``, ``IVR_PATH`` and ``LANG`` with ``SET VARIABLE``,
    and the path ends with ``EXEC Queue <queue>,t,,,3600`` -- or with a
    call-back request handed to ``on_callback`` and a hang-up.
``selfservice``
    The citizen keys an order number (``GET DATA``) and hears its status from
    ``lookup_order(number) -> status | None``.
``survey``
    The after-call satisfaction key 1-3, handed to ``on_survey(call_id, score)``
    (``score`` None when the caller gave none).  ``call_id`` is ``agi_arg_1``
    when the dialplan passes the surveyed call's uniqueid, else ``agi_uniqueid``.
``returnvisit``
    The return visit 回访 for a completed order (``agi_arg_1`` or the channel
    variable ``ORDER_ID``): solved 1/2, then satisfaction with the operator and
    with the department 1-3 (not asked when ``asks_department(order_id)`` is
    false).  ``on_answer(order_id, resolved, sat_operator,
    sat_department, call_id)`` receives the citizen's own keys; silence or a
    hang-up before "solved" is answered gives ``on_no_answer(order_id, call_id)``.
    ``RETURNVISIT_RESULT`` is set to ``answered`` or ``no_answer``.

The edge only translates: commands from the pure core become AGI lines, AGI
results become ``on_digits``/``on_timeout``.  A hang-up (``result=-1``,
``HANGUP`` or a closed socket) ends the script.  Callbacks may be plain
functions or coroutines.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk.fast_agi import Application, Request

from ivr.menus import (
    Answered,
    CallbackRequested,
    Collect,
    Command,
    EnterQueue,
    Hangup,
    IvrConfig,
    IvrSession,
    NoAnswer,
    Play,
    Questionnaire,
    SetVar,
    return_visit,
    survey,
)

log = structlog.get_logger("ivr.fastagi")

DEFAULT_PORT = 4573
QUEUE_OPTIONS = "tc,,,3600"  # t: the operator may transfer; c: the caller goes on in the
# dialplan (here: this script) when the operator hangs up; Queue() timeout one hour


def last4(number: str) -> str:
    """A caller number fit for a log line: every digit but the last four hidden."""
    return "*" * max(0, len(number) - 4) + number[-4:]


@dataclass(frozen=True)
class CallbackRequest:
    """A caller who pressed the call-back key, as the service needs it to call them back."""
    uniqueid: str
    callerid: str
    queue: str
    hotline: str
    category: str
    lang: str
    ivr_path: str


class CallerHungUp(Exception):
    pass


Maybe = Awaitable[Any] | Any


async def _call(fn: Callable[..., Maybe] | None, *args: Any) -> Any:
    if fn is None:
        return None
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "").replace('"', "").replace("\n", " ") + '"'


class AgiChannel:
    """One AGI conversation: sends commands, reads results, raises on hang-up."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.headers: Mapping[str, str] = request.headers

    async def send(self, command: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.request.send_command(command)
        except (ConnectionError, ValueError, asyncio.IncompleteReadError) as exc:
            raise CallerHungUp(str(exc)) from exc
        if result.get("error") in ("AGIResultHangup", "AGIAppError"):
            raise CallerHungUp(result.get("msg", ""))
        return result

    async def collect(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """``GET DATA``: the keys pressed, "" on a timeout with none."""
        result = await self.send(f"GET DATA {prompt} {timeout_ms} {max_digits}")
        value = str(result.get("result", ("", ""))[0])
        return value if set(value) <= set("0123456789*#") else ""

    async def play(self, prompt: str) -> None:
        await self.send(f'STREAM FILE {prompt} ""')

    async def set_var(self, name: str, value: str) -> None:
        await self.send(f"SET VARIABLE {name} {_quote(value)}")

    async def get_var(self, name: str) -> str:
        result = await self.send(f"GET VARIABLE {name}")
        if result.get("result", ("0", ""))[0] != "1":
            return ""
        return str(result["result"][1])

    async def hangup(self) -> None:
        try:
            await self.send("HANGUP")
        except CallerHungUp:
            pass


class HotlineAgi:
    """The FastAGI scripts; every dependency on the rest of the service is a callable."""

    def __init__(
        self,
        config: IvrConfig,
        *,
        expected_wait: Callable[[], Mapping[str, float]] | None = None,
        on_callback: Callable[[CallbackRequest], Maybe] | None = None,
        lookup_order: Callable[[str], Maybe] | None = None,
        on_survey: Callable[[str, int | None], Maybe] | None = None,
        on_answer: Callable[[str, bool, int | None, int | None, str], Maybe] | None = None,
        on_no_answer: Callable[[str, str], Maybe] | None = None,
        asks_department: Callable[[str], Maybe] | None = None,
    ) -> None:
        self.config = config
        self.expected_wait = expected_wait
        self.on_callback = on_callback
        self.lookup_order = lookup_order
        self.on_survey = on_survey
        self.on_answer = on_answer
        self.on_no_answer = on_no_answer
        self.asks_department = asks_department
        self.sessions = 0  # FastAGI sessions running now (ops metrics)

    def application(self) -> Application:
        """A panoramisk FastAGI application with the four scripts (call in a running loop)."""
        app = Application(loop=asyncio.get_running_loop())
        app.add_route("hotline", self._counted(self.hotline))
        app.add_route("selfservice", self._counted(self.selfservice))
        app.add_route("survey", self._counted(self.survey))
        app.add_route("returnvisit", self._counted(self.returnvisit))
        return app

    def _counted(self, script: Callable[[Request], Awaitable[None]]
                 ) -> Callable[[Request], Awaitable[None]]:
        """``script`` keeping :attr:`sessions` (FastAGI sessions running now) up to date."""
        async def run(request: Request) -> None:
            self.sessions += 1
            try:
                await script(request)
            finally:
                self.sessions -= 1
        return run

    # hotline

    def _dialled(self, headers: Mapping[str, str]) -> str:
        for key in ("agi_dnid", "agi_extension"):
            number = headers.get(key, "")
            if number in self.config.hotlines:
                return number
        return headers.get("agi_extension", "") or self.config.default_hotline

    async def hotline(self, request: Request) -> None:
        agi = AgiChannel(request)
        h = request.headers
        uniqueid, callerid = h.get("agi_uniqueid", ""), h.get("agi_callerid", "")
        bound = log.bind(uniqueid=uniqueid, caller=last4(callerid))
        waits = dict(self.expected_wait() if self.expected_wait else {})
        session = IvrSession(self.config, self._dialled(h), expected_wait=waits)
        try:
            await agi.send("ANSWER")
            commands = session.start()
            while True:
                digits = await self._run(agi, commands, uniqueid, callerid)
                if digits is None:
                    break
                commands = session.on_digits(digits)
        except CallerHungUp:
            bound.info("ivr_caller_hung_up", ivr_path=session.ivr_path)
            return
        bound.info("ivr_done", hotline=session.hotline.number, category=session.category,
                   queue=session.queue, ivr_path=session.ivr_path, lang=session.lang)

    async def _run(self, agi: AgiChannel, commands: list[Command], uniqueid: str,
                   callerid: str) -> str | None:
        """Carry out commands; the keys collected by a final Collect, None when done."""
        for cmd in commands:
            match cmd:
                case Play(prompt):
                    await agi.play(prompt)
                case SetVar(name, value):
                    await agi.set_var(name, value)
                case Collect(prompt, timeout_ms, max_digits):
                    return await agi.collect(prompt, timeout_ms, max_digits)
                case EnterQueue(queue):
                    try:  # Queue() returns when the call has left the queue
                        await agi.send(f"EXEC Queue {queue},{QUEUE_OPTIONS}")
                    except CallerHungUp:
                        return None  # a hang-up in the queue ends the path normally
                    await self._after_queue(agi, uniqueid)
                    return None
                case CallbackRequested():
                    await _call(self.on_callback, CallbackRequest(
                        uniqueid, callerid, cmd.queue, cmd.hotline, cmd.category, cmd.lang,
                        cmd.ivr_path))
                case Hangup():
                    await agi.hangup()
        return None

    async def _after_queue(self, agi: AgiChannel, uniqueid: str) -> None:
        """The operator hung up and the caller is still here: the after-call survey.

        app_queue sets ``MEMBERINTERFACE`` on the caller's channel when an operator
        answered (``setinterfacevar=yes`` in queues.conf); without it the caller left
        the queue unanswered and is not asked.
        """
        cfg: Mapping[str, Any] = self.config.extras.get("survey", {})
        if not cfg.get("after_call", True):
            await agi.hangup()
            return
        if not await agi.get_var("MEMBERINTERFACE"):
            await agi.hangup()
            return
        outcome = await self._ask(agi, survey(cfg.get("prompt", "hotline/survey")))
        score = outcome.answers.get("satisfaction")
        await _call(self.on_survey, uniqueid, score)
        log.info("survey_answer", call_id=uniqueid, satisfaction=score, after_call=True)
        if isinstance(outcome, Answered):
            await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
        await agi.hangup()

    # selfservice

    async def selfservice(self, request: Request) -> None:
        agi = AgiChannel(request)
        cfg: Mapping[str, Any] = self.config.extras.get("selfservice", {})
        prompt = cfg.get("prompt", "hotline/enter-order-number")
        timeout_ms = int(float(cfg.get("timeout_s", 10)) * 1000)
        max_digits = int(cfg.get("max_digits", 20))
        try:
            await agi.send("ANSWER")
            for _ in range(int(cfg.get("retries", 2)) + 1):
                number = (await agi.collect(prompt, timeout_ms, max_digits)).rstrip("#")
                if not number:
                    continue
                status = await _call(self.lookup_order, number)
                if status is None:
                    await agi.play(cfg.get("not_found_prompt", "hotline/order-not-found"))
                    continue
                await agi.set_var("ORDER_STATUS", str(status))
                await agi.play(cfg.get("status_prompt_prefix", "hotline/order-status-")
                               + str(status))
                log.info("selfservice_status", uniqueid=request.headers.get("agi_uniqueid"),
                         order=number, status=str(status))
                break
            await agi.hangup()
        except CallerHungUp:
            return

    # keyed answers

    async def _ask(self, agi: AgiChannel, q: Questionnaire) -> Answered | NoAnswer:
        steps = q.start()
        try:
            while True:
                for step in steps:
                    if isinstance(step, Answered | NoAnswer):
                        return step
                    if isinstance(step, Play):
                        await agi.play(step.prompt)
                    elif isinstance(step, Collect):
                        digits = await agi.collect(step.prompt, step.timeout_ms,
                                                   step.max_digits)
                        steps = q.on_digits(digits)
                        break
        except CallerHungUp:
            return q.hung_up()

    async def survey(self, request: Request) -> None:
        agi = AgiChannel(request)
        h = request.headers
        call_id = h.get("agi_arg_1") or h.get("agi_uniqueid", "")
        cfg: Mapping[str, Any] = self.config.extras.get("survey", {})
        outcome = await self._ask(agi, survey(cfg.get("prompt", "hotline/survey")))
        score = outcome.answers.get("satisfaction")
        await _call(self.on_survey, call_id, score)
        log.info("survey_answer", call_id=call_id, satisfaction=score)
        try:
            if isinstance(outcome, Answered):
                await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
            await agi.hangup()
        except CallerHungUp:
            pass

    async def returnvisit(self, request: Request) -> None:
        agi = AgiChannel(request)
        h = request.headers
        call_id = h.get("agi_uniqueid", "")
        cfg: Mapping[str, Any] = self.config.extras.get("returnvisit", {})
        try:
            order_id = h.get("agi_arg_1") or await agi.get_var("ORDER_ID")
            if not order_id:
                log.warning("return_visit_without_order", call_id=call_id)
                await agi.hangup()
                return
            await agi.send("ANSWER")
            await agi.play(cfg.get("intro_prompt", "hotline/rv-intro"))
        except CallerHungUp:
            await _call(self.on_no_answer, h.get("agi_arg_1", ""), call_id)
            return
        department = True
        if self.asks_department is not None:  # no department handled it: don't ask
            try:
                department = bool(await _call(self.asks_department, order_id))
            except Exception:
                log.exception("return_visit_order_lookup_failed", order_id=order_id)
        q = return_visit({k: cfg[f"{k}_prompt"] for k in ("resolved", "operator", "department")
                          if f"{k}_prompt" in cfg}, department=department)
        outcome = await self._ask(agi, q)
        a = outcome.answers
        bound = log.bind(order_id=order_id, call_id=call_id)
        if isinstance(outcome, Answered):
            await _call(self.on_answer, order_id, a["resolved"], a.get("sat_operator"),
                        a.get("sat_department"), call_id)
            bound.info("return_visit_answered", resolved=a["resolved"],
                       sat_operator=a.get("sat_operator"),
                       sat_department=a.get("sat_department"))
        else:
            await _call(self.on_no_answer, order_id, call_id)
            bound.info("return_visit_no_answer")
        try:
            result = "answered" if isinstance(outcome, Answered) else "no_answer"
            await agi.set_var("RETURNVISIT_RESULT", result)
            if isinstance(outcome, Answered):
                await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
            await agi.hangup()
        except CallerHungUp:
            pass


async def start_agi_server(agi: HotlineAgi, host: str = "127.0.0.1",
                           port: int = DEFAULT_PORT) -> asyncio.Server:
    """Listen for Asterisk's FastAGI connections; close the returned server to stop."""
    server = await asyncio.start_server(agi.application().handler, host, port)
    log.info("fastagi_listening", host=host, port=port)
    return server
