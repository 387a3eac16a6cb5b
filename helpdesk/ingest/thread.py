"""Which ticket does a mail belong to, and may its sender write there?

First match wins, strongest proof first (research/anchors.md, DESIGN.md
"Threading trusts only what we issued"):
1. a reply address we signed for the ticket (the envelope's extension, or one
   found in To/Cc): proof the writer received our mail;
2. In-Reply-To/References naming a Message-ID we issued or received for a
   ticket of this queue;
3. the subject tag `[TAG #123]`.
A signed address is enough to write. Otherwise only the requester, a participant
or a technician of the ticket (its group's, its queue's, the one who has it) may,
named by the mail's strict author (ingest/sender.py); a DMARC failure for the
author's domain, reported by an MTA we trust, makes anyone a stranger. The
subject tag alone proves nothing (anyone can write a From and a ticket number):
without a Message-ID of the ticket or a trusted DMARC pass, the requester's words
are kept unverified until a reply to our confirmation request proves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.ingest.parsed import ParsedMail
from helpdesk.notify import kinds
from helpdesk.notify.outbox import message_id_digest
from helpdesk.people import may_speak_as_technician
from helpdesk.replyaddress import ticket_of_address
from helpdesk.replyaddress import ticket_of_extension
from helpdesk.store import Store

__all__ = [
    "ThreadMatch",
    "Writer",
    "find_ticket",
    "check_writer",
    "Authentication",
    "authentication",
    "confirmations_answered",
    "CONFIRM_KIND",
    "TECH_CONFIRM_KIND",
    "strip_tags",
    "answers_internal_note",
    "command_of",
]

_MAX_REFERENCES = 50
VIA_REFERENCES = "In-Reply-To/References"
# The outbox kinds of the mail that asks an unverified writer to confirm their words:
# the requester's side, and a technician whose mail was kept as a note.
CONFIRM_KIND = kinds.CONFIRM
TECH_CONFIRM_KIND = kinds.TECH_CONFIRM
# The outbox kinds of our mails among technicians whose answers stay internal notes
# (helpdesk.notify.notices): a note's news and a handover quoting notes, whose answers
# quote them; the news of a take or of a colleague's answer, which are talk among
# technicians, not words for the requester.
INTERNAL_NOTE_KINDS = (
    kinds.TECH_COMMENT,
    kinds.ASSIGNED_NOTES,
    kinds.TECH_TAKEN,
    kinds.TECH_COLLEAGUE,
)


@dataclass(frozen=True)
class ThreadMatch:
    """The ticket a mail answers, and how we know."""

    ticket_id: int
    via: str
    signed: bool


@dataclass(frozen=True)
class Writer:
    """Whether the sender may write into a ticket, as whom, and why."""

    allowed: bool
    technician: bool
    why: str
    # A technician of the ticket whose mail lacks the proof that gives them a voice
    # towards the requester: they may still write internal notes.
    staff: bool = False
    # The requester (or a participant) by the subject tag alone: what they write is
    # kept apart, unverified, until a reply to our confirmation request proves it.
    unverified: bool = False


def _ticket_in_queue(store: Store, ticket_id: int, queue: Queue) -> bool:
    return (
        store.scalar(
            "SELECT 1 FROM ticket WHERE id = :id AND queue = :queue",
            {"id": ticket_id, "queue": queue.name},
        )
        is not None
    )


def _signed(
    settings: Settings, queue: Queue, mail: ParsedMail, envelope: dict[str, str]
) -> int | None:
    if not settings.secret_key:
        return None  # nothing was signed: notices cannot be sent without a key either
    for variable in ("EXTENSION", "LOCAL_PART_SUFFIX"):
        value = envelope.get(variable)
        if value:
            ticket_id = ticket_of_extension(settings.secret_key, queue.name, value)
            if ticket_id is not None:
                return ticket_id
    candidates = [envelope.get("ORIGINAL_RECIPIENT", ""), envelope.get("RECIPIENT", "")]
    candidates += [address for _name, address in mail.to + mail.cc]
    for address in candidates:
        if address and "+" in address:
            ticket_id = ticket_of_address(settings.secret_key, queue.name, address)
            if ticket_id is not None:
                return ticket_id
    return None


def _in_list(values: list[str]) -> tuple[str, dict[str, str]]:
    """Named parameters for an IN (...) list: the SQL text and the values."""
    names = {f"in{n}": value for n, value in enumerate(values)}
    return ", ".join(":" + name for name in names), names


def _by_references(store: Store, queue: Queue, mail: ParsedMail) -> int | None:
    # In-Reply-To is the message answered; References end with the newest.
    ids = list(dict.fromkeys([*mail.in_reply_to, *reversed(mail.references)]))[:_MAX_REFERENCES]
    if not ids:
        return None
    digests = [message_id_digest(i) for i in ids]
    in_list, names = _in_list(digests)
    # Shaped so that the plan starts from thread_ref's key: SQLite, without statistics
    # (nothing runs ANALYZE), would otherwise walk every ticket of the queue and probe
    # thread_ref for each: 0.7 s per reply with a million tickets (bench/README.md).
    rows = store.execute(
        "SELECT r.message_id_sha256, r.ticket_id FROM thread_ref r"
        f" WHERE r.message_id_sha256 IN ({in_list})"
        " AND EXISTS (SELECT 1 FROM ticket t WHERE t.id = r.ticket_id AND t.queue = :queue)",
        {"queue": queue.name, **names},
    ).fetchall()
    found: dict[str, int] = {}
    for digest, ticket_id in rows:
        found[digest] = max(found.get(digest, 0), int(ticket_id))
    for digest in digests:
        if digest in found:
            return found[digest]
    return None


def _tag_pattern(settings: Settings) -> re.Pattern[str]:
    return re.compile(
        r"\[\s*" + re.escape(settings.subject_tag) + r"\s*#\s*(\d{1,12})\s*\]", re.IGNORECASE
    )


def strip_tags(settings: Settings, subject: str) -> str:
    """A subject without our ticket tags."""
    return " ".join(_tag_pattern(settings).sub(" ", subject).split())


def _by_subject(store: Store, settings: Settings, queue: Queue, subject: str) -> int | None:
    for match in _tag_pattern(settings).finditer(subject):
        ticket_id = int(match.group(1))
        if _ticket_in_queue(store, ticket_id, queue):
            return ticket_id
    return None


def find_ticket(
    store: Store, settings: Settings, queue: Queue, mail: ParsedMail, envelope: dict[str, str]
) -> ThreadMatch | None:
    """Find the ticket of this queue that a mail answers, or None for a new request."""
    ticket_id = _signed(settings, queue, mail, envelope)
    if ticket_id is not None and _ticket_in_queue(store, ticket_id, queue):
        return ThreadMatch(ticket_id, "signed reply address", True)
    ticket_id = _by_references(store, queue, mail)
    if ticket_id is not None:
        return ThreadMatch(ticket_id, VIA_REFERENCES, False)
    ticket_id = _by_subject(store, settings, queue, mail.subject)
    if ticket_id is not None:
        return ThreadMatch(ticket_id, "subject tag", False)
    return None


# RFC 8601: `authserv-id [version]; method[/version]=result ptype.property=value ...; ...`
_PAIR = re.compile(r'([A-Za-z0-9_.\-/]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s";]+)')
_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*"|[^";])+')
_MAX_HEADER = 8192  # ours are a few hundred characters: more is no one's verdict to read
_MAX_HEADERS = 50


def _without_comments(text: str) -> str:
    """A header value without its (comments), nested or not; quoted strings kept."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
            if not depth:
                out.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
            if not depth:
                out.append(char)
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth = 1
            out.append(" ")
        else:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _results(value: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
    """(authserv-id, [(method, result, properties)]) of one Authentication-Results value.

    Read token by token, comments out first: a comment may hold `;`, and a property's
    value (a DKIM selector the sender chose) may hold `header.d=...` of its own. A
    result that names one property twice is ambiguous and left out.
    """
    segments = _SEGMENT.findall(_without_comments(value[:_MAX_HEADER]))
    if not segments or not segments[0].split():
        return "", []
    server = segments[0].split()[0].lower()
    found = []
    for segment in segments[1:]:
        pairs = _PAIR.findall(segment)
        if not pairs:
            continue
        method, result = pairs[0][0].split("/", 1)[0].lower(), pairs[0][1].strip('"').lower()
        props: dict[str, str] = {}
        for name, raw in pairs[1:]:
            name = name.lower()
            if name in props:
                break  # a second header.d: which one did the verifier mean?
            props[name] = raw.strip('"').lower()
        else:
            found.append((method, result, props))
    return server, found


@dataclass(frozen=True)
class Authentication:
    """What our trusted MTA said of the From domain: a failure that makes the author a
    stranger, or a pass that proves the From (each names the result and its server)."""

    failure: str | None = None
    proof: str | None = None


def authentication(settings: Settings, mail: ParsedMail) -> Authentication:
    """Read the trusted Authentication-Results about the domain of the mail's author.

    Only results about exactly that domain count: a `dmarc=fail` refuses it; a
    `dmarc=pass`, or a `dkim=pass` whose signing domain is the From domain, proves it.
    A result about another domain, `none`, `temperror`, a DKIM failure (RFC 6376: a
    broken signature is no signature, and keys go missing), or any header whose
    authserv-id we do not trust counts for nothing; a failure outweighs a pass (an
    attacker may add headers below our MTA's own).
    """
    if not settings.trusted_authserv_ids or "@" not in mail.author:
        return Authentication()
    domain = mail.author.rpartition("@")[2].lower()
    dmarc: dict[str, str] = {}
    dkim: dict[str, str] = {}
    for value in mail.headers.get("authentication-results", [])[:_MAX_HEADERS]:
        server, results = _results(value)
        if server not in settings.trusted_authserv_ids:
            continue  # anyone can write this header; only our own MTA's counts
        for method, result, props in results:
            if method == "dmarc":
                about = props.get("header.from", "")
            elif method == "dkim":  # aligned when the signing domain is the From domain
                about = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
            else:
                continue
            if about.rpartition("@")[2] == domain:
                (dmarc if method == "dmarc" else dkim).setdefault(result, server)
    if "fail" in dmarc:
        return Authentication(failure=f"DMARC fail for {domain} reported by {dmarc['fail']}")
    if "pass" in dmarc:
        return Authentication(proof=f"DMARC pass for {domain} reported by {dmarc['pass']}")
    if "pass" in dkim:
        return Authentication(proof=f"DKIM pass for {domain} reported by {dkim['pass']}")
    return Authentication()


def _answers_ours(
    store: Store, ticket_id: int, mail: ParsedMail, condition: str, **params: str
) -> bool:
    """Tell whether a mail names one of our mails of a ticket that meets a condition."""
    ids = [i.strip().strip("<>") for i in [*mail.in_reply_to, *mail.references]]
    ids = list(dict.fromkeys(i for i in ids if i))[:_MAX_REFERENCES]
    if not ids:
        return False
    in_list, names = _in_list(ids)
    return (
        store.scalar(
            f"SELECT 1 FROM outbox_message WHERE ticket_id = :ticket AND {condition}"
            f" AND message_id IN ({in_list})",
            {"ticket": ticket_id, **params, **names},
        )
        is not None
    )


def _answers_our_mail_to(store: Store, ticket_id: int, mail: ParsedMail, sender: str) -> bool:
    return _answers_ours(store, ticket_id, mail, "to_addr = :to", to=sender)


def check_writer(
    store: Store,
    settings: Settings,
    queue: Queue,
    match: ThreadMatch,
    mail: ParsedMail,
    sender: str,
    auth: Authentication,
) -> Writer:
    """Decide whether the sender (the mail's strict author) may add to the matched ticket,
    as a technician or not, and whether what they write waits for their confirmation;
    `auth` is what authentication() said of the mail."""
    forged = auth.failure
    is_technician = may_speak_as_technician(store, settings, queue, match.ticket_id, sender)
    requester = store.scalar(
        "SELECT p.email FROM ticket t JOIN person p ON p.id = t.requester_id WHERE t.id = :id",
        {"id": match.ticket_id},
    )
    # A technician writing about their own request is its requester there.
    is_technician = is_technician and sender != requester
    # Without a trusted DMARC result a From is easy to forge, and a technician's voice
    # mails the requester in our name: it needs proof of a mail we sent that very
    # technician. A signed address is no such proof: the requester has one too.
    voice = (
        is_technician
        and forged is None
        and _answers_our_mail_to(store, match.ticket_id, mail, sender)
    )
    unproven = (
        f"{sender} is a technician of queue {queue.name}, but the mail answers none of ours"
        " to them: not sent to the requester"
    )
    if match.signed:
        why = f"signed reply address for ticket #{match.ticket_id}"
        if is_technician and not voice:
            why += f"; {unproven if forged is None else forged}"
        # A technician's From without a voice (unproven, or failed DMARC) still files
        # notes, marked as unverified, never public entries.
        return Writer(True, voice, why, staff=is_technician and not voice)
    if forged:
        return Writer(False, False, forged)
    if voice:
        return Writer(True, True, f"{sender} is a technician of queue {queue.name}")
    if is_technician:
        return Writer(True, False, unproven, staff=True)
    if sender == requester:
        who = f"{sender} is the requester"
    elif (
        store.scalar(
            "SELECT 1 FROM participant pa JOIN person p ON p.id = pa.person_id"
            " WHERE pa.ticket_id = :id AND p.email = :email",
            {"id": match.ticket_id, "email": sender},
        )
        is not None
    ):
        who = f"{sender} takes part in ticket #{match.ticket_id}"
    else:
        return Writer(
            False,
            False,
            f"{sender or 'an unknown sender'} is not the requester, a participant or a"
            f" technician of ticket #{match.ticket_id}",
        )
    # A From alone is anyone's to write, and ticket numbers are sequential: the tag
    # must come with proof that the writer is in the conversation (a Message-ID of the
    # ticket's, or our MTA's DMARC pass), or the words wait for the real address to
    # confirm them.
    if match.via == VIA_REFERENCES:
        return Writer(True, False, f"{who}; the mail names a Message-ID of the ticket")
    if auth.proof:
        return Writer(True, False, f"{who}; {auth.proof}")
    return Writer(
        True,
        False,
        f"{who}, but nothing besides the subject tag shows the mail belongs to the ticket:"
        f" kept as unverified until {sender} confirms it",
        unverified=True,
    )


def confirmations_answered(
    store: Store,
    ticket_id: int,
    mail: ParsedMail,
    *,
    kind: str = CONFIRM_KIND,
    to_addr: str | None = None,
) -> list[int]:
    """The mails held as unverified in a ticket whose confirmation requests (of this
    kind; sent to `to_addr` when given) this mail answers by their Message-ID: their
    author has confirmed them."""
    ids = [i.strip().strip("<>") for i in [*mail.in_reply_to, *mail.references]]
    ids = list(dict.fromkeys(i for i in ids if i))[:_MAX_REFERENCES]
    if not ids:
        return []
    in_list, names = _in_list(ids)
    params = {"ticket": ticket_id, "kind": kind, **names}
    to = ""
    if to_addr is not None:
        to, params["to"] = " AND to_addr = :to", to_addr
    rows = store.execute(
        "SELECT DISTINCT mail_id FROM outbox_message WHERE ticket_id = :ticket"
        f" AND kind = :kind AND mail_id IS NOT NULL AND message_id IN ({in_list}){to}",
        params,
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def answers_internal_note(store: Store, ticket_id: int, mail: ParsedMail) -> bool:
    """Tell whether a mail answers one of our notifications among technicians
    (INTERNAL_NOTE_KINDS): what it says (and quotes) must stay internal."""
    kinds = ", ".join(f"'{kind}'" for kind in INTERNAL_NOTE_KINDS)
    return _answers_ours(store, ticket_id, mail, f"kind IN ({kinds})")


_COMMAND = re.compile(r"\A\s*#(resolve|comment)\b[ \t]*\n?", re.IGNORECASE)


def command_of(text: str) -> tuple[str | None, str]:
    """A technician's first-line command (`#resolve`, `#comment`) and the text without it."""
    match = _COMMAND.match(text or "")
    if match is None:
        return None, text
    return match.group(1).lower(), text[match.end() :]
