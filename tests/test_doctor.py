"""`helpdesk-pipe doctor` on real installations: what it passes, and each problem it names."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import db_execute
from conftest import run_cli
from conftest import write_config


def _findings(config: Path, *args: str) -> list[dict]:
    result = run_cli(config, "doctor", *args, "--json")
    import json

    return json.loads(result.stdout)


def _levels(findings: list[dict], check: str) -> set[str]:
    return {f["level"] for f in findings if f["check"] == check}


def _wire_aliases(config: Path, tmp_path: Path) -> Path:
    """The alias file a sysadmin makes from `helpdesk-pipe aliases`."""
    printed = run_cli(config, "aliases").stdout
    path = tmp_path / "helpdesk-aliases"
    path.write_text(printed, encoding="utf-8")
    return path


def test_a_sound_installation_passes(config: Path, tmp_path: Path) -> None:
    aliases = _wire_aliases(config, tmp_path)
    os.chmod(config, 0o640)
    # dsi and scd have theirs in the config; immobilier's comes from the database.
    tech = run_cli(config, "tech", "add", "paul.immo@univ.example", "--group", "immobilier")
    assert tech.returncode == 0, tech.stderr
    # What the scheduler (or cron) leaves behind.
    assert run_cli(config, "autoclose").returncode == 0
    assert run_cli(config, "outbox", "flush", "--due-only").returncode == 0
    result = run_cli(config, "doctor", "--aliases", str(aliases), "--user", "root")
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith("no problem found (pipe user root)")
    findings = _findings(config, "--aliases", str(aliases), "--user", "root")
    assert {f["level"] for f in findings} <= {"ok", "warn"}
    # The directory transport, and no ingestd (tests/test_ingestd.py has it running).
    assert [f["check"] for f in findings if f["level"] == "warn"] == ["mail", "ingestd"]
    ok_aliases = [f for f in findings if f["check"] == "aliases" and f["level"] == "ok"]
    assert len(ok_aliases) == 3  # dsi, immobilier, scd
    assert _levels(findings, "scheduler") == {"ok"}
    assert _levels(findings, "groups") == {"ok"}


def test_each_problem_is_named_with_its_fix(db_url: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        db_url,
        outgoing='transport = "smtp"\nhost = "127.0.0.1"\nport = 9\ntimeout = 2\n',
    )
    text = config.read_text().replace('base_url = "https://helpdesk.univ.example"', "")
    config.write_text(text)
    # Not initialised yet: the schema is missing.
    findings = _findings(config, "--aliases", str(tmp_path / "none"))
    (database,) = [f for f in findings if f["check"] == "database"]
    assert database["level"] == "fail" and database["fix"] == "helpdesk-pipe init"
    assert run_cli(config, "init").returncode == 0
    aliases = tmp_path / "aliases"
    aliases.write_text(
        "postmaster: root\n"
        'dsi.support: "|helpdesk-pipe --config /etc/other.toml deliver --queue dsi"\n'
        'scd.info: "|/nonexistent/bin/helpdesk-pipe deliver --queue scd"\n'
        'old: "|/bin/true helpdesk-pipe deliver --queue gone"\n'
    )
    result = run_cli(config, "doctor", "--aliases", str(aliases))
    assert result.returncode == 1
    out = result.stdout
    assert "helpdesk-pipe is not an absolute path" in out
    assert "it uses /etc/other.toml" in out
    assert "/nonexistent/bin/helpdesk-pipe is not an executable file" in out
    assert "queue gone is not in the config" in out
    assert "no alias line delivers to queue immobilier" in out
    assert "SMTP server 127.0.0.1:9 unreachable" in out
    assert "base_url is http://localhost:8080" in out
    assert "the outbox job has never run" in out and "the autoclose job has never run" in out
    # Every failure comes with its fix, on the next line.
    lines = out.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("FAIL"):
            assert lines[number + 1].strip().startswith("fix: "), line
    # A scheduler that stopped two days ago is named too.
    assert run_cli(config, "autoclose").returncode == 0
    from datetime import UTC
    from datetime import datetime
    from datetime import timedelta

    db_execute(
        config,
        "UPDATE job_run SET finished_at = :old",
        old=datetime.now(UTC) - timedelta(days=2),
    )
    stale = [f for f in _findings(config) if f["check"] == "scheduler"]
    assert any("the autoclose job last ran 2 days" in f["message"] for f in stale)


def test_sqlite_files_the_pipe_user_cannot_write_or_anyone_can_read(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db' / 'helpdesk.db'}")
    assert run_cli(config, "init").returncode == 0
    database = tmp_path / "db" / "helpdesk.db"
    os.chmod(database, 0o644)
    findings = _findings(config, "--user", "nobody", "--aliases", str(tmp_path / "none"))
    failures = [f["message"] for f in findings if f["level"] == "fail"]
    assert any(m.startswith(f"nobody cannot write {database}") for m in failures), failures
    assert any(m == f"{database} is world-readable: every mail and attachment is" for m in failures)
    assert any(m.startswith("nobody cannot read") for m in failures) == (
        not os.stat(config).st_mode & 0o004
    )
    # A command nobody but root may run (an interpreter under /root, say) is named.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    program = private / "helpdesk-pipe"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    os.chmod(tmp_path, 0o755)
    aliases = tmp_path / "aliases"
    aliases.write_text(f'dsi.support: "|{program} --config {config} deliver --queue dsi"\n')
    findings = _findings(config, "--user", "nobody", "--aliases", str(aliases))
    messages = [f["message"] for f in findings if f["check"] == "aliases"]
    # (the first directory on the way that nobody may enter: here pytest's own, or ours)
    assert any("nobody cannot enter" in m and f"on the way to {program}" in m for m in messages)
    unknown = _findings(config, "--user", "no-such-account-here", "--aliases", "/x")
    assert unknown[0]["check"] == "user" and unknown[0]["level"] == "fail"
    assert "adduser --system" in unknown[0]["fix"]


def test_the_scheduler_records_its_runs(config: Path) -> None:
    import signal
    import subprocess
    import time

    from conftest import pipe_command

    process = subprocess.Popen(
        [*pipe_command(), "--config", str(config), "scheduler"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(db_execute(config, "SELECT job FROM job_run")) == 3:
                break
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    jobs = {row[0]: row[1] for row in db_execute(config, "SELECT job, result FROM job_run")}
    assert set(jobs) == {"outbox", "autoclose", "cleanup"}
    assert jobs["autoclose"] == "0 closed"
    findings = _findings(config, "--aliases", "/nonexistent", "--user", "root")
    assert _levels(findings, "scheduler") == {"ok"}


def test_groups_without_a_technician_name_the_queues_that_alert_nobody(
    db_url: str, tmp_path: Path
) -> None:
    """The shipped example: one group of technicians for nine queues."""
    from conftest import ROOT

    text = (ROOT / "examples" / "helpdesk.toml").read_text()
    assert 'url = "sqlite:///helpdesk.db"' in text
    config = tmp_path / "helpdesk.toml"
    config.write_text(text.replace('url = "sqlite:///helpdesk.db"', f'url = "{db_url}"'))
    (tmp_path / "secret_key").write_text("0123456789abcdef" * 4 + "\n")
    assert run_cli(config, "init").returncode == 0
    result = run_cli(config, "doctor", "--aliases", str(tmp_path / "none"))
    assert result.returncode == 1
    groups = [
        f for f in _findings(config, "--aliases", str(tmp_path / "none")) if f["check"] == "groups"
    ]
    assert {f["level"] for f in groups} == {"fail"}
    alerting_nobody = {
        m.split(" of queue ")[1].split(" alert")[0]
        for m in (f["message"] for f in groups)
        if " of queue " in m
    }
    assert alerting_nobody == {
        "cemu", "dsi-c2", "dsi-c5", "immobilier",
        "iut-assistance", "iut-immobilier", "scd", "scolarite",
    }  # fmt: skip
    # Routed groups are named with the queue that routes to them.
    assert any(
        f["message"] == "group iut-vire has no technician: the tickets routed to it from"
        " iut-assistance alert nobody"
        for f in groups
    )
    assert all("tech add EMAIL --group" in f["fix"] for f in groups)
    # A technician added by `tech add` counts, as it does for the mail.
    assert run_cli(config, "tech", "add", "sam.lib@univ.example", "--group", "scd").returncode == 0
    after = [f["message"] for f in _findings(config, "--aliases", "/x") if f["check"] == "groups"]
    assert len(after) == len(groups) - 1 and not any("group scd " in m for m in after)


def test_a_job_run_dated_in_the_future_is_named(config: Path) -> None:
    from datetime import UTC
    from datetime import datetime
    from datetime import timedelta

    assert run_cli(config, "autoclose").returncode == 0
    assert run_cli(config, "outbox", "flush", "--due-only").returncode == 0
    db_execute(
        config,
        "UPDATE job_run SET finished_at = :later WHERE job = 'autoclose'",
        later=datetime.now(UTC) + timedelta(days=3),
    )
    scheduler = [f for f in _findings(config, "--aliases", "/x") if f["check"] == "scheduler"]
    [future] = [f for f in scheduler if f["level"] == "fail"]
    assert future["message"].startswith(
        "the autoclose job's last run is dated 3 days, 0:00:00 in the future"
    )
    assert "in the future" in future["message"] and "clock" in future["fix"]
    assert [f["level"] for f in scheduler if "outbox" in f["message"]] == ["ok"]
