"""Handover between technicians, decided in process: who is told of a note, a take, a
colleague's answer, and what "Demande attribuée" carries (the whole thread, notes marked
internal, the history), bounded.

The queued outbox rows are read back as the mails they are; the end-to-end side (real
pipe, CLI, SMTP server) is in tests/test_workflow.py. Each test runs on SQLite and on
PostgreSQL (the db_url fixture).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email import policy
from pathlib import Path
from typing import Any

ALICE = "alice@univ.example"
JEAN = "jean.tech@univ.example"
MARIE = "marie.tech@univ.example"


@contextmanager
def _workflow(config: Path) -> Iterator[tuple[Any, Any, Any]]:
    """One transaction of the workflow, as a door runs it (the mail stays queued)."""
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as db:
        with db.transaction():
            yield db, settings, settings.queues["dsi"]


def _people(db: Any) -> tuple[int, int, int]:
    from helpdesk import workflow

    return (
        workflow.ensure_person(db, ALICE, "Alice Martin"),
        workflow.ensure_person(db, JEAN, "Jean Technicien"),
        workflow.ensure_person(db, MARIE, "Marie Dupont"),
    )


def _open(config: Path, body: str = "L'imprimante du bureau 12 ne marche plus.") -> int:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        alice, _jean, _marie = _people(db)
        ticket_id, _article = workflow.open_ticket(
            db, settings, queue, alice, subject="Imprimante en panne", body_text=body
        )
    return ticket_id


def _take(config: Path, ticket_id: int, who: str, by: str | None = None) -> None:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        technician = workflow.ensure_person(db, who)
        actor_id = workflow.ensure_person(db, by) if by else None
        actor = workflow.Actor(actor_id, by or "cli:root", "cli")
        workflow.take(db, settings, queue, ticket_id, technician, actor)


def _note(config: Path, ticket_id: int, who: str, text: str) -> None:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        author = workflow.ensure_person(db, who)
        workflow.comment(db, settings, queue, ticket_id, author, body_text=text)


def _answer(config: Path, ticket_id: int, who: str, text: str) -> None:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        author = workflow.ensure_person(db, who)
        workflow.add_followup(
            db,
            settings,
            queue,
            ticket_id,
            author,
            by_technician=True,
            subject="",
            body_text=text,
            source="cli",
        )


def _mails(config: Path, after: int = 0) -> list[dict[str, Any]]:
    """The outbox rows queued after id `after`, oldest first, with their text."""
    from conftest import db_execute

    rows = db_execute(
        config,
        "SELECT id, kind, to_addr, data FROM outbox_message WHERE id > :after ORDER BY id",
        after=after,
    )
    mails = []
    for outbox_id, kind, to_addr, data in rows:
        message = message_from_bytes(bytes(data), policy=policy.default)
        mails.append(
            {
                "id": outbox_id,
                "kind": kind,
                "to": to_addr,
                "subject": str(message["Subject"]),
                "text": message.get_content(),
            }
        )
    return mails


def _last_id(config: Path) -> int:
    from conftest import db_execute

    return int(db_execute(config, "SELECT COALESCE(MAX(id), 0) FROM outbox_message")[0][0])


def test_a_note_on_an_assigned_ticket_reaches_the_rest_of_the_group(config: Path) -> None:
    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    seen = _last_id(config)
    _note(config, ticket_id, JEAN, "Je pars en congés demain, Marie reprend.")
    (note,) = _mails(config, seen)
    assert (note["kind"], note["to"]) == ("tech_comment", MARIE)
    assert "Marie reprend" in note["text"] and "Note interne" in note["subject"]


def test_a_colleagues_note_reaches_the_technician_and_the_group_never_its_author(
    config: Path,
) -> None:
    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    seen = _last_id(config)
    _note(config, ticket_id, MARIE, "J'ai déjà changé le toner lundi.")
    assert [(m["kind"], m["to"]) for m in _mails(config, seen)] == [("tech_comment", JEAN)]


def test_a_take_is_announced_to_the_rest_of_the_group(config: Path) -> None:
    ticket_id = _open(config)
    seen = _last_id(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    mails = _mails(config, seen)
    assert [(m["kind"], m["to"]) for m in mails] == [("taken", ALICE), ("tech_taken", MARIE)]
    news = mails[1]
    assert "Jean Technicien a pris la demande" in news["subject"]
    assert "Jean Technicien <jean.tech@univ.example> a pris en charge" in news["text"]


def test_a_reassignment_tells_the_new_technician_and_the_former_one(config: Path) -> None:
    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    seen = _last_id(config)
    _take(config, ticket_id, MARIE)  # a sysadmin at the CLI, without --as
    told = [(m["kind"], m["to"]) for m in _mails(config, seen)]
    assert told == [("taken", ALICE), ("assigned", MARIE), ("tech_taken", JEAN)]
    news = _mails(config, seen)[2]
    assert "helpdesk-pipe a attribué à Marie Dupont" in news["text"]


def test_a_colleagues_answer_and_resolution_tell_the_technician(config: Path) -> None:
    from helpdesk import workflow

    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    seen = _last_id(config)
    _answer(config, ticket_id, MARIE, "Pouvez-vous redémarrer l'imprimante ?")
    mails = _mails(config, seen)
    assert [(m["kind"], m["to"]) for m in mails] == [("followup", ALICE), ("tech_colleague", JEAN)]
    assert "Réponse de Marie Dupont" in mails[1]["subject"]
    assert "redémarrer l'imprimante" in mails[1]["text"]
    seen = _last_id(config)
    with _workflow(config) as (db, settings, queue):
        marie = workflow.ensure_person(db, MARIE)
        workflow.resolve(db, settings, queue, ticket_id, marie, body_text="Toner remplacé.")
    mails = _mails(config, seen)
    assert [(m["kind"], m["to"]) for m in mails] == [("resolved", ALICE), ("tech_colleague", JEAN)]
    assert "Résolue par Marie Dupont" in mails[1]["subject"]


def test_a_first_answer_takes_the_ticket_and_tells_the_rest_of_the_group(config: Path) -> None:
    from helpdesk import workflow

    ticket_id = _open(config)
    seen = _last_id(config)
    _answer(config, ticket_id, JEAN, "Je regarde ça.")
    told = [(m["kind"], m["to"]) for m in _mails(config, seen)]
    assert told == [("followup", ALICE), ("tech_taken", MARIE)]
    other = _open(config)
    seen = _last_id(config)
    with _workflow(config) as (db, settings, queue):
        marie = workflow.ensure_person(db, MARIE)
        workflow.resolve(db, settings, queue, other, marie, body_text="Toner remplacé.")
    told = [(m["kind"], m["to"]) for m in _mails(config, seen)]
    assert told == [("resolved", ALICE), ("tech_taken", JEAN)]


def test_the_technicians_own_answer_tells_no_colleague(config: Path) -> None:
    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    seen = _last_id(config)
    _answer(config, ticket_id, JEAN, "Je passe à 14 h.")
    assert [(m["kind"], m["to"]) for m in _mails(config, seen)] == [("followup", ALICE)]


def test_assigned_carries_the_whole_thread_with_the_notes_marked_and_the_history(
    config: Path,
) -> None:
    ticket_id = _open(config)
    _take(config, ticket_id, JEAN, by=JEAN)
    _answer(config, ticket_id, JEAN, "Quel est le modèle exact ?")
    _note(config, ticket_id, JEAN, "SECRET-NOTE : le fournisseur facture le toner trop cher.")
    seen = _last_id(config)
    _take(config, ticket_id, MARIE, by=JEAN)
    (handover,) = [m for m in _mails(config, seen) if m["to"] == MARIE]
    assert handover["kind"] == "assigned_notes"  # its answers stay internal notes
    text = handover["text"]
    assert "Jean Technicien vous a attribué la demande" in text
    request = text.index("ne marche plus")
    question = text.index("Quel est le modèle exact ?")
    note = text.index("SECRET-NOTE")
    assert request < question < note  # oldest first
    note_header = text[:note].rsplit("--- ", 1)[1]
    assert "[NOTE INTERNE]" in note_header and JEAN in note_header
    assert "(demandeur)" in text[:request].rsplit("--- ", 1)[1]
    assert "Historique :" in text
    history = text[text.index("Historique :") :]
    for action in ("open", "take", "reply", "comment", "assign"):
        assert f": {action}" in history, (action, history)
    assert "une réponse à ce message reste une note interne" in text


def test_assigned_without_notes_still_answers_the_requester(config: Path) -> None:
    ticket_id = _open(config)
    seen = _last_id(config)
    _take(config, ticket_id, MARIE, by=JEAN)
    (handover,) = [m for m in _mails(config, seen) if m["to"] == MARIE]
    assert handover["kind"] == "assigned"
    assert "Répondez à ce message pour répondre au demandeur" in handover["text"]


def test_a_long_thread_is_cut_with_a_notice_and_keeps_the_request(config: Path) -> None:
    from helpdesk.notify.notices import ENTRY_LIMIT
    from helpdesk.notify.notices import TEXT_LIMIT

    ticket_id = _open(config, body="FIRST-REQUEST " + "x" * 10 + "\n" + "log line\n" * 100_000)
    for n in range(40):
        _note(config, ticket_id, JEAN, f"ENTRY-{n:02d}\n" + "détail\n" * 500)
    seen = _last_id(config)
    _take(config, ticket_id, MARIE, by=JEAN)
    (handover,) = [m for m in _mails(config, seen) if m["to"] == MARIE]
    text = handover["text"]
    assert len(text) < TEXT_LIMIT + 2 * ENTRY_LIMIT + 5_000
    assert "FIRST-REQUEST" in text and "ENTRY-39" in text  # the request and the newest
    assert "ENTRY-00" not in text
    # The run left out sits between the request and the latest entries, and says so.
    assert text.index("FIRST-REQUEST") < text.index("entrée(s) non reprise(s) ici")
    assert text.index("entrée(s) non reprise(s) ici") < text.index("ENTRY-")
    assert "[...]" in text  # the 1 MB request itself is cut


def test_the_assigned_mail_is_in_the_queues_language(db_url: str, tmp_path: Path) -> None:
    from conftest import run_cli
    from conftest import write_config

    from helpdesk import workflow

    config = write_config(tmp_path, db_url)
    assert run_cli(config, "init").returncode == 0
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    settings = load_settings(config)
    queue = settings.queues["scd"]
    with Store(settings.database_url, settings.busy_timeout) as db:
        with db.transaction():
            alice = workflow.ensure_person(db, ALICE)
            sam = workflow.ensure_person(db, "sam.lib@univ.example")
            other = workflow.ensure_person(db, "other.lib@univ.example")
            ticket_id, _a = workflow.open_ticket(
                db, settings, queue, alice, subject="Catalogue", body_text="It is down."
            )
            workflow.comment(db, settings, queue, ticket_id, sam, body_text="Server reboot.")
            seen = int(db.scalar("SELECT MAX(id) FROM outbox_message"))
            workflow.take(db, settings, queue, ticket_id, other, workflow.Actor(sam, "sam", "cli"))
    mails = _mails(config, seen)
    (handover,) = [m for m in mails if m["kind"] == "assigned_notes"]
    assert "Request assigned to you" in handover["subject"]
    assert "[INTERNAL NOTE]" in handover["text"] and "History:" in handover["text"]


# -- end to end: the real pipe, the CLI, a real SMTP server on loopback ---------------


def test_handover_end_to_end_by_cli_and_by_mail(
    db_url: str, tmp_path: Path, smtp_catcher: Any
) -> None:
    from conftest import cli_json
    from conftest import make_mail
    from conftest import run_cli
    from conftest import smtp_outgoing
    from conftest import write_config
    from test_workflow import _cli
    from test_workflow import _deliver
    from test_workflow import _new
    from test_workflow import _real_cli
    from test_workflow import _reply_to
    from test_workflow import _text
    from test_workflow import _to

    config = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(config, "init").returncode == 0
    _deliver(config, make_mail())  # the real pipe: ack, and both technicians
    caught = [c.message() for c in smtp_catcher.wait_for(3)]
    (tech_new,) = _to(caught, JEAN)

    # A take announces itself to the rest of the group (a real CLI process).
    _real_cli(config, "ticket", "take", "1", "--as", JEAN)
    news = _new(smtp_catcher, 3, 2)
    assert len(_to(news, ALICE)) == 1
    (announced,) = _to(news, MARIE)
    assert "Jean Technicien a pris la demande" in announced["Subject"]

    # A note on his own assigned ticket, by mail: the group hears of it.
    _deliver(config, _reply_to(tech_new, JEAN, "#comment\nJe pars en congés, Marie reprend."))
    (note,) = _new(smtp_catcher, 5, 1)
    assert note["To"].addresses[0].addr_spec == MARIE
    assert "Marie reprend" in _text(note)

    # Jean hands it over: "Demande attribuée" holds the thread and the note, marked.
    _cli(config, "ticket", "assign", "1", MARIE, "--as", JEAN)
    news = _new(smtp_catcher, 6, 2)
    (handover,) = _to(news, MARIE)
    text = _text(handover)
    assert "Demande attribuée" in handover["Subject"]
    assert "ne marche plus" in text and "Marie reprend" in text
    assert "[NOTE INTERNE]" in text.split("Marie reprend")[0].rsplit("--- ", 1)[1]
    assert "Historique :" in text and ": assign, to marie.tech@univ.example" in text
    for message in _to(news, ALICE):
        assert "Marie reprend" not in _text(message)

    # Marie answers the handover mail: it quotes the note, so it stays a note (to Jean).
    _deliver(config, _reply_to(handover, MARIE, "Bien reçu, je m'en occupe."))
    (back,) = _new(smtp_catcher, 8, 1)
    assert back["To"].addresses[0].addr_spec == JEAN and "Note interne" in back["Subject"]

    # Jean, back early, answers the requester on Marie's ticket: Marie is told.
    _cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Je repasse demain matin.")
    news = _new(smtp_catcher, 9, 2)
    assert "Je repasse demain matin." in _text(_to(news, ALICE)[0])
    (colleague,) = _to(news, MARIE)
    assert "Réponse de Jean Technicien" in colleague["Subject"]

    # The requester never received a word of the notes.
    for caught_mail in smtp_catcher.messages:
        if ALICE in caught_mail.recipients:
            assert b"Marie reprend" not in caught_mail.data
            assert b"m'en occupe" not in caught_mail.data
    internal = [a for a in cli_json(config, "ticket", "show", "1")["articles"] if a["internal"]]
    assert len(internal) == 2
