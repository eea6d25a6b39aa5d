"""Wiring the telephony edges to a running service: the FastAGI IVR, the dialer
(call-backs, return visits, surveys) and the call recorder.

``callcenter serve`` and ``callcenter demo`` both call :func:`start_telephony`
after building the web app (the work orders and the recordings index are the
app's).  Everything here is IO glue; the decisions are in ``ivr/`` and ``acd/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from callcenter.service import Service
from ivr.agi_gate import start_agi_server
from ivr.dialer import Dialer, OutboundSettings
from ivr.fastagi import AgiPbxs, AgiThread, AgiTokens, HotlineAgi, parse_allow
from recordings.monitor import CallRecorder

log = structlog.get_logger(__name__)


class TelephonyError(Exception):
    """An edge could not start; the message says why in one line."""


@dataclass(slots=True)
class Telephony:
    agi: HotlineAgi
    agi_server: AgiThread | None  # the FastAGI edge on its own thread and loop
    agi_port: int
    dialer: Dialer | None
    recorder: CallRecorder | None

    async def stop(self) -> None:
        if self.dialer is not None:
            await self.dialer.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.agi_server is not None:
            await self.agi_server.stop()


def expected_wait(service: Service) -> Callable[[], dict[str, float]]:
    """Per queue, the longest current wait (what the IVR's call-back offer looks at)."""

    def waits() -> dict[str, float]:
        now = service.clock()
        return {q: service.centre.longest_wait(q, now) for q in service.centre.queues()}

    return waits


def order_status(work_orders: Any) -> Callable[[str], Any]:
    """Self-service: the state of the order keyed as digits (YYYYMMDDNNNNNN), None if unknown."""

    async def lookup(keyed: str) -> str | None:
        from sqlalchemy import select

        from callcenter.orders.store import OrderRow

        digits = keyed.strip()
        number = f"{digits[:8]}-{digits[8:]}" if len(digits) == 14 and digits.isdigit() \
            else digits
        async with work_orders.sessions() as s:
            row = await s.scalar(select(OrderRow).where(OrderRow.number == number))
        return None if row is None else str(row.status)

    return lookup


def fastagi_settings(raw: dict[str, Any]) -> tuple[str, list[str]]:
    """``[fastagi]`` of callcenter.toml: the dialplan's shared ``secret`` (env
    ``HOTLINE_AGI_SECRET`` wins) and the PBX addresses ``allow``-ed to connect."""
    import os

    f = raw.get("fastagi", {}) if isinstance(raw.get("fastagi"), dict) else {}
    secret = os.environ.get("HOTLINE_AGI_SECRET") or str(f.get("secret", ""))
    allow = [str(a) for a in f.get("allow", ["127.0.0.1", "::1"])]
    return secret, allow


def agi_pbxs(settings: Any) -> AgiPbxs:
    """Where each PBX's FastAGI sessions come from: its ``[[pbx]] agi`` addresses, else
    its ``host`` when that is an IP address (a host name is not resolved: list the
    addresses, or let the dialplan set ``HOTLINE_PBX``)."""
    import ipaddress

    addresses = {}
    for p in settings.pbxs:
        entries = list(p.agi)
        if not entries:
            try:
                entries = [str(ipaddress.ip_address(p.host))]
            except ValueError:
                entries = []
        addresses[p.name] = parse_allow(entries)
    return AgiPbxs(home=settings.ami.name, addresses=addresses)


def audit_refusal(service: Service, console: Any = None) -> Callable[[str, Any], Any]:
    """A FastAGI refusal as an audit row (``fastagi_refused``; supervisors read them at
    ``GET /api/fastagi/refusals``), then on the wallboard (``console.fastagi_refused``:
    a ``fastagi_refused`` alert per address)."""

    async def audit(why: str, details: Any) -> None:
        d = {k: str(v)[:64] for k, v in dict(details).items()}
        at = service.clock()
        try:
            await service.store.audit(at=at, actor="fastagi", role="system",
                                      action="fastagi_refused",
                                      target=d.get("peer", "") or d.get("key", ""),
                                      reason=why[:200], data=d)
        finally:  # shown to supervisors even when the audit row could not be written
            if console is not None:
                console.fastagi_refused(why, d, at)

    return audit


async def start_telephony(service: Service, app: web.Application, *,
                          agi_host: str = "127.0.0.1", agi_port: int | None = 4573,
                          outbound: OutboundSettings | None = None,
                          record_calls: bool = True, agi_secret: str | None = None,
                          agi_allow: list[str] | None = None) -> Telephony:
    """Start the FastAGI server (``agi_port`` None: none), the dialer and the recorder.

    The FastAGI server runs on a thread of its own with its own event loop
    (:class:`ivr.fastagi.AgiThread`); its scripts reach the service, the dialer and
    the audit log only through this loop (:func:`ivr.fastagi.on_loop`).

    Port 0 picks a free port; ``outbound.agi_url`` is then pointed at it.  The
    FastAGI edge takes its secret and allowed PBX addresses from ``[fastagi]``
    unless given.
    """
    from agent_console.orders_api import WORK_ORDERS
    from agent_console.session import CONSOLE, RECORDINGS
    from ivr.menus import load_config as load_ivr_config

    work_orders = app[WORK_ORDERS]
    outbound = outbound or OutboundSettings.from_raw(service.settings.raw)
    secret, allow = fastagi_settings(service.settings.raw)
    tokens = AgiTokens(secret=secret if agi_secret is None else agi_secret,
                       ttl_s=outbound.visit_result_timeout_s + outbound.originate_timeout_s)
    on_refused = audit_refusal(service, app[CONSOLE])
    dialer: Dialer | None = None
    if outbound.enabled:
        dialer = Dialer(engine=service.store.engine, send=service.link.action,
                        orders=work_orders, centre=service.centre, settings=outbound,
                        clock=service.clock, tz=service.settings.tz, tokens=tokens,
                        send_to=(lambda p: service.link_for(p).action)
                        if len(service.edges) > 1 else None)
    agi = HotlineAgi(
        load_ivr_config(), expected_wait=expected_wait(service),
        lookup_order=order_status(work_orders),
        on_callback=dialer.callback_requested if dialer else None,
        on_survey=dialer.survey_answered if dialer else None,
        on_answer=dialer.visit_answered if dialer else work_orders.record_citizen_keys,
        on_no_answer=dialer.visit_no_answer if dialer else None,
        asks_department=dialer.asks_department if dialer else None,
        tokens=tokens, on_refused=on_refused, pbxs=agi_pbxs(service.settings))
    server: AgiThread | None = None
    bound = 0
    if agi_port is not None:
        try:
            server = await start_agi_server(agi, agi_host, agi_port,
                                            allow=agi_allow or allow, on_refused=on_refused)
        except OSError as exc:
            raise TelephonyError(f"cannot listen for FastAGI on {agi_host}:{agi_port}: "
                                 f"{exc.strerror}") from None
        bound = server.port
        if agi_port == 0:
            outbound.agi_url = f"agi://{agi_host}:{bound}"
    recorder: CallRecorder | None = None
    if record_calls:
        several = len(service.edges) > 1
        recorder = CallRecorder(
            app[RECORDINGS], service.link.action, home=service.home.name,
            send_to=(lambda p: service.link_for(p).action) if several else None)
        service.subscribers.append(recorder.changed)
        service.listen("MixMonitorStop",
                       lambda h, at: recorder.on_ami_event(h, at, service.event_pbx))
    if dialer is not None:
        service.subscribers.append(dialer.changed)
        service.listen("OriginateResponse", dialer.on_ami_event)
        await dialer.start()
    return Telephony(agi, server, bound, dialer, recorder)


# --------------------------------------------------------------------------- check-asterisk

DEFAULT_SOUNDS = "/usr/share/asterisk/sounds"  # Debian's astdatadir/sounds


def prompt_settings(raw: dict[str, Any]) -> tuple[str, bool]:
    """``[prompts]``: ``sounds`` (where Asterisk reads them, as this host sees it) and
    whether to ``check`` that directory (false when Asterisk runs on another host)."""
    p = raw.get("prompts", {}) if isinstance(raw.get("prompts"), dict) else {}
    return str(p.get("sounds", DEFAULT_SOUNDS)), bool(p.get("check", True))


def expected_of(settings: Any, *, agi: tuple[str, int] | None = None) -> Any:
    """What ``check-asterisk`` asks of the configured PBX, from the configs."""
    import tomllib
    from pathlib import Path

    from agent_console.session import transfer_departments
    from callcenter.orders.lifecycle import State
    from callcenter.pbx.check import Expected, service_extensions
    from ivr.menus import DEFAULT_CONFIG
    from ivr.prompts import present, prompt_names

    raw = settings.raw
    queues = {q: (c.servicelevel, c.wrapuptime) for q, c in settings.queues.items()}
    with open(DEFAULT_CONFIG, "rb") as f:
        names = prompt_names(tomllib.load(f), [s.value for s in State])
    sounds, check_prompts = prompt_settings(raw)
    if agi is None:
        url = OutboundSettings.from_raw(raw).agi_url.removeprefix("agi://")
        host, _, port = url.partition("/")[0].partition(":")
        agi = (host or "127.0.0.1", int(port or 4573))
    return Expected(
        username=settings.ami.username, queues=queues,
        extensions=service_extensions(queues, [d["number"] for d in transfer_departments()]),
        prompts_missing=present(names, Path(sounds)) if check_prompts else None,
        prompts_dir=sounds, agi=agi)


async def check_asterisk(settings: Any, link: Any = None, *,
                         agi: tuple[str, int] | None = None) -> list[Any]:
    """Run every check (logging in once when ``link`` is None)."""
    from callcenter.pbx.ami import AmiError, AmiLink
    from callcenter.pbx.check import run_checks

    exp = expected_of(settings, agi=agi)
    if link is not None:
        return await run_checks(link, exp)
    a = settings.ami
    own = AmiLink(a.host, a.port, a.username, a.secret, events="off",
                  on_event=lambda h, t: None, action_timeout=a.action_timeout)
    try:
        await own.connect_once()
    except AmiError as exc:
        await own.stop()
        return await run_checks(None, exp, login_error=str(exc))
    try:
        return await run_checks(own, exp)
    finally:
        await own.stop()


async def startup_checks(service: Service, telephony: Telephony, *,
                         wait_s: float = 30.0) -> None:
    """``callcenter serve``: once the link is up, the same checks; each failure logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not service.link.up and loop.time() < deadline:
        await asyncio.sleep(0.5)
    if not service.link.up:
        log.warning("asterisk_checks_skipped", why="the AMI link is not up")
        return
    try:
        checks = await check_asterisk(service.settings, service.link)
    except Exception:
        log.exception("asterisk_checks_failed")
        return
    failed = [c for c in checks if not c.ok]
    for c in failed:
        log.warning("asterisk_check_failed", check=c.name, detail=c.detail, fix=c.fix)
    log.info("asterisk_checks", passed=len(checks) - len(failed), failed=len(failed))
