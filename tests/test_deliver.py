"""`helpdesk-pipe deliver` as the MTA runs it: verdicts, exit codes, what is stored."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import cli_json
from conftest import make_mail
from conftest import pipe_command
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config


def _one_line_no_traceback(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    return text.strip()


def _db_rows(config: Path, sql: str) -> list[tuple]:
    from sqlalchemy import text

    from helpdesk.config import load_settings
    from helpdesk.db import engine_for

    with engine_for(load_settings(config)).connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def test_new_mail_opens_a_ticket(config: Path) -> None:
    result = run_pipe(config, make_mail(subject="Écran noir =?x?=", body="Il reste noir.\n"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    [ticket] = cli_json(config, "ticket", "list")
    assert ticket["queue"] == "dsi"
    assert ticket["status"] == "new"
    assert ticket["requester"] == "alice@univ.example"
    assert ticket["requester_name"] == "Alice Martin"
    assert ticket["subject"] == "Écran noir =?x?="
    shown = cli_json(config, "ticket", "show", str(ticket["id"]))
    [article] = shown["articles"]
    assert article["source"] == "mail"
    assert article["author"] == "alice@univ.example"
    assert article["body_text"].strip() == "Il reste noir."
    [mail] = cli_json(config, "mail", "list")
    assert mail["verdict"] == "ticket"
    assert mail["ticket_id"] == ticket["id"]
    assert mail["sender"] == "alice@univ.example"


def test_mbox_from_line_is_dropped_and_from_quoting_undone(config: Path) -> None:
    body = "Line one\n>From the start it failed.\n"
    raw = b"From alice@univ.example  Sat Nov 28 03:25:15 2026\n" + make_mail(body=body).replace(
        b"\r\n", b"\n"
    )
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    [ticket] = cli_json(config, "ticket", "list")
    text = cli_json(config, "ticket", "show", str(ticket["id"]))["articles"][0]["body_text"]
    assert "\nFrom the start it failed." in text
    assert ">From" not in text
    [mail] = cli_json(config, "mail", "list")
    raw_back = run_cli_bytes(config, "mail", "show", str(mail["id"]), "--raw")
    assert raw_back == raw


def run_cli_bytes(config: Path, *args: str) -> bytes:
    import subprocess

    from conftest import pipe_command

    return subprocess.run(
        [*pipe_command(), "--config", str(config), *args], capture_output=True, check=True
    ).stdout


def test_envelope_is_recorded_and_picks_the_queue(config: Path) -> None:
    env = {
        "SENDER": "alice@univ.example",
        "RECIPIENT": "Immobilier.Travaux+42@univ.example",
        "ORIGINAL_RECIPIENT": "immobilier.travaux+42@univ.example",
        "EXTENSION": "42",
    }
    result = run_pipe(config, make_mail(), queue=None, env=env)
    assert result.returncode == 0, result.stderr
    [mail] = cli_json(config, "mail", "list")
    assert mail["queue"] == "immobilier"
    shown = cli_json(config, "mail", "show", str(mail["id"]))
    assert shown["envelope"] == env


def test_attachments_are_stored_once_by_digest(config: Path) -> None:
    def with_attachment(n: int) -> bytes:
        return (
            f"From: bob@univ.example\r\nTo: dsi.support@univ.example\r\nSubject: scan {n}\r\n"
            f"Message-ID: <scan{n}@univ.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nVoir la piece jointe.\r\n"
            "--b\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--b--\r\n"
        ).encode()

    for n in (1, 2):
        assert run_pipe(config, with_attachment(n)).returncode == 0
    tickets = cli_json(config, "ticket", "list")
    assert len(tickets) == 2
    files = [
        cli_json(config, "ticket", "show", str(t["id"]))["articles"][0]["attachments"][0]
        for t in tickets
    ]
    assert {f["filename"] for f in files} == {"résumé.pdf"}
    assert files[0]["sha256"] == files[1]["sha256"]
    assert files[0]["size"] == len(b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n")
    assert _db_rows(config, "SELECT count(*) FROM blob") == [(1,)]
    assert _db_rows(config, "SELECT count(*) FROM attachment") == [(2,)]


def test_same_message_id_is_a_duplicate(config: Path) -> None:
    raw = make_mail(message_id="<once@univ.example>")
    assert run_pipe(config, raw).returncode == 0
    resent = make_mail(message_id="<once@univ.example>", body="resent by a retrying client\n")
    result = run_pipe(config, resent)
    assert result.returncode == 0, result.stderr
    assert len(cli_json(config, "ticket", "list")) == 1
    verdicts = sorted(m["verdict"] for m in cli_json(config, "mail", "list"))
    assert verdicts == ["duplicate", "ticket"]
    # Another queue is another helpdesk: the same mail sent to both aliases opens both.
    assert run_pipe(config, raw, queue="scd").returncode == 0
    assert len(cli_json(config, "ticket", "list")) == 2


def test_without_message_id_identical_bytes_are_a_duplicate(config: Path) -> None:
    raw = make_mail().replace(b"Message-ID:", b"X-Old-Id:")
    assert run_pipe(config, raw).returncode == 0
    assert run_pipe(config, raw).returncode == 0
    other = make_mail(body="autre chose\n").replace(b"Message-ID:", b"X-Old-Id:")
    assert run_pipe(config, other).returncode == 0
    assert len(cli_json(config, "ticket", "list")) == 2
    mails = cli_json(config, "mail", "list")
    assert sorted(m["verdict"] for m in mails) == ["duplicate", "ticket", "ticket"]


@pytest.mark.parametrize("raw", [b"", b"\r\n  \n"])
def test_empty_input_is_refused_with_65(config: Path, raw: bytes) -> None:
    result = run_pipe(config, raw)
    assert result.returncode == 65
    assert "empty" in _one_line_no_traceback(result.stderr)


def test_oversize_mail_is_refused_with_65(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url, mail="max_size = 2000\n")
    assert run_cli(config, "init").returncode == 0
    result = run_pipe(config, make_mail(body="x" * 5000))
    assert result.returncode == 65
    assert "size limit of 2000 bytes" in _one_line_no_traceback(result.stderr)
    assert run_pipe(config, make_mail()).returncode == 0


def test_unknown_queue_defers_with_75(config: Path) -> None:
    result = run_pipe(config, make_mail(), queue="nope")
    assert result.returncode == 75
    line = _one_line_no_traceback(result.stderr)
    assert "unknown queue 'nope'" in line
    assert cli_json(config, "mail", "list") == []


def test_recipient_of_no_queue_defers_with_75(config: Path) -> None:
    result = run_pipe(config, make_mail(), queue=None, env={"RECIPIENT": "who@elsewhere.example"})
    assert result.returncode == 75
    assert "no queue for recipient" in _one_line_no_traceback(result.stderr)


def test_missing_config_defers_with_75(tmp_path: Path) -> None:
    result = run_pipe(tmp_path / "absent.toml", make_mail())
    assert result.returncode == 75
    assert "not found" in _one_line_no_traceback(result.stderr)


def test_broken_config_defers_with_75(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[database\nurl = 1\n")
    result = run_pipe(path, make_mail())
    assert result.returncode == 75
    _one_line_no_traceback(result.stderr)


def test_bad_alias_line_defers_with_75(config: Path) -> None:
    import subprocess

    from conftest import pipe_command

    result = subprocess.run(
        [*pipe_command(), "--config", str(config), "deliver", "--queeu", "dsi"],
        input=make_mail(),
        capture_output=True,
    )
    assert result.returncode == 75
    assert "--queeu" in _one_line_no_traceback(result.stderr)


def test_schema_missing_defers_with_hint(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    result = run_pipe(config, make_mail())
    assert result.returncode == 75
    assert "helpdesk-pipe init" in _one_line_no_traceback(result.stderr)


@pytest.mark.parametrize("where", ["missing directory", "missing file"])
def test_a_missing_sqlite_database_is_a_75_saying_run_init_and_nothing_is_made(
    tmp_path: Path, where: str
) -> None:
    """Only `init` makes the database: a mistyped path must not gain an empty one."""
    database = (
        tmp_path / "typo" / "helpdesk.db" if where == "missing directory" else tmp_path / "h.db"
    )
    config = write_config(tmp_path, f"sqlite:///{database}")
    result = run_pipe(config, make_mail())
    assert result.returncode == 75, result.stderr
    line = _one_line_no_traceback(result.stderr)
    assert f"SQLite database {database} does not exist" in line, line
    assert line.endswith("(run `helpdesk-pipe init`)"), line
    # The commands that read (through SQLAlchemy) do not make it either.
    listed = run_cli(config, "ticket", "list")
    assert listed.returncode != 0 and "run `helpdesk-pipe init`" in listed.stderr
    if where == "missing directory":
        assert not database.parent.exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(database.name)]
    assert run_cli(config, "init").returncode == 0
    assert run_pipe(config, make_mail()).returncode == 0


def test_database_unreachable_then_back(db_url: str, tmp_path: Path) -> None:
    good = write_config(tmp_path, db_url)
    assert run_cli(good, "init").returncode == 0
    if db_url.startswith("sqlite"):
        # A directory where the database file should be: SQLite cannot open it.
        bad_url = f"sqlite:///{tmp_path / 'gone'}"
        (tmp_path / "gone").mkdir()
    else:
        bad_url = db_url.replace("127.0.0.1:5432", "127.0.0.1:1")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = write_config(bad_dir, bad_url)
    raw = make_mail()
    result = run_pipe(bad, raw)
    assert result.returncode == 75
    assert "database unavailable" in _one_line_no_traceback(result.stderr)
    result = run_pipe(good, raw)
    assert result.returncode == 0, result.stderr
    assert len(cli_json(good, "ticket", "list")) == 1


def test_database_read_only_then_back(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    raw = make_mail()
    if db_url.startswith("sqlite"):
        # The classic mistake: the pipe's user may read the database but not write it.
        home = Path(tempfile.mkdtemp(prefix="helpdesk-ro-"))
        try:
            home.chmod(0o755)
            db_file = home / "helpdesk.db"
            config = write_config(home, f"sqlite:///{db_file}")
            assert run_cli(config, "init").returncode == 0
            for extra in home.glob("helpdesk.db-*"):
                extra.unlink()
            db_file.chmod(0o644)
            config.chmod(0o644)
            if os.geteuid() == 0:
                as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
                command = [*as_nobody, *request.getfixturevalue("pipe_for_others")]
            else:
                db_file.chmod(0o444)
                home.chmod(0o555)
                command = pipe_command()
            result = _run_as(command, config, raw)
            assert result.returncode == 75, result.stderr
            assert "database unavailable" in _one_line_no_traceback(result.stderr)
            home.chmod(0o755)
            db_file.chmod(0o660)
            result = run_pipe(config, raw)
            assert result.returncode == 0, result.stderr
            assert len(cli_json(config, "ticket", "list")) == 1
        finally:
            shutil.rmtree(home, ignore_errors=True)
        return
    config = write_config(tmp_path, db_url)
    assert run_cli(config, "init").returncode == 0
    ro_dir = tmp_path / "ro"
    ro_dir.mkdir()
    ro = write_config(ro_dir, db_url + "%20-cdefault_transaction_read_only%3Don")
    result = run_pipe(ro, raw)
    assert result.returncode == 75, result.stderr
    assert "read-only" in _one_line_no_traceback(result.stderr)
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    assert len(cli_json(config, "ticket", "list")) == 1


def _run_as(command: list[str], config: Path, raw: bytes):  # type: ignore[no-untyped-def]
    import subprocess

    return subprocess.run(
        [*command, "--config", str(config), "deliver", "--queue", "dsi"],
        input=raw,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
    )


def test_files_are_group_private_under_postfix_umask(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'var' / 'helpdesk.db'}")
    assert run_cli(config, "init").returncode == 0
    (tmp_path / "var" / "helpdesk.db").unlink()
    for extra in (tmp_path / "var").glob("helpdesk.db-*"):
        extra.unlink()
    import subprocess

    from conftest import pipe_command

    cmd = " ".join([*pipe_command(), "--config", str(config)])
    # Postfix runs the pipe with umask 0077; the group must still read and write.
    subprocess.run(["sh", "-c", f"umask 077 && {cmd} init"], check=True, capture_output=True)
    result = subprocess.run(
        ["sh", "-c", f"umask 077 && {cmd} deliver --queue dsi"],
        input=make_mail(),
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "var").iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o060 == 0o060, (path, oct(mode))
        assert mode & 0o007 == 0, (path, oct(mode))


def test_mail_show_tells_the_journey(config: Path) -> None:
    run_pipe(config, make_mail(message_id="<j@univ.example>"), env={"SENDER": "alice@univ.example"})
    [mail] = cli_json(config, "mail", "list")
    result = run_cli(config, "mail", "show", str(mail["id"]))
    assert result.returncode == 0
    assert "Verdict: ticket" in result.stdout
    assert "<j@univ.example>" in result.stdout
    assert json.loads(json.dumps(cli_json(config, "mail", "show", str(mail["id"]))))[
        "envelope"
    ] == {"SENDER": "alice@univ.example"}


def test_a_mail_left_pending_by_a_crash_is_finished_by_the_retry(config: Path) -> None:
    """Raw bytes committed, then the process died: the MTA's retry completes that record."""
    import hashlib

    from helpdesk.config import load_settings
    from helpdesk.ingest.deliver import _record_raw
    from helpdesk.store import Store

    raw = make_mail(message_id="<crash@univ.example>")
    settings = load_settings(config)
    with Store(settings.database_url) as store:
        mail_id = _record_raw(store, "dsi", raw, hashlib.sha256(raw).hexdigest(), {})
    [pending] = cli_json(config, "mail", "list")
    assert (pending["id"], pending["verdict"]) == (mail_id, "pending")
    assert run_pipe(config, raw).returncode == 0
    [done] = cli_json(config, "mail", "list")
    assert (done["id"], done["verdict"]) == (mail_id, "ticket")
    assert len(cli_json(config, "ticket", "list")) == 1


@pytest.mark.slow
def test_a_big_mail_keeps_its_attachment_intact(config: Path) -> None:
    import base64
    import hashlib

    payload = os.urandom(18 * 1024 * 1024)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    raw = (
        b"From: dan@univ.example\r\nTo: dsi.support@univ.example\r\nSubject: gros fichier\r\n"
        b"Message-ID: <big@univ.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nle voici\r\n"
        b"--b\r\nContent-Type: application/zip\r\n"
        b'Content-Disposition: attachment; filename="archive.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n"
    )
    assert len(raw) < 25 * 1024 * 1024
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    [ticket] = cli_json(config, "ticket", "list")
    [article] = cli_json(config, "ticket", "show", str(ticket["id"]))["articles"]
    [attachment] = article["attachments"]
    assert attachment["filename"] == "archive.zip"
    assert attachment["size"] == len(payload)
    assert attachment["sha256"] == hashlib.sha256(payload).hexdigest()
    [mail] = cli_json(config, "mail", "list")
    assert run_cli_bytes(config, "mail", "show", str(mail["id"]), "--raw") == raw


def test_disk_full_defers_then_recovers(tmp_path: Path) -> None:
    """SQLite on a full filesystem: exit 75, nothing half-written; space back, it goes in."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        config = write_config(tmp_path, f"sqlite:///{disk / 'helpdesk.db'}")
        assert run_cli(config, "init").returncode == 0
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        raw = make_mail(body="x" * 200_000)
        result = run_pipe(config, raw)
        assert result.returncode == 75, result.stderr
        assert "database unavailable" in _one_line_no_traceback(result.stderr)
        filler.unlink()
        result = run_pipe(config, raw)
        assert result.returncode == 0, result.stderr
        assert len(cli_json(config, "ticket", "list")) == 1
        assert [m["verdict"] for m in cli_json(config, "mail", "list")] == ["ticket"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_long_non_ascii_message_id_is_kept_and_deduplicated(config: Path) -> None:
    # ~3 KB of UTF-8: more than PostgreSQL's btree row limit if it were indexed as is.
    message_id = "<" + "漢" * 990 + "@univ.example>"
    raw = make_mail(message_id=message_id)
    assert run_pipe(config, raw).returncode == 0
    again = run_pipe(config, make_mail(message_id=message_id, body="encore\n"))
    assert again.returncode == 0, again.stderr
    mails = cli_json(config, "mail", "list")
    assert sorted(m["verdict"] for m in mails) == ["duplicate", "ticket"]
    assert {m["message_id"] for m in mails} == {message_id[:998]}  # the column holds 998


def test_queue_option_before_the_command_still_delivers(config: Path) -> None:
    import subprocess

    from conftest import pipe_command

    result = subprocess.run(
        [*pipe_command(), "--queue", "scd", "--config", str(config), "deliver"],
        input=make_mail(),
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr
    assert [t["queue"] for t in cli_json(config, "ticket", "list")] == ["scd"]


def test_an_unwritable_log_file_adds_nothing_to_stderr(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    assert run_cli(config, "init").returncode == 0
    text = config.read_text().replace(str(tmp_path / "helpdesk.log"), "/dev/full")
    config.write_text(text)
    result = run_pipe(config, make_mail())
    assert result.returncode == 0
    assert result.stderr == b""
    unknown = run_pipe(config, make_mail(), queue="nope")
    assert unknown.returncode == 75
    _one_line_no_traceback(unknown.stderr)


@pytest.mark.parametrize(
    "section",
    [
        '[database]\nurl = "sqlite:///x.db"\n[mail]\nmax_size = 0\n',
        '[database]\nurl = "sqlite:///x.db"\nbusy_timeout = nan\n',
        'database = "x"\n',
        '[database]\nurl = "sqlite:///x.db"\n[log]\nfile = 5\n',
        '[database]\nurl = "sqlite:///x.db"\n[queues.dsi]\naddresses = []\n[queues."a b"]\n',
    ],
)
def test_a_config_mistake_defers_with_a_clear_line(tmp_path: Path, section: str) -> None:
    path = tmp_path / "helpdesk.toml"
    path.write_text(section)
    result = run_pipe(path, make_mail())
    assert result.returncode == 75
    line = _one_line_no_traceback(result.stderr)
    assert line.startswith("helpdesk-pipe: configuration:"), line
