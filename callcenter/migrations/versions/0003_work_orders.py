"""Work orders: the full lifecycle on ``work_orders``, append-only events, dispatch
history, refused attempts, and the department of each handler account.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

def _new_columns() -> tuple[sa.Column, ...]:
    """Fresh Column objects (a Column belongs to one table once added)."""
    return (
        sa.Column("urgency", sa.String(16), nullable=False, server_default="normal"),
        sa.Column("confidential", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("owner_unit", sa.String(64), nullable=False, server_default=""),
        sa.Column("lead_department", sa.String(64)),
        sa.Column("co_handlers", sa.String(400), nullable=False, server_default=""),
        sa.Column("caller_name", sa.String(120), nullable=False, server_default=""),
        sa.Column("location", sa.String(400), nullable=False, server_default=""),
        sa.Column("updated_at", sa.Float),
        sa.Column("handling_due", sa.Float),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("snapshot", sa.JSON),
    )


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        for column in _new_columns():
            batch.add_column(column)
        batch.create_index("ix_work_orders_status", ["status"])
        batch.create_index("ix_work_orders_lead_department", ["lead_department"])
    op.create_table(
        "work_order_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False, server_default=""),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("at_iso", sa.String(40), nullable=False),
        sa.Column("from_state", sa.String(24)),
        sa.Column("to_state", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("data", sa.JSON, nullable=False),
        sa.UniqueConstraint("order_id", "seq", name="ux_work_order_events_order_seq"),
    )
    op.create_index("ix_work_order_events_at", "work_order_events", ["at"])
    op.create_table(
        "work_order_dispatches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("lead", sa.Boolean, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index("ix_work_order_dispatches_order", "work_order_dispatches", ["order_id"])
    op.create_table(
        "work_order_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False, server_default=""),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("at_iso", sa.String(40), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("error", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_work_order_attempts_at", "work_order_attempts", ["at"])
    op.create_table(
        "department_handlers",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("department", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("department_handlers")
    op.drop_table("work_order_attempts")
    op.drop_table("work_order_dispatches")
    op.drop_table("work_order_events")
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_index("ix_work_orders_lead_department")
        batch.drop_index("ix_work_orders_status")
        for column in reversed(_new_columns()):
            batch.drop_column(column.name)
