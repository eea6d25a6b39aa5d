"""Per-day summaries of the call records and the agents' state log, for reports.

Theory of operation
-------------------
A report's call tables are sums of *atoms* (:mod:`acd.reports`: the figures of the
calls sharing a 15-minute slice, queue, hotline number and entry), and an operator's
figures over a window are the sum of their figures per local day
(:func:`acd.reports.merge_agents`).  So a closed day is summed once and kept in
``report_days`` (migration 0010): its atoms (section ``calls``) and its operators'
figures (section ``agents``), every count and total exactly as computed, floats as
they are.  A month's report then reads ~30 stored days and groups only the raw rows of
the days not stored (today, a day changed since); a report built from the raw rows
alone gives the same figures, because both are the same sums in the same order.

Kept true by the one writer (:class:`callcenter.service.Service`):

* :meth:`callcenter.db.Store.save_calls` and ``append_agent_states`` delete, in the
  transaction that writes the rows, the summaries of the days those rows touch (a call
  across midnight, a late completion, the calls a restart settles);
* after a flush the writer stores the summaries of closed days that have none
  (:func:`build_due`), one day at a time.  No other process writes ``report_days``, so
  none can store a day from rows older than a later write.

The SQL here is the database edge of :mod:`acd.reports`: the grouped query computes
:func:`acd.reports.atoms_of` with the same rules (the tests compare them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import Integer, case, cast, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from acd import reports as rp
from acd.metrics import ANSWERED, STORED_FIELDS, Figures, combine
from callcenter.config import Settings
from callcenter.db import AgentStateRow, CallRow, ReportDayRow

GRACE_S = 3600.0
"""A day is summarised once it has been over this long: most calls across midnight
have ended by then (a later change only deletes the summary again)."""

KEEP_DAYS = 62
"""How far back the writer fills in missing summaries (a month and the one before)."""


def day_spans(start: datetime, end: datetime) -> list[tuple[float, float]]:
    """The local days of ``[start, end)`` (aware, day-aligned) as unix ``(start, end)``."""
    out = []
    at = start
    while at < end:
        nxt = rp.next_start(at, "day")
        out.append((at.timestamp(), nxt.timestamp()))
        at = nxt
    return out


def _slice(engine: AsyncEngine) -> Any:
    """``joined_at // 900`` in the database's own spelling (PostgreSQL's CAST rounds)."""
    if engine.dialect.name == "postgresql":
        return cast(func.floor(CallRow.joined_at / 900), Integer)
    return cast(CallRow.joined_at / 900, Integer)


async def load_call_atoms(engine: AsyncEngine, settings: Settings, start: float, end: float,
                          queue: str | None = None, pbx: str | None = None) -> list[rp.Atom]:
    """:func:`_atoms` for ``[start, end)``; a window longer than three days is read as two
    halves at once (two connections: the database groups both in parallel)."""
    if end - start <= 3 * 86400:
        return await _atoms(engine, settings, start, end, queue, pbx)
    middle = (start + end) // 2 // 900 * 900  # on a slice boundary: the halves share no atom
    halves = await asyncio.gather(_atoms(engine, settings, start, middle, queue, pbx),
                                  _atoms(engine, settings, middle, end, queue, pbx))
    return halves[0] + halves[1]


def pbx_name(settings: Settings) -> Any:
    """A row's PBX name in SQL: :func:`acd.centres.pbx_of` (a row naming none, stored
    before migration 0013, is the home PBX's)."""
    return case((func.coalesce(CallRow.pbx, "") == "", settings.ami.name), else_=CallRow.pbx)


def pbx_is(settings: Settings, pbx: str) -> Any:
    """The rows of PBX ``pbx``: its name, or for the home PBX also none (rows stored
    before migration 0013)."""
    if pbx == settings.ami.name:
        return CallRow.pbx.in_((pbx, ""))
    return CallRow.pbx == pbx


async def _atoms(engine: AsyncEngine, settings: Settings, start: float, end: float,
                 queue: str | None = None, pbx: str | None = None) -> list[rp.Atom]:
    """:func:`acd.reports.atoms_of` as one grouped query: the sums behind every figure of
    :func:`acd.metrics.figures`, counted by the database (a month of two million calls is
    never carried into Python row by row).  The same rules, spelled in SQL:
    answered = answered or completed, wait = ``hold_time`` (0 when unknown), in SL =
    wait <= the queue's service level, short abandon = wait < ``short_abandon_s``; a row
    naming no PBX is the home PBX's (:func:`pbx_name`: grouped by it, the home PBX's
    rows of a slice are one atom however they name it)."""
    hold = func.coalesce(CallRow.hold_time, 0)
    talk = func.coalesce(CallRow.talk_time, 0)
    sl = case(*((CallRow.queue == q, c.servicelevel) for q, c in settings.queues.items()),
              else_=settings.servicelevel) if settings.queues else settings.servicelevel
    answered = CallRow.outcome.in_(ANSWERED)
    completed = CallRow.outcome == "completed"
    abandoned = CallRow.outcome == "abandoned"

    def n(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    entry = case((func.coalesce(CallRow.ivr_path, "").in_(("", "direct")), "direct"),
                 else_="menu")
    bounds = (0, *rp.ABANDON_BUCKETS)
    buckets = [n(abandoned & (hold >= lo) & (hold < hi))
               for lo, hi in zip(bounds, rp.ABANDON_BUCKETS, strict=False)]
    buckets.append(n(abandoned & (hold >= rp.ABANDON_BUCKETS[-1])))
    piece = _slice(engine).label("piece")
    hotline = func.coalesce(CallRow.hotline, "").label("hotline")
    on = pbx_name(settings).label("pbx")
    q = select(
        piece, CallRow.queue, hotline, entry.label("entry"), on,
        func.count().label("offered"), n(answered), n(completed), n(abandoned),
        n(CallRow.outcome == "exited"), n(CallRow.outcome == "waiting"),
        n(answered & (hold <= sl)), n(completed & (hold <= sl)), n(abandoned & (hold <= sl)),
        n(abandoned & (hold < settings.short_abandon_s)), n(CallRow.estimated.is_(True)),
        func.sum(case((answered, hold), else_=0)),
        func.sum(case((completed, talk), else_=0)),
        func.sum(case((completed, talk + func.coalesce(CallRow.wrap_s, 0.0)), else_=0.0)),
        func.max(case((answered | abandoned, hold), else_=0)),
        *buckets,
    ).where(CallRow.joined_at >= start, CallRow.joined_at < end).group_by(
        piece, CallRow.queue, hotline, entry, on)
    if queue is not None:
        q = q.where(CallRow.queue == queue)
    if pbx is not None:
        q = q.where(pbx_is(settings, pbx))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    out = []
    for r in rows:
        (piece_, queue_, hotline_, entry_, pbx_, offered, ans, comp, aband, exited, waiting, in_sl,
         comp_sl, ab_sl, short, est, waits, talks, handles, max_wait, *ab) = r
        f = combine([Figures(
            offered=int(offered), answered=int(ans or 0), completed=int(comp or 0),
            abandoned=int(aband or 0), exited=int(exited or 0), waiting=int(waiting or 0),
            answered_within_sl=int(in_sl or 0), completed_in_sl=int(comp_sl or 0),
            abandoned_in_sl=int(ab_sl or 0), short_abandons=int(short or 0),
            estimated=int(est or 0), wait_total_s=float(waits or 0),
            talk_total_s=float(talks or 0), handle_total_s=float(handles or 0),
            max_wait_s=int(max_wait or 0))])
        out.append(rp.Atom(int(piece_), queue_, hotline_, entry_, f, [int(x or 0) for x in ab],
                           pbx_))
    return out


async def load_taken(engine: AsyncEngine, start: float, end: float) -> dict[str, rp.Taken]:
    """:func:`acd.reports.calls_by_agent` as one grouped query."""
    completed = CallRow.outcome == "completed"
    q = select(CallRow.agent, func.count(), func.sum(case((completed, 1), else_=0)),
               func.sum(case((completed, func.coalesce(CallRow.talk_time, 0)), else_=0)),
               func.sum(case((completed, func.coalesce(CallRow.on_hold_s, 0.0)), else_=0.0))
               ).where(CallRow.answered_at >= start, CallRow.answered_at < end,
                       CallRow.outcome.in_(ANSWERED), CallRow.agent != "").group_by(
        CallRow.agent)
    async with engine.connect() as conn:
        return {a: (int(n), int(c or 0), float(t or 0), float(h or 0)) for a, n, c, t, h in
                (await conn.execute(q)).all()}


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


async def taken_by_day(engine: AsyncEngine, spans: Sequence[tuple[float, float]]
                       ) -> list[dict[str, rp.Taken]]:
    """:func:`load_taken` for each day (one connection: a month is 30 short queries)."""
    return [await load_taken(engine, a, b) for a, b in spans]


async def agents_raw(engine: AsyncEngine, spans: Sequence[tuple[float, float]], until: float
                     ) -> list[dict[str, rp.AgentFigures]]:
    """Each day's operator figures from the raw rows, the last day cut at ``until``."""
    spans = [(a, min(b, until)) for a, b in spans if a < until]
    if not spans:
        return []
    states = await load_states(engine, spans[0][0], spans[-1][1])
    taken = await taken_by_day(engine, spans)
    return await asyncio.to_thread(rp.agent_days, states,
                                   [(a, b, t) for (a, b), t in zip(spans, taken, strict=True)])


# --------------------------------------------------------------------------- stored days

def atom_to_json(a: rp.Atom) -> list[Any]:
    return [a.slice, a.queue, a.hotline, a.entry,
            {k: getattr(a.figures, k) for k in STORED_FIELDS}, a.abandons, a.pbx]


def atom_from_json(j: Sequence[Any]) -> rp.Atom:
    """An atom as :func:`atom_to_json` stored it (migration 0018 dropped the stored days
    whose atoms named no PBX)."""
    piece, queue, hotline, entry, figs, abandons, pbx = j
    return rp.Atom(int(piece), queue, hotline, entry, combine([Figures(**figs)]),
                   list(abandons), pbx)


async def stored(engine: AsyncEngine, section: str, start: float, end: float
                 ) -> dict[float, Any]:
    """Stored summaries of ``section`` for days starting in ``[start, end)``, by day start."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(ReportDayRow.day_start, ReportDayRow.data).where(
            ReportDayRow.section == section, ReportDayRow.day_start >= start,
            ReportDayRow.day_start < end))
        return {float(a): d for a, d in rows}


def runs(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Adjacent days joined into ranges (one grouped query each)."""
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


async def call_atoms(engine: AsyncEngine, settings: Settings, start: datetime, end: datetime,
                     queue: str | None = None, *, pbx: str | None = None,
                     summaries: bool = True) -> list[rp.Atom]:
    """Every atom of ``[start, end)`` (only ``queue``'s / ``pbx``'s when given): stored
    days' from ``report_days``, the others' grouped from the raw rows (all raw with
    ``summaries=False``)."""
    lo, hi = start.timestamp(), end.timestamp()
    if not summaries:
        return await load_call_atoms(engine, settings, lo, hi, queue, pbx)
    spans = day_spans(start, end)
    have = await stored(engine, "calls", lo, hi)
    out = [atom_from_json(j) for a, _ in spans if a in have for j in have[a]]
    if queue is not None:
        out = [x for x in out if x.queue == queue]
    if pbx is not None:
        out = [x for x in out if x.pbx == pbx]
    for a, b in runs(s for s in spans if s[0] not in have):
        out += await load_call_atoms(engine, settings, a, b, queue, pbx)
    return out


async def agent_figures(engine: AsyncEngine, start: datetime, end: datetime, now: float, *,
                        summaries: bool = True) -> dict[str, rp.AgentFigures]:
    """Operators' figures over ``[start, min(end, now))``: :func:`acd.reports.merge_agents`
    of each day's, stored or from the raw rows (all raw with ``summaries=False``)."""
    spans = [s for s in day_spans(start, end) if s[0] < now]
    got = await stored(engine, "agents", start.timestamp(), now) if summaries else {}
    have = {a: got[a] for a, b in spans if b <= now and a in got}  # a running day: raw
    raw = iter(await agents_raw(engine, [s for s in spans if s[0] not in have], now))
    days = [{n: rp.agent_from_json(n, d) for n, d in have[a].items()} if a in have
            else next(raw) for a, _ in spans]
    return rp.merge_agents(days)


async def build_day(engine: AsyncEngine, settings: Settings, start: float, end: float,
                    now: float) -> None:
    """Store the summaries of the day ``[start, end)`` (closed: ``end`` before ``now``)."""
    atoms = await load_call_atoms(engine, settings, start, end)
    (agents,) = await agents_raw(engine, [(start, end)], end)
    rows = [{"section": "calls", "day_start": start, "day_end": end, "built_at": now,
             "data": [atom_to_json(a) for a in atoms]},
            {"section": "agents", "day_start": start, "day_end": end, "built_at": now,
             "data": {n: rp.agent_to_json(f) for n, f in agents.items()}}]
    async with engine.begin() as conn:
        await conn.execute(delete(ReportDayRow).where(ReportDayRow.day_start == start))
        await conn.execute(insert(ReportDayRow), rows)


async def build_due(engine: AsyncEngine, settings: Settings, now: float, *,
                    limit: int = 1) -> int:
    """Store up to ``limit`` missing summaries of days closed ``GRACE_S`` before ``now``
    (within :data:`KEEP_DAYS`), newest first (this month's report gains first); the
    number stored.  Only the writer calls this (see the module's notes)."""
    tz = settings.tz
    today = datetime.fromtimestamp(now - GRACE_S, tz).date()
    first = today - timedelta(days=KEEP_DAYS)
    spans = day_spans(datetime.combine(first, time(), tz), datetime.combine(today, time(), tz))
    async with engine.connect() as conn:
        rows = await conn.execute(select(ReportDayRow.day_start, func.count()).where(
            ReportDayRow.day_start >= spans[0][0]).group_by(ReportDayRow.day_start))
        done = {float(a) for a, n in rows if n == 2}
    built = 0
    for a, b in reversed(spans):
        if a in done:
            continue
        if built >= limit:
            break
        await build_day(engine, settings, a, b, now)
        built += 1
    return built
