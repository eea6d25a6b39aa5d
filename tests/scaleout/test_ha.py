"""The active core's lease on PostgreSQL: one holder at a time; a holder whose session
dies (kill -9 ends its connection) frees it for a standby at once, and a holder that
loses its session is told to stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from callcenter.ha import Lease, asyncpg_dsn, lease_key

HOLD = """
import asyncio, sys
from callcenter.ha import Lease
async def main():
    lease = Lease(sys.argv[1], "hotline-test")
    await lease.acquire()
    print("held", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


@pytest.fixture
def pg_url(tmp_db: str) -> str:
    if not tmp_db.startswith("postgresql"):
        pytest.skip("the lease is PostgreSQL's: run in ./run test's PostgreSQL pass")
    return tmp_db


def test_the_lease_needs_postgresql() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        asyncpg_dsn("sqlite+aiosqlite:///var/hotline.db")
    assert lease_key("pbx1") != lease_key("pbx2") and 0 < lease_key("pbx1") < 2**63


async def test_a_standby_takes_the_lease_when_the_active_is_killed(pg_url: str) -> None:
    active = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLD, pg_url,
                                                  stdout=asyncio.subprocess.PIPE)
    try:
        assert active.stdout is not None
        async with asyncio.timeout(20):
            while (await active.stdout.readline()).strip() != b"held":
                pass
        standby = Lease(pg_url, "hotline-test", poll_s=0.1)
        waiting = asyncio.create_task(standby.acquire())
        await asyncio.sleep(0.5)
        assert not waiting.done() and not standby.held  # exactly one holder
        killed = time.monotonic()
        os.kill(active.pid, signal.SIGKILL)
        await asyncio.wait_for(waiting, 10)
        took = time.monotonic() - killed
        assert standby.held and took < 10, took
        # The holder's session ends (the database restarted, say): it is told to stop.
        lost = asyncio.Event()
        standby.on_lost = lost.set
        standby.check_s = 0.1
        assert standby._conn is not None
        pid = await standby._conn.fetchval("SELECT pg_backend_pid()")
        killer = await Lease(pg_url, "hotline-test")._connect()
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
        await killer.close()
        await asyncio.wait_for(lost.wait(), 10)
        assert not standby.held and standby.lost.is_set()
        await standby.release()
    finally:
        if active.returncode is None:
            active.kill()
        await active.wait()


async def test_release_hands_over_at_once(pg_url: str) -> None:
    first, second = Lease(pg_url, "t2", poll_s=0.05), Lease(pg_url, "t2", poll_s=0.05)
    await first.acquire()
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await first.release()
    await asyncio.wait_for(waiting, 5)
    assert second.held
    await second.release()
