"""Find the raw bytes of message/* parts in the message, to keep them as they came."""

from __future__ import annotations

import io
from email.message import Message
from typing import cast

from helpdesk.ingest.repair import HEADER_END
from helpdesk.ingest.repair import LINE_END

MESSAGE_TYPES = {"message/rfc822", "message/global", "message/news"}


def split_header(entity: bytes) -> bytes:
    """Return the body of a raw entity (after its header block)."""
    empty_first = LINE_END.match(entity)
    if empty_first:
        return entity[empty_first.end() :]
    end = HEADER_END.search(entity)
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
        eol = LINE_END.search(body, after)
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


def index_raw(message: Message, entity: bytes, index: dict[int, bytes]) -> None:
    """Map each message/* part to the raw bytes of its body, following the parsed tree."""
    stack = [(message, entity)]
    while stack:
        part, raw = stack.pop()
        body = split_header(raw)
        ctype = part.get_content_type()
        if ctype.startswith("message/"):
            index[id(part)] = body
            payload = part.get_payload()
            if isinstance(payload, list) and len(payload) == 1 and ctype in MESSAGE_TYPES:
                # A parsed part's payload list holds messages; the stubs allow str too.
                stack.append((cast(Message, payload[0]), body))
        elif part.is_multipart():
            boundary = part.get_boundary()
            payload = part.get_payload()
            pieces = _split_multipart(body, boundary) if boundary else None
            if pieces is not None and len(pieces) == len(payload):
                # A parsed part's payload list holds messages; the stubs allow str too.
                stack.extend(zip(cast(list[Message], payload), pieces, strict=True))


def entity_bytes(part: Message) -> bytes:
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
