"""Per-ticket signed reply addresses: `alias+<ticket>-<hmac>@domain`.

The signature lets a reply reach its ticket whatever its subject and headers
became, and proves the writer received one of our mails for that ticket: a
forged From cannot guess it. The MTA hands the part after the delimiter to the
pipe (Postfix: $EXTENSION; Exim: $LOCAL_PART_SUFFIX, delimiter included).
"""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["sign", "reply_address", "ticket_of_extension", "ticket_of_address"]

# 64 bits: enough that nobody guesses one by mail, short enough to stay readable.
_MAC_CHARS = 16
_EXTENSION = re.compile(r"\+?(\d{1,12})-([0-9a-f]{" + str(_MAC_CHARS) + "})")


def sign(secret: str, queue: str, ticket_id: int) -> str:
    """The HMAC of a ticket of a queue, as lower-case hex (MTAs may lower-case local parts)."""
    message = f"reply:{queue}:{ticket_id}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:_MAC_CHARS]


def reply_address(secret: str, queue: str, ticket_id: int, address: str) -> str:
    """Put the signed extension into a queue's address: dsi+12-<mac>@univ.example."""
    local, _, domain = address.rpartition("@")
    local = local.split("+", 1)[0]
    return f"{local}+{ticket_id}-{sign(secret, queue, ticket_id)}@{domain}"


def ticket_of_extension(secret: str, queue: str, extension: str) -> int | None:
    """The ticket a recipient extension names, if its signature is valid."""
    match = _EXTENSION.fullmatch(extension.strip().lower())
    if match is None:
        return None
    ticket_id = int(match.group(1))
    if not hmac.compare_digest(match.group(2), sign(secret, queue, ticket_id)):
        return None
    return ticket_id


def ticket_of_address(secret: str, queue: str, address: str) -> int | None:
    """The ticket a full address (local+ext@domain) names, if signed by us."""
    local = address.strip().lower().rpartition("@")[0]
    _, plus, extension = local.partition("+")
    return ticket_of_extension(secret, queue, extension) if plus else None
