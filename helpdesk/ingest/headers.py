"""Read a message's header block into ParsedMail: sender, recipients, subject, IDs, date."""

from __future__ import annotations

import email.utils
import re
from email.message import Message
from typing import Any

from helpdesk.ingest.addresses import parse_addresses
from helpdesk.ingest.headertext import decode_header
from helpdesk.ingest.parsed import ParsedMail
from helpdesk.ingest.sender import strict_from

_MSGID = re.compile(r"<[^<>\s]+>")
_BARE_MSGID = re.compile(r"[^<>\s@]+@[^<>\s@]+")
# Each recipient becomes a person and a participant of the ticket: a To of 500,000
# addresses must not become 500,000 rows.
MAX_RECIPIENTS = 100
# A ticket's subject is shown, searched and sent in every notice; longer is no subject.
MAX_SUBJECT = 1000


def _recipients(
    values: list[Any], hints: tuple[str, ...], field: str, defects: list[str]
) -> list[tuple[str, str]]:
    """To/Cc/Reply-To: only the entries that are addresses (`To: Recipients` is not one),
    of the first MAX_RECIPIENTS entries (a defect says when there were more)."""
    found = parse_addresses(values, hints, limit=MAX_RECIPIENTS + 1)
    if len(found) > MAX_RECIPIENTS:
        found = found[:MAX_RECIPIENTS]
        defects.append(f"{field}: over {MAX_RECIPIENTS} entries, only the first ones read")
    return [(name, addr) for name, addr in found if "@" in addr]


def _pick_sender(message: Message, hints: tuple[str, ...]) -> tuple[str, str]:
    """First mailbox with an address, from From, then Sender, Reply-To, Return-Path.

    An "address" over RFC 5321's 254 characters is no address (and no database column).
    """
    for header in ("from", "sender", "reply-to", "return-path"):
        found = [
            (name, addr)
            for name, addr in parse_addresses(message.get_all(header) or [], hints)
            if len(addr) <= 254
        ]
        for name, addr in found:
            if "@" in addr:
                return name, addr
        for name, addr in found:
            if addr:
                return name, addr
    return "", ""


def _ids(value: str) -> list[str]:
    return _MSGID.findall(value or "")


def fill_headers(mail: ParsedMail, message: Message, hints: tuple[str, ...]) -> None:
    """Decode every header into `mail.headers` and read the fields ParsedMail names."""
    headers: dict[str, list[str]] = {}
    for key, value in message.raw_items():
        headers.setdefault(str(key).lower(), []).append(decode_header(value, hints).strip())
    mail.headers = headers
    name, addr = _pick_sender(message, hints)
    mail.sender_name, mail.sender = name, addr.lower()
    mail.author_name, mail.author, mail.author_problem = strict_from(message, hints)
    mail.to = _recipients(message.get_all("to") or [], hints, "To", mail.defects)
    mail.cc = _recipients(message.get_all("cc") or [], hints, "Cc", mail.defects)
    mail.reply_to = _recipients(message.get_all("reply-to") or [], hints, "Reply-To", mail.defects)
    mail.subject = " ".join(mail.header("subject").split())
    if len(mail.subject) > MAX_SUBJECT:
        mail.defects.append(f"Subject: {len(mail.subject)} characters, cut to {MAX_SUBJECT}")
        mail.subject = mail.subject[:MAX_SUBJECT].rstrip()
    ids = _ids(mail.header("message-id"))
    if not ids:
        bare = _BARE_MSGID.search(mail.header("message-id"))
        ids = [f"<{bare.group(0)}>"] if bare else []
    mail.message_id = ids[0] if ids else None
    mail.in_reply_to = _ids(mail.header("in-reply-to"))
    mail.references = _ids(" ".join(headers.get("references", [])))
    if mail.header("date"):
        try:
            mail.date = email.utils.parsedate_to_datetime(mail.header("date"))
        except (TypeError, ValueError, IndexError, OverflowError):
            mail.defects.append("unparseable Date header")
