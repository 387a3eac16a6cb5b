"""A wall-clock limit on pure work: past it, the work is interrupted by BudgetExceeded.

Parsing and classifying are CPU work with no lock or connection held, so the work can
be given up at any instruction. In the main thread (the pipe, an ingestd worker) a
one-shot SIGALRM timer interrupts it: Python runs the handler in the main thread at the
next instruction, whichever thread the kernel hands the signal to (ingestd's sender
thread only sees a retried system call). Elsewhere, or when SIGALRM is someone else's,
a timer thread raises the exception in the working thread
(PyThreadState_SetAsyncExc). Either way a regular-expression search is interrupted
too: the engine checks for signals as it goes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FALLBACK_S", "BudgetExceeded", "budget", "expirations", "worst_case"]

# What the work done instead of an interrupted one may take, at most.
FALLBACK_S = 10.0


class BudgetExceeded(BaseException):
    """The budget ran out; a BaseException, so that `except Exception` in the work lets it by."""


class _Alarm:
    armed = False
    expired = 0
    before: Any = signal.SIG_DFL  # the SIGALRM handler ours replaced


def expirations() -> int:
    """How many budgets ran out in this process (ingestd renews a worker after one)."""
    return _Alarm.expired


def worst_case(seconds: float) -> float:
    """How long work under a budget of `seconds` and its fallback may take together."""
    return seconds + min(seconds, FALLBACK_S)


def _on_alarm(signum: int, frame: Any) -> None:
    if _Alarm.armed:
        _Alarm.armed = False
        _Alarm.expired += 1
        raise BudgetExceeded


def _signal_usable() -> bool:
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    if _Alarm.armed or signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        return False  # nested, or someone else's timer runs
    return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, _on_alarm)


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Run the body with `seconds` of wall clock; past them, raise BudgetExceeded in it."""
    if _signal_usable():
        with _by_signal(seconds):
            yield
    else:
        with _by_thread(seconds):
            yield


@contextmanager
def _by_signal(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    if previous is _on_alarm:
        previous = _Alarm.before  # ours stayed after a budget ran out: see below
    else:
        _Alarm.before = previous
    _Alarm.armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        _Alarm.armed = False  # from here on a signal on its way is ignored
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        # A timer that ran out may have a signal still pending: our handler, disarmed,
        # stays to take it (the default one would end the process) until the next
        # budget that is met gives the handler back.
        if remaining > 0:
            signal.signal(signal.SIGALRM, previous)


@contextmanager
def _by_thread(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"armed": True, "fired": False}

    def fire() -> None:
        import ctypes  # only when the budget runs out: the pipe never pays for it otherwise

        with lock:
            if not state["armed"]:
                return
            state["armed"], state["fired"] = False, True
            _Alarm.expired += 1
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(target), ctypes.py_object(BudgetExceeded)
            )

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["armed"] = False
            fired = state["fired"]
        timer.cancel()
        if fired:
            import ctypes

            # Raised already, or still pending: not later, somewhere else.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), None)
