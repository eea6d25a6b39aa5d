"""Reports per PBX: a stored day's call atoms (``report_days``, section ``calls``) now
name the PBX their calls were on (:mod:`callcenter.report_days`).  The days stored
before name none, so they are deleted; the service's writer stores them again from
the raw records, one closed day per flush, and a report reads a day not stored from
the raw records meanwhile (the same figures).  Operators' days are kept.

Revision ID: 0018
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM report_days WHERE section = 'calls'"))


def downgrade() -> None:
    # 0012's code reads six-field atoms: the seven-field ones are dropped the same way
    op.get_bind().execute(sa.text("DELETE FROM report_days WHERE section = 'calls'"))
