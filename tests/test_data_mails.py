"""Our own mails (tests/data/): what parse() and classify() decide on each, in process.

The corpus (tests/conftest.py CORPUS) is not in the repository; these small hand-written
mails are, so a fresh clone still tests each case the parser and classifier handle:
charsets, RFC 2231 parameters, TNEF, bounces and auto-replies (spam/ and bulk/ are
tested with the spam verdicts). Every .eml of those folders has its expectation here.
"""

from __future__ import annotations

import base64
import email
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpdesk.ingest.classify import OwnMarks
from helpdesk.ingest.classify import classify
from helpdesk.ingest.parse import parse

DATA = Path(__file__).parent / "data"
FOLDERS = ("charset", "rfc2231", "tnef", "bounce", "autoreply")
OWN = OwnMarks(instance="helpdesk-univ", domains=("univ.example", "helpdesk.univ.example"))
HELENE = "Hélène Martin"


@dataclass(frozen=True)
class Expected:
    """What the parser and the classifier must make of one mail."""

    subject: str
    text: tuple[str, ...] = ()  # lines the body text must hold, decoded
    author_name: str = HELENE
    files: tuple[tuple[str, str], ...] = ()  # (filename, content type), in order
    verdict: str | None = None  # classify()'s kind; None: a person's mail
    refs: tuple[str, ...] = ()  # the Message-IDs of ours the machine mail is about
    defect: str = ""  # a defect the parser must note


EXPECTED = {
    # -- charsets
    "charset/latin-1.eml": Expected(
        "Ecran casse", ("l'écran du bureau 12 est cassé depuis ce matin.", "Hélène")
    ),
    # Labelled ISO-8859-1, written in Windows-1252 (curly quote, euro sign): read as 1252.
    "charset/windows-1252-labelled-latin-1.eml": Expected(
        "Devis imprimante", ("le devis s’élève à 120 € : c’est « raisonnable ».",)
    ),
    "charset/undeclared-8bit-latin-1.eml": Expected(
        "Souris", ("la souris ne répond plus, même après redémarrage.",)
    ),
    "charset/undeclared-8bit-utf-8.eml": Expected(
        "Clavier", ("le clavier du poste d'accueil a des touches qui collent (é, è, à).",)
    ),
    # UTF-8 with one Latin-1 stretch in the middle: each part read in its own charset.
    "charset/broken-utf-8.eml": Expected(
        "Badge", ("mon badge n'ouvre plus la porte du bâtiment B, côté parking.", "Merci, Hélène")
    ),
    # Q and B words, a UTF-8 character split across two words, folded.
    "charset/encoded-words.eml": Expected(
        "Accès au réseau Wi-Fi – bâtiment C", ("le Wi-Fi du bâtiment C ne me laisse plus entrer.",)
    ),
    "charset/raw-utf-8-headers.eml": Expected(
        "Réservation de la salle 204", ("le vidéoprojecteur de la salle 204 ne s'allume pas.",)
    ),
    # -- RFC 2231
    "rfc2231/continuations.eml": Expected(
        "Rapport",
        ("Voici le fichier.",),
        files=(("rapport détaillé – décembre.txt", "text/plain"),),
    ),
    "rfc2231/charset-and-language.eml": Expected("CV", files=(("résumé été.txt", "text/plain"),)),
    "rfc2231/name-only-in-content-type.eml": Expected(
        "Journal", files=(("journal-serveur.log", "application/octet-stream"),)
    ),
    # -- TNEF (winmail.dat made by tnef_blob() below)
    "tnef/winmail-with-a-file.eml": Expected(
        "Releve du compteur",
        ("Voir la pièce jointe.",),
        author_name="Paul Durand",
        files=(("releve.txt", "text/plain"),),
    ),
    "tnef/winmail-body-only.eml": Expected(
        "Reunion", ("la réunion est déplacée à 14 h, salle 204.",), author_name="Paul Durand"
    ),
    "tnef/winmail-not-tnef.eml": Expected(
        "Pieces",
        ("Ci-joint.",),
        author_name="Paul Durand",
        files=(("winmail.dat", "application/ms-tnef"),),
        defect="TNEF not unpacked",
    ),
    # -- bounces
    "bounce/postfix-dsn.eml": Expected(
        "Undelivered Mail Returned to Sender",
        ('<ancien.etudiant@univ.example>: unknown user: "ancien.etudiant"',),
        author_name="Mail Delivery System",
        files=(
            ("Delivery report.txt", "message/delivery-status"),
            ("Undelivered Message Headers.txt", "text/rfc822-headers"),
        ),
        verdict="bounce",
        refs=("hd.42.7f3a9c@helpdesk.univ.example",),
    ),
    "bounce/exim-dsn.eml": Expected(
        "Warning: message 1vQ4aB-000Xyz-1q delayed 24 hours",
        author_name="Mail Delivery System",
        files=(
            ("delivery-status.txt", "message/delivery-status"),
            ("[HD #44] Votre demande est enregistree.eml", "message/rfc822"),
        ),
        verdict="bounce",
        refs=("hd.44.beef@helpdesk.univ.example",),
    ),
    # Exim's plain-text bounce: X-Failed-Recipients, our mail quoted in the text.
    "bounce/exim-plain.eml": Expected(
        "Mail delivery failed: returning message to sender",
        ("  jean.perdu@example.org",),
        author_name="Mail Delivery System",
        verdict="bounce",
        refs=("hd.43.c0ffee@helpdesk.univ.example",),
    ),
    # A person writing "non remis" is no delivery system.
    "bounce/person-about-a-failed-delivery.eml": Expected("Message non remis à mon collègue"),
    # -- auto-replies
    "autoreply/auto-submitted.eml": Expected(
        "Re: [HD #12] Imprimante en panne",
        ("Je suis absente jusqu'au 4 janvier.",),
        verdict="autoreply",
        refs=("hd.12.aa@helpdesk.univ.example",),
    ),
    "autoreply/x-autoreply.eml": Expected("Re: [HD #12] Imprimante en panne", verdict="autoreply"),
    "autoreply/subject-fr.eml": Expected(
        "Réponse automatique : absente jusqu'au 4 janvier", verdict="autoreply"
    ),
    "autoreply/subject-en.eml": Expected("Out of Office: back on January 4", verdict="autoreply"),
    "autoreply/subject-en-automatic-reply.eml": Expected(
        "Automatic reply: [HD #12] Printer broken", verdict="autoreply"
    ),
    # "Auto-Submitted: no" says a person sent it; "Absence de ..." is not an absence notice.
    "autoreply/auto-submitted-no.eml": Expected(
        "Absence de connexion wifi", ("le wifi ne marche plus au 2e étage.",)
    ),
}


def test_every_mail_of_ours_has_its_expectation() -> None:
    found = {p.relative_to(DATA).as_posix() for f in FOLDERS for p in (DATA / f).glob("*.eml")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_what_parse_and_classify_make_of_our_mail(name: str) -> None:
    expected = EXPECTED[name]
    raw = (DATA / name).read_bytes()
    mail = parse(raw)
    assert mail.subject == expected.subject
    assert mail.author_name == expected.author_name
    lines = mail.text.splitlines()
    assert [t for t in expected.text if t not in lines] == [], mail.text
    assert [(a.filename, a.content_type) for a in mail.attachments] == list(expected.files)
    assert "\ufffd" not in mail.text + mail.subject + mail.author_name
    if expected.defect:
        assert any(expected.defect in d for d in mail.defects), mail.defects
    else:
        assert mail.defects == []
    verdict = classify(raw, mail, {}, OWN)
    assert (verdict and verdict.kind) == expected.verdict, verdict
    if verdict is not None:
        assert verdict.referenced_ids == expected.refs


def test_the_envelope_sender_as_the_mta_passes_it() -> None:
    # The author's own address changes nothing; the null sender <> is only ever machine mail.
    for name, expected in EXPECTED.items():
        raw = (DATA / name).read_bytes()
        mail = parse(raw)
        verdict = classify(raw, mail, {"SENDER": mail.author}, OWN)
        assert (verdict and verdict.kind) == expected.verdict, name
        null = classify(raw, mail, {"SENDER": ""}, OWN)
        assert null is not None and null.kind == (expected.verdict or "bounce"), name


def test_the_tnef_files_inside_the_attachments_are_the_bytes_they_name() -> None:
    raw = (DATA / "tnef/winmail-with-a-file.eml").read_bytes()
    [releve] = parse(raw).attachments
    assert releve.data == b"Compteur : 12345\r\n"


def _attr(level: int, att_id: int, data: bytes) -> bytes:
    # level, id (type << 16 | id), length, data, checksum: MS-OXTNEF 2.1.3.1
    return (
        struct.pack("<BII", level, att_id, len(data)) + data + struct.pack("<H", sum(data) % 65536)
    )


def tnef_blob(body: bytes, files: list[tuple[bytes, bytes]]) -> bytes:
    """A minimal TNEF stream: version, code page, message class, body, then each file."""
    out = struct.pack("<IH", 0x223E9F78, 1)  # signature, legacy key
    out += _attr(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += _attr(1, 0x00069007, struct.pack("<II", 1252, 0))  # attOemCodepage
    out += _attr(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    if body:
        out += _attr(1, 0x0002800C, body)  # attBody
    for name, data in files:
        out += _attr(2, 0x00069002, bytes(14))  # attAttachRenddata opens an attachment
        out += _attr(2, 0x00018010, name + b"\x00")  # attAttachTitle
        out += _attr(2, 0x0006800F, data)  # attAttachData
    return out


@pytest.mark.parametrize(
    ("name", "body", "files"),
    [
        (
            "tnef/winmail-with-a-file.eml",
            "Bonjour,\r\nvous trouverez le relevé joint.\r\nPaul\r\n",
            [(b"releve.txt", b"Compteur : 12345\r\n")],
        ),
        (
            "tnef/winmail-body-only.eml",
            "Bonjour,\r\nla réunion est déplacée à 14 h, salle 204.\r\nPaul\r\n",
            [],
        ),
    ],
)
def test_the_winmail_dat_of_our_mails_is_what_tnef_blob_makes(
    name: str, body: str, files: list[tuple[bytes, bytes]]
) -> None:
    """How the blobs were made, so that another can be added the same way."""
    message = email.message_from_bytes((DATA / name).read_bytes())
    [part] = [p for p in message.walk() if p.get_content_type() == "application/ms-tnef"]
    stored = base64.b64decode(part.get_payload())
    assert stored == tnef_blob(body.encode("cp1252"), files)
