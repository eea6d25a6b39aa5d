"""The desk's search columns: structured intake fields of an order, and the knowledge
base's category inside its full-text index.

* ``work_orders`` gains ``request_type`` (诉求类型), ``caller_gender``, ``district``
  and ``street`` (of 事发地址) and ``reply_method`` (回复方式), filled from each
  order's snapshot (they were only inside its JSON), each indexed with
  ``created_at`` (the list's default order) except the gender.
* ``work_orders.search_text`` is written again with a token for the order's state
  and one per department handling it (``callcenter.orders.words.order_search_text``),
  so a word combined with those filters is intersected inside the full-text index.
* ``knowledge_articles`` gains ``search_meta`` (one token per level of the category
  path, ``callcenter.orders.knowledge.category_tokens``); SQLite's ``knowledge_fts``
  is rebuilt with it as a third column, PostgreSQL's stored ``search_vector`` with it
  as weight D.

SQLite: columns are added and dropped with ``ALTER TABLE`` (never a batch copy of the
table, which would drop the FTS triggers of 0008 with it); the ``work_orders`` FTS
triggers are created again if missing, and ``tests/test_migrations.py`` checks they
all exist after the whole chain.

Revision ID: 0012
Revises: 0013
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0013"
branch_labels = None
depends_on = None

INTAKE_COLUMNS = {  # column -> (Intake field, length)
    "request_type": ("request_type", 16),
    "caller_gender": ("gender", 8),
    "district": ("district", 64),
    "street": ("street", 64),
    "reply_method": ("reply_method", 16),
}
INDEXES = {
    "ix_work_orders_request_type": ["request_type", "created_at"],
    "ix_work_orders_district": ["district", "street", "created_at"],
    "ix_work_orders_street": ["street", "created_at"],
    "ix_work_orders_reply_method": ["reply_method", "created_at"],
}

KNOWLEDGE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS knowledge_fts_au", "DROP TRIGGER IF EXISTS knowledge_fts_ad",
    "DROP TRIGGER IF EXISTS knowledge_fts_ai", "DROP TABLE IF EXISTS knowledge_fts",
]


def _knowledge_fts(columns: list[str]) -> list[str]:
    """SQLite: the FTS5 table over ``columns`` of knowledge_articles, its triggers, and
    a rebuild from the rows already there."""
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    return [
        (f"CREATE VIRTUAL TABLE knowledge_fts USING fts5({cols}, "
         "content='knowledge_articles', content_rowid='id', tokenize='unicode61')"),
        (f"CREATE TRIGGER knowledge_fts_ai AFTER INSERT ON knowledge_articles BEGIN "
         f"INSERT INTO knowledge_fts(rowid, {cols}) VALUES (new.id, {new}); END"),
        (f"CREATE TRIGGER knowledge_fts_ad AFTER DELETE ON knowledge_articles BEGIN "
         f"INSERT INTO knowledge_fts(knowledge_fts, rowid, {cols}) "
         f"VALUES ('delete', old.id, {old}); END"),
        (f"CREATE TRIGGER knowledge_fts_au AFTER UPDATE OF {cols} ON knowledge_articles "
         f"BEGIN INSERT INTO knowledge_fts(knowledge_fts, rowid, {cols}) "
         f"VALUES ('delete', old.id, {old}); "
         f"INSERT INTO knowledge_fts(rowid, {cols}) VALUES (new.id, {new}); END"),
        "INSERT INTO knowledge_fts(knowledge_fts) VALUES ('rebuild')",
    ]


WORK_ORDERS_FTS_TRIGGERS = [
    ("CREATE TRIGGER IF NOT EXISTS work_orders_fts_ai AFTER INSERT ON work_orders BEGIN "
     "INSERT INTO work_orders_fts(rowid, search_text) VALUES (new.id, new.search_text); END"),
    ("CREATE TRIGGER IF NOT EXISTS work_orders_fts_ad AFTER DELETE ON work_orders BEGIN "
     "INSERT INTO work_orders_fts(work_orders_fts, rowid, search_text) "
     "VALUES ('delete', old.id, old.search_text); END"),
    ("CREATE TRIGGER IF NOT EXISTS work_orders_fts_au AFTER UPDATE OF search_text "
     "ON work_orders BEGIN "
     "INSERT INTO work_orders_fts(work_orders_fts, rowid, search_text) "
     "VALUES ('delete', old.id, old.search_text); "
     "INSERT INTO work_orders_fts(rowid, search_text) VALUES (new.id, new.search_text); END"),
]


def _pg_vector(with_meta: bool) -> list[str]:
    meta = " || setweight(to_tsvector('simple', search_meta), 'D')" if with_meta else ""
    return [
        "ALTER TABLE knowledge_articles DROP COLUMN IF EXISTS search_vector",
        ("ALTER TABLE knowledge_articles ADD COLUMN search_vector tsvector GENERATED ALWAYS "
         "AS (setweight(to_tsvector('simple', search_title), 'A') || "
         f"setweight(to_tsvector('simple', search_body), 'B'){meta}) STORED"),
        "CREATE INDEX ix_knowledge_fts ON knowledge_articles USING gin (search_vector)",
    ]


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for column, (_, length) in INTAKE_COLUMNS.items():
        op.add_column("work_orders", sa.Column(column, sa.String(length), nullable=False,
                                               server_default=""))
    _backfill_intake(bind)
    _search_text(bind, marks=True)
    for name, columns in INDEXES.items():
        op.create_index(name, "work_orders", columns)
    op.add_column("knowledge_articles", sa.Column("search_meta", sa.Text, nullable=False,
                                                  server_default=""))
    _backfill_meta(bind)
    if sqlite:
        for statement in [*KNOWLEDGE_FTS_DROP,
                          *_knowledge_fts(["search_title", "search_body", "search_meta"]),
                          *WORK_ORDERS_FTS_TRIGGERS]:
            op.execute(statement)
    else:
        for statement in _pg_vector(with_meta=True):
            op.execute(statement)


def _backfill_intake(bind: sa.Connection) -> None:
    """Each order's intake fields from its snapshot (orders without one keep ''),
    written in batches (one executemany per 5,000 orders)."""
    orders = sa.table("work_orders", sa.column("id", sa.Integer),
                      *(sa.column(c, sa.String) for c in INTAKE_COLUMNS))
    update = orders.update().where(orders.c.id == sa.bindparam("key")).values(
        {c: sa.bindparam(c) for c in INTAKE_COLUMNS})
    rows = bind.execute(sa.text("SELECT id, snapshot FROM work_orders "
                                "WHERE snapshot IS NOT NULL")).all()
    batch: list[dict[str, object]] = []
    for key, snapshot in rows:
        data = snapshot if isinstance(snapshot, dict) else json.loads(snapshot or "null")
        intake = (data or {}).get("intake") or {}
        if any(intake.get(field) for field, _ in INTAKE_COLUMNS.values()):
            batch.append({"key": key, **{c: str(intake.get(field) or "")[:length]
                                         for c, (field, length) in INTAKE_COLUMNS.items()}})
        if len(batch) >= 5000:
            bind.execute(update, batch)
            batch = []
    if batch:
        bind.execute(update, batch)


def _search_text(bind: sa.Connection, *, marks: bool) -> None:
    """Every order's ``search_text`` again, with (or, going down, without) the state
    and department tokens; the FTS triggers (SQLite) and the stored vector
    (PostgreSQL) follow."""
    from callcenter.orders.words import order_search_text

    orders = sa.table("work_orders", sa.column("id", sa.Integer),
                      sa.column("search_text", sa.Text))
    update = orders.update().where(orders.c.id == sa.bindparam("key")).values(
        search_text=sa.bindparam("words"))
    rows = bind.execute(sa.text("SELECT id, text, category, location, status, "
                                "lead_department, co_handlers FROM work_orders")).all()
    for i in range(0, len(rows), 5000):
        bind.execute(update, [
            {"key": key, "words": order_search_text(
                text or "", category or "", location or "", state=(status or "") if marks
                else "", departments=(lead or "", *(co or "").strip(",").split(","))
                if marks else ())}
            for key, text, category, location, status, lead, co in rows[i:i + 5000]])


def _backfill_meta(bind: sa.Connection) -> None:
    from callcenter.orders.knowledge import category_tokens

    articles = sa.table("knowledge_articles", sa.column("id", sa.Integer),
                        sa.column("search_meta", sa.Text))
    update = articles.update().where(articles.c.id == sa.bindparam("key")).values(
        search_meta=sa.bindparam("meta"))
    rows = bind.execute(sa.text(
        "SELECT id, category FROM knowledge_articles WHERE category <> ''")).all()
    for i in range(0, len(rows), 5000):
        bind.execute(update, [{"key": key, "meta": category_tokens(category)}
                              for key, category in rows[i:i + 5000]])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for statement in [*KNOWLEDGE_FTS_DROP, *_knowledge_fts(["search_title", "search_body"])]:
            op.execute(statement)
    else:
        for statement in _pg_vector(with_meta=False):
            op.execute(statement)
    _search_text(op.get_bind(), marks=False)
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+) keeps the table and its triggers.
    op.execute("ALTER TABLE knowledge_articles DROP COLUMN search_meta")
    for name in reversed(INDEXES):
        op.drop_index(name, "work_orders")
    for column in reversed(INTAKE_COLUMNS):
        op.execute(f"ALTER TABLE work_orders DROP COLUMN {column}")
    if sqlite:
        for statement in WORK_ORDERS_FTS_TRIGGERS:
            op.execute(statement)
