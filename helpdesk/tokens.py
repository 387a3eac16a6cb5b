"""Access tokens: the requester's private link to a ticket.

A token is 256 random bits from `secrets`; only its SHA-256 is stored, so a copy
of the database opens no ticket. Lookups go by hash and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from helpdesk.store import Store
from helpdesk.store import as_datetime
from helpdesk.store import utcnow

__all__ = ["Access", "new_token", "hash_token", "link", "lookup", "revoke", "redact_links"]


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token(store: Store, ticket_id: int, person_id: int) -> str:
    """Make a token giving a person access to a ticket; return it (it is not stored)."""
    token = secrets.token_urlsafe(32)
    store.execute(
        "INSERT INTO access_token (ticket_id, person_id, token_sha256, created_at)"
        " VALUES (:ticket, :person, :sha, :now)",
        {"ticket": ticket_id, "person": person_id, "sha": hash_token(token), "now": utcnow()},
    )
    return token


def link(base_url: str, token: str) -> str:
    """The URL of a ticket's page for a token."""
    return f"{base_url.rstrip('/')}/t/{token}"


# What secrets.token_urlsafe(32) gives: anything else is not worth a query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_LINK_TOKEN = re.compile(r"(/t/)[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def redact_links(text: str) -> str:
    """A text without the tokens of private links (`/t/<token>` becomes `/t/…`).

    Requesters quote our mail, link included, when they answer it: the text we keep
    and pass on to technicians must not carry the key to their ticket. (The raw mail
    is kept byte for byte, and holds what they quoted.)
    """
    return _LINK_TOKEN.sub("\\1…", text) if "/t/" in text else text


@dataclass(frozen=True)
class Access:
    """What a valid token opens: a ticket, for a person, and the ticket's state now."""

    ticket_id: int
    person_id: int
    status: str = ""
    # Moves with every change the ticket's page shows (the workflow sees to it):
    # the viewer keys its rendered pages on it.
    updated_at: object = None


def lookup(store: Store, token: str, days_after_close: int) -> Access | None:
    """The ticket a token opens, or None when it is malformed, unknown, revoked, or its
    ticket closed more than days_after_close days ago."""
    if not _TOKEN.fullmatch(token):
        return None
    digest = hash_token(token)
    row = store.one(
        "SELECT a.ticket_id, a.person_id, a.token_sha256, t.status, t.closed_at, t.updated_at"
        " FROM access_token a JOIN ticket t ON t.id = a.ticket_id"
        " WHERE a.token_sha256 = :sha AND a.revoked_at IS NULL",
        {"sha": digest},
    )
    if row is None or not hmac.compare_digest(row[2], digest):
        return None
    if row[3] == "closed" and row[4] is not None:
        closed_at = as_datetime(row[4])
        if utcnow() - closed_at > timedelta(days=days_after_close):
            return None
    return Access(int(row[0]), int(row[1]), row[3], row[5])


def revoke(store: Store, ticket_id: int) -> int:
    """Revoke every token of a ticket; return how many."""
    return store.execute(
        "UPDATE access_token SET revoked_at = :now WHERE ticket_id = :ticket"
        " AND revoked_at IS NULL",
        {"now": utcnow(), "ticket": ticket_id},
    ).rowcount
