"""`helpdesk-pipe ingestd`: the deliver code kept warm behind a unix socket.

Every mail used to start a Python that imports the parser, the workflow and a
database driver (psycopg alone is ~150 ms) before it does 5 ms of work. This
service imports them once, then forks workers (pre-fork, like gunicorn's sync
workers): each accepts one connection at a time from the shared socket, runs the
very same `deliver()` the pipe runs in process on a connection it keeps open, and
answers only after the commit. The pipe (helpdesk.ingest.client) exits with that
answer. Processes rather than threads: parsing is CPU work and the GIL would hold
it to one core; two workers per CPU because a worker mostly waits on fsync or SMTP.

Bounded: a worker holds one mail at a time (at most `[mail] max_size`), a worker
whose resident memory passed `[ingestd] max_rss_mb` after a mail is replaced by a
fresh fork, and so is one that served `max_requests` mails, or one whose parse budget
(`[mail] parse_budget_s`) ran out (its interrupted work is not trusted to have tidied
up). A slow client or a huge mail ties up one worker; the others keep accepting. A
client that stops sending for `read_timeout` seconds is dropped and delivers in its
own process; one waits for its answer longer than the parse budget.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path

from helpdesk.config import ConfigError
from helpdesk.config import Settings
from helpdesk.config import load_settings
from helpdesk.files import set_group_umask
from helpdesk.ingest.budget import expirations
from helpdesk.ingest.budget import worst_case
from helpdesk.ingest.client import PROTOCOL

__all__ = ["IngestdError", "serve"]

log = logging.getLogger("helpdesk.ingestd")

_HEADER_LIMIT = 64 * 1024
_PEERCRED = struct.Struct("3i")
_PROBE = "closed without a word"
# SIGUSR1: a worker about to leave (renewal) asks for its successor at once.
_MASTER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1}


class IngestdError(Exception):
    """The service cannot start (socket taken, directory missing...): exit 1."""


class _Stop(Exception):
    """SIGTERM while idle: leave the accept loop."""


class _Dropped(Exception):
    """The client went quiet or away before its mail was whole: nothing was done."""


# -- the listening socket ------------------------------------------------------


def _listen(path: str) -> socket.socket:
    """Bind the socket, group-only; refuse when a live service already holds it."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o750)
        except OSError as exc:
            raise IngestdError(f"cannot make the socket's directory {directory}: {exc}") from None
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISSOCK(mode):
        # A typo must not cost a file: only a dead socket is ours to replace.
        raise IngestdError(f"{path} exists and is not a socket: choose another [ingestd] socket")
    if mode is not None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(5.0)
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # left by a service that died
        except OSError as exc:
            # A live service with a full backlog times out: not dead, not ours.
            raise IngestdError(f"{path} is in use ({exc}): is another ingestd running?") from None
        else:
            raise IngestdError(f"another ingestd is listening on {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # born 0660: no window where others could connect
    try:
        listener.bind(path)
    except OSError as exc:
        listener.close()
        raise IngestdError(f"cannot listen on {path}: {exc}") from None
    finally:
        os.umask(old)
    listener.listen(128)
    return listener


def _peer_allowed(conn: socket.socket) -> bool:
    """Root, our user, or a member of our group: what the socket's 0660 already means."""
    pid, uid, gid = _PEERCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    if uid in (0, os.getuid()) or gid == os.getgid():
        return True
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return str(os.getgid()) in line.split()[1:]
    except OSError:
        pass
    return False


# -- one worker ----------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _Worker:
    """Accepts and delivers one mail at a time until told to stop or due for renewal."""

    def __init__(
        self,
        listener: socket.socket,
        settings: Settings,
        config_id: str,
        loaded: tuple[int, int, int] | None,
        master: int,
    ) -> None:
        self.listener = listener
        self.master = master
        self.settings = settings
        self.config_id = config_id
        # The file as it was when `settings` were read, not as it is now: a worker forked
        # after an edit must notice it.
        self.config_stat = loaded
        self.database_url = os.environ.get("HELPDESK_DATABASE_URL", "")
        self.store = None
        # Decided mails whose queued notifications the sender thread sends, with the
        # settings they were decided under.
        self.outgoing: queue.SimpleQueue[tuple[int, Settings]] = queue.SimpleQueue()
        self.sender: threading.Thread | None = None
        self.leaving = threading.Event()
        self.busy = False
        self.stopping = False  # leave after this mail
        self.shutdown = False  # and the service stops: no successor
        self.served = 0

    def _on_term(self, signum: int, _frame: object) -> None:
        # SIGTERM: the service stops; SIGHUP: this worker is renewed.
        self.shutdown = self.shutdown or signum == signal.SIGTERM
        self.stopping = True
        if not self.busy:
            raise _Stop  # idle in accept(); a busy one finishes: its client waits

    def _on_term_leaving(self, signum: int, _frame: object) -> None:
        # Already on the way out: nothing may cut the sender short mid-mail.
        if signum == signal.SIGTERM:
            self.shutdown = True
            self.leaving.set()

    def run(self) -> int:
        """Serve until stopped or due for renewal; return the exit code."""
        try:
            signal.signal(signal.SIGTERM, self._on_term)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the master
            signal.signal(signal.SIGHUP, self._on_term)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            # Blocked in the master; a stop pending since the fork lands here, as _Stop.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
            while not self.stopping:
                conn, _ = self.listener.accept()
                self.busy = True
                try:
                    if not self._serve(conn):
                        continue
                finally:
                    self.busy = False
                self.served += 1
                limits = self.settings.ingestd
                rss = _rss_mb()
                if rss > limits.max_rss_mb:
                    log.info("worker %s: %.0f MB resident after a mail, renewing", os.getpid(), rss)
                    break
                if self.served >= limits.max_requests:
                    log.info("worker %s: served %s mails, renewing", os.getpid(), self.served)
                    break
                if expirations():
                    # Interrupted work may have left a lock or a cache half done: start afresh.
                    log.info("worker %s: a parse budget ran out, renewing", os.getpid())
                    break
        except _Stop:
            pass
        finally:
            signal.signal(signal.SIGTERM, self._on_term_leaving)
            signal.signal(signal.SIGHUP, self._on_term_leaving)
            self.listener.close()
            if not self.shutdown and os.getppid() == self.master:
                # Renewal: the master forks the successor now, not after our sender is done.
                _kill(self.master, signal.SIGUSR1)
            if self.store is not None:
                self.store.close()
            if self.sender is not None:
                # Renewed, it sends what it has (its successor already serves); stopped,
                # it finishes the mail at hand only (a row cut off mid-send would go out
                # twice) and the rest stays queued for the scheduler.
                if self.shutdown:
                    self.leaving.set()
                self.outgoing.put((0, self.settings))  # the end of its queue
                self.sender.join()
        return 0

    def _send_later(self, mail_id: int) -> None:
        """Hand a decided mail's notifications to the sender thread.

        A thread, not this loop: a slow SMTP server must not keep the worker from the
        next mail (the GIL is free while it waits on the network)."""
        if self.sender is None:
            self.sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
            self.sender.start()
        self.outgoing.put((mail_id, self.settings))

    def _send_loop(self) -> None:
        from helpdesk.ingest.deliver import send_after_commit

        store = None
        while True:
            mail_id, settings = self.outgoing.get()
            if mail_id == 0 or self.leaving.is_set():
                break
            try:
                store = _fresh_store(store, settings, f"helpdesk-ingestd-sender-{os.getpid()}")
                send_after_commit(store, settings, mail_id)
                if not store.end_request():
                    store = None
            except Exception:  # noqa: BLE001 - the rows stay queued for the scheduler
                log.exception("mail #%s: its notifications wait for the scheduler", mail_id)
                if store is not None:
                    store.close()
                store = None
        if store is not None:
            store.close()

    # -- one connection --------------------------------------------------------
    def _serve(self, conn: socket.socket) -> bool:
        """Take one connection; return whether a mail was decided."""
        from helpdesk.ingest import deliver as pipe

        mail_id = None
        decided = False
        try:
            if not _peer_allowed(conn):
                log.warning("refused a connection from a process outside the helpdesk group")
                return False
            conn.settimeout(self.settings.ingestd.read_timeout)
            # Who asks comes first: a client of another config must still hold its stdin.
            fields, rest = _read_block(conn, bytearray(), _PROBE)
            if (
                os.fsdecode(fields.get(b"config", b"")) != self.config_id
                or os.fsdecode(fields.get(b"database_url", b"")) != self.database_url
            ):
                conn.sendall(b"R this service delivers for another configuration\n")
                return False
            try:
                self._reload_if_changed()
                failure = None
            except ConfigError as exc:
                failure = exc  # answered as the pipe would answer it: 75
            settings = self.settings
            # Past this the client delivers in its own process: it must wait for the parse
            # budget and its fallback too, or the mail would be read twice.
            reply_timeout = min(
                settings.busy_timeout * 3 + worst_case(settings.parse_budget_s) + 60, 86399
            )
            conn.sendall(b"%s %d %d\n" % (PROTOCOL, settings.max_size, reply_timeout))
            sized, rest = _read_block(conn, rest, _PROBE)  # doctor leaves here
            raw = _read_body(conn, rest, sized, settings.max_size)
            environ = {
                key[4:].decode(): os.fsdecode(value)
                for key, value in fields.items()
                if key.startswith(b"env:")
            }
            queue = os.fsdecode(fields.get(b"queue", b"")) or None
            started = time.perf_counter()

            def work() -> pipe.Outcome:
                if failure is not None:
                    raise failure
                if sized.get(b"too_big") == b"1":
                    return pipe.too_big_outcome(settings)
                return pipe.deliver(raw, settings, queue, environ, self._store(), send=False)

            outcome = pipe.guarded(work)
            raw = b""  # a 25 MB mail need not outlive its decision
            decided = True
            mail_id = outcome.mail_id
            line = pipe.report(outcome) or outcome.message
            conn.settimeout(reply_timeout)
            try:
                conn.sendall(b"%d %s\n" % (outcome.code, line.encode("utf-8", "replace")))
            except OSError as exc:
                # Committed all the same: a client that falls back finds it recorded.
                log.warning("mail #%s: the client left before its answer: %s", mail_id, exc)
            log.debug("mail #%s: %.1f ms", mail_id, (time.perf_counter() - started) * 1000)
        except _Dropped as exc:
            if exc.args[0] == _PROBE:
                log.debug("a connection closed without a word (a probe)")
            else:
                log.warning("dropped a client: %s", exc)
        except OSError as exc:
            log.warning("connection failed: %s", exc)
        finally:
            conn.close()
            self._end_request()
        if mail_id is not None:
            # After the answer: the MTA need not wait for our SMTP server.
            self._send_later(mail_id)
        return decided

    def _store(self):  # type: ignore[no-untyped-def]
        """The worker's connection, replaced when dead or made for other settings."""
        self.store = _fresh_store(self.store, self.settings, f"helpdesk-ingestd-{os.getpid()}")
        return self.store

    def _end_request(self) -> None:
        if self.store is not None and not self.store.end_request():
            self.store = None  # broken: the next mail connects afresh

    def _reload_if_changed(self) -> None:
        """Pick up an edited config without a restart, as the in-process pipe would;
        raise ConfigError, as it would, when the edit broke it."""
        now = _stat(self.settings.path)
        if now == self.config_stat:
            return
        settings = load_settings(self.settings.path)
        self.settings, self.config_stat = settings, now
        log.info("worker %s: configuration reloaded", os.getpid())


def _fresh_store(store, settings: Settings, name: str):  # type: ignore[no-untyped-def]
    """A live connection for these settings: `store` if it still is one, else a new one.

    PostgreSQL may have dropped an idle connection (a restart, an idle timeout): a ping
    finds out before a mail fails on it. A reloaded config may name another database."""
    from helpdesk.store import Store

    if store is not None and (
        store.url != settings.database_url or store.busy_timeout != settings.busy_timeout
    ):
        store.close()
        store = None
    if store is not None and not store.is_sqlite:
        try:
            store.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure: connect afresh below
            store.close()
            store = None
    if store is None:
        store = Store(settings.database_url, settings.busy_timeout, name)
        try:
            store.connect()
        except BaseException:
            store.close()
            raise
    return store


def _read_block(
    conn: socket.socket, buffer: bytearray, on_close: str | None = None
) -> tuple[dict[bytes, bytes], bytearray]:
    """Read one block of key=value fields; return them and the bytes read past it.

    A client that closes before sending a byte of it raises _Dropped(on_close)."""
    while b"\0\0" not in buffer:
        buffer += _recv(conn, 65536, on_close if not buffer else None)
        if len(buffer) > _HEADER_LIMIT and b"\0\0" not in buffer[:_HEADER_LIMIT]:
            raise _Dropped("header too long")
    end = buffer.index(b"\0\0")
    fields = dict(field.partition(b"=")[::2] for field in bytes(buffer[:end]).split(b"\0"))
    return fields, buffer[end + 2 :]


def _read_body(
    conn: socket.socket, body: bytearray, fields: dict[bytes, bytes], max_size: int
) -> bytes:
    try:
        size = int(fields.get(b"size", b"0"))
    except ValueError:
        raise _Dropped("bad size") from None
    if not 0 <= size <= max_size + 1:
        raise _Dropped(f"announced {size} bytes, over the limit")
    while len(body) < size:
        body += _recv(conn, min(1 << 20, size - len(body)))
    return bytes(body[:size])


def _recv(conn: socket.socket, size: int, on_close: str | None = None) -> bytes:
    try:
        chunk = conn.recv(size)
    except TimeoutError:
        raise _Dropped("no data within read_timeout") from None
    if not chunk:
        raise _Dropped(on_close or "the client closed before its mail was whole")
    return chunk


def _stat(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# -- the master ------------------------------------------------------------------


def _preload(settings: Settings) -> None:
    """Import before forking what every mail needs, so each worker starts warm."""
    import helpdesk.ingest.route  # noqa: F401
    import helpdesk.notify.outbox  # noqa: F401
    import helpdesk.notify.transport  # noqa: F401
    import helpdesk.people  # noqa: F401
    from helpdesk.ingest.deliver import warm_up

    warm_up(settings, compile_all=True)  # templates compiled once, shared by every fork
    if not settings.database_url.startswith("sqlite"):
        import psycopg  # noqa: F401


def _setup_logging(settings: Settings) -> None:
    from helpdesk.ingest.deliver import _setup_logging as pipe_logging

    pipe_logging(settings)
    logger = logging.getLogger("helpdesk")
    logger.setLevel(logging.INFO)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(name)s[%(process)d] %(levelname)s %(message)s"))
    logger.addHandler(stream)


def serve(settings: Settings, socket_path: str | None = None, workers: int | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; return the exit code."""
    set_group_umask()
    _setup_logging(settings)
    if settings.path is None:
        raise IngestdError("ingestd needs a config file")
    path = socket_path or settings.ingestd.socket
    count = workers or settings.ingestd.worker_count()
    config_id = os.path.realpath(settings.path)
    loaded = _stat(settings.path)  # close enough to when the command read it
    _preload(settings)
    listener = _listen(path)
    bound = os.stat(path).st_ino
    children: dict[int, float] = {}
    replaced: set[int] = set()  # workers on their way out whose successor runs already
    master = os.getpid()
    # The master never runs Python in a signal handler: it blocks these and waits for
    # them, so no exception can land between a fork and its bookkeeping.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                code = _Worker(listener, settings, config_id, loaded, master).run()
            except BaseException:  # noqa: BLE001 - a worker must never return into the master's loop
                log.exception("worker %s failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()

    try:
        for _ in range(count):
            spawn()
        log.info(
            "listening on %s with %s workers (pid %s, config %s)",
            path,
            count,
            os.getpid(),
            config_id,
        )
        quick_deaths = 0
        while True:
            info = signal.sigwaitinfo(_MASTER_SIGNALS)
            signum = info.si_signo
            if signum in (signal.SIGTERM, signal.SIGINT):
                break
            if signum == signal.SIGUSR1:
                if info.si_pid in children and info.si_pid not in replaced:
                    replaced.add(info.si_pid)
                    spawn()
                continue
            if signum == signal.SIGHUP:
                # Renew every worker (each rereads an edited config by itself anyway).
                for pid in list(children):
                    _kill(pid, signal.SIGHUP)
                continue
            for pid, status in _reap():
                born = children.pop(pid, None)
                if born is None:
                    continue
                if pid in replaced:
                    replaced.discard(pid)
                    continue
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    log.warning("worker %s ended with %s; replacing it", pid, code)
                quick_deaths = quick_deaths + 1 if time.monotonic() - born < 1 else 0
                if quick_deaths > 5:
                    time.sleep(1)  # something is wrong at every start: do not spin
                spawn()
    finally:
        # New clients deliver in process from now on; those accepted get their answer.
        try:
            if os.stat(path).st_ino == bound:  # not a successor's socket
                os.unlink(path)
        except OSError:
            pass
        listener.close()
        for pid in list(children):
            _kill(pid, signal.SIGTERM)
        while children:
            try:
                pid, _ = os.wait()
            except ChildProcessError:
                break
            children.pop(pid, None)
        log.info("stopped")
    return 0


def _reap() -> list[tuple[int, int]]:
    """Every child that ended since the last call (SIGCHLD signals merge)."""
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        ended.append((pid, status))
    return ended


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise
