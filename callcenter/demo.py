"""``callcenter demo``: the PBX simulator, the service and the web console in one process.

Everything runs on the embedded default (SQLite under ``var/``) and binds to
loopback only.  The simulator plays the citizens and a few background operators
(extensions 2001+); the demo accounts ``op1``…``op8`` are the phones
``Local/1001@agents/n``…``1008``, which join the queue when their operator signs
in from the console.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
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

    @property
    def agi_port(self) -> int:
        return self.telephony.agi_port

    async def stop(self) -> None:
        await self.telephony.stop()
        await self.runner.cleanup()
        await self.service.stop()
        await self.sim.stop()


def build_sim_pbx(settings: Settings, *, seed: int, agents: int, rate: float | None,
                  peak_calls_per_hour: float, start_time: float | None = None,
                  hold_arrivals: bool = False) -> Pbx:
    queues = tuple(
        SimQueue(name=name, servicelevel=q.servicelevel, wrapuptime=q.wrapuptime)
        for name, q in (settings.queues or {}).items()
    ) or (SimQueue(),)
    t0 = time.time() if start_time is None else start_time
    local = time.localtime(t0)
    traffic = RandomTraffic(
        TrafficConfig(rate=rate, peak_calls_per_hour=peak_calls_per_hour,
                      start_hour=local.tm_hour + local.tm_min / 60),
        seed=seed, origin=t0)
    config = PbxConfig(queues=queues[:1], agents=agents, first_extension=2001,
                       channelvars=("HOTLINE", "IVR_PATH", "CATEGORY"))
    return Pbx(config, traffic, start_time=t0, seed=seed, hold_arrivals=hold_arrivals)


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
                     citizen: Any = None) -> Demo:
    """Start the FastAGI IVR, simulator, service and web server; return handles.

    Port 0 (web or ``agi_port``) picks a free one.  The simulated citizens run the
    ``hotline`` FastAGI script before they join the queue, answer return-visit
    calls with their keys, and the simulator records every answered call.
    ``outbound`` replaces the demo's dialer timing and ``citizen`` the simulated
    citizens' behaviour (tests).
    """
    from agent_console.auth import seed_demo_users
    from agent_console.server import make_app
    from callcenter.demo_orders import seed_demo_orders
    from callcenter.telephony import TelephonyError, start_telephony

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError("the demo has well-known passwords and binds to loopback only")
    secret = secrets.token_hex(12)
    pbx = build_sim_pbx(settings, seed=seed, agents=agents, rate=rate,
                        peak_calls_per_hour=peak_calls_per_hour, hold_arrivals=True)
    # Callers are held until the IVR's address is known (set below, before any is due).
    extra: dict[str, Any] = {} if citizen is None else {"citizen": citizen}
    sim = PbxSimServer(pbx, host="127.0.0.1", port=0, users={"hotline": secret}, speed=speed,
                       recordings_root=settings.recordings_root,
                       agi_secret=secrets.token_hex(16), **extra)
    await sim.start()
    settings.ami.host, settings.ami.port = "127.0.0.1", sim.port
    settings.ami.username, settings.ami.secret = "hotline", secret
    settings.database_url = db or DEMO_DB
    service = Service(settings)
    runner: web.AppRunner | None = None
    try:
        await service.start()
        if seed_users:
            await seed_demo_users(service.store)
            await seed_demo_orders(service.store, tz=service.settings.tz, clock=service.clock)
        app = make_app(service)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        telephony = await start_telephony(
            service, app, agi_port=agi_port, agi_secret=sim.agi_secret,
            outbound=outbound or demo_outbound(settings, f"agi://127.0.0.1:{agi_port}"))
        sim.agi_url = f"agi://127.0.0.1:{telephony.agi_port}/hotline"
        site = web.TCPSite(runner, host, port)
        await site.start()
    except (OSError, TelephonyError) as exc:
        if runner is not None:
            await runner.cleanup()
        await service.stop()
        await sim.stop()
        if isinstance(exc, TelephonyError):
            raise DemoError(str(exc)) from None
        raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
    return Demo(sim, service, runner, f"http://{host}:{bound}/", telephony)


async def run_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                   seed: int = 12345, speed: float = 1.0, agents: int = 6,
                   db: str | None = None, rate: float | None = None,
                   agi_port: int = DEFAULT_AGI_PORT) -> None:
    from callcenter.runtime import CliError, run_until_signalled

    try:
        demo = await start_demo(settings, host=host, port=port, seed=seed, speed=speed,
                                agents=agents, db=db, rate=rate, agi_port=agi_port)
    except DemoError as exc:
        raise CliError(str(exc)) from None
    print(
        f"\nhotline demo is running: {demo.url}\n"
        f"  wallboard (supervisor): {demo.url}wallboard   login sup1 / demo\n"
        f"  operator console:       {demo.url}console     logins op1 … op8 / demo\n"
        f"  work orders:            {demo.url}orders      logins dept1, dept2 (departments), "
        "sup1 / demo\n"
        f"  PBX simulator (AMI):    127.0.0.1:{demo.sim.port}, seed {seed}, speed {speed:g}x, "
        f"{agents} simulated operators\n"
        f"  IVR (FastAGI):          agi://127.0.0.1:{demo.agi_port}/hotline "
        "(simulated callers go through the menu)\n"
        f"  database:               {settings.database_url}\n"
        f"  recordings:             {settings.recordings_root} "
        f"(GET {demo.url}api/recordings/<uniqueid>, supervisors)\n"
        "Press Ctrl+C to stop.\n", flush=True)
    try:
        await run_until_signalled()
    finally:
        await demo.stop()


