"""Forwarded actions done once (issue 15): a web worker gives each state-changing request
it relays to the core an id (``X-Action-Id``) and may send it again after a failover.

* ``forwarded_actions``: one row per id, claimed before the request runs, with the
  first answer (status, content type, body) once it is known
  (``agent_console.once``);
* ``audit.action_id``: the id on the audit row the action wrote (``''`` for rows
  before this, and for actions no worker forwarded), indexed: a repeat whose first
  answer was lost in a failover is refused when its audit row shows the action ran.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forwarded_actions",
        sa.Column("action_id", sa.String(64), primary_key=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False, server_default=""),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer, nullable=True),  # None: no answer yet
        sa.Column("content_type", sa.String(120), nullable=False, server_default=""),
        sa.Column("body", sa.Text, nullable=False, server_default=""),
        sa.Column("answered_at", sa.Float, nullable=True),
    )
    op.create_index("ix_forwarded_actions_at", "forwarded_actions", ["at"])
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("action_id", sa.String(64), nullable=False,
                                   server_default=""))
    op.create_index("ix_audit_action_id", "audit", ["action_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_id", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("action_id")
    op.drop_index("ix_forwarded_actions_at", table_name="forwarded_actions")
    op.drop_table("forwarded_actions")
