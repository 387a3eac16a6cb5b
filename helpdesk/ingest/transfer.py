"""Get a part's bytes back from the parser and undo their transfer encoding (b64, qp, uu)."""

from __future__ import annotations

import binascii
import quopri
import re
from email.message import Message
from typing import Any

_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")


def raw_bytes(value: Any) -> bytes:
    """The bytes of a header or payload string as the stdlib parser kept them."""
    if isinstance(value, bytes):
        return value
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def decode_b64(raw: bytes) -> bytes:
    """Decode base64 that strict decoding refused: junk dropped, padding repaired."""
    data = _BASE64_JUNK.sub(b"", raw)
    first_pad = data.find(b"=")
    if first_pad >= 0:
        data = data[:first_pad]
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def to_lf(data: bytes) -> bytes:
    """Turn CRLF and lone CR line ends into LF."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def transfer_encoding(part: Message) -> str:
    """Read Content-Transfer-Encoding leniently; anything unknown is 8bit."""
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


def payload_bytes(part: Message, defects: list[str]) -> bytes:
    """Decode a leaf part's transfer encoding; text encodings come back with LF line ends."""
    # The undecoded text, bytes kept as surrogates; private, so not in the stubs.
    payload = part._payload  # type: ignore[attr-defined]  # noqa: SLF001
    raw = raw_bytes(payload if isinstance(payload, str) else "")
    cte = transfer_encoding(part)
    if cte == "uuencode":
        return _uudecode(raw, defects)
    return decode_transfer(raw, cte, defects)


def decode_transfer(raw: bytes, cte: str, defects: list[str]) -> bytes:
    """Undo base64 or quoted-printable; binary stays as is, text gets LF line ends."""
    if cte == "base64":
        return decode_b64_body(raw, defects)
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    if cte == "binary":
        return raw
    return to_lf(raw)


def decode_b64_body(raw: bytes, defects: list[str]) -> bytes:
    """Decode a base64 body, repairing it (and saying so in `defects`) when it is broken."""
    try:
        return binascii.a2b_base64(raw)  # skips line breaks and other non-base64 bytes
    except binascii.Error:
        defects.append("repaired base64 padding")
        return decode_b64(raw)


def _uudecode(raw: bytes, defects: list[str]) -> bytes:
    """Decode uuencode, with or without its `begin` line (some encoders leave it out)."""
    lines = to_lf(raw).split(b"\n")
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
