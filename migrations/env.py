"""Alembic environment: runs on the connection helpdesk.migrate hands over."""

from __future__ import annotations

from alembic import context

from helpdesk.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate through the caller's connection (helpdesk.migrate.upgrade)."""
    connection = config.attributes.get("connection")
    if connection is None:
        from helpdesk.config import load_settings
        from helpdesk.db import engine_for

        with engine_for(load_settings()).connect() as conn:
            _run(conn)
            conn.commit()
        return
    _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `helpdesk-pipe init`")
run_migrations_online()
