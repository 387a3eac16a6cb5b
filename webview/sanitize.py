"""The stored, already cleaned HTML of an entry (helpdesk/htmlsafe.py), made into what
one page shows: its `cid:` pictures pointed at the ticket's attachments, its remote
pictures left out until the reader asks (a remote image tells the sender when and
where the mail was read).

One linear pass over the `<img>` tags of nh3's output, whose attribute values never
hold `"` or `>`: a page costs the same whatever the mail, and nothing here can make an
image point anywhere but at our attachment URLs or, on request, a remote http(s) URL.
"""

from __future__ import annotations

import html as htmllib
import re
from urllib.parse import unquote

__all__ = ["page_html", "has_remote_images"]

_IMG = re.compile(r"<img\b[^>]*>")
_SRC = re.compile(r'\ssrc="([^"]*)"')
_REMOTE = ("http://", "https://")


def page_html(clean_html: str, cid_urls: dict[str, str], remote_images: bool = False) -> str:
    """The cleaned HTML with its pictures resolved for one page."""

    def picture(match: re.Match[str]) -> str:
        tag = match.group(0)
        src = _SRC.search(tag)
        if src is None:
            return tag
        value = htmllib.unescape(src.group(1))
        kept = ""
        if value[:4].lower() == "cid:":
            url = cid_urls.get(unquote(value[4:]).strip().strip("<>").lower())
            kept = f' src="{htmllib.escape(url)}"' if url else ""
        elif value.startswith(_REMOTE) and remote_images:
            kept = src.group(0)
        return tag[: src.start()] + kept + tag[src.end() :]

    return _IMG.sub(picture, clean_html)


def has_remote_images(clean_html: str) -> bool:
    """Tell whether a cleaned body has a picture the reader must ask for."""
    for match in _IMG.finditer(clean_html):
        src = _SRC.search(match.group(0))
        if src is not None and htmllib.unescape(src.group(1)).startswith(_REMOTE):
            return True
    return False
