"""The 12345 desk: knowledge base (知识库) with its full-text index, order search,
channels (一号对外), the intake API's keys and idempotency, merged orders (并案).

* ``knowledge_articles`` (+ ``knowledge_versions`` history, ``knowledge_uses`` by
  orders, ``knowledge_searches`` log).  Search text is segmented by jieba in the
  application; SQLite indexes it with an FTS5 table kept by triggers, PostgreSQL
  with a GIN index over a stored ``search_vector`` (``to_tsvector('simple', ...)``).
* ``work_orders`` gains ``channel``, ``merged_into``, ``search_text`` (the order's
  words as CJK bigrams, see ``callcenter.orders.words``) and filter indexes; its
  full-text index is built the same two ways.
* ``intake_keys`` (hashed API keys per channel) and ``intake_requests`` (one row
  per client idempotency key).

Revision ID: 0008
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0004"
branch_labels = None
depends_on = None

ORDER_INDEXES = {
    "ix_work_orders_caller_name": ["caller_name"],
    "ix_work_orders_category": ["category", "created_at"],
    "ix_work_orders_channel": ["channel", "created_at"],
    "ix_work_orders_urgency": ["urgency", "created_at"],
    "ix_work_orders_handling_due": ["handling_due"],
    "ix_work_orders_created_by": ["created_by", "created_at"],
    "ix_work_orders_merged_into": ["merged_into"],
    "ix_work_orders_status_created": ["status", "created_at"],
    "ix_work_orders_status_due": ["status", "handling_due"],
    "ix_work_orders_confidential": ["confidential", "created_at"],
    "ix_work_orders_co_handlers": ["co_handlers"],
    "ix_work_orders_dept_created": ["lead_department", "created_at"],
}

SQLITE_FTS = [
    ("CREATE VIRTUAL TABLE knowledge_fts USING fts5(search_title, search_body, "
    "content='knowledge_articles', content_rowid='id', tokenize='unicode61')"),
    ("CREATE TRIGGER knowledge_fts_ai AFTER INSERT ON knowledge_articles BEGIN "
    "INSERT INTO knowledge_fts(rowid, search_title, search_body) "
    "VALUES (new.id, new.search_title, new.search_body); END"),
    ("CREATE TRIGGER knowledge_fts_ad AFTER DELETE ON knowledge_articles BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, search_title, search_body) "
    "VALUES ('delete', old.id, old.search_title, old.search_body); END"),
    ("CREATE TRIGGER knowledge_fts_au AFTER UPDATE OF search_title, search_body "
    "ON knowledge_articles BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, search_title, search_body) "
    "VALUES ('delete', old.id, old.search_title, old.search_body); "
    "INSERT INTO knowledge_fts(rowid, search_title, search_body) "
    "VALUES (new.id, new.search_title, new.search_body); END"),
    ("CREATE VIRTUAL TABLE work_orders_fts USING fts5(search_text, "
    "content='work_orders', content_rowid='id', tokenize='unicode61')"),
    ("CREATE TRIGGER work_orders_fts_ai AFTER INSERT ON work_orders BEGIN "
    "INSERT INTO work_orders_fts(rowid, search_text) VALUES (new.id, new.search_text); END"),
    ("CREATE TRIGGER work_orders_fts_ad AFTER DELETE ON work_orders BEGIN "
    "INSERT INTO work_orders_fts(work_orders_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); END"),
    ("CREATE TRIGGER work_orders_fts_au AFTER UPDATE OF search_text ON work_orders BEGIN "
    "INSERT INTO work_orders_fts(work_orders_fts, rowid, search_text) "
    "VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO work_orders_fts(rowid, search_text) VALUES (new.id, new.search_text); END"),
]
SQLITE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS work_orders_fts_au", "DROP TRIGGER IF EXISTS work_orders_fts_ad",
    "DROP TRIGGER IF EXISTS work_orders_fts_ai", "DROP TABLE IF EXISTS work_orders_fts",
    "DROP TRIGGER IF EXISTS knowledge_fts_au", "DROP TRIGGER IF EXISTS knowledge_fts_ad",
    "DROP TRIGGER IF EXISTS knowledge_fts_ai", "DROP TABLE IF EXISTS knowledge_fts",
]
PG_FTS = [
    # Stored vectors: a row's words are cut once on write, not on every search.
    ("ALTER TABLE knowledge_articles ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
     "setweight(to_tsvector('simple', search_title), 'A') || "
     "setweight(to_tsvector('simple', search_body), 'B')) STORED"),
    "CREATE INDEX ix_knowledge_fts ON knowledge_articles USING gin (search_vector)",
    ("ALTER TABLE work_orders ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
     "to_tsvector('simple', search_text)) STORED"),
    "CREATE INDEX ix_work_orders_fts ON work_orders USING gin (search_vector)",
]
PG_FTS_DROP = ["ALTER TABLE work_orders DROP COLUMN IF EXISTS search_vector",
               "ALTER TABLE knowledge_articles DROP COLUMN IF EXISTS search_vector"]


def _order_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("channel", sa.String(16), nullable=False, server_default="phone"),
        sa.Column("merged_into", sa.Integer),
        sa.Column("search_text", sa.Text, nullable=False, server_default=""),
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "knowledge_articles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("category", sa.String(120), nullable=False, server_default=""),
        sa.Column("keywords", sa.String(400), nullable=False, server_default=""),
        sa.Column("department", sa.String(64), nullable=False, server_default=""),
        sa.Column("valid_from", sa.Float),
        sa.Column("valid_to", sa.Float),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("search_title", sa.Text, nullable=False, server_default=""),
        sa.Column("search_body", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_knowledge_articles_category", "knowledge_articles", ["category"])
    op.create_table(
        "knowledge_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("article_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),  # create | edit | retire | restore
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("changes", sa.JSON, nullable=False),  # field -> [old, new]
        sa.Column("content", sa.JSON, nullable=False),  # the article as it became
        sa.UniqueConstraint("article_id", "version", name="ux_knowledge_versions_article"),
    )
    op.create_table(
        "knowledge_uses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("article_id", sa.Integer, nullable=False),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.UniqueConstraint("article_id", "order_id", name="ux_knowledge_uses_article_order"),
    )
    op.create_index("ix_knowledge_uses_at", "knowledge_uses", ["at"])
    op.create_table(
        "knowledge_searches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("query", sa.String(200), nullable=False),
        sa.Column("category", sa.String(120), nullable=False, server_default=""),
        sa.Column("hits", sa.Integer, nullable=False),
    )
    op.create_index("ix_knowledge_searches_at", "knowledge_searches", ["at"])
    with op.batch_alter_table("work_orders") as batch:
        for column in _order_columns():
            batch.add_column(column)
    for name, columns in ORDER_INDEXES.items():
        op.create_index(name, "work_orders", columns)
    op.create_table(
        "intake_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("label", sa.String(80), nullable=False, server_default=""),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )
    op.create_table(
        "intake_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("client_key", sa.String(80), nullable=False),
        sa.Column("order_id", sa.Integer),
        sa.Column("at", sa.Float, nullable=False),
        sa.UniqueConstraint("channel", "client_key", name="ux_intake_requests_key"),
    )
    for statement in SQLITE_FTS if dialect == "sqlite" else PG_FTS:
        op.execute(statement)
    _backfill_search_text()


def _backfill_search_text() -> None:
    """Existing orders become findable by their words (the triggers index them)."""
    from callcenter.orders.words import order_search_text

    bind = op.get_bind()
    orders = sa.table("work_orders", sa.column("id", sa.Integer), sa.column("text", sa.Text),
                      sa.column("category", sa.String), sa.column("location", sa.String),
                      sa.column("search_text", sa.Text))
    rows = bind.execute(sa.select(orders.c.id, orders.c.text, orders.c.category,
                                  orders.c.location)).all()
    for key, text, category, location in rows:
        bind.execute(orders.update().where(orders.c.id == key).values(
            search_text=order_search_text(text or "", category or "", location or "")))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_FTS_DROP if dialect == "sqlite" else PG_FTS_DROP:
        op.execute(statement)
    op.drop_table("intake_requests")
    op.drop_table("intake_keys")
    for name in reversed(ORDER_INDEXES):
        op.drop_index(name, "work_orders")
    with op.batch_alter_table("work_orders") as batch:
        for column in reversed(_order_columns()):
            batch.drop_column(column.name)
    op.drop_table("knowledge_searches")
    op.drop_table("knowledge_uses")
    op.drop_table("knowledge_versions")
    op.drop_index("ix_knowledge_articles_category", "knowledge_articles")
    op.drop_table("knowledge_articles")
