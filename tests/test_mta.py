"""Through a real Postfix and a real Exim: aliases, deferral and retry, bounces, the helpdesk user.

Each MTA is installed from Debian's packages (.ci/mta.sh), configured for loopback with the
snippets of etc/postfix/ and etc/exim4/ and the README's Authentication-Results settings, and
started by hand; the pipe is wired to the `helpdesk-pipe aliases` lines and runs as the
`helpdesk` user. Mail goes in over SMTP to 127.0.0.1:25, and everything the helpdesk sends
leaves through the MTA's sendmail and is relayed to the test's SMTP server (the catcher).
Recipes and pitfalls: ../shared/research/mta.md.

Needs root and apt: skipped otherwise, or with HELPDESK_TEST_NO_MTA=1. The MTAs conflict as
Debian packages, so all Postfix tests run first, then Exim replaces it; each is stopped after
its tests (the package stays installed).
"""

from __future__ import annotations

import base64
import email
import email.policy
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from conftest import cli_json
from conftest import run_cli
from conftest import write_config
from other_user import stage
from smtp_catcher import Caught
from smtp_catcher import SmtpCatcher

_WHY_SKIP = (
    "HELPDESK_TEST_NO_MTA=1 is set"
    if os.environ.get("HELPDESK_TEST_NO_MTA") == "1"
    else "the MTA tests install Postfix and Exim with apt: they need root"
    if os.geteuid() != 0
    else ""
)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_WHY_SKIP), reason=_WHY_SKIP)]

USER = "helpdesk"
BASE = Path("/var/tmp/helpdesk-mta-test")  # /tmp/pytest-of-root is 0700: helpdesk cannot enter
VENV = BASE / "venv"
ETC = BASE / "etc"  # the alias map (Postfix wants its directory writable by its owner)
VAR = BASE / "var"  # helpdesk's own: config, database, log
DB = VAR / "helpdesk.db"
SOCKET = VAR / "run" / "ingestd.sock"  # the config names it; ingestd runs in one test only
DOMAIN = "univ.example"
ALIASES = {"dsi": "dsi.support", "immobilier": "immobilier.travaux", "scd": "scd.informatique"}
MAX_SIZE = 64 * 1024
EXIM_FILES = {  # what the Exim fixture puts in /etc/exim4/conf.d and removes afterwards
    "main": "000_localmacros",
    "router": "350_helpdesk_aliases",
    "transport": "30_helpdesk_pipe",
}
EXIM_TEST_FILES = {  # test only: fast retries, remote mail to the catcher
    "retry": "20_helpdesk-test",
    "router": "190_helpdesk-test_catcher",
    "transport": "30_helpdesk-test_catcher",
}
LINK = re.compile(r"https://helpdesk\.univ\.example(/t/[A-Za-z0-9_-]{43})")
AUTHSERV = "mx.univ.example"  # the README's name for the MX in Authentication-Results
MILTERS = ("opendkim", "opendmarc")
README_POSTFIX_AR = "#### Authentication-Results for Postfix (DMARC)"
README_EXIM_AR = "#### Authentication-Results for Exim (DKIM)"


def run(*args: str | Path, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure show everything it printed."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def as_helpdesk(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command as the helpdesk user, as the MTA, the viewer and the scheduler do."""
    return run("runuser", "-u", USER, "--", *args, **kwargs)


def port_open(port: int = 25) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.3) -> Any:
    """Poll check() until it returns something true; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def readme_section(heading: str) -> str:
    """The README's text under a heading, up to the next heading (code blocks included)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    if heading not in lines:
        pytest.fail(f"README.md has no heading {heading!r}")
    out: list[str] = []
    in_code = False
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,4} ", line):
            break
        out.append(line)
    return "\n".join(out)


def readme_find(heading: str, pattern: str) -> re.Match[str]:
    """The first match of a pattern in a README section; fail when the README lost it."""
    found = re.search(pattern, readme_section(heading), re.M)
    if found is None:
        pytest.fail(f"README.md, {heading!r}: nothing matches {pattern!r}")
    return found


def readme_postconf(heading: str) -> list[str]:
    """The settings of the `postconf -e` call in a README section."""
    block = readme_find(heading, r"postconf -e \\\n((?:[ \t]+'[^']*'.*\n)+)").group(1)
    return re.findall(r"'([^']*)'", block)


def readme_install(heading: str, source: str) -> Path:
    """Install a snippet where a README section's `install -m MODE SOURCE TARGET` puts it."""
    found = readme_find(heading, rf"install -m (0[0-7]{{3}}) {re.escape(source)} (/\S+)$")
    target = Path(found.group(2))
    shutil.copyfile(ROOT / source, target)
    target.chmod(int(found.group(1), 8))
    return target


def readme_milter_settings(heading: str) -> dict[str, dict[str, str]]:
    """The settings the README gives for each milter's file: {"/etc/opendkim.conf": {...}}."""
    settings: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in readme_section(heading).splitlines():
        first = re.match(r"# (/etc/\w+\.conf):\s+(\w+)\s+(\S+)", line)
        more = re.match(r"#\s{10,}(\w+)\s+(\S+)", line)
        if first:
            current = settings.setdefault(first.group(1), {})
            current[first.group(2)] = first.group(3)
        elif more and current is not None:
            current[more.group(1)] = more.group(2)
        else:
            current = None
    return settings


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _plain_umask() -> Iterator[None]:
    """What the set-up creates (the venv, the configs) must be readable by helpdesk and the
    MTA, whatever umask earlier in-process commands left (`init` sets 0007)."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


@pytest.fixture(scope="module")
def helpdesk_user() -> pwd.struct_passwd:
    """The `helpdesk` system user and group, as the README creates them."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    run(
        "useradd",
        "--system",
        "--user-group",
        "--home-dir",
        "/var/lib/helpdesk",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        USER,
    )
    return pwd.getpwnam(USER)


@pytest.fixture(scope="module")
def venv(helpdesk_user: pwd.struct_passwd) -> Path:
    """An installation helpdesk can run, like /opt/helpdesk, wherever this clone sits.

    The checkout may sit under a 0700 directory and its .venv's interpreter under /root
    (pyenv), which helpdesk cannot enter: BASE gets a world-readable copy of the package
    and its runtime distributions, in a venv of a Python helpdesk can run
    (tests/other_user.py). No directory of the user's changes mode.
    """
    return stage(BASE).parent


@pytest.fixture(scope="module")
def catcher() -> Iterator[SmtpCatcher]:
    """The test's SMTP server: the MTA relays every remote message here."""
    with SmtpCatcher() as catcher:
        yield catcher


@dataclass
class Mta:
    """One running MTA with the helpdesk wired in."""

    name: str
    config: Path
    catcher: SmtpCatcher
    aliases: str  # what `helpdesk-pipe aliases` printed

    def queue(self) -> list[dict[str, Any]]:
        """The messages waiting in the MTA's queue: id and, when known, why they wait."""
        if self.name == "postfix":
            out = run("postqueue", "-j").stdout
            return [
                {
                    "id": m["queue_id"],
                    "reasons": [r.get("delay_reason", "") for r in m["recipients"]],
                }
                for m in map(json.loads, out.splitlines())
            ]
        out = run("exim4", "-bp").stdout
        ids = re.findall(r"^\s*\S+\s+\S+\s+(\S{6}-\S{6,}-\S{2,})\s", out, re.M)
        log = Path("/var/log/exim4/mainlog").read_text(errors="replace")
        return [
            {"id": i, "reasons": [line for line in log.splitlines() if f" {i} " in line]}
            for i in ids
        ]

    def flush(self) -> None:
        """Retry every deferred message now."""
        if self.name == "postfix":
            run("postqueue", "-f")
        else:
            run("exim4", "-qf")


def _stop_mta() -> None:
    run("bash", ROOT / ".ci" / "mta.sh", "stop")
    wait_until("port 25 to close", lambda: not port_open(), timeout=15)


def _write_site_files(config: Path, venv: Path) -> str:
    """Init the database and print the alias lines, both as helpdesk; write the alias map."""
    helpdesk = str(venv / "bin" / "helpdesk-pipe")
    as_helpdesk(helpdesk, "--config", config, "init")
    lines = as_helpdesk(helpdesk, "--config", config, "aliases").stdout
    for queue, local in ALIASES.items():
        assert re.search(
            rf'^{re.escape(local)}:\s+"\|{re.escape(helpdesk)} --config {re.escape(str(config))}'
            rf' deliver --queue {queue}"$',
            lines,
            re.M,
        ), lines
    aliases = ETC / "aliases"
    aliases.write_text(lines)
    for path in (ETC, aliases):
        os.chown(path, pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid)
    aliases.chmod(0o644)
    return lines


def _postfix_milter_setting(setting: str) -> bool:
    return setting.split("=")[0].strip() in ("smtpd_milters", "milter_default_action")


def _postfix(catcher: SmtpCatcher) -> None:
    """Configure Postfix with etc/postfix/main.cf.helpdesk and the README's header_checks
    (its milters only in the test that starts them), and start it."""
    snippet = (ROOT / "etc" / "postfix" / "main.cf.helpdesk").read_text()
    settings = [
        line.replace("/etc/helpdesk/postfix/aliases", str(ETC / "aliases"))
        for line in snippet.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    readme_install(README_POSTFIX_AR, "etc/postfix/header_checks.helpdesk")
    authres = readme_postconf(README_POSTFIX_AR)
    settings += [s for s in authres if not _postfix_milter_setting(s)]
    settings.append("smtpd_milters =")  # what an interrupted milter test may have left
    # One postconf call: each later Postfix command waits until main.cf is 2 s old (P5).
    run(
        "postconf",
        "-e",
        "inet_interfaces = loopback-only",
        "maillog_file = /var/log/postfix.log",
        "minimal_backoff_time = 1s",
        "maximal_backoff_time = 2s",
        "queue_run_delay = 1s",
        f"relayhost = [127.0.0.1]:{catcher.port}",
        *settings,
    )
    run("postconf", "-X", "default_transport", "relay_transport")  # "Local only" set them
    if not Path("/etc/aliases").exists():
        Path("/etc/aliases").write_text("postmaster: root\n")
    run("newaliases")
    # The map's owner runs its pipes: compile it as helpdesk (P7).
    as_helpdesk("postalias", ETC / "aliases")
    assert (ETC / "aliases.db").stat().st_uid == pwd.getpwnam(USER).pw_uid
    run("postsuper", "-d", "ALL", check=False)  # nothing left from an earlier run
    run("postfix", "check")
    run("postfix", "start")


def _exim(catcher: SmtpCatcher) -> None:
    """Configure Exim with the router, transport and macros of etc/exim4/ and the README's
    data ACL file, and start it."""
    conf = Path("/etc/exim4/conf.d")
    for part, name in EXIM_FILES.items():
        text = (ROOT / "etc" / "exim4" / "conf.d" / part / name).read_text()
        (conf / part / name).write_text(text.replace("/etc/helpdesk/aliases", str(ETC / "aliases")))
    acl = readme_install(README_EXIM_AR, "etc/exim4/acl_data_local")
    lines = readme_find(
        README_EXIM_AR, r"printf '%s\\n' ((?:'[^']*'[ \\\n]*)+)\| sudo tee -a (\S+)$"
    )
    settings = re.findall(r"'([^']*)'", lines.group(1))
    assert settings == [f"CHECK_DATA_LOCAL_ACL_FILE = {acl}", f"acl_not_smtp = {acl}"], settings
    assert lines.group(2) == str(conf / "main" / EXIM_FILES["main"]), lines.group(2)
    with open(lines.group(2), "a") as localmacros:
        localmacros.write("".join(f"{s}\n" for s in settings))
    tests = {
        "retry": "*  *  F,10m,1s\n",
        "router": (
            "helpdesk_test_catcher:\n"
            "  driver = manualroute\n"
            "  domains = ! +local_domains\n"
            "  route_list = * 127.0.0.1 byname\n"
            "  transport = helpdesk_test_catcher_smtp\n"
            "  self = send\n"
            "  no_more\n"
        ),
        "transport": (
            "helpdesk_test_catcher_smtp:\n"
            "  driver = smtp\n"
            f"  port = {catcher.port}\n"
            "  allow_localhost\n"
            "  hosts_avoid_tls = *\n"
        ),
    }
    for part, name in EXIM_TEST_FILES.items():
        (conf / part / name).write_text(tests[part])
    main = Path("/etc/exim4/update-exim4.conf.conf")
    text = re.sub(
        r"^dc_other_hostnames=.*$",
        f"dc_other_hostnames='localhost;{DOMAIN}'",
        main.read_text(),
        flags=re.M,
    )
    main.write_text(text)
    run("update-exim4.conf")
    for message_id in run("exim4", "-bpr").stdout.split():
        if re.fullmatch(r"\S{6}-\S{6,}-\S{2,}", message_id):
            run("exim4", "-Mrm", message_id, check=False)
    mainlog = Path("/var/log/exim4/mainlog")
    if mainlog.exists():
        os.truncate(mainlog, 0)  # keeps its owner (Debian-exim) and mode
    route = run("exim4", "-bt", f"dsi.support+1-0123456789abcdef@{DOMAIN}").stdout
    assert "transport = helpdesk_pipe" in route, route
    run("exim4", "-bd", "-q1s")


def _unexim() -> None:
    conf = Path("/etc/exim4/conf.d")
    for files in (EXIM_FILES, EXIM_TEST_FILES):
        for part, name in files.items():
            (conf / part / name).unlink(missing_ok=True)
    Path("/etc/exim4/acl_data_local").unlink(missing_ok=True)
    run("update-exim4.conf", check=False)


def _trusted_authserv_ids() -> str:
    """The [mail] line both README sections give (the MX's own name, nothing else)."""
    pattern = r"\[mail\] (trusted_authserv_ids = \[[^]]*\])"
    lines = {
        readme_find(heading, pattern).group(1) for heading in (README_POSTFIX_AR, README_EXIM_AR)
    }
    assert lines == {f'trusted_authserv_ids = ["{AUTHSERV}"]'}, lines
    return lines.pop()


@pytest.fixture(scope="module", params=["postfix", "exim"])
def mta(
    request: pytest.FixtureRequest,
    venv: Path,
    catcher: SmtpCatcher,
    helpdesk_user: pwd.struct_passwd,
) -> Iterator[Mta]:
    """A real MTA on 127.0.0.1:25 delivering our queues to the pipe, run as helpdesk."""
    name = request.param
    if shutil.which("apt-get") is None:
        pytest.fail("the MTA tests install Debian packages: apt-get is missing")
    _stop_mta()
    run("bash", ROOT / ".ci" / "mta.sh", name)
    for path in (ETC, VAR):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o755)
    VAR.chmod(0o750)
    os.chown(VAR, helpdesk_user.pw_uid, helpdesk_user.pw_gid)
    config = write_config(
        VAR,
        f"sqlite:///{DB}",
        outgoing='transport = "sendmail"\ntimeout = 30\n',
        mail=f"max_size = {MAX_SIZE}\n{_trusted_authserv_ids()}\n",
        extra=f'[ingestd]\nsocket = "{SOCKET}"\n\n',
    )
    # The technicians are remote, like the requesters: their mail goes to the catcher too.
    text = config.read_text()
    config.write_text(
        re.sub(
            r"^technicians = .*$",
            lambda m: m.group(0).replace(f"@{DOMAIN}", "@staff.example.net"),
            text,
            flags=re.M,
        )
    )
    config.chmod(0o640)
    os.chown(config, 0, helpdesk_user.pw_gid)
    aliases = _write_site_files(config, venv)
    catcher.clear()
    try:
        if name == "postfix":
            _postfix(catcher)
        else:
            _exim(catcher)
        wait_until(f"{name} to listen on 127.0.0.1:25", port_open, timeout=20, every=0.1)
        yield Mta(name, config, catcher, aliases)
    finally:
        _stop_mta()
        if name == "exim":
            _unexim()


# -- helpers --------------------------------------------------------------------------


def make(
    sender: str, to: str, subject: str, body: str = "Bonjour,\nrien ne marche.\n", extra: str = ""
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.org>"
    for line in extra.splitlines():
        name, _, value = line.partition(": ")
        msg[name] = value
    msg.set_content(body)
    return msg


def send(messages: list[EmailMessage], per_connection: int = 10, source: str = "127.0.0.1") -> None:
    """Hand the messages to the MTA over SMTP on 127.0.0.1:25, a few per connection.

    From another `source` address than 127.0.0.1 the mail comes from a stranger, as from the
    Internet: Debian's Exim then verifies DKIM, and the milters do not skip it.
    """
    for start in range(0, len(messages), per_connection):
        with smtplib.SMTP("127.0.0.1", 25, timeout=30, source_address=(source, 0)) as smtp:
            for msg in messages[start : start + per_connection]:
                refused = smtp.send_message(msg)
                assert not refused, refused


def tickets(mta: Mta) -> list[dict[str, Any]]:
    return cli_json(mta.config, "ticket", "list")


def caught_for(catcher: SmtpCatcher, address: str) -> list[Caught]:
    return [c for c in list(catcher.messages) if address in c.recipients]


def ack_for(mta: Mta, requester: str, timeout: float = 60) -> EmailMessage:
    """Wait for the requester's acknowledgement, relayed by the MTA to the catcher."""
    [caught] = wait_until(
        f"the acknowledgement to {requester}",
        lambda: caught_for(mta.catcher, requester),
        timeout=timeout,
    )
    return caught.message()


# -- the acceptance checks ------------------------------------------------------------


def test_fifty_mails_to_three_aliases_give_fifty_tickets_and_acknowledgements(mta: Mta) -> None:
    before = len(tickets(mta))
    queues = list(ALIASES)
    sent = []
    for n in range(50):
        queue = queues[n % 3]
        requester = f"requester{n}.{mta.name}@example.org"
        sent.append((queue, requester, f"{mta.name} panne {n}"))
    send([make(r, f"{ALIASES[q]}@{DOMAIN}", s) for q, r, s in sent])

    rows = wait_until(
        "50 tickets", lambda: (t := tickets(mta)) and len(t) >= before + 50 and t, timeout=120
    )
    assert len(rows) == before + 50
    by_subject = {r["subject"]: r for r in rows}
    for queue, requester, subject in sent:
        row = by_subject[subject]
        assert (row["queue"], row["requester"]) == (queue, requester)
    # Every acknowledgement left through the MTA's sendmail and was relayed to the catcher.
    for queue, requester, subject in sent:
        ack = ack_for(mta, requester)
        [caught] = caught_for(mta.catcher, requester)
        assert caught.envelope_from == f"{ALIASES[queue]}@{DOMAIN}"
        assert subject in ack["Subject"] and ack["Subject"].startswith("[HD #")
        received = " ".join(ack.get_all("Received", []))
        assert ("Postfix" in received) if mta.name == "postfix" else ("Exim" in received)
    assert wait_until("an empty MTA queue", lambda: not mta.queue(), timeout=30) is True


def test_reply_to_the_signed_plus_address_lands_in_its_ticket(mta: Mta) -> None:
    requester = f"replier.{mta.name}@example.org"
    send([make(requester, f"dsi.support@{DOMAIN}", f"{mta.name} écran noir")])
    ack = ack_for(mta, requester)
    signed = ack["Reply-To"].addresses[0].addr_spec
    assert re.fullmatch(rf"dsi\.support\+\d+-[0-9a-f]{{16}}@{DOMAIN}", signed), signed
    ticket_id = int(signed.split("+")[1].split("-")[0])

    # No References, another subject: only the plus-addressed envelope leads to the ticket.
    send([make(requester, signed, "autre chose", body="Toujours noir.\n")])
    mails = wait_until(
        "the follow-up",
        lambda: [
            m
            for m in cli_json(mta.config, "mail", "list")
            if m["subject"] == "autre chose" and m["verdict"]
        ],
    )
    [mail] = mails
    assert (mail["verdict"], mail["ticket_id"]) == ("followup", ticket_id), mail
    assert "signed reply address" in mail["reason"]
    shown = cli_json(mta.config, "ticket", "show", str(ticket_id))
    assert "Toujours noir." in json.dumps(shown, ensure_ascii=False)


def test_database_down_defers_in_the_mta_then_a_flush_gives_exactly_ten(mta: Mta) -> None:
    before = len(tickets(mta))
    bounces_before = [c for c in mta.catcher.messages if c.envelope_from == ""]
    batch = [
        make(f"patient{n}.{mta.name}@example.org", f"scd.informatique@{DOMAIN}", f"attente {n}")
        for n in range(10)
    ]
    DB.chmod(0o000)  # the pipe (helpdesk, not root) can no longer open it
    try:
        send(batch)

        def all_deferred() -> list[dict[str, Any]] | None:
            waiting = mta.queue()
            explained = [m for m in waiting if any("helpdesk-pipe: " in r for r in m["reasons"])]
            return waiting if len(waiting) == 10 and len(explained) == 10 else None

        waiting = wait_until("10 messages deferred with the pipe's reason", all_deferred)
        reasons = {r for m in waiting for r in m["reasons"] if "helpdesk-pipe: " in r}
        print(f"{mta.name} deferral reasons:", *sorted(reasons)[:3], sep="\n  ")
        assert all("will retry" in r for r in reasons), reasons
    finally:
        DB.chmod(0o660)
    mta.flush()
    wait_until("an empty MTA queue", lambda: not mta.queue(), timeout=60)
    rows = wait_until("10 more tickets", lambda: len(t := tickets(mta)) >= before + 10 and t)
    time.sleep(1.5)  # one more retry period: nothing else may arrive
    rows = tickets(mta)
    assert len(rows) == before + 10
    subjects = sorted(r["subject"] for r in rows if r["subject"].startswith("attente "))
    assert subjects == sorted(f"attente {n}" for n in range(10))
    mails = [m for m in cli_json(mta.config, "mail", "list") if m["subject"].startswith("attente ")]
    assert sorted(m["verdict"] for m in mails) == ["ticket"] * 10, mails
    assert [c for c in mta.catcher.messages if c.envelope_from == ""] == bounces_before


def test_a_mail_over_the_size_limit_bounces_with_the_pipes_reason(mta: Mta) -> None:
    sender = f"bigfile.{mta.name}@example.org"
    before = len(tickets(mta))
    body = ("0123456789" * 7 + "\n") * (2 * MAX_SIZE // 71)
    big = make(sender, f"dsi.support@{DOMAIN}", "trop gros", body=body)
    send([big])
    [bounce] = wait_until("the bounce", lambda: caught_for(mta.catcher, sender), timeout=60)
    assert bounce.envelope_from == ""
    text = " ".join(bounce.data.decode("utf-8", "replace").split())
    reason = f"helpdesk-pipe: message is over this helpdesk's size limit of {MAX_SIZE} bytes"
    assert reason in text, text[:3000]
    assert len(tickets(mta)) == before
    assert not mta.queue()


def test_the_pipe_runs_as_helpdesk_and_the_viewer_reads_what_it_wrote(mta: Mta) -> None:
    requester = f"viewer.{mta.name}@example.org"
    subject = f"Vidéoprojecteur {mta.name}"
    send([make(requester, f"immobilier.travaux@{DOMAIN}", subject)])
    ack = ack_for(mta, requester)
    [path] = LINK.findall(ack.get_content())

    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    for file in (DB, VAR / "helpdesk.log"):
        info = file.stat()
        assert (info.st_uid, info.st_gid) == (uid, gid), file
        assert info.st_mode & stat.S_IRWXO == 0, f"{file} is {oct(info.st_mode)}"
    [mail] = [m for m in cli_json(mta.config, "mail", "list") if m["sender"] == requester]
    assert mail["verdict"] == "ticket"

    code = (
        "import sys\n"
        "from webview import create_app\n"
        "response = create_app().test_client().get(sys.argv[1])\n"
        "print(response.status_code)\n"
        "sys.stdout.write(response.get_data(as_text=True))\n"
    )
    env = {"HELPDESK_CONFIG": str(mta.config), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    result = run(
        "runuser",
        "-u",
        USER,
        "--",
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        VENV / "bin" / "python",
        "-c",
        code,
        path,
        cwd="/",
    )
    status, _, page = result.stdout.partition("\n")
    assert status == "200", result.stdout[:2000] + result.stderr
    assert subject in page


def test_through_ingestd_run_as_helpdesk(mta: Mta) -> None:
    """The alias line unchanged; the pipe, run by the MTA as helpdesk, hands each mail to
    ingestd (run as helpdesk too) through its group-only socket."""
    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    err = VAR / f"ingestd-{mta.name}.err"
    with open(err, "wb") as stderr:
        service = subprocess.Popen(
            ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups",
             VENV / "bin" / "helpdesk-pipe", "--config", mta.config, "ingestd", "--workers", "2"],
            stderr=stderr, cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C"},
        )  # fmt: skip
        try:
            wait_until("ingestd to listen", lambda: SOCKET.exists(), timeout=30, every=0.1)
            info = SOCKET.stat()
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, 0o660)
            before = len(tickets(mta))
            requesters = [f"warm{n}.{mta.name}@example.org" for n in range(20)]
            send([make(r, f"dsi.support@{DOMAIN}", f"warm {r}") for r in requesters])
            wait_until("20 tickets", lambda: len(tickets(mta)) >= before + 20, timeout=120)
            for requester in requesters:
                assert "[HD #" in ack_for(mta, requester)["Subject"]
            handled = re.findall(r"INFO mail #\d+: ticket #\d+ opened", err.read_text())
            assert len(handled) == 20, err.read_text()
            assert len(tickets(mta)) == before + 20
        finally:
            service.terminate()
            assert service.wait(60) == 0, err.read_text()
    assert not SOCKET.exists()


# -- Authentication-Results: only the MX's own reach the pipe --------------------------

FROM_INTERNET = "127.0.0.2"  # not 127.0.0.1: neither "our own" for Exim nor for the milters


def _dkim_signed(msg: EmailMessage, domain: str) -> EmailMessage:
    """Add a DKIM-Signature of `domain` with the right body hash and a key nobody publishes.

    The body hash matches (relaxed canonicalization of a one-line ASCII body), so a verifier
    goes on to fetch the key and finds none: Exim calls that `tmperror`, OpenDKIM `fail`.
    """
    body = msg.get_content().rstrip("\n").encode("ascii")
    assert b"\n" not in body and body == body.strip()
    body_hash = base64.b64encode(hashlib.sha256(body + b"\r\n").digest()).decode()
    selector = f"helpdesk-test-{uuid.uuid4().hex[:12]}"
    signature = base64.b64encode(hashlib.sha512(selector.encode()).digest() * 4).decode()
    # Spaces (folding white space) inside b=: the email package folds there, where it
    # would otherwise turn an overlong word into an encoded word no verifier reads.
    chunks = " ".join(signature[i : i + 60] for i in range(0, len(signature), 60))
    msg["DKIM-Signature"] = (
        f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector};"
        f" h=from:to:subject:date:message-id; bh={body_hash}; b={chunks}"
    )
    return msg


def _stored(mta: Mta, message_id: str) -> tuple[dict[str, Any], EmailMessage]:
    """The mail record (once its verdict is in) and the raw bytes the pipe stored."""
    [record] = wait_until(
        f"the mail {message_id}",
        lambda: [
            m
            for m in cli_json(mta.config, "mail", "list")
            if m["message_id"] == message_id and m["verdict"]
        ],
    )
    raw = run_cli(mta.config, "mail", "show", str(record["id"]), "--raw").stdout_bytes
    return record, email.message_from_bytes(raw, policy=email.policy.default)


def _article(mta: Mta, ticket_id: int, mail_id: int) -> dict[str, Any]:
    shown = cli_json(mta.config, "ticket", "show", str(ticket_id))
    [article] = [a for a in shown["articles"] if a["mail_id"] == mail_id]
    return article


def test_a_forged_authentication_results_is_removed_by_the_mx_and_proves_nothing(
    mta: Mta,
) -> None:
    """The README's header_checks (Postfix) or ACL file (Exim) removes an incoming
    Authentication-Results in our MX's name, over SMTP or from sendmail on the host; the
    requester's tag-only follow-up stays unverified. Sent to the pipe directly, the very same
    header would have proved the From."""
    requester = f"forged.{mta.name}@example.org"
    domain = requester.partition("@")[2]
    send([make(requester, f"dsi.support@{DOMAIN}", f"{mta.name} clavier")], source=FROM_INTERNET)
    ack = ack_for(mta, requester)
    assert ack.get_all("Authentication-Results") is None  # the MX vouches for no mail of ours
    ticket_id = int(re.search(r"\[HD #(\d+)\]", ack["Subject"]).group(1))
    forged = f"{AUTHSERV}; dmarc=pass header.from={domain}"

    def follow_up() -> EmailMessage:
        msg = make(
            requester,
            f"dsi.support@{DOMAIN}",
            f"Re: {ack['Subject']}",
            body="Toujours en panne.\n",
            # The header's name is case-blind: a removal must be too.
            extra=f"Authentication-Results: {forged}\nauthentication-results: {forged}",
        )
        assert len(msg.get_all("Authentication-Results")) == 2
        return _dkim_signed(msg, domain)

    over_smtp, on_the_host = follow_up(), follow_up()
    send([over_smtp], source=FROM_INTERNET)
    as_nobody = ("runuser", "-u", "nobody", "--", "/usr/sbin/sendmail", "-i")
    run(*as_nobody, f"dsi.support@{DOMAIN}", input=on_the_host.as_string(), cwd="/")
    for msg in (over_smtp, on_the_host):
        record, stored = _stored(mta, msg["Message-ID"])
        assert (record["verdict"], record["ticket_id"]) == ("followup", ticket_id), record
        results = [str(v) for v in stored.get_all("Authentication-Results", [])]
        assert not [r for r in results if "dmarc=pass" in r], results
        if mta.name == "exim" and msg is over_smtp:
            # Exim's own, from ${authresults}: its DKIM verdict on the signature, about the
            # From's domain; the key is nowhere, so neither pass nor fail.
            [own] = results
            print("exim:", own)
            assert own.split(";")[0].split() == [AUTHSERV], own
            verdict = re.search(r"\bdkim=(\w+)[^;]*\bheader\.d=(\S+)", own)
            assert verdict is not None, own
            assert verdict.group(2) == domain and verdict.group(1) not in ("pass", "fail"), own
        else:
            assert results == []  # no milter here, and Exim adds its own to network mail only
        article = _article(mta, ticket_id, record["id"])
        assert (article["unverified"], article["internal"]) == (True, True), record["reason"]

    # The control: the same mail handed straight to the pipe keeps the header, which proves
    # the From. So the MX's removal, nothing else, kept the forged mails unverified.
    direct = follow_up()
    as_helpdesk(
        VENV / "bin" / "helpdesk-pipe", "--config", mta.config, "deliver", "--queue", "dsi",
        input=direct.as_string(), cwd="/",
    )  # fmt: skip
    record, _stored_raw = _stored(mta, direct["Message-ID"])
    assert f"DMARC pass for {domain}" in (record["reason"] or ""), record
    article = _article(mta, ticket_id, record["id"])
    assert (article["unverified"], article["internal"]) == (False, False), record["reason"]


def _start_milters(settings: dict[str, dict[str, str]], started: list[tuple[int, int]]) -> None:
    """Start OpenDKIM and OpenDMARC by hand with Debian's files and the README's settings;
    add each one's pid and port to `started` as soon as it runs.

    Each reads a copy of its /etc file with the README's lines in place of Debian's own
    (/etc stays as the package left it); there is no systemd here (mta.md, P1).
    """
    for name in MILTERS:
        debian = Path(f"/etc/{name}.conf")
        ours = settings[str(debian)]
        kept = [
            line
            for line in debian.read_text().splitlines()
            if not line.split() or line.split()[0] not in ours
        ]
        conf = ETC / f"{name}.conf"
        conf.write_text("\n".join(kept + [f"{k} {v}" for k, v in ours.items()]) + "\n")
        account = pwd.getpwnam(name)
        rundir = Path(f"/run/{name}")
        rundir.mkdir(mode=0o750, exist_ok=True)
        os.chown(rundir, account.pw_uid, account.pw_gid)
        pidfile = rundir / f"{name}.pid"
        pidfile.unlink(missing_ok=True)  # a stale one would pass for the new daemon's
        run(f"/usr/sbin/{name}", "-x" if name == "opendkim" else "-c", conf)
        pid = wait_until(f"{name} to start", lambda p=pidfile: p.exists() and p.read_text())
        port = int(re.fullmatch(r"inet:(\d+)@127\.0\.0\.1", ours["Socket"]).group(1))
        started.append((int(pid), port))
        wait_until(f"{name} on port {port}", lambda port=port: port_open(port), every=0.1)


def _stop_milters(started: list[tuple[int, int]]) -> None:
    """Stop the milters this test started, by pid; wait until their ports are closed."""
    for pid, _port in started:
        os.kill(pid, signal.SIGTERM)
    for pid, port in started:
        wait_until(f"milter {pid} to close port {port}", lambda p=port: not port_open(p))


def test_postfix_milters_add_their_results_after_the_header_checks(mta: Mta) -> None:
    """OpenDKIM and OpenDMARC wired as the README says: the forged header is still removed,
    and the milters' own Authentication-Results, in our MX's name, reach the pipe."""
    if mta.name != "postfix":
        pytest.skip("Exim has no milter interface; the README gives it DKIM only")
    run("bash", ROOT / ".ci" / "mta.sh", "milters")
    settings = readme_milter_settings(README_POSTFIX_AR)
    assert {f"/etc/{name}.conf" for name in MILTERS} == set(settings), settings
    assert all(s["AuthservID"] == AUTHSERV for s in settings.values()), settings
    # .invalid never resolves (RFC 6761; OpenDKIM's unbound answers it itself): no DMARC
    # record and no key, whatever DNS the machine has. (OpenDMARC's own SPF check passes
    # any client on loopback: it says spf=pass here, which nothing asserts.)
    requester = f"milters@{uuid.uuid4().hex[:8]}.invalid"
    domain = requester.partition("@")[2]
    started: list[tuple[int, int]] = []
    try:
        _start_milters(settings, started)
        run(
            "postconf",
            "-e",
            *[s for s in readme_postconf(README_POSTFIX_AR) if _postfix_milter_setting(s)],
        )
        run("postfix", "reload")
        msg = make(
            requester,
            f"dsi.support@{DOMAIN}",
            "milters",
            body="Bonjour.\n",
            extra=(
                f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from={domain}\n"
                f"Authentication-Results: {AUTHSERV}; dkim=pass header.d={domain}"
            ),
        )
        send([_dkim_signed(msg, domain)], source=FROM_INTERNET)
        record, stored = _stored(mta, msg["Message-ID"])
    finally:
        run("postconf", "-e", "smtpd_milters =")
        run("postfix", "reload")
        _stop_milters(started)
    results = [" ".join(str(v).split()) for v in stored.get_all("Authentication-Results", [])]
    print("postfix with milters:", *results, record["reason"], sep="\n  ")
    assert all(r.split(";")[0].split() == [AUTHSERV] for r in results), results
    assert not [r for r in results if re.search(r"\b(dmarc|dkim)=pass\b", r)], results
    about = re.escape(domain)
    # OpenDMARC's verdict: no DMARC record for the domain.
    assert [r for r in results if re.search(rf"\bdmarc=none\b.*\bheader\.from={about}\b", r)]
    # OpenDKIM's: no key for the signature, which it calls a failure (Exim: tmperror).
    assert [r for r in results if re.search(rf"\bdkim=fail\b.*\bheader\.d={about}\b", r)]
    # The pipe read our MX's verdicts and found nothing that proves or refuses this From:
    # no DMARC record, and a signature without a key (RFC 6376: no signature at all). A
    # new ticket, acknowledged as any is; no forged pass counted.
    assert record["verdict"] == "ticket", record
    assert not record["reason"], record
