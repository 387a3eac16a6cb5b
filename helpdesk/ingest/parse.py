"""Raw bytes -> ParsedMail: the stdlib `email` tree, read the way helpdesks read it.

The stdlib feed parser (compat32) builds the tree of parts. What a helpdesk needs
from that tree is read here, the way mail-to-ticket systems do it (Zammad's fixture
set is the reference, see tests/test_corpus.py):

- the body is the first text/plain part and the first text/html part that are not
  files and not inside an attached message (with the parts that follow them in the
  same multipart/mixed, as Apple Mail sends text, picture, text); a text version is
  derived from the HTML when there is no (or only an empty) text part;
- every other leaf part is an attachment: a named text part, a second HTML part, a
  delivery report, a signature; an attached message (message/rfc822) is kept whole,
  as the bytes it came with, as `<its subject>.eml`, and the files inside it are
  attached too; its text is never merged into the body;
- TNEF (winmail.dat) is unpacked into its files;
- headers are decoded from RFC 2047 in any charset, and raw 8-bit headers are
  decoded with the charsets the message declares elsewhere, then UTF-8, then
  Windows-1252;
- the body text is stored with LF line ends; so is every part in the 7bit and 8bit
  transfer encodings, which are line-oriented text by definition (RFC 2045 2.7-2.8).
  Quoted-printable is decoded as it comes (senders use it for binary files too, and
  their CRLF is data), base64, uuencode and binary bit for bit.

Malformed mail is data, not an exception: whatever the input, parse() returns a
ParsedMail and lists what it had to repair in `defects`.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import io
import logging
import mimetypes
import os
import quopri
import re
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from email._policybase import Compat32  # email.policy would load the header registry too
from email.feedparser import BytesFeedParser
from email.message import Message
from typing import Any

__all__ = ["ParsedAttachment", "ParsedMail", "decode_bytes", "parse", "strip_mbox"]


_MSGID = re.compile(r"<[^<>\s]+>")
_BARE_MSGID = re.compile(r"[^<>\s@]+@[^<>\s@]+")
# Body lines that an mbox writer quoted: ">From " -> "From " (mboxo, as Postfix does).
_QUOTED_FROM = re.compile(rb"(?m)(?:^|(?<=\r))>(>*From )")
_OBS_FROM_HEADER = re.compile(rb"From[ \t]*:")  # a From: header in obsolete syntax, not mbox
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_SPACED_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_KNOWN_HEADER = re.compile(
    rb"(?i)(?:received|from|to|cc|subject|date|message-id|mime-version|content-[a-z-]+"
    rb"|return-path|reply-to|sender|x-[a-z0-9-]+|delivered-to|references|in-reply-to"
    rb"|dkim-signature|authentication-results|list-[a-z-]+|thread-[a-z]+|importance"
    rb"|precedence|user-agent|organization|arc-[a-z-]+)[ \t]*:"
)
# RFC 2047 encoded word; lenient: spaces inside the text (seen in the wild) are allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?(.*?)\?=")
_WSP_ONLY = re.compile(r"[ \t\r\n]*")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Charset labels as mail clients really mean them (the WHATWG Encoding Standard maps
# the Latin-1 and ASCII labels to Windows-1252, the GB2312 family to GB18030, ...).
_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "utf7": "utf-7",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "default": "",
    "charset": "",
}
# When a declared CJK charset does not fit the bytes, its neighbours usually do.
_FAMILIES = {
    "gb18030": ("gb18030", "big5hkscs"),
    "big5hkscs": ("big5hkscs", "gb18030"),
    "iso2022_jp": ("cp932", "euc_jis_2004", "iso2022_jp_ext"),
    "cp932": ("cp932", "euc_jis_2004"),
    "euc_jp": ("euc_jis_2004", "cp932"),
    "cp949": ("cp949", "iso2022_kr"),
}
_MULTIBYTE = {"gb18030", "big5hkscs", "cp932", "euc_jp", "euc_jis_2004", "cp949", "iso2022_jp"}

# Zammad-style names for files that carry none.
_STEMS = {
    "message/delivery-status": "delivery-status.txt",
    "message/global-delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "message/feedback-report": "feedback-report.txt",
    "text/rfc822-headers": "headers.txt",
    "text/plain": "document.txt",
    "text/html": "document.html",
}
_EXTENSIONS = {
    "image/jpg": ".jpg",
    "image/jpeg": ".jpg",
    "image/pjpeg": ".jpg",
    "video/quicktime": ".mov",
}
_MESSAGE_TYPES = {"message/rfc822", "message/global", "message/news"}


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
    if not raw.startswith(b"From ") or _OBS_FROM_HEADER.match(raw):
        return raw
    end = _LINE_END.search(raw)
    if end is None:
        return b""
    return _QUOTED_FROM.sub(rb"\1", raw[end.end() :])


# -- charsets ---------------------------------------------------------------------------


def _codec(label: str | None) -> str | None:
    """Return the Python codec for a charset label, or None when it names none we know."""
    if not label:
        return None
    text = str(label).strip().strip("\"'").strip().lower()
    candidates = [text]
    token = re.match(r"[a-z0-9_.:-]+", text)
    if token and token.group(0) != text:
        candidates.append(token.group(0))  # "utf-8 content-transfer-encoding: ..." and such
    if candidates[-1].startswith("x-"):
        candidates.append(candidates[-1][2:])
    for cand in candidates:
        if cand in _ALIASES:
            return _ALIASES[cand] or None
        try:
            name = codecs.lookup(cand).name
        except (LookupError, ValueError):
            continue
        if name in ("latin-1", "iso8859-1", "ascii"):
            return "cp1252"
        return _ALIASES.get(name, name) or None
    return None


def _cp1252(data: bytes) -> str:
    """Windows-1252, with the five bytes it leaves undefined read as Latin-1."""
    return data.decode("cp1252", "_helpdesk_latin1")


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("_helpdesk_latin1", _latin1_fallback)


def _utf8_repaired(data: bytes) -> str:
    """UTF-8 where the bytes are UTF-8, Windows-1252 for the bytes that are not."""
    out = []
    pos = 0
    while pos < len(data):
        try:
            out.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            out.append(data[pos : pos + exc.start].decode("utf-8"))
            bad_end = pos + max(exc.end, exc.start + 1)
            out.append(_cp1252(data[pos + exc.start : bad_end]))
            pos = bad_end
    return "".join(out)


def _guess_undeclared(data: bytes) -> str | None:
    """Guess Cyrillic or CJK for undeclared 8-bit text; None leaves it to UTF-8/Windows-1252.

    Latin text has its accented letters inside ASCII words ("café", "Grüße"); Cyrillic
    and CJK text has whole words of 8-bit bytes. Single-byte Cyrillic (KOI8-R,
    Windows-1251) has its letters in 0xC0-0xFF, and the right reading of the two is
    the one whose letters are the frequent ones of Russian; EUC-encoded CJK comes in
    byte pairs of 0xA1-0xFE (and 8 bytes at least: a short text stays ambiguous).
    """
    runs = [m.group() for m in _HIGH_RUN.finditer(data)]
    total = sum(len(r) for r in runs)
    if total < 4:
        return None
    in_words = sum(1 for m in _HIGH_RUN.finditer(data) if _next_to_letter(data, m))
    letters = sum(1 for r in runs for b in r if b >= 0xC0)
    if in_words <= len(runs) // 10 and total / len(runs) >= 3 and letters >= 0.9 * total:
        scores = {cs: _russian_score(data.decode(cs)) for cs in ("koi8_r", "cp1251")}
        best = max(scores, key=scores.__getitem__)
        if scores[best] >= 40:
            return best
    if total >= 8 and all(len(r) % 2 == 0 and min(r) >= 0xA1 for r in runs):
        return _guess_euc(data)
    return None


def _next_to_letter(data: bytes, match: re.Match[bytes]) -> bool:
    before = data[match.start() - 1 : match.start()]
    after = data[match.end() : match.end() + 1]
    return before.isalpha() or after.isalpha()


# Russian letters, most frequent first, and what each weighs (about its frequency in
# per mille: Russian text averages 55-60, a wrong reading about 30 or less).
_RUSSIAN = "оеаинтсрвлкмдпуяыьгзбчйхжшюцщэфъё"
_RUSSIAN_WEIGHT = {c: max(1, 110 - 4 * i) for i, c in enumerate(_RUSSIAN)}


def _russian_score(text: str) -> float:
    weights = [_RUSSIAN_WEIGHT.get(c.lower(), 0) for c in text if "\u0400" <= c <= "\u04ff"]
    return sum(weights) / len(weights) if len(weights) >= 3 else 0.0


def _guess_euc(data: bytes) -> str:
    """Pick EUC-JP, EUC-KR or GB for EUC-looking bytes (a heuristic, for undeclared text).

    Japanese has kana, which sit in rows 0xA4/0xA5; Korean writes short words between
    spaces, in the Hangul rows 0xB0-0xC8; Chinese runs long without spaces.
    """
    runs = re.findall(rb"[\xa1-\xfe]+", data)
    leads = [run[i] for run in runs for i in range(0, len(run) - 1, 2)]
    if not leads:
        return "gb18030"
    kana = sum(1 for b in leads if b in (0xA4, 0xA5)) / len(leads)
    hangul = sum(1 for b in leads if 0xB0 <= b <= 0xC8) / len(leads)
    mean_run = len(leads) / len(runs)
    if kana > 0.2:
        return "euc_jis_2004"
    if hangul > 0.8 and mean_run < 3.5:
        return "cp949"
    return "gb18030"


def decode_bytes(data: bytes, charset: str | None = None, hints: tuple[str, ...] = ()) -> str:
    """Decode text whose charset may be missing, wrong or unknown; never fail.

    Order: the declared charset; when it does not fit (or there is none), UTF-8, the
    charsets the message declares elsewhere (`hints`) and their relatives; EUC-looking
    CJK bytes; and last UTF-8 with the stray bytes read as Windows-1252. The result
    holds no NUL and no lone surrogate (a database would refuse both).
    """
    return _clean(_decode(data, charset, hints))


def _clean(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _decode(data: bytes, charset: str | None, hints: tuple[str, ...]) -> str:
    codec = _codec(charset)
    if codec:
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if codec in ("cp1252", "cp1254", "cp874") and not data.isascii():
                # A single-byte label on valid multi-byte UTF-8 is a mislabel, not Latin.
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return text
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    tried = set()
    single_byte = None
    for label in (charset, *hints):
        base = _codec(label)
        if base and base not in _MULTIBYTE and base not in _FAMILIES and base != "cp1252":
            single_byte = single_byte or base  # Cyrillic, Central European...: after CJK
        for cand in _FAMILIES.get(base or "", (base,) if base in _MULTIBYTE else ()):
            if cand in tried:
                continue
            tried.add(cand)
            try:
                return data.decode(cand)
            except (UnicodeDecodeError, LookupError):
                continue
    if single_byte:
        try:
            return data.decode(single_byte)
        except (UnicodeDecodeError, LookupError):
            pass
    guess = _guess_undeclared(data)
    if guess:
        try:
            return data.decode(guess)
        except UnicodeDecodeError:
            pass
    if codec in _MULTIBYTE:
        return data.decode(codec, "replace")
    return _utf8_repaired(data)


# -- headers --------------------------------------------------------------------------


def _raw_bytes(value: Any) -> bytes:
    """The bytes of a header or payload string as the stdlib parser kept them."""
    if isinstance(value, bytes):
        return value
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _unfold(value: str) -> str:
    return re.sub(r"\r\n|\r|\n", "", value)


def decode_header(value: Any, hints: tuple[str, ...] = ()) -> str:
    """Decode one raw header value: RFC 2047 words in any charset, raw 8-bit, folding."""
    if value is None:
        return ""
    text = _unfold(_raw_bytes(value).decode("ascii", "surrogateescape"))
    out: list[str] = []
    pos = 0
    pending: tuple[str, bytes] | None = None  # adjacent words of one charset join first

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            out.append(decode_bytes(pending[1], pending[0], hints))
            pending = None

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        if between and not (pending is not None and _WSP_ONLY.fullmatch(between)):
            flush()
            out.append(_plain(between, hints))
        label = match.group(1).split("*", 1)[0]
        data = _word_bytes(match.group(2), match.group(3))
        if pending is not None and pending[0].lower() == label.lower():
            pending = (label, pending[1] + data)
        else:
            flush()
            pending = (label, data)
        pos = match.end()
    flush()
    out.append(_plain(text[pos:], hints))
    return _clean("".join(out))


def _plain(text: str, hints: tuple[str, ...]) -> str:
    if text.isascii():
        return text
    return decode_bytes(_raw_bytes(text), None, hints)


def _word_bytes(kind: str, text: str) -> bytes:
    raw = _raw_bytes(text)
    if kind in "bB":
        return _b64(raw)
    return quopri.decodestring(raw.replace(b"_", b" "), header=False)


def _b64(raw: bytes) -> bytes:
    data = _BASE64_JUNK.sub(b"", raw)
    first_pad = data.find(b"=")
    if first_pad >= 0:
        data = data[:first_pad]
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def _split_list(text: str) -> list[str]:
    """Cut an address list at its commas, not at those inside quotes, <...> or (...)."""
    chunks, current = [], []
    depth_paren = 0
    in_quote = in_angle = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and (in_quote or depth_paren):
            escaped = True
        elif in_quote:
            in_quote = char != '"'
        elif char == '"' and not depth_paren:
            in_quote = True
        elif char == "(":
            depth_paren += 1
        elif char == ")" and depth_paren:
            depth_paren -= 1
        elif depth_paren:
            pass
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char in ",;" and not in_angle:
            chunks.append("".join(current))
            current = []
            continue
        current.append(char)
    chunks.append("".join(current))
    return [c for c in (c.strip() for c in chunks) if c]


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_GROUP = re.compile(r'^[^"<>@,]*?:(?!:)\s*')


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _mailbox(chunk: str) -> tuple[str, str]:
    """One `Name <addr>`, `addr (Name)` or `Name addr`, however sloppily written."""
    chunk = _GROUP.sub("", chunk, count=1) if "<" not in chunk.split(":", 1)[0] else chunk
    angle = re.search(r"<([^<>]*)>?\s*$", chunk) or re.search(r"<([^<>]*)>", chunk)
    if angle:
        # Obsolete syntax allows spaces around the dots and the @ (RFC 5322 4.4).
        addr = re.sub(r"\s*([.@])\s*", r"\1", _COMMENT.sub("", angle.group(1)).strip())
        name = chunk[: angle.start()].strip()
        if not (name.startswith('"') and name.endswith('"')):
            name = _COMMENT.sub("", name)
        name = _unquote(name) or _comment_text(chunk[angle.end() :])
        if " " in addr and '"' not in addr:  # <first last@host>: the address is the last word
            words = addr.split()
            name, addr = name or " ".join(words[:-1]), words[-1]
        return name, addr
    comments = _COMMENT.findall(chunk)
    rest = _COMMENT.sub(" ", chunk).strip().strip("<>").strip()
    name = " ".join(c[1:-1].strip() for c in comments)
    if "@" not in rest.replace(_quoted_part(rest), ""):
        inside = _unquote(rest)
        if "@" in inside and " " not in inside:
            return name, inside  # "user@host" in quotes only
        if "@" in name and " " not in name.strip() and "@" not in rest:
            return _unquote(rest), name.strip()  # `Name (user@host)`
        return name, rest
    words = re.findall(r'"(?:[^"\\]|\\.)*"\S*|\S+', rest)
    at = [i for i, w in enumerate(words) if "@" in w]
    if len(words) > 1 and at:
        last = at[-1]
        others = " ".join(_unquote(w) for i, w in enumerate(words) if i != last)
        return (name or others), words[last].strip("<>")
    return name, rest


def _quoted_part(text: str) -> str:
    found = re.match(r'\s*"(?:[^"\\]|\\.)*"', text)
    return found.group(0) if found else ""


def _comment_text(text: str) -> str:
    found = _COMMENT.search(text)
    return found.group(0)[1:-1].strip() if found else ""


def _addresses(values: list[Any], hints: tuple[str, ...]) -> list[tuple[str, str]]:
    """Split address headers on their raw form, then decode the names (they may hold commas).

    A part with no address that comes right before `Name <addr>` is the first half of
    an unquoted `Last, First <addr>`, and is joined back to it.
    """
    found: list[tuple[str, str]] = []
    for value in values:
        if not value:
            continue
        text = _unfold(_raw_bytes(value).decode("ascii", "surrogateescape"))
        chunks = _split_list(text)
        merged: list[str] = []
        for chunk in chunks:
            if (
                merged
                and "@" not in merged[-1]
                and "<" in chunk
                and not chunk.lstrip().startswith(("<", '"'))
            ):
                merged[-1] = f"{merged[-1]}, {chunk}"
            else:
                merged.append(chunk)
        for chunk in merged:
            name, addr = _mailbox(chunk)
            addr = decode_header(addr, hints).strip()
            name = " ".join(decode_header(name, hints).split()).strip("\"'").strip()
            if addr or name:
                found.append((name, addr))
    return found


def _recipients(values: list[Any], hints: tuple[str, ...]) -> list[tuple[str, str]]:
    """To/Cc/Reply-To: only the entries that are addresses (`To: Recipients` is not one)."""
    return [(name, addr) for name, addr in _addresses(values, hints) if "@" in addr]


def _pick_sender(message: Message, hints: tuple[str, ...]) -> tuple[str, str]:
    """First mailbox with an address, from From, then Sender, Reply-To, Return-Path.

    An "address" over RFC 5321's 254 characters is no address (and no database column).
    """
    for header in ("from", "sender", "reply-to", "return-path"):
        found = [
            (name, addr)
            for name, addr in _addresses(message.get_all(header) or [], hints)
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


def _fill_headers(mail: ParsedMail, message: Message, hints: tuple[str, ...]) -> None:
    headers: dict[str, list[str]] = {}
    for key, value in message.raw_items():
        headers.setdefault(str(key).lower(), []).append(decode_header(value, hints).strip())
    mail.headers = headers
    name, addr = _pick_sender(message, hints)
    mail.sender_name, mail.sender = name, addr.lower()
    mail.to = _recipients(message.get_all("to") or [], hints)
    mail.cc = _recipients(message.get_all("cc") or [], hints)
    mail.reply_to = _recipients(message.get_all("reply-to") or [], hints)
    mail.subject = " ".join(mail.header("subject").split())
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


# -- the header block -------------------------------------------------------------------


def _repair_header_block(data: bytes, defects: list[str]) -> bytes:
    """Drop junk before the headers and refold header lines that lost their indent.

    Both are taken only when real header lines follow, so a message without a
    header/body separator keeps its body.
    """
    end = _HEADER_END.search(data)
    block_end = end.start() if end else len(data)
    if block_end == 0:
        return data
    block = data[:block_end]
    lines = _LINE_END.split(block)
    ends = _LINE_END.findall(block) + [b""]
    known_after = [False] * (len(lines) + 1)
    for i in range(len(lines) - 1, -1, -1):
        known_after[i] = known_after[i + 1] or bool(_KNOWN_HEADER.match(lines[i]))
    skip = 0
    while (
        skip < min(3, len(lines) - 2)
        and not _HEADER_LINE.match(lines[skip])
        and not lines[skip][:1].isspace()
    ):
        skip += 1
    if skip and not (_KNOWN_HEADER.match(lines[skip]) and known_after[skip + 1]):
        skip = 0
    if skip:
        defects.append(f"dropped {skip} junk line(s) before the headers")
    out = []
    refolded = renamed = 0
    for i in range(skip, len(lines)):
        line = lines[i]
        if (
            i > skip
            and line
            and not line[:1].isspace()
            and not _HEADER_LINE.match(line)
            and known_after[i + 1]
        ):
            line = b" " + line
            refolded += 1
        elif _SPACED_NAME.match(line):
            line = _SPACED_NAME.sub(rb"\1:", line, count=1)  # obsolete `Subject  :`
            renamed += 1
        out.append(line + ends[i])
    if not (skip or refolded or renamed):
        return data
    if refolded:
        defects.append(f"refolded {refolded} header line(s) that lost their indentation")
    if renamed:
        defects.append(f"removed the space before the colon of {renamed} header name(s)")
    return b"".join(out) + data[block_end:]


# -- the MIME tree ----------------------------------------------------------------------


class _RawHeaders(Compat32):
    """compat32, but header values come back as parsed (8-bit bytes as surrogates).

    Plain compat32 turns a header with raw 8-bit bytes into a Header object whose
    text has lost those bytes; we decode them ourselves, with the message's charsets.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_RAW_HEADERS = _RawHeaders()
_FEED_SLICE = 1 << 20


def _build_message(data: bytes, defects: list[str]) -> Message:
    """Build the stdlib tree (compat32), fed in slices.

    `email.message_from_bytes` decodes the whole message into one string and splits
    it at once: 250 MB of peak memory for a 25 MB mail. The feed parser, fed 1 MiB
    at a time, builds the same tree in about 70 MB.
    """
    parser = BytesFeedParser()
    view = memoryview(data)
    for start in range(0, len(data), _FEED_SLICE):
        parser.feed(bytes(view[start : start + _FEED_SLICE]))
    message = parser.close()
    for part in message.walk():
        part.policy = _RAW_HEADERS
    return message


def _split_header(entity: bytes) -> bytes:
    """Return the body of a raw entity (after its header block)."""
    empty_first = _LINE_END.match(entity)
    if empty_first:
        return entity[empty_first.end() :]
    end = _HEADER_END.search(entity)
    return entity[end.end() :] if end else b""


def _split_multipart(body: bytes, boundary: str) -> list[bytes] | None:
    """Cut a multipart body at its boundary lines, as the stdlib feed parser does.

    A boundary line starts with `--boundary`, then maybe `--`, then only blanks; the
    line break before it belongs to it. Text before the first one is the preamble.
    """
    try:
        sep = b"--" + boundary.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return None
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while (found := body.find(sep, pos)) >= 0:
        pos = found + 1
        if found and body[found - 1] not in b"\r\n":
            continue
        after = found + len(sep)
        close = body.startswith(b"--", after)
        eol = _LINE_END.search(body, after)
        line_end, next_line = (eol.start(), eol.end()) if eol else (len(body), len(body))
        if body[after + 2 * close : line_end].strip(b" \t"):
            continue
        if start is not None:
            cut = found - (2 if body[found - 2 : found] == b"\r\n" else 1)
            parts.append(body[start : max(cut, start)])
        if close:
            return parts
        start = pos = next_line
    if start is not None:
        parts.append(body[start:])
    return parts


def _index_raw(message: Message, entity: bytes, index: dict[int, bytes]) -> None:
    """Map each message/* part to the raw bytes of its body, following the parsed tree."""
    stack = [(message, entity)]
    while stack:
        part, raw = stack.pop()
        body = _split_header(raw)
        ctype = part.get_content_type()
        if ctype.startswith("message/"):
            index[id(part)] = body
            payload = part.get_payload()
            if isinstance(payload, list) and len(payload) == 1 and ctype in _MESSAGE_TYPES:
                stack.append((payload[0], body))
        elif part.is_multipart():
            boundary = part.get_boundary()
            payload = part.get_payload()
            pieces = _split_multipart(body, boundary) if boundary else None
            if pieces is not None and len(pieces) == len(payload):
                stack.extend(zip(payload, pieces, strict=True))


def _entity_bytes(part: Message) -> bytes:
    """Serialise a (sub)message when its raw bytes could not be found."""
    from email.generator import BytesGenerator
    from email.policy import compat32

    buf = io.BytesIO()
    try:
        BytesGenerator(buf, mangle_from_=False, policy=compat32.clone(max_line_length=0)).flatten(
            part
        )
    except Exception:  # noqa: BLE001 - a part we cannot write back is kept empty
        return b""
    return buf.getvalue()


def _to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _cte(part: Message) -> str:
    value = str(part.get("content-transfer-encoding", "") or "").strip().lower()
    token = re.split(r"[\s;,]+", value)[0] if value else ""
    if "base64" in token or token in ("base-64", "b64"):
        return "base64"
    if token.startswith("quoted") or token == "qp":
        return "quoted-printable"
    if token in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return "uuencode"
    if token == "binary":
        return "binary"
    return "8bit"


def _payload_bytes(part: Message, defects: list[str]) -> bytes:
    """Decode a leaf part's transfer encoding; text encodings come back with LF line ends."""
    payload = part._payload  # noqa: SLF001 - the undecoded text, bytes kept as surrogates
    raw = _raw_bytes(payload if isinstance(payload, str) else "")
    cte = _cte(part)
    if cte == "base64":
        return _b64_body(raw, defects)
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    if cte == "uuencode":
        return _uudecode(raw, defects)
    if cte == "binary":
        return raw
    return _to_lf(raw)


def _b64_body(raw: bytes, defects: list[str]) -> bytes:
    try:
        return binascii.a2b_base64(raw)  # skips line breaks and other non-base64 bytes
    except binascii.Error:
        defects.append("repaired base64 padding")
        return _b64(raw)


def _uudecode(raw: bytes, defects: list[str]) -> bytes:
    """Decode uuencode, with or without its `begin` line (some encoders leave it out)."""
    lines = _to_lf(raw).split(b"\n")
    begin = next((i for i, line in enumerate(lines) if line.startswith(b"begin ")), None)
    if begin is not None:
        lines = lines[begin + 1 :]
    out = bytearray()
    for line in lines:
        if line.strip() in (b"end", b"`") or not line.strip():
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Broken encoders add garbage at line ends: decode what the length byte says.
            try:
                nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                out += binascii.a2b_uu(line[:nbytes])
            except (binascii.Error, IndexError):
                defects.append("undecodable uuencode line skipped")
    return bytes(out)


def _charset_hints(message: Message) -> tuple[str, ...]:
    seen: list[str] = []
    for part in message.walk():
        label = part.get_param("charset")
        if isinstance(label, tuple):
            label = label[2]
        if label and isinstance(label, str) and label.lower() not in seen:
            seen.append(label.lower())
    return tuple(seen)


def _param(part: Message, name: str, header: str, hints: tuple[str, ...]) -> str:
    """A Content-Type/Disposition parameter: RFC 2231 (any charset), RFC 2047 or raw 8-bit."""
    try:
        value = part.get_param(name, header=header)
    except Exception:  # noqa: BLE001 - a parameter too broken to read is absent
        return ""
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as Latin-1)
        charset, _lang, text = value
        data = text.encode("latin-1", "surrogateescape") if isinstance(text, str) else b""
        return " ".join(decode_bytes(data, charset or None, hints).split())
    text = email.utils.unquote(str(value))
    return " ".join(decode_header(text, hints).split())


@dataclass
class _Walk:
    """What one pass over a MIME tree found."""

    text: list[Message] = field(default_factory=list)
    html: list[Message] = field(default_factory=list)
    files: list[Message] = field(default_factory=list)


def _is_file(part: Message, hints: tuple[str, ...]) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    return disposition == "attachment" or bool(
        _param(part, "filename", "content-disposition", hints)
        or _param(part, "name", "content-type", hints)
    )


def _walk(message: Message, hints: tuple[str, ...]) -> _Walk:
    """Choose the body parts and collect the files, without entering attached messages.

    The body is the first text/plain and the first text/html part. Apple Mail sends
    text, picture, text, ... as siblings in one multipart/mixed, and mail clients show
    them one after the other: the later text (or HTML) parts of the multipart/mixed
    that holds the first one are body too, in order.
    """
    found = _Walk()
    parents: dict[str, Message | None] = {}
    stack: list[tuple[Message, Message | None]] = [(message, None)]
    while stack:
        part, parent = stack.pop()
        ctype = part.get_content_type()
        if ctype.startswith("multipart/"):
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend((sub, part) for sub in reversed(payload))
                continue
            ctype = "text/plain"  # a multipart without its boundary: its text is all there is
        if ctype in ("text/plain", "text/html") and (part is message or not _is_file(part, hints)):
            parts = found.text if ctype == "text/plain" else found.html
            if not parts:
                parts.append(part)
                parents[ctype] = parent
                continue
            if (
                parent is not None
                and parent is parents[ctype]
                and parent.get_content_type() == "multipart/mixed"
            ):
                parts.append(part)
                continue
        found.files.append(part)
    return found


def _text_of(part: Message, hints: tuple[str, ...], defects: list[str]) -> str:
    data = _payload_bytes(part, defects)
    charset = part.get_param("charset")
    if isinstance(charset, tuple):
        charset = charset[2]
    if not charset and part.get_content_type() == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        charset = meta.group(1).decode("ascii") if meta else None
    text = decode_bytes(data, charset if isinstance(charset, str) else None, hints)
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Reader:
    """Turns the parts of one message into a body and ParsedAttachments."""

    def __init__(self, message: Message, data: bytes, hints: tuple[str, ...], defects: list[str]):
        self.hints = hints
        self.defects = defects
        self.message = message
        self.data = data
        self.raw: dict[int, bytes] | None = None  # built when a message/* part needs it
        self.names: set[str] = set()
        self.tnef_text = ""
        self.tnef_html = ""

    def body_bytes(self, part: Message) -> bytes:
        """The body of a message/* part, as raw as we can get it."""
        if self.raw is None:
            self.raw = {}
            try:
                _index_raw(self.message, self.data, self.raw)
            except Exception:  # noqa: BLE001 - without the index, messages are written back
                self.raw.clear()
        found = self.raw.get(id(part))
        if found is None:
            payload = part.get_payload()
            if isinstance(payload, list):
                found = b"".join(_entity_bytes(p) for p in payload if isinstance(p, Message))
            else:
                found = _raw_bytes(payload or "")
        cte = _cte(part)
        if cte == "base64":
            return _b64_body(found, self.defects)
        if cte == "quoted-printable":
            return quopri.decodestring(found)
        return found if cte == "binary" else _to_lf(found)

    def files(self, parts: list[Message], nested: bool = False) -> list[ParsedAttachment]:
        out: list[ParsedAttachment] = []
        for part in parts:
            ctype = part.get_content_type()
            if ctype.startswith("message/"):
                data = self.body_bytes(part)
                out.append(self._attachment(part, data, nested))
                inner = part.get_payload()
                if ctype in _MESSAGE_TYPES and isinstance(inner, list) and len(inner) == 1:
                    # The files of an attached message are attachments too (not its text).
                    walk = _walk(inner[0], self.hints)
                    out.extend(self.files(walk.files, nested=True))
                continue
            data = _payload_bytes(part, self.defects)
            attachment = self._attachment(part, data, nested)
            if ctype == "application/ms-tnef" or attachment.filename.lower() == "winmail.dat":
                tnef = _unpack_tnef(data, self.defects)
                if tnef is not None:
                    if not nested:
                        self.tnef_text = self.tnef_text or tnef.text
                        self.tnef_html = self.tnef_html or tnef.html
                    for item in tnef.files:
                        item.filename = self._unique(item.filename)
                    out.extend(tnef.files)
                    continue
            out.append(attachment)
        return out

    def _attachment(self, part: Message, data: bytes, nested: bool) -> ParsedAttachment:
        ctype = part.get_content_type()
        cid = _unfold(str(part.get("content-id", "") or "")).strip().strip("<>").strip() or None
        disposition = (part.get_content_disposition() or "").lower()
        return ParsedAttachment(
            filename=self._unique(self._filename(part, ctype, cid)),
            content_type=ctype,
            data=data,
            content_id=cid,
            inline=not nested
            and (disposition == "inline" or (bool(cid) and disposition != "attachment")),
        )

    def _filename(self, part: Message, ctype: str, cid: str | None) -> str:
        name = _param(part, "filename", "content-disposition", self.hints) or _param(
            part, "name", "content-type", self.hints
        )
        if not name:
            location = decode_header(part.get("content-location", ""), self.hints).strip()
            name = location.rsplit("/", 1)[-1].split("?", 1)[0] if location else ""
        if not name and ctype in _MESSAGE_TYPES:
            name = self._message_name(part)
        description = " ".join(
            decode_header(part.get("content-description", ""), self.hints).split()
        )
        if not name and cid and "@" in cid and "." in cid.split("@", 1)[0]:
            name = cid.split("@", 1)[0]  # Outlook: <image001.png@01D...>
        if not name and description and len(description) < 100:
            name = description + (
                os.path.splitext(_STEMS[ctype])[1] if ctype in _STEMS else _extension(ctype)
            )
        if not name:
            name = _STEMS.get(ctype) or (
                ctype.split("/")[0] if "/" in ctype else "file"
            ) + _extension(ctype)
        name = " ".join(name.replace("/", "_").replace("\\", "_").split()).strip(". ")
        if len(name) > 200:  # a file system takes 255 bytes: keep the extension
            stem, ext = os.path.splitext(name)
            name = stem[: 200 - len(ext[:20])].rstrip() + ext[:20]
        return name or "file"

    def _message_name(self, part: Message) -> str:
        inner = part.get_payload()
        subject = ""
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            subject = " ".join(decode_header(inner[0].get("subject", ""), self.hints).split())
        description = " ".join(
            decode_header(part.get("content-description", ""), self.hints).split()
        )
        return f"{subject or description or 'message'}.eml"

    def _unique(self, name: str) -> str:
        """Zammad's rule: a second `image.jpg` becomes `image1.jpg`."""
        if name not in self.names:
            self.names.add(name)
            return name
        stem, dot, ext = name.partition(".") if "." in name[1:] else (name, "", "")
        for i in range(1, 10000):
            candidate = f"{stem}{i}{dot}{ext}"
            if candidate not in self.names:
                self.names.add(candidate)
                return candidate
        return name


def _html_to_text(html: str | None) -> str:
    if not html:
        return ""
    from helpdesk.ingest.htmltext import html_to_text  # html.parser: only for HTML-only mail

    return html_to_text(html)


def _extension(ctype: str) -> str:
    return _EXTENSIONS.get(ctype) or mimetypes.guess_extension(ctype, strict=False) or ""


@dataclass
class _Tnef:
    """What a winmail.dat held."""

    files: list[ParsedAttachment]
    text: str = ""
    html: str = ""


def _unpack_tnef(content: bytes, defects: list[str]) -> _Tnef | None:
    """Unpack a TNEF blob into its files and message body; None when it cannot be read."""
    try:
        from tnefparse import TNEF

        logging.getLogger("tnefparse").addHandler(logging.NullHandler())
        tnef = TNEF(content)
        items = list(tnef.attachments)
        text, html = tnef.body or "", tnef.htmlbody or ""
    except Exception as exc:  # noqa: BLE001 - keep winmail.dat as it is
        defects.append(f"TNEF not unpacked: {type(exc).__name__}: {exc}")
        return None
    files = []
    for item in items:
        try:
            name = item.long_filename() or item.name or "attachment"
        except Exception:  # noqa: BLE001 - a name tnefparse cannot read
            name = item.name or "attachment"
        if isinstance(name, bytes):
            name = decode_bytes(name)
        name = " ".join(str(name).replace("\x00", "").split()) or "attachment"
        ctype = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        files.append(
            ParsedAttachment(filename=name, content_type=ctype, data=bytes(item.data or b""))
        )
    if isinstance(text, bytes):
        text = decode_bytes(text)
    if isinstance(html, bytes):
        html = decode_bytes(html)
    if not files and not text.strip() and not html.strip():
        return None
    return _Tnef(files, text.replace("\r\n", "\n"), html)


def _defects(message: Message) -> list[str]:
    found = []
    for part in message.walk():
        for defect in getattr(part, "defects", []):
            found.append(f"{part.get_content_type()}: {type(defect).__name__}")
    return found


# -- entry point ------------------------------------------------------------------------


def parse(raw: bytes) -> ParsedMail:
    """Parse one message (mbox From line allowed) into a ParsedMail; never raises on bad input."""
    defects: list[str] = []
    try:
        return _parse(raw, defects)
    except Exception as exc:  # noqa: BLE001 - a mail we cannot read is still a mail
        mail = _parse_minimal(raw)
        mail.defects = defects + mail.defects
        mail.defects.append(f"parser failed ({type(exc).__name__}: {exc}); headers and text only")
        return mail


def _parse(raw: bytes, defects: list[str]) -> ParsedMail:
    data = strip_mbox(raw)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        defects.append("dropped a byte order mark before the headers")
    data = _repair_header_block(data, defects)
    message = _build_message(data, defects)
    hints = _charset_hints(message)
    mail = ParsedMail()
    _fill_headers(mail, message, hints)
    walk = _walk(message, hints)
    texts = [_text_of(part, hints, defects).strip("\n") for part in walk.text]
    mail.text = "\n\n".join(t for t in texts if t.strip())
    htmls = [_text_of(part, hints, defects) for part in walk.html]
    mail.html = "\n".join(h for h in htmls if h.strip()) or None
    reader = _Reader(message, data, hints, defects)
    mail.attachments = reader.files(walk.files)
    if mail.html is None and reader.tnef_html.strip():
        mail.html = reader.tnef_html  # Outlook's winmail.dat carried the body
    if not mail.text.strip():
        # No text part, or an empty one beside the HTML: the text is derived from the HTML.
        mail.text = reader.tnef_text.strip("\n") or _html_to_text(mail.html)
    mail.defects = defects + mail.defects + _defects(message)
    return mail


def _parse_minimal(raw: bytes) -> ParsedMail:
    """Last resort: the headers, and the body as text (no MIME: it cannot recurse)."""
    from email.parser import BytesParser

    mail = ParsedMail()
    try:
        data = strip_mbox(raw)
        message = BytesParser(policy=_RAW_HEADERS).parsebytes(data, headersonly=True)
        _fill_headers(mail, message, ())
        body = _split_header(data)
        mail.text = decode_bytes(_to_lf(body)).strip("\n")
    except Exception as exc:  # noqa: BLE001
        mail.defects.append(f"headers unreadable: {type(exc).__name__}")
    return mail
