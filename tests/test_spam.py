"""The spam and bulk verdicts, in process: the filter headers read (ingest/spam.py), their
place among the machine-mail rules (ingest/classify.py), the [spam] settings.

The sample mails are the project's own, in tests/data/spam (ham-*.eml: negative
verdicts) and tests/data/bulk. End to end, through the pipe: tests/test_spam_pipe.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import ROOT
from conftest import write_config

from helpdesk.config import ConfigError
from helpdesk.config import Spam
from helpdesk.config import SpamHeader
from helpdesk.config import load_settings
from helpdesk.ingest.classify import OwnMarks
from helpdesk.ingest.classify import Verdict
from helpdesk.ingest.classify import classify
from helpdesk.ingest.parse import parse
from helpdesk.ingest.parsed import ParsedMail
from helpdesk.ingest.spam import spam_reason

DATA = Path(__file__).parent / "data"
OWN = OwnMarks(instance="helpdesk-univ", domains=("univ.example",))
BARRACUDA = Spam(headers=(SpamHeader("X-Barracuda-Spam-Score", threshold=5.0),))
SPAM_FILES = sorted(p for p in (DATA / "spam").glob("*.eml") if not p.name.startswith("ham-"))
HAM_FILES = sorted((DATA / "spam").glob("ham-*.eml"))
BULK_FILES = sorted((DATA / "bulk").glob("*.eml"))


def _verdict(raw: bytes, spam: Spam = BARRACUDA) -> Verdict | None:
    return classify(raw, parse(raw), {}, OWN, spam)


def _mail(*headers: tuple[str, str]) -> ParsedMail:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value)
    return ParsedMail(sender="x@example.org", headers=values)


# -- the sample mails --------------------------------------------------------------------


def test_the_sample_sets_are_there() -> None:
    assert len(SPAM_FILES) == 6 and len(HAM_FILES) == 4 and len(BULK_FILES) == 5


@pytest.mark.parametrize("path", SPAM_FILES, ids=lambda p: p.name)
def test_each_spam_sample_is_spam(path: Path) -> None:
    verdict = _verdict(path.read_bytes())
    assert verdict is not None and verdict.kind == "spam", verdict
    assert verdict.reason.startswith("X-"), verdict.reason  # names the header it read
    assert verdict.referenced_ids == ()


@pytest.mark.parametrize("path", HAM_FILES, ids=lambda p: p.name)
def test_each_negative_verdict_changes_nothing(path: Path) -> None:
    assert _verdict(path.read_bytes()) is None


@pytest.mark.parametrize("path", BULK_FILES, ids=lambda p: p.name)
def test_each_bulk_sample_is_bulk_but_an_autoresponder_answering_us(path: Path) -> None:
    verdict = _verdict(path.read_bytes())
    assert verdict is not None
    if path.name.startswith("autoreply-"):
        assert verdict.kind == "autoreply"
        assert verdict.referenced_ids[0] == "hd.1.5f2c9a0b1d3e4f60@univ.example"
    else:
        assert verdict.kind == "bulk", verdict


def test_a_configured_header_counts_only_when_configured() -> None:
    raw = (DATA / "spam" / "configured-barracuda.eml").read_bytes()
    assert _verdict(raw, Spam()) is None
    verdict = _verdict(raw)
    assert verdict is not None and verdict.kind == "spam"
    assert verdict.reason == "X-Barracuda-Spam-Score: 8.31 (score >= 5)"
    by_pattern = Spam(headers=(SpamHeader("X-Barracuda-Spam-Status", pattern=r"^yes\b"),))
    verdict = _verdict(raw, by_pattern)
    assert verdict is not None and "matches [spam] pattern" in verdict.reason


def test_filters_can_be_switched_off() -> None:
    sa = (DATA / "spam" / "spamassassin-milter.eml").read_bytes()
    rspamd = (DATA / "spam" / "rspamd-milter.eml").read_bytes()
    assert _verdict(sa, Spam(spamassassin=False)) is None
    assert _verdict(rspamd, Spam(rspamd=False)) is None
    assert _verdict(rspamd, Spam(spamassassin=False)) is not None


# -- the rules, one header at a time -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Spam-Flag", "YES"),
        ("X-Spam-Flag", " yes "),
        ("X-Spam-Status", "Yes, score=5.0 required=5.0 tests=BAYES_99"),
        ("X-Spam-Status", "Yes"),
        ("X-Spam", "Yes"),
        ("X-Spam", "true"),
        ("X-Rspamd-Action", "reject"),
        ("X-Rspamd-Action", "add header"),
        ("X-Rspamd-Action", "add_header"),
        ("X-Rspamd-Action", "rewrite subject"),
        ("X-Spamd-Result", "default: True [3.00 / 15.00]; X(1.0)"),
        ("X-Spamd-Result", "default: False [15.00 / 15.00]"),
        ("X-Spamd-Result", "default:False[20/15]"),
    ],
)
def test_positive_verdicts(header: str, value: str) -> None:
    reason = spam_reason(_mail((header, value)), Spam())
    assert reason is not None and reason.startswith(f"{header}: ")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Spam-Flag", "NO"),
        ("X-Spam-Flag", "YESTERDAY"),
        ("X-Spam-Status", "No, score=25.0 required=5.0"),
        ("X-Spam-Status", "Yesterday, score=9"),
        ("X-Spam", "No"),
        ("X-Rspamd-Action", "no action"),
        ("X-Rspamd-Action", "greylist"),
        ("X-Rspamd-Action", "soft reject"),
        ("X-Spamd-Result", "default: False [14.99 / 15.00]"),
        ("X-Spamd-Result", "default: False [-3.5 / 15.00]"),
        ("X-Spamd-Result", "default: [20 / 15]"),  # no verdict word: not rspamd's format
        ("X-Spam-Score", "99"),  # a score nobody named in [spam]
    ],
)
def test_negative_or_unreadable_verdicts(header: str, value: str) -> None:
    assert spam_reason(_mail((header, value)), Spam()) is None


def test_a_positive_verdict_wins_over_negative_ones_wherever_it_stands() -> None:
    # The sender may write "NO" above the filter's "YES" (or below): YES holds its mail.
    mail = _mail(("X-Spam-Flag", "NO"), ("X-Spam-Flag", "YES"))
    assert spam_reason(mail, Spam()) == "X-Spam-Flag: YES"
    mail = _mail(("X-Spam-Flag", "NO"), ("X-Spam-Status", "No, score=0.1"), ("X-Spam", "Yes"))
    assert spam_reason(mail, Spam()) == "X-Spam: Yes"


def test_spam_is_decided_before_threading_bulk_and_auto_replies() -> None:
    raw = (DATA / "spam" / "spamassassin-milter.eml").read_bytes()
    raw = raw.replace(
        b"Message-ID:",
        b"In-Reply-To: <hd.1.5f2c9a0b1d3e4f60@univ.example>\r\n"
        b"Auto-Submitted: auto-replied\r\nList-Id: <x.example>\r\nMessage-ID:",
    )
    verdict = _verdict(raw)
    assert verdict is not None and verdict.kind == "spam"


def test_precedence_bulk_answering_someone_elses_mail_is_bulk() -> None:
    raw = (DATA / "bulk" / "autoreply-precedence-bulk-answering-ours.eml").read_bytes()
    raw = raw.replace(b"hd.1.5f2c9a0b1d3e4f60@univ.example", b"hd.1.5f2c9a0b1d3e4f60@other.example")
    verdict = _verdict(raw)
    assert verdict is not None and verdict.kind == "bulk"


# -- hostile values: bounded and linear ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "default: True [" + "1" * 1_000_000,
        "default: False [" + " " * 1_000_000 + "20 / 15]",
        "Yes" + " " * 1_000_000 + ",",
        "x" * 1_000_000,
        "9" * 1_000_000,
        "-" * 500_000 + "1" * 500_000,
    ],
    ids=["digits", "blanks", "yes-blanks", "letters", "one-big-number", "signs"],
)
def test_a_hostile_value_is_read_in_bounded_time(value: str) -> None:
    names = ("X-Spam-Flag", "X-Spam-Status", "X-Spam", "X-Rspamd-Action", "X-Spamd-Result")
    mail = _mail(*[(name, value) for name in names], ("X-Barracuda-Spam-Score", value))
    rules = Spam(
        headers=(
            SpamHeader("X-Barracuda-Spam-Score", threshold=5.0),
            SpamHeader("X-Spam", pattern=r"(a|aa)+b"),
        )
    )
    started = time.perf_counter()
    spam_reason(mail, rules)
    assert time.perf_counter() - started < 0.2


def test_many_copies_of_a_header_are_read_in_bounded_time() -> None:
    mail = _mail(*[("X-Spam-Flag", "NO")] * 200_000, ("X-Spam-Flag", "YES"))
    started = time.perf_counter()
    # A milter may add its verdict below what the sender wrote: every copy is read.
    assert spam_reason(mail, Spam()) == "X-Spam-Flag: YES"
    assert time.perf_counter() - started < 0.5


# -- [spam] settings ---------------------------------------------------------------------


def _settings(tmp_path: Path, table: str) -> Spam:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'h.db'}", extra=f"[spam]\n{table}\n")
    return load_settings(path).spam


def test_spam_settings_default_to_both_filters_on(tmp_path: Path) -> None:
    assert _settings(tmp_path, "") == Spam(spamassassin=True, rspamd=True, headers=())


def test_spam_settings_read_switches_and_headers(tmp_path: Path) -> None:
    spam = _settings(
        tmp_path,
        "rspamd = false\nheaders = [\n"
        '  { name = "X-Barracuda-Spam-Score", threshold = 5 },\n'
        '  { name = "X-MS-Exchange-Organization-SCL", threshold = 5 },\n'
        '  { name = "X-Proofpoint-Spam", pattern = "^(spam|bulk)" },\n]',
    )
    assert spam.spamassassin and not spam.rspamd
    assert spam.headers == (
        SpamHeader("X-Barracuda-Spam-Score", threshold=5.0),
        SpamHeader("X-MS-Exchange-Organization-SCL", threshold=5.0),
        SpamHeader("X-Proofpoint-Spam", pattern="^(spam|bulk)"),
    )


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('rspamd = "yes"', "rspamd must be true or false"),
        ('headers = { name = "X" }', "headers must be a list"),
        ('headers = [{ pattern = "x" }]', "needs a name"),
        ('headers = [{ name = "X-A" }]', "needs a pattern or a threshold"),
        ('headers = [{ name = "X-A", pattern = "y", threshold = 1 }]', "(one)"),
        ('headers = [{ name = "X-A", pattern = "(" }]', "pattern:"),
        ('headers = [{ name = "X-A", threshold = "5" }]', "threshold must be a number"),
        ('headers = [{ name = "X A", threshold = 5 }]', "is not a header name"),
    ],
)
def test_bad_spam_settings_are_refused_with_their_reason(
    tmp_path: Path, table: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[spam\]") as caught:
        _settings(tmp_path, table)
    assert says in str(caught.value)


@pytest.mark.parametrize("example", ["etc/helpdesk.toml.example", "examples/helpdesk.toml"])
def test_the_example_configs_hold_spam_by_default(example: str, tmp_path: Path) -> None:
    text = (ROOT / example).read_text(encoding="utf-8")
    assert "\n[spam]\n" in text
    # Its key file is the installation's: the rest loads as written.
    copy = tmp_path / "helpdesk.toml"
    copy.write_text(text.replace("secret_key_file =", "# secret_key_file ="), encoding="utf-8")
    spam = load_settings(copy).spam
    assert spam.spamassassin and spam.rspamd
