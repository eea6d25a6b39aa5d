"""Rows the database refused for their own sake (issue 12): kept in ``set_aside`` with
their error, so they survive a restart and supervisors can list them.

Revision ID: 0011
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "set_aside",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("row", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.create_index("ix_set_aside_at", "set_aside", ["at"])


def downgrade() -> None:
    op.drop_index("ix_set_aside_at", table_name="set_aside")
    op.drop_table("set_aside")
