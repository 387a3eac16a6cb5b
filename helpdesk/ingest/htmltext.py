"""HTML -> readable plain text with the stdlib parser, for mails that have no text part.

Paragraphs, headings, lists and tables are set apart by a blank line; a `<div>`, a list
item or a table row starts a new line; `<br>` breaks the line where it stands. List
items read `- `, quoted replies (`<blockquote>`) `> `, `<pre>` stays as written;
scripts, styles and the document head are dropped. Broken markup (unclosed tags, a
missing `</head>`) gives the text it has.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

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


class _TextCollector(HTMLParser):
    """Builds lines of (text, quote depth, preformatted) with the breaks the blocks ask for."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[str, int, bool]] = []
        self.line: list[str] = []
        self.line_quote = 0
        self.line_pre = False
        self.pending = 0  # line breaks asked for by the blocks since the last text
        self.skip: list[str] = []
        self.pre = 0
        self.quote = 0

    def _end_line(self) -> None:
        self.lines.append(("".join(self.line), self.line_quote, self.line_pre))
        self.line, self.line_pre = [], False

    def _ask(self, breaks: int) -> None:
        if self.line or self.lines:
            self.pending = max(self.pending, breaks)

    def _write(self, text: str, pre: bool = False) -> None:
        if self.pending:
            self._end_line()
            blank_quote = min(self.lines[-1][1], self.quote)  # no ">" opening a new quote
            for _ in range(self.pending - 1):
                self.lines.append(("", blank_quote, False))
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
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # noqa: BLE001 - a broken document still gives its text so far
        pass
    collector._end_line()
    lines = []
    for text, quote, pre in collector.lines:
        line = text.rstrip() if pre else " ".join(text.split())
        lines.append(("> " * quote + line).rstrip())
    text = "\n".join(lines)
    text = re.sub(r"\n(?:(?:> ?)*\n){2,}", "\n\n", text)
    return text.strip("\n")
