"""A cap on failed token lookups per client address, so links cannot be guessed by brute force.

Counted in memory, per worker process: with 256-bit tokens a guess never
succeeds anyway; the cap keeps a scan from costing us a database query each.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["FailedLookups"]


class FailedLookups:
    """Remembers recent failures per client; `blocked` once a client had too many."""

    def __init__(self, per_minute: int, window: float = 60.0, clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.window = window
        self.clients = clients
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._seen.get(client)
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def blocked(self, client: str) -> bool:
        """Tell whether this client used up its failures for now."""
        if self.per_minute == 0:
            return False
        with self._lock:
            times = self._recent(client, time.monotonic())
            return bool(times and len(times) >= self.per_minute)

    def record(self, client: str) -> None:
        """Count one failed lookup."""
        if self.per_minute == 0:
            return
        now = time.monotonic()
        with self._lock:
            if client not in self._seen and len(self._seen) >= self.clients:
                self._seen.clear()  # a flood of addresses: start over rather than grow
            times = self._recent(client, now)
            if times is None:
                times = self._seen[client] = deque()
            times.append(now)
