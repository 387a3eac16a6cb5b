"""A thin DB-API store for writes on the hot path: sqlite3 or psycopg, no SQLAlchemy.

Importing SQLAlchemy costs several times a whole stdlib delivery
(research/perf-baseline.md), so the pipe and the workflow write with plain SQL
that both SQLite (3.35+, for RETURNING) and PostgreSQL accept. The schema itself
is owned by helpdesk.models and Alembic; the storage tests run this SQL against
the migrated schema on both databases.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import quote

from helpdesk.files import sqlite_path

__all__ = [
    "Store",
    "StoreError",
    "IntegrityError",
    "MAX_ID",
    "as_datetime",
    "open_sqlite",
    "sqlite_missing",
    "utcnow",
]

# The largest row id: the id columns are PostgreSQL `integer` (32-bit); SQLite's are
# 64-bit but hand out the same ids. A larger number names no row, on either database
# (and SQLite refuses a bound number beyond 64 bits with an OverflowError).
MAX_ID = 2**31 - 1
_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


class StoreError(Exception):
    """The database refused or could not be reached: worth retrying later."""


class IntegrityError(StoreError):
    """A constraint was violated (a concurrent twin got there first)."""


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_datetime(value: datetime | str) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _sqlite_time(value: datetime) -> str:
    # The exact text SQLAlchemy's SQLite DateTime writes and reads back (naive UTC).
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_missing(path: str) -> str | None:
    """Why an SQLite database cannot be opened without creating it; None when it exists.

    Only `init` creates the database: a mistyped path in the pipe's config, run as root,
    must not leave directories and an empty database behind while the mail waits.
    """
    if os.path.exists(path):  # a directory there is for sqlite3 to refuse
        return None
    where = os.path.dirname(os.path.abspath(path))
    nor = "" if os.path.isdir(where) else f" (nor its directory {where})"
    return f"SQLite database {path} does not exist{nor}"


def open_sqlite(path: str, timeout: float) -> sqlite3.Connection:
    """Open an existing SQLite database in autocommit mode; never create it."""
    # mode=rw fails rather than creates, should the file vanish after sqlite_missing().
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=rw"
    return sqlite3.connect(uri, timeout=timeout, isolation_level=None, uri=True)


class Store:
    """One database connection with explicit, short write transactions."""

    def __init__(self, url: str, busy_timeout: float = 30.0, name: str = "helpdesk") -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.name = name  # PostgreSQL's application_name: who holds which connection
        self.is_sqlite = url.startswith("sqlite")
        self._conn: Any = None
        self._errors: tuple[type[BaseException], ...] = ()
        self._integrity: tuple[type[BaseException], ...] = ()

    # -- connection -------------------------------------------------------
    def connect(self) -> None:
        """Open the connection; raise StoreError with a sysadmin-readable reason."""
        if self.is_sqlite:
            self._errors, self._integrity = (sqlite3.Error,), (sqlite3.IntegrityError,)
            path = sqlite_path(self.url)
            if path is None:
                raise StoreError(f"unsupported SQLite URL {self.url!r}: use sqlite:///PATH")
            missing = sqlite_missing(path)
            if missing:
                raise StoreError(missing)
            try:
                conn = open_sqlite(path, self.busy_timeout)
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite database {path}: {exc}") from None
            self._conn = conn
            return
        import psycopg  # only PostgreSQL users pay for it

        self._errors, self._integrity = (psycopg.Error,), (psycopg.errors.IntegrityError,)
        dsn = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", self.url)
        try:
            # Autocommit, as sqlite3 runs here: a lone read is one round trip, not
            # BEGIN, SELECT, ROLLBACK; writes say BEGIN themselves (transaction()).
            self._conn = psycopg.connect(
                dsn,
                connect_timeout=max(1, int(self.busy_timeout)),
                autocommit=True,
                application_name=self.name,
            )
            # Waiting on a row lock is bounded like SQLite's busy timeout: then exit 75.
            self._conn.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {_one_line(exc)}") from None

    def end_request(self, healthy: bool = True) -> bool:
        """End whatever a request left open, to keep the connection for the next one.

        Returns False (and closes) when the connection should not be reused.
        """
        if self._conn is None:
            return False
        if healthy:
            try:
                if self._in_transaction():
                    self._conn.execute("ROLLBACK")  # a request that died mid-transaction
                return True
            except Exception:  # noqa: BLE001 - a broken connection is dropped below
                pass
        self.close()
        return False

    def close(self) -> None:
        """Close the connection, ignoring errors from a broken one."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask the cause
                pass
            self._conn = None

    def __enter__(self) -> Store:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Run a write transaction: BEGIN IMMEDIATE on SQLite, commit or roll back."""
        try:
            self._conn.execute("BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN")
            yield self
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, self._integrity):
                raise IntegrityError(_one_line(exc)) from exc
            if isinstance(exc, self._errors):
                raise StoreError(_one_line(exc)) from exc
            raise

    def _in_transaction(self) -> bool:
        if self.is_sqlite:
            return bool(self._conn.in_transaction)
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    def _rollback(self) -> None:
        try:
            if self._in_transaction():
                self._conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass

    # -- statements -------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.is_sqlite else _NAMED.sub(r"%(\1)s", sql)

    def _params(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        clean = {}
        for key, value in params.items():
            if isinstance(value, str):
                value = _storable_text(value)
            elif self.is_sqlite and isinstance(value, datetime):
                value = _sqlite_time(value)
            clean[key] = value
        return clean

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run one statement with :named parameters; return the cursor."""
        return self._conn.execute(self._sql(sql), self._params(params or {}))

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """Run a statement and return its first row, or None."""
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        """Run a statement and return the first column of its first row, or None."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def for_update(self) -> str:
        """Return the row-lock suffix for SELECT (SQLite's BEGIN IMMEDIATE already locks)."""
        return "" if self.is_sqlite else " FOR UPDATE"


def _storable_text(value: str) -> str:
    """Drop what neither database stores as text: NUL (PostgreSQL) and lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
