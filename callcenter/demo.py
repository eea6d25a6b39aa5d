"""``callcenter demo``: the PBX simulator, the service and the web console in one process.

Everything runs on the embedded default (SQLite under ``var/``) and binds to
loopback only.  The simulator plays the citizens and a few background operators
(extensions 2001+); the demo accounts ``op1``…``op8`` are the phones
``Local/1001@agents/n``…``1008``, which join the queue when their operator signs
in from the console.
"""

from __future__ import annotations

import asyncio
import errno
import math
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from callcenter.config import Settings
from callcenter.pbx.sim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbx.sim import QueueConfig as SimQueue
from callcenter.pbx.traffic import RandomTraffic, TrafficConfig
from callcenter.service import Service
from callcenter.telephony import Telephony
from ivr.dialer import OutboundSettings

log = structlog.get_logger(__name__)
DEMO_DB = "sqlite+aiosqlite:///var/demo.db"
DEFAULT_AGI_PORT = 4573


class DemoError(Exception):
    """The demo cannot start; the message says why in one line."""


@dataclass(slots=True)
class Demo:
    """Handles on the running pieces (for tests and the benchmark)."""

    sim: PbxSimServer
    service: Service
    runner: web.AppRunner
    url: str
    telephony: Telephony
    more_sims: list[PbxSimServer] = field(default_factory=list)  # --pbxs N: pbx2 ...
    seeding: asyncio.Task[None] | None = None
    """The demo's orders, report history and articles, loaded after the server
    listens (see :func:`seed_in_background`); None without seeded data."""
    up_s: float = 0.0
    """Seconds from :func:`start_demo` being called to the web server listening."""

    @property
    def agi_port(self) -> int:
        return self.telephony.agi_port

    async def stop(self) -> None:
        if self.seeding is not None and not self.seeding.done():
            self.seeding.cancel()
            await asyncio.gather(self.seeding, return_exceptions=True)
        await self.telephony.stop()
        await self.runner.cleanup()
        await self.service.stop()
        await self.sim.stop()
        for sim in self.more_sims:
            await sim.stop()
        # The simulated callers have hung up: let the IVR sessions see it and end
        # (rather than be cancelled mid-script when the loop closes).
        await asyncio.sleep(0.2)


#: The demo's traffic: a night at a quarter of the peak (a demo is never dead), the
#: first caller 5 s after the start, and 30 % of callers who called before.
DEMO_FLOOR = 0.25
DEMO_FIRST_CALL_S = 5.0
DEMO_REPEAT_SHARE = 0.30
#: Simulated background operators ring after a signed-in human (queue penalty 1 vs 0),
#: so a ready demo operator gets the next call; in the demo they sign in paused (a
#: pre-shift meeting) and turn ready 45 s after the demo is up (PBX time), so the first
#: callers wait for whoever signs in first while the wallboard shows every operator.
BACKGROUND_PENALTY = 1
DEMO_SHIFT_START_S = 45.0


def build_sim_pbx(settings: Settings, *, seed: int, agents: int, rate: float | None,
                  peak_calls_per_hour: float, start_time: float | None = None,
                  hold_arrivals: bool = False,
                  known_callers: Sequence[tuple[str, str]] = (),
                  background_now: bool = True, first_extension: int = 2001) -> Pbx:
    """The demo's simulated Asterisk: every configured queue, ``agents`` background
    operators (extensions 2001+, penalty :data:`BACKGROUND_PENALTY` in every queue)
    and random traffic whose day profile runs on the centre's clock (``settings.tz``,
    Asia/Shanghai), not the machine's.  ``known_callers`` (number, name) are citizens
    who may call again (the demo orders' callers).  ``background_now=False`` leaves the
    background operators out (:func:`staff_background` signs them in later)."""
    queues = tuple(
        SimQueue(name=name, servicelevel=q.servicelevel, wrapuptime=q.wrapuptime)
        for name, q in (settings.queues or {}).items()
    ) or (SimQueue(),)
    t0 = time.time() if start_time is None else start_time
    local = datetime.fromtimestamp(t0, settings.tz)
    traffic = RandomTraffic(
        TrafficConfig(rate=rate, peak_calls_per_hour=peak_calls_per_hour,
                      start_hour=local.hour + local.minute / 60 + local.second / 3600,
                      floor=DEMO_FLOOR, first_call_after=DEMO_FIRST_CALL_S,
                      repeat_share=DEMO_REPEAT_SHARE, known_callers=tuple(known_callers)),
        seed=seed, origin=t0)
    config = PbxConfig(queues=queues, agents=agents, first_extension=first_extension,
                       autologin=False,
                       channelvars=("HOTLINE", "IVR_PATH", "CATEGORY"))
    pbx = Pbx(config, traffic, start_time=t0, seed=seed, hold_arrivals=hold_arrivals)
    if background_now:
        staff_background(pbx, agents, first=first_extension)
    return pbx


def staff_background(pbx: Pbx, agents: int, at: float | None = None, *,
                     first: int = 2001, now: float | None = None) -> None:
    """Sign the background operators (``first``, 2001+) in to every queue (an AMI
    QueueAdd with penalty :data:`BACKGROUND_PENALTY`, as a shift would), at once.
    With PBX times ``now`` and ``at`` they sign in at ``now`` paused in a pre-shift
    meeting (reason ``meeting``: they take no call, and the wallboard shows each of
    them from the start) and become ready at ``at`` (QueuePause off)."""
    for ext in range(first, first + agents):
        interface = f"Local/{ext}@{pbx.config.agent_context}/n"
        if at is None or now is None:
            for queue in pbx.queues:
                pbx.add_member(queue, interface, f"agent{ext}", penalty=BACKGROUND_PENALTY)
            continue
        for queue in pbx.queues:
            pbx.schedule_action(now, {"Action": "QueueAdd", "Queue": queue,
                                      "Interface": interface, "MemberName": f"agent{ext}",
                                      "Penalty": str(BACKGROUND_PENALTY), "Paused": "true",
                                      "Reason": "meeting"})
        pbx.schedule_action(at, {"Action": "QueuePause", "Interface": interface,
                                 "Paused": "false"})


def check_options(*, speed: float, rate: float | None, agents: int, port: int,
                  agi_port: int) -> None:
    """Refuse impossible demo options with one line (:class:`DemoError`)."""
    if not (speed > 0 and math.isfinite(speed)) or speed > 10_000:
        raise DemoError(f"--speed {speed:g} must be above 0 (1 = real time) and at most 10000")
    if rate is not None and not (0 < rate <= 1000 and math.isfinite(rate)):
        raise DemoError(f"--rate {rate:g} must be above 0 calls per second (at most 1000); "
                        "leave it out to follow the day's profile")
    if not 0 <= agents <= 500:
        raise DemoError(f"--agents {agents} must be between 0 and 500 simulated operators")
    for name, value in (("--port", port), ("--agi-port", agi_port)):
        if not 0 <= value <= 65535:
            raise DemoError(f"{name} {value} is not a TCP port (0-65535; 0 picks a free one)")


def check_port_free(host: str, port: int, what: str) -> None:
    """:class:`DemoError` when ``host:port`` cannot be listened on (before anything starts)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            hint = " (is another demo running? pick another with --port)" \
                if exc.errno == errno.EADDRINUSE else ""
            raise DemoError(f"cannot listen on {host}:{port} for {what}: "
                            f"{exc.strerror}{hint}") from None


def demo_outbound(settings: Settings, agi_url: str) -> OutboundSettings:
    """The demo's outbound timing: return visits 20 s after completion, at any hour,
    retried after 1 and 2 minutes; call-backs retried after a minute."""
    out = OutboundSettings.from_raw(settings.raw)
    out.agi_url = agi_url
    out.poll_s = 2.0
    out.visit_delay_s = 20.0
    out.visit_hours = (0, 24)
    out.visit_retry_s = (60.0, 120.0)
    out.visit_result_timeout_s = 120.0
    out.callback_retry_s = 60.0
    return out


async def start_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                     seed: int = 12345, speed: float = 1.0, agents: int = 6,
                     db: str | None = None, rate: float | None = None,
                     peak_calls_per_hour: float = 100.0, seed_users: bool = True,
                     agi_port: int = DEFAULT_AGI_PORT, outbound: OutboundSettings | None = None,
                     citizen: Any = None, pbxs: int = 1) -> Demo:
    """Start the FastAGI IVR, simulator, service and web server; return handles.

    Port 0 (web or ``agi_port``) picks a free one.  The simulated citizens run the
    ``hotline`` FastAGI script before they join the queue, answer return-visit
    calls with their keys, and the simulator records every answered call.
    ``outbound`` replaces the demo's dialer timing and ``citizen`` the simulated
    citizens' behaviour (tests).  ``pbxs``: that many simulated Asterisks (``pbx1`` …,
    seeds ``seed``, ``seed + 1`` …), each with its own callers and background operators,
    all hosting every queue (README "Several PBXs").
    """
    from agent_console.auth import HashOnce, seed_demo_users
    from agent_console.server import make_app
    from callcenter.demo_orders import demo_callers, seed_handlers
    from callcenter.orders.store import WorkOrders
    from callcenter.telephony import TelephonyError, start_telephony

    started = time.perf_counter()

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError("the demo has well-known passwords and binds to loopback only")
    check_options(speed=speed, rate=rate, agents=agents, port=port, agi_port=agi_port)
    check_port_free(host, port, "the web console")
    check_port_free("127.0.0.1", agi_port, "the FastAGI IVR (--agi-port)")
    if not 1 <= pbxs <= 8:
        raise DemoError("--pbxs must be 1 to 8")
    secret, agi_secret = secrets.token_hex(12), secrets.token_hex(16)
    sims: list[PbxSimServer] = []
    pbx_list = []
    for i in range(pbxs):
        pbx = build_sim_pbx(settings, seed=seed + i, agents=agents, rate=rate,
                            peak_calls_per_hour=peak_calls_per_hour, hold_arrivals=True,
                            known_callers=demo_callers() if seed_users else (),
                            background_now=False, first_extension=2001 + 100 * i)
        # Callers are held until the IVR's address is known (set below, before any is due).
        extra: dict[str, Any] = {} if citizen is None else {"citizen": citizen}
        sims.append(PbxSimServer(pbx, host="127.0.0.1", port=0, users={"hotline": secret},
                                 speed=speed, recordings_root=settings.recordings_root,
                                 agi_secret=agi_secret, name=f"pbx{i + 1}" if pbxs > 1 else "",
                                 **extra))
        pbx_list.append(pbx)
        await sims[-1].start()
    sim = sims[0]
    settings.ami.host, settings.ami.port = "127.0.0.1", sim.port
    settings.ami.username, settings.ami.secret = "hotline", secret
    if pbxs > 1:
        settings.ami.name = "pbx1"
        settings.more_pbxs = [
            replace(settings.ami, name=f"pbx{i + 1}", port=other.port, queue_log="")
            for i, other in enumerate(sims[1:], 1)]
    settings.database_url = db or DEMO_DB
    service = Service(settings)
    runner: web.AppRunner | None = None
    try:
        await service.start()
        passwords = HashOnce()
        if seed_users:  # before listening: a login must find its account
            await seed_demo_users(service.store, passwords=passwords)
            await seed_handlers(service.store, WorkOrders(service.store.engine,
                                                          tz=service.settings.tz),
                                passwords=passwords)
        app = make_app(service)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        telephony = await start_telephony(
            service, app, agi_port=agi_port, agi_secret=sim.agi_secret,
            outbound=outbound or demo_outbound(settings, f"agi://127.0.0.1:{agi_port}"))
        for one in sims:
            one.agi_url = f"agi://127.0.0.1:{telephony.agi_port}/hotline"
        site = web.TCPSite(runner, host, port)
        await site.start()
        # Held callers go through the IVR now; the background shift starts a little later.
        for i, (one, pbx) in enumerate(zip(sims, pbx_list, strict=True)):
            staff_background(pbx, agents, at=one.virtual_now() + DEMO_SHIFT_START_S,
                             first=2001 + 100 * i, now=one.virtual_now())
    except (OSError, TelephonyError) as exc:
        if runner is not None:
            await runner.cleanup()
        await service.stop()
        for one in sims:
            await one.stop()
        if isinstance(exc, TelephonyError):
            raise DemoError(str(exc)) from None
        raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
    seeding = asyncio.create_task(seed_in_background(service, passwords)) if seed_users else None
    return Demo(sim, service, runner, f"http://{host}:{bound}/", telephony, sims[1:], seeding,
                time.perf_counter() - started)


async def seed_in_background(service: Service, passwords: Any) -> None:
    """The demo's data once the server listens: orders (with the department
    accounts), 60 days of report history, the knowledge base's articles, and jieba's
    dictionary loaded for the first search.  They took most of the 17-25 s the demo
    needed to come up on a busy machine; the pages fill in a few seconds later."""
    from callcenter.demo_orders import seed_demo_orders, seed_report_history
    from callcenter.orders.knowledge import KnowledgeBase, load_demo_articles, load_segmenter

    started = time.perf_counter()
    try:
        tz = service.settings.tz
        await seed_demo_orders(service.store, tz=tz, clock=service.clock, passwords=passwords)
        await seed_report_history(service.store, tz=tz, clock=service.clock)
        await asyncio.to_thread(load_segmenter)  # off the loop: a second or more of dictionary
        await load_demo_articles(KnowledgeBase(service.store.engine, tz, clock=service.clock))
    except asyncio.CancelledError:
        raise
    except Exception:  # the demo runs on without its sample data
        log.exception("demo data could not be loaded")
        return
    log.info("demo data loaded", seconds=round(time.perf_counter() - started, 1))


async def run_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                   seed: int = 12345, speed: float = 1.0, agents: int = 6,
                   db: str | None = None, rate: float | None = None,
                   agi_port: int = DEFAULT_AGI_PORT, pbxs: int = 1) -> None:
    from callcenter.runtime import CliError, run_until_signalled

    try:
        demo = await start_demo(settings, host=host, port=port, seed=seed, speed=speed,
                                agents=agents, db=db, rate=rate, agi_port=agi_port,
                                pbxs=pbxs)
    except DemoError as exc:
        raise CliError(str(exc)) from None
    print(
        f"\nhotline demo is running: {demo.url} (up in {demo.up_s:.1f} s; sample orders, "
        "reports and articles load in the background)\n"
        f"  wallboard (supervisor): {demo.url}wallboard   login sup1 / demo\n"
        f"  operator console:       {demo.url}console     logins op1 … op8 / demo\n"
        f"  work orders:            {demo.url}orders      logins dept1, dept2 (departments), "
        "sup1 / demo\n"
        f"  PBX simulator (AMI):    127.0.0.1:{demo.sim.port}, seed {seed}, speed {speed:g}x, "
        f"{agents} simulated operators\n"
        + "".join(f"  PBX pbx{i} (AMI):        127.0.0.1:{other.port}, seed {seed + i - 1}\n"
                  for i, other in enumerate(demo.more_sims, 2)) +
        f"  IVR (FastAGI):          agi://127.0.0.1:{demo.agi_port}/hotline "
        "(simulated callers go through the menu)\n"
        f"  database:               {settings.database_url} "
        f"(figures: callcenter report --db {settings.database_url})\n"
        f"  recordings:             {settings.recordings_root} "
        f"(GET {demo.url}api/recordings/<uniqueid>, supervisors)\n"
        "Press Ctrl+C to stop.\n", flush=True)
    try:
        await run_until_signalled()
    finally:
        await demo.stop()
    print("hotline demo stopped.", flush=True)


