"""The schema as typed SQLAlchemy models: the source of truth for Alembic, the CLI and the web.

The pipe's hot path (helpdesk.ingest.store) writes the same tables with plain DB-API
SQL, because importing SQLAlchemy costs more than the whole delivery
(research/perf-baseline.md); tests run both against the migrated schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import LargeBinary
from sqlalchemy import MetaData
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

__all__ = [
    "Base",
    "Person",
    "Ticket",
    "Article",
    "Blob",
    "Attachment",
    "MailRecord",
    "MailRaw",
    "OutboxMessage",
    "AccessToken",
    "ThreadRef",
    "Participant",
    "GroupMember",
    "DirectoryEntry",
    "TicketHistory",
    "JobRun",
    "TICKET_STATUSES",
    "DOORS",
    "OUTBOX_STATUSES",
    "VERDICTS",
    "HELD_VERDICTS",
]

# new: nobody has it yet; assigned: a technician has it; waiting: a technician asked
# the requester something; resolved: a solution was given, it closes by itself unless
# the requester answers; closed: done, an answer opens a new ticket.
TICKET_STATUSES = ("new", "assigned", "waiting", "resolved", "closed")
# The ways a change comes in, as ticket_history records them.
DOORS = ("mail", "web", "cli", "scheduler")
# What became of a mail; `pending` means stored but not yet decided (a crash or a
# temporary failure happened in between: the MTA's retry finishes it). `spam` (the
# MTA's filter said so, or `ticket spam`) and `bulk` (lists, newsletters) are held:
# kept raw, no ticket, no mail; `mail release` makes one a ticket or a follow-up.
VERDICTS = (
    "pending",
    "ticket",
    "followup",
    "duplicate",
    "autoreply",
    "bounce",
    "loop",
    "spam",
    "bulk",
)
# Verdicts a technician can release (`mail release`).
HELD_VERDICTS = ("spam", "bulk")
# queued: waits for its transport; sending: claimed by one flusher; capped: over the
# rate cap for its recipient, never sent; skipped: to an address that takes no
# automatic mail (noreply@...); failed: refused for good, or bounced.
OUTBOX_STATUSES = ("queued", "sending", "sent", "failed", "capped", "skipped")

intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
timestamp = Annotated[datetime, mapped_column(DateTime(timezone=True))]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with constraint names Alembic can refer to."""

    metadata = MetaData(naming_convention=NAMING)


class Person(Base):
    """Anyone who writes to or works in the helpdesk, keyed by lower-cased address."""

    __tablename__ = "person"

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[timestamp]


class Ticket(Base):
    """A request in a queue."""

    __tablename__ = "ticket"

    id: Mapped[intpk]
    queue: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    created_at: Mapped[timestamp]
    updated_at: Mapped[timestamp]
    # When it last closed: its private links stop working some days later.
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When it was last resolved: it closes by itself some days later (auto-close).
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # The technicians' group it was routed to (by queue, or by the requester's site).
    group_name: Mapped[str | None] = mapped_column(String(100), index=True)
    # The closed ticket whose requester wrote again: this one continues it.
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    # Why its requester's address gets no automatic mail (acknowledgement, taken,
    # resolved, closed, confirmation): a From that failed a trusted DMARC check, a
    # released spam, a ticket marked spam. NULL: nothing against it.
    distrust: Mapped[str | None] = mapped_column(Text)

    requester: Mapped[Person] = relationship(foreign_keys=[requester_id])
    assignee: Mapped[Person | None] = relationship(foreign_keys=[assignee_id])
    articles: Mapped[list[Article]] = relationship(back_populates="ticket", order_by="Article.id")
    participants: Mapped[list[Participant]] = relationship(order_by="Participant.person_id")
    history: Mapped[list[TicketHistory]] = relationship(order_by="TicketHistory.id")


class Participant(Base):
    """Someone who takes part in a ticket besides its requester: Cc'd on the original."""

    __tablename__ = "participant"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), default="cc")

    person: Mapped[Person] = relationship()


class Article(Base):
    """One entry in a ticket's thread: the first mail, a follow-up, a reply."""

    __tablename__ = "article"

    id: Mapped[intpk]
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    source: Mapped[str] = mapped_column(String(20))
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("mail_record.id"))
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    # Written by the requester's address with nothing but the subject tag to show it
    # (ingest/thread.py): internal, and marked, until a reply to our confirmation
    # request proves it.
    unverified: Mapped[bool] = mapped_column(Boolean, default=False)
    subject: Mapped[str] = mapped_column(Text, default="")
    body_text: Mapped[str] = mapped_column(Text, default="")
    # The HTML as our pages show it, cleaned when the mail arrived (helpdesk/htmlsafe.py);
    # the HTML as it came is in the raw mail, or an attachment when it could not be cleaned.
    body_html: Mapped[str | None] = mapped_column(Text)
    # The text as shown: a reply without the earlier message it quotes. NULL when
    # nothing was trimmed; body_text always keeps the whole text.
    body_trimmed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[timestamp]

    ticket: Mapped[Ticket] = relationship(back_populates="articles")
    author: Mapped[Person] = relationship()
    attachments: Mapped[list[Attachment]] = relationship(order_by="Attachment.id")


class Blob(Base):
    """Attachment content, stored once whatever the number of mails that carry it."""

    __tablename__ = "blob"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    """A file of an article, pointing at its content by digest."""

    __tablename__ = "attachment"

    id: Mapped[intpk]
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blob.sha256"))
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(200))
    content_id: Mapped[str | None] = mapped_column(String(500))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(Integer)


class MailRecord(Base):
    """Every message that reached the pipe, its envelope and what became of it."""

    __tablename__ = "mail_record"
    __table_args__ = (UniqueConstraint("queue", "dedup_key"),)

    id: Mapped[intpk]
    queue: Mapped[str] = mapped_column(String(100), index=True)
    received_at: Mapped[timestamp]
    raw_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    envelope: Mapped[str] = mapped_column(Text, default="{}")
    message_id: Mapped[str | None] = mapped_column(String(998))
    sender: Mapped[str | None] = mapped_column(String(320))
    sender_name: Mapped[str | None] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(Text)
    verdict: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    defects: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    # "mid:<sha256 of the Message-ID>" (or "sha256:<digest of the raw bytes>" without
    # one) of an accepted mail; NULL for the others. Unique per queue, so two
    # concurrent deliveries of one message cannot both open a ticket, on SQLite or on
    # PostgreSQL.
    dedup_key: Mapped[str | None] = mapped_column(String(998))

    raw: Mapped[MailRaw] = relationship(uselist=False)


class MailRaw(Base):
    """The exact bytes the MTA piped in, kept apart so listings never read them."""

    __tablename__ = "mail_raw"

    mail_id: Mapped[int] = mapped_column(ForeignKey("mail_record.id"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class OutboxMessage(Base):
    """A mail to send, written in the transaction of the change that causes it.

    It is rendered whole when queued, so what is sent, retried and shown is the
    very message whose Message-ID threading later recognises.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_to_addr_created_at", "to_addr", "created_at"),)

    id: Mapped[intpk]
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    # The incoming mail whose handling queued it, for `mail show`.
    mail_id: Mapped[int | None] = mapped_column(ForeignKey("mail_record.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    to_addr: Mapped[str] = mapped_column(String(320))
    envelope_from: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), index=True)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[timestamp]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[timestamp]
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AccessToken(Base):
    """A requester's private link to a ticket; only the token's SHA-256 is kept."""

    __tablename__ = "access_token"

    id: Mapped[intpk]
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[timestamp]
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ThreadRef(Base):
    """A Message-ID we issued or received for a ticket, by digest: replies name them."""

    __tablename__ = "thread_ref"

    message_id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    # "out" for ours, "in" for the ones we received.
    origin: Mapped[str] = mapped_column(String(3))


class GroupMember(Base):
    """A technician in a group, added with `helpdesk-pipe tech add` (the config's
    [groups] count too)."""

    __tablename__ = "group_member"

    group_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    created_at: Mapped[timestamp]

    person: Mapped[Person] = relationship()


class DirectoryEntry(Base):
    """What the organisation's directory says of a person (CSV import or LDAP): the
    attributes routing rules read, such as `site`."""

    __tablename__ = "directory_entry"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # JSON object of the other columns, values as text.
    attributes: Mapped[str] = mapped_column(Text, default="{}")
    # Where it came from (the CSV file's name, "ldap"): an import replaces its own only.
    source: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[timestamp]


class TicketHistory(Base):
    """One change of a ticket: who, when, what, through which door."""

    __tablename__ = "ticket_history"

    id: Mapped[intpk]
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    at: Mapped[timestamp]
    # NULL for the scheduler or a sysadmin at the CLI without --as: actor says who.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    actor: Mapped[str] = mapped_column(String(320))
    door: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(30))
    old_status: Mapped[str | None] = mapped_column(String(20))
    new_status: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(Text)


class JobRun(Base):
    """When a periodic job last ran (scheduler or cron), where, and what it did:
    `helpdesk-pipe doctor` tells a sysadmin whose mail waits for a scheduler nobody runs."""

    __tablename__ = "job_run"

    job: Mapped[str] = mapped_column(String(30), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    finished_at: Mapped[timestamp]
    result: Mapped[str] = mapped_column(Text, default="")
