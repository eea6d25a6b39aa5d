"""Reports from the database: the thin edge that loads records and hands them to the
pure report functions (:mod:`acd.reports`, :mod:`callcenter.orders.assessment`), and
writes the result as tables, CSV (UTF-8 with BOM, Chinese headers) and XLSX.

Used by the reports page (:mod:`agent_console.reports_api`) and by ``callcenter
report --xlsx`` (the same content for cron).  Only the columns the figures need are
read, with Core selects (a month of a large centre is two million calls).
"""

from __future__ import annotations

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
from callcenter.config import ConfigError, Settings
from callcenter.db import AgentStateRow, CallRow
from callcenter.orders import assessment as asm
from callcenter.orders.lifecycle import Step
from callcenter.orders.store import OrderEventRow

CALL_FIELDS = (CallRow.uniqueid, CallRow.queue, CallRow.joined_at, CallRow.hotline,
               CallRow.ivr_path, CallRow.outcome, CallRow.hold_time, CallRow.answered_at,
               CallRow.ended_at, CallRow.talk_time, CallRow.wrap_s, CallRow.agent,
               CallRow.estimated)


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """``[reports]`` in the config: the centre's name on printed reports, the shifts,
    the wallboard's colour bounds, hotspot keywords and the burst alert."""

    centre_name: str = "12345政务服务便民热线"
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
        colours = dict(rp.DEFAULT_COLOURS)
        for key, bounds in (raw.get("colours") or {}).items():
            if isinstance(bounds, dict):
                colours[key] = {k: float(v) for k, v in bounds.items()}
        burst = raw.get("burst") or {}
        return cls(
            centre_name=str(raw.get("centre_name", cls.centre_name)),
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


async def load_states(engine: AsyncEngine, start: float, end: float) -> list[Any]:
    """The agent state log from a day before ``start`` (the state each agent was in
    when the window opened) to ``end``, in order."""
    async with engine.connect() as conn:
        res = await conn.execute(select(
            AgentStateRow.at, AgentStateRow.agent, AgentStateRow.old, AgentStateRow.new,
            AgentStateRow.step, AgentStateRow.reason).where(
            AgentStateRow.at >= start - 86400, AgentStateRow.at < end).order_by(
            AgentStateRow.at, AgentStateRow.id))
        return list(res.all())


def _event(row: Any) -> asm.Event:
    data = row.data or {}
    if any(k in data for k in asm.DEADLINE_KEYS):
        data = dict(data)
        for k in asm.DEADLINE_KEYS:
            v = data.get(k)
            if isinstance(v, dict) and "$t" in v:
                data[k] = datetime.fromisoformat(v["$t"]).timestamp()
    return asm.Event(str(row.order_id), row.seq, row.step, row.role, row.unit, row.at, data)


async def load_order_events(engine: AsyncEngine, start: float, end: float) -> list[asm.Event]:
    """Every audit record of the orders some department received in ``[start, end)``."""
    received = select(OrderEventRow.order_id).where(
        OrderEventRow.step.in_([str(s) for s in asm.RECEIVE_STEPS]),
        OrderEventRow.at >= start, OrderEventRow.at < end)
    cols = (OrderEventRow.order_id, OrderEventRow.seq, OrderEventRow.step, OrderEventRow.role,
            OrderEventRow.unit, OrderEventRow.at, OrderEventRow.data)
    async with engine.connect() as conn:
        res = await conn.execute(select(*cols).where(OrderEventRow.order_id.in_(received)))
        return [_event(r) for r in res.all()]


async def load_new_orders(engine: AsyncEngine, start: float, end: float, tz: Any
                          ) -> list[asm.NewOrder]:
    """Orders accepted in ``[start, end)`` (their 受理 records) for the hotspots."""
    cols = (OrderEventRow.order_id, OrderEventRow.seq, OrderEventRow.step, OrderEventRow.role,
            OrderEventRow.unit, OrderEventRow.at, OrderEventRow.data)
    async with engine.connect() as conn:
        res = await conn.execute(select(*cols).where(
            OrderEventRow.step == str(Step.ACCEPT), OrderEventRow.at >= start,
            OrderEventRow.at < end))
        return asm.new_orders((_event(r) for r in res.all()), tz)


# --------------------------------------------------------------------------- the report

PERIOD_NAMES = {"day": "日报", "week": "周报", "month": "月报"}


async def build_report(engine: AsyncEngine, settings: Settings, cfg: ReportConfig, *,
                       period: str, day: date, now: float, queue: str | None = None,
                       department: str | None = None, names: Mapping[str, str] | None = None,
                       sections: Sequence[str] = ("calls", "agents", "departments", "hotspots")
                       ) -> dict[str, Any]:
    """The whole report for the ``period`` (day / week / month) holding ``day``, as JSON.

    ``department`` limits the department tables to that department (its own view);
    ``queue`` limits the call tables to one queue.  ``now`` ends a window still running.
    """
    tz = settings.tz
    start, end = rp.window(day, period, tz)
    lo, hi = start.timestamp(), end.timestamp()
    out: dict[str, Any] = {
        "centre": cfg.centre_name, "period": period, "title": PERIOD_NAMES[period],
        "day": day.isoformat(), "start": start.isoformat(), "end": end.isoformat(),
        "queue": queue, "department": department, "interval": rp.interval_for(period),
        "definitions": {k: {"zh": d.zh, "en": d.en, "rule": d.rule, "unit": d.unit}
                        for k, d in rp.DEFINITIONS.items()}
        | {k: {"zh": z, "en": e, "rule": r, "unit": "" if k in ("received", "overdue",
                                                                 "supervised") else "%"}
           for k, (z, e, r) in asm.RATE_DEFINITIONS.items()},
    }
    if "calls" in sections or "agents" in sections:
        calls = await load_calls(engine, lo, hi)
    if "calls" in sections:
        rep = rp.call_report(calls, start, end, rp.interval_for(period),
                             settings.servicelevel_for, settings.short_abandon_s, queue=queue)
        out["calls"] = {
            "overall": _fig(rep.overall),
            "intervals": [{"start": k} | _fig(f) for k, f in rep.intervals.items()],
            "queues": [{"queue": k, "title": settings.queue_titles.get(k, k)} | _fig(f)
                       for k, f in rep.queues.items()],
            "hotlines": [{"hotline": k or "—"} | _fig(f) for k, f in rep.hotlines.items()],
            "entries": [{"entry": k} | _fig(f) for k, f in rep.entries.items()],
            "hours": rep.hours, "abandon_times": rep.abandon_times,
        }
    if "agents" in sections:
        states = await load_states(engine, lo, min(hi, now))
        agents = rp.agent_report(states, calls, lo, min(hi, now))
        out["agents"] = [a.as_dict() for a in agents.values()]
        if period == "day":
            shifts = []
            for s in cfg.shifts:
                a, b = s.span(day, tz)
                if a.timestamp() >= now:
                    continue
                # a night shift that began the evening before belongs to its own day
                got = rp.agent_report(states, calls, a.timestamp(), min(b.timestamp(), now))
                shifts.extend({"shift": s.name} | f.as_dict() for f in got.values())
            out["shifts"] = shifts
    if "departments" in sections:
        events = await load_order_events(engine, lo, hi)
        figures = asm.assess(events, lo, hi)
        rows = asm.period_rows(figures, names or {})
        if department is not None:
            rows = [r for r in rows if r["department"] == department]
        out["departments"] = rows
    if "hotspots" in sections:
        week = rp.period_start(datetime.fromtimestamp(min(hi, now) - 1, tz), "week")
        new = await load_new_orders(engine, (week - timedelta(days=7)).timestamp(),
                                    (week + timedelta(days=7)).timestamp(), tz)
        year_ago = week - timedelta(days=364)  # the same ISO week is within a week of this
        new += await load_new_orders(engine, (year_ago - timedelta(days=8)).timestamp(),
                                     (year_ago + timedelta(days=15)).timestamp(), tz)
        out["hotspots"] = asm.hotspots(new, week, cfg.keywords) | {"week": week.date().isoformat()}
    return out


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
          "department": "承办单位", "this_week": "本周", "last_week": "上周",
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
    cover.append([f"{report['title']}  {report['start'][:10]} — {report['end'][:10]}（不含）"])
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
