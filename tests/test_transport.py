"""Outgoing transports against a real SMTP server, a stand-in sendmail, and a real directory."""

from __future__ import annotations

import json
import logging
import os
import ssl
import stat
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from smtp_catcher import SmtpCatcher

from helpdesk.config import ConfigError
from helpdesk.config import Outgoing
from helpdesk.notify.transport import DirectoryTransport
from helpdesk.notify.transport import PermanentFailure
from helpdesk.notify.transport import SendmailTransport
from helpdesk.notify.transport import SmtpTransport
from helpdesk.notify.transport import TemporaryFailure
from helpdesk.notify.transport import TransportError
from helpdesk.notify.transport import make_transport

# The fixtures smtp_catcher and make_smtp_catcher; harmless if conftest loads it too.
pytest_plugins = ["smtp_catcher"]

SENDER = "helpdesk-bounces@univ.example"
TO = "alice@univ.example"
PASSWORD = "Corr3ct-H0rse-Battery"

# LF line ends, as the outbox may store them; a body line that starts with a
# dot, one that is only a dot (the SMTP end-of-data marker), and 8-bit text.
MESSAGE = (
    "From: Helpdesk <helpdesk@univ.example>\n"
    "To: alice@univ.example\n"
    "Subject: [HD#42] Imprimante en panne\n"
    "Message-ID: <hd.42.1@univ.example>\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Bonjour,\n"
    ".le point en tête de ligne reste\n"
    "..et les deux points aussi\n"
    ".\n"
    "Fin — déjà.\n"
).encode()
MESSAGE_CRLF = MESSAGE.replace(b"\n", b"\r\n")


def smtp_for(catcher: SmtpCatcher, **settings: Any) -> SmtpTransport:
    """An SmtpTransport aimed at a catcher, trusting its test CA if it has one."""
    context = ssl.create_default_context(cafile=catcher.cafile) if catcher.cafile else None
    outgoing = Outgoing(host=catcher.host, port=catcher.port, timeout=5, **settings)
    transport = make_transport(outgoing, ssl_context=context)
    assert isinstance(transport, SmtpTransport)
    return transport


# --- SMTP ---------------------------------------------------------------------


def test_smtp_delivers_the_exact_bytes_with_the_envelope(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    [caught] = smtp_catcher.wait_for(1)
    assert caught.envelope_from == SENDER
    assert caught.recipients == [TO]
    assert caught.data == MESSAGE_CRLF  # byte for byte, line ends made CRLF for SMTP
    assert caught.message()["Subject"] == "[HD#42] Imprimante en panne"


def test_smtp_body_lines_starting_with_a_dot_survive(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, [TO], MESSAGE_CRLF)
    transport.close()
    lines = smtp_catcher.wait_for(1)[0].message().get_content().splitlines()
    assert lines[1:4] == [".le point en tête de ligne reste", "..et les deux points aussi", "."]
    assert lines[4:] == ["Fin — déjà."]  # the lone "." did not end the data early


def test_smtp_null_sender(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send("", [TO], MESSAGE)
    transport.close()
    assert smtp_catcher.wait_for(1)[0].envelope_from == ""


def test_smtp_utf8_address(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, ["josé@univ.example"], MESSAGE)
    transport.close()
    assert smtp_catcher.wait_for(1)[0].recipients == ["josé@univ.example"]


def test_smtp_sends_of_one_flush_share_one_connection(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, [TO], MESSAGE)
    transport.send(SENDER, ["bob@univ.example"], MESSAGE)
    caught = smtp_catcher.wait_for(2)
    assert smtp_catcher.connections == 1
    assert [c.connection for c in caught] == [1, 1]
    transport.close()
    transport.close()  # twice is harmless
    transport.send(SENDER, [TO], MESSAGE)  # a closed transport opens a new connection
    transport.close()
    assert smtp_catcher.wait_for(3)[2].connection == 2


def test_smtp_reconnects_once_when_the_server_dropped_the_connection(
    smtp_catcher: SmtpCatcher,
) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, [TO], MESSAGE)
    smtp_catcher.wait_for(1)
    smtp_catcher.drop_connections()  # as the server's idle timeout would, between two flushes
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    caught = smtp_catcher.wait_for(2)
    assert [c.connection for c in caught] == [1, 2]


def test_smtp_server_down_is_temporary(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    smtp_catcher.stop()
    with pytest.raises(TemporaryFailure, match=f"127.0.0.1:{smtp_catcher.port}"):
        transport.send(SENDER, [TO], MESSAGE)
    transport.close()


@pytest.mark.parametrize(("code", "failure"), [(450, TemporaryFailure), (550, PermanentFailure)])
def test_smtp_refused_recipient(
    smtp_catcher: SmtpCatcher, code: int, failure: type[TransportError]
) -> None:
    smtp_catcher.refuse = code
    transport = smtp_for(smtp_catcher)
    with pytest.raises(failure) as raised:
        transport.send(SENDER, [TO], MESSAGE)
    assert f"{TO}: {code} " in str(raised.value)  # the server's own code and text
    # The connection stays usable for the next message of the flush.
    smtp_catcher.refuse = None
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    assert len(smtp_catcher.wait_for(1)) == 1
    assert smtp_catcher.connections == 1


def test_smtp_partial_refusal_sends_to_the_others_and_warns(
    smtp_catcher: SmtpCatcher, caplog: pytest.LogCaptureFixture
) -> None:
    smtp_catcher.refuse_for["gone@univ.example"] = 550
    transport = smtp_for(smtp_catcher)
    with caplog.at_level(logging.WARNING, logger="helpdesk.transport"):
        transport.send(SENDER, [TO, "gone@univ.example"], MESSAGE)
    transport.close()
    assert smtp_catcher.wait_for(1)[0].recipients == [TO]
    [record] = [r for r in caplog.records if r.name == "helpdesk.transport"]
    assert record.levelno == logging.WARNING
    assert "gone@univ.example (550 " in record.getMessage()


def test_smtp_starttls_and_auth_with_the_test_ca(
    make_smtp_catcher: Callable[..., SmtpCatcher],
) -> None:
    catcher = make_smtp_catcher(tls=True, username="helpdesk", password=PASSWORD)
    transport = smtp_for(catcher, security="starttls", username="helpdesk", password=PASSWORD)
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    [caught] = catcher.wait_for(1)
    assert caught.tls and caught.login == "helpdesk"
    assert caught.data == MESSAGE_CRLF


def test_smtp_implicit_tls(make_smtp_catcher: Callable[..., SmtpCatcher]) -> None:
    catcher = make_smtp_catcher(implicit_tls=True)
    transport = smtp_for(catcher, security="tls")
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    assert catcher.wait_for(1)[0].tls


def test_smtp_default_context_refuses_an_unknown_certificate(
    make_smtp_catcher: Callable[..., SmtpCatcher],
) -> None:
    catcher = make_smtp_catcher(tls=True)
    # Production's default context: the test CA is not trusted, so no mail goes.
    transport = make_transport(
        Outgoing(host=catcher.host, port=catcher.port, security="starttls", timeout=5)
    )
    with pytest.raises(TemporaryFailure, match="certificate"):
        transport.send(SENDER, [TO], MESSAGE)
    assert catcher.messages == []


def test_smtp_starttls_required_but_not_offered(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher, security="starttls", username="helpdesk", password=PASSWORD)
    with pytest.raises(TemporaryFailure, match="does not offer STARTTLS"):
        transport.send(SENDER, [TO], MESSAGE)
    assert smtp_catcher.messages == []


def test_smtp_wrong_password_fails_without_showing_it(
    make_smtp_catcher: Callable[..., SmtpCatcher], caplog: pytest.LogCaptureFixture
) -> None:
    catcher = make_smtp_catcher(tls=True, username="helpdesk", password="the-right-one")
    transport = smtp_for(catcher, security="starttls", username="helpdesk", password=PASSWORD)
    with caplog.at_level(logging.DEBUG), pytest.raises(TransportError) as raised:
        transport.send(SENDER, [TO], MESSAGE)
    assert "535" in str(raised.value)
    shown = "".join(traceback.format_exception(raised.value)) + repr(transport) + caplog.text
    assert PASSWORD not in shown
    assert catcher.messages == []


# --- sendmail -------------------------------------------------------------------

# Stands in for /usr/sbin/sendmail: it records its argv (NUL-separated, exact) and
# its stdin, then exits with the code in the file "exitcode". The real Postfix
# sendmail is exercised in the MTA end-to-end tests of a later issue.
FAKE_SENDMAIL = """#!/bin/sh
here=$(dirname "$0")
for arg in "$0" "$@"; do printf '%s\\0' "$arg"; done > "$here/argv"
cat > "$here/stdin"
code=$(cat "$here/exitcode" 2>/dev/null || echo 0)
case "$code" in
  sleep) exec sleep 10 ;;
  kill) kill -KILL $$ ;;
esac
[ "$code" = 0 ] || echo "sendmail: fatal: simulated failure $code" >&2
exit "$code"
"""


@pytest.fixture
def fake_sendmail(tmp_path: Path) -> Path:
    """An executable stand-in for sendmail in its own directory."""
    directory = tmp_path / "bin"
    directory.mkdir()
    program = directory / "sendmail"
    program.write_text(FAKE_SENDMAIL)
    program.chmod(0o755)
    return program


def sendmail_for(program: Path, timeout: float = 10) -> SendmailTransport:
    outgoing = Outgoing(transport="sendmail", sendmail=str(program), timeout=timeout)
    transport = make_transport(outgoing)
    assert isinstance(transport, SendmailTransport)
    return transport


def recorded_argv(program: Path) -> list[str]:
    return (program.parent / "argv").read_bytes().decode().split("\0")[:-1]


def test_sendmail_argv_and_stdin(fake_sendmail: Path, tmp_path: Path) -> None:
    hostile = f"a@b; touch {tmp_path}/pwned"
    sendmail_for(fake_sendmail).send(SENDER, [TO, hostile, "-oQ/tmp"], MESSAGE_CRLF)
    assert recorded_argv(fake_sendmail) == [
        str(fake_sendmail),
        "-i",
        "-f",
        SENDER,
        "--",
        TO,
        hostile,
        "-oQ/tmp",
    ]
    assert not (tmp_path / "pwned").exists()  # no shell ever saw it
    # A local program gets local line ends; the content is otherwise untouched.
    assert (fake_sendmail.parent / "stdin").read_bytes() == MESSAGE


def test_sendmail_null_sender(fake_sendmail: Path) -> None:
    sendmail_for(fake_sendmail).send("", [TO], MESSAGE)
    assert recorded_argv(fake_sendmail)[1:5] == ["-i", "-f", "<>", "--"]


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        ("75", TemporaryFailure),
        ("67", PermanentFailure),
        ("64", PermanentFailure),
        ("kill", TemporaryFailure),
    ],
)
def test_sendmail_exit_codes(fake_sendmail: Path, code: str, failure: type[TransportError]) -> None:
    (fake_sendmail.parent / "exitcode").write_text(code)
    with pytest.raises(failure) as raised:
        sendmail_for(fake_sendmail).send(SENDER, [TO], MESSAGE)
    if code.isdigit():
        assert f"exited {code}" in str(raised.value)
        assert f"simulated failure {code}" in str(raised.value)  # stderr's first line


def test_sendmail_timeout_is_temporary(fake_sendmail: Path) -> None:
    (fake_sendmail.parent / "exitcode").write_text("sleep")
    with pytest.raises(TemporaryFailure, match="no answer"):
        sendmail_for(fake_sendmail, timeout=0.5).send(SENDER, [TO], MESSAGE)


def test_sendmail_missing_program_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure):
        sendmail_for(tmp_path / "no-such-sendmail").send(SENDER, [TO], MESSAGE)


# --- directory -----------------------------------------------------------------


def test_directory_writes_exact_bytes_and_the_envelope(tmp_path: Path) -> None:
    outbox = tmp_path / "spool" / "outgoing"  # created on the first send
    transport = make_transport(Outgoing(transport="directory", directory=str(outbox)))
    assert isinstance(transport, DirectoryTransport)
    transport.send(SENDER, [TO], MESSAGE)
    transport.send("", [TO, "bob@univ.example"], MESSAGE_CRLF)
    transport.close()
    names = sorted(os.listdir(outbox))
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind
    emls = [n for n in names if n.endswith(".eml")]
    assert len(emls) == 2 and len(names) == 4
    first, second = (outbox / n for n in emls)  # the names sort in sending order
    assert first.read_bytes() == MESSAGE and second.read_bytes() == MESSAGE_CRLF
    envelope = json.loads((outbox / (emls[1][:-4] + ".envelope.json")).read_text())
    assert envelope == {"from": "", "to": [TO, "bob@univ.example"]}
    assert not stat.S_IMODE(first.stat().st_mode) & 0o007  # not for every local user


def test_directory_unusable_is_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    transport = make_transport(Outgoing(transport="directory", directory=str(blocker / "sub")))
    with pytest.raises(TemporaryFailure):
        transport.send(SENDER, [TO], MESSAGE)


def test_directory_without_write_permission_is_temporary(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir(mode=0o500)
    transport = make_transport(Outgoing(transport="directory", directory=str(outbox)))
    if os.geteuid() != 0:
        with pytest.raises(TemporaryFailure, match="Permission denied"):
            transport.send(SENDER, [TO], MESSAGE)
        return
    # Root writes through file modes: the send runs in a child that became nobody.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            transport.send(SENDER, [TO], MESSAGE)
        except TemporaryFailure as exc:
            code = 0 if "Permission denied" in str(exc) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --- common ---------------------------------------------------------------------


def test_make_transport_refuses_unknown_settings() -> None:
    with pytest.raises(ConfigError):
        make_transport(Outgoing(transport="pigeon"))
    with pytest.raises(ConfigError):
        make_transport(Outgoing(security="maybe"))
    with pytest.raises(ConfigError):
        make_transport(Outgoing(transport="directory"))


@pytest.mark.parametrize("bad", [[], ["alice@univ.example\r\nRCPT TO:<eve@evil.example>"]])
def test_bad_envelopes_are_permanent(tmp_path: Path, bad: list[str]) -> None:
    transport = make_transport(Outgoing(transport="directory", directory=str(tmp_path)))
    with pytest.raises(PermanentFailure):
        transport.send(SENDER, bad, MESSAGE)
    assert os.listdir(tmp_path) == []


# --- the catcher itself ---------------------------------------------------------------


def test_catcher_wait_for_says_what_it_has(smtp_catcher: SmtpCatcher) -> None:
    transport = smtp_for(smtp_catcher)
    transport.send(SENDER, [TO], MESSAGE)
    with pytest.raises(AssertionError, match=r"expected 2 message\(s\) within 0.2 s, caught 1"):
        smtp_catcher.wait_for(2, timeout=0.2)
    smtp_catcher.clear()
    assert smtp_catcher.messages == [] and smtp_catcher.connections == 0
    transport.send(SENDER, [TO], MESSAGE)
    transport.close()
    assert smtp_catcher.wait_for(1)[0].connection == 1  # same connection as before clear()
