"""Decode text whose charset is missing, wrong or unknown: labels, fallbacks, guessing."""

from __future__ import annotations

import codecs
import re

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

    Counted with bytes methods, not byte by byte in Python (16 MB took seconds): each
    byte becomes a class letter (a: ASCII letter, l: other ASCII, h: 0x80-0xBF,
    H: 0xC0-0xFF), then each run of 8-bit bytes one h.
    """
    classes = data.translate(_BYTE_CLASS)
    total = len(classes) - classes.count(b"a") - classes.count(b"l")
    if total < 4:
        return None
    runs = classes.translate(_ONE_HIGH_CLASS)
    while b"hh" in runs:  # halves every run: few passes, each at the speed of memchr
        runs = runs.replace(b"hh", b"h")
    run_count = runs.count(b"h")
    # Runs with an ASCII letter before or after them (those with both counted once: with
    # every a doubled, no two "aha" share their a).
    in_words = runs.count(b"ah") + runs.count(b"ha") - runs.replace(b"a", b"aa").count(b"aha")
    letters = classes.count(b"H")
    if in_words <= run_count // 10 and total / run_count >= 3 and letters >= 0.9 * total:
        scores = {cs: _russian_score(data.decode(cs)) for cs in ("koi8_r", "cp1251")}
        best = max(scores, key=scores.__getitem__)
        if scores[best] >= 40:
            return best
    if total >= 8 and not _LOW_HIGH_BYTE.search(data) and not _ODD_HIGH_RUN.search(data):
        return _guess_euc(data)
    return None


_BYTE_CLASS = bytes(
    ord("a" if chr(b).isalpha() else "l") if b < 0x80 else ord("h" if b < 0xC0 else "H")
    for b in range(256)
)
_ONE_HIGH_CLASS = bytes.maketrans(b"H", b"h")
_LOW_HIGH_BYTE = re.compile(rb"[\x80-\xa0]")  # a run holding one is no EUC
_ODD_HIGH_RUN = re.compile(rb"(?<![\x80-\xff])(?:[\x80-\xff]{2})*+[\x80-\xff](?![\x80-\xff])")


# Russian letters, most frequent first, and what each weighs (about its frequency in
# per mille: Russian text averages 55-60, a wrong reading about 30 or less).
_RUSSIAN = "оеаинтсрвлкмдпуяыьгзбчйхжшюцщэфъё"
_RUSSIAN_WEIGHT = {c: max(1, 110 - 4 * i) for i, c in enumerate(_RUSSIAN)}
_CYRILLIC = re.compile("[\u0400-\u04ff]+")


def _russian_score(text: str) -> float:
    """The mean weight of the Cyrillic letters of a text (0 for fewer than 3)."""
    count = len(text) - len(_CYRILLIC.sub("", text))
    if count < 3:
        return 0.0
    weight = sum(w * (text.count(c) + text.count(c.upper())) for c, w in _RUSSIAN_WEIGHT.items())
    return weight / count


def _guess_euc(data: bytes) -> str:
    """Pick EUC-JP, EUC-KR or GB for EUC-looking bytes (a heuristic, for undeclared text).

    Japanese has kana, which sit in rows 0xA4/0xA5; Korean writes short words between
    spaces, in the Hangul rows 0xB0-0xC8; Chinese runs long without spaces.
    """
    run_count = len(_EUC_RUN.findall(data))
    leads = b"".join(_EUC_LEAD.findall(data))  # the first byte of each pair of each run
    if not leads:
        return "gb18030"
    kana = (leads.count(b"\xa4") + leads.count(b"\xa5")) / len(leads)
    hangul = (len(leads) - len(leads.translate(None, _HANGUL_ROWS))) / len(leads)
    mean_run = len(leads) / run_count
    if kana > 0.2:
        return "euc_jis_2004"
    if hangul > 0.8 and mean_run < 3.5:
        return "cp949"
    return "gb18030"


_EUC_RUN = re.compile(rb"[\xa1-\xfe]+")
_EUC_LEAD = re.compile(rb"([\xa1-\xfe])[\xa1-\xfe]")
_HANGUL_ROWS = bytes(range(0xB0, 0xC9))


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
