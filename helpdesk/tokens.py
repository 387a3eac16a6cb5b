"""Access tokens: the requester's private link to a ticket.

A token is 256 random bits from `secrets`; only its SHA-256 is stored, so a copy
of the database opens no ticket. Lookups go by hash and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["new_token", "hash_token", "link", "ticket_of_token", "revoke"]


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


def ticket_of_token(store: Store, token: str) -> int | None:
    """The ticket a valid, unrevoked token opens, else None."""
    digest = hash_token(token)
    row = store.one(
        "SELECT ticket_id, token_sha256 FROM access_token"
        " WHERE token_sha256 = :sha AND revoked_at IS NULL",
        {"sha": digest},
    )
    if row is None or not hmac.compare_digest(row[1], digest):
        return None
    return int(row[0])


def revoke(store: Store, ticket_id: int) -> int:
    """Revoke every token of a ticket; return how many."""
    return store.execute(
        "UPDATE access_token SET revoked_at = :now WHERE ticket_id = :ticket"
        " AND revoked_at IS NULL",
        {"now": utcnow(), "ticket": ticket_id},
    ).rowcount
