"""Every channel into one desk (一号对外): orders filed by a portal or mini-programme.

Theory of operation
-------------------
Each channel (web portal, WeChat, the 12345 app, ...; :data:`CHANNELS`) gets its own
API keys (``callcenter intake-keys create wechat``).  Only a SHA-256 of a key is
stored (``intake_keys``); a key names its channel, so a client cannot file under
another channel, and a revoked key stops at once.

A client sends an idempotency key with every order.  The pair (channel, key) is
claimed in ``intake_requests`` in the same transaction that writes the order (a
unique constraint; :meth:`WorkOrders.create` ``once``), so two retries racing each
other cannot both file and a crash leaves both or neither: the second gets the
first's order back (:class:`Filed` with ``created`` False), or, if the first is
still being written, :class:`InFlight`.  A create that fails leaves no claim.

:class:`RateLimit` is a token bucket per key (pure: time comes in as an argument).
Orders are accepted by the actor ``intake:<channel>`` in the operator's role, so
they start as 受理 at the centre like a call's, with the channel recorded.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, String, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from callcenter.orders.channels import CHANNELS
from callcenter.orders.lifecycle import Actor, Caller, Order, Role, Urgency
from callcenter.orders.store import AlreadyFiled, WorkOrders

PHONE_ONLY = ("phone",)
ONLINE = tuple(c for c in CHANNELS if c not in PHONE_ONLY)
"""Channels that may have intake keys (the phone channel files through the console)."""


class _Base(DeclarativeBase):
    pass


class IntakeKeyRow(_Base):
    __tablename__ = "intake_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(80), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class InFlight(Exception):
    """The same idempotency key is being filed right now: retry in a moment."""


@dataclass(frozen=True)
class Filed:
    """The order for an idempotency key; ``created`` False when a retry found it."""

    order: Order
    created: bool


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class RateLimit:
    """Token bucket: ``burst`` requests at once, then ``per_minute`` (pure)."""

    def __init__(self, per_minute: float = 60.0, burst: int = 20) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.buckets: dict[int, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take(self, key_id: int, now: float) -> float:
        """0.0 when allowed (one token taken), else the seconds to wait."""
        tokens, at = self.buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1.0:
            self.buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate


class Intake:
    """Keys, idempotent filing and the per-key rate limit, over one :class:`WorkOrders`."""

    def __init__(self, wo: WorkOrders, *, limit: RateLimit | None = None) -> None:
        self.wo = wo
        self.limit = limit or RateLimit()

    async def create_key(self, channel: str, label: str = "") -> tuple[int, str]:
        """A new key for ``channel``: its id and the key (shown once, stored hashed)."""
        if channel not in ONLINE:
            raise ValueError(f"channel must be one of {', '.join(ONLINE)}")
        key = f"hk_{channel}_{secrets.token_urlsafe(24)}"
        async with self.wo.sessions() as s, s.begin():
            row = IntakeKeyRow(channel=channel, label=label[:80], key_hash=key_hash(key),
                               created_at=self.wo.clock())
            s.add(row)
            await s.flush()
            return row.id, key

    async def revoke(self, key_id: int) -> bool:
        async with self.wo.sessions() as s, s.begin():
            result = await s.execute(update(IntakeKeyRow).where(
                IntakeKeyRow.id == key_id, IntakeKeyRow.revoked_at.is_(None))
                .values(revoked_at=self.wo.clock()))
            return bool(result.rowcount)

    async def keys(self) -> list[dict[str, Any]]:
        async with self.wo.sessions() as s:
            rows = await s.scalars(select(IntakeKeyRow).order_by(IntakeKeyRow.id))
            return [{"id": r.id, "channel": r.channel, "label": r.label,
                     "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows]

    async def authenticate(self, key: str) -> tuple[int, str] | None:
        """(key id, channel) for a valid, unrevoked key; None otherwise."""
        if not key or len(key) > 200:
            return None
        async with self.wo.sessions() as s:
            row = await s.scalar(select(IntakeKeyRow).where(
                IntakeKeyRow.key_hash == key_hash(key), IntakeKeyRow.revoked_at.is_(None)))
            return None if row is None else (row.id, row.channel)

    async def file(self, channel: str, client_key: str, *, text: str, caller: Caller,
                   category: str = "", location: str = "", confidential: bool = False
                   ) -> Filed:
        """File one order for ``(channel, client_key)`` at most once (see the module)."""
        wo = self.wo
        actor = Actor(f"intake:{channel}", Role.OPERATOR, wo.config.directory.centre.id)
        try:
            order, _ = await wo.create(actor, caller=caller, category=category, text=text,
                                       urgency=Urgency.NORMAL, confidential=confidential,
                                       location=location, channel=channel,
                                       once=(channel, client_key))
        except AlreadyFiled as exc:
            if exc.order_id is None:
                raise InFlight(client_key) from None
            return Filed(await wo.get(str(exc.order_id)), False)
        return Filed(order, True)
