"""Bound how deep the stdlib feed parser nests a MIME tree, before it reads the mail.

The feed parser checks every line against the boundary of each multipart that
encloses it, and recurses once per level: a mail nested 3,000 levels deep took it
seconds per 100 kB, and 300 levels ran out of recursion. Real mail nests less than 10
levels (Postfix refuses more than 100). Here the structure is read as the feed parser
reads it (header block, Content-Type, boundary lines, message/* bodies), and each part
that would open a level past MAX_DEPTH is replaced, in a copy of the same length, by a
placeholder leaf of type CUT_TYPE; its bytes are kept as they came (the reader attaches
them as a message of their own). Offsets do not move, so the raw bytes of an attached
message that holds such a part are still found in the original.
"""

from __future__ import annotations

import re

from helpdesk.ingest.mime import new_message
from helpdesk.ingest.repair import HEADER_END
from helpdesk.ingest.repair import LINE_END

__all__ = ["CUT_TYPE", "MAX_DEPTH", "bound_nesting"]

MAX_DEPTH = 32
CUT_TYPE = "application/x-helpdesk-nested"

# A declaration that may open a level; with few of them the mail cannot nest deeply
# (each level but those a digest implies declares one) and nothing is read here.
_CONTAINER = re.compile(rb"(?i)content-type[ \t]*:\s*(?:multipart|message)/")
# The header lines of an entity, as the feed parser takes them (its headerRE).
_HEADER_LINES = re.compile(
    rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*+:|[\t ])[^\r\n]*+(?:\r\n|\r|\n|\Z))*+"
)
_CONTENT_TYPE = re.compile(rb"(?i)(?:^|(?<=[\r\n]))content-type:[ \t]*")
_VALUE = re.compile(rb"[^\r\n]*+(?:(?:\r\n|\r|\n)[\t ][^\r\n]*+)*+")


def bound_nesting(data: bytes, defects: list[str]) -> tuple[bytes, list[bytes]]:
    """Return the mail with every part past MAX_DEPTH levels cut out, and those parts.

    Each cut part becomes `Content-Type: CUT_TYPE; n=<its index>` and blanks; a defect
    says how many were cut.
    """
    if 2 * len(_CONTAINER.findall(data)) + 1 < MAX_DEPTH:
        return data, []
    cuts: list[tuple[int, int]] = []
    # (start, end, depth, default type) of each entity still to read
    stack: list[tuple[int, int, int, str]] = [(0, len(data), 0, "text/plain")]
    while stack:
        start, end, depth, default = stack.pop()
        body, ctype, value = _entity(data, start, end, default)
        children: list[tuple[int, int]] = []
        child_default = "text/plain"
        if ctype == "message/delivery-status":
            children = _blocks(data, body, end)
        elif ctype.startswith("message/"):
            children = [(body, end)]
        elif ctype.startswith("multipart/"):
            boundary = _boundary(value)
            if boundary is not None:
                children = _parts(data, body, end, boundary)
                child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        if not children:
            continue
        if depth >= MAX_DEPTH and end - start >= len(_placeholder_head(len(cuts))):
            cuts.append((start, end))
            continue
        stack.extend((s, e, depth + 1, child_default) for s, e in reversed(children))
    if not cuts:
        return data, []
    cuts.sort()
    pieces, kept, pos = [], [], 0
    for n, (start, end) in enumerate(cuts):
        pieces += [data[pos:start], _placeholder(n, end - start)]
        kept.append(data[start:end])
        pos = end
    pieces.append(data[pos:])
    defects.append(
        f"MIME parts nested over {MAX_DEPTH} levels deep: {len(cuts)} kept whole,"
        " unread, as nested-part.eml"
    )
    return b"".join(pieces), kept


def _placeholder_head(n: int) -> bytes:
    return b"Content-Type: %s; n=%d\n\n" % (CUT_TYPE.encode(), n)


def _placeholder(n: int, length: int) -> bytes:
    """A leaf of `length` bytes: the header, then blanks on one line (cheap to parse)."""
    head = _placeholder_head(n)
    return head + b" " * (length - len(head))


def _entity(data: bytes, start: int, end: int, default: str) -> tuple[int, str, str]:
    """Where an entity's body starts, its content type and its Content-Type value."""
    headers = _HEADER_LINES.match(data, start, end)
    assert headers is not None  # the pattern matches the empty string
    header_end = headers.end()
    blank = LINE_END.match(data, header_end, end)
    body = blank.end() if blank else header_end
    found = _CONTENT_TYPE.search(data, start, header_end)
    if found is None:
        return body, default, ""
    value_match = _VALUE.match(data, found.end(), header_end)
    assert value_match is not None  # the pattern matches the empty string
    value = value_match.group()
    text = value.decode("ascii", "surrogateescape").rstrip("\r\n")
    ctype = text.partition(";")[0].strip().lower()
    return body, (ctype if ctype.count("/") == 1 else "text/plain"), text


def _boundary(value: str) -> bytes | None:
    """The boundary the feed parser would take from this Content-Type value."""
    message = new_message()
    message["Content-Type"] = value
    try:
        boundary = message.get_boundary()
    except Exception:  # noqa: BLE001 - the feed parser would fail on it too: no level
        return None
    if boundary is None:
        return None
    return boundary.encode("ascii", "surrogateescape") if boundary.isascii() else None


def _parts(data: bytes, body: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The parts of a multipart body, cut at its boundary lines as the feed parser cuts it
    (the line break before a boundary line belongs to it)."""
    sep = b"--" + boundary
    parts: list[tuple[int, int]] = []
    start: int | None = None
    pos = body
    while (found := data.find(sep, pos, end)) >= 0:
        pos = found + 1
        if found > body and data[found - 1] not in b"\r\n":
            continue
        after = found + len(sep)
        close = data.startswith(b"--", after, end)
        eol = LINE_END.search(data, after, end)
        line_end, next_line = (eol.start(), eol.end()) if eol else (end, end)
        if data[after + 2 * close : line_end].strip(b" \t"):
            continue
        if start is not None:
            cut = found - (2 if data[found - 2 : found] == b"\r\n" else 1)
            parts.append((start, max(cut, start)))
        if close:
            return parts
        start = pos = next_line
    if start is not None:
        parts.append((start, end))
    return parts


def _blocks(data: bytes, body: int, end: int) -> list[tuple[int, int]]:
    """The header blocks of a message/delivery-status body, between its blank lines."""
    blocks = []
    start = body
    for blank in HEADER_END.finditer(data, body, end):
        line_end = LINE_END.match(data, blank.start())
        blocks.append((start, line_end.end() if line_end else blank.start()))
        start = blank.end()
    if start < end:
        blocks.append((start, end))
    return blocks
