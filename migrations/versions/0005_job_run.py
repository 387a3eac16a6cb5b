"""job_run: when the periodic jobs last ran, for `helpdesk-pipe doctor`

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_run",
        sa.Column("job", sa.String(length=30), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_run")),
    )


def downgrade() -> None:
    op.drop_table("job_run")
