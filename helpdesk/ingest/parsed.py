"""What parsing one message yields: ParsedMail and its ParsedAttachments."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import datetime


@dataclass
class ParsedAttachment:
    """One file carried by a mail, decoded."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class ParsedMail:
    """What the rest of the pipe needs to know about one message."""

    # Read leniently (From, else Sender, Reply-To, Return-Path): for machine mail and
    # for naming a new ticket's requester.
    sender: str = ""
    sender_name: str = ""
    # The single address of the single From header, read strictly (ingest/sender.py):
    # the only identity that may write into an existing ticket; "" with author_problem
    # saying why when there is none.
    author: str = ""
    author_name: str = ""
    author_problem: str | None = None
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    text: str = ""
    html: str | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    defects: list[str] = field(default_factory=list)

    def header(self, name: str) -> str:
        """Return the first value of a header (case-insensitive), or ''."""
        values = self.headers.get(name.lower())
        return values[0] if values else ""
