"""Unpack TNEF (winmail.dat) into its files and body; tnefparse is imported only when needed."""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass

from helpdesk.ingest.charset import decode_bytes
from helpdesk.ingest.parsed import ParsedAttachment


@dataclass
class Tnef:
    """What a winmail.dat held."""

    files: list[ParsedAttachment]
    text: str = ""
    html: str = ""


def unpack_tnef(content: bytes, defects: list[str]) -> Tnef | None:
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
    return Tnef(files, text.replace("\r\n", "\n"), html)
