"""Technicians, their groups, and what the directory says of requesters.

Groups come from two places that add up: `[groups.NAME] technicians` in the config,
and `helpdesk-pipe tech add` (table group_member). Plain SQL through helpdesk.store:
the pipe reads these on every threaded mail.
"""

from __future__ import annotations

import json
from typing import Any

from helpdesk.config import Queue
from helpdesk.config import Settings
from helpdesk.store import Store
from helpdesk.store import utcnow

__all__ = [
    "group_members",
    "all_groups",
    "is_technician",
    "ticket_technicians",
    "may_speak_as_technician",
    "add_member",
    "remove_member",
    "directory_entry",
]


def group_members(store: Store, settings: Settings, group: str) -> list[tuple[str, str]]:
    """The (email, name) of a group's technicians: the config's first, then the database's."""
    members = dict(settings.groups.get(group, ()))
    for email, name in store.execute(
        "SELECT p.email, p.name FROM group_member g JOIN person p ON p.id = g.person_id"
        " WHERE g.group_name = :group ORDER BY p.email",
        {"group": group},
    ).fetchall():
        members.setdefault(email, name or "")
        if not members[email] and name:
            members[email] = name
    return list(members.items())


def all_groups(store: Store, settings: Settings) -> dict[str, list[tuple[str, str, str]]]:
    """Every group, from the config, the database and the queues: name -> (email, name,
    source) of its members."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for queue in settings.queues.values():
        groups.setdefault(queue.group, [])
        for route in queue.routes:
            groups.setdefault(route.group, [])
    for group, members in settings.groups.items():
        groups.setdefault(group, []).extend((e, n, "config") for e, n in members)
    for group, email, name in store.execute(
        "SELECT g.group_name, p.email, p.name FROM group_member g"
        " JOIN person p ON p.id = g.person_id ORDER BY g.group_name, p.email"
    ).fetchall():
        known = groups.setdefault(group, [])
        if not any(m[0] == email for m in known):
            known.append((email, name or "", "database"))
    return dict(sorted(groups.items()))


def is_technician(store: Store, settings: Settings, email: str) -> bool:
    """Tell whether an address belongs to a technician of any group."""
    email = email.strip().lower()
    if any(email == e for members in settings.groups.values() for e, _n in members):
        return True
    return (
        store.scalar(
            "SELECT 1 FROM group_member g JOIN person p ON p.id = g.person_id"
            " WHERE p.email = :email LIMIT 1",
            {"email": email},
        )
        is not None
    )


def _ticket_row(store: Store, ticket_id: int) -> tuple[Any, ...]:
    row = store.one(
        "SELECT t.group_name, t.assignee_id, p.email, p.name FROM ticket t"
        " LEFT JOIN person p ON p.id = t.assignee_id WHERE t.id = :id",
        {"id": ticket_id},
    )
    assert row is not None, f"no ticket #{ticket_id}"
    return row


def ticket_technicians(
    store: Store, settings: Settings, queue: Queue, ticket_id: int
) -> list[tuple[str, str]]:
    """Who hears of a ticket's news: its technician once taken, else its whole group."""
    group, assignee_id, email, name = _ticket_row(store, ticket_id)
    if assignee_id is not None:
        return [(email, name or "")]
    return group_members(store, settings, group or queue.group)


def may_speak_as_technician(
    store: Store, settings: Settings, queue: Queue, ticket_id: int, email: str
) -> bool:
    """Tell whether an address is a technician of this ticket: its group's, the queue's
    default group's, or the one who has it."""
    group, assignee_id, assignee, _name = _ticket_row(store, ticket_id)
    if assignee_id is not None and assignee == email:
        return True
    for name in {group or queue.group, queue.group}:
        if any(e == email for e, _n in group_members(store, settings, name)):
            return True
    return False


def add_member(store: Store, person_id: int, group: str) -> bool:
    """Put a person in a group; False when they already were."""
    return (
        store.execute(
            "INSERT INTO group_member (group_name, person_id, created_at)"
            " VALUES (:group, :person, :now) ON CONFLICT DO NOTHING",
            {"group": group, "person": person_id, "now": utcnow()},
        ).rowcount
        == 1
    )


def remove_member(store: Store, person_id: int, group: str | None) -> int:
    """Take a person out of a group (of every group with None); return how many."""
    sql = "DELETE FROM group_member WHERE person_id = :person"
    params: dict[str, Any] = {"person": person_id}
    if group is not None:
        sql += " AND group_name = :group"
        params["group"] = group
    return int(store.execute(sql, params).rowcount)


def directory_entry(store: Store, email: str) -> dict[str, str] | None:
    """The directory's attributes of an address (name included), or None if unknown."""
    row = store.one(
        "SELECT name, attributes FROM directory_entry WHERE email = :email",
        {"email": email.strip().lower()},
    )
    if row is None:
        return None
    attributes = json.loads(row[1] or "{}")
    attributes["name"] = row[0] or ""
    return {str(k): "" if v is None else str(v) for k, v in attributes.items()}
