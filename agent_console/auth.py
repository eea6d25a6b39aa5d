"""Accounts, passwords, web sessions and the failed-login brake.

* Passwords are hashed with Argon2id (argon2-cffi), a memory-hard function; the
  hashing runs in a worker thread so a login never stalls the event loop.
* A session is a random token in an HttpOnly, SameSite=Strict cookie; the
  database keeps only its SHA-256 and a per-session CSRF token that every
  state-changing request must echo in the ``X-CSRF-Token`` header.
* :class:`LoginThrottle` is pure (the clock is passed in): after a few failures
  for one account from one address, each further attempt from there must wait
  longer; nothing is ever locked.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from agent_console.models import Role, SessionRow, UserRow
from callcenter.db import Store

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
OPERATOR_NAME = re.compile(r"^op(\d+)$")
MIN_PASSWORD = 4
SESSION_MAX_S = 14 * 3600  # a shift and a half
SESSION_IDLE_S = 4 * 3600
DEMO_PASSWORD = "demo"

log = structlog.get_logger(__name__)


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    disabled: bool
    member_name: str
    interface: str
    queues: tuple[str, ...]

    @classmethod
    def from_row(cls, row: UserRow) -> User:
        return cls(row.id, row.username, row.display_name or row.username, Role(row.role),
                   row.disabled, row.member_name, row.interface,
                   tuple(q for q in row.queues.split(",") if q))

    @property
    def is_supervisor(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMIN)

    def public(self) -> dict[str, object]:
        return {"username": self.username, "display_name": self.display_name,
                "role": self.role.value, "member": self.member_name,
                "interface": self.interface, "queues": list(self.queues)}


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    user: User
    csrf: str
    expires_at: float


def default_member(username: str) -> tuple[str, str]:
    """The demo mapping: operator ``opN`` is member ``agent(1000+N)`` on ``Local/(1000+N)@agents/n``."""
    m = OPERATOR_NAME.match(username)
    if not m:
        return "", ""
    ext = 1000 + int(m.group(1))
    return f"agent{ext}", f"Local/{ext}@agents/n"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------- passwords


class Passwords:
    """Argon2id hashing and checking, off the event loop."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when ``password`` matches; a missing account costs the same time."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash(secrets.token_hex(8))
            stored = self._dummy
            password = password + "\x00never"
        try:
            return await asyncio.to_thread(self.hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True


class HashOnce(Passwords):
    """Passwords that hash each distinct password once and reuse it (same salt).

    Only for seeding the demo's accounts, which all share the well-known password
    ``demo`` on a loopback-only service: Argon2id costs about 0.1 s a hash (seconds
    when the machine is busy), a dozen accounts were most of the demo's start-up."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        super().__init__(hasher)
        self._made: dict[str, str] = {}

    async def hash(self, password: str) -> str:
        if password not in self._made:
            self._made[password] = await super().hash(password)
        return self._made[password]


# --------------------------------------------------------------------------- throttle


@dataclass(slots=True)
class _Failures:
    times: list[float] = field(default_factory=list)


class LoginThrottle:
    """The failed-login brake, per (account, address): growing delays, never a lock.

    Each (account, address) pair has ``free`` failures inside ``window_s`` that cost
    nothing; after that, an attempt from that address for that account is refused
    until ``base_s * 2**(extra-1)`` seconds (at most ``max_s``) after its last
    failure.  Nothing else is slowed: an outsider guessing from another address
    cannot keep the real operator out, and one operator's typos do not slow the
    rest of a centre floor behind the same NAT address (the issue-12 fault: four
    failures from anywhere locked the account, ten from one address locked every
    account on it).  A success clears the pair.

    :meth:`repeated` lists accounts with ``alert_after`` or more failures in the
    window from any addresses, for the supervisors' alert (``login_failures``).
    At most ``max_keys`` pairs are kept (expired ones are dropped first, then the
    oldest), so a flood of invented names cannot grow memory without bound.
    """

    def __init__(self, *, free: int = 3, window_s: float = 900.0, base_s: float = 1.0,
                 max_s: float = 60.0, alert_after: int = 5, max_keys: int = 20_000) -> None:
        self.free, self.window_s, self.base_s, self.max_s = free, window_s, base_s, max_s
        self.alert_after, self.max_keys = alert_after, max_keys
        self._by_pair: dict[tuple[str, str], _Failures] = {}

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        f = self._by_pair.get(key)
        if f is None:
            return []
        f.times = [t for t in f.times if now - t < self.window_s]
        if not f.times:
            del self._by_pair[key]
            return []
        return f.times

    def retry_after(self, username: str, ip: str, now: float) -> float:
        """Seconds before another attempt for this account from this address is allowed."""
        times = self._recent((username.lower(), ip), now)
        extra = len(times) - self.free
        if extra <= 0:
            return 0.0
        wait = min(self.max_s, self.base_s * 2 ** min(extra - 1, 30))
        return max(0.0, times[-1] + wait - now)

    def failed(self, username: str, ip: str, now: float) -> int:
        """Record a failure; return the pair's failures inside the window."""
        key = (username.lower(), ip)
        if key not in self._by_pair and len(self._by_pair) >= self.max_keys:
            for old in list(self._by_pair):
                self._recent(old, now)
            while len(self._by_pair) >= self.max_keys:  # still full: forget the oldest
                del self._by_pair[min(self._by_pair, key=lambda k: self._by_pair[k].times[-1])]
        self._recent(key, now)
        times = self._by_pair.setdefault(key, _Failures()).times
        times.append(now)
        return len(times)

    def succeeded(self, username: str, ip: str) -> None:
        self._by_pair.pop((username.lower(), ip), None)

    def repeated(self, now: float) -> list[tuple[str, int, int, float]]:
        """(account, failures, addresses, first failure) for accounts with at least
        ``alert_after`` failures inside the window, most failures first."""
        per: dict[str, list[Any]] = {}
        for (name, _ip), f in list(self._by_pair.items()):
            times = [t for t in f.times if now - t < self.window_s]
            if times:
                entry = per.setdefault(name, [0, 0, times[0]])
                entry[0] += len(times)
                entry[1] += 1
                entry[2] = min(entry[2], times[0])
        found = [(n, e[0], e[1], e[2]) for n, e in per.items() if e[0] >= self.alert_after]
        return sorted(found, key=lambda r: (-r[1], r[0]))


# --------------------------------------------------------------------------- accounts


class Users:
    """Accounts and sessions in the database (tables of migration 0002)."""

    def __init__(self, engine: AsyncEngine, passwords: Passwords | None = None, *,
                 clock: Callable[[], float] = time.time, seen_every: float = 30.0) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.passwords = passwords or Passwords()
        self.clock = clock
        # Sessions' last_seen, batched: kept here, written in one statement at most
        # every ``seen_every`` s (with jitter), not one write per request or socket.
        self.seen_every = seen_every
        self._seen: dict[str, float] = {}  # token hash -> last seen, not yet written
        self._flush_at = 0.0

    # ---- accounts

    async def get(self, username: str) -> UserRow | None:
        async with self.sessions() as s:
            return await s.scalar(select(UserRow).where(UserRow.username == username))

    async def get_many(self, usernames: Iterable[str]) -> dict[str, UserRow]:
        """{username: row} of those that exist, in one query (at most 1,000 names)."""
        names = list(dict.fromkeys(usernames))[:1000]
        if not names:
            return {}
        async with self.sessions() as s:
            rows = await s.scalars(select(UserRow).where(UserRow.username.in_(names)))
            return {r.username: r for r in rows}

    async def display_names(self) -> dict[str, str]:
        """{member name: display name} of every account with a member name, read as two
        columns (the wallboard's names, read every minute: 5,000 accounts read as
        objects held the core's loop for ~100 ms)."""
        async with self.sessions() as s:
            rows = await s.execute(select(UserRow.member_name, UserRow.display_name,
                                          UserRow.username)
                                   .where(UserRow.member_name.is_not(None))
                                   .order_by(UserRow.username))  # (a shared member name:
            return {m: d or u for m, d, u in rows if m}  # the last username, as before)

    async def all(self) -> list[User]:
        async with self.sessions() as s:
            rows = await s.scalars(select(UserRow).order_by(UserRow.username))
            return [User.from_row(r) for r in rows]

    async def add(self, username: str, password: str, role: Role | str, *,
                  display_name: str = "", member_name: str | None = None,
                  interface: str | None = None, queues: list[str] | None = None) -> User:
        if not USERNAME.match(username):
            raise UserError("a username is 1-64 letters, digits, '_', '.' or '-'")
        try:
            role = Role(role)
        except ValueError:
            raise UserError(f"role must be one of {', '.join(r.value for r in Role)}") from None
        _check_password(password)
        default_name, default_iface = default_member(username)
        member_name = default_name if member_name is None else member_name
        interface = default_iface if interface is None else interface
        if role is Role.OPERATOR and not (member_name and interface):
            raise UserError(f"operator {username} needs --member and --interface "
                            "(no default for names other than opN)")
        if await self.get(username) is not None:
            raise UserError(f"user {username} already exists")
        now = self.clock()
        row = UserRow(username=username, display_name=display_name or username, role=role.value,
                      password_hash=await self.passwords.hash(password), disabled=False,
                      member_name=member_name or "", interface=interface or "",
                      queues=",".join(queues or []), created_at=now, updated_at=now)
        async with self.sessions() as s, s.begin():
            s.add(row)
        return User.from_row(row)

    async def change(self, username: str, *, password: str | None = None,
                     disabled: bool | None = None, member_name: str | None = None,
                     interface: str | None = None, queues: list[str] | None = None,
                     role: Role | str | None = None) -> User:
        """Change an account; a new password or disabling ends its open sessions."""
        values: dict[str, object] = {"updated_at": self.clock()}
        if password is not None:
            _check_password(password)
            values["password_hash"] = await self.passwords.hash(password)
        if disabled is not None:
            values["disabled"] = disabled
        if member_name is not None:
            values["member_name"] = member_name
        if interface is not None:
            values["interface"] = interface
        if queues is not None:
            values["queues"] = ",".join(queues)
        if role is not None:
            try:
                values["role"] = Role(role).value
            except ValueError:
                raise UserError(f"role must be one of {', '.join(r.value for r in Role)}"
                                ) from None
        async with self.sessions() as s, s.begin():
            row = await s.scalar(select(UserRow).where(UserRow.username == username))
            if row is None:
                raise UserError(f"no user {username}")
            for k, v in values.items():
                setattr(row, k, v)
            if password is not None or disabled:
                await s.execute(delete(SessionRow).where(SessionRow.user_id == row.id))
        return User.from_row(row)

    async def authenticate(self, username: str, password: str) -> User | None:
        """The account if the password matches and it is enabled, else None."""
        row = await self.get(username) if USERNAME.match(username) else None
        ok = await self.passwords.verify(row.password_hash if row else None, password)
        if not ok or row is None or row.disabled:
            return None
        if self.passwords.needs_rehash(row.password_hash):
            await self.change(username, password=password)
        return User.from_row(row)

    # ---- sessions

    async def open_session(self, user: User, ip: str = "") -> tuple[str, Session]:
        """A new session: (cookie token, session).  Only the token's hash is stored."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(token_hash(token), user, secrets.token_urlsafe(32), now + SESSION_MAX_S)
        async with self.sessions() as s, s.begin():
            s.add(SessionRow(token_hash=session.token_hash, user_id=user.id,
                             csrf_token=session.csrf, created_at=now, last_seen=now,
                             expires_at=session.expires_at, ip=ip[:64]))
        return token, session

    async def session(self, token: str | None) -> Session | None:
        """The live session for a cookie token (enabled user, not expired, not idle)."""
        if not token or len(token) > 100:
            return None
        h = token_hash(token)
        now = self.clock()
        async with self.sessions() as s:
            found = (await s.execute(
                select(SessionRow, UserRow).join(UserRow, UserRow.id == SessionRow.user_id)
                .where(SessionRow.token_hash == h))).first()
        if found is None:
            return None
        srow, urow = found
        if not self._live(h, urow.disabled, srow.expires_at, srow.last_seen, now):
            return None
        await self._flush_seen_if_due(now)
        return Session(h, User.from_row(urow), srow.csrf_token, srow.expires_at)

    async def alive(self, hashes: Iterable[str]) -> set[str]:
        """Of these session token hashes, the live ones (each is seen now).

        One query for all of them: what the open websockets check every half
        minute, instead of a query (and a write) per socket.
        """
        wanted = list(set(hashes))
        now = self.clock()
        live: set[str] = set()
        for i in range(0, len(wanted), 500):
            async with self.sessions() as s:
                rows = (await s.execute(
                    select(SessionRow.token_hash, SessionRow.expires_at, SessionRow.last_seen,
                           UserRow.disabled)
                    .join(UserRow, UserRow.id == SessionRow.user_id)
                    .where(SessionRow.token_hash.in_(wanted[i:i + 500])))).all()
            for h, expires_at, last_seen, disabled in rows:
                if self._live(h, disabled, expires_at, last_seen, now):
                    live.add(h)
        await self._flush_seen_if_due(now)
        return live

    def _live(self, h: str, disabled: bool, expires_at: float, last_seen: float,
              now: float) -> bool:
        """The validity rules; a live session is noted as seen now (written later)."""
        last_seen = max(last_seen, self._seen.get(h, 0.0))
        if disabled or expires_at <= now or now - last_seen > SESSION_IDLE_S:
            self._seen.pop(h, None)
            return False
        if now - last_seen > 60:
            self._seen[h] = now
        return True

    async def _flush_seen_if_due(self, now: float) -> None:
        if self._seen and now >= self._flush_at:
            self._flush_at = now + self.seen_every * (1.0 + 0.25 * random.random())
            try:
                await self.flush_seen()
            except Exception:  # kept, written at the next flush
                log.warning("could not write sessions' last_seen; will retry", exc_info=True)

    async def flush_seen(self) -> None:
        """Write the sessions' pending last_seen times, in one statement."""
        pending, self._seen = self._seen, {}
        if not pending:
            return
        table = SessionRow.__table__
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(table).where(table.c.token_hash == bindparam("h"))
                    .values(last_seen=bindparam("t")),
                    [{"h": h, "t": t} for h, t in pending.items()])
        except Exception:  # keep them for the next time; a session is never lost for this
            for h, t in pending.items():
                self._seen.setdefault(h, t)
            raise

    async def close_session(self, session: Session) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(delete(SessionRow).where(SessionRow.token_hash == session.token_hash))


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD or len(password) > 256:
        raise UserError(f"a password is {MIN_PASSWORD} to 256 characters")


async def seed_demo_users(store: Store, *, passwords: Passwords | None = None) -> list[str]:
    """The demo's accounts (password ``demo``): ``sup1`` and operators ``op1``…``op8``.

    Creates only those missing; returns the names created.  Supervisor ``supN``
    has the phone ``Local/(1900+N)@agents`` (the PBX simulator's supervisor
    phones, used to listen in on calls); a ``supN`` left from an older demo
    database without a phone is given it.  The demo binds to loopback only:
    never call this for a service reachable from a network.
    """
    users = Users(store.engine, passwords)
    wanted = [("sup1", Role.SUPERVISOR, "值班长 1")] + [
        (f"op{n}", Role.OPERATOR, f"话务员 {n}") for n in range(1, 9)]
    created = []
    for name, role, display in wanted:
        phone = (f"Local/{1900 + int(name[3:])}@agents"
                 if role is Role.SUPERVISOR and name[3:].isdigit() else None)
        row = await users.get(name)
        if row is None:
            await users.add(name, DEMO_PASSWORD, role, display_name=display, interface=phone)
            created.append(name)
        elif phone and not row.interface:
            await users.change(name, interface=phone)
    return created
