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
from urllib.parse import quote

from helpdesk.files import sqlite_path

__all__ = ["ConfigError", "Queue", "Settings", "load_settings", "DEFAULT_CONFIG_PATH"]

DEFAULT_CONFIG_PATH = "/etc/helpdesk/helpdesk.toml"
DEFAULT_MAX_SIZE = 25 * 1024 * 1024
_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class ConfigError(Exception):
    """The configuration cannot be read or makes no sense; a sysadmin must fix it."""


@dataclass(frozen=True)
class Queue:
    """A support alias: where its mail lands and who serves it."""

    name: str
    addresses: tuple[str, ...]
    group: str
    language: str = "fr"

    def matches(self, address: str) -> bool:
        """Tell whether an envelope recipient (any case, any +extension) is this queue's."""
        local, domain = _split_address(address)
        local = local.split("+", 1)[0]
        for own in self.addresses:
            own_local, own_domain = _split_address(own)
            if local == own_local and (not own_domain or not domain or own_domain == domain):
                return True
        return False


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
    queues: dict[str, Queue] = field(default_factory=dict)
    log_file: str | None = None

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
        addresses = spec.get("addresses", spec.get("address", []))
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
        )
    return queues


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
    log_file = log.get("file")
    if log_file is not None and not isinstance(log_file, str):
        raise ConfigError(f"{config_path}: [log] file must be a path")
    return Settings(
        database_url=_resolve_sqlite(url, base),
        path=config_path,
        busy_timeout=float(busy_timeout),
        max_size=max_size,
        queues=_queues(_table(data, "queues", config_path)),
        log_file=log_file,
    )


def _table(data: dict, name: str, config_path: Path) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{config_path}: [{name}] must be a table")
    return value
