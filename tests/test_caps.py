"""Caps hold automatic mail only; a person's words always go, and their author hears
when they do not; a technician's unproven mail is sent back to them to prove.

Decisions in process (the kinds vocabulary, the caps counted in a real database);
the rest end to end: the real pipe, the CLI, a real SMTP server on loopback, on
SQLite and on PostgreSQL (the db_url fixture).
"""

from __future__ import annotations

import time
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

from helpdesk.config import Limits
from helpdesk.config import load_settings
from helpdesk.notify import kinds
from helpdesk.notify.ratecap import over_cap
from helpdesk.notify.render import BUILTIN_TEMPLATES
from helpdesk.store import Store
from helpdesk.store import utcnow

ALICE = "alice@univ.example"
JEAN = "jean.tech@univ.example"
MARIE = "marie.tech@univ.example"


# -- the vocabulary ---------------------------------------------------------------


def test_every_template_kind_is_automatic_or_words_never_both() -> None:
    for language in ("fr", "en"):
        names = {p.stem for p in (BUILTIN_TEMPLATES / language).glob("*.txt")}
        # A handover that quotes notes is sent as its own kind (answers to it stay notes)
        # from the `assigned` template.
        assert names | {kinds.ASSIGNED_NOTES} == kinds.AUTOMATIC | kinds.WORDS, language
    assert not kinds.AUTOMATIC & kinds.WORDS
    assert kinds.ANSWERS <= kinds.WORDS


def test_a_kind_nobody_declared_counts_as_automatic() -> None:
    assert kinds.automatic("ack") and kinds.automatic("something_new")
    assert not kinds.automatic("followup") and not kinds.automatic("resolved")


# -- the caps, counted in a real database ------------------------------------------


def _rows(store: Store, ticket_id: int, kind: str, count: int, to: str = ALICE) -> None:
    for n in range(count):
        store.execute(
            "INSERT INTO outbox_message (ticket_id, kind, to_addr, envelope_from, subject,"
            " message_id, data, status, tries, next_try_at, created_at) VALUES (:t, :kind,"
            " :to, 'dsi@univ.example', 's', :mid, :data, 'sent', 1, :now, :now)",
            {
                "t": ticket_id,
                "kind": kind,
                "to": to,
                "mid": f"hd.{ticket_id}.{kind}{n}.{time.monotonic_ns()}@univ.example",
                "data": b"x",
                "now": utcnow(),
            },
        )


@pytest.fixture
def store(config: Path) -> Any:
    run_pipe(config, make_mail())  # ticket #1 for the rows to belong to
    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as store:
        with store.transaction():
            store.execute("DELETE FROM outbox_message")
            yield store


def test_the_automatic_cap_counts_and_stops_automatic_mail_only(store: Store) -> None:
    limits = Limits(per_hour=3, per_day=40)
    _rows(store, 1, "followup", 20)
    assert over_cap(store, limits, ALICE, 1, False, "ack") is None  # answers do not count
    _rows(store, 1, "ack", 3)
    why = over_cap(store, limits, ALICE, 1, False, "ack")
    assert why is not None and why.startswith("rate cap: 3 automatic mails")
    assert over_cap(store, limits, ALICE, 1, False, "followup") is None
    assert over_cap(store, limits, ALICE, 1, False, "resolved") is None
    assert over_cap(store, limits, ALICE, 1, False, "something_new") is not None


def test_the_loop_guard_holds_every_kind_per_address_and_ticket(store: Store) -> None:
    limits = Limits(per_hour=10, per_day=40, loop_per_hour=5, loop_per_day=200)
    _rows(store, 1, "followup", 5)
    why = over_cap(store, limits, ALICE, 1, False, "followup")
    assert why is not None and why.startswith("loop guard: 5 mails to")
    assert over_cap(store, limits, "bob@univ.example", 1, False, "followup") is None
    off = Limits(per_hour=10, per_day=40, loop_per_hour=0, loop_per_day=0)
    assert over_cap(store, off, ALICE, 1, False, "followup") is None


def test_the_default_loop_guard_is_far_above_a_busy_conversation(store: Store) -> None:
    _rows(store, 1, "followup", 59)
    assert over_cap(store, Limits(), ALICE, 1, False, "followup") is None
    _rows(store, 1, "followup", 1)
    assert over_cap(store, Limits(), ALICE, 1, False, "followup") is not None


# -- which technician mail is sent back to be proven (in process) -------------------


def _kinds_queued(config: Path, raw: bytes) -> list[str]:
    """Deliver in this process, sending nothing; return the kinds the mail queued."""
    from helpdesk.ingest.deliver import deliver

    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as store:
        outcome = deliver(raw, settings, "dsi", {}, store, send=False)
        with store.transaction():
            rows = store.execute(
                "SELECT kind FROM outbox_message WHERE mail_id = :id ORDER BY id",
                {"id": outcome.mail_id},
            ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    "body,kinds_queued",
    [
        ("Changez le toner.\n", ["tech_comment", "tech_confirm"]),  # an answer held
        ("#resolve\nToner changé.\n", ["tech_comment", "tech_confirm"]),  # a #resolve held
        ("#comment\nVu.\n", ["tech_comment"]),  # a note is what was asked for
        ("#resolve\n", ["tech_comment"]),  # nothing to send: a note saying why
    ],
)
def test_which_unproven_technician_mail_is_sent_back(
    config: Path, body: str, kinds_queued: list[str]
) -> None:
    _kinds_queued(config, make_mail())
    tagged = make_mail(sender=JEAN, subject="[HD #1] x", body=body)
    assert _kinds_queued(config, tagged) == kinds_queued


def test_a_proven_technician_mail_is_not_sent_back(config: Path) -> None:
    _kinds_queued(config, make_mail())
    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as store:
        with store.transaction():
            ours = store.scalar(
                "SELECT message_id FROM outbox_message WHERE kind = 'tech_new' AND to_addr = :to",
                {"to": JEAN},
            )
    reply = make_mail(
        sender=JEAN,
        subject="Re: x",
        body="Changez le toner.\n",
        extra_headers=f"In-Reply-To: <{ours}>\r\n",
    )
    # The answer, and the news of the take (a first answer takes the ticket).
    assert _kinds_queued(config, reply) == ["followup", "tech_taken"]


# -- end to end ------------------------------------------------------------------


def _config(db_url: str, tmp_path: Path, catcher: SmtpCatcher, extra: str = "") -> Path:
    path = write_config(tmp_path, db_url, outgoing=smtp_outgoing(catcher.port), extra=extra)
    assert run_cli(path, "init").returncode == 0
    return path


def _deliver(config: Path, raw: bytes) -> None:
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _to(catcher: SmtpCatcher, address: str, start: int = 0) -> list[EmailMessage]:
    return [c.message() for c in catcher.messages[start:] if address in c.recipients]


def _settled(catcher: SmtpCatcher) -> int:
    time.sleep(0.3)  # the pipe and the CLI send before they return: nothing comes late
    return len(catcher.messages)


def _answer(original: EmailMessage, sender: str, body: str, subject: str = "") -> bytes:
    quoted = "\n".join("> " + line for line in original.get_content().splitlines())
    return make_mail(
        subject=subject or f"Re: {original['Subject']}",
        sender=sender,
        body=f"{body}\n\nLe 28/11/2026, Assistance a écrit :\n{quoted}\n",
        extra_headers=(
            f"In-Reply-To: {original['Message-ID']}\r\nReferences: {original['Message-ID']}\r\n"
        ),
    )


def _outbox(config: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in cli_json(config, "outbox", "list") if r["kind"] == kind]


@pytest.mark.slow
def test_thirty_answers_all_go_while_thirty_acknowledgements_stop_at_the_cap(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    for n in range(30):
        _deliver(config, make_mail(subject=f"Demande {n}"))
    acks = _outbox(config, "ack")
    assert sorted(r["status"] for r in acks) == ["capped"] * 20 + ["sent"] * 10
    assert len(_to(smtp_catcher, ALICE)) == 10
    seen = _settled(smtp_catcher)
    started = time.monotonic()
    for n in range(30):
        result = run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", f"Réponse {n}.")
        assert result.returncode == 0 and result.stderr == "", result.stderr
    assert time.monotonic() - started < 60
    # The 30 answers, and the news of Jean's take (his first answer) to Marie.
    caught = smtp_catcher.wait_for(seen + 31)[seen:]
    answers = [c for c in caught if c.recipients == [ALICE]]
    assert [ALICE] * 30 == [r for c in answers for r in c.recipients]
    assert [c.recipients for c in caught if c not in answers] == [[MARIE]]
    texts = [c.message().get_content() for c in answers]
    assert all(sum(f"Réponse {n}." in t for t in texts) == 1 for n in range(30))
    assert {r["status"] for r in _outbox(config, "followup")} == {"sent"}
    # By mail too, through the pipe: Jean answers the news of each ticket.
    seen = _settled(smtp_catcher)
    news = [c.message() for c in smtp_catcher.messages if JEAN in c.recipients]
    news = [m for m in news if "Nouvelle demande" in m["Subject"]]
    assert len(news) == 30
    started = time.monotonic()
    for n, tech_new in enumerate(news):
        _deliver(config, _answer(tech_new, JEAN, f"Par courriel {n}."))
    assert time.monotonic() - started < 60
    # The 30 answers, and to Marie the news of each take but ticket 1's (Jean had it).
    caught = smtp_catcher.wait_for(seen + 59)[seen:]
    by_mail = [c for c in caught if c.recipients == [ALICE]]
    assert [ALICE] * 30 == [r for c in by_mail for r in c.recipients]
    assert [c.recipients for c in caught if c not in by_mail] == [[MARIE]] * 29
    assert {r["status"] for r in _outbox(config, "followup")} == {"sent"}
    # And still capped for automatic mail: a 31st request gets no acknowledgement.
    _deliver(config, make_mail(subject="Demande 31"))
    assert _outbox(config, "ack")[0]["status"] == "capped"


# -- an answer that does not go is told to its author ------------------------------


NOREPLY = "no-reply@service.example"


def test_a_cli_reply_that_cannot_go_says_so_and_exits_1(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    _deliver(config, make_mail(sender=NOREPLY))
    result = run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Voici.")
    assert result.returncode == 1
    assert result.stdout.startswith("reply #2 added to ticket #1")
    assert f"reply #2 was NOT sent to {NOREPLY} (skipped" in result.stderr
    assert "do not run this again" in result.stderr
    resolved = run_cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fini.")
    assert resolved.returncode == 1 and "resolved" in resolved.stdout
    assert "the resolution (entry #3) was NOT sent" in resolved.stderr
    assert cli_json(config, "ticket", "show", "1")["status"] == "resolved"


def test_a_cli_reply_with_the_smtp_server_down_stays_queued_and_says_so(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    _deliver(config, make_mail())
    smtp_catcher.stop()
    result = run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Voici.")
    assert result.returncode == 0
    assert f"reply #2 is not sent to {ALICE} yet" in result.stderr and "queued" in result.stderr


def test_a_technician_answering_by_mail_hears_when_it_cannot_go(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    _deliver(config, make_mail(sender=NOREPLY))
    [tech_new] = _to(smtp_catcher, JEAN)
    seen = _settled(smtp_catcher)
    _deliver(config, _answer(tech_new, JEAN, "Voici la réponse."))
    [told] = _to(smtp_catcher, JEAN, seen)
    assert "Votre réponse n'a pas été envoyée" in told["Subject"]
    assert NOREPLY in told.get_content() and "no-reply" in told.get_content()
    # Nothing else but the news of Jean's take to Marie, and nothing to no-reply.
    assert _settled(smtp_catcher) == seen + 2
    assert sorted(c.recipients[0] for c in smtp_catcher.messages[seen:]) == [JEAN, MARIE]
    history = cli_json(config, "ticket", "history", "1")
    assert history[-1]["action"] == "not sent" and NOREPLY in history[-1]["detail"]


@pytest.mark.slow
def test_two_autoresponders_in_one_ticket_stop_at_the_loop_guard(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """A requester's and a technician's autoresponders, no markers: each answer is a
    follow-up (a person's words, to the cap), so only the loop guard ends it."""
    config = _config(db_url, tmp_path, smtp_catcher, extra="[limits]\nloop_per_hour = 8\n\n")
    _deliver(config, make_mail())
    robots = {ALICE, JEAN}
    seen = 0
    for _round in range(40):
        caught = smtp_catcher.messages[seen:]
        seen += len(caught)
        answers = [c for c in caught if robots & set(c.recipients)]
        if not answers:
            break
        for c in answers:
            [robot] = robots & set(c.recipients)
            _deliver(config, _answer(c.message(), robot, "Je suis en congés."))
    else:
        pytest.fail("the autoresponders were still writing after 40 rounds")
    assert len(_to(smtp_catcher, ALICE)) == 8  # the ack, then follow-ups to the guard
    assert len(_to(smtp_catcher, JEAN)) <= 8
    guarded = [r for r in cli_json(config, "outbox", "list") if r["status"] == "capped"]
    assert guarded and all(r["last_error"].startswith("loop guard") for r in guarded)


# -- a technician's unproven mail ---------------------------------------------------


def _opened(config: Path, catcher: SmtpCatcher) -> int:
    _deliver(config, make_mail())
    catcher.wait_for(3)
    return _settled(catcher)


def test_an_unproven_technician_mail_is_sent_back_and_its_answer_goes_once(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    # A new mail with the tag: a From alone, no proof that it is Jean's.
    _deliver(
        config, make_mail(sender=JEAN, subject="[HD #1] imprimante", body="Changez le toner.\n")
    )
    new = smtp_catcher.messages[seen:]
    assert [c.recipients for c in new if JEAN in c.recipients] == [[JEAN]]
    assert not _to(smtp_catcher, ALICE, seen)
    [notice] = _to(smtp_catcher, JEAN, seen)
    assert "Non transmis au demandeur" in notice["Subject"]
    text = notice.get_content()
    assert "> Changez le toner." in text and "répondez simplement à ce" in text
    assert "answers none of ours" in text  # why, as the ticket records it
    note = cli_json(config, "ticket", "show", "1")["articles"][-1]
    assert note["internal"] and note["unverified"]
    seen = _settled(smtp_catcher)
    # Jean answers the notice with nothing: the held words go to Alice, once.
    _deliver(config, _answer(notice, JEAN, ""))
    [answer] = _to(smtp_catcher, ALICE, seen)
    assert "Changez le toner." in answer.get_content()
    # Besides it, only the news that Jean took the ticket, to the rest of the group.
    assert _settled(smtp_catcher) == seen + 2
    assert sorted(c.recipients[0] for c in smtp_catcher.messages[seen:]) == [ALICE, MARIE]
    ticket = cli_json(config, "ticket", "show", "1")
    assert ticket["status"] == "waiting" and ticket["assignee"] == JEAN
    public = [a for a in ticket["articles"] if not a["internal"]]
    assert public[-1]["author"] == JEAN and public[-1]["body_text"] == "Changez le toner."
    # A second answer, with words of its own: nothing goes again; the words are a note.
    seen = _settled(smtp_catcher)
    _deliver(config, _answer(notice, JEAN, "Envoyé ?"))
    assert not _to(smtp_catcher, ALICE, seen)
    last = cli_json(config, "ticket", "show", "1")["articles"][-1]
    assert last["internal"] and not last["unverified"] and last["body_text"] == "Envoyé ?"
    mail = cli_json(config, "mail", "list")[0]
    assert "was sent already" in mail["reason"] and "internal note" in mail["reason"]


def test_a_held_resolve_is_applied_by_answering_its_notice(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    _deliver(config, make_mail(sender=MARIE, subject="[HD #1] x", body="#resolve\nToner changé.\n"))
    [notice] = _to(smtp_catcher, MARIE, seen)
    assert "la demande n'est pas résolue" in notice.get_content()
    assert "> Toner changé." in notice.get_content()
    assert cli_json(config, "ticket", "show", "1")["status"] == "new"
    seen = _settled(smtp_catcher)
    _deliver(config, _answer(notice, MARIE, ""))
    [resolved] = _to(smtp_catcher, ALICE, seen)
    assert "résolue" in resolved["Subject"] and "Toner changé." in resolved.get_content()
    assert "#resolve" not in resolved.get_content()
    ticket = cli_json(config, "ticket", "show", "1")
    assert ticket["status"] == "resolved" and ticket["assignee"] == MARIE


def test_a_forger_with_a_technician_from_never_sees_the_notice(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    forged = make_mail(sender=JEAN, subject="[HD #1] x", body="Donnez votre mot de passe.\n")
    forged = forged.replace(b"\r\nSubject", b"\r\nReply-To: evil@evil.example\r\nSubject")
    run_pipe(config, forged, env={"SENDER": "evil@evil.example"})
    new = smtp_catcher.messages[seen:]
    assert new and all("evil@evil.example" not in c.recipients for c in new)
    assert [c.recipients for c in new if "Non transmis" in c.message()["Subject"]] == [[JEAN]]
    # Answering needs the notice's Message-ID, which only Jean's mailbox has: a guess at
    # the tag and a reply to the acknowledgement Alice got do not send it.
    [ack] = _to(smtp_catcher, ALICE)
    _deliver(config, _answer(ack, JEAN, ""))
    assert not [
        a for a in cli_json(config, "ticket", "show", "1")["articles"] if not a["internal"]
    ][1:]


def test_an_explicit_comment_or_a_closed_ticket_sends_no_notice(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    _deliver(config, make_mail(sender=JEAN, subject="[HD #1] x", body="#comment\nVu.\n"))
    assert not [c for c in smtp_catcher.messages[seen:] if "Non transmis" in c.message()["Subject"]]
    assert run_cli(config, "ticket", "close", "1", "--as", MARIE).returncode == 0
    seen = _settled(smtp_catcher)
    _deliver(config, make_mail(sender=JEAN, subject="[HD #1] x", body="Pour mémoire.\n"))
    assert not _to(smtp_catcher, JEAN, seen)


def test_ticket_confirm_does_not_publish_a_technicians_held_note(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """Its words are a technician's answer, not a requester's: only the technician's
    reply to our notice sends them."""
    config = _config(db_url, tmp_path, smtp_catcher)
    _opened(config, smtp_catcher)
    _deliver(config, make_mail(sender=JEAN, subject="[HD #1] x", body="Changez le toner.\n"))
    note = cli_json(config, "ticket", "show", "1")["articles"][-1]
    refused = run_cli(config, "ticket", "confirm", "1", str(note["id"]), "--as", MARIE)
    assert refused.returncode == 1 and "held for want of proof" in refused.stderr
    assert cli_json(config, "ticket", "show", "1")["articles"][-1]["internal"] is True


def test_an_answer_by_mail_the_smtp_server_refuses_is_told_to_its_author(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    [tech_new] = _to(smtp_catcher, JEAN)
    smtp_catcher.refuse_for[ALICE] = 550
    _deliver(config, _answer(tech_new, JEAN, "Voici la réponse."))
    [told] = _to(smtp_catcher, JEAN, seen)
    assert "Votre réponse n'a pas été envoyée" in told["Subject"]
    assert ALICE in told.get_content() and "550" in told.get_content()
    assert [r["status"] for r in _outbox(config, "followup")] == ["failed"]


def test_the_scheduler_tells_the_author_when_retries_run_out(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """A refusal the pipe could not try (the server down then) comes to the scheduler."""
    from helpdesk.scheduler import JOBS

    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    [tech_new] = _to(smtp_catcher, JEAN)
    smtp_catcher.stop()
    _deliver(config, _answer(tech_new, JEAN, "Voici la réponse."))
    assert [r["status"] for r in _outbox(config, "followup")] == ["queued"]
    smtp_catcher.start()
    smtp_catcher.refuse_for[ALICE] = 550
    db_execute(config, "UPDATE outbox_message SET next_try_at = created_at")
    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as store:
        done = JOBS["outbox"][0](store, settings)
    assert done.endswith("1 technician(s) told an answer did not go"), done
    [told] = _to(smtp_catcher, JEAN, seen)
    assert "Votre réponse n'a pas été envoyée" in told["Subject"]
    with Store(settings.database_url, settings.busy_timeout) as store:
        assert JOBS["outbox"][0](store, settings) == "0 sent, 0 deferred, 0 failed"
    assert len(_to(smtp_catcher, JEAN, seen)) == 1  # told once


# -- the requester's form ------------------------------------------------------------


def _web_followup(config: Path, path: str, text: str) -> str:
    """Post on the requester's page through the viewer's form; return the page it leads to."""
    import re

    from webview import create_app

    client = create_app(settings=load_settings(config)).test_client()
    page = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    response = client.post(path, data={"csrf_token": token.group(1), "description": text})
    assert response.status_code == 303
    shown = client.get(path).get_data(as_text=True)
    again = client.get(path).get_data(as_text=True)
    assert "aucun technicien" not in again  # said once
    return shown


@pytest.mark.parametrize("queue,told", [("immobilier", False), ("dsi", True)])
def test_the_form_says_when_no_technician_could_be_told(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher, queue: str, told: bool
) -> None:
    import re

    config = _config(db_url, tmp_path, smtp_catcher)
    result = run_pipe(config, make_mail(), queue=queue)  # immobilier: a group of nobody
    assert result.returncode == 0
    [ack] = _to(smtp_catcher, ALICE)
    link = re.search(r"https://helpdesk\.univ\.example(/t/[A-Za-z0-9_-]{43})", ack.get_content())
    assert link is not None
    page = _web_followup(config, link.group(1), "Toujours en panne.")
    assert ("aucun technicien" in page) is not told


def test_a_colleague_answering_a_forwarded_notice_does_not_send_it(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """The proof is that the notice reached that technician's mailbox: Marie holding
    Jean's notice (forwarded) proves nothing about Jean's mail."""
    config = _config(db_url, tmp_path, smtp_catcher)
    seen = _opened(config, smtp_catcher)
    _deliver(config, make_mail(sender=JEAN, subject="[HD #1] x", body="Changez le toner.\n"))
    [notice] = _to(smtp_catcher, JEAN, seen)
    her_news = _to(smtp_catcher, MARIE)[0]  # the news of the ticket
    seen = _settled(smtp_catcher)
    # Her reply names a mail of ours to her too: she speaks as a technician, in her name.
    reply = _answer(notice, MARIE, "Vu.").replace(
        b"\r\nReferences: ", f"\r\nReferences: {her_news['Message-ID']} ".encode()
    )
    _deliver(config, reply)
    [to_alice] = _to(smtp_catcher, ALICE, seen)
    assert "Vu." in to_alice.get_content() and "Changez le toner" not in to_alice.get_content()
    note = [a for a in cli_json(config, "ticket", "show", "1")["articles"] if a["internal"]]
    assert note[0]["author"] == JEAN and note[0]["unverified"]  # still held for Jean


def test_notices_to_a_technician_whose_from_is_forged_stop_at_the_cap(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher
) -> None:
    """A forger flooding one ticket in Jean's name makes Jean hear of it a few times."""
    config = _config(db_url, tmp_path, smtp_catcher, extra="[limits]\nper_hour = 3\n\n")
    seen = _opened(config, smtp_catcher)
    for n in range(5):
        _deliver(config, make_mail(sender=JEAN, subject="[HD #1] x", body=f"Faux {n}.\n"))
    notices = [c for c in smtp_catcher.messages[seen:] if "Non transmis" in c.message()["Subject"]]
    assert len(notices) == 3
    reasons = [m["reason"] for m in cli_json(config, "mail", "list")[:2]]
    assert all("tech_confirm), not sent: rate cap" in r for r in reasons), reasons
