"""One Settings object: the TOML file plus HELPDESK_* environment overrides.

Stdlib only: the pipe loads this on every delivery.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

__all__ = ["ConfigError", "Queue", "Settings", "load_settings", "DEFAULT_CONFIG_PATH"]

DEFAULT_CONFIG_PATH = "/etc/helpdesk/helpdesk.toml"
DEFAULT_MAX_SIZE = 25 * 1024 * 1024


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
        local, _, domain = address.strip().lower().rpartition("@")
        local = local.split("+", 1)[0]
        for own in self.addresses:
            own_local, _, own_domain = own.lower().rpartition("@")
            if local == own_local and (not own_domain or not domain or own_domain == domain):
                return True
        return False


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
    prefix = "sqlite:///"
    if not url.startswith(prefix) or base is None:
        return url
    path = url[len(prefix) :]
    if not path or path.startswith("/") or path.startswith(":memory:"):
        return url
    return prefix + str((base / path).resolve())


def _queues(raw: dict) -> dict[str, Queue]:
    queues: dict[str, Queue] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[queues.{name}] must be a table")
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
    database = data.get("database", {})
    mail = data.get("mail", {})
    url = os.environ.get("HELPDESK_DATABASE_URL") or database.get("url")
    if not url:
        raise ConfigError(f"{config_path}: [database] url is not set")
    try:
        return Settings(
            database_url=_resolve_sqlite(str(url), base),
            path=config_path,
            busy_timeout=float(database.get("busy_timeout", 30)),
            max_size=int(mail.get("max_size", DEFAULT_MAX_SIZE)),
            queues=_queues(data.get("queues", {})),
            log_file=data.get("log", {}).get("file"),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
