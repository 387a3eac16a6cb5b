"""Decide the fate of one piped message: this module's sole job.

The raw bytes are committed first, alone, with their envelope; that row is our
shunt queue. The decision (duplicate, machine mail, follow-up or new ticket)
and everything it changes, the mail it queues included, commit together in a
second transaction; the queued mail is sent after that commit. A crash in between leaves a `pending`
row that the MTA's retry (exit 75) picks up again, so nothing is lost and
nothing is done twice.

Exit codes speak sysexits to the MTA and are the only ones this returns:
0 recorded (whatever the verdict), 65 never acceptable (empty, too big),
75 try again later (database down or locked, disk full, bad config, a bug).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Any

from helpdesk import memory
from helpdesk.config import ConfigError
from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.config import load_settings
from helpdesk.files import set_group_umask
from helpdesk.ingest.budget import FALLBACK_S
from helpdesk.ingest.budget import BudgetExceeded
from helpdesk.ingest.budget import budget
from helpdesk.ingest.classify import HELD_KINDS as HELD_VERDICTS
from helpdesk.ingest.classify import OUR_ID_PREFIX
from helpdesk.ingest.classify import OwnMarks
from helpdesk.ingest.classify import Verdict
from helpdesk.ingest.classify import classify
from helpdesk.ingest.client import ENVELOPE_VARIABLES
from helpdesk.ingest.client import read_message
from helpdesk.ingest.parse import KEPT_RAW_HEADERS
from helpdesk.ingest.parse import ParsedAttachment
from helpdesk.ingest.parse import ParsedMail
from helpdesk.ingest.parse import parse
from helpdesk.ingest.parse import parse_kept_raw
from helpdesk.store import IntegrityError
from helpdesk.store import Store
from helpdesk.store import StoreError
from helpdesk.store import utcnow

if TYPE_CHECKING:
    from helpdesk.ingest.thread import Authentication
    from helpdesk.ingest.thread import ThreadMatch
    from helpdesk.ingest.thread import Writer

__all__ = [
    "EX_OK",
    "EX_DATAERR",
    "EX_TEMPFAIL",
    "Outcome",
    "deliver",
    "guarded",
    "release",
    "ReleaseRefused",
    "report",
    "run",
    "send_after_commit",
    "shown_as_stored",
    "too_big_outcome",
    "warm_up",
]

EX_OK, EX_DATAERR, EX_USAGE, EX_TEMPFAIL = 0, 65, 64, 75

NO_SUBJECT = {"fr": "(sans objet)", "en": "(no subject)"}

log = logging.getLogger("helpdesk.deliver")


@dataclass(frozen=True)
class Outcome:
    """What happened to a message, and the exit code that tells the MTA."""

    code: int
    message: str
    mail_id: int | None = None
    verdict: str | None = None
    ticket_id: int | None = None


class DeliveryRefused(Exception):
    """The message can be kept by the MTA but not taken now (exit 75)."""


def envelope_from(environ: dict[str, str]) -> dict[str, str]:
    """Pick the envelope the MTA passes in the environment."""
    return {name: environ[name] for name in ENVELOPE_VARIABLES if name in environ}


def _pick_queue(settings: Settings, queue_name: str | None, envelope: dict[str, str]) -> Queue:
    if queue_name:
        queue = settings.queues.get(queue_name)
        if queue is None:
            raise DeliveryRefused(
                f"unknown queue {queue_name!r}: declare [queues.{queue_name}] in {settings.path}"
            )
        return queue
    for variable in ("ORIGINAL_RECIPIENT", "RECIPIENT"):
        recipient = envelope.get(variable)
        if recipient:
            queue = settings.queue_for(recipient)
            if queue is not None:
                return queue
    raise DeliveryRefused(
        f"no queue for recipient {envelope.get('RECIPIENT', '(none)')!r}: "
        f"add --queue to the alias or the address to a queue in {settings.path}"
    )


def _record_raw(store: Store, queue: str, raw: bytes, digest: str, envelope: dict[str, str]) -> int:
    """Commit the raw bytes, or find the row an interrupted attempt left pending."""
    with store.transaction():
        pending = store.scalar(
            "SELECT id FROM mail_record WHERE queue = :queue AND raw_sha256 = :sha"
            " AND verdict = 'pending' ORDER BY id LIMIT 1",
            {"queue": queue, "sha": digest},
        )
        if pending is not None:
            return int(pending)
        mail_id = int(
            store.scalar(
                "INSERT INTO mail_record (queue, received_at, raw_sha256, size, envelope, verdict)"
                " VALUES (:queue, :now, :sha, :size, :envelope, 'pending') RETURNING id",
                {
                    "queue": queue,
                    "now": utcnow(),
                    "sha": digest,
                    "size": len(raw),
                    "envelope": json.dumps(envelope, sort_keys=True),
                },
            )
        )
        store.execute(
            "INSERT INTO mail_raw (mail_id, data) VALUES (:id, :data)", {"id": mail_id, "data": raw}
        )
        return mail_id


def _requester(mail: ParsedMail, envelope: dict[str, str]) -> tuple[str, str]:
    """Whom a new ticket is for: the strict author, else whatever address the headers
    or the envelope give (the ticket is its own; nothing is sent to an unsure one)."""
    if mail.author:
        return mail.author, mail.author_name
    if mail.sender:
        return mail.sender, mail.sender_name
    sender = envelope.get("SENDER", "").strip()
    return (sender.lower() or "unknown@invalid"), mail.sender_name


def own_marks(settings: Settings) -> OwnMarks:
    """What marks our own mail: the loop header's value and our Message-ID domains."""
    domains = {settings.domain_for(queue) for queue in settings.queues.values()}
    if settings.mail_domain:
        domains.add(settings.mail_domain)
    return OwnMarks(instance=settings.instance, domains=tuple(sorted(domains)))


def _set_verdict(
    store: Store, mail_id: int, verdict: str, reason: str | None, ticket_id: int | None
) -> None:
    store.execute(
        "UPDATE mail_record SET verdict = :verdict, reason = :reason, ticket_id = :ticket"
        " WHERE id = :id",
        {"verdict": verdict, "reason": reason, "ticket": ticket_id, "id": mail_id},
    )


def _machine_mail(
    store: Store,
    settings: Settings,
    queue: Queue,
    mail_id: int,
    mail: ParsedMail,
    envelope: dict[str, str],
    verdict: Verdict,
) -> Outcome:
    """File an auto-reply or a bounce in the ticket it answers, silently; record the rest."""
    from helpdesk import workflow
    from helpdesk.ingest.thread import find_ticket

    ticket_id = None
    reason = verdict.reason
    if verdict.kind in ("autoreply", "bounce"):
        ours = [i for i in verdict.referenced_ids if i.startswith(OUR_ID_PREFIX)]
        for message_id in ours:
            row = store.one(
                # From the outbox's unique key, not from the queue's tickets (see
                # thread._by_references).
                "SELECT o.id, o.ticket_id FROM outbox_message o WHERE o.message_id = :msgid"
                " AND EXISTS (SELECT 1 FROM ticket t WHERE t.id = o.ticket_id"
                " AND t.queue = :queue)",
                {"msgid": message_id, "queue": queue.name},
            )
            if row is None:
                continue
            if ticket_id is None:
                ticket_id = row[1]
            if verdict.kind == "bounce":
                # Our mail did not arrive: say so where the technicians look.
                store.execute(
                    "UPDATE outbox_message SET status = 'failed', last_error = :error"
                    " WHERE id = :id",
                    {"id": row[0], "error": f"bounced: see mail #{mail_id}"},
                )
                reason += f"; outbox #{row[0]} marked failed"
        if ticket_id is None:
            # Only proof that it answers our mail files it: a subject tag or a
            # Message-ID anyone could copy would let a stranger write into a ticket.
            match = find_ticket(store, settings, queue, mail, envelope)
            ticket_id = match.ticket_id if match and match.signed else None
        if ticket_id is not None:
            email, name = _requester(mail, envelope)
            author = workflow.ensure_person(store, email, name)
            workflow.attach_machine_mail(
                store,
                ticket_id,
                author,
                subject=mail.subject,
                body_text=mail.text,
                attachments=mail.attachments,
                mail_id=mail_id,
            )
            reason += f"; filed in ticket #{ticket_id}, nothing sent"
    if verdict.kind in HELD_VERDICTS:
        # Even when it answers a ticket: no entry, no mail, until a technician says.
        reason += f"{_HELD} (`helpdesk-pipe mail release {mail_id}`)"
    _set_verdict(store, mail_id, verdict.kind, reason, ticket_id)
    return Outcome(EX_OK, f"{verdict.kind}: {reason}", mail_id, verdict.kind, ticket_id)


_HELD = "; held, nothing sent"


def _technician_command(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author: int,
    writer: Writer,
    mail: ParsedMail,
    mail_id: int,
    status: str,
    note: bool,
) -> str | None:
    """Carry out a technician's `#resolve` or `#comment` first line, or file as a note
    what must not be public; return what was done, None for a plain follow-up.

    `note` says the mail answers one of our internal-note mails."""
    from helpdesk import workflow
    from helpdesk.ingest.quotes import trim_quoted
    from helpdesk.ingest.thread import command_of

    if not (note or writer.technician or writer.staff):
        return None
    command, rest = command_of(trim_quoted(mail.text))
    asked, words = command, rest.strip("\n")
    refused = None
    if command == "resolve" and note:
        # Its quote is internal; resolving mails the requester: never both.
        refused = "it answers an internal note: answer another mail, or `ticket resolve`"
    elif command == "resolve" and not writer.technician:
        # Resolving mails the requester in our name: it needs the proof a note does not.
        refused = _NO_PROOF
    # A technician's answer (or #resolve) kept internal for want of proof: their own
    # address is asked to prove it, and the answer goes once they do. Not an explicit
    # #comment (a note is what they asked for), nor what answers a note or a closed
    # ticket (those stay notes whoever proves anything).
    held = (
        writer.staff
        and not writer.technician
        and not note
        and status != "closed"
        and (asked is None or (asked == "resolve" and refused == _NO_PROOF and words != ""))
        and (words != "" or bool(mail.attachments))
    )
    if command is None and (note or not writer.technician or status == "closed"):
        # What answers an internal note (and quotes it) stays internal, whoever writes
        # it; a technician's unproven From never speaks on the requester's page; and the
        # requester cannot answer about a closed ticket: notes, all three.
        command = "comment"
    common: dict[str, Any] = {
        "attachments": mail.attachments,
        "source": "mail",
        "mail_id": mail_id,
        # An unproven From files a note, but its Message-ID must not become one that
        # threads a later mail with proof it does not have.
        "message_id": mail.message_id if (writer.technician or note) else None,
    }
    if command == "resolve" and refused is None:
        try:
            workflow.resolve(
                store, settings, queue, ticket_id, author, body_text=rest.strip("\n"), **common
            )
            return "resolution"
        except workflow.WorkflowError as exc:
            # Already resolved, or nothing said: keep the mail as a note, not a retry.
            refused = str(exc)
    if refused is not None:
        command, rest = "comment", f"#resolve not applied ({refused}):\n{rest}"
    if command == "comment" and not writer.technician:
        # Anyone can put a technician's address in From: say so on the note.
        rest = f"[{mail.sender}: {writer.why}]\n{rest}"
    if command == "comment" and held:
        workflow.hold_technician_answer(
            store,
            settings,
            queue,
            ticket_id,
            author,
            note=rest.strip("\n"),
            text=words,
            why=writer.why,
            resolution=asked == "resolve",
            subject=mail.subject,
            attachments=mail.attachments,
            mail_id=mail_id,
        )
        from helpdesk.notify import kinds
        from helpdesk.notify.outbox import not_sent

        asked_to = f"; {mail.author} asked to prove it by replying (tech_confirm)"
        held_kind = frozenset({kinds.TECH_CONFIRM})
        for row in not_sent(store, held_kind, ticket_id=ticket_id, mail_id=mail_id):
            # Over the cap (a forger's flood): the mail record says the notice did not go.
            asked_to += f", not sent: {row.error}"
        return (
            "internal comment" + (f" (#resolve not applied: {refused})" if refused else "")
        ) + asked_to
    if command == "comment":
        workflow.comment(
            store,
            settings,
            queue,
            ticket_id,
            author,
            body_text=rest.strip("\n"),
            subject=mail.subject,
            **common,
        )
        return "internal comment" + (f" (#resolve not applied: {refused})" if refused else "")
    return None


_NO_PROOF = "no proof of a mail we sent"


def _held_words(store: Store, mail_id: int) -> tuple[str | None, str, list[ParsedAttachment]]:
    """A held technician mail read again from its raw bytes, as _technician_command read
    it: its command, its words without the command and the quotes, its files."""
    from helpdesk.ingest.quotes import trim_quoted
    from helpdesk.ingest.thread import command_of

    raw = store.scalar("SELECT data FROM mail_raw WHERE mail_id = :id", {"id": mail_id})
    mail = parse(bytes(raw))
    shown_as_stored(mail)
    command, rest = command_of(trim_quoted(mail.text))
    return command, rest.strip("\n"), mail.attachments


def _held_answered(
    store: Store,
    settings: Settings,
    queue: Queue,
    ticket_id: int,
    author: int,
    mail: ParsedMail,
    mail_id: int,
    held: list[int],
) -> str:
    """A technician's proof for their held mails (a reply to our tech_confirm notice):
    each held text goes to the requester once; the reply's own words, if any, are an
    internal note (the notice says so: an "OK, send it" must not reach the requester).
    Return what was done."""
    from helpdesk import workflow
    from helpdesk.ingest.quotes import words_added

    done = []
    for held_id in held:
        command, words, files = _held_words(store, held_id)
        try:
            made = workflow.send_held_answer(
                store,
                settings,
                queue,
                ticket_id,
                author,
                held_id,
                body_text=words,
                resolution=command == "resolve",
                attachments=files,
                mail_id=mail_id,
                message_id=mail.message_id,
            )
        except workflow.WorkflowError as exc:
            done.append(f"held mail #{held_id} not sent: {exc}")
            continue
        if made is None:
            done.append(f"held mail #{held_id} was sent already")
        else:
            done.append(f"held mail #{held_id} sent as {made[0]} #{made[1]}")
    # Nothing written above the quote of our notice is no words of theirs.
    own = words_added(mail.text).strip("\n")
    if own.strip() or mail.attachments:
        note = workflow.comment(
            store,
            settings,
            queue,
            ticket_id,
            author,
            body_text=own,
            subject=mail.subject,
            attachments=mail.attachments,
            source="mail",
            mail_id=mail_id,
            message_id=mail.message_id,
        )
        done.append(f"its own words kept as internal note #{note}")
    workflow.tell_unsent(store, settings, queue, ticket_id, author, mail_id)
    return "; ".join(done)


def _person_mail(
    store: Store,
    settings: Settings,
    queue: Queue,
    mail_id: int,
    mail: ParsedMail,
    envelope: dict[str, str],
    distrusted: str | None = None,
    released: bool = False,
) -> Outcome:
    """A mail a person wrote: a follow-up of the ticket it answers, or a new ticket.

    `distrusted` (a spam released with --distrust) is a reason to send its author nothing
    automatic; `released` says a technician released it (`mail release`)."""
    from helpdesk import workflow
    from helpdesk.ingest.thread import authentication
    from helpdesk.ingest.thread import find_ticket
    from helpdesk.ingest.thread import strip_tags

    subject = mail.subject or NO_SUBJECT.get(queue.language, NO_SUBJECT["en"])
    match = find_ticket(store, settings, queue, mail, envelope)
    # A From that failed DMARC or DKIM is not the sender's to trust: no ticket of
    # someone else's takes it, and nothing is sent to that address.
    auth = authentication(settings, mail)
    refused = None
    previous_id = None
    if match is not None and mail.author_problem:
        # Who would be writing is not one address read one way: not into anyone's ticket.
        refused = f"not let into ticket #{match.ticket_id} ({match.via}): {mail.author_problem}"
    elif match is not None:
        done = _followup(store, settings, queue, mail_id, mail, match, auth, subject)
        if isinstance(done, Outcome):
            return done
        refused, previous_id = done
    if previous_id is not None and not released:
        marked = store.scalar(
            "SELECT 1 FROM mail_record WHERE ticket_id = :id AND verdict = 'spam'",
            {"id": previous_id},
        )
        if marked is not None:
            # An answer to the acknowledgement of a spam (`ticket spam`): held like spam,
            # or every reply would open a ticket and mail its sender again.
            reason = f"{refused}; ticket #{previous_id} was marked spam{_HELD}"
            reason += f" (`helpdesk-pipe mail release {mail_id}`)"
            _set_verdict(store, mail_id, "spam", reason, None)
            return Outcome(EX_OK, f"spam: {reason}", mail_id, "spam", None)
    unsure = auth.failure or (mail.author_problem and f"{mail.author_problem}") or distrusted
    if unsure:
        refused = "; ".join(filter(None, [refused, f"{unsure}: no acknowledgement sent"]))
    # Our tag of another ticket has no place in this one's subject: replies
    # would be offered two tickets.
    subject = strip_tags(settings, subject) or subject
    email, name = _requester(mail, envelope)
    requester = workflow.ensure_person(store, email, name)
    # Whoever the requester copied takes part; our own aliases do not.
    copied = [
        workflow.ensure_person(store, address, cc_name)
        for cc_name, address in mail.to + mail.cc
        if address and address != email and settings.queue_for(address) is None
    ]
    ticket_id, _article_id = workflow.open_ticket(
        store,
        settings,
        queue,
        requester,
        subject=subject,
        body_text=mail.text,
        body_html=mail.html,
        attachments=mail.attachments,
        source="mail",
        mail_id=mail_id,
        message_id=mail.message_id,
        participant_ids=copied,
        acknowledge=not unsure,
        previous_id=previous_id,
    )
    if unsure:
        # Nor any later automatic mail (taken, resolved, closed): see notify/notices.py.
        workflow.distrust(store, ticket_id, workflow.Actor(requester, email, "mail"), unsure)
    _set_verdict(store, mail_id, "ticket", refused, ticket_id)
    return Outcome(EX_OK, f"ticket #{ticket_id} opened", mail_id, "ticket", ticket_id)


def _followup(
    store: Store,
    settings: Settings,
    queue: Queue,
    mail_id: int,
    mail: ParsedMail,
    match: ThreadMatch,
    auth: Authentication,
    subject: str,
) -> Outcome | tuple[str, int | None]:
    """Add a mail to the ticket it answers when its author may write there; else say why
    not (and which closed ticket a new one continues) for a ticket of its own."""
    from helpdesk import workflow
    from helpdesk.ingest.quotes import trim_quoted
    from helpdesk.ingest.thread import TECH_CONFIRM_KIND
    from helpdesk.ingest.thread import answers_internal_note
    from helpdesk.ingest.thread import check_writer
    from helpdesk.ingest.thread import confirmations_answered

    ticket_id = match.ticket_id
    writer = check_writer(store, settings, queue, match, mail, mail.author, auth)
    if not writer.allowed:
        return f"not let into ticket #{ticket_id} ({match.via}): {writer.why}", None
    # Locked: a scheduler closing it now must not slip between this and the change.
    status = store.scalar(
        "SELECT status FROM ticket WHERE id = :id" + store.for_update(), {"id": ticket_id}
    )
    note = answers_internal_note(store, ticket_id, mail)
    requester_side = not (writer.technician or writer.staff or note)
    confirmed = confirmations_answered(store, ticket_id, mail) if requester_side else []
    if status == "closed" and requester_side and not confirmed:
        # A closed ticket stays closed: the requester's news opens a new one,
        # linked to it (as Zammad and GLPI do after their follow-up delay).
        return f"ticket #{ticket_id} ({match.via}) is closed: opened a new one", ticket_id

    def outcome(done: str, reason: str) -> Outcome:
        _set_verdict(store, mail_id, "followup", reason, ticket_id)
        return Outcome(EX_OK, done, mail_id, "followup", ticket_id)

    author = workflow.ensure_person(store, mail.author, mail.author_name)
    trimmed = trim_quoted(mail.text)
    entry: dict[str, Any] = {
        "subject": subject,
        "body_text": mail.text,
        "body_trimmed": trimmed,
        "body_html": mail.html,
        "attachments": mail.attachments,
        "mail_id": mail_id,
    }
    if writer.unverified:
        workflow.hold_unverified(store, settings, queue, ticket_id, author, why=writer.why, **entry)
        return outcome(
            f"unverified entry in ticket #{ticket_id}, confirmation asked",
            f"unverified, by {match.via}: {writer.why}; confirmation asked",
        )
    published = ""
    if confirmed:
        actor = workflow.Actor(author, mail.author, "mail")
        entries = workflow.confirm_unverified(
            store, settings, queue, ticket_id, confirmed, actor, mail_id=mail_id
        )
        published = f"confirms mail(s) {', '.join(f'#{m}' for m in confirmed)}"
        if entries:
            published += f": entries {', '.join(f'#{e}' for e in entries)} made public"
        if not trimmed.strip() and not mail.attachments:
            # "Yes, that was me" with nothing else: the confirmation is all it says.
            return outcome(
                f"confirmation in ticket #{ticket_id}", f"{published} ({match.via}: {writer.why})"
            )
        if status == "closed":
            return f"{published}; ticket #{ticket_id} is closed: opened a new one", ticket_id
    held = (
        confirmations_answered(store, ticket_id, mail, kind=TECH_CONFIRM_KIND, to_addr=mail.author)
        if writer.technician and not note
        else []
    )
    if held:
        proven = _held_answered(store, settings, queue, ticket_id, author, mail, mail_id, held)
        return outcome(
            f"proof of held mail(s) in ticket #{ticket_id}",
            f"{proven} ({match.via}: {writer.why})",
        )
    done = _technician_command(
        store, settings, queue, ticket_id, author, writer, mail, mail_id, status, note
    )
    if done is not None:
        if writer.technician:
            workflow.tell_unsent(store, settings, queue, ticket_id, author, mail_id)
        return outcome(f"{done} in ticket #{ticket_id}", f"{done} by {match.via}: {writer.why}")
    workflow.add_followup(
        store,
        settings,
        queue,
        ticket_id,
        author,
        by_technician=writer.technician,
        message_id=mail.message_id,
        **entry,
    )
    if writer.technician:
        workflow.tell_unsent(store, settings, queue, ticket_id, author, mail_id)
    who = "technician" if writer.technician else "requester side"
    reason = f"follow-up ({who}) by {match.via}: {writer.why}"
    if not writer.technician:
        # Whom the requester's side copies now hears of the answers, as the first Cc do.
        copied = [(a, n) for n, a in mail.to + mail.cc if a != mail.author]
        actor = workflow.Actor(author, mail.author, "mail")
        added = workflow.add_participants(store, settings, ticket_id, copied, actor)
        if added:
            reason += f"; copied {len(added)} new participant(s)"
    if status == "resolved" and not writer.technician:
        now = store.scalar("SELECT status FROM ticket WHERE id = :id", {"id": ticket_id})
        reason += "; reopened" if now != "resolved" else "; only thanks: not reopened"
    reason = "; ".join(filter(None, [published, reason]))
    return outcome(f"follow-up to ticket #{ticket_id}", reason)


def _decide(
    store: Store,
    settings: Settings,
    queue: Queue,
    mail_id: int,
    mail: ParsedMail,
    dedup_key: str,
    envelope: dict[str, str],
    machine: Verdict | None,
) -> Outcome:
    """Record the verdict and its consequences in one transaction."""
    with store.transaction():
        verdict = store.scalar(
            "SELECT verdict FROM mail_record WHERE id = :id" + store.for_update(), {"id": mail_id}
        )
        if verdict != "pending":
            # A concurrent delivery of the very same bytes finished it first.
            return Outcome(
                EX_OK, f"mail #{mail_id} already recorded as {verdict}", mail_id, verdict
            )
        store.execute(
            "UPDATE mail_record SET message_id = :msgid, sender = :sender, sender_name = :name,"
            " subject = :subject, defects = :defects WHERE id = :id",
            {
                "id": mail_id,
                "msgid": mail.message_id[:998] if mail.message_id else None,
                "sender": mail.sender[:320] or None,
                "name": mail.sender_name[:200] or None,
                "subject": mail.subject,
                "defects": json.dumps(mail.defects[:50]) if mail.defects else None,
            },
        )
        earlier = store.one(
            "SELECT id, ticket_id FROM mail_record WHERE queue = :queue AND dedup_key = :key",
            {"queue": queue.name, "key": dedup_key},
        )
        if earlier is not None:
            reason = (
                f"same Message-ID as mail #{earlier[0]}"
                if mail.message_id
                else f"same bytes as mail #{earlier[0]} (no Message-ID)"
            )
            _set_verdict(store, mail_id, "duplicate", reason, earlier[1])
            return Outcome(EX_OK, reason, mail_id, "duplicate", earlier[1])
        # Claim the key first: on PostgreSQL a concurrent twin blocks here, then fails.
        store.execute(
            "UPDATE mail_record SET dedup_key = :key WHERE id = :id",
            {"key": dedup_key, "id": mail_id},
        )
        # Machine mail is sorted out before anything could answer it.
        if machine is not None:
            return _machine_mail(store, settings, queue, mail_id, mail, envelope, machine)
        return _person_mail(store, settings, queue, mail_id, mail, envelope)


def _seen(store: Store, queue: str, dedup_key: str) -> bool:
    """Whether the key is taken already (a hint: the decision re-reads it under lock)."""
    return (
        store.scalar(
            "SELECT 1 FROM mail_record WHERE queue = :queue AND dedup_key = :key",
            {"queue": queue, "key": dedup_key},
        )
        is not None
    )


def warm_up(settings: Settings, compile_all: bool = False) -> None:
    """Import what a person's mail needs (the workflow, the threading rules, Jinja2)
    before taking the lock rather than while holding it; with compile_all, compile every
    template too (ingestd, before it forks)."""
    from helpdesk import workflow  # noqa: F401
    from helpdesk.ingest import quotes  # noqa: F401
    from helpdesk.ingest import thread  # noqa: F401
    from helpdesk.notify import notices  # noqa: F401
    from helpdesk.notify import render

    render.warm(settings.templates, compile_all)


def send_after_commit(store: Store, settings: Settings, mail_id: int) -> None:
    """Send what the decision queued; any failure leaves it queued for `outbox flush`."""
    try:
        from helpdesk.notify.outbox import flush

        # One failure is enough to stop: the MTA is waiting for this process.
        result = flush(store, settings, mail_id=mail_id, stop_after=1)
        if result.sent or result.deferred or result.failed:
            log.info("mail #%s: outgoing %s", mail_id, result)
        if result.failed:
            from helpdesk import workflow

            with store.transaction():
                told = workflow.tell_unsent_for_mail(store, settings, mail_id)
            if told:
                flush(store, settings, mail_id=mail_id, stop_after=1)
    except Exception:  # noqa: BLE001 - the mail is recorded: its exit code must stay 0
        log.exception("mail #%s: sending its notifications failed; they stay queued", mail_id)


def deliver(
    raw: bytes,
    settings: Settings,
    queue_name: str | None,
    environ: dict[str, str],
    store: Store | None = None,
    send: bool = True,
) -> Outcome:
    """Record one message and decide what it becomes; raise StoreError or DeliveryRefused.

    With `store` (ingestd's open connection) it is used and left open; with `send`
    false the caller sends the queued mail itself (send_after_commit) when it likes."""
    if not raw or raw.isspace():  # isspace, unlike strip, copies nothing of a big mail
        return Outcome(EX_DATAERR, "empty message: nothing to deliver")
    if len(raw) > settings.max_size:
        return Outcome(EX_DATAERR, _too_big(settings))
    envelope = envelope_from(environ)
    queue = _pick_queue(settings, queue_name, envelope)
    if store is None:
        with Store(settings.database_url, settings.busy_timeout) as opened:
            return deliver(raw, settings, queue_name, environ, opened, send)
    digest = hashlib.sha256(raw).hexdigest()
    mail_id = _record_raw(store, queue.name, raw, digest, envelope)
    own = own_marks(settings)
    late = None
    try:
        # Pure work, done before the write lock: with 30 deliveries at once on two cores,
        # every millisecond inside it is a millisecond for each one queued behind it.
        # Past the budget the mail is kept raw: a retry by the MTA would take as long.
        with budget(settings.parse_budget_s):
            mail = parse(raw)
            machine = classify(raw, mail, envelope, own, settings.spam)
    except BudgetExceeded:
        late = f"parse budget of {settings.parse_budget_s:g} s exceeded"
        log.warning("mail #%s: %s: kept raw, attached as message.eml", mail_id, late)
        mail, machine = _kept_raw(raw, settings, queue, envelope, own, late)
    if len(raw) > memory.BIG:
        memory.give_back()  # before the store copies the text and files once more
    # A digest, not the Message-ID itself: a long non-ASCII one would overflow
    # PostgreSQL's btree row limit and defer the mail forever.
    if mail.message_id:
        dedup_key = "mid:" + hashlib.sha256(mail.message_id.encode("utf-8", "replace")).hexdigest()
    else:
        dedup_key = f"sha256:{digest}"
    if machine is None and not _seen(store, queue.name, dedup_key):
        shown_as_stored(mail)  # a duplicate's text is never stored: no cleaning for it
        warm_up(settings)
    for attempt in (1, 2):
        try:
            outcome = _decide(store, settings, queue, mail_id, mail, dedup_key, envelope, machine)
            break
        except IntegrityError:
            # A concurrent delivery claimed the same Message-ID; the retry sees it.
            if attempt == 2:
                raise
    if late is not None:
        outcome = _noted_late(store, outcome, late)
    if send:
        send_after_commit(store, settings, mail_id)
    return outcome


def shown_as_stored(mail: ParsedMail) -> None:
    """Make a person's mail what we store and show: no private link in its text, its HTML
    cleaned once, here (helpdesk/htmlsafe.py), or, past what cleaning can take in
    bounded time, left out of the page and kept as an attachment."""
    from helpdesk import htmlsafe
    from helpdesk.ingest.parsed import ParsedAttachment
    from helpdesk.tokens import redact_links

    mail.text = redact_links(mail.text)
    if not mail.html:
        return
    html = redact_links(mail.html)
    mail.html, why = htmlsafe.prepare(html)
    if why is not None:
        names = {a.filename for a in mail.attachments}
        name = next(
            n for n in (f"message{i or ''}.html" for i in range(len(names) + 1)) if n not in names
        )
        data = html.encode("utf-8", "replace")
        mail.attachments.append(ParsedAttachment(name, "text/html", data))
        mail.defects.append(f"HTML body not shown ({why}): attached as {name}")


def _too_big(settings: Settings) -> str:
    return f"message is over this helpdesk's size limit of {settings.max_size} bytes"


def _setup_logging(settings: Settings | None) -> None:
    # The one stderr line is printed by run(); logging must not add a second one,
    # not even the traceback logging prints when its own file cannot be written.
    logging.raiseExceptions = False
    logger = logging.getLogger("helpdesk")
    logger.addHandler(logging.NullHandler())
    if settings is not None and settings.log_file:
        try:
            handler: logging.Handler = logging.FileHandler(
                settings.log_file, encoding="utf-8", errors="backslashreplace"
            )
        except OSError:
            return
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def guarded(work: Callable[[], Outcome]) -> Outcome:
    """Run a delivery and turn every failure into the Outcome the MTA must see."""
    try:
        return work()
    except ConfigError as exc:
        return Outcome(EX_TEMPFAIL, f"helpdesk-pipe: configuration: {exc}")
    except DeliveryRefused as exc:
        return Outcome(EX_TEMPFAIL, f"helpdesk-pipe: {exc}")
    except StoreError as exc:
        text = str(exc)
        hint = (
            " (run `helpdesk-pipe init`)"
            if "no such table" in text or "does not exist" in text
            else ""
        )
        return Outcome(
            EX_TEMPFAIL, f"helpdesk-pipe: database unavailable, will retry: {text}{hint}"
        )
    except MemoryError:
        return Outcome(EX_TEMPFAIL, "helpdesk-pipe: out of memory, will retry")
    except OSError as exc:
        return Outcome(EX_TEMPFAIL, f"helpdesk-pipe: system error, will retry: {exc}")
    except KeyboardInterrupt:
        return Outcome(EX_TEMPFAIL, "helpdesk-pipe: interrupted, will retry")
    except Exception as exc:  # noqa: BLE001 - a bug must defer the mail, never bounce or lose it
        log.exception("delivery failed")
        return Outcome(
            EX_TEMPFAIL, f"helpdesk-pipe: internal error, will retry: {type(exc).__name__}: {exc}"
        )


def too_big_outcome(settings: Settings) -> Outcome:
    """What a message over the size limit gets (it was never fully read)."""
    return Outcome(EX_DATAERR, _too_big(settings))


def report(outcome: Outcome) -> str:
    """Log the outcome; return the line for stderr ("" when all went well)."""
    if outcome.code == EX_OK:
        log.info("mail #%s: %s", outcome.mail_id, outcome.message)
        return ""
    line = " ".join(outcome.message.split())
    if outcome.code == EX_DATAERR and not line.startswith("helpdesk-pipe"):
        line = f"helpdesk-pipe: {line}"
    log.warning("exit %s: %s", outcome.code, line)
    return line


def run(
    config: str | None,
    queue_name: str | None,
    message: tuple[bytes, bool] | None = None,
    why_here: str | None = None,
) -> int:
    """Deliver stdin (or `message`, already read from it) in this process; return the
    exit code and print one line to stderr on failure."""
    set_group_umask()
    _setup_logging(None)

    def work() -> Outcome:
        settings = load_settings(config)
        _setup_logging(settings)
        if why_here:
            log.info("delivering in process: %s", why_here)
        raw, too_big = message if message is not None else read_message(settings.max_size)
        if too_big:
            return too_big_outcome(settings)
        return deliver(raw, settings, queue_name, dict(os.environ))

    outcome = guarded(work)
    line = report(outcome)
    if line:
        print(line, file=sys.stderr)
    return outcome.code


class ReleaseRefused(Exception):
    """A mail that `release` cannot turn into what it would have been (with why)."""


def release(
    store: Store, settings: Settings, mail_id: int, by: str, distrusted: bool = False
) -> Outcome:
    """Turn a held mail (spam, bulk) into what it would have been, a ticket with its
    acknowledgement or a follow-up with its news, in one transaction; send that mail
    after the commit. `by` names who released it; with `distrusted` its author gets no
    automatic mail (the ticket says why). Raise ReleaseRefused for anything not held."""
    from helpdesk import workflow

    row = store.one(
        "SELECT m.queue, m.envelope, m.verdict, m.reason, m.ticket_id, r.data FROM mail_record m"
        " JOIN mail_raw r ON r.mail_id = m.id WHERE m.id = :id",
        {"id": mail_id},
    )
    if row is None:
        raise ReleaseRefused(f"no mail #{mail_id}")
    queue = settings.queues.get(row[0])
    if queue is None:
        raise ReleaseRefused(f"mail #{mail_id}: its queue {row[0]} is not in {settings.path}")
    raw, envelope = bytes(row[5]), json.loads(row[1] or "{}")
    try:
        with budget(settings.parse_budget_s):
            mail = parse(raw)
    except BudgetExceeded:
        late = f"parse budget of {settings.parse_budget_s:g} s exceeded"
        mail, _machine = _kept_raw(raw, settings, queue, envelope, own_marks(settings), late)
    shown_as_stored(mail)
    warm_up(settings)
    with store.transaction():
        locked = store.one(
            "SELECT verdict, reason, ticket_id FROM mail_record WHERE id = :id"
            + store.for_update(),
            {"id": mail_id},
        )
        assert locked is not None, f"mail #{mail_id} vanished while being released"
        verdict, reason, ticket_id = locked
        if verdict not in HELD_VERDICTS:
            done = f" (ticket #{ticket_id})" if ticket_id else ""
            raise ReleaseRefused(
                f"mail #{mail_id} is {verdict}{done}, not held: only spam and bulk mail is released"
            )
        if ticket_id is not None:
            raise ReleaseRefused(
                f"mail #{mail_id} was marked spam with ticket #{ticket_id}:"
                f" `helpdesk-pipe ticket reopen {ticket_id}` instead"
            )
        reason = (reason or "-").split(_HELD, 1)[0]
        why = f"released {verdict} (mail #{mail_id}, {reason}) by {by}"
        outcome = _person_mail(
            store,
            settings,
            queue,
            mail_id,
            mail,
            envelope,
            why if distrusted else None,
            released=True,
        )
        note = f"released from {verdict} by {by}; was: {reason}"
        store.execute(
            "UPDATE mail_record SET reason = CASE WHEN reason IS NULL THEN :note"
            " ELSE reason || '; ' || :note END WHERE id = :id",
            {"note": note[:1000], "id": mail_id},
        )
        if outcome.ticket_id is not None:
            workflow.record_history(
                store,
                outcome.ticket_id,
                workflow.Actor(None, by, "cli"),
                "release",
                detail=f"mail #{mail_id} released from {verdict}: {reason}"[:1000],
            )
    send_after_commit(store, settings, mail_id)
    return outcome


# What a mail read past its parse budget shows as its text, in the queue's language.
_KEPT_RAW_NOTICE = {
    "fr": "Ce message n'a pas pu être lu en {seconds} s : il est joint tel qu'il est arrivé"
    " (message.eml).",
    "en": "This message could not be read within {seconds} s: it is attached as it came"
    " (message.eml).",
}


def _kept_raw(
    raw: bytes,
    settings: Settings,
    queue: Queue,
    envelope: dict[str, str],
    own: OwnMarks,
    late: str,
) -> tuple[ParsedMail, Verdict | None]:
    """The mail as parse_kept_raw reads it (its headers, the notice, itself attached), and
    what its headers say of it; if even that runs out of time, the notice and no headers."""
    notice = _KEPT_RAW_NOTICE.get(queue.language, _KEPT_RAW_NOTICE["en"]).format(
        seconds=f"{settings.parse_budget_s:g}"
    )
    try:
        with budget(min(settings.parse_budget_s, FALLBACK_S)):
            mail = parse_kept_raw(raw, notice, late)
            # Machine mail is told by its headers; the attached copy of itself is no
            # attached message (nor is the rest of the mail, unread, to be searched).
            head = replace(mail, attachments=[])
            return mail, classify(raw[:KEPT_RAW_HEADERS], head, envelope, own, settings.spam)
    except BudgetExceeded:
        mail = ParsedMail(
            text=notice,
            attachments=[ParsedAttachment("message.eml", "message/rfc822", raw)],
            defects=[late, "headers unreadable in time"],
            author_problem="no From read in time",
        )
        return mail, None


def _noted_late(store: Store, outcome: Outcome, late: str) -> Outcome:
    """Add the budget's note to the mail's recorded reason (and to the outcome's line)."""
    try:
        with store.transaction():
            store.execute(
                "UPDATE mail_record SET reason = CASE WHEN reason IS NULL THEN :note"
                " ELSE reason || '; ' || :note END WHERE id = :id",
                {"note": f"{late}: kept raw, attached as message.eml", "id": outcome.mail_id},
            )
    except StoreError:
        # Decided and committed: the defect says it too, the MTA must hear 0.
        log.exception("mail #%s: its reason could not be completed", outcome.mail_id)
    return replace(outcome, message=f"{outcome.message} ({late})")
