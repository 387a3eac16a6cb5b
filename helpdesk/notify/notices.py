"""Which mail a ticket event sends, to whom, in which language: queued in the outbox.

Called by helpdesk.workflow inside its transaction; nothing here sends.
"""

from __future__ import annotations

import logging
from typing import Any

from helpdesk import people
from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.display import safe_filename
from helpdesk.ingest.quotes import REPLY_MARKER_EN
from helpdesk.ingest.quotes import REPLY_MARKER_FR
from helpdesk.notify import outbox
from helpdesk.notify.compose import Outgoing
from helpdesk.notify.compose import link_marker
from helpdesk.notify.compose import new_message_id
from helpdesk.notify.render import render
from helpdesk.replyaddress import reply_address
from helpdesk.store import Store

__all__ = [
    "ticket_opened",
    "followup_added",
    "comment_added",
    "taken",
    "resolved",
    "closed",
    "reopened",
    "confirmation_asked",
    "cc_recipients",
    "REPLY_MARKERS",
]

log = logging.getLogger("helpdesk.notify")

# The first line of every notification: where the quoted earlier message starts
# when someone replies (helpdesk.ingest.quotes cuts there).
REPLY_MARKERS = {"fr": REPLY_MARKER_FR, "en": REPLY_MARKER_EN}


TEXT_LIMIT = 20_000


def _ticket(store: Store, ticket_id: int) -> dict[str, Any]:
    row = store.one(
        "SELECT t.id, t.queue, t.subject, t.status, p.id, p.email, p.name FROM ticket t"
        " JOIN person p ON p.id = t.requester_id WHERE t.id = :id",
        {"id": ticket_id},
    )
    assert row is not None, f"ticket #{ticket_id} vanished inside its own transaction"
    return {
        "id": row[0],
        "queue": row[1],
        "subject": row[2],
        "status": row[3],
        "requester_id": row[4],
        "requester": row[5],
        "requester_name": row[6] or "",
    }


def _article(store: Store, article_id: int) -> dict[str, Any]:
    row = store.one(
        "SELECT a.body_text, a.body_trimmed, p.email, p.name FROM article a"
        " JOIN person p ON p.id = a.author_id WHERE a.id = :id",
        {"id": article_id},
    )
    assert row is not None
    files = store.execute(
        "SELECT filename FROM attachment WHERE article_id = :id AND inline = :no ORDER BY id",
        {"id": article_id, "no": False},
    ).fetchall()
    return {
        "text": _excerpt(row[1] if row[1] is not None else row[0]),
        "author": row[2],
        "author_name": row[3] or "",
        # Named as the viewer shows them: no bidi trick reaches a mail either.
        "attachments": [safe_filename(f[0] or "") for f in files],
    }


def _excerpt(text: str) -> str:
    """The text a notification carries: all of it, up to a size a mail client shows.

    A 5 MB log pasted into a request must not become three 5 MB notifications;
    the whole text stays in the ticket.
    """
    if len(text) <= TEXT_LIMIT:
        return text
    cut = text.rfind("\n", 0, TEXT_LIMIT)
    return text[: cut if cut > TEXT_LIMIT // 2 else TEXT_LIMIT] + "\n[...]"


def _root_message_id(store: Store, ticket_id: int) -> str | None:
    return store.scalar(
        "SELECT m.message_id FROM article a JOIN mail_record m ON m.id = a.mail_id"
        " WHERE a.ticket_id = :id ORDER BY a.id LIMIT 1",
        {"id": ticket_id},
    )


class _Sender:
    """Queues the mails of one event: common headers, one call per recipient."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        queue: Queue,
        ticket: dict[str, Any],
        mail_id: int | None,
        incoming_message_id: str | None,
    ) -> None:
        self.store, self.settings, self.queue, self.ticket = store, settings, queue, ticket
        self.mail_id = mail_id
        self.domain = settings.domain_for(queue)
        root = _root_message_id(store, ticket["id"])
        self.references = [r for r in (root, incoming_message_id) if r]
        self.in_reply_to = incoming_message_id or root

    def send(
        self,
        kind: str,
        to_addr: str,
        to_name: str,
        context: dict[str, Any],
        *,
        to_technician: bool,
        auto_submitted: str = "auto-generated",
        link: bool = False,
    ) -> int:
        language = self.queue.language
        message_id = new_message_id(self.ticket["id"], self.domain)
        values = {
            "copied": False,  # True in what a Cc participant gets: "the request you are copied on"
            **context,
            "ticket": self.ticket,
            "recipient_name": to_name,
            "marker": REPLY_MARKERS[language],
            "signature": self.queue.display_name or self.queue.name,
        }
        if link:
            # The private link is made when the mail is sent (notify/outbox.py): what is
            # stored holds only this marker, so no copy of the database opens the ticket.
            values["link"] = link_marker(message_id)
        try:
            rendered = render(kind, language, values, self.settings.templates)
        except Exception:  # noqa: BLE001 - a sysadmin's template must not defer mail forever
            if not self.settings.templates:
                raise  # the built-in templates are tested: this is a bug, say so
            log.exception("template %s/%s.txt failed; the built-in one is used", language, kind)
            rendered = render(kind, language, values, None)
        tag = f"[{self.settings.subject_tag} #{self.ticket['id']}]"
        from_addr = self.queue.address(self.domain)
        out = Outgoing(
            from_addr=from_addr,
            from_name=self.queue.display_name or self.queue.name,
            to_addr=to_addr,
            to_name=to_name,
            subject=f"{tag} {rendered.subject}",
            body=rendered.body,
            message_id=message_id,
            instance=self.settings.instance,
            reply_to=reply_address(
                self.settings.signing_key(), self.queue.name, self.ticket["id"], from_addr
            ),
            in_reply_to=self.in_reply_to,
            references=self.references,
            auto_submitted=auto_submitted,
            ticket_id=self.ticket["id"],
        )
        return outbox.enqueue(
            self.store,
            self.settings,
            out,
            kind=kind,
            ticket_id=self.ticket["id"],
            mail_id=self.mail_id,
            per_ticket_cap=to_technician,
        )

    def technicians(self, *, besides: str = "") -> list[tuple[str, str]]:
        """The ticket's technician once taken, else its group; never the writer."""
        return [
            (email, name)
            for email, name in people.ticket_technicians(
                self.store, self.settings, self.queue, self.ticket["id"]
            )
            if email not in (besides, self.ticket["requester"])
        ]

    def to_participants(self, kind: str, context: dict[str, Any]) -> list[int]:
        """Queue a requester's mail to the ticket's Cc participants too, each with a private
        link of their own (made at send time for the mail's recipient, notify/outbox.py)."""
        mailed, _skipped = cc_recipients(self.store, self.settings, self.ticket["id"])
        return [
            self.send(
                kind, email, name, {**context, "copied": True}, to_technician=False, link=True
            )
            for email, name in mailed
        ]

    def to_requester(self, kind: str, context: dict[str, Any], *, link: bool = True) -> int:
        return self.send(
            kind,
            self.ticket["requester"],
            self.ticket["requester_name"],
            context,
            to_technician=False,
            link=link,
        )


def ticket_opened(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    mail_id: int | None,
    incoming_message_id: str | None,
    acknowledge: bool = True,
    previous_id: int | None = None,
) -> list[int]:
    """Queue the acknowledgement to the requester and the news to the technicians."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, incoming_message_id)
    ids = []
    if acknowledge:
        ids.append(
            sender.send(
                "ack",
                ticket["requester"],
                ticket["requester_name"],
                {**article, "previous": previous_id},
                to_technician=False,
                auto_submitted="auto-replied",  # RFC 3834: an answer to their mail
                link=True,
            )
        )
    for email, name in sender.technicians():
        ids.append(sender.send("tech_new", email, name, article, to_technician=True))
    return ids


def followup_added(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    by_technician: bool,
    mail_id: int | None,
    incoming_message_id: str | None,
) -> list[int]:
    """Queue the news of a follow-up: a technician's to the requester, anyone else's to
    the technicians."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, incoming_message_id)
    if by_technician:
        return [
            sender.to_requester("followup", article),
            *sender.to_participants("followup", article),
        ]
    return [
        sender.send("tech_followup", email, name, article, to_technician=True)
        for email, name in sender.technicians(besides=article["author"])
    ]


def comment_added(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    mail_id: int | None,
) -> list[int]:
    """Queue an internal comment's news to the ticket's other technicians, never to the
    requester."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, None)
    return [
        sender.send("tech_comment", email, name, article, to_technician=True)
        for email, name in sender.technicians(besides=article["author"])
    ]


def _latest_public_text(store: Store, ticket_id: int) -> str:
    row = store.one(
        "SELECT body_text, body_trimmed FROM article WHERE ticket_id = :id AND internal = :no"
        " ORDER BY id DESC LIMIT 1",
        {"id": ticket_id, "no": False},
    )
    if row is None:
        return ""
    return _excerpt(row[1] if row[1] is not None else row[0])


def taken(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    technician_id: int,
    *,
    by: int | None,
) -> list[int]:
    """Tell the requester who took their request; tell the technician when someone else
    gave it to them."""
    ticket = _ticket(store, ticket_id)
    email, name = store.one("SELECT email, name FROM person WHERE id = :id", {"id": technician_id})
    sender = _Sender(store, settings, queue, ticket, None, None)
    context = {"technician": email, "technician_name": name or ""}
    ids = [sender.to_requester("taken", context)]
    if by != technician_id:
        by_name = "?"
        if by is not None:
            row = store.one("SELECT email, name FROM person WHERE id = :id", {"id": by})
            by_name = (row[1] or row[0]) if row else by_name
        else:
            by_name = "helpdesk-pipe"
        values = {**context, "by_name": by_name, "text": _latest_public_text(store, ticket_id)}
        ids.append(sender.send("assigned", email, name or "", values, to_technician=True))
    return ids


def resolved(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    mail_id: int | None,
    incoming_message_id: str | None,
) -> list[int]:
    """Tell the requester their request is resolved: the solution, and that it closes by
    itself unless they answer."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, incoming_message_id)
    context = {**article, "days": settings.autoclose_days}
    return [sender.to_requester("resolved", context), *sender.to_participants("resolved", context)]


def closed(store: Store, settings: Settings, queue: Queue, ticket_id: int) -> list[int]:
    """Tell the requester their request is closed."""
    ticket = _ticket(store, ticket_id)
    sender = _Sender(store, settings, queue, ticket, None, None)
    return [sender.to_requester("closed", {}, link=False)]


def reopened(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int | None,
    *,
    by: str,
    mail_id: int | None,
    incoming_message_id: str | None,
) -> list[int]:
    """Tell the ticket's technician (its group if nobody has it) that it is open again,
    with the reopening message."""
    ticket = _ticket(store, ticket_id)
    article = (
        _article(store, article_id)
        if article_id is not None
        else {"text": "", "author": by, "author_name": "", "attachments": []}
    )
    sender = _Sender(store, settings, queue, ticket, mail_id, incoming_message_id)
    return [
        sender.send("reopened", email, name, {**article, "by": by}, to_technician=True)
        for email, name in sender.technicians(besides=by)
    ]


def cc_recipients(
    store: Store, settings: Settings, ticket_id: int
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (email, name) of the Cc participants a ticket's answers and resolution go to,
    first copied first, and why each other participant gets nothing.

    Whoever copied them chose the list, and a technician's answer goes to it in our
    name: [tickets] notify_cc, notify_cc_domains and notify_cc_max bound it, and our own
    addresses, the technicians (they have their own notices), addresses that take no
    mail and the requester (mailed once, as such) are never on it.
    """
    requester = store.scalar(
        "SELECT p.email FROM ticket t JOIN person p ON p.id = t.requester_id WHERE t.id = :id",
        {"id": ticket_id},
    )
    rows = store.execute(
        "SELECT p.email, p.name FROM participant pa JOIN person p ON p.id = pa.person_id"
        " WHERE pa.ticket_id = :id ORDER BY p.id",
        {"id": ticket_id},
    ).fetchall()
    domains = settings.notify_cc_domains
    mailed: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    for email, name in rows:
        domain = email.rpartition("@")[2]
        if not settings.notify_cc:
            why = "[tickets] notify_cc is false"
        elif email == requester or email in dict(mailed):
            why = "mailed already, once"
        elif settings.queue_for(email) is not None:
            why = "an address of this helpdesk"
        elif people.is_technician(store, settings, email):
            why = "a technician: technicians get their own notices"
        elif outbox.takes_no_mail(email):
            why = "a no-reply address"
        elif domains and not any(domain == d or domain.endswith("." + d) for d in domains):
            why = "domain not in [tickets] notify_cc_domains"
        elif len(mailed) >= settings.notify_cc_max:
            why = f"over [tickets] notify_cc_max ({settings.notify_cc_max})"
        else:
            mailed.append((email, name or ""))
            continue
        skipped[email] = why
    return mailed, skipped


# What a confirmation request quotes of the words it asks about: enough to recognise
# them, not a channel for a stranger's long text.
CONFIRM_EXCERPT = 2_000


def confirmation_asked(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    mail_id: int | None,
) -> list[int]:
    """Ask the author of an entry held as unverified to confirm it by replying: the reply
    names this mail's Message-ID, which only that address received.

    Capped like any automatic mail, and per ticket: a forger sending tagged mail in
    someone's name makes the real address hear of it a few times, not a flood.
    """
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    text = article["text"]
    if len(text) > CONFIRM_EXCERPT:
        text = text[:CONFIRM_EXCERPT].rstrip() + "\n[...]"
    held_id = store.scalar("SELECT message_id FROM mail_record WHERE id = :id", {"id": mail_id})
    sender = _Sender(store, settings, queue, ticket, mail_id, held_id)
    return [
        sender.send(
            "confirm",
            article["author"],
            article["author_name"],
            {**article, "text": text},
            to_technician=True,  # counted per ticket, as a loop through one ticket would be
            auto_submitted="auto-replied",
        )
    ]
