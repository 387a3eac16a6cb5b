"""Many deliveries at once, and deliveries killed mid-way: exactly one ticket per mail."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import cli_json
from conftest import make_mail
from conftest import pipe_command
from conftest import run_pipe

pytestmark = pytest.mark.slow


def _deliver_until_accepted(config: Path, raw: bytes, tries: int = 10) -> list[int]:
    """Re-deliver as the MTA would while the pipe says 75; return every exit code seen."""
    codes = []
    for _ in range(tries):
        result = run_pipe(config, raw)
        assert b"Traceback" not in result.stderr
        codes.append(result.returncode)
        if result.returncode != 75:
            break
        time.sleep(0.5)
    return codes


def _consistency(config: Path) -> None:
    """Every ticket is whole: one article per accepted mail, no mail left undecided."""
    from sqlalchemy import text

    from helpdesk.config import load_settings
    from helpdesk.db import engine_for

    with engine_for(load_settings(config)).connect() as conn:
        pending = conn.execute(text("SELECT count(*) FROM mail_record WHERE verdict = 'pending'"))
        assert pending.scalar() == 0
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM ticket t WHERE NOT EXISTS"
                " (SELECT 1 FROM article a WHERE a.ticket_id = t.id)"
            )
        )
        assert orphans.scalar() == 0
        unlinked = conn.execute(
            text(
                "SELECT count(*) FROM mail_record m WHERE m.verdict = 'ticket' AND NOT EXISTS"
                " (SELECT 1 FROM article a WHERE a.mail_id = m.id AND a.ticket_id = m.ticket_id)"
            )
        )
        assert unlinked.scalar() == 0


def test_32_deliveries_at_once(config: Path) -> None:
    mails = [make_mail(subject=f"Demande {n}", body=f"texte {n}\n" * 50) for n in range(32)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        first = list(pool.map(lambda raw: run_pipe(config, raw), mails))
    codes = [r.returncode for r in first]
    assert set(codes) <= {0, 75}, [r.stderr for r in first]
    assert all(b"Traceback" not in r.stderr for r in first)
    for raw, result in zip(mails, first, strict=True):
        if result.returncode == 75:
            assert _deliver_until_accepted(config, raw)[-1] == 0
    tickets = cli_json(config, "ticket", "list")
    assert len(tickets) == 32
    assert sorted(t["subject"] for t in tickets) == sorted(f"Demande {n}" for n in range(32))
    # The MTA re-delivering everything (say after a crash report) changes nothing.
    with ThreadPoolExecutor(max_workers=32) as pool:
        again = list(pool.map(lambda raw: _deliver_until_accepted(config, raw), mails))
    assert all(codes[-1] == 0 for codes in again)
    assert len(cli_json(config, "ticket", "list")) == 32
    verdicts = [m["verdict"] for m in cli_json(config, "mail", "list")]
    assert verdicts.count("ticket") == 32
    assert verdicts.count("duplicate") == 32
    _consistency(config)


def test_same_message_twice_at_once_gives_one_ticket(config: Path) -> None:
    raw = make_mail(message_id="<twin@univ.example>")
    variant = make_mail(message_id="<twin@univ.example>", body="same id, other bytes\n")
    batch = [raw, variant] * 8
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda r: _deliver_until_accepted(config, r), batch))
    assert all(codes[-1] == 0 for codes in results)
    assert len(cli_json(config, "ticket", "list")) == 1
    verdicts = [m["verdict"] for m in cli_json(config, "mail", "list")]
    assert verdicts.count("ticket") == 1
    _consistency(config)


def _mail_with_attachment(n: int) -> bytes:
    blob = bytes(random.Random(n).randrange(256) for _ in range(300_000))
    import base64

    encoded = base64.encodebytes(blob).decode()
    return (
        f"From: carol@univ.example\r\nTo: dsi.support@univ.example\r\nSubject: kill {n}\r\n"
        f"Message-ID: <kill{n}@univ.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nvoir fichier\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="data{n}.bin"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n--b--\r\n"
    ).encode()


def _feed(proc: subprocess.Popen[bytes], raw: bytes) -> None:
    try:
        proc.stdin.write(raw)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass


def test_sigkill_at_random_points_then_redelivery(config: Path) -> None:
    rng = random.Random(20261128)
    # How long one delivery takes here, to spread the kills over its whole life.
    start = time.monotonic()
    assert run_pipe(config, _mail_with_attachment(999)).returncode == 0
    duration = time.monotonic() - start
    n_mails = 12
    killed = 0
    window = duration
    for n in range(n_mails):
        raw = _mail_with_attachment(n)
        kills_here = 0
        for _ in range(6):  # two kills per mail, then it is let through
            proc = subprocess.Popen(
                [*pipe_command(), "--config", str(config), "deliver", "--queue", "dsi"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
            )
            writer = threading.Thread(target=_feed, args=(proc, raw))
            writer.start()
            delay = rng.uniform(0.01, window)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills_here += 1
            else:
                window = max(0.05, delay * 0.9)  # it finished sooner: aim earlier
            proc.wait()
            writer.join()
            if kills_here == 2:
                break
        killed += kills_here
        assert _deliver_until_accepted(config, raw)[-1] == 0
    assert killed >= n_mails, f"only {killed} deliveries were killed mid-way"
    tickets = cli_json(config, "ticket", "list")
    assert len(tickets) == n_mails + 1
    for ticket in tickets:
        shown = cli_json(config, "ticket", "show", str(ticket["id"]))
        [article] = shown["articles"]
        [attachment] = article["attachments"]
        assert attachment["size"] == 300_000
    _consistency(config)
