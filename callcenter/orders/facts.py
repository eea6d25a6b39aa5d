"""``order_facts``: each order's part of its receiving departments' assessment counts,
kept by the order store as steps are saved, so a month's assessment sums stored parts
instead of folding millions of audit records.

Theory of operation
-------------------
:func:`~callcenter.orders.assessment.assess` is the sum of :func:`fold_order` over the
orders, and an order's part depends on the window only through which of its receipts
(a dispatch, re-dispatch or accepted return naming a department) fall inside it: for
every window that holds *all* of them the part is the same.  So each order's part is
folded once over all its receipts and stored per department, with the order's channel,
its first and last receipt and its last folded record (migration 0010).  A report over
``[start, end)`` up to ``now`` sums the stored parts of the orders whose receipts all
lie in the window and whose records all precede ``now``; the few others (receipts on
both sides of a window edge, records after ``now``) are folded from their records.  The
sum is the same as :func:`assess` over the raw records, part for part (tested).

The store refreshes an order's rows in the transaction that saves its step (steps of
one order are serialised by its version column).  Orders whose records were written
otherwise (the demo's history, the benchmark) are refreshed with :func:`refresh`;
a database upgraded with orders in it is filled on the first report (:func:`ensure`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    column,
    delete,
    func,
    insert,
    not_,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callcenter.orders import assessment as asm
from callcenter.orders.lifecycle import Step

FACTS = Table(
    "order_facts", MetaData(),
    Column("order_id", Integer, primary_key=True),
    Column("department", String(64), primary_key=True),
    Column("channel", String(16)),
    Column("first_received", Float), Column("last_received", Float), Column("last_at", Float),
    *(Column(c, Integer) for c in asm.COUNTS))

EVENTS = table("work_order_events", column("order_id", Integer), column("seq", Integer),
               column("step", String), column("role", String), column("unit", String),
               column("at", Float), column("data", JSON))
ORDERS = table("work_orders", column("id", Integer), column("channel", String))
MARKS = table("report_days", column("section", String), column("day_start", Float))
EVERYTHING = (float("-inf"), float("inf"))

FOLDED_STEPS = tuple(str(s) for s in (
    Step.ACCEPT, Step.DISPATCH, Step.REDISPATCH, Step.ACCEPT_RETURN, Step.ACCEPT_HANDLING,
    Step.RETURN, Step.COMPLETE, Step.EVALUATE, Step.REOPEN, Step.FLAG_OVERDUE, Step.SUPERVISE))
"""The steps :func:`assessment.assess` reads (replies, visits... are not loaded)."""


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def event_columns() -> tuple[Any, ...]:
    """The columns the fold reads; of each record's data only the keys it reads, taken
    out by the database (JSON paths, and only for the steps that carry them)."""
    d, step = EVENTS.c.data, EVENTS.c.step

    def only(steps: tuple[Step, ...], value: Any) -> Any:
        return case((step.in_([str(s) for s in steps]), value), else_=None)

    return (EVENTS.c.order_id, EVENTS.c.seq, step, EVENTS.c.role,
            EVENTS.c.unit, EVENTS.c.at,
            only((Step.DISPATCH, Step.REDISPATCH, Step.ACCEPT_RETURN, Step.REOPEN),
                 d["department"].as_string()),
            only((Step.EVALUATE, Step.REOPEN), d["source"].as_string()),
            only((Step.EVALUATE, Step.REOPEN), d["satisfaction_department"].as_integer()),
            only((Step.FLAG_OVERDUE,), d["timer"].as_string()),
            only((Step.ACCEPT,), d[("first_response_due", "$t")].as_string()),
            only((Step.ACCEPT, Step.REOPEN), d[("handling_due", "$t")].as_string()))


def events(rows: Any) -> list[asm.Event]:
    out = []
    for oid, seq, step, role, unit, at, dept, source, score, timer, first, handling in rows:
        data: dict[str, Any] = {}
        if dept is not None:
            data["department"] = dept
        if source is not None:
            data["source"] = source
            data["satisfaction_department"] = score
        if timer is not None:
            data["timer"] = timer
        if first is not None:
            data["first_response_due"] = _ts(first)
        if handling is not None:
            data["handling_due"] = _ts(handling)
        out.append(asm.Event(str(oid), seq, step, role, unit, at, data))
    return out



def rows_of(order_id: int, recs: list[asm.Event], channel: str) -> list[dict[str, Any]]:
    """An order's ``order_facts`` rows: its part, folded over all its receipts."""
    got = asm.receipts(recs)
    if not got:
        return []
    parts = asm.fold_order(recs, *EVERYTHING)
    last = max(r.at for r in recs)
    return [{"order_id": order_id, "department": d, "channel": channel,
             "first_received": min(got), "last_received": max(got), "last_at": last}
            | {c: getattr(p, c) for c in asm.COUNTS} for d, p in parts.items()]


async def refresh(conn: Any, order_ids: Sequence[int]) -> None:
    """Fold the orders again from their records and replace their rows, in the caller's
    transaction (an ``AsyncConnection`` or ``AsyncSession``)."""
    for i in range(0, len(order_ids), 500):
        ids = list(order_ids[i:i + 500])
        recs = asm.by_order(events(await conn.execute(select(*event_columns()).where(
            EVENTS.c.order_id.in_(ids), EVENTS.c.step.in_(FOLDED_STEPS)))))
        channels = dict((await conn.execute(select(ORDERS.c.id, ORDERS.c.channel).where(
            ORDERS.c.id.in_(ids)))).all())
        rows = [row for oid in ids for row in rows_of(oid, recs.get(str(oid), []),
                                                      channels.get(oid) or "phone")]
        await conn.execute(delete(FACTS).where(FACTS.c.order_id.in_(ids)))
        if rows:
            await conn.execute(insert(FACTS), rows)


async def ensure(engine: AsyncEngine) -> None:
    """Fill ``order_facts`` for every order when the upgrade left it to do (0010)."""
    todo = (MARKS.c.section == "order_facts") & (MARKS.c.day_start == 0)
    async with engine.connect() as conn:
        if (await conn.execute(select(MARKS.c.section).where(todo))).first() is None:
            return
    async with engine.begin() as conn:
        ids = [int(i) for (i,) in await conn.execute(select(EVENTS.c.order_id).distinct())]
        await refresh(conn, ids)
        await conn.execute(delete(MARKS).where(todo))


async def window_parts(conn: AsyncConnection, start: float, end: float, now: float
                       ) -> list[tuple[str, asm.DepartmentFigures]]:
    """(channel, part) of every department that received an order in ``[start, end)``,
    counting what was recorded before ``now``: stored parts where they are the window's,
    the other orders folded from their records."""
    f = FACTS.c
    whole = and_(f.first_received >= start, f.last_received < end, f.last_at < now)
    # the stored parts summed by the database, per channel and department (integers)
    sums = await conn.execute(select(f.channel, f.department, *(
        func.sum(f[c]).label(c) for c in asm.COUNTS)).where(whole).group_by(
        f.channel, f.department))
    out = [(r.channel, asm.DepartmentFigures(r.department, **{
        c: int(getattr(r, c) or 0) for c in asm.COUNTS})) for r in sums]
    others = (await conn.execute(select(f.order_id, f.channel).distinct().where(
        f.first_received < end, f.last_received >= start, not_(whole)))).all()
    channel = dict(others)
    ids = sorted(channel)
    for i in range(0, len(ids), 500):
        recs = asm.by_order(events(await conn.execute(select(*event_columns()).where(
            EVENTS.c.order_id.in_(ids[i:i + 500]), EVENTS.c.step.in_(FOLDED_STEPS),
            EVENTS.c.at < now))))
        for oid, rs in recs.items():
            out += [(channel[int(oid)], p) for p in asm.fold_order(rs, start, end).values()]
    return out


def split(parts: Iterable[tuple[str, asm.DepartmentFigures]]
          ) -> tuple[dict[str, asm.DepartmentFigures], dict[str, dict[str, asm.DepartmentFigures]]]:
    """The departments ranked over all channels, and ranked within each channel."""
    parts = list(parts)
    channels: dict[str, list[asm.DepartmentFigures]] = {}
    for ch, p in parts:
        channels.setdefault(ch, []).append(p)
    return (asm.total(p for _, p in parts),
            {ch: asm.total(ps) for ch, ps in sorted(channels.items())})
