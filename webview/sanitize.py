"""HTML mail bodies made safe to show inside our page, with nh3 (ammonia).

No scripts, no event handlers, no styles (CSS expressions, overlays), no frames,
forms or objects, links only to http(s) and mailto, and no remote image until
the reader asks: a remote image tells the sender when and where the mail was read.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

import nh3

__all__ = ["safe_html", "inline_images", "has_remote_images"]

_CID_SRC = re.compile(r"""(src\s*=\s*["']?)cid:([^"'\s>]+)""", re.IGNORECASE)
_REMOTE_SRC = re.compile(r"""<img\b[^>]*\bsrc\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def inline_images(html: str, urls: dict[str, str]) -> str:
    """Point `cid:` images at the attachments they name (our own URLs, shown at once)."""

    def replace(match: re.Match[str]) -> str:
        url = urls.get(unquote(match.group(2)).strip("<>").lower())
        return match.group(1) + url if url else match.group(0)

    return _CID_SRC.sub(replace, html) if urls else html


def has_remote_images(html: str) -> bool:
    """Tell whether a body has an image the reader must ask for."""
    return _REMOTE_SRC.search(html) is not None


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


def _keep_images(_tag: str, attribute: str, value: str) -> str | None:
    return value


def _no_remote_images(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src" and not value.startswith("/"):
        return None  # the alt text stays; our own attachments (a path) load
    return value


def safe_html(html: str, remote_images: bool = False) -> str:
    """The sanitized HTML of a mail body; small ones are cached (stored bodies never change)."""
    if len(html) <= _CACHED_SIZE:
        return _cached(html, remote_images)
    return _clean(html, remote_images)


_CACHED_SIZE = 200_000


@lru_cache(maxsize=1024)
def _cached(html: str, remote_images: bool) -> str:
    return _clean(html, remote_images)


def _clean(html: str, remote_images: bool) -> str:
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "noscript", "template"},
        attributes=_ATTRIBUTES,
        attribute_filter=_keep_images if remote_images else _no_remote_images,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
