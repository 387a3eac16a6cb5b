"""The requester directory from an LDAP server: `helpdesk-pipe directory sync-ldap`.

Reads the people of `[directory.ldap]` and imports them as the source "ldap"
(helpdesk.directory.import_rows), removing the LDAP entries that left the server;
entries of other sources (a CSV import) are left alone. The keys:

    url = "ldaps://ldap.univ.example"     # ldap:// or ldaps://, an optional :port
    base = "ou=people,dc=univ,dc=example"
    bind_dn = "cn=helpdesk,ou=services,dc=univ,dc=example"   # absent: anonymous bind
    bind_password_file = "ldap-password"  # or bind_password; relative to the config file
    filter = "(mail=*)"
    attributes = { site = "physicalDeliveryOfficeName" }     # our column = LDAP attribute
    starttls = false                      # upgrade an ldap:// connection to TLS
    ca_file = "/etc/ssl/certs/univ-ca.pem"  # CAs to trust, instead of the system's
    timeout = 10                          # seconds to connect, and to wait for each answer
    page_size = 500                       # entries per page of the paged search

`attributes` adds to (or overrides) the columns email = "mail" and name = "cn"; a
multi-valued attribute gives its first value. The search is paged, so a directory
larger than the server's size limit arrives whole (OpenLDAP refuses pages larger than
its size.pr limit: lower page_size then; Active Directory caps them at 1000). A search
cut short, or one that finds nobody, raises instead of importing: pruning after a
partial answer would delete real people. The wait for an answer is rounded up to whole
seconds (ldap3 sets it so).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from helpdesk.config import Settings
from helpdesk.directory import DirectoryError
from helpdesk.directory import ImportResult
from helpdesk.directory import import_rows
from helpdesk.store import Store

__all__ = ["SOURCE", "LdapOptions", "read_options", "fetch_rows", "sync"]

SOURCE = "ldap"
DEFAULT_ATTRIBUTES = {"email": "mail", "name": "cn"}
KNOWN_KEYS = (
    "url",
    "base",
    "bind_dn",
    "bind_password",
    "bind_password_file",
    "filter",
    "attributes",
    "starttls",
    "ca_file",
    "timeout",
    "page_size",
)
_WHERE = "[directory.ldap]"
# A column name as import_rows stores it, and an LDAP attribute description
# (a name or an OID, with options such as ";lang-fr").
_COLUMN = re.compile(r"[a-z0-9_-]{1,64}")
_ATTRIBUTE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)(?:;[A-Za-z0-9-]+)*")
# import_rows numbers rows from 2, as the lines of a CSV with its header.
_SKIPPED_LINE = re.compile(r"line (\d+): ")


@dataclass(frozen=True)
class LdapOptions:
    """`[directory.ldap]` checked and completed with its defaults."""

    url: str
    host: str
    port: int
    use_ssl: bool
    base: str
    bind_dn: str | None = None
    password: str | None = field(default=None, repr=False)
    filter: str = "(mail=*)"
    attributes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    starttls: bool = False
    ca_file: str | None = None
    timeout: float = 10.0
    page_size: int = 500


def read_options(raw: dict, config_path: Path | None = None) -> LdapOptions:
    """Check the `[directory.ldap]` table; DirectoryError names the key to fix."""
    if not raw:
        where = f" of {config_path}" if config_path else ""
        raise DirectoryError(f"no {_WHERE} table in the config{where}: nothing to sync from")
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        raise DirectoryError(
            f"{_WHERE} unknown key {', '.join(unknown)} (known: {', '.join(KNOWN_KEYS)})"
        )
    base_dir = config_path.resolve().parent if config_path else Path.cwd()

    url = _text(raw, "url", required=True)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme.lower() not in ("ldap", "ldaps")
        or not parts.hostname
        or port == -1
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise DirectoryError(
            f"{_WHERE} url must be ldap://HOST[:PORT] or ldaps://HOST[:PORT], not {url!r}"
        )
    use_ssl = parts.scheme.lower() == "ldaps"
    starttls = _flag(raw, "starttls")
    if use_ssl and starttls:
        raise DirectoryError(f"{_WHERE} starttls is for ldap:// URLs; ldaps:// is TLS already")

    bind_dn = _text(raw, "bind_dn")
    password = _text(raw, "bind_password")
    password_file = _text(raw, "bind_password_file")
    if password is not None and password_file is not None:
        raise DirectoryError(f"{_WHERE} set bind_password or bind_password_file, not both")
    if password_file is not None:
        path = Path(password_file) if os.path.isabs(password_file) else base_dir / password_file
        try:
            # Only the line ending goes: spaces can be part of a password.
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise DirectoryError(f"{_WHERE} bind_password_file {path}: {reason}") from None
    if bind_dn is None and password is not None:
        raise DirectoryError(f"{_WHERE} a bind password without bind_dn: set bind_dn too")
    if bind_dn is not None and not password:
        # An empty password is an unauthenticated bind (RFC 4513 5.1.2): many servers
        # accept it as anonymous, which would hide the mistake until the search.
        raise DirectoryError(f"{_WHERE} bind_dn needs bind_password or bind_password_file")

    # ldap3 would only find a bad base or filter after connecting and binding: a config
    # mistake is reported as one, before any network traffic.
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter
    from ldap3.utils.dn import parse_dn

    base = _text(raw, "base", required=True)
    try:
        parse_dn(base)
    except LDAPException as exc:
        raise DirectoryError(f"{_WHERE} base {base!r} is not a DN ({exc})") from None
    search_filter = _text(raw, "filter") or "(mail=*)"
    if not (search_filter.startswith("(") and search_filter.endswith(")")):
        raise DirectoryError(f"{_WHERE} filter must be in parentheses, like (mail=*)")
    try:
        parse_filter(search_filter, None, True, True, None, True)
    except LDAPException as exc:
        raise DirectoryError(f"{_WHERE} filter {search_filter}: {exc}") from None

    mapping = raw.get("attributes", {})
    if not isinstance(mapping, dict):
        raise DirectoryError(f'{_WHERE} attributes must be a table, like {{ site = "l" }}')
    attributes = dict(DEFAULT_ATTRIBUTES)
    for column, attribute in mapping.items():
        if not _COLUMN.fullmatch(column):
            raise DirectoryError(
                f"{_WHERE} attributes: column {column!r}: use lower-case letters, digits, _ or -"
            )
        if not isinstance(attribute, str) or not _ATTRIBUTE.fullmatch(attribute):
            raise DirectoryError(
                f'{_WHERE} attributes: {column} must name an LDAP attribute, like "mail"'
            )
        attributes[column] = attribute

    ca_file = _text(raw, "ca_file")
    if ca_file is not None:
        ca_file = str(Path(ca_file) if os.path.isabs(ca_file) else base_dir / ca_file)
        if not os.path.isfile(ca_file):
            raise DirectoryError(f"{_WHERE} ca_file {ca_file}: no such file")

    timeout = raw.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise DirectoryError(f"{_WHERE} timeout must be a number of seconds above 0")
    page_size = raw.get("page_size", 500)
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise DirectoryError(f"{_WHERE} page_size must be a whole number of entries, 1 or more")

    return LdapOptions(
        url=url,
        host=parts.hostname,
        port=port or (636 if use_ssl else 389),
        use_ssl=use_ssl,
        base=base,
        bind_dn=bind_dn,
        password=password,
        filter=search_filter,
        attributes=attributes,
        starttls=starttls,
        ca_file=ca_file,
        timeout=float(timeout),
        page_size=page_size,
    )


def _text(raw: dict, key: str, *, required: bool = False) -> Any:
    value = raw.get(key)
    if value is None:
        if required:
            raise DirectoryError(f"{_WHERE} {key} is required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise DirectoryError(f"{_WHERE} {key} must be a non-empty text")
    return value


def _flag(raw: dict, key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise DirectoryError(f"{_WHERE} {key} must be true or false")
    return value


def fetch_rows(options: LdapOptions) -> tuple[list[dict[str, str]], list[str]]:
    """Search the whole directory: one row per entry (our columns) and the entries' DNs.

    Raises DirectoryError on any failure, including a search the server cut short.
    """
    import ssl

    import ldap3
    from ldap3.core.exceptions import LDAPException

    tls = None
    if options.use_ssl or options.starttls:
        # ldap3 does not check certificates unless told to: require a valid one, for
        # the bind password travels over this connection.
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=options.ca_file)
    server = ldap3.Server(
        options.host,
        port=options.port,
        use_ssl=options.use_ssl,
        tls=tls,
        get_info=ldap3.NONE,  # the schema and root DSE are not needed: one round trip less
        connect_timeout=options.timeout,
    )
    connection = ldap3.Connection(
        server,
        user=options.bind_dn,
        password=options.password,
        authentication=ldap3.SIMPLE if options.bind_dn else ldap3.ANONYMOUS,
        read_only=True,
        raise_exceptions=True,
        auto_referrals=False,
        # ldap3 packs it as a whole number of seconds for SO_RCVTIMEO.
        receive_timeout=max(1, math.ceil(options.timeout)),
    )
    wanted = sorted(set(options.attributes.values()), key=str.lower)
    rows: list[dict[str, str]] = []
    dns: list[str] = []
    step = "connect"
    try:
        connection.open()
        if options.starttls:
            step = "starttls"
            connection.start_tls()
        step = "bind"
        connection.bind()
        step = "search"
        entries = connection.extend.standard.paged_search(
            options.base,
            options.filter,
            search_scope=ldap3.SUBTREE,
            attributes=wanted,
            paged_size=options.page_size,
            generator=True,
        )
        for entry in entries:
            if entry.get("type") != "searchResEntry":
                continue  # a referral to another server: not followed
            found = entry.get("attributes") or {}
            rows.append({c: _first(found.get(a)) for c, a in options.attributes.items()})
            dns.append(str(entry.get("dn", "")))
        # ldap3 ends a paged search quietly when the server stops it at a size or
        # time limit: the last result says whether the whole directory came.
        final = connection.result or {}
        if final.get("result", 0) != 0:
            raise DirectoryError(_stopped(options, final))
    except LDAPException as exc:
        raise DirectoryError(_failure(options, step, exc)) from None
    finally:
        try:
            connection.unbind()
        except Exception:  # noqa: BLE001 - closing a dead connection must not mask the cause
            pass
    # An empty answer, or one without addresses, is far more often a wrong base, filter
    # or attribute name than an empty directory, and pruning on it would delete every
    # LDAP entry.
    if not rows:
        raise DirectoryError(
            f"LDAP {options.url}: no entry under {options.base} matches {options.filter}:"
            " nothing imported, nothing removed"
        )
    if not any(row["email"] for row in rows):
        raise DirectoryError(
            f"LDAP {options.url}: none of the {len(rows)} entries found has a"
            f" {options.attributes['email']} attribute (attributes.email):"
            " nothing imported, nothing removed"
        )
    return rows, dns


def _first(value: Any) -> str:
    """The first non-empty value of an attribute, as text ("" when absent)."""
    values = value if isinstance(value, list | tuple) else [value]
    for item in values:
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        text = "" if item is None else str(item).strip()
        if text:
            return text
    return ""


def _stopped(options: LdapOptions, result: dict) -> str:
    description = result.get("description") or f"result {result.get('result')}"
    message = _one_line(result.get("message") or "")
    hint = ""
    if description in ("sizeLimitExceeded", "timeLimitExceeded"):
        who = options.bind_dn or "anonymous"
        hint = f"; the server's limit for {who} also caps paged searches"
    return (
        f"LDAP {options.url}: the search under {options.base} stopped early ({description}"
        f"{': ' + message if message else ''}){hint}: nothing imported, nothing removed"
    )


def _failure(options: LdapOptions, step: str, exc: Exception) -> str:
    """One line that says which step failed and why, without the password."""
    from ldap3.core.exceptions import LDAPOperationResult

    if isinstance(exc, LDAPOperationResult):
        reason = exc.description or f"result {exc.result}"
        if exc.message:
            reason += f": {exc.message}"
    else:
        reason = _socket_reason(exc)
    reason = _one_line(reason)
    if reason.endswith("timed out"):
        reason += f" (timeout = {options.timeout:g} s)"
    if options.password:
        reason = reason.replace(options.password, "***")
    if step == "connect":
        text = f"cannot connect ({reason})"
    elif step == "starttls":
        text = f"StartTLS failed ({reason})"
    elif step == "bind":
        who = options.bind_dn or "anonymous"
        text = f"bind as {who} failed ({reason})"
        if reason.startswith("invalidCredentials"):
            text = f"bind as {who} refused: wrong bind_dn or password"
    else:
        text = f"search under {options.base} with {options.filter} failed ({reason})"
        if "pagedResults page size" in reason:
            text += f"; lower page_size ({options.page_size}) to the server's page limit"
    return f"LDAP {options.url}: {text}"


def _socket_reason(exc: Exception) -> str:
    """The innermost cause of an ldap3 socket error: ldap3 wraps the attempts on each
    address of the host in a tuple of (exception, address) pairs."""
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) == 2 and isinstance(args[1], list) and args[1]:
        last = args[1][-1]
        inner = last[0] if isinstance(last, tuple) and last else last
        text = str(inner)
    else:
        text = str(exc) or type(exc).__name__
    # ldap3 also nests the text of the ssl error in the repr of its args.
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return re.sub(r"^[(\"',\s]+|[)\"',\s]+$", "", text)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def sync(store: Store, settings: Settings) -> ImportResult:
    """Import the LDAP directory of `[directory.ldap]` as source "ldap", pruning the
    entries that left it; raise DirectoryError (nothing changed) when it cannot be read."""
    options = read_options(settings.ldap, settings.path)
    # Read everything before the transaction: the write lock is not held for the
    # length of a network search, and a failed search changes nothing.
    rows, dns = fetch_rows(options)
    with store.transaction():
        result = import_rows(store, rows, SOURCE, prune=True)
    result.skipped = [_by_dn(line, dns) for line in result.skipped]
    return result


def _by_dn(line: str, dns: list[str]) -> str:
    """Name a skipped row by its entry's DN rather than a CSV line number."""
    match = _SKIPPED_LINE.match(line)
    if match is None or not 2 <= int(match.group(1)) < len(dns) + 2:
        return line
    return f"{dns[int(match.group(1)) - 2]}: {line[match.end() :]}"
