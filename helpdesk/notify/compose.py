"""Build one outgoing message: well-formed, threaded, and marked as automatic mail.

Header values that come from incoming mail (a subject, a display name) are
flattened to one line first: a CR, LF or any control character in them, encoded
or not, must never start a header of its own.
"""

from __future__ import annotations

import hashlib
import quopri
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.policy import SMTPUTF8
from email.utils import format_datetime

from helpdesk.ingest.classify import LOOP_HEADER
from helpdesk.ingest.classify import OUR_ID_PREFIX
from helpdesk.store import utcnow

__all__ = [
    "Outgoing",
    "compose",
    "new_message_id",
    "one_line",
    "link_marker",
    "with_link",
    "without_links",
    "LOOP_HEADER",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_MAX_IDS = 20


def one_line(value: str, limit: int = 300) -> str:
    """A header-safe value: control characters and line breaks become one space, and
    what looks like an RFC 2047 encoded word is broken up.

    The email package decodes encoded words in a value it is given before it
    writes the header, so a subject that arrived encoded twice would reach the
    wire with the CR LF of its inner layer: "=?" loses its meaning first.
    """
    flat = " ".join(_CONTROL.sub(" ", value).split())[:limit]
    return flat.replace("=?", "=\u200b?")


def new_message_id(ticket_id: int | None, domain: str) -> str:
    """A fresh Message-ID of ours, without <>: hd.<ticket>.<random>@domain."""
    # The prefix is how classify recognises our own mail coming back.
    return f"{OUR_ID_PREFIX}{ticket_id or 0}.{secrets.token_hex(8)}@{domain}"


@dataclass
class Outgoing:
    """What one notification needs to become a message."""

    from_addr: str
    from_name: str
    to_addr: str
    to_name: str
    subject: str
    body: str
    message_id: str
    instance: str
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    auto_submitted: str = "auto-generated"
    ticket_id: int | None = None


def _address(name: str, addr_spec: str) -> Address:
    display = one_line(name, 200)
    try:
        return _Mailbox(display_name=display, addr_spec=addr_spec)
    except NonASCIILocalPartDefect:
        # Valid under RFC 6532, refused by the parser: build it from its parts
        # (which still refuses CR and LF; the header check below does the rest).
        local, _, domain = addr_spec.rpartition("@")
        return _Mailbox(display_name=display, username=local, domain=domain)


# The longest quoted word of a display name: with its leading space it fits on a
# folded line (78) by itself, whatever header it starts, so folding never opens it.
_WORD_LIMIT = 60
# ASCII that an atom may not hold (RFC 5322 atext, and the space between words);
# other scripts stay bare: raw UTF-8 under SMTPUTF8, encoded words otherwise.
_NEEDS_QUOTES = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~ \x80-\U0010ffff-]")


class _Mailbox(Address):
    """An address whose display name survives folding as one phrase.

    The email package folds a quoted display name too long for one line by
    writing its words bare, quotes dropped: `"Martin, a <x@evil.example>" <alice@...>`
    then lists the attacker's address. Written as several quoted words, each
    short enough for a line of its own, the name is folded between words only.
    """

    def __str__(self) -> str:
        if not self.display_name:
            return self.addr_spec
        return f"{_phrase(self.display_name)} <{self.addr_spec}>"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _phrase(display: str) -> str:
    """A display name as an RFC 5322 phrase of words no longer than _WORD_LIMIT.

    Spaces between words are where it folds; a single word too long for a line
    is cut in pieces (a reader sees a space there: only absurd names have one).
    """
    words = []
    for word in display.split():
        while len(_quoted(word)) > _WORD_LIMIT:
            cut = 1
            while len(_quoted(word[: cut + 1])) <= _WORD_LIMIT:
                cut += 1
            words.append(word[:cut])
            word = word[cut:]
        words.append(word)
    chunks: list[str] = []
    for word in words:
        if chunks and len(_quoted(f"{chunks[-1]} {word}")) <= _WORD_LIMIT:
            chunks[-1] += " " + word
        else:
            chunks.append(word)
    return " ".join(_quoted(c) if _NEEDS_QUOTES.search(c) else c for c in chunks)


def compose(out: Outgoing) -> bytes:
    """Render the message as bytes with CRLF line ends, ready for any transport.

    Raises ValueError when an address cannot be written in a header.
    """
    # An address with a non-ASCII local part can only travel as SMTPUTF8 (RFC 6532);
    # the transport asks the server for it.
    utf8 = not (out.to_addr.isascii() and out.from_addr.isascii())
    msg = EmailMessage(policy=SMTPUTF8 if utf8 else SMTP)
    msg["From"] = _address(out.from_name, out.from_addr)
    msg["To"] = _address(out.to_name, out.to_addr)
    if out.reply_to:
        msg["Reply-To"] = _address(out.from_name, out.reply_to)
    msg["Subject"] = one_line(out.subject, 900)
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = f"<{out.message_id}>"
    # Parsed ids keep their brackets, ours have none: one form before writing.
    bare = [r.strip().strip("<>") for r in out.references]
    references = [r for r in dict.fromkeys(bare) if _safe_id(r)][-_MAX_IDS:]
    in_reply_to = (out.in_reply_to or "").strip().strip("<>")
    if _safe_id(in_reply_to):
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    # RFC 3834 and the vendors' own markers: autoresponders stay quiet, and
    # our loop header lets the pipe recognise this mail if it ever comes back.
    msg["Auto-Submitted"] = out.auto_submitted
    msg["X-Auto-Response-Suppress"] = "All"
    msg["Precedence"] = "bulk"
    msg[LOOP_HEADER] = one_line(out.instance, 200)
    if out.ticket_id is not None:
        msg["X-Helpdesk-Ticket"] = str(out.ticket_id)
    msg.set_content(out.body, charset="utf-8", cte="quoted-printable")
    data = msg.as_bytes()
    _check_header_names(data, [name for name, _value in msg.items()])
    return data


# What RFC 5322 allows in a msg-id (dot-atom-text "@" dot-atom-text or no-fold-literal),
# without "=?", which the email package would decode as an encoded word.
_MSG_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\[\]-]{1,250}")


def _safe_id(message_id: str) -> bool:
    """Tell whether a Message-ID can be repeated in References as it is."""
    return _MSG_ID.fullmatch(message_id) is not None and "=?" not in message_id


def _check_header_names(data: bytes, expected: list[str]) -> None:
    """Refuse a message whose header block is not exactly the headers we set.

    The last line of defence against injection: whatever slipped through, a
    header we did not write makes the message unsendable (a `failed` outbox row).
    """
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    written = BytesHeaderParser(policy=compat32).parsebytes(data).keys()
    if [n.lower() for n in written] != [n.lower() for n in expected]:
        raise ValueError(f"header block differs from the headers set: {written}")


# -- the private link, filled in only when the mail is sent ---------------------------

_TOKEN_URL = re.compile(rb"https?://[^\s<>\"']*?/t/[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def link_marker(message_id: str) -> str:
    """What a mail's body holds where its private link will be: made of its own
    Message-ID, so that no writer of a quoted text can plant one that becomes a link."""
    digest = hashlib.sha256(f"helpdesk-link\0{message_id}".encode("utf-8", "replace"))
    return f"[private-link-{digest.hexdigest()[:24]}]"


def _body(data: bytes) -> tuple[bytes, bytes] | None:
    """The header block (with its blank line) and the decoded body of a message we
    composed (one text part, quoted-printable); None for anything else."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or b"content-transfer-encoding: quoted-printable" not in head.lower():
        return None
    return head + sep, quopri.decodestring(body)


def _encoded(head: bytes, text: bytes) -> bytes:
    body = quopri.encodestring(text.replace(b"\r\n", b"\n"))
    return head + body.replace(b"\n", b"\r\n")


def with_link(data: bytes, marker: str, url: Callable[[], str]) -> bytes | None:
    """The message with its link marker replaced by the URL `url()` makes, re-encoded;
    None (and no URL made) when the message holds no such marker."""
    parts = _body(data)
    if parts is None or marker.encode() not in parts[1]:
        return None
    head, text = parts
    return _encoded(head, text.replace(marker.encode(), url().encode()))


def without_links(data: bytes, marker: str) -> bytes:
    """A stored message with any private link (`.../t/<token>`) in its body replaced by
    its marker: what older versions stored in the outbox, made harmless."""
    parts = _body(data)
    if parts is None:
        return _TOKEN_URL.sub(marker.encode(), data)
    head, text = parts
    if not _TOKEN_URL.search(text):
        return data
    return _encoded(head, _TOKEN_URL.sub(marker.encode(), text))
