"""File modes: what the pipe creates must stay usable by the helpdesk group.

Postfix runs alias pipes with umask 0077; the viewer and the scheduler run as
other processes of the same group, so the database and its WAL must be group
read-write and never world-readable.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

__all__ = ["GROUP_UMASK", "set_group_umask", "sqlite_path", "prepare_sqlite_path"]

GROUP_UMASK = 0o007


def set_group_umask() -> None:
    """Make files created from now on rw for owner and group, nothing for others."""
    os.umask(GROUP_UMASK)


def sqlite_path(url: str) -> str | None:
    """Return the file path of a sqlite:/// URL, or None for anything else."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            # Percent-decoded, as SQLAlchemy reads it: both must open the same file.
            path = unquote(url[len(prefix) :].split("?", 1)[0])
            return None if path in ("", ":memory:") else path
    return None


def prepare_sqlite_path(url: str) -> None:
    """Create the database's directory (group-private) so SQLite can make its files."""
    path = sqlite_path(url)
    if path is None:
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o770, exist_ok=True)
    if not os.path.exists(path):
        # SQLite would make it 0644; its -wal and -shm files copy the database's mode.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o660))
        except FileExistsError:
            pass
