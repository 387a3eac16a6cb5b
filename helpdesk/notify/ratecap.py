"""Caps on automatic mail to one address, counted in the database.

Two machines answering each other through the helpdesk (an autoresponder
without markers, a misconfigured forwarder) would otherwise write forever.
The defaults follow Znuny (PostmasterMaxEmails: 40 a day per recipient) and
Zammad (per-ticket caps counted over minutes to hours): 10 an hour, 40 a day.

Requesters are counted per address. Technicians are counted per address and
ticket, so that a busy queue's technicians still hear of every new ticket while
a loop through one ticket stops.
"""

from __future__ import annotations

from datetime import timedelta

from helpdesk.config import Limits
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["over_cap"]


def over_cap(
    store: Store, limits: Limits, to_addr: str, ticket_id: int | None, per_ticket: bool
) -> str | None:
    """Say why one more mail to this address would be over a cap, or None if it is not."""
    if not store.is_sqlite:
        # Concurrent deliveries to one address would all count below the cap and
        # all send (READ COMMITTED); SQLite's BEGIN IMMEDIATE already serialises them.
        store.execute("SELECT pg_advisory_xact_lock(hashtext(:to))", {"to": to_addr})
    now = utcnow()
    where = "to_addr = :to AND created_at > :since AND status NOT IN ('capped', 'skipped')"
    params: dict[str, object] = {"to": to_addr}
    if per_ticket and ticket_id is not None:
        where += " AND ticket_id = :ticket"
        params["ticket"] = ticket_id
    scope = " about this ticket" if "ticket" in params else ""
    for limit, window, label in (
        (limits.per_hour, timedelta(hours=1), "hour"),
        (limits.per_day, timedelta(days=1), "day"),
    ):
        if limit == 0:
            continue  # 0 switches a cap off
        count = store.scalar(
            f"SELECT COUNT(*) FROM outbox_message WHERE {where}",
            {**params, "since": now - window},
        )
        if count >= limit:
            return (
                f"rate cap: {count} mails to {to_addr}{scope} in the last {label} (limit {limit})"
            )
    return None
