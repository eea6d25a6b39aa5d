"""Persistence: SQLAlchemy 2 async models and the store the service writes through.

SQLite (WAL) is the embedded default; PostgreSQL by URL.  The schema is owned by
Alembic (``callcenter/migrations``); :func:`migrate` brings any database to head
at start-up.  Rows are only ever inserted or updated, never deleted: the agent
state log and the audit log are append-only.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = structlog.get_logger(__name__)
#: The forwarded request's ``X-Action-Id`` while it runs (``agent_console.once``): every
#: audit row written meanwhile carries it.
ACTION_ID: ContextVar[str] = ContextVar("action_id", default="")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    pass


class CallRow(Base):
    """One caller's visit to one queue (the record every metric is computed from).

    ``uniqueid`` is the visit's key: the channel's Uniqueid for its first queue visit,
    ``<Uniqueid>#<n>`` for the n-th (``channel_uniqueid`` is always the channel's);
    ``previous_visit`` links a visit to the one before (transfer, overflow)."""

    __tablename__ = "calls"
    uniqueid: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(80), index=True)
    joined_at: Mapped[float] = mapped_column(Float, index=True)
    caller_num: Mapped[str] = mapped_column(String(40), default="")
    caller_name: Mapped[str] = mapped_column(String(120), default="")
    hotline: Mapped[str] = mapped_column(String(20), default="")
    category: Mapped[str] = mapped_column(String(60), default="")
    ivr_path: Mapped[str] = mapped_column(String(60), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    left_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    hold_time: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent: Mapped[str] = mapped_column(String(80), default="")
    interface: Mapped[str] = mapped_column(String(120), default="")
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    talk_time: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wrap_s: Mapped[float] = mapped_column(Float, default=0.0)
    on_hold_s: Mapped[float] = mapped_column(Float, default=0.0)  # migration 0010
    rings: Mapped[int] = mapped_column(Integer, default=0)
    ring_no_answer: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    channel_uniqueid: Mapped[str] = mapped_column(String(64), default="", index=True)
    visit: Mapped[int] = mapped_column(Integer, default=1)
    previous_visit: Mapped[str] = mapped_column(String(64), default="")
    end_reason: Mapped[str] = mapped_column(String(24), default="")
    settled: Mapped[str] = mapped_column(String(24), default="")  # queue_log, counters...
    pbx: Mapped[str] = mapped_column(String(32), default="")  # "" = the home PBX (0013)


class AgentStateRow(Base):
    """Append-only log of every agent state change: who, when, from, to, why."""

    __tablename__ = "agent_states"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    agent: Mapped[str] = mapped_column(String(80))
    interface: Mapped[str] = mapped_column(String(120))
    old: Mapped[str] = mapped_column(String(16))
    new: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str] = mapped_column(String(80), default="")
    cause: Mapped[str] = mapped_column(String(80), default="")
    pbx: Mapped[str] = mapped_column(String(32), default="")  # "" = the home PBX (0013)
    __table_args__ = (Index("ix_agent_states_agent_at", "agent", "at"),)


class ReportDayRow(Base):
    """A closed local day's summary for reports (migration 0010; see
    :mod:`callcenter.report_days`): ``section`` ``calls`` (the day's atoms) or ``agents``
    (each operator's figures), ``data`` as JSON."""

    __tablename__ = "report_days"
    section: Mapped[str] = mapped_column(String(16), primary_key=True)
    day_start: Mapped[float] = mapped_column(Float, primary_key=True)
    day_end: Mapped[float] = mapped_column(Float)
    built_at: Mapped[float] = mapped_column(Float)
    data: Mapped[Any] = mapped_column(JSON)


def forget_days(lo: float, hi: float) -> Any:
    """Delete the day summaries a row at any time in ``[lo, hi]`` could change."""
    return delete(ReportDayRow).where(ReportDayRow.day_end > lo, ReportDayRow.day_start <= hi)


def _span(rows: Sequence[dict[str, Any]], *keys: str) -> tuple[float, float]:
    """The earliest and latest of the rows' times (a value that is no time is left to
    the database to refuse, row by row)."""
    times = []
    for r in rows:
        for k in keys:
            try:
                times.append(float(r[k]))
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
    return (min(times), max(times)) if times else (0.0, -1.0)


class AuditRow(Base):
    """Append-only audit log for actions taken by people (and the system)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(24))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(120), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The forwarded action's ``X-Action-Id`` (migration 0019; "" when none).
    action_id: Mapped[str] = mapped_column(String(64), default="", index=True)


class ForwardedActionRow(Base):
    """A state-changing request a web worker forwarded with ``X-Action-Id`` (migration
    0019): claimed before it runs, then its first answer (``agent_console.once``)."""

    __tablename__ = "forwarded_actions"
    action_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor: Mapped[str] = mapped_column(String(80), default="")
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(200))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_type: Mapped[str] = mapped_column(String(120), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SetAsideRow(Base):
    """A row the database refused for its own sake (migration 0011): kept here, with
    its error, so supervisors can see it after a restart (``GET /api/set-aside``).
    ``row`` is the refused row as JSON text (ASCII: any value survives)."""

    __tablename__ = "set_aside"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    table_name: Mapped[str] = mapped_column(String(32))
    row: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)


CALL_COLUMNS = [c.name for c in CallRow.__table__.columns]


def sync_url(url: str) -> str:
    """The synchronous driver URL Alembic uses for the same database."""
    u = make_url(url)
    driver = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}.get(
        u.drivername, u.drivername)
    return u.set(drivername=driver).render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``)."""
    def run(connection: Any) -> None:
        cfg = alembic_config(str(engine.url))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    async with engine.begin() as conn:
        await conn.run_sync(run)


def make_engine(url: str) -> AsyncEngine:
    ensure_sqlite_dir(url)
    if make_url(url).get_driver_name() == "asyncpg":
        # A prepared statement's generic plan knows nothing of its parameters: a
        # full-text match under a LIMIT then looks cheap to find by walking the table
        # (or a sort index) row by row, which takes seconds at a million rows.  Plans
        # are made with the values instead (about a millisecond of planning).
        engine = create_async_engine(url, connect_args={
            "server_settings": {"plan_cache_mode": "force_custom_plan"}})
    else:
        engine = create_async_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()
    return engine


TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ProgrammingError, OSError,
             TimeoutError)
"""Faults of the database (away, locked, a table missing), not of a row: every row is
kept and written again later."""
ROW_FAULTS = (SQLAlchemyError, ValueError, OverflowError, TypeError)
"""Faults a row can cause (a number too large for the column, an over-long string on
PostgreSQL, a value the driver cannot encode); TRANSIENT is checked first."""


class RowsUnwritten(Exception):
    """The database went away while rows were written one by one; ``rows`` were not
    written (the others were), ``set_aside`` were refused for their own sake."""

    def __init__(self, rows: list[dict[str, Any]], set_aside: list[tuple[dict[str, Any], str]],
                 cause: BaseException) -> None:
        super().__init__(f"{len(rows)} rows unwritten: {type(cause).__name__}")
        self.rows, self.set_aside, self.cause = rows, set_aside, cause


def describe(exc: BaseException) -> str:
    """One line saying why a row was refused (no row values: they may hold numbers)."""
    orig = getattr(exc, "orig", None)
    text = f"{type(orig or exc).__name__}: {str(orig or exc).splitlines()[0] if str(orig or exc) else ''}"
    return text[:200]


async def write_isolating(write: Callable[[list[dict[str, Any]]], Awaitable[None]],
                          rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Write ``rows`` in one batch; when the batch fails for a row's sake, write them one
    by one and return those refused, each with its error, so that one bad value never
    stops the writer (issue 12: one HoldTime of 2**63 failed every later batch).

    A fault of the database itself (:data:`TRANSIENT`) raises: on the batch, the caller
    keeps every row for later; while writing one by one, :class:`RowsUnwritten` names
    the rows still to write.
    """
    rows = list(rows)
    if not rows:
        return []
    try:
        await write(rows)
        return []
    except TRANSIENT:
        raise
    except ROW_FAULTS:
        pass
    refused: list[tuple[dict[str, Any], str]] = []
    for i, row in enumerate(rows):
        try:
            await write([row])
        except TRANSIENT as exc:
            raise RowsUnwritten(rows[i:], refused, exc) from exc
        except ROW_FAULTS as exc:
            refused.append((row, describe(exc)))
    return refused


class Store:
    """The service's window on the database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._upsert_stmt: Any = None

    async def open(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()

    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT (uniqueid) DO UPDATE, built once and executed with
        many parameter sets (a statement built around 500 rows of literals per flush
        cost more than the writing)."""
        if self._upsert_stmt is None:
            dialect = self.engine.dialect.name
            ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(CallRow)
            update = {c: getattr(ins.excluded, c) for c in CALL_COLUMNS if c != "uniqueid"}
            self._upsert_stmt = ins.on_conflict_do_update(index_elements=["uniqueid"],
                                                          set_=update)
        return self._upsert_stmt

    async def save_calls(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or update call records (one statement, many parameter sets)."""
        if not rows:
            return
        lo, hi = _span(rows, "joined_at", "answered_at")
        async with self.engine.begin() as conn:
            await conn.execute(self._upsert(), [dict(r) for r in rows])
            await conn.execute(forget_days(lo, hi))  # those days' summaries are stale

    async def save_calls_isolating(self, rows: Sequence[dict[str, Any]]
                                   ) -> list[tuple[dict[str, Any], str]]:
        """:meth:`save_calls` through :func:`write_isolating`: the refused rows, with errors."""
        return await write_isolating(self.save_calls, rows)

    async def append_agent_states_isolating(self, rows: Sequence[dict[str, Any]]
                                            ) -> list[tuple[dict[str, Any], str]]:
        return await write_isolating(self.append_agent_states, rows)

    async def append_agent_states(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            lo, hi = _span(rows, "at")
            async with self.engine.begin() as conn:
                await conn.execute(AgentStateRow.__table__.insert(), rows)
                # a state holds into the next day (its figures read the day before)
                await conn.execute(forget_days(lo, hi + 86400))

    async def audit(self, *, at: float, actor: str, role: str, action: str, target: str = "",
                    reason: str = "", data: dict[str, Any] | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(AuditRow.__table__.insert(), [{
                "at": at, "actor": actor, "role": role, "action": action, "target": target,
                "reason": reason, "data": data or {}, "action_id": ACTION_ID.get()}])

    async def keep_set_aside(self, rows: Sequence[tuple[str, dict[str, Any], str, float]]
                             ) -> None:
        """Store refused rows ``(table, row, error, at)`` in ``set_aside`` (one
        transaction; raises when the database is away - the caller keeps them)."""
        if not rows:
            return
        async with self.engine.begin() as conn:
            await conn.execute(insert(SetAsideRow), [
                {"at": at, "table_name": table[:32], "error": error[:4000],
                 "row": json.dumps(row, default=str, sort_keys=True)}
                for table, row, error, at in rows])

    async def set_aside_rows(self, *, since: float = 0.0, limit: int = 1000
                             ) -> list[tuple[str, dict[str, Any], str, float]]:
        """The refused rows since ``since`` (epoch seconds), oldest first, at most
        ``limit`` (the newest)."""
        async with self.sessions() as s:
            found = list(await s.scalars(select(SetAsideRow).where(SetAsideRow.at >= since)
                                         .order_by(SetAsideRow.id.desc()).limit(limit)))
        return [(r.table_name, json.loads(r.row), r.error, r.at) for r in reversed(found)]

    async def open_calls(self) -> list[CallRow]:
        """Visits the database still holds open (waiting, or answered and not ended):
        the service settles them at start (it was not there to see them end)."""
        async with self.sessions() as s:
            res = await s.scalars(select(CallRow).where(
                CallRow.outcome.in_(("waiting", "answered"))).order_by(CallRow.joined_at))
            return list(res)

    async def last_seen(self) -> float | None:
        """The latest moment any stored record speaks of (joined, answered or ended)."""
        async with self.sessions() as s:
            row = (await s.execute(select(func.max(CallRow.joined_at),
                                          func.max(CallRow.answered_at),
                                          func.max(CallRow.ended_at)))).one()
            values = [v for v in row if v is not None]
            return max(values) if values else None

    async def calls_between(self, start: float, end: float) -> list[CallRow]:
        """Call records that joined a queue in [start, end)."""
        async with self.sessions() as s:
            res = await s.scalars(
                select(CallRow).where(CallRow.joined_at >= start, CallRow.joined_at < end)
                .order_by(CallRow.joined_at))
            return list(res)

    async def agent_states(self, agent: str | None = None, limit: int = 1000) -> list[AgentStateRow]:
        async with self.sessions() as s:
            q = select(AgentStateRow).order_by(AgentStateRow.id.desc()).limit(limit)
            if agent:
                q = q.where(AgentStateRow.agent == agent)
            return list(await s.scalars(q))
