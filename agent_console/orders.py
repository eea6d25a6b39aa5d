"""Work-order drafts and the minimal work orders they become; a caller's history.

A draft belongs to one operator and, usually, one call; it is saved on every
pause in typing so a reload or a crash loses nothing.  Saving it as a work order
writes one ``work_orders`` row numbered ``YYYYMMDD-NNNNNN`` (per local day).

The work-order lifecycle (dispatch to departments, deadlines, replies, return
visits) belongs to a later issue, which will extend ``work_orders`` and replace
:meth:`Orders.caller_history`'s work-order part.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from agent_console.models import DraftRow, WorkOrderRow
from callcenter.db import AuditRow, CallRow

#: ``caller_history(caller_num) -> {"calls": [...], "work_orders": [...]}``
CallerHistory = Callable[[str], Awaitable[dict[str, list[dict[str, Any]]]]]

DRAFT_FIELDS = {"caller": 40, "category": 60, "text": 20000}


class DraftError(ValueError):
    """The draft cannot be saved or submitted as asked."""


def draft_fields(d: DraftRow) -> dict[str, Any]:
    """The draft's structured intake fields (agent_console.intake.DRAFT_KEYS)."""
    try:
        value = json.loads(d.fields or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def draft_json(d: DraftRow) -> dict[str, Any]:
    return {"id": d.id, "call_uniqueid": d.call_uniqueid, "caller": d.caller,
            "category": d.category, "text": d.text, "fields": draft_fields(d),
            "version": d.version, "status": d.status,
            "work_order_id": d.work_order_id, "created_at": d.created_at,
            "updated_at": d.updated_at}


def order_json(w: WorkOrderRow) -> dict[str, Any]:
    return {"id": w.id, "number": w.number, "caller": w.caller,
            "call_uniqueid": w.call_uniqueid, "category": w.category, "text": w.text,
            "created_by": w.created_by, "created_at": w.created_at, "status": w.status}


class Orders:
    def __init__(self, engine: AsyncEngine, tz: tzinfo, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.tz = tz
        self.clock = clock

    # ---- drafts

    async def open_draft(self, owner: str, call_uniqueid: str | None = None, *,
                         caller: str = "", category: str = "",
                         fields: dict[str, Any] | None = None) -> DraftRow:
        """The owner's draft for this call (created, prefilled, if there is none yet)."""
        async with self.sessions() as s:
            if call_uniqueid is not None:
                found = await s.scalar(select(DraftRow).where(
                    DraftRow.owner == owner, DraftRow.call_uniqueid == call_uniqueid))
                if found is not None:
                    return found
            now = self.clock()
            draft = DraftRow(owner=owner, call_uniqueid=call_uniqueid, caller=caller[:40],
                             category=category[:60], text="",
                             fields=json.dumps(fields or {}, ensure_ascii=False),
                             version=1, status="open",
                             created_at=now, updated_at=now)
            s.add(draft)
            try:
                await s.commit()
            except IntegrityError:  # the same call opened twice at once: use the other
                await s.rollback()
                found = await s.scalar(select(DraftRow).where(
                    DraftRow.owner == owner, DraftRow.call_uniqueid == call_uniqueid))
                if found is None:
                    raise
                return found
            return draft

    async def open_drafts(self, owner: str) -> list[DraftRow]:
        async with self.sessions() as s:
            return list(await s.scalars(
                select(DraftRow).where(DraftRow.owner == owner, DraftRow.status == "open")
                .order_by(DraftRow.updated_at.desc()).limit(50)))

    async def draft(self, owner: str, draft_id: int) -> DraftRow | None:
        async with self.sessions() as s:
            return await s.scalar(select(DraftRow).where(DraftRow.id == draft_id,
                                                         DraftRow.owner == owner))

    async def save_draft(self, owner: str, draft_id: int, fields: dict[str, Any]) -> DraftRow:
        """Save the given columns; ``fields`` (the structured ones) are merged in."""
        async with self.sessions() as s, s.begin():
            d = await s.scalar(select(DraftRow).where(DraftRow.id == draft_id,
                                                      DraftRow.owner == owner))
            if d is None:
                raise LookupError(draft_id)
            if d.status != "open":
                raise DraftError("this draft is already a work order")
            for key, value in fields.items():
                if key == "fields":
                    merged = {**draft_fields(d), **value}
                    d.fields = json.dumps(merged, ensure_ascii=False)
                else:
                    setattr(d, key, value)
            d.version += 1
            d.updated_at = self.clock()
        return d

    async def submit(self, owner: str, draft_id: int, role: str = "operator") -> WorkOrderRow:
        """Save the draft as a work order (once: a second submit returns the same order),
        with its audit row in the same transaction."""
        for _ in range(5):
            try:
                return await self._submit_once(owner, draft_id, role)
            except IntegrityError:  # two orders took the same number at once: take the next
                continue
        raise DraftError("could not number the work order; try again")

    async def _submit_once(self, owner: str, draft_id: int, role: str) -> WorkOrderRow:
        async with self.sessions() as s, s.begin():
            d = await s.scalar(select(DraftRow).where(DraftRow.id == draft_id,
                                                      DraftRow.owner == owner))
            if d is None:
                raise LookupError(draft_id)
            if d.work_order_id is not None:
                done = await s.get(WorkOrderRow, d.work_order_id)
                if done is not None:
                    return done
            if not d.text.strip():
                raise DraftError("the request text is empty")
            now = self.clock()
            day = datetime.fromtimestamp(now, self.tz).strftime("%Y%m%d")
            last = await s.scalar(select(func.max(WorkOrderRow.number))
                                  .where(WorkOrderRow.number.like(f"{day}-%")))
            serial = int(last.split("-")[1]) + 1 if last else 1
            order = WorkOrderRow(number=f"{day}-{serial:06d}", caller=d.caller,
                                 call_uniqueid=d.call_uniqueid, category=d.category,
                                 text=d.text, created_by=owner, created_at=now,
                                 status="accepted")
            s.add(order)
            await s.flush()
            s.add(AuditRow(at=now, actor=owner, role=role, action="work_order_accepted",
                           target=order.number, reason="",
                           data={"order_id": order.id, "draft": d.id,
                                 "call": d.call_uniqueid or ""}))
            d.work_order_id = order.id
            d.status = "submitted"
            d.updated_at = now
        return order

    async def mark_submitted(self, owner: str, draft_id: int, work_order_id: int,
                             role: str = "operator", number: str = "") -> None:
        """The draft became work order ``work_order_id`` (a second submit returns it);
        audited as ``work_order_accepted`` in the same transaction."""
        async with self.sessions() as s, s.begin():
            d = await s.scalar(select(DraftRow).where(DraftRow.id == draft_id,
                                                      DraftRow.owner == owner))
            if d is None:
                raise LookupError(draft_id)
            if d.work_order_id is not None:
                raise DraftError("this draft is already a work order")
            now = self.clock()
            s.add(AuditRow(at=now, actor=owner, role=role, action="work_order_accepted",
                           target=number or str(work_order_id), reason="",
                           data={"order_id": work_order_id, "draft": d.id,
                                 "call": d.call_uniqueid or ""}))
            d.work_order_id = work_order_id
            d.status = "submitted"
            d.updated_at = now

    async def work_order(self, order_id: int) -> WorkOrderRow | None:
        async with self.sessions() as s:
            return await s.get(WorkOrderRow, order_id)

    # ---- history

    async def caller_history(self, caller_num: str) -> dict[str, list[dict[str, Any]]]:
        """HOOK ``caller_history(caller_num)``: a caller's earlier calls and work orders.

        The work-order part reads the minimal ``work_orders`` table; the
        work-order issue replaces it (pass ``caller_history=`` to ``make_app``).
        """
        if not caller_num:
            return {"calls": [], "work_orders": []}
        async with self.sessions() as s:
            calls = await s.scalars(
                select(CallRow).where(CallRow.caller_num == caller_num)
                .order_by(CallRow.joined_at.desc()).limit(20))
            orders = await s.scalars(
                select(WorkOrderRow).where(WorkOrderRow.caller == caller_num)
                .order_by(WorkOrderRow.created_at.desc()).limit(20))
            return {
                "calls": [{"uniqueid": c.uniqueid, "queue": c.queue, "joined_at": c.joined_at,
                           "outcome": c.outcome, "agent": c.agent, "hotline": c.hotline,
                           "category": c.category, "hold_time": c.hold_time,
                           "talk_time": c.talk_time} for c in calls],
                "work_orders": [order_json(w) for w in orders],
            }
