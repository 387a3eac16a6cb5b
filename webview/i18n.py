"""French and English for the pages: Babel catalogues, chosen per request.

The .po files are the source (webview/translations/<lang>/LC_MESSAGES/messages.po,
English being the language of the templates); they are compiled in memory when
the app starts, so no generated .mo file is kept anywhere.
"""

from __future__ import annotations

import gettext
import io
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton
from babel.dates import format_time as babel_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from helpdesk.store import as_datetime

__all__ = ["LANGUAGES", "load_catalogues", "pick_language", "format_time"]

LANGUAGES = ("fr", "en")
TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def load_catalogues() -> dict[str, gettext.NullTranslations]:
    """Compile every .po into a Translations object; English is the templates' own text."""
    catalogues: dict[str, gettext.NullTranslations] = {"en": gettext.NullTranslations()}
    for language in LANGUAGES:
        po = TRANSLATIONS / language / "LC_MESSAGES" / "messages.po"
        if not po.exists():
            continue
        with po.open("rb") as fh:
            catalogue = read_po(fh, locale=language)
        mo = io.BytesIO()
        write_mo(mo, catalogue)
        mo.seek(0)
        catalogues[language] = Translations(fp=mo)
    return catalogues


def pick_language(accept_languages: object, queue_language: str) -> str:
    """The reader's language if we speak it (Accept-Language), else the queue's."""
    best = getattr(accept_languages, "best_match", lambda _l: None)(LANGUAGES)
    return best or (queue_language if queue_language in LANGUAGES else "en")


@lru_cache(maxsize=4096)
def format_time(value: datetime | str | None, language: str, zone: str) -> str:
    """A stored time (aware, or naive UTC as SQLite returns it) in the reader's words,
    to the minute: "28 nov. 2026, 09:14", "Nov 28, 2026, 9:14 AM"."""
    if value is None:
        return ""
    # Cached: Babel parses its locale data at every call, and a page shows the same
    # stored times again and again.
    moment = as_datetime(value)
    tz = ZoneInfo(zone)
    day = format_skeleton("yMMMd", moment, tzinfo=tz, locale=language)
    return f"{day}, {babel_time(moment, format='short', tzinfo=tz, locale=language)}"
