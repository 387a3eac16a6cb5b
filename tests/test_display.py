"""helpdesk.display: what stored text may put on a terminal, in JSON, in a file's name."""

from __future__ import annotations

import json
import sys
import unicodedata

import pytest

from helpdesk.display import NAME_BYTES
from helpdesk.display import UNSAFE
from helpdesk.display import for_json
from helpdesk.display import for_terminal
from helpdesk.display import safe_filename

# What the brief names, one of each: none may reach a terminal raw.
NAMED = (
    "\r\x1b\x07\x08\x7f\x80\x85\x9b\x9f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    "\u200e\u200f\u061c\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad"
    "\U000e0000\U000e0001\U000e0041\U000e007f\u2028\u2029"
)
TRICKS = [
    "\x1b]0;pwned\x07",  # window title
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: writes the clipboard
    "\x1b[8mhidden\x1b[0m",  # concealed text
    "\r\x1b[1A\x1b[2K--- #1 jean.tech@univ.example (mail) 2026-11-28",  # a fake entry header
    "\x9b2J",  # C1 CSI: clears the screen
]


def test_every_format_and_control_character_is_unsafe() -> None:
    missing = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in {"Cc", "Cf", "Zl", "Zp", "Cs"}
        and not UNSAFE.fullmatch(chr(code))
    ]
    assert not missing, missing
    assert all(UNSAFE.fullmatch(c) for c in NAMED)
    assert not UNSAFE.search("Élodie Martin, 日本語 — «ok» 👍🏽 é")


@pytest.mark.parametrize("multiline", [False, True], ids=["one-line", "multi-line"])
def test_no_unsafe_character_reaches_the_terminal_and_each_shows(multiline: bool) -> None:
    for text in [NAMED, *TRICKS]:
        shown = for_terminal(text, multiline)
        assert not UNSAFE.search(shown), repr(shown)
    for char in NAMED:
        code = ord(char)
        width = 2 if code <= 0xFF else 4 if code <= 0xFFFF else 8
        letter = "x" if code <= 0xFF else "u" if code <= 0xFFFF else "U"
        expected = "\\r" if char == "\r" else f"\\{letter}{code:0{width}x}"
        assert for_terminal(f"a{char}b", multiline) == f"a{expected}b"


def test_a_body_keeps_its_lines_and_tabs_a_one_line_value_does_not() -> None:
    body = "Bonjour,\r\nligne\t2\nfin\rfaux"
    assert for_terminal(body, multiline=True) == "Bonjour,\nligne\t2\nfin\\rfaux"
    assert for_terminal("sujet\n#2 faux\tx") == "sujet\\n#2 faux\\tx"
    assert for_terminal("Élodie — 日本語 👍🏽") == "Élodie — 日本語 👍🏽"


def test_json_carries_them_only_as_escapes_and_stays_whole() -> None:
    data = {"subject": NAMED + "".join(TRICKS) + " \\u202e é", "n": [1, None]}
    dumped = for_json(json.dumps(data, ensure_ascii=False, indent=2))
    assert not UNSAFE.search(dumped.replace("\n", ""))
    assert "\\u202e" in dumped and "\\udb40\\udc41" in dumped  # a tag, as a surrogate pair
    assert json.loads(dumped) == data
    assert "é" in dumped  # the rest stays readable


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("re\u200bport\u2066.pdf\u2069", "report.pdf"),
        ("tag\U000e0041\U000e0042.png", "tag.png"),
        ("a\x1b[31mb\r\n.txt", "a [31mb.txt"),
        ("../../etc/passwd", "_._etc_passwd"),
        ("C:\\Users\\alice\\photo.jpg", "C__Users_alice_photo.jpg"),
        ('a:b*c?<d>|e".txt', "a_b_c__d__e_.txt"),
        (".htaccess", "htaccess"),
        ("...", "file"),
        ("", "file"),
        ("\u202e\u200b", "file"),
        ("rapport. . .", "rapport"),
        ("rapport.pdf. ", "rapport.pdf"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("com1.log", "_com1.log"),
        ("LPT9", "_LPT9"),
        ("COM¹.txt", "_COM¹.txt"),
        ("aux .doc", "_aux.doc"),
        ("conin$", "_conin$"),
        ("console.txt", "console.txt"),
        ("COM10.txt", "COM10.txt"),
        ("Élodie — devis n°3.pdf", "Élodie — devis n°3.pdf"),
    ],
)
def test_an_attachment_shows_by_a_safe_name(stored: str, shown: str) -> None:
    assert safe_filename(stored) == shown


def test_a_long_name_is_cut_keeping_its_extension() -> None:
    for stored, extension in [("a" * 1000 + ".pdf", ".pdf"), ("é" * 500 + ".docx", ".docx")]:
        shown = safe_filename(stored)
        assert len(shown.encode()) <= NAME_BYTES and shown.endswith(extension), shown
        assert len(shown.encode()) > NAME_BYTES - 10
    # An "extension" longer than any real one is just part of the name.
    assert safe_filename("x." + "y" * 300) == ("x." + "y" * 300)[: NAME_BYTES - 2]
    # Cut where a dot was: still no trailing dot.
    assert not safe_filename("a" * (NAME_BYTES - 7) + "." * 50 + ".pdf").endswith("..pdf")
