"""The migrations build exactly the schema the typed models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from helpdesk.config import load_settings
from helpdesk.db import engine_for
from helpdesk.models import Base


def test_migrations_match_the_models(config: Path) -> None:
    settings = load_settings(config)
    with engine_for(settings).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
