"""The reports page and its API: call figures, operators, departments' 三率 and hotspots
for a day, a week or a month, on screen (ECharts), as CSV / XLSX and printable.

Routes (``setup_reports``)::

    GET /reports                         the page (supervisors, admins; department handlers)
    GET /reports/print                   the printable 日报 / 月报
    GET /api/reports/summary             the report as JSON
    GET /api/reports/export.csv?table=   one table, UTF-8 with BOM, Chinese headers
    GET /api/reports/export.xlsx         every table, one sheet each
    GET /api/reports/bursts              streets with a sudden rise of new orders

Query: ``period`` day | week | month, ``day`` YYYY-MM-DD (default today), ``queue``,
``pbx`` (one PBX's calls; the whole centre by default) and ``department`` (optional).  A department handler always gets its own
department's figures and nothing else (its own view of its 三率).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Any

import structlog
from aiohttp import web

from agent_console.alerts import WARNING, Alert
from agent_console.http import ApiError
from agent_console.models import Role
from agent_console.orders_api import WORK_ORDERS
from agent_console.report_data import (
    PERIOD_NAMES,
    ReportConfig,
    build_report,
    load_new_orders,
    tables,
    to_csv,
    to_xlsx,
)
from agent_console.session import CONSOLE, need_session, page
from callcenter.orders import assessment as asm
from callcenter.runtime import periodic

log = structlog.get_logger(__name__)
REPORT_CONFIG = web.AppKey("report_config", ReportConfig)
READERS = (Role.SUPERVISOR, Role.ADMIN, Role.HANDLER)
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def setup_reports(app: web.Application) -> None:
    """Mount the reports routes (called once from make_app, after ``setup_orders``)."""
    c = app[CONSOLE]
    app[REPORT_CONFIG] = ReportConfig.from_settings(c.service.settings)
    r = app.router
    r.add_get("/reports", page("reports.html", lambda u: u.role in READERS))
    r.add_get("/reports/print", page("report-print.html", lambda u: u.role in READERS))
    r.add_get("/api/reports/summary", api_summary)
    r.add_get("/api/reports/export.csv", api_csv)
    r.add_get("/api/reports/export.xlsx", api_xlsx)
    r.add_get("/api/reports/bursts", api_bursts)
    app.cleanup_ctx.append(_bursts_ctx)


BURST_EVERY = web.AppKey("burst_every", float)


async def _bursts_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every minute: streets with a sudden rise become wallboard alerts (hotspot_burst)."""
    c = app[CONSOLE]

    async def turn() -> None:
        c.extra_alerts = [burst_alert(b) for b in await current_bursts(app)]

    async with periodic("hotspot-bursts", app.get(BURST_EVERY, 60.0), turn,
                        failed="hotspot bursts failed"):
        yield


def burst_alert(b: asm.Burst) -> Alert:
    return Alert("hotspot_burst", b.street, WARNING, b.since.timestamp(),
                 {"count": b.count, "usual": round(b.usual, 2)})


async def _query(request: web.Request) -> dict[str, Any]:
    """The checked query, and what this account may see."""
    session = await need_session(request, *READERS)
    user = session.user
    c = request.app[CONSOLE]
    wo = request.app[WORK_ORDERS]
    q = request.query
    period = q.get("period", "day")
    if period not in PERIOD_NAMES:
        raise ApiError(400, "'period' must be day, week or month")
    today = datetime.fromtimestamp(c.service.clock(), c.service.settings.tz).date()
    text = q.get("day", "") or today.isoformat()
    if not DAY.match(text):
        raise ApiError(400, "'day' must be a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "'day' must be a date YYYY-MM-DD") from None
    if not 2000 <= day.year <= 2100:
        raise ApiError(400, "'day' is out of range")
    queue = q.get("queue", "") or None
    if queue is not None and queue not in c.service.settings.queues:
        raise ApiError(400, "unknown queue")
    pbx = q.get("pbx", "") or None
    if pbx is not None and pbx not in c.service.settings.pbx_names:
        raise ApiError(400, "unknown pbx")
    department = q.get("department", "") or None
    if department is not None and not wo.config.knows(department):
        raise ApiError(400, "unknown department")
    sections: tuple[str, ...] = ("calls", "agents", "departments", "hotspots")
    if user.role is Role.HANDLER:
        own = await wo.department_of(user.username)
        if not own:
            raise ApiError(403, "this handler account is not assigned to a department")
        department, queue, pbx, sections = own, None, None, ("departments",)
    names = {d.id: d.name for d in wo.config.directory.departments}
    return {"period": period, "day": day, "queue": queue, "pbx": pbx, "department": department,
            "sections": sections, "names": names}


async def _report(request: web.Request) -> dict[str, Any]:
    args = await _query(request)
    c = request.app[CONSOLE]
    rep = await build_report(c.service.store.engine, c.service.settings,
                             request.app[REPORT_CONFIG], now=c.service.clock(), **args)
    rep["queues_known"] = c.config.queue_list()
    rep["departments_known"] = [{"id": k, "name": v} for k, v in args["names"].items()]
    rep["tables"] = [tb.as_dict() for tb in tables(rep)]
    return rep


async def api_summary(request: web.Request) -> web.Response:
    return web.json_response(await _report(request), headers={"Cache-Control": "no-store"})


def _filename(rep: dict[str, Any], ext: str) -> str:
    return f"report-{rep['period']}-{rep['day']}.{ext}"


async def api_csv(request: web.Request) -> web.Response:
    rep = await _report(request)
    table = request.query.get("table", "")
    keys = [t["key"] for t in rep["tables"]]
    if table not in keys:
        raise ApiError(400, f"'table' must be one of {', '.join(keys)}")
    return web.Response(body=to_csv(rep, table), headers={
        "Content-Type": "text/csv; charset=utf-8", "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{_filename(rep, table + ".csv")}"'})


async def api_xlsx(request: web.Request) -> web.Response:
    rep = await _report(request)
    return web.Response(body=to_xlsx(rep), headers={
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Cache-Control": "no-store",
        "Content-Disposition": f'attachment; filename="{_filename(rep, "xlsx")}"'})


async def api_bursts(request: web.Request) -> web.Response:
    await need_session(request, Role.SUPERVISOR, Role.ADMIN)
    return web.json_response({"bursts": [b.as_dict() for b in await current_bursts(request.app)]})


async def current_bursts(app: web.Application) -> list[asm.Burst]:
    """Streets with a sudden rise of new orders now (see :func:`assessment.bursts`)."""
    c = app[CONSOLE]
    cfg = app[REPORT_CONFIG]
    tz = c.service.settings.tz
    now = datetime.fromtimestamp(c.service.clock(), tz)
    orders = await load_new_orders(c.service.store.engine, now.timestamp() - 8 * 86400,
                                   now.timestamp() + 1, tz)
    return asm.bursts(orders, now, hours=cfg.burst_hours, min_count=cfg.burst_min_count,
                      factor=cfg.burst_factor)
