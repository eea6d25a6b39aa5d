"""A hand-written stand-in for the PBX link, for the console's tests.

:class:`FakePbx` replaces ``service.link``: it answers the AMI actions the
console sends (QueueAdd, QueuePause, QueueRemove, Hangup, Redirect) the way
Asterisk does, and feeds back the events Asterisk would send, in its header
format (see ../shared/ami-traces), through ``service.inbox``.  Helpers play the
caller's side: join a queue, ring an operator, connect, complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher

from acd import events as ev
from agent_console.auth import Passwords, seed_demo_users
from agent_console.ratelimit import UNLIMITED
from callcenter.config import load
from callcenter.pbx.ami import LinkDown
from callcenter.service import Service


@dataclass(slots=True)
class _Member:
    name: str
    paused: bool = False
    reason: str = ""
    calls_taken: int = 0
    in_call: bool = False


class FakePbx:
    """``pbx``: with several PBXs, the name its events are tagged with (it replaces
    ``service.edges[pbx].link``); "" = the home PBX."""

    def __init__(self, service: Service, pbx: str = "") -> None:
        self.service = service
        self.pbx = pbx
        self.actions: list[dict[str, str]] = []
        self.link_up = True
        self.members: dict[tuple[str, str], _Member] = {}  # (queue, interface)
        self.channels: dict[str, tuple[str, str, str]] = {}  # uniqueid -> (queue, channel, caller)
        self.connected: dict[str, tuple[str, str]] = {}  # uniqueid -> (interface, member)
        self.answered_at: dict[str, float] = {}
        self.joined_at: dict[str, float] = {}
        self.refuse: dict[str, str] = {}  # action name -> error message
        self.silent = False  # answer actions but send no events (a PBX that lags)
        self.held: list[tuple[dict[str, str], float]] = []
        self.dialplan: Any = None  # a callcenter.pbx.sim.admin.Dialplan: answer "dialplan show"

    # ---- the link's interface

    @property
    def up(self) -> bool:
        return self.link_up

    async def start(self) -> None:
        self._put((None, ev.LinkChanged(time.time(), True, "fake PBX")))

    def _put(self, item: tuple[Any, Any]) -> None:
        self.service.inbox.put_nowait((*item, self.pbx) if self.pbx else item)

    async def stop(self) -> None:
        return None

    async def action(self, action: Mapping[str, Any], *, idempotent: bool | None = None,
                     timeout: float | None = None) -> dict[str, str]:
        act = {k: str(v) for k, v in action.items()}
        name = act["Action"]
        if not self.link_up:
            raise LinkDown(f"AMI link is down; {name} not sent", action=name, sent=False,
                           idempotent=bool(idempotent))
        self.actions.append(act)
        if name in self.refuse:
            return {"Response": "Error", "Message": self.refuse[name]}
        handler = getattr(self, "_" + name.lower(), None)
        if handler is None:
            return {"Response": "Error", "Message": "Invalid/unknown command"}
        return handler(act)

    def count(self, name: str) -> int:
        return sum(1 for a in self.actions if a["Action"] == name)

    # ---- actions

    def _queueadd(self, a: dict[str, str]) -> dict[str, str]:
        key = (a["Queue"], a["Interface"])
        if key in self.members:
            return {"Response": "Error", "Message": "Unable to add interface: Already there"}
        m = self.members[key] = _Member(a.get("MemberName", a["Interface"]),
                                        a.get("Paused", "false") == "true")
        self.emit(self._member_headers("QueueMemberAdded", key, m))
        return {"Response": "Success", "Message": "Added interface to queue"}

    def _queuepause(self, a: dict[str, str]) -> dict[str, str]:
        paused = a["Paused"].lower() in ("true", "1", "yes")
        keys = [k for k in self.members if k[1] == a["Interface"]
                and ("Queue" not in a or k[0] == a["Queue"])]
        if not keys:
            return {"Response": "Error", "Message": "Interface not found"}
        for key in keys:
            m = self.members[key]
            m.paused, m.reason = paused, a.get("Reason", "") if paused else ""
            self.emit(self._member_headers("QueueMemberPause", key, m))
        return {"Response": "Success",
                "Message": "Interface paused successfully" if paused else
                "Interface unpaused successfully"}

    def _queueremove(self, a: dict[str, str]) -> dict[str, str]:
        key = (a["Queue"], a["Interface"])
        m = self.members.pop(key, None)
        if m is None:
            return {"Response": "Error", "Message": "Unable to remove interface: Not there"}
        self.emit(self._member_headers("QueueMemberRemoved", key, m))
        return {"Response": "Success", "Message": "Removed interface from queue"}

    def _command(self, a: dict[str, str]) -> dict[str, str]:
        words = a.get("Command", "").split()
        if self.dialplan is None or words[:2] != ["dialplan", "show"] or len(words) != 3:
            return {"Response": "Error", "Message": "Invalid/unknown command"}
        ok, lines = self.dialplan.show(words[2])
        return {"Response": "Success" if ok else "Error", "Message": "Command output follows",
                "Output": "\n".join(lines)}

    def _hangup(self, a: dict[str, str]) -> dict[str, str]:
        uid = next((u for u, (_, chan, _) in self.channels.items() if chan == a["Channel"]), None)
        if uid is None:
            return {"Response": "Error", "Message": "No such channel"}
        if uid in self.connected:
            self.complete(uid, reason="agent")
        return {"Response": "Success", "Message": "Channel Hungup"}

    def _redirect(self, a: dict[str, str]) -> dict[str, str]:
        uid = next((u for u, (_, chan, _) in self.channels.items() if chan == a["Channel"]), None)
        if uid is None:
            return {"Response": "Error", "Message": "Channel does not exist"}
        if uid in self.connected:
            self.complete(uid, reason="transfer")
        return {"Response": "Success", "Message": "Redirect successful"}

    # ---- the caller's side

    def emit(self, headers: dict[str, str], at: float | None = None) -> None:
        item = (headers, time.time() if at is None else at)
        if self.silent and headers.get("Event", "").startswith("QueueMember"):
            self.held.append(item)
            return
        self._put(item)

    def release(self) -> None:
        """Send the member events held back while ``silent``."""
        self.silent = False
        for item in self.held:
            self._put(item)
        self.held.clear()

    def caller_joins(self, uid: str, caller: str, name: str = "", *, queue: str = "hotline",
                     hotline: str = "12345", category: str = "general", ivr_path: str = "",
                     at: float | None = None) -> None:
        channel = f"Local/s@inbound-{uid.replace('.', '')};2"
        self.channels[uid] = (queue, channel, caller)
        self.joined_at[uid] = time.time() if at is None else at
        waiting = sum(1 for u, c in self.channels.items() if c[0] == queue
                      and u not in self.connected)
        self.emit({"Event": "QueueCallerJoin", "Channel": channel, "CallerIDNum": caller,
                   "CallerIDName": name, "Uniqueid": uid, "Queue": queue,
                   "Position": str(waiting), "Count": str(waiting),
                   "ChanVariable(HOTLINE)": hotline, "ChanVariable(CATEGORY)": category,
                   "ChanVariable(IVR_PATH)": ivr_path}, at)

    def _call_headers(self, uid: str, interface: str, member: str) -> dict[str, str]:
        queue, channel, caller = self.channels[uid]
        return {"Channel": channel, "CallerIDNum": caller, "Uniqueid": uid, "Queue": queue,
                "Interface": interface, "MemberName": member}

    def _member_of(self, interface: str) -> str:
        return next(m.name for (q, i), m in self.members.items() if i == interface)

    def ring(self, uid: str, interface: str, at: float | None = None) -> None:
        self.emit({"Event": "AgentCalled",
                   **self._call_headers(uid, interface, self._member_of(interface))}, at)

    def ring_no_answer(self, uid: str, interface: str, at: float | None = None) -> None:
        self.emit({"Event": "AgentRingNoAnswer", "RingTime": "10000",
                   **self._call_headers(uid, interface, self._member_of(interface))}, at)

    def answer(self, uid: str, interface: str, at: float | None = None) -> None:
        now = time.time() if at is None else at
        member = self._member_of(interface)
        queue = self.channels[uid][0]
        self.connected[uid] = (interface, member)
        self.answered_at[uid] = now
        for key, m in self.members.items():
            if key[1] == interface:
                m.in_call = True
        self.emit({"Event": "QueueCallerLeave", "Queue": queue, "Uniqueid": uid,
                   "Channel": self.channels[uid][1]}, now)
        hold = int(now - self.joined_at[uid])
        self.emit({"Event": "AgentConnect", **self._call_headers(uid, interface, member),
                   "HoldTime": str(hold), "RingTime": "2"}, now)

    def complete(self, uid: str, *, reason: str = "caller", at: float | None = None) -> None:
        now = time.time() if at is None else at
        interface, member = self.connected.pop(uid)
        for key, m in self.members.items():
            if key[1] == interface:
                m.in_call = False
                if key[0] == self.channels[uid][0]:
                    m.calls_taken += 1
        hold = int(self.answered_at[uid] - self.joined_at[uid])
        self.emit({"Event": "AgentComplete", **self._call_headers(uid, interface, member),
                   "HoldTime": str(hold), "TalkTime": str(int(now - self.answered_at[uid])),
                   "Reason": reason}, now)
        self.channels.pop(uid)

    def abandon(self, uid: str, at: float | None = None) -> None:
        now = time.time() if at is None else at
        queue, channel, _ = self.channels.pop(uid)
        self.emit({"Event": "QueueCallerAbandon", "Queue": queue, "Uniqueid": uid,
                   "Position": "1", "OriginalPosition": "1",
                   "HoldTime": str(int(now - self.joined_at[uid]))}, now)
        self.emit({"Event": "QueueCallerLeave", "Queue": queue, "Uniqueid": uid,
                   "Channel": channel}, now)

    def _member_headers(self, event: str, key: tuple[str, str], m: _Member) -> dict[str, str]:
        queue, interface = key
        return {"Event": event, "Queue": queue, "MemberName": m.name, "Interface": interface,
                "StateInterface": interface, "Membership": "dynamic", "Penalty": "0",
                "CallsTaken": str(m.calls_taken), "InCall": "1" if m.in_call else "0",
                "Status": "1", "Paused": "1" if m.paused else "0", "PausedReason": m.reason,
                "Ringinuse": "0", "Wrapuptime": "0"}


# Argon2 at its cheapest: the tests sign in hundreds of times.
CHEAP = Passwords(PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))


async def started_service(db_url: str) -> tuple[Service, FakePbx]:
    """A real Service on ``db_url`` with :class:`FakePbx` as its link and the demo accounts."""
    settings = load(env={})
    settings.database_url = db_url
    service = Service(settings)
    pbx = FakePbx(service)
    service.link = pbx  # type: ignore[assignment]
    await service.start()
    await seed_demo_users(service.store, passwords=CHEAP)
    return service, pbx


def rig_app(service: Service, **options: Any) -> web.Application:
    """The console's real app (agent_console.server.make_app) for an API test rig: Argon2
    at its cheapest (:data:`CHEAP`), no pause after a failed sign-in and no request rate
    limit (ratelimit.UNLIMITED: a rig's clients all come from 127.0.0.1 and some send
    hundreds of requests; tests/test_ratelimit.py tests the limit).  ``options`` are
    make_app's and win over these."""
    from agent_console.server import make_app

    return make_app(service, **({"passwords": CHEAP, "failure_delay": 0,
                                 "rate_limit": UNLIMITED} | options))


@asynccontextmanager
async def served(service: Service, app: web.Application) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1 at a free port, for a real browser: its URL (no trailing /).
    On the way out the server and ``service`` are stopped, in that order."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await service.stop()


class Person:
    """One browser: its own cookie jar and CSRF token."""

    def __init__(self, server: TestServer) -> None:
        self.server = server
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def login(self, username: str, password: str = "demo") -> tuple[int, Any]:
        status, body = await self.call("POST", "/api/login",
                                       {"username": username, "password": password})
        if status == 200:
            self.csrf = body["csrf"]
        return status, body

    async def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True,
                   headers: dict[str, str] | None = None, raw: bytes | None = None
                   ) -> tuple[int, Any]:
        h = dict(headers or {})
        if csrf and self.csrf:
            h.setdefault("X-CSRF-Token", self.csrf)
        kwargs: dict[str, Any] = {"headers": h}
        if raw is not None:
            kwargs["data"] = raw
            h.setdefault("Content-Type", "application/json")
        elif method != "GET":
            kwargs["json"] = {} if body is None else body
        async with self.http.request(method, self.url(path), **kwargs) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def ws(self, query: str = "") -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url("/ws" + query))


@asynccontextmanager
async def serving(service: Service, app: Any) -> AsyncIterator[tuple[TestServer, list[Person]]]:
    """``app`` on a test server; on the way out the browsers opened (the list),
    the server and ``service`` are closed, in that order."""
    server = TestServer(app)
    await server.start_server()
    people: list[Person] = []
    try:
        yield server, people
    finally:
        for p in people:
            await p.http.close()
        await server.close()
        await service.stop()


class Desk:
    """The console's real app with a real Service behind a test server, for the
    desk's API suites (work orders, order search, knowledge base).

    ``wo`` is the app's :class:`~callcenter.orders.store.WorkOrders`; ``people``
    are the browsers opened with :meth:`as_user`, closed by :func:`desk`.
    """

    def __init__(self, service: Service, pbx: FakePbx, server: TestServer, app: Any,
                 people: list[Person]) -> None:
        from agent_console.orders_api import WORK_ORDERS
        self.service, self.pbx, self.server, self.app = service, pbx, server, app
        self.people = people
        self.wo = app[WORK_ORDERS]

    def person(self) -> Person:
        """A new browser, not signed in."""
        p = Person(self.server)
        self.people.append(p)
        return p

    async def as_user(self, username: str) -> Person:
        """A new browser signed in as ``username`` (password ``demo``)."""
        p = self.person()
        status, body = await p.login(username)
        assert status == 200, body
        return p


@asynccontextmanager
async def desk(db_url: str, *, articles: bool = False,
               setup: Callable[[web.Application], None] | None = None) -> AsyncIterator[Desk]:
    """A :class:`Desk` on ``db_url`` with the demo accounts and the departments'
    handlers seeded (and the demo knowledge base when ``articles``); ``setup(app)`` is
    called before the app starts (keys its start-up reads); everything is closed on
    the way out."""
    from agent_console.auth import LoginThrottle
    from agent_console.knowledge_api import KNOWLEDGE
    from agent_console.server import make_app
    from callcenter.demo_orders import seed_handlers
    from callcenter.orders.knowledge import load_demo_articles

    service, pbx = await started_service(db_url)
    app = make_app(service, passwords=CHEAP, failure_delay=0,
                   throttle=LoginThrottle(free=50))
    if setup is not None:
        setup(app)
    d_people: list[Person]
    async with serving(service, app) as (server, d_people):
        rig = Desk(service, pbx, server, app, d_people)
        await seed_handlers(service.store, rig.wo, passwords=CHEAP)
        if articles:
            await load_demo_articles(app[KNOWLEDGE])
        yield rig


def past_call(uniqueid: str, caller: str, at: float, *, name: str = "", hold: int = 4,
              talk: int = 91, category: str = "general", wrap_s: float = 3.0
              ) -> dict[str, Any]:
    """A completed call of the past, as the store saves it (taken by agent1003 after
    ``hold`` s, ``talk`` s long): the caller history a screen pop shows."""
    return {"uniqueid": uniqueid, "queue": "hotline", "joined_at": at, "caller_num": caller,
            "caller_name": name, "hotline": "12345", "category": category, "ivr_path": "",
            "outcome": "completed", "left_at": at + hold, "answered_at": at + hold,
            "hold_time": hold, "agent": "agent1003", "interface": "Local/1003@agents/n",
            "ended_at": at + hold + talk, "talk_time": talk, "wrap_s": wrap_s, "rings": 1,
            "ring_no_answer": 0, "estimated": False}
