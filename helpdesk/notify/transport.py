"""How a finished message leaves: SMTP, a local sendmail program, or a directory.

A transport takes the envelope and the exact bytes of one RFC 5322 message and
either hands them on or raises TemporaryFailure (try again later) or
PermanentFailure (this message will never go). The outbox decides what to do
with each.

Stdlib only, and smtplib, ssl and subprocess are imported where they are used:
the mail pipe loads this module after its commit, for every mail that queued a
notification.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

from helpdesk.config import ConfigError
from helpdesk.config import Outgoing

if TYPE_CHECKING:
    import smtplib
    import ssl

__all__ = [
    "TransportError",
    "TemporaryFailure",
    "PermanentFailure",
    "Transport",
    "SmtpTransport",
    "SendmailTransport",
    "DirectoryTransport",
    "make_transport",
]

log = logging.getLogger("helpdesk.transport")

EX_TEMPFAIL = 75  # sysexits.h: the sendmail convention for "queue it and retry"

# What smtplib's _fix_eols does for str, which it skips for bytes.
_ANY_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")


class TransportError(Exception):
    """A message could not be handed on."""


class TemporaryFailure(TransportError):
    """Try again later: connection refused, timeout, 4xx reply, sendmail exit 75..."""


class PermanentFailure(TransportError):
    """This message will never go: 5xx for its recipient or sender, a bad address..."""


class Transport(Protocol):
    """Something that hands a finished message on."""

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> None:
        """Hand one message on, or raise TemporaryFailure or PermanentFailure."""
        ...

    def close(self) -> None:
        """Release whatever the transport holds open (a connection); it may be reused after."""
        ...


def make_transport(outgoing: Outgoing, ssl_context: ssl.SSLContext | None = None) -> Transport:
    """Build the transport [outgoing] asks for.

    :param ssl_context: only for tests (a private CA); production leaves it to the
        default context, which verifies certificates and host names.
    """
    if outgoing.transport == "smtp":
        return SmtpTransport(outgoing, ssl_context=ssl_context)
    if outgoing.transport == "sendmail":
        return SendmailTransport(outgoing)
    if outgoing.transport == "directory":
        return DirectoryTransport(outgoing)
    raise ConfigError(
        f"[outgoing] transport must be smtp, sendmail or directory, not {outgoing.transport!r}"
    )


def _check_envelope(envelope_from: str, recipients: Sequence[str]) -> list[str]:
    """Refuse what no transport can carry; return the recipients as a list."""
    recipients = list(recipients)
    if not recipients:
        raise PermanentFailure("no recipient")
    for address in (envelope_from, *recipients):
        # A line break would smuggle a second SMTP command or argv line past us.
        if any(c in address for c in "\r\n\0"):
            raise PermanentFailure(f"bad address {address!r}")
    for address in recipients:
        if not address.strip():
            raise PermanentFailure("empty recipient address")
    return recipients


class SmtpTransport:
    """Send over SMTP, keeping one connection open across the sends of a flush."""

    def __init__(self, outgoing: Outgoing, ssl_context: ssl.SSLContext | None = None) -> None:
        """Remember the settings; nothing connects before the first send.

        :param ssl_context: for tests only; None means ssl.create_default_context().
        """
        if outgoing.security not in ("none", "starttls", "tls"):
            raise ConfigError(
                f"[outgoing] security must be none, starttls or tls, not {outgoing.security!r}"
            )
        self.outgoing = outgoing
        self._ssl_context = ssl_context
        self._connection: smtplib.SMTP | None = None

    def __repr__(self) -> str:
        # No password here, whatever ends up printing the transport.
        o = self.outgoing
        return f"<SmtpTransport {o.host}:{o.port} security={o.security} user={o.username!r}>"

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> None:
        """Send one message, reusing the open connection; reconnect once if it was dropped.

        Recipients refused while others were accepted are logged, not raised: the
        message went to the others, and sending it again would duplicate it.
        """
        import smtplib

        recipients = _check_envelope(envelope_from, recipients)
        # smtplib dot-stuffs bytes but leaves their line ends alone; SMTP wants CRLF.
        data = _ANY_EOL.sub(b"\r\n", message)
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect()
            options = _mail_options(connection, envelope_from, recipients, data)
            try:
                refused = connection.sendmail(envelope_from, recipients, data, options)
            except smtplib.SMTPRecipientsRefused as exc:
                raise _all_refused(exc.recipients) from None
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                # A kept connection may have timed out on the server's side since
                # the last send: that is no news about the server, try a fresh one.
                if reused and attempt == 1:
                    continue
                raise TemporaryFailure(f"{self._where()}: disconnected: {exc}") from None
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:  # the server is closing this connection
                    self._drop()
                    if reused and attempt == 1:
                        continue
                raise _reply_failure(self._where(), exc.smtp_code, exc.smtp_error) from None
            except smtplib.SMTPNotSupportedError as exc:
                # SMTPUTF8 needed and not offered: this relay will never take it.
                raise PermanentFailure(f"{self._where()}: {exc}") from None
            except (OSError, UnicodeError) as exc:
                self._drop()
                raise TemporaryFailure(f"{self._where()}: {exc}") from None
            if refused:
                log.warning(
                    "%s accepted the message for %d of %d recipients; refused: %s",
                    self._where(),
                    len(recipients) - len(refused),
                    len(recipients),
                    "; ".join(f"{rcpt} ({_reply_text(*reply)})" for rcpt, reply in refused.items()),
                )
            return

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open; errors are ignored."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except OSError:  # smtplib's errors are OSErrors too
            connection.close()

    def _where(self) -> str:
        return f"smtp {self.outgoing.host}:{self.outgoing.port}"

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and authenticate a connection; every failure here is temporary.

        Nothing before MAIL FROM is about this message, so even a 5xx (a bad
        password, no STARTTLS) is a setting to fix, after which the message goes.
        """
        import smtplib
        import ssl

        o = self.outgoing
        connection: smtplib.SMTP | None = None
        try:
            context = None
            if o.security != "none":
                # The default context checks the certificate and the host name.
                context = self._ssl_context or ssl.create_default_context()
            if o.security == "tls":
                connection = smtplib.SMTP_SSL(o.host, o.port, timeout=o.timeout, context=context)
            else:
                connection = smtplib.SMTP(o.host, o.port, timeout=o.timeout)
            connection.ehlo_or_helo_if_needed()
            if o.security == "starttls":
                if not connection.has_extn("starttls"):
                    # Going on in clear text would send the password and the mail
                    # unprotected: refuse, as the sysadmin asked.
                    raise TemporaryFailure(f"{self._where()}: the server does not offer STARTTLS")
                connection.starttls(context=context)
                connection.ehlo()
            if o.username:
                connection.login(o.username, o.password or "")
        except TemporaryFailure:
            _quietly_close(connection)
            raise
        except smtplib.SMTPResponseException as exc:
            _quietly_close(connection)
            # `from None`: the reply to AUTH is the one place a server might echo
            # what we sent; keep only the scrubbed text.
            text = _reply_text(exc.smtp_code, exc.smtp_error)
            if o.password:
                text = text.replace(o.password, "***")
            raise TemporaryFailure(f"{self._where()}: {text}") from None
        except (OSError, UnicodeError) as exc:  # refused, timeout, TLS, AUTH not offered...
            _quietly_close(connection)
            raise TemporaryFailure(f"{self._where()}: {exc}") from None
        self._connection = connection
        return connection


def _mail_options(
    connection: smtplib.SMTP, envelope_from: str, recipients: list[str], data: bytes
) -> list[str]:
    """Declare 8-bit content and UTF-8 addresses, as RFC 6152 and RFC 6531 ask."""
    options = []
    if not data.isascii() and connection.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(address.isascii() for address in (envelope_from, *recipients)):
        # smtplib raises SMTPNotSupportedError if the server lacks SMTPUTF8.
        options.append("SMTPUTF8")
    return options


def _quietly_close(connection: Any) -> None:
    if connection is not None:
        try:
            connection.close()
        except OSError:
            pass


def _reply_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _reply_failure(where: str, code: int, text: bytes | str) -> TransportError:
    """A server reply to MAIL, RCPT or DATA: 5xx is final, anything else is not."""
    message = f"{where}: {_reply_text(code, text)}"
    if 500 <= code <= 599:
        return PermanentFailure(message)
    return TemporaryFailure(message)


def _all_refused(refused: dict[str, tuple[int, bytes]]) -> TransportError:
    """Every recipient refused: final only if every refusal was final."""
    text = "; ".join(f"{rcpt}: {_reply_text(*reply)}" for rcpt, reply in refused.items())
    if all(500 <= code <= 599 for code, _ in refused.values()):
        return PermanentFailure(f"recipient refused: {text}")
    return TemporaryFailure(f"recipient refused: {text}")


class SendmailTransport:
    """Pipe the message into the local MTA's sendmail program (Postfix, Exim, ...)."""

    def __init__(self, outgoing: Outgoing) -> None:
        """Remember the program and the timeout."""
        self.program = outgoing.sendmail
        self.timeout = outgoing.timeout

    def __repr__(self) -> str:
        return f"<SendmailTransport {self.program}>"

    def command(self, envelope_from: str, recipients: Sequence[str]) -> list[str]:
        """The argv: -i so a lone "." line is text, "--" so no recipient reads as an option.

        The null sender is `-f <>`: Postfix parses the -f value as an address, so
        "<>" and "" both give the null sender; Exim and Sendmail document "<>", and
        it is never an empty argument that a wrapper might drop.
        """
        return [self.program, "-i", "-f", envelope_from or "<>", "--", *recipients]

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> None:
        """Run sendmail once; its exit status says whether to retry (75) or give up."""
        import subprocess

        recipients = _check_envelope(envelope_from, recipients)
        # A local program reads local line ends; Postfix would keep stray CRs otherwise.
        data = _ANY_EOL.sub(b"\n", message)
        args = self.command(envelope_from, recipients)
        try:
            result = subprocess.run(
                args,
                input=data,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            # run() has killed it; whether it queued anything is unknown, and a
            # duplicate is better than a lost notification.
            raise TemporaryFailure(f"{self.program}: no answer within {self.timeout:g} s") from None
        except OSError as exc:  # missing, not executable, cannot fork
            raise TemporaryFailure(f"{self.program}: {exc.strerror or exc}") from None
        code = result.returncode
        if code == 0:
            return
        stderr = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = f": {stderr[0]}" if stderr else ""
        if code < 0:
            raise TemporaryFailure(f"{self.program} killed by signal {-code}{detail}")
        if code == EX_TEMPFAIL:
            raise TemporaryFailure(f"{self.program} exited {code} (temporary failure){detail}")
        raise PermanentFailure(f"{self.program} exited {code}{detail}")

    def close(self) -> None:
        """Nothing to release: each send is its own process."""


class DirectoryTransport:
    """Drop each message as a file, for tests, demos, or another program to pick up.

    `<name>.eml` holds the exact bytes given and `<name>.envelope.json` the
    envelope ({"from": ..., "to": [...]}). Both appear whole (written under a
    dot-name, then renamed), the envelope first: whoever sees a .eml finds its
    envelope beside it.
    """

    def __init__(self, outgoing: Outgoing) -> None:
        """Remember the directory; it is created on the first send if missing."""
        if not outgoing.directory:
            raise ConfigError("[outgoing] transport directory needs a directory")
        self.directory = outgoing.directory

    def __repr__(self) -> str:
        return f"<DirectoryTransport {self.directory}>"

    def send(self, envelope_from: str, recipients: Sequence[str], message: bytes) -> None:
        """Write the message and its envelope; any OSError (disk full, rights) is temporary."""
        recipients = _check_envelope(envelope_from, recipients)
        now = datetime.now(UTC)
        # Sorts by time; the random part keeps two sends in one microsecond apart.
        name = f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(4)}"
        envelope = json.dumps({"from": envelope_from, "to": recipients}, ensure_ascii=False)
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            self._write(f"{name}.envelope.json", envelope.encode("utf-8") + b"\n")
            self._write(f"{name}.eml", message)
            _fsync_directory(self.directory)
        except OSError as exc:
            raise TemporaryFailure(f"{self.directory}: {exc}") from None

    def _write(self, filename: str, data: bytes) -> None:
        """Write a file under a hidden temporary name, then rename it into place."""
        final = os.path.join(self.directory, filename)
        temporary = os.path.join(self.directory, f".{filename}.tmp")
        # 0640 less the umask: notifications carry access links, not for everyone's eyes.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # the outbox marks it sent once we return
            os.replace(temporary, final)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise

    def close(self) -> None:
        """Nothing to release."""


def _fsync_directory(directory: str) -> None:
    """Make the renames durable; some file systems cannot, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
