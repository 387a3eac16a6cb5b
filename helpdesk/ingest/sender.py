"""Who wrote a mail, decided one way: the single address of the single From header.

The lenient reading of headers.py (`ParsedMail.sender`) takes an address from anywhere
it can find one, which is right for sorting machine mail and naming a new ticket's
requester, and wrong for deciding who may write into an existing ticket: `From: <>`
with `Sender: victim@...`, an RFC 2047 word standing for the address, spaces around
the `@` or two From headers all let a forger pick whose address the lenient reading
lands on, while the MX judged DMARC on another. Here the From header is read strictly,
from its raw bytes: exactly one header, one mailbox, an addr-spec with no encoded
word and no whitespace. Anything else has no author, and says why.
"""

from __future__ import annotations

import re
from email.message import Message

from helpdesk.ingest.addresses import parse_addresses
from helpdesk.ingest.headertext import unfold
from helpdesk.ingest.transfer import raw_bytes

__all__ = ["strict_from"]

# RFC 5322 atext, plus any UTF-8 character (RFC 6532); no whitespace, no specials.
# Written as a negated class: the range up to U+10FFFF costs 7 ms to compile, on
# every delivery's import path.
_ATOM = r'[^\x00-\x20\x7f()<>\[\]:;@\\,."]+'
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'"(?:[^"\\\s]|\\[^\s])*"'
_DOMAIN = rf"(?:{_DOT_ATOM}|\[[A-Za-z0-9.:\-]+\])"
_ADDR_SPEC = re.compile(rf"(?:{_DOT_ATOM}|{_QUOTED})@{_DOMAIN}")
# One `Name <addr>`: the last angle brackets hold the address, only comments may follow.
_ANGLE = re.compile(r"<([^<>]*)>((?:\s|\((?:[^()\\]|\\.)*\))*)\Z")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
# A quoted string, for cutting the list at commas outside quotes only.
_QUOTED_OR_COMMA = re.compile(r'"(?:[^"\\]|\\.)*"|\((?:[^()\\]|\\.)*\)|,')
_MAX_FROM = 2000  # a From header longer than this is no one's address


def strict_from(message: Message, hints: tuple[str, ...] = ()) -> tuple[str, str, str | None]:
    """(display name, address, None), or ("", "", why there is no single author)."""
    values = message.get_all("from") or []
    if not values:
        return "", "", "no From header"
    if len(values) > 1:
        return "", "", f"{len(values)} From headers"
    text = " ".join(unfold(raw_bytes(values[0]).decode("ascii", "surrogateescape")).split())
    if not text:
        return "", "", "an empty From header"
    if len(text) > _MAX_FROM:
        return "", "", "a From header too long to name one address"
    if _has_list_comma(text):
        return "", "", "several addresses in From"
    angle = _ANGLE.search(text)
    if angle is not None:
        spec = angle.group(1).strip()
    elif "<" in text or ">" in text:
        return "", "", f"no usable address in From ({_shown(text)})"
    else:
        spec = _COMMENT.sub("", text).strip()
    address = _address(spec)
    if address is None:
        return "", "", f"no usable address in From ({_shown(text)})"
    names = parse_addresses([values[0]], hints)
    name = names[0][0] if len(names) == 1 else ""
    return ("" if name.lower() == address else name), address, None


def _has_list_comma(text: str) -> bool:
    """Tell whether a comma outside quotes and comments separates two mailboxes.

    `Martin, Alice <alice@...>` (an unquoted comma in a display name) is common and
    names one mailbox: the comma counts only when an address stands on its left.
    """
    start = 0
    for match in _QUOTED_OR_COMMA.finditer(text):
        if match.group() != ",":
            continue
        if "@" in _COMMENT.sub("", text[start : match.start()]):
            return True
        start = match.end()
    return False


def _address(spec: str) -> str | None:
    """The addr-spec, lower-cased, when it is one by the strict rules; else None."""
    if "=?" in spec or not _ADDR_SPEC.fullmatch(spec):
        return None
    try:
        address = raw_bytes(spec).decode("utf-8")
    except UnicodeDecodeError:
        return None  # raw 8-bit that is not UTF-8: no address anyone could answer
    if len(address) > 254:
        return None
    return address.lower()


def _shown(text: str) -> str:
    """A header value as a reason may quote it: bounded, printable."""
    flat = raw_bytes(text).decode("utf-8", "replace")
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat if len(flat) <= 80 else flat[:77] + "..."
