"""Shared fixtures: a fresh database on SQLite and on PostgreSQL, a config, the real pipe.

PostgreSQL is required: the storage tests fail when it cannot be reached, unless
HELPDESK_TEST_NO_POSTGRES=1 is set on purpose (then they are skipped, loudly).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The mail corpus (sisimai, Zammad, RT, ...) lives outside the repository. Without it the
# tests that read it are skipped, one line each naming what is missing; under CI=true the
# first of them fails instead (the rest still skip): CI must never pass without it.
CORPUS = Path(os.environ.get("HELPDESK_CORPUS") or ROOT.parent / "shared" / "corpus")
IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get("HELPDESK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

QUEUES_TOML = """
[queues.dsi]
addresses = ["dsi.support@univ.example"]
group = "dsi"
language = "fr"

[queues.immobilier]
addresses = ["immobilier.travaux@univ.example"]
group = "immobilier"
language = "fr"

[queues.scd]
addresses = ["scd.informatique@univ.example"]
group = "scd"
language = "en"

[groups.dsi]
technicians = ["Jean Technicien <jean.tech@univ.example>", "marie.tech@univ.example"]

[groups.scd]
technicians = ["Sam Librarian <sam.lib@univ.example>"]
"""
SECRET_KEY = "test-secret-key-0123456789abcdef"
INSTANCE = "helpdesk-test.univ.example"

pytest_plugins = ["smtp_catcher"]


def _corpus_missing() -> str | None:
    if CORPUS.is_dir():
        return None
    if os.environ.get("HELPDESK_CORPUS"):
        return f"mail corpus missing: HELPDESK_CORPUS={CORPUS} is not a directory"
    return f"mail corpus missing: HELPDESK_CORPUS is unset and {CORPUS} does not exist"


_corpus_failed_in: list[str] = []  # the test that failed the run on a missing corpus (CI)


def need_corpus(path: str = "", test: str = "") -> Path:
    """The corpus file or folder at `path`; skip the calling test when there is no corpus.

    Under CI=true a missing corpus fails the first test that asks, and skips the others
    with a pointer to it: one clear failure. A corpus without the file is a failure.
    """
    missing = _corpus_missing()
    if missing is not None:
        if IN_CI and not _corpus_failed_in:
            current = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
            _corpus_failed_in.append(test or current)
            pytest.fail(f"{missing} (CI=true: the corpus is required)", pytrace=False)
        if IN_CI:
            pytest.skip(f"{missing} (the run failed on it in {_corpus_failed_in[0]})")
        pytest.skip(missing)
    file = CORPUS / path
    assert file.exists(), f"corpus file {file} missing from the corpus at {CORPUS}"
    return file


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `corpus` read it throughout: check before their fixtures run."""
    if item.get_closest_marker("corpus") is not None:
        need_corpus(test=item.nodeid)


def pytest_report_header(config: pytest.Config) -> str:
    """One line at the top of the run: where the corpus is, or what is missing."""
    missing = _corpus_missing()
    if missing is None:
        return f"mail corpus: {CORPUS}"
    return f"{missing}: its tests are {'a failure (CI=true)' if IN_CI else 'skipped'}"


def pipe_command() -> list[str]:
    """Return the installed `helpdesk-pipe` next to this interpreter, else the checkout launcher."""
    installed = Path(sys.executable).parent / "helpdesk-pipe"
    if installed.exists():
        return [str(installed)]
    return [str(ROOT / "bin" / "helpdesk-pipe")]


@pytest.fixture(scope="session")
def pipe_for_others() -> Iterator[list[str]]:
    """`helpdesk-pipe` as another user (nobody) can run it, wherever this clone sits.

    A world-readable copy under /var/tmp (tests/other_user.py); the user's own
    directories keep their modes.
    """
    import tempfile

    from other_user import stage

    base = Path(tempfile.mkdtemp(prefix="helpdesk-staged-", dir="/var/tmp"))
    try:
        yield [str(stage(base) / "helpdesk-pipe")]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    return f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'helpdesk.db'}"
        return
    if os.environ.get("HELPDESK_TEST_NO_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests disabled by HELPDESK_TEST_NO_POSTGRES=1")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is required for the storage tests ({PG_ADMIN_URL}): {exc}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(schema)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def write_config(
    directory: Path, url: str, extra: str = "", outgoing: str | None = None, mail: str = ""
) -> Path:
    """Write a helpdesk.toml with the test queues; return its path.

    Outgoing mail goes to directory/sent as .eml files unless `outgoing` gives
    another [outgoing] table body (the SMTP catcher's, say); `mail` adds lines
    to the [mail] table.
    """
    path = directory / "helpdesk.toml"
    if outgoing is None:
        outgoing = f'transport = "directory"\ndirectory = "{directory / "sent"}"\n'
    path.write_text(
        f'[database]\nurl = "{url}"\nbusy_timeout = 20\n\n'
        f'[log]\nfile = "{directory / "helpdesk.log"}"\n\n'
        f'[security]\nsecret_key = "{SECRET_KEY}"\n\n'
        '[web]\nbase_url = "https://helpdesk.univ.example"\n\n'
        f'[mail]\ninstance = "{INSTANCE}"\ndomain = "univ.example"\n{mail}\n'
        f"[outgoing]\n{outgoing}\n" + extra + QUEUES_TOML,
        encoding="utf-8",
    )
    return path


def smtp_outgoing(port: int) -> str:
    """The [outgoing] table body that sends to a local SMTP server."""
    return f'transport = "smtp"\nhost = "127.0.0.1"\nport = {port}\ntimeout = 5\n'


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Path:
    """A config pointing at a fresh, initialised database."""
    path = write_config(tmp_path, db_url)
    result = run_cli(path, "init")
    assert result.returncode == 0, result.stderr
    return path


def run_pipe(
    config_path: Path,
    raw: bytes,
    queue: str | None = "dsi",
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Pipe one message into a real `helpdesk-pipe deliver` process, as the MTA does."""
    args = [*pipe_command(), "--config", str(config_path), "deliver"]
    if queue:
        args += ["--queue", queue]
    # The MTA's environment: a bare PATH, no HOME, the envelope in variables.
    child_env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    child_env.update(env or {})
    return subprocess.run(args, input=raw, capture_output=True, env=child_env, timeout=timeout)


@dataclass
class CliResult:
    """What a command printed and returned, like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_cli(config_path: Path, *args: str) -> CliResult:
    """Run a `helpdesk-pipe` command in-process (click's runner); the pipe itself runs apart.

    Reading commands are run in-process because each subprocess pays SQLAlchemy's import
    (about a second here); `deliver`, whose process is the point, goes through run_pipe.
    """
    from click.testing import CliRunner

    from helpdesk.cli import cli
    from helpdesk.db import dispose_engines

    try:
        result = CliRunner().invoke(cli, ["--config", str(config_path), *args])
    finally:
        dispose_engines()  # as a process exit would: SQLite checkpoints, nothing stays open
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)


def cli_json(config_path: Path, *args: str) -> Any:
    """Run a `helpdesk-pipe ... --json` command and return the decoded output."""
    result = run_cli(config_path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def make_mail(
    subject: str = "Imprimante en panne",
    sender: str = "alice@univ.example",
    body: str = "Bonjour,\nl'imprimante du bureau 12 ne marche plus.\n",
    message_id: str | None = None,
    extra_headers: str = "",
) -> bytes:
    """Build a small, well-formed text mail."""
    message_id = message_id or f"<{uuid.uuid4().hex}@univ.example>"
    return (
        f"From: Alice Martin <{sender}>\r\n"
        f"To: dsi.support@univ.example\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Sat, 28 Nov 2026 09:00:00 +0100\r\n"
        f"Message-ID: {message_id}\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: 8bit\r\n"
        f"{extra_headers}"
        f"\r\n{body}"
    ).encode()


def db_execute(config_path: Path, sql: str, **params: Any) -> list[tuple]:
    """Run one statement in its own transaction through the pipe's store; return its rows."""
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    settings = load_settings(config_path)
    with Store(settings.database_url, settings.busy_timeout) as store:
        with store.transaction():
            cursor = store.execute(sql, params)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def have(binary: str) -> bool:
    """Tell whether a program is on PATH."""
    return shutil.which(binary) is not None
