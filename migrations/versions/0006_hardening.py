"""Hardening: unverified entries, HTML cleaned once at rest, no private link in the outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 16:00:00

Rows written before this revision are brought to what the code now expects: stored
HTML is cleaned as delivery now cleans it (HTML past its bounds moves to an attachment,
`message.html`), and sent or queued mail loses its private links, replaced by the
marker from which the outbox makes a fresh link when it sends.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("article", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unverified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    bind = op.get_bind()
    _clean_stored_html(bind)
    _scrub_outbox(bind)


def _clean_stored_html(bind: sa.engine.Connection) -> None:
    from helpdesk import htmlsafe

    query = sa.text("SELECT id FROM article WHERE body_html IS NOT NULL ORDER BY id")
    ids = [r[0] for r in bind.execute(query)]
    for article_id in ids:
        html = bind.execute(
            sa.text("SELECT body_html FROM article WHERE id = :id"), {"id": article_id}
        ).scalar()
        cleaned, why = htmlsafe.prepare(html or "")
        bind.execute(
            sa.text("UPDATE article SET body_html = :html WHERE id = :id"),
            {"html": cleaned, "id": article_id},
        )
        if why is None:
            continue
        data = (html or "").encode("utf-8", "replace")
        digest = hashlib.sha256(data).hexdigest()
        bind.execute(
            sa.text(
                "INSERT INTO blob (sha256, size, data) VALUES (:sha, :size, :data)"
                " ON CONFLICT (sha256) DO NOTHING"
            ),
            {"sha": digest, "size": len(data), "data": data},
        )
        bind.execute(
            sa.text(
                "INSERT INTO attachment (article_id, blob_sha256, filename, content_type,"
                " content_id, inline, size) VALUES (:article, :sha, 'message.html',"
                " 'text/html', NULL, :no, :size)"
            ),
            {"article": article_id, "sha": digest, "no": False, "size": len(data)},
        )


def _scrub_outbox(bind: sa.engine.Connection) -> None:
    from helpdesk.notify.compose import link_marker
    from helpdesk.notify.compose import without_links

    rows = bind.execute(sa.text("SELECT id, message_id FROM outbox_message ORDER BY id")).all()
    for outbox_id, message_id in rows:
        data = bind.execute(
            sa.text("SELECT data FROM outbox_message WHERE id = :id"), {"id": outbox_id}
        ).scalar()
        if not data:
            continue
        scrubbed = without_links(bytes(data), link_marker(message_id))
        if scrubbed != bytes(data):
            bind.execute(
                sa.text("UPDATE outbox_message SET data = :data WHERE id = :id"),
                {"data": scrubbed, "id": outbox_id},
            )


def downgrade() -> None:
    with op.batch_alter_table("article", schema=None) as batch_op:
        batch_op.drop_column("unverified")
