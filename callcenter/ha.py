"""Active/standby cores: a PostgreSQL session advisory lock is the lease.

Two (or more) ``callcenter serve`` with ``[ha] enabled = true`` run against one
PostgreSQL.  Each first takes :class:`Lease`: ``pg_try_advisory_lock(key)`` on a
connection of its own, retried every ``poll_s``.  The one that holds it is the active
core: it opens the AMI links, writes, serves the web port.  The others wait, binding
nothing (nginx's upstream skips a refused port).  The lock lives exactly as long as the
holder's database session: when the active process dies (``kill -9``, a crash, its host
gone -- TCP keepalives end the session within ~11 s), PostgreSQL ends the session and
releases the lock, and the first standby to retry takes it.  No consensus of our own:
PostgreSQL is the arbiter the cores already depend on.

The holder checks its lock connection every ``check_s``; if that session is lost (the
database restarted, the network split), the lock is gone too and another core may be
active already, so the holder must stop at once (:meth:`Lease.lost` fires; ``serve``
exits non-zero and its supervisor restarts it as a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable

import asyncpg
import structlog
from sqlalchemy.engine import make_url

log = structlog.get_logger(__name__)


def lease_key(name: str) -> int:
    """A stable 63-bit key for ``name`` (pg advisory locks take a bigint)."""
    return (zlib.crc32(b"hotline-core:") << 32 | zlib.crc32(name.encode())) & (2**63 - 1)


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` (SQLAlchemy) as a plain libpq DSN for asyncpg."""
    u = make_url(url)
    if u.get_backend_name() != "postgresql":
        raise ValueError("the active/standby lease needs PostgreSQL (database.url)")
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


class Lease:
    """The active core's lease (one PostgreSQL session holding an advisory lock)."""

    def __init__(self, database_url: str, name: str = "hotline", *, poll_s: float = 0.5,
                 check_s: float = 1.0, on_lost: Callable[[], None] | None = None) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.key = lease_key(name)
        self.poll_s = poll_s
        self.check_s = check_s
        self.on_lost = on_lost
        self.held = False
        self.acquired_at: float | None = None
        self.lost = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None

    async def _connect(self) -> asyncpg.Connection:
        # Keepalives: a holder whose host vanishes loses the session (and the lock)
        # within idle + interval * count = 5 + 2 * 3 s.
        return await asyncpg.connect(self.dsn, timeout=5, server_settings={
            "application_name": "hotline-core-lease", "tcp_keepalives_idle": "5",
            "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"})

    async def acquire(self) -> None:
        """Wait until this process holds the lease."""
        waited = False
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._connect()
                if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    break
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("lease: database unreachable; retrying", error=str(exc))
                await self._drop()
            if not waited:
                log.info("standby: another core is active; waiting for the lease")
                waited = True
            await asyncio.sleep(self.poll_s)
        self.held, self.acquired_at = True, time.time()
        log.info("lease taken: this core is active")
        self._watch = asyncio.create_task(self._keep(), name="lease-watch")

    async def _keep(self) -> None:
        assert self._conn is not None
        while True:
            await asyncio.sleep(self.check_s)
            try:
                async with asyncio.timeout(max(2.0, self.check_s * 3)):
                    # A session lock is held until its session ends: alive means held.
                    still = await self._conn.fetchval("SELECT 1")
            except (OSError, asyncpg.PostgresError, TimeoutError,
                    asyncpg.InterfaceError) as exc:
                log.error("lease lost: the database session ended", error=str(exc))
                still = 0
            if not still:
                self.held = False
                self.lost.set()
                if self.on_lost:
                    self.on_lost()
                return

    async def release(self) -> None:
        if self._watch:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._conn is not None and not self._conn.is_closed() and self.held:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._conn.execute("SELECT pg_advisory_unlock($1)", self.key)
        self.held = False
        await self._drop()

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._conn.close(timeout=2)
            self._conn = None
