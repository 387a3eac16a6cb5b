"""Trim the quoted earlier message from a reply, for the text a follow-up shows.

A reply to one of our notifications quotes it, and often the whole thread before it.
The ticket shows what the writer added; the full text is stored elsewhere. What is
looked for, in this order:

1. Our own reply marker (the first line of every notification we send), quoted or
   not, re-wrapped or not: the cut goes there, and moves up over what the writer's
   client put just above it (an attribution line, "Le ... a écrit :", "On ... wrote:",
   "Am ... schrieb ...:", possibly wrapped over two or three lines; or Outlook's
   "From:/Sent:/To:/Subject:" block with its separator line).
2. In what is left, the first Outlook header block: "-----Original Message-----"
   (fr, de), or "From:"/"De :"/"Von:" followed by "Sent:"/"Envoyé :"/"Gesendet:"/
   "Date:", with the line of underscores or dashes above it. Outlook does not prefix
   the quoted text, so everything from there on is the earlier message.
3. In what is left, a block of '>' lines that runs to the end, with the attribution
   line above it. A bare quote block (no attribution) is kept when the writer answered
   between earlier quotes: that is an interleaved reply, read as a whole.

A cut that would leave nothing (the writer only quoted) is not made. Every pattern is
compiled once and is linear: this runs on each delivered mail, whatever its size.
"""

from __future__ import annotations

import re

__all__ = ["REPLY_MARKER_EN", "REPLY_MARKER_FR", "trim_quoted", "words_added"]

REPLY_MARKER_FR = "##- Répondez au-dessus de cette ligne -##"
REPLY_MARKER_EN = "##- Please reply above this line -##"

# Attribution lines are short; a longer line is not one.
_MAX_ATTRIBUTION = 400
# How far above a cut the attribution or header block of the quoting client is sought.
_LOOKBACK = 20

# Runs of blanks are possessive (`*+`) throughout: a long run that fails is not tried
# again from each of its positions. Patterns searched over the whole text start with
# "\n" (the text is searched with a "\n" in front): the engine then jumps from line to
# line instead of trying a match at every character.


def _marker_pattern(marker: str) -> str:
    # A client re-wrapping the quoted notification may break the line between any two
    # words (and inside "au-dessus"), the new line getting the quote prefix: words are
    # therefore separated by any run of white space and '>'.
    words = marker.strip("#- ").split()
    parts = [re.escape(word).replace(r"\-", r"-[\s>]*+").replace("é", "[ée]") for word in words]
    return r"##-[\s>]*+" + r"[\s>]++".join(parts) + r"[\s>]*+-##"


_MARKER = re.compile(
    "|".join(_marker_pattern(m) for m in (REPLY_MARKER_FR, REPLY_MARKER_EN)), re.IGNORECASE
)

# Quote prefixes as clients write them: ">", "> ", ">>", "> > ", after any blank
# (HTML-derived text keeps no-break spaces).
_QUOTE_PREFIX = re.compile(r"[^\S\n]*+(?:>[^\S\n]*+)*+")
_QUOTED_LINE = re.compile(r"\n[^\S\n]*+>")

# Matched on the reversed text: the blank and '>' lines at its end, without a Python
# loop over lines. Reversed, a quoted line is anything, then '>', then only blanks up
# to the line's (original) start; a run of blank lines is taken in one step.
_REVERSED_QUOTED_TAIL = re.compile(r"(?:\s++|[^\n]*>[^\S\n]*+(?:\n|\Z))*+")

# "Alice wrote:", "Helpdesk a écrit :", "Alice schrieb:", whatever came before.
_ATTRIBUTION_END = re.compile(r"(?:\bwrote|\bwrites|\ba\s++écrit|\bschrieb)\s*+:$", re.I)
# Thunderbird and Apple Mail in German name the writer after the verb:
# "Am 28.11.2026 um 09:00 schrieb Helpdesk <x@y>:".
_OPENER_DE = re.compile(r"\W*+am\s", re.IGNORECASE)
_SCHRIEB = re.compile(r"\bschrieb\b", re.IGNORECASE)
_OPENER = re.compile(r"\W*+(?:on|le|am|at)\s", re.IGNORECASE)
_DIGIT = re.compile(r"\d")

_LABEL_END = r"(?:[^\S\n]|\*)*+:"  # "From:", "De :" (no-break space), "**Sent:**"
_FROM = r"[^\S\n]*+\*{0,2}(?:from|de|von)" + _LABEL_END
_SENT = r"[^\S\n]*+\*{0,2}(?:sent|envoy[ée]|gesendet|date|datum)" + _LABEL_END
# Outlook (desktop: Sent; Mac and the web: Date) writes the header of the message it
# quotes as plain lines; one blank line may come between when the text is from HTML.
_OUTLOOK_HEADER = re.compile(r"\n" + _FROM + r"[^\n]*+\n(?:[^\S\n]*+\n)?" + _SENT, re.I)
_FROM_LINE = re.compile(_FROM, re.IGNORECASE)
_SENT_LINE = re.compile(_SENT, re.IGNORECASE)
_ORIGINAL = (
    r"[^\S\n]*+-{2,}+[^\S\n]*+(?:original message|message d['’]origine|message original"
    r"|ursprüngliche nachricht)[^\S\n]*+-{2,}+[^\S\n]*+"
)
_ORIGINAL_MESSAGE = re.compile(r"\n" + _ORIGINAL + r"(?=\n|\Z)", re.IGNORECASE)
_ORIGINAL_LINE = re.compile(_ORIGINAL, re.IGNORECASE)
_SEPARATOR = re.compile(r"(?:_{5,}|-{5,})")
# A forwarded message is what the writer sends, not a quote: its header is kept.
_FORWARD_HEADINGS = ("forwarded message", "message transféré", "weitergeleitete nachricht")


def trim_quoted(text: str) -> str:
    """Return the text the writer added, without the quoted earlier message and the
    attribution line; the text itself if nothing is recognised, or when the writer wrote
    nothing but quotes (then their words are in them): never ''."""
    return _trim(text, quotes_only_is_nothing=False)


def words_added(text: str) -> str:
    """The text the writer added above what they quote, like trim_quoted, but '' when
    they wrote nothing but the quote: for a reply whose sending is what it says (the
    answer to a request for proof), where a quote alone is no words of the writer."""
    return _trim(text, quotes_only_is_nothing=True)


def _trim(text: str, *, quotes_only_is_nothing: bool) -> str:
    kept = text
    for find_cut in (_marker_cut, _outlook_cut, _trailing_quote_cut):
        cut = find_cut(kept)
        if cut is None:
            continue
        trimmed = kept[:cut].rstrip()
        if trimmed:
            kept = trimmed
        elif quotes_only_is_nothing:
            return ""
        # else nothing but quotes before the cut: the writer's text is in them
    return kept


def _marker_cut(text: str) -> int | None:
    """Where our notification's quote starts: the marker line, or its attribution above."""
    # The line start and quote prefix of the line of the last marker seen: looked up
    # again from each of many markers on one long line, they were quadratic.
    line_start, prefix_end, seen = 0, -1, 0
    for match in _MARKER.finditer(text):
        newline = text.rfind("\n", seen, match.start())
        if newline >= 0:
            line_start, prefix_end = newline + 1, -1
        seen = match.start()
        if prefix_end < 0:
            prefix = _QUOTE_PREFIX.match(text, line_start)
            assert prefix is not None  # the pattern matches the empty string
            prefix_end = prefix.end()
        # The marker opens a notification; one inside a sentence is the writer's.
        if prefix_end < match.start():
            continue
        return _client_header_start(text, line_start)
    return None


def _client_header_start(text: str, cut: int) -> int:
    """Move a cut up over the attribution or Outlook header block just above it."""
    lines = _lines_above(text, cut)
    i = _first_filled(lines)
    if i is None:
        return cut
    starts = [cut]
    attribution = _attribution_start(lines, i)
    if attribution is not None:
        starts.append(attribution)
    for j in range(i, len(lines)):
        if _FROM_LINE.match(lines[j][1]) and _sent_below(lines, j):
            starts.append(_separator_start(text, lines[j][0]))
            break
    if _SEPARATOR.fullmatch(lines[i][1]) or _ORIGINAL_LINE.fullmatch(lines[i][1]):
        starts.append(lines[i][0])
    return min(starts)


def _sent_below(lines: list[tuple[int, str]], j: int) -> bool:
    """Tell whether the line under lines[j] (one blank line allowed) is a Sent/Date line."""
    for k in (j - 1, j - 2):
        if k < 0:
            return False
        if lines[k][1]:
            return _SENT_LINE.match(lines[k][1]) is not None
    return False


def _outlook_cut(text: str) -> int | None:
    """Where the first Outlook header block (or Original Message line) starts, if any."""
    padded = "\n" + text  # a match's start in padded is its line's start in text
    original = _ORIGINAL_MESSAGE.search(padded)
    end = original.start() if original else len(padded)
    for match in _OUTLOOK_HEADER.finditer(padded, 0, end):
        if not _is_forward(text, match.start()):
            return _separator_start(text, match.start())
    return original.start() if original else None


def _is_forward(text: str, start: int) -> bool:
    """Tell whether the header block at start follows a "Forwarded message" heading."""
    lines = _lines_above(text, start)
    i = _first_filled(lines)
    if i is None:
        return False
    heading = lines[i][1].lower()
    return heading.startswith("--") and any(h in heading for h in _FORWARD_HEADINGS)


def _separator_start(text: str, start: int) -> int:
    """Move a cut up over the underscore or dash line Outlook puts above its header."""
    lines = _lines_above(text, start)
    i = _first_filled(lines)
    if i is not None and (
        _SEPARATOR.fullmatch(lines[i][1]) or _ORIGINAL_LINE.fullmatch(lines[i][1])
    ):
        return lines[i][0]
    return start


def _trailing_quote_cut(text: str) -> int | None:
    """Where the block of '>' lines running to the end starts, with its attribution."""
    tail = _REVERSED_QUOTED_TAIL.match(text[::-1])
    assert tail is not None  # the pattern matches the empty string
    padded = "\n" + text  # a match's start in padded is its line's start in text
    first_quoted = _QUOTED_LINE.search(padded, len(text) - tail.end())
    if first_quoted is None:
        return None
    start = first_quoted.start()
    lines = _lines_above(text, start)
    i = _first_filled(lines)
    if i is not None:
        attribution = _attribution_start(lines, i)
        if attribution is not None:
            return attribution
    if _QUOTED_LINE.search(padded, 0, start + 1):
        return None  # the writer answered between quotes: an interleaved reply, kept whole
    return start


def _attribution_start(lines: list[tuple[int, str]], i: int) -> int | None:
    """Where the attribution ending at lines[i] starts (it may be wrapped), or None."""
    line = lines[i][1]
    if len(line) > _MAX_ATTRIBUTION:
        return None
    if not _OPENER.match(line):
        # Gmail and Thunderbird wrap a long attribution; the pieces are only taken
        # together when they read as one: opener and date first, the verb at the end.
        for n in (2, 3):
            top = i + n - 1
            if top >= len(lines):
                break
            first = lines[top][1]
            pieces = [lines[k][1] for k in range(top, i - 1, -1)]
            if not all(pieces) or sum(map(len, pieces)) > _MAX_ATTRIBUTION:
                break
            if (
                _OPENER.match(first)
                and _DIGIT.search(first)
                and not first.endswith((".", "!", "?", ";"))
                and _reads_as_attribution(" ".join(pieces))
            ):
                return lines[top][0]
    return lines[i][0] if _reads_as_attribution(line) else None


def _reads_as_attribution(line: str) -> bool:
    """Tell whether one (unquoted, stripped) line is an attribution line."""
    if _ATTRIBUTION_END.search(line):
        return True
    return bool(line.endswith(":") and _OPENER_DE.match(line) and _SCHRIEB.search(line))


def _lines_above(text: str, end: int) -> list[tuple[int, str]]:
    """The lines above offset end (a line start), nearest first: (start, unquoted text)."""
    lines: list[tuple[int, str]] = []
    pos = end
    while pos > 0 and len(lines) < _LOOKBACK:
        start = text.rfind("\n", 0, pos - 1) + 1
        line = text[start : pos - 1]
        prefix = _QUOTE_PREFIX.match(line)
        assert prefix is not None  # the pattern matches the empty string
        lines.append((start, line[prefix.end() :].strip()))
        pos = start
    return lines


def _first_filled(lines: list[tuple[int, str]]) -> int | None:
    """The index of the first line with text in it, or None."""
    for i, (_, line) in enumerate(lines):
        if line:
            return i
    return None
