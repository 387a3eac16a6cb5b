"""Every change to a ticket, whichever door it comes in by (mail, web, CLI, scheduler).

Functions take an open Store inside the caller's transaction and never commit:
the caller decides what is atomic (research/style.md, "Transactions belong to callers").
Every change a requester's page shows (an entry, a status, a technician) must move
ticket.updated_at: the viewer keeps rendered pages keyed on it. Every change writes
a ticket_history row: who, when, what, through which door.

The lifecycle (after RT, Zammad and GLPI, research/anchors.md):

    new --take/assign--> assigned --technician's reply--> waiting
    waiting --requester's answer--> assigned (new if nobody has it)
    any open state --resolve--> resolved --autoclose_days of silence, or the requester--> closed
    resolved --requester answers, "Not solved", or reopen--> assigned (or new)
    resolved --requester answers only "thank you"--> resolved ([tickets] reopen_on_thanks)
    closed --reopen (a technician)--> assigned (or new); a requester's mail opens a new
    ticket linked to it instead (deliver).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = [
    "Actor",
    "WorkflowError",
    "FileData",
    "ensure_person",
    "open_ticket",
    "add_article",
    "add_followup",
    "attach_machine_mail",
    "hold_unverified",
    "confirm_unverified",
    "add_participant",
    "add_participants",
    "record_message_id",
    "take",
    "comment",
    "hold_technician_answer",
    "send_held_answer",
    "tell_unsent",
    "tell_unsent_for_mail",
    "unsent_answer_mails",
    "resolve",
    "close",
    "reopen",
    "record_history",
    "distrust",
    "mark_spam",
    "OPEN_STATUSES",
    "CONTINUED_TITLE",
]

OPEN_STATUSES = ("new", "assigned", "waiting")
# The title of a ticket that continues a closed one, by queue language (English otherwise):
# the old subject, not the "Re: Votre demande est close : ..." of the reply that opened it.
CONTINUED_TITLE = {
    "fr": "Suite de la demande n° {id} : {subject}",
    "en": "Follow-up to request #{id}: {subject}",
}
# An old subject that was itself a continuation keeps only its own words.
_CONTINUED_PREFIX = re.compile(r"^(?:Suite de la demande n° \d+ : |Follow-up to request #\d+: )+")


class WorkflowError(Exception):
    """A change that makes no sense for the ticket as it is (closed, unknown person...)."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change and through which door (mail, web, cli, scheduler).

    person_id is None for the scheduler, or a sysadmin at the CLI without --as;
    label names them in the history either way.
    """

    person_id: int | None
    label: str
    door: str


def record_history(
    store: Store,
    ticket_id: int,
    actor: Actor,
    action: str,
    old_status: str | None = None,
    new_status: str | None = None,
    detail: str | None = None,
) -> None:
    """Write one history entry of a ticket."""
    store.execute(
        "INSERT INTO ticket_history (ticket_id, at, actor_id, actor, door, action, old_status,"
        " new_status, detail) VALUES (:ticket, :now, :actor_id, :actor, :door, :action, :old,"
        " :new, :detail)",
        {
            "ticket": ticket_id,
            "now": utcnow(),
            "actor_id": actor.person_id,
            "actor": actor.label[:320],
            "door": actor.door,
            "action": action,
            "old": old_status,
            "new": new_status if new_status != old_status else None,
            "detail": detail,
        },
    )


def _lock(store: Store, ticket_id: int) -> dict[str, Any]:
    """Read a ticket's state, locking its row until the caller's transaction ends."""
    row = store.one(
        "SELECT status, assignee_id, requester_id, queue, group_name FROM ticket WHERE id = :id"
        + store.for_update(),
        {"id": ticket_id},
    )
    if row is None:
        raise WorkflowError(f"no ticket #{ticket_id}")
    return {
        "status": row[0],
        "assignee_id": row[1],
        "requester_id": row[2],
        "queue": row[3],
        "group": row[4],
    }


def _update(store: Store, ticket_id: int, **fields: Any) -> None:
    """Change a ticket's columns, moving updated_at with them (the page cache keys on it)."""
    sets = ", ".join(f"{name} = :{name}" for name in fields)
    store.execute(
        f"UPDATE ticket SET {sets}, updated_at = :updated_at_ WHERE id = :id_",
        {**fields, "updated_at_": utcnow(), "id_": ticket_id},
    )


def _person(store: Store, person_id: int) -> tuple[str, str]:
    row = store.one("SELECT email, name FROM person WHERE id = :id", {"id": person_id})
    if row is None:
        raise WorkflowError(f"no person #{person_id}")
    return str(row[0]), str(row[1] or "")


def _reopened_status(state: dict[str, Any]) -> str:
    return "assigned" if state["assignee_id"] is not None else "new"


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
    row = store.one("SELECT id, name FROM person WHERE email = :email", {"email": email})
    assert row is not None  # inserted just above, or there already
    person_id, known_name = row
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
    unverified: bool = False,
) -> int:
    """Append an entry to a ticket's thread with its files; return the article id.

    This only writes: the callers below decide what the entry means and whom it
    notifies.
    """
    now = utcnow()
    article_id = store.scalar(
        "INSERT INTO article (ticket_id, author_id, source, mail_id, internal, unverified,"
        " subject, body_text, body_html, body_trimmed, created_at) VALUES (:ticket, :author,"
        " :source, :mail, :internal, :unverified, :subject, :text, :html, :trimmed, :now)"
        " RETURNING id",
        {
            "unverified": unverified,
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
    if not internal:  # the requester's page shows no internal entry: its cache stays good
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


def add_participant(store: Store, ticket_id: int, person_id: int, role: str = "cc") -> bool:
    """Let someone besides the requester take part in a ticket (Cc'd on the original);
    False when they already did."""
    return (
        store.execute(
            "INSERT INTO participant (ticket_id, person_id, role)"
            " VALUES (:ticket, :person, :role) ON CONFLICT DO NOTHING",
            {"ticket": ticket_id, "person": person_id, "role": role},
        ).rowcount
        == 1
    )


def add_participants(
    store: Store,
    settings: Settings,
    ticket_id: int,
    copied: Sequence[tuple[str, str]],
    actor: Actor,
) -> list[str]:
    """Let the (address, name) people a requester-side follow-up copied take part in the
    ticket, as the Cc of its first mail do; return the addresses new to it.

    Our own addresses and the requester are not participants; whether the others are
    mailed is decided when there is something to send (notices.cc_recipients). Only
    mail a person wrote, accepted as theirs, comes here: machine mail, spam and held
    entries add nobody.
    """
    state = _lock(store, ticket_id)
    added = []
    for address, name in copied:
        address = address.strip().lower()
        if not address or settings.queue_for(address) is not None:
            continue
        person_id = ensure_person(store, address, name)
        if person_id != state["requester_id"] and add_participant(store, ticket_id, person_id):
            added.append(address[:320])
    if added:
        record_history(store, ticket_id, actor, "cc", detail="copied: " + ", ".join(added))
    return added


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
    previous_id: int | None = None,
) -> tuple[int, int]:
    """Open a ticket with its first article in the group routing picks, tell the requester
    (unless acknowledge is False: their address may be forged) and the technicians;
    return (ticket id, article id). previous_id links it to the closed ticket it continues."""
    from helpdesk.ingest.route import route
    from helpdesk.notify import notices

    requester, _name = _person(store, requester_id)
    group, why = route(store, queue, requester)
    title, assignee_id, status = subject, None, "new"
    if previous_id is not None:
        title, assignee_id = _continuation(store, settings, queue, previous_id, group)
        status = "new" if assignee_id is None else "assigned"
    now = utcnow()
    ticket_id = int(
        store.scalar(
            "INSERT INTO ticket (queue, subject, status, requester_id, group_name, previous_id,"
            " assignee_id, created_at, updated_at) VALUES (:queue, :subject, :status,"
            " :requester, :group, :previous, :assignee, :now, :now) RETURNING id",
            {
                "queue": queue.name,
                "subject": title,
                "status": status,
                "requester": requester_id,
                "group": group,
                "previous": previous_id,
                "assignee": assignee_id,
                "now": now,
            },
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
    actor = Actor(requester_id, requester, source)
    detail = f"group {group} ({why})"
    if previous_id is not None:
        detail += f"; continues closed ticket #{previous_id}"
        record_history(
            store, previous_id, actor, "continued", detail=f"continued in ticket #{ticket_id}"
        )
    record_history(store, ticket_id, actor, "open", None, "new", detail)
    if assignee_id is not None:
        email, _name = _person(store, assignee_id)
        record_history(
            store,
            ticket_id,
            actor,
            "assign",
            "new",
            status,
            f"to {email}, who had ticket #{previous_id}",
        )
    notices.ticket_opened(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        mail_id=mail_id,
        incoming_message_id=message_id,
        acknowledge=acknowledge,
        previous_id=previous_id,
    )
    return ticket_id, article_id


def _continuation(
    store: Store, settings: Settings, queue: Queue, previous_id: int, group: str
) -> tuple[str, int | None]:
    """The title of a ticket that continues a closed one, and who gets it: the former
    technician while they are still one of the group, else nobody (the whole group hears)."""
    from helpdesk.people import group_members

    row = store.one(
        "SELECT t.subject, t.assignee_id, p.email FROM ticket t"
        " LEFT JOIN person p ON p.id = t.assignee_id WHERE t.id = :id",
        {"id": previous_id},
    )
    assert row is not None, f"no ticket #{previous_id} to continue"
    old_subject, assignee_id, assignee = row
    words = _CONTINUED_PREFIX.sub("", old_subject or "").strip() or old_subject or ""
    template = CONTINUED_TITLE.get(queue.language, CONTINUED_TITLE["en"])
    title = template.format(id=previous_id, subject=words)
    if assignee_id is None or not any(
        email == assignee for email, _name in group_members(store, settings, group)
    ):
        return title, None
    return title, int(assignee_id)


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
    """Add a follow-up to a ticket, move its status and queue its news; return the
    article id.

    A technician's goes to the requester and puts the ticket in `waiting` (taking it
    for them if nobody had it); on a colleague's ticket, that colleague is told. Anyone
    else's goes to the technicians; it brings a waiting ticket back to its technician,
    and reopens a resolved one unless it only says thank you ([tickets]
    reopen_on_thanks, helpdesk.ingest.thanks).
    """
    from helpdesk.notify import notices

    state = _lock(store, ticket_id)
    if by_technician and state["status"] == "closed":
        raise WorkflowError(
            f"ticket #{ticket_id} is closed: its requester cannot answer; reopen it first"
        )
    author, _name = _person(store, author_id)
    actor = Actor(author_id, author, source)
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
    old = state["status"]
    if by_technician:
        if old in OPEN_STATUSES:
            changes: dict[str, Any] = {"status": "waiting"}
            if state["assignee_id"] is None:
                changes["assignee_id"] = author_id
            _update(store, ticket_id, **changes)
            record_history(store, ticket_id, actor, "reply", old, "waiting")
        else:
            record_history(store, ticket_id, actor, "reply", old, old)
        notices.followup_added(
            store,
            settings,
            queue,
            ticket_id,
            article_id,
            by_technician=True,
            mail_id=mail_id,
            incoming_message_id=message_id,
        )
        if state["assignee_id"] not in (None, author_id):
            # Someone else's ticket: its technician must know what was said in their place.
            notices.colleague_answered(
                store, settings, queue, ticket_id, article_id, resolution=False, mail_id=mail_id
            )
        elif state["assignee_id"] is None and old in OPEN_STATUSES:
            # Answering took it: the rest of the group must not start on it too.
            notices.take_announced(
                store, settings, queue, ticket_id, author_id, by=author_id, mail_id=mail_id
            )
        return article_id
    thanks = False
    if state["status"] == "resolved" and not settings.reopen_on_thanks and not attachments:
        from helpdesk.ingest.thanks import only_thanks

        # What the writer added, below it the quote of our resolution.
        thanks = only_thanks(body_trimmed if body_trimmed is not None else body_text)
    _requester_side_news(
        store, settings, queue, ticket_id, state, actor, article_id, mail_id, thanks=thanks
    )
    return article_id


def _requester_side_news(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    state: dict[str, Any],
    actor: Actor,
    article_id: int,
    mail_id: int | None,
    message_id: str | None = None,
    *,
    thanks: bool = False,
) -> None:
    """What a public entry by the requester's side does: reopen a resolved ticket (unless
    the entry only says thank you), bring a waiting one back to its technician, tell the
    technicians."""
    from helpdesk.notify import notices

    old = state["status"]
    if old == "resolved" and not thanks:
        _reopen(store, settings, queue, ticket_id, state, actor, article_id, mail_id, message_id)
        return
    new = _reopened_status(state) if old == "waiting" else old
    if new != old:
        _update(store, ticket_id, status=new)
    # A thank-you stays resolved, and the autoclose clock runs on: the history says why.
    detail = "thanks only: not reopened" if old == "resolved" else None
    record_history(store, ticket_id, actor, "followup", old, new, detail)
    notices.followup_added(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        by_technician=False,
        mail_id=mail_id,
        incoming_message_id=message_id,
    )


def hold_unverified(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    *,
    why: str,
    subject: str,
    body_text: str,
    body_trimmed: str | None = None,
    body_html: str | None = None,
    attachments: Sequence[FileData] = (),
    mail_id: int | None = None,
) -> int:
    """Keep a mail whose author nothing proves as an unverified entry: the technicians
    see it as such, the requester's page does not show it, nobody is told it as the
    author's words, and the author's address is asked to confirm it. Return its id.

    Its Message-ID is not recorded for threading: a reply naming it proves nothing
    until the author confirms.
    """
    from helpdesk.notify import notices

    state = _lock(store, ticket_id)
    author, _name = _person(store, author_id)
    article_id = add_article(
        store,
        ticket_id,
        author_id,
        source="mail",
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        body_trimmed=body_trimmed,
        attachments=attachments,
        mail_id=mail_id,
        internal=True,
        unverified=True,
    )
    actor = Actor(author_id, author, "mail")
    record_history(store, ticket_id, actor, "unverified", state["status"], None, why)
    notices.confirmation_asked(store, settings, queue, ticket_id, article_id, mail_id=mail_id)
    return article_id


def confirm_unverified(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    held_mail_ids: Sequence[int],
    actor: Actor,
    *,
    mail_id: int | None = None,
) -> list[int]:
    """Make the entries held for these mails public, as their author has confirmed them:
    they count from now on as if they had just arrived (a resolved ticket reopens, the
    technicians are told). Return the ids of the entries made public."""
    state = _lock(store, ticket_id)
    confirmed = []
    for held in held_mail_ids:
        row = store.one(
            "SELECT a.id, m.message_id FROM article a JOIN mail_record m ON m.id = a.mail_id"
            " WHERE a.ticket_id = :ticket AND a.mail_id = :mail AND a.unverified = :yes",
            {"ticket": ticket_id, "mail": held, "yes": True},
        )
        if row is None:
            continue  # confirmed already (a second reply), or not this ticket's
        article_id, message_id = int(row[0]), row[1]
        store.execute(
            "UPDATE article SET internal = :no, unverified = :no WHERE id = :id",
            {"no": False, "id": article_id},
        )
        record_message_id(store, ticket_id, message_id)
        record_history(
            store, ticket_id, actor, "confirmed", detail=f"entry #{article_id} (mail #{held})"
        )
        confirmed.append(article_id)
    if not confirmed:
        return []
    # Entries the requester's page did not show now do: its cache keys on updated_at.
    store.execute(
        "UPDATE ticket SET updated_at = :now WHERE id = :id", {"now": utcnow(), "id": ticket_id}
    )
    if state["status"] == "closed":
        # Closed since: the entry shows on the page and the technicians still hear of
        # it, but a closed ticket does not reopen by itself.
        from helpdesk.notify import notices

        for article_id in confirmed:
            notices.followup_added(
                store,
                settings,
                queue,
                ticket_id,
                article_id,
                by_technician=False,
                mail_id=mail_id,
                incoming_message_id=None,
            )
        return confirmed
    for article_id in confirmed:
        _requester_side_news(store, settings, queue, ticket_id, state, actor, article_id, mail_id)
        state = _lock(store, ticket_id)
    return confirmed


def comment(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    *,
    body_text: str,
    subject: str = "",
    attachments: Sequence[FileData] = (),
    source: str = "cli",
    mail_id: int | None = None,
    message_id: str | None = None,
    unverified: bool = False,
) -> int:
    """Add an internal comment: never shown to the requester nor mailed to them; the
    ticket's technician and the rest of its group hear of it. Return the article id.
    `unverified` marks a note whose author nothing proves (hold_technician_answer)."""
    from helpdesk.notify import notices

    state = _lock(store, ticket_id)
    author, _name = _person(store, author_id)
    article_id = add_article(
        store,
        ticket_id,
        author_id,
        source=source,
        subject=subject,
        body_text=body_text,
        attachments=attachments,
        mail_id=mail_id,
        internal=True,
        unverified=unverified,
    )
    record_message_id(store, ticket_id, message_id)
    record_history(
        store, ticket_id, Actor(author_id, author, source), "comment", state["status"], None
    )
    notices.comment_added(store, settings, queue, ticket_id, article_id, mail_id=mail_id)
    return article_id


def take(
    store: Store, settings: Settings, queue: Queue, ticket_id: int, technician_id: int, actor: Actor
) -> bool:
    """Give a ticket to a technician (the actor themself for `take`); tell the requester
    who has it, the technician when someone else gave it (with its whole thread), and the
    rest of its group. False if it already was theirs."""
    from helpdesk.notify import notices

    state = _lock(store, ticket_id)
    if state["status"] == "closed":
        raise WorkflowError(f"ticket #{ticket_id} is closed: reopen it first")
    if state["assignee_id"] == technician_id:
        return False
    old = state["status"]
    new = "assigned" if old == "new" else old
    _update(store, ticket_id, assignee_id=technician_id, status=new)
    email, _name = _person(store, technician_id)
    action = "take" if actor.person_id == technician_id else "assign"
    record_history(store, ticket_id, actor, action, old, new, f"to {email}")
    notices.taken(
        store,
        settings,
        queue,
        ticket_id,
        technician_id,
        by=actor.person_id,
        previous=state["assignee_id"],
    )
    return True


def resolve(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    technician_id: int,
    *,
    body_text: str,
    attachments: Sequence[FileData] = (),
    source: str = "cli",
    mail_id: int | None = None,
    message_id: str | None = None,
) -> int:
    """Resolve a ticket with a solution the requester sees and is mailed; it closes by
    itself after autoclose_days unless they answer. Return the solution's article id."""
    from helpdesk.notify import notices

    if not body_text.strip():
        raise WorkflowError("a resolution needs a message: say what was done")
    state = _lock(store, ticket_id)
    old = state["status"]
    if old not in OPEN_STATUSES:
        raise WorkflowError(f"ticket #{ticket_id} is already {old}")
    author, _name = _person(store, technician_id)
    article_id = add_article(
        store,
        ticket_id,
        technician_id,
        source=source,
        subject="",
        body_text=body_text,
        attachments=attachments,
        mail_id=mail_id,
    )
    record_message_id(store, ticket_id, message_id)
    now = utcnow()
    changes: dict[str, Any] = {"status": "resolved", "resolved_at": now}
    if state["assignee_id"] is None:
        changes["assignee_id"] = technician_id
    _update(store, ticket_id, **changes)
    record_history(
        store, ticket_id, Actor(technician_id, author, source), "resolve", old, "resolved"
    )
    notices.resolved(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        mail_id=mail_id,
        incoming_message_id=message_id,
    )
    if state["assignee_id"] not in (None, technician_id):
        notices.colleague_answered(
            store, settings, queue, ticket_id, article_id, resolution=True, mail_id=mail_id
        )
    elif state["assignee_id"] is None:
        notices.take_announced(
            store, settings, queue, ticket_id, technician_id, by=technician_id, mail_id=mail_id
        )
    return article_id


def close(store: Store, settings: Settings, queue: Queue, ticket_id: int, actor: Actor) -> bool:
    """Close a ticket (any state but closed); tell the requester unless they closed it
    themself. False when it was closed already (a concurrent scheduler got there first)."""
    from helpdesk.notify import notices

    state = _lock(store, ticket_id)
    old = state["status"]
    if old == "closed":
        return False
    _update(store, ticket_id, status="closed", closed_at=utcnow())
    detail = None
    if actor.door == "scheduler":
        detail = f"no answer from the requester {settings.autoclose_days} days after resolution"
    record_history(store, ticket_id, actor, "close", old, "closed", detail)
    if actor.person_id != state["requester_id"]:
        notices.closed(store, settings, queue, ticket_id)
    return True


def reopen(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    actor: Actor,
    *,
    body_text: str = "",
) -> int | None:
    """Reopen a resolved or closed ticket, back to its technician (who is told), with the
    reason as a public entry when one is given; return that entry's id."""
    state = _lock(store, ticket_id)
    if state["status"] not in ("resolved", "closed"):
        raise WorkflowError(f"ticket #{ticket_id} is {state['status']}: nothing to reopen")
    article_id = None
    if body_text.strip():
        if actor.person_id is None:
            raise WorkflowError("a reopening with a message needs an author")
        article_id = add_article(
            store, ticket_id, actor.person_id, source=actor.door, subject="", body_text=body_text
        )
    _reopen(store, settings, queue, ticket_id, state, actor, article_id, None, None)
    return article_id


def _reopen(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    state: dict[str, Any],
    actor: Actor,
    article_id: int | None,
    mail_id: int | None,
    message_id: str | None,
) -> None:
    from helpdesk.notify import notices

    new = _reopened_status(state)
    _update(store, ticket_id, status=new, resolved_at=None, closed_at=None)
    record_history(store, ticket_id, actor, "reopen", state["status"], new)
    notices.reopened(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        by=actor.label,
        mail_id=mail_id,
        incoming_message_id=message_id,
    )


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
    email, _name = _person(store, author_id)
    record_history(store, ticket_id, Actor(author_id, email, "mail"), "machine mail")
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


def distrust(store: Store, ticket_id: int, actor: Actor, reason: str) -> None:
    """Say why a ticket's requester gets no automatic mail from now on (acknowledgement,
    taken, resolved, closed, confirmation: notify/notices.py withholds them); a
    technician's written answer still goes. Shown by `ticket show` and the history."""
    _lock(store, ticket_id)
    reason = " ".join(reason.split())[:1000]
    # Not through _update: the requester's page shows nothing of it.
    store.execute(
        "UPDATE ticket SET distrust = :why WHERE id = :id", {"why": reason, "id": ticket_id}
    )
    record_history(store, ticket_id, actor, "distrust", detail=f"no automatic mail: {reason}")


def mark_spam(store: Store, ticket_id: int, actor: Actor) -> bool:
    """Mark a ticket as opened by spam: closed without a word to anyone, its requester's
    mail records marked spam, its private links revoked, its queued mail withdrawn, and
    nothing automatic sent to its requester again. False when it was marked already."""
    from helpdesk import tokens

    state = _lock(store, ticket_id)
    old = state["status"]
    marked = store.scalar(
        "SELECT 1 FROM mail_record WHERE ticket_id = :id AND verdict = 'spam'", {"id": ticket_id}
    )
    if marked is not None and old == "closed":
        return False
    now = utcnow()
    if old != "closed":
        _update(store, ticket_id, status="closed", closed_at=now)
    note = f"marked spam by {actor.label} (ticket #{ticket_id})"
    # The mail the requester's side wrote; a technician's own mail stays what it was.
    records = store.execute(
        "UPDATE mail_record SET verdict = 'spam', reason = CASE WHEN reason IS NULL"
        " THEN :note ELSE reason || '; ' || :note END WHERE ticket_id = :id AND"
        " (verdict = 'ticket' OR (verdict = 'followup' AND id IN (SELECT mail_id FROM"
        " article WHERE ticket_id = :id AND author_id = :requester AND mail_id IS NOT NULL)))",
        {"note": note[:500], "id": ticket_id, "requester": state["requester_id"]},
    ).rowcount
    links = tokens.revoke(store, ticket_id)
    # Not yet sent (a transport down, a cap): it never will be.
    withdrawn = store.execute(
        "UPDATE outbox_message SET status = 'skipped', last_error = :why"
        " WHERE ticket_id = :id AND status = 'queued'",
        {"why": "not sent: the ticket was marked spam", "id": ticket_id},
    ).rowcount
    store.execute(
        "UPDATE ticket SET distrust = :why WHERE id = :id",
        {"why": f"opened by spam ({note})", "id": ticket_id},
    )
    detail = (
        f"{records} mail(s) marked spam, {links} link(s) revoked,"
        f" {withdrawn} queued mail(s) withdrawn; nothing sent"
    )
    record_history(store, ticket_id, actor, "spam", old, "closed", detail)
    return True


def hold_technician_answer(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    *,
    note: str,
    text: str,
    why: str,
    resolution: bool,
    subject: str = "",
    attachments: Sequence[FileData] = (),
    mail_id: int | None = None,
) -> int:
    """Keep a technician's mail that lacks proof as an unverified internal note (`note`,
    which says why), and mail that technician's own address at once: their words
    (`text`), why they were kept internal, and that replying sends them to the
    requester (applying the resolution when `resolution`). Return the note's id.

    The reply names that mail's Message-ID, which only the technician's mailbox
    received: it is the proof the first mail lacked (send_held_answer). Capped per
    ticket like the requester's confirmation request (notices.confirmation_asked).
    """
    from helpdesk.notify import kinds
    from helpdesk.notify import notices

    article_id = comment(
        store,
        settings,
        queue,
        ticket_id,
        author_id,
        body_text=note,
        subject=subject,
        attachments=attachments,
        source="mail",
        mail_id=mail_id,
        unverified=True,
    )
    notices.confirmation_asked(
        store,
        settings,
        queue,
        ticket_id,
        article_id,
        mail_id=mail_id,
        kind=kinds.TECH_CONFIRM,
        context={"text": text, "why": why, "resolution": resolution},
    )
    return article_id


def send_held_answer(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    held_mail_id: int,
    *,
    body_text: str,
    resolution: bool,
    attachments: Sequence[FileData] = (),
    mail_id: int | None = None,
    message_id: str | None = None,
) -> tuple[str, int] | None:
    """Send the words of a technician's note held by hold_technician_answer as their
    answer to the requester, now that they have proven the mail theirs: a resolution
    when it was a `#resolve` and the ticket is open, else a reply. Once: the note stops
    being unverified, and a second proof finds nothing (None). Return what was made
    ("resolution" or "reply") and its entry id. The note stays as it was, internal.

    Raise WorkflowError when the ticket is closed (its requester cannot answer); the
    note then stays unverified.
    """
    state = _lock(store, ticket_id)
    note = store.scalar(
        "SELECT id FROM article WHERE ticket_id = :ticket AND mail_id = :mail"
        " AND author_id = :author AND internal = :yes AND unverified = :yes",
        {"ticket": ticket_id, "mail": held_mail_id, "author": author_id, "yes": True},
    )
    if note is None:
        return None  # sent already (a second reply), or not this technician's
    if state["status"] == "closed":
        raise WorkflowError(
            f"ticket #{ticket_id} is closed: its requester cannot answer; reopen it first"
        )
    store.execute("UPDATE article SET unverified = :no WHERE id = :id", {"no": False, "id": note})
    author, _name = _person(store, author_id)
    record_history(
        store,
        ticket_id,
        Actor(author_id, author, "mail"),
        "confirmed",
        detail=f"note #{note} (mail #{held_mail_id}) proven: sent to the requester",
    )
    common: dict[str, Any] = {
        "body_text": body_text,
        "attachments": attachments,
        "source": "mail",
        "mail_id": mail_id,
        "message_id": message_id,
    }
    if resolution and state["status"] in OPEN_STATUSES:
        return "resolution", resolve(store, settings, queue, ticket_id, author_id, **common)
    subject = store.scalar("SELECT subject FROM ticket WHERE id = :id", {"id": ticket_id})
    return "reply", add_followup(
        store,
        settings,
        queue,
        ticket_id,
        author_id,
        by_technician=True,
        subject=subject or "",
        **common,
    )


def tell_unsent(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author_id: int,
    mail_id: int,
) -> list[str]:
    """Tell the technician who answered by this mail which of its answers (a reply, a
    resolution) did not go, for good, and write it in the history; return one line per
    mail not sent. A second call for the same mail tells nothing new."""
    from helpdesk.notify import kinds
    from helpdesk.notify import notices
    from helpdesk.notify import outbox

    told = store.scalar(
        "SELECT 1 FROM outbox_message WHERE mail_id = :mail AND kind = :kind",
        {"mail": mail_id, "kind": kinds.TECH_UNSENT},
    )
    unsent = [
        row
        for row in outbox.not_sent(store, kinds.ANSWERS, ticket_id=ticket_id, mail_id=mail_id)
        if row.for_good
    ]
    if told is not None or not unsent:
        return []
    author, name = _person(store, author_id)
    lines = [f"{row.kind} to {row.to_addr} not sent ({row.status}: {row.error})" for row in unsent]
    record_history(
        store, ticket_id, Actor(author_id, author, "mail"), "not sent", detail="; ".join(lines)
    )
    notices.answers_not_sent(
        store,
        settings,
        queue,
        ticket_id,
        unsent,
        author=author,
        author_name=name,
        mail_id=mail_id,
    )
    return lines


def tell_unsent_for_mail(store: Store, settings: Settings, mail_id: int) -> bool:
    """tell_unsent for the technician whose mail this is, once its answers have been
    tried (a transport's refusal comes after the change): True if a notice was queued.
    Nothing for a mail that is not a technician's public entry."""
    from helpdesk import people

    row = store.one(
        "SELECT a.ticket_id, a.author_id, p.email, t.queue FROM article a"
        " JOIN person p ON p.id = a.author_id JOIN ticket t ON t.id = a.ticket_id"
        " WHERE a.mail_id = :id AND a.internal = :no ORDER BY a.id LIMIT 1",
        {"id": mail_id, "no": False},
    )
    if row is None or row[3] not in settings.queues:
        return False
    if not people.is_technician(store, settings, str(row[2])):
        return False
    queue = settings.queues[row[3]]
    return bool(tell_unsent(store, settings, queue, int(row[0]), int(row[1]), mail_id))


def unsent_answer_mails(store: Store, days: int = 7) -> list[int]:
    """The incoming mails of the last `days` whose answers failed for good and whose
    author was not told yet (for the scheduler, after its retries run out)."""
    from datetime import timedelta

    from helpdesk.notify import kinds

    answers = ", ".join(f"'{kind}'" for kind in sorted(kinds.ANSWERS))
    rows = store.execute(
        "SELECT DISTINCT o.mail_id FROM outbox_message o WHERE o.status = 'failed'"
        f" AND o.kind IN ({answers}) AND o.mail_id IS NOT NULL AND o.created_at > :since"
        " AND NOT EXISTS (SELECT 1 FROM outbox_message u WHERE u.mail_id = o.mail_id"
        " AND u.kind = :told) ORDER BY o.mail_id",
        {"since": utcnow() - timedelta(days=days), "told": kinds.TECH_UNSENT},
    ).fetchall()
    return [int(r[0]) for r in rows]
