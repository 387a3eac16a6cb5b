"""Close the tickets resolved longer ago than autoclose_days, one batch at a time.

Several schedulers (or cron jobs) may run this at once: on PostgreSQL each batch
locks its rows with FOR UPDATE SKIP LOCKED, so two passes take different tickets;
SQLite runs one write transaction at a time (BEGIN IMMEDIATE), and each pass
re-reads the status inside it. workflow.close() checks the status again under the
lock, so no ticket is closed, nor its mail queued, twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from helpdesk.config import Settings
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = ["due_tickets", "autoclose_pass", "expire_tokens", "record_run"]

log = logging.getLogger("helpdesk.autoclose")

BATCH = 100


def due_tickets(store: Store, settings: Settings, limit: int | None = None) -> list[int]:
    """The resolved tickets whose requester stayed silent for autoclose_days, oldest first."""
    return [int(r[0]) for r in _due(store, settings, limit).fetchall()]


def _due(store: Store, settings: Settings, limit: int | None, suffix: str = "") -> Any:
    # A ticket of a queue taken out of the config has nobody to write in its name.
    queues = {f"q{n}": name for n, name in enumerate(settings.queues)} or {"q": ""}
    sql = (
        "SELECT id, queue FROM ticket WHERE status = 'resolved' AND resolved_at <= :cutoff"
        f" AND queue IN ({', '.join(':' + key for key in queues)}) ORDER BY id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    cutoff = utcnow() - timedelta(days=settings.autoclose_days)
    return store.execute(sql + suffix, {"cutoff": cutoff, **queues})


def autoclose_pass(store: Store, settings: Settings, *, batch: int = BATCH) -> list[int]:
    """Close every due ticket through the workflow (door `scheduler`); return their ids.

    Each batch is one transaction; a ticket another pass holds or closed is skipped.
    """
    from helpdesk import workflow

    actor = workflow.Actor(None, "scheduler", "scheduler")
    closed: list[int] = []
    skip = "" if store.is_sqlite else " FOR UPDATE SKIP LOCKED"
    while True:
        with store.transaction():
            rows = _due(store, settings, batch, skip).fetchall()
            done = [
                int(ticket_id)
                for ticket_id, queue in rows
                if workflow.close(store, settings, settings.queues[queue], int(ticket_id), actor)
            ]
        closed += done
        log.info("auto-close: %s ticket(s) closed in this batch", len(done))
        if len(rows) < batch or not done:
            return closed


def expire_tokens(store: Store, settings: Settings) -> int:
    """Delete the private links that no longer open anything (revoked, or their ticket
    closed more than link_days_after_close days ago); return how many."""
    cutoff = utcnow() - timedelta(days=settings.link_days_after_close)
    with store.transaction():
        return int(
            store.execute(
                "DELETE FROM access_token WHERE revoked_at IS NOT NULL OR ticket_id IN"
                " (SELECT id FROM ticket WHERE status = 'closed' AND closed_at < :cutoff)",
                {"cutoff": cutoff},
            ).rowcount
        )


def record_run(store: Store, job: str, result: str) -> None:
    """Note that a periodic job (scheduler or cron) just ran: `doctor` checks it."""
    import socket

    with store.transaction():
        store.execute(
            "INSERT INTO job_run (job, host, finished_at, result) VALUES (:job, :host, :now,"
            " :result) ON CONFLICT (job) DO UPDATE SET host = excluded.host,"
            " finished_at = excluded.finished_at, result = excluded.result",
            {"job": job, "host": socket.gethostname()[:255], "now": utcnow(), "result": result},
        )
