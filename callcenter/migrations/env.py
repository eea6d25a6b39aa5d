"""Alembic environment: runs on the connection handed over by callcenter.db.migrate,
or opens its own (``alembic -x url=...`` from the command line)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from callcenter.db import Base, sync_url

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url")
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
