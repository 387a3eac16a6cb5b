"""The `helpdesk-pipe` command line (click). Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from datetime import datetime
from typing import Any

import click

from helpdesk.config import ConfigError
from helpdesk.config import Settings
from helpdesk.config import load_settings

__all__ = ["cli"]

EX_TEMPFAIL = 75


class Context:
    """Lazily loaded settings shared by the subcommands."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as exc:
                raise click.ClickException(f"configuration: {exc}") from None
        return self._settings

    def session(self) -> Any:
        from helpdesk.db import session_factory

        return session_factory(self.settings)()


pass_ctx = click.make_pass_decorator(Context)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _emit(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        click.echo(text)


class _Group(click.Group):
    """Turn database errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not type(exc).__module__.startswith("sqlalchemy"):
                raise
            cause = getattr(exc, "orig", None) or exc
            hint = " (run `helpdesk-pipe init`?)" if "no such table" in str(cause) else ""
            raise click.ClickException(f"database: {' '.join(str(cause).split())}{hint}") from None


ID = click.IntRange(1, 2**31 - 1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    envvar="HELPDESK_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML config (default: $HELPDESK_CONFIG, else /etc/helpdesk/helpdesk.toml).",
)
@click.version_option(package_name="helpdesk-pipe", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Mail in, ticket out: the helpdesk-pipe command line."""
    ctx.obj = Context(config)


@cli.command()
@pass_ctx
def init(obj: Context) -> None:
    """Create the database schema, or upgrade it to the newest version."""
    from helpdesk.files import set_group_umask
    from helpdesk.migrate import upgrade

    set_group_umask()
    before, after = upgrade(obj.settings)
    if before == after:
        click.echo(f"database is up to date (revision {after})")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to revision {after}")


@cli.command()
@click.option("--queue", "-q", help="Queue name (default: from the envelope recipient).")
@pass_ctx
def deliver(obj: Context, queue: str | None) -> None:
    """Read one message from stdin and record it (for the MTA: exits 0, 65 or 75)."""
    from helpdesk.ingest.deliver import run

    sys.exit(run(obj.config, queue))


# -- tickets --------------------------------------------------------------


@cli.group()
def ticket() -> None:
    """Look at tickets."""


def _ticket_row(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "queue": t.queue,
        "status": t.status,
        "subject": t.subject,
        "requester": t.requester.email,
        "requester_name": t.requester.name,
        "assignee": t.assignee.email if t.assignee else None,
        "created_at": _iso(t.created_at),
        "updated_at": _iso(t.updated_at),
    }


@ticket.command("list")
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--status", "-s", help="Only this status.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def ticket_list(obj: Context, queue: str | None, status: str | None, as_json: bool) -> None:
    """List tickets, newest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from helpdesk.models import Ticket

    query = select(Ticket).options(selectinload(Ticket.requester), selectinload(Ticket.assignee))
    if queue:
        query = query.where(Ticket.queue == queue)
    if status:
        query = query.where(Ticket.status == status)
    with obj.session() as session:
        rows = [_ticket_row(t) for t in session.scalars(query.order_by(Ticket.id.desc()))]
    lines = [
        f"#{r['id']:<6} {r['queue']:<16} {r['status']:<9} {r['requester']:<32} {r['subject']}"
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) if lines else "no tickets")


@ticket.command("show")
@click.argument("ticket_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def ticket_show(obj: Context, ticket_id: int, as_json: bool) -> None:
    """Show a ticket and its whole thread."""
    from sqlalchemy.orm import selectinload

    from helpdesk.models import Article
    from helpdesk.models import Participant
    from helpdesk.models import Ticket

    with obj.session() as session:
        t = session.get(
            Ticket,
            ticket_id,
            options=[
                selectinload(Ticket.articles).selectinload(Article.attachments),
                selectinload(Ticket.articles).selectinload(Article.author),
                selectinload(Ticket.participants).selectinload(Participant.person),
            ],
        )
        if t is None:
            raise click.ClickException(f"no ticket #{ticket_id}")
        data = _ticket_row(t)
        data["participants"] = [
            {"email": t.requester.email, "name": t.requester.name, "role": "requester"}
        ] + [
            {"email": p.person.email, "name": p.person.name, "role": p.role} for p in t.participants
        ]
        data["articles"] = [
            {
                "id": a.id,
                "author": a.author.email,
                "author_name": a.author.name,
                "source": a.source,
                "internal": a.internal,
                "mail_id": a.mail_id,
                "created_at": _iso(a.created_at),
                "subject": a.subject,
                "body_text": a.body_text,
                "body_shown": a.body_trimmed if a.body_trimmed is not None else a.body_text,
                "body_html": a.body_html,
                "attachments": [_attachment_row(f) for f in a.attachments],
            }
            for a in t.articles
        ]
    if as_json:
        _emit(data, True, "")
        return
    out = [
        f"Ticket #{data['id']} [{data['queue']}] {data['status']}: {data['subject']}",
        f"Requester: {data['requester']}  Created: {data['created_at']}",
    ]
    others = [p["email"] for p in data["participants"] if p["role"] != "requester"]
    if others:
        out.append(f"Participants: {', '.join(others)}")
    for a in data["articles"]:
        internal = ", internal" if a["internal"] else ""
        out += [
            "",
            f"--- #{a['id']} {a['author']} ({a['source']}{internal}) {a['created_at']}",
            a["body_shown"],
        ]
        out += [
            f"  [{f['filename']}] {f['content_type']} {f['size']} bytes" for f in a["attachments"]
        ]
    click.echo("\n".join(out))


def _attachment_row(f: Any) -> dict[str, Any]:
    return {
        "id": f.id,
        "filename": f.filename,
        "content_type": f.content_type,
        "size": f.size,
        "sha256": f.blob_sha256,
        "content_id": f.content_id,
        "inline": f.inline,
    }


@ticket.command("link")
@click.argument("ticket_id", type=ID)
@click.option("--revoke", is_flag=True, help="Revoke every link of the ticket instead.")
@pass_ctx
def ticket_link(obj: Context, ticket_id: int, revoke: bool) -> None:
    """Print a fresh private link to a ticket for its requester, or revoke them all."""
    from helpdesk import tokens
    from helpdesk.store import Store
    from helpdesk.store import StoreError

    settings = obj.settings
    try:
        with Store(settings.database_url, settings.busy_timeout) as store:
            with store.transaction():
                requester = store.scalar(
                    "SELECT requester_id FROM ticket WHERE id = :id", {"id": ticket_id}
                )
                if requester is None:
                    raise click.ClickException(f"no ticket #{ticket_id}")
                if revoke:
                    count = tokens.revoke(store, ticket_id)
                else:
                    token = tokens.new_token(store, ticket_id, requester)
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    if revoke:
        click.echo(f"{count} link(s) of ticket #{ticket_id} revoked")
    else:
        click.echo(tokens.link(settings.base_url, token))


# -- mails ----------------------------------------------------------------


@cli.group()
def mail() -> None:
    """Look at the mail the pipe received."""


def _mail_row(m: Any) -> dict[str, Any]:
    return {
        "id": m.id,
        "queue": m.queue,
        "message_id": m.message_id,
        "sender": m.sender,
        "subject": m.subject,
        "verdict": m.verdict,
        "reason": m.reason,
        "ticket_id": m.ticket_id,
        "received_at": _iso(m.received_at),
        "size": m.size,
    }


@mail.command("list")
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--verdict", help="Only this verdict (ticket, duplicate, pending, ...).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def mail_list(obj: Context, queue: str | None, verdict: str | None, as_json: bool) -> None:
    """List every recorded mail, newest first."""
    from sqlalchemy import select

    from helpdesk.models import MailRecord

    query = select(MailRecord).order_by(MailRecord.id.desc())
    if queue:
        query = query.where(MailRecord.queue == queue)
    if verdict:
        query = query.where(MailRecord.verdict == verdict)
    with obj.session() as session:
        rows = [_mail_row(m) for m in session.scalars(query)]
    lines = [
        f"#{r['id']:<6} {r['queue']:<16} {r['verdict']:<10} "
        f"{'#' + str(r['ticket_id']) if r['ticket_id'] else '-':<7} {r['sender'] or '-':<32} "
        f"{r['subject'] or ''}" + (f"\n        ({r['reason']})" if r["reason"] else "")
        for r in rows
    ]
    _emit(rows, as_json, "\n".join(lines) if lines else "no mail")


@mail.command("show")
@click.argument("mail_id", type=ID)
@click.option("--raw", is_flag=True, help="Write the stored bytes, exactly as received.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def mail_show(obj: Context, mail_id: int, raw: bool, as_json: bool) -> None:
    """Show one mail: envelope, verdict and why; or its raw bytes."""
    from sqlalchemy import select

    from helpdesk.models import MailRaw
    from helpdesk.models import MailRecord
    from helpdesk.models import OutboxMessage

    with obj.session() as session:
        if raw:
            stored = session.get(MailRaw, mail_id)
            if stored is None:
                raise click.ClickException(f"no mail #{mail_id}")
            sys.stdout.buffer.write(stored.data)
            sys.stdout.buffer.flush()
            return
        m = session.get(MailRecord, mail_id)
        if m is None:
            raise click.ClickException(f"no mail #{mail_id}")
        data = _mail_row(m)
        data["envelope"] = json.loads(m.envelope or "{}")
        data["defects"] = json.loads(m.defects) if m.defects else []
        data["raw_sha256"] = m.raw_sha256
        data["outgoing"] = [
            _outbox_row(o)
            for o in session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.mail_id == m.id)
                .order_by(OutboxMessage.id)
            )
        ]
    text = "\n".join(
        [
            f"Mail #{data['id']} to queue {data['queue']}, received {data['received_at']}",
            f"Envelope: {json.dumps(data['envelope'], ensure_ascii=False)}",
            f"From: {data['sender']}  Message-ID: {data['message_id']}",
            f"Subject: {data['subject']}",
            f"Verdict: {data['verdict']}"
            + (f" ({data['reason']})" if data["reason"] else "")
            + (f" -> ticket #{data['ticket_id']}" if data["ticket_id"] else ""),
        ]
        + [f"Repaired: {d}" for d in data["defects"]]
        + (["Outgoing mail it caused:"] if data["outgoing"] else ["Outgoing mail it caused: none"])
        + [f"  {_outbox_line(o)}" for o in data["outgoing"]]
    )
    _emit(data, as_json, text)


# -- MTA wiring -----------------------------------------------------------


def _installed_command() -> str:
    """The absolute path of this helpdesk-pipe, as the MTA must call it."""
    import shutil
    from pathlib import Path

    beside = Path(sys.executable).parent / "helpdesk-pipe"
    if beside.exists():
        return str(beside.absolute())
    found = shutil.which("helpdesk-pipe")
    return str(Path(found).absolute()) if found else str(Path(sys.argv[0]).absolute())


@cli.command()
@pass_ctx
def aliases(obj: Context) -> None:
    """Print the /etc/aliases lines that pipe each queue's addresses into it."""
    settings = obj.settings
    import shlex

    # Quoted for the shell the MTA runs the pipe through: a path may hold a space.
    command = shlex.quote(_installed_command())
    config = f" --config {shlex.quote(str(settings.path.absolute()))}" if settings.path else ""
    lines = []
    for queue in settings.queues.values():
        for address in queue.addresses or (queue.name,):
            local = address.rpartition("@")[0] or address
            pipe = f'"|{command}{config} deliver --queue {queue.name}"'
            lines.append(f"{local + ':':<24}{pipe}")
    click.echo(
        "# helpdesk-pipe queues (then `newaliases`; the MTA runs these with PATH=/usr/bin:/bin)"
    )
    click.echo("\n".join(lines))


# -- viewer ---------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@pass_ctx
def serve(obj: Context, host: str, port: int) -> None:
    """Serve the requesters' viewer (development server; production: gunicorn)."""
    from webview import create_app

    try:
        app = create_app(settings=obj.settings)
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    app.run(host=host, port=port, threaded=True)


# -- outbox ---------------------------------------------------------------


@cli.group()
def outbox() -> None:
    """Look at and send the mail the helpdesk writes."""


def _outbox_row(o: Any) -> dict[str, Any]:
    return {
        "id": o.id,
        "ticket_id": o.ticket_id,
        "mail_id": o.mail_id,
        "kind": o.kind,
        "to": o.to_addr,
        "subject": o.subject,
        "message_id": o.message_id,
        "status": o.status,
        "tries": o.tries,
        "last_error": o.last_error,
        "created_at": _iso(o.created_at),
        "sent_at": _iso(o.sent_at),
        "next_try_at": _iso(o.next_try_at) if o.status == "queued" else None,
    }


def _outbox_line(r: dict[str, Any]) -> str:
    ticket = f"#{r['ticket_id']}" if r["ticket_id"] else "-"
    line = (
        f"#{r['id']:<6} {ticket:<7} {r['kind']:<14} {r['status']:<8} {r['tries']:>2} "
        f"{r['to']:<32} <{r['message_id']}> {r['subject']}"
    )
    return line + (f"\n        ({r['last_error']})" if r["last_error"] else "")


@outbox.command("list")
@click.option("--status", "-s", help="Only this status (queued, sent, failed, capped, ...).")
@click.option("--ticket", "ticket_id", type=ID, help="Only the mail of this ticket.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def outbox_list(obj: Context, status: str | None, ticket_id: int | None, as_json: bool) -> None:
    """List outgoing mail, newest first."""
    from sqlalchemy import select

    from helpdesk.models import OutboxMessage

    query = select(OutboxMessage).order_by(OutboxMessage.id.desc())
    if status:
        query = query.where(OutboxMessage.status == status)
    if ticket_id:
        query = query.where(OutboxMessage.ticket_id == ticket_id)
    with obj.session() as session:
        rows = [_outbox_row(o) for o in session.scalars(query)]
    lines = [_outbox_line(r) for r in rows]
    _emit(rows, as_json, "\n".join(lines) if lines else "no outgoing mail")


@outbox.command("flush")
@click.option(
    "--due-only",
    is_flag=True,
    help="Respect each mail's retry time (for cron); default: try all now.",
)
@pass_ctx
def outbox_flush(obj: Context, due_only: bool) -> None:
    """Send the queued mail now; exit 75 if some of it must wait for a retry."""
    from helpdesk.notify.outbox import flush
    from helpdesk.store import Store
    from helpdesk.store import StoreError

    try:
        with Store(obj.settings.database_url, obj.settings.busy_timeout) as store:
            result = flush(store, obj.settings, due_only=due_only)
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    click.echo(str(result))
    if result.deferred:
        sys.exit(EX_TEMPFAIL)
