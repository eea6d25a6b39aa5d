"""Reports from the database: the thin edge that loads records and hands them to the
pure report functions (:mod:`acd.reports`, :mod:`callcenter.orders.assessment`), and
writes the result as tables, CSV (UTF-8 with BOM, Chinese headers) and XLSX.

Used by the reports page (:mod:`agent_console.reports_api`) and by ``callcenter
report --xlsx`` (the same content for cron).  Only the columns the figures need are
read, with Core selects (a month of a large centre is two million calls).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from acd import reports as rp
from acd.metrics import Figures
from callcenter import report_days as days
from callcenter.config import ConfigError, Settings
from callcenter.db import CallRow
from callcenter.orders import assessment as asm
from callcenter.orders import facts
from callcenter.orders.channels import CHANNEL_NAMES, CHANNELS
from callcenter.orders.lifecycle import Step
from callcenter.orders.store import OrderEventRow, OrderRow

CALL_FIELDS = (CallRow.uniqueid, CallRow.queue, CallRow.joined_at, CallRow.hotline,
               CallRow.ivr_path, CallRow.outcome, CallRow.hold_time, CallRow.answered_at,
               CallRow.ended_at, CallRow.talk_time, CallRow.wrap_s, CallRow.agent,
               CallRow.estimated)


DEFAULT_CENTRE = "12345政务服务便民热线"


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """``[reports]`` in the config: the centre's name on printed reports, the shifts,
    the wallboard's colour bounds, hotspot keywords and the burst alert."""

    centre_name: str = DEFAULT_CENTRE
    shifts: tuple[rp.Shift, ...] = rp.DEFAULT_SHIFTS
    colours: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: dict(rp.DEFAULT_COLOURS))
    keywords: tuple[str, ...] = asm.DEFAULT_KEYWORDS
    burst_hours: float = 2.0
    burst_min_count: int = 5
    burst_factor: float = 3.0

    @classmethod
    def from_settings(cls, s: Settings) -> ReportConfig:
        raw = s.raw.get("reports", {})
        if not isinstance(raw, dict):
            raise ConfigError("[reports] must be a table")
        try:
            colours = rp.parse_colours(raw.get("colours"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        burst = raw.get("burst") or {}
        return cls(
            centre_name=str(raw.get("centre_name", DEFAULT_CENTRE)),
            shifts=rp.parse_shifts(raw["shifts"]) if raw.get("shifts") else rp.DEFAULT_SHIFTS,
            colours=colours,
            keywords=tuple(str(k) for k in raw.get("keywords", ())) or asm.DEFAULT_KEYWORDS,
            burst_hours=float(burst.get("hours", 2.0)),
            burst_min_count=int(burst.get("min_count", 5)),
            burst_factor=float(burst.get("factor", 3.0)),
        )


# --------------------------------------------------------------------------- loading

async def load_calls(engine: AsyncEngine, start: float, end: float) -> list[Any]:
    """Call records that joined in ``[start, end)``: rows with the figures' attributes."""
    async with engine.connect() as conn:
        res = await conn.execute(select(*CALL_FIELDS).where(
            CallRow.joined_at >= start, CallRow.joined_at < end))
        return list(res.all())


LEAD_IN = 7 * 86400.0
"""How long before the window the time-ordered read begins (an order is usually accepted
shortly before it is dispatched; earlier 受理 records are fetched by order)."""
TAIL = 92 * 86400.0
"""How long after the window the time-ordered read goes on (later steps of an old
window's orders are fetched with the window's cohort as a filter)."""


async def load_order_events(engine: AsyncEngine, start: float, end: float,
                            now: float | None = None) -> list[asm.Event]:
    """The audit records :func:`assessment.assess` folds, of the orders some department
    received in ``[start, end)``, up to ``now``: only the steps it reads.

    The audit trail is appended in time order, so the records are read as one range of
    ``at`` (``LEAD_IN`` before the window to ``TAIL`` after it, or ``now``); the few the
    range misses are fetched by order: 受理 records of the window's orders accepted
    before it, and, for an old window, its orders' later steps."""
    now = end + TAIL if now is None else now
    first, last = start - LEAD_IN, min(now, end + TAIL)
    cols, E = facts.event_columns(), facts.EVENTS.c
    folded = E.step.in_(facts.FOLDED_STEPS)
    received = E.step.in_([str(s) for s in asm.RECEIVE_STEPS])
    async with engine.connect() as conn:
        rows = facts.events(await conn.execute(select(*cols).where(
            E.at >= first, E.at < last, folded)))
        cohort = {e.order_id for e in rows
                  if e.step in asm.RECEIVE_STEPS and start <= e.at < end}
        rows = [e for e in rows if e.order_id in cohort]
        accepted = {e.order_id for e in rows if e.step == Step.ACCEPT}
        missing = sorted(int(o) for o in cohort - accepted)
        for i in range(0, len(missing), 500):
            rows += facts.events(await conn.execute(select(*cols).where(
                E.order_id.in_(missing[i:i + 500]), E.at < first,
                folded)))
        if last < now:
            in_window = select(E.order_id).where(
                received, E.at >= start, E.at < end).correlate(None)
            rows += facts.events(await conn.execute(select(*cols).where(
                E.at >= last, folded, E.order_id.in_(in_window))))
    return rows


async def load_new_orders(engine: AsyncEngine, start: float, end: float, tz: Any
                          ) -> list[asm.NewOrder]:
    """Orders accepted in ``[start, end)`` (their 受理 records) for the hotspots."""
    d = OrderEventRow.data
    async with engine.connect() as conn:
        res = await conn.execute(select(
            OrderEventRow.at, d["category"].as_string(), d["location"].as_string(),
            d["caller_address"].as_string(), d["text"].as_string()).where(
            OrderEventRow.step == str(Step.ACCEPT), OrderEventRow.at >= start,
            OrderEventRow.at < end))
        return [asm.NewOrder(datetime.fromtimestamp(at, tz), category or "",
                             asm.street_of(location or address or ""), text or "")
                for at, category, location, address, text in res]


# --------------------------------------------------------------------------- the report

PERIOD_NAMES = {"day": "日报", "week": "周报", "month": "月报"}


async def build_report(engine: AsyncEngine, settings: Settings, cfg: ReportConfig, *,
                       period: str, day: date, now: float, queue: str | None = None,
                       pbx: str | None = None, interval: str | None = None,
                       department: str | None = None, names: Mapping[str, str] | None = None,
                       sections: Sequence[str] = ("calls", "agents", "departments", "hotspots"),
                       summaries: bool = True) -> dict[str, Any]:
    """The whole report for the ``period`` (day / week / month) holding ``day``, as JSON.

    ``department`` limits the department tables to that department (its own view);
    ``queue`` limits the call tables to one queue, ``pbx`` to one PBX's calls (the whole
    centre by default); with several PBXs configured the call tables gain one row per
    PBX (``calls.pbxs``), which add up to the centre's.  ``now`` ends a window still
    running.  ``interval``: the rows of the call table by interval (``15m``, ``hour``,
    ``day`` ...; default the period's, :func:`acd.reports.interval_for`).
    ``summaries``: read closed days from ``report_days`` and orders' parts from
    ``order_facts`` (:mod:`callcenter.report_days`, :mod:`callcenter.orders.facts`);
    ``False`` computes everything from the raw records - the same figures, slower.
    """
    tz = settings.tz
    start, end = rp.window(day, period, tz)
    interval = interval or rp.interval_for(period)
    lo, hi = start.timestamp(), end.timestamp()
    out: dict[str, Any] = {
        "centre": cfg.centre_name, "period": period, "title": PERIOD_NAMES[period],
        "day": day.isoformat(), "start": start.isoformat(), "end": end.isoformat(),
        "last_day": (end - timedelta(days=1)).date().isoformat(),
        "queue": queue, "pbx": pbx, "department": department,
        "interval": interval,
        "pbxs_known": list(settings.pbx_names) if len(settings.pbxs) > 1 else [],
        "definitions": {k: {"zh": d.zh, "en": d.en, "rule": d.rule, "unit": d.unit}
                        for k, d in rp.DEFINITIONS.items()}
        | {k: {"zh": z, "en": e, "rule": r, "unit": "" if k in ("received", "overdue",
                                                                 "supervised") else "%"}
           for k, (z, e, r) in asm.RATE_DEFINITIONS.items()},
    }
    jobs = {}  # the sections read the database at the same time (one connection each)
    if "calls" in sections:
        jobs["calls"] = _calls_section(engine, settings, start, end, interval, queue, pbx,
                                       summaries)
    if "agents" in sections:
        jobs["agents"] = _agents_section(engine, cfg, tz, start, end, now, period, day,
                                         summaries)
    if "departments" in sections:
        jobs["departments"] = _departments_section(engine, lo, hi, now, department,
                                                   names or {}, summaries)
    if "hotspots" in sections:
        jobs["hotspots"] = _hotspots_section(engine, cfg, tz, hi, now)
    for got in await asyncio.gather(*jobs.values()):
        out.update(got)
    return out


async def _calls_section(engine: AsyncEngine, settings: Settings, start: datetime,
                         end: datetime, interval: str, queue: str | None, pbx: str | None,
                         summaries: bool) -> dict[str, Any]:
    atoms = await days.call_atoms(engine, settings, start, end, queue, pbx=pbx,
                                  summaries=summaries)
    rep = rp.report_from_atoms(atoms, start, end, interval)
    known = settings.pbx_names
    several = len(known) > 1
    return {"calls": {
        "overall": _fig(rep.overall),
        "intervals": [{"start": k} | _fig(f) for k, f in rep.intervals.items()],
        "queues": [{"queue": k, "title": settings.queue_titles.get(k, k),
                    "title_en": settings.queue_titles_en.get(k, "")} | _fig(f)
                   for k, f in rep.queues.items()],
        "hotlines": [{"hotline": k or "—"} | _fig(f) for k, f in rep.hotlines.items()],
        "entries": [{"entry": k} | _fig(f) for k, f in rep.entries.items()],
        # every configured PBX, in the config's order, one with no calls included
        "pbxs": [{"pbx": p.name} | _fig(rep.pbxs.get(p.name, Figures()))
                 for p in settings.pbxs if pbx is None or p.name == pbx]
        + [{"pbx": k} | _fig(f) for k, f in rep.pbxs.items()  # a PBX since removed
           if k not in known] if several else [],
        "hours": rep.hours, "abandon_times": rep.abandon_times,
    }}


async def _agents_section(engine: AsyncEngine, cfg: ReportConfig, tz: Any, start: datetime,
                          end: datetime, now: float, period: str, day: date, summaries: bool
                          ) -> dict[str, Any]:
    agents = await days.agent_figures(engine, start, end, now, summaries=summaries)
    out: dict[str, Any] = {"agents": [a.as_dict() for a in agents.values()]}
    if period == "day":
        lo, until = start.timestamp(), min(end.timestamp(), now)
        states = await days.load_states(engine, lo, until)
        shifts = []
        for s in cfg.shifts:  # the shifts that begin on the day
            a, b = s.span(day, tz)
            if a.timestamp() >= now:
                continue
            taken = await days.load_taken(engine, a.timestamp(), b.timestamp())
            got = rp.agent_report(states, taken, a.timestamp(), min(b.timestamp(), now))
            shifts.extend({"shift": s.name} | f.as_dict() for f in got.values())
        out["shifts"] = shifts
    return out


async def _departments_section(engine: AsyncEngine, lo: float, hi: float, now: float,
                               department: str | None, names: Mapping[str, str],
                               summaries: bool) -> dict[str, Any]:
    if summaries:
        await facts.ensure(engine)
        async with engine.connect() as conn:
            parts = await facts.window_parts(conn, lo, hi, now)
    else:
        parts = await _raw_parts(engine, lo, hi, now)
    # summed in a thread: the live screens' loop keeps running meanwhile
    overall, by_channel = await asyncio.to_thread(facts.split, parts)
    rows = asm.period_rows(overall, names)
    split = [{"channel": ch, "channel_name": CHANNEL_NAMES.get(ch, ch)} | r
             for ch in CHANNELS if ch in by_channel
             for r in asm.period_rows(by_channel[ch], names)]
    if department is not None:
        rows = [r for r in rows if r["department"] == department]
        split = [r for r in split if r["department"] == department]
    return {"departments": rows, "department_channels": split}


async def _raw_parts(engine: AsyncEngine, lo: float, hi: float, now: float
                     ) -> list[tuple[str, asm.DepartmentFigures]]:
    """(channel, part) of each department for each order, folded from the raw records."""
    orders = asm.by_order(await load_order_events(engine, lo, hi, now))
    ids = sorted(int(o) for o in orders)
    channel: dict[int, str] = {}
    async with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            channel.update((await conn.execute(select(OrderRow.id, OrderRow.channel).where(
                OrderRow.id.in_(ids[i:i + 500])))).all())

    def fold() -> list[tuple[str, asm.DepartmentFigures]]:
        return [(channel.get(int(oid)) or "phone", p) for oid, recs in orders.items()
                for p in asm.fold_order(recs, lo, hi).values()]
    return await asyncio.to_thread(fold)


async def _hotspots_section(engine: AsyncEngine, cfg: ReportConfig, tz: Any, hi: float,
                            now: float) -> dict[str, Any]:
    week = rp.period_start(datetime.fromtimestamp(min(hi, now) - 1, tz), "week")
    new = await load_new_orders(engine, (week - timedelta(days=7)).timestamp(),
                                (week + timedelta(days=7)).timestamp(), tz)
    year_ago = week - timedelta(days=364)  # the same ISO week is within a week of this
    new += await load_new_orders(engine, (year_ago - timedelta(days=8)).timestamp(),
                                 (year_ago + timedelta(days=15)).timestamp(), tz)
    return {"hotspots": asm.hotspots(new, week, cfg.keywords) | {"week": week.date().isoformat()}}


def _fig(f: Figures) -> dict[str, Any]:
    d = f.as_dict()
    return {k: d[k] for k in rp.CALL_COLUMNS} | {"completed": f.completed,
                                                 "answered_within_sl": f.answered_within_sl}


# --------------------------------------------------------------------------- tables and files

def _label(defs: Mapping[str, Any], key: str) -> str:
    d = defs.get(key)
    if d is None:
        return key
    return d["zh"] + ("（%）" if d["unit"] == "%" else "（秒）" if d["unit"] == "s" else "")


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a report: ``columns`` are the figure keys (for their definitions),
    ``headers`` the Chinese column names of files and the page."""

    key: str
    title: str
    columns: list[str]
    headers: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "columns": self.columns,
                "headers": self.headers, "rows": self.rows}


LABELS = {"scope": "范围", "start": "时段起", "queue": "队列", "title": "名称",
          "hotline": "热线号码", "entry": "进线方式", "hour": "小时", "wait": "等待",
          "agent": "话务员", "shift": "班次", "rank": "排名", "name": "名称",
          "department": "承办单位", "channel": "渠道", "pbx": "交换机（PBX）", "this_week": "本周", "last_week": "上周",
          "last_year": "去年同周", "change": "环比变化"}
ENTRY_NAMES = {"direct": "直拨", "menu": "IVR 菜单"}
DEPARTMENT_COLUMNS = ["received", "response_rate", "on_time_rate", "resolution_rate",
                      "satisfaction_rate", "return_rate", "redispatch_rate", "reopen_rate",
                      "overdue", "supervised"]


def tables(report: Mapping[str, Any]) -> list[Table]:
    """Every table of a report, in page order (the files have the same ones)."""
    defs = report["definitions"]
    out: list[Table] = []
    labels = dict(LABELS)

    def add(key: str, title: str, first: list[str], cols: Sequence[str],
            rows: list[list[Any]]) -> None:
        out.append(Table(key, title, first + list(cols),
                         [labels.get(f, f) for f in first] + [labels.get(c) or _label(defs, c) for c in cols],
                         rows))

    calls = report.get("calls")
    if calls:
        cols = rp.CALL_COLUMNS
        add("overall", "总体", ["scope"], cols, [["全部"] + [calls["overall"][c] for c in cols]])
        add("intervals", "分时段", ["start"], cols,
            [[r["start"][:16].replace("T", " ")] + [r[c] for c in cols]
             for r in calls["intervals"]])
        add("queues", "按队列", ["queue", "title"], cols,
            [[r["queue"], r["title"]] + [r[c] for c in cols] for r in calls["queues"]])
        add("hotlines", "按热线号码", ["hotline"], cols,
            [[r["hotline"]] + [r[c] for c in cols] for r in calls["hotlines"]])
        add("entries", "按进线方式", ["entry"], cols,
            [[ENTRY_NAMES.get(r["entry"], r["entry"])] + [r[c] for c in cols]
             for r in calls["entries"]])
        if calls.get("pbxs"):
            add("pbxs", "按交换机", ["pbx"], cols,
                [[r["pbx"]] + [r[c] for c in cols] for r in calls["pbxs"]])
        add("hours", "24小时话务分布", ["hour"], ["offered", "answered", "abandoned"],
            [[h["hour"], h["offered"], h["answered"], h["abandoned"]] for h in calls["hours"]])
        add("abandon_times", "放弃等待时长分布", ["wait"], ["abandoned"],
            [[a["wait"], a["abandoned"]] for a in calls["abandon_times"]])
    if "agents" in report:
        cols = rp.AGENT_COLUMNS
        reasons = sorted({r for a in report["agents"] for r in a["paused_by_reason"]}
                         | {r for a in report.get("shifts", []) for r in a["paused_by_reason"]})

        def agent_row(a: Mapping[str, Any]) -> list[Any]:
            return ([a[c] if a[c] is not None else "—" for c in cols]
                    + [a["paused_by_reason"].get(r, 0) for r in reasons])

        extra = [f"paused:{r}" for r in reasons]
        labels.update({f"paused:{r}": f"示忙·{r}（秒）" for r in reasons})
        add("agents", "话务员", ["agent"], [*cols, *extra],
            [[a["agent"]] + agent_row(a) for a in report["agents"]])
        if "shifts" in report:
            add("shifts", "话务员·按班次", ["shift", "agent"], [*cols, *extra],
                [[a["shift"], a["agent"]] + agent_row(a) for a in report["shifts"]])
    if "departments" in report:
        add("departments", "承办单位考核", ["rank", "department"], DEPARTMENT_COLUMNS,
            [[d["rank"] if d["rank"] is not None else "—", d["name"]]
             + [d[c] if d[c] is not None else "—" for c in DEPARTMENT_COLUMNS]
             for d in report["departments"]])
        add("department_channels", "承办单位考核·按渠道", ["channel", "rank", "department"],
            DEPARTMENT_COLUMNS,
            [[d["channel_name"], d["rank"] if d["rank"] is not None else "—", d["name"]]
             + [d[c] if d[c] is not None else "—" for c in DEPARTMENT_COLUMNS]
             for d in report.get("department_channels", [])])
    if "hotspots" in report:
        for key, title in (("categories", "热点·诉求分类"), ("streets", "热点·街道"),
                           ("keywords", "热点·关键词")):
            out.append(Table(f"hot_{key}", title,
                             ["name", "this_week", "last_week", "last_year", "change"],
                             ["名称", "本周", "上周", "去年同周", "环比变化"],
                             [[h["name"], h["this_week"], h["last_week"], h["last_year"],
                               h["change"]] for h in report["hotspots"][key]]))
    return out


def to_csv(report: Mapping[str, Any], table: str) -> bytes:
    """One table as CSV: UTF-8 with BOM (Excel reads Chinese), Chinese headers."""
    for tb in tables(report):
        if tb.key == table:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\r\n")
            w.writerow(tb.headers)
            w.writerows(tb.rows)
            return ("\ufeff" + buf.getvalue()).encode("utf-8")
    raise KeyError(table)


def to_xlsx(report: Mapping[str, Any]) -> bytes:
    """The whole report as an XLSX workbook: a cover sheet, then one sheet per table."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    cover = wb.active
    cover.title = "说明"
    cover.append([report["centre"]])
    cover.append([f"{report['title']}  {report['start'][:10]} — {report['last_day']}"])
    if report.get("pbx"):  # the call tables are one PBX's, not the whole centre's
        cover.append([f"交换机（PBX）：{report['pbx']}"])
    if report.get("queue"):
        cover.append([f"队列：{report['queue']}"])
    cover.append([])
    cover.append(["指标", "定义"])
    for d in report["definitions"].values():
        cover.append([d["zh"], d["rule"]])
    cover["A1"].font = Font(bold=True, size=14)
    for tb in tables(report):
        ws = wb.create_sheet(tb.title[:31])
        ws.append(tb.headers)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in tb.rows:
            ws.append(row)
        ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
