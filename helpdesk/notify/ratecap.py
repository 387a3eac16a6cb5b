"""Caps on mail to one address, counted in the database.

Two machines answering each other through the helpdesk (an autoresponder
without markers, a misconfigured forwarder) would otherwise write forever.

The automatic cap counts and stops automatic mail only (notify/kinds.py): an
acknowledgement, a "taken", a confirmation request. Its defaults follow Znuny
(PostmasterMaxEmails: 40 a day per recipient) and Zammad (per-ticket caps
counted over minutes to hours): 10 an hour, 40 a day. Requesters are counted per
address; technicians per address and ticket, so that a busy queue's technicians
still hear of every new ticket while a loop through one ticket stops.

Mail that carries a person's words (a technician's answer, a resolution, the
requester's news to the technicians) is never held by that cap: only the loop
guard holds it, a much higher cap on all mail to one address about one ticket
(60 an hour, 200 a day). No person writes 60 answers an hour in one ticket; a
loop between two mailboxes that the incoming side does not recognise (no
Auto-Submitted, no marker of ours kept) does, within seconds, and without this
guard it never ends: each answer of ours is a technician's or a requester's
follow-up, which the automatic cap no longer counts. A capped mail is not sent,
so nothing answers it: the loop ends at the guard.
"""

from __future__ import annotations

from datetime import timedelta

from helpdesk.config import Limits
from helpdesk.notify.kinds import WORDS
from helpdesk.notify.kinds import automatic
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["over_cap"]

_WORDS_LIST = ", ".join(f"'{kind}'" for kind in sorted(WORDS))


def over_cap(
    store: Store,
    limits: Limits,
    to_addr: str,
    ticket_id: int | None,
    per_ticket: bool,
    kind: str,
) -> str | None:
    """Say why one more mail of this kind to this address would be over a cap, or None.

    Automatic kinds meet the automatic cap (per ticket when `per_ticket`); every kind
    meets the loop guard of its ticket.
    """
    if not store.is_sqlite:
        # Concurrent deliveries to one address would all count below the cap and
        # all send (READ COMMITTED); SQLite's BEGIN IMMEDIATE already serialises them.
        store.execute("SELECT pg_advisory_xact_lock(hashtext(:to))", {"to": to_addr})
    counted = "to_addr = :to AND created_at > :since AND status NOT IN ('capped', 'skipped')"
    if automatic(kind):
        where = f"{counted} AND kind NOT IN ({_WORDS_LIST})"
        params: dict[str, object] = {"to": to_addr}
        if per_ticket and ticket_id is not None:
            where += " AND ticket_id = :ticket"
            params["ticket"] = ticket_id
        scope = " about this ticket" if "ticket" in params else ""
        why = _over(store, where, params, limits.per_hour, limits.per_day)
        if why is not None:
            return f"rate cap: {why[0]} automatic mails to {to_addr}{scope} {why[1]}"
    if ticket_id is None:
        return None
    why = _over(
        store,
        f"{counted} AND ticket_id = :ticket",
        {"to": to_addr, "ticket": ticket_id},
        limits.loop_per_hour,
        limits.loop_per_day,
    )
    if why is not None:
        return f"loop guard: {why[0]} mails to {to_addr} about this ticket {why[1]}"
    return None


def _over(
    store: Store, where: str, params: dict[str, object], per_hour: int, per_day: int
) -> tuple[int, str] | None:
    """(count, "in the last hour (limit n)") for the first window that is full, else None."""
    now = utcnow()
    for limit, window, label in (
        (per_hour, timedelta(hours=1), "hour"),
        (per_day, timedelta(days=1), "day"),
    ):
        if limit == 0:
            continue  # 0 switches a cap off
        count = int(
            store.scalar(
                f"SELECT COUNT(*) FROM outbox_message WHERE {where}",
                {**params, "since": now - window},
            )
        )
        if count >= limit:
            return count, f"in the last {label} (limit {limit})"
    return None
