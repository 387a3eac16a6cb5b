"""Raw bytes -> ParsedMail: mail-parser, plus charset repair, HTML-to-text and TNEF.

Malformed mail is data, not an exception: whatever the input, parse() returns a
ParsedMail and lists what it had to repair in `defects`.
"""

from __future__ import annotations

import base64
import email.header
import email.utils
import re
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any

from helpdesk.ingest.htmltext import html_to_text

__all__ = ["ParsedAttachment", "ParsedMail", "parse", "strip_mbox"]

_MSGID = re.compile(r"<[^<>\s]+>")
# Body lines that an mbox writer quoted: ">From " -> "From " (mboxo, as Postfix does).
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


@dataclass
class ParsedAttachment:
    """One file carried by a mail, decoded."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class ParsedMail:
    """What the rest of the pipe needs to know about one message."""

    sender: str = ""
    sender_name: str = ""
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    def header(self, name: str) -> str:
        """Return the first value of a header (case-insensitive), or ''."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""


def strip_mbox(raw: bytes) -> bytes:
    """Drop the mbox `From ` line an MTA puts first and undo its `>From ` quoting."""
    if not raw.startswith(b"From "):
        return raw
    end = raw.find(b"\n")
    if end < 0:
        return b""
    return _QUOTED_FROM.sub(rb"\1", raw[end + 1 :])


def _text(value: Any) -> str:
    """Decode any header value (str, Header, bytes, RFC 2047) to clean text."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return _repair_bytes(value)
    if isinstance(value, email.header.Header):
        chunks = []
        for data, charset in email.header.decode_header(value):
            chunks.append(_decode_chunk(data, charset))
        return "".join(chunks)
    text = str(value)
    if "=?" in text:
        try:
            chunks = [_decode_chunk(d, c) for d, c in email.header.decode_header(text)]
            text = "".join(chunks)
        except Exception:  # noqa: BLE001 - a broken encoded-word stays as written
            pass
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = _repair_bytes(text.encode("utf-8", "surrogateescape"))
    return text


def _decode_chunk(data: bytes | str, charset: str | None) -> str:
    if isinstance(data, str):
        return data
    if charset and charset.lower() not in ("unknown-8bit", "x-unknown"):
        try:
            return data.decode(_charset_alias(charset))
        except (LookupError, UnicodeDecodeError):
            pass
    return _repair_bytes(data)


def _charset_alias(charset: str) -> str:
    cs = charset.strip().strip('"').lower()
    return {
        "unicode-1-1-utf-7": "utf-7",
        "gb2312": "gb18030",
        "gbk": "gb18030",
        "ks_c_5601-1987": "cp949",
        "iso-8859-8-i": "iso-8859-8",
        "x-mac-cyrillic": "mac-cyrillic",
    }.get(cs, cs)


def _repair_bytes(data: bytes) -> str:
    """Guess the charset of undeclared 8-bit text: UTF-8, else Windows-1252, never fail."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _addresses(values: list[Any]) -> list[tuple[str, str]]:
    # Split on the raw header, decode the names after: a decoded name may hold a comma.
    raw = [v if isinstance(v, str) else str(v) for v in values]
    found = []
    for name, addr in email.utils.getaddresses(raw):
        addr = _text(addr).strip().strip("<>").strip()
        name = " ".join(_text(name).split())
        if addr or name:
            found.append((name, addr))
    return found


def _ids(value: str) -> list[str]:
    return _MSGID.findall(value or "")


def parse(raw: bytes) -> ParsedMail:
    """Parse one message (mbox From line allowed) into a ParsedMail; never raises on bad input."""
    data = strip_mbox(raw)
    try:
        return _parse_with_mailparser(data)
    except Exception as exc:  # noqa: BLE001 - fall back rather than lose the mail
        mail = _parse_fallback(data)
        mail.defects.append(f"mail-parser failed ({type(exc).__name__}: {exc}); stdlib fallback")
        return mail


def _headers(message: Any) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key.lower(), []).append(_text(value))
    return headers


def _fill_headers(mail: ParsedMail, message: Any) -> None:
    mail.headers = _headers(message)
    senders = _addresses(message.get_all("from") or [])
    if not senders or not senders[0][1]:
        senders = _addresses(message.get_all("sender") or message.get_all("return-path") or [])
    if senders:
        mail.sender_name, mail.sender = senders[0][0], senders[0][1].lower()
    mail.to = _addresses(message.get_all("to") or [])
    mail.cc = _addresses(message.get_all("cc") or [])
    mail.reply_to = _addresses(message.get_all("reply-to") or [])
    mail.subject = " ".join(_text(message.get("subject")).split())
    ids = _ids(mail.header("message-id"))
    mail.message_id = ids[0] if ids else None
    mail.in_reply_to = _ids(mail.header("in-reply-to"))
    mail.references = _ids(" ".join(mail.headers.get("references", [])))
    try:
        date = email.utils.parsedate_to_datetime(mail.header("date"))
        mail.date = date
    except (TypeError, ValueError, IndexError):
        if mail.header("date"):
            mail.defects.append("unparseable Date header")


def _parse_with_mailparser(data: bytes) -> ParsedMail:
    import mailparser  # heavy: imported only when a mail is actually parsed

    parsed = mailparser.parse_from_bytes(data)
    message = parsed.message
    mail = ParsedMail()
    _fill_headers(mail, message)
    mail.text = "\n".join(t for t in parsed.text_plain if t).strip("\n")
    html = "\n".join(t for t in parsed.text_html if t)
    mail.html = html or None
    if not mail.text and html:
        mail.text = html_to_text(html)
    for item in parsed.attachments:
        mail.attachments.extend(_attachment(item, mail.defects))
    for defect in parsed.defects:
        mail.defects.append(str(defect))
    return mail


def _attachment(item: dict[str, Any], defects: list[str]) -> list[ParsedAttachment]:
    payload = item.get("payload") or ""
    if item.get("binary"):
        try:
            content = base64.b64decode(payload)
        except (ValueError, TypeError):
            defects.append(f"undecodable base64 in attachment {item.get('filename')!r}")
            content = payload.encode("ascii", "replace")
    else:
        content = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload
    content_type = (item.get("mail_content_type") or "application/octet-stream").lower()
    filename = " ".join(_text(item.get("filename")).split()) or "attachment"
    cid = (item.get("content-id") or "").strip() or None
    disposition = (item.get("content-disposition") or "").lower()
    att = ParsedAttachment(
        filename=filename,
        content_type=content_type,
        data=content,
        content_id=cid,
        inline=disposition.startswith("inline") or (bool(cid) and "attachment" not in disposition),
    )
    if content_type == "application/ms-tnef" or filename.lower() == "winmail.dat":
        unpacked = _unpack_tnef(content, defects)
        if unpacked:
            return unpacked
    return [att]


def _unpack_tnef(content: bytes, defects: list[str]) -> list[ParsedAttachment]:
    try:
        from tnefparse import TNEF

        tnef = TNEF(content)
    except Exception as exc:  # noqa: BLE001 - keep winmail.dat as it is
        defects.append(f"TNEF not unpacked: {type(exc).__name__}: {exc}")
        return []
    files = []
    for item in tnef.attachments:
        name = item.long_filename() or item.name or "attachment"
        if isinstance(name, bytes):
            name = _repair_bytes(name)
        files.append(
            ParsedAttachment(
                filename=name.strip("\x00").strip() or "attachment",
                content_type="application/octet-stream",
                data=bytes(item.data or b""),
            )
        )
    return files


def _parse_fallback(data: bytes) -> ParsedMail:
    """Stdlib compat32 parse for what mail-parser could not take."""
    import email as email_pkg

    message = email_pkg.message_from_bytes(data)
    mail = ParsedMail()
    try:
        _fill_headers(mail, message)
    except Exception as exc:  # noqa: BLE001
        mail.defects.append(f"headers unreadable: {type(exc).__name__}")
    texts, htmls = [], []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        ctype = part.get_content_type()
        if part.get_filename() or not ctype.startswith("text/"):
            mail.attachments.append(
                ParsedAttachment(
                    filename=_text(part.get_filename()) or "attachment",
                    content_type=ctype,
                    data=payload,
                )
            )
            continue
        text = _decode_chunk(payload, part.get_content_charset())
        (htmls if ctype == "text/html" else texts).append(text)
    mail.text = "\n".join(texts).strip("\n")
    mail.html = "\n".join(htmls) or None
    if not mail.text and mail.html:
        mail.text = html_to_text(mail.html)
    return mail
