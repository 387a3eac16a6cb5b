"""Address headers -> (display name, address) pairs, however sloppily they are written."""

from __future__ import annotations

import re
from typing import Any

from helpdesk.ingest.headertext import decode_header
from helpdesk.ingest.headertext import unfold
from helpdesk.ingest.transfer import raw_bytes


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


def parse_addresses(values: list[Any], hints: tuple[str, ...]) -> list[tuple[str, str]]:
    """Split address headers on their raw form, then decode the names (they may hold commas).

    A part with no address that comes right before `Name <addr>` is the first half of
    an unquoted `Last, First <addr>`, and is joined back to it.
    """
    found: list[tuple[str, str]] = []
    for value in values:
        if not value:
            continue
        text = unfold(raw_bytes(value).decode("ascii", "surrogateescape"))
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
