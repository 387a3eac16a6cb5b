"""`helpdesk-pipe deliver` as the MTA runs it: hand the mail to ingestd, else deliver here.

When `helpdesk-pipe ingestd` listens on the configured socket, this process only
reads the mail, streams it with its envelope, and exits with the code the service
returns once the decision is committed; no database driver, parser or config loader
is imported. When the service is absent, refuses, or goes away before answering, the
mail is delivered in this process (helpdesk.ingest.deliver), with the same verdicts
and exit codes. Handing the same bytes over twice is safe: the raw mail is recorded
first and a second delivery finds it (pending or decided), never a second ticket.

Stdlib only, and its cheapest part: `socket` costs about 5 ms and `tomllib` 10 ms of a
~40 ms budget, so this uses `_socket` and reads the one config key it needs itself.

Protocol (one mail per connection; a block is key=value fields, NUL-separated, then
an empty field; no NUL can occur in a path or an environment variable):
  client  -> service  block: config, database_url, queue, env:SENDER... (before stdin
                      is touched, so a service of another config costs nothing)
  service -> client   b"HDP1 <max_size> <reply_timeout_s>\\n", or b"R <reason>\\n": not
                      for this service, deliver in process
  client  -> service  block: size, too_big; then exactly `size` bytes of message
  service -> client   b"<exit code> <one line>\\n", after commit
"""

from __future__ import annotations

import os
import sys

from helpdesk.paths import DEFAULT_CONFIG_PATH
from helpdesk.paths import DEFAULT_INGESTD_SOCKET

__all__ = [
    "ENVELOPE_VARIABLES",
    "PROTOCOL",
    "block",
    "introduction",
    "config_socket",
    "main",
    "parse_args",
    "read_message",
]

EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75
PROTOCOL = b"HDP1"
# Connecting and being greeted: past this the service is down or swamped.
CONNECT_TIMEOUT = 2.0
GREETING_TIMEOUT = 10.0

# What Postfix (local(8)) and Exim (pipe transport) tell a command about the envelope.
ENVELOPE_VARIABLES = (
    "SENDER",
    "RECIPIENT",
    "ORIGINAL_RECIPIENT",
    "EXTENSION",
    "LOCAL_PART",
    "LOCAL_PART_SUFFIX",
    "DOMAIN",
    "CLIENT_ADDRESS",
    "CLIENT_HELO",
)

USAGE = "usage: helpdesk-pipe [--config FILE] deliver [--queue NAME] < message"


class _Help(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[str | None, str | None]:
    """Parse `[--config F] deliver [--queue Q]` without click (it costs the pipe 30 ms).

    Raises ValueError for a bad alias line, _Help for --help on a terminal."""
    config, queue_name = None, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--config", "-c", "--queue", "-q"):
            if not args:
                raise ValueError(f"{arg} needs a value")
            value = args.pop(0)
        elif arg.startswith(("--config=", "--queue=")):
            arg, value = arg.split("=", 1)
        elif arg == "deliver":
            continue
        elif arg in ("-h", "--help"):
            if not sys.stdin.isatty():
                # An alias line with --help must not swallow the mail it was given.
                raise ValueError("--help given while a message waits on stdin")
            raise _Help
        else:
            raise ValueError(f"unexpected argument {arg!r}")
        if arg in ("--config", "-c"):
            config = value
        else:
            queue_name = value
    return config, queue_name


def read_message(limit: int) -> tuple[bytes, bool]:
    """Read stdin, at most limit+1 bytes kept; drain the rest so the MTA sees no EPIPE."""
    stream = sys.stdin.buffer
    data = stream.read(limit + 1)
    if len(data) <= limit:
        return data, False
    while stream.read(1 << 20):
        pass
    return data, True


def config_socket(config_path: str) -> str | None:
    """The `[ingestd] socket` of a config file, read without tomllib; None if unreadable.

    Only `socket = "..."` on its own line under `[ingestd]` is understood; any other
    spelling makes this miss the service (slower, never wrong: the service checks the
    config is its own), and `helpdesk-pipe doctor` says so."""
    try:
        with open(config_path, "rb") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return None
    section = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(b"["):
            section = line[1 : line.find(b"]")].strip() if b"]" in line else None
        elif section == b"ingestd" and line.startswith(b"socket"):
            key, eq, value = line.partition(b"=")
            value = value.strip()
            if key.strip() == b"socket" and eq and value[:1] in (b'"', b"'"):
                end = value.find(value[:1], 1)
                if end > 1:
                    return os.fsdecode(value[1:end])
    return DEFAULT_INGESTD_SOCKET


def _recv_line(sock, limit: int) -> bytes:  # type: ignore[no-untyped-def]
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    return data


class _Fallback(Exception):
    """Deliver in this process; args[0] says why, for the log."""


def block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """Encode key=value fields as the protocol sends them."""
    return b"\0".join(key + b"=" + value for key, value in fields) + b"\0\0"


def introduction(config_path: str, queue_name: str | None) -> bytes:
    """The block a client opens with: which config, database and queue, its envelope."""
    fields = [
        (b"config", os.fsencode(os.path.realpath(config_path))),
        (b"database_url", os.environb.get(b"HELPDESK_DATABASE_URL", b"")),
        (b"queue", os.fsencode(queue_name or "")),
    ]
    for name in ENVELOPE_VARIABLES:
        value = os.environb.get(name.encode())
        if value is not None:
            fields.append((b"env:" + name.encode(), value))
    return block(fields)


class _Unreadable(Exception):
    """stdin failed part-way: delivering what was read would store a truncated mail."""


def _via_service(
    path: str, config_path: str, queue_name: str | None
) -> tuple[int, str] | tuple[None, tuple[bytes, bool] | None, str]:
    """Deliver through the service: (code, line), or (None, what was read, why not)."""
    import _socket  # the C module: `socket` would cost more than the rest of this path

    message: tuple[bytes, bool] | None = None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except OSError as exc:
            raise _Fallback(f"no service on {path}: {exc.strerror or exc}") from None
        sock.settimeout(GREETING_TIMEOUT)
        sock.sendall(introduction(config_path, queue_name))
        greeting = _recv_line(sock, 512)
        if greeting.startswith(b"R "):
            raise _Fallback(f"refused by the service: {greeting[2:].decode(errors='replace')}")
        words = greeting.split()
        if len(words) != 3 or words[0] != PROTOCOL:
            raise _Fallback(f"no greeting from {path}")
        max_size, reply_timeout = int(words[1]), float(words[2])
        if not (0 < max_size < 1 << 40 and 0 < reply_timeout < 86400):
            raise _Fallback(f"a greeting out of range from {path}")
        try:
            message = read_message(max_size)
        except Exception as exc:  # noqa: BLE001 - whatever stdin does, the MTA gets a 75
            raise _Unreadable(f"{type(exc).__name__}: {exc}") from None
        data, too_big = message
        sock.settimeout(reply_timeout)
        size = 0 if too_big else len(data)
        sock.sendall(block([(b"size", b"%d" % size), (b"too_big", b"%d" % too_big)]))
        if size:
            sock.sendall(data)
        answer = _recv_line(sock, 1 << 16)
        if not answer.endswith(b"\n"):
            raise _Fallback("the service went away before answering")
        code, _, line = answer[:-1].decode("utf-8", "replace").partition(" ")
        if code not in ("0", "65", "75"):
            raise _Fallback(f"an answer that is no exit code: {answer[:80]!r}")
        return int(code), line
    except _Unreadable:
        raise
    except _Fallback as exc:
        return None, message, str(exc)
    except Exception as exc:  # noqa: BLE001 - never a traceback: deliver here instead
        return None, message, f"service on {path}: {type(exc).__name__}: {exc}"
    finally:
        sock.close()


def main(argv: list[str]) -> int:
    """Run `deliver`: through the service when it answers, in this process otherwise."""
    try:
        config, queue_name = parse_args(argv)
    except _Help:
        print(USAGE)
        return EX_OK
    except ValueError as exc:
        # A wrong alias line must not bounce mail: defer until the sysadmin fixes it.
        print(f"helpdesk-pipe: bad command line in the alias: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    config_path = config or os.environ.get("HELPDESK_CONFIG") or DEFAULT_CONFIG_PATH
    path = config_socket(config_path)
    message, why = None, "config unreadable: no service looked for"
    if path is not None:
        try:
            result = _via_service(path, config_path, queue_name)
        except _Unreadable as exc:
            print(f"helpdesk-pipe: cannot read the message, will retry: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        if result[0] is not None:
            code, line = result
            if code != EX_OK and line:
                print(line, file=sys.stderr)
            return code
        _, message, why = result
    from helpdesk.ingest.deliver import run

    return run(config, queue_name, message=message, why_here=why)
