"""`helpdesk-pipe scheduler`: APScheduler runs the periodic jobs in one long process.

Jobs: send the outbox mail whose retry time has come; close the tickets resolved
autoclose_days ago; delete dead private links. Each run opens its own database
connection; every job is safe to run in several schedulers at once (see
helpdesk.autoclose and helpdesk.notify.outbox), so a second scheduler on another
host is harmless. APScheduler is imported here only, never on the pipe's path.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from typing import Any

from helpdesk.config import Settings
from helpdesk.store import Store

__all__ = ["run", "JOBS"]

log = logging.getLogger("helpdesk.scheduler")

BATCH = 500


def _outbox(store: Store, settings: Settings) -> str:
    from helpdesk.notify.outbox import FlushResult
    from helpdesk.notify.outbox import flush

    total = FlushResult()
    while True:  # a thousand closing mails need not wait for the next runs
        result = flush(store, settings, due_only=True, limit=BATCH)
        total.sent, total.deferred, total.failed = (
            total.sent + result.sent,
            total.deferred + result.deferred,
            total.failed + result.failed,
        )
        if result.sent + result.failed < BATCH or result.deferred:
            break
    if total.failed:
        told = _tell_authors(store, settings)
        if told:
            return f"{total}; {told} technician(s) told an answer did not go"
    return str(total)


def _tell_authors(store: Store, settings: Settings) -> int:
    """Tell the technicians whose answers by mail just failed for good (retries run
    out, or a refusal), then send what that queued; return how many were told."""
    from helpdesk import workflow
    from helpdesk.notify.outbox import flush

    told = 0
    with store.transaction():
        for mail_id in workflow.unsent_answer_mails(store):
            told += workflow.tell_unsent_for_mail(store, settings, mail_id)
    if told:
        flush(store, settings, due_only=True, limit=BATCH)
    return told


def _autoclose(store: Store, settings: Settings) -> str:
    from helpdesk.autoclose import autoclose_pass

    closed = autoclose_pass(store, settings)
    sent = _outbox(store, settings) if closed else None
    return f"{len(closed)} closed" + (f"; outbox: {sent}" if sent else "")


def _cleanup(store: Store, settings: Settings) -> str:
    from helpdesk.autoclose import expire_tokens

    return f"{expire_tokens(store, settings)} dead link(s) deleted"


# name -> (what it does, how often: the Schedule field)
JOBS: dict[str, tuple[Callable[[Store, Settings], str], str]] = {
    "outbox": (_outbox, "outbox_every"),
    "autoclose": (_autoclose, "autoclose_every"),
    "cleanup": (_cleanup, "cleanup_every"),
}


def _run_job(name: str, settings: Settings) -> None:
    job = JOBS[name][0]
    try:
        from helpdesk.autoclose import record_run

        with Store(settings.database_url, settings.busy_timeout) as store:
            result = job(store, settings)
            record_run(store, name, result)
        log.info("%s: %s", name, result)
    except Exception:  # noqa: BLE001 - one failed run must not stop the scheduler
        log.exception("%s failed; it runs again at its next time", name)


def run(settings: Settings) -> None:
    """Run the jobs until SIGTERM or SIGINT; each runs once at start, then at its interval."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(len(JOBS))},
        # A job late by minutes (a suspended VM) runs once, never in a burst.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    now = datetime.now(UTC)
    for name, (_job, every) in JOBS.items():
        scheduler.add_job(
            _run_job,
            "interval",
            seconds=getattr(settings.schedule, every),
            args=(name, settings),
            id=name,
            name=name,
            next_run_time=now,
        )

    # Raising from a signal handler could interrupt APScheduler while it holds one of
    # its locks; shutting down from another thread lets the running jobs finish.
    stopper: list[threading.Thread] = []

    def stop(signum: int, _frame: Any) -> None:
        if not stopper:
            log.info("signal %s: stopping once the running jobs are done", signum)
            stopper.append(threading.Thread(target=scheduler.shutdown, name="shutdown"))
            stopper[0].start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "scheduler started: %s",
        ", ".join(f"{n} every {getattr(settings.schedule, e)} s" for n, (_j, e) in JOBS.items()),
    )
    scheduler.start()  # returns once shutdown() has stopped it
    for thread in stopper:
        thread.join()
    log.info("scheduler stopped")
