"""trim_quoted(): the quoted earlier message is trimmed from the text a follow-up shows.

The replies below are written the way each client lays them out in plain text (Gmail,
Thunderbird, Apple Mail, Outlook desktop in fr/en/de); the corpus part runs genuine
replies from other helpdesks' fixtures through parse() and trim_quoted().
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from conftest import need_corpus

from helpdesk.ingest.htmltext import html_to_text
from helpdesk.ingest.parse import parse
from helpdesk.ingest.quotes import REPLY_MARKER_EN
from helpdesk.ingest.quotes import REPLY_MARKER_FR
from helpdesk.ingest.quotes import trim_quoted

NOTIFICATION_FR = (
    f"{REPLY_MARKER_FR}\n"
    "\n"
    "Bonjour Alice,\n"
    "\n"
    "Votre demande #1234 « Imprimante en panne » a été mise à jour :\n"
    "le technicien passera lundi matin.\n"
    "\n"
    "-- \n"
    "DSI - Université\n"
)
NOTIFICATION_EN = (
    f"{REPLY_MARKER_EN}\n"
    "\n"
    "Hello Alice,\n"
    "\n"
    'Your request #1234 "Printer out of order" was updated:\n'
    "a technician will come on Monday morning.\n"
)


def quoted(text: str) -> str:
    """Quote every line the way mail clients do ("> ", and ">" alone on empty lines)."""
    return "".join(("> " + line).rstrip(" ") + "\n" for line in text.split("\n")[:-1])


# --- Our marker ---------------------------------------------------------------------


def test_gmail_fr_marker_attribution_wrapped_over_two_lines() -> None:
    mail = (
        "Bonjour,\n"
        "\n"
        "C'est réparé, merci !\n"
        "\n"
        "Alice\n"
        "\n"
        "Le sam. 28 nov. 2026 à 09:00, Helpdesk DSI <dsi.support@univ.example> a\n"
        "écrit :\n"
        "\n" + quoted(NOTIFICATION_FR)
    )
    assert trim_quoted(mail) == "Bonjour,\n\nC'est réparé, merci !\n\nAlice"


def test_gmail_en_marker_attribution_wrapped_before_wrote() -> None:
    mail = (
        "Thanks, Monday is fine.\n"
        "\n"
        "On Sat, Nov 28, 2026 at 9:00 AM Helpdesk DSI <dsi.support@univ.example>\n"
        "wrote:\n"
        "\n" + quoted(NOTIFICATION_EN)
    )
    assert trim_quoted(mail) == "Thanks, Monday is fine."


def test_thunderbird_fr_marker() -> None:
    mail = (
        "Bonjour,\n"
        "lundi me convient.\n"
        "\n"
        "Le 28/11/2026 à 09:00, Helpdesk DSI a écrit :\n" + quoted(NOTIFICATION_FR)
    )
    assert trim_quoted(mail) == "Bonjour,\nlundi me convient."


def test_apple_mail_marker_attribution_inside_the_quote() -> None:
    mail = (
        "Parfait, merci.\n"
        "\n"
        "Envoyé de mon iPhone\n"
        "\n"
        "> Le 28 nov. 2026 à 09:00, Helpdesk DSI <dsi.support@univ.example> a écrit :\n"
        ">\n" + quoted(NOTIFICATION_FR)
    )
    assert trim_quoted(mail) == "Parfait, merci.\n\nEnvoyé de mon iPhone"


def test_thunderbird_de_marker() -> None:
    mail = "Hallo,\nMontag passt.\n\nAm 28.11.2026 um 09:00 schrieb Helpdesk DSI:\n" + quoted(
        NOTIFICATION_EN
    )
    assert trim_quoted(mail) == "Hallo,\nMontag passt."


def test_marker_unquoted_under_outlook_header_block() -> None:
    mail = (
        "Merci, je serai là.\n"
        "\n"
        "________________________________\n"
        "De\u00a0: Helpdesk DSI <dsi.support@univ.example>\n"
        "Envoyé\u00a0: samedi 28 novembre 2026 09:00\n"
        "À\u00a0: Alice Martin <alice@univ.example>\n"
        "Objet\u00a0: [#1234] Imprimante en panne\n"
        "\n" + NOTIFICATION_FR
    )
    assert trim_quoted(mail) == "Merci, je serai là."


def test_marker_unquoted_without_attribution() -> None:
    mail = "OK pour lundi.\n\n" + NOTIFICATION_FR
    assert trim_quoted(mail) == "OK pour lundi."


def test_marker_quoted_without_attribution() -> None:
    mail = "Thanks!\n\n" + quoted(NOTIFICATION_EN)
    assert trim_quoted(mail) == "Thanks!"


def test_marker_rewrapped_and_in_other_case() -> None:
    notification = NOTIFICATION_EN.replace(
        REPLY_MARKER_EN + "\n", "##- PLEASE reply above this\nline -##\n"
    )
    mail = (
        "Thanks!\n"
        "\n"
        "On Sat, Nov 28, 2026 at 9:00 AM Helpdesk DSI <dsi.support@univ.example> wrote:\n"
        + quoted(notification)
    )
    assert trim_quoted(mail) == "Thanks!"


def test_marker_rewrapped_inside_au_dessus_with_crlf() -> None:
    notification = NOTIFICATION_FR.replace(
        REPLY_MARKER_FR + "\n", "##- Répondez au-\ndessus de cette ligne -##\n"
    )
    mail = (
        "Merci\n\nLe 28/11/2026 à 09:00, Helpdesk DSI a écrit :\n" + quoted(notification)
    ).replace("\n", "\r\n")
    assert trim_quoted(mail) == "Merci"


def test_marker_under_earlier_replies_trims_the_whole_thread() -> None:
    # Alice answers her own earlier reply, which quoted our notification.
    earlier = (
        "Le technicien n'est pas venu.\n"
        "\n"
        "Le sam. 28 nov. 2026 à 09:00, Helpdesk DSI <dsi.support@univ.example> a écrit :\n"
        + quoted(NOTIFICATION_FR)
    )
    mail = (
        "Toujours personne !\n"
        "\n"
        "Le lun. 30 nov. 2026 à 14:00, Alice Martin <alice@univ.example> a écrit :\n"
        + quoted(earlier)
    )
    assert trim_quoted(mail) == "Toujours personne !"


def test_marker_inside_a_sentence_is_not_ours() -> None:
    mail = f"Que veut dire « {REPLY_MARKER_FR} » ?\nMerci\n"
    assert trim_quoted(mail) == mail


# --- Attribution and '>' quotes ---------------------------------------------------------


def test_gmail_fr_reply_without_marker() -> None:
    mail = (
        "Bonjour Bob,\n"
        "\n"
        "Oui, le bureau 12.\n"
        "\n"
        "Le sam. 28 nov. 2026 à 09:00, Bob Technicien <bob.tech@univ.example> a\n"
        "écrit :\n"
        "\n"
        "> Bonjour Alice,\n"
        ">\n"
        "> Dans quel bureau se trouve l'imprimante ?\n"
        ">\n"
        "> Bob\n"
        ">\n"
    )
    assert trim_quoted(mail) == "Bonjour Bob,\n\nOui, le bureau 12."


def test_gmail_en_reply_without_marker() -> None:
    mail = (
        "Room 12.\n"
        "\n"
        "On Sat, Nov 28, 2026 at 9:00 AM Bob Tech <bob.tech@univ.example>\n"
        "wrote:\n"
        "\n"
        "> Hi Alice,\n"
        ">\n"
        "> Which room is the printer in?\n"
        ">\n"
    )
    assert trim_quoted(mail) == "Room 12."


def test_thunderbird_fr_reply_without_marker() -> None:
    mail = "Bureau 12.\n\nLe 28/11/2026 à 09:00, Bob Technicien a écrit :\n> Dans quel bureau ?\n"
    assert trim_quoted(mail) == "Bureau 12."


def test_apple_mail_fr_attribution_unquoted() -> None:
    mail = (
        "Bureau 12.\n"
        "\n"
        "Le 28 nov. 2026 à 09:00, Bob Technicien <bob.tech@univ.example> a écrit :\n"
        "\n"
        "> Dans quel bureau ?\n"
    )
    assert trim_quoted(mail) == "Bureau 12."


def test_writer_line_above_the_attribution_is_kept() -> None:
    # Lines that start like an attribution ("On", "Le" and a date) but stand on their own.
    mail = "Hi\n\nLe 3 décembre je serai absent.\nAlice a écrit :\n> Quand passez-vous ?\n"
    assert trim_quoted(mail) == "Hi\n\nLe 3 décembre je serai absent."
    mail = "Hi\n\nLe 3 décembre, 10h\nLe 28 nov. 2026 à 09:00, Bob a écrit :\n> Quand ?\n"
    assert trim_quoted(mail) == "Hi\n\nLe 3 décembre, 10h"


def test_top_posting_keeps_the_signature() -> None:
    mail = (
        "Merci, c'est réglé.\n"
        "-- \n"
        "Jean\n"
        "\n"
        "Le 28/11/2026 à 09:00, Bob Technicien a écrit :\n"
        "> Pouvez-vous redémarrer le poste ?\n"
        "\n"
        "\n"
    )
    assert trim_quoted(mail) == "Merci, c'est réglé.\n-- \nJean"


def test_interleaved_reply_is_kept_whole() -> None:
    mail = (
        "Le 28/11/2026 à 09:00, Bob Technicien a écrit :\n"
        "> Quel est le modèle de l'imprimante ?\n"
        "\n"
        "Une HP LaserJet.\n"
        "\n"
        "> Et dans quel bureau ?\n"
        "\n"
        "Le bureau 12.\n"
        "\n"
        "Alice\n"
    )
    assert trim_quoted(mail) == mail


def test_interleaved_reply_with_unanswered_tail_is_kept_whole() -> None:
    mail = (
        "On Sat, Nov 28, 2026 at 9:00 AM Bob Tech <bob.tech@univ.example> wrote:\n"
        "> Which model?\n"
        "\n"
        "An HP LaserJet.\n"
        "\n"
        "> Thanks,\n"
        "> Bob\n"
    )
    assert trim_quoted(mail) == mail


def test_inline_answer_then_full_quote_trims_the_full_quote() -> None:
    mail = (
        "> Which room?\n"
        "Room 12.\n"
        "\n"
        "On Sat, Nov 28, 2026 at 9:00 AM Bob Tech <bob.tech@univ.example> wrote:\n"
        "> Which room?\n"
        "> Bob\n"
    )
    assert trim_quoted(mail) == "> Which room?\nRoom 12."


def test_bare_trailing_quote_block_is_trimmed() -> None:
    mail = "Room 12.\n\n> Which room?\n> Bob\n"
    assert trim_quoted(mail) == "Room 12."


def test_bottom_posting_is_kept_whole() -> None:
    mail = "Bob a écrit :\n> Quel bureau ?\n\nLe bureau 12.\n"
    assert trim_quoted(mail) == mail


def test_only_a_quote_is_unchanged() -> None:
    mail = "Le 28/11/2026 à 09:00, Bob Technicien a écrit :\n> Dans quel bureau ?\n>\n"
    assert trim_quoted(mail) == mail
    assert trim_quoted(quoted(NOTIFICATION_FR)) == quoted(NOTIFICATION_FR)
    assert trim_quoted(NOTIFICATION_EN) == NOTIFICATION_EN


def test_wrote_in_a_sentence_is_unchanged() -> None:
    mail = (
        "Hello,\n"
        "my colleague wrote: the printer works again.\n"
        "As the vendor wrote:\n"
        "the toner is out of stock.\n"
    )
    assert trim_quoted(mail) == mail


def test_de_in_a_sentence_is_unchanged() -> None:
    mail = (
        "Bonjour,\n"
        "le prix du toner passe de : 40 € à 45 €.\n"
        "De : mon point de vue, c'est trop cher.\n"
        "Envoyez-moi un devis.\n"
    )
    assert trim_quoted(mail) == mail


def test_nothing_recognised_is_returned_as_is() -> None:
    for mail in ("", "\n\n", "Bonjour\n\n\n", "Bonjour\r\nMerci\r\n"):
        assert trim_quoted(mail) == mail


def test_crlf_reply() -> None:
    mail = (
        "Room 12.\r\n"
        "\r\n"
        "On Sat, Nov 28, 2026 at 9:00 AM Bob Tech <bob.tech@univ.example> wrote:\r\n"
        "> Which room?\r\n"
    )
    assert trim_quoted(mail) == "Room 12."


# --- Outlook -----------------------------------------------------------------------------

OUTLOOK_FR = (
    "De\u00a0: Bob Technicien <bob.tech@univ.example>\n"
    "Envoyé\u00a0: samedi 28 novembre 2026 09:00\n"
    "À\u00a0: Alice Martin <alice@univ.example>\n"
    "Cc\u00a0: DSI <dsi.support@univ.example>\n"
    "Objet\u00a0: RE: [#1234] Imprimante en panne\n"
    "\n"
    "Bonjour Alice,\n"
    "Dans quel bureau ?\n"
)
OUTLOOK_EN = (
    "From: Bob Tech <bob.tech@univ.example>\n"
    "Sent: Saturday, November 28, 2026 9:00 AM\n"
    "To: Alice Martin <alice@univ.example>\n"
    "Subject: RE: [#1234] Printer out of order\n"
    "\n"
    "Hi Alice,\n"
    "Which room?\n"
)
OUTLOOK_DE = (
    "Von: Bob Techniker <bob.tech@univ.example>\n"
    "Gesendet: Samstag, 28. November 2026 09:00\n"
    "An: Alice Martin <alice@univ.example>\n"
    "Betreff: AW: [#1234] Drucker defekt\n"
    "\n"
    "Hallo Alice,\n"
    "in welchem Raum?\n"
)
WRITER = "Bureau 12.\n\nCordialement,\nAlice Martin\nDSI - bâtiment B\n"


@pytest.mark.parametrize("header", [OUTLOOK_FR, OUTLOOK_EN, OUTLOOK_DE], ids=["fr", "en", "de"])
@pytest.mark.parametrize("underscores", [True, False], ids=["underscores", "bare"])
def test_outlook_header_block(header: str, underscores: bool) -> None:
    separator = "________________________________\n" if underscores else ""
    mail = WRITER + "\n" + separator + header
    assert trim_quoted(mail) == WRITER.rstrip()


def test_outlook_mac_header_block_with_date() -> None:
    mail = (
        WRITER + "\n"
        "From: Bob Tech <bob.tech@univ.example>\n"
        "Date: Saturday, 28 November 2026 at 09:00\n"
        "To: Alice Martin <alice@univ.example>\n"
        "Subject: Re: Printer\n"
        "\n"
        "Which room?\n"
    )
    assert trim_quoted(mail) == WRITER.rstrip()


@pytest.mark.parametrize(
    "line",
    [
        "-----Original Message-----",
        "-----Message d'origine-----",
        "-----Ursprüngliche Nachricht-----",
    ],
)
def test_outlook_original_message_line(line: str) -> None:
    mail = WRITER + "\n" + line + "\n" + OUTLOOK_EN
    assert trim_quoted(mail) == WRITER.rstrip()


def test_outlook_quotes_that_have_no_writer_text_are_unchanged() -> None:
    mail = "________________________________\n" + OUTLOOK_FR
    assert trim_quoted(mail) == mail


def test_forwarded_message_is_kept() -> None:
    mail = (
        "Voir ci-dessous, le fournisseur confirme.\n"
        "\n"
        "---------- Forwarded message ---------\n"
        "De : Fournisseur <contact@fournisseur.example>\n"
        "Date: ven. 27 nov. 2026 à 17:00\n"
        "Subject: Toner\n"
        "To: <alice@univ.example>\n"
        "\n"
        "Livraison lundi.\n"
    )
    assert trim_quoted(mail) == mail


# --- Text derived from HTML (html_to_text: blockquote -> "> ") ---------------------------


def test_gmail_html_reply() -> None:
    html = (
        '<div dir="ltr">Merci, c&#39;est r&eacute;par&eacute;.</div><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">Le&nbsp;sam. 28 nov. 2026'
        ' &agrave; 09:00, Helpdesk DSI &lt;<a href="mailto:dsi.support@univ.example">'
        "dsi.support@univ.example</a>&gt; a &eacute;crit&nbsp;:<br></div>"
        '<blockquote class="gmail_quote"><div>##- R&eacute;pondez au-dessus de cette ligne -##'
        "</div><div>Bonjour Alice,</div></blockquote></div>"
    )
    assert trim_quoted(html_to_text(html)) == "Merci, c'est réparé."


def test_outlook_html_reply() -> None:
    html = (
        '<div>Bureau 12.</div><div><br></div><div id="divRplyFwdMsg"><hr>'
        "<b>De :</b> Bob Technicien &lt;bob.tech@univ.example&gt;<br>"
        "<b>Envoy&eacute; :</b> samedi 28 novembre 2026 09:00<br>"
        "<b>&Agrave; :</b> Alice<br><b>Objet :</b> RE: Imprimante</div>"
        "<div>Dans quel bureau ?</div>"
    )
    assert trim_quoted(html_to_text(html)) == "Bureau 12."


# --- Hot path ----------------------------------------------------------------------------

BIG = 5 * 1024 * 1024
# Built when the test runs, not at collection: pytest would keep them all in memory.
HUGE_TEXTS = {
    "quote-lines": lambda: "> quoted line of an old message\n" * (BIG // 32),
    "one-line": lambda: "x" * BIG,
    "one-line-of-quote-signs": lambda: ">" * BIG,
    "one-line-of-blanks": lambda: "\u00a0 " * (BIG // 2),
    "one-line-of-marker-starts": lambda: "##- Répondez au " * (BIG // 16),
    "attributions": lambda: "On 28 nov, Bob wrote: a écrit : schrieb " * (BIG // 40),
    "from-lines": lambda: "De : x\n" * (BIG // 7),
    "blank-lines": lambda: "\n" * BIG + "> q\n",
    "interleaved": lambda: "> a\nb\n" * (BIG // 6),
}


def _best_of(function: Callable[[str], object], text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("name", HUGE_TEXTS)
def test_linear_time_on_5_mb(name: str) -> None:
    text = HUGE_TEXTS[name]()
    # A ratio against a linear pass over the same text: catastrophic backtracking or a
    # quadratic scan would be thousands of times slower, a busy machine only a little.
    baseline = _best_of(lambda t: [line.strip() for line in t.splitlines()], text)
    elapsed = _best_of(trim_quoted, text, runs=1)
    assert elapsed < max(200 * baseline, 0.5), (elapsed, baseline)


# --- Genuine replies from the corpus -----------------------------------------------------


def corpus_text(path: str) -> str:
    return parse(need_corpus(path).read_bytes()).text


def assert_trimmed(original: str, trimmed: str, kept: list[str], dropped: list[str]) -> None:
    assert trimmed.strip()
    assert original.startswith(trimmed)
    assert len(trimmed) < len(original)
    for line in kept:
        assert line in trimmed, line
        assert line in original, line
    for line in dropped:
        assert line not in trimmed, line
        assert line in original, line


def test_corpus_outlook_de_header_block() -> None:
    # A German Exchange reply: "Von:/Gesendet:/An:/Cc:/Betreff:" then the thread.
    original = corpus_text("zammad/mail003.box")
    trimmed = trim_quoted(original)
    assert_trimmed(
        original,
        trimmed,
        kept=[
            "ich möchte mich gern für den Beta-Test für die Ticket Templates",
            "Mit freundlichen Grüßen\nJohn Günther",
            "Diese Information ist ausschließlich für den Adressaten bestimmt",
        ],
        dropped=["Von: Fritz Bauer", "Gesendet: Donnerstag, 3. Mai 2012", "ich versuche an den"],
    )
    assert trimmed.endswith("auf welche Weise auch immer zu verwenden.")


def test_corpus_outlook_de_original_message_line() -> None:
    original = corpus_text("zammad/mail012.box")
    trimmed = trim_quoted(original)
    assert_trimmed(
        original,
        trimmed,
        kept=["Hallo Herr Edenhofer,", "Mit freundlichen Grüßen\n\nAlex Smith"],
        dropped=["-----Ursprüngliche Nachricht-----", "Sehr geehrte Frau Smith,"],
    )
    assert trimmed.endswith("Internet: www.example.com<http://www.example.com/>")


def test_corpus_outlook_en_header_block() -> None:
    original = corpus_text("zammad/mail082.box")
    trimmed = trim_quoted(original)
    assert_trimmed(
        original,
        trimmed,
        kept=["Jammer Janette hierdie is 'n fout.", "Fax to e-mail: 0865665137"],
        dropped=["From: John Smith [mailto:from@example.com]", "Subject: FW: Tax Invoice"],
    )
    assert trimmed.endswith("Fax to e-mail: 0865665137")


def test_corpus_wrapped_german_attribution_and_quote() -> None:
    # Mulberry: "--Am Montag, ... schrieb Dirk Pape \n<pape-rt@...>:" above a '>' quote.
    original = corpus_text("rt/emails/8859-15-message-series/dir")
    trimmed = trim_quoted(original)
    assert_trimmed(
        original,
        trimmed,
        kept=["here is the digest I forgot to attach.", "the rt-system."],
        dropped=["schrieb Dirk Pape", "<pape-rt@inf.fu-berlin.de>:", "> I attach a digest"],
    )
    assert trimmed.endswith("the rt-system.")


@pytest.mark.parametrize(
    "path",
    [
        "zammad/mail005.box",  # Thunderbird, bottom-posted under "Am ..., schrieb ...:"
        "rt/emails/new-ticket-from-iso-8859-1-full",  # Eudora, bottom-posted
        "mimekit/messages/epilogue.txt",  # one quoted line, then the answer
        "otobo/PostMaster/PostMaster-Test20.box",  # an Outlook forward, no text of its own
    ],
)
def test_corpus_replies_kept_whole(path: str) -> None:
    original = corpus_text(path)
    assert original.strip()
    assert trim_quoted(original) == original


def test_words_added_are_none_when_the_writer_only_quoted() -> None:
    from helpdesk.ingest.quotes import words_added

    only_quote = (
        "\n\nLe 28/11/2026, Assistance a écrit :\n"
        "> ##- Répondez au-dessus de cette ligne -##\n> Bonjour\n> > Changez le toner.\n"
    )
    assert words_added(only_quote) == ""
    assert trim_quoted(only_quote) != ""  # trim_quoted keeps quotes that are all there is
    assert words_added("OK, envoyez.\n\nLe 28/11/2026, Assistance a écrit :\n> Bonjour\n") == (
        "OK, envoyez."
    )
    assert words_added("Pas de citation.\n") == "Pas de citation.\n"
