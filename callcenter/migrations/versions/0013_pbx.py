"""Several PBXs: every call record and agent-state row names the PBX it happened on.

Asterisk's Uniqueids and member interfaces are only unique on one PBX.  A record's key
(``calls.uniqueid``) stays the bare visit key for the home PBX (the single ``[ami]``, or
the first ``[[pbx]]``) and is ``<pbx>:<visit key>`` for the others, so no existing key,
order link or recording link changes.  Existing rows get ``pbx = ''``: the home PBX.

Revision ID: 0013
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("calls", "agent_states")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("pbx", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    # Other PBXs' rows keep their prefixed keys; without the column they still read as
    # records (of the home PBX), so nothing is deleted.
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("pbx")
