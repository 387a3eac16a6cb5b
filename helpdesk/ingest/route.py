"""Which group of technicians serves a new ticket: the queue's, or the one its
routing rules pick from the requester's directory attributes (such as their site)."""

from __future__ import annotations

from helpdesk.config import Queue
from helpdesk.people import directory_entry
from helpdesk.store import Store

__all__ = ["route"]


def route(store: Store, queue: Queue, requester_email: str) -> tuple[str, str]:
    """Return (group, why) for a new ticket of this queue from this requester."""
    if not queue.routes:
        return queue.group, f"queue {queue.name}"
    attributes = directory_entry(store, requester_email)
    if attributes is None:
        return queue.group, f"{requester_email} is not in the directory: queue {queue.name}"
    for rule in queue.routes:
        if rule.matches(attributes):
            said = ", ".join(f"{key}={attributes.get(key, '')}" for key, _values in rule.conditions)
            return rule.group, f"routed by {said}"
    return queue.group, f"no routing rule of queue {queue.name} matches {requester_email}"
