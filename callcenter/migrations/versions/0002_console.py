"""Console: users, web sessions, work-order drafts, minimal work orders.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(120), nullable=False, server_default=""),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("member_name", sa.String(80), nullable=False, server_default=""),
        sa.Column("interface", sa.String(120), nullable=False, server_default=""),
        sa.Column("queues", sa.String(400), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("ip", sa.String(64), nullable=False, server_default=""),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "drafts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("call_uniqueid", sa.String(64)),
        sa.Column("caller", sa.String(40), nullable=False, server_default=""),
        sa.Column("category", sa.String(60), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("work_order_id", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_drafts_owner_status", "drafts", ["owner", "status"])
    op.create_index("ux_drafts_owner_call", "drafts", ["owner", "call_uniqueid"], unique=True)
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("number", sa.String(20), nullable=False, unique=True),
        sa.Column("caller", sa.String(40), nullable=False, server_default=""),
        sa.Column("call_uniqueid", sa.String(64)),
        sa.Column("category", sa.String(60), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(24), nullable=False, server_default="accepted"),
    )
    op.create_index("ix_work_orders_caller", "work_orders", ["caller"])
    op.create_index("ix_work_orders_call_uniqueid", "work_orders", ["call_uniqueid"])
    op.create_index("ix_work_orders_created_at", "work_orders", ["created_at"])


def downgrade() -> None:
    op.drop_table("work_orders")
    op.drop_table("drafts")
    op.drop_table("sessions")
    op.drop_table("users")
