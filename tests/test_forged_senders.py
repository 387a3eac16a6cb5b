"""Who may write into a ticket as its requester: one strict author, and proof besides the tag.

The decisions run in process (helpdesk.ingest.deliver.deliver on a real Store, the
directory transport catching what is sent), on SQLite and on PostgreSQL; the story
of a forged tagged mail and its confirmation also runs end to end through the real
pipe and a real SMTP server.
"""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from smtp_catcher import SmtpCatcher

from helpdesk.config import load_settings
from helpdesk.ingest.parse import parse

ALICE = "alice@univ.example"
TECHS = {"jean.tech@univ.example", "marie.tech@univ.example"}
TRUSTED = '[mail]\ntrusted_authserv_ids = ["mx.univ.example"]\n'


# -- helpers -------------------------------------------------------------------


def _trusting(config: Path) -> Path:
    config.write_text(config.read_text().replace("[mail]\n", TRUSTED, 1))
    return config


def _deliver(config: Path, raw: bytes, **env: str) -> Any:
    from helpdesk.ingest.deliver import deliver

    outcome = deliver(raw, load_settings(config), "dsi", env)
    assert outcome.code == 0, outcome.message
    return outcome


def _sent(config: Path) -> list[tuple[list[str], EmailMessage]]:
    """Every mail the directory transport wrote, oldest first, with its recipients."""
    directory = config.parent / "sent"
    out = []
    for eml in sorted(directory.glob("*.eml")) if directory.exists() else []:
        envelope = json.loads(eml.with_suffix(".envelope.json").read_text())
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        out.append((envelope["to"], message))
    return out


def _sent_to(config: Path, address: str) -> list[EmailMessage]:
    return [m for to, m in _sent(config) if address in to]


def _ticket(config: Path, ticket_id: int = 1) -> dict[str, Any]:
    return cli_json(config, "ticket", "show", str(ticket_id))


def _public_authors(config: Path, ticket_id: int = 1) -> list[str]:
    return [a["author"] for a in _ticket(config, ticket_id)["articles"] if not a["internal"]]


def _reason(config: Path, message_id: str) -> str:
    [mail] = [m for m in cli_json(config, "mail", "list") if m["message_id"] == message_id]
    return mail["reason"] or ""


def _alice_ticket(config: Path) -> EmailMessage:
    """Ticket 1 from Alice; her acknowledgement."""
    _deliver(config, make_mail(message_id="<first@univ.example>"))
    [ack] = _sent_to(config, ALICE)
    return ack


def _mail(from_header: str, subject: str, body: str, extra: str = "") -> tuple[bytes, str]:
    message_id = f"<{uuid.uuid4().hex}@elsewhere.example>"
    raw = (
        f"{from_header}\r\nTo: dsi.support@univ.example\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}\r\n"
    ).encode()
    return raw, message_id


# -- the author, read strictly (in process, no database) -----------------------


@pytest.mark.parametrize(
    ("headers", "author", "problem"),
    [
        ("From: Alice Martin <alice@univ.example>", "alice@univ.example", None),
        ("From: alice@univ.example (Alice)", "alice@univ.example", None),
        ("From: Martin, Alice <Alice@Univ.Example>", "alice@univ.example", None),
        ('From: "bob@univ.example" <alice@univ.example>', "alice@univ.example", None),
        ("From: <>\r\nSender: alice@univ.example", "", "no usable address"),
        ("From: (Alice)\r\nReply-To: alice@univ.example", "", "no usable address"),
        ("From: =?utf-8?q?alice=40univ=2Eexample?=", "", "no usable address"),
        ("From: Alice <=?utf-8?q?alice=40univ=2Eexample?=>", "", "no usable address"),
        ("From: <alice @ univ . example>", "", "no usable address"),
        ("From: alice@univ.example, mallory@evil.example", "", "several addresses"),
        ("From: alice@univ.example\r\nFrom: mallory@evil.example", "", "2 From headers"),
        ("Sender: alice@univ.example", "", "no From header"),
    ],
)
def test_the_author_is_the_single_address_of_the_single_from_header(
    headers: str, author: str, problem: str | None
) -> None:
    mail = parse(f"{headers}\r\nSubject: x\r\n\r\nbody\r\n".encode())
    assert mail.author == author
    if problem is None:
        assert mail.author_problem is None
    else:
        assert problem in (mail.author_problem or "")
        assert mail.sender  # the lenient reading still names someone, for new tickets only


# -- forged header shapes never write into someone's ticket ---------------------

# Each shape makes the lenient reading land on Alice while the MX judged another From
# (or none): the reply names our acknowledgement, so threading finds her ticket.
FORGED_SHAPES = {
    "empty From, Sender": ("From: <>\r\nSender: alice@univ.example", "none", "univ.example"),
    "comment From, Reply-To": (
        "From: (Alice)\r\nReply-To: alice@univ.example",
        "none",
        "univ.example",
    ),
    "encoded word as address": ("From: =?utf-8?q?alice=40univ=2Eexample?=", "none", ""),
    "encoded word in brackets": ("From: Alice <=?utf-8?q?alice=40univ=2Eexample?=>", "none", ""),
    "spaces around the at": ("From: <alice @ univ . example>", "none", "univ.example"),
    "two addresses": (
        "From: alice@univ.example, mallory@evil.example",
        "pass",
        "evil.example",
    ),
    "two From headers": (
        "From: alice@univ.example\r\nFrom: mallory@evil.example",
        "pass",
        "evil.example",
    ),
}


@pytest.mark.parametrize("shape", sorted(FORGED_SHAPES))
def test_a_forged_header_shape_never_writes_as_the_requester(config: Path, shape: str) -> None:
    _trusting(config)
    ack = _alice_ticket(config)
    from_lines, result, domain = FORGED_SHAPES[shape]
    results = (
        f"Authentication-Results: mx.univ.example; dmarc={result} header.from={domain}\r\n"
        if domain
        else "Authentication-Results: mx.univ.example; dmarc=none\r\n"
    )
    refs = f"In-Reply-To: {ack['Message-ID']}\r\nReferences: {ack['Message-ID']}\r\n"
    subject = f"Re: {ack['Subject']}"
    raw, message_id = _mail(from_lines, subject, "Envoyez-moi le code.", refs + results)
    before = len(_sent(config))
    outcome = _deliver(config, raw)
    assert outcome.verdict == "ticket" and outcome.ticket_id == 2
    assert _public_authors(config, 1) == [ALICE]  # nothing added to Alice's ticket
    assert len(_ticket(config, 1)["articles"]) == 1
    reason = _reason(config, message_id)
    assert "not let into ticket #1" in reason and "no acknowledgement sent" in reason, reason
    # Only the technicians hear of the new ticket: no mail to an address nobody proved.
    assert {r for to, _m in _sent(config)[before:] for r in to} == TECHS


# -- DMARC results: what counts, about which domain -----------------------------

TAGGED = "Re: [HD #1] Imprimante en panne"


@pytest.mark.parametrize(
    ("results", "public"),
    [
        ("dmarc=pass header.from=univ.example", True),
        ("dkim=pass header.d=univ.example header.s=sel", True),
        ("dkim=pass header.i=@univ.example", True),
        ("dmarc=pass header.from=evil.example", False),
        ("dkim=pass header.d=evil.example", False),
        ("dmarc=none header.from=univ.example", False),
        ("dmarc=temperror header.from=univ.example", False),
        ("dmarc=pass header.from=sub.univ.example", False),
    ],
)
def test_only_a_trusted_pass_for_exactly_the_from_domain_proves_a_tagged_mail(
    config: Path, results: str, public: bool
) -> None:
    _trusting(config)
    _alice_ticket(config)
    header = f"Authentication-Results: mx.univ.example; {results}\r\n"
    raw, message_id = _mail(f"From: Alice <{ALICE}>", TAGGED, "Toujours en panne.", header)
    _deliver(config, raw)
    entry = _ticket(config)["articles"][1]
    assert entry["unverified"] is (not public), _reason(config, message_id)
    assert entry["internal"] is (not public)


def test_a_pass_from_a_server_we_do_not_trust_proves_nothing(config: Path) -> None:
    _trusting(config)
    _alice_ticket(config)
    header = "Authentication-Results: evil.example; dmarc=pass header.from=univ.example\r\n"
    raw, _mid = _mail(f"From: Alice <{ALICE}>", TAGGED, "Toujours en panne.", header)
    _deliver(config, raw)
    assert _ticket(config)["articles"][1]["unverified"] is True


def test_a_trusted_failure_outweighs_a_pass_written_below_it(config: Path) -> None:
    _trusting(config)
    _alice_ticket(config)
    headers = (
        "Authentication-Results: mx.univ.example; dmarc=fail header.from=univ.example\r\n"
        "Authentication-Results: mx.univ.example; dmarc=pass header.from=univ.example\r\n"
    )
    raw, message_id = _mail(f"From: Alice <{ALICE}>", TAGGED, "Forgé.", headers)
    outcome = _deliver(config, raw)
    assert outcome.ticket_id == 2
    assert "DMARC fail for univ.example" in _reason(config, message_id)


# -- the subject tag alone: kept unverified, confirmed by one reply --------------


def test_a_tagged_mail_without_proof_waits_for_its_author_to_confirm(config: Path) -> None:
    _alice_ticket(config)
    seen = len(_sent(config))
    raw, message_id = _mail(f"From: Alice Martin <{ALICE}>", TAGGED, "Mon code est 1234.")
    outcome = _deliver(config, raw)
    assert outcome.verdict == "followup" and outcome.ticket_id == 1
    entry = _ticket(config)["articles"][1]
    assert (entry["internal"], entry["unverified"]) == (True, True)
    assert "nothing besides the subject tag" in _reason(config, message_id)
    # Nobody hears of it as Alice's words; Alice's own address is asked, once.
    new = _sent(config)[seen:]
    assert [to for to, _m in new] == [[ALICE]]
    request = new[0][1]
    assert request["Subject"].startswith("[HD #1] Confirmez-vous ce message")
    assert "Mon code est 1234." in request.get_content()
    assert request["Auto-Submitted"] == "auto-replied"
    # Her reply names the request's Message-ID: the entry is hers, public, and the
    # technicians now hear of it.
    reply, _rid = _mail(
        f"From: Alice Martin <{ALICE}>",
        f"Re: {request['Subject']}",
        "",
        f"In-Reply-To: {request['Message-ID']}\r\nReferences: {request['Message-ID']}\r\n",
    )
    outcome = _deliver(config, reply)
    assert outcome.message == "confirmation in ticket #1"
    entries = _ticket(config)["articles"]
    assert len(entries) == 2  # the empty confirmation added nothing of its own
    assert (entries[1]["internal"], entries[1]["unverified"]) == (False, False)
    news = _sent(config)[seen + 1 :]
    assert {r for to, _m in news for r in to} == TECHS
    assert all("Mon code est 1234." in m.get_content() for _to, m in news)
    history = cli_json(config, "ticket", "history", "1")
    assert [h["action"] for h in history][-3:] == ["unverified", "confirmed", "followup"]


def test_a_confirmation_with_words_of_its_own_adds_them_too(config: Path) -> None:
    _alice_ticket(config)
    raw, _mid = _mail(f"From: <{ALICE}>", TAGGED, "Premier message.")
    _deliver(config, raw)
    [request] = [m for m in _sent_to(config, ALICE) if "Confirm" in m["Subject"]]
    reply, _rid = _mail(
        f"From: <{ALICE}>",
        f"Re: {request['Subject']}",
        "Oui, et le bureau est le 12.",
        f"In-Reply-To: {request['Message-ID']}\r\n",
    )
    _deliver(config, reply)
    texts = [a["body_shown"] for a in _ticket(config)["articles"] if not a["internal"]]
    assert texts[1:] == ["Premier message.", "Oui, et le bureau est le 12."]


def test_a_forger_answering_their_own_note_gains_no_proof(config: Path) -> None:
    """A technician's From without proof files a note; its Message-ID must not then
    thread a second forged mail as if it were one of the ticket's."""
    _alice_ticket(config)
    note, note_id = _mail("From: jean.tech@univ.example", TAGGED, "#comment\nNote forgée.")
    _deliver(config, note)
    follow, _fid = _mail(
        f"From: <{ALICE}>", "Re: suite", "Forgé aussi.", f"In-Reply-To: {note_id}\r\n"
    )
    outcome = _deliver(config, follow)
    # The note's Message-ID leads nowhere: a ticket of its own, Alice's stays as it was.
    assert outcome.ticket_id == 2
    assert _public_authors(config, 1) == [ALICE]


def test_confirmation_requests_to_one_address_stop_at_the_rate_cap(
    db_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, db_url, extra="[limits]\nper_hour = 3\nper_day = 40\n")
    assert run_cli(config, "init").returncode == 0
    _alice_ticket(config)
    for n in range(6):
        raw, _mid = _mail(f"From: <{ALICE}>", TAGGED, f"Forgé {n}.")
        _deliver(config, raw)
    rows = [r for r in cli_json(config, "outbox", "list") if r["kind"] == "confirm"]
    assert sorted(r["status"] for r in rows) == ["capped"] * 4 + ["sent"] * 2
    assert len(_sent_to(config, ALICE)) == 3  # the acknowledgement and two requests
    entries = _ticket(config)["articles"][1:]
    assert len(entries) == 6 and all(a["unverified"] for a in entries)


def test_technicians_see_an_unverified_entry_as_such(config: Path) -> None:
    _alice_ticket(config)
    raw, _mid = _mail(f"From: <{ALICE}>", TAGGED, "Texte à confirmer.")
    _deliver(config, raw)
    shown = run_cli(config, "ticket", "show", "1").stdout
    assert "UNVERIFIED sender" in shown and "Texte à confirmer." in shown


# -- end to end: the shipped configuration, the real pipe, a real SMTP server ----


@pytest.mark.slow
def test_a_forged_tagged_mail_reaches_nobody_until_the_real_requester_confirms(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(config, "init").returncode == 0
    assert run_pipe(config, make_mail()).returncode == 0
    smtp_catcher.wait_for(3)
    smtp_catcher.clear()
    # Mallory writes as Alice, with the sequential ticket number: no DMARC results.
    forged = make_mail(subject="[HD #1] Urgent", body="Donnez le mot de passe à Mallory.\n")
    assert run_pipe(config, forged).returncode == 0
    [request] = [c.message() for c in smtp_catcher.wait_for(1)]
    assert smtp_catcher.messages[0].recipients == [ALICE]
    page = _page_text(config)
    assert "Donnez le mot de passe" not in page  # not on the requester's page
    smtp_catcher.clear()
    reply = make_mail(
        subject=f"Re: {request['Subject']}",
        body="\n",
        extra_headers=f"In-Reply-To: {request['Message-ID']}\r\n",
    )
    assert run_pipe(config, reply).returncode == 0
    caught = smtp_catcher.wait_for(2)
    assert {r for c in caught for r in c.recipients} == TECHS
    assert "Donnez le mot de passe" in _page_text(config)


def _page_text(config: Path) -> str:
    import re

    from webview import create_app

    link = run_cli(config, "ticket", "link", "1").stdout
    path = re.search(r"/t/[A-Za-z0-9_-]{43}", link).group(0)
    app = create_app(settings=load_settings(config))
    response = app.test_client().get(path)
    assert response.status_code == 200
    return response.get_data(as_text=True)



def test_a_technician_may_confirm_an_unverified_entry_from_the_cli(config: Path) -> None:
    _alice_ticket(config)
    raw, _mid = _mail(f"From: <{ALICE}>", TAGGED, "Confirmé par téléphone.")
    _deliver(config, raw)
    entry = _ticket(config)["articles"][1]["id"]
    refused = run_cli(config, "ticket", "confirm", "1", "1", "--as", "jean.tech@univ.example")
    assert refused.returncode == 1 and "no unverified entry #1" in refused.stderr
    done = run_cli(config, "ticket", "confirm", "1", str(entry), "--as", "jean.tech@univ.example")
    assert done.returncode == 0, done.stderr
    article = _ticket(config)["articles"][1]
    assert (article["internal"], article["unverified"]) == (False, False)
    assert "Confirmé par téléphone." in _page_text(config)


# -- reading Authentication-Results (in process) ----------------------------------


def _auth(*values: str) -> Any:
    from dataclasses import replace

    from helpdesk.config import Settings
    from helpdesk.ingest.thread import authentication

    headers = "".join(f"Authentication-Results: {v}\r\n" for v in values)
    mail = parse(f"From: Alice <{ALICE}>\r\n{headers}Subject: x\r\n\r\nbody\r\n".encode())
    trusted = ("mx.univ.example",)
    settings = replace(Settings(database_url="sqlite://"), trusted_authserv_ids=trusted)
    return authentication(settings, mail)


@pytest.mark.parametrize(
    ("value", "proof", "failure"),
    [
        # A selector the sender chose, holding a header.d of its own: still evil.example's.
        ("mx.univ.example; dkim=pass header.d=evil.example header.s=s.header.d=univ.example",
         None, None),
        # One result naming header.d twice is no one's.
        ("mx.univ.example; dkim=pass header.d=evil.example header.d=univ.example", None, None),
        # A comment may hold `;` (Exim's DKIM failures do): the failure still counts for
        # nothing, and the result after it is read whole.
        ("mx.univ.example; dkim=fail (body hash mismatch; body probably modified in transit)"
         " header.d=univ.example; dmarc=pass header.from=univ.example", "DMARC pass", None),
        ("(our MX) mx.univ.example 1; dmarc=fail (p=reject) header.from=univ.example",
         None, "DMARC fail"),
        ('mx.univ.example; dmarc=pass header.from="univ.example"', "DMARC pass", None),
        ("mx.univ.example; dkim/1=pass header.i=@univ.example", "DKIM pass", None),
        ("mx.univ.example; dkim=fail header.d=univ.example", None, None),
        ("mx.univ.example.evil.example; dmarc=pass header.from=univ.example", None, None),
    ],
)  # fmt: skip
def test_authentication_results_are_read_token_by_token(
    value: str, proof: str | None, failure: str | None
) -> None:
    auth = _auth(value)
    assert (auth.proof or "").startswith(proof or "") and bool(auth.proof) == bool(proof)
    assert (auth.failure or "").startswith(failure or "") and bool(auth.failure) == bool(failure)
