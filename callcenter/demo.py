"""``callcenter demo``: the PBX simulator, the service and the web console in one process.

Everything runs on the embedded default (SQLite under ``var/``) and binds to
loopback only.  The simulator plays the citizens and a few background operators
(extensions 2001+); the demo accounts ``op1``…``op8`` are the phones
``Local/1001@agents/n``…``1008``, which join the queue when their operator signs
in from the console.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from acd.state import CallChanged, Change, Outcome
from callcenter.config import Settings
from callcenter.pbxsim import Pbx, PbxConfig, PbxSimServer
from callcenter.pbxsim import QueueConfig as SimQueue
from callcenter.service import Service
from callcenter.traffic import RandomTraffic, TrafficConfig
from recordings.store import RecordingStore, path_for, write_wav

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
    agi: asyncio.Server | None = None
    agi_port: int = 0
    recorder: DemoRecorder | None = None

    async def stop(self) -> None:
        if self.recorder is not None:
            await self.recorder.stop()
        await self.runner.cleanup()
        await self.service.stop()
        await self.sim.stop()
        if self.agi is not None:
            self.agi.close()
            try:
                await asyncio.wait_for(self.agi.wait_closed(), 2.0)
            except TimeoutError:
                pass


class DemoRecorder:
    """Stands in for MixMonitor: a short tone WAV for every completed call, indexed."""

    def __init__(self, store: RecordingStore) -> None:
        self.store = store
        self.tasks: set[asyncio.Task[None]] = set()

    def changed(self, changes: list[Change]) -> None:
        for c in changes:
            if isinstance(c, CallChanged) and c.what == "completed" \
                    and c.call.outcome is Outcome.COMPLETED:
                self._record(c.call.uniqueid, c.call.talk_time or 0)

    def _record(self, uniqueid: str, talk_time: int) -> None:
        try:
            rel = path_for(uniqueid)
        except ValueError:  # not an Asterisk uniqueid: nothing to name the file by
            return
        seconds = max(1, min(talk_time, 20))

        async def write() -> None:
            await asyncio.to_thread(write_wav, self.store.root / rel, seconds, 440)
            self.store.add(uniqueid, rel)

        task = asyncio.get_running_loop().create_task(write())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        await asyncio.gather(*list(self.tasks), return_exceptions=True)


def _expected_wait(ctx: dict[str, Any]) -> Callable[[], dict[str, float]]:
    """Per queue, the longest current wait (what the IVR's call-back offer looks at)."""

    def waits() -> dict[str, float]:
        service: Service | None = ctx.get("service")
        if service is None:
            return {}
        now = service.clock()
        return {q: service.centre.longest_wait(q, now) for q in service.centre.queues()}

    return waits


def _lookup_order(ctx: dict[str, Any]) -> Callable[[str], Any]:
    """Self-service: the state of the order keyed as digits (YYYYMMDDNNNNNN), None if unknown."""

    async def lookup(keyed: str) -> str | None:
        from sqlalchemy import select

        from callcenter.workorders import OrderRow

        wo = ctx.get("work_orders")
        if wo is None:
            return None
        digits = keyed.strip()
        number = f"{digits[:8]}-{digits[8:]}" if len(digits) == 14 and digits.isdigit() \
            else digits
        async with wo.sessions() as s:
            row = await s.scalar(select(OrderRow).where(OrderRow.number == number))
        return None if row is None else str(row.status)

    return lookup


def _on_answer(ctx: dict[str, Any]) -> Callable[..., Any]:
    """Return visit by keys: the citizen's answers go to the order (WorkOrders)."""

    async def answer(order_id: str, resolved: bool, sat_operator: int | None,
                     sat_department: int | None, call_id: str) -> None:
        wo = ctx.get("work_orders")
        if wo is not None:
            await wo.record_citizen_keys(order_id, resolved, sat_operator, sat_department,
                                         call_id)

    return answer


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


async def start_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                     seed: int = 12345, speed: float = 1.0, agents: int = 6,
                     db: str | None = None, rate: float | None = None,
                     peak_calls_per_hour: float = 100.0, seed_users: bool = True,
                     agi_port: int = DEFAULT_AGI_PORT) -> Demo:
    """Start the FastAGI IVR, simulator, service and web server; return handles.

    Port 0 (web or ``agi_port``) picks a free one.  The simulated citizens run the
    ``hotline`` FastAGI script before they join the queue.
    """
    from agent_console.auth import seed_demo_users
    from agent_console.orders_api import WORK_ORDERS
    from agent_console.server import RECORDINGS, make_app
    from callcenter.seed_orders import seed_demo_orders
    from ivr.fastagi import HotlineAgi, start_agi_server
    from ivr.menus import load_config as load_ivr_config

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise DemoError("the demo has well-known passwords and binds to loopback only")
    secret = secrets.token_hex(12)
    ctx: dict[str, Any] = {}
    agi = HotlineAgi(load_ivr_config(), expected_wait=_expected_wait(ctx),
                     lookup_order=_lookup_order(ctx), on_answer=_on_answer(ctx))
    try:
        agi_server = await start_agi_server(agi, "127.0.0.1", agi_port)
    except OSError as exc:
        raise DemoError(f"cannot listen for FastAGI on 127.0.0.1:{agi_port}: "
                        f"{exc.strerror}") from None
    agi_bound = agi_server.sockets[0].getsockname()[1]
    pbx = build_sim_pbx(settings, seed=seed, agents=agents, rate=rate,
                        peak_calls_per_hour=peak_calls_per_hour, hold_arrivals=True)
    sim = PbxSimServer(pbx, host="127.0.0.1", port=0, users={"hotline": secret}, speed=speed,
                       agi_url=f"agi://127.0.0.1:{agi_bound}/hotline")
    await sim.start()
    settings.ami.host, settings.ami.port = "127.0.0.1", sim.port
    settings.ami.username, settings.ami.secret = "hotline", secret
    settings.database_url = db or DEMO_DB
    service = Service(settings)
    try:
        await service.start()
        if seed_users:
            await seed_demo_users(service.store)
            await seed_demo_orders(service.store, tz=service.settings.tz, clock=service.clock)
        app = make_app(service)
        ctx["service"], ctx["work_orders"] = service, app[WORK_ORDERS]
        recorder = DemoRecorder(app[RECORDINGS])
        service.subscribers.append(recorder.changed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await service.stop()
        await sim.stop()
        agi_server.close()
        raise DemoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[union-attr]
    return Demo(sim, service, runner, f"http://{host}:{bound}/", agi_server, agi_bound,
                recorder)


async def run_demo(settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                   seed: int = 12345, speed: float = 1.0, agents: int = 6,
                   db: str | None = None, rate: float | None = None,
                   agi_port: int = DEFAULT_AGI_PORT) -> None:
    from callcenter.cli import CliError, _run_until_signalled

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
        await _run_until_signalled()
    finally:
        await demo.stop()


