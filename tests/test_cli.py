"""The command line: every subcommand answers --help, init is idempotent and ships its scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT
from conftest import cli_json
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config

from helpdesk.cli import cli

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
    assert huge.returncode == 2
    assert "is not in the range" in huge.stderr


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
