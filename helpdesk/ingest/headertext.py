"""Decode one raw header value to text: RFC 2047 words in any charset, raw 8-bit, folding."""

from __future__ import annotations

import quopri
import re
from collections.abc import Iterator
from typing import Any

from helpdesk.ingest.charset import clean_text
from helpdesk.ingest.charset import decode_bytes
from helpdesk.ingest.transfer import decode_b64
from helpdesk.ingest.transfer import raw_bytes

# The start of an RFC 2047 encoded word; its text runs to the first "?=" (lenient: spaces
# inside it, seen in the wild, are allowed).
_WORD_START = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?")
_WSP_ONLY = re.compile(r"[ \t\r\n]*")
# What makes a value more than its text: a word to decode, a line break, a NUL.
_NOT_PLAIN = re.compile(r"=\?|[\r\n\x00]")


def unfold(value: str) -> str:
    """Join a folded header value back into one line."""
    return re.sub(r"\r\n|\r|\n", "", value)


def decode_header(value: Any, hints: tuple[str, ...] = ()) -> str:
    """Decode one raw header value: RFC 2047 words in any charset, raw 8-bit, folding."""
    if value is None:
        return ""
    if isinstance(value, str) and value.isascii() and not _NOT_PLAIN.search(value):
        return value  # what the rest would return, for a fraction of its cost
    text = unfold(raw_bytes(value).decode("ascii", "surrogateescape"))
    out: list[str] = []
    pos = 0
    # Adjacent words of one charset join first (a character may be split between two);
    # their bytes are collected in a list, as joining them one by one is quadratic.
    pending_label: str | None = None
    pending: list[bytes] = []

    def flush() -> None:
        nonlocal pending_label
        if pending_label is not None:
            out.append(decode_bytes(b"".join(pending), pending_label, hints))
            pending_label = None
            pending.clear()

    for start, end, label, kind, encoded in _encoded_words(text):
        between = text[pos:start]
        if between and not (pending_label is not None and _WSP_ONLY.fullmatch(between)):
            flush()
            out.append(_plain(between, hints))
        label = label.split("*", 1)[0]
        data = _word_bytes(kind, encoded)
        if pending_label is None or pending_label.lower() != label.lower():
            flush()
            pending_label = label
        pending.append(data)
        pos = end
    flush()
    out.append(_plain(text[pos:], hints))
    return clean_text("".join(out))


def _encoded_words(text: str) -> Iterator[tuple[int, int, str, str, str]]:
    """(start, end, charset, B or Q, encoded text) of each encoded word, left to right.

    What `=\\?([^?\\s]+)\\?([bBqQ])\\?(.*?)\\?=` finds, without its cost: that lazy search
    scans to the end of the value from every unclosed `=?x?q?`, quadratic with many. A
    word's text runs to the first "?=" after its start; when there is none, no later
    word can close either.
    """
    pos = 0
    while (found := _WORD_START.search(text, pos)) is not None:
        close = text.find("?=", found.end())
        if close < 0:
            return
        yield found.start(), close + 2, found.group(1), found.group(2), text[found.end() : close]
        pos = close + 2


def _plain(text: str, hints: tuple[str, ...]) -> str:
    if text.isascii():
        return text
    return decode_bytes(raw_bytes(text), None, hints)


def _word_bytes(kind: str, text: str) -> bytes:
    raw = raw_bytes(text)
    if kind in "bB":
        return decode_b64(raw)
    return quopri.decodestring(raw.replace(b"_", b" "), header=False)
