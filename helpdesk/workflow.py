"""Every change to a ticket, whichever door it comes in by (mail, web, CLI, scheduler).

Functions take an open Store inside the caller's transaction and never commit:
the caller decides what is atomic (research/style.md, "Transactions belong to callers").
Every change a requester's page shows (an entry, a status, a technician) must move
ticket.updated_at: the viewer keeps rendered pages keyed on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = [
    "FileData",
    "ensure_person",
    "open_ticket",
    "add_article",
    "add_followup",
    "attach_machine_mail",
    "add_participant",
    "record_message_id",
]


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
    body_trimmed: str | None = None,
) -> int:
    """Append an entry to a ticket's thread with its files; return the article id.

    This only writes: the callers below decide what the entry means and whom it
    notifies.
    """
    now = utcnow()
    article_id = store.scalar(
        "INSERT INTO article (ticket_id, author_id, source, mail_id, internal, subject,"
        " body_text, body_html, body_trimmed, created_at) VALUES (:ticket, :author, :source,"
        " :mail, :internal, :subject, :text, :html, :trimmed, :now) RETURNING id",
        {
            "trimmed": body_trimmed if body_trimmed != body_text else None,
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


def record_message_id(store: Store, ticket_id: int, message_id: str | None) -> None:
    """Remember that a received Message-ID belongs to a ticket: replies will name it."""
    if not message_id:
        return
    from helpdesk.notify.outbox import message_id_digest

    store.execute(
        "INSERT INTO thread_ref (message_id_sha256, ticket_id, origin)"
        " VALUES (:sha, :ticket, 'in') ON CONFLICT DO NOTHING",
        {"sha": message_id_digest(message_id), "ticket": ticket_id},
    )


def add_participant(store: Store, ticket_id: int, person_id: int, role: str = "cc") -> None:
    """Let someone besides the requester take part in a ticket (Cc'd on the original)."""
    store.execute(
        "INSERT INTO participant (ticket_id, person_id, role) VALUES (:ticket, :person, :role)"
        " ON CONFLICT DO NOTHING",
        {"ticket": ticket_id, "person": person_id, "role": role},
    )


def open_ticket(
    store: Store,
    settings: Settings,
    queue: Queue,
    requester_id: int,
    *,
    subject: str,
    body_text: str,
    body_html: str | None = None,
    attachments: Sequence[FileData] = (),
    source: str = "mail",
    mail_id: int | None = None,
    message_id: str | None = None,
    participant_ids: Sequence[int] = (),
    acknowledge: bool = True,
) -> tuple[int, int]:
    """Open a ticket with its first article, tell the requester (unless acknowledge is
    False: their address may be forged) and the technicians; return (ticket id, article id)."""
    from helpdesk.notify import notices

    now = utcnow()
    ticket_id = int(
        store.scalar(
            "INSERT INTO ticket (queue, subject, status, requester_id, created_at, updated_at)"
            " VALUES (:queue, :subject, 'new', :requester, :now, :now) RETURNING id",
            {"queue": queue.name, "subject": subject, "requester": requester_id, "now": now},
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
    for person_id in participant_ids:
        if person_id != requester_id:
            add_participant(store, ticket_id, person_id)
    record_message_id(store, ticket_id, message_id)
    notices.ticket_opened(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        mail_id=mail_id,
        incoming_message_id=message_id,
        acknowledge=acknowledge,
    )
    return ticket_id, article_id


def add_followup(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    *,
    by_technician: bool,
    subject: str,
    body_text: str,
    body_trimmed: str | None = None,
    body_html: str | None = None,
    attachments: Sequence[FileData] = (),
    source: str = "mail",
    mail_id: int | None = None,
    message_id: str | None = None,
) -> int:
    """Add a follow-up to a ticket and queue its news: a technician's goes to the
    requester, anyone else's to the technicians. Return the article id."""
    from helpdesk.notify import notices

    article_id = add_article(
        store,
        ticket_id,
        author_id,
        source=source,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        body_trimmed=body_trimmed,
        attachments=attachments,
        mail_id=mail_id,
    )
    record_message_id(store, ticket_id, message_id)
    notices.followup_added(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        by_technician=by_technician,
        mail_id=mail_id,
        incoming_message_id=message_id,
    )
    return article_id


def attach_machine_mail(
    store: Store,
    ticket_id: int,
    author_id: int,
    *,
    subject: str,
    body_text: str,
    attachments: Sequence[FileData] = (),
    mail_id: int | None = None,
) -> int:
    """File an auto-reply or a bounce in its ticket, silently: an internal entry that
    changes nothing and notifies nobody."""
    return add_article(
        store,
        ticket_id,
        author_id,
        source="mail",
        subject=subject,
        body_text=body_text,
        attachments=attachments,
        mail_id=mail_id,
        internal=True,
    )
