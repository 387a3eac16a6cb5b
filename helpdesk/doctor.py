"""`helpdesk-pipe doctor`: check a live installation, one line per problem with its fix.

Checks what the MTA, the viewer and the scheduler need and would otherwise only
reveal by deferring mail: the config, the database and who may write it, the alias
lines, the groups' technicians, the outgoing mail, the links, the scheduler's last runs,
the ingestd socket.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import socket
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from helpdesk.config import Settings
from helpdesk.files import sqlite_path
from helpdesk.store import Store
from helpdesk.store import StoreError
from helpdesk.store import as_datetime
from helpdesk.store import utcnow

__all__ = ["Finding", "run_checks", "DEFAULT_ALIAS_FILES"]

# The README's files (Postfix's map of its own, Exim's file), then older places.
DEFAULT_ALIAS_FILES = (
    "/etc/helpdesk/postfix/aliases",
    "/etc/helpdesk/aliases",
    "/etc/aliases",
    "/etc/postfix/helpdesk-aliases",
)


@dataclass(frozen=True)
class Finding:
    """One check's result: ok, warn (works, but should change) or fail (breaks mail)."""

    level: str
    check: str
    message: str
    fix: str = ""


def _account(name: str | None) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name) if name else None
    except KeyError:
        return None


def _may(user: pwd.struct_passwd, path: Path, mode: int) -> bool:
    """Tell whether a user could read (4) or write (2) a path, from its owner, group and bits."""
    if user.pw_uid == 0:
        return True
    info = path.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & (mode << 6))
    groups = {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem} | {user.pw_gid}
    if info.st_gid in groups:
        return bool(info.st_mode & (mode << 3))
    return bool(info.st_mode & mode)


def _can_run(user: pwd.struct_passwd, program: Path) -> str | None:
    """Say why a user could not run a program (or its #! interpreter), None if they can."""
    targets = [program]
    try:
        with open(program, "rb") as fh:
            first = fh.readline(512)
        if first.startswith(b"#!"):
            targets.append(Path(first[2:].decode("utf-8", "replace").split()[0]))
    except OSError as exc:
        return f"{program}: {exc.strerror}"
    for target in targets:
        real = target.resolve()  # a venv's python is a link to the real interpreter
        for directory in reversed(real.parents):
            if not _may(user, directory, 1):
                return f"{user.pw_name} cannot enter {directory} (on the way to {real})"
        if not _may(user, real, 1):
            return f"{user.pw_name} cannot execute {real}"
    return None


def _config(settings: Settings, user: pwd.struct_passwd | None) -> list[Finding]:
    path = settings.path
    if path is None:
        return []
    found = [Finding("ok", "config", f"{path} read")]
    if user is not None and not _may(user, path, 4):
        found.append(
            Finding(
                "fail",
                "config",
                f"{user.pw_name} cannot read {path}: the pipe would defer every mail",
                f"chgrp {user.pw_name} {path} && chmod 640 {path}",
            )
        )
    if path.stat().st_mode & stat.S_IROTH and settings.secret_key:
        found.append(
            Finding(
                "warn",
                "config",
                f"{path} is world-readable and may hold secrets (secret key, passwords)",
                f"chmod o-rwx {path}",
            )
        )
    return found


def _database(settings: Settings, user: pwd.struct_passwd | None) -> list[Finding]:
    from helpdesk.migrate import current_revision
    from helpdesk.migrate import head_revision

    found = []
    try:
        with Store(settings.database_url, min(settings.busy_timeout, 10)) as store:
            with store.transaction():  # a write lock, released at once
                store.scalar("SELECT COUNT(*) FROM mail_record")
    except StoreError as exc:
        fix = (
            "helpdesk-pipe init"
            if "no such table" in str(exc) or "does not exist" in str(exc)
            else "check [database] url and that the server runs"
        )
        return [Finding("fail", "database", f"cannot use the database: {exc}", fix)]
    found.append(Finding("ok", "database", "reachable, a write transaction works"))
    current, head = current_revision(settings), head_revision()
    if current != head:
        found.append(
            Finding(
                "fail",
                "database",
                f"schema at revision {current or 'none'}, this version needs {head}",
                "helpdesk-pipe init",
            )
        )
    path = sqlite_path(settings.database_url)
    if path is not None:
        database = Path(path)
        for target in (database, database.parent):
            if user is not None and target.exists() and not _may(user, target, 2):
                found.append(
                    Finding(
                        "fail",
                        "database",
                        f"{user.pw_name} cannot write {target}: the pipe would defer every mail",
                        f"chown -R {user.pw_name}: {database.parent} && chmod 750"
                        f" {database.parent}",
                    )
                )
        if database.exists() and database.stat().st_mode & stat.S_IROTH:
            found.append(
                Finding(
                    "fail",
                    "database",
                    f"{database} is world-readable: every mail and attachment is",
                    f"chmod o-rwx {database} {database.parent}",
                )
            )
    return found


_PIPE = re.compile(r'^\s*([^#:\s]+)\s*:\s*"?\|(.*?)"?\s*$')


def _aliases(
    settings: Settings, files: tuple[str, ...], user: pwd.struct_passwd | None
) -> list[Finding]:
    """Find our alias lines; check their command, config and queue."""
    found = []
    served: set[str] = set()
    seen_file = False
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue
        seen_file = True
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            found.append(Finding("warn", "aliases", f"{path}: {exc.strerror}"))
            continue
        for number, line in enumerate(lines, start=1):
            match = _PIPE.match(line)
            if not match or "helpdesk-pipe" not in match.group(2):
                continue
            where = f"{path}:{number} ({match.group(1)})"
            try:
                words = shlex.split(match.group(2))
            except ValueError as exc:
                found.append(Finding("fail", "aliases", f"{where}: {exc}", "helpdesk-pipe aliases"))
                continue
            command = Path(words[0]) if words else Path("")
            problems = []
            if not command.is_absolute():
                problems.append(f"{words[0]} is not an absolute path (the MTA's PATH is short)")
            elif not os.access(command, os.X_OK):
                problems.append(f"{command} is not an executable file")
            elif user is not None and (why := _can_run(user, command)):
                problems.append(f"{why}: install in a venv of Debian's python3 (/opt/helpdesk)")
            if "--config" in words[:-1]:
                config = words[words.index("--config") + 1]
                if settings.path and Path(config).resolve() != settings.path.resolve():
                    problems.append(f"it uses {config}, not {settings.path}")
            if "--queue" in words[:-1]:
                queue = words[words.index("--queue") + 1]
                if queue not in settings.queues:
                    problems.append(f"queue {queue} is not in the config")
                served.add(queue)
            for problem in problems:
                found.append(
                    Finding(
                        "fail",
                        "aliases",
                        f"{where}: {problem}",
                        "replace the line by the one `helpdesk-pipe aliases` prints (Postfix:"
                        " then postalias it as helpdesk, never newaliases)",
                    )
                )
            if not problems:
                found.append(Finding("ok", "aliases", f"{where} pipes into {command}"))
    if not seen_file:
        return [Finding("warn", "aliases", f"none of {', '.join(files)} exists")]
    for queue in sorted(set(settings.queues) - served):
        found.append(
            Finding(
                "warn",
                "aliases",
                f"no alias line delivers to queue {queue}",
                "add the line `helpdesk-pipe aliases` prints for it",
            )
        )
    return found


def _outgoing(settings: Settings) -> list[Finding]:
    out = settings.outgoing
    found = []
    if not settings.secret_key:
        found.append(
            Finding(
                "fail",
                "mail",
                "[security] secret_key is not set: mail that needs an answer is deferred",
                "python3 -c 'import secrets; print(secrets.token_hex(32))' >"
                " /etc/helpdesk/secret_key, and secret_key_file = that file",
            )
        )
    if out.transport == "smtp":
        try:
            with socket.create_connection((out.host, out.port), timeout=5):
                pass
            found.append(Finding("ok", "mail", f"SMTP server {out.host}:{out.port} answers"))
        except OSError as exc:
            found.append(
                Finding(
                    "fail",
                    "mail",
                    f"SMTP server {out.host}:{out.port} unreachable: {exc}",
                    "set [outgoing] host and port to your MTA's submission service",
                )
            )
    elif out.transport == "sendmail":
        if os.access(out.sendmail, os.X_OK):
            found.append(Finding("ok", "mail", f"{out.sendmail} is there"))
        else:
            found.append(
                Finding("fail", "mail", f"{out.sendmail} is not executable", "install the MTA")
            )
    else:
        found.append(
            Finding(
                "warn",
                "mail",
                f"[outgoing] transport = directory: mail is written to {out.directory}, never sent",
                'transport = "smtp" or "sendmail" to send it',
            )
        )
    if settings.base_url in ("http://localhost:8080", "http://127.0.0.1:8080"):
        found.append(
            Finding(
                "fail",
                "links",
                f"[web] base_url is {settings.base_url}: requesters' links would not open",
                'base_url = "https://helpdesk.your.domain" (the viewer behind your proxy)',
            )
        )
    elif not settings.base_url.startswith("https://"):
        found.append(
            Finding("warn", "links", f"{settings.base_url} is not https: tokens travel in clear")
        )
    else:
        found.append(Finding("ok", "links", f"links start with {settings.base_url}"))
    return found


def _scheduler(settings: Settings) -> list[Finding]:
    try:
        with Store(settings.database_url, min(settings.busy_timeout, 10)) as store:
            with store.transaction():  # turns driver errors into StoreError
                rows = {
                    job: (host, finished)
                    for job, host, finished in store.execute(
                        "SELECT job, host, finished_at FROM job_run"
                    ).fetchall()
                }
    except StoreError:
        return []  # the database check said why
    found = []
    now = utcnow()
    for job, every, cron in (
        ("outbox", settings.schedule.outbox_every, "outbox flush --due-only"),
        ("autoclose", settings.schedule.autoclose_every, "autoclose"),
    ):
        fix = f"systemctl enable --now helpdesk-scheduler, or cron `helpdesk-pipe {cron}`"
        if job not in rows:
            found.append(Finding("fail", "scheduler", f"the {job} job has never run", fix))
            continue
        host, finished = rows[job]
        age = now - as_datetime(finished)
        if age < -timedelta(minutes=5):
            ahead = timedelta(seconds=round(-age.total_seconds()))
            # A clock ahead (or a row written by hand) would hide a stopped scheduler
            # until that date: the job would look fresh all along.
            found.append(
                Finding(
                    "fail",
                    "scheduler",
                    f"the {job} job's last run is dated {ahead} in the future ({finished}"
                    f" on {host})",
                    f"fix the clock of {host} (timedatectl), then run `helpdesk-pipe {cron}`"
                    " once, which records the real time",
                )
            )
            continue
        # Cron users may run a job hourly: a day's silence is a stopped scheduler.
        if age > max(timedelta(seconds=3 * every), timedelta(hours=2)):
            found.append(
                Finding("fail", "scheduler", f"the {job} job last ran {age} ago on {host}", fix)
            )
        else:
            found.append(Finding("ok", "scheduler", f"the {job} job ran {age} ago on {host}"))
    return found


def _technicians(settings: Settings) -> list[Finding]:
    """Groups with nobody in them: the tickets they get alert no one."""
    from helpdesk.people import all_groups

    try:
        with Store(settings.database_url, min(settings.busy_timeout, 10)) as store:
            with store.transaction():
                groups = all_groups(store, settings)
    except StoreError:
        return []  # the database check said why
    found = []
    for group, members in groups.items():
        if members:
            continue
        queues = [q.name for q in settings.queues.values() if q.group == group]
        routed = [
            q.name for q in settings.queues.values() if any(r.group == group for r in q.routes)
        ]
        if not queues and not routed:
            continue  # a group of the database that serves nothing any more
        what = []
        if queues:
            what.append(f"the new tickets of queue{'s' * (len(queues) > 1)} {', '.join(queues)}")
        if routed:
            what.append(f"the tickets routed to it from {', '.join(routed)}")
        found.append(
            Finding(
                "fail",
                "groups",
                f"group {group} has no technician: {' and '.join(what)} alert nobody",
                f"technicians = [...] under [groups.{group}], or"
                f" `helpdesk-pipe tech add EMAIL --group {group}`",
            )
        )
    if not found:
        found.append(Finding("ok", "groups", f"each of the {len(groups)} groups has a technician"))
    return found


def _ingestd(settings: Settings, user: pwd.struct_passwd | None) -> list[Finding]:
    from helpdesk.ingest.client import PROTOCOL
    from helpdesk.ingest.client import config_socket
    from helpdesk.ingest.client import introduction

    path = settings.ingestd.socket
    found = []
    seen = config_socket(str(settings.path)) if settings.path else path
    if seen != path:
        found.append(
            Finding(
                "warn",
                "ingestd",
                f"the pipe reads the socket as {seen}, not {path}: it will never use ingestd",
                f'write `socket = "{path}"` on its own line under [ingestd]',
            )
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(5)
        probe.connect(path)
        # Introduce ourselves as the pipe would (this config), then leave before the mail.
        probe.sendall(introduction(str(settings.path) if settings.path else "", None))
        greeting = probe.recv(512)
    except OSError as exc:
        return [
            *found,
            Finding(
                "warn",
                "ingestd",
                f"nothing answers on {path} ({exc.strerror or exc}): every mail is delivered"
                " in its own process, several times slower",
                "systemctl enable --now helpdesk-ingestd",
            ),
        ]
    finally:
        probe.close()
    if greeting.startswith(b"R "):
        return [
            *found,
            Finding(
                "fail",
                "ingestd",
                f"the ingestd on {path} serves another configuration: every mail is delivered"
                " in its own process",
                "give each config its own [ingestd] socket",
            ),
        ]
    if not greeting.startswith(PROTOCOL + b" "):
        return [*found, Finding("fail", "ingestd", f"{path} answers, but not as ingestd")]
    if user is not None and not (_may(user, Path(path), 6) and _may(user, Path(path).parent, 1)):
        found.append(
            Finding(
                "warn",
                "ingestd",
                f"{user.pw_name} cannot reach {path}: its mail is delivered in process",
                "run ingestd as that user (etc/systemd/helpdesk-ingestd.service)",
            )
        )
    else:
        found.append(Finding("ok", "ingestd", f"ingestd answers on {path}"))
    return found


def run_checks(
    settings: Settings, user: str | None, alias_files: tuple[str, ...] = DEFAULT_ALIAS_FILES
) -> list[Finding]:
    """Run every check; `user` is the account the MTA runs the pipe as."""
    account = _account(user)
    found = []
    if user and account is None:
        found.append(
            Finding(
                "fail",
                "user",
                f"no account {user}",
                "adduser --system --group --home /var/lib/helpdesk helpdesk",
            )
        )
    found += _config(settings, account)
    found += _database(settings, account)
    found += _technicians(settings)
    found += _aliases(settings, alias_files, account)
    found += _outgoing(settings)
    found += _scheduler(settings)
    found += _ingestd(settings, account)
    return found
