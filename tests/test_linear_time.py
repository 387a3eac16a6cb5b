"""No mail the size limit accepts may cost more than linear time; a budget catches the rest.

Part one, one test per fix: each hostile input is timed at two sizes, four times apart,
best of a few rounds, and its time may grow about four times, not sixteen (LINEAR leaves
room for a busy machine). Every one of these failed before its fix, most by far.

Part two (slow): the whole in-process `deliver()` on SQLite and PostgreSQL, each hostile
input at about 1, 4 and 16 MB (its count scaled), best of 2 per size; the 16 MB delivery
may take at most 6 times the 4 MB one, and each exits 0 with a recorded verdict. The
timings go to test-artifacts/linear-time.json and, one line per case, to the terminal.

Part three: the parse budget (`[mail] parse_budget_s`): a mail that takes longer is kept
raw, opens its ticket (or follow-up) with itself attached, and exits 0.
"""

from __future__ import annotations

import gc
import json
import random
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT
from conftest import db_execute
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config
from ingestd_service import Service

from helpdesk.ingest.addresses import parse_addresses
from helpdesk.ingest.attachments import AttachmentReader
from helpdesk.ingest.budget import BudgetExceeded
from helpdesk.ingest.budget import budget
from helpdesk.ingest.charset import _cp1252
from helpdesk.ingest.charset import _utf8_repaired
from helpdesk.ingest.classify import OwnMarks
from helpdesk.ingest.classify import classify
from helpdesk.ingest.client import introduction
from helpdesk.ingest.headertext import decode_header
from helpdesk.ingest.htmltext import html_to_text
from helpdesk.ingest.mime import build_message
from helpdesk.ingest.parse import parse
from helpdesk.ingest.quotes import REPLY_MARKER_EN
from helpdesk.ingest.quotes import trim_quoted

OWN = OwnMarks(instance="helpdesk-test.univ.example", domains=("univ.example",))


def _best(work: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


# What growth() may give: 4 is linear, 16 quadratic; the margin is for a busy machine.
LINEAR = 8


def growth(work: Callable[[int], object], size: int, rounds: int = 5) -> float:
    """How much longer work(4 * size) takes than work(size): about 4 when linear."""
    small = _best(lambda: work(size), rounds)
    big = _best(lambda: work(4 * size), rounds)
    return big / small


def head(extra: str = "", ctype: str = "text/plain; charset=utf-8") -> bytes:
    """The header block of a hostile mail, up to and including its blank line."""
    return (
        "From: Alice Martin <alice@univ.example>\nTo: dsi.support@univ.example\n"
        f"Message-ID: <{random.getrandbits(64):x}@univ.example>\nMIME-Version: 1.0\n"
        f"Content-Type: {ctype}\nContent-Transfer-Encoding: 8bit\n{extra}\n"
    ).encode()


# -- part one: each fix ---------------------------------------------------------------


def _old_utf8_repaired(data: bytes) -> str:
    """The repair as it was (quadratic): the reference for what it must still give."""
    out, pos = [], 0
    while pos < len(data):
        try:
            out.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            out.append(data[pos : pos + exc.start].decode("utf-8"))
            bad_end = pos + max(exc.end, exc.start + 1)
            out.append(_cp1252(data[pos + exc.start : bad_end]))
            pos = bad_end
    return "".join(out)


def test_invalid_utf8_every_other_byte_decodes_in_linear_time() -> None:
    def work(size: int) -> None:
        parse(head() + b"a\xff" * (size // 2))

    assert growth(work, 256 * 1024, rounds=3) < LINEAR


def test_utf8_repair_reads_each_stray_byte_as_windows_1252_as_before() -> None:
    pieces = [b"a", b"\xff", b"\xe2", b"\x82", b"\xac", b"\xc3", b"\xa9", b"\xed", b"\xa0"]
    pieces += [b"\x80", b"\xf0", b"\x9f", b"\x98", b"\x81", b"\x8d", b"\xf4", b"\x90", b"\xc0"]
    rng = random.Random(5)
    for _ in range(20000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert _utf8_repaired(data) == _old_utf8_repaired(data), data


def test_unclosed_encoded_words_decode_in_linear_time() -> None:
    # `(.*?)\?=` searched to the end of the value from every unclosed `=?x?q?`.
    assert growth(lambda size: decode_header("=?x?q?a " * (size // 8)), 16 * 1024, 5) < LINEAR
    assert decode_header("=?x?q?a =?x?q?b") == "=?x?q?a =?x?q?b"  # never closed: as written


def test_adjacent_encoded_words_join_in_linear_time() -> None:
    # Their bytes were joined one word at a time: quadratic copying.
    word = "=?utf-8?b?" + "QUJD" * 15 + "?= "
    assert growth(lambda size: decode_header(word * (size // len(word))), 1 << 20, 3) < LINEAR
    assert decode_header("=?utf-8?q?=C3?= =?UTF-8?q?=A9?=") == "é"  # still joined before decoding


def test_many_parts_of_one_name_are_named_in_linear_time() -> None:
    def work(count: int) -> None:
        reader = AttachmentReader(build_message(b"\n"), b"", (), [])
        for _ in range(count):
            reader._unique("a.txt")

    assert growth(work, 3000) < LINEAR
    reader = AttachmentReader(build_message(b"\n"), b"", (), [])
    reader.names.add("a2.txt")
    assert [reader._unique(n) for n in ["a.txt"] * 4 + ["a1.txt"]] == [
        "a.txt",
        "a1.txt",
        "a3.txt",
        "a4.txt",
        "a11.txt",
    ]


def test_content_type_parameters_are_read_in_linear_time() -> None:
    # email.message._parseparam copied the rest of the value after each parameter and
    # recounted every quote before each `;` it tried.
    def many(size: int) -> None:
        message = build_message(head(ctype="text/plain; " + "a=1;" * (size // 4)) + b"x\n")
        message.get_param("charset")

    def quoted(size: int) -> None:
        value = 'text/plain; name="' + ";" * size + '"; charset=utf-8'
        assert build_message(head(ctype=value) + b"x\n").get_param("charset") == "utf-8"

    assert growth(many, 32 * 1024) < LINEAR
    assert growth(quoted, 32 * 1024) < LINEAR


def test_out_of_office_subject_check_does_not_backtrack_exponentially() -> None:
    # The blanks around "re :" prefixes could be shared out in 3^n ways, each tried
    # again on a miss: 16 of them took 45 s.
    def work(count: int) -> None:
        mail = parse(head("Subject: " + "re  :" * count + "x\n") + b"body\n")
        classify(b"", mail, {}, OWN)

    assert growth(work, 3) < LINEAR
    out_of_office = parse(head("Subject: RE: re : Absence : Paul\n") + b"x\n")
    assert classify(b"", out_of_office, {}, OWN) is not None


def test_a_from_of_nested_comments_is_read_not_deferred_forever() -> None:
    # getaddresses() recursed once per "(": RecursionError, exit 75, and again at each retry.
    raw = b"From: " + b"(" * 5000 + b"a@x.org\nSubject: hello\n\nbody\n"
    assert classify(raw, parse(raw), {}, OWN) is None


def test_many_reply_markers_on_one_long_quoted_line_trim_in_linear_time() -> None:
    def work(count: int) -> None:
        trim_quoted("> " * (count * 20) + ("y " + REPLY_MARKER_EN + " ") * count)

    assert growth(work, 1000) < LINEAR


def test_address_lists_are_read_in_linear_time() -> None:
    for build in (
        lambda size: "<" + " " * size + "<",  # `<([^<>]*)>?\s*$` gave back one blank at a time
        lambda size: "a <x" + " " * size + "y>",  # `\s*([.@])\s*` from every blank
        lambda size: "x, " + "b <x>, " * (size // 7),  # `Last, First <addr>` joined with +=
    ):
        assert growth(lambda size, b=build: parse_addresses([b(size)], ()), 8 * 1024) < LINEAR
    assert parse_addresses(["Smith, John <john . smith @ x.org>"], ()) == [
        ("Smith, John", "john.smith@x.org")
    ]


def test_recipients_are_read_up_to_a_hundred_and_a_defect_says_so() -> None:
    to = ", ".join(f"user{i}@univ.example" for i in range(500))
    mail = parse(head(f"Cc: {to}\n") + b"body\n")
    assert len(mail.cc) == 100
    assert mail.cc[99] == ("", "user99@univ.example")
    assert "Cc: over 100 entries, only the first ones read" in mail.defects
    assert len(parse(head(f"Cc: {to[:2000]}\n") + b"body\n").cc) < 100  # fewer: all of them


def test_a_subject_is_cut_at_a_thousand_characters_and_a_defect_says_so() -> None:
    mail = parse(head("Subject: " + "mot " * 10000 + "\n") + b"body\n")
    assert len(mail.subject) <= 1000
    assert mail.subject.startswith("mot mot")
    assert "Subject: 39999 characters, cut to 1000" in mail.defects


def test_html_to_text_of_broken_markup_is_linear() -> None:
    # The stdlib parser searched to the end of the input again from each construct it
    # could not finish (`<a<a<a`: 75 s for 256 kB).
    for build in (
        lambda size: "<a" * (size // 2),
        lambda size: "</" * (size // 2),
        lambda size: "<?" * (size // 2),
        lambda size: "<!--x>" * (size // 6),
        lambda size: "<![CDATA[ >" * (size // 11),
        lambda size: "<a b='>'" * (size // 8),
        lambda size: "<blockquote>" * (size // 24) + "<br>" * (size // 8),  # "> " per level
    ):
        assert growth(lambda size, b=build: html_to_text(b(size)), 16 * 1024, 3) < LINEAR, build(24)


def test_html_to_text_still_reads_valid_markup_and_caps_the_quote_depth() -> None:
    assert html_to_text('<p title="a > b">un <b>deux</b></p><p>trois</p>') == "un deux\n\ntrois"
    assert html_to_text("<p>x</p><!-- a > b --><p>y<![if !x]>z<![endif]></p>") == "x\n\nyz"
    assert html_to_text("a <b>b</b> < c") == "a b < c"  # text after the last ">" as written
    assert html_to_text("<blockquote>" * 40 + "deep") == "> " * 30 + "deep"


def nested_multiparts(size: int) -> bytes:
    """A multipart in a multipart in ... as many levels as fit in size bytes."""
    level = 'Content-Type: multipart/mixed; boundary="b%07d"\n\n--b%07d\n'
    count = size // len(level % (0, 0))
    body = "".join(level % (i, i) for i in range(count)).encode()
    return head(ctype='multipart/mixed; boundary="top"') + b"--top\n" + body + b"\ndeep\n"


def nested_messages(size: int) -> bytes:
    """A message/rfc822 in a message/rfc822 in ..., as many levels as fit in size bytes."""
    level = b"Content-Type: message/rfc822\n\n"
    return head(ctype="message/rfc822") + level * (size // len(level)) + b"Subject: deep\n\nx\n"


def test_deep_nesting_parses_in_linear_time_and_keeps_the_deep_parts_whole() -> None:
    # The feed parser checks each line against every enclosing boundary and recurses per
    # level: it ran out of recursion, and parse() fell back to the headers and the text.
    for build in (nested_multiparts, nested_messages):
        assert growth(lambda size, b=build: parse(b(size)), 256 * 1024, 3) < LINEAR
        raw = build(256 * 1024)
        mail = parse(raw)
        assert not [d for d in mail.defects if "failed" in d], mail.defects
        assert any("nested over 32 levels deep: 1 kept whole" in d for d in mail.defects)
        [deep] = [a for a in mail.attachments if a.filename == "nested-part.eml"]
        assert deep.content_type == "message/rfc822"
        assert len(deep.data) > 200 * 1024 and raw.endswith(deep.data)


def test_messages_nested_in_attached_messages_are_not_attached_again_and_again() -> None:
    # Each attached message's own attached message was attached too: 20 levels, 20 copies.
    raw = head(ctype="message/rfc822") + b"Content-Type: message/rfc822\n\n" * 20
    raw += b"Subject: deep\nContent-Type: text/plain\n\n" + b"x" * 100_000 + b"\n"
    mail = parse(raw)
    assert sum(len(a.data) for a in mail.attachments) <= 2 * len(raw)
    assert "messages nested in attached messages: not all attached again" in mail.defects
    assert mail.attachments[0].data == raw[raw.index(b"\n\n") + 2 :]  # the outer one, whole


# -- part two: the whole delivery, 1 to 16 MB ------------------------------------------


def hostile(
    extra: bytes = b"", ctype: str = "text/plain; charset=utf-8", body: bytes = b"x\n"
) -> bytes:
    """A mail from head(), with raw header lines added and a body."""
    return head(ctype=ctype)[:-1] + extra + b"\n" + body


def _parts(count: int) -> bytes:
    part = (
        b'--b\nContent-Type: application/octet-stream; name="a.txt"\n'
        b'Content-Disposition: attachment; filename="a.txt"\n\n' + b"x" * 400 + b"\n"
    )
    return b"--b\nContent-Type: text/plain\n\nhello\n" + part * count + b"--b--\n"


def _word_list(size: int, word: bytes) -> bytes:
    return word * (size // len(word))


# Each hostile input at `size` bytes, scaled by its count; `n` makes every one unique.
HOSTILE: dict[str, Callable[[int, int], bytes]] = {
    "invalid UTF-8 every other byte: body": lambda size, n: hostile(body=b"a\xff" * (size // 2)),
    "invalid UTF-8 every other byte: raw 8-bit Subject": lambda size, n: hostile(
        b"Subject: " + b"a\xff" * (size // 2) + b"\n"
    ),
    "invalid UTF-8 every other byte: HTML-only body": lambda size, n: hostile(
        ctype="text/html; charset=utf-8",
        body=b"<html><body><p>" + b"a\xff" * (size // 2) + b"</p></body></html>\n",
    ),
    "invalid UTF-8 every other byte: filename parameter": lambda size, n: hostile(
        ctype='multipart/mixed; boundary="b"',
        body=b"--b\nContent-Type: text/plain\n\nhello\n--b\n"
        b'Content-Disposition: attachment; filename="' + b"a\xff" * (size // 2) + b'.txt"\n\n'
        b"data\n--b--\n",
    ),
    "random bytes: body": lambda size, n: hostile(body=random.Random(n).randbytes(size)),
    "random bytes: the whole mail": lambda size, n: random.Random(n).randbytes(size),
    "same-name parts (30,000 at 16 MB)": lambda size, n: hostile(
        ctype='multipart/mixed; boundary="b"', body=_parts(size // 530)
    ),
    "encoded words (200,000 at 16 MB)": lambda size, n: hostile(
        b"Subject: " + _word_list(size, b"=?utf-8?b?" + b"w6k" * 20 + b"?= ") + b"\n"
    ),
    "unclosed encoded words": lambda size, n: hostile(
        b"Subject: " + _word_list(size, b"=?x?q?a ") + b"\n"
    ),
    "one header line: unknown header": lambda size, n: hostile(b"X-Junk: " + b"a" * size + b"\n"),
    "one header line: To": lambda size, n: hostile(
        b"To: " + b", ".join(b"u%07d@univ.example" % i for i in range(size // 21)) + b"\n"
    ),
    "one header line: References": lambda size, n: hostile(
        b"References: "
        + b" ".join(b"<r%07d.%d@univ.example>" % (i, n) for i in range(size // 24))
        + b"\n"
    ),
    "one header line: Subject": lambda size, n: hostile(
        b"Subject: " + _word_list(size, b"mot ") + b"\n"
    ),
    "one header line: X-Spamd-Result": lambda size, n: hostile(
        b"X-Spamd-Result: default: False [" + b" " * size + b"20 / 15]\n"
    ),
    "spam headers (a NO repeated, then YES)": lambda size, n: hostile(
        b"X-Spam-Flag: NO\n" * (size // 16) + b"X-Spam-Flag: YES\n"
    ),
    "deep multipart nesting": lambda size, n: nested_multiparts(size),
    "deep message/rfc822 nesting": lambda size, n: nested_messages(size),
}
SIZES = {"1 MB": 1 << 20, "4 MB": 4 << 20, "16 MB": 16 << 20}
ARTIFACT = ROOT / "test-artifacts" / "linear-time.json"


def _record_timings(key: str, timings: dict[str, float]) -> None:
    """Write one case's timings into test-artifacts/linear-time.json, beside the others."""
    ARTIFACT.parent.mkdir(exist_ok=True)
    try:
        found = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        found = {}
    found[key] = {
        **{size: round(t, 3) for size, t in timings.items()},
        "16 MB / 4 MB": round(timings["16 MB"] / timings["4 MB"], 2),
    }
    ARTIFACT.write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_mail_is_delivered_in_linear_time(
    case: str, config: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole in-process deliver() at 1, 4 and 16 MB, best of 2 each: the 16 MB
    delivery takes at most 6 times the 4 MB one, and every one exits 0, recorded."""
    from helpdesk.config import load_settings
    from helpdesk.ingest.deliver import deliver
    from helpdesk.store import Store

    settings = load_settings(config)
    timings: dict[str, float] = {}
    with Store(settings.database_url, settings.busy_timeout) as store:
        for label, size in SIZES.items():
            best = float("inf")
            for attempt in range(2):
                n = len(timings) * 2 + attempt
                raw = HOSTILE[case](size, n)
                assert abs(len(raw) - size) < size // 10 + 1024, len(raw)
                envelope = {"SENDER": f"sender{n}@univ.example"}  # no rate cap in the way
                start = time.perf_counter()
                outcome = deliver(raw, settings, "dsi", envelope, store)
                best = min(best, time.perf_counter() - start)
                assert outcome.code == 0, outcome
                [(verdict,)] = db_execute(
                    config, "SELECT verdict FROM mail_record WHERE id = :id", id=outcome.mail_id
                )
                kept = ("ticket", "followup", "bounce", "autoreply", "bulk", "spam")
                assert verdict in kept, verdict
            timings[label] = best
    for file in config.parent.glob("helpdesk.db*"):
        file.unlink()  # hundreds of MB that pytest would keep for three runs
    database = "postgresql" if db_url.startswith("postgresql") else "sqlite"
    _record_timings(f"{database}: {case}", timings)
    with capsys.disabled():
        print(
            f"\nlinear-time {database:10} {case:52}"
            + "".join(f" {label} {seconds:6.2f}s" for label, seconds in timings.items())
            + f"  16/4 x{timings['16 MB'] / timings['4 MB']:.1f}",
            end="",
        )
    assert timings["16 MB"] <= 6 * timings["4 MB"], timings


def test_a_mail_keeps_its_first_thousand_files_and_a_defect_says_so() -> None:
    # Each was an attachment and a blob row: 30,000 parts took 10 s on PostgreSQL.
    mail = parse(hostile(ctype='multipart/mixed; boundary="b"', body=_parts(1500)))
    assert len(mail.attachments) == 1000
    assert [a.filename for a in mail.attachments[:3]] == ["a.txt", "a1.txt", "a2.txt"]
    assert (
        "1500 files: only the first 1000 attached (all of them are in the mail as it came)"
        in mail.defects
    )


# -- part three: the parse budget -------------------------------------------------------


def _spin(seconds: float) -> None:
    """Pure Python work for about `seconds` (what the budget must be able to cut)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_budget_interrupts_pure_work_and_leaves_no_timer_behind() -> None:
    start = time.monotonic()
    with pytest.raises(BudgetExceeded):
        with budget(0.05):
            _spin(5)
    assert time.monotonic() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with budget(0.05):  # in time: nothing happens, then or later
        pass
    _spin(0.2)
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # given back by a budget met


def test_a_budget_interrupts_a_backtracking_regular_expression() -> None:
    exponential = re.compile(r"(?:\s*a\s*\s*:)*\s*b")  # 3^n ways to fail on "a  :" * n + "x"
    start = time.monotonic()
    with pytest.raises(BudgetExceeded):
        with budget(0.1):
            exponential.match("a  :" * 40 + "x")
    assert time.monotonic() - start < 2


def test_a_budget_works_outside_the_main_thread() -> None:
    outcome: list[str] = []

    def work() -> None:
        try:
            with budget(0.05):
                _spin(5)
            outcome.append("not interrupted")
        except BudgetExceeded:
            outcome.append("interrupted")
        with budget(0.05):
            pass
        _spin(0.2)  # a budget that was met never fires later
        outcome.append("done")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert outcome == ["interrupted", "done"]


NOTICE_FR = (
    "Ce message n'a pas pu être lu en {} s : il est joint tel qu'il est arrivé (message.eml)."
)
KEPT_RAW = "parse budget of 0.25 s exceeded: kept raw, attached as message.eml"


def _budget_config(db_url: str, directory: Path, seconds: float, extra: str = "") -> Path:
    path = write_config(directory, db_url, extra=extra, mail=f"parse_budget_s = {seconds}\n")
    assert run_cli(path, "init").returncode == 0
    return path


def slow_mail(size: int = 8 << 20, **headers: str) -> bytes:
    """A mail whose body is stray bytes: about 0.1 s per MB to read, far past 0.25 s."""
    return make_mail(**headers) + b"a\xff" * (size // 2)


def _record(config: Path, mail_id: int | None = None) -> dict[str, object]:
    where = f"WHERE id = {int(mail_id)}" if mail_id else "ORDER BY id DESC LIMIT 1"
    [row] = db_execute(
        config,
        f"SELECT id, verdict, reason, defects, subject, sender, ticket_id FROM mail_record {where}",
    )
    keys = ("id", "verdict", "reason", "defects", "subject", "sender", "ticket_id")
    return dict(zip(keys, row, strict=True))


def _files(config: Path, ticket_id: int) -> list[tuple[str, str, bytes]]:
    rows = db_execute(
        config,
        "SELECT a.filename, a.content_type, b.data FROM attachment a"
        " JOIN blob b ON b.sha256 = a.blob_sha256 JOIN article r ON r.id = a.article_id"
        " WHERE r.ticket_id = :t ORDER BY a.id",
        t=ticket_id,
    )
    return [(name, ctype, bytes(data)) for name, ctype, data in rows]


def test_a_mail_past_the_parse_budget_opens_its_ticket_with_the_mail_attached(
    db_url: str, tmp_path: Path
) -> None:
    config = _budget_config(db_url, tmp_path, 0.25)
    raw = slow_mail(subject="Lent à lire", message_id="<slow@univ.example>")
    result = run_pipe(config, raw)
    assert (result.returncode, result.stderr) == (0, b"")
    record = _record(config)
    assert record["verdict"] == "ticket"
    assert record["reason"] == KEPT_RAW
    assert json.loads(str(record["defects"]))[0] == "parse budget of 0.25 s exceeded"
    # The headers were read: the ticket is the sender's, under its subject.
    assert (record["subject"], record["sender"]) == ("Lent à lire", "alice@univ.example")
    ticket_id = int(str(record["ticket_id"]))
    [(body,)] = db_execute(
        config, "SELECT body_text FROM article WHERE ticket_id = :t", t=ticket_id
    )
    assert body == NOTICE_FR.format("0.25")
    assert _files(config, ticket_id) == [("message.eml", "message/rfc822", raw)]
    # The MTA delivering it again (it never would: exit 0) finds it, and is done as fast.
    again = run_pipe(config, raw)
    assert again.returncode == 0
    assert _record(config)["verdict"] == "duplicate"


def test_a_reply_past_the_parse_budget_still_threads_into_its_ticket(
    db_url: str, tmp_path: Path
) -> None:
    config = _budget_config(db_url, tmp_path, 0.25)
    assert run_pipe(config, make_mail(message_id="<first@univ.example>")).returncode == 0
    first = _record(config)
    [(ack,)] = db_execute(config, "SELECT message_id FROM outbox_message ORDER BY id LIMIT 1")
    reply = slow_mail(subject="Re: Imprimante en panne", extra_headers=f"In-Reply-To: <{ack}>\r\n")
    assert run_pipe(config, reply).returncode == 0
    record = _record(config)
    assert (record["verdict"], record["ticket_id"]) == ("followup", first["ticket_id"])
    assert "In-Reply-To/References" in str(record["reason"])
    assert str(record["reason"]).endswith(
        "parse budget of 0.25 s exceeded: kept raw, attached as message.eml"
    )
    assert _files(config, int(str(first["ticket_id"]))) == [
        ("message.eml", "message/rfc822", reply)
    ]


def test_when_even_the_headers_run_out_of_time_the_mail_still_opens_a_ticket(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import helpdesk.ingest.deliver as pipe
    from helpdesk.config import load_settings
    from helpdesk.store import Store

    config = _budget_config(db_url, tmp_path, 0.1)
    settings = load_settings(config)
    monkeypatch.setattr(pipe, "parse_kept_raw", lambda *args: _spin(30))
    raw = slow_mail(size=4 << 20)
    envelope = {"SENDER": "bob@univ.example"}
    with Store(settings.database_url, settings.busy_timeout) as store:
        outcome = pipe.deliver(raw, settings, "dsi", envelope, store)
    assert (outcome.code, outcome.verdict) == (0, "ticket")
    record = _record(config, outcome.mail_id)
    assert json.loads(str(record["defects"])) == [
        "parse budget of 0.1 s exceeded",
        "headers unreadable in time",
    ]
    [(subject, requester)] = db_execute(
        config,
        "SELECT t.subject, p.email FROM ticket t JOIN person p ON p.id = t.requester_id",
    )
    assert (subject, requester) == ("(sans objet)", "bob@univ.example")  # the envelope's
    assert _files(config, int(str(outcome.ticket_id))) == [("message.eml", "message/rfc822", raw)]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for a socket: unix socket paths stop at 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_mail_past_the_parse_budget_in_an_ingestd_worker(
    db_url: str, tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "s.sock"
    config = _budget_config(db_url, tmp_path, 0.25, extra=f'[ingestd]\nsocket = "{sock}"\n')
    service = Service(config, str(sock), "--workers", "1")
    try:
        before = service.workers()
        # A first mail: the worker's sender thread runs when the budget's alarm comes.
        assert run_pipe(config, make_mail(message_id="<first@univ.example>")).returncode == 0
        result = run_pipe(config, slow_mail(message_id="<slow@univ.example>"))
        assert (result.returncode, result.stderr) == (0, b"")
        assert _record(config)["verdict"] == "ticket"
        # Answered by the service, not by the client delivering in its own process.
        assert any("(parse budget of 0.25 s exceeded)" in line for line in service.handled())
        assert "delivering in process" not in (tmp_path / "helpdesk.log").read_text()
        assert run_pipe(config, make_mail(message_id="<next@univ.example>")).returncode == 0
        assert len(service.handled()) == 3
        # The worker that was interrupted made way for a fresh one.
        assert "a parse budget ran out, renewing" in service.log()
        assert len(service.workers()) == 1 and not service.workers() & before
    finally:
        assert service.stop() == 0, service.log()


@pytest.mark.slow
def test_the_client_waits_for_the_parse_budget_before_it_delivers_itself(
    db_url: str, tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "s.sock"
    config = _budget_config(db_url, tmp_path, 600, extra=f'[ingestd]\nsocket = "{sock}"\n')
    service = Service(config, str(sock), "--workers", "1")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(sock))
            client.sendall(introduction(str(config), "dsi"))
            protocol, _max_size, reply_timeout = client.recv(512).split()
        assert protocol == b"HDP1"
        assert int(reply_timeout) >= 600 + 10  # the budget, its fallback, and then some
    finally:
        assert service.stop() == 0, service.log()
