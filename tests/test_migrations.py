"""Every Alembic revision upgrades and downgrades on the test database (SQLite, and
PostgreSQL in ./run test's second pass), and the chain has one head."""

from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from callcenter.db import alembic_config


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_whole_chain_downgrades_to_nothing_and_upgrades_again(sync_db: str) -> None:
    cfg = alembic_config(sync_db)
    script = ScriptDirectory.from_config(cfg)
    assert len(script.get_heads()) == 1
    command.upgrade(cfg, "head")
    at_head = tables(sync_db)
    assert {"calls", "agent_states", "audit", "work_orders"} <= at_head
    revisions = [r.revision for r in script.walk_revisions()]  # newest first
    for older in [*revisions[1:], "base"]:  # one step down at a time
        command.downgrade(cfg, older)
    assert tables(sync_db) == set()
    command.upgrade(cfg, "head")
    assert tables(sync_db) == at_head
