"""One record per queue visit: a channel that visits several queues (transfer, overflow,
re-entry) keeps one row per visit, linked to the one before; how a visit we lost sight of
was settled.  Existing rows become first visits of their channel.

The primary key column ``uniqueid`` now holds the visit's key: the channel's Uniqueid for
its first visit (so every existing row, order and recording link keeps its key), and
``<Uniqueid>#<n>`` for the n-th.

Revision ID: 0005
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("channel_uniqueid", sa.String(64), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("visit", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("previous_visit", sa.String(64), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("end_reason", sa.String(24), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("settled", sa.String(24), nullable=False, server_default=""))
    op.execute("UPDATE calls SET channel_uniqueid = uniqueid WHERE channel_uniqueid = ''")
    op.create_index("ix_calls_channel_uniqueid", "calls", ["channel_uniqueid"])
    op.create_index("ix_calls_outcome", "calls", ["outcome"])


def downgrade() -> None:
    # Later visits have no place in the old one-row-per-channel table.
    op.execute("DELETE FROM calls WHERE visit > 1")
    op.drop_index("ix_calls_outcome", table_name="calls")
    op.drop_index("ix_calls_channel_uniqueid", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        for name in ("settled", "end_reason", "previous_visit", "visit", "channel_uniqueid"):
            batch.drop_column(name)
