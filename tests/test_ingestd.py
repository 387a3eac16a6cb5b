"""`helpdesk-pipe ingestd` and the thin `deliver` client, as real processes.

The service runs as the sysadmin would run it; every mail goes through the very
command the MTA runs. What must hold: the same verdicts, exit codes and stderr
lines with or without the service; the answer only after commit; a fall back to
in-process delivery whenever the service cannot take the mail; one slow client
never holding the others up.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import db_execute
from conftest import make_mail
from conftest import pipe_command
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from ingestd_service import Service
from smtp_catcher import SmtpCatcher

pytestmark = pytest.mark.slow


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for the socket: unix socket paths stop at 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(tmp_path: Path, db_url: str, sock: Path, extra: str = "", **kwargs: str) -> Path:
    path = write_config(
        tmp_path, db_url, extra=f'[ingestd]\nsocket = "{sock}"\n{extra}\n', **kwargs
    )
    assert run_cli(path, "init").returncode == 0
    return path


@pytest.fixture
def setup(db_url: str, tmp_path: Path, short_dir: Path) -> tuple[Path, str]:
    sock = short_dir / "ingestd.sock"
    return _config(tmp_path, db_url, sock, mail="max_size = 20000\n"), str(sock)


@pytest.fixture
def service(setup: tuple[Path, str]) -> Iterator[Service]:
    config, sock = setup
    svc = Service(config, sock, "--workers", "2")
    yield svc
    assert svc.stop() == 0, svc.log()
    assert not os.path.exists(sock), "the socket outlived the service"


def _count(config: Path, sql: str, **params: object) -> int:
    return int(db_execute(config, sql, **params)[0][0])


def _wait_sent(config: Path, count: int, why: str) -> None:
    """Wait until `count` outbox rows are marked sent (the sender thread works apart)."""
    deadline = time.monotonic() + 10
    while _count(config, "SELECT count(*) FROM outbox_message WHERE status = 'sent'") < count:
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _second_service(config: Path) -> subprocess.CompletedProcess[str]:
    """Start `ingestd` for a config whose socket is taken or blocked: it must refuse."""
    return subprocess.run(
        [*pipe_command(), "--config", str(config), "ingestd"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _ack_message_id(config: Path, ticket_id: int) -> str:
    return db_execute(
        config,
        "SELECT message_id FROM outbox_message WHERE ticket_id = :t ORDER BY id LIMIT 1",
        t=ticket_id,
    )[0][0]


def _story(config: Path, tag: str) -> list[tuple[int, str, str | None]]:
    """Every kind of verdict once; returns (exit code, stderr, verdict) per mail."""
    first = make_mail(subject=f"Imprimante {tag}", message_id=f"<first-{tag}@univ.example>")
    steps: list[tuple[bytes, str | None]] = [(first, "dsi"), (first, "dsi")]  # then duplicate
    results: list[tuple[int, str, str | None]] = []
    for raw, queue in steps:
        results.append(_deliver(config, raw, queue))
    first_id = f"<first-{tag}@univ.example>"
    ticket = _count(config, "SELECT ticket_id FROM mail_record WHERE message_id = :m", m=first_id)
    answer = f"In-Reply-To: <{_ack_message_id(config, ticket)}>\r\n"
    more: list[tuple[bytes, str | None]] = [
        (make_mail(subject=f"Re: Imprimante {tag}", extra_headers=answer), "dsi"),
        (
            make_mail(
                subject="Absent du bureau",
                sender="bob@univ.example",
                extra_headers="Auto-Submitted: auto-replied\r\n",
            ),
            "dsi",
        ),
        (b"", "dsi"),
        (b"   \r\n", "dsi"),
        (make_mail(body="x" * 30000), "dsi"),  # over max_size = 20000
        (make_mail(), "no-such-queue"),
        (make_mail(), None),  # no --queue and no envelope recipient
        (make_mail(), "scd"),
    ]
    for raw, queue in more:
        results.append(_deliver(config, raw, queue))
    return results


def _deliver(config: Path, raw: bytes, queue: str | None) -> tuple[int, str, str | None]:
    result = run_pipe(config, raw, queue=queue)
    verdict = None
    if result.returncode == 0:
        verdict = db_execute(config, "SELECT verdict FROM mail_record ORDER BY id DESC LIMIT 1")[0][
            0
        ]
    # Ids differ between the two runs; what is said must not.
    stderr = re.sub(r"#\d+", "#N", result.stderr.decode())
    return result.returncode, stderr, verdict


def test_same_verdicts_codes_and_messages_with_and_without_the_service(
    setup: tuple[Path, str],
) -> None:
    config, sock = setup
    alone = _story(config, "alone")
    log = (config.parent / "helpdesk.log").read_text()
    assert "delivering in process: no service on" in log
    svc = Service(config, sock)
    try:
        warm = _story(config, "warm")
    finally:
        assert svc.stop() == 0, svc.log()
    assert warm == alone
    assert [code for code, _, _ in warm] == [0, 0, 0, 0, 65, 65, 65, 75, 75, 0]
    assert [verdict for _, _, verdict in warm] == [
        "ticket", "duplicate", "followup", "autoreply", None, None, None, None, None, "ticket"
    ]  # fmt: skip
    assert "size limit of 20000 bytes" in warm[6][1]
    assert "unknown queue 'no-such-queue'" in warm[7][1]
    # The warm ones really went through the service: its workers logged every decision.
    handled = svc.handled()
    assert sum("opened" in line for line in handled) == 2, svc.log()
    assert sum("same Message-ID" in line for line in handled) == 1
    assert len(re.findall(r"exit 65", svc.log())) == 3


CLIENT_PROBE = """
import sys
from helpdesk.entry import main
code = main(["--config", sys.argv[1], "deliver", "--queue", "dsi"])
print(code, " ".join(sorted(sys.modules)))
"""


def test_the_client_loads_only_the_stdlib_and_answers_after_commit(
    setup: tuple[Path, str], service: Service
) -> None:
    config, _ = setup
    bare = subprocess.run(
        [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
    )
    at_start = set(bare.stdout.split()) | {"__main__"}
    for n in range(5):
        message_id = f"<probe-{n}@univ.example>"
        result = subprocess.run(
            [sys.executable, "-c", CLIENT_PROBE, str(config)],
            input=make_mail(message_id=message_id),
            capture_output=True,
        )
        assert result.returncode == 0, result.stderr
        code, modules = result.stdout.decode().split(" ", 1)
        assert code == "0"
        ours = {
            m
            for m in set(modules.split()) - at_start
            if m.split(".")[0] not in sys.stdlib_module_names
        }
        assert ours == {"helpdesk", "helpdesk.entry", "helpdesk.paths", "helpdesk.ingest",
                        "helpdesk.ingest.client"}, ours  # fmt: skip
        # Committed before the client exited: visible at once, from another connection.
        assert _count(
            config, "SELECT count(*) FROM ticket t JOIN mail_record m ON m.ticket_id = t.id"
            " WHERE m.message_id = :m", m=message_id
        ) == 1  # fmt: skip
    assert len(service.handled()) == 5


def test_mail_goes_out_after_the_answer(
    db_url: str, tmp_path: Path, short_dir: Path, smtp_catcher: SmtpCatcher
) -> None:
    sock = short_dir / "s.sock"
    config = _config(tmp_path, db_url, sock, outgoing=smtp_outgoing(smtp_catcher.port))
    svc = Service(config, str(sock))
    try:
        assert run_pipe(config, make_mail(subject="Écran noir")).returncode == 0
        # The acknowledgement and the news to both technicians of the group.
        caught = smtp_catcher.wait_for(3)
        ack = [c for c in caught if c.recipients == ["alice@univ.example"]]
        assert len(ack) == 1 and "Écran noir" in str(ack[0].message()["Subject"])
        _wait_sent(config, 3, "the outbox rows were not marked sent")
    finally:
        assert svc.stop() == 0


def test_burst_through_the_service(setup: tuple[Path, str], service: Service) -> None:
    config, _ = setup
    mails = [make_mail(message_id=f"<burst-{n}@univ.example>") for n in range(60)]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda raw: run_pipe(config, raw).returncode, mails))
    assert codes == [0] * 60
    assert _count(config, "SELECT count(*) FROM ticket") == 60
    assert _count(config, "SELECT count(*) FROM mail_record WHERE verdict = 'ticket'") == 60
    assert len(service.handled()) == 60, service.log()


def test_falls_back_when_the_service_is_gone_or_not_ours(
    setup: tuple[Path, str], tmp_path: Path, db_url: str
) -> None:
    config, sock = setup
    # A service for another configuration on our socket: refused, delivered here.
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = _config(other_dir, f"sqlite:///{other_dir / 'o.db'}", Path(sock))
    svc = Service(other, sock)
    try:
        assert run_pipe(config, make_mail(message_id="<a@x>")).returncode == 0
    finally:
        assert svc.stop() == 0
    assert _count(config, "SELECT count(*) FROM ticket") == 1
    assert _count(other, "SELECT count(*) FROM ticket") == 0
    log = (config.parent / "helpdesk.log").read_text()
    assert "refused by the service: this service delivers for another configuration" in log

    # A service killed outright leaves its socket file: connection refused, delivered
    # here; a new service takes the stale socket over.
    svc = Service(config, sock)
    workers = svc.workers()
    os.kill(svc.proc.pid, signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    svc.proc.wait(10)
    assert os.path.exists(sock)
    assert run_pipe(config, make_mail(message_id="<b@x>")).returncode == 0
    assert _count(config, "SELECT count(*) FROM ticket") == 2
    svc = Service(config, sock)
    try:
        assert run_pipe(config, make_mail(message_id="<c@x>")).returncode == 0
        assert len(svc.handled()) == 1
    finally:
        assert svc.stop() == 0


def _fake_service(sock: str, behaviour: str) -> threading.Thread:
    """A socket that greets, then misbehaves: the client must deliver by itself."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.recv(1 << 16)  # who asks
            conn.sendall(b"HDP1 20000 60\n")
            received = b""
            while b"Imprimante" not in received:  # the mail itself
                received += conn.recv(1 << 16)
            if behaviour == "exit code 1":
                conn.sendall(b"1 boom\n")
            elif behaviour == "no line end":
                conn.sendall(b"0 ticket #1 opened")
            # "hangup": closes without an answer, as a worker killed mid-mail would

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("behaviour", ["hangup", "exit code 1", "no line end"])
def test_a_service_dying_mid_mail_loses_nothing(setup: tuple[Path, str], behaviour: str) -> None:
    config, sock = setup
    thread = _fake_service(sock, behaviour)
    result = run_pipe(config, make_mail(message_id="<mid@x>"))
    thread.join(5)
    assert result.returncode == 0, result.stderr
    assert _count(config, "SELECT count(*) FROM ticket") == 1
    log = (config.parent / "helpdesk.log").read_text()
    assert "delivering in process: " in log


def test_a_slow_client_does_not_hold_the_others(
    db_url: str, tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "s.sock"
    config = _config(tmp_path, db_url, sock, extra="read_timeout = 4\n")
    svc = Service(config, str(sock), "--workers", "2")
    try:
        # One client takes a worker and then trickles: half a header, then nothing.
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(sock))
        slow.sendall(b"config=/etc/helpdesk/helpdesk.toml\0queue=d")
        started = time.monotonic()
        for n in range(6):
            result = run_pipe(config, make_mail(message_id=f"<q{n}@x>"))
            assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 4, "the other mails waited for the slow one"
        assert len(svc.handled()) == 6
        # The slow one is dropped after read_timeout; nothing of it was recorded.
        assert slow.recv(100) == b""
        slow.close()
        assert "dropped a client: no data within read_timeout" in svc.log()
        assert _count(config, "SELECT count(*) FROM mail_record") == 6
    finally:
        assert svc.stop() == 0


def test_workers_are_renewed_past_their_memory_cap(setup: tuple[Path, str], tmp_path: Path) -> None:
    config, sock = setup
    text = config.read_text().replace("[ingestd]\n", "[ingestd]\nmax_rss_mb = 1\n")
    config.write_text(text)
    svc = Service(config, sock, "--workers", "2")
    try:
        before = svc.workers()
        for n in range(4):
            assert run_pipe(config, make_mail(message_id=f"<r{n}@x>")).returncode == 0
        time.sleep(0.5)
        after = svc.workers()
        assert len(after) == 2 and not after & before, (before, after)
        assert svc.log().count("resident after a mail, renewing") == 4
        assert _count(config, "SELECT count(*) FROM ticket") == 4
    finally:
        assert svc.stop() == 0


def test_a_big_mail_and_an_edited_config(db_url: str, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "s.sock"
    config = _config(tmp_path, db_url, sock)  # default max_size: 25 MiB
    svc = Service(config, str(sock), "--workers", "2")
    try:
        attachment = os.urandom(9_000_000).hex()  # 18 MB of text in one part
        big = make_mail(message_id="<big@x>", body=attachment)
        small = [make_mail(message_id=f"<s{n}@x>") for n in range(4)]
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(lambda raw: run_pipe(config, raw), [big, *small]))
        assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
        assert _count(config, "SELECT size FROM mail_record WHERE message_id = '<big@x>'") == len(
            big
        )
        assert len(svc.handled()) == 5
        # The sysadmin lowers the limit: the next mail sees it, no restart needed.
        config.write_text(config.read_text().replace("[mail]\n", "[mail]\nmax_size = 1000\n"))
        result = run_pipe(config, make_mail(message_id="<after@x>", body="y" * 2000))
        assert result.returncode == 65
        assert b"size limit of 1000 bytes" in result.stderr
        assert "exit 65" in svc.log()
    finally:
        assert svc.stop() == 0


def test_an_uninitialised_database_defers_alike(tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "s.sock"
    config = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", extra=f'[ingestd]\nsocket = "{sock}"\n'
    )
    alone = run_pipe(config, make_mail(message_id="<e@x>"))
    svc = Service(config, str(sock))
    try:
        warm = run_pipe(config, make_mail(message_id="<e@x>"))
    finally:
        assert svc.stop() == 0
    assert alone.returncode == warm.returncode == 75
    assert warm.stderr == alone.stderr
    assert b"database unavailable, will retry" in warm.stderr
    assert "exit 75" in svc.log()


def test_socket_is_for_the_group_only_and_one_service_per_socket(
    setup: tuple[Path, str], service: Service
) -> None:
    config, sock = setup
    assert os.stat(sock).st_mode & 0o777 == 0o660
    second = _second_service(config)
    assert second.returncode == 1
    assert f"another ingestd is listening on {sock}" in second.stderr
    assert service.answers()


def test_doctor_sees_the_service_and_a_socket_the_pipe_would_miss(
    setup: tuple[Path, str], service: Service
) -> None:
    import json

    config, sock = setup
    findings = json.loads(run_cli(config, "doctor", "--user", "root", "--json").stdout)
    ingestd = [f for f in findings if f["check"] == "ingestd"]
    assert ingestd == [
        {"level": "ok", "check": "ingestd", "message": f"ingestd answers on {sock}", "fix": ""}
    ]
    # An inline table is valid TOML, but the pipe's light reader does not see it.
    text = (
        config.read_text()
        .replace(f'[ingestd]\nsocket = "{sock}"\n', "")
        .replace("[database]", f'ingestd = {{ socket = "{sock}" }}\n[database]')
    )
    config.write_text(text)
    findings = json.loads(run_cli(config, "doctor", "--user", "root", "--json").stdout)
    messages = [f["message"] for f in findings if f["check"] == "ingestd"]
    assert messages[0] == (
        f"the pipe reads the socket as /run/helpdesk/ingestd.sock, not {sock}:"
        " it will never use ingestd"
    )
    assert messages[1] == f"ingestd answers on {sock}"


def test_an_answer_lost_after_commit_gives_one_ticket(
    setup: tuple[Path, str], short_dir: Path
) -> None:
    """The service commits, the answer never arrives: the pipe delivers again, which
    finds the mail recorded (a duplicate), never a second ticket."""
    config, sock = setup
    real = str(short_dir / "real.sock")
    svc = Service(config, real, "--socket", real)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(1)

    def proxy() -> None:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(real)
        with client, upstream, listener:

            def pump() -> None:
                while data := client.recv(65536):
                    upstream.sendall(data)

            threading.Thread(target=pump, daemon=True).start()
            while data := upstream.recv(65536):
                if data[:1].isdigit():  # the verdict: swallowed
                    client.shutdown(socket.SHUT_RDWR)  # wakes the pump, ends the client's wait
                    return
                client.sendall(data)

    thread = threading.Thread(target=proxy, daemon=True)
    thread.start()
    try:
        result = run_pipe(config, make_mail(message_id="<lost@x>"))
        thread.join(10)
        assert result.returncode == 0, result.stderr
        assert svc.handled() == ["mail #1: ticket #1 opened"]
    finally:
        assert svc.stop() == 0
    assert _count(config, "SELECT count(*) FROM ticket") == 1
    rows = db_execute(config, "SELECT id, verdict, ticket_id FROM mail_record ORDER BY id")
    assert rows == [(1, "ticket", 1), (2, "duplicate", 1)]


def test_a_replaced_worker_sees_the_edited_config(setup: tuple[Path, str]) -> None:
    config, sock = setup
    config.write_text(config.read_text().replace("[ingestd]\n", "[ingestd]\nmax_requests = 1\n"))
    svc = Service(config, sock, "--workers", "2")
    try:
        assert run_pipe(config, make_mail(message_id="<m0@x>")).returncode == 0
        config.write_text(config.read_text().replace("max_size = 20000", "max_size = 1000"))
        for n in range(4):  # each by a worker forked after the edit, or renewed since
            result = run_pipe(config, make_mail(message_id=f"<m{n + 1}@x>", body="z" * 3000))
            assert result.returncode == 65, (n, result.stderr, svc.log())
            assert b"size limit of 1000 bytes" in result.stderr
        # A config the edit broke: 75, as in process, not the old config.
        config.write_text(config.read_text().replace("[database]", "[database\n"))
        result = run_pipe(config, make_mail(message_id="<m9@x>"))
        assert result.returncode == 75
        assert b"helpdesk-pipe: configuration:" in result.stderr
    finally:
        assert svc.stop() == 0
    # All of it said by the service's workers, none by a pipe delivering by itself.
    assert svc.log().count("exit 65: helpdesk-pipe: message is over") == 4, svc.log()
    assert svc.log().count("exit 75: helpdesk-pipe: configuration:") == 1
    assert "delivering in process" not in (config.parent / "helpdesk.log").read_text()


SLOW_SENDMAIL = """#!/bin/sh
# A sendmail that takes its time, and keeps what it accepted.
sleep 1
cat > "{out}/$(date +%s%N).eml"
"""


def test_renewals_and_a_stop_never_cut_a_notification_short(
    db_url: str, tmp_path: Path, short_dir: Path
) -> None:
    """Workers renewed after every mail, then the service stopped, while a slow sendmail
    is at work: every notification leaves exactly once, none is left half-sent."""
    out = tmp_path / "sent-by-sendmail"
    out.mkdir()
    program = tmp_path / "slow-sendmail"
    program.write_text(SLOW_SENDMAIL.format(out=out))
    program.chmod(0o755)
    sock = short_dir / "s.sock"
    config = _config(
        tmp_path,
        db_url,
        sock,
        extra="max_requests = 1\n",
        outgoing=f'transport = "sendmail"\nsendmail = "{program}"\ntimeout = 10\n',
    )
    svc = Service(config, str(sock), "--workers", "2")
    try:
        for n in range(4):
            assert run_pipe(config, make_mail(message_id=f"<slow{n}@x>")).returncode == 0
        svc.proc.send_signal(signal.SIGHUP)  # and a reload on top
        assert run_pipe(config, make_mail(message_id="<slow4@x>")).returncode == 0
    finally:
        assert svc.stop() == 0, svc.log()
    assert not re.search(r"worker \d+ failed|ended with", svc.log()), svc.log()
    statuses = db_execute(config, "SELECT status, count(*) FROM outbox_message GROUP BY status")
    rows = sum(n for _, n in statuses)
    assert rows == 15  # 5 mails x (acknowledgement + 2 technicians)
    assert "sending" not in dict(statuses), statuses
    # What was not sent before the stop is queued for the scheduler; nothing twice.
    sent = dict(statuses).get("sent", 0)
    assert sent == len(list(out.iterdir()))
    assert sent >= 12  # renewed workers sent theirs; a stop may leave the last mail's
    assert run_cli(config, "outbox", "flush").returncode == 0
    assert _count(config, "SELECT count(*) FROM outbox_message WHERE status = 'sent'") == 15
    assert len(list(out.iterdir())) == 15


def test_another_configs_service_never_consumes_the_mail(
    setup: tuple[Path, str], tmp_path: Path
) -> None:
    """A 30 KB mail, and a service on our socket for a config whose limit is 20 KB: the
    pipe must fall back with its stdin whole, not bounce by the other limit."""
    config, sock = setup
    config.write_text(config.read_text().replace("max_size = 20000", "max_size = 100000"))
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = _config(
        other_dir, f"sqlite:///{other_dir / 'o.db'}", Path(sock), mail="max_size = 20000\n"
    )
    svc = Service(other, sock)
    try:
        result = run_pipe(config, make_mail(message_id="<big30@x>", body="b" * 30000))
    finally:
        assert svc.stop() == 0
    assert result.returncode == 0, result.stderr
    assert _count(config, "SELECT count(*) FROM ticket") == 1


def test_closed_stdin_defers_without_a_traceback(setup: tuple[Path, str]) -> None:
    config, sock = setup
    args = [*pipe_command(), "--config", str(config), "deliver", "--queue", "dsi"]

    def closed_stdin() -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            preexec_fn=lambda: os.close(0),
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
        )

    alone = closed_stdin()
    svc = Service(config, sock)
    try:
        warm = closed_stdin()
    finally:
        assert svc.stop() == 0
    for result in (alone, warm):
        assert result.returncode == 75, result.stderr
        assert b"Traceback" not in result.stderr
        assert result.stderr.startswith(b"helpdesk-pipe: ")
    assert _count(config, "SELECT count(*) FROM mail_record") == 0


def test_a_missing_database_is_a_75_through_ingestd_and_nothing_is_made(
    tmp_path: Path, short_dir: Path
) -> None:
    """ingestd, like the pipe, never creates the database: only init does."""
    database = tmp_path / "typo" / "helpdesk.db"
    sock = short_dir / "ingestd.sock"
    config = write_config(
        tmp_path, f"sqlite:///{database}", extra=f'[ingestd]\nsocket = "{sock}"\n'
    )
    svc = Service(config, str(sock), "--workers", "1")
    try:
        result = run_pipe(config, make_mail())
    finally:
        assert svc.stop() == 0, svc.log()
    assert result.returncode == 75, result.stderr
    assert b"does not exist" in result.stderr and b"run `helpdesk-pipe init`" in result.stderr
    assert "exit 75" in svc.log()  # the service's worker answered, not a fallback
    assert not database.parent.exists()


def test_a_file_at_the_socket_path_is_never_replaced(setup: tuple[Path, str]) -> None:
    config, sock = setup
    Path(sock).write_text("precious")
    result = _second_service(config)
    assert result.returncode == 1
    assert f"{sock} exists and is not a socket" in result.stderr
    assert Path(sock).read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the pipe as nobody")
def test_only_the_helpdesk_group_is_served(
    setup: tuple[Path, str], service: Service, pipe_for_others: list[str]
) -> None:
    """Even a socket opened to all (a sysadmin's chmod) serves only our user and group."""
    config, sock = setup
    os.chmod(sock, 0o666)
    os.chmod(os.path.dirname(sock), 0o755)
    readable = Path(os.path.dirname(sock)) / "helpdesk.toml"
    shutil.copy(config, readable)
    readable.chmod(0o644)
    result = subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         *pipe_for_others, "--config", str(readable), "deliver", "--queue", "dsi"],
        input=make_mail(), capture_output=True, env={"PATH": "/usr/bin:/bin", "LANG": "C"}, cwd="/",
    )  # fmt: skip
    assert "refused a connection from a process outside the helpdesk group" in service.log()
    assert service.handled() == []
    # Then it delivered by itself: on PostgreSQL (trust) it may; in root's files, never.
    if "sqlite" in config.read_text():
        assert result.returncode == 75, result.stderr
        assert b", will retry: " in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert _count(config, "SELECT count(*) FROM ticket") == 1


def _terminate_backends(application_name: str) -> int:
    """Have PostgreSQL drop the connections of that name (ours: the worker's pid is in it)."""
    import psycopg
    from conftest import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        return admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (application_name,),
        ).fetchone()[0]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite's cannot drop
def test_a_dropped_database_connection_is_replaced(
    db_url: str, tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "s.sock"
    config = _config(tmp_path, db_url, sock)
    svc = Service(config, str(sock), "--workers", "1")
    try:
        assert run_pipe(config, make_mail(message_id="<d0@x>")).returncode == 0
        [worker] = svc.workers()
        assert _terminate_backends(f"helpdesk-ingestd-{worker}") == 1
        result = run_pipe(config, make_mail(message_id="<d1@x>"))
        assert result.returncode == 0, result.stderr
        assert len(svc.handled()) == 2
        # The sender thread's own connection, too (once idle): the next mail's
        # notifications go out all the same.
        _wait_sent(config, 6, svc.log())
        assert _terminate_backends(f"helpdesk-ingestd-sender-{worker}") == 1
        assert run_pipe(config, make_mail(message_id="<d2@x>")).returncode == 0
        _wait_sent(config, 9, svc.log())
    finally:
        assert svc.stop() == 0
    assert "wait for the scheduler" not in svc.log()
