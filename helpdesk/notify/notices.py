"""Which mail a ticket event sends, to whom, in which language: queued in the outbox.

Called by helpdesk.workflow inside its transaction; nothing here sends.
"""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from helpdesk import people
from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.display import safe_filename
from helpdesk.ingest.quotes import REPLY_MARKER_EN
from helpdesk.ingest.quotes import REPLY_MARKER_FR
from helpdesk.notify import kinds
from helpdesk.notify import outbox
from helpdesk.notify.compose import Outgoing
from helpdesk.notify.compose import link_marker
from helpdesk.notify.compose import new_message_id
from helpdesk.notify.render import render
from helpdesk.replyaddress import reply_address
from helpdesk.store import Store
from helpdesk.store import as_datetime

__all__ = [
    "ticket_opened",
    "followup_added",
    "comment_added",
    "taken",
    "take_announced",
    "colleague_answered",
    "resolved",
    "closed",
    "reopened",
    "confirmation_asked",
    "answers_not_sent",
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
    return _cut(text, TEXT_LIMIT)


def _cut(text: str, limit: int) -> str:
    """A text up to `limit` characters, cut at a line end when one is near, marked."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit] + "\n[...]"


# The automatic mail to a requester's side that a distrusted ticket (ticket.distrust:
# a From that failed DMARC, a released spam, a ticket marked spam) never sends: each
# would be backscatter to an address that may never have written. A technician's
# written answer ("followup") is not among them: a person chose to send it.
DISTRUSTED_KINDS = ("ack", "taken", "resolved", "closed", "confirm")


def _withhold_if_distrusted(store: Store, ticket_id: int, outbox_id: int) -> None:
    """Keep a queued automatic mail as `skipped`, with the reason, if its ticket is
    distrusted: the outbox shows what was not sent and why."""
    reason = store.scalar("SELECT distrust FROM ticket WHERE id = :id", {"id": ticket_id})
    if reason:
        store.execute(
            "UPDATE outbox_message SET status = 'skipped', last_error = :why"
            " WHERE id = :id AND status = 'queued'",
            {"why": f"{outbox.WITHHELD_DISTRUSTED} ({reason})"[:1000], "id": outbox_id},
        )
        log.warning("outbox #%s not sent: ticket #%s is distrusted", outbox_id, ticket_id)


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
        template: str | None = None,
    ) -> int:
        language = self.queue.language
        template = template or kind
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
            rendered = render(template, language, values, self.settings.templates)
        except Exception:  # noqa: BLE001 - a sysadmin's template must not defer mail forever
            if not self.settings.templates:
                raise  # the built-in templates are tested: this is a bug, say so
            log.exception("template %s/%s.txt failed; the built-in one is used", language, template)
            rendered = render(template, language, values, None)
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
        outbox_id = outbox.enqueue(
            self.store,
            self.settings,
            out,
            kind=kind,
            ticket_id=self.ticket["id"],
            mail_id=self.mail_id,
            per_ticket_cap=to_technician,
        )
        if kind in DISTRUSTED_KINDS:
            _withhold_if_distrusted(self.store, self.ticket["id"], outbox_id)
        return outbox_id

    def technicians(self, *, besides: str = "") -> list[tuple[str, str]]:
        """The ticket's technician once taken, else its group; never the writer."""
        return [
            (email, name)
            for email, name in people.ticket_technicians(
                self.store, self.settings, self.queue, self.ticket["id"]
            )
            if email not in (besides, self.ticket["requester"])
        ]

    def team(self, *, besides: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """The ticket's technician and the rest of its group; never `besides` (the
        writer, the one who took it) nor the requester."""
        assignee = self.store.one(
            "SELECT p.email, p.name, t.group_name FROM ticket t"
            " LEFT JOIN person p ON p.id = t.assignee_id WHERE t.id = :id",
            {"id": self.ticket["id"]},
        )
        assert assignee is not None
        team = dict(
            people.group_members(self.store, self.settings, assignee[2] or self.queue.group)
        )
        if assignee[0] is not None:
            team = {assignee[0]: assignee[1] or team.get(assignee[0], ""), **team}
        return [
            (email, name)
            for email, name in team.items()
            if email not in (*besides, self.ticket["requester"])
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
    """Queue an internal comment's news to the ticket's technician and the rest of its
    group (a note is how one hands a ticket over: "Marie reprend"), never to its author
    nor to the requester."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, None)
    return [
        sender.send("tech_comment", email, name, article, to_technician=True)
        for email, name in sender.team(besides=(article["author"],))
    ]


# What a handover mail ("Demande attribuée") carries of the thread: the request, then
# the latest entries, each cut to ENTRY_LIMIT, all of them within TEXT_LIMIT; the
# entries left out are counted in the mail. A ticket's whole story stays on the ticket.
THREAD_ENTRIES = 30
ENTRY_LIMIT = 4_000
HISTORY_ROWS = 30


def _when(settings: Settings, value: Any, language: str) -> str:
    from zoneinfo import ZoneInfo

    try:
        zone: Any = ZoneInfo(settings.timezone)
    except (ValueError, KeyError):  # the viewer refuses to start on it; a mail still goes
        zone = UTC
    local = as_datetime(value).astimezone(zone)
    return local.strftime("%d/%m/%Y %H:%M" if language == "fr" else "%Y-%m-%d %H:%M")


def _thread(
    store: Store, settings: Settings, language: str, ticket: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """The entries a handover mail shows, oldest first, and how many it leaves out.

    Read bounded: at most THREAD_ENTRIES rows of at most ENTRY_LIMIT characters each,
    whatever the ticket holds.
    """
    select = (
        "SELECT a.id, p.email, p.name, a.internal, a.unverified, a.created_at,"
        " substr(COALESCE(a.body_trimmed, a.body_text), 1, :limit) FROM article a"
        " JOIN person p ON p.id = a.author_id WHERE a.ticket_id = :id"
    )
    params = {"id": ticket["id"], "limit": ENTRY_LIMIT + 1}
    first = store.execute(select + " ORDER BY a.id LIMIT 1", params).fetchall()
    latest = store.execute(
        select + " ORDER BY a.id DESC LIMIT :n", {**params, "n": THREAD_ENTRIES - 1}
    ).fetchall()
    total = int(
        store.scalar("SELECT COUNT(*) FROM article WHERE ticket_id = :id", {"id": ticket["id"]})
    )
    rows = {int(r[0]): r for r in [*first, *latest]}
    request = min(rows, default=None)
    entries: list[dict[str, Any]] = []
    budget = TEXT_LIMIT
    full = False
    # The newest count most to whoever takes over, and the request itself is always
    # shown: what is left out is one run of entries just after the request.
    for article_id in sorted(rows, reverse=True):
        row = rows[article_id]
        text = _cut(row[6] or "", ENTRY_LIMIT)
        full = full or (entries != [] and len(text) > budget)
        if full and article_id != request:
            continue
        budget -= len(text)
        entries.append(
            {
                "author": row[1],
                "author_name": row[2] or "",
                "requester": row[1] == ticket["requester"],
                "internal": bool(row[3]),
                "unverified": bool(row[4]),
                "at": _when(settings, row[5], language),
                "text": text,
            }
        )
    entries.reverse()
    return entries, total - len(entries)


def _history(
    store: Store, settings: Settings, language: str, ticket_id: int
) -> tuple[list[dict[str, Any]], int]:
    """The latest HISTORY_ROWS events of a ticket, oldest first, and how many are older."""
    rows = store.execute(
        "SELECT at, actor, action, old_status, new_status, detail FROM ticket_history"
        " WHERE ticket_id = :id ORDER BY id DESC LIMIT :n",
        {"id": ticket_id, "n": HISTORY_ROWS},
    ).fetchall()
    total = int(
        store.scalar("SELECT COUNT(*) FROM ticket_history WHERE ticket_id = :id", {"id": ticket_id})
    )
    events = [
        {
            "at": _when(settings, r[0], language),
            "actor": r[1],
            "action": r[2],
            "old_status": r[3] or "",
            "new_status": r[4] or "",
            "detail": _cut(r[5] or "", 300),
        }
        for r in reversed(rows)
    ]
    return events, total - len(events)


def _name_of(store: Store, person_id: int | None) -> str:
    """How a person is named in a mail to technicians; helpdesk-pipe for nobody (the
    scheduler, a sysadmin at the CLI)."""
    if person_id is None:
        return "helpdesk-pipe"
    row = store.one("SELECT email, name FROM person WHERE id = :id", {"id": person_id})
    return str((row[1] or row[0]) if row else "?")


def taken(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    technician_id: int,
    *,
    by: int | None,
    previous: int | None = None,
) -> list[int]:
    """Tell the requester who took their request; hand the ticket over to the technician
    when someone else gave it to them (its whole thread, notes included, and its
    history); tell the rest of its group, and whoever had it before, who has it now
    (take_announced)."""
    ticket = _ticket(store, ticket_id)
    person = store.one("SELECT email, name FROM person WHERE id = :id", {"id": technician_id})
    assert person is not None, f"technician #{technician_id} vanished inside the transaction"
    email, name = person
    sender = _Sender(store, settings, queue, ticket, None, None)
    context = {"technician": email, "technician_name": name or ""}
    ids = [sender.to_requester("taken", context)]
    by_name = _name_of(store, by)
    if by != technician_id:
        entries, omitted = _thread(store, settings, queue.language, ticket)
        events, events_omitted = _history(store, settings, queue.language, ticket_id)
        notes = any(e["internal"] for e in entries)
        values = {
            **context,
            "by_name": by_name,
            "entries": entries,
            "omitted": omitted,
            "history": events,
            "history_omitted": events_omitted,
            "notes": notes,
        }
        ids.append(
            sender.send(
                # A reply quotes this mail: with notes in it, the reply stays a note too
                # (helpdesk.ingest.thread.INTERNAL_NOTE_KINDS).
                kinds.ASSIGNED_NOTES if notes else "assigned",
                email,
                name or "",
                values,
                to_technician=True,
                template="assigned",
            )
        )
    return ids + take_announced(
        store, settings, queue, ticket_id, technician_id, by=by, previous=previous
    )


def take_announced(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    technician_id: int,
    *,
    by: int | None,
    previous: int | None = None,
    mail_id: int | None = None,
) -> list[int]:
    """Tell the rest of a ticket's group, and whoever had it before, who has it now (a
    take, an assignment, or a technician's first answer, which takes it): nobody else
    starts on it. The one who took it and the one who got it know already. `mail_id`:
    the incoming mail that took it, whose delivery sends what it queued."""
    ticket = _ticket(store, ticket_id)
    sender = _Sender(store, settings, queue, ticket, mail_id, None)
    person = store.one("SELECT email, name FROM person WHERE id = :id", {"id": technician_id})
    assert person is not None, f"technician #{technician_id} vanished inside the transaction"
    email, name = str(person[0]), str(person[1] or "")
    by_email = ""
    if by is not None:
        by_email = str(store.scalar("SELECT email FROM person WHERE id = :id", {"id": by}))
    context = {
        "technician": email,
        "technician_name": name,
        "by_name": _name_of(store, by),
        "by_self": by == technician_id,
    }
    recipients = []
    if previous is not None and previous != technician_id:
        row = store.one("SELECT email, name FROM person WHERE id = :id", {"id": previous})
        if row is not None:
            recipients.append((str(row[0]), str(row[1] or "")))
    recipients += sender.team(besides=(email, by_email))
    told = {email, by_email, ticket["requester"]}
    ids = []
    for member_email, member_name in recipients:
        if member_email in told:
            continue
        told.add(member_email)
        ids.append(
            sender.send(kinds.TECH_TAKEN, member_email, member_name, context, to_technician=True)
        )
    return ids


def colleague_answered(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    article_id: int,
    *,
    resolution: bool,
    mail_id: int | None,
) -> list[int]:
    """Tell a ticket's technician that a colleague answered its requester (or resolved
    it) in their place: what was said, so that nobody says it twice."""
    ticket = _ticket(store, ticket_id)
    article = _article(store, article_id)
    row = store.one(
        "SELECT p.email, p.name FROM ticket t JOIN person p ON p.id = t.assignee_id"
        " WHERE t.id = :id",
        {"id": ticket_id},
    )
    if row is None or row[0] in (article["author"], ticket["requester"]):
        return []
    sender = _Sender(store, settings, queue, ticket, mail_id, None)
    return [
        sender.send(
            kinds.TECH_COLLEAGUE,
            str(row[0]),
            str(row[1] or ""),
            {**article, "resolution": resolution},
            to_technician=True,
        )
    ]


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
    mail, the requester (mailed once, as such) and anyone copied on a distrusted ticket
    (a forged From, a spam: its author chose the list) are never on it.
    """
    row = store.one(
        "SELECT p.email, t.distrust FROM ticket t JOIN person p ON p.id = t.requester_id"
        " WHERE t.id = :id",
        {"id": ticket_id},
    )
    assert row is not None, f"no ticket #{ticket_id}"
    requester, distrust = row
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
        elif distrust:
            # Whoever wrote a forged From or a spam chose this list too.
            why = f"the ticket is distrusted ({distrust})"
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
    kind: str = kinds.CONFIRM,
    context: dict[str, Any] | None = None,
) -> list[int]:
    """Ask the author of an entry held as unverified to confirm it by replying: the reply
    names this mail's Message-ID, which only that address received.

    `kind` is `confirm` for the requester's side, `tech_confirm` for a technician's
    mail kept as a note; `context` adds to what the template gets (a `text` in it
    replaces the entry's). Capped like any automatic mail, and per ticket: a forger
    sending tagged mail in someone's name makes the real address hear of it a few
    times, not a flood.
    """
    ticket = _ticket(store, ticket_id)
    article = {**_article(store, article_id), **(context or {})}
    text = article["text"]
    if len(text) > CONFIRM_EXCERPT:
        text = text[:CONFIRM_EXCERPT].rstrip() + "\n[...]"
    held_id = store.scalar("SELECT message_id FROM mail_record WHERE id = :id", {"id": mail_id})
    sender = _Sender(store, settings, queue, ticket, mail_id, held_id)
    return [
        sender.send(
            kind,
            article["author"],
            article["author_name"],
            {**article, "text": text},
            to_technician=True,  # counted per ticket, as a loop through one ticket would be
            auto_submitted="auto-replied",
        )
    ]


def answers_not_sent(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    unsent: list[outbox.Unsent],
    *,
    author: str,
    author_name: str,
    mail_id: int | None,
) -> list[int]:
    """Tell a technician that their answer by mail did not reach its readers: to whom,
    and why. The answer stays in the ticket; nothing asks them to write it again."""
    if not unsent:
        return []
    ticket = _ticket(store, ticket_id)
    incoming = store.scalar("SELECT message_id FROM mail_record WHERE id = :id", {"id": mail_id})
    sender = _Sender(store, settings, queue, ticket, mail_id, incoming)
    context = {
        "unsent": [{"to": row.to_addr, "status": row.status, "error": row.error} for row in unsent]
    }
    return [
        sender.send(
            kinds.TECH_UNSENT,
            author,
            author_name,
            context,
            to_technician=True,
            auto_submitted="auto-replied",
        )
    ]
