"""Spam, bulk and distrusted senders end to end: the real pipe, a real SMTP server.

Every test runs on SQLite and on PostgreSQL. A held mail sends nothing to anyone;
`mail release` makes it what it would have been, with its usual mail; `ticket spam`
closes a ticket without a word and kills its links; a distrusted requester (a From
that failed a trusted DMARC check, a spam released with --distrust) gets no
automatic mail, but a technician's written answer still goes.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from smtp_catcher import SmtpCatcher

from helpdesk.config import load_settings

DATA = Path(__file__).parent / "data"
ALICE = "alice@univ.example"
TECHS = {"jean.tech@univ.example", "marie.tech@univ.example"}
SPAMMER = "promo@offres-exclusives.example"
LINK = re.compile(r"https://helpdesk\.univ\.example(/t/[A-Za-z0-9_-]{43})")
SPAM_TABLE = '[spam]\nheaders = [{ name = "X-Barracuda-Spam-Score", threshold = 5.0 }]\n'
TRUSTED = '[mail]\ntrusted_authserv_ids = ["mx.univ.example"]\n'
DMARC_FAIL = (
    "Authentication-Results: mx.univ.example; dkim=none;"
    " dmarc=fail (p=QUARANTINE) header.from=univ.example\r\n"
)


@pytest.fixture
def smtp_config(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> Path:
    """A config whose mail goes to the test's SMTP server, with a configured spam header
    and our MX trusted for DMARC."""
    path = write_config(
        tmp_path, db_url, extra=SPAM_TABLE, outgoing=smtp_outgoing(smtp_catcher.port)
    )
    path.write_text(path.read_text().replace("[mail]\n", TRUSTED, 1))
    assert run_cli(path, "init").returncode == 0
    return path


def _deliver(config: Path, raw: bytes) -> None:
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _to(caught: list[Any], address: str) -> list[EmailMessage]:
    return [c.message() for c in caught if address in c.recipients]


def _outbox(config: Path) -> list[tuple[str, str, str]]:
    return [
        (r[0], r[1], r[2] or "")
        for r in db_execute(
            config, "SELECT kind, status, last_error FROM outbox_message ORDER BY id"
        )
    ]


def _release(config: Path, mail_id: int, *options: str) -> str:
    result = run_cli(config, "mail", "release", str(mail_id), *options)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _login() -> str:
    import getpass
    import os

    return os.environ.get("SUDO_USER") or getpass.getuser()


def _viewer_status(config: Path, path: str) -> int:
    from webview import create_app

    app = create_app(settings=load_settings(config))
    return app.test_client().get(path).status_code


# -- held: nothing to anyone ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [
        "spam/spamassassin-milter.eml",
        "spam/rspamd-milter.eml",
        "spam/configured-barracuda.eml",
        "bulk/newsletter-list-unsubscribe.eml",
    ],
)
def test_a_held_mail_opens_nothing_and_sends_nothing(
    smtp_config: Path, smtp_catcher: SmtpCatcher, sample: str
) -> None:
    _deliver(smtp_config, (DATA / sample).read_bytes())
    verdict = sample.split("/")[0]
    [mail] = cli_json(smtp_config, "mail", "list", "--verdict", verdict)
    assert mail["ticket_id"] is None
    assert f"mail release {mail['id']}" in mail["reason"]
    assert cli_json(smtp_config, "ticket", "list") == []
    assert _outbox(smtp_config) == []
    assert smtp_catcher.messages == []  # not the sender, not a technician
    # The raw mail is kept as it came.
    raw = run_cli(smtp_config, "mail", "show", str(mail["id"]), "--raw").stdout_bytes
    assert raw == (DATA / sample).read_bytes()


@pytest.mark.parametrize(
    "sample", ["spam/spamassassin-milter.eml", "bulk/newsletter-list-unsubscribe.eml"]
)
def test_release_gives_the_ticket_and_its_acknowledgement_once(
    smtp_config: Path, smtp_catcher: SmtpCatcher, sample: str
) -> None:
    _deliver(smtp_config, (DATA / sample).read_bytes())
    assert smtp_catcher.messages == []
    out = _release(smtp_config, 1, "--as", "jean.tech@univ.example")
    assert "ticket #1 opened" in out
    caught = smtp_catcher.wait_for(3)
    sender = "news@news.fournisseur.example" if sample.startswith("bulk") else SPAMMER
    [ack] = _to(caught, sender)
    assert ack["Subject"].strip().startswith("[HD #1] Enregistrement de votre demande")
    assert {r for c in caught for r in c.recipients} == {sender, *TECHS}
    [ticket] = cli_json(smtp_config, "ticket", "list")
    assert ticket["requester"] == sender
    [mail] = cli_json(smtp_config, "mail", "list")
    assert (mail["verdict"], mail["ticket_id"]) == ("ticket", 1)
    assert "released from" in mail["reason"] and "jean.tech@univ.example" in mail["reason"]
    history = cli_json(smtp_config, "ticket", "history", "1")
    assert [h["action"] for h in history] == ["open", "release"]
    # Once: a second release refuses, sends nothing more.
    again = run_cli(smtp_config, "mail", "release", "1")
    assert again.returncode == 1
    assert "mail #1 is ticket (ticket #1), not held" in again.stderr
    assert len(cli_json(smtp_config, "ticket", "list")) == 1
    assert len(smtp_catcher.messages) == 3


def test_release_refuses_what_is_not_held(smtp_config: Path, smtp_catcher: SmtpCatcher) -> None:
    missing = run_cli(smtp_config, "mail", "release", "7")
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: no mail #7")


def test_spam_answering_a_ticket_is_held_until_released_as_its_follow_up(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    [ack] = _to(smtp_catcher.wait_for(3), ALICE)
    smtp_catcher.clear()
    reply = make_mail(
        subject=f"Re: {ack['Subject']}",
        body="Merci, c'est toujours en panne.\n",
        extra_headers=f"In-Reply-To: {ack['Message-ID']}\r\n"
        "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=6.1 required=5.0\r\n",
    )
    _deliver(smtp_config, reply)
    [held] = cli_json(smtp_config, "mail", "list", "--verdict", "spam")
    assert held["ticket_id"] is None
    assert len(cli_json(smtp_config, "ticket", "show", "1")["articles"]) == 1
    assert smtp_catcher.messages == []
    assert "follow-up to ticket #1" in _release(smtp_config, held["id"])
    articles = cli_json(smtp_config, "ticket", "show", "1")["articles"]
    assert [a["mail_id"] for a in articles] == [1, held["id"]]
    caught = smtp_catcher.wait_for(2)  # the follow-up's news, to the technicians
    assert {r for c in caught for r in c.recipients} == TECHS


@pytest.mark.parametrize(
    "sample", ["spam/ham-spamassassin-no.eml", "spam/ham-rspamd-no-action.eml"]
)
def test_a_negative_verdict_changes_nothing(
    smtp_config: Path, smtp_catcher: SmtpCatcher, sample: str
) -> None:
    _deliver(smtp_config, (DATA / sample).read_bytes())
    [mail] = cli_json(smtp_config, "mail", "list")
    assert (mail["verdict"], mail["ticket_id"]) == ("ticket", 1)
    caught = smtp_catcher.wait_for(3)
    assert {r for c in caught for r in c.recipients} == {"paul.leroy@univ.example", *TECHS}
    assert cli_json(smtp_config, "ticket", "show", "1")["distrust"] is None


def test_an_autoresponder_with_precedence_bulk_answering_our_ack_is_filed_silently(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    [ack] = _to(smtp_catcher.wait_for(3), ALICE)
    smtp_catcher.clear()
    raw = (DATA / "bulk" / "autoreply-precedence-bulk-answering-ours.eml").read_bytes()
    raw = raw.replace(b"<hd.1.5f2c9a0b1d3e4f60@univ.example>", ack["Message-ID"].encode())
    _deliver(smtp_config, raw)
    [mail] = cli_json(smtp_config, "mail", "list", "--verdict", "autoreply")
    assert mail["ticket_id"] == 1 and "nothing sent" in mail["reason"]
    [_first, filed] = cli_json(smtp_config, "ticket", "show", "1")["articles"]
    assert filed["internal"] and filed["mail_id"] == mail["id"]
    assert smtp_catcher.messages == []


# -- ticket spam ----------------------------------------------------------------------------


def test_ticket_spam_closes_silently_marks_the_mail_and_kills_the_link(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail(sender=SPAMMER, subject="Gagnez un iPhone"))
    [ack] = _to(smtp_catcher.wait_for(3), SPAMMER)
    [path] = LINK.findall(ack.get_content())
    assert _viewer_status(smtp_config, path) == 200
    smtp_catcher.clear()
    result = run_cli(smtp_config, "ticket", "spam", "1", "--as", "marie.tech@univ.example")
    assert result.returncode == 0, result.stderr
    assert _viewer_status(smtp_config, path) == 404
    shown = cli_json(smtp_config, "ticket", "show", "1")
    assert shown["status"] == "closed"
    assert "opened by spam" in shown["distrust"]
    [mail] = cli_json(smtp_config, "mail", "list", "--verdict", "spam")
    assert mail["ticket_id"] == 1 and "marked spam by marie.tech@univ.example" in mail["reason"]
    [*_, spam] = cli_json(smtp_config, "ticket", "history", "1")
    assert (spam["action"], spam["new_status"]) == ("spam", "closed")
    assert "1 link(s) revoked" in spam["detail"]
    assert db_execute(
        smtp_config, "SELECT count(*) FROM access_token WHERE revoked_at IS NULL"
    ) == [(0,)]
    # Nothing to the requester (no "closed" mail), nothing to the technicians.
    assert smtp_catcher.messages == []
    # Marked once; its mail is no held mail to release.
    again = run_cli(smtp_config, "ticket", "spam", "1")
    assert again.returncode == 1 and "already marked spam" in again.stderr
    refused = run_cli(smtp_config, "mail", "release", "1")
    assert refused.returncode == 1 and "ticket reopen 1" in refused.stderr
    # The spammer answers the acknowledgement: held as spam, no new ticket, no mail.
    answer = make_mail(
        sender=SPAMMER,
        subject=f"Re: {ack['Subject']}",
        extra_headers=f"In-Reply-To: {ack['Message-ID']}\r\n",
    )
    _deliver(smtp_config, answer)
    [held] = [m for m in cli_json(smtp_config, "mail", "list") if m["id"] == 2]
    assert (held["verdict"], held["ticket_id"]) == ("spam", None)
    assert "ticket #1 was marked spam" in held["reason"]
    assert len(cli_json(smtp_config, "ticket", "list")) == 1
    assert smtp_catcher.messages == []
    # Reopened and worked on anyway, its requester still hears nothing automatic.
    assert run_cli(smtp_config, "ticket", "reopen", "1").returncode == 0
    assert (
        run_cli(smtp_config, "ticket", "take", "1", "--as", "jean.tech@univ.example").returncode
        == 0
    )
    assert _to(smtp_catcher.messages, SPAMMER) == []
    # A technician may still release the held answer: ticket #1 is open again, so it
    # becomes its follow-up.
    assert "follow-up to ticket #1" in _release(smtp_config, 2)


def test_ticket_spam_withdraws_mail_still_queued(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    smtp_catcher.stop()  # the transport is down: the acknowledgement waits in the outbox
    _deliver(smtp_config, make_mail(sender=SPAMMER))
    assert {status for _kind, status, _e in _outbox(smtp_config)} == {"queued"}
    assert run_cli(smtp_config, "ticket", "spam", "1").returncode == 0
    assert {status for _kind, status, _e in _outbox(smtp_config)} == {"skipped"}
    smtp_catcher.start()
    assert run_cli(smtp_config, "outbox", "flush").returncode == 0
    assert smtp_catcher.messages == []


# -- distrusted requesters --------------------------------------------------------------------


def test_a_dmarc_failed_from_gets_no_automatic_mail_but_the_technicians_answer(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail(extra_headers=DMARC_FAIL))
    caught = smtp_catcher.wait_for(2)
    assert {r for c in caught for r in c.recipients} == TECHS  # no acknowledgement
    shown = cli_json(smtp_config, "ticket", "show", "1")
    assert "DMARC fail for univ.example" in shown["distrust"]
    text = run_cli(smtp_config, "ticket", "show", "1").stdout
    assert "No automatic mail to the requester: DMARC fail" in text
    assert "distrust" in [h["action"] for h in cli_json(smtp_config, "ticket", "history", "1")]
    smtp_catcher.clear()
    # The same address, with the subject tag alone: kept unverified, and the request to
    # confirm it is automatic mail too.
    _deliver(smtp_config, make_mail(subject="[HD #1] Toujours en panne"))
    [_first, entry] = cli_json(smtp_config, "ticket", "show", "1")["articles"]
    assert entry["unverified"]
    tech = ("--as", "jean.tech@univ.example")
    assert run_cli(smtp_config, "ticket", "take", "1", *tech).returncode == 0
    assert run_cli(smtp_config, "ticket", "resolve", "1", *tech, "-m", "Redémarré.").returncode == 0
    assert run_cli(smtp_config, "ticket", "reopen", "1", *tech).returncode == 0
    assert run_cli(smtp_config, "ticket", "close", "1", *tech).returncode == 0
    assert _to(smtp_catcher.messages, ALICE) == []
    withheld = [(k, e) for k, s, e in _outbox(smtp_config) if s == "skipped"]
    assert [k for k, _e in withheld] == ["confirm", "taken", "resolved", "closed"]
    assert all("distrusted requester (DMARC fail" in e for _k, e in withheld)
    # A technician's own written answer is a person's: it goes.
    assert run_cli(smtp_config, "ticket", "reopen", "1", *tech).returncode == 0
    reply = ("ticket", "reply", "1", *tech, "-m", "Pouvez-vous confirmer par téléphone ?")
    assert run_cli(smtp_config, *reply).returncode == 0
    [answer] = _to(smtp_catcher.wait_for(1), ALICE)
    assert "confirmer par téléphone" in answer.get_content()


def test_a_spam_released_with_distrust_tells_its_sender_nothing(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, (DATA / "spam" / "rspamd-milter.eml").read_bytes())
    _release(smtp_config, 1, "--distrust")
    caught = smtp_catcher.wait_for(2)
    assert {r for c in caught for r in c.recipients} == TECHS
    shown = cli_json(smtp_config, "ticket", "show", "1")
    assert shown["distrust"] == "released spam (mail #1, X-Spam: Yes) by cli:" + _login()
    smtp_catcher.clear()
    assert (
        run_cli(smtp_config, "ticket", "take", "1", "--as", "jean.tech@univ.example").returncode
        == 0
    )
    assert run_cli(smtp_config, "ticket", "close", "1").returncode == 0
    assert _to(smtp_catcher.messages, SPAMMER) == []
