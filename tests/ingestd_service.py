"""A real `helpdesk-pipe ingestd` for the tests: started, watched, stopped."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import pipe_command

__all__ = ["Service"]


class Service:
    """A running `helpdesk-pipe ingestd`: its process, socket and stderr."""

    def __init__(self, config: Path, socket_path: str, *args: str) -> None:
        self.socket_path = socket_path
        self.err_path = config.parent / f"ingestd-{time.monotonic_ns()}.err"
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*pipe_command(), "--config", str(config), "ingestd", *args],
            stderr=self._err,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
        )
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ingestd did not start: {self.log()}")
            time.sleep(0.05)

    def answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socket_path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def handled(self) -> list[str]:
        """The `mail #N: ...` lines the workers logged."""
        return re.findall(r"helpdesk\.deliver\[\d+\] INFO (mail #\d+: (?!outgoing).*)", self.log())

    def workers(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return {int(pid) for pid in out.split()}

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._err.close()
        return code
