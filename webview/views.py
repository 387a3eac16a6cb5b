"""The pages: a ticket by its private link, its attachments, and what its requester may do
there: add a follow-up while it is open; close it, or say the problem persists, once it is
resolved (GLPI's solution approval). A closed ticket takes nothing more: a new mail opens
a new request.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import g
from flask import get_flashed_messages
from flask import redirect
from flask import render_template
from flask import request
from flask import send_file
from flask import url_for
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup

from helpdesk import tokens
from helpdesk import workflow
from helpdesk.config import Queue
from helpdesk.display import safe_filename
from helpdesk.ingest.parsed import ParsedAttachment
from helpdesk.notify import outbox
from helpdesk.notify.kinds import WORDS
from helpdesk.store import MAX_ID
from helpdesk.store import Store
from helpdesk.tokens import Access
from webview.app import settings_of
from webview.app import store
from webview.data import TicketView
from webview.data import load_attachment
from webview.data import load_entries
from webview.data import load_header
from webview.data import load_text
from webview.sanitize import has_remote_images
from webview.sanitize import page_html

__all__ = ["bp", "SAFE_TYPES"]

bp = Blueprint("viewer", __name__)
log = logging.getLogger("helpdesk.webview")

# Content types a browser may be told as they are; anything else (HTML, SVG, XML,
# scripts...) goes out as application/octet-stream, always as a download.
SAFE_TYPES = {
    "application/pdf", "application/zip", "application/msword", "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text", "application/vnd.oasis.opendocument.spreadsheet",
    "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "text/csv",
    "audio/mpeg", "video/mp4", "message/rfc822",
}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Pictures a mail shows inside its text (cid:), served from our own attachments.
INLINE_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


def _access(token: str) -> Access:
    """The ticket a token opens, else the same 404 for every reason; 429 when guessing."""
    failures = current_app.extensions["helpdesk.failed_lookups"]
    client = request.remote_addr or "?"
    if failures.blocked(client):
        abort(429)
    access = tokens.lookup(store(), token, settings_of().link_days_after_close)
    if access is None:
        failures.record(client)
        abort(404)
    return access


def _page(
    token: str, access: Access, error: str | None = None, text: str = "", code: int = 200
) -> Any:
    """The ticket's page; with an error (a refused form), rendered afresh with `code`."""
    settings = settings_of()
    g.remote_images = request.args.get("images") == "1"
    accept = bool(request.accept_languages)
    # Everything the page shows changes only with the ticket, whose updated_at moves
    # with every change (the token lookup reads it): a page is rendered once per
    # worker and ticket state, then served again without reading the thread.
    key: tuple[Any, ...] = (
        access.ticket_id,
        str(access.updated_at),
        access.status,
        token,
        g.language,
        accept,
    )
    key += (g.remote_images,)
    cache = current_app.extensions["helpdesk.page_cache"]
    page = cache.get((*key, "page")) if error is None else None
    if page is not None:
        return page.replace(_CSRF_SLOT, generate_csrf()), 200
    ticket = load_header(store(), access.ticket_id)
    if ticket is None:
        abort(404)
    ticket.reader_id = access.person_id  # the page is cached per token: per reader too
    queue = settings.queues.get(ticket.queue)
    if not accept:
        g.language = queue.language if queue else "en"
    if error is None:
        # Kept whole, with a slot for the one thing that is the reader's own: the
        # CSRF token (Flask-WTF ties it to their session).
        page = _render(ticket, token, queue, key, cache, csrf=_CSRF_SLOT)
        cache.put((*key, "page"), page)
        return page.replace(_CSRF_SLOT, generate_csrf()), 200
    return _render(
        ticket, token, queue, key, cache, csrf=generate_csrf(), error=error, text=text
    ), code


_CSRF_SLOT = "\x00csrf\x00"


def _render(
    ticket: TicketView,
    token: str,
    queue: Any,
    key: tuple,
    cache: Any,
    csrf: str,
    error: str | None = None,
    text: str = "",
) -> str:
    body = cache.get(key)
    if body is None:
        load_entries(store(), ticket)
        body = Markup(
            render_template(
                "ticket_body.html",
                ticket=ticket,
                token=token,
                bodies=_bodies(ticket, token),
                queue_name=(queue.display_name if queue else ticket.queue),
                has_images=any(e.html and has_remote_images(e.html) for e in ticket.entries),
            )
        )
        cache.put(key, body)
    settings = settings_of()
    return render_template(
        "ticket.html",
        ticket=ticket,
        token=token,
        body=body,
        csrf=csrf,
        error=error,
        text=text,
        autoclose_days=settings.autoclose_days,
        # Where a closed ticket's requester writes to open a new request.
        address=queue.address(settings.domain_for(queue)) if queue else "",
    )


def _bodies(ticket: TicketView, token: str) -> dict[int, str]:
    """The HTML of each entry that has one (cleaned when it arrived), its inline pictures
    ours: one linear pass per entry, whatever the mail."""
    bodies = {}
    for entry in ticket.entries:
        if entry.html:
            urls = {
                f.content_id.strip().strip("<>").lower(): url_for(
                    "viewer.attachment", token=token, attachment_id=f.id
                )
                for f in entry.files
                if f.content_id and f.content_type in INLINE_IMAGES
            }
            bodies[entry.id] = page_html(entry.html, urls, g.remote_images)
    return bodies


@bp.get("/t/<token>")
def ticket_page(token: str) -> Any:
    """The ticket, its whole thread oldest first, then the form."""
    access = _access(token)
    if _UNSENT in get_flashed_messages():
        return _page(token, access, error=_UNSENT)
    return _page(token, access)


@bp.post("/t/<token>")
def add_followup(token: str) -> Any:
    """Store the requester's follow-up through the workflow, then show it (PRG).

    On a resolved ticket it reopens it, as a mail would; a closed one takes nothing (409).
    """
    access = _access(token)
    text = request.form.get("description", "").strip()
    if access.status == "closed":
        return _page(token, access, error="closed", text=text, code=409)
    files = [
        # An upload is stored like a file that came by mail.
        ParsedAttachment(_filename(f.filename), f.mimetype or "application/octet-stream", f.read())
        for f in request.files.getlist("attachments")
        if f and f.filename
    ]
    if not text and not files:
        return _page(token, access, error="empty", text=text, code=400)
    # A pasted link would reach the technicians' mail, and the key to the page with it.
    text = tokens.redact_links(text)
    settings = settings_of()
    db = store()
    with db.transaction():
        before = outbox.last_id(db)
        ticket = _locked(db, access.ticket_id)
        if ticket.status != "closed":
            workflow.add_followup(
                db,
                settings,
                ticket.queue,
                access.ticket_id,
                access.person_id,
                by_technician=False,
                subject=ticket.subject,
                body_text=text,
                attachments=files,
                source="web",
            )
    if ticket.status == "closed":  # closed since the lookup, by someone else
        return _page(token, access, error="closed", text=text, code=409)
    log.info("ticket #%s: follow-up added on the web", access.ticket_id)
    _send_notifications(access.ticket_id)
    if not _anyone_told(db, access.ticket_id, before):
        # Its words are in the ticket, but no mail will bring them to anyone: the
        # requester must not believe a technician was told (shown once, then gone).
        flash(_UNSENT)
    return redirect(url_for("viewer.ticket_page", token=token, _anchor="last"), code=303)


_UNSENT = "unsent"


def _anyone_told(db: Store, ticket_id: int, before: int) -> bool:
    """Whether a mail carrying the follow-up went, or still may go, to someone."""
    with db.transaction():
        rows = db.execute(
            "SELECT kind, status FROM outbox_message WHERE ticket_id = :ticket AND id > :before",
            {"ticket": ticket_id, "before": before},
        ).fetchall()
    return any(kind in WORDS and status in ("queued", "sending", "sent") for kind, status in rows)


@bp.post("/t/<token>/close")
def close_ticket(token: str) -> Any:
    """The requester accepts the solution: the resolved ticket closes now (PRG).

    Anything but a resolved ticket is refused (409) and left as it is.
    """
    access = _access(token)
    if access.status != "resolved":
        return _page(token, access, error="not-resolved", code=409)
    settings = settings_of()
    db = store()
    with db.transaction():
        ticket = _locked(db, access.ticket_id)
        if ticket.status == "resolved":
            # The requester closes it themself: the workflow mails them nothing.
            workflow.close(db, settings, ticket.queue, access.ticket_id, _actor(db, access))
    if ticket.status != "resolved":  # changed since the lookup
        return _page(token, access, error="not-resolved", code=409)
    log.info("ticket #%s: closed by its requester on the web", access.ticket_id)
    _send_notifications(access.ticket_id)
    return redirect(url_for("viewer.ticket_page", token=token), code=303)


@bp.post("/t/<token>/reopen")
def reopen_ticket(token: str) -> Any:
    """The requester says the problem persists: the resolved ticket goes back to its
    technician (who is mailed) with their comment as a public entry (PRG).

    The comment is required (400); anything but a resolved ticket is refused (409).
    """
    access = _access(token)
    comment = request.form.get("comment", "").strip()
    if access.status != "resolved":
        return _page(token, access, error="not-resolved", text=comment, code=409)
    if not comment:
        return _page(token, access, error="comment", code=400)
    settings = settings_of()
    db = store()
    with db.transaction():
        ticket = _locked(db, access.ticket_id)
        if ticket.status == "resolved":
            workflow.reopen(
                db,
                settings,
                ticket.queue,
                access.ticket_id,
                _actor(db, access),
                body_text=comment,
            )
    if ticket.status != "resolved":  # changed since the lookup
        return _page(token, access, error="not-resolved", text=comment, code=409)
    log.info("ticket #%s: reopened by its requester on the web", access.ticket_id)
    _send_notifications(access.ticket_id)
    return redirect(url_for("viewer.ticket_page", token=token, _anchor="last"), code=303)


@dataclass(frozen=True)
class _Locked:
    status: str
    queue: Queue
    subject: str


def _locked(db: Store, ticket_id: int) -> _Locked:
    """A ticket's state, its row locked until the transaction ends: what the form may do
    is decided on this, not on the state the token lookup read."""
    row = db.one(
        "SELECT status, queue, subject FROM ticket WHERE id = :id" + db.for_update(),
        {"id": ticket_id},
    )
    queue = settings_of().queues.get(row[1]) if row else None
    if row is None or queue is None:
        abort(404)  # gone, or its queue removed from the config: nobody to tell
    return _Locked(row[0], queue, row[2])


def _actor(db: Store, access: Access) -> workflow.Actor:
    """The token's holder (the requester, or a Cc participant), as the history names them."""
    email = db.scalar("SELECT email FROM person WHERE id = :id", {"id": access.person_id})
    return workflow.Actor(access.person_id, str(email), "web")


def _send_notifications(ticket_id: int) -> None:
    from helpdesk.notify.outbox import flush

    try:
        flush(store(), settings_of(), ticket_id=ticket_id, stop_after=1)
    except Exception:  # noqa: BLE001 - the follow-up is stored; its mail waits in the outbox
        log.exception("ticket #%s: notifications stay queued", ticket_id)


# An id beyond the integer columns names no attachment: 404 before any query (SQLite
# cannot even bind a number past 64 bits).
@bp.get(f"/t/<token>/a/<int(max={MAX_ID}):attachment_id>")
def attachment(token: str, attachment_id: int) -> Any:
    """An attachment, always as a download, never rendered by the browser."""
    access = _access(token)
    found = load_attachment(store(), access.ticket_id, attachment_id)
    if found is None:
        abort(404)
    filename, content_type, data = found
    mimetype = content_type if content_type in SAFE_TYPES else "application/octet-stream"
    return _download(data, mimetype, safe_filename(filename))


def _download(data: bytes, mimetype: str, name: str) -> Any:
    """Bytes sent as a download, never rendered by the browser."""
    response = send_file(
        io.BytesIO(data), mimetype=mimetype, as_attachment=True, download_name=name, max_age=0
    )
    # Opened anyway (a browser's "open" button): no script, no plugin, no same origin.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    # make_conditional() wrote a Date, and the server writes its own (Werkzeug's development
    # server keeps both); the server's is the one to keep.
    del response.headers["Date"]
    return response


@bp.get(f"/t/<token>/e/<int(max={MAX_ID}):entry_id>/text")
def entry_text(token: str, entry_id: int) -> Any:
    """The whole text of an entry whose page shows only its start, as a download."""
    access = _access(token)
    text = load_text(store(), access.ticket_id, entry_id)
    if text is None:
        abort(404)
    return _download(text.encode("utf-8"), "text/plain", f"message-{entry_id}.txt")


def _filename(name: str) -> str:
    """An uploaded file's own name, without any directory or control character."""
    name = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return (name or "file")[:255]
