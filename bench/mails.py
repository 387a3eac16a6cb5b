"""Deterministic test mails for the benchmark, built with the stdlib `email` package.

Everything comes from one seeded random.Random, so the same seed gives byte-identical
files on every machine (random.Random.randbytes is stable since Python 3.9; the
multipart boundary is set explicitly instead of letting `email` draw one).
"""

from __future__ import annotations

import html
import random
import textwrap
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

__all__ = ["small_mail", "big_mail", "html_mail", "write_small_mails", "senders",
           "SMALL_TARGET", "BIG_TARGET", "HTML_CTE", "HTML_START", "HTML_END"]

SMALL_TARGET = 5_120  # bytes, "a 5 KB text mail"
BIG_TARGET = 25_000_000  # bytes, just under the default max_size of 25 MiB (26,214,400)
QUEUE_ADDRESS = Address("Support DSI", "dsi.support", "univ.example")
_EPOCH = datetime(2026, 11, 2, 8, 30, tzinfo=timezone(timedelta(hours=1)))

_FIRST = ["Alice", "Bruno", "Chloé", "Denis", "Élodie", "François", "Gaëlle", "Hugo", "Inès",
          "Jérôme", "Karima", "Léo", "Maëlle", "Nicolas", "Océane", "Pierre", "Quentin",
          "Rémi", "Sophie", "Thérèse"]
_LAST = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
         "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
         "Bertrand", "Roux", "Vincent", "Fournier"]
_TOPICS = ["Imprimante en panne", "Accès VPN refusé", "Mot de passe expiré",
           "Salle 204 : vidéoprojecteur", "Demande de licence", "Messagerie lente",
           "Poste qui redémarre", "Wi-Fi du bâtiment C",
           "Compte ENT bloqué", "Disque réseau plein"]
_WORDS = ("bonjour le la les un une des du de et ou mais donc car depuis hier matin ce soir "
          "l'imprimante du bureau poste ordinateur écran réseau serveur accès message erreur "
          "redémarrage session mot passe compte étudiant enseignant salle bâtiment service "
          "informatique logiciel mise à jour sauvegarde fichier dossier partagé lecteur clé "
          "connexion lente impossible fonctionne plus toujours encore déjà après avant pendant "
          "nous vous avons avez été pouvez pourriez merci beaucoup cordialement urgent demain "
          "semaine prochaine réunion cours examen notes délai problème résolu ticket "
          "numéro").split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    end = rng.choice([".", ".", ".", " ?", " !"])
    return " ".join(words) + end


def _body(rng: random.Random, size: int) -> str:
    """French-looking plain text of `size` UTF-8 bytes (give or take a word), 66 columns."""
    signature = "\n\nCordialement,\n-- \nService scolarité, bureau 12\nUniversité d'exemple\n"
    budget = size - len(signature.encode()) - len("Bonjour,\n\n")
    paragraphs: list[str] = []
    length = 0
    while length < budget:
        para = textwrap.fill(" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))), 66)
        paragraphs.append(para)
        length += len(para.encode()) + 2
    text = "\n\n".join(paragraphs).encode()[:budget].decode("utf-8", "ignore")
    text = text.rsplit(" ", 1)[0].rstrip("\n") + "."
    return "Bonjour,\n\n" + text + signature


def _headers(msg: EmailMessage, rng: random.Random, index: int, tag: str, seed: int) -> None:
    who = index % len(_FIRST)
    first, last = _FIRST[who], _LAST[(who * 7) % len(_LAST)]
    # ASCII local parts (Roundup, for one, registers no other address).
    local = f"{first}.{last}".lower().translate(str.maketrans("éèëçïô", "eeecio"))
    msg["From"] = Address(f"{first} {last}", local, "univ.example")
    msg["To"] = QUEUE_ADDRESS
    msg["Subject"] = f"{rng.choice(_TOPICS)} (#{index})"
    msg["Date"] = format_datetime(_EPOCH + timedelta(minutes=7 * index))
    msg["Message-ID"] = f"<bench.{tag}.{seed}.{index:06d}@univ.example>"
    msg["User-Agent"] = "Mozilla/5.0 Thunderbird/128.5.0"


def senders() -> list[str]:
    """The addresses small mails come from (index modulo their number picks one)."""
    out = []
    for who in range(len(_FIRST)):
        msg = EmailMessage(policy=policy.default)
        _headers(msg, random.Random(0), who, "probe", 0)
        out.append(msg["From"].addresses[0].addr_spec)
    return out


def small_mail(index: int, seed: int = 20261128) -> bytes:
    """Mail number `index`: about 5 KB of UTF-8 text/plain, its own Message-ID."""
    rng = random.Random(f"{seed}:small:{index}")
    msg = EmailMessage(policy=policy.default)
    _headers(msg, rng, index, "small", seed)
    # Headers plus MIME lines take ~430 bytes; the body makes up the rest.
    msg.set_content(_body(rng, SMALL_TARGET - 430), cte="8bit")
    return msg.as_bytes()


def _big(rng_seed: str, index: int, seed: int, attachment_size: int) -> bytes:
    rng = random.Random(rng_seed)
    msg = EmailMessage(policy=policy.default)
    _headers(msg, rng, index, "big", seed)
    msg.set_content(_body(rng, 1_500) + "\nVous trouverez le scan en pièce jointe.\n", cte="8bit")
    data = rng.randbytes(attachment_size)
    msg.add_attachment(data, maintype="application", subtype="octet-stream",
                       filename="scan-dossier.bin")
    msg.set_boundary(f"=====bench-{seed}-{index}=====")
    return msg.as_bytes()


def big_mail(index: int = 0, seed: int = 20261128, target: int = BIG_TARGET) -> tuple[bytes, int]:
    """A mail of just under `target` bytes: short text + one random binary attachment in base64.

    Returns (mail bytes, raw attachment size). base64 in 76-column lines turns every 57 raw
    bytes into 77 bytes (76 + LF), so the attachment size is solved from the overhead of a
    mail with a tiny attachment.
    """
    rng_seed = f"{seed}:big:{index}"
    probe_lines = 100
    overhead = len(_big(rng_seed, index, seed, 57 * probe_lines)) - 77 * probe_lines
    size = (target - overhead) // 77 * 57
    raw = _big(rng_seed, index, seed, size)
    if not target - 1_000 < len(raw) <= target:
        raise RuntimeError(f"big mail is {len(raw)} bytes, wanted just under {target}")
    return raw, size


# The big HTML-only mail's transfer encoding. 8bit by default: the part then holds 25 MB
# of HTML (quoted-printable, as many newsletter tools send it, turns every accent and
# typographic quote into 6-9 bytes: 22 MB of HTML in the same mail, and a lower peak).
HTML_CTE = "8bit"
# Phrases of the newsletter's text: its header (first lines) and its footer (last line).
HTML_START = "Toute l’actualité du campus"
HTML_END = "Se désinscrire"
_SECTIONS = ["Vie du campus", "Recherche", "Formation", "Agenda", "Services numériques",
             "Culture", "International", "Bibliothèques"]
_PLACES = ["Amphi Condorcet", "Salle 204", "Maison de l’étudiant", "Bibliothèque centrale",
           "Bâtiment C, rez-de-chaussée", "Learning centre"]


def _html_sentence(rng: random.Random) -> str:
    """A sentence of the newsletter: French words, an apostrophe, now and then bold or a link."""
    words = [html.escape(rng.choice(_WORDS)).replace("&#x27;", "’")
             for _ in range(rng.randint(8, 18))]
    words[0] = words[0].capitalize()
    k = rng.randrange(len(words))
    if rng.random() < 0.3:
        words[k] = f"<b>{words[k]}</b>"
    elif rng.random() < 0.3:
        words[k] = (f'<a href="https://www.univ.example/actu/{rng.randrange(10**6)}'
                    f'?utm_source=lettre&amp;utm_medium=email" style="color:#1a5fb4">'
                    f"{words[k]}</a>")
    end = rng.choice([".", ".", ".", "&nbsp;?", "&nbsp;!"])
    return " ".join(words) + end


def _html_block(rng: random.Random, number: int) -> str:
    """One article of the newsletter: a heading with its link, two to four paragraphs
    and, every third article, a table of dates (a table inside the layout table)."""
    title = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 7))).capitalize()
    lines = ['<tr><td class="article" style="padding:16px 24px;font-family:Arial,sans-serif;'
             'font-size:15px;line-height:1.5;color:#222">',
             f'<p style="margin:0;color:#666;font-size:12px">{rng.choice(_SECTIONS)} · '
             f"n°&nbsp;{number}</p>",
             f'<h2 style="margin:4px 0 8px"><a href="https://www.univ.example/actu/{number}'
             f'?utm_source=lettre&amp;utm_medium=email">{html.escape(title)}</a></h2>']
    for _ in range(rng.randint(2, 4)):
        text = " ".join(_html_sentence(rng) for _ in range(rng.randint(2, 5)))
        lines.append(textwrap.fill(f'<p style="margin:0 0 12px">{text}</p>', 76,
                                   break_long_words=False, break_on_hyphens=False))
    if number % 3 == 0:
        lines.append('<table class="agenda" width="100%" cellpadding="4" style="border-collapse:'
                     'collapse;font-size:14px">')
        lines.append("<tr><th>Date</th><th>Lieu</th><th>Tarif</th></tr>")
        for _ in range(rng.randint(2, 4)):
            lines.append(f"<tr><td>{rng.randint(1, 28)}&nbsp;déc.</td>"
                         f"<td>{rng.choice(_PLACES)}</td><td>{rng.randint(0, 40)}&nbsp;€</td>"
                         "</tr>")
        lines.append("</table>")
    lines.append("</td></tr>")
    return "\n".join(lines) + "\n"


_HTML_HEAD = (
    '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
    "<title>La lettre de l’université — décembre 2026</title>\n"
    "<style>body{margin:0;background:#f4f4f4} .article a{color:#1a5fb4}"
    " .agenda th{text-align:left;border-bottom:1px solid #ccc}</style>\n</head>\n"
    '<body>\n<table role="presentation" width="100%" cellpadding="0" cellspacing="0">'
    '<tr><td align="center">\n<table role="presentation" width="640" cellpadding="0" '
    'cellspacing="0" style="background:#ffffff">\n'
    '<tr><td style="padding:24px"><h1 style="font-family:Georgia,serif">La lettre de '
    "l’université</h1><p>Toute l’actualité du campus, chaque mois.</p></td></tr>\n"
)
_HTML_TAIL = (
    '<tr><td style="padding:24px;font-size:12px;color:#666">Vous recevez cette lettre car '
    "vous êtes inscrit·e à la liste de diffusion de l’université. "
    '<a href="https://www.univ.example/lettre/desinscription">Se désinscrire</a></td></tr>\n'
    "</table>\n</td></tr></table>\n</body>\n</html>\n"
)


def _html_message(index: int, seed: int, html_text: str, cte: str) -> bytes:
    msg = EmailMessage(policy=policy.default)
    _headers(msg, random.Random(f"{seed}:html:{index}"), index, "html", seed)
    # Sent on by a person (no List-Id, no Precedence: bulk): it opens a ticket.
    msg.replace_header("Subject", "TR: La lettre de l’université — décembre 2026")
    msg.set_content(html_text, subtype="html", cte=cte)
    return msg.as_bytes()


def html_mail(index: int = 0, seed: int = 20261128, target: int = BIG_TARGET,
              cte: str = HTML_CTE) -> tuple[bytes, str]:
    """An HTML-only newsletter of just under `target` bytes: one text/html part in UTF-8
    (8bit or quoted-printable), a layout table of articles (paragraphs, bold, links, tables of
    dates, French text). Returns (mail bytes, the HTML as the part carries it).

    The transfer encoding works line by line and every article ends its lines, so the
    encoded size of the articles adds up; a last paragraph of padding fills the rest.
    """
    from email import quoprimime

    def encoded(text: str) -> int:
        if cte == "quoted-printable":  # as EmailMessage does it, 78 columns
            return len(quoprimime.body_encode(text.encode().decode("latin-1"), 78))
        return len(text.encode())

    rng = random.Random(f"{seed}:html:{index}")
    overhead = len(_html_message(index, seed, _HTML_HEAD + _HTML_TAIL, cte)) - \
        encoded(_HTML_HEAD + _HTML_TAIL)
    budget = target - overhead - 2_000
    blocks: list[str] = []
    used = 0
    while True:
        block = _html_block(rng, len(blocks) + 1)
        size = encoded(block)
        if used + size > budget:
            break
        blocks.append(block)
        used += size
    pad = f"<tr><td><p>{'Fin de la lettre. ' * max(1, (budget - used) // 20)}</p></td></tr>\n"
    html_text = _HTML_HEAD + "".join(blocks) + textwrap.fill(pad, 76) + "\n" + _HTML_TAIL
    raw = _html_message(index, seed, html_text, cte)
    if not target - 3_000 < len(raw) <= target:
        raise RuntimeError(f"HTML mail is {len(raw)} bytes, wanted just under {target}")
    return raw, html_text


def write_small_mails(directory, count: int, seed: int = 20261128) -> list[str]:
    """Write mails 0..count-1 as NNNNNN.eml under directory; return their paths."""
    paths = []
    for index in range(count):
        path = f"{directory}/{index:06d}.eml"
        with open(path, "wb") as fh:
            fh.write(small_mail(index, seed))
        paths.append(path)
    return paths
