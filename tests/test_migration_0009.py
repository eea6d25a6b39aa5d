"""Migration 0009 (drafts.fields) upgrades and downgrades on SQLite and PostgreSQL,
keeping the drafts that were there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from callcenter.db import alembic_config, make_engine

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'm9.db'}"
        return
    name = f"hotline_m9_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, ConnectionError) as exc:  # pragma: no cover - no PostgreSQL here
        await admin.dispose()
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def test_drafts_fields_up_and_down_keeping_rows(url: str) -> None:
    engine = make_engine(url)

    def to(target: str, down: bool = False) -> Any:
        def run(connection: Any) -> None:
            cfg = alembic_config(str(engine.url))
            cfg.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(cfg, target)
        return run

    try:
        async with engine.begin() as conn:
            await conn.run_sync(to("0004"))
            await conn.execute(text(
                "INSERT INTO drafts (owner, caller, category, text, version, status, "
                "created_at, updated_at) VALUES ('op1', '13700000001', '', '路灯不亮', 1, "
                "'open', 1.0, 1.0)"))
        async with engine.begin() as conn:
            await conn.run_sync(to("0009"))
            assert (await conn.execute(text("SELECT text, fields FROM drafts"))).all() == [
                ("路灯不亮", "{}")]
        async with engine.begin() as conn:
            await conn.run_sync(to("0004", down=True))
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("drafts")})
            assert "fields" not in columns
            assert (await conn.execute(text("SELECT text FROM drafts"))).scalar() == "路灯不亮"
        async with engine.begin() as conn:
            await conn.run_sync(to("head"))
    finally:
        await engine.dispose()
