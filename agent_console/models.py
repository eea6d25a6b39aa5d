"""Console tables: accounts, web sessions, work-order drafts, minimal work orders.

They share :class:`callcenter.db.Base` with the core tables; the schema itself is
owned by the Alembic migration ``0002_console``.  ``work_orders`` is deliberately
minimal (the full work-order lifecycle is a later issue and will extend it).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callcenter.db import Base


class Role(StrEnum):
    OPERATOR = "operator"  # 话务员: takes calls at the console
    SUPERVISOR = "supervisor"  # 值班长: watches the wallboard, may force agents ready/out
    HANDLER = "handler"  # 承办单位: a department's handler of work orders
    ADMIN = "admin"


class UserRow(Base):
    """One person's account.  Operators map to one queue member (name + interface)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[str] = mapped_column(String(24))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    member_name: Mapped[str] = mapped_column(String(80), default="")
    interface: Mapped[str] = mapped_column(String(120), default="")
    queues: Mapped[str] = mapped_column(String(400), default="")  # comma list; "" = all
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SessionRow(Base):
    """A signed-in browser.  Only a hash of the cookie's token is stored."""

    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    ip: Mapped[str] = mapped_column(String(64), default="")


class DraftRow(Base):
    """A work order being written by one operator; autosaved, so nothing is lost."""

    __tablename__ = "drafts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    call_uniqueid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller: Mapped[str] = mapped_column(String(40), default="")
    category: Mapped[str] = mapped_column(String(60), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    # The structured intake fields as a JSON object (agent_console.intake.DRAFT_KEYS).
    fields: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | submitted
    work_order_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        Index("ix_drafts_owner_status", "owner", "status"),
        Index("ux_drafts_owner_call", "owner", "call_uniqueid", unique=True),
    )


class WorkOrderRow(Base):
    """工单: a citizen's request, accepted at the console.  Minimal for now."""

    __tablename__ = "work_orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)  # YYYYMMDD-NNNNNN
    caller: Mapped[str] = mapped_column(String(40), default="", index=True)
    call_uniqueid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    category: Mapped[str] = mapped_column(String(60), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, index=True)
    status: Mapped[str] = mapped_column(String(24), default="accepted")
