"""Duplicates (重复件) and merged orders (并案).

Theory of operation
-------------------
:func:`duplicates` finds the open orders a new request may repeat, each with why
(:data:`REASONS`): the same caller; the same 事发地址 and category within
:data:`WINDOW_DAYS`; or nearly the same words (Jaccard similarity of the texts'
bigram sets at least :data:`SIMILAR`).  The operator sees them while taking the
call and the dispatcher on the order.

A supervisor merges followers into one lead order (:func:`merge`): the lead is
handled once; a follower stays a citizen's own order (own number, own return visit,
own satisfaction) but its handling follows the lead.  Whenever the lead moves,
:func:`follow` takes each follower, step by step through the pure core, to the
point the lead has reached: dispatched to the lead's department, signed for,
replied with the lead's reply, completed.  The steps a follower needs come from
the literal table :data:`FOLLOW` (follower state -> step); centre steps are taken
by the actor ``merge:<lead number>`` in the supervisor's role, department steps by
the lead department, each with a reason that names the lead order, so the trail
says why.  The dialer then calls each completed follower back on its own.

Merges and unmerges are written to the audit log (who, when, why) before the
orders change.  Only open orders are merged; a follower cannot lead, a lead cannot
follow, an order follows one lead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import and_, func, literal_column, select, text, update

from callcenter.orders.lifecycle import (
    TIMED_STATES,
    Actor,
    Order,
    OrderError,
    Role,
    State,
    Step,
)
from callcenter.orders.reasons import SystemReason
from callcenter.orders.store import OrderConflict, OrderRow, WorkOrders
from callcenter.orders.words import tokens

log = structlog.get_logger(__name__)

WINDOW_DAYS = 7
SIMILAR = 0.6
MAX_FOLLOWERS = 50
REASONS = ("same_caller", "same_place", "similar_text")

OPEN = tuple(str(s) for s in TIMED_STATES)
"""Orders a department has not completed yet: candidates and merge targets."""

# How far a follower goes depends on how far the lead has gone.
REACHED = {State.REPLIED: State.REPLIED, State.COMPLETED: State.COMPLETED,
           State.RETURN_VISIT: State.COMPLETED, State.EVALUATED: State.COMPLETED}

FOLLOW: dict[State, Step] = {
    State.ACCEPTED: Step.DISPATCH,
    State.RETURNED: Step.ACCEPT_RETURN,
    State.DISPATCHED: Step.ACCEPT_HANDLING,
    State.IN_PROGRESS: Step.REPLY,
    State.REPLIED: Step.COMPLETE,
}
"""The next step of a follower towards the lead's state (redispatch first when the
follower sits with another department)."""

Audit = Callable[..., Awaitable[None]]
"""``audit(at=, actor=, role=, action=, target=, reason=, data=)`` (callcenter.db.Store.audit)."""


class MergeError(ValueError):
    """The merge or unmerge cannot be done as asked (message says why)."""


@dataclass(frozen=True)
class Candidate:
    """An open order the new request may repeat, and why."""

    id: int
    number: str
    state: str
    category: str
    location: str
    text: str
    created_at: float
    lead_department: str | None
    confidential: bool
    reasons: tuple[str, ...]
    similarity: float


def bigram_set(text_: str) -> set[str]:
    return {t for word in tokens(text_) for t in word}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' bigram sets (0..1)."""
    x, y = bigram_set(a), bigram_set(b)
    return len(x & y) / len(x | y) if x and y else 0.0


async def duplicates(wo: WorkOrders, *, caller: str = "", location: str = "",
                     category: str = "", text_: str = "", exclude: int | None = None,
                     now: float | None = None, limit: int = 10) -> list[Candidate]:
    """Open orders that may be the same request, most likely first."""
    now = wo.clock() if now is None else now
    since = now - WINDOW_DAYS * 86400
    found: dict[int, tuple[OrderRow, set[str], float]] = {}

    def add(row: OrderRow, reason: str, score: float = 0.0) -> None:
        if exclude is not None and row.id == exclude:
            return
        _, reasons, best = found.get(row.id, (row, set(), 0.0))
        found[row.id] = (row, reasons | {reason}, max(best, score))

    base = and_(OrderRow.status.in_(OPEN), OrderRow.merged_into.is_(None))
    async with wo.sessions() as s:
        if caller:
            for row in await s.scalars(select(OrderRow).where(base, OrderRow.caller == caller)
                                       .order_by(OrderRow.created_at.desc()).limit(limit)):
                add(row, "same_caller")
        if location and category:
            for row in await s.scalars(select(OrderRow).where(
                    base, OrderRow.location == location, OrderRow.category == category,
                    OrderRow.created_at >= since).order_by(OrderRow.created_at.desc())
                    .limit(limit)):
                add(row, "same_place")
        grams = sorted(bigram_set(text_))
        if grams:
            pick = grams[:: max(1, len(grams) // 16)][:16]  # a spread of the text's bigrams
            if wo.engine.dialect.name == "postgresql":
                matched = literal_column("work_orders.search_vector").op(
                    "@@")(func.to_tsquery(literal_column("'simple'"),
                                          " | ".join(f"'{g}'" for g in pick)))
            else:
                matched = OrderRow.id.in_(select(literal_column("rowid")).select_from(
                    text("work_orders_fts")).where(literal_column("work_orders_fts").op(
                        "MATCH")(" OR ".join(f'"{g}"' for g in pick))))
            for row in await s.scalars(select(OrderRow).where(
                    base, OrderRow.created_at >= since, matched)
                    .order_by(OrderRow.created_at.desc()).limit(200)):
                score = similarity(text_, row.text)
                if score >= SIMILAR:
                    add(row, "similar_text", score)
    ranked = sorted(found.values(), key=lambda f: (-len(f[1]), -f[2], -f[0].created_at))
    return [Candidate(r.id, r.number, r.status, r.category, r.location, r.text, r.created_at,
                      r.lead_department, r.confidential,
                      tuple(x for x in REASONS if x in reasons), round(score, 3))
            for r, reasons, score in ranked[:limit]]


# --------------------------------------------------------------------------- merging


async def followers_of(wo: WorkOrders, lead_id: int) -> list[OrderRow]:
    async with wo.sessions() as s:
        return list(await s.scalars(select(OrderRow).where(OrderRow.merged_into == lead_id)
                                    .order_by(OrderRow.id)))


async def lead_of(wo: WorkOrders, order_id: int) -> int | None:
    async with wo.sessions() as s:
        return await s.scalar(select(OrderRow.merged_into).where(OrderRow.id == order_id))


async def merge(wo: WorkOrders, audit: Audit, lead_id: int, follower_ids: list[int],
                actor: Actor, reason: str) -> list[int]:
    """Merge ``follower_ids`` into ``lead_id`` (audited first); the followers merged.

    Raises :class:`MergeError` when an order is unknown, not open, already merged,
    itself a lead, or the lead itself.
    """
    if not reason.strip():
        raise MergeError("a merge needs a reason")
    ids = sorted(set(follower_ids))
    if not ids or len(ids) > MAX_FOLLOWERS:
        raise MergeError(f"name 1 to {MAX_FOLLOWERS} orders to merge")
    if lead_id in ids:
        raise MergeError("an order cannot follow itself")
    async with wo.sessions() as s:
        lead = await s.get(OrderRow, lead_id)
        if lead is None:
            raise MergeError("no such lead order")
        if lead.merged_into is not None:
            raise MergeError(f"{lead.number} follows another order: merge into that one")
        if lead.status not in OPEN:
            raise MergeError(f"{lead.number} is no longer open")
        rows = {r.id: r for r in await s.scalars(select(OrderRow).where(OrderRow.id.in_(ids)))}
        leading = set(await s.scalars(select(OrderRow.merged_into).where(
            OrderRow.merged_into.in_(ids))))
    for key in ids:
        row = rows.get(key)
        if row is None:
            raise MergeError(f"no such order: {key}")
        if row.merged_into is not None:
            raise MergeError(f"{row.number} already follows another order")
        if key in leading:
            raise MergeError(f"{row.number} leads other orders: unmerge them first")
        if row.status not in OPEN:
            raise MergeError(f"{row.number} is no longer open")
    at = wo.clock()
    for key in ids:
        await audit(at=at, actor=actor.id, role=str(actor.role), action="order_merged",
                    target=rows[key].number, reason=reason,
                    data={"order_id": key, "lead_id": lead_id, "lead": lead.number})
    async with wo.sessions() as s, s.begin():
        result = await s.execute(update(OrderRow).where(
            OrderRow.id.in_(ids), OrderRow.merged_into.is_(None)).values(merged_into=lead_id))
        if result.rowcount != len(ids):
            raise OrderConflict("an order was merged by someone else meanwhile; reload")
    log.info("orders merged", lead=lead.number, followers=[rows[k].number for k in ids],
             by=actor.id)
    await follow(wo, lead_id)
    return ids


async def unmerge(wo: WorkOrders, audit: Audit, order_id: int, actor: Actor,
                  reason: str) -> int:
    """Detach a follower from its lead (audited first); the lead's id."""
    if not reason.strip():
        raise MergeError("an unmerge needs a reason")
    async with wo.sessions() as s:
        row = await s.get(OrderRow, order_id)
    if row is None:
        raise MergeError("no such order")
    if row.merged_into is None:
        raise MergeError(f"{row.number} does not follow another order")
    lead = row.merged_into
    await audit(at=wo.clock(), actor=actor.id, role=str(actor.role), action="order_unmerged",
                target=row.number, reason=reason, data={"order_id": order_id, "lead_id": lead})
    async with wo.sessions() as s, s.begin():
        await s.execute(update(OrderRow).where(OrderRow.id == order_id)
                        .values(merged_into=None))
    return lead


# --------------------------------------------------------------------------- following


def next_step(follower: Order, lead: Order) -> tuple[Step, dict[str, Any], bool] | None:
    """The follower's next step towards the lead (step, data, by the centre), or None
    when it has caught up (or cannot: the lead has no department yet)."""
    target = REACHED.get(lead.state)
    department = lead.lead_department
    if target is None or department is None:
        return None
    order = (State.ACCEPTED, State.RETURNED, State.DISPATCHED, State.IN_PROGRESS,
             State.REPLIED, State.COMPLETED)
    if follower.state not in order or order.index(follower.state) >= order.index(target):
        return None
    step = FOLLOW[follower.state]
    if step is Step.DISPATCH or step is Step.ACCEPT_RETURN:
        return step, {"department": department}, True
    if follower.lead_department != department:
        return Step.REDISPATCH, {"department": department}, True
    if step is Step.REPLY:
        reply = next((r.text for r in reversed(lead.replies) if r.lead), "")
        return step, {"text": reply}, False
    return step, {}, False


async def follow(wo: WorkOrders, lead_id: int) -> int:
    """Bring every follower of ``lead_id`` to the lead's point; the steps taken."""
    rows = await followers_of(wo, lead_id)
    if not rows:
        return 0
    lead = await wo.get(str(lead_id))
    taken = 0
    for row in rows:
        for _ in range(8):  # at most the length of the FOLLOW path, plus a redispatch
            follower = await wo.get(str(row.id))
            planned = next_step(follower, lead)
            if planned is None:
                break
            step, data, centre = planned
            actor = Actor(f"merge:{lead.number}", Role.SUPERVISOR, wo.config.directory.centre.id) \
                if centre else Actor(f"merge:{lead.number}", Role.DEPARTMENT,
                                     lead.lead_department or "")
            try:
                await wo.step(str(row.id), step, actor,
                              reason=SystemReason("merge_follow", {"lead": lead.number}),
                              **data)
            except (OrderError, OrderConflict) as exc:
                log.warning("merged order did not follow", order=row.number, step=str(step),
                            error=str(exc))
                break
            taken += 1
    return taken

