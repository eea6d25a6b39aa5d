"""Structured intake (受理) on the console: a draft keeps its structured fields
(caller name and gender, callback number, 诉求类型, category path, address, urgency,
保密, 回复方式) as one JSON object beside the free text.

Revision ID: 0009
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("fields", sa.Text, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("fields")
