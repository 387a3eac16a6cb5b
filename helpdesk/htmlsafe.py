"""HTML mail bodies made safe to show in our pages, once, when the mail arrives (nh3).

No scripts, no event handlers, no styles (CSS expressions, overlays), no frames, forms
or objects, links only to http(s) and mailto. Images keep only a `cid:` source (the
mail's own pictures) or an absolute http(s) one (remote: shown only when the reader
asks, see webview/sanitize.py); a protocol-relative `//host` or `/\\host` is remote
too, and any other source (a path on our own site, such as `/t/...`) is dropped.

nh3 (html5ever) is quadratic in the nesting depth, in the character references of
one text and in the attributes of one tag: 16k nested `<div>` take a second, 200k
nested `<blockquote>` three minutes. So only HTML within bounds is cleaned, checked
by one linear pass first; past them the mail is shown as its text, and its HTML
travels as an attachment (the raw mail is kept whole in any case).
"""

from __future__ import annotations

import os
import re
import select
import signal
import time

__all__ = ["MAX_CHARS", "MAX_DEPTH", "too_costly", "clean", "prepare"]

# Bounds within which nh3 cleans in well under a second on this hardware (see
# tests/test_htmlsafe.py): newsletters run to a few hundred kB, nested quotes of a long
# thread to a few dozen levels.
MAX_CHARS = 1_000_000
MAX_DEPTH = 100
MAX_REFERENCES = 20_000  # `&`: character references, and stray ampersands
MAX_ATTRIBUTES = 100  # `=` inside one tag

_TAG_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9:-]*)")
# Elements that never hold others, and those whose end tag is optional: neither makes
# html5ever's stack of open elements deeper by nesting.
_FLAT = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th",
    "thead", "tbody", "tfoot", "colgroup", "caption", "rb", "rt", "rp", "rtc",
}  # fmt: skip

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "div", "dl", "dt",
    "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "ol", "p", "pre",
    "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "*": {"title", "lang", "dir"},
}
_ABSOLUTE = re.compile(r"(?i)(https?):/*")
_URL_BLANKS = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))


def too_costly(html: str) -> str | None:
    """Say why cleaning this HTML could take long (size, depth, references, attributes),
    in one linear pass; None when it is within bounds.

    The depth is an estimate from above: every start tag but the flat ones opens a level,
    every end tag closes one (comments and attribute values are not told apart).
    """
    if len(html) > MAX_CHARS:
        return f"{len(html)} characters of HTML (cleaned up to {MAX_CHARS})"
    references = html.count("&")
    if references > MAX_REFERENCES:
        return f"{references} character references (cleaned up to {MAX_REFERENCES})"
    depth = deepest = 0
    pos = 0
    while (start := html.find("<", pos)) >= 0:
        name = _TAG_NAME.match(html, start + 1)
        if name is None:
            pos = start + 1
            continue
        end = html.find(">", name.end())
        if end < 0:
            end = len(html)  # the rest is one tag: nothing after it to scan
        if html.count("=", name.end(), end) > MAX_ATTRIBUTES:
            return f"a tag with over {MAX_ATTRIBUTES} attributes"
        tag = name.group(1).lower()
        if name.group().startswith("/"):
            depth = max(depth - 1, 0) if tag not in _FLAT else depth
        elif tag not in _FLAT:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return f"HTML nested over {MAX_DEPTH} levels deep"
        pos = end + 1
    return None


def _keep(tag: str, attribute: str, value: str) -> str | None:
    """The value a link or a picture keeps, made canonical; None to drop it.

    Browsers drop tabs and line breaks from URLs, read `\\` as `/` and `https:x` as a
    path on our own site: the value is read the same way before it is judged.
    """
    if attribute not in ("src", "href"):
        return value
    url = _URL_BLANKS.sub("", value).strip(_C0_AND_SPACE)
    slashed = url.replace("\\", "/")
    if slashed.startswith("//"):
        rest = slashed.lstrip("/")
        return "https://" + rest if rest else None  # protocol-relative: remote
    absolute = _ABSOLUTE.match(slashed)
    if absolute and slashed[absolute.end() :]:
        return absolute.group(1).lower() + "://" + slashed[absolute.end() :]
    if tag == "img" and attribute == "src" and url.lower().startswith("cid:"):
        return url
    if attribute == "href" and url.lower().startswith("mailto:"):
        return url
    return None  # a relative path points into our own site; cid: is for pictures only


def clean(html: str) -> str:
    """The HTML made safe (call too_costly first: this may be slow on hostile input)."""
    import nh3  # only mail with an HTML body pays for it

    return str(
        nh3.clean(
            html,
            tags=_TAGS,
            clean_content_tags={"script", "style", "title", "noscript", "template"},
            attributes=_ATTRIBUTES,
            attribute_filter=_keep,
            url_schemes={"http", "https", "mailto", "cid"},
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    )


def prepare(html: str | None) -> tuple[str | None, str | None]:
    """(the cleaned HTML, None), or (None, why it is not cleaned) past the bounds.

    Small HTML is cleaned here; larger HTML in a forked child given CLEAN_SECONDS, then
    killed: html5ever has super-linear paths no cheap check foresees (misnested
    formatting tags reparent blocks: 50k `<div>x</b>` after ten `<b>` take six seconds,
    200k take eight minutes), and a Rust call cannot be interrupted from Python.
    """
    if not html or not html.strip():
        return None, None
    reason = too_costly(html)
    if reason is not None:
        return None, reason
    if len(html) <= IN_PROCESS_CHARS:
        return clean(html), None
    cleaned = _clean_in_child(html, CLEAN_SECONDS)
    if cleaned is None:
        return None, f"cleaning took over {CLEAN_SECONDS:g} s"
    return cleaned, None


# Below this size every shape we know cleans in milliseconds; above it, in a child.
IN_PROCESS_CHARS = 64_000
CLEAN_SECONDS = 2.0


def _clean_in_child(html: str, seconds: float) -> str | None:
    """clean() in a forked child, its result read back through a pipe; None when it
    did not finish within `seconds` (the child is killed) or failed."""
    import nh3  # noqa: F401 - imported before the fork, never in the child

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: clean, write, leave without running the parent's exit code
        code = 1
        try:
            os.close(read_end)
            data = clean(html).encode("utf-8", "surrogatepass")
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    finished = False
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _w, _x = select.select([read_end], [], [], left)
            if not ready:
                break
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if not finished:
            _kill(pid)
        _, status = os.waitpid(pid, 0)
    if not finished or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    return b"".join(chunks).decode("utf-8", "surrogatepass")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
