"""The command line: every subcommand answers --help, init is idempotent and ships its scripts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config

from helpdesk.cli import cli
from helpdesk.display import UNSAFE
from helpdesk.store import utcnow

COMMANDS = [
    [],
    ["init"],
    ["deliver"],
    ["ticket"],
    ["ticket", "list"],
    ["ticket", "show"],
    ["mail"],
    ["mail", "list"],
    ["mail", "show"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "top")
def test_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_deliver_help_on_a_terminal_prints_usage() -> None:
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "helpdesk.entry", "deliver", "--help"],
            stdin=secondary,
            capture_output=True,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0
    assert b"deliver [--queue NAME]" in result.stdout


def test_deliver_help_in_an_alias_defers_instead_of_eating_the_mail() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "helpdesk.entry", "deliver", "--help"],
        input=make_mail(),
        capture_output=True,
    )
    assert result.returncode == 75
    assert result.stderr.decode().count("\n") == 1
    assert b"--help" in result.stderr


def test_reading_before_init_says_so_without_traceback(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    result = run_cli(config, "mail", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: database:")
    assert "Traceback" not in result.stderr
    huge = run_cli(config, "mail", "show", "99999999999999999999")
    assert (huge.returncode, huge.stderr) == (1, "Error: no mail #99999999999999999999\n")


def test_init_is_idempotent(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    first = run_cli(config, "init")
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty" in first.stdout
    run_pipe(config, make_mail())
    second = run_cli(config, "init")
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert len(cli_json(config, "ticket", "list")) == 1


def test_listings_filter_and_show(config: Path) -> None:
    run_pipe(config, make_mail(subject="un"))
    run_pipe(config, make_mail(subject="deux"), queue="scd")
    assert [t["subject"] for t in cli_json(config, "ticket", "list", "--queue", "scd")] == ["deux"]
    assert len(cli_json(config, "ticket", "list", "--status", "new")) == 2
    assert cli_json(config, "ticket", "list", "--status", "closed") == []
    assert len(cli_json(config, "mail", "list", "--queue", "dsi")) == 1
    text = run_cli(config, "ticket", "list")
    assert "deux" in text.stdout and "un" in text.stdout
    missing = run_cli(config, "ticket", "show", "999")
    assert missing.returncode == 1
    assert "no ticket #999" in missing.stderr


@pytest.mark.slow
def test_init_from_a_plain_pip_install(tmp_path: Path) -> None:
    """The migration scripts ship inside the package, not only in the checkout."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert (target / "helpdesk" / "migrations" / "env.py").exists()
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'pip.db'}")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    # Run from elsewhere, with -I-like isolation from the checkout.
    probe = (
        "import sys, helpdesk.migrate as m; "
        "assert str(m.migrations_dir()).startswith(sys.argv[1]), m.migrations_dir(); "
        "from helpdesk.entry import main; sys.exit(main(['--config', sys.argv[2], 'init']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(target), str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "upgraded from empty to revision" in result.stdout


def test_aliases_says_how_each_mta_takes_the_file_in_as_the_readme_does(config: Path) -> None:
    comments = [line for line in run_cli(config, "aliases").stdout.splitlines() if line[:1] == "#"]
    readme = (ROOT / "README.md").read_text()
    # Postfix: postalias as helpdesk, the README's command; newaliases only as a warning.
    postalias = "sudo runuser -u helpdesk -- postalias /etc/helpdesk/postfix/aliases"
    assert postalias in readme
    assert any(line.endswith(postalias) for line in comments), comments
    assert all("not newaliases" in line for line in comments if "newaliases" in line), comments
    # Exim reads the file at each delivery: nothing to run.
    assert "Exim reads `/etc/helpdesk/aliases` at each delivery" in readme
    assert any("Exim" in line and "nothing" in line for line in comments), comments


def test_aliases_lines_pipe_mail_into_their_queue(config: Path) -> None:
    import shlex

    result = run_cli(config, "aliases")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    by_alias = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines}
    assert set(by_alias) == {"dsi.support", "immobilier.travaux", "scd.informatique"}
    pipe = by_alias["immobilier.travaux"]
    assert pipe.startswith('"|/') and pipe.endswith('deliver --queue immobilier"')
    argv = shlex.split(pipe[2:-1])
    assert Path(argv[0]).is_absolute() and Path(argv[0]).exists()
    # The very command the MTA would run, with the MTA's bare environment.
    delivered = subprocess.run(
        argv, input=make_mail(), capture_output=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert delivered.returncode == 0, delivered.stderr
    [ticket] = cli_json(config, "ticket", "list")
    assert ticket["queue"] == "immobilier"


# -- what a sender wrote, on the technicians' terminal --------------------------------


def _b(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


SUBJECT = "Facture \x1b]0;pwned\x07 \u202eabc\x9b2J\x1b]52;c;cm0gLXJmIH4=\x07"
NAME = "Alice \x1b[8mhidden\x1b[0m\u200b\u2066"
BODY = "Bonjour\x1b[2J\n\x1b[1A\x1b[2K--- #9 jean.tech@univ.example (mail)\x85\u2028fin\U000e0041"
ATTACHMENT = "invoice\u202efdp.exe"
HOSTILE = (
    f"From: {_b(NAME)} <alice@univ.example>\r\nTo: dsi.support@univ.example\r\n"
    f"Subject: {_b(SUBJECT)}\r\nMessage-ID: <hostile-1@univ.example>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    f"{BODY}\r\n"
    "--b\r\nContent-Type: application/octet-stream\r\n"
    f'Content-Disposition: attachment; filename="{_b(ATTACHMENT)}"\r\n\r\n'
    "MZ\r\n--b--\r\n"
).encode()
READERS = [
    ["ticket", "list"],
    ["ticket", "show", "1"],
    ["ticket", "history", "1"],
    ["mail", "list"],
    ["mail", "show", "1"],
    ["outbox", "list"],
    ["tech", "list"],
    ["group", "list"],
    ["directory", "show", "alice@univ.example"],
]


def _hostile_ticket(config: Path) -> None:
    assert run_pipe(config, HOSTILE).returncode == 0
    # Whatever the pipe keeps is stored as it came; the rest is put there directly.
    [(subject,)] = db_execute(config, "SELECT subject FROM ticket WHERE id = 1")
    assert subject == SUBJECT
    db_execute(
        config,
        "UPDATE ticket_history SET detail = :d WHERE ticket_id = 1",
        d="moved\r\x1b[1A#2 fake entry\u202e",
    )
    db_execute(config, "UPDATE person SET name = :n WHERE email = 'alice@univ.example'", n=NAME)
    run_cli(config, "tech", "add", "zoe@univ.example", "--group", "dsi", "--name", "Zoé")
    db_execute(config, "UPDATE person SET name = :n WHERE email = 'zoe@univ.example'", n=NAME)
    db_execute(
        config,
        "INSERT INTO directory_entry (email, name, attributes, source, updated_at)"
        " VALUES ('alice@univ.example', :n, :a, :source, :now)",
        source="csv:hostile.csv",
        n=NAME,
        a=json.dumps({"site": "\x1b]0;site\x07\u202e"}),
        now=utcnow(),
    )


def test_stored_text_reaches_the_terminal_only_as_visible_escapes(config: Path) -> None:
    _hostile_ticket(config)
    for args in READERS:
        result = run_cli(config, *args)
        assert result.returncode == 0, (args, result.stderr)
        raw = UNSAFE.findall(result.stdout.replace("\n", "").replace("\t", ""))
        assert not raw, (args, raw, result.stdout)
    shown = run_cli(config, "ticket", "show", "1").stdout
    assert "Facture \\x1b]0;pwned\\x07 \\u202eabc\\x9b2J" in shown
    assert "Bonjour\\x1b[2J\n\\x1b[1A\\x1b[2K--- #9" in shown  # the body keeps its lines
    assert "\\x85\\u2028fin\\U000e0041" in shown
    assert "  [invoicefdp.exe] (stored as invoice\\u202efdp.exe) application/octet-stream" in shown
    history = run_cli(config, "ticket", "history", "1").stdout
    assert "moved\\r\\x1b[1A#2 fake entry\\u202e" in history  # one line: \r shown, not obeyed
    assert "\\x1b[8mhidden" in run_cli(config, "tech", "list").stdout
    assert "[invoicefdp.exe]" in run_cli(config, "mail", "show", "1").stdout


def test_json_output_is_lossless_with_the_unsafe_characters_escaped(config: Path) -> None:
    _hostile_ticket(config)
    for args in READERS:
        result = run_cli(config, *args, "--json")
        assert result.returncode == 0, (args, result.stderr)
        assert not UNSAFE.findall(result.stdout.replace("\n", "")), args
        json.loads(result.stdout)
    ticket = cli_json(config, "ticket", "show", "1")
    assert ticket["subject"] == SUBJECT
    [article] = ticket["articles"]
    assert BODY.replace("\x85", "") in article["body_text"].replace("\x85", "")
    [attachment] = article["attachments"]
    assert attachment["filename"] == ATTACHMENT  # as stored
    assert attachment["shown_name"] == "invoicefdp.exe"
    assert (
        '"subject": "Facture \\u001b]0;pwned\\u0007 \\u202eabc\\u009b2J'
        in run_cli(config, "ticket", "show", "1", "--json").stdout
    )


def test_mail_show_raw_is_exact_into_a_pipe_and_escaped_on_a_terminal(config: Path) -> None:
    import os
    import pty

    _hostile_ticket(config)
    piped = run_cli(config, "mail", "show", "1", "--raw")
    assert piped.returncode == 0 and piped.stdout_bytes == HOSTILE
    primary, secondary = pty.openpty()
    try:
        shown = subprocess.Popen(
            [sys.executable, "-m", "helpdesk.entry", "--config", str(config)]
            + ["mail", "show", "1", "--raw"],
            stdout=secondary,
            stderr=subprocess.PIPE,
        )
        os.close(secondary)
        out = b""
        while True:  # read as it comes: a full terminal would block the writer
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the writer closed its end
                break
            if not chunk:
                break
            out += chunk
        stderr = shown.stderr.read()
        assert shown.wait(timeout=60) == 0, stderr
    finally:
        os.close(primary)
    text = out.decode()
    assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text
    assert "Bonjour\\x1b[2J" in text and "Message-ID: <hostile-1@univ.example>" in text
    assert b"escaped for the terminal" in stderr


@pytest.mark.parametrize("number", ["0", str(2**31), str(2**63), str(2**64), "9" * 40])
def test_an_id_no_row_can_have_is_a_missing_row_in_one_line(config: Path, number: str) -> None:
    shown = number if len(number) <= 20 else number[:20] + "..."
    for args, noun in [
        (["ticket", "show", number], "ticket"),
        (["ticket", "history", number], "ticket"),
        (["ticket", "link", number], "ticket"),
        (["ticket", "close", number], "ticket"),
        (["mail", "show", number], "mail"),
        (["mail", "show", "--raw", number], "mail"),
        (["outbox", "list", "--ticket", number], "ticket"),
    ]:
        result = run_cli(config, *args)
        assert (result.returncode, result.stderr) == (1, f"Error: no {noun} #{shown}\n"), args


def test_the_largest_id_reaches_the_database_and_is_simply_missing(config: Path) -> None:
    for args, noun in [(["ticket", "show"], "ticket"), (["mail", "show"], "mail")]:
        result = run_cli(config, *args, str(2**31 - 1))
        assert (result.returncode, result.stderr) == (1, f"Error: no {noun} #2147483647\n")
    assert run_cli(config, "outbox", "list", "--ticket", str(2**31 - 1)).returncode == 0
    assert run_cli(config, "ticket", "show", "x1").returncode == 2  # not a number: usage
