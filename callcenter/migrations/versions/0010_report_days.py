"""Reports from summaries (issue 14): ``report_days`` keeps each closed local day's call
atoms and operators' figures; ``order_facts`` keeps each order's part of its receiving
departments' assessment counts, by channel.  Indexes for the raw reads of a day:
``calls.answered_at`` (operators' calls) and ``agent_states.at``; ``calls.on_hold_s``,
the time a call spent on hold (AMI Hold ... Unhold).

``report_days`` is filled by the service's writer after upgrade (one closed day at a
time).  ``order_facts`` is filled on the first report when orders already exist: the
row ``section = 'order_facts'`` (day 0) says it is still to do.

Revision ID: 0010
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0011"
branch_labels = None
depends_on = None

COUNTS = ("received", "responded_in_time", "completed", "completed_in_time", "answered",
          "solved", "scored", "satisfied", "returned", "redispatched", "reopened", "overdue",
          "supervised")


def upgrade() -> None:
    op.create_table(
        "report_days",
        sa.Column("section", sa.String(16), primary_key=True),
        sa.Column("day_start", sa.Float, primary_key=True),
        sa.Column("day_end", sa.Float, nullable=False),
        sa.Column("built_at", sa.Float, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "order_facts",
        sa.Column("order_id", sa.Integer, primary_key=True),
        sa.Column("department", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False, server_default="phone"),
        sa.Column("first_received", sa.Float, nullable=False),
        sa.Column("last_received", sa.Float, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
        *(sa.Column(c, sa.Integer, nullable=False, server_default="0") for c in COUNTS),
    )
    op.create_index("ix_order_facts_received", "order_facts", ["first_received"])
    op.create_index("ix_calls_answered_at", "calls", ["answered_at"])
    with op.batch_alter_table("calls") as batch:  # time on hold (AMI Hold ... Unhold)
        batch.add_column(sa.Column("on_hold_s", sa.Float, nullable=False, server_default="0"))
    op.create_index("ix_agent_states_at", "agent_states", ["at"])
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM work_order_events LIMIT 1")).first() is not None:
        bind.execute(sa.text(
            "INSERT INTO report_days (section, day_start, day_end, built_at, data) "
            "VALUES ('order_facts', 0, 0, 0, '{\"to_do\": true}')"))


def downgrade() -> None:
    op.drop_index("ix_agent_states_at", "agent_states")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("on_hold_s")
    op.drop_index("ix_calls_answered_at", "calls")
    op.drop_index("ix_order_facts_received", "order_facts")
    op.drop_table("order_facts")
    op.drop_table("report_days")
