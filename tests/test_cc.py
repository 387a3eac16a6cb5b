"""People in Cc of a request: they hear of its answers and resolution, each by a private
link of their own, and may write in. End to end: the real pipe, a real SMTP server, the
viewer's test client; on SQLite and on PostgreSQL (the `db_url` fixture).
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
from helpdesk.tokens import hash_token

ALICE = "alice@univ.example"
BOB = "bob@univ.example"
JEAN = "jean.tech@univ.example"
MARIE = "marie.tech@univ.example"
TECHS = {JEAN, MARIE}
LINK = re.compile(r"https://helpdesk\.univ\.example/t/([A-Za-z0-9_-]{43})")


def _config(db_url: str, tmp_path: Path, catcher: SmtpCatcher, tickets: str = "") -> Path:
    extra = f"[tickets]\n{tickets}\n" if tickets else ""
    path = write_config(tmp_path, db_url, extra=extra, outgoing=smtp_outgoing(catcher.port))
    assert run_cli(path, "init").returncode == 0
    return path


@pytest.fixture
def smtp_config(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> Path:
    """A config with the default [tickets] whose mail goes to the test's SMTP server."""
    return _config(db_url, tmp_path, smtp_catcher)


def _deliver(config: Path, raw: bytes) -> None:
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _by_recipient(caught: list[Any]) -> dict[str, EmailMessage]:
    """Each caught mail by its one recipient: every mail goes to one person."""
    assert all(len(c.recipients) == 1 for c in caught), [c.recipients for c in caught]
    shown = {c.recipients[0]: c.message() for c in caught}
    assert len(shown) == len(caught), [c.recipients for c in caught]
    return shown


def _token(message: EmailMessage) -> str:
    [token] = LINK.findall(message.get_content())
    return token


def _cc_mail(cc: str, **kwargs: Any) -> bytes:
    return make_mail(extra_headers=f"Cc: {cc}\r\n", **kwargs)


def _open_with_cc(config: Path, catcher: SmtpCatcher, cc: str, acks: int = 3) -> None:
    """Ticket #1 from Alice with these Cc: Alice's acknowledgement and the two
    technicians' news go out, nothing to the Cc; the catcher is emptied."""
    _deliver(config, _cc_mail(cc))
    caught = catcher.wait_for(acks)
    assert set(_by_recipient(caught)) == {ALICE, *TECHS}
    catcher.clear()


def _client(config: Path) -> Any:
    from webview import create_app

    return create_app(settings=load_settings(config)).test_client()


def test_a_cc_participant_receives_the_answer_with_a_working_link_of_their_own(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _open_with_cc(smtp_config, smtp_catcher, f"Bob Durand <{BOB}>")
    assert (
        run_cli(smtp_config, "ticket", "reply", "1", "--as", JEAN, "-m", "Je passe.").returncode
        == 0
    )
    # Jean's first answer takes the ticket: Marie hears of the take.
    sent = _by_recipient(smtp_catcher.wait_for(3))
    assert set(sent) == {ALICE, BOB, MARIE}
    to_bob, to_alice = sent[BOB], sent[ALICE]
    assert to_bob["Subject"] == "[HD #1] Suivi de la demande : Imprimante en panne"
    assert to_bob["To"] == f"Bob Durand <{BOB}>"
    bob_text = to_bob.get_content()
    assert "Je passe." in bob_text and "dont vous êtes en copie" in bob_text
    assert "Bonjour Bob Durand" in bob_text
    assert "en copie" not in to_alice.get_content()
    bob_token, alice_token = _token(to_bob), _token(to_alice)
    assert bob_token != alice_token
    # Each link is its reader's: tokens are per person.
    owners = dict(
        db_execute(
            smtp_config,
            "SELECT a.token_sha256, p.email FROM access_token a JOIN person p"
            " ON p.id = a.person_id",
        )
    )
    assert owners[hash_token(bob_token)] == BOB
    assert owners[hash_token(alice_token)] == ALICE
    client = _client(smtp_config)
    for token in (bob_token, alice_token):
        page = client.get(f"/t/{token}")
        assert page.status_code == 200
        assert "Imprimante en panne" in page.get_data(as_text=True)
        assert "Je passe." in page.get_data(as_text=True)
    # Bob's follow-up on his page is his, not Alice's.
    form = client.get(f"/t/{bob_token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    posted = client.post(f"/t/{bob_token}", data={"csrf_token": csrf, "description": "Moi aussi."})
    assert posted.status_code == 303
    last = cli_json(smtp_config, "ticket", "show", "1")["articles"][-1]
    assert (last["author"], last["source"], last["internal"]) == (BOB, "web", False)
    mine = client.get(f"/t/{bob_token}").get_data(as_text=True)
    assert re.search(
        r'class="entry mine"[^>]*>\s*<article[^>]*>\s*<header[^>]*>\s*'
        r'<span class="author">Bob Durand',
        mine,
    )
    smtp_catcher.clear()
    # The resolution reaches both too, each with a new link of their own.
    assert (
        run_cli(smtp_config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.").returncode == 0
    )
    resolved = _by_recipient(smtp_catcher.wait_for(2))
    assert set(resolved) == {ALICE, BOB}
    assert resolved[BOB]["Subject"] == "[HD #1] Demande résolue : Imprimante en panne"
    assert resolved[ALICE]["Subject"] == "[HD #1] Votre demande est résolue : Imprimante en panne"
    assert _token(resolved[BOB]) not in (bob_token, _token(resolved[ALICE]))
    assert client.get(f"/t/{_token(resolved[BOB])}").status_code == 200


def test_a_technicians_answer_by_mail_reaches_the_cc_too(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, _cc_mail(BOB))
    news = _by_recipient(smtp_catcher.wait_for(3))[JEAN]
    smtp_catcher.clear()
    answer = make_mail(
        sender=JEAN,
        subject=f"Re: {news['Subject']}",
        body="Le toner arrive demain.\n",
        extra_headers=f"In-Reply-To: {news['Message-ID']}\r\n",
    )
    _deliver(smtp_config, answer)
    sent = _by_recipient(smtp_catcher.wait_for(3))
    assert set(sent) == {ALICE, BOB, MARIE}  # Marie: Jean's answer took the ticket
    assert "Le toner arrive demain." in sent[BOB].get_content()
    assert _client(smtp_config).get(f"/t/{_token(sent[BOB])}").status_code == 200


def test_notify_cc_false_sends_nothing_to_the_cc(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher, "notify_cc = false")
    _open_with_cc(config, smtp_catcher, BOB)
    assert run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Vu.").returncode == 0
    assert run_cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.").returncode == 0
    caught = smtp_catcher.wait_for(3)
    # The answer and the resolution; the news of Jean's take to Marie.
    assert sorted(r for c in caught for r in c.recipients) == [ALICE, ALICE, MARIE]
    [bob] = cli_json(config, "ticket", "show", "1")["participants"][1:]
    assert (bob["mailed"], bob["not_mailed_why"]) == (False, "[tickets] notify_cc is false")


def test_notify_cc_domains_lets_only_those_domains_hear(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher, 'notify_cc_domains = ["univ.example"]')
    cc = f"{BOB}, carol@gmail.example, dan@labo.univ.example, eve@evil-univ.example"
    _open_with_cc(config, smtp_catcher, cc)
    assert run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Vu.").returncode == 0
    sent = _by_recipient(smtp_catcher.wait_for(4))
    assert set(sent) == {ALICE, BOB, "dan@labo.univ.example", MARIE}  # Marie: Jean's take
    shown = run_cli(config, "ticket", "show", "1").stdout
    assert "Answers also mailed to (Cc): bob@univ.example, dan@labo.univ.example" in shown
    assert "not mailed: carol@gmail.example (domain not in [tickets] notify_cc_domains)" in shown


def test_a_cc_added_in_a_later_followup_receives_the_next_answer(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    ack = _by_recipient(smtp_catcher.wait_for(3))[ALICE]
    smtp_catcher.clear()
    carol = "carol@univ.example"
    reply = make_mail(
        subject=f"Re: {ack['Subject']}",
        body="Je mets Carol en copie.\n",
        extra_headers=f"In-Reply-To: {ack['Message-ID']}\r\nCc: Carol <{carol}>, {JEAN}\r\n",
    )
    _deliver(smtp_config, reply)
    smtp_catcher.wait_for(2)  # the technicians hear of the follow-up; Carol does not
    assert set(_by_recipient(smtp_catcher.messages)) == TECHS
    smtp_catcher.clear()
    shown = cli_json(smtp_config, "ticket", "show", "1")
    assert shown["participants"][0]["email"] == ALICE
    assert {(p["email"], p["role"]) for p in shown["participants"][1:]} == {
        (JEAN, "cc"),
        (carol, "cc"),
    }
    history = cli_json(smtp_config, "ticket", "history", "1")
    assert any(h["action"] == "cc" and carol in (h["detail"] or "") for h in history)
    assert run_cli(smtp_config, "ticket", "reply", "1", "--as", JEAN, "-m", "Vu.").returncode == 0
    sent = _by_recipient(smtp_catcher.wait_for(3))
    # The technician in Cc is no Cc reader; Marie hears of Jean's take.
    assert set(sent) == {ALICE, carol, MARIE}
    assert _client(smtp_config).get(f"/t/{_token(sent[carol])}").status_code == 200


def test_a_participants_reply_is_a_requester_side_followup(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _open_with_cc(smtp_config, smtp_catcher, BOB)
    assert run_cli(smtp_config, "ticket", "reply", "1", "--as", JEAN, "-m", "Vu.").returncode == 0
    to_bob = _by_recipient(smtp_catcher.wait_for(2))[BOB]
    smtp_catcher.clear()
    answer = make_mail(
        sender=BOB,
        subject=f"Re: {to_bob['Subject']}",
        body="Chez moi aussi.\n",
        extra_headers=f"In-Reply-To: {to_bob['Message-ID']}\r\n",
    )
    _deliver(smtp_config, answer)
    [news] = smtp_catcher.wait_for(1)
    assert news.recipients == [JEAN]  # the ticket's technician since the answer
    shown = cli_json(smtp_config, "ticket", "show", "1")
    last = shown["articles"][-1]
    assert (last["author"], last["internal"], last["unverified"]) == (BOB, False, False)
    assert shown["status"] == "assigned"  # no longer waiting: the requester's side answered
    [mail] = [m for m in cli_json(smtp_config, "mail", "list") if m["sender"] == BOB]
    assert mail["verdict"] == "followup" and "requester side" in mail["reason"]
    # With the subject tag alone, a participant's words wait for confirmation, as the
    # requester's do.
    _deliver(smtp_config, make_mail(sender=BOB, subject="[HD #1] encore", body="Et moi.\n"))
    last = cli_json(smtp_config, "ticket", "show", "1")["articles"][-1]
    assert (last["author"], last["unverified"]) == (BOB, True)


def test_a_hundred_cc_are_not_a_hundred_mails(config: Path) -> None:
    copied = [f"person{n:03d}@elsewhere.example" for n in range(100)]
    cc = ", ".join(
        [
            "dsi.support@univ.example",  # our own alias
            "marie.tech@univ.example",  # a technician
            "no-reply@univ.example",
            ALICE,  # the requester herself
            *copied,
        ]
    )
    _deliver(config, make_mail(extra_headers=f"Cc: {cc}\r\n"))
    assert run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Vu.").returncode == 0
    rows = db_execute(config, "SELECT to_addr, status FROM outbox_message WHERE kind = 'followup'")
    assert sorted(rows) == sorted([(ALICE, "sent")] + [(a, "sent") for a in copied[:10]])
    shown = cli_json(config, "ticket", "show", "1")["participants"]
    why = {p["email"]: p.get("not_mailed_why") for p in shown[1:]}
    assert ALICE not in why  # never a participant of her own ticket
    assert "dsi.support@univ.example" not in why  # nor our alias
    assert why["marie.tech@univ.example"] == "a technician: technicians get their own notices"
    assert why["no-reply@univ.example"] == "a no-reply address"
    assert why[copied[10]] == "over [tickets] notify_cc_max (10)"
    assert sum(p["mailed"] for p in shown[1:]) == 10


def test_notify_cc_max_is_an_option(db_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path, db_url, extra="[tickets]\nnotify_cc_max = 2\n")
    assert run_cli(path, "init").returncode == 0
    cc = ", ".join(f"p{n}@univ.example" for n in range(5))
    _deliver(path, make_mail(extra_headers=f"Cc: {cc}\r\n"))
    assert run_cli(path, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.").returncode == 0
    rows = db_execute(path, "SELECT to_addr FROM outbox_message WHERE kind = 'resolved'")
    assert sorted(r[0] for r in rows) == sorted([ALICE, "p0@univ.example", "p1@univ.example"])


def test_machine_mail_with_cc_adds_no_participant(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _deliver(smtp_config, make_mail())
    ack = _by_recipient(smtp_catcher.wait_for(3))[ALICE]
    auto = make_mail(
        subject=f"Absence : {ack['Subject']}",
        body="Je suis absente.\n",
        extra_headers=(
            f"In-Reply-To: {ack['Message-ID']}\r\nAuto-Submitted: auto-replied\r\n"
            "Cc: mallory@elsewhere.example\r\n"
        ),
    )
    _deliver(smtp_config, auto)
    assert cli_json(smtp_config, "ticket", "show", "1")["participants"] == [
        {"email": ALICE, "name": "Alice Martin", "role": "requester"}
    ]


def test_cc_recipients_decides_in_process(db_url: str, tmp_path: Path) -> None:
    """Who of the participants is mailed, and why not, for each rule of cc_recipients."""
    from dataclasses import replace

    from helpdesk import workflow
    from helpdesk.notify.notices import cc_recipients
    from helpdesk.store import Store

    path = write_config(tmp_path, db_url)
    assert run_cli(path, "init").returncode == 0
    settings = replace(load_settings(path), notify_cc_domains=("univ.example",), notify_cc_max=2)
    with Store(settings.database_url) as store, store.transaction():
        alice = workflow.ensure_person(store, ALICE)
        ticket = store.scalar(
            "INSERT INTO ticket (queue, subject, status, requester_id, created_at, updated_at)"
            " VALUES ('dsi', 's', 'new', :a, :now, :now) RETURNING id",
            {"a": alice, "now": "2026-12-07 10:00:00+00:00"},
        )
        # Rows no door writes (the alias, the requester) are refused all the same.
        for address in (
            "dsi.support+x@univ.example",
            ALICE,
            "marie.tech@univ.example",
            "mailer-daemon@univ.example",
            "carol@univ-example.org",
            "bob@univ.example",
            "dan@labo.univ.example",
            "erin@univ.example",
        ):
            workflow.add_participant(store, ticket, workflow.ensure_person(store, address))
        mailed, skipped = cc_recipients(store, settings, ticket)
        assert mailed == [("bob@univ.example", ""), ("dan@labo.univ.example", "")]
        assert skipped == {
            "dsi.support+x@univ.example": "an address of this helpdesk",
            ALICE: "mailed already, once",
            "marie.tech@univ.example": "a technician: technicians get their own notices",
            "mailer-daemon@univ.example": "a no-reply address",
            "carol@univ-example.org": "domain not in [tickets] notify_cc_domains",
            "erin@univ.example": "over [tickets] notify_cc_max (2)",
        }
        off = replace(settings, notify_cc=False)
        assert cc_recipients(store, off, ticket)[0] == []


def test_a_participant_closing_the_resolved_ticket_tells_the_requester(
    smtp_config: Path, smtp_catcher: SmtpCatcher
) -> None:
    _open_with_cc(smtp_config, smtp_catcher, BOB)
    assert (
        run_cli(smtp_config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.").returncode == 0
    )
    bob_token = _token(_by_recipient(smtp_catcher.wait_for(2))[BOB])
    smtp_catcher.clear()
    client = _client(smtp_config)
    form = client.get(f"/t/{bob_token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post(f"/t/{bob_token}/close", data={"csrf_token": csrf}).status_code == 303
    [closed] = smtp_catcher.wait_for(1)
    assert closed.recipients == [ALICE]
    [entry] = [h for h in cli_json(smtp_config, "ticket", "history", "1") if h["action"] == "close"]
    assert (entry["actor"], entry["door"]) == (BOB, "web")
