"""Create or upgrade the schema through Alembic, from the source tree or an installed package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from helpdesk.config import Settings
from helpdesk.db import engine_for
from helpdesk.files import prepare_sqlite_path

__all__ = ["migrations_dir", "upgrade", "current_revision", "head_revision"]


def migrations_dir() -> Path:
    """Find the migration scripts: the installed helpdesk.migrations, or ./migrations."""
    spec = importlib.util.find_spec("helpdesk.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def head_revision() -> str | None:
    """Return the newest revision the scripts know."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(settings: Settings) -> str | None:
    """Return the revision the database is at, None for an empty database."""
    with engine_for(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(settings: Settings, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to the newest revision (or `revision`); return (before, after).
    Idempotent. The only code that creates an SQLite database (and its directory).
    """
    prepare_sqlite_path(settings.database_url)
    before = current_revision(settings)
    cfg = _config()
    with engine_for(settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(settings)
