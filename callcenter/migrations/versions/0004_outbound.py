"""Outbound calls and after-call surveys: call-back requests and return visits that
must survive a restart, and the citizen's satisfaction key per call.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbound_calls",
        sa.Column("id", sa.String(80), primary_key=True),  # "rv:<order id>", "cb:<uniqueid>"
        sa.Column("kind", sa.String(16), nullable=False),  # return_visit | callback
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(80), nullable=False, server_default=""),
        sa.Column("number", sa.String(40), nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False),
        # waiting | done | manual (handed to an operator) | gave_up | cancelled
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.String(80), nullable=False, server_default=""),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_outbound_calls_status", "outbound_calls", ["status"])
    op.create_table(
        "call_surveys",
        sa.Column("call_uniqueid", sa.String(64), primary_key=True),
        sa.Column("score", sa.Integer),  # 1-3, NULL when the caller pressed nothing
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False, server_default="citizen_keys"),
    )


def downgrade() -> None:
    op.drop_table("call_surveys")
    op.drop_index("ix_outbound_calls_status", "outbound_calls")
    op.drop_table("outbound_calls")
