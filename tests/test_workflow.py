"""The technicians' workflow end to end: real pipe and CLI processes, a real SMTP server
catching every mail, the viewer's form, and a clock moved with libfaketime.

Each test runs on SQLite and on PostgreSQL (the db_url fixture).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
from datetime import UTC
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import pipe_command
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from smtp_catcher import SmtpCatcher

ALICE = "alice@univ.example"
JEAN = "jean.tech@univ.example"
MARIE = "marie.tech@univ.example"
LINK = re.compile(r"https://helpdesk\.univ\.example(/t/[A-Za-z0-9_-]{43})")

IUT_TOML = """
[queues.iut-assistance]
addresses = ["iut.caen.assistance@univ.example"]
group = "iut-caen"
routes = [
  { site = "Ifs", group = "iut-ifs" },
  { site = ["Lisieux", "Lisieux-Campus"], group = "iut-lisieux" },
  { site = "Vire", group = "iut-vire" },
]

[groups.iut-caen]
technicians = ["Carole Caen <carole@univ.example>"]

[groups.iut-lisieux]
technicians = ["Luc Lisieux <luc@univ.example>"]
"""


@pytest.fixture
def smtp_config(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> Path:
    """A config whose outgoing mail goes to the test's SMTP server."""
    path = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(path, "init").returncode == 0
    return path


def _clock(days: int) -> dict[str, str]:
    """The environment that moves a process's clock `days` ahead (libfaketime), so the
    process itself is our child and gets our signals (the faketime wrapper would not
    pass them on)."""
    import glob
    import os

    libraries = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
    if not libraries:
        pytest.fail("libfaketime is required (Debian package faketime; make test-deps)")
    # A faked monotonic clock would stall the scheduler's timed waits.
    return {
        **os.environ,
        "LD_PRELOAD": libraries[0],
        "FAKETIME": f"+{days}d",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def _real_cli(
    config: Path, *args: str, days: int = 0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the installed command as a process, `days` in the future."""
    result = subprocess.run(
        [*pipe_command(), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clock(days) if days else None,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _scheduler(config: Path, days: int) -> subprocess.Popen[str]:
    # Its log goes to a file: a pipe nobody reads would stall a chatty scheduler.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [*pipe_command(), "--config", str(config), "scheduler"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env=_clock(days) if days else None,
    )
    process.log = log  # type: ignore[attr-defined]
    return process


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    err = log.read()
    log.close()
    assert process.returncode == 0, err[-3000:]
    assert "scheduler stopped" in err, err[-3000:]
    return err


def _cli(config: Path, *args: str) -> str:
    result = run_cli(config, *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def _deliver(config: Path, raw: bytes, queue: str = "dsi") -> None:
    result = run_pipe(config, raw, queue=queue)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _new(catcher: SmtpCatcher, seen: int, count: int) -> list[EmailMessage]:
    """Wait for `count` more messages after the first `seen`; return the new ones."""
    caught = catcher.wait_for(seen + count)
    time.sleep(0.3)  # nothing more must come
    assert len(catcher.messages) == seen + count, [
        (c.recipients, c.message()["Subject"]) for c in catcher.messages[seen:]
    ]
    return [c.message() for c in caught[seen:]]


def _to(messages: list[EmailMessage], address: str) -> list[EmailMessage]:
    return [m for m in messages if address in m["To"]]


def _text(message: EmailMessage) -> str:
    return message.get_content()


def _ticket(config: Path, ticket_id: int = 1) -> dict[str, Any]:
    return cli_json(config, "ticket", "show", str(ticket_id))


def _history(config: Path, ticket_id: int = 1) -> list[tuple[str, str, str, str | None]]:
    return [
        (h["action"], h["door"], h["actor"], h["new_status"])
        for h in cli_json(config, "ticket", "history", str(ticket_id))
    ]


def _reply_to(original: EmailMessage, sender: str, body: str) -> bytes:
    """A reply as a mail client writes it, to the Reply-To of our message."""
    quoted = "\n".join("> " + line for line in _text(original).splitlines())
    raw = make_mail(
        subject=f"Re: {original['Subject']}",
        sender=sender,
        body=f"{body}\n\nLe 28/11/2026 à 10:00, Assistance a écrit :\n{quoted}\n",
        extra_headers=(
            f"In-Reply-To: {original['Message-ID']}\r\nReferences: {original['Message-ID']}\r\n"
        ),
    )
    return raw.replace(b"To: dsi.support@univ.example", f"To: {original['Reply-To']}".encode())


def _web_followup(config: Path, path: str, text: str) -> None:
    """Answer on the requester's page, through the viewer's own form."""
    from helpdesk.config import load_settings
    from webview import create_app

    app = create_app(settings=load_settings(config))
    client = app.test_client()
    page = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(path, data={"csrf_token": token, "description": text})
    assert response.status_code == 303, response.get_data(as_text=True)


def test_the_whole_story(smtp_config: Path, smtp_catcher: SmtpCatcher) -> None:
    config = smtp_config
    # 1. Mail to dsi.support: a ticket, an acknowledgement with a private link.
    _deliver(config, make_mail())
    news = _new(smtp_catcher, 0, 3)
    (ack,) = _to(news, ALICE)
    assert "Enregistrement de votre demande" in ack["Subject"]
    path = LINK.search(_text(ack)).group(1)
    assert {m["To"].addresses[0].addr_spec for m in _to(news, "tech")} == {JEAN, MARIE}

    # 2. A technician takes it: the requester is told who, and so is the rest of the group.
    assert "taken" in _cli(config, "ticket", "take", "1", "--as", JEAN)
    news = _new(smtp_catcher, 3, 2)
    (taken,) = _to(news, ALICE)
    (announced,) = _to(news, MARIE)
    assert "Jean Technicien a pris la demande" in announced["Subject"]
    assert taken["Subject"] == ("[HD #1] Votre demande a été prise en charge par Jean Technicien")
    assert "par Jean Technicien" in _text(taken)
    assert _ticket(config)["status"] == "assigned"
    assert _ticket(config)["assignee"] == JEAN

    # 3. The technician asks a question.
    _cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Quel est le modèle exact ?")
    (question,) = _new(smtp_catcher, 5, 1)
    assert "Suivi de la demande" in question["Subject"]
    assert "Quel est le modèle exact ?" in _text(question)
    assert _ticket(config)["status"] == "waiting"

    # 4. The requester answers on the page: only the technician in charge is told.
    _web_followup(config, path, "Une HP LaserJet 4250.")
    (told,) = _new(smtp_catcher, 6, 1)
    assert told["To"].addresses[0].addr_spec == JEAN
    assert "Une HP LaserJet 4250." in _text(told)
    assert _ticket(config)["status"] == "assigned"

    # 5. The technician resolves.
    _cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Le toner a été remplacé.")
    (resolved,) = _new(smtp_catcher, 7, 1)
    assert resolved["To"].addresses[0].addr_spec == ALICE
    assert "Votre demande est résolue" in resolved["Subject"]
    body = _text(resolved)
    assert "Le toner a été remplacé." in body
    assert "15 jours" in body and "rouverte" in body
    assert _ticket(config)["status"] == "resolved"

    # 6. Fourteen days on, nothing closes; sixteen days on, the scheduler closes it.
    dry = _real_cli(config, "autoclose", "--dry-run", days=14)
    assert dry.stdout.startswith("0 ticket(s) would close"), dry.stdout
    assert "#1" in _real_cli(config, "autoclose", "--dry-run", days=16).stdout
    assert _ticket(config)["status"] == "resolved"  # a dry run changes nothing
    scheduler = _scheduler(config, days=16)
    try:
        (closing,) = _new(smtp_catcher, 8, 1)
    finally:
        _stop(scheduler)
    assert closing["To"].addresses[0].addr_spec == ALICE
    assert "Votre demande est close" in closing["Subject"]
    ticket = _ticket(config)
    assert ticket["status"] == "closed" and ticket["closed_at"]

    # Every change is in the history, with who and through which door.
    assert _history(config) == [
        ("open", "mail", ALICE, "new"),
        ("take", "cli", JEAN, "assigned"),
        ("reply", "cli", JEAN, "waiting"),
        ("followup", "web", ALICE, "assigned"),
        ("resolve", "cli", JEAN, "resolved"),
        ("close", "scheduler", "scheduler", "closed"),
    ]
    # Only the requester's own private link was ever needed: no action of theirs closed it.
    kinds = [r["kind"] for r in reversed(cli_json(config, "outbox", "list"))]
    assert kinds == [
        "ack",
        "tech_new",
        "tech_new",
        "taken",
        "tech_taken",
        "followup",
        "tech_followup",
        "resolved",
        "closed",
    ]


def test_an_answer_after_resolution_reopens_and_after_closure_opens_a_linked_ticket(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    _cli(config, "ticket", "take", "1", "--as", JEAN)
    _cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Redémarrez le poste.")
    caught = smtp_catcher.wait_for(6)  # ack, 2 tech_new, taken, the take's news, resolved
    (resolved,) = [c.message() for c in caught if "résolue" in c.message()["Subject"]]

    # Answering the resolution by mail reopens the ticket, back to its technician.
    _deliver(config, _reply_to(resolved, ALICE, "Toujours en panne après redémarrage."))
    (reopened,) = _new(smtp_catcher, 6, 1)
    assert reopened["To"].addresses[0].addr_spec == JEAN
    assert "Demande rouverte" in reopened["Subject"]
    assert "Toujours en panne après redémarrage." in _text(reopened)
    ticket = _ticket(config)
    assert ticket["status"] == "assigned" and ticket["resolved_at"] is None
    assert ("reopen", "mail", ALICE, "assigned") in _history(config)
    assert "reopened" in cli_json(config, "mail", "list")[0]["reason"]

    # Closed: the requester's answer opens a new ticket linked to the old one.
    _cli(config, "ticket", "close", "1", "--as", JEAN)
    (closing,) = _new(smtp_catcher, 7, 1)
    assert "close" in closing["Subject"]
    _deliver(config, _reply_to(closing, ALICE, "Elle refait le même bruit."))
    # Ack + the technician who had #1 (still one of the group), titled after #1, not
    # after the reply's "Re: Votre demande est close : ...".
    news = _new(smtp_catcher, 8, 2)
    (ack,) = _to(news, ALICE)
    assert ack["Subject"].startswith("[HD #2] Enregistrement de votre demande")
    assert "n° 1 étant close" in _text(ack)
    (tech,) = _to(news, JEAN)
    assert "Suite de la demande n° 1 : Imprimante en panne" in tech["Subject"]
    new = _ticket(config, 2)
    assert new["previous_id"] == 1 and new["status"] == "assigned"
    assert new["subject"] == "Suite de la demande n° 1 : Imprimante en panne"
    assert new["assignee"] == JEAN
    assert ("assign", "mail", ALICE, "assigned") in _history(config, 2)
    assert new["articles"][0]["body_shown"].startswith("Elle refait le même bruit.")
    old = _ticket(config, 1)
    assert old["status"] == "closed" and len(old["articles"]) == 3
    assert _history(config, 1)[-1][0] == "continued"
    mail = cli_json(config, "mail", "list")[0]
    assert mail["verdict"] == "ticket" and mail["ticket_id"] == 2
    assert "is closed: opened a new one" in mail["reason"]


def _settled(catcher: SmtpCatcher, seen: int) -> list[EmailMessage]:
    """The messages after the first `seen`, once no more has come for half a second."""
    count = -1
    while count != len(catcher.messages):
        count = len(catcher.messages)
        time.sleep(0.5)
    return [c.message() for c in catcher.messages[seen:]]


def test_a_reply_after_closure_continues_with_the_old_subject_and_its_technician_if_still_one(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    """English queue scd (Sam in the config); Pat joins by `tech add`, has #1, then leaves."""
    config, pat, sam = smtp_config, "pat.lib@univ.example", "sam.lib@univ.example"
    _cli(config, "tech", "add", pat, "--group", "scd")
    to_scd = b"To: scd.informatique@univ.example"
    _deliver(
        config,
        make_mail(subject="Printer jam").replace(b"To: dsi.support@univ.example", to_scd),
        "scd",
    )
    _cli(config, "ticket", "take", "1", "--as", pat)
    _cli(config, "ticket", "close", "1", "--as", pat)
    [closing] = [
        m
        for m in _settled(smtp_catcher, 0)
        if "[HD #1]" in m["Subject"] and "closed" in m["Subject"]
    ]
    _cli(config, "tech", "remove", pat, "--group", "scd")

    # Pat is no technician of scd any more: the continuation goes to the group, as a new one.
    seen = len(smtp_catcher.messages)
    _deliver(
        config,
        _reply_to(closing, ALICE, "It jams again.").replace(b"dsi.support@", b"scd.informatique@"),
        "scd",
    )
    second = _ticket(config, 2)
    assert second["subject"] == "Follow-up to request #1: Printer jam"
    assert second["status"] == "new" and second["assignee"] is None
    news = _settled(smtp_catcher, seen)
    assert sorted(m["To"].addresses[0].addr_spec for m in news) == [ALICE, sam]
    (tech,) = _to(news, sam)
    assert "Follow-up to request #1: Printer jam" in tech["Subject"]

    # Sam has #2 and closes it; the next reply continues #2 with Sam, the title not doubled.
    _cli(config, "ticket", "take", "2", "--as", sam)
    _cli(config, "ticket", "close", "2", "--as", sam)
    [closing] = [
        m
        for m in _settled(smtp_catcher, seen)
        if "[HD #2]" in m["Subject"] and "closed" in m["Subject"]
    ]
    seen = len(smtp_catcher.messages)
    _deliver(
        config,
        _reply_to(closing, ALICE, "Still jams.").replace(b"dsi.support@", b"scd.informatique@"),
        "scd",
    )
    third = _ticket(config, 3)
    assert third["subject"] == "Follow-up to request #2: Printer jam"
    assert third["status"] == "assigned" and third["assignee"] == sam
    news = _settled(smtp_catcher, seen)
    assert sorted(m["To"].addresses[0].addr_spec for m in news) == [ALICE, sam]


def test_reopen_and_close_from_the_cli(smtp_config: Path, smtp_catcher: SmtpCatcher) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    smtp_catcher.wait_for(3)
    # A ticket nobody has goes back to its whole group when reopened.
    _cli(config, "ticket", "resolve", "1", "--as", MARIE, "-m", "Fait.")
    assert _ticket(config)["assignee"] == MARIE  # resolving takes it
    _cli(config, "ticket", "close", "1")
    news = _new(smtp_catcher, 3, 3)
    assert [m["Subject"].split("] ")[1][:24] for m in _to(news, ALICE)] == [
        "Votre demande est résolu",
        "Votre demande est close ",
    ]
    (announced,) = _to(news, JEAN)  # resolving took it: the rest of the group knows
    assert "a pris la demande" in announced["Subject"]
    assert _history(config)[-1][:2] == ("close", "cli")
    assert _history(config)[-1][2].startswith("cli:")
    out = _cli(config, "ticket", "reopen", "1", "--as", JEAN, "-m", "Le client a rappelé.")
    assert "reopened" in out
    (told,) = _new(smtp_catcher, 6, 1)
    assert told["To"].addresses[0].addr_spec == MARIE and "rouverte" in told["Subject"]
    assert _ticket(config)["status"] == "assigned"
    # What makes no sense is refused with one clear line, and changes nothing.
    again = run_cli(config, "ticket", "reopen", "1")
    assert again.returncode == 1 and "is assigned: nothing to reopen" in again.stderr
    stranger = run_cli(config, "ticket", "take", "1", "--as", "bob@univ.example")
    assert stranger.returncode == 1 and "is not a technician" in stranger.stderr
    nothing = run_cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "  ")
    assert nothing.returncode != 0
    missing = run_cli(config, "ticket", "close", "99")
    assert missing.returncode == 1 and "no ticket #99" in missing.stderr
    assert _real_cli(config, "ticket", "close", "1").returncode == 0
    assert "was already closed" in _real_cli(config, "ticket", "close", "1").stdout
    closed_twice = _real_cli(config, "ticket", "take", "1", "--as", JEAN, check=False)
    assert closed_twice.returncode == 1
    assert "is closed: reopen it first" in closed_twice.stderr
    assert "Traceback" not in closed_twice.stderr


def test_assign_tells_the_technician_and_the_requester(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    smtp_catcher.wait_for(3)
    _cli(config, "ticket", "assign", "1", MARIE, "--as", JEAN)
    news = _new(smtp_catcher, 3, 2)
    (requester,) = _to(news, ALICE)
    assert requester["Subject"].endswith("prise en charge par marie.tech@univ.example")
    (technician,) = _to(news, MARIE)
    assert "Demande attribuée" in technician["Subject"]
    assert "Jean Technicien vous a attribué" in _text(technician)
    assert "ne marche plus" in _text(technician)
    assert _history(config)[-1] == ("assign", "cli", JEAN, "assigned")
    # From now on only Marie hears of the requester's news.
    _deliver(config, _reply_to(requester, ALICE, "Merci."))
    (told,) = _new(smtp_catcher, 5, 1)
    assert told["To"].addresses[0].addr_spec == MARIE
    mine = cli_json(config, "ticket", "list", "--mine", "--as", MARIE)
    assert [t["id"] for t in mine] == [1]
    assert cli_json(config, "ticket", "list", "--mine", "--as", JEAN) == []


def test_internal_comments_never_reach_the_requester(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    caught = smtp_catcher.wait_for(3)
    tech_new = next(c.message() for c in caught if JEAN in c.recipients)
    path = LINK.search(_text(next(c.message() for c in caught if ALICE in c.recipients))).group(1)

    # From the CLI: the other technicians hear of it, the requester never.
    _cli(config, "ticket", "comment", "1", "--as", JEAN, "-m", "SECRET-CLI mot de passe admin")
    (note,) = _new(smtp_catcher, 3, 1)
    assert note["To"].addresses[0].addr_spec == MARIE and "Note interne" in note["Subject"]

    # By mail, a technician answering our mail with a first line #comment.
    _deliver(config, _reply_to(tech_new, JEAN, "#comment\nSECRET-MAIL le poste est volé"))
    (note2,) = _new(smtp_catcher, 4, 1)
    assert note2["To"].addresses[0].addr_spec == MARIE
    assert "#comment" not in _text(note2) and "SECRET-MAIL" in _text(note2)

    # Marie answers the internal note's mail: what she writes (and quotes) stays internal.
    _deliver(config, _reply_to(note2, MARIE, "SECRET-ANSWER je passe demain"))
    (note3,) = _new(smtp_catcher, 5, 1)
    assert note3["To"].addresses[0].addr_spec == JEAN and "Note interne" in note3["Subject"]

    # A technician's mail by subject tag alone proves nothing, but may still add a note.
    tagged = make_mail(subject="[HD #1] suite", sender=JEAN, body="#comment\nSECRET-TAG\n")
    _deliver(config, tagged)
    _new(smtp_catcher, 6, 1)  # Marie's note

    ticket = _ticket(config)
    internal = [a for a in ticket["articles"] if a["internal"]]
    assert len(internal) == 4
    assert [a["source"] for a in internal] == ["cli", "mail", "mail", "mail"]
    assert ticket["status"] == "new"  # notes move nothing
    for secret in ("SECRET-CLI", "SECRET-MAIL", "SECRET-ANSWER", "SECRET-TAG"):
        for caught_mail in smtp_catcher.messages:
            if ALICE in caught_mail.recipients:
                assert secret.encode() not in caught_mail.data
    # Nor on the requester's page.
    from helpdesk.config import load_settings
    from webview import create_app

    page = create_app(settings=load_settings(config)).test_client().get(path)
    assert page.status_code == 200
    for secret in ("SECRET", "#comment"):
        assert secret not in page.get_data(as_text=True)
    assert [h[0] for h in _history(config)].count("comment") == 4


def test_resolve_by_mail(smtp_config: Path, smtp_catcher: SmtpCatcher) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    caught = smtp_catcher.wait_for(3)
    tech_new = next(c.message() for c in caught if JEAN in c.recipients)
    _deliver(config, _reply_to(tech_new, JEAN, "#resolve\nCartouche changée, tout remarche."))
    # The resolution, and the news of the take (resolving took it) to Marie.
    news = _new(smtp_catcher, 3, 2)
    (resolved,) = _to(news, ALICE)
    (take,) = _to(news, MARIE)
    assert "a pris la demande" in take["Subject"]
    assert "Votre demande est résolue" in resolved["Subject"]
    text = _text(resolved)
    assert "Cartouche changée, tout remarche." in text and "#resolve" not in text
    ticket = _ticket(config)
    assert ticket["status"] == "resolved" and ticket["assignee"] == JEAN
    assert ticket["articles"][-1]["body_shown"].strip() == "Cartouche changée, tout remarche."
    assert _history(config)[-1] == ("resolve", "mail", JEAN, "resolved")
    # Again on a resolved ticket: kept as an internal note, never deferred nor lost.
    _deliver(config, _reply_to(tech_new, JEAN, "#resolve\nEncore."))
    mail = cli_json(config, "mail", "list")[0]
    assert mail["verdict"] == "followup" and "#resolve not applied" in mail["reason"]
    assert _ticket(config)["articles"][-1]["internal"] is True
    # By subject tag alone, #resolve would mail the requester unproven: it becomes a note.
    _deliver(config, make_mail(subject="[HD #1] x", sender=MARIE, body="#resolve\nFini.\n"))
    last = _ticket(config)["articles"][-1]
    assert last["internal"] and "not applied" in last["body_text"]
    time.sleep(0.3)
    assert len([m for m in smtp_catcher.messages if ALICE in m.recipients]) == 2


def test_routing_by_site(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> None:
    config = write_config(
        tmp_path, db_url, extra=IUT_TOML, outgoing=smtp_outgoing(smtp_catcher.port)
    )
    assert run_cli(config, "init").returncode == 0
    people = tmp_path / "people.csv"
    # As a French spreadsheet exports it: semicolons, a BOM, extra columns.
    people.write_text(
        "\ufeffemail;name;site;service\n"
        "lea@univ.example;Léa Lisieux;Lisieux;GEA\n"
        "ivan@univ.example;Ivan Ifs;Ifs;GEII\n"
        "not-an-address;Nobody;Vire;\n",
        encoding="utf-8",
    )
    result = run_cli(config, "directory", "import", str(people))
    assert result.returncode == 0, result.stderr
    assert "2 added" in result.stdout and "1 skipped" in result.stdout
    assert "line 4" in result.stderr
    shown = cli_json(config, "directory", "show", "LEA@univ.example")
    assert shown["entry"]["site"] == "Lisieux" and shown["entry"]["service"] == "GEA"
    assert shown["routes"]["iut-assistance"]["group"] == "iut-lisieux"

    def mail_from(sender: str) -> bytes:
        raw = make_mail(sender=sender, subject=f"Vidéoprojecteur ({sender})")
        return raw.replace(b"dsi.support@", b"iut.caen.assistance@")

    _deliver(config, mail_from("lea@univ.example"), queue="iut-assistance")
    news = _new(smtp_catcher, 0, 2)
    assert sorted(m["To"].addresses[0].addr_spec for m in news) == [
        "lea@univ.example",
        "luc@univ.example",
    ]
    assert _ticket(config)["group"] == "iut-lisieux"
    assert "routed by site=Lisieux" in cli_json(config, "ticket", "history", "1")[0]["detail"]
    # Unknown requester: the queue's default group.
    _deliver(config, mail_from("zoe@univ.example"), queue="iut-assistance")
    news = _new(smtp_catcher, 2, 2)
    assert sorted(m["To"].addresses[0].addr_spec for m in news) == [
        "carole@univ.example",
        "zoe@univ.example",
    ]
    assert _ticket(config, 2)["group"] == "iut-caen"
    # A site with a group but nobody in it yet: routed there; a technician added by the
    # CLI hears of the next ticket and may speak as a technician in it.
    _deliver(config, mail_from("ivan@univ.example"), queue="iut-assistance")
    _new(smtp_catcher, 4, 1)  # the acknowledgement only
    assert _ticket(config, 3)["group"] == "iut-ifs"
    out = _cli(config, "tech", "add", "ines@univ.example", "--name", "Inès Ifs", "-g", "iut-ifs")
    assert "added to iut-ifs" in out
    groups = {g["group"]: g for g in cli_json(config, "group", "list")}
    assert [t["email"] for t in groups["iut-ifs"]["technicians"]] == ["ines@univ.example"]
    techs = {t["email"]: t for t in cli_json(config, "tech", "list")}
    assert techs["ines@univ.example"]["name"] == "Inès Ifs"
    _cli(config, "ticket", "take", "3", "--as", "ines@univ.example")
    (taken,) = _new(smtp_catcher, 5, 1)
    assert taken["Subject"].endswith("prise en charge par Inès Ifs")
    # A re-import of the directory moves Léa to Vire; a pruned import drops Ivan.
    people.write_text("email,name,site\nlea@univ.example,Léa,Vire\n", encoding="utf-8")
    result = run_cli(config, "directory", "import", str(people), "--prune")
    assert "1 updated" in result.stdout and "1 removed" in result.stdout, result.stdout
    routes = cli_json(config, "directory", "show", "ivan@univ.example")["routes"]
    assert routes["iut-assistance"]["group"] == "iut-caen"


@pytest.mark.slow
def test_two_schedulers_close_a_thousand_tickets_once(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = write_config(
        tmp_path,
        db_url,
        # Closed at the first pass after resolution: no moved clock here, since libfaketime
        # slows psycopg's polling threads to a crawl (the whole story moves the clock).
        extra="[tickets]\nautoclose_days = 0\n[scheduler]\noutbox_every = 1\nautoclose_every = 2\n",
        outgoing=smtp_outgoing(smtp_catcher.port),
    )
    assert run_cli(config, "init").returncode == 0
    from helpdesk import workflow
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    settings = load_settings(config)
    queue = settings.queues["immobilier"]  # no technicians: only the requesters get mail
    count = 1000
    with Store(settings.database_url) as store, store.transaction():
        tech = workflow.ensure_person(store, JEAN, "Jean")
        for n in range(count):
            requester = workflow.ensure_person(store, f"user{n}@univ.example")
            ticket_id, _ = workflow.open_ticket(
                store,
                settings,
                queue,
                requester,
                subject=f"Fuite n° {n}",
                body_text="Il pleut dans le bureau.",
                acknowledge=False,
            )
            workflow.resolve(store, settings, queue, ticket_id, tech, body_text="Réparé.")
        # The resolution mail is not what this test is about: mark it sent.
        store.execute("UPDATE outbox_message SET status = 'sent'")
    schedulers = [_scheduler(config, days=0) for _ in range(2)]
    try:
        deadline = time.monotonic() + 240
        while len(smtp_catcher.messages) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # two more rounds of both schedulers: nothing else may come
    finally:
        logs = [_stop(s) for s in schedulers]
    states = db_execute(config, "SELECT status, COUNT(*) FROM outbox_message GROUP BY status")
    assert len(smtp_catcher.messages) == count, (len(smtp_catcher.messages), states)
    assert len({c.recipients[0] for c in smtp_catcher.messages}) == count
    assert all("Votre demande est close" in c.message()["Subject"] for c in smtp_catcher.messages)
    closes = db_execute(
        config,
        "SELECT ticket_id, COUNT(*) FROM ticket_history WHERE action = 'close' GROUP BY ticket_id",
    )
    assert len(closes) == count and {n for _t, n in closes} == {1}
    assert db_execute(config, "SELECT COUNT(*) FROM ticket WHERE status = 'closed'") == [(count,)]
    mails = db_execute(
        config,
        "SELECT ticket_id, status, tries FROM outbox_message WHERE kind = 'closed'",
    )
    assert len(mails) == count and len({m[0] for m in mails}) == count
    assert {(m[1], m[2]) for m in mails} == {("sent", 1)}
    # Both schedulers' own accounts add up to the thousand.
    closed = [sum(int(n) for n in re.findall(r"autoclose: (\d+) closed", log)) for log in logs]
    assert sum(closed) == count, closed


def test_autoclose_from_cron_and_dead_links(smtp_config: Path, smtp_catcher: SmtpCatcher) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    _deliver(config, make_mail(subject="Second", message_id="<second@univ.example>"))
    smtp_catcher.wait_for(6)
    _cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.")
    _cli(config, "ticket", "resolve", "2", "--as", JEAN, "-m", "Fait aussi.")
    answer = make_mail(
        subject="[HD #2] Re: Second",
        body="Non, toujours pas.\n",
        extra_headers="In-Reply-To: <second@univ.example>\r\n",
    )
    _deliver(config, answer)
    assert _ticket(config, 2)["status"] == "assigned"  # the requester's answer reopened it
    seen = len(smtp_catcher.wait_for(9))
    # One pass, as cron runs it, sixteen days on: only the still-resolved ticket closes.
    result = _real_cli(config, "autoclose", "--json", days=16)
    assert json.loads(result.stdout) == {"dry_run": False, "tickets": [1]}
    (closing,) = _new(smtp_catcher, seen, 1)
    assert "[HD #1] Votre demande est close" in closing["Subject"]
    assert "#1" not in _real_cli(config, "autoclose", days=16).stdout  # nothing twice
    time.sleep(0.3)
    assert len(smtp_catcher.messages) == seen + 1
    # Links: ticket 1's still opens for link_days_after_close (30) days, then is deleted.
    tokens = "SELECT ticket_id FROM access_token ORDER BY ticket_id"
    before = [t for (t,) in db_execute(config, tokens)]
    assert 1 in before and 2 in before
    assert _real_cli(config, "ticket", "link", "2", "--revoke").returncode == 0
    from helpdesk.autoclose import expire_tokens
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    settings = load_settings(config)
    with Store(settings.database_url) as store:
        # Revoked links go at once; ticket 1's stay while they still open the page.
        assert expire_tokens(store, settings) == before.count(2)
    assert {t for (t,) in db_execute(config, tokens)} == {1}
    db_execute(
        config,
        "UPDATE ticket SET closed_at = :old WHERE id = 1",
        old=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with Store(settings.database_url) as store:
        assert expire_tokens(store, settings) == before.count(1)
    assert db_execute(config, tokens) == []


def test_a_technician_writing_in_a_closed_ticket_adds_a_note(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    caught = smtp_catcher.wait_for(3)
    tech_new = next(c.message() for c in caught if JEAN in c.recipients)
    _cli(config, "ticket", "close", "1", "--as", JEAN)
    smtp_catcher.wait_for(4)
    # The requester could not answer a mail about a closed ticket: it stays a note.
    _deliver(config, _reply_to(tech_new, JEAN, "Pour mémoire : matériel repris."))
    refused = run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Re-bonjour")
    assert refused.returncode == 1 and "is closed" in refused.stderr
    # A technician's unproven #comment (subject tag only) is a note in it too, not a
    # new ticket in the technician's name.
    _deliver(config, make_mail(subject="[HD #1] x", sender=MARIE, body="#comment\nVu.\n"))
    ticket = _ticket(config)
    assert ticket["status"] == "closed"
    assert [(a["author"], a["internal"]) for a in ticket["articles"]] == [
        (ALICE, False),
        (JEAN, True),
        (MARIE, True),
    ]
    assert len(cli_json(config, "ticket", "list")) == 1
    time.sleep(0.3)
    assert not [m for m in smtp_catcher.messages[4:] if ALICE in m.recipients]


def test_a_forged_technician_from_gets_no_technician_voice(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    """The requester has a signed reply address too: with a technician's From it must
    neither mail them in the technician's name nor resolve nor write unmarked notes."""
    config = smtp_config
    _deliver(config, make_mail())
    caught = smtp_catcher.wait_for(3)
    ack = next(c.message() for c in caught if ALICE in c.recipients)
    _deliver(config, _reply_to(ack, JEAN, "#resolve\nFaux : tout est réglé."))
    _deliver(config, _reply_to(ack, JEAN, "#comment\nLe chef a validé les droits admin."))
    _deliver(config, _reply_to(ack, JEAN, "Bonjour Alice, donnez-moi votre mot de passe."))
    ticket = _ticket(config)
    assert ticket["status"] == "new" and ticket["assignee"] is None
    # Not even the plain one is public: a technician's From without proof files notes,
    # each marked as unverified.
    notes = [a for a in ticket["articles"] if a["internal"]]
    assert len(notes) == 3 and len(ticket["articles"]) == 4
    for note in notes:
        assert note["body_text"].startswith(f"[{JEAN}: signed reply address for ticket #1;")
        assert "answers none of ours to them" in note["body_text"].splitlines()[0]
    assert "#resolve not applied" in notes[0]["body_text"]
    assert "mot de passe" in notes[2]["body_text"]
    time.sleep(0.5)
    to_alice = [c for c in smtp_catcher.messages if ALICE in c.recipients]
    assert len(to_alice) == 1  # the acknowledgement, nothing in Jean's name
    assert [h[0] for h in _history(config)] == ["open", "comment", "comment", "comment"]
    # By subject tag alone, on a resolved ticket: no public entry, no reopening.
    _cli(config, "ticket", "resolve", "1", "--as", MARIE, "-m", "Réglé.")
    tagged = make_mail(subject="[HD #1] suite", sender=JEAN, body="Renvoyez votre mot de passe.\n")
    _deliver(config, tagged)
    ticket = _ticket(config)
    assert ticket["status"] == "resolved"
    assert ticket["articles"][-1]["internal"] and ticket["articles"][-1]["author"] == JEAN
    public = [a["body_text"] for a in ticket["articles"] if not a["internal"]]
    assert not any("mot de passe" in text for text in public)


def test_a_technician_is_the_requester_of_their_own_request(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail(sender=JEAN, subject="Mon écran"))
    caught = smtp_catcher.wait_for(2)  # the ack to Jean, the news to Marie
    ack = next(c.message() for c in caught if JEAN in c.recipients)
    _deliver(config, _reply_to(ack, JEAN, "Il clignote encore."))
    (told,) = _new(smtp_catcher, 2, 1)
    assert told["To"].addresses[0].addr_spec == MARIE
    assert "Nouveau suivi du demandeur" in told["Subject"]
    ticket = _ticket(config)
    assert ticket["status"] == "new" and ticket["assignee"] is None


def test_an_answer_to_a_note_stays_internal_whoever_sends_it(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    caught = smtp_catcher.wait_for(3)
    path = LINK.search(_text(next(c.message() for c in caught if ALICE in c.recipients))).group(1)
    _cli(config, "tech", "add", "luc@univ.example", "--name", "Luc", "-g", "dsi")
    _cli(config, "ticket", "comment", "1", "--as", JEAN, "-m", "SECRET-NOTE poste volé")
    notes = _new(smtp_catcher, 3, 2)  # Marie and Luc
    to_luc = _to(notes, "luc@univ.example")[0]
    _cli(config, "tech", "remove", "luc@univ.example")
    # Luc, no longer a technician, answers the note's mail with just a photo.
    _deliver(config, _reply_to(to_luc, "luc@univ.example", ""))
    last = _ticket(config)["articles"][-1]
    assert last["internal"] and last["author"] == "luc@univ.example"
    from helpdesk.config import load_settings
    from webview import create_app

    page = create_app(settings=load_settings(config)).test_client().get(path)
    assert "SECRET" not in page.get_data(as_text=True)
    time.sleep(0.3)
    for message in smtp_catcher.messages:
        if ALICE in message.recipients:
            assert b"SECRET" not in message.data


def test_a_resolve_answering_a_note_and_a_note_answer_on_a_closed_ticket_stay_notes(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config
    _deliver(config, make_mail())
    smtp_catcher.wait_for(3)
    _cli(config, "ticket", "comment", "1", "--as", MARIE, "-m", "SECRET-NOTE on attend la pièce")
    (note,) = _new(smtp_catcher, 3, 1)
    assert note["To"].addresses[0].addr_spec == JEAN
    # Jean answers the note's mail with #resolve: its quote is internal, so no resolution.
    _deliver(config, _reply_to(note, JEAN, "#resolve\nToner remplacé."))
    ticket = _ticket(config)
    assert ticket["status"] == "new"
    last = ticket["articles"][-1]
    assert last["internal"] and last["body_text"].startswith("#resolve not applied (it answers")
    assert "#resolve not applied" in cli_json(config, "mail", "list")[0]["reason"]
    # Closed, then someone answers the note's mail again: a note in the closed ticket,
    # not a new public ticket quoting it.
    _cli(config, "ticket", "close", "1", "--as", JEAN)
    _deliver(config, _reply_to(note, JEAN, "Pour info."))
    assert len(cli_json(config, "ticket", "list")) == 1
    assert _ticket(config)["articles"][-1]["internal"]
    time.sleep(0.3)
    for message in smtp_catcher.messages:
        if ALICE in message.recipients:
            assert b"SECRET" not in message.data


def test_cli_reads_without_a_database_say_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    for args in (["tech", "list"], ["group", "list"], ["directory", "show", "a@b.example"]):
        result = run_cli(config, *args)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.startswith("Error: database:"), (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
