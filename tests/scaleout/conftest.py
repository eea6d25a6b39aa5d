"""Redis for the bus tests: 127.0.0.1:6379 (HOTLINE_TEST_REDIS), a unique key prefix per
test, its keys deleted after.  Redis away is a failure, not a skip: ./run test starts it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis

REDIS = os.environ.get("HOTLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def bus_prefix() -> AsyncIterator[tuple[str, str]]:
    """(Redis URL, a key prefix of this test's own)."""
    prefix = f"hotline-test-{uuid.uuid4().hex[:12]}"
    r = aioredis.from_url(REDIS)
    try:
        await r.ping()
    except OSError as exc:  # pragma: no cover - the machine's Redis is down
        pytest.fail(f"Redis at {REDIS} is not reachable ({exc}); ./run test starts it")
    try:
        yield REDIS, prefix
    finally:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
