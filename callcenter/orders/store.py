"""Work orders at rest: the database edge around the pure core :mod:`callcenter.orders.lifecycle`.

Theory of operation
-------------------
:class:`WorkOrders` loads an order, calls the pure :func:`~callcenter.orders.apply`
and, in one transaction, writes the new state and its audit record.  Nothing here
decides whether a step is allowed: the core does, and a refused step is stored
as an :class:`~callcenter.orders.Attempt` (so 被满意 attempts stay visible to
supervision) before the error is raised again.

Tables (schema owned by migration ``0003_work_orders``)::

    work_orders            one row per order: indexed columns + the order as JSON
    work_order_events      the audit trail, append-only, unique (order_id, seq)
    work_order_dispatches  every department an order was sent to, append-only
    work_order_attempts    refused steps, append-only
    department_handlers    which department a handler account belongs to

Concurrency is optimistic: the order row is updated only if its ``version`` is
still the one that was read, and ``(order_id, seq)`` is unique, so two people
acting on the same order at once cannot both succeed (:class:`OrderConflict`).
Orders saved by the console's drafts (``agent_console.orders``) have no snapshot
yet; they are adopted (their 受理 record written) on their first step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Integer,
    String,
    Text,
    column,
    func,
    insert,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from callcenter.db import CallRow
from callcenter.orders import facts, reasons
from callcenter.orders.calendar import WorkCalendar
from callcenter.orders.channels import CHANNELS
from callcenter.orders.lifecycle import (
    TIMED_STATES,
    TRANSITIONS,
    Actor,
    AnswerSource,
    Attempt,
    AuditRecord,
    Caller,
    DeadlinePolicy,
    Directory,
    Dispatch,
    Evaluation,
    Intake,
    Order,
    OrderError,
    Reply,
    ReturnRequest,
    Role,
    State,
    Step,
    Supervision,
    TimerKind,
    Urgency,
    answer_step,
    apply,
    deadlines_for,
    due_timers,
    open_order,
    order_number,
    work_order_figures,
)
from callcenter.orders.reasons import SystemReason
from callcenter.orders.supervision import Anomaly, detect_all
from callcenter.orders.words import order_search_text

log = structlog.get_logger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

SYSTEM = Actor("timers", Role.SYSTEM, "system")
IVR = Actor("ivr", Role.CITIZEN, "")

ACCOUNT_ROLES = {
    "operator": Role.OPERATOR,
    "supervisor": Role.SUPERVISOR,
    "admin": Role.ADMIN,
    "handler": Role.DEPARTMENT,
}
"""Console account roles (``agent_console.models.Role``) as the core's roles."""


class _Base(DeclarativeBase):
    """Our own metadata: ``work_orders`` is also mapped (minimally) by the console."""


class OrderRow(_Base):
    """工单: ``work_orders`` with the columns migration 0003 added."""

    __tablename__ = "work_orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    caller: Mapped[str] = mapped_column(String(40), default="")
    call_uniqueid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    category: Mapped[str] = mapped_column(String(60), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(24), default="accepted")
    urgency: Mapped[str] = mapped_column(String(16), default="normal")
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_unit: Mapped[str] = mapped_column(String(64), default="")
    lead_department: Mapped[str | None] = mapped_column(String(64), nullable=True)
    co_handlers: Mapped[str] = mapped_column(String(400), default="")  # ",a,b," or ""
    caller_name: Mapped[str] = mapped_column(String(120), default="")
    location: Mapped[str] = mapped_column(String(400), default="")
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    handling_due: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # migration 0008: 一号对外 channel, 并案 lead order, the words' index text
    channel: Mapped[str] = mapped_column(String(16), default="phone")
    merged_into: Mapped[int | None] = mapped_column(Integer, nullable=True)
    search_text: Mapped[str] = mapped_column(Text, default="")
    # migration 0012: the structured intake fields as search columns
    request_type: Mapped[str] = mapped_column(String(16), default="")
    caller_gender: Mapped[str] = mapped_column(String(8), default="")
    district: Mapped[str] = mapped_column(String(64), default="")
    street: Mapped[str] = mapped_column(String(64), default="")
    reply_method: Mapped[str] = mapped_column(String(16), default="")


class OrderEventRow(_Base):
    """One :class:`~callcenter.orders.AuditRecord`.  Never updated, never deleted."""

    __tablename__ = "work_order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(24))
    unit: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[float] = mapped_column(Float)
    at_iso: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class DispatchRow(_Base):
    """One entry of an order's dispatch history (lead or co-handler)."""

    __tablename__ = "work_order_dispatches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    department: Mapped[str] = mapped_column(String(64))
    lead: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[float] = mapped_column(Float)


class AttemptRow(_Base):
    """A refused step (:class:`~callcenter.orders.Attempt`)."""

    __tablename__ = "work_order_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(24))
    unit: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[float] = mapped_column(Float)
    at_iso: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class HandlerRow(_Base):
    """A department handler's account and the department it acts for."""

    __tablename__ = "department_handlers"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    department: Mapped[str] = mapped_column(String(64))


class OrderNotFound(LookupError):
    """No order with that id."""


class OrderConflict(Exception):
    """Someone else changed the order first; read it again and retry."""


class AlreadyFiled(Exception):
    """The idempotency key of a create was used before: ``order_id`` is the order it
    filed (None while that create is still being written)."""

    def __init__(self, order_id: int | None) -> None:
        super().__init__(order_id)
        self.order_id = order_id


class _Claimed(Exception):
    """The idempotency key's row exists already (inside :meth:`WorkOrders.create`)."""


#: One row per idempotency key of a create (migration 0008); ``scope`` is an intake
#: channel (``wechat``) or a console account (``user:<id>``).
_REQUESTS = table("intake_requests", column("id"), column("channel"), column("client_key"),
                  column("order_id"), column("at"))


# --------------------------------------------------------------------------- JSON codec


def encode(value: Any) -> Any:
    """JSON-safe form of audit data and snapshots: datetimes become ``{"$t": iso}``."""
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, str):
        return str(value)  # StrEnum members become plain strings
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode` (tuples come back as lists)."""
    if isinstance(value, dict):
        if set(value) == {"$t"}:
            return datetime.fromisoformat(value["$t"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _dt(value: Any) -> datetime:
    return datetime.fromisoformat(value["$t"])


def _opt_dt(value: Any) -> datetime | None:
    return None if value is None else _dt(value)


def order_to_json(o: Order) -> dict[str, Any]:
    """The whole order, JSON-safe (see :func:`order_from_json`)."""
    return encode({
        "id": o.id, "number": o.number, "owner_unit": o.owner_unit, "state": o.state,
        "urgency": o.urgency, "category": o.category, "text": o.text,
        "caller": [o.caller.name, o.caller.number, o.caller.address],
        "accepted_at": o.accepted_at, "updated_at": o.updated_at,
        "first_response_due": o.first_response_due, "handling_due": o.handling_due,
        "location": o.location, "confidential": o.confidential,
        "lead_department": o.lead_department, "co_handlers": o.co_handlers,
        "dispatch_history": [[d.department, d.at, d.lead] for d in o.dispatch_history],
        "pending_return": None if o.pending_return is None else [
            o.pending_return.department, o.pending_return.reason, o.pending_return.at],
        "replies": [[r.department, r.text, r.at, r.lead] for r in o.replies],
        "on_call_answer": o.on_call_answer, "first_response_at": o.first_response_at,
        "completed_at": o.completed_at,
        "supervision": None if o.supervision is None else [
            o.supervision.deadline, o.supervision.reason, o.supervision.by, o.supervision.at],
        "evaluations": [[e.source, e.resolved, e.satisfaction_operator,
                         e.satisfaction_department, e.call_id, e.actor_id, e.at]
                        for e in o.evaluations],
        "overdue": [[kind, at] for kind, at in o.overdue],
        "return_count": o.return_count, "redispatch_count": o.redispatch_count,
        "reopen_count": o.reopen_count,
        "rejected_completion_count": o.rejected_completion_count, "version": o.version,
        "intake": {k: v for k in Intake.__slots__ if (v := getattr(o.intake, k))},
    })


def order_from_json(j: Mapping[str, Any]) -> Order:
    """Rebuild an :class:`~callcenter.orders.Order` from :func:`order_to_json`."""
    pending, sup = j["pending_return"], j["supervision"]
    return Order(
        id=j["id"], number=j["number"], owner_unit=j["owner_unit"], state=State(j["state"]),
        urgency=Urgency(j["urgency"]), category=j["category"], text=j["text"],
        caller=Caller(*j["caller"]), accepted_at=_dt(j["accepted_at"]),
        updated_at=_dt(j["updated_at"]), first_response_due=_dt(j["first_response_due"]),
        handling_due=_dt(j["handling_due"]), location=j["location"],
        confidential=j["confidential"], lead_department=j["lead_department"],
        co_handlers=tuple(j["co_handlers"]),
        dispatch_history=tuple(Dispatch(d, _dt(at), lead) for d, at, lead in
                               j["dispatch_history"]),
        pending_return=None if pending is None else ReturnRequest(
            pending[0], pending[1], _dt(pending[2])),
        replies=tuple(Reply(d, text, _dt(at), lead) for d, text, at, lead in j["replies"]),
        on_call_answer=j["on_call_answer"], first_response_at=_opt_dt(j["first_response_at"]),
        completed_at=_opt_dt(j["completed_at"]),
        supervision=None if sup is None else Supervision(_dt(sup[0]), sup[1], sup[2],
                                                         _dt(sup[3])),
        evaluations=tuple(Evaluation(AnswerSource(src), resolved, so, sd, call_id, actor,
                                     _dt(at))
                          for src, resolved, so, sd, call_id, actor, at in j["evaluations"]),
        overdue=tuple((TimerKind(kind), _dt(at)) for kind, at in j["overdue"]),
        return_count=j["return_count"], redispatch_count=j["redispatch_count"],
        reopen_count=j["reopen_count"],
        rejected_completion_count=j["rejected_completion_count"], version=j["version"],
        intake=Intake(**j.get("intake", {})),
    )


def record_from_row(r: OrderEventRow) -> AuditRecord:
    return AuditRecord(
        order_id=str(r.order_id), seq=r.seq, step=Step(r.step), actor_id=r.actor_id,
        role=Role(r.role), unit=r.unit, at=datetime.fromisoformat(r.at_iso),
        from_state=State(r.from_state) if r.from_state else None, to_state=State(r.to_state),
        reason=r.reason, data=decode(r.data),
    )


def attempt_from_row(r: AttemptRow) -> Attempt:
    return Attempt(
        order_id=str(r.order_id), step=r.step, actor_id=r.actor_id, role=Role(r.role),
        unit=r.unit, at=datetime.fromisoformat(r.at_iso), state=State(r.state),
        reason=r.reason, data=decode(r.data), error=r.error, message=r.message,
    )


def record_json(r: AuditRecord) -> dict[str, Any]:
    """An audit record for the API (datetimes as ISO strings).  A reason the system wrote
    (``data["reason_code"]``, :mod:`callcenter.orders.reasons`) is rendered from its
    code: ``reason`` in Chinese, ``reason_en`` in English; a person's reason is as typed
    and has no ``reason_en``."""
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.data.items()}
    doc = {"seq": r.seq, "step": str(r.step), "actor_id": r.actor_id, "role": str(r.role),
           "unit": r.unit, "at": r.at.isoformat(),
           "from_state": str(r.from_state) if r.from_state else None,
           "to_state": str(r.to_state), "reason": r.reason, "data": encode_plain(data)}
    # Before codes, the system's reasons were text: read as such only on its own steps.
    system = r.actor_id == SYSTEM.id or r.actor_id.startswith("merge:")
    said = reasons.rendered(r.data, r.reason if system else None)
    if said is not None:
        doc["reason"], doc["reason_en"] = said["zh"], said["en"]
    return doc


def encode_plain(value: Any) -> Any:
    """Like :func:`encode` but datetimes as bare ISO strings (for people, not for us)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): encode_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class OrderConfig:
    """The department directory, the working-day calendar and the time limits."""

    directory: Directory
    calendar: WorkCalendar
    policy: DeadlinePolicy

    @classmethod
    def load(cls, config_dir: Path = CONFIG_DIR) -> OrderConfig:
        calendar_text = (config_dir / "calendar.toml").read_text(encoding="utf-8")
        return cls(
            directory=Directory.from_toml((config_dir / "departments.toml").read_text(
                encoding="utf-8")),
            calendar=WorkCalendar.from_toml(calendar_text),
            policy=DeadlinePolicy.from_toml(calendar_text),
        )

    def knows(self, department: str) -> bool:
        return any(d.id == department for d in self.directory.departments)


# --------------------------------------------------------------------------- the service


class WorkOrders:
    """Create, step, list and supervise work orders in the database."""

    def __init__(self, engine: AsyncEngine, config: OrderConfig | None = None, *,
                 tz: tzinfo | None = None, clock: Any = time.time) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.config = config or OrderConfig.load()
        self.tz = tz or self.config.calendar.tz
        self.clock = clock
        self._numbers: dict[date, int] = {}  # local day -> last order number given (create)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.tz)

    # ---- accounts

    async def set_department(self, username: str, department: str) -> None:
        if not self.config.knows(department):
            raise ValueError(f"unknown department {department!r}")
        async with self.sessions() as s, s.begin():
            row = await s.get(HandlerRow, username)
            if row is None:
                s.add(HandlerRow(username=username, department=department))
            else:
                row.department = department

    async def department_of(self, username: str) -> str | None:
        async with self.sessions() as s:
            row = await s.get(HandlerRow, username)
            return row.department if row else None

    # ---- create

    async def create(self, actor: Actor, *, caller: Caller, category: str, text: str,
                     urgency: Urgency | str = Urgency.NORMAL, confidential: bool = False,
                     location: str = "", call_uniqueid: str | None = None,
                     at: datetime | None = None, channel: str = "phone",
                     intake: Intake | None = None,
                     once: tuple[str, str] | None = None) -> tuple[Order, AuditRecord]:
        """受理: a new order, numbered ``YYYYMMDD-NNNNNN`` per local day of ``at``;
        ``channel`` is where it came in (:data:`~callcenter.orders.channels.CHANNELS`),
        ``intake`` the structured details the operator recorded (诉求类型, address...).

        ``once`` = (scope, idempotency key): the key is claimed in ``intake_requests``
        in the same transaction as the order, so a crash leaves both or neither and a
        retry never files twice; a key used before raises :class:`AlreadyFiled`."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        at = at or self.now()
        urgency = Urgency(urgency)
        deadlines = deadlines_for(None, urgency, at, self.config.calendar, self.config.policy)
        # Checked by the core before anything is written.
        order, record = open_order(
            order_id="0", number="", actor=actor, at=at, caller=caller, category=category,
            text=text, deadlines=deadlines, urgency=urgency, location=location,
            confidential=confidential, intake=intake or Intake())
        day = at.astimezone(self.tz).date()
        for attempt in range(8):
            number = ""
            try:
                async with self.engine.begin() as conn:  # Core: no ORM unit of work
                    if once is not None:
                        await self._claim(conn, once, at)
                    number = await self._next_number(conn, at, reread=attempt > 0)
                    # Three statements: the row with every column, its snapshot (which
                    # carries the id the insert gave), the record.
                    columns = _columns(replace(order, number=number))
                    del columns["snapshot"]
                    result = await conn.execute(insert(OrderRow).values(
                        number=number, call_uniqueid=call_uniqueid, created_by=actor.id,
                        created_at=at.timestamp(), channel=channel, **columns))
                    key = result.inserted_primary_key[0]
                    done = replace(order, id=str(key), number=number)
                    rec = replace(record, order_id=str(key))
                    await conn.execute(update(OrderRow).where(OrderRow.id == key)
                                       .values(snapshot=order_to_json(done)))
                    event = _event_row(rec)
                    await conn.execute(insert(OrderEventRow).values(
                        {c.key: getattr(event, c.key) for c in OrderEventRow.__table__.columns
                         if c.key != "id"}))
                    if once is not None:
                        await conn.execute(update(_REQUESTS).where(
                            _REQUESTS.c.channel == once[0], _REQUESTS.c.client_key == once[1])
                            .values(order_id=key))
                return done, rec
            except _Claimed:
                raise AlreadyFiled(await self._filed(once)) from None  # type: ignore[arg-type]
            except IntegrityError:  # the number was taken (another writer): re-read max()
                continue
            except BaseException:  # nothing written: give the number back if still ours
                if number and self._numbers.get(day) == int(number.split("-")[1]):
                    self._numbers[day] -= 1
                raise
        raise OrderConflict("could not number the work order; try again")

    async def _claim(self, conn: AsyncConnection, once: tuple[str, str], at: datetime) -> None:
        """Claim (scope, key) in this transaction; a key used before raises
        :class:`_Claimed` (the transaction is then rolled back)."""
        try:
            await conn.execute(insert(_REQUESTS).values(
                channel=once[0], client_key=once[1], order_id=None, at=at.timestamp()))
        except IntegrityError:
            raise _Claimed from None

    async def _filed(self, once: tuple[str, str]) -> int | None:
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(_REQUESTS.c.order_id).where(
                _REQUESTS.c.channel == once[0], _REQUESTS.c.client_key == once[1]))
        return None if found is None else int(found)

    async def _next_number(self, s: AsyncSession | AsyncConnection, at: datetime, *,
                           reread: bool = False) -> str:
        """The day's next number, from a per-day counter in memory.

        The counter starts from ``max(number)`` the first time a day is numbered
        (and again with ``reread``, after the unique constraint refused a number
        another writer took), so a create costs no extra query.
        """
        day = at.astimezone(self.tz).date()
        last = self._numbers.get(day)
        if last is None or reread:
            found = await s.scalar(select(func.max(OrderRow.number))
                                   .where(OrderRow.number.like(f"{day:%Y%m%d}-%")))
            # read after the query: creates of this process running meanwhile may have
            # numbered past what is committed (they all started from the same max)
            last = max(int(found.split("-")[1]) if found else 0,
                       self._numbers.get(day) or 0)
            if len(self._numbers) > 7:  # only recent days are numbered
                self._numbers.clear()
        self._numbers[day] = last + 1
        return order_number(day, last + 1)

    def _fill(self, row: OrderRow, o: Order) -> None:
        for key, value in _columns(o).items():
            setattr(row, key, value)

    # ---- read

    async def get(self, order_id: str) -> Order:
        async with self.sessions() as s:
            return self._order(await self._row(s, order_id))[0]

    async def _row(self, s: AsyncSession, order_id: str) -> OrderRow:
        """The row of an order by its id, or by its number (``YYYYMMDD-NNNNNN``: links
        to an order from text that only carries its number)."""
        if isinstance(order_id, str) and len(order_id) == 15 and order_id[8] == "-" \
                and order_id.replace("-", "").isdigit():
            row = await s.scalar(select(OrderRow).where(OrderRow.number == order_id))
            if row is None:
                raise OrderNotFound(order_id)
            return row
        try:
            key = int(order_id)
        except (TypeError, ValueError):
            raise OrderNotFound(order_id) from None
        row = await s.get(OrderRow, key) if 0 < key < 2**62 else None
        if row is None:
            raise OrderNotFound(order_id)
        return row

    def _order(self, row: OrderRow) -> tuple[Order, AuditRecord | None]:
        """The row's order; for an order saved by a console draft, its adoption record."""
        if row.snapshot is not None:
            return order_from_json(row.snapshot), None
        at = datetime.fromtimestamp(row.created_at, self.tz)
        deadlines = deadlines_for(None, Urgency.NORMAL, at, self.config.calendar,
                                  self.config.policy)
        actor = Actor(row.created_by, Role.OPERATOR, self.config.directory.centre.id)
        order, record = open_order(
            order_id=str(row.id), number=row.number, actor=actor, at=at,
            caller=Caller(number=row.caller), category=row.category,
            text=row.text if row.text.strip() else "-", deadlines=deadlines)
        return order, record

    async def call_uniqueid(self, order_id: str) -> str | None:
        """The uniqueid of the call the order was taken on, None when there was none."""
        async with self.sessions() as s:
            return (await self._row(s, order_id)).call_uniqueid or None

    async def history(self, order_id: str) -> list[AuditRecord]:
        async with self.sessions() as s:
            row = await self._row(s, order_id)
            rows = await s.scalars(select(OrderEventRow).where(OrderEventRow.order_id == row.id)
                                   .order_by(OrderEventRow.seq))
            return [record_from_row(r) for r in rows]

    async def attempts(self, order_id: str | None = None) -> list[Attempt]:
        async with self.sessions() as s:
            q = select(AttemptRow).order_by(AttemptRow.id)
            if order_id is not None:
                q = q.where(AttemptRow.order_id == int(order_id))
            return [attempt_from_row(r) for r in await s.scalars(q)]

    async def dispatches(self, order_id: str) -> list[DispatchRow]:
        async with self.sessions() as s:
            return list(await s.scalars(select(DispatchRow).where(
                DispatchRow.order_id == int(order_id)).order_by(DispatchRow.id)))

    async def event_count(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(OrderEventRow)) or 0)

    async def list(self, *, state: str | None = None, department: str | None = None,
                   caller: str | None = None, page: int = 1, per_page: int = 20
                   ) -> tuple[list[Order], int]:
        """A page of orders, newest first, and how many match in all."""
        conditions = []
        if state:
            conditions.append(OrderRow.status == state)
        if department:
            conditions.append(or_(OrderRow.lead_department == department,
                                  OrderRow.co_handlers.like(f"%,{department},%")))
        if caller:
            conditions.append(OrderRow.caller == caller)
        async with self.sessions() as s:
            total = await s.scalar(select(func.count()).select_from(OrderRow)
                                   .where(*conditions))
            rows = await s.scalars(select(OrderRow).where(*conditions)
                                   .order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
                                   .offset((page - 1) * per_page).limit(per_page))
            return [self._order(r)[0] for r in rows], int(total or 0)

    # ---- steps

    def transition_known(self, order: Order, step: str) -> bool:
        """True when ``step`` is a step the order's state has (else: 409 not now)."""
        try:
            return (order.state, Step(step)) in TRANSITIONS
        except ValueError:
            return False

    async def step(self, order_id: str, step: Step | str, actor: Actor, *,
                   reason: str | SystemReason | None = None, at: datetime | None = None,
                   **data: Any
                   ) -> tuple[Order, AuditRecord]:
        """Take one step in one transaction; a refusal is stored, then raised."""
        refused: OrderError | None = None
        key = 0
        async with self.sessions() as s, s.begin():
            row = await self._row(s, order_id)
            key = row.id
            order, adopted = self._order(row)
            when = at or self.now()
            if step == Step.REOPEN and "handling_due" not in data and (
                    order.state, Step.REOPEN) in TRANSITIONS:
                data["handling_due"] = deadlines_for(
                    order, order.urgency, when, self.config.calendar, self.config.policy
                ).handling
            try:
                new, record = apply(order, step, actor, when, reason, **data)
            except OrderError as err:
                refused = err
            else:
                await self._save(s, row.id, order, new, adopted, record)
        if refused is not None:
            if refused.attempt is not None:
                await self._save_attempt(key, refused.attempt)
            raise refused
        return new, record

    async def _save(self, s: AsyncSession, key: int, old: Order, new: Order,
                    adopted: AuditRecord | None, record: AuditRecord) -> None:
        if adopted is not None:  # the draft's order joins the lifecycle
            s.add(_event_row(adopted))
            same = OrderRow.snapshot.is_(None)
        else:
            same = OrderRow.version == old.version
        result = await s.execute(update(OrderRow).where(OrderRow.id == key, same)
                                 .values(**_columns(new)))
        if result.rowcount != 1:
            raise OrderConflict(str(key))
        s.add(_event_row(record))
        for entry in new.dispatch_history[len(old.dispatch_history):]:
            s.add(DispatchRow(order_id=key, seq=record.seq, department=entry.department,
                              lead=entry.lead, at=entry.at.timestamp()))
        try:
            await s.flush()
        except IntegrityError:
            raise OrderConflict(str(key)) from None
        if str(record.step) in facts.FOLDED_STEPS:  # its assessment part, same transaction
            await facts.refresh(s, [key])

    async def _save_attempt(self, key: int, a: Attempt) -> None:
        async with self.sessions() as s, s.begin():
            s.add(AttemptRow(order_id=key, step=a.step[:32], actor_id=a.actor_id,
                             role=str(a.role), unit=a.unit, at=a.at.timestamp(),
                             at_iso=a.at.isoformat(), state=str(a.state), reason=a.reason,
                             data=encode(_json_safe(a.data)), error=a.error,
                             message=a.message))

    async def record_citizen_keys(self, order_id: str, resolved: bool,
                                  sat_operator: int | None, sat_department: int | None,
                                  call_id: str | None, at: datetime | None = None
                                  ) -> tuple[Order, AuditRecord]:
        """The IVR return visit: the citizen's own key presses (回访评价).

        Starts the return visit first (as the system) if the order is waiting for one.
        """
        order = await self.get(order_id)
        if order.state in (State.COMPLETED, State.RESOLVED_ON_CALL):
            order, _ = await self.step(order_id, Step.START_RETURN_VISIT, SYSTEM, at=at)
        return await self.step(
            order_id, answer_step(order, resolved), IVR, at=at,
            source=AnswerSource.CITIZEN_KEYS, resolved=resolved,
            satisfaction_operator=sat_operator, satisfaction_department=sat_department,
            call_id=call_id)

    async def fire_due(self, now: datetime | None = None) -> list[AuditRecord]:
        """Apply every deadline passed by ``now`` (the system flags it as overdue)."""
        now = now or self.now()
        async with self.sessions() as s:
            rows = await s.scalars(select(OrderRow).where(
                OrderRow.status.in_([str(x) for x in TIMED_STATES]),
                OrderRow.snapshot.is_not(None)))
            orders = [order_from_json(r.snapshot) for r in rows if r.snapshot is not None]
        fired = []
        for timer in due_timers(orders, now):
            try:
                _, record = await self.step(timer.order_id, Step.FLAG_OVERDUE, SYSTEM,
                                            at=timer.at, timer=timer.kind,
                                            deadline=timer.deadline)
            except (OrderError, OrderConflict) as exc:
                log.info("timer not applied", order=timer.order_id, error=str(exc))
                continue
            fired.append(record)
        return fired

    # ---- supervision and figures

    async def anomalies(self, now: datetime | None = None, *, days: int = 180
                        ) -> list[Anomaly]:
        """Every detector of :mod:`callcenter.orders.supervision` over recent orders."""
        now = now or self.now()
        cutoff = (now - timedelta(days=days)).timestamp()
        async with self.sessions() as s:
            recent = select(OrderRow.id).where(or_(
                OrderRow.created_at >= cutoff,
                OrderRow.status.in_([str(x) for x in TIMED_STATES])))
            rows = await s.scalars(select(OrderEventRow).where(
                OrderEventRow.order_id.in_(recent)).order_by(OrderEventRow.id))
            records = [record_from_row(r) for r in rows]
            attempts = [attempt_from_row(r) for r in await s.scalars(
                select(AttemptRow).where(AttemptRow.at >= cutoff))]
        return detect_all(records, now, attempts)

    async def report(self, start: date, end: date, period: str = "day"
                     ) -> list[dict[str, Any]]:
        """Work-order figures per day or per week (Monday) for orders accepted in
        [start, end]: METRICS.md's 受理率, 直接答复率, 一次办结率, on time, citizen-confirmed
        resolution, satisfaction (operator, department), and returns per department."""
        if period not in ("day", "week"):
            raise ValueError("period must be 'day' or 'week'")
        first = datetime.combine(start, datetime.min.time(), self.tz)
        last = datetime.combine(end + timedelta(days=1), datetime.min.time(), self.tz)
        async with self.sessions() as s:
            rows = await s.scalars(select(OrderRow).where(
                OrderRow.created_at >= first.timestamp(), OrderRow.created_at < last.timestamp()))
            orders = [self._order(r)[0] for r in rows]
            returns = (await s.execute(select(OrderEventRow.at, OrderEventRow.unit).where(
                OrderEventRow.step == str(Step.RETURN), OrderEventRow.at >= first.timestamp(),
                OrderEventRow.at < last.timestamp()))).all()
            answered = (await s.scalars(select(CallRow.answered_at).where(
                CallRow.answered_at >= first.timestamp(),
                CallRow.answered_at < last.timestamp()))).all()

        def bucket(day: date) -> date:
            return day - timedelta(days=day.weekday()) if period == "week" else day

        def local_day(ts: float) -> date:
            return datetime.fromtimestamp(ts, self.tz).date()

        buckets: dict[date, list[Order]] = {}
        day = start
        while day <= end:
            buckets.setdefault(bucket(day), [])
            day += timedelta(days=1)
        for o in orders:
            buckets.setdefault(bucket(o.accepted_at.astimezone(self.tz).date()), []).append(o)
        calls: dict[date, int] = {}
        for ts in answered:
            calls[bucket(local_day(ts))] = calls.get(bucket(local_day(ts)), 0) + 1
        by_dept: dict[date, dict[str, int]] = {}
        for ts, unit in returns:
            counts = by_dept.setdefault(bucket(local_day(ts)), {})
            counts[unit] = counts.get(unit, 0) + 1
        out = []
        for key in sorted(buckets):
            f = work_order_figures(buckets[key])
            answered_calls = calls.get(key, 0)
            out.append({
                "period": period, "start": key.isoformat(), "orders": f.orders,
                "answered_calls": answered_calls,
                "acceptance_rate": f.orders / answered_calls if answered_calls else None,
                "resolved_on_call_rate": f.resolved_on_call_rate,
                "first_time_resolution_rate": f.first_time_resolution_rate,
                "on_time_rate": f.on_time_rate, "resolution_rate": f.resolution_rate,
                "satisfaction_operator": vars(f.satisfaction_operator),
                "satisfaction_department": vars(f.satisfaction_department),
                "returns_by_department": dict(sorted(by_dept.get(key, {}).items())),
            })
        return out

    # ---- the screen pop

    async def caller_history(self, caller_num: str) -> dict[str, list[dict[str, Any]]]:
        """HOOK for the console's screen pop: earlier calls, and the caller's work orders
        with the open ones first (a repeat caller's open order shows at once)."""
        if not caller_num:
            return {"calls": [], "work_orders": []}
        final = (str(State.EVALUATED),)
        async with self.sessions() as s:
            calls = await s.scalars(select(CallRow).where(CallRow.caller_num == caller_num)
                                    .order_by(CallRow.joined_at.desc()).limit(20))
            rows = list(await s.scalars(select(OrderRow).where(OrderRow.caller == caller_num)
                                        .order_by(OrderRow.created_at.desc()).limit(50)))
        rows.sort(key=lambda r: (r.status in final, -r.created_at))
        return {
            "calls": [{"uniqueid": c.uniqueid, "queue": c.queue, "joined_at": c.joined_at,
                       "outcome": c.outcome, "agent": c.agent, "interface": c.interface,
                       "hotline": c.hotline,
                       "category": c.category, "hold_time": c.hold_time,
                       "talk_time": c.talk_time} for c in calls],
            "work_orders": [{"id": r.id, "number": r.number, "caller": r.caller,
                             "call_uniqueid": r.call_uniqueid, "category": r.category,
                             "text": r.text, "created_by": r.created_by,
                             "created_at": r.created_at, "status": r.status,
                             "open": r.status not in final,
                             "handling_due": r.handling_due, "urgency": r.urgency,
                             "lead_department": r.lead_department} for r in rows[:20]],
        }


def _columns(o: Order) -> dict[str, Any]:
    """The indexed columns of ``work_orders`` for an order, and its snapshot."""
    return {
        "status": str(o.state), "category": o.category[:60], "text": o.text,
        "caller": o.caller.number[:40], "caller_name": o.caller.name[:120],
        "urgency": str(o.urgency), "confidential": o.confidential, "owner_unit": o.owner_unit,
        "lead_department": o.lead_department,
        "co_handlers": "".join(f",{c}" for c in o.co_handlers) + "," if o.co_handlers else "",
        "location": o.location[:400], "updated_at": o.updated_at.timestamp(),
        "handling_due": o.handling_due.timestamp(), "version": o.version,
        "snapshot": order_to_json(o),
        "search_text": order_search_text(o.text, o.category, o.location, state=str(o.state),
                                         departments=(o.lead_department or "",
                                                      *o.co_handlers)),
        "request_type": o.intake.request_type[:16], "caller_gender": o.intake.gender[:8],
        "district": o.intake.district[:64], "street": o.intake.street[:64],
        "reply_method": o.intake.reply_method[:16],
    }


def _event_row(r: AuditRecord) -> OrderEventRow:
    return OrderEventRow(
        order_id=int(r.order_id), seq=r.seq, step=str(r.step), actor_id=r.actor_id,
        role=str(r.role), unit=r.unit, at=r.at.timestamp(), at_iso=r.at.isoformat(),
        from_state=str(r.from_state) if r.from_state else None, to_state=str(r.to_state),
        reason=r.reason, data=encode(r.data))


def _json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """Refused data may hold anything a client sent: keep what JSON can carry."""
    safe: dict[str, Any] = {}
    for key, value in data.items():
        if value is None or isinstance(value, bool | int | float | str | datetime):
            safe[key] = value
        elif isinstance(value, Sequence):
            safe[key] = [v if isinstance(v, bool | int | float | str) else repr(v)
                         for v in value]
        else:
            safe[key] = repr(value)
    return safe


def account_actor(username: str, role: str, department: str | None, centre: str) -> Actor:
    """The core's actor for a console account (handlers act for their department)."""
    core = ACCOUNT_ROLES.get(role)
    if core is None:
        raise ValueError(f"no work-order role for account role {role!r}")
    unit = (department or "") if core is Role.DEPARTMENT else centre
    return Actor(username, core, unit)

