"""Deterministic test mails for the benchmark, built with the stdlib `email` package.

Everything comes from one seeded random.Random, so the same seed gives byte-identical
files on every machine (random.Random.randbytes is stable since Python 3.9; the
multipart boundary is set explicitly instead of letting `email` draw one).
"""

from __future__ import annotations

import random
import textwrap
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

__all__ = ["small_mail", "big_mail", "write_small_mails", "senders", "SMALL_TARGET",
           "BIG_TARGET"]

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
    return words[0].capitalize() + " " + " ".join(words[1:]) + end


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


def write_small_mails(directory, count: int, seed: int = 20261128) -> list[str]:
    """Write mails 0..count-1 as NNNNNN.eml under directory; return their paths."""
    paths = []
    for index in range(count):
        path = f"{directory}/{index:06d}.eml"
        with open(path, "wb") as fh:
            fh.write(small_mail(index, seed))
        paths.append(path)
    return paths
