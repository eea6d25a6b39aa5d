"""``callcenter`` command line: demo, serve, replay, pbx-sim, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from callcenter import logs
from callcenter.config import ConfigError, Settings, load
from callcenter.runtime import CliError, run_until_signalled

DEMO_DB = "sqlite+aiosqlite:///var/demo.db"  # callcenter.demo.DEMO_DB
DEMO_DB_FILE = "var/demo.db"


def _settings(args: argparse.Namespace) -> Settings:
    return load(getattr(args, "config", None))


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    from acd.state import QueueConfig
    from callcenter.pbx.replay import TraceError, replay

    s = _settings(args)
    try:
        result = replay(args.trace, s.queues, args.servicelevel,
                        QueueConfig(s.servicelevel, 0), args.short_abandon,
                        queue_log=args.queue_log, use_queue_log=not args.no_queue_log)
    except TraceError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for q, f in result["queues"].items():  # type: ignore[union-attr]
        print(f"queue {q}: offered {f['offered']}  answered {f['answered']}  "
              f"abandoned {f['abandoned']}  in SL {f['answered_within_sl']}")
        print(f"  接通率 connection rate {f['connection_rate']:.2f}%   "
              f"15秒接通率 {f['answer_rate_sl']:.2f}%   ServicelevelPerf "
              f"{f['servicelevel_perf']:.2f}%   ServicelevelPerf2 {f['servicelevel_perf2']:.2f}%")
        print(f"  ASA {f['asa_s']:.2f}s  AHT {f['aht_s']:.2f}s  "
              f"Asterisk Holdtime {f['asterisk_holdtime']}  TalkTime {f['asterisk_talktime']}")
    if result["queue_log"]:
        print(f"gaps rebuilt from {result['queue_log']}")
    for name, a in result["agents"].items():  # type: ignore[union-attr]
        print(f"agent {name}: answered {a['answered']}  ring-no-answer {a['ring_no_answer']}  "
              f"paused {a['paused_s']:.1f}s  talk {a['talk_s']:.0f}s")
    return 0


# --------------------------------------------------------------------------- service


async def _serve(settings: Settings, host: str, port: int, banner: str = "", *,
                 agi_host: str = "127.0.0.1", agi_port: int = 4573) -> None:
    from aiohttp import web

    from agent_console.server import make_app
    from agent_console.session import CONSOLE
    from callcenter.ops import OPS
    from callcenter.service import Service
    from callcenter.telephony import TelephonyError, start_telephony, startup_checks
    from callcenter.web import ConsolesOnBus, bus_settings, publish_wall

    lease = None
    if settings.raw.get("ha", {}).get("enabled", False):
        from callcenter.ha import Lease

        try:
            lease = Lease(settings.database_url, settings.ami.name)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        await lease.acquire()  # a standby waits here, binding nothing
    service = Service(settings)
    await service.start()
    app = make_app(service)
    ops = app[OPS]
    if lease is not None:
        ops.checks["lease"] = _lease_check(lease)
    redis_url, prefix = bus_settings(settings)
    wall = publish_wall(app[CONSOLE], redis_url, prefix) if redis_url else None
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    telephony = None
    try:
        telephony = await start_telephony(service, app, agi_host=agi_host, agi_port=agi_port)
        ops.watch_agi(lambda: telephony.agi.sessions if telephony else 0)
        await site.start()
        if wall is not None:
            await wall.start()
        checks = asyncio.create_task(startup_checks(service, telephony))  # logs what fails
    except (OSError, TelephonyError) as exc:
        if telephony is not None:
            await telephony.stop()
        await runner.cleanup()
        await service.stop()
        if isinstance(exc, TelephonyError):
            raise CliError(str(exc)) from None
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if port == 0:  # the port the system gave (tests, several services on one host)
        port = int(runner.addresses[0][1])
    consoles = None
    if redis_url:  # operators' screens on the bus; the workers send requests here
        core_url = str(settings.raw.get("bus", {}).get("core_url", "")) \
            or f"http://{host}:{port}"
        consoles = ConsolesOnBus(app[CONSOLE], redis_url, prefix, core_url)
        await consoles.start()
    print(f"hotline is running at http://{host}:{port}/{banner}\n"
          f"  FastAGI IVR: agi://{agi_host}:{telephony.agi_port}/hotline", flush=True)
    if not await _has_accounts(service):
        print("  no account can sign in yet: create one with\n"
              "  callcenter users add admin --role admin   (then op1 --role operator, ...)",
              flush=True)
    try:
        if lease is None:
            await run_until_signalled()
        else:  # the lease lost means another core may be active: stop writing at once
            signalled = asyncio.create_task(run_until_signalled())
            lost = asyncio.create_task(lease.lost.wait())
            await asyncio.wait({signalled, lost}, return_when=asyncio.FIRST_COMPLETED)
            for t in (signalled, lost):
                t.cancel()
            if lease.lost.is_set():
                os._exit(3)  # no flush, no goodbye: the new active core owns the writes
    finally:
        checks.cancel()
        if consoles is not None:
            await consoles.stop()
        if wall is not None:
            await wall.stop()
        await telephony.stop()
        await runner.cleanup()
        await service.stop()
        if lease is not None:
            await lease.release()


def _lease_check(lease: object) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        return None if lease.held else "this core does not hold the active lease"  # type: ignore[attr-defined]
    return check


async def _has_accounts(service: object) -> bool:
    from sqlalchemy import func, select

    from agent_console.models import UserRow

    engine = service.store.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return bool(await conn.scalar(select(func.count()).select_from(UserRow)))


def cmd_serve(args: argparse.Namespace) -> int:
    s = _settings(args)
    port = s.web_port if args.port is None else args.port
    asyncio.run(_serve(s, args.host or s.web_host, port,
                       agi_host=args.agi_host, agi_port=args.agi_port))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    from callcenter.web import bus_settings, run_worker, run_workers

    s = _settings(args)
    redis_url, prefix = bus_settings(s)
    if not redis_url:
        raise CliError("callcenter web needs the bus: set [bus] redis_url (or "
                       "HOTLINE_REDIS_URL), and the same on the core")
    if args.workers < 1 or args.workers > 64:
        raise CliError("--workers must be 1..64")
    host, port = args.host or s.web_host, (s.web_port + 1 if args.port is None else args.port)
    if args.workers > 1:
        one = [*(["--config", args.config] if args.config else []), "web", "--workers", "1",
               "--host", host, "--port", str(port), "--reuse-port"]
        return run_workers(one, args.workers)
    asyncio.run(run_worker(s, host, port, redis_url, prefix, reuse_port=args.reuse_port))
    return 0


def cmd_check_ami(args: argparse.Namespace) -> int:
    from callcenter.config import AmiSettings
    from callcenter.pbx.ami import AmiError, AmiLink

    s = _settings(args)
    several = len(s.pbxs) > 1

    async def check(a: AmiSettings) -> str | None:
        """One PBX: None when the link logs in and answers, else why not."""
        link = AmiLink(a.host, a.port, a.username, a.secret, events="off",
                       on_event=lambda h, t: None, action_timeout=a.action_timeout)
        where = f"PBX {a.name} " if several else ""
        try:
            await link.connect_once()
            answer = await link.action({"Action": "QueueSummary"}, idempotent=True)
            print(f"{where}AMI link to {a.host}:{a.port} OK; "
                  f"{sum(1 for h in answer if h.get('Event') == 'QueueSummary')} queues")
            return None
        except AmiError as exc:
            return f"{where}{exc}"
        finally:
            await link.stop()

    async def run() -> None:  # every PBX ([[pbx]]), each on its own line
        failed = [why for why in [await check(a) for a in s.pbxs] if why]
        if failed:
            raise CliError("; ".join(failed))

    asyncio.run(run())
    return 0


def cmd_check_asterisk(args: argparse.Namespace) -> int:
    from callcenter.telephony import check_asterisk

    checks = asyncio.run(check_asterisk(_settings(args)))
    for c in checks:
        print(c.line())
    return 0 if all(c.ok for c in checks) else 1


def cmd_prompts(args: argparse.Namespace) -> int:
    import tomllib
    from pathlib import Path

    from callcenter.orders.lifecycle import State
    from ivr.menus import DEFAULT_CONFIG
    from ivr.prompts import PromptError, build

    with open(args.ivr or DEFAULT_CONFIG, "rb") as f:
        raw = tomllib.load(f)
    try:
        built = build(raw, Path(args.out), states=[s.value for s in State], force=args.force)
    except PromptError as exc:
        raise CliError(str(exc)) from None
    print(f"{len(built.written)} prompts written under {args.out} (<lang>/<prompt>.wav, 8 kHz "
          f"mono 16-bit); {len(built.kept)} recorded files kept")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from callcenter.demo import run_demo

    s = _settings(args)
    asyncio.run(run_demo(s, host="127.0.0.1", port=args.port, seed=args.seed, speed=args.speed,
                         agents=args.agents, db=args.db, rate=args.rate,
                         agi_port=args.agi_port, pbxs=args.pbxs))
    return 0


def cmd_pbx_sim(args: argparse.Namespace) -> int:
    from callcenter.pbx.sim import main_from_args

    asyncio.run(main_from_args(args))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The reports page's figures for the period holding ``--day``: the call tables as
    JSON, or (``--xlsx`` / ``--csv``) the whole report as files for cron.  Both are
    :func:`agent_console.report_data.build_report`'s, as the page's are."""
    s = _settings(args)
    try:
        day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=s.tz) if args.day else (
            datetime.now(s.tz).replace(hour=0, minute=0, second=0, microsecond=0))
    except ValueError:
        raise CliError(f"--day {args.day!r} is not a date like 2026-11-23") from None
    if args.pbx is not None and args.pbx not in s.pbx_names:
        raise CliError(f"--pbx {args.pbx!r}: the PBXs are {', '.join(s.pbx_names)}")
    files = bool(args.xlsx or args.csv)
    url = args.db or s.database_url
    report = asyncio.run(_build_report(args, s, url, day, files))
    if files:
        return _report_files(args, report)
    if not report["calls"]["overall"]["offered"]:
        hint = ""
        if args.db is None and Path(DEMO_DB_FILE).exists():
            hint = f"; the demo's calls are in {DEMO_DB_FILE}: add --db {DEMO_DB}"
        print(f"callcenter: no calls on {day:%Y-%m-%d} in {_shown(url)}{hint}", file=sys.stderr)
        return 1
    report.pop("definitions")  # the page's help texts: the figures are what is asked for
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


async def _build_report(args: argparse.Namespace, s: Settings, url: str, day: datetime,
                        whole: bool) -> dict[str, Any]:
    """``build_report`` for the command's options on the database at ``url``: every
    section when ``whole`` (the files), else the call tables."""
    import time

    from agent_console.report_data import ReportConfig, build_report
    from callcenter.db import Store
    from callcenter.orders.store import OrderConfig

    parts: dict[str, Any] = {"names": {d.id: d.name for d in
                                       OrderConfig.load().directory.departments}
                             } if whole else {"sections": ("calls",)}
    store = Store(url)
    try:
        await store.open()
        return await build_report(store.engine, s, ReportConfig.from_settings(s),
                                  period=args.period, day=day.date(), now=time.time(),
                                  queue=args.queue, pbx=args.pbx, interval=args.interval,
                                  **parts)
    finally:
        await store.close()


def _report_files(args: argparse.Namespace, report: dict[str, Any]) -> int:
    """The reports page's content as files (for cron): XLSX with every table, or one CSV."""
    from agent_console.report_data import tables, to_csv, to_xlsx

    try:
        if args.xlsx:
            Path(args.xlsx).write_bytes(to_xlsx(report))
            print(f"wrote {args.xlsx}: {report['title']} {report['start'][:10]}")
        if args.csv:
            table, _, path = args.csv.partition("=")
            known = [tb.key for tb in tables(report)]
            if table not in known or not path:
                raise CliError(f"--csv TABLE=FILE, TABLE one of {', '.join(known)}")
            Path(path).write_bytes(to_csv(report, table))
            print(f"wrote {path}: {table}")
    except OSError as exc:
        raise CliError(f"cannot write the report: {exc.strerror}") from None
    return 0


def _shown(url: str) -> str:
    """A database URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':', 1)[0]}@{tail}"


def cmd_bench(args: argparse.Namespace) -> int:
    if args.web_workers:  # the scale-out bench: processes, PostgreSQL, Redis
        from callcenter import bench_scaleout

        return bench_scaleout.main(args)
    from callcenter.bench import main_from_args

    return main_from_args(args)


def cmd_recordings(args: argparse.Namespace) -> int:
    from recordings.cli import main_from_args

    return main_from_args(args, _settings(args))


def cmd_users(args: argparse.Namespace) -> int:
    from agent_console.users_cli import main_from_args

    return main_from_args(args)


def cmd_knowledge(args: argparse.Namespace) -> int:
    from callcenter.desk_cli import knowledge_main

    return knowledge_main(args, _settings(args))


def cmd_intake_keys(args: argparse.Namespace) -> int:
    from callcenter.desk_cli import intake_main

    return intake_main(args, _settings(args))


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callcenter", description="12345 hotline call center")
    p.add_argument("--config", help="TOML file read over config/callcenter.toml")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("replay", help="replay a recorded AMI trace and print the figures")
    r.add_argument("trace")
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.add_argument("--servicelevel", type=int, help="service level threshold in seconds")
    r.add_argument("--short-abandon", type=int, default=0,
                   help="report abandons shorter than this (s) separately (default 0)")
    r.add_argument("--queue-log", help="Asterisk's queue_log of the session (default: the "
                   "file queue_log beside the trace, if any); every gap is rebuilt from it")
    r.add_argument("--no-queue-log", action="store_true",
                   help="ignore any queue_log: estimate gaps from Asterisk's counters")
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="PBX simulator + service + web on the embedded default")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--seed", type=int, default=12345)
    d.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    d.add_argument("--agents", type=int, default=6,
                   help="simulated background operators (the demo logins op1-op8 come on top)")
    d.add_argument("--rate", type=float, default=None, help="calls per second (constant)")
    d.add_argument("--db", default=None, help="database URL (default var/demo.db)")
    d.add_argument("--agi-port", type=int, default=4573,
                   help="FastAGI IVR port the simulated callers go through (0 picks one)")
    d.add_argument("--pbxs", type=int, default=1,
                   help="simulated PBXs (each its own callers and operators; default 1)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="run the service against the PBX in the config")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--agi-host", default="127.0.0.1",
                   help="address the FastAGI IVR listens on (Asterisk's AGI(agi://...))")
    s.add_argument("--agi-port", type=int, default=4573, help="FastAGI port (default 4573)")
    s.set_defaults(func=cmd_serve)

    w = sub.add_parser("web", help="web workers: wallboards' websockets fed by the bus")
    w.add_argument("--host")
    w.add_argument("--port", type=int, help="default: [web] port + 1")
    w.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    w.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    w.set_defaults(func=cmd_web)

    c = sub.add_parser("check-ami", help="connect and log in once; print OK or why not")
    c.set_defaults(func=cmd_check_ami)
    sub.add_parser("check-asterisk", help="is the PBX ready: one line per check with its fix "
                   "(exit 0 when all pass)").set_defaults(func=cmd_check_asterisk)
    pr = sub.add_parser("prompts", help="build: speak ivr.toml's prompts (zh, en) as 8 kHz WAV")
    pr.add_argument("action", choices=["build"])
    pr.add_argument("--out", default="var/sounds", help="Asterisk's sounds dir (default %(default)s)")
    pr.add_argument("--ivr", help="ivr.toml to read (default config/ivr.toml)")
    pr.add_argument("--force", action="store_true", help="also replace recorded files")
    pr.set_defaults(func=cmd_prompts)

    rep = sub.add_parser("report", help="the reports page's figures from the database "
                                        "(JSON: its call tables; --xlsx/--csv: files)")
    rep.add_argument("--day", help="YYYY-MM-DD (default today)")
    rep.add_argument("--interval", choices=["15m", "hour", "day"], default=None,
                     help="rows of the table by interval (default: the period's, hours "
                          "of a day, days of a week or a month)")
    rep.add_argument("--period", choices=["day", "week", "month"], default="day",
                     help="the 日报, 周报 or 月报 holding --day")
    rep.add_argument("--queue", default=None, help="one queue only")
    rep.add_argument("--pbx", default=None,
                     help="one PBX's calls only (default: the whole centre; with several "
                          "[[pbx]] the call tables have a row per PBX)")
    rep.add_argument("--xlsx", metavar="FILE", help="write the whole report as XLSX (for cron)")
    rep.add_argument("--csv", metavar="TABLE=FILE", help="write one table as CSV (UTF-8, BOM)")
    rep.add_argument("--db", default=None,
                     help=f"database URL (default: the configuration's; the demo's is {DEMO_DB})")
    rep.set_defaults(func=cmd_report)

    from agent_console.users_cli import add_arguments as users_arguments

    us = sub.add_parser("users", help="accounts: add, passwd, disable, enable, set, list")
    users_arguments(us)
    us.set_defaults(func=cmd_users)

    from callcenter.desk_cli import add_knowledge_arguments

    kn = sub.add_parser("knowledge", help="knowledge base: import FILE (.csv/.md), stats")
    add_knowledge_arguments(kn)
    kn.set_defaults(func=cmd_knowledge)

    from callcenter.desk_cli import add_intake_arguments

    ik = sub.add_parser("intake-keys", help="API keys of the channels filing orders: "
                                            "create CHANNEL, list, revoke ID")
    add_intake_arguments(ik)
    ik.set_defaults(func=cmd_intake_keys)

    from recordings.cli import add_arguments as recordings_arguments

    rec = sub.add_parser("recordings", help="call recordings: retention report / removal")
    recordings_arguments(rec)
    rec.set_defaults(func=cmd_recordings)

    from callcenter.bench import add_arguments as bench_arguments

    b = sub.add_parser("bench", help="load the service: AMI events/s, screen-pop latency, memory")
    bench_arguments(b)
    b.set_defaults(func=cmd_bench)

    try:
        from callcenter.pbx.sim import add_arguments
    except ImportError:  # pragma: no cover - during development only
        add_arguments = None
    if add_arguments is not None:
        sim = sub.add_parser("pbx-sim", help="run the AMI-speaking PBX simulator alone")
        add_arguments(sim)
        sim.set_defaults(func=cmd_pbx_sim)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError) as exc:
        print(f"callcenter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
