"""Engine and session factory for everything but the pipe's hot path.

SQLite gets WAL, a busy timeout, foreign keys and BEGIN IMMEDIATE on every
transaction (research/perf-baseline.md item 7: a deferred transaction that
reads then writes fails at once under contention). PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm import sessionmaker

from helpdesk.config import Settings
from helpdesk.files import sqlite_path
from helpdesk.store import open_sqlite
from helpdesk.store import sqlite_missing

__all__ = ["dispose_engines", "engine_for", "session_factory", "sqlalchemy_url"]


def sqlalchemy_url(url: str) -> str:
    """Pin PostgreSQL URLs to psycopg 3 whatever driver they name."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_events(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Take BEGIN away from pysqlite so the "begin" hook can issue IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_ENGINES: dict[tuple[str, float], Engine] = {}


def _engine(url: str, busy_timeout: float) -> Engine:
    key = (url, busy_timeout)
    if key not in _ENGINES:
        _ENGINES[key] = _make_engine(url, busy_timeout)
    return _ENGINES[key]


def dispose_engines() -> None:
    """Close every pooled connection and forget the engines (tests, forked workers)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def _make_engine(url: str, busy_timeout: float) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None:  # in memory
            engine = create_engine(url, connect_args={"timeout": busy_timeout})
        else:

            def connect() -> sqlite3.Connection:
                # Never creates the file: only `init` does (migrate.upgrade).
                missing = sqlite_missing(path)
                if missing:
                    raise sqlite3.OperationalError(f"{missing} (run `helpdesk-pipe init`)")
                return open_sqlite(path, busy_timeout)

            engine = create_engine(url, creator=connect)
        _sqlite_events(engine, busy_timeout)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(busy_timeout))},
    )


def engine_for(settings: Settings) -> Engine:
    """Return the (cached) engine for the configured database."""
    return _engine(sqlalchemy_url(settings.database_url), settings.busy_timeout)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    """Return a sessionmaker bound to the configured database."""
    return sessionmaker(engine_for(settings), expire_on_commit=False)
