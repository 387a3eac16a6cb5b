"""Decode one raw header value to text: RFC 2047 words in any charset, raw 8-bit, folding."""

from __future__ import annotations

import quopri
import re
from typing import Any

from helpdesk.ingest.charset import clean_text
from helpdesk.ingest.charset import decode_bytes
from helpdesk.ingest.transfer import decode_b64
from helpdesk.ingest.transfer import raw_bytes

# RFC 2047 encoded word; lenient: spaces inside the text (seen in the wild) are allowed.
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?(.*?)\?=")
_WSP_ONLY = re.compile(r"[ \t\r\n]*")


def unfold(value: str) -> str:
    """Join a folded header value back into one line."""
    return re.sub(r"\r\n|\r|\n", "", value)


def decode_header(value: Any, hints: tuple[str, ...] = ()) -> str:
    """Decode one raw header value: RFC 2047 words in any charset, raw 8-bit, folding."""
    if value is None:
        return ""
    text = unfold(raw_bytes(value).decode("ascii", "surrogateescape"))
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
    return clean_text("".join(out))


def _plain(text: str, hints: tuple[str, ...]) -> str:
    if text.isascii():
        return text
    return decode_bytes(raw_bytes(text), None, hints)


def _word_bytes(kind: str, text: str) -> bytes:
    raw = raw_bytes(text)
    if kind in "bB":
        return decode_b64(raw)
    return quopri.decodestring(raw.replace(b"_", b" "), header=False)
