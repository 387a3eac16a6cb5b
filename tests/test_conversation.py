"""Conversations by mail, end to end: the real pipe, a real SMTP server catching what it sends.

Each test runs on SQLite and on PostgreSQL (the `config` fixture's database).
"""

from __future__ import annotations

import base64
import re
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import INSTANCE
from conftest import SECRET_KEY
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from smtp_catcher import SmtpCatcher

from helpdesk.replyaddress import reply_address
from helpdesk.tokens import hash_token

ALICE = "alice@univ.example"
TECHS = {"jean.tech@univ.example", "marie.tech@univ.example"}
LINK = re.compile(r"https://helpdesk\.univ\.example/t/([A-Za-z0-9_-]{43})")


@pytest.fixture
def smtp_config(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> Path:
    """A config whose outgoing mail goes to the test's SMTP server."""
    path = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(path, "init").returncode == 0
    return path


def _to(caught: list[Any], address: str) -> list[EmailMessage]:
    return [c.message() for c in caught if address in c.recipients]


def _deliver(config: Path, raw: bytes, queue: str = "dsi", **env: str) -> None:
    result = run_pipe(config, raw, queue=queue, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _reply(
    original: EmailMessage,
    sender: str = ALICE,
    body: str = "Merci, c'est toujours en panne.\n",
    subject: str | None = None,
    references: bool = True,
    to: str = "dsi.support@univ.example",
    extra: str = "",
) -> bytes:
    """A reply as a mail client writes it: quoting the original under an attribution."""
    quoted = "\n".join("> " + line for line in original.get_content().splitlines())
    headers = ""
    if references:
        headers += (
            f"In-Reply-To: {original['Message-ID']}\r\nReferences: {original['Message-ID']}\r\n"
        )
    text = f"{body}\nLe sam. 28 nov. 2026 à 09:05, Helpdesk <{to}> a écrit :\n{quoted}\n"
    raw = make_mail(
        subject=subject if subject is not None else f"Re: {original['Subject']}",
        sender=sender,
        body=text,
        extra_headers=headers + extra,
    )
    return raw.replace(b"To: dsi.support@univ.example", f"To: {to}".encode(), 1)


def _ticket(config: Path, ticket_id: int) -> dict[str, Any]:
    return cli_json(config, "ticket", "show", str(ticket_id))


def _ticket_and_its_ack(config: Path, catcher: SmtpCatcher) -> EmailMessage:
    """Open ticket 1 from Alice; return her acknowledgement, the catcher emptied."""
    _deliver(config, make_mail())
    [ack] = _to(catcher.wait_for(3), ALICE)
    catcher.clear()
    return ack


# -- acknowledgement ---------------------------------------------------------


def test_new_mail_gets_one_french_acknowledgement_with_link_and_recorded_id(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    original_id = f"<{uuid.uuid4().hex}@univ.example>"
    _deliver(smtp_config, make_mail(subject="Imprimante en panne", message_id=original_id))
    caught = smtp_catcher.wait_for(3)  # the requester and the queue's two technicians
    [ack] = _to(caught, ALICE)
    assert {r for c in caught for r in c.recipients} == {ALICE, *TECHS}

    assert ack["Subject"] == "[HD #1] Enregistrement de votre demande : Imprimante en panne"
    assert ack["From"] == "dsi <dsi.support@univ.example>"
    assert ack["In-Reply-To"] == original_id
    assert original_id in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert ack["Precedence"] == "bulk"
    assert ack["X-Helpdesk-Loop"] == INSTANCE
    assert ack["Reply-To"].addresses[0].addr_spec == reply_address(
        SECRET_KEY, "dsi", 1, "dsi.support@univ.example"
    )
    assert ack.get_content_type() == "text/plain"
    assert ack.get_content_charset() == "utf-8"
    body = ack.get_content()
    assert "votre demande a bien été enregistrée sous le numéro 1" in body.lower()
    assert "l'imprimante du bureau 12 ne marche plus" in body
    [token] = LINK.findall(body)

    # The token is only stored as its hash; the Message-ID is the one the outbox shows.
    assert db_execute(smtp_config, "SELECT token_sha256 FROM access_token") == [
        (hash_token(token),)
    ]
    assert token not in str(db_execute(smtp_config, "SELECT * FROM access_token"))
    rows = cli_json(smtp_config, "outbox", "list")
    [row] = [r for r in rows if r["kind"] == "ack"]
    assert f"<{row['message_id']}>" == ack["Message-ID"]
    assert row["message_id"].endswith("@univ.example")
    assert row["status"] == "sent" and row["tries"] == 1 and row["to"] == ALICE
    assert sorted(r["kind"] for r in rows) == ["ack", "tech_new", "tech_new"]


def test_english_queue_acknowledges_in_english(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    raw = make_mail(subject="Wifi down").replace(b"dsi.support", b"scd.informatique")
    _deliver(smtp_config, raw, queue="scd")
    caught = smtp_catcher.wait_for(2)
    [ack] = _to(caught, ALICE)
    assert ack["Subject"] == "[HD #1] Your request has been registered: Wifi down"
    assert "registered as number 1" in ack.get_content()
    [tech] = _to(caught, "sam.lib@univ.example")
    assert tech["Subject"] == "[HD #1] New request: Wifi down"


# -- threading ---------------------------------------------------------------


def test_reply_by_in_reply_to_lands_in_the_ticket_quote_trimmed(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    ack = _ticket_and_its_ack(smtp_config, smtp_catcher)
    _deliver(smtp_config, _reply(ack, subject="Autre chose"))
    [ticket] = cli_json(smtp_config, "ticket", "list")
    shown = _ticket(smtp_config, ticket["id"])
    first, followup = shown["articles"]
    assert followup["author"] == ALICE
    assert followup["body_shown"].strip() == "Merci, c'est toujours en panne."
    assert "a écrit" in followup["body_text"] and "> " in followup["body_text"]
    [mail] = [m for m in cli_json(smtp_config, "mail", "list") if m["verdict"] == "followup"]
    assert mail["ticket_id"] == ticket["id"]
    assert "In-Reply-To/References" in mail["reason"]
    # The technicians hear of it; the requester gets nothing for her own follow-up.
    caught = smtp_catcher.wait_for(2)
    assert {r for c in caught for r in c.recipients} == TECHS
    for message in (c.message() for c in caught):
        assert message["Subject"].startswith("[HD #1] Nouveau suivi du demandeur")
        assert "Merci, c'est toujours en panne." in message.get_content()


@pytest.mark.parametrize("door", ["postfix-extension", "exim-suffix", "to-header"])
def test_reply_to_signed_address_lands_without_references_or_subject(
    smtp_config: Path, smtp_catcher: SmtpCatcher, door: str
) -> None:
    _deliver(smtp_config, make_mail())
    [ack] = _to(smtp_catcher.wait_for(3), ALICE)
    signed = ack["Reply-To"].addresses[0].addr_spec
    extension = signed.split("@")[0].split("+", 1)[1]
    raw = _reply(ack, subject="nouveau sujet", references=False, to=signed)
    env = {"RECIPIENT": signed}
    if door == "postfix-extension":
        env["EXTENSION"] = extension
    elif door == "exim-suffix":
        env["LOCAL_PART_SUFFIX"] = "+" + extension
    else:
        env = {}
    _deliver(smtp_config, raw, **env)
    [mail] = [m for m in cli_json(smtp_config, "mail", "list") if m["verdict"] == "followup"]
    assert mail["ticket_id"] == 1
    assert "signed reply address" in mail["reason"]
    assert len(cli_json(smtp_config, "ticket", "list")) == 1


def test_a_forged_signature_opens_a_new_ticket(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    smtp_catcher.wait_for(3)
    forged = "dsi.support+1-0123456789abcdef@univ.example"
    raw = make_mail(sender="mallory@evil.example", subject="hello").replace(
        b"To: dsi.support@univ.example", f"To: {forged}".encode()
    )
    _deliver(smtp_config, raw, EXTENSION="1-0123456789abcdef")
    assert len(cli_json(smtp_config, "ticket", "list")) == 2


def test_stranger_using_subject_tag_or_references_gets_a_ticket_of_their_own(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail(body="Mon mot de passe est expiré.\n"))
    [ack] = _to(smtp_catcher.wait_for(3), ALICE)
    smtp_catcher.clear()
    mallory = "mallory@evil.example"
    _deliver(smtp_config, make_mail(sender=mallory, subject="Re: [HD #1] voici", body="tag\n"))
    # Mallory learnt the Message-ID of the acknowledgement, not its text.
    refs = f"In-Reply-To: {ack['Message-ID']}\r\nReferences: {ack['Message-ID']}\r\n"
    _deliver(smtp_config, make_mail(sender=mallory, subject="x", body="refs\n", extra_headers=refs))

    tickets = {t["id"]: t for t in cli_json(smtp_config, "ticket", "list")}
    assert sorted(tickets) == [1, 2, 3]
    assert tickets[2]["requester"] == mallory and tickets[3]["requester"] == mallory
    # The original ticket is untouched and its requester hears nothing.
    assert len(_ticket(smtp_config, 1)["articles"]) == 1
    caught = smtp_catcher.wait_for(6)  # one ack to mallory and two tech mails, twice
    assert ALICE not in {r for c in caught for r in c.recipients}
    for m in _to(caught, mallory):
        assert "Mon mot de passe" not in m.get_content()
        assert "[HD #1]" not in m["Subject"]
    reasons = [m["reason"] for m in cli_json(smtp_config, "mail", "list") if m["sender"] == mallory]
    assert len(reasons) == 2
    assert all("not let into ticket #1" in r for r in reasons), reasons


def test_dmarc_failed_forged_from_is_a_stranger_and_gets_no_mail(
    smtp_config: Path, smtp_catcher: SmtpCatcher, tmp_path: Path
) -> None:
    config = smtp_config.read_text().replace(
        "[mail]\n", '[mail]\ntrusted_authserv_ids = ["mx.univ.example"]\n', 1
    )
    smtp_config.write_text(config)
    ack = _ticket_and_its_ack(smtp_config, smtp_catcher)
    # A header from a server we do not trust proves nothing either way.
    untrusted = "Authentication-Results: evil.example; dmarc=pass header.from=univ.example\r\n"
    failed = (
        "Authentication-Results: mx.univ.example; dkim=none;"
        " dmarc=fail (p=QUARANTINE) header.from=univ.example\r\n"
    )
    _deliver(smtp_config, _reply(ack, body="forged\n", extra=untrusted + failed))
    tickets = cli_json(smtp_config, "ticket", "list")
    assert len(tickets) == 2
    assert len(_ticket(smtp_config, 1)["articles"]) == 1
    caught = smtp_catcher.wait_for(2)
    assert {r for c in caught for r in c.recipients} == TECHS  # nobody writes to the forged From
    [mail] = [m for m in cli_json(smtp_config, "mail", "list") if m["ticket_id"] == 2]
    assert "DMARC fail" in mail["reason"] and "not let into ticket #1" in mail["reason"]
    # The same reply that passes DMARC is a follow-up.
    passed = failed.replace("dmarc=fail", "dmarc=pass")
    _deliver(smtp_config, _reply(ack, body="genuine\n", extra=passed))
    assert len(_ticket(smtp_config, 1)["articles"]) == 2


def test_cc_participant_may_follow_up_and_shows_in_participants(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    bob = "bob@univ.example"
    raw = make_mail(
        message_id="<original@univ.example>",
        extra_headers=f"Cc: Bob Durand <{bob}>, dsi.support@univ.example\r\n",
    )
    _deliver(smtp_config, raw)
    smtp_catcher.wait_for(3)
    shown = _ticket(smtp_config, 1)
    assert shown["participants"] == [
        {"email": ALICE, "name": "Alice Martin", "role": "requester"},
        {"email": bob, "name": "Bob Durand", "role": "cc", "mailed": True, "not_mailed_why": None},
    ]
    # Bob answers the mail he was copied on: its Message-ID is the ticket's.
    answer = make_mail(
        sender=bob,
        subject="Re: Imprimante",
        body="Moi aussi.\n",
        extra_headers="In-Reply-To: <original@univ.example>\r\n",
    )
    _deliver(smtp_config, answer)
    articles = _ticket(smtp_config, 1)["articles"]
    assert [(a["author"], a["internal"]) for a in articles] == [(ALICE, False), (bob, False)]
    # With only the subject tag, his words wait for him to confirm them.
    _deliver(smtp_config, make_mail(sender=bob, subject="[HD #1] encore", body="Et moi.\n"))
    assert _ticket(smtp_config, 1)["articles"][2]["unverified"] is True


def test_technician_reply_by_mail_notifies_the_requester(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    caught = smtp_catcher.wait_for(3)
    [notice] = _to(caught, "jean.tech@univ.example")
    assert notice["Subject"].startswith("[HD #1] Nouvelle demande")
    smtp_catcher.clear()
    reply = _reply(notice, sender="jean.tech@univ.example", body="Je passe à 14 h.\n")
    _deliver(smtp_config, reply)
    [followup] = _to(smtp_catcher.wait_for(2), ALICE)
    assert followup["Subject"] == "[HD #1] Suivi de la demande : Imprimante en panne"
    body = followup.get_content()
    assert "Je passe à 14 h." in body
    assert "Nouvelle demande" not in body  # the quoted notification was trimmed
    assert LINK.search(body)
    article = _ticket(smtp_config, 1)["articles"][1]
    assert article["author"] == "jean.tech@univ.example"
    # The other technician hears only that Jean took the ticket (his answer took it).
    [take] = [c.message() for c in smtp_catcher.messages if ALICE not in c.recipients]
    assert take["To"].addresses[0].addr_spec == "marie.tech@univ.example"
    assert "a pris la demande" in take["Subject"] and "Je passe" not in take.get_content()


# -- machine mail and loops ----------------------------------------------------


def test_our_own_acknowledgement_fed_back_is_a_loop(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    [ack] = [c for c in smtp_catcher.wait_for(3) if ALICE in c.recipients]
    smtp_catcher.clear()
    _deliver(smtp_config, ack.data)
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert mail["verdict"] == "loop"
    assert len(cli_json(smtp_config, "ticket", "list")) == 1
    assert len(_ticket(smtp_config, 1)["articles"]) == 1
    assert len(cli_json(smtp_config, "outbox", "list")) == 3
    assert smtp_catcher.messages == []


def test_auto_reply_to_our_mail_is_filed_silently(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    ack = _ticket_and_its_ack(smtp_config, smtp_catcher)
    ooo = make_mail(
        subject="Réponse automatique : absente jusqu'au 5 décembre",
        body="Je suis absente.\n",
        extra_headers=f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {ack['Message-ID']}\r\n",
    )
    _deliver(smtp_config, ooo)
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert mail["verdict"] == "autoreply" and mail["ticket_id"] == 1
    last = _ticket(smtp_config, 1)["articles"][-1]
    assert last["internal"] is True and "Je suis absente." in last["body_text"]
    assert len(cli_json(smtp_config, "outbox", "list")) == 3
    assert smtp_catcher.messages == []


def test_bounce_of_our_mail_is_filed_and_marks_the_outbox_row_failed(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail(sender="nobody.here@univ.example"))
    [ack] = [c for c in smtp_catcher.wait_for(3) if "nobody.here@univ.example" in c.recipients]
    smtp_catcher.clear()
    headers = ack.data.split(b"\r\n\r\n", 1)[0].decode()
    bounce = (
        "From: MAILER-DAEMON@mx.univ.example (Mail Delivery System)\r\n"
        "To: dsi.support@univ.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.univ.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nUser unknown.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.univ.example\r\n\r\n"
        "Final-Recipient: rfc822; nobody.here@univ.example\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n\r\n"
        f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--b1--\r\n"
    ).encode()
    _deliver(smtp_config, bounce, SENDER="")
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert mail["verdict"] == "bounce" and mail["ticket_id"] == 1
    [row] = [r for r in cli_json(smtp_config, "outbox", "list") if r["kind"] == "ack"]
    assert row["status"] == "failed" and "bounced" in row["last_error"]
    assert _ticket(smtp_config, 1)["articles"][-1]["internal"] is True
    assert smtp_catcher.messages == []
    journey = cli_json(smtp_config, "mail", "show", "1")
    assert [o["kind"] for o in journey["outgoing"]] == ["ack", "tech_new", "tech_new"]
    assert journey["outgoing"][0]["status"] == "failed"


@pytest.mark.slow
def test_two_autoresponders_answering_each_other_stop_at_the_cap(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """The requester and a technician both answer every mail, with no auto-reply marker."""
    config = write_config(
        tmp_path,
        db_url,
        outgoing=smtp_outgoing(smtp_catcher.port),
        # Each turn is a follow-up, a person's words: the loop guard, not the rate cap, stops it.
        extra="[limits]\nper_hour = 5\nper_day = 40\nloop_per_hour = 5\n\n",
    )
    assert run_cli(config, "init").returncode == 0
    _deliver(config, make_mail())
    robots = {ALICE, "jean.tech@univ.example"}
    seen = 0
    for _round in range(40):
        caught = smtp_catcher.messages[seen:]
        seen += len(caught)
        answers = [c for c in caught if robots & set(c.recipients)]
        if not answers:
            break
        for c in answers:
            [robot] = robots & set(c.recipients)
            _deliver(config, _reply(c.message(), sender=robot, body="Je suis en congés.\n"))
        # The pipe sends before it exits: whatever it sent is caught by now.
    else:
        pytest.fail("the autoresponders were still writing after 40 rounds")
    to_alice = [c for c in smtp_catcher.messages if ALICE in c.recipients]
    to_jean = [c for c in smtp_catcher.messages if "jean.tech@univ.example" in c.recipients]
    assert len(to_alice) == 5, len(to_alice)  # the cap, per hour
    assert len(to_jean) <= 5, len(to_jean)
    capped = [r for r in cli_json(config, "outbox", "list") if r["status"] == "capped"]
    assert capped and all("loop guard" in r["last_error"] for r in capped)


# -- outgoing mail ---------------------------------------------------------------


def _config_with_smtp_down(db_url: str, tmp_path: Path, catcher: SmtpCatcher) -> Path:
    """A config sending to the catcher, stopped: its port stays known and free."""
    catcher.stop()
    config = write_config(tmp_path, db_url, outgoing=smtp_outgoing(catcher.port))
    assert run_cli(config, "init").returncode == 0
    return config


def test_smtp_down_keeps_the_mail_and_flush_sends_it_once(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config_with_smtp_down(db_url, tmp_path, smtp_catcher)
    _deliver(config, make_mail())
    rows = cli_json(config, "outbox", "list")
    assert {r["status"] for r in rows} == {"queued"}
    assert "127.0.0.1" in rows[-1]["last_error"]
    assert [r["tries"] for r in rows if r["kind"] == "ack"] == [1]  # tried once, then stopped
    failing = run_cli(config, "outbox", "flush")
    assert failing.returncode == 75, failing.stdout
    smtp_catcher.start()
    result = run_cli(config, "outbox", "flush")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 sent")
    again = run_cli(config, "outbox", "flush")
    assert again.stdout.startswith("0 sent")
    caught = smtp_catcher.wait_for(3)
    assert len(smtp_catcher.messages) == 3  # flush sends before it returns: nothing comes late
    assert len(_to(caught, ALICE)) == 1
    assert {r["status"] for r in cli_json(config, "outbox", "list")} == {"sent"}


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


BCC = "=?utf-8?q?Panne=0D=0ABcc:_victim@evil.example?="
BODY = "=?utf-8?q?Panne=0D=0A=0D=0A<script>x</script>?="


@pytest.mark.parametrize(
    "subject,name,message_id",
    [
        (BCC, "Alice", None),
        ("Panne", "=?utf-8?q?Alice=0ABcc:_victim@evil.example?=", None),
        (_b64_word("Panne\r\nX-Injected: yes"), "Alice\u2028X-Injected: yes", None),
        # Encoded twice: the email package would decode the inner layer when writing.
        (_b64_word(BCC), "Alice", None),
        ("Panne", _b64_word("=?utf-8?q?Alice=0D=0AX-Injected:_yes?="), None),
        (_b64_word(BODY), "Alice", None),
        ("Panne", "Alice", "<=?utf-8?q?a=0D=0AX-Injected:_yes?=@evil.example>"),
    ],
)
def test_newlines_in_subject_or_name_never_add_a_header(
    smtp_config: Path,
    smtp_catcher: SmtpCatcher,
    subject: str,
    name: str,
    message_id: str | None,
) -> None:
    raw = make_mail(subject=subject, message_id=message_id)
    _deliver(smtp_config, raw.replace(b"From: Alice Martin", f"From: {name}".encode()))
    for caught in smtp_catcher.wait_for(3):
        message = caught.message()
        assert message["Bcc"] is None and message["X-Injected"] is None
        assert "victim@evil.example" not in caught.recipients
        header_block, body = caught.data.split(b"\r\n\r\n", 1)
        names = [line.split(b":")[0].lower() for line in header_block.split(b"\r\n")]
        assert not {b"bcc", b"x-injected"} & set(names), header_block
        assert message.get_content_type() == "text/plain"
        assert b"<script>" not in body.split(b"\r\n\r\n")[0]


def test_rate_cap_keeps_extra_acknowledgements_unsent(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url, extra="[limits]\nper_hour = 2\nper_day = 3\n\n")
    assert run_cli(config, "init").returncode == 0
    for n in range(4):
        _deliver(config, make_mail(subject=f"demande {n}"))
    acks = [r for r in cli_json(config, "outbox", "list") if r["kind"] == "ack"]
    assert sorted(r["status"] for r in acks) == ["capped", "capped", "sent", "sent"]
    sent = sorted((tmp_path / "sent").glob("*.eml"))
    # Two acknowledgements, and the technicians' news of all four tickets (counted per ticket).
    assert len(sent) == 2 + 4 * 2


def test_no_acknowledgement_to_a_noreply_address(config: Path) -> None:
    _deliver(config, make_mail(sender="no-reply@service.example"))
    [ack] = [r for r in cli_json(config, "outbox", "list") if r["kind"] == "ack"]
    assert ack["status"] == "skipped"


def test_directory_transport_writes_the_messages(config: Path) -> None:
    _deliver(config, make_mail())
    sent = sorted((config.parent / "sent").glob("*.eml"))
    assert len(sent) == 3
    subjects = {m.read_bytes().split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in sent}
    assert any(s.startswith(b"[HD #1] =?utf-8?") or b"Enregistrement" in s for s in subjects)


def test_templates_can_be_overridden(db_url: str, tmp_path: Path) -> None:
    override = tmp_path / "templates" / "fr"
    override.mkdir(parents=True)
    (override / "ack.txt").write_text(
        "{% set subject %}Bien reçu ({{ ticket.subject }}){% endset %}Lien : {{ link }}\n",
        encoding="utf-8",
    )
    config = write_config(tmp_path, db_url, mail='templates = "templates"\n')
    assert run_cli(config, "init").returncode == 0
    _deliver(config, make_mail())
    [ack] = [r for r in cli_json(config, "outbox", "list") if r["kind"] == "ack"]
    assert ack["subject"] == "[HD #1] Bien reçu (Imprimante en panne)"


def test_without_a_secret_key_mail_waits_in_the_mta(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_url)
    good = config.read_text()
    config.write_text(good.replace(f'secret_key = "{SECRET_KEY}"', ""))
    assert run_cli(config, "init").returncode == 0
    raw = make_mail()
    result = run_pipe(config, raw)
    assert result.returncode == 75
    assert b"secret_key is not set" in result.stderr
    assert [m["verdict"] for m in cli_json(config, "mail", "list")] == ["pending"]
    config.write_text(good)
    _deliver(config, raw)  # the MTA's retry, once the sysadmin set the key
    assert [m["verdict"] for m in cli_json(config, "mail", "list")] == ["ticket"]
    assert len(cli_json(config, "outbox", "list")) == 3


def test_a_huge_text_is_cut_in_notifications_and_kept_whole_in_the_ticket(config: Path) -> None:
    body = "".join(f"ligne {n} du journal d'erreurs\n" for n in range(20_000))
    _deliver(config, make_mail(body=body))
    sent = sorted((config.parent / "sent").glob("*.eml"))
    assert len(sent) == 3
    assert all(m.stat().st_size < 40_000 for m in sent)
    assert "ligne 19999 du journal" in _ticket(config, 1)["articles"][0]["body_text"]


def test_a_strangers_fake_auto_reply_is_not_filed_in_the_ticket(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    ack = _ticket_and_its_ack(smtp_config, smtp_catcher)
    fake = make_mail(
        sender="mallory@evil.example",
        subject="[HD #1] Undelivered Mail Returned to Sender",
        body="Please write to alice@evil.example instead.\n",
        extra_headers=f"Auto-Submitted: auto-replied\r\nReferences: {ack['In-Reply-To']}\r\n",
    )
    _deliver(smtp_config, fake)
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert mail["verdict"] == "autoreply" and mail["ticket_id"] is None
    assert len(_ticket(smtp_config, 1)["articles"]) == 1
    assert smtp_catcher.messages == []


def test_a_signature_only_opens_the_ticket_of_its_own_queue(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    smtp_catcher.wait_for(3)
    signed = reply_address(SECRET_KEY, "dsi", 1, "scd.informatique@univ.example")
    raw = make_mail(subject="hello").replace(
        b"To: dsi.support@univ.example", f"To: {signed}".encode()
    )
    _deliver(smtp_config, raw, queue="scd", EXTENSION=signed.split("+")[1].split("@")[0])
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert mail["verdict"] == "ticket" and mail["ticket_id"] == 2
    assert len(_ticket(smtp_config, 1)["articles"]) == 1


def test_a_technician_by_subject_tag_alone_does_not_write_to_the_requester(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    smtp_catcher.wait_for(3)
    smtp_catcher.clear()
    tech = "jean.tech@univ.example"
    _deliver(smtp_config, make_mail(sender=tech, subject="[HD #1] vu", body="Note.\n"))
    assert [a["author"] for a in _ticket(smtp_config, 1)["articles"]] == [ALICE, tech]
    [mail] = cli_json(smtp_config, "mail", "list")[:1]
    assert "answers none of ours" in mail["reason"]
    caught = smtp_catcher.wait_for(2)
    # Marie hears of the note; Jean is asked to prove it his (tests/test_caps.py).
    assert sorted(r for c in caught for r in c.recipients) == [tech, "marie.tech@univ.example"]
    [notice] = [c.message() for c in caught if tech in c.recipients]
    assert "Non transmis au demandeur" in notice["Subject"]


def test_dmarc_pass_outweighs_a_broken_dkim_signature(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = smtp_config.read_text().replace(
        "[mail]\n", '[mail]\ntrusted_authserv_ids = ["mx.univ.example"]\n', 1
    )
    smtp_config.write_text(config)
    _deliver(smtp_config, make_mail())
    [ack] = _to(smtp_catcher.wait_for(3), ALICE)
    results = (
        "Authentication-Results: mx.univ.example; dkim=fail header.d=univ.example;"
        " spf=pass smtp.mailfrom=univ.example; dmarc=pass header.from=univ.example\r\n"
    )
    _deliver(smtp_config, _reply(ack, body="list footer broke dkim\n", extra=results))
    assert len(_ticket(smtp_config, 1)["articles"]) == 2


def _queue_failed_mail(config: Path, count: int) -> None:
    for n in range(count):
        _deliver(config, make_mail(sender=f"user{n}@univ.example", subject=f"demande {n}"))


def test_concurrent_flushers_send_each_mail_once(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from helpdesk.config import load_settings
    from helpdesk.notify.outbox import flush
    from helpdesk.store import Store

    config = _config_with_smtp_down(db_url, tmp_path, smtp_catcher)
    _queue_failed_mail(config, 6)  # 18 rows: an ack and two technicians' news each
    smtp_catcher.start()
    settings = load_settings(config)

    def one_flusher(_n: int) -> int:
        with Store(settings.database_url, settings.busy_timeout) as store:
            return flush(store, settings, due_only=False).sent

    with ThreadPoolExecutor(4) as pool:
        sent = list(pool.map(one_flusher, range(4)))
    assert sum(sent) == 18, sent
    assert len(smtp_catcher.messages) == 18
    ids = [c.message()["Message-ID"] for c in smtp_catcher.messages]
    assert len(set(ids)) == 18


def test_backoff_and_lease_of_a_flusher_that_died(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config_with_smtp_down(db_url, tmp_path, smtp_catcher)
    _queue_failed_mail(config, 1)
    smtp_catcher.start()
    # The pipe stopped at its first failure: the technicians' mail was never tried and
    # is due; the acknowledgement tried once waits a minute.
    assert run_cli(config, "outbox", "flush", "--due-only").stdout.startswith("2 sent")
    # A flusher that died while sending leaves its row `sending`: nobody takes it
    # before its lease runs out, not even a flush that ignores retry times.
    db_execute(config, "UPDATE outbox_message SET status = 'sending' WHERE kind = 'ack'")
    assert run_cli(config, "outbox", "flush").stdout.startswith("0 sent")
    db_execute(config, "UPDATE outbox_message SET next_try_at = created_at WHERE kind = 'ack'")
    assert run_cli(config, "outbox", "flush", "--due-only").stdout.startswith("1 sent")
    assert len(smtp_catcher.messages) == 3
    assert {r["status"] for r in cli_json(config, "outbox", "list")} == {"sent"}


def test_a_requester_with_a_non_ascii_address_gets_the_acknowledgement(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    raw = make_mail(sender="josé@univ.example").replace(b"Alice Martin", "José".encode())
    _deliver(smtp_config, raw)
    [ack] = [c for c in smtp_catcher.wait_for(3) if "josé@univ.example" in c.recipients]
    assert ack.message()["Subject"].startswith("[HD #1] Enregistrement")
