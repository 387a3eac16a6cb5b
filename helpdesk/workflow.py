"""Every change to a ticket, whichever door it comes in by (mail, web, CLI, scheduler).

Functions take an open Store inside the caller's transaction and never commit:
the caller decides what is atomic (research/style.md, "Transactions belong to callers").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["FileData", "ensure_person", "open_ticket", "add_article"]


class FileData(Protocol):
    """A file to attach to an article: what a parsed mail part or an upload provides."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None
    inline: bool


def ensure_person(store: Store, email: str, name: str = "") -> int:
    """Return the id of the person with this address, creating them if needed."""
    email = email.strip().lower()[:320]
    store.execute(
        "INSERT INTO person (email, name, created_at) VALUES (:email, :name, :now)"
        " ON CONFLICT (email) DO NOTHING",
        {"email": email, "name": name[:200], "now": utcnow()},
    )
    person_id, known_name = store.one(
        "SELECT id, name FROM person WHERE email = :email", {"email": email}
    )
    if name and not known_name:
        store.execute(
            "UPDATE person SET name = :name WHERE id = :id", {"name": name[:200], "id": person_id}
        )
    return int(person_id)


def _store_blob(store: Store, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    store.execute(
        "INSERT INTO blob (sha256, size, data) VALUES (:sha, :size, :data)"
        " ON CONFLICT (sha256) DO NOTHING",
        {"sha": digest, "size": len(data), "data": data},
    )
    return digest


def add_article(
    store: Store,
    ticket_id: int,
    author_id: int,
    *,
    source: str,
    subject: str,
    body_text: str,
    body_html: str | None = None,
    attachments: Sequence[FileData] = (),
    mail_id: int | None = None,
    internal: bool = False,
) -> int:
    """Append an entry to a ticket's thread with its files; return the article id."""
    now = utcnow()
    article_id = store.scalar(
        "INSERT INTO article (ticket_id, author_id, source, mail_id, internal, subject,"
        " body_text, body_html, created_at) VALUES (:ticket, :author, :source, :mail,"
        " :internal, :subject, :text, :html, :now) RETURNING id",
        {
            "ticket": ticket_id,
            "author": author_id,
            "source": source,
            "mail": mail_id,
            "internal": internal,
            "subject": subject,
            "text": body_text,
            "html": body_html,
            "now": now,
        },
    )
    for att in attachments:
        digest = _store_blob(store, att.data)
        store.execute(
            "INSERT INTO attachment (article_id, blob_sha256, filename, content_type,"
            " content_id, inline, size) VALUES (:article, :sha, :filename, :ctype, :cid,"
            " :inline, :size)",
            {
                "article": article_id,
                "sha": digest,
                "filename": att.filename,
                "ctype": att.content_type[:200],
                "cid": att.content_id[:500] if att.content_id else None,
                "inline": att.inline,
                "size": len(att.data),
            },
        )
    store.execute(
        "UPDATE ticket SET updated_at = :now WHERE id = :id", {"now": now, "id": ticket_id}
    )
    return int(article_id)


def open_ticket(
    store: Store,
    queue: str,
    requester_id: int,
    *,
    subject: str,
    body_text: str,
    body_html: str | None = None,
    attachments: Sequence[FileData] = (),
    source: str = "mail",
    mail_id: int | None = None,
) -> tuple[int, int]:
    """Open a ticket with its first article; return (ticket id, article id)."""
    now = utcnow()
    ticket_id = int(
        store.scalar(
            "INSERT INTO ticket (queue, subject, status, requester_id, created_at, updated_at)"
            " VALUES (:queue, :subject, 'new', :requester, :now, :now) RETURNING id",
            {"queue": queue, "subject": subject, "requester": requester_id, "now": now},
        )
    )
    article_id = add_article(
        store,
        ticket_id,
        requester_id,
        source=source,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        attachments=attachments,
        mail_id=mail_id,
    )
    return ticket_id, article_id
