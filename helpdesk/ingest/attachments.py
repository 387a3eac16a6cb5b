"""Turn the file parts of a message into ParsedAttachments: decoded, named, unique."""

from __future__ import annotations

import mimetypes
import os
from email.message import Message
from typing import cast

from helpdesk.ingest.headertext import decode_header
from helpdesk.ingest.headertext import unfold
from helpdesk.ingest.mime import part_param
from helpdesk.ingest.mime import walk_tree
from helpdesk.ingest.nesting import CUT_TYPE
from helpdesk.ingest.parsed import ParsedAttachment
from helpdesk.ingest.rawparts import MESSAGE_TYPES
from helpdesk.ingest.rawparts import entity_bytes
from helpdesk.ingest.rawparts import index_raw
from helpdesk.ingest.tnef import unpack_tnef
from helpdesk.ingest.transfer import decode_transfer
from helpdesk.ingest.transfer import payload_bytes
from helpdesk.ingest.transfer import raw_bytes
from helpdesk.ingest.transfer import transfer_encoding

# Zammad-style names for files that carry none.
_STEMS = {
    "message/delivery-status": "delivery-status.txt",
    "message/global-delivery-status": "delivery-status.txt",
    "message/disposition-notification": "disposition-notification.txt",
    "message/feedback-report": "feedback-report.txt",
    "text/rfc822-headers": "headers.txt",
    "text/plain": "document.txt",
    "text/html": "document.html",
}
_EXTENSIONS = {
    "image/jpg": ".jpg",
    "image/jpeg": ".jpg",
    "image/pjpeg": ".jpg",
    "video/quicktime": ".mov",
}


class AttachmentReader:
    """Turns the parts of one message into a body and ParsedAttachments."""

    def __init__(
        self,
        message: Message,
        data: bytes,
        hints: tuple[str, ...],
        defects: list[str],
        cut: list[bytes] | None = None,
    ):
        self.hints = hints
        self.defects = defects
        self.message = message
        self.data = data
        self.cut = cut or []  # the parts nesting.bound_nesting kept out of the tree
        self.copied = 0  # bytes of messages attached from inside attached messages
        self.copies_dropped = False
        self.raw: dict[int, bytes] | None = None  # built when a message/* part needs it
        self.names: set[str] = set()
        # The suffix each name's next twin tries first: suffixes below it are taken.
        self.next_suffix: dict[str, int] = {}
        self.tnef_text = ""
        self.tnef_html = ""

    def body_bytes(self, part: Message) -> bytes:
        """The body of a message/* part, as raw as we can get it."""
        if self.raw is None:
            self.raw = {}
            try:
                index_raw(self.message, self.data, self.raw)
            except Exception:  # noqa: BLE001 - without the index, messages are written back
                self.raw.clear()
        found = self.raw.get(id(part))
        if found is None:
            payload = part.get_payload()
            if isinstance(payload, list):
                found = b"".join(entity_bytes(p) for p in payload if isinstance(p, Message))
            else:
                found = raw_bytes(payload or "")
        return decode_transfer(found, transfer_encoding(part), self.defects)

    def files(self, parts: list[Message], nested: bool = False) -> list[ParsedAttachment]:
        """Decode and name the file parts; unpack TNEF, and add the files of attached messages."""
        out: list[ParsedAttachment] = []
        for part in parts:
            ctype = part.get_content_type()
            if ctype == CUT_TYPE:
                out.append(self._cut_part(part))
                continue
            if ctype.startswith("message/"):
                data = self.body_bytes(part)
                if self._room_for_copy(data, nested):
                    out.append(self._attachment(part, data, nested))
                inner = part.get_payload()
                if ctype in MESSAGE_TYPES and isinstance(inner, list) and len(inner) == 1:
                    # The files of an attached message are attachments too (not its text).
                    # A parsed part's payload list holds messages; the stubs allow str too.
                    walk = walk_tree(cast(Message, inner[0]), self.hints)
                    out.extend(self.files(walk.files, nested=True))
                continue
            data = payload_bytes(part, self.defects)
            attachment = self._attachment(part, data, nested)
            if ctype == "application/ms-tnef" or attachment.filename.lower() == "winmail.dat":
                tnef = unpack_tnef(data, self.defects)
                if tnef is not None:
                    if not nested:
                        self.tnef_text = self.tnef_text or tnef.text
                        self.tnef_html = self.tnef_html or tnef.html
                    for item in tnef.files:
                        item.filename = self._unique(item.filename)
                    out.extend(tnef.files)
                    continue
            out.append(attachment)
        return out

    def _room_for_copy(self, data: bytes, nested: bool) -> bool:
        """Whether a message attached inside an attached message is attached too.

        Its bytes are inside its parent's .eml already: one nested in the next, 30 deep,
        was 30 copies of the mail. Such copies stop at the size of the mail itself.
        """
        if not nested:
            return True
        self.copied += len(data)
        if self.copied <= len(self.data):
            return True
        if not self.copies_dropped:
            self.defects.append("messages nested in attached messages: not all attached again")
        self.copies_dropped = True
        return False

    def _cut_part(self, part: Message) -> ParsedAttachment:
        """A part nested too deep to be parsed, attached whole as the message it is."""
        try:
            data = self.cut[int(str(part.get_param("n")))]
        except (ValueError, IndexError):  # a mail that names our placeholder type itself
            data = payload_bytes(part, self.defects)
        return ParsedAttachment(self._unique("nested-part.eml"), "message/rfc822", data)

    def _attachment(self, part: Message, data: bytes, nested: bool) -> ParsedAttachment:
        ctype = part.get_content_type()
        cid = unfold(str(part.get("content-id", "") or "")).strip().strip("<>").strip() or None
        disposition = (part.get_content_disposition() or "").lower()
        return ParsedAttachment(
            filename=self._unique(self._filename(part, ctype, cid)),
            content_type=ctype,
            data=data,
            content_id=cid,
            inline=not nested
            and (disposition == "inline" or (bool(cid) and disposition != "attachment")),
        )

    def _filename(self, part: Message, ctype: str, cid: str | None) -> str:
        name = part_param(part, "filename", "content-disposition", self.hints) or part_param(
            part, "name", "content-type", self.hints
        )
        if not name:
            location = decode_header(part.get("content-location", ""), self.hints).strip()
            name = location.rsplit("/", 1)[-1].split("?", 1)[0] if location else ""
        if not name and ctype in MESSAGE_TYPES:
            name = self._message_name(part)
        description = self._description(part)
        if not name and cid and "@" in cid and "." in cid.split("@", 1)[0]:
            name = cid.split("@", 1)[0]  # Outlook: <image001.png@01D...>
        if not name and description and len(description) < 100:
            name = description + (
                os.path.splitext(_STEMS[ctype])[1] if ctype in _STEMS else _extension(ctype)
            )
        if not name:
            name = _STEMS.get(ctype) or (
                ctype.split("/")[0] if "/" in ctype else "file"
            ) + _extension(ctype)
        name = " ".join(name.replace("/", "_").replace("\\", "_").split()).strip(". ")
        if len(name) > 200:  # a file system takes 255 bytes: keep the extension
            stem, ext = os.path.splitext(name)
            name = stem[: 200 - len(ext[:20])].rstrip() + ext[:20]
        return name or "file"

    def _message_name(self, part: Message) -> str:
        inner = part.get_payload()
        subject = ""
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            subject = " ".join(decode_header(inner[0].get("subject", ""), self.hints).split())
        description = self._description(part)
        return f"{subject or description or 'message'}.eml"

    def _description(self, part: Message) -> str:
        return " ".join(decode_header(part.get("content-description", ""), self.hints).split())

    def _unique(self, name: str) -> str:
        """Zammad's rule: a second `image.jpg` becomes `image1.jpg`.

        Taken names are never freed, so the next twin of a name starts from the suffix
        after the last one it got: 30,000 parts of one name are not 30,000 searches
        from 1 (that took a minute).
        """
        if name not in self.names:
            self.names.add(name)
            return name
        stem, dot, ext = name.partition(".") if "." in name[1:] else (name, "", "")
        for i in range(self.next_suffix.get(name, 1), 10000):
            candidate = f"{stem}{i}{dot}{ext}"
            if candidate not in self.names:
                self.names.add(candidate)
                self.next_suffix[name] = i + 1
                return candidate
        self.next_suffix[name] = 10000
        return name


def _extension(ctype: str) -> str:
    return _EXTENSIONS.get(ctype) or mimetypes.guess_extension(ctype, strict=False) or ""
