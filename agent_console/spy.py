"""Supervisor listen / whisper / barge (监听 / 耳语 / 强插) on an operator's live call.

Theory of operation
-------------------
A supervisor's account carries a phone (``User.interface``, e.g.
``Local/1901@agents``; ``callcenter users set sup1 --interface ...``).  To listen
in, the console asks the PBX to ring that phone and, once it is answered, to run
Asterisk's ``ChanSpy`` on the agent's channel::

    Action: Originate
    ActionID: spy-<n>
    Channel: Local/1901@agents            the supervisor's phone
    Application: ChanSpy
    Data: Local/1001@agents,qE            listen  (q quiet, E end with the spied call)
          Local/1001@agents,qEw           whisper (the agent hears the supervisor)
          Local/1001@agents,qEB           barge   (both parties hear the supervisor)
    CallerID: "班长监听" <spy>
    Async: true

The ChanSpy prefix is the agent's queue member interface without a Local
channel's ``/n`` option (the channels are named ``Local/1001@agents-0000002a;1``).
``Async`` means the PBX answers at once ("successfully queued"); the phone then
rings.  With ``E`` the spy call ends by itself when the agent's call ends.

Stopping (``POST /api/supervise/spy/stop``) does not rely on remembering a
channel name: the service's consumer does not hand raw events such as
``OriginateResponse`` to the web app, and a remembered name would not survive a
restart anyway.  Instead the console asks the PBX for its channels
(``CoreShowChannels``) and hangs up the supervisor's own phone channels that run
``ChanSpy`` or still ring with the spy caller id (``CallerIDNum: spy``); the
``;2`` half of a Local pair goes with its ``;1``.

What a supervisor is doing is also kept in memory (one entry per account, shown
by ``GET /api/supervise/spy`` and refusing a second spy call while one runs); it
is dropped on stop and when the spied agent's call ends.  (The wallboard keeps
its own copy per tab, in sessionStorage, for its "listening to ..." bar.)  Every request that names a mode and a
valid reason is audited *before* anything is sent to the PBX (``spy`` / ``spy_stop``
rows: who, when, agent, mode, reason, then the result), refusals included; when the
row cannot be written nothing is sent (see :func:`agent_console.session.audited`).

Routes (JSON; supervisor and admin only; POSTs need the CSRF token)::

    POST /api/supervise/{name}/spy  {mode: listen|whisper|barge, reason}
    POST /api/supervise/spy/stop    {reason?}
    GET  /api/supervise/spy         what this supervisor is listening to, or null
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from aiohttp import web

from acd.state import AgentChanged, AgentState, Change
from agent_console.http import ApiError, read_json, text_field
from agent_console.session import CONSOLE, Console, audited, need_session, pbx
from callcenter.pbx.ami import ActionRefused, ActionTimeout, AmiError, LinkDown
from ivr.values import BadValue, channel

log = structlog.get_logger(__name__)

MODES = {"listen": "qE", "whisper": "qEw", "barge": "qEB"}
SPY_CALLERID = '"班长监听" <spy>'
SPY_NUMBER = "spy"
MAX_REASON = 500
LOCAL_OPTIONS = re.compile(r"^(Local/[^/]+)/[A-Za-z]+$")
NO_PHONE = ("your account has no phone; set one with "
            "`callcenter users set {name} --interface ...` (e.g. Local/1901@agents)")


@dataclass(slots=True)
class Spying:
    """One supervisor's spy call, as far as the console knows."""

    agent: str
    mode: str
    phone: str
    target: str
    action_id: str
    call: str | None
    started_at: float
    pbx: str = ""  # the PBX of the agent's call: the spy call is placed there


@dataclass(slots=True)
class SpyDesk:
    """The spy calls the console started (per supervisor account) and the ActionIDs."""

    ids: Iterator[int]
    active: dict[str, Spying]

    def next_id(self) -> str:
        return f"spy-{next(self.ids)}"

    def changed(self, changes: list[Change]) -> None:
        """A service subscriber: a spied agent's call ended, so did the spy call (``E``)."""
        for c in changes:
            if (isinstance(c, AgentChanged) and c.old is AgentState.ON_CALL
                    and c.new is not AgentState.ON_CALL):
                for user, s in list(self.active.items()):
                    if s.agent == c.agent.name:
                        del self.active[user]


SPY_DESK = web.AppKey("spy_desk", SpyDesk)


def spy_target(interface: str) -> str:
    """The ChanSpy prefix for a queue member interface: a Local channel's options dropped."""
    m = LOCAL_OPTIONS.match(interface)
    return m.group(1) if m else interface


def _spy_json(s: Spying | None) -> dict[str, Any] | None:
    return None if s is None else asdict(s)


def _my_phone(user: Any) -> str:
    """The supervisor's phone as a channel the PBX can call (``ivr.values.channel``:
    full-width digits made ASCII; a comma -- ChanSpy's option separator --, a space, a
    quote, CR, LF or a non-ASCII digit refused)."""
    phone = user.interface
    if not phone:
        raise ApiError(409, NO_PHONE.format(name=user.username))
    try:
        return channel(phone)
    except BadValue as exc:
        raise ApiError(409, f"your phone {phone[:60]!r} is not a channel the PBX can call "
                       f"({exc}); fix it with `callcenter users set {user.username} "
                       "--interface ...`") from None


async def api_spy(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    desk = request.app[SPY_DESK]
    session = await need_session(request)
    user = session.user
    name = request.match_info["name"]
    if len(name) > 80:
        raise ApiError(404, "no such agent")
    data = await read_json(request, 8192)
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in MODES:
        raise ApiError(400, "'mode' must be one of listen, whisper, barge")
    reason = text_field(data, "reason", max_len=MAX_REASON)
    # The audit row first (a refusal below is recorded in it too), then the Originate.
    async with audited(c, user, "spy", target=name, reason=reason,
                       data={"mode": mode, "phone": user.interface}) as entry:
        record = entry.data
        phone = _my_phone(user)
        busy = desk.active.get(user.username)
        if busy is not None:
            raise ApiError(409, f"you are already on a spy call ({busy.mode} {busy.agent}); "
                           "stop it first")
        agent = c.service.centre.agent_by_name(name)
        if agent is None:
            raise ApiError(404, f"no agent {name}")
        record["interface"] = agent.interface
        if agent.state is not AgentState.ON_CALL or not agent.call:
            raise ApiError(409, f"agent {name} is not on a call now "
                           f"({agent.state.value}); you can listen only to a live call")
        try:  # the interface came from the PBX: checked as every value sent back to it
            target = channel(spy_target(agent.interface))
        except BadValue as exc:
            raise ApiError(409, f"agent {name}'s interface cannot be spied on safely "
                           f"({exc})") from None
        if target == spy_target(phone):
            raise ApiError(409, "you cannot listen to your own phone")
        action_id = desk.next_id()
        record.update(action_id=action_id, call=agent.call, target=target)
        if len(c.service.edges) > 1:
            record["pbx"] = agent.pbx
        # ChanSpy runs on the PBX that carries the call (the supervisor's phone must be
        # reachable from it, as the operators' are).
        await pbx(c, {"Action": "Originate", "ActionID": action_id, "Channel": phone,
                      "Application": "ChanSpy", "Data": f"{target},{MODES[mode]}",
                      "CallerID": SPY_CALLERID, "Async": "true"}, to=agent.pbx)
        spying = Spying(agent=name, mode=mode, phone=phone, target=target,
                        action_id=action_id, call=agent.call, started_at=c.now(),
                        pbx=agent.pbx)
        desk.active[user.username] = spying
    return web.json_response({"ok": True, "spy": _spy_json(spying),
                              "message": f"calling your phone {phone}; answer it to {mode}"})


async def _channels(c: Console, on: str = "") -> list[dict[str, str]]:
    """PBX ``on``'s channels (``CoreShowChannels``), or ApiError as :func:`pbx` words it."""
    try:
        reply = await c.service.link_for(on).action({"Action": "CoreShowChannels"},
                                                    idempotent=True)
    except LinkDown:
        raise ApiError(503, "the PBX link is down; nothing was sent") from None
    except ActionTimeout:
        raise ApiError(504, "the PBX did not answer CoreShowChannels in time") from None
    except ActionRefused as exc:
        raise ApiError(400, str(exc)) from None
    except AmiError as exc:
        raise ApiError(502, str(exc)) from None
    items = reply if isinstance(reply, list) else [reply]
    if not items or not isinstance(items[0], dict):
        raise ApiError(502, "the PBX gave no answer to CoreShowChannels")
    if items[0].get("Response") == "Error":
        raise ApiError(502, f"the PBX refused CoreShowChannels: {items[0].get('Message', '')}")
    return [i for i in items if isinstance(i, dict) and i.get("Event") == "CoreShowChannel"]


def spy_channels(channels: list[dict[str, str]], phone: str) -> list[str]:
    """The channels of the supervisor's ``phone`` that are (or ring for) a spy call."""
    prefix = spy_target(phone) + "-"
    found = []
    for ch in channels:
        name = ch.get("Channel", "")
        if not name.startswith(prefix) or name.endswith(";2"):
            continue
        if ch.get("Application", "").lower() == "chanspy" or ch.get("CallerIDNum") == SPY_NUMBER:
            try:  # a name from the PBX is input: one unfit to send back never blocks the rest
                found.append(channel(name))
            except BadValue as exc:
                log.warning("spy_channel_skipped", channel=name[:100], error=str(exc))
    return found


async def api_spy_stop(request: web.Request) -> web.Response:
    c = request.app[CONSOLE]
    desk = request.app[SPY_DESK]
    session = await need_session(request)
    user = session.user
    data = await read_json(request, 8192)
    reason = text_field(data, "reason", max_len=MAX_REASON, required=False)
    known = desk.active.get(user.username)
    hung: list[str] = []
    async with audited(c, user, "spy_stop", target=known.agent if known else "",
                       reason=reason, data={
                           "phone": user.interface, "mode": known.mode if known else "",
                           "action_id": known.action_id if known else "",
                           "channels": hung}) as entry:
        phone = _my_phone(user)
        on = known.pbx if known else ""
        for name in spy_channels(await _channels(c, on), phone):
            await pbx(c, {"Action": "Hangup", "Channel": name}, ignore=("no such channel",),
                      to=on)
            hung.append(name)
        desk.active.pop(user.username, None)
        entry.result = "stopped" if hung else "no spy call was running"
    return web.json_response({"ok": True, "channels": hung, "message": entry.result})


async def api_spy_status(request: web.Request) -> web.Response:
    session = await need_session(request)
    desk = request.app[SPY_DESK]
    return web.json_response({"spy": _spy_json(desk.active.get(session.user.username)),
                              "phone": session.user.interface})


def setup_spy(app: web.Application) -> SpyDesk:
    """Add the spy routes to the console's app: call it right after ``make_app``."""
    c = app[CONSOLE]
    desk = SpyDesk(ids=itertools.count(1), active={})
    app[SPY_DESK] = desk
    # First, not last: tests wake the push hub as ``service.subscribers[-1]``.
    c.service.subscribers.insert(0, desk.changed)
    r = app.router
    r.add_post("/api/supervise/spy/stop", api_spy_stop)
    r.add_get("/api/supervise/spy", api_spy_status)
    r.add_post("/api/supervise/{name}/spy", api_spy)
    return desk
