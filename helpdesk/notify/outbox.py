"""The transactional outbox: mail is queued with the change that causes it, sent after commit.

`enqueue` runs inside the caller's transaction, so a rolled-back change never
sends anything and a committed one never forgets its mail. `flush` sends due
rows afterwards, each claimed by one flusher at a time (a conditional UPDATE,
so two flushers never send the same row), and reschedules temporary failures
with a growing delay. A flusher killed while sending leaves the row `sending`
with a lease; once the lease runs out another flush sends it again, so a crash
at the worst moment may send twice but never loses a mail.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from helpdesk.config import Settings
from helpdesk.notify.compose import Outgoing
from helpdesk.notify.compose import compose
from helpdesk.notify.compose import link_marker
from helpdesk.notify.compose import with_link
from helpdesk.notify.ratecap import over_cap
from helpdesk.store import Store
from helpdesk.store import StoreError
from helpdesk.store import utcnow

__all__ = [
    "FlushResult",
    "Unsent",
    "enqueue",
    "flush",
    "last_id",
    "not_sent",
    "takes_no_mail",
    "BACKOFF",
    "MAX_TRIES",
]

log = logging.getLogger("helpdesk.outbox")

# The start of last_error of a mail kept back because its ticket is distrusted (a
# forged From, a spam): policy, not a failure (notify/notices.py writes it).
WITHHELD_DISTRUSTED = "not sent: distrusted requester"

# Minutes to wait after the n-th failed try; the last one repeats.
BACKOFF = (1, 5, 15, 60, 240)
MAX_TRIES = 24  # about four days, as MTAs keep mail before bouncing it
LEASE = timedelta(minutes=10)
# Temporary failures in a row that end a flush: one is a recipient's greylisting,
# three look like a transport that is down.
STOP_AFTER = 3
# Addresses that never read what they get (RT's SendNoAutoResponseRegExp, Znuny's
# SendNoAutoResponseRegExp): answering them only feeds bounces.
_NO_REPLY = re.compile(
    r"^(?:no-?reply|do-?not-?reply|mailer-daemon|postmaster)(?:[+.-][^@]*)?@|@invalid$",
    re.IGNORECASE,
)


def takes_no_mail(address: str) -> bool:
    """Tell whether an address is one that never reads what it gets (no-reply...)."""
    return _NO_REPLY.match(address) is not None


def enqueue(
    store: Store,
    settings: Settings,
    out: Outgoing,
    *,
    kind: str,
    ticket_id: int | None,
    mail_id: int | None,
    per_ticket_cap: bool = False,
) -> int:
    """Queue one message in the caller's transaction; return its outbox id.

    Over a cap the row is kept as `capped` and never sent (automatic kinds meet the
    rate cap, every kind the loop guard: notify/ratecap.py), to a no-reply address
    as `skipped`; a message that cannot be written (an address no header can carry)
    is kept as `failed`. Whoever queues a person's words reads the row's status
    (`not_sent`) and tells their author.
    """
    now = utcnow()
    status, error = "queued", None
    capped = over_cap(store, settings.limits, out.to_addr, ticket_id, per_ticket_cap, kind)
    try:
        data = compose(out)
    except Exception as exc:  # noqa: BLE001 - the email package raises several types
        data, status, error = b"", "failed", f"cannot write this message: {exc}"
    if status == "queued" and _NO_REPLY.match(out.to_addr):
        status, error = "skipped", f"{out.to_addr} is a no-reply address"
    if capped and status == "queued":
        status, error = "capped", capped
    outbox_id = int(
        store.scalar(
            "INSERT INTO outbox_message (ticket_id, mail_id, kind, to_addr, envelope_from,"
            " subject, message_id, data, status, tries, next_try_at, last_error, created_at)"
            " VALUES (:ticket, :mail, :kind, :to, :efrom, :subject, :msgid, :data, :status, 0,"
            " :now, :error, :now) RETURNING id",
            {
                "ticket": ticket_id,
                "mail": mail_id,
                "kind": kind,
                "to": out.to_addr,
                "efrom": out.from_addr,
                "subject": out.subject,
                "msgid": out.message_id,
                "data": data,
                "status": status,
                "now": now,
                "error": error,
            },
        )
    )
    if ticket_id is not None:
        # Replies name this Message-ID: it leads them back to the ticket.
        store.execute(
            "INSERT INTO thread_ref (message_id_sha256, ticket_id, origin)"
            " VALUES (:sha, :ticket, 'out') ON CONFLICT DO NOTHING",
            {"sha": message_id_digest(out.message_id), "ticket": ticket_id},
        )
    if status != "queued":
        log.warning("outbox #%s to %s not sent: %s", outbox_id, out.to_addr, error)
    return outbox_id


@dataclass(frozen=True)
class Unsent:
    """A queued mail that did not go: for good (capped, skipped, failed), or not yet
    (queued again after a temporary failure)."""

    outbox_id: int
    kind: str
    to_addr: str
    status: str
    error: str

    @property
    def for_good(self) -> bool:
        """Whether no retry will ever send it."""
        return self.status != "queued"

    @property
    def withheld(self) -> bool:
        """Whether it was kept back on purpose: its ticket's requester is distrusted."""
        return self.status == "skipped" and self.error.startswith(WITHHELD_DISTRUSTED)


def last_id(store: Store) -> int:
    """The newest outbox id: what a change queues from now on comes after it."""
    return int(store.scalar("SELECT COALESCE(MAX(id), 0) FROM outbox_message"))


def not_sent(
    store: Store,
    kinds: frozenset[str],
    *,
    ticket_id: int,
    mail_id: int | None = None,
    after_id: int = 0,
) -> list[Unsent]:
    """The mails of these kinds about a ticket (queued after `after_id`, or caused by one
    incoming mail) that were not sent, for good or not yet."""
    sql = (
        "SELECT id, kind, to_addr, status, last_error FROM outbox_message"
        " WHERE ticket_id = :ticket AND id > :after"
        " AND (status IN ('capped', 'skipped', 'failed')"
        " OR (status = 'queued' AND last_error IS NOT NULL))"
    )
    params: dict[str, Any] = {"ticket": ticket_id, "after": after_id}
    if mail_id is not None:
        sql += " AND mail_id = :mail"
        params["mail"] = mail_id
    rows = store.execute(sql + " ORDER BY id", params).fetchall()
    return [
        Unsent(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4] or r[3]))
        for r in rows
        if r[1] in kinds
    ]


def message_id_digest(message_id: str) -> str:
    """The key of a Message-ID in thread_ref (ids are case-sensitive on the left only,
    but clients change neither side: compare them as written, without <>)."""
    return hashlib.sha256(message_id.strip().strip("<>").encode("utf-8", "replace")).hexdigest()


@dataclass
class FlushResult:
    """What one flush did."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return f"{self.sent} sent, {self.deferred} deferred, {self.failed} failed"


# Queued rows wait for their retry time unless the flush is a manual "now";
# rows left `sending` by a dead flusher wait for their lease to run out, always.
_DUE = (
    "((status = 'queued' AND (next_try_at <= :now OR :now_too = 1))"
    " OR (status = 'sending' AND next_try_at <= :now))"
)


def _due(
    store: Store, mail_id: int | None, ticket_id: int | None, limit: int, now_too: bool
) -> list[int]:
    sql = "SELECT id FROM outbox_message WHERE " + _DUE
    params: dict[str, Any] = {"now": utcnow(), "now_too": int(now_too)}
    if mail_id is not None:
        sql += " AND mail_id = :mail"
        params["mail"] = mail_id
    if ticket_id is not None:
        sql += " AND ticket_id = :ticket"
        params["ticket"] = ticket_id
    sql += f" ORDER BY id LIMIT {int(limit)}"
    return [int(row[0]) for row in store.execute(sql, params).fetchall()]


def _claim(
    store: Store, settings: Settings, outbox_id: int, now_too: bool
) -> tuple[str, str, bytes, int] | None:
    now = utcnow()
    with store.transaction():
        claimed = store.execute(
            "UPDATE outbox_message SET status = 'sending', tries = tries + 1,"
            " next_try_at = :lease WHERE id = :id AND " + _DUE,
            {"id": outbox_id, "now": now, "lease": now + LEASE, "now_too": int(now_too)},
        ).rowcount
        if claimed != 1:
            return None  # another flusher has it
        row = store.one(
            "SELECT envelope_from, to_addr, data, tries, message_id, ticket_id"
            " FROM outbox_message WHERE id = :id",
            {"id": outbox_id},
        )
        assert row is not None
        data = bytes(row[2])
        if row[5] is not None:
            data = _with_private_link(store, settings, int(row[5]), str(row[4]), str(row[1]), data)
    return str(row[0]), str(row[1]), data, int(row[3])


def _with_private_link(
    store: Store, settings: Settings, ticket_id: int, message_id: str, to_addr: str, data: bytes
) -> bytes:
    """The message as it goes out: its link marker replaced by a fresh private link.

    The token is made here, in the claim's transaction, and only its hash is stored:
    neither the stored message nor anything else in the database opens the ticket.
    A second try (after a temporary failure) makes another one; the unsent ones open
    nothing anyone knows. The link is its recipient's own: the requester's, or a Cc
    participant's (tokens are per person); an address that is neither gets the site's
    address instead, never someone else's key.
    """
    from helpdesk import tokens

    def fresh_link() -> str:
        person = store.scalar(
            "SELECT p.id FROM person p WHERE p.email = :to AND (p.id = (SELECT requester_id"
            " FROM ticket WHERE id = :ticket) OR p.id IN (SELECT person_id FROM participant"
            " WHERE ticket_id = :ticket))",
            {"to": to_addr, "ticket": ticket_id},
        )
        if person is None:
            log.warning("outbox %s: %s takes no part in ticket #%s", message_id, to_addr, ticket_id)
            return settings.base_url
        return tokens.link(settings.base_url, tokens.new_token(store, ticket_id, int(person)))

    return with_link(data, link_marker(message_id), fresh_link) or data


def _finish(store: Store, outbox_id: int, status: str, error: str | None, tries: int) -> None:
    now = utcnow()
    delay = timedelta(minutes=BACKOFF[min(tries, len(BACKOFF)) - 1])
    with store.transaction():
        store.execute(
            "UPDATE outbox_message SET status = :status, last_error = :error,"
            " sent_at = :sent, next_try_at = :next WHERE id = :id AND status = 'sending'",
            {
                "id": outbox_id,
                "status": status,
                "error": error[:2000] if error else None,
                "sent": now if status == "sent" else None,
                "next": now + delay,
            },
        )


def flush(
    store: Store,
    settings: Settings,
    *,
    mail_id: int | None = None,
    ticket_id: int | None = None,
    limit: int = 500,
    due_only: bool = True,
    stop_after: int = STOP_AFTER,
) -> FlushResult:
    """Send the queued mail whose time has come (all of it with due_only=False;
    only what one incoming mail caused with mail_id, or one ticket's with ticket_id).

    Stops after `stop_after` temporary failures in a row (the transport is down);
    the next flush tries again. Raises StoreError when the database fails, and
    ConfigError for an unusable [outgoing].
    """
    from helpdesk.notify.transport import PermanentFailure
    from helpdesk.notify.transport import TemporaryFailure
    from helpdesk.notify.transport import make_transport

    result = FlushResult()
    try:
        with store.transaction():
            due = _due(store, mail_id, ticket_id, limit, not due_only)
    except StoreError as exc:
        log.warning("outbox flush stopped: %s", exc)
        raise
    if not due:
        return result
    # Made before any row is claimed: a bad [outgoing] must not strand rows in `sending`.
    transport = make_transport(settings.outgoing)
    failures_in_a_row = 0
    try:
        for outbox_id in due:
            claimed = _claim(store, settings, outbox_id, not due_only)
            if claimed is None:
                continue
            envelope_from, to_addr, data, tries = claimed
            try:
                transport.send(envelope_from, [to_addr], data)
            except PermanentFailure as exc:
                _finish(store, outbox_id, "failed", str(exc), tries)
                result.failed += 1
                log.warning("outbox #%s to %s failed: %s", outbox_id, to_addr, exc)
                continue
            except TemporaryFailure as exc:
                status = "failed" if tries >= MAX_TRIES else "queued"
                _finish(store, outbox_id, status, str(exc), tries)
                result.deferred += status == "queued"
                result.failed += status == "failed"
                log.warning("outbox #%s to %s deferred: %s", outbox_id, to_addr, exc)
                failures_in_a_row += 1
                if failures_in_a_row >= stop_after:
                    break  # the transport is down, not one recipient: try later
                continue
            failures_in_a_row = 0
            _finish(store, outbox_id, "sent", None, tries)
            result.sent += 1
            log.info("outbox #%s sent to %s", outbox_id, to_addr)
    except StoreError as exc:
        log.warning("outbox flush stopped: %s", exc)
        raise
    finally:
        transport.close()
    return result
