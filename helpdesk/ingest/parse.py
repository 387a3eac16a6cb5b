"""Raw bytes -> ParsedMail: the stdlib `email` tree, read the way helpdesks read it.

The stdlib feed parser (compat32) builds the tree of parts. What a helpdesk needs
from that tree is read here, the way mail-to-ticket systems do it (Zammad's fixture
set is the reference, see tests/test_corpus.py):

- the body is the first text/plain part and the first text/html part that are not
  files and not inside an attached message (with the parts that follow them in the
  same multipart/mixed, as Apple Mail sends text, picture, text); a text version is
  derived from the HTML when there is no (or only an empty) text part;
- every other leaf part is an attachment: a named text part, a second HTML part, a
  delivery report, a signature; an attached message (message/rfc822) is kept whole,
  as the bytes it came with, as `<its subject>.eml`, and the files inside it are
  attached too; its text is never merged into the body;
- TNEF (winmail.dat) is unpacked into its files; a mail keeps its first 1000 files;
- parts nested deeper than nesting.MAX_DEPTH levels are not parsed: each is attached
  whole, as it came, as `nested-part.eml`;
- headers are decoded from RFC 2047 in any charset, and raw 8-bit headers are
  decoded with the charsets the message declares elsewhere, then UTF-8, then
  Windows-1252;
- the body text is stored with LF line ends; so is every part in the 7bit and 8bit
  transfer encodings, which are line-oriented text by definition (RFC 2045 2.7-2.8).
  Quoted-printable is decoded as it comes (senders use it for binary files too, and
  their CRLF is data), base64, uuencode and binary bit for bit.

Malformed mail is data, not an exception: whatever the input, parse() returns a
ParsedMail and lists what it had to repair in `defects`.
"""

from __future__ import annotations

from helpdesk.ingest.attachments import AttachmentReader
from helpdesk.ingest.charset import decode_bytes
from helpdesk.ingest.headers import fill_headers
from helpdesk.ingest.mime import RAW_HEADERS
from helpdesk.ingest.mime import build_message
from helpdesk.ingest.mime import charset_hints
from helpdesk.ingest.mime import text_of
from helpdesk.ingest.mime import tree_defects
from helpdesk.ingest.mime import walk_tree
from helpdesk.ingest.nesting import bound_nesting
from helpdesk.ingest.parsed import ParsedAttachment
from helpdesk.ingest.parsed import ParsedMail
from helpdesk.ingest.rawparts import split_header
from helpdesk.ingest.repair import HEADER_END
from helpdesk.ingest.repair import drop_bom
from helpdesk.ingest.repair import repair_header_block
from helpdesk.ingest.repair import strip_mbox
from helpdesk.ingest.transfer import to_lf

__all__ = [
    "ParsedAttachment",
    "ParsedMail",
    "decode_bytes",
    "parse",
    "parse_kept_raw",
    "strip_mbox",
]

# How much of a mail parse_kept_raw reads its headers from.
KEPT_RAW_HEADERS = 64 * 1024
# Each file is two rows in the database, and one line of the ticket's page: 30,000 parts
# took 10 s to store on PostgreSQL. A mail keeps its first thousand.
MAX_ATTACHMENTS = 1000


def parse(raw: bytes) -> ParsedMail:
    """Parse one message (mbox From line allowed) into a ParsedMail; never raises on bad input."""
    defects: list[str] = []
    try:
        return _parse(raw, defects)
    except Exception as exc:  # noqa: BLE001 - a mail we cannot read is still a mail
        mail = _parse_minimal(raw)
        mail.defects = defects + mail.defects
        mail.defects.append(f"parser failed ({type(exc).__name__}: {exc}); headers and text only")
        return mail


def _parse(raw: bytes, defects: list[str]) -> ParsedMail:
    data = strip_mbox(raw)
    data = drop_bom(data, defects)
    data = repair_header_block(data, defects)
    skeleton, cut = bound_nesting(data, defects)
    message = build_message(skeleton)
    hints = charset_hints(message)
    mail = ParsedMail()
    fill_headers(mail, message, hints)
    walk = walk_tree(message, hints)
    texts = [text_of(part, hints, defects).strip("\n") for part in walk.text]
    mail.text = "\n\n".join(t for t in texts if t.strip())
    htmls = [text_of(part, hints, defects) for part in walk.html]
    mail.html = "\n".join(h for h in htmls if h.strip()) or None
    reader = AttachmentReader(message, data, hints, defects, cut)
    mail.attachments = reader.files(walk.files)
    if len(mail.attachments) > MAX_ATTACHMENTS:
        defects.append(
            f"{len(mail.attachments)} files: only the first {MAX_ATTACHMENTS} attached"
            " (all of them are in the mail as it came)"
        )
        del mail.attachments[MAX_ATTACHMENTS:]
    if mail.html is None and reader.tnef_html.strip():
        mail.html = reader.tnef_html  # Outlook's winmail.dat carried the body
    tnef_text = reader.tnef_text.strip("\n")
    mail.defects = defects + mail.defects + tree_defects(message)
    # The tree holds every payload again: let it go before the text is derived from the
    # HTML, which needs as much (a 25 MB HTML-only mail peaked at 345 MB with both).
    del message, walk, reader, htmls, texts, skeleton, data
    if not mail.text.strip():
        # No text part, or an empty one beside the HTML: the text is derived from the HTML.
        mail.text = tnef_text or _html_to_text(mail.html)
    return mail


def _parse_minimal(raw: bytes) -> ParsedMail:
    """Last resort: the headers, and the body as text (no MIME: it cannot recurse)."""
    from email.parser import BytesParser

    mail = ParsedMail()
    try:
        data = strip_mbox(raw)
        message = BytesParser(policy=RAW_HEADERS).parsebytes(data, headersonly=True)
        fill_headers(mail, message, ())
        body = split_header(data)
        mail.text = decode_bytes(to_lf(body)).strip("\n")
    except Exception as exc:  # noqa: BLE001
        mail.defects.append(f"headers unreadable: {type(exc).__name__}")
    return mail


def parse_kept_raw(raw: bytes, notice: str, defect: str) -> ParsedMail:
    """A mail that could not be read in time: its headers, from its first 64 KB (enough
    for a ticket and its threading), `notice` as its text, and the mail itself attached
    as it came, as message.eml. Takes time bounded by that prefix; never raises."""
    mail = ParsedMail()
    try:
        head = strip_mbox(raw[:KEPT_RAW_HEADERS])
        end = HEADER_END.search(head)
        if end is not None:
            head = head[: end.start()]
        elif len(raw) > KEPT_RAW_HEADERS:
            head = head[: max(head.rfind(b"\n"), 0)]  # not the line the cut ran through
        from email.parser import BytesParser

        message = BytesParser(policy=RAW_HEADERS).parsebytes(head + b"\n\n", headersonly=True)
        fill_headers(mail, message, charset_hints(message))
    except Exception as exc:  # noqa: BLE001 - the notice and the attachment are what counts
        mail.defects.append(f"headers unreadable: {type(exc).__name__}")
    mail.text = notice
    mail.attachments = [ParsedAttachment("message.eml", "message/rfc822", raw)]
    mail.defects.insert(0, defect)
    return mail


def _html_to_text(html: str | None) -> str:
    if not html:
        return ""
    from helpdesk.ingest.htmltext import html_to_text  # html.parser: only for HTML-only mail

    return html_to_text(html)
