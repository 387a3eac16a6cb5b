"""A real SMTP server for the tests (aiosmtpd), and pytest fixtures that start it.

Load it as a plugin with `pytest_plugins = ["smtp_catcher"]`, or import the
fixtures into a test module. It listens on 127.0.0.1 on a free port, keeps
every message it accepts, and can refuse recipients, offer STARTTLS (or speak
TLS from the first byte) with a throwaway certificate, and require AUTH.
"""

from __future__ import annotations

import asyncio
import atexit
import email
import email.policy
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import AuthResult
from aiosmtpd.smtp import LoginPassword

__all__ = ["Caught", "SmtpCatcher", "smtp_catcher", "make_smtp_catcher", "catcher_certificate"]

SERVER_NAME = "catcher.test"  # given to aiosmtpd so it never waits on socket.getfqdn()


@dataclass
class Caught:
    """One message the server accepted, as it arrived."""

    envelope_from: str  # "" for the null sender <>
    recipients: list[str]
    data: bytes  # the message bytes as received: CRLF line ends, dots unstuffed
    connection: int = 0  # which connection (1, 2, ...) of this catcher carried it
    login: str | None = None  # the AUTH user name, if the client authenticated
    tls: bool = False  # whether the connection was encrypted

    def message(self) -> EmailMessage:
        """Parse the data with the default (modern) policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


_certificates: dict[str, tuple[str, str]] = {}


def catcher_certificate() -> tuple[str, str]:
    """Return (certificate, key) files of a self-signed certificate for 127.0.0.1 and localhost.

    Made once per test process with the openssl command; the certificate is
    its own CA, so a client trusts it with cafile=certificate.
    """
    if "default" in _certificates:
        return _certificates["default"]
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command makes the test certificate: run `sudo make test-deps`")
    directory = tempfile.mkdtemp(prefix="smtp-catcher-")
    atexit.register(shutil.rmtree, directory, True)
    cert, key = str(Path(directory, "cert.pem")), str(Path(directory, "key.pem"))
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    _certificates["default"] = (cert, key)
    return cert, key


class _Handler:
    """aiosmtpd hooks that feed the catcher."""

    def __init__(self, catcher: SmtpCatcher) -> None:
        self.catcher = catcher

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        self.catcher._count_connection(server)
        return responses

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        session.host_name = hostname
        self.catcher._count_connection(server)
        return f"250 {server.hostname}"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        code = self.catcher.refuse_for.get(address, self.catcher.refuse)
        if code:
            kind = "try again later" if code < 500 else "no such user"
            return f"{code} {address}: {kind}"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        auth = session.auth_data
        caught = Caught(
            envelope_from="" if envelope.mail_from == "<>" else envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content),
            connection=getattr(server, "_catcher_connection", 0),
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            tls=server.transport.get_extra_info("ssl_object") is not None,
        )
        self.catcher._add(caught)
        return f"250 OK queued as {len(self.catcher.messages)}"


class _Controller(Controller):
    """aiosmtpd's threaded server, on a port the kernel picks, remembering its connections."""

    def __init__(self, catcher: SmtpCatcher, **kwargs: Any) -> None:
        super().__init__(_Handler(catcher), **kwargs)
        self.live: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory(self) -> SMTP:
        smtp = super().factory()
        self.live.add(smtp)
        return smtp

    def _create_server(self) -> Any:
        # Port 0 and read the port back: no race with another test for a "free" port.
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


@dataclass
class SmtpCatcher:
    """A real SMTP server on 127.0.0.1 that keeps what it receives.

    :param tls: offer STARTTLS with catcher_certificate(); `cafile` is then the CA to trust.
    :param implicit_tls: speak TLS from the first byte (port 465 style) instead.
    :param username: require AUTH (PLAIN or LOGIN, only over TLS) with this user...
    :param password: ...and this password.
    """

    tls: bool = False
    implicit_tls: bool = False
    username: str | None = None
    password: str | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0 until started: then the port the kernel gave
    refuse: int | None = None  # answer this code (450, 550...) to every RCPT TO
    refuse_for: dict[str, int] = field(default_factory=dict)  # or only to these addresses
    messages: list[Caught] = field(default_factory=list, init=False)
    connections: int = field(default=0, init=False)  # connections that said EHLO or HELO
    cafile: str | None = field(default=None, init=False)  # the CA to trust, with TLS
    _controller: _Controller | None = field(default=None, init=False, repr=False)
    _numbered: int = field(default=0, init=False, repr=False)
    _changed: threading.Condition = field(
        default_factory=threading.Condition, init=False, repr=False
    )

    def start(self) -> None:
        """Listen; after a stop(), listen again on the same port."""
        # SMTPUTF8 as Postfix offers it: addresses with a non-ASCII local part.
        kwargs: dict[str, Any] = {"server_hostname": SERVER_NAME, "enable_SMTPUTF8": True}
        if self.tls or self.implicit_tls:
            cert, key = catcher_certificate()
            self.cafile = cert
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            if self.implicit_tls:
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
        if self.username is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = True  # as any real server: no password in clear
        self._controller = _Controller(self, hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        self.port = self._controller.port

    def stop(self) -> None:
        """Stop listening and drop every connection; what was caught stays."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpCatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_connections(self) -> None:
        """Close every open connection from the server's side, as an idle timeout would."""
        controller = self._controller
        assert controller is not None, "not started"

        async def close_all() -> None:
            for smtp in list(controller.live):
                if smtp.transport is not None:
                    smtp.transport.close()

        asyncio.run_coroutine_threadsafe(close_all(), controller.loop).result(5)

    def wait_for(self, count: int, timeout: float = 10) -> list[Caught]:
        """Wait until at least `count` messages have arrived; return a copy of the list."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    have = [(m.envelope_from, m.recipients) for m in self.messages]
                    raise AssertionError(
                        f"expected {count} message(s) within {timeout:g} s, "
                        f"caught {len(have)}: {have}"
                    )
                self._changed.wait(left)
            return list(self.messages)

    def clear(self) -> None:
        """Forget the messages and restart the connection count (not the numbering)."""
        with self._changed:
            self.messages.clear()
            self.connections = 0

    def _add(self, caught: Caught) -> None:
        with self._changed:
            self.messages.append(caught)
            self._changed.notify_all()

    def _count_connection(self, server: SMTP) -> None:
        # EHLO comes again after STARTTLS on the same connection: count it once.
        if getattr(server, "_catcher_connection", None) is None:
            with self._changed:
                self.connections += 1
                self._numbered += 1  # never reset: a connection's number stays unique
                server._catcher_connection = self._numbered  # type: ignore[attr-defined]

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == (self.username or "").encode()
            and data.password == (self.password or "").encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture
def smtp_catcher() -> Iterator[SmtpCatcher]:
    """A started plain SMTP catcher, stopped after the test."""
    with SmtpCatcher() as catcher:
        yield catcher


@pytest.fixture
def make_smtp_catcher() -> Iterator[Callable[..., SmtpCatcher]]:
    """Start catchers with options (tls=True, username=...), all stopped after the test."""
    started: list[SmtpCatcher] = []

    def make(**options: Any) -> SmtpCatcher:
        catcher = SmtpCatcher(**options)
        catcher.start()
        started.append(catcher)
        return catcher

    yield make
    for catcher in started:
        catcher.stop()
