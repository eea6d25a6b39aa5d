"""Core tables: calls, agent state log, audit log.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("uniqueid", sa.String(64), primary_key=True),
        sa.Column("queue", sa.String(80), nullable=False),
        sa.Column("joined_at", sa.Float, nullable=False),
        sa.Column("caller_num", sa.String(40), nullable=False, server_default=""),
        sa.Column("caller_name", sa.String(120), nullable=False, server_default=""),
        sa.Column("hotline", sa.String(20), nullable=False, server_default=""),
        sa.Column("category", sa.String(60), nullable=False, server_default=""),
        sa.Column("ivr_path", sa.String(60), nullable=False, server_default=""),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("left_at", sa.Float),
        sa.Column("answered_at", sa.Float),
        sa.Column("hold_time", sa.Integer),
        sa.Column("agent", sa.String(80), nullable=False, server_default=""),
        sa.Column("interface", sa.String(120), nullable=False, server_default=""),
        sa.Column("ended_at", sa.Float),
        sa.Column("talk_time", sa.Integer),
        sa.Column("wrap_s", sa.Float, nullable=False, server_default="0"),
        sa.Column("rings", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ring_no_answer", sa.Integer, nullable=False, server_default="0"),
        sa.Column("estimated", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_calls_queue", "calls", ["queue"])
    op.create_index("ix_calls_joined_at", "calls", ["joined_at"])
    op.create_table(
        "agent_states",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("agent", sa.String(80), nullable=False),
        sa.Column("interface", sa.String(120), nullable=False),
        sa.Column("old", sa.String(16), nullable=False),
        sa.Column("new", sa.String(16), nullable=False),
        sa.Column("step", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(80), nullable=False, server_default=""),
        sa.Column("cause", sa.String(80), nullable=False, server_default=""),
    )
    op.create_index("ix_agent_states_agent_at", "agent_states", ["agent", "at"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.String(120), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("agent_states")
    op.drop_table("calls")
