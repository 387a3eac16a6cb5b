"""Stored text made safe to show: on a terminal, in JSON, as a file's name.

What a mail brings (a subject, a name, a body, an attachment's name) is the
sender's to choose. On a technician's terminal an ESC or a C1 control starts a
command (a window title, an OSC 52 clipboard write, a cursor moved over the line
above); a bidi override or an invisible character makes text read as something
else ("invoice\\u202efdp.exe" shows as "invoiceexe.pdf"). Stdlib only: the pipe,
the viewer and the CLI all import it.
"""

from __future__ import annotations

import re

__all__ = ["for_terminal", "for_json", "safe_filename", "UNSAFE"]

# Never shown raw. C0 and C1 controls and DEL; every format character of Unicode 14
# (category Cf: the soft hyphen, bidi marks, embeddings, overrides and isolates,
# zero-width characters, word joiner and invisible operators, BOM, tags...); the
# line and paragraph separators; lone surrogates; and the characters that draw
# nothing though not Cf (combining grapheme joiner, Hangul fillers, Khmer inherent
# vowels, variation selectors 17-256). tests/test_display.py checks the Cf list
# against the running Python's unicodedata.
_CLASS = (
    "\\x00-\\x1f\\x7f-\\x9f\\xad\\u034f\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890\\u0891"
    "\\u08e2\\u115f\\u1160\\u17b4\\u17b5\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f"
    "\\u3164\\ud800-\\udfff\\ufeff\\uffa0\\ufff9-\\ufffb\\U000110bd\\U000110cd"
    "\\U00013430-\\U00013438\\U0001bca0-\\U0001bca3\\U0001d173-\\U0001d17a"
    "\\U000e0000-\\U000e007f\\U000e0100-\\U000e01ef"
)
UNSAFE = re.compile(f"[{_CLASS}]")
# The same, but a multi-line text keeps its line feeds and tabs.
_UNSAFE_IN_LINES = re.compile(f"(?![\\n\\t])[{_CLASS}]")
# What json.dumps leaves as it is: it escapes C0 itself, and a line feed of its own
# indentation is outside any string.
_UNSAFE_IN_JSON = re.compile(f"(?![\\x00-\\x1f])[{_CLASS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def for_terminal(text: str, multiline: bool = False) -> str:
    """The text with every unsafe character written as a visible escape (`\\x1b`,
    `\\u202e`), so a technician sees that something is there and nothing acts.

    A multi-line text (a body) keeps its line feeds and tabs, a CR LF being a line
    end; a one-line value (a subject, a name) shows them as `\\n`, `\\t`, so it
    cannot draw a line of its own in a listing.
    """
    if multiline:
        return _UNSAFE_IN_LINES.sub(_escape, text.replace("\r\n", "\n"))
    return UNSAFE.sub(_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: JSON spells it as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def for_json(dumped: str) -> str:
    """JSON text (from json.dumps) with each unsafe character as a \\uXXXX escape.

    json.dumps already escapes C0 controls; anything else unsafe can only stand
    inside a string, where the escape means the same character: the data stays whole.
    """
    return _UNSAFE_IN_JSON.sub(_json_escape, dumped)


# File names Windows keeps for devices, with any extension ("nul.txt" too).
_RESERVED = re.compile(r"(?:CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)", re.I)
# Path separators, and what Windows refuses in a name (":" would name a stream).
_FORBIDDEN = re.compile(r'[/\\:*?"<>|]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Under the 255 bytes of the common file systems, with room for what a browser adds
# ("name (1).pdf").
NAME_BYTES = 200
_EXTENSION = 16


def safe_filename(name: str) -> str:
    """The name to show and to download a stored attachment as (the stored one stays).

    No control, bidi or invisible character, no path separator, no leading dot, no
    trailing dot or space, a Windows device name prefixed with "_", at most
    NAME_BYTES of UTF-8 with its extension kept, never empty.
    """
    name = UNSAFE.sub("", _CONTROL.sub(" ", name))
    name = " ".join(_FORBIDDEN.sub("_", name).split()).lstrip(". ").rstrip(". ")
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _EXTENSION:
        stem, extension = name, ""
    # Room for the dot and a "_" before a device name; a character cut in two goes.
    room = NAME_BYTES - len(extension.encode()) - 2
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip(". ")
    name = f"{stem}.{extension}" if stem and extension else stem or extension
    if _RESERVED.fullmatch(name.split(".", 1)[0].rstrip(" ")):
        name = "_" + name
    return name or "file"
