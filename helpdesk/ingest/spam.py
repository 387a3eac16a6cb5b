"""The spam verdict of the MTA's filter, read from the headers it writes.

SpamAssassin (spamass-milter, amavis, spamc) writes `X-Spam-Flag: YES` and
`X-Spam-Status: Yes, score=9.4 required=5.0 ...`; rspamd's milter writes `X-Spam: Yes`,
`X-Spamd-Result: default: True [16.20 / 15.00]; ...` and `X-Rspamd-Action: add header`.
A sysadmin can name other headers in `[spam]` (a value pattern or a score threshold).

Anyone can write these headers, so a positive verdict is honoured wherever it stands:
it can only hold the sender's own mail, which a technician can release. A negative one
(`X-Spam-Flag: NO`, a low score) is never a reason to trust anything: it says nothing.

Header values are a stranger's text: each rule reads at most MAX_VALUE characters of
each value, with patterns that run in linear time. Every copy of a header is read: a
milter may add its header below the ones the sender wrote, so the first copies could
all be the sender's "NO".
"""

from __future__ import annotations

import re
from functools import lru_cache

from helpdesk.config import Spam
from helpdesk.config import SpamHeader
from helpdesk.ingest.parsed import ParsedMail

__all__ = ["spam_reason", "score_of", "MAX_VALUE"]

# A filter's verdict is in the first characters of its header; what follows (the list
# of tests fired) is not read.
MAX_VALUE = 512

# "Yes, score=9.4 required=5.0 ..." or a bare "Yes" (amavis without the score).
_SA_STATUS = re.compile(r"\s*yes\s*(?:,|$)", re.I)
# "default: True [16.20 / 15.00]; ...": the metric, the verdict, score / required.
_RSPAMD_RESULT = re.compile(
    r"\s*[\w.-]{1,64}\s*:\s*(true|false)\s*\[\s*(-?\d{1,9}(?:\.\d{1,9})?)\s*/"
    r"\s*(-?\d{1,9}(?:\.\d{1,9})?)\s*\]",
    re.I,
)
# rspamd's actions that mean spam; greylist, soft reject (a temporary refusal) and
# no action do not.
_RSPAMD_SPAM_ACTIONS = {"reject", "add header", "rewrite subject"}
_NUMBER = re.compile(r"[-+]?\d{1,9}(?:[.,]\d{1,9})?")


def _values(mail: ParsedMail, name: str) -> list[str]:
    return [v[:MAX_VALUE] for v in mail.headers.get(name.lower(), [])]


def _shown(name: str, value: str) -> str:
    return f"{name}: {' '.join(value.split())[:80]}"


def score_of(value: str) -> float | None:
    """The first number in a header value ("7.2", "score=7,2"), or None."""
    found = _NUMBER.search(value[:MAX_VALUE])
    return float(found.group(0).replace(",", ".")) if found else None


def _spamassassin(mail: ParsedMail) -> str | None:
    for value in _values(mail, "X-Spam-Flag"):
        if value.strip().lower() == "yes":
            return _shown("X-Spam-Flag", value)
    for value in _values(mail, "X-Spam-Status"):
        if _SA_STATUS.match(value):
            return _shown("X-Spam-Status", value)
    return None


def _rspamd(mail: ParsedMail) -> str | None:
    for value in _values(mail, "X-Spam"):
        if value.strip().lower() in ("yes", "true"):
            return _shown("X-Spam", value)
    for value in _values(mail, "X-Rspamd-Action"):
        action = " ".join(value.replace("_", " ").split()).lower()
        if action in _RSPAMD_SPAM_ACTIONS:
            return _shown("X-Rspamd-Action", value)
    for value in _values(mail, "X-Spamd-Result"):
        found = _RSPAMD_RESULT.match(value)
        if found and (
            found.group(1).lower() == "true" or float(found.group(2)) >= float(found.group(3))
        ):
            return _shown("X-Spamd-Result", value)
    return None


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


def _configured(mail: ParsedMail, rule: SpamHeader) -> str | None:
    for value in _values(mail, rule.name):
        if rule.pattern is not None and _compiled(rule.pattern).search(value):
            return _shown(rule.name, value) + " (matches [spam] pattern)"
        if rule.threshold is not None:
            score = score_of(value)
            if score is not None and score >= rule.threshold:
                return _shown(rule.name, value) + f" (score >= {rule.threshold:g})"
    return None


def spam_reason(mail: ParsedMail, spam: Spam) -> str | None:
    """Why the filter's headers call this mail spam (one line), or None when none does."""
    if spam.spamassassin:
        reason = _spamassassin(mail)
        if reason:
            return reason
    if spam.rspamd:
        reason = _rspamd(mail)
        if reason:
            return reason
    for rule in spam.headers:
        reason = _configured(mail, rule)
        if reason:
            return reason
    return None
