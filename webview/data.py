"""What a ticket page shows, read with plain SQL through the same Store as the pipe.

The page is the viewer's hot path: three queries, no ORM (see bench/README.md).
Internal entries (technicians' comments, filed auto-replies and bounces) are
never read here.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from helpdesk.store import Store

__all__ = [
    "TicketView",
    "Entry",
    "FileLink",
    "load_ticket",
    "load_header",
    "load_entries",
    "load_attachment",
    "load_text",
    "TEXT_LIMIT",
]

# The characters of one entry's text a page shows (a long log pasted into a mail is a
# download beyond that).
TEXT_LIMIT = 200_000


@dataclass
class FileLink:
    """An attachment as the page lists it."""

    id: int
    filename: str
    content_type: str
    size: int
    content_id: str | None = None


@dataclass
class Entry:
    """One entry of the thread."""

    id: int
    author_email: str
    author_name: str
    # Written by whoever reads the page (the requester, or a Cc participant by their link).
    by_reader: bool
    source: str
    created_at: Any
    text: str
    html: str | None
    files: list[FileLink] = field(default_factory=list)
    text_length: int = 0

    @property
    def text_cut(self) -> bool:
        """Whether the page shows only the start of the text."""
        return self.text_length > len(self.text)


@dataclass
class TicketView:
    """A ticket with its public thread, oldest first."""

    id: int
    queue: str
    subject: str
    status: str
    created_at: Any
    updated_at: Any
    requester_id: int
    assignee_name: str | None
    # The person whose private link opened the page; the requester when not set.
    reader_id: int | None = None
    entries: list[Entry] = field(default_factory=list)


def load_ticket(store: Store, ticket_id: int) -> TicketView | None:
    """Read a ticket and its public thread."""
    view = load_header(store, ticket_id)
    if view is not None:
        load_entries(store, view)
    return view


def load_header(store: Store, ticket_id: int) -> TicketView | None:
    """Read a ticket without its thread: what says whether a cached page is still right."""
    row = store.one(
        "SELECT t.id, t.queue, t.subject, t.status, t.created_at, t.updated_at,"
        " t.requester_id, a.name, a.email FROM ticket t"
        " LEFT JOIN person a ON a.id = t.assignee_id WHERE t.id = :id",
        {"id": ticket_id},
    )
    if row is None:
        return None
    # Seven columns, then the assignee's: the slice fills the fields before assignee_name.
    head: tuple[Any, Any, Any, Any, Any, Any, Any] = row[:7]
    return TicketView(*head, assignee_name=(row[7] or row[8]) if row[8] else None)


def load_entries(store: Store, view: TicketView) -> None:
    """Read a ticket's public thread, oldest first, with its files.

    Each text is read up to TEXT_LIMIT characters (its whole length beside it): a page
    stays readable on a phone and a worker's memory bounded whatever was pasted into
    a mail; the whole text is a download (load_text).
    """
    ticket_id = view.id
    reader = view.reader_id if view.reader_id is not None else view.requester_id
    entries: dict[int, Entry] = {}
    for a in store.execute(
        "SELECT a.id, p.email, p.name, a.author_id, a.source, a.created_at,"
        " substr(COALESCE(a.body_trimmed, a.body_text), 1, :limit),"
        " length(COALESCE(a.body_trimmed, a.body_text)),"
        # A reply whose quote was trimmed shows as text: its HTML still quotes.
        " CASE WHEN a.body_trimmed IS NULL THEN a.body_html END"
        " FROM article a JOIN person p ON p.id = a.author_id"
        " WHERE a.ticket_id = :id AND a.internal = :no ORDER BY a.id",
        {"id": ticket_id, "no": False, "limit": TEXT_LIMIT},
    ).fetchall():
        entries[a[0]] = Entry(
            id=a[0],
            author_email=a[1],
            author_name=a[2] or "",
            by_reader=a[3] == reader,
            source=a[4],
            created_at=a[5],
            text=a[6] or "",
            html=a[8],
            text_length=int(a[7] or 0),
        )
    if entries:
        for f in store.execute(
            "SELECT f.id, f.article_id, f.filename, f.content_type, f.size, f.content_id"
            " FROM attachment f"
            " JOIN article a ON a.id = f.article_id"
            " WHERE a.ticket_id = :id AND a.internal = :no ORDER BY f.id",
            {"id": ticket_id, "no": False},
        ).fetchall():
            entries[f[1]].files.append(FileLink(f[0], f[2] or "file", f[3], f[4], f[5]))
    view.entries = list(entries.values())


def load_text(store: Store, ticket_id: int, entry_id: int) -> str | None:
    """The whole shown text of a public entry of this ticket only."""
    row = store.one(
        "SELECT COALESCE(body_trimmed, body_text) FROM article"
        " WHERE id = :id AND ticket_id = :ticket AND internal = :no",
        {"id": entry_id, "ticket": ticket_id, "no": False},
    )
    return None if row is None else str(row[0] or "")


def load_attachment(
    store: Store, ticket_id: int, attachment_id: int
) -> tuple[str, str, bytes] | None:
    """(filename, stored content type, bytes) of a public attachment of this ticket only."""
    row = store.one(
        "SELECT f.filename, f.content_type, b.data FROM attachment f"
        " JOIN article a ON a.id = f.article_id JOIN blob b ON b.sha256 = f.blob_sha256"
        " WHERE f.id = :id AND a.ticket_id = :ticket AND a.internal = :no",
        {"id": attachment_id, "ticket": ticket_id, "no": False},
    )
    if row is None:
        return None
    return row[0] or "file", row[1], bytes(row[2])
