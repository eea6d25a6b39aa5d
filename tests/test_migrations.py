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


def test_the_full_text_triggers_and_search_columns_survive_the_whole_chain(
        sync_db: str) -> None:
    """A migration that rebuilds a table (a batch copy on SQLite) drops its triggers
    without a word; the full-text indexes would then silently stop following the rows."""
    cfg = alembic_config(sync_db)
    command.upgrade(cfg, "head")
    engine = create_engine(sync_db)
    try:
        found = inspect(engine)
        orders = {c["name"] for c in found.get_columns("work_orders")}
        assert {"request_type", "caller_gender", "district", "street", "reply_method",
                "search_text"} <= orders
        assert "search_meta" in {c["name"] for c in found.get_columns("knowledge_articles")}
        indexes = {i["name"] for i in found.get_indexes("work_orders")}
        assert {"ix_work_orders_request_type", "ix_work_orders_district"} <= indexes
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                triggers = set(conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars())
                assert {f"{t}_fts_{op}" for t in ("knowledge", "work_orders")
                        for op in ("ai", "ad", "au")} <= triggers
                columns = [r[1] for r in conn.exec_driver_sql(
                    "PRAGMA table_info(knowledge_fts)")]
                assert columns == ["search_title", "search_body", "search_meta"]
            else:
                gin = set(conn.exec_driver_sql(
                    "SELECT indexname FROM pg_indexes WHERE strpos(indexdef, 'USING gin') > 0"
                ).scalars())
                assert {"ix_knowledge_fts", "ix_work_orders_fts"} <= gin
    finally:
        engine.dispose()


def test_0012_fills_the_search_columns_from_the_rows_already_there(sync_db: str) -> None:
    import json

    from sqlalchemy import text

    from callcenter.orders.knowledge import category_tokens

    cfg = alembic_config(sync_db)
    command.upgrade(cfg, "0013")
    engine = create_engine(sync_db)
    snapshot = {"intake": {"request_type": "complaint", "gender": "female",
                           "district": "和平区", "street": "南市街道", "reply_method": "sms"}}
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO work_orders (number, caller, category, text, created_by, "
                "created_at, status, urgency, confidential, owner_unit, co_handlers, "
                "caller_name, location, version, snapshot) VALUES ('20261123-000001', "
                "'13800000000', '路灯', '路灯不亮', 'op1', 1.0, 'accepted', 'normal', false, "
                "'centre', '', '丁', '', 1, :s)"), {"s": json.dumps(snapshot)})
            conn.execute(text(
                "INSERT INTO knowledge_articles (title, body, category, created_by, "
                "created_at, updated_by, updated_at, search_title, search_body) VALUES "
                "('停电', '拨打95598', '公用事业/供电', 'x', 1.0, 'x', 1.0, '停电', '拨打 95598')"))
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            row = conn.execute(text("SELECT request_type, caller_gender, district, street, "
                                    "reply_method FROM work_orders")).one()
            assert tuple(row) == ("complaint", "female", "和平区", "南市街道", "sms")
            meta = conn.execute(text("SELECT search_meta FROM knowledge_articles")).scalar()
            assert meta == category_tokens("公用事业/供电") and len(meta.split()) == 2
            token = meta.split()[0]
            if engine.dialect.name == "sqlite":
                found = conn.execute(text("SELECT rowid FROM knowledge_fts WHERE knowledge_fts "
                                          "MATCH :q"), {"q": f'search_meta : "{token}"'}).all()
            else:
                found = conn.execute(text("SELECT id FROM knowledge_articles WHERE "
                                          "search_vector @@ to_tsquery('simple', :q)"),
                                     {"q": f"'{token}':D"}).all()
            assert len(found) == 1
        command.downgrade(cfg, "0013")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM work_orders")).scalar() == 1
            assert conn.execute(text("SELECT count(*) FROM knowledge_articles")).scalar() == 1
    finally:
        engine.dispose()
