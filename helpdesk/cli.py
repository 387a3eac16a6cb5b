"""The `helpdesk-pipe` command line (click). Heavy imports stay inside the commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from typing import Any

import click

from helpdesk import display
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


# The values that are a text of many lines; every other string is one line.
_MULTILINE = {"body_text", "body_shown", "body_html"}


def _shown(data: Any, key: str = "") -> Any:
    """The data with each string escaped for the terminal (display.for_terminal)."""
    if isinstance(data, str):
        return display.for_terminal(data, multiline=key in _MULTILINE)
    if isinstance(data, dict):
        return {k: _shown(v, k) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_shown(v, key) for v in data]
    return data


def _echo(text: str, err: bool = False) -> None:
    """Print a text: no control or invisible character reaches the terminal raw."""
    click.echo(display.for_terminal(text, multiline=True), err=err)


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print what a command read: as JSON, else as the text `text` makes of it.

    Subjects, names, bodies, file names are the senders' to choose: `text` is given
    the data with every string escaped, so an ESC, a C1 control, a bidi override
    or a line feed in a subject shows as an escape and does nothing. JSON keeps
    every character, the unsafe ones as \\uXXXX escapes.
    """
    if as_json:
        click.echo(display.for_json(json.dumps(data, ensure_ascii=False, indent=2)))
    else:
        _echo(text(_shown(data)))


class _Group(click.Group):
    """Turn database errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            # An error may name what was stored (an address, a file): shown escaped.
            # click types message Final, yet it is a plain attribute format_message reads.
            exc.message = display.for_terminal(exc.message, multiline=True)  # type: ignore[misc]
            raise
        except Exception as exc:
            from helpdesk.store import StoreError

            module = type(exc).__module__
            if not (
                isinstance(exc, StoreError)
                or module.startswith(("sqlalchemy", "sqlite3", "psycopg"))
            ):
                raise
            cause = getattr(exc, "orig", None) or exc
            hint = " (run `helpdesk-pipe init`?)" if "no such table" in str(cause) else ""
            raise click.ClickException(f"database: {' '.join(str(cause).split())}{hint}") from None


class _Id(click.ParamType):
    """A row id. Not a number: a usage error. A number no row can have (0, or beyond
    the database's integer columns): the same one line as a missing row, exit 1."""

    name = "id"

    def __init__(self, noun: str) -> None:
        self.noun = noun

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from helpdesk.store import MAX_ID

        text = str(value).strip()
        if not (text.isascii() and text.isdigit()):
            self.fail(f"{text[:40]!r} is not an id (a whole number)", param, ctx)
        digits = text.lstrip("0")
        if not digits or len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
            shown = digits[:20] + ("..." if len(digits) > 20 else "")
            raise click.ClickException(f"no {self.noun} #{shown or 0}")
        return int(digits)


TICKET_ID = _Id("ticket")
MAIL_ID = _Id("mail")
ENTRY_ID = _Id("entry")


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
        "group": t.group_name,
        "status": t.status,
        "subject": t.subject,
        "requester": t.requester.email,
        "requester_name": t.requester.name,
        "assignee": t.assignee.email if t.assignee else None,
        "assignee_name": t.assignee.name if t.assignee else None,
        "previous_id": t.previous_id,
        "distrust": t.distrust,
        "created_at": _iso(t.created_at),
        "updated_at": _iso(t.updated_at),
        "resolved_at": _iso(t.resolved_at),
        "closed_at": _iso(t.closed_at),
    }


@ticket.command("list")
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--status", "-s", help="Only this status (new, assigned, waiting, resolved, closed).")
@click.option("--open", "only_open", is_flag=True, help="Only new, assigned and waiting tickets.")
@click.option("--group", "-g", help="Only the tickets routed to this group.")
@click.option("--mine", is_flag=True, help="Only the tickets of the technician named by --as.")
@click.option("--as", "as_email", metavar="EMAIL", help="The technician for --mine.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def ticket_list(
    obj: Context,
    queue: str | None,
    status: str | None,
    only_open: bool,
    group: str | None,
    mine: bool,
    as_email: str | None,
    as_json: bool,
) -> None:
    """List tickets, newest first."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from helpdesk.models import Person
    from helpdesk.models import Ticket
    from helpdesk.workflow import OPEN_STATUSES

    if mine and not as_email:
        raise click.UsageError("--mine needs --as EMAIL")
    query = select(Ticket).options(selectinload(Ticket.requester), selectinload(Ticket.assignee))
    if queue:
        query = query.where(Ticket.queue == queue)
    if status:
        query = query.where(Ticket.status == status)
    if only_open:
        query = query.where(Ticket.status.in_(OPEN_STATUSES))
    if group:
        query = query.where(Ticket.group_name == group)
    if mine:
        assert as_email  # --mine without --as was refused above
        query = query.join(Person, Person.id == Ticket.assignee_id).where(
            Person.email == as_email.strip().lower()
        )
    with obj.session() as session:
        rows = [_ticket_row(t) for t in session.scalars(query.order_by(Ticket.id.desc()))]

    def text(rows: list[dict[str, Any]]) -> str:
        lines = [
            f"#{r['id']:<6} {r['queue']:<16} {r['status']:<9} {r['assignee'] or '-':<28} "
            f"{r['requester']:<32} {r['subject']}"
            for r in rows
        ]
        return "\n".join(lines) if lines else "no tickets"

    _emit(rows, as_json, text)


@ticket.command("show")
@click.argument("ticket_id", type=TICKET_ID)
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
                "unverified": a.unverified,
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
    if len(data["participants"]) > 1:
        _cc_mailed(obj, ticket_id, data["participants"])
    _emit(data, as_json, _ticket_text)


def _cc_mailed(obj: Context, ticket_id: int, participants: list[dict[str, Any]]) -> None:
    """Say of each Cc participant whether the ticket's answers are mailed to them, and
    if not, why: the technicians see who reads what they write."""
    from helpdesk.notify.notices import cc_recipients

    with _store(obj) as store:  # reads only: no transaction, no write lock on SQLite
        mailed, skipped = cc_recipients(store, obj.settings, ticket_id)
    for p in participants[1:]:
        p["mailed"] = p["email"] in dict(mailed)
        p["not_mailed_why"] = skipped.get(p["email"])


def _ticket_text(data: dict[str, Any]) -> str:
    out = [
        f"Ticket #{data['id']} [{data['queue']}] {data['status']}: {data['subject']}",
        f"Requester: {data['requester']}  Created: {data['created_at']}",
        f"Group: {data['group'] or '-'}  Technician: {data['assignee'] or '-'}",
    ]
    if data["previous_id"]:
        out.append(f"Continues closed ticket #{data['previous_id']}")
    if data["distrust"]:
        out.append(f"No automatic mail to the requester: {data['distrust']}")
    others = [p for p in data["participants"] if p["role"] != "requester"]
    if others:
        mailed = [p["email"] for p in others if p.get("mailed")]
        out.append(f"Participants: {', '.join(p['email'] for p in others)}")
        out.append(f"Answers also mailed to (Cc): {', '.join(mailed) or 'nobody'}")
        out += [
            f"  not mailed: {p['email']} ({p['not_mailed_why']})"
            for p in others
            if not p.get("mailed")
        ]
    for a in data["articles"]:
        internal = ", internal" if a["internal"] else ""
        if a["unverified"]:
            internal = ", internal: UNVERIFIED sender, kept until the address confirms it"
        out += [
            "",
            f"--- #{a['id']} {a['author']} ({a['source']}{internal}) {a['created_at']}",
            a["body_shown"],
        ]
        out += [_attachment_line(f) for f in a["attachments"]]
    return "\n".join(out)


def _attachment_line(f: dict[str, Any]) -> str:
    # The name it shows and downloads as; the stored one, escaped, when it differs.
    stored = f" (stored as {f['filename']})" if f["shown_name"] != f["filename"] else ""
    return f"  [{f['shown_name']}]{stored} {f['content_type']} {f['size']} bytes"


def _attachment_row(f: Any) -> dict[str, Any]:
    return {
        "id": f.id,
        "filename": f.filename,
        "shown_name": display.safe_filename(f.filename or ""),
        "content_type": f.content_type,
        "size": f.size,
        "sha256": f.blob_sha256,
        "content_id": f.content_id,
        "inline": f.inline,
    }


@ticket.command("link")
@click.argument("ticket_id", type=TICKET_ID)
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


# -- the technicians' workflow ------------------------------------------------


class _Upload:
    """A file given with --attach, shaped as the workflow's FileData."""

    def __init__(self, path: str) -> None:
        import mimetypes
        from pathlib import Path

        file = Path(path)
        try:
            self.data = file.read_bytes()
        except OSError as exc:
            raise click.BadParameter(
                f"{path}: {exc.strerror or exc}", param_hint="--attach"
            ) from None
        self.filename = file.name
        self.content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self.content_id = None
        self.inline = False


def _message(message: str | None, required: bool = True) -> str:
    """The text of --message, else stdin when it is not a terminal."""
    if message is None and not sys.stdin.isatty():
        message = sys.stdin.read()
    if required and not (message or "").strip():
        raise click.UsageError("give the text with --message TEXT or on stdin")
    return message or ""


def _operator() -> str:
    """Who runs the CLI without --as, for the history: cli:<login>."""
    import getpass
    import os

    try:
        login = os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): still record the door
        login = "unknown"
    return f"cli:{login}"


def _technician(store: Any, settings: Settings, email: str) -> tuple[int, str]:
    """The person id and address of a technician named by --as or an argument."""
    from helpdesk import people
    from helpdesk import workflow

    email = email.strip().lower()
    if not people.is_technician(store, settings, email):
        raise click.ClickException(
            f"{email} is not a technician: add them with `helpdesk-pipe tech add {email}"
            " --group GROUP` or to a [groups] table of the config"
        )
    name = next(
        (n for members in settings.groups.values() for e, n in members if e == email and n), ""
    )
    return workflow.ensure_person(store, email, name), email


def _change(obj: Context, ticket_id: int, change: Any, unsent: list | None = None) -> Any:
    """Run one workflow change of a ticket in a transaction, then send the mail it
    queued (what cannot go now stays queued for the scheduler). With `unsent`, the
    answers it queued that did not go are added to that list (outbox.Unsent)."""
    from helpdesk import workflow
    from helpdesk.notify import outbox
    from helpdesk.notify.kinds import ANSWERS
    from helpdesk.notify.outbox import flush
    from helpdesk.store import Store
    from helpdesk.store import StoreError

    settings = obj.settings
    try:
        with Store(settings.database_url, settings.busy_timeout) as store:
            with store.transaction():
                before = outbox.last_id(store) if unsent is not None else 0
                queue_name = store.scalar(
                    "SELECT queue FROM ticket WHERE id = :id", {"id": ticket_id}
                )
                if queue_name is None:
                    raise click.ClickException(f"no ticket #{ticket_id}")
                queue = settings.queues.get(queue_name)
                if queue is None:
                    raise click.ClickException(
                        f"ticket #{ticket_id}: its queue {queue_name} is not in {settings.path}"
                    )
                result = change(store, queue)
            try:
                flush(store, settings, ticket_id=ticket_id, stop_after=1)
            except Exception as exc:  # noqa: BLE001 - the change is committed; mail waits
                _echo(f"mail not sent yet, it stays queued: {exc}", err=True)
            if unsent is not None:
                with store.transaction():
                    unsent += outbox.not_sent(store, ANSWERS, ticket_id=ticket_id, after_id=before)
    except workflow.WorkflowError as exc:
        raise click.ClickException(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    return result


AS_TECH = click.option(
    "--as", "as_email", required=True, metavar="EMAIL", help="The technician who does it."
)


def _writing(message_help: str) -> Any:
    """The arguments of a command that writes in a ticket: ID, --as, --message, --attach."""

    def decorate(command: Any) -> Any:
        for option in reversed(
            [
                click.argument("ticket_id", type=TICKET_ID),
                AS_TECH,
                click.option("--message", "-m", help=message_help),
                click.option(
                    "--attach",
                    "attach",
                    multiple=True,
                    type=click.Path(dir_okay=False),
                    help="A file to attach (repeatable).",
                ),
            ]
        ):
            command = option(command)
        return command

    return decorate


@ticket.command("take")
@click.argument("ticket_id", type=TICKET_ID)
@AS_TECH
@pass_ctx
def ticket_take(obj: Context, ticket_id: int, as_email: str) -> None:
    """Take a ticket: the requester is told who has it."""
    from helpdesk import workflow

    def change(store: Any, queue: Any) -> bool:
        tech, email = _technician(store, obj.settings, as_email)
        return workflow.take(
            store, obj.settings, queue, ticket_id, tech, workflow.Actor(tech, email, "cli")
        )

    taken = _change(obj, ticket_id, change)
    click.echo(f"ticket #{ticket_id} " + ("taken" if taken else "was already yours"))


@ticket.command("assign")
@click.argument("ticket_id", type=TICKET_ID)
@click.argument("email")
@click.option("--as", "as_email", metavar="EMAIL", help="Who assigns it (default: you, cli:LOGIN).")
@pass_ctx
def ticket_assign(obj: Context, ticket_id: int, email: str, as_email: str | None) -> None:
    """Give a ticket to a technician: they and the requester are told."""
    from helpdesk import workflow

    def change(store: Any, queue: Any) -> bool:
        tech, address = _technician(store, obj.settings, email)
        if as_email:
            by, by_email = _technician(store, obj.settings, as_email)
            actor = workflow.Actor(by, by_email, "cli")
        else:
            actor = workflow.Actor(None, _operator(), "cli")
        return workflow.take(store, obj.settings, queue, ticket_id, tech, actor)

    done = _change(obj, ticket_id, change)
    click.echo(
        f"ticket #{ticket_id} " + (f"assigned to {email}" if done else f"was already {email}'s")
    )


def _write(
    obj: Context,
    ticket_id: int,
    as_email: str,
    message: str | None,
    attach: tuple,
    write: Any,
    unsent: list | None = None,
) -> Any:
    """Run write(store, queue, technician id, text, files) as one workflow change."""
    text, files = _message(message), [_Upload(path) for path in attach]

    def change(store: Any, queue: Any) -> Any:
        tech, _email = _technician(store, obj.settings, as_email)
        return write(store, queue, tech, text, files)

    return _change(obj, ticket_id, change, unsent)


def _report_unsent(what: str, unsent: list) -> None:
    """Tell the author of an answer which of its mails did not go, on stderr; exit 1 if
    one never will (the answer is in the ticket: running the command again would add
    it twice, so the message says what to do instead). Mail a distrusted ticket keeps
    back on purpose is said, not an error."""
    for row in unsent:
        if row.withheld:
            # The ticket says why (`ticket show`): the sysadmin's policy, not a failure.
            _echo(f"helpdesk-pipe: {what} not mailed to {row.to_addr}: {row.error}.", err=True)
        elif row.for_good:
            _echo(
                f"helpdesk-pipe: {what} was NOT sent to {row.to_addr} ({row.status}:"
                f" {row.error}). It is in the ticket; do not run this again: reach"
                f" {row.to_addr} another way (outbox #{row.outbox_id}).",
                err=True,
            )
        else:
            _echo(
                f"helpdesk-pipe: {what} is not sent to {row.to_addr} yet ({row.error});"
                f" it stays queued: the scheduler or `outbox flush` sends it"
                f" (outbox #{row.outbox_id}).",
                err=True,
            )
    if any(row.for_good and not row.withheld for row in unsent):
        sys.exit(1)


@ticket.command("reply")
@_writing("The text (default: read from stdin).")
@pass_ctx
def ticket_reply(
    obj: Context, ticket_id: int, as_email: str, message: str | None, attach: tuple[str, ...]
) -> None:
    """Answer the requester ("Suivi de la demande"); the ticket then waits for them.

    Exits 1, the reply kept in the ticket, when its mail cannot be sent (stderr says why)."""
    from helpdesk import workflow

    def write(store: Any, queue: Any, tech: int, text: str, files: list) -> int:
        subject = store.scalar("SELECT subject FROM ticket WHERE id = :id", {"id": ticket_id})
        return workflow.add_followup(
            store,
            obj.settings,
            queue,
            ticket_id,
            tech,
            by_technician=True,
            subject=subject or "",
            body_text=text,
            attachments=files,
            source="cli",
        )

    unsent: list = []
    article = _write(obj, ticket_id, as_email, message, attach, write, unsent)
    click.echo(f"reply #{article} added to ticket #{ticket_id}")
    _report_unsent(f"reply #{article}", unsent)


@ticket.command("comment")
@_writing("The text (default: read from stdin).")
@pass_ctx
def ticket_comment(
    obj: Context, ticket_id: int, as_email: str, message: str | None, attach: tuple[str, ...]
) -> None:
    """Add an internal comment: never shown or sent to the requester."""
    from helpdesk import workflow

    def write(store: Any, queue: Any, tech: int, text: str, files: list) -> int:
        return workflow.comment(
            store, obj.settings, queue, ticket_id, tech, body_text=text, attachments=files
        )

    article = _write(obj, ticket_id, as_email, message, attach, write)
    click.echo(f"internal comment #{article} added to ticket #{ticket_id}")


@ticket.command("resolve")
@_writing("The solution (default: read from stdin).")
@pass_ctx
def ticket_resolve(
    obj: Context, ticket_id: int, as_email: str, message: str | None, attach: tuple[str, ...]
) -> None:
    """Resolve a ticket with its solution; it closes by itself after autoclose_days.

    Exits 1, resolved all the same, when its mail cannot be sent (stderr says why)."""
    from helpdesk import workflow

    def write(store: Any, queue: Any, tech: int, text: str, files: list) -> int:
        return workflow.resolve(
            store, obj.settings, queue, ticket_id, tech, body_text=text, attachments=files
        )

    unsent: list = []
    article = _write(obj, ticket_id, as_email, message, attach, write, unsent)
    click.echo(
        f"ticket #{ticket_id} resolved; it closes by itself in {obj.settings.autoclose_days}"
        " days unless the requester answers"
    )
    _report_unsent(f"the resolution (entry #{article})", unsent)


def _cli_actor(store: Any, settings: Settings, as_email: str | None) -> Any:
    from helpdesk import workflow

    if as_email:
        tech, email = _technician(store, settings, as_email)
        return workflow.Actor(tech, email, "cli")
    return workflow.Actor(None, _operator(), "cli")


@ticket.command("close")
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--as", "as_email", metavar="EMAIL", help="The technician (default: cli:LOGIN).")
@pass_ctx
def ticket_close(obj: Context, ticket_id: int, as_email: str | None) -> None:
    """Close a ticket now; the requester gets a short mail."""
    from helpdesk import workflow

    def change(store: Any, queue: Any) -> bool:
        actor = _cli_actor(store, obj.settings, as_email)
        return workflow.close(store, obj.settings, queue, ticket_id, actor)

    done = _change(obj, ticket_id, change)
    click.echo(f"ticket #{ticket_id} " + ("closed" if done else "was already closed"))


@ticket.command("reopen")
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--as", "as_email", metavar="EMAIL", help="The technician (default: cli:LOGIN).")
@click.option("--message", "-m", help="Why, as a public entry (needs --as).")
@pass_ctx
def ticket_reopen(obj: Context, ticket_id: int, as_email: str | None, message: str | None) -> None:
    """Reopen a resolved or closed ticket, back to its technician."""
    from helpdesk import workflow

    if message and not as_email:
        raise click.UsageError("--message needs --as EMAIL: the entry has an author")

    def change(store: Any, queue: Any) -> None:
        actor = _cli_actor(store, obj.settings, as_email)
        workflow.reopen(store, obj.settings, queue, ticket_id, actor, body_text=message or "")

    _change(obj, ticket_id, change)
    click.echo(f"ticket #{ticket_id} reopened")


@ticket.command("confirm")
@click.argument("ticket_id", type=TICKET_ID)
@click.argument("entry_id", type=ENTRY_ID)
@AS_TECH
@pass_ctx
def ticket_confirm(obj: Context, ticket_id: int, entry_id: int, as_email: str) -> None:
    """Make an unverified entry public, as if its author had confirmed it (say, by phone)."""
    from helpdesk import workflow
    from helpdesk.notify.kinds import TECH_CONFIRM

    def change(store: Any, queue: Any) -> list[int]:
        tech, email = _technician(store, obj.settings, as_email)
        held = store.scalar(
            "SELECT mail_id FROM article WHERE id = :id AND ticket_id = :ticket"
            " AND unverified = :yes",
            {"id": entry_id, "ticket": ticket_id, "yes": True},
        )
        if held is None:
            raise click.ClickException(f"ticket #{ticket_id} has no unverified entry #{entry_id}")
        if store.scalar(
            "SELECT 1 FROM outbox_message WHERE mail_id = :mail AND kind = :kind",
            {"mail": held, "kind": TECH_CONFIRM},
        ):
            # Its words are a technician's answer, not the requester's: only that
            # technician's reply to our notice sends them.
            raise click.ClickException(
                f"entry #{entry_id} is a technician's note held for want of proof: they answer"
                f" the mail we sent them, or `ticket reply {ticket_id} --as ...`"
            )
        actor = workflow.Actor(tech, email, "cli")
        return workflow.confirm_unverified(store, obj.settings, queue, ticket_id, [held], actor)

    _change(obj, ticket_id, change)
    click.echo(f"entry #{entry_id} of ticket #{ticket_id} confirmed: it is public now")


@ticket.command("spam")
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--as", "as_email", metavar="EMAIL", help="The technician (default: cli:LOGIN).")
@pass_ctx
def ticket_spam(obj: Context, ticket_id: int, as_email: str | None) -> None:
    """Mark a ticket as opened by spam: closed with no mail to anyone, its requester's
    mail marked spam, its private links revoked."""
    from helpdesk import workflow

    def change(store: Any, queue: Any) -> bool:
        actor = _cli_actor(store, obj.settings, as_email)
        return workflow.mark_spam(store, ticket_id, actor)

    done = _change(obj, ticket_id, change)
    if not done:
        raise click.ClickException(f"ticket #{ticket_id} was already marked spam")
    click.echo(f"ticket #{ticket_id} marked spam: closed, nothing sent, its links revoked")


@ticket.command("history")
@click.argument("ticket_id", type=TICKET_ID)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def ticket_history(obj: Context, ticket_id: int, as_json: bool) -> None:
    """Show every change of a ticket: when, who, through which door, what."""
    from sqlalchemy import select

    from helpdesk.models import Ticket
    from helpdesk.models import TicketHistory

    with obj.session() as session:
        if session.get(Ticket, ticket_id) is None:
            raise click.ClickException(f"no ticket #{ticket_id}")
        rows = [
            {
                "at": _iso(h.at),
                "actor": h.actor,
                "door": h.door,
                "action": h.action,
                "old_status": h.old_status,
                "new_status": h.new_status,
                "detail": h.detail,
            }
            for h in session.scalars(
                select(TicketHistory)
                .where(TicketHistory.ticket_id == ticket_id)
                .order_by(TicketHistory.id)
            )
        ]

    def text(rows: list[dict[str, Any]]) -> str:
        lines = []
        for r in rows:
            status = f"{r['old_status'] or '-'} -> {r['new_status']}" if r["new_status"] else ""
            line = f"{r['at']} {r['door']:<9} {r['actor']:<32} {r['action']:<9} {status}"
            lines.append(line.rstrip() + (f"\n    {r['detail']}" if r["detail"] else ""))
        return "\n".join(lines) if lines else "no history"

    _emit(rows, as_json, text)


# -- technicians and groups --------------------------------------------------


@cli.group()
def tech() -> None:
    """Technicians: who serves which group."""


def _store(obj: Context) -> Any:
    from helpdesk.store import Store

    return Store(obj.settings.database_url, obj.settings.busy_timeout)


@tech.command("add")
@click.argument("email")
@click.option("--name", default="", help="Their name, as requesters see it.")
@click.option("--group", "-g", "groups", multiple=True, required=True, help="A group (repeatable).")
@pass_ctx
def tech_add(obj: Context, email: str, name: str, groups: tuple[str, ...]) -> None:
    """Add a technician to one or more groups."""
    from email.utils import parseaddr

    from helpdesk import people
    from helpdesk import workflow
    from helpdesk.store import StoreError

    address = parseaddr(email)[1].lower()
    if "@" not in address or address != email.strip().lower():
        raise click.BadParameter(f"{email!r} is not an address", param_hint="EMAIL")
    try:
        with _store(obj) as store, store.transaction():
            person = workflow.ensure_person(store, address, name)
            if name:
                store.execute(
                    "UPDATE person SET name = :name WHERE id = :id",
                    {"name": name[:200], "id": person},
                )
            added = [g for g in groups if people.add_member(store, person, g)]
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    known = set(_routed_groups(obj))
    for group in groups:
        if group not in known:
            click.echo(f"note: no queue routes to group {group} yet", err=True)
    click.echo(
        f"{address} added to {', '.join(added)}" if added else f"{address} was already in them"
    )


def _routed_groups(obj: Context) -> list[str]:
    """The groups the queues (and their routing rules) send tickets to."""
    groups = []
    for queue in obj.settings.queues.values():
        groups.append(queue.group)
        groups += [route.group for route in queue.routes]
    return groups


@tech.command("remove")
@click.argument("email")
@click.option("--group", "-g", help="Only from this group (default: from every group).")
@pass_ctx
def tech_remove(obj: Context, email: str, group: str | None) -> None:
    """Take a technician out of a group (the config's [groups] are edited in the file)."""
    from helpdesk import people
    from helpdesk.store import StoreError

    try:
        with _store(obj) as store, store.transaction():
            person = store.scalar(
                "SELECT id FROM person WHERE email = :email", {"email": email.strip().lower()}
            )
            count = people.remove_member(store, person, group) if person is not None else 0
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    if not count:
        raise click.ClickException(f"{email} is in no such group of the database")
    click.echo(f"{email} removed from {count} group(s)")


@tech.command("list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def tech_list(obj: Context, as_json: bool) -> None:
    """List the technicians and their groups (from the config and the database)."""
    from helpdesk import people

    with _store(obj) as store:
        groups = people.all_groups(store, obj.settings)
    techs: dict[str, dict[str, Any]] = {}
    for group, members in groups.items():
        for email, name, source in members:
            entry = techs.setdefault(email, {"email": email, "name": name, "groups": []})
            entry["name"] = entry["name"] or name
            entry["groups"].append({"group": group, "source": source})
    rows = sorted(techs.values(), key=lambda t: t["email"])

    def text(rows: list[dict[str, Any]]) -> str:
        lines = [
            f"{r['email']:<36} {r['name'] or '-':<24} "
            + ", ".join(
                f"{g['group']}" + (" (config)" if g["source"] == "config" else "")
                for g in r["groups"]
            )
            for r in rows
        ]
        return "\n".join(lines) if lines else "no technicians"

    _emit(rows, as_json, text)


@cli.group("group")
def group_() -> None:
    """Groups of technicians."""


def _conditions(route: Any) -> str:
    return ", ".join(f"{key}={'|'.join(values)}" for key, values in route.conditions)


@group_.command("list")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def group_list(obj: Context, as_json: bool) -> None:
    """List the groups, the queues they serve and their technicians."""
    from helpdesk import people

    with _store(obj) as store:
        groups = people.all_groups(store, obj.settings)
    rows = []
    for group, members in groups.items():
        queues = [q.name for q in obj.settings.queues.values() if q.group == group]
        routed = [
            f"{q.name} ({_conditions(r)})"
            for q in obj.settings.queues.values()
            for r in q.routes
            if r.group == group
        ]
        rows.append(
            {
                "group": group,
                "queues": queues,
                "routes": routed,
                "technicians": [{"email": e, "name": n, "source": s} for e, n, s in members],
            }
        )

    def text(rows: list[dict[str, Any]]) -> str:
        lines = []
        for r in rows:
            serves = ", ".join(r["queues"] + [f"{x} by rule" for x in r["routes"]]) or "no queue"
            lines.append(f"{r['group']}: {serves}")
            lines += [f"    {t['email']} {t['name']}".rstrip() for t in r["technicians"]]
            if not r["technicians"]:
                lines.append("    (no technician: nobody hears of its tickets)")
        return "\n".join(lines) if lines else "no groups"

    _emit(rows, as_json, text)


# -- directory -------------------------------------------------------------------


@cli.group()
def directory() -> None:
    """The people directory that routing rules read (site, ...)."""


@directory.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", help="Name of this source (default: csv:<file name>).")
@click.option("--prune", is_flag=True, help="Remove this source's entries missing from the file.")
@pass_ctx
def directory_import(obj: Context, csv_file: str, source: str | None, prune: bool) -> None:
    """Import people from a CSV file: columns email, name, site and any others."""
    from pathlib import Path

    from helpdesk.directory import DirectoryError
    from helpdesk.directory import import_csv
    from helpdesk.store import StoreError

    try:
        with _store(obj) as store:
            result = import_csv(store, Path(csv_file), source=source, prune=prune)
    except DirectoryError as exc:
        raise click.ClickException(f"directory: {exc}") from None
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    for line in result.skipped:
        _echo(f"skipped {line}", err=True)
    _echo(str(result))


@directory.command("sync-ldap")
@pass_ctx
def directory_sync_ldap(obj: Context) -> None:
    """Import people from the LDAP directory of [directory.ldap]."""
    from helpdesk import directory_ldap
    from helpdesk.directory import DirectoryError
    from helpdesk.store import StoreError

    try:
        with _store(obj) as store:
            result = directory_ldap.sync(store, obj.settings)
    except DirectoryError as exc:
        raise click.ClickException(f"directory: {exc}") from None
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    for line in result.skipped:
        _echo(f"skipped {line}", err=True)
    _echo(str(result))


@directory.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def directory_show(obj: Context, email: str, as_json: bool) -> None:
    """Show what the directory says of an address, and where each queue routes them."""
    from helpdesk import people
    from helpdesk.ingest.route import route

    with _store(obj) as store:
        entry = people.directory_entry(store, email)
        routes = {
            q.name: route(store, q, email.strip().lower()) for q in obj.settings.queues.values()
        }
    data = {
        "email": email.strip().lower(),
        "entry": entry,
        "routes": {name: {"group": g, "why": why} for name, (g, why) in routes.items()},
    }

    def text(data: dict[str, Any]) -> str:
        entry = data["entry"]
        lines = [
            f"{data['email']}: "
            + (", ".join(f"{k}={v}" for k, v in entry.items()) if entry else "not in the directory")
        ]
        lines += [f"  {name} -> {r['group']} ({r['why']})" for name, r in data["routes"].items()]
        return "\n".join(lines)

    _emit(data, as_json, text)


# -- scheduler ---------------------------------------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list the tickets that would close.")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def autoclose(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Close the tickets resolved autoclose_days ago without an answer (one pass, for cron)."""
    from helpdesk.autoclose import autoclose_pass
    from helpdesk.autoclose import due_tickets
    from helpdesk.autoclose import record_run
    from helpdesk.notify.outbox import flush
    from helpdesk.store import StoreError

    settings = obj.settings
    try:
        with _store(obj) as store:
            if dry_run:
                ids = due_tickets(store, settings)
            else:
                ids = autoclose_pass(store, settings)
                record_run(store, "autoclose", f"{len(ids)} closed")
                if ids:
                    try:
                        flush(store, settings, due_only=True)
                    except Exception as exc:  # noqa: BLE001 - closed; the mail waits
                        _echo(f"closing mail not sent yet, it stays queued: {exc}", err=True)
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    verb = "would close" if dry_run else "closed"
    text = f"{len(ids)} ticket(s) {verb}" + (": " + " ".join(f"#{i}" for i in ids) if ids else "")
    _emit({"dry_run": dry_run, "tickets": ids}, as_json, lambda _data: text)


@cli.command()
@pass_ctx
def scheduler(obj: Context) -> None:
    """Run the periodic jobs (outbox retry, auto-close, link clean-up) until stopped."""
    import logging

    from helpdesk.scheduler import run

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    run(obj.settings)


@cli.command()
@click.option("--socket", "socket_path", help="Unix socket (default: [ingestd] socket).")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Worker processes (default: 2 per CPU)."
)
@pass_ctx
def ingestd(obj: Context, socket_path: str | None, workers: int | None) -> None:
    """Keep the deliver code warm behind a unix socket: `deliver` hands it each mail."""
    from helpdesk.ingestd import IngestdError
    from helpdesk.ingestd import serve

    try:
        sys.exit(serve(obj.settings, socket_path, workers))
    except IngestdError as exc:
        raise click.ClickException(str(exc)) from None


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
@click.option("--verdict", help="Only this verdict (ticket, spam, bulk, duplicate, ...).")
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

    def text(rows: list[dict[str, Any]]) -> str:
        lines = [
            f"#{r['id']:<6} {r['queue']:<16} {r['verdict']:<10} "
            f"{'#' + str(r['ticket_id']) if r['ticket_id'] else '-':<7} {r['sender'] or '-':<32} "
            f"{r['subject'] or ''}" + (f"\n        ({r['reason']})" if r["reason"] else "")
            for r in rows
        ]
        return "\n".join(lines) if lines else "no mail"

    _emit(rows, as_json, text)


@mail.command("release")
@click.argument("mail_id", type=MAIL_ID)
@click.option("--as", "as_email", metavar="EMAIL", help="The technician (default: cli:LOGIN).")
@click.option(
    "--distrust",
    is_flag=True,
    help="Release it for the technicians only: its sender gets no automatic mail.",
)
@pass_ctx
def mail_release(obj: Context, mail_id: int, as_email: str | None, distrust: bool) -> None:
    """Turn a held mail (spam, bulk) into what it would have been: a ticket with its
    acknowledgement, or a follow-up, with their usual mail."""
    from helpdesk.ingest.deliver import ReleaseRefused
    from helpdesk.ingest.deliver import release
    from helpdesk.store import Store
    from helpdesk.store import StoreError

    settings = obj.settings
    try:
        with Store(settings.database_url, settings.busy_timeout) as store:
            by = _cli_actor(store, settings, as_email).label if as_email else _operator()
            outcome = release(store, settings, mail_id, by, distrusted=distrust)
    except ReleaseRefused as exc:
        raise click.ClickException(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    click.echo(f"mail #{mail_id} released: {outcome.message}")


@mail.command("show")
@click.argument("mail_id", type=MAIL_ID)
@click.option(
    "--raw",
    is_flag=True,
    help="Write the stored bytes exactly as received (escaped on a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def mail_show(obj: Context, mail_id: int, raw: bool, as_json: bool) -> None:
    """Show one mail: envelope, verdict and why; or its raw bytes."""
    from sqlalchemy import select

    from helpdesk.models import Article
    from helpdesk.models import Attachment
    from helpdesk.models import MailRaw
    from helpdesk.models import MailRecord
    from helpdesk.models import OutboxMessage

    with obj.session() as session:
        if raw:
            stored = session.get(MailRaw, mail_id)
            if stored is None:
                raise click.ClickException(f"no mail #{mail_id}")
            _raw_out(stored.data)
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
        data["attachments"] = [
            _attachment_row(f)
            for f in session.scalars(
                select(Attachment)
                .join(Article, Article.id == Attachment.article_id)
                .where(Article.mail_id == m.id)
                .order_by(Attachment.id)
            )
        ]
    _emit(data, as_json, _mail_text)


def _mail_text(data: dict[str, Any]) -> str:
    return "\n".join(
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
        + ([f"Attachments: {len(data['attachments'])}"] if data["attachments"] else [])
        + [_attachment_line(f) for f in data["attachments"]]
        + (["Outgoing mail it caused:"] if data["outgoing"] else ["Outgoing mail it caused: none"])
        + [f"  {_outbox_line(o)}" for o in data["outgoing"]]
    )


def _raw_out(data: bytes) -> None:
    """The stored bytes, exactly, to a file or a pipe; escaped on a terminal, which
    would obey the escape sequences a sender put in them."""
    if not sys.stdout.isatty():
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    _echo(data.decode("utf-8", "backslashreplace"))
    click.echo("(escaped for the terminal: redirect or pipe it for the exact bytes)", err=True)


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


# How each MTA takes in a new alias file (README, "Deploy with Postfix" / "Deploy with Exim").
# Never `newaliases`: it compiles as root, and Postfix runs a map's pipes as the owner of the
# compiled map, so every pipe would run as nobody, which cannot open the database.
ALIASES_HEADER = (
    "# helpdesk-pipe queues; the MTA runs these with PATH=/usr/bin:/bin. After each change:",
    "#   Postfix (a map of its own, owned by helpdesk):",
    "#     sudo runuser -u helpdesk -- postalias /etc/helpdesk/postfix/aliases",
    "#     (not newaliases: as root the pipes would run as nobody)",
    "#   Exim (router helpdesk_aliases): nothing, it reads /etc/helpdesk/aliases at each delivery",
)


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
    click.echo("\n".join(ALIASES_HEADER))
    click.echo("\n".join(lines))


@cli.command()
@click.option(
    "--user",
    "-u",
    "user",
    help="The account the MTA runs the pipe as (default: helpdesk, when it exists).",
)
@click.option(
    "--aliases",
    "alias_files",
    multiple=True,
    metavar="FILE",
    help="An alias file to check (repeatable; default: /etc/helpdesk/postfix/aliases, "
    "/etc/helpdesk/aliases, /etc/aliases and /etc/postfix/helpdesk-aliases).",
)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_ctx
def doctor(obj: Context, user: str | None, alias_files: tuple[str, ...], as_json: bool) -> None:
    """Check this installation; print each problem with its fix; exit 1 if mail would suffer."""
    import pwd
    from dataclasses import asdict

    from helpdesk.doctor import DEFAULT_ALIAS_FILES
    from helpdesk.doctor import run_checks

    if user is None:
        try:
            user = pwd.getpwnam("helpdesk").pw_name
        except KeyError:
            user = None
    findings = run_checks(obj.settings, user, alias_files or DEFAULT_ALIAS_FILES)
    lines = []
    for f in findings:
        lines.append(f"{f.level.upper():<5} {f.check:<10} {f.message}")
        if f.fix and f.level != "ok":
            lines.append(f"{'':16}fix: {f.fix}")
    failed = sum(f.level == "fail" for f in findings)
    lines.append(
        f"{failed} problem(s) to fix"
        if failed
        else "no problem found" + (f" (pipe user {user})" if user else "")
    )
    _emit([asdict(f) for f in findings], as_json, lambda _data: "\n".join(lines))
    if failed:
        sys.exit(1)


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
@click.option("--ticket", "ticket_id", type=TICKET_ID, help="Only the mail of this ticket.")
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
    _emit(rows, as_json, lambda rows: "\n".join(map(_outbox_line, rows)) or "no outgoing mail")


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
            if due_only:  # what cron runs in place of the scheduler
                from helpdesk.autoclose import record_run

                record_run(store, "outbox", str(result))
    except StoreError as exc:
        raise click.ClickException(f"database: {exc}") from None
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    click.echo(str(result))
    if result.deferred:
        sys.exit(EX_TEMPFAIL)
