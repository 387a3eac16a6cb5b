"""Address headers -> (display name, address) pairs, however sloppily they are written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from helpdesk.ingest.headertext import decode_header
from helpdesk.ingest.headertext import unfold
from helpdesk.ingest.transfer import raw_bytes

# A run of characters that mean nothing to the list syntax, or one character that may.
_LIST_TOKEN = re.compile(r'[^"\\()<>,;]+|.', re.DOTALL)


def _split_list(text: str) -> Iterator[str]:
    """Cut an address list at its commas, not at those inside quotes, <...> or (...).

    Read a run of ordinary characters at a time (a 10 MB To took seconds a character at
    a time), and lazily, so that a caller who wants the first addresses reads only those.
    """
    current: list[str] = []
    depth_paren = 0
    in_quote = in_angle = escaped = False
    for match in _LIST_TOKEN.finditer(text):
        char = match.group()
        if escaped:
            escaped = False
        elif len(char) > 1:
            pass  # ordinary characters: no state changes
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
            chunk = "".join(current).strip()
            if chunk:
                yield chunk
            current = []
            continue
        current.append(char)
    chunk = "".join(current).strip()
    if chunk:
        yield chunk


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_GROUP = re.compile(r'^[^"<>@,]*?:(?!:)\s*')
# Possessive: giving back the inside of <   ...   < to `\s*$` one blank at a time
# was quadratic.
_LAST_ANGLE = re.compile(r"<([^<>]*+)>?\s*$")
_ANGLE = re.compile(r"<([^<>]*)>")
# The blanks before and after each dot and @: each run once (one `\s*([.@])\s*` tried
# from every blank of a long run was quadratic).
_BLANKS_BEFORE_DOT = re.compile(r"(?<!\s)\s++(?=[.@])")
_BLANKS_AFTER_DOT = re.compile(r"(?<=[.@])\s+")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _mailbox(chunk: str) -> tuple[str, str]:
    """One `Name <addr>`, `addr (Name)` or `Name addr`, however sloppily written."""
    chunk = _GROUP.sub("", chunk, count=1) if "<" not in chunk.split(":", 1)[0] else chunk
    angle = _LAST_ANGLE.search(chunk) or _ANGLE.search(chunk)
    if angle:
        # Obsolete syntax allows spaces around the dots and the @ (RFC 5322 4.4).
        addr = _COMMENT.sub("", angle.group(1)).strip()
        addr = _BLANKS_AFTER_DOT.sub("", _BLANKS_BEFORE_DOT.sub("", addr))
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


def parse_addresses(
    values: list[Any], hints: tuple[str, ...], limit: int | None = None
) -> list[tuple[str, str]]:
    """Split address headers on their raw form, then decode the names (they may hold commas).

    A part with no address that comes right before `Name <addr>` is the first half of
    an unquoted `Last, First <addr>`, and is joined back to it. With `limit`, reading
    stops once that many entries are found.
    """
    found: list[tuple[str, str]] = []
    for value in values:
        if not value:
            continue
        text = unfold(raw_bytes(value).decode("ascii", "surrogateescape"))
        for chunk in _merged(_split_list(text)):
            name, addr = _mailbox(chunk)
            addr = decode_header(addr, hints).strip()
            name = " ".join(decode_header(name, hints).split()).strip("\"'").strip()
            if addr or name:
                found.append((name, addr))
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _merged(chunks: Iterator[str]) -> Iterator[str]:
    """Join each part without an address to the `Name <addr>` that follows it."""
    held: list[str] = []  # the pieces of the part being joined, in a list: no quadratic +=
    held_at = False  # whether a held piece has an @
    for chunk in chunks:
        if held and not held_at and "<" in chunk and not chunk.lstrip().startswith(("<", '"')):
            held.append(chunk)
            held_at = "@" in chunk
            continue
        if held:
            yield ", ".join(held)
        held, held_at = [chunk], "@" in chunk
    if held:
        yield ", ".join(held)
