"""Redis for the bus tests: 127.0.0.1:6379 (HOTLINE_TEST_REDIS), a unique key prefix per
test, its keys deleted after.  Redis away fails a bus test (./run test starts it) and
skips the failover test, which also needs a PostgreSQL database of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NoReturn

import pytest
from redis import asyncio as aioredis
from redis.exceptions import RedisError

REDIS = os.environ.get("HOTLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def _own_prefix(when_away: Callable[[str], NoReturn]) -> AsyncIterator[tuple[str, str]]:
    """(Redis URL, a key prefix of this test's own), its keys deleted after;
    ``when_away`` (pytest.fail or pytest.skip) is given the reason when Redis does not
    answer."""
    r = aioredis.from_url(REDIS)
    try:
        await r.ping()
    except (OSError, RedisError) as exc:  # pragma: no cover - the machine's Redis is down
        await r.aclose()
        when_away(f"Redis at {REDIS} is not reachable ({exc}); ./run test starts it")
    prefix = f"hotline-test-{uuid.uuid4().hex[:12]}"
    try:
        yield REDIS, prefix
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@pytest.fixture
async def bus_prefix() -> AsyncIterator[tuple[str, str]]:
    """(Redis URL, a key prefix of this test's own); Redis away fails the test."""
    async for got in _own_prefix(pytest.fail):
        yield got


@pytest.fixture
def own_pg_db() -> Iterator[str]:
    """A PostgreSQL database of this test's own on the CI machine's server
    (HOTLINE_TEST_DATABASE, else 127.0.0.1:5432), dropped after; skipped with the reason
    only when that server does not answer.  Not a ``tmp_db``: the test runs once, in the
    first pass, however ./run test's passes pick their database."""
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.conftest import TEST_DATABASE, _admin

    server = TEST_DATABASE or "postgresql://postgres@127.0.0.1:5432/postgres"
    u = make_url(server)
    try:
        psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                        user=u.username or "postgres", password=u.password,
                        dbname=u.database or "postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {u.render_as_string(hide_password=True)} is not "
                    f"reachable ({str(exc).strip()[:120]}): the failover test needs it")
    name = f"hotline_t{os.getpid()}_ha_{uuid.uuid4().hex[:8]}"
    _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield (u.set(drivername="postgresql+asyncpg", database=name)
               .render_as_string(hide_password=False))
    finally:
        _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def redis_or_skip() -> AsyncIterator[tuple[str, str]]:
    """(Redis URL, a key prefix of this test's own, its keys deleted after), or the test
    skipped with the reason when Redis does not answer."""
    async for got in _own_prefix(pytest.skip):
        yield got
