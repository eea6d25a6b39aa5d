"""The FastAGI edge: Asterisk's ``AGI(agi://host:4573/<script>)``, served by our own reader.

Scripts (``agi_network_script``):

``hotline``
    Runs :class:`ivr.menus.IvrSession` for an inbound call.  The dialplan's
    channel variables ``HOTLINE`` and ``CATEGORY`` (``GET VARIABLE``) win: in a
    context entered by ``Goto`` a real Asterisk sends ``agi_dnid: unknown`` and
    ``agi_extension: s`` (AMI-NOTES); the dialled number is only the fallback.
    The channel gets ``HOTLINE``, ``CATEGORY``, ``IVR_PATH`` and ``LANG`` and the
    path ends with ``EXEC Queue <queue>,tc,,,3600`` -- or with a call-back request
    handed to ``on_callback`` and a hang-up.
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

**Writes need a token.**  The port is reachable from the network, so every write
(a call-back request, a survey key, a return visit's keys) needs the channel
variable ``AGI_TOKEN`` that only the service could have issued (:class:`AgiTokens`):
for a return visit the dialer's single-use token from the Originate's variables;
for an inbound call ``SHA1(<shared secret><uniqueid>)``, which the dialplan computes
with the secret in ``extensions.conf`` ``[globals]`` (Asterisk's ``SHA1()``).  Each
token writes once.  A refusal is logged, handed to ``on_refused`` (the service
audits it) and the script goes on without writing.

**Several PBXs** (:class:`AgiPbxs`).  Each Asterisk numbers its own Uniqueids, so two
PBXs can send the same one.  A session carries its PBX: the one whose ``[[pbx]]``
addresses hold the peer's address, or, when several PBXs share it (or none lists it),
the one the dialplan names in the channel variable ``HOTLINE_PBX``.  Single-use tokens
are spent per (PBX, Uniqueid), and the call ids handed to the service are the record
keys the rest of the service uses (:meth:`AgiPbxs.call_key`: the bare Uniqueid on the
home PBX, ``<pbx>:<uniqueid>`` on another).  A write from a session whose PBX is
unknown is refused.

**The edge never blocks the service's loop.**  :class:`AgiThread` runs the server on a
thread of its own with its own event loop: accepting, reading and refusing
connections (a burst of 500 at once, half headers, 1 MB lines) costs that loop, not
the one serving the web app, the websockets and the AMI link.  Everything a script
asks of the service (a token to redeem, the expected waits, an order's state, a
call-back, a survey key, a return visit's keys, a refusal to audit) is run on the
service's loop through :func:`on_loop` (``run_coroutine_threadsafe``), so the
service's one writer stays the only writer.  :class:`FastAgiServer` accepts only configured
PBX addresses, reads the ``agi_*`` header block with a line limit, a count limit
and a deadline (a client that sends half a header and closes, or goes silent, or
sends a 1 MB line or invalid UTF-8, is closed -- panoramisk 1.4 spun at 100 % CPU
on the first), caps the connections, and ends a script on ``HANGUP``, a ``511``
or a closed socket.  ``STREAM FILE`` answered ``200 result=-1 endpos=0`` (the file
is missing or unplayable; the channel is still up) is logged once per prompt and
skipped: only a real hang-up ends a script.  Callbacks may be plain functions or
coroutines.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import ipaddress
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog

from acd.state import call_key_prefix
from callcenter.runtime import wait_within
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
from ivr.values import BadValue, app_word, dial_number, variable_value

log = structlog.get_logger("ivr.fastagi")

DEFAULT_PORT = 4573
QUEUE_OPTIONS = "tc,,,3600"  # t: the operator may transfer; c: the caller goes on in the
# dialplan (here: this script) when the operator hangs up; Queue() timeout one hour

MAX_LINE = 4096          # bytes in one header or reply line
MAX_HEADERS = 128        # agi_* lines before the blank line (Asterisk sends ~25 + args)
HEADER_TIMEOUT_S = 5.0   # the whole header block
REPLY_TIMEOUT_S = 600.0  # one reply (GET DATA waits for keys; EXEC Queue has none)
MAX_CLIENTS = 256        # AGI conversations at once; more are closed at accept


def last4(number: str) -> str:
    """A caller number fit for a log line: every digit but the last four hidden."""
    return "*" * max(0, len(number) - 4) + number[-4:]


@dataclass(frozen=True)
class CallbackRequest:
    """A caller who pressed the call-back key, as the service needs it to call them back.

    ``pbx``: the PBX the call is on ("" with one PBX); ``call_id``: its key across the
    PBXs (:meth:`AgiPbxs.call_key`; "" = ``uniqueid``)."""
    uniqueid: str
    callerid: str
    queue: str
    hotline: str
    category: str
    lang: str
    ivr_path: str
    pbx: str = ""
    call_id: str = ""

    @property
    def key(self) -> str:
        return self.call_id or self.uniqueid


class CallerHungUp(Exception):
    """``HANGUP``, ``511`` (dead channel), a ``-1`` where it means a hang-up, or EOF."""


class AgiRefused(Exception):
    """A FastAGI client or request the edge will not serve (the message says why)."""


Maybe = Awaitable[Any] | Any


async def _call(fn: Callable[..., Maybe] | None, *args: Any) -> Any:
    if fn is None:
        return None
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


Runner = Callable[..., Awaitable[Any]]  # run(fn, *args) -> fn's result (awaited if need be)


def on_loop(loop: asyncio.AbstractEventLoop) -> Runner:
    """``run(fn, *args)``: call ``fn`` on ``loop`` (the service's) and await its result
    from any other loop; on ``loop`` itself it is a plain call.  ``fn`` None gives None.

    This is the only door from the FastAGI thread into the service: the service's
    state, tokens and database are touched by its own loop alone (one writer).
    """
    async def run(fn: Callable[..., Maybe] | None, *args: Any) -> Any:
        if fn is None:
            return None
        if asyncio.get_running_loop() is loop:
            return await _call(fn, *args)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_call(fn, *args),
                                                                          loop))
    return run


# -- tokens ---------------------------------------------------------------------------------


INBOUND_WRITES = ("callback", "survey")  # what an inbound call's dialplan token may write


def inbound_token(secret: str, uniqueid: str) -> str:
    """What the dialplan computes: ``${SHA1(${HOTLINE_AGI_SECRET}${UNIQUEID})}`` (hex)."""
    return hashlib.sha1((secret + uniqueid).encode()).hexdigest()


@dataclass
class AgiTokens:
    """Per-call, single-use permissions to write through the FastAGI scripts.

    ``issue(script, key)`` (the dialer, for an Originate's ``AGI_TOKEN``) gives a
    random token valid ``ttl_s`` for that script and key (an order id);
    ``redeem(token, script, key, uniqueid, pbx)`` is True once for it.  An inbound call's
    token is :func:`inbound_token` of its uniqueid with the shared ``secret``; it
    writes once per kind (``callback``, ``survey``) and call, a call being (``pbx``,
    uniqueid): each PBX numbers its own Uniqueids.  An empty secret refuses every
    inbound write.
    """
    secret: str = ""
    ttl_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    max_used: int = 100_000
    _issued: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    _used: OrderedDict[tuple[str, str, str], None] = field(default_factory=OrderedDict)

    def issue(self, script: str, key: str) -> str:
        now = self.clock()
        if len(self._issued) > 10_000:  # forget what expired
            self._issued = {t: v for t, v in self._issued.items() if v[2] > now}
        token = secrets.token_hex(16)
        self._issued[token] = (script, key, now + self.ttl_s)
        return token

    def redeem(self, token: str, script: str, key: str, uniqueid: str,
               pbx: str = "") -> str | None:
        """None when ``token`` may write ``script`` for ``key`` (and is now spent), else
        why not; ``pbx`` names the PBX whose ``uniqueid`` it is ("" with one PBX)."""
        if not token:
            return "no AGI_TOKEN"
        issued = self._issued.get(token)
        if issued is not None:
            if issued[0] != script or issued[1] != key:
                return "token issued for another call"
            if issued[2] < self.clock():
                del self._issued[token]
                return "token expired"
            del self._issued[token]
            return None
        if script not in INBOUND_WRITES:
            return "token not issued by this service"
        if not self.secret or not hmac.compare_digest(token, inbound_token(self.secret,
                                                                           uniqueid)):
            return "token not issued by this service"
        used = (script, pbx, uniqueid)
        if used in self._used:
            return "token already used"
        self._used[used] = None
        while len(self._used) > self.max_used:
            self._used.popitem(last=False)
        return None


# -- which PBX --------------------------------------------------------------------------------

Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
PBX_VARIABLE = "HOTLINE_PBX"  # the dialplan's name for its PBX (``[globals]``)


@dataclass(frozen=True)
class AgiPbxs:
    """The PBXs a FastAGI session may come from, and which one it does.

    ``addresses``: each PBX's name -> the networks its FastAGI connections come from
    (``[[pbx]] agi``, else its ``host`` when that is an IP address; empty when unknown);
    ``home``: the home PBX (the single ``[ami]`` or the first ``[[pbx]]``).  The rule
    (:meth:`which`), first match wins:

    ======================================  ==========================================
    one PBX (or none configured)            the home PBX
    the PBXs listing the peer ("claim it")  the candidates; none claim it: the PBXs
                                            whose addresses are unknown
    ``HOTLINE_PBX`` names a candidate       that PBX
    ``HOTLINE_PBX`` names another           unknown (refused: a PBX naming another)
    no ``HOTLINE_PBX``, one candidate       that candidate
    otherwise                               unknown (refused: several could be it)
    ======================================  ==========================================
    """

    home: str = ""
    addresses: Mapping[str, Networks] = field(default_factory=dict)

    def several(self) -> bool:
        return len(self.addresses) > 1

    def candidates(self, peer: str) -> list[str]:
        """The PBXs the peer's address may belong to (in configuration order)."""
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            address = None
        if address is not None:
            address = getattr(address, "ipv4_mapped", None) or address
            claim = [name for name, nets in self.addresses.items()
                     if any(address in net for net in nets)]
            if claim:
                return claim
        return [name for name, nets in self.addresses.items() if not nets]

    def needs_variable(self, peer: str) -> bool:
        """Whether :meth:`which` needs the dialplan's ``HOTLINE_PBX`` for this peer."""
        return self.several() and len(self.candidates(peer)) != 1

    def which(self, peer: str, variable: str = "") -> tuple[str | None, str]:
        """(the session's PBX, or None when it cannot be told; why not)."""
        if not self.several():
            return self.home, ""
        found = self.candidates(peer)
        if variable:
            if variable in found:
                return variable, ""
            return None, f"{PBX_VARIABLE} names a PBX this address is not"
        if len(found) == 1:
            return found[0], ""
        return None, (f"several PBXs share this address and {PBX_VARIABLE} is not set"
                      if found else "the address is no configured PBX's")

    def call_key(self, pbx: str, uniqueid: str) -> str:
        """A call's key across the PBXs, as the call records have it (migration 0013):
        the bare Uniqueid on the home PBX, ``<pbx>:<uniqueid>`` on another
        (:func:`acd.state.call_key_prefix`)."""
        return call_key_prefix(pbx, self.home) + uniqueid


# -- one AGI conversation ---------------------------------------------------------------------


_REPLY = re.compile(r"(\d{3})(?: result=(\S*)(?: \((.*)\))?(?: endpos=(\d+))?)?")


@dataclass(frozen=True)
class AgiReply:
    """``200 result=1 (value) endpos=0`` as (200, "1", "value", 0)."""
    code: int
    result: str
    data: str = ""
    endpos: int | None = None


def parse_reply(line: str) -> AgiReply:
    """One AGI reply line; ``code`` 0 when it is not one."""
    m = _REPLY.match(line)
    if m is None:
        return AgiReply(0, "", line)
    return AgiReply(int(m[1]), m[2] or "", m[3] or "",
                    int(m[4]) if m[4] is not None else None)


def _quote(value: str) -> str:
    return '"' + value + '"'


MISSING_PROMPTS: set[str] = set()  # prompts Asterisk could not play, logged once per process


class AgiChannel:
    """One AGI conversation: sends commands, reads replies, raises on a hang-up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 headers: Mapping[str, str]) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = headers
        self.uniqueid = headers.get("agi_uniqueid", "")
        self.pbx: str | None = None  # the PBX it comes from, once known (HotlineAgi.pbx_of)
        self.pbx_why = ""  # why it is not known
        self.pbx_asked = False

    async def _line(self, timeout: float) -> str:
        try:
            raw = await wait_within(self.reader.readuntil(b"\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError,
                asyncio.LimitOverrunError) as exc:
            raise CallerHungUp(type(exc).__name__) from None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def send(self, command: str, timeout: float = REPLY_TIMEOUT_S) -> AgiReply:
        if "\n" in command or "\r" in command:
            raise ValueError("a line break in an AGI command")
        try:
            self.writer.write(command.encode() + b"\n")
            await self.writer.drain()
        except ConnectionError as exc:
            raise CallerHungUp(str(exc)) from None
        line = await self._line(timeout)
        if line == "HANGUP":  # Asterisk tells a FastAGI script its channel hung up
            raise CallerHungUp("HANGUP")
        reply = parse_reply(line)
        if reply.code == 520 and line.startswith("520-"):  # usage text until "520 End..."
            while not line.startswith("520 "):
                line = await self._line(timeout)
        if reply.code == 511:
            raise CallerHungUp("dead channel")
        return reply

    async def collect(self, prompt: str, timeout_ms: int, max_digits: int) -> str:
        """``GET DATA``: the keys pressed, "" on a timeout with none (a missing prompt
        is silence: Asterisk still waits for keys)."""
        reply = await self.send(f"GET DATA {prompt} {timeout_ms} {max_digits}")
        if reply.result == "-1":
            raise CallerHungUp("GET DATA -1")
        value = reply.result
        return value if set(value) <= set("0123456789*#") else ""

    async def play(self, prompt: str) -> None:
        """``STREAM FILE``; a prompt Asterisk cannot play is logged once and skipped."""
        reply = await self.send(f'STREAM FILE {prompt} ""')
        if reply.result == "-1" and prompt not in MISSING_PROMPTS:
            MISSING_PROMPTS.add(prompt)
            log.warning("prompt_not_played", prompt=prompt, endpos=reply.endpos,
                        fix="run `callcenter prompts build` and copy the files where "
                            "Asterisk reads sounds (README: deploy on a real Asterisk)")

    async def set_var(self, name: str, value: str) -> None:
        try:
            value = variable_value(value)
        except BadValue as exc:
            log.warning("agi_variable_refused", name=name, error=str(exc))
            return
        await self.send(f"SET VARIABLE {name} {_quote(value)}")

    async def get_var(self, name: str) -> str:
        reply = await self.send(f"GET VARIABLE {name}")
        return reply.data if reply.result == "1" else ""

    async def hangup(self) -> None:
        try:
            await self.send("HANGUP", timeout=5.0)
        except CallerHungUp:
            pass


Script = Callable[[AgiChannel], Awaitable[None]]


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
        tokens: AgiTokens | None = None,
        on_refused: Callable[[str, Mapping[str, str]], Maybe] | None = None,
        run: Runner = _call,
        pbxs: AgiPbxs | None = None,
    ) -> None:
        """``run(fn, *args)`` calls every callback and the token check; :func:`on_loop`
        of the service's loop when the scripts run on the FastAGI thread.  ``pbxs``:
        the PBXs sessions may come from (default: one)."""
        self.run = run
        self.config = config
        self.expected_wait = expected_wait
        self.on_callback = on_callback
        self.lookup_order = lookup_order
        self.on_survey = on_survey
        self.on_answer = on_answer
        self.on_no_answer = on_no_answer
        self.asks_department = asks_department
        self.sessions = 0  # FastAGI sessions running now (ops metrics)
        self.tokens = tokens if tokens is not None else AgiTokens()
        self.on_refused = on_refused
        self.pbxs = pbxs if pbxs is not None else AgiPbxs()

    def routes(self) -> dict[str, Script]:
        return {name: self._counted(script) for name, script in (
            ("hotline", self.hotline), ("selfservice", self.selfservice),
            ("survey", self.survey), ("returnvisit", self.returnvisit))}

    async def pbx_of(self, agi: AgiChannel) -> str | None:
        """The PBX the session comes from (:meth:`AgiPbxs.which`; ``HOTLINE_PBX`` is
        asked once, only when the address does not tell), None when it cannot be told."""
        if not agi.pbx_asked:
            agi.pbx_asked = True
            peer = agi.headers.get("peer", "")
            variable = ""
            if self.pbxs.needs_variable(peer):
                variable = (await agi.get_var(PBX_VARIABLE)).strip()[:32]
            agi.pbx, agi.pbx_why = self.pbxs.which(peer, variable)
        return agi.pbx

    async def call_id(self, agi: AgiChannel, uniqueid: str) -> str:
        """``uniqueid`` (of this session's PBX) as the service keys calls."""
        pbx = await self.pbx_of(agi)
        return self.pbxs.call_key(pbx or "", uniqueid)

    async def _may_write(self, agi: AgiChannel, script: str, key: str,
                         token: str | None = None) -> bool:
        """Redeem the channel's ``AGI_TOKEN`` for one write; a refusal is reported.
        An inbound write also needs the session's PBX (its token is spent per PBX)."""
        if token is None:
            token = await agi.get_var("AGI_TOKEN")
        pbx = await self.pbx_of(agi)
        if pbx is None and script in INBOUND_WRITES:
            why: str | None = f"which PBX is unknown: {agi.pbx_why}"
        else:
            why = await self.run(self.tokens.redeem, token, script, key, agi.uniqueid,
                                 pbx or "")
        if why is None:
            return True
        log.warning("fastagi_write_refused", script=script, key=key, why=why,
                    uniqueid=agi.uniqueid[:64], pbx=pbx or "?")
        await self.run(self.on_refused, why, {"script": script, "key": key[:64],
                                           "uniqueid": agi.uniqueid[:64],
                                           "pbx": pbx or "?",
                                           "peer": agi.headers.get("peer", "")})
        return False

    def _counted(self, script: Script) -> Script:
        """``script`` keeping :attr:`sessions` (FastAGI sessions running now) up to date."""
        async def run(agi: AgiChannel) -> None:
            self.sessions += 1
            try:
                await script(agi)
            finally:
                self.sessions -= 1
        return run

    # hotline

    def _dialled(self, headers: Mapping[str, str], variable: str) -> str:
        """The hotline number: the dialplan's HOTLINE, else the dialled number, else 12345."""
        for number in (variable, headers.get("agi_dnid", ""), headers.get("agi_extension", "")):
            try:
                number = dial_number(number)
            except BadValue:
                continue
            if number in self.config.hotlines or number == variable:
                return number
        return self.config.default_hotline

    async def hotline(self, agi: AgiChannel) -> None:
        h = agi.headers
        uniqueid, callerid = agi.uniqueid, h.get("agi_callerid", "")
        bound = log.bind(uniqueid=uniqueid, caller=last4(callerid))
        try:
            waits = dict(await self.run(self.expected_wait) or {})
            await agi.send("ANSWER")
            number = self._dialled(h, await agi.get_var("HOTLINE"))
            category = await agi.get_var("CATEGORY")
            session = IvrSession(self.config, number, expected_wait=waits,
                                 category=category if category in self.config.categories
                                 else None)
            commands = session.start()
            while True:
                digits = await self._run(agi, commands, uniqueid, callerid)
                if digits is None:
                    break
                commands = session.on_digits(digits)
        except CallerHungUp:
            bound.info("ivr_caller_hung_up")
            return
        bound.info("ivr_done", hotline=session.number, category=session.category,
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
                        reply = await agi.send(f"EXEC Queue {app_word(queue)},{QUEUE_OPTIONS}")
                    except CallerHungUp:
                        return None  # a hang-up in the queue ends the path normally
                    if reply.result == "-1":
                        return None
                    await self._after_queue(agi, uniqueid)
                    return None
                case CallbackRequested():
                    if await self._may_write(agi, "callback", uniqueid):
                        pbx = agi.pbx or ""
                        await self.run(self.on_callback, CallbackRequest(
                            uniqueid, callerid, cmd.queue, cmd.hotline, cmd.category,
                            cmd.lang, cmd.ivr_path, pbx, self.pbxs.call_key(pbx, uniqueid)))
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
        if await self._may_write(agi, "survey", uniqueid):
            call_id = self.pbxs.call_key(agi.pbx or "", uniqueid)
            await self.run(self.on_survey, call_id, score)
            log.info("survey_answer", call_id=call_id, satisfaction=score, after_call=True)
        try:
            if isinstance(outcome, Answered):
                await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
            await agi.hangup()
        except CallerHungUp:
            pass

    # selfservice

    async def selfservice(self, agi: AgiChannel) -> None:
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
                status = await self.run(self.lookup_order, number)
                if status is None:
                    await agi.play(cfg.get("not_found_prompt", "hotline/order-not-found"))
                    continue
                await agi.set_var("ORDER_STATUS", str(status))
                await agi.play(cfg.get("status_prompt_prefix", "hotline/order-status-")
                               + str(status))
                log.info("selfservice_status", uniqueid=agi.uniqueid[:64], order=number,
                         status=str(status))
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

    async def survey(self, agi: AgiChannel) -> None:
        h = agi.headers
        call_id = h.get("agi_arg_1") or agi.uniqueid
        cfg: Mapping[str, Any] = self.config.extras.get("survey", {})
        try:
            token = await agi.get_var("AGI_TOKEN")
        except CallerHungUp:
            return
        outcome = await self._ask(agi, survey(cfg.get("prompt", "hotline/survey")))
        score = outcome.answers.get("satisfaction")
        try:
            if await self._may_write(agi, "survey", call_id[:64], token):
                call_id = self.pbxs.call_key(agi.pbx or "", call_id[:64])[:64]
                await self.run(self.on_survey, call_id, score)
                log.info("survey_answer", call_id=call_id, satisfaction=score)
            if isinstance(outcome, Answered):
                await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
            await agi.hangup()
        except CallerHungUp:
            pass

    async def returnvisit(self, agi: AgiChannel) -> None:
        h = agi.headers
        call_id = agi.uniqueid
        cfg: Mapping[str, Any] = self.config.extras.get("returnvisit", {})
        try:
            order_id = h.get("agi_arg_1") or await agi.get_var("ORDER_ID")
            if not order_id:
                log.warning("return_visit_without_order", call_id=call_id)
                await agi.hangup()
                return
            if not await self._may_write(agi, "returnvisit", order_id):
                await agi.hangup()  # no keys are asked for, nothing is written
                return
            call_id = await self.call_id(agi, call_id)
            await agi.send("ANSWER")
            await agi.play(cfg.get("intro_prompt", "hotline/rv-intro"))
        except CallerHungUp:
            if order_id:
                await self.run(self.on_no_answer, order_id, call_id)
            return
        department = True
        if self.asks_department is not None:  # no department handled it: don't ask
            try:
                department = bool(await self.run(self.asks_department, order_id))
            except Exception:
                log.exception("return_visit_order_lookup_failed", order_id=order_id)
        q = return_visit({k: cfg[f"{k}_prompt"] for k in ("resolved", "operator", "department")
                          if f"{k}_prompt" in cfg}, department=department)
        outcome = await self._ask(agi, q)
        a = outcome.answers
        bound = log.bind(order_id=order_id, call_id=call_id)
        if isinstance(outcome, Answered):
            await self.run(self.on_answer, order_id, a["resolved"], a.get("sat_operator"),
                        a.get("sat_department"), call_id)
            bound.info("return_visit_answered", resolved=a["resolved"],
                       sat_operator=a.get("sat_operator"),
                       sat_department=a.get("sat_department"))
        else:
            await self.run(self.on_no_answer, order_id, call_id)
            bound.info("return_visit_no_answer")
        try:
            result = "answered" if isinstance(outcome, Answered) else "no_answer"
            await agi.set_var("RETURNVISIT_RESULT", result)
            if isinstance(outcome, Answered):
                await agi.play(cfg.get("thanks_prompt", "hotline/thanks"))
            await agi.hangup()
        except CallerHungUp:
            pass


# -- the server -------------------------------------------------------------------------------


async def read_headers(reader: asyncio.StreamReader, *, max_headers: int = MAX_HEADERS,
                       timeout: float = HEADER_TIMEOUT_S) -> dict[str, str]:
    """The ``agi_*: value`` block up to its blank line; AgiRefused for anything else.

    The reader's ``limit`` bounds a line (a longer one raises ``LimitOverrunError``
    after at most ``limit`` bytes are buffered); ``timeout`` bounds the whole block.
    """
    headers: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await reader.readuntil(b"\n")
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    break
                if len(headers) >= max_headers:
                    raise AgiRefused(f"more than {max_headers} header lines")
                key, sep, value = line.partition(": ")
                if not sep or not key.startswith("agi_") or not key.isascii():
                    raise AgiRefused("not an AGI header line")
                headers.setdefault(key, value)
    except asyncio.IncompleteReadError:
        raise AgiRefused("closed before the end of the headers") from None
    except asyncio.LimitOverrunError:
        raise AgiRefused("header line too long") from None
    except UnicodeDecodeError:
        raise AgiRefused("header not UTF-8") from None
    except TimeoutError:
        raise AgiRefused(f"headers not complete within {timeout:g} s") from None
    except ConnectionError as exc:
        raise AgiRefused(f"connection error: {exc}") from None
    return headers


def parse_allow(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                 ...]:
    """``["127.0.0.1", "10.0.0.0/24"]`` as networks (ValueError on a bad entry)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)


@dataclass
class FastAgiServer:
    """The FastAGI listener: address check, bounded header read, one task per call.

    ``allow``: the PBX addresses (networks) that may connect; everyone else is
    closed at once and reported to ``on_refused(why, details)``, at most once a
    minute per address and reason (``refusals`` keeps the last 200 with counts).
    """
    scripts: Mapping[str, Script]
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=lambda: parse_allow(["127.0.0.1/32", "::1/128"]))
    on_refused: Callable[[str, Mapping[str, str]], Maybe] | None = None
    run: Runner = _call  # how on_refused is called (on_loop(service loop) from a thread)
    max_clients: int = MAX_CLIENTS
    header_timeout_s: float = HEADER_TIMEOUT_S
    clients: int = 0
    refusals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    _reported: dict[tuple[str, str], float] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(self._client, host, port, limit=MAX_LINE,
                                            backlog=128)  # also: accepted per loop turn
        log.info("fastagi_listening", host=host,
                 port=server.sockets[0].getsockname()[1] if server.sockets else port,
                 allow=[str(n) for n in self.allow])
        return server

    def _allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any((mapped or address) in net for net in self.allow)

    async def refuse(self, why: str, peer: str, script: str = "") -> None:
        now = time.monotonic()
        key = (peer, why)
        entry = next((r for r in self.refusals if (r["peer"], r["why"]) == key), None)
        if entry is None:
            entry = {"peer": peer, "why": why, "script": script, "count": 0, "first": time.time()}
            self.refusals.append(entry)
        entry["count"] += 1
        entry["last"] = time.time()
        if now - self._reported.get(key, -1e9) < 60.0:
            return
        if len(self._reported) > 10_000:
            self._reported.clear()
        self._reported[key] = now
        await self._audit(why, peer, script[:40], entry["count"])

    async def report(self, why: str, details: Mapping[str, Any]) -> None:
        """A refusal the gate process made (and rate-limited): kept and audited here."""
        peer, script = str(details.get("peer", "?"))[:64], str(details.get("script", ""))[:40]
        self.refusals.append({"peer": peer, "why": why, "script": script,
                              "count": details.get("count", 1), "first": time.time(),
                              "last": time.time()})
        await self._audit(why, peer, script, details.get("count", 1), by="gate")

    async def _audit(self, why: str, peer: str, script: str, count: Any, **by: str) -> None:
        """Log a refusal and hand it to ``on_refused`` (the service audits it); a failure
        to record it is logged, never raised into the conversation."""
        log.warning("fastagi_refused", peer=peer, why=why, script=script, **by)
        try:
            await self.run(self.on_refused, why, {"peer": peer, "script": script, "count": count})
        except Exception:
            log.exception("fastagi_refusal_not_recorded")

    async def adopt(self, sock: socket.socket, headers: dict[str, str]) -> None:
        """Run the script of a conversation whose headers the gate process read and
        checked (:mod:`ivr.agi_gate`); ``headers`` include ``peer``.  The connection
        cap and the script name are checked again here."""
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        except OSError:
            sock.close()
            return
        self.clients += 1
        peer = headers.get("peer", "?")
        try:
            if self.clients > self.max_clients:
                await self.refuse("too many connections", peer)
                return
            await self._run_script(reader, writer, headers, peer)
        finally:
            self.clients -= 1
            writer.close()

    async def _run_script(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          headers: dict[str, str], peer: str) -> None:
        """The script ``agi_network_script`` names, on a conversation whose headers were
        read and checked (unknown script: refused).  A hang-up or a closed socket ends it
        quietly; any other failure is logged, never raised."""
        try:
            script = headers.get("agi_network_script", "").split("?")[0].split(",")[0]
            run = self.scripts.get(script)
            if run is None:
                await self.refuse("unknown script", peer, script)
                return
            headers["peer"] = peer
            await run(AgiChannel(reader, writer, headers))
        except (CallerHungUp, ConnectionError):
            pass
        except Exception:
            log.exception("fastagi_script_failed")

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        self.clients += 1
        try:
            if not self._allowed(peer):
                await self.refuse("address not allowed", peer)
                return
            if self.clients > self.max_clients:
                await self.refuse("too many connections", peer)
                return
            try:
                headers = await read_headers(reader, timeout=self.header_timeout_s)
            except AgiRefused as exc:
                await self.refuse(str(exc), peer)
                return
            await self._run_script(reader, writer, headers, peer)
        except (CallerHungUp, ConnectionError):
            pass
        except Exception:
            log.exception("fastagi_script_failed")
        finally:
            self.clients -= 1
            writer.close()


class AgiThread:
    """A :class:`FastAgiServer` on a thread of its own, with its own event loop.

    Why: a burst of connections (500 opened at once) costs asyncio about a
    millisecond each to accept, wrap in a transport, refuse and close; on the
    service's loop that stood the web app still for up to a second.  Here that work
    runs on another loop, and the service's loop only sees what a script asks of it
    (through :func:`on_loop`).  The GIL is shared, so the two loops interleave every
    few milliseconds instead of one waiting for the other's whole turn.

    ``await start(host, port)`` returns the bound port (OSError if it cannot listen);
    ``await stop()`` closes the listener, cancels the conversations and joins the
    thread.  ``edge`` is read by tests and metrics only (its counters are ints).
    """

    def __init__(self, edge: FastAgiServer) -> None:
        self.edge = edge
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread: threading.Thread | None = None

    async def start(self, host: str, port: int) -> int:
        ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(host, port, ready),
                                        name="fastagi", daemon=True)
        self._thread.start()
        self.port = await asyncio.wrap_future(ready)
        return self.port

    def _run(self, host: str, port: int, ready: Future[int]) -> None:
        loop = self._new_loop()
        try:
            server = loop.run_until_complete(self.edge.start(host, port))
        except OSError as exc:  # the caller sees why it cannot listen
            loop.close()
            ready.set_exception(exc)
            return
        self.loop = loop
        ready.set_result(int(server.sockets[0].getsockname()[1]))
        self._run_until_stopped(loop, server.close)

    @staticmethod
    def _new_loop() -> asyncio.AbstractEventLoop:
        """A new event loop, this thread's own."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return loop

    @staticmethod
    def _run_until_stopped(loop: asyncio.AbstractEventLoop, stop_listening: Callable[[], Any]
                           ) -> None:
        """Run this thread's ``loop`` until :meth:`stop` stops it; then ``stop_listening()``,
        cancel every task left on it (the conversations), let them end, and close it."""
        try:
            loop.run_forever()
        finally:
            stop_listening()
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def stop(self, timeout: float = 5.0) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        self.loop = None
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # already closed
            pass
        await asyncio.to_thread(thread.join, timeout)
