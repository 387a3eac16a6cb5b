"""only_thanks(): a requester's words that only thank do not reopen a resolved ticket.

Real phrasings, French and English, as requesters write them under a resolution
(quotes already trimmed): with greetings, names, closings, signatures and phone
clients' tails. The other half thank *and* say something else: those must reopen.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from helpdesk.ingest.thanks import MAX_CHARS
from helpdesk.ingest.thanks import only_thanks

THANKS = [
    "Merci !",
    "merci",
    "Merci beaucoup, bonne journée",
    "Merci beaucoup !\nBonne journée.",
    "Merci pour votre aide.",
    "Merci Jean !",
    "Merci beaucoup Jean-Pierre, c'est parfait.",
    "Un grand merci pour votre réactivité !",
    "Je vous remercie pour votre aide.\n\nBien cordialement,\nAlice Martin",
    "Bonjour,\n\nMerci, tout fonctionne maintenant.\n\nCordialement,\nA. Martin",
    "Merci ça marche 🙂",
    "Super, merci beaucoup !!",
    "Mille mercis à toute l'équipe !",
    "Merci infiniment, bon week-end",
    "Merci Marie,\n\nCdlt\n\nAlice Martin\nSecrétariat pédagogique\nUFR des Sciences\n"
    "Université de Caen Normandie\nTél. : 02 31 56 70 00\nalice.martin@univ.example",
    "Merci !\n\nEnvoyé de mon iPhone",
    "Merci\n-- \nAlice Martin\nBureau 12, bâtiment B",
    "Thanks!",
    "Thank you very much, have a nice day",
    "Thanks a lot Marie\n\nSent from my iPhone",
    "Thank you, it works now :)",
    "Many thanks for the quick fix!\n\nBest regards,\nSam Brown",
    "Thanks, much appreciated.",
    "Perfect, thank you so much!",
    "Hi Jean,\n\nThank you for your help, problem solved.\n\nKind regards,\nJohn Smith\n"
    "Library IT\nhttps://www.univ.example",
    "Cheers!",
    "thx",
    "Thank you all, have a great weekend!",
    "Thanks again, that did the trick!",
    "Merci, c'est réglé.\nM. Durand",
]

NEWS = [
    "merci mais ça ne marche toujours pas",
    "Merci, mais l'imprimante refait le même bruit.",
    "merci, et pour le second poste ?",
    "Merci ! Est-ce que je peux aussi installer Teams ?",
    "Merci beaucoup. Par contre le wifi du bâtiment B est coupé.",
    "Merci\nLe wifi du bâtiment B",
    "Merci\nMon PC redémarre en boucle",
    "Merci, c'est encore en panne.",
    "Merci d'avance",
    "Merci, je vous envoie le numéro de série demain.",
    "Merci pour la réponse, mais ce n'est pas résolu.",
    "Merci\n\nPS : le toner du 2e étage est vide aussi.",
    "Merci, le problème est revenu ce matin.",
    "Thanks, but the printer still fails",
    "Thanks. Broken again.",
    "Thank you, it is not working.",
    "Thanks! Could you also look at my second screen?",
    "Thanks, the issue is back after the reboot.",
    "Thank you. I still get error 0x80070005.",
    "Thanks for the fix, however Outlook crashes now.",
    "Thanks\n\nAttached is the log you asked for.",
    "Thank you, but I need access to the shared drive as well.",
    "Merci Jean !\nL'imprimante HS au 3e",
    "Ok merci, mais il faut aussi changer le clavier",
    "Merci\nAppelez-moi au 02 31 56 70 00",
    "Merci\nPaul\nLe scanner aussi",
    "Thanks John, the scanner too",
    "Thanks\nI still have it",
    "Merci\n" + "x" * (MAX_CHARS + 1),
    "",
    "Sent from my iPhone",  # no thanks at all: nothing to keep resolved
    "Ok, c'est parfait.",  # no thanks either: reopens as before
]


@pytest.mark.parametrize("text", THANKS)
def test_a_thank_you_is_only_thanks(text: str) -> None:
    assert only_thanks(text), text


@pytest.mark.parametrize("text", NEWS)
def test_thanks_with_anything_else_is_news(text: str) -> None:
    assert not only_thanks(text), text


def test_both_lists_hold_twenty_real_phrasings_at_least() -> None:
    assert len(THANKS) >= 20 and len(NEWS) >= 20


def test_the_decision_is_bounded_and_linear() -> None:
    # A long text is refused at once, whatever it holds; the longest accepted one is
    # decided in well under a millisecond's order of magnitude per call.
    huge = "merci " * 2_000_000
    started = time.perf_counter()
    assert not only_thanks(huge)
    assert time.perf_counter() - started < 0.05
    longest = ("Merci beaucoup Jean, bonne journée !\n" * 40)[:MAX_CHARS]
    started = time.perf_counter()
    for _ in range(100):
        only_thanks(longest)
    assert time.perf_counter() - started < 1.0


# -- end to end: the real pipe and the viewer's form, a real SMTP server ---------------


def _resolved_ticket(config: Any, smtp_catcher: Any) -> Any:
    """A ticket taken and resolved by Jean; return the resolution mail Alice received."""
    from conftest import make_mail
    from test_workflow import _cli
    from test_workflow import _deliver

    _deliver(config, make_mail())
    _cli(config, "ticket", "take", "1", "--as", "jean.tech@univ.example")
    _cli(config, "ticket", "resolve", "1", "--as", "jean.tech@univ.example", "-m", "Toner changé.")
    caught = smtp_catcher.wait_for(6)  # ack, 2 tech_new, taken, the take's news, resolved
    (resolved,) = [c.message() for c in caught if "résolue" in c.message()["Subject"]]
    return resolved


def test_a_mailed_thank_you_keeps_the_ticket_resolved_and_a_but_reopens_it(
    db_url: str, tmp_path: Any, smtp_catcher: Any
) -> None:
    from conftest import cli_json
    from conftest import run_cli
    from conftest import smtp_outgoing
    from conftest import write_config
    from test_workflow import LINK
    from test_workflow import _deliver
    from test_workflow import _new
    from test_workflow import _reply_to
    from test_workflow import _text
    from test_workflow import _web_followup

    config = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(config, "init").returncode == 0
    resolved = _resolved_ticket(config, smtp_catcher)
    thanks = "Merci beaucoup, bonne journée !\n\nCordialement,\nAlice Martin\nSecrétariat"
    _deliver(config, _reply_to(resolved, "alice@univ.example", thanks))
    (told,) = _new(smtp_catcher, 6, 1)  # the technician still reads it
    assert told["To"].addresses[0].addr_spec == "jean.tech@univ.example"
    assert "Merci beaucoup" in _text(told)
    ticket = cli_json(config, "ticket", "show", "1")
    assert ticket["status"] == "resolved" and ticket["resolved_at"]
    assert ticket["articles"][-1]["body_shown"].startswith("Merci beaucoup")
    assert "only thanks: not reopened" in cli_json(config, "mail", "list")[0]["reason"]
    history = cli_json(config, "ticket", "history", "1")[-1]
    assert (history["action"], history["new_status"]) == ("followup", None)

    # Thanks and a "but", on the requester's page this time: it reopens, as before.
    path = LINK.search(_text(resolved)).group(1)
    _web_followup(config, path, "Merci, mais l'imprimante ne marche toujours pas.")
    (reopened,) = _new(smtp_catcher, 7, 1)
    assert "Demande rouverte" in reopened["Subject"]
    assert cli_json(config, "ticket", "show", "1")["status"] == "assigned"


def test_reopen_on_thanks_true_reopens_on_a_thank_you(
    db_url: str, tmp_path: Any, smtp_catcher: Any
) -> None:
    from conftest import cli_json
    from conftest import run_cli
    from conftest import smtp_outgoing
    from conftest import write_config
    from test_workflow import _deliver
    from test_workflow import _new
    from test_workflow import _reply_to

    config = write_config(
        tmp_path,
        db_url,
        outgoing=smtp_outgoing(smtp_catcher.port),
        extra="[tickets]\nreopen_on_thanks = true\n\n",
    )
    assert run_cli(config, "init").returncode == 0
    resolved = _resolved_ticket(config, smtp_catcher)
    _deliver(config, _reply_to(resolved, "alice@univ.example", "Merci !"))
    (reopened,) = _new(smtp_catcher, 6, 1)
    assert "Demande rouverte" in reopened["Subject"]
    assert cli_json(config, "ticket", "show", "1")["status"] == "assigned"


def test_reopen_on_thanks_is_read_from_tickets_and_checked(tmp_path: Any) -> None:
    from helpdesk.config import ConfigError
    from helpdesk.config import load_settings

    config = tmp_path / "helpdesk.toml"
    config.write_text('[database]\nurl = "sqlite:///h.db"\n')
    assert load_settings(config).reopen_on_thanks is False
    config.write_text('[database]\nurl = "sqlite:///h.db"\n[tickets]\nreopen_on_thanks = true\n')
    assert load_settings(config).reopen_on_thanks is True
    for bad in ('"no"', "0", "1"):
        config.write_text(
            f'[database]\nurl = "sqlite:///h.db"\n[tickets]\nreopen_on_thanks = {bad}\n'
        )
        with pytest.raises(
            ConfigError, match=r"\[tickets\] reopen_on_thanks must be true or false"
        ):
            load_settings(config)
