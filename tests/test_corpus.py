"""The whole mail corpus through the real pipe, and Zammad's expected parses against our tickets.

1. Every message of shared/corpus goes through `helpdesk-pipe deliver` as a
   subprocess, four at a time, into a fresh database: it exits 0 (65 for an
   empty message), never with a traceback, is listed by `mail list`, and
   `mail show --raw` gives back its bytes exactly. Corpus files that share a
   Message-ID are recorded as `duplicate` of the first one. Machine mail (every
   bounce and auto-reply of sisimai, Zammad's bounces) is recorded as such, opens no
   ticket and causes no outgoing mail; no machine verdict causes any.

2. Zammad's fixtures (corpus/zammad/mailNNN.box + .yml) are delivered into their own
   fresh database (SQLite) and each stored ticket is compared with Zammad's expectation.
   A fixture recorded as machine mail or as a follow-up is compared through what we
   stored of it (its own article, or parse() for machine mail that answers no ticket).
   Several Zammad fixtures share a Message-ID (they are variants of one mail), so a
   file recorded as `duplicate` is delivered again to another queue (the dedup key is
   per queue) until every fixture has its own ticket. Compared, per message:

   - from_email: the ticket's requester, case-insensitively. When Zammad's value is not
     an address (its parser falls back to the raw From text: `Test test@example.com`,
     `"user@host"`, `"x"@host>`), the address inside it is compared.
   - subject: whitespace-normalised equality (the ticket's "(sans objet)" placeholder
     counts as empty).
   - body: Zammad's `no visible content` is its placeholder for an empty body.
     `text/plain`: whitespace-normalised equality with body_text. `text/html`: Zammad's
     body is its *sanitised* HTML, which we do not reproduce, so both sides go through
     html_to_text, are whitespace-normalised, and must be >= 0.90 similar (difflib's
     character ratio) with >= 0.90 of their non-ASCII characters in common (see
     HTML_SIMILARITY).
   - attachments: Zammad's rule, the expected files are a subset of ours, by digest
     (SHA-256 of the expected `data`, as we store SHA-256 of blobs). Left out: the
     attachments with `content-alternative: true` (`message.html`, or `-no name-` for
     another non-plain body), which are Zammad's copy of the body, kept by us as
     body_html. Zammad's other invented names (`image.jpg`, `file`, `<subject>.eml`)
     are real parts, compared like any file; filenames are not compared (Zammad does not).

   Parser-level fields that the ticket does not store are compared on parse() in
   process: from_display_name, and To/Cc as sets of addresses.

   The per-field rates and every mismatch are printed (pytest -s) and written to
   test-artifacts/zammad-report.txt (and -sqlite/-postgresql); the test fails when
   fewer than 95% of the stored-ticket fields, or of all the fields, match.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS
from conftest import ROOT
from conftest import run_pipe
from conftest import write_config
from ingestd_service import Service

from helpdesk.ingest.htmltext import html_to_text
from helpdesk.ingest.parse import parse

pytestmark = [
    pytest.mark.slow,
    pytest.mark.corpus,
    # `mail show --raw` in process: cli.py calls click.get_binary_stream, deprecated in
    # click 8.5 (one warning per mail). Reported to the owner of cli.py.
    pytest.mark.filterwarnings("ignore:'get_binary_stream' is deprecated:DeprecationWarning"),
]

WORKERS = 4  # concurrent `deliver` processes (the machine has 2 cores; the pipe waits on I/O too)
NOT_MAIL = {"README.md", "SOURCE.md"}
ZAMMAD = CORPUS / "zammad"
ARTIFACTS = ROOT / "test-artifacts"
# HTML bodies, compared as text, must pass two tests:
# - character similarity >= 0.90. The right body scores >= 0.96 on this set (Zammad's
#   sanitizer drops or rewrites a little text); a wrong part scores 0.0 (mail085's
#   second HTML part). The text/plain alternative in place of the HTML scores 0.37 to
#   0.94: the same words, so it may pass, as it should.
# - agreement of the non-ASCII characters (Dice coefficient of the two multisets)
#   >= 0.90, because similarity alone forgives mojibake in mostly-ASCII text: the
#   right body scores >= 0.97 here (mail072 scores 0.5 against an expectation that has
#   Zammad's charset error, windows-1258 read as 1250); the same body read in the
#   wrong charset (UTF-8 as Windows-1252) scores <= 0.05 for 16 of the 18 HTML bodies
#   that this changes.
HTML_SIMILARITY = 0.90
NON_ASCII_AGREEMENT = 0.90
REQUIRED_RATE = 0.95
MACHINE_VERDICTS = ("bounce", "autoreply", "bulk", "spam", "loop")
# Sisimai's bounces and auto-replies, and Zammad's bounces (their .yml say so): none may
# open a ticket or cause any mail.
KNOWN_MACHINE = (
    "sisimai/bsd/",
    "sisimai/dos/",
    "sisimai/mac/",
    *(f"zammad/mail{n:03d}" for n in (18, 33, 52, 53, 55, 63)),  # mail033-undelivered-...
)
NO_SUBJECT = "(sans objet)"  # the ticket subject of a mail without one, queue dsi (fr)


def corpus_files() -> list[Path]:
    """Every message file of the corpus: all folders, no docs, no expectation files."""
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name not in NOT_MAIL and p.suffix != ".yml"
    )


@dataclass
class Delivery:
    """One file piped into `deliver`, and what came of it."""

    index: int
    path: Path
    raw: bytes
    queue: str = "dsi"
    result: subprocess.CompletedProcess[bytes] | None = None
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The envelope EXTENSION of this delivery: how its mail row is found again."""
        return f"corpus-{self.index}-{self.queue}"


def _deliver(config: Path, deliveries: list[Delivery]) -> None:
    """Run the deliveries, WORKERS at a time; the envelope EXTENSION tells them apart later.

    Byte-identical files are not delivered at the same time: two concurrent copies of
    the same bytes are one MTA retry to `deliver` (it reuses the pending row), which is
    right for the MTA but would leave one file without a row of its own here.
    """
    rounds: list[list[Delivery]] = []
    seen: Counter[str] = Counter()
    for d in deliveries:
        digest = hashlib.sha256(d.raw).hexdigest()
        if seen[digest] == len(rounds):
            rounds.append([])
        rounds[seen[digest]].append(d)
        seen[digest] += 1
    with ThreadPoolExecutor(WORKERS) as pool:
        for batch in rounds:
            results = pool.map(
                lambda d: run_pipe(config, d.raw, d.queue, {"EXTENSION": d.tag}),
                batch,
            )
            for d, result in zip(batch, results, strict=True):
                d.result = result


def _cli(config: Path, *args: str) -> Any:
    """Run the command line in process (faster than a subprocess per call)."""
    from click.testing import CliRunner

    from helpdesk.cli import cli

    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def _cli_json(config: Path, *args: str) -> Any:
    result = _cli(config, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _attach_rows(
    config: Path, deliveries: list[Delivery], strict: bool = True, seen: set[int] | None = None
) -> list[str]:
    """Find each delivery's mail row through its envelope; return the problems seen.

    With strict=False, rows of other deliveries (an earlier round) are passed over;
    the ids in `seen` are not looked at again, and the new ones are added to it.
    """
    by_tag = {d.tag: d for d in deliveries}
    problems = []
    seen = set() if seen is None else seen
    for row in _cli_json(config, "mail", "list"):
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        shown = _cli_json(config, "mail", "show", str(row["id"]))
        d = by_tag.get(shown["envelope"].get("EXTENSION", ""))
        if d is None:
            if strict:
                problems.append(f"mail #{row['id']}: unknown envelope {shown['envelope']}")
            continue
        if d.row:
            problems.append(f"{d.path}: two rows, #{d.row['id']} and #{row['id']}")
        d.row = shown
    return problems


def _relative(path: Path) -> str:
    return str(path.relative_to(CORPUS))


# -- 1. every corpus file through the pipe ----------------------------------------------


def test_every_corpus_mail_is_delivered_and_kept_byte_for_byte(config: Path) -> None:
    _check_corpus(config)


def test_every_corpus_mail_through_ingestd(tmp_path: Path) -> None:
    """The same checks with the warm service taking every mail (SQLite: the service's
    code is the pipe's; its database paths are the storage tests' business)."""
    sock = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp")) / "ingestd.sock"
    config = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'warm.db'}", extra=f'[ingestd]\nsocket = "{sock}"\n'
    )
    assert _cli(config, "init").exit_code == 0
    service = Service(config, str(sock))
    try:
        _check_corpus(config)
    finally:
        assert service.stop() == 0, service.log()
        shutil.rmtree(sock.parent, ignore_errors=True)
    log = (tmp_path / "helpdesk.log").read_text(errors="replace")
    assert "delivering in process" not in log, "some mail missed the service"
    decided = [line for line in service.handled()] + re.findall("exit 65", service.log())
    assert len(decided) == len(corpus_files())


def _check_corpus(config: Path) -> None:
    files = corpus_files()
    assert len(files) >= 500, f"corpus not found or incomplete at {CORPUS}"
    deliveries = [Delivery(i, p, p.read_bytes()) for i, p in enumerate(files)]
    started = time.monotonic()
    _deliver(config, deliveries)
    elapsed = time.monotonic() - started

    problems = []
    for d in deliveries:
        assert d.result is not None
        stderr = d.result.stderr.decode("utf-8", "replace")
        expected = 65 if not d.raw.strip() else 0
        if d.result.returncode != expected or "Traceback" in stderr:
            problems.append(f"{_relative(d.path)}: exit {d.result.returncode}: {stderr[-500:]}")
    problems += _attach_rows(config, deliveries)

    tickets: set[str] = set()
    verdicts: Counter[str] = Counter()
    by_id = {d.row["id"]: d for d in deliveries if d.row}
    for d in deliveries:
        if d.result is None or d.result.returncode != 0:
            continue
        name = _relative(d.path)
        if not d.row:
            problems.append(f"{name}: delivered but not listed by `mail list`")
            continue
        verdicts[d.row["verdict"]] += 1
        stored = _cli(config, "mail", "show", str(d.row["id"]), "--raw").stdout_bytes
        if stored != d.raw:
            problems.append(
                f"{name}: `mail show --raw` differs ({len(stored)} != {len(d.raw)} bytes)"
            )
        if d.row["raw_sha256"] != hashlib.sha256(d.raw).hexdigest():
            problems.append(f"{name}: raw_sha256 is not the digest of the input")
        key = d.row["message_id"] or f"sha256:{d.row['raw_sha256']}"
        machine = d.row["verdict"] in MACHINE_VERDICTS
        if machine and d.row["outgoing"]:
            problems.append(f"{name}: {d.row['verdict']} caused mail {d.row['outgoing']}")
        if name.startswith(KNOWN_MACHINE) and not (machine or d.row["verdict"] == "duplicate"):
            problems.append(f"{name}: machine mail recorded as {d.row['verdict']}")
        if machine or d.row["verdict"] == "followup":
            pass  # no ticket of its own; its dedup key is claimed all the same
        elif d.row["verdict"] == "ticket":
            if key in tickets:
                problems.append(f"{name}: a second ticket for {key}")
            tickets.add(key)
        elif d.row["verdict"] == "duplicate":
            earlier = re.search(r"mail #(\d+)", d.row["reason"] or "")
            first = by_id.get(int(earlier.group(1))) if earlier else None
            if (
                first is None
                or (first.row["message_id"] or f"sha256:{first.row['raw_sha256']}") != key
            ):
                problems.append(f"{name}: duplicate of {d.row['reason']!r}, not of the same key")
        else:
            problems.append(f"{name}: verdict {d.row['verdict']!r}")
    print(
        f"\ncorpus: {len(files)} files delivered in {elapsed:.1f} s ({WORKERS} at a time); "
        f"verdicts {dict(verdicts)}"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert verdicts["ticket"] == len(tickets)


# -- 2. Zammad's expectations --------------------------------------------------------------


def load_zammad_yml(path: Path) -> dict[str, Any]:
    """Load a Ruby `to_yaml` dump: `!ruby/hash:...` mappings as dicts, `!binary` as bytes."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class RubyLoader(base):  # type: ignore[valid-type,misc]
        pass

    def ruby(loader: Any, _suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    def binary(loader: Any, node: Any) -> bytes:
        return base64.b64decode("".join(loader.construct_scalar(node).split()))

    RubyLoader.add_multi_constructor("!ruby/", ruby)
    RubyLoader.add_constructor("!binary", binary)
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=RubyLoader)  # noqa: S506 - our own loader, safe base


def _norm(text: str | None) -> str:
    return " ".join((text or "").split())


def _address(value: str | None) -> str:
    """The address in a from_email; Zammad's is sometimes the raw From text."""
    text = (value or "").strip().lower()
    if re.search(r"\s", text) and not text.startswith('"'):
        words = [w for w in text.split() if "@" in w]
        text = words[-1] if words else text
    return text.strip('<>"')


def _addresses(text: str | None) -> set[str]:
    return {a.lower().strip(".") for a in re.findall(r"[^\s<>,\"'()]+@[^\s<>,\"'()]+", text or "")}


def _similarity(expected: str, got: str) -> float:
    """difflib's character similarity ratio, aligned on words first to stay fast.

    Equal runs of words count all their characters; a run of words replaced by
    another is compared character by character. On a 21 000-character body this
    takes 0.02 s instead of 3.6 s; on the Zammad set it stays within 0.02 of the plain
    character ratio.
    """
    if expected == got:
        return 1.0
    if not expected or not got:
        return 0.0
    a, b = expected.split(" "), got.split(" ")
    matched = 0.0
    words = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in words.get_opcodes():
        if tag == "equal":
            matched += sum(len(w) + 1 for w in a[i1:i2])
        elif tag == "replace":
            x, y = " ".join(a[i1:i2]), " ".join(b[j1:j2])
            chars = difflib.SequenceMatcher(None, x, y, autojunk=False)
            matched += sum(block.size for block in chars.get_matching_blocks())
    return min(1.0, 2 * matched / (len(expected) + len(got)))


def _non_ascii_agreement(expected: str, got: str) -> float:
    want = Counter(c for c in expected if ord(c) > 127)
    ours = Counter(c for c in got if ord(c) > 127)
    if not want and not ours:
        return 1.0
    return 2 * sum((want & ours).values()) / (sum(want.values()) + sum(ours.values()))


def _first_difference(expected: str, got: str, width: int = 70) -> str:
    i = next((n for n, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    if i is None:
        i = min(len(expected), len(got))
    start = max(0, i - 20)
    want, ours = expected[start : start + width], got[start : start + width]
    return f"expected {want!r}\n      got      {ours!r}"


@dataclass
class Check:
    """One field of one message compared."""

    message: str
    field: str
    ok: bool
    detail: str = ""
    ratio: float | None = None  # html bodies: the lower of the two scores
    files: tuple[int, int] = (0, 0)  # attachments: (found, expected)


def _stored_view(config: Path, d: Delivery) -> dict[str, Any]:
    """What we stored of one fixture, shaped like `ticket show`: its own article.

    A follow-up or a filed auto-reply is an article of an earlier ticket; machine
    mail that answers no ticket is kept only raw, so its fields are read the way
    the pipe would store them, through parse().
    """
    if d.row["ticket_id"] is not None:
        ticket = _cli_json(config, "ticket", "show", str(d.row["ticket_id"]))
        [article] = [a for a in ticket["articles"] if a["mail_id"] == d.row["id"]]
        return {
            "requester": article["author"],
            "subject": article["subject"],
            "articles": [article],
        }
    assert d.row["verdict"] in MACHINE_VERDICTS, d.row
    mail = parse(d.raw)
    return {
        "requester": mail.sender,
        "subject": mail.subject,
        "articles": [
            {
                "body_text": mail.text,
                "body_html": mail.html,
                "attachments": [
                    {
                        "sha256": hashlib.sha256(a.data).hexdigest(),
                        "filename": a.filename,
                        "size": len(a.data),
                    }
                    for a in mail.attachments
                ],
            }
        ],
    }


def _compare_ticket(name: str, exp: dict[str, Any], ticket: dict[str, Any]) -> list[Check]:
    [article] = ticket["articles"][:1]
    checks = []
    ok = _address(ticket["requester"]) == _address(exp.get("from_email"))
    checks.append(
        Check(
            name,
            "from_email",
            ok,
            f"expected {exp.get('from_email')!r} got {ticket['requester']!r}",
        )
    )
    subject = "" if ticket["subject"] == NO_SUBJECT else ticket["subject"]
    ok = _norm(subject) == _norm(exp.get("subject"))
    checks.append(Check(name, "subject", ok, f"expected {exp.get('subject')!r} got {subject!r}"))

    body = exp.get("body") or ""
    body = "" if body == "no visible content" else body
    if exp.get("content_type") == "text/html":
        want = _norm(html_to_text(body))
        ours = article["body_html"]
        got = _norm(html_to_text(ours) if ours else article["body_text"])
        ratio, chars = _similarity(want, got), _non_ascii_agreement(want, got)
        ok = ratio >= HTML_SIMILARITY and chars >= NON_ASCII_AGREEMENT
        detail = (
            f"html, similarity {ratio:.3f}, non-ASCII characters agree {chars:.3f}\n      "
            + _first_difference(want, got)
        )
        checks.append(Check(name, "body", ok, detail, ratio=min(ratio, chars)))
    else:
        want, got = _norm(body), _norm(article["body_text"])
        checks.append(
            Check(name, "body", want == got, "text\n      " + _first_difference(want, got))
        )

    ours_digests = {a["sha256"] for a in article["attachments"]}
    missing = []
    expected = [
        a
        for a in exp.get("attachments") or []
        if not (a.get("preferences") or {}).get("content-alternative")
    ]
    for att in expected:
        data = att["data"] if isinstance(att["data"], bytes) else str(att["data"]).encode("utf-8")
        if hashlib.sha256(data).hexdigest() not in ours_digests:
            missing.append(f"{att['filename']} ({len(data)} bytes)")
    ours = ", ".join(f"{a['filename']} ({a['size']} bytes)" for a in article["attachments"])
    detail = f"missing {missing}; ours: {ours or 'none'}"
    files = (len(expected) - len(missing), len(expected))
    checks.append(Check(name, "attachments", not missing, detail, files=files))
    return checks


def _compare_parse(name: str, exp: dict[str, Any], raw: bytes) -> list[Check]:
    mail = parse(raw)
    checks = [
        Check(
            name,
            "from_display_name",
            _norm(mail.sender_name) == _norm(exp.get("from_display_name")),
            f"expected {exp.get('from_display_name')!r} got {mail.sender_name!r}",
        )
    ]
    for key, ours in (("to", mail.to), ("cc", mail.cc)):
        if key in exp:
            got = {a.lower() for _, a in ours if a}
            want = _addresses(exp[key])
            checks.append(
                Check(name, key, got == want, f"expected {sorted(want)} got {sorted(got)}")
            )
    return checks


TICKET_FIELDS = ("from_email", "subject", "body", "attachments")
PARSER_FIELDS = ("from_display_name", "to", "cc")


def _report(
    db: str, checks: list[Check], rounds: dict[str, int], delivered: float, elapsed: float
) -> tuple[str, float]:
    lines = [
        f"Zammad expectations vs helpdesk-pipe ({db}), {len(rounds)} messages: "
        f"delivered in {delivered:.1f} s, compared in {elapsed - delivered:.1f} s"
    ]
    redelivered = sorted(n for n, r in rounds.items() if r > 1)
    if redelivered:
        lines.append(
            f"{len(redelivered)} fixtures share a Message-ID with an earlier one; each was "
            "re-delivered to another queue to get a ticket of its own: " + ", ".join(redelivered)
        )
    lines.append("")
    totals = {}
    for group, names in (("stored ticket", TICKET_FIELDS), ("parse() in process", PARSER_FIELDS)):
        lines.append(f"{group}:")
        for name in names:
            relevant = [c for c in checks if c.field == name]
            good = sum(c.ok for c in relevant)
            totals[name] = (good, len(relevant))
            rate = good / len(relevant) if relevant else 1.0
            lines.append(f"  {name:<18} {good:>3}/{len(relevant):<3} {rate:7.1%}")
    for kind in ("text", "html"):
        bodies = [c for c in checks if c.field == "body" and c.detail.startswith(kind)]
        lines.append(f"  (body, {kind}: {sum(c.ok for c in bodies)}/{len(bodies)})")
    got = sum(c.files[0] for c in checks)
    want = sum(c.files[1] for c in checks)
    lines.append(f"  (attachment files found: {got}/{want})")
    ticket_good = sum(totals[n][0] for n in TICKET_FIELDS)
    ticket_all = sum(totals[n][1] for n in TICKET_FIELDS)
    good = sum(g for g, _ in totals.values())
    compared = sum(n for _, n in totals.values())
    lines.append(
        f"overall, stored ticket: {ticket_good}/{ticket_all} {ticket_good / ticket_all:.1%}"
    )
    lines.append(f"overall, all fields:    {good}/{compared} {good / compared:.1%}")
    below_one = [
        f"{c.message} {c.ratio:.3f}" for c in checks if c.ratio is not None and c.ratio < 1
    ]
    lines.append(f"html bodies scoring under 1.000: {', '.join(below_one) or 'none'}")
    lines.append("")
    mismatches = [c for c in checks if not c.ok]
    lines.append(f"mismatches ({len(mismatches)}):")
    for c in mismatches:
        lines.append(f"  {c.message} {c.field}: {c.detail}")
    return "\n".join(lines) + "\n", min(ticket_good / ticket_all, good / compared)


# SQLite only: test 1 already puts every Zammad file through PostgreSQL too, and runs on
# both databases gave the same report, for 50 s more (psycopg's import makes a
# PostgreSQL delivery twice as slow). Add "postgresql" here to compare there as well.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_zammad_expectations(config: Path, db_url: str, request: pytest.FixtureRequest) -> None:
    boxes = sorted(ZAMMAD.glob("*.box"))
    assert len(boxes) >= 80, f"Zammad fixtures not found at {ZAMMAD}"
    expectations = {p.stem: load_zammad_yml(p.with_suffix(".yml")) for p in boxes}
    # Extra queues, same database: a fixture recorded as a duplicate goes to the next one.
    extra = "".join(
        f'[queues.zammad{n}]\naddresses = ["zammad{n}@test.invalid"]\n\n' for n in range(2, 31)
    )
    (config.parent / "zammad").mkdir()
    zconfig = write_config(config.parent / "zammad", db_url, extra)

    started = time.monotonic()
    deliveries = [Delivery(i, p, p.read_bytes()) for i, p in enumerate(boxes)]
    rounds: dict[str, int] = {}
    pending = deliveries
    problems = []
    seen: set[int] = set()
    for n in range(1, 31):
        for d in pending:
            d.queue, d.row = ("dsi" if n == 1 else f"zammad{n}"), {}
            rounds[d.path.stem] = n
        _deliver(zconfig, pending)
        for d in pending:
            assert d.result is not None
            if d.result.returncode != 0 or b"Traceback" in d.result.stderr:
                problems.append(
                    f"{d.path.name}: exit {d.result.returncode}: {d.result.stderr[-300:]!r}"
                )
        problems += _attach_rows(zconfig, pending, strict=False, seen=seen)
        problems += [f"{d.path.name}: no mail row" for d in pending if not d.row]
        pending = [d for d in pending if d.row.get("verdict") == "duplicate"]
        if problems or not pending:
            break
    assert not problems, "\n".join(problems)
    assert not pending, f"still duplicates after 30 queues: {[d.path.name for d in pending]}"

    delivered = time.monotonic() - started
    checks: list[Check] = []
    for d in deliveries:
        exp = expectations[d.path.stem]
        checks += _compare_ticket(d.path.stem, exp, _stored_view(zconfig, d))
        checks += _compare_parse(d.path.stem, exp, d.raw)
    elapsed = time.monotonic() - started

    db = request.node.callspec.params.get("db_url", "db")
    report, rate = _report(db, checks, rounds, delivered, elapsed)
    print("\n" + report)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"zammad-report-{db}.txt").write_text(report, encoding="utf-8")
    shutil.copyfile(ARTIFACTS / f"zammad-report-{db}.txt", ARTIFACTS / "zammad-report.txt")
    assert rate >= REQUIRED_RATE, report
