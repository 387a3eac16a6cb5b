"""Outgoing headers: a display name, however long or hostile, names its own address only."""

from __future__ import annotations

from email.header import decode_header
from email.header import make_header
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses
from pathlib import Path

import pytest
from conftest import cli_json
from conftest import make_mail
from conftest import run_pipe

from helpdesk.notify.compose import Outgoing
from helpdesk.notify.compose import compose
from helpdesk.notify.compose import one_line

# What a hostile (or merely corporate) display name is made of: separators, quotes,
# an address of the attacker's, an encoded word, other scripts, comments, escapes.
PIECES = [
    "a,b", '"x@evil.example"', "<y@evil.example>", ";", "=?utf-8?q?z=40evil?=", "é",
    "(c)", "\\", "Dupont", 'x\\"y', ":", "Ünïcødé,", "日本語", "@", ".", "[z]", "'",
]  # fmt: skip
FROM = "dsi.support@univ.example"
REPLY_TO = "dsi+1.abc@univ.example"


ASCII_PIECES = [p for p in PIECES if p.isascii() and "=?" not in p]


def _names() -> list[str]:
    """One name of each length from 1 to 299, pieces joined by spaces or not; every
    other one in ASCII only (folded without encoded words, as one_line breaks "=?")."""
    names = []
    for n in range(1, 300):
        pieces = ASCII_PIECES if n % 2 else PIECES
        glue = " " if n % 3 else ""
        names.append(glue.join(pieces[(n + i) % len(pieces)] for i in range(n))[:n])
    return names


def _raw(data: bytes, name: str) -> list[str]:
    """Every value of a header as written, unfolded (UTF-8 under SMTPUTF8)."""
    lines = data.split(b"\r\n\r\n", 1)[0].decode("utf-8").split("\r\n")
    values = []
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + ":"):
            value, i = line[len(name) + 1 :], i + 1
            while i < len(lines) and lines[i][:1] in (" ", "\t"):
                value, i = value + lines[i], i + 1
            values.append(value)
    return values


def _utf8(text: str) -> str:
    """The parser's surrogate-escaped 8-bit header text, as the UTF-8 it was."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8")


def _composed(name: str, to: str) -> bytes:
    return compose(
        Outgoing(
            from_addr=FROM,
            from_name=name,
            to_addr=to,
            to_name=name,
            subject="Votre demande",
            body="Bonjour\n",
            message_id="hd.1.abc@univ.example",
            instance="helpdesk-test.univ.example",
            reply_to=REPLY_TO,
        )
    )


def _shown(phrase: str) -> str:
    """A display name as a reader's client decodes it (RFC 2047 words joined)."""
    return str(make_header(decode_header(phrase))) if "=?" in phrase else phrase


@pytest.mark.parametrize(
    "to", ["alice@univ.example", "élodie@univ.example"], ids=["smtp", "smtputf8"]
)
def test_every_address_header_names_exactly_its_own_address(to: str) -> None:
    for name in _names():
        data = _composed(name, to)
        # The policy compose chose: 7-bit headers unless an address needs UTF-8.
        assert data.isascii() == to.isascii(), name
        parsed = BytesParser(policy=default).parsebytes(data)
        for header, address in (("To", to), ("From", FROM), ("Reply-To", REPLY_TO)):
            raw = _raw(data, header)
            assert len(raw) == 1, (name, header, raw)
            pairs = getaddresses(raw)
            assert [a for _, a in pairs] == [address], (name, header, raw, pairs)
            phrase = pairs[0][0]
            [mailbox] = parsed[header].addresses
            assert _utf8(mailbox.addr_spec) == address, (name, header, raw)
            if "=?" not in name:
                # Whole: only the spaces may move, where a long name was cut to fold.
                # (Text that looks like an encoded word is broken up by one_line.)
                expected = one_line(name, 200)
                assert "".join(_shown(phrase).split()) == "".join(expected.split()), raw


@pytest.mark.parametrize(
    "to", ["alice@univ.example", "élodie@univ.example"], ids=["smtp", "smtputf8"]
)
@pytest.mark.parametrize(
    "name",
    [
        "Martin, Alice",
        "Université de Bordeaux, Service Informatique",
        "Jean-Baptiste de La Rochefoucauld-Liancourt, Service Informatique de la Faculté",
        "DUPONT Jean (Direction des Systèmes d'Information, Pôle Infrastructure)",
        'Alice "the boss" Martin, DSI; bureau 12 <alice@univ.example>',
    ],
)
def test_a_long_name_with_commas_reads_as_it_was_written(name: str, to: str) -> None:
    [raw] = _raw(_composed(name, to), "To")
    pairs = getaddresses([raw])
    assert [(_shown(phrase), found) for phrase, found in pairs] == [(name, to)], raw


def test_the_acknowledgement_of_a_hostile_name_goes_to_its_sender_only(
    config: Path, tmp_path: Path
) -> None:
    """End to end: the name as the pipe stores it, the ack as the transport writes it."""
    name = "Martin, Alice " * 3 + '"x@evil.example" <y@evil.example>, Service Informatique'
    raw = make_mail().replace(
        b"From: Alice Martin <alice@univ.example>",
        f'From: "{name.replace(chr(34), chr(92) + chr(34))}" <alice@univ.example>'.encode(),
    )
    assert run_pipe(config, raw).returncode == 0
    assert cli_json(config, "ticket", "show", "1")["requester_name"] == name
    sent = [p.read_bytes() for p in sorted((tmp_path / "sent").glob("*.eml"))]
    [ack] = [m for m in sent if b"alice@univ.example" in m.split(b"\r\n\r\n")[0]]
    [to] = _raw(ack, "To")
    pairs = getaddresses([to])
    assert [(_shown(phrase), found) for phrase, found in pairs] == [(name, "alice@univ.example")], (
        to
    )
