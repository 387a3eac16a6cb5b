"""One Settings object: the TOML file plus HELPDESK_* environment overrides.

Stdlib only: the pipe loads this on every delivery.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from helpdesk.files import sqlite_path
from helpdesk.paths import DEFAULT_CONFIG_PATH
from helpdesk.paths import DEFAULT_INGESTD_SOCKET

__all__ = [
    "ConfigError",
    "Ingestd",
    "Limits",
    "Outgoing",
    "Queue",
    "Route",
    "Schedule",
    "Settings",
    "Spam",
    "SpamHeader",
    "load_settings",
    "DEFAULT_CONFIG_PATH",
]

DEFAULT_MAX_SIZE = 25 * 1024 * 1024
DEFAULT_PARSE_BUDGET_S = 60.0
# How many of a ticket's Cc participants its answers and resolution are mailed to: a
# request copied to a hundred addresses must not carry a technician's answer to them all.
DEFAULT_NOTIFY_CC_MAX = 10
_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_MAKE_KEY = (
    "use at least 16 characters, made with: "
    "python3 -c 'import secrets; print(secrets.token_hex(32))'"
)


class ConfigError(Exception):
    """The configuration cannot be read or makes no sense; a sysadmin must fix it."""


@dataclass(frozen=True)
class Route:
    """A routing rule of a queue: requesters whose directory attributes match every
    condition (any of the values, case-insensitive) go to `group`."""

    group: str
    conditions: tuple[tuple[str, tuple[str, ...]], ...]

    def matches(self, attributes: dict[str, str]) -> bool:
        """Tell whether a requester's directory attributes satisfy every condition."""
        return all(
            (attributes.get(key) or "").strip().casefold() in values
            for key, values in self.conditions
        )


@dataclass(frozen=True)
class Queue:
    """A support alias: where its mail lands and who serves it."""

    name: str
    addresses: tuple[str, ...]
    group: str
    language: str = "fr"
    display_name: str = ""
    # Tried in order before `group`: the first rule the requester matches wins.
    routes: tuple[Route, ...] = ()

    def address(self, domain: str) -> str:
        """The address our mail for this queue comes from."""
        return self.addresses[0] if self.addresses else f"{self.name}@{domain}"

    def matches(self, address: str) -> bool:
        """Tell whether an envelope recipient (any case, any +extension) is this queue's."""
        local, domain = _split_address(address)
        local = local.split("+", 1)[0]
        for own in self.addresses:
            own_local, own_domain = _split_address(own)
            if local == own_local and (not own_domain or not domain or own_domain == domain):
                return True
        return False


@dataclass(frozen=True)
class Outgoing:
    """How outgoing mail leaves: [outgoing] in the config."""

    transport: str = "smtp"  # smtp | sendmail | directory
    host: str = "localhost"
    port: int = 25
    security: str = "none"  # none | starttls | tls
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    sendmail: str = "/usr/sbin/sendmail"
    directory: str | None = None


@dataclass(frozen=True)
class Schedule:
    """How often `helpdesk-pipe scheduler` runs each job, in seconds: [scheduler]."""

    outbox_every: int = 60
    autoclose_every: int = 600
    cleanup_every: int = 3600


@dataclass(frozen=True)
class Ingestd:
    """The warm delivery service, `helpdesk-pipe ingestd`: [ingestd] in the config."""

    # helpdesk.ingest.client reads this one key without tomllib (see there).
    socket: str = DEFAULT_INGESTD_SOCKET
    workers: int = 0  # 0: two per CPU
    # A worker whose resident memory passed this after a mail is replaced.
    max_rss_mb: int = 300
    # A client that stops sending for this long loses its worker (it falls back).
    read_timeout: int = 60
    # Workers are replaced after this many mails, whatever their memory.
    max_requests: int = 5000

    def worker_count(self) -> int:
        """How many workers to fork: the setting, else two per CPU (they wait on fsync)."""
        return self.workers or 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Limits:
    """Caps on mail to one address: [limits] in the config (notify/ratecap.py).

    per_hour and per_day cap automatic mail; loop_per_hour and loop_per_day cap
    all mail to one address about one ticket, a person's words included.
    """

    per_hour: int = 10
    per_day: int = 40
    loop_per_hour: int = 60
    loop_per_day: int = 200


@dataclass(frozen=True)
class SpamHeader:
    """A header the sysadmin's filter writes: spam when its value matches `pattern`
    (a regular expression, case-insensitive), or when its first number reaches
    `threshold`."""

    name: str
    pattern: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class Spam:
    """Which spam verdicts of the MTA's filter hold a mail: [spam] in the config."""

    spamassassin: bool = True  # X-Spam-Flag: YES, X-Spam-Status: Yes, ...
    rspamd: bool = True  # X-Spam: Yes, X-Spamd-Result: ... [s / r], X-Rspamd-Action
    headers: tuple[SpamHeader, ...] = ()


def _split_address(address: str) -> tuple[str, str]:
    """Split into (local part, domain), lower-cased; a bare name has no domain."""
    local, at, domain = address.strip().lower().rpartition("@")
    return (local, domain) if at else (domain, "")


@dataclass(frozen=True)
class Settings:
    """Everything the commands need to know, read once per process."""

    database_url: str
    path: Path | None = None
    busy_timeout: float = 30.0
    max_size: int = DEFAULT_MAX_SIZE
    # Seconds one mail may take to be parsed and classified; past them it is kept raw.
    parse_budget_s: float = DEFAULT_PARSE_BUDGET_S
    queues: dict[str, Queue] = field(default_factory=dict)
    log_file: str | None = None
    groups: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    outgoing: Outgoing = field(default_factory=Outgoing)
    limits: Limits = field(default_factory=Limits)
    spam: Spam = field(default_factory=Spam)
    secret_key: str = ""
    base_url: str = "http://localhost:8080"
    mail_domain: str = ""
    instance: str = ""
    subject_tag: str = "HD"
    templates: str | None = None
    trusted_authserv_ids: tuple[str, ...] = ()
    link_days_after_close: int = 30
    timezone: str = "Europe/Paris"
    trusted_proxies: int = 0
    failed_lookups_per_minute: int = 20
    autoclose_days: int = 15
    # A requester's reply that only says thank you leaves a resolved ticket resolved.
    reopen_on_thanks: bool = False
    # [tickets]: who of the people copied on a request hears of its answers.
    notify_cc: bool = True
    notify_cc_domains: tuple[str, ...] = ()  # empty: any domain
    notify_cc_max: int = DEFAULT_NOTIFY_CC_MAX
    schedule: Schedule = field(default_factory=Schedule)
    ingestd: Ingestd = field(default_factory=Ingestd)
    # [directory.ldap] as written: helpdesk.directory_ldap checks it when used.
    ldap: dict = field(default_factory=dict)

    def signing_key(self) -> str:
        """The secret that signs reply addresses; ConfigError when none is set."""
        if not self.secret_key:
            raise ConfigError(f"{self.path}: [security] secret_key is not set: {_MAKE_KEY}")
        return self.secret_key

    def technicians(self, queue: Queue) -> tuple[tuple[str, str], ...]:
        """The (email, name) of the technicians the config puts in a queue's default
        group (helpdesk.people adds those of the database and of routed groups)."""
        return self.groups.get(queue.group, ())

    def domain_for(self, queue: Queue) -> str:
        """The domain of our Message-IDs and reply addresses for a queue."""
        if self.mail_domain:
            return self.mail_domain
        for address in queue.addresses:
            local, domain = _split_address(address)
            if domain:
                return domain
        return "localhost"

    def queue_for(self, recipient: str) -> Queue | None:
        """Find the queue whose address matches an envelope recipient."""
        for queue in self.queues.values():
            if queue.matches(recipient):
                return queue
        return None


def _resolve_sqlite(url: str, base: Path | None) -> str:
    """Make a relative SQLite path relative to the config file, not to the MTA's cwd."""
    path = sqlite_path(url)
    if path is None or base is None or os.path.isabs(path):
        return url
    return "sqlite:///" + quote(str((base / path).resolve()))


def _queues(raw: dict) -> dict[str, Queue]:
    queues: dict[str, Queue] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[queues.{name}] must be a table")
        if not _QUEUE_NAME.fullmatch(name):
            raise ConfigError(f"queue name {name!r}: use 1-100 letters, digits, '.', '_' or '-'")
        addresses: Any = spec.get("addresses", spec.get("address", []))
        if isinstance(addresses, str):
            addresses = [addresses]
        language = str(spec.get("language", "fr"))
        if language not in ("fr", "en"):
            raise ConfigError(f"[queues.{name}] language must be 'fr' or 'en', not {language!r}")
        queues[name] = Queue(
            name=name,
            addresses=tuple(str(a) for a in addresses),
            group=str(spec.get("group", name)),
            language=language,
            display_name=str(spec.get("display_name", name)),
            routes=_routes(spec.get("routes", []), name),
        )
    return queues


def _routes(raw: object, queue: str) -> tuple[Route, ...]:
    where = f"[queues.{queue}] routes"
    if not isinstance(raw, list):
        raise ConfigError(f'{where} must be a list of tables like {{ site = "Ifs", group = "g" }}')
    routes = []
    for rule in raw:
        if not isinstance(rule, dict) or not isinstance(rule.get("group"), str):
            raise ConfigError(
                f'{where}: every rule needs a group, as in {{ site = "Ifs", group = "g" }}'
            )
        conditions = []
        for key, value in rule.items():
            if key == "group":
                continue
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{where}: {key} must be a text or a list of texts")
            conditions.append((key, tuple(v.strip().casefold() for v in values)))
        if not conditions:
            raise ConfigError(f"{where}: a rule for group {rule['group']!r} has no condition")
        routes.append(Route(group=rule["group"], conditions=tuple(conditions)))
    return tuple(routes)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the config: PATH, else $HELPDESK_CONFIG, else /etc/helpdesk/helpdesk.toml.

    $HELPDESK_DATABASE_URL overrides the database URL. Raises ConfigError.
    """
    chosen = path or os.environ.get("HELPDESK_CONFIG") or DEFAULT_CONFIG_PATH
    config_path = Path(chosen)
    try:
        with open(config_path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {config_path} not found") from None
    except PermissionError:
        raise ConfigError(f"config file {config_path} is not readable by this user") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {config_path}: {exc}") from None
    base = config_path.resolve().parent
    database = _table(data, "database", config_path)
    mail = _table(data, "mail", config_path)
    log = _table(data, "log", config_path)
    url = os.environ.get("HELPDESK_DATABASE_URL") or database.get("url")
    if not url or not isinstance(url, str):
        raise ConfigError(f"{config_path}: [database] url is not set")
    busy_timeout = database.get("busy_timeout", 30)
    if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
        raise ConfigError(f"{config_path}: [database] busy_timeout must be a number of seconds")
    if not 0 < busy_timeout < 86400:
        raise ConfigError(f"{config_path}: [database] busy_timeout must be between 0 and 86400")
    max_size = mail.get("max_size", DEFAULT_MAX_SIZE)
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
        raise ConfigError(f"{config_path}: [mail] max_size must be a positive number of bytes")
    parse_budget = mail.get("parse_budget_s", DEFAULT_PARSE_BUDGET_S)
    if (
        isinstance(parse_budget, bool)
        or not isinstance(parse_budget, int | float)
        or not 0 < parse_budget <= 3600
    ):
        raise ConfigError(
            f"{config_path}: [mail] parse_budget_s must be a number of seconds, over 0 and"
            " at most 3600"
        )
    log_file = log.get("file")
    if log_file is not None and not isinstance(log_file, str):
        raise ConfigError(f"{config_path}: [log] file must be a path")
    web = _table(data, "web", config_path)
    base_url = _string(web, "base_url", "web", config_path) or "http://localhost:8080"
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{config_path}: [web] base_url must start with http:// or https://")
    queues = _queues(_table(data, "queues", config_path))
    mail_domain = (_string(mail, "domain", "mail", config_path) or "").lower()
    authserv = mail.get("trusted_authserv_ids", [])
    if isinstance(authserv, str):
        authserv = [authserv]
    if not isinstance(authserv, list) or not all(isinstance(a, str) for a in authserv):
        raise ConfigError(f"{config_path}: [mail] trusted_authserv_ids must be a list of names")
    tag = _string(mail, "subject_tag", "mail", config_path) or "HD"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,30}", tag):
        raise ConfigError(
            f"{config_path}: [mail] subject_tag: use 1-30 letters, digits, '.', '_', '-'"
        )
    templates = _string(mail, "templates", "mail", config_path)
    cc = _table(data, "tickets", config_path)
    notify_cc = cc.get("notify_cc", True)
    if not isinstance(notify_cc, bool):
        raise ConfigError(f"{config_path}: [tickets] notify_cc must be true or false")
    cc_domains = cc.get("notify_cc_domains", [])
    if isinstance(cc_domains, str):
        cc_domains = [cc_domains]
    if not isinstance(cc_domains, list) or not all(
        isinstance(d, str) and d.strip().lstrip("@") for d in cc_domains
    ):
        raise ConfigError(
            f"{config_path}: [tickets] notify_cc_domains must be a list of domains, as in"
            ' ["univ.example"]'
        )
    if templates and not os.path.isabs(templates):
        templates = str(base / templates)
    return Settings(
        database_url=_resolve_sqlite(url, base),
        path=config_path,
        busy_timeout=float(busy_timeout),
        max_size=max_size,
        parse_budget_s=float(parse_budget),
        queues=queues,
        log_file=log_file,
        groups=_groups(_table(data, "groups", config_path), config_path),
        outgoing=_outgoing(_table(data, "outgoing", config_path), base, config_path),
        limits=_limits(_table(data, "limits", config_path), config_path),
        spam=_spam(_table(data, "spam", config_path), config_path),
        secret_key=_secret_key(_table(data, "security", config_path), base, config_path),
        base_url=base_url.rstrip("/"),
        mail_domain=mail_domain,
        instance=_string(mail, "instance", "mail", config_path) or os.uname().nodename,
        subject_tag=tag,
        templates=templates,
        trusted_authserv_ids=tuple(a.strip().lower() for a in authserv),
        link_days_after_close=_whole(web, "link_days_after_close", 30, "web", config_path),
        failed_lookups_per_minute=_whole(web, "failed_lookups_per_minute", 20, "web", config_path),
        timezone=_string(web, "timezone", "web", config_path) or "Europe/Paris",
        trusted_proxies=_whole(web, "trusted_proxies", 0, "web", config_path),
        autoclose_days=_whole(
            _table(data, "tickets", config_path), "autoclose_days", 15, "tickets", config_path
        ),
        reopen_on_thanks=_flag(
            _table(data, "tickets", config_path), "reopen_on_thanks", False, "tickets", config_path
        ),
        notify_cc=notify_cc,
        notify_cc_domains=tuple(d.strip().lstrip("@").lower() for d in cc_domains),
        notify_cc_max=_whole(cc, "notify_cc_max", DEFAULT_NOTIFY_CC_MAX, "tickets", config_path),
        schedule=_schedule(_table(data, "scheduler", config_path), config_path),
        ingestd=_ingestd(_table(data, "ingestd", config_path), config_path),
        ldap=_table(_table(data, "directory", config_path), "ldap", config_path),
    )


def _schedule(raw: dict, config_path: Path) -> Schedule:
    values = {}
    for key in ("outbox_every", "autoclose_every", "cleanup_every"):
        values[key] = _whole(raw, key, getattr(Schedule, key), "scheduler", config_path)
        if values[key] < 1:
            raise ConfigError(f"{config_path}: [scheduler] {key} must be at least 1 second")
    return Schedule(**values)


def _ingestd(raw: dict, config_path: Path) -> Ingestd:
    socket = _string(raw, "socket", "ingestd", config_path) or DEFAULT_INGESTD_SOCKET
    if not os.path.isabs(socket):
        raise ConfigError(f"{config_path}: [ingestd] socket must be an absolute path")
    values = {
        key: _whole(raw, key, getattr(Ingestd, key), "ingestd", config_path)
        for key in ("workers", "max_rss_mb", "read_timeout", "max_requests")
    }
    for key in ("read_timeout", "max_requests"):
        if values[key] < 1:
            raise ConfigError(f"{config_path}: [ingestd] {key} must be at least 1")
    return Ingestd(socket=socket, **values)


def _whole(table: dict, key: str, default: int, name: str, config_path: Path) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{config_path}: [{name}] {key} must be a whole number >= 0")
    return value


def _flag(table: dict, key: str, default: bool, name: str, config_path: Path) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{config_path}: [{name}] {key} must be true or false")
    return value


def _string(table: dict, key: str, name: str, config_path: Path) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{config_path}: [{name}] {key} must be a string")
    return value


def _number(table: dict, key: str, default: float, name: str, config_path: Path) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{config_path}: [{name}] {key} must be a positive number")
    return value


def _groups(raw: dict, config_path: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    from email.utils import parseaddr

    groups = {}
    for name, spec in raw.items():
        members = spec.get("technicians", []) if isinstance(spec, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(
                f"{config_path}: [groups.{name}] technicians must be a list of addresses"
            )
        people = []
        for member in members:
            display, address = parseaddr(member)
            if "@" not in address:
                raise ConfigError(f"{config_path}: [groups.{name}] {member!r} is not an address")
            people.append((address.lower(), display))
        groups[name] = tuple(people)
    return groups


def _outgoing(raw: dict, base: Path, config_path: Path) -> Outgoing:
    transport = _string(raw, "transport", "outgoing", config_path) or "smtp"
    if transport not in ("smtp", "sendmail", "directory"):
        raise ConfigError(
            f"{config_path}: [outgoing] transport must be smtp, sendmail or directory"
        )
    security = _string(raw, "security", "outgoing", config_path) or "none"
    if security not in ("none", "starttls", "tls"):
        raise ConfigError(f"{config_path}: [outgoing] security must be none, starttls or tls")
    directory = _string(raw, "directory", "outgoing", config_path)
    if transport == "directory" and not directory:
        raise ConfigError(f"{config_path}: [outgoing] transport directory needs a directory")
    if directory and not os.path.isabs(directory):
        directory = str(base / directory)
    port = raw.get("port", 465 if security == "tls" else 25)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{config_path}: [outgoing] port must be a TCP port number")
    return Outgoing(
        transport=transport,
        host=_string(raw, "host", "outgoing", config_path) or "localhost",
        port=port,
        security=security,
        username=_string(raw, "username", "outgoing", config_path),
        password=_string(raw, "password", "outgoing", config_path),
        timeout=float(_number(raw, "timeout", 30, "outgoing", config_path)) or 30.0,
        sendmail=_string(raw, "sendmail", "outgoing", config_path) or "/usr/sbin/sendmail",
        directory=directory,
    )


def _limits(raw: dict, config_path: Path) -> Limits:
    return Limits(
        **{
            key: _whole(raw, key, getattr(Limits, key), "limits", config_path)
            for key in ("per_hour", "per_day", "loop_per_hour", "loop_per_day")
        }
    )


def _spam(raw: dict, config_path: Path) -> Spam:
    where = f"{config_path}: [spam]"
    switches = {}
    for key in ("spamassassin", "rspamd"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise ConfigError(f"{where} {key} must be true or false")
        switches[key] = value
    rules = raw.get("headers", [])
    example = '{ name = "X-Spam-Score", threshold = 5.0 } or { name = "...", pattern = "^yes" }'
    if not isinstance(rules, list):
        raise ConfigError(f"{where} headers must be a list of tables like {example}")
    headers = []
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("name"), str):
            raise ConfigError(f"{where} headers: every entry needs a name, as in {example}")
        name = rule["name"].strip()
        if not re.fullmatch(r"[!-9;-~]{1,100}", name):
            raise ConfigError(f"{where} headers: {name!r} is not a header name")
        pattern, threshold = rule.get("pattern"), rule.get("threshold")
        if (pattern is None) == (threshold is None) or set(rule) - {"name", "pattern", "threshold"}:
            raise ConfigError(f"{where} headers: {name} needs a pattern or a threshold (one)")
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"{where} headers: {name} pattern must be a text")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where} headers: {name} pattern: {exc}") from None
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, int | float)
        ):
            raise ConfigError(f"{where} headers: {name} threshold must be a number")
        headers.append(
            SpamHeader(
                name=name,
                pattern=pattern,
                threshold=None if threshold is None else float(threshold),
            )
        )
    return Spam(headers=tuple(headers), **switches)


def _secret_key(raw: dict, base: Path, config_path: Path) -> str:
    key = _string(raw, "secret_key", "security", config_path)
    key_file = _string(raw, "secret_key_file", "security", config_path)
    if not key and key_file:
        path = Path(key_file) if os.path.isabs(key_file) else base / key_file
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{config_path}: [security] secret_key_file: {exc}") from None
    if key and len(key) < 16:
        raise ConfigError(f"{config_path}: [security] secret_key is too short: {_MAKE_KEY}")
    return key or ""


def _table(data: dict, name: str, config_path: Path) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{config_path}: [{name}] must be a table")
    return value
