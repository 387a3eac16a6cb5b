"""Decode text whose charset is missing, wrong or unknown: labels, fallbacks, guessing."""

from __future__ import annotations

import codecs
import re

_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


# Charset labels as mail clients really mean them (the WHATWG Encoding Standard maps
# the Latin-1 and ASCII labels to Windows-1252, the GB2312 family to GB18030, ...).
_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "utf7": "utf-7",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "cp936": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "chinese": "gb18030",
    "csgb2312": "gb18030",
    "big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "default": "",
    "charset": "",
}
# When a declared CJK charset does not fit the bytes, its neighbours usually do.
_FAMILIES = {
    "gb18030": ("gb18030", "big5hkscs"),
    "big5hkscs": ("big5hkscs", "gb18030"),
    "iso2022_jp": ("cp932", "euc_jis_2004", "iso2022_jp_ext"),
    "cp932": ("cp932", "euc_jis_2004"),
    "euc_jp": ("euc_jis_2004", "cp932"),
    "cp949": ("cp949", "iso2022_kr"),
}
_MULTIBYTE = {"gb18030", "big5hkscs", "cp932", "euc_jp", "euc_jis_2004", "cp949", "iso2022_jp"}


def _codec(label: str | None) -> str | None:
    """Return the Python codec for a charset label, or None when it names none we know."""
    if not label:
        return None
    text = str(label).strip().strip("\"'").strip().lower()
    candidates = [text]
    token = re.match(r"[a-z0-9_.:-]+", text)
    if token and token.group(0) != text:
        candidates.append(token.group(0))  # "utf-8 content-transfer-encoding: ..." and such
    if candidates[-1].startswith("x-"):
        candidates.append(candidates[-1][2:])
    for cand in candidates:
        if cand in _ALIASES:
            return _ALIASES[cand] or None
        try:
            name = codecs.lookup(cand).name
        except (LookupError, ValueError):
            continue
        if name in ("latin-1", "iso8859-1", "ascii"):
            return "cp1252"
        return _ALIASES.get(name, name) or None
    return None


def _cp1252(data: bytes) -> str:
    """Windows-1252, with the five bytes it leaves undefined read as Latin-1."""
    return data.decode("cp1252", "_helpdesk_latin1")


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("_helpdesk_latin1", _latin1_fallback)


# What each byte that is not UTF-8 reads as: Windows-1252, the five it leaves undefined
# as Latin-1; keyed by the lone surrogate that "surrogateescape" decoding leaves for it.
_STRAY_BYTES = {0xDC00 + b: _cp1252(bytes([b])) for b in range(0x80, 0x100)}


def _utf8_repaired(data: bytes) -> str:
    """UTF-8 where the bytes are UTF-8, Windows-1252 for the bytes that are not.

    One pass: decoding again from each stray byte made `b"a\\xff" * n` quadratic.
    """
    return data.decode("utf-8", "surrogateescape").translate(_STRAY_BYTES)


def _guess_undeclared(data: bytes) -> str | None:
    """Guess Cyrillic or CJK for undeclared 8-bit text; None leaves it to UTF-8/Windows-1252.

    Latin text has its accented letters inside ASCII words ("café", "Grüße"); Cyrillic
    and CJK text has whole words of 8-bit bytes. Single-byte Cyrillic (KOI8-R,
    Windows-1251) has its letters in 0xC0-0xFF, and the right reading of the two is
    the one whose letters are the frequent ones of Russian; EUC-encoded CJK comes in
    byte pairs of 0xA1-0xFE (and 8 bytes at least: a short text stays ambiguous).
    """
    runs = [m.group() for m in _HIGH_RUN.finditer(data)]
    total = sum(len(r) for r in runs)
    if total < 4:
        return None
    in_words = sum(1 for m in _HIGH_RUN.finditer(data) if _next_to_letter(data, m))
    letters = sum(1 for r in runs for b in r if b >= 0xC0)
    if in_words <= len(runs) // 10 and total / len(runs) >= 3 and letters >= 0.9 * total:
        scores = {cs: _russian_score(data.decode(cs)) for cs in ("koi8_r", "cp1251")}
        best = max(scores, key=scores.__getitem__)
        if scores[best] >= 40:
            return best
    if total >= 8 and all(len(r) % 2 == 0 and min(r) >= 0xA1 for r in runs):
        return _guess_euc(data)
    return None


def _next_to_letter(data: bytes, match: re.Match[bytes]) -> bool:
    before = data[match.start() - 1 : match.start()]
    after = data[match.end() : match.end() + 1]
    return before.isalpha() or after.isalpha()


# Russian letters, most frequent first, and what each weighs (about its frequency in
# per mille: Russian text averages 55-60, a wrong reading about 30 or less).
_RUSSIAN = "оеаинтсрвлкмдпуяыьгзбчйхжшюцщэфъё"
_RUSSIAN_WEIGHT = {c: max(1, 110 - 4 * i) for i, c in enumerate(_RUSSIAN)}


def _russian_score(text: str) -> float:
    weights = [_RUSSIAN_WEIGHT.get(c.lower(), 0) for c in text if "\u0400" <= c <= "\u04ff"]
    return sum(weights) / len(weights) if len(weights) >= 3 else 0.0


def _guess_euc(data: bytes) -> str:
    """Pick EUC-JP, EUC-KR or GB for EUC-looking bytes (a heuristic, for undeclared text).

    Japanese has kana, which sit in rows 0xA4/0xA5; Korean writes short words between
    spaces, in the Hangul rows 0xB0-0xC8; Chinese runs long without spaces.
    """
    runs = re.findall(rb"[\xa1-\xfe]+", data)
    leads = [run[i] for run in runs for i in range(0, len(run) - 1, 2)]
    if not leads:
        return "gb18030"
    kana = sum(1 for b in leads if b in (0xA4, 0xA5)) / len(leads)
    hangul = sum(1 for b in leads if 0xB0 <= b <= 0xC8) / len(leads)
    mean_run = len(leads) / len(runs)
    if kana > 0.2:
        return "euc_jis_2004"
    if hangul > 0.8 and mean_run < 3.5:
        return "cp949"
    return "gb18030"


def decode_bytes(data: bytes, charset: str | None = None, hints: tuple[str, ...] = ()) -> str:
    """Decode text whose charset may be missing, wrong or unknown; never fail.

    Order: the declared charset; when it does not fit (or there is none), UTF-8, the
    charsets the message declares elsewhere (`hints`) and their relatives; EUC-looking
    CJK bytes; and last UTF-8 with the stray bytes read as Windows-1252. The result
    holds no NUL and no lone surrogate (a database would refuse both).
    """
    return clean_text(_decode(data, charset, hints))


def clean_text(text: str) -> str:
    """Drop NULs and replace lone surrogates, which a database would refuse."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _decode(data: bytes, charset: str | None, hints: tuple[str, ...]) -> str:
    codec = _codec(charset)
    if codec:
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if codec in ("cp1252", "cp1254", "cp874") and not data.isascii():
                # A single-byte label on valid multi-byte UTF-8 is a mislabel, not Latin.
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return text
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    tried = set()
    single_byte = None
    for label in (charset, *hints):
        base = _codec(label)
        if base and base not in _MULTIBYTE and base not in _FAMILIES and base != "cp1252":
            single_byte = single_byte or base  # Cyrillic, Central European...: after CJK
        for cand in _FAMILIES.get(base or "", (base,) if base in _MULTIBYTE else ()):
            if cand in tried:
                continue
            tried.add(cand)
            try:
                return data.decode(cand)
            except (UnicodeDecodeError, LookupError):
                continue
    if single_byte:
        try:
            return data.decode(single_byte)
        except (UnicodeDecodeError, LookupError):
            pass
    guess = _guess_undeclared(data)
    if guess:
        try:
            return data.decode(guess)
        except UnicodeDecodeError:
            pass
    if codec in _MULTIBYTE:
        return data.decode(codec, "replace")
    return _utf8_repaired(data)
