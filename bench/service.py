"""The warm path's service for the benchmark: `helpdesk-pipe --config CFG ingestd`, started,
watched and stopped by the harness.

While it listens on the config's `[ingestd] socket`, the MTA's very command
(`helpdesk-pipe --config CFG deliver --queue dsi < mail`) hands the mail to it; so a
"warm" variant has the same argv as the in-process one, with the service of its own config
running. The service is spawned with posix_spawn (not subprocess) so that the burst
harness, which reaps any child with wait4(-1), can tell the service's death apart from
its own deliveries: whoever reaps the service records its status in REAPED.

What the service's stderr says is how the harness checks that a delivery was warm: every
mail a worker decides is logged as `helpdesk.deliver[<worker pid>] INFO mail #N: ...`,
and a client that fell back to delivering in its own process writes `delivering in
process: <why>` to the config's log file.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections import Counter
from pathlib import Path

__all__ = ["REAPED", "Ingestd", "available", "tree_pids", "vm_hwm_kib"]

# pid -> exit code, for services reaped by someone else's wait (bench/burst.py).
REAPED: dict[int, int] = {}

_DECIDED = re.compile(r"^helpdesk\.deliver\[(\d+)\] INFO mail #(\d+): (?!outgoing )(.*)$")


def available(pipe: list[str], env: dict[str, str]) -> str | None:
    """None when `helpdesk-pipe ingestd --help` works, else why the warm path is skipped."""
    import subprocess

    try:
        res = subprocess.run([*pipe, "ingestd", "--help"], capture_output=True, text=True,
                             env=env, timeout=60)
    except OSError as exc:
        return f"cannot run {pipe[0]}: {exc}"
    if res.returncode != 0:
        return ("`helpdesk-pipe ingestd` is not there in this version (`ingestd --help` exited "
                f"{res.returncode})")
    return None


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return kids


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (workers are forked children of the master)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _status_field(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM, KiB) of a live process."""
    return _status_field(pid, "VmHWM")


class Ingestd:
    """One `helpdesk-pipe --config CFG ingestd` in the foreground, its stderr to a file."""

    def __init__(self, pipe: list[str], config: Path, socket_path: Path, stderr: Path,
                 env: dict[str, str]) -> None:
        self.argv = [*pipe, "--config", str(config), "ingestd"]
        self.config = config
        self.socket_path = socket_path
        self.stderr = stderr
        self.env = env
        self.pid: int | None = None
        self.code: int | None = None
        self.ready_s: float | None = None
        self.offset = 0  # problems() reads the service's stderr from here on

    def start(self, timeout: float = 60.0) -> Ingestd:
        if self.socket_path.exists():
            raise SystemExit(f"ingestd: {self.socket_path} exists before the service starts")
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, str(self.stderr), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             0o644),
        ]
        started = time.perf_counter()
        self.pid = os.posix_spawn(self.argv[0], self.argv, self.env, file_actions=actions)
        deadline = time.monotonic() + timeout
        # Ready: the master logs "listening" once its workers are forked, and a connect()
        # succeeds. That probe costs one worker an accept and usually a warning (it closes
        # without a word): what the service logged up to then is not held against it.
        while "listening" not in self.stderr.read_text(errors="replace"):
            self._check_start(deadline)
            time.sleep(0.02)
        while True:
            self._check_start(deadline)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket_path))
                    break
                except OSError:
                    pass
            time.sleep(0.02)
        before = self._warnings()
        settle = time.monotonic() + 0.5
        while self._warnings() == before and time.monotonic() < settle:
            time.sleep(0.02)
        self.offset = len(self.stderr.read_bytes())
        self.ready_s = time.perf_counter() - started
        return self

    def _check_start(self, deadline: float) -> None:
        if not self.alive():
            raise SystemExit(f"ingestd ({self.config.name}) exited {self.code} before "
                             f"listening:\n{self.stderr.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            self.stop()
            raise SystemExit(f"ingestd ({self.config.name}) not ready after its timeout:\n"
                             f"{self.stderr.read_text()[-3000:]}")

    def alive(self) -> bool:
        if self.pid is None or self.code is not None:
            return False
        if self.pid in REAPED:
            self.code = REAPED.pop(self.pid)
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.code = -1
            return False
        if pid == 0:
            return True
        self.code = os.waitstatus_to_exitcode(status)
        return False

    def pids(self) -> list[int]:
        return tree_pids(self.pid) if self.alive() else []

    def workers(self) -> list[int]:
        return [p for p in self.pids() if p != self.pid]

    def hwm(self) -> dict[int, int]:
        """VmHWM (KiB) of the master and of every live worker."""
        out = {}
        for pid in self.pids():
            value = vm_hwm_kib(pid)
            if value is not None:
                out[pid] = value
        return out

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait; the exit code (0 expected) and the socket must be gone."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def decided(self) -> Counter:
        """Mails decided by the service, per worker pid (from its stderr)."""
        per_worker: Counter = Counter()
        for line in self.stderr.read_text(errors="replace").splitlines():
            m = _DECIDED.match(line)
            if m:
                per_worker[int(m.group(1))] += 1
        return per_worker

    def _warnings(self) -> int:
        text = self.stderr.read_text(errors="replace")
        return text.count(" WARNING ") + text.count(" ERROR ")

    def problems(self) -> list[str]:
        """What went wrong in the service after it was ready: its own warnings (dropped
        clients, dead workers), and any error or traceback; not the workflow's warnings
        (a rate-capped acknowledgement is normal)."""
        with open(self.stderr, "rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode(errors="replace")
        return [line for line in text.splitlines()
                if (line.startswith("helpdesk.ingestd[") and " INFO " not in line)
                or " ERROR " in line or " CRITICAL " in line or "Traceback" in line]

    def __enter__(self) -> Ingestd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fallbacks(log_file: Path) -> int:
    """How many deliveries of a config ran in their own process (its log file says so)."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return 0
    return text.count("delivering in process")
