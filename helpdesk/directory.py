"""The organisation's directory in the database: who is who, and their site.

`helpdesk-pipe directory import people.csv` loads a CSV export (columns email, name,
site and any others; comma or semicolon, UTF-8 with or without BOM); routing rules
read the attributes (helpdesk.ingest.route). An entry belongs to the source that last
wrote it, and a pruning import (`--prune`, every LDAP sync) removes only entries of its
own source that it no longer lists: a CSV of extra people survives an LDAP sync.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["ImportResult", "DirectoryError", "import_rows", "import_csv", "read_csv"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_EMAIL_COLUMNS = ("email", "mail", "e-mail", "courriel", "adresse")


class DirectoryError(Exception):
    """The directory source cannot be read or makes no sense."""


@dataclass
class ImportResult:
    """What an import did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged,"
            f" {self.removed} removed"
        )
        return text + (f", {len(self.skipped)} skipped" if self.skipped else "")


def read_csv(path: Path) -> list[dict[str, str]]:
    """Read a directory CSV into rows keyed by lower-cased column names."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="cp1252")  # Excel's "CSV" on French Windows
    except OSError as exc:
        raise DirectoryError(f"{path}: {exc.strerror or exc}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    if not reader.fieldnames:
        raise DirectoryError(f"{path}: empty file, expected a header line with an email column")
    columns = {name: name.strip().lower() for name in reader.fieldnames if name}
    if not any(c in _EMAIL_COLUMNS for c in columns.values()):
        raise DirectoryError(
            f"{path}: no email column in the header ({', '.join(columns.values())})"
        )
    return [
        {columns[k]: (v or "").strip() for k, v in row.items() if k in columns} for row in reader
    ]


def import_rows(
    store: Store, rows: list[dict[str, str]], source: str, *, prune: bool = False
) -> ImportResult:
    """Insert or update one entry per row (inside the caller's transaction); with prune,
    remove this source's entries that the rows no longer hold."""
    result = ImportResult()
    seen: set[str] = set()
    now = utcnow()
    for number, row in enumerate(rows, start=2):
        email = next((row[c] for c in _EMAIL_COLUMNS if row.get(c)), "").lower()
        if not _EMAIL.fullmatch(email):
            result.skipped.append(f"line {number}: no valid email ({email or 'empty'})")
            continue
        if email in seen:
            result.skipped.append(f"line {number}: {email} again, the first one is kept")
            continue
        seen.add(email)
        name = row.get("name") or row.get("nom") or ""
        attributes = {
            k: v for k, v in row.items() if k not in _EMAIL_COLUMNS and k not in ("name", "nom")
        }
        encoded = json.dumps(attributes, ensure_ascii=False, sort_keys=True)
        known = store.one(
            "SELECT name, attributes, source FROM directory_entry WHERE email = :email",
            {"email": email},
        )
        if known is None:
            store.execute(
                "INSERT INTO directory_entry (email, name, attributes, source, updated_at)"
                " VALUES (:email, :name, :attributes, :source, :now)",
                {
                    "email": email,
                    "name": name[:200],
                    "attributes": encoded,
                    "source": source,
                    "now": now,
                },
            )
            result.added += 1
        elif tuple(known) == (name[:200], encoded, source):
            result.unchanged += 1
        else:
            store.execute(
                "UPDATE directory_entry SET name = :name, attributes = :attributes,"
                " source = :source, updated_at = :now WHERE email = :email",
                {
                    "email": email,
                    "name": name[:200],
                    "attributes": encoded,
                    "source": source,
                    "now": now,
                },
            )
            result.updated += 1
    if prune:
        for (email,) in store.execute(
            "SELECT email FROM directory_entry WHERE source = :source", {"source": source}
        ).fetchall():
            if email not in seen:
                store.execute("DELETE FROM directory_entry WHERE email = :email", {"email": email})
                result.removed += 1
    return result


def import_csv(
    store: Store, path: Path, *, source: str | None = None, prune: bool = False
) -> ImportResult:
    """Import a CSV file in one transaction; the source defaults to the file's name."""
    rows = read_csv(path)
    with store.transaction():
        return import_rows(store, rows, source or f"csv:{path.name}", prune=prune)
