"""Spam and bulk mail held, distrusted requesters

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:30:00

`ticket.distrust` says why no automatic mail goes to a ticket's requester (a From that
failed a trusted DMARC check, a released spam, a ticket marked spam). List mail, held
until now as verdict `list` and never releasable, becomes `bulk`, which
`helpdesk-pipe mail release` can turn into a ticket.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("distrust", sa.Text(), nullable=True))
    op.execute("UPDATE mail_record SET verdict = 'bulk' WHERE verdict = 'list'")


def downgrade() -> None:
    # Spam held by this revision's code had no verdict before it: the nearest is `list`
    # (kept, never answered, no ticket).
    op.execute("UPDATE mail_record SET verdict = 'list' WHERE verdict IN ('bulk', 'spam')")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("distrust")
