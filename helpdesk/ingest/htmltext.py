"""HTML -> readable plain text with the stdlib parser, for mails that have no text part.

Paragraphs, headings, lists and tables are set apart by a blank line; a `<div>`, a list
item or a table row starts a new line; `<br>` breaks the line where it stands. List
items read `- `, quoted replies (`<blockquote>`) `> `, `<pre>` stays as written;
scripts, styles and the document head are dropped. Broken markup (unclosed tags, a
missing `</head>`) gives the text it has.

The stdlib parser is quadratic on some broken markup: at the end of the input, each
construct it cannot finish (`<a<a<a...`, `</</`, unclosed comments, a tag whose quoted
values run to the end) is searched to the end of the input again from the next `<`.
_TextCollector keeps it linear: the text after the last `>` is never parsed (no
construct can end there: it is text, as the parser would make it), and a search that
once found no end is not made again; valid markup is read as before.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from html.parser import locatestarttagend_tolerant  # type: ignore[attr-defined]  # private: no stub

__all__ = ["html_to_text"]

# Blocks that stand apart (a blank line around them) and those that only start a line.
_PARAGRAPH = {
    "blockquote", "dl", "fieldset", "figure", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "ol", "p", "pre", "table", "ul",
}  # fmt: skip
_LINE = {
    "address", "article", "aside", "center", "dd", "div", "dt", "figcaption", "footer",
    "header", "li", "main", "nav", "section", "tr",
}  # fmt: skip
_SKIP = {"script", "style", "head", "title", "template", "noscript", "xml"}
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0\u2000-\u200b\u3000]+")
# Quoted replies deeper than this are shown at this depth: "> " per level on every line
# of 100,000 nested blockquotes was quadratic output.
MAX_QUOTE_DEPTH = 30
_COMMENT_CLOSE = re.compile(r"--\s*>")  # as _markupbase searches them
_SECTION_CLOSE = {"cdata": re.compile(r"]\s*]\s*>"), "ms": re.compile(r"]\s*>")}
_MS_SECTIONS = {"if", "else", "endif"}
_DECL_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*")


class _TextCollector(HTMLParser):
    """Builds the lines of the text, each finished as it ends (quote marks, spaces), with
    the breaks the blocks ask for.

    A line is kept as its final string at once: a tuple per line and a second list
    took a 25 MB HTML-only mail's parse 100 MB over the rest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.last_quote = 0  # the quote depth of the last line ended
        self.line: list[str] = []
        self.line_quote = 0
        self.line_pre = False
        self.pending = 0  # line breaks asked for by the blocks since the last text
        self.skip: list[str] = []
        self.pre = 0
        self.quote = 0
        # From where on a search for an end already failed: (the text searched, offset).
        self.unclosed: dict[str, tuple[str, int]] = {}

    def _end_line(self) -> None:
        self._add("".join(self.line), self.line_quote, self.line_pre)
        self.line, self.line_pre = [], False

    def _add(self, text: str, quote: int, pre: bool) -> None:
        line = text.rstrip() if pre else " ".join(text.split())
        self.lines.append(("> " * min(quote, MAX_QUOTE_DEPTH) + line).rstrip())
        self.last_quote = quote

    def _ask(self, breaks: int) -> None:
        if self.line or self.lines:
            self.pending = max(self.pending, breaks)

    def _write(self, text: str, pre: bool = False) -> None:
        if self.pending:
            self._end_line()
            blank_quote = min(self.last_quote, self.quote)  # no ">" opening a new quote
            for _ in range(self.pending - 1):
                self._add("", blank_quote, False)
            self.pending = 0
        if not self.line:
            self.line_quote = self.quote
        self.line.append(text)
        self.line_pre = self.line_pre or pre

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.skip.clear()  # a `<head>` that was never closed ends here
        elif tag in _SKIP:
            self.skip.append(tag)
        elif self.skip:
            return
        elif tag == "br":
            self._write("")
            self._end_line()
        elif tag in _PARAGRAPH or tag in _LINE:
            self._ask(2 if tag in _PARAGRAPH else 1)
            if tag == "blockquote":
                self.quote += 1
            elif tag == "pre":
                self.pre += 1
            elif tag == "li":
                self._write("- ")
        elif tag in ("td", "th"):
            self._write(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr"):
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            if tag in self.skip:
                while self.skip and self.skip.pop() != tag:
                    pass
            return
        if self.skip:
            return
        if tag in _PARAGRAPH or tag in _LINE:
            self._ask(2 if tag in _PARAGRAPH else 1)
            if tag == "blockquote" and self.quote:
                self.quote -= 1
            elif tag == "pre" and self.pre:
                self.pre -= 1

    # -- the parser's searches, each made at most once per end --------------------

    def _failed_before(self, kind: str, i: int) -> bool:
        found = self.unclosed.get(kind)
        return found is not None and found[0] is self.rawdata and i >= found[1]

    def _failed(self, kind: str, i: int) -> None:
        self.unclosed[kind] = (self.rawdata, i)

    def parse_comment(self, i: int, report: bool = True) -> int:
        # No "-->" after i means none after any later "<!--" either.
        if self._failed_before("comment", i):
            return -1
        end = super().parse_comment(i, report)
        if end < 0:
            self._failed("comment", i)
        return end

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        name = _DECL_NAME.match(self.rawdata, i + 3)
        kind = "ms" if name and name.group().lower() in _MS_SECTIONS else "cdata"
        if self._failed_before(kind, i):
            return -1
        end = super().parse_marked_section(i, report)
        if end < 0 and _SECTION_CLOSE[kind].search(self.rawdata, i + 3) is None:
            self._failed(kind, i)
        return end

    def check_for_whole_start_tag(self, i: int) -> int:
        """HTMLParser's, but once an unfinished tag was read past the next `>` (in quoted
        values), later tags are only sought up to their next `>`.

        The parser goes on after that `>`, and the next tag would read the same quoted
        values again: `<a b='>'` * n, unfinished at the end, was quadratic.
        """
        rawdata = self.rawdata
        end = len(rawdata)
        bounded = self._failed_before("tag", i)
        if bounded:
            gt = rawdata.find(">", i)
            end = end if gt < 0 else gt + 1
        m = locatestarttagend_tolerant.match(rawdata, i, end)
        if m is None:  # cannot happen: the pattern matches "<" + a letter, found by the caller
            return i + 1
        j = m.end()
        following = rawdata[j : j + 1] if j < end else ""
        if following == ">":
            return j + 1
        if following == "/" and rawdata.startswith("/>", j):
            return j + 2
        if (
            following in ("", "/")
            or following.isascii()
            and (following.isalpha() or following == "=")
        ):
            if not bounded:
                gt = rawdata.find(">", i)
                if gt < 0 or j > gt:
                    self._failed("tag", i)
            return -1  # unfinished: the parser takes it as text up to the next ">"
        return j if j > i else i + 1

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            for i, part in enumerate(data.replace("\r\n", "\n").split("\n")):
                if i:
                    self._write("", pre=True)
                    self._end_line()
                self._write(part, pre=True)
        elif data.strip() or self.line:
            self._write(_SPACES.sub(" ", data))


def html_to_text(html: str) -> str:
    """Return the visible text of an HTML document, one line per block."""
    collector = _TextCollector()
    # After the last ">" nothing can end a tag, a comment or a declaration: the parser
    # would give every "<" there as text, searching to the end from each of them.
    last = html.rfind(">") + 1
    try:
        collector.feed(html[:last])
        collector.close()
        if last < len(html) and collector.cdata_elem is None:
            collector.handle_data(unescape(html[last:]))
    except Exception:  # noqa: BLE001 - a broken document still gives its text so far
        pass
    collector._end_line()
    text = "\n".join(collector.lines)
    del collector  # its lines: the joined text is all that is needed now
    text = re.sub(r"\n(?:(?:> ?)*\n){2,}", "\n\n", text)
    return text.strip("\n")
