"""The scale benchmark: a threaded reply's latency with SCALE_SMALL (10,000) and SCALE_BIG
(1,000,000) tickets stored, on SQLite and on PostgreSQL.

Databases. Each is made by `helpdesk-pipe init` (the real schema, at the alembic head),
then gets one real ticket through `helpdesk-pipe deliver` (a new mail, then a reply to its
acknowledgement), then bulk SQL adds the other tickets as the pipe would have stored them
(recursive CTE on SQLite, generate_series on PostgreSQL): per ticket a ticket row, its
first article, its mail_record and mail_raw, the acknowledgement to the requester and the
news to the group's technician in outbox_message (both sent), their three thread_ref rows
(the request's Message-ID in, ours out), the requester's access_token, and one or two
ticket_history rows; requesters are one person per ten tickets. Statuses go by ticket id
(modulo 100: 80 closed, 5 resolved, 5 waiting, 5 assigned, 5 new) over four years of
dates. Texts are shorter than real mails (sizes in the README) to keep the fill quick; the
row counts and the indexes are what the measurement is about. The bulk rows are checked
against the real ticket's: the same tables, as many rows each, the same columns filled
(and on SQLite the same storage types).

A filled database is cached (bench/results/scale-cache/ for SQLite, a database of its own
on the PostgreSQL server) with a stamp: fill version, ticket count, alembic head and a
fingerprint of the schema; it is reused only when all match, and every run measures a
fresh copy of it (file copy; CREATE DATABASE ... TEMPLATE). SCALE_CACHE=0 fills afresh and
keeps nothing. PostgreSQL gets ANALYZE after the fill (autovacuum would run it); SQLite
none (the helpdesk never runs ANALYZE, so its plans are made without statistics).

Measurement. A reply answers the acknowledgement of a `new` ticket (In-Reply-To and
References name our Message-ID, From is the requester), delivered as a whole process by
the MTA's command, through ingestd (warm) and in process; every reply goes to a different
ticket, spread over the id range. Rounds run every variant once in a seeded random order,
so the small and the big database see the same noise. Afterwards each reply must be a
follow-up in its ticket. Then bench/scale_trace.py delivers three more replies in one
process with every statement timed and explained, on both sizes.

Environment: SCALE_SMALL (10000), SCALE_BIG (1000000), SCALE_REPLIES (40 measured rounds,
after SCALE_WARMUP = 2), SCALE_INPROC=0 (warm path only), SCALE_CACHE=0, BENCH_SCALE=0
(skip); QUICK=1 makes it 2,000 and 20,000 tickets, 6 rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import time
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import mails
import service

__all__ = ["bench_scale", "render"]

QUICK = os.environ.get("QUICK") == "1"
SMALL = int(os.environ.get("SCALE_SMALL", 2_000 if QUICK else 10_000))
BIG = int(os.environ.get("SCALE_BIG", 20_000 if QUICK else 1_000_000))
REPLIES = int(os.environ.get("SCALE_REPLIES", 6 if QUICK else 40))
WARMUP = int(os.environ.get("SCALE_WARMUP", 1 if QUICK else 2))
INPROC = os.environ.get("SCALE_INPROC", "1") != "0"
CACHE = os.environ.get("SCALE_CACHE", "1") != "0"
TARGET = 1.2  # median(reply, big) / median(reply, small), at most
FILL_VERSION = 1  # bump when the fill changes: cached databases are rebuilt
TRACE_REPLIES = 3
_REPLY_TICKET = re.compile(r"\.(\d+)@univ\.example>$")  # the ticket a reply answers

HERE = Path(__file__).resolve().parent
CACHE_DIR = HERE / "results" / "scale-cache"
TECH = ("Jean Dupont", "jean.dupont@univ.example")
GROUP_TOML = f'[groups.dsi]\ntechnicians = ["{TECH[0]} <{TECH[1]}>"]\n\n'
SPAN_S = 4 * 365 * 86400  # the stored tickets' dates: four years up to the fill
# Text sizes of the bulk rows (a real 5 KB mail stores ~4.5 KB of body and ~5 KB of raw
# bytes; a rendered acknowledgement ~6.8 KB): shorter, to keep the fill quick.
BODY_CHARS, RAW_CHARS, OUT_CHARS = 300, 500, 300
_LOREM = ("Bonjour, depuis la mise à jour du poste de travail la connexion au serveur de "
          "fichiers échoue avec un message d'erreur. J'ai redémarré l'ordinateur sans effet. "
          "Le problème touche aussi les collègues du bureau voisin et bloque la préparation "
          "des examens de la semaine prochaine. Pourriez-vous regarder rapidement ? Merci "
          "beaucoup, cordialement. ").replace("'", "''") * 6  # an SQL literal
ID_TABLES = ("person", "ticket", "article", "mail_record", "outbox_message", "access_token",
             "ticket_history", "attachment")
TABLES = ("person", "ticket", "article", "mail_record", "mail_raw", "outbox_message",
          "access_token", "thread_ref", "ticket_history", "participant", "attachment")


def _log(text: str) -> None:
    import sys

    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- SQL for both databases ---------------------------------------------------------------


class Dialect:
    """The few expressions that differ between SQLite and PostgreSQL in the fill."""

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite

    def series(self, lo: int, hi: int) -> tuple[str, str]:
        """(WITH prefix, FROM clause) giving t = lo..hi."""
        if self.sqlite:
            return (f"WITH RECURSIVE s(t) AS (SELECT {lo} UNION ALL SELECT t + 1 FROM s"
                    f" WHERE t < {hi}) ", "FROM s")
        return "", f"FROM generate_series({lo}::bigint, {hi}::bigint) AS s(t)"

    def ts(self, seconds: str) -> str:
        """A stored time from epoch seconds (plus microseconds from the expression)."""
        if self.sqlite:
            return (f"(strftime('%Y-%m-%d %H:%M:%S', {seconds}, 'unixepoch') || '.' ||"
                    f" printf('%06d', (({seconds}) * 7919) % 1000000))")
        return (f"to_timestamp(({seconds})::bigint + (((({seconds})::bigint * 7919) % 1000000)"
                " / 1e6))")

    def sha(self, text: str) -> str:
        if self.sqlite:
            return f"sha256({text})"  # a Python function registered on the connection
        return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"

    def lorem(self, t: str, modulo: int, length: int) -> str:
        """`length` characters of the filler text from an offset that varies with t."""
        start = f"1 + {t} % {modulo}" if self.sqlite else f"(1 + {t} % {modulo})::int"
        return f"substr('{_LOREM}', {start}, {length})"

    def octets(self, text: str) -> str:
        return f"length(CAST({text} AS BLOB))" if self.sqlite else f"octet_length({text})"

    def blob(self, text: str) -> str:
        return f"CAST({text} AS BLOB)" if self.sqlite else f"convert_to({text}, 'UTF8')"

    def boolean(self, value: bool) -> str:
        return str(int(value)) if self.sqlite else ("true" if value else "false")

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS TEXT)" if self.sqlite else f"({expr})::text"


def fill_statements(d: Dialect, lo: int, hi: int, first_person: int, persons: int,
                    tech_id: int, offsets: dict[str, int], start: int, step: int,
                    ) -> list[tuple[str, str]]:
    """(table, SQL) adding tickets lo..hi (ids) as delivered ones: see the module doc."""
    with_, from_ = d.series(lo, hi)
    t = "s.t"
    tt = d.text(t)
    created = f"({start} + {t} * {step})"
    person = f"({first_person} + ({t} * 7919) % {persons})"
    email = f"('user' || {d.text(f'({t} * 7919) % {persons}')} || '@univ.example')"
    name = f"('Utilisateur ' || {d.text(f'({t} * 7919) % {persons}')})"
    mod = f"({t} % 100)"
    status = (f"(CASE WHEN {mod} >= 95 THEN 'new' WHEN {mod} >= 90 THEN 'assigned'"
              f" WHEN {mod} >= 85 THEN 'waiting' WHEN {mod} >= 80 THEN 'resolved'"
              " ELSE 'closed' END)")
    subject = f"('Demande d''assistance n° ' || {tt})"
    body = d.lorem(t, 97, BODY_CHARS)
    msgid = f"('scale.' || {tt} || '@mail.univ.example')"
    mail = f"({t} + {offsets['mail']})"
    ack_hash = d.sha("'ack' || " + tt)
    tech_hash = d.sha("'tech' || " + tt)
    raw_hash = d.sha("'raw' || " + tt)
    dedup_hash = d.sha("'<' || " + msgid + " || '>'")
    token_hash = d.sha("'token' || " + tt)
    ack_mid = f"('hd.' || {tt} || '.' || substr({ack_hash}, 1, 16) || '@univ.example')"
    tech_mid = f"('hd.' || {tt} || '.' || substr({tech_hash}, 1, 16) || '@univ.example')"
    raw = (f"('From: ' || {name} || ' <' || {email} || '>' || char(10) || 'To: Support DSI"
           f" <dsi.support@univ.example>' || char(10) || 'Subject: ' || {subject} || char(10)"
           f" || 'Message-ID: <' || {msgid} || '>' || char(10) || char(10) ||"
           f" {d.lorem(t, 89, RAW_CHARS - 250)})")
    if not d.sqlite:
        raw = raw.replace("char(10)", "chr(10)")
    out_data = d.lorem(t, 83, OUT_CHARS)
    ack_subject = f"('[HD #' || {tt} || '] Enregistrement de votre demande : ' || {subject})"
    tech_subject = f"('[HD #' || {tt} || '] Nouvelle demande : ' || {subject})"
    assignee = f"(CASE WHEN {mod} < 95 THEN {tech_id} END)"
    resolved = f"(CASE WHEN {mod} < 85 THEN {d.ts(f'{created} + 172800')} END)"
    closed = f"(CASE WHEN {mod} < 80 THEN {d.ts(f'{created} + 1468800')} END)"
    updated = (f"(CASE WHEN {mod} < 80 THEN {d.ts(f'{created} + 1468800')} WHEN {mod} < 85"
               f" THEN {d.ts(f'{created} + 172800')} WHEN {mod} < 95 THEN"
               f" {d.ts(f'{created} + 7200')} ELSE {d.ts(created)} END)")
    sent = d.ts(f"{created} + 2")
    no = d.boolean(False)
    out = [
        ("ticket", f"{with_}INSERT INTO ticket (id, queue, subject, status, requester_id,"
         " assignee_id, created_at, updated_at, closed_at, resolved_at, group_name, previous_id)"
         f" SELECT {t}, 'dsi', {subject}, {status}, {person}, {assignee}, {d.ts(created)},"
         f" {updated}, {closed}, {resolved}, 'dsi', NULL {from_}"),
        ("mail_record", f"{with_}INSERT INTO mail_record (id, queue, received_at, raw_sha256,"
         " size, envelope, message_id, sender, sender_name, subject, verdict, reason, defects,"
         f" ticket_id, dedup_key) SELECT {mail}, 'dsi', {d.ts(created)},"
         f" {raw_hash}, {d.octets(raw)}, '{{}}',"
         f" '<' || {msgid} || '>', {email}, {name}, {subject}, 'ticket', NULL, NULL, {t},"
         f" 'mid:' || {dedup_hash} {from_}"),
        ("mail_raw", f"{with_}INSERT INTO mail_raw (mail_id, data) SELECT {mail},"
         f" {d.blob(raw)} {from_}"),
        ("article", f"{with_}INSERT INTO article (id, ticket_id, author_id, source, mail_id,"
         " internal, subject, body_text, body_html, body_trimmed, created_at)"
         f" SELECT {t} + {offsets['article']}, {t}, {person}, 'mail', {mail}, {no}, {subject},"
         f" {body}, NULL, NULL, {d.ts(created)} {from_}"),
        ("outbox_message", f"{with_}INSERT INTO outbox_message (id, ticket_id, mail_id, kind,"
         " to_addr, envelope_from, subject, message_id, data, status, tries, next_try_at,"
         " last_error, created_at, sent_at)"
         f" SELECT {offsets['outbox']} + 2 * {t} - 1, {t}, {mail}, 'ack', {email},"
         f" 'dsi.support@univ.example', {ack_subject}, {ack_mid}, {d.blob(out_data)}, 'sent',"
         f" 1, {d.ts(f'{created} + 62')}, NULL, {d.ts(f'{created} + 1')}, {sent} {from_}"),
        ("outbox_message", f"{with_}INSERT INTO outbox_message (id, ticket_id, mail_id, kind,"
         " to_addr, envelope_from, subject, message_id, data, status, tries, next_try_at,"
         " last_error, created_at, sent_at)"
         f" SELECT {offsets['outbox']} + 2 * {t}, {t}, {mail}, 'tech_new', '{TECH[1]}',"
         f" 'dsi.support@univ.example', {tech_subject}, {tech_mid}, {d.blob(out_data)},"
         f" 'sent', 1, {d.ts(f'{created} + 62')}, NULL, {d.ts(f'{created} + 1')}, {sent}"
         f" {from_}"),
        ("thread_ref", f"{with_}INSERT INTO thread_ref (message_id_sha256, ticket_id, origin)"
         f" SELECT {d.sha(msgid)}, {t}, 'in' {from_}"),
        ("thread_ref", f"{with_}INSERT INTO thread_ref (message_id_sha256, ticket_id, origin)"
         f" SELECT {d.sha(ack_mid)}, {t}, 'out' {from_}"),
        ("thread_ref", f"{with_}INSERT INTO thread_ref (message_id_sha256, ticket_id, origin)"
         f" SELECT {d.sha(tech_mid)}, {t}, 'out' {from_}"),
        ("access_token", f"{with_}INSERT INTO access_token (id, ticket_id, person_id,"
         " token_sha256, created_at, revoked_at)"
         f" SELECT {t} + {offsets['token']}, {t}, {person},"
         f" {token_hash}, {d.ts(created)}, NULL"
         f" {from_}"),
        ("ticket_history", f"{with_}INSERT INTO ticket_history (ticket_id, at, actor_id, actor,"
         " door, action, old_status, new_status, detail)"
         f" SELECT {t}, {d.ts(created)}, {person}, {email}, 'mail', 'open', NULL, 'new',"
         f" 'group dsi (queue dsi)' {from_}"),
        ("ticket_history", f"{with_}INSERT INTO ticket_history (ticket_id, at, actor_id, actor,"
         " door, action, old_status, new_status, detail)"
         f" SELECT {t}, {updated},"
         f" CASE WHEN {mod} < 80 THEN NULL ELSE {tech_id} END,"
         f" CASE WHEN {mod} < 80 THEN 'scheduler' ELSE '{TECH[1]}' END,"
         f" CASE WHEN {mod} < 80 THEN 'scheduler' ELSE 'web' END,"
         f" CASE WHEN {mod} < 80 THEN 'close' WHEN {mod} < 85 THEN 'resolve'"
         f" WHEN {mod} < 90 THEN 'reply' ELSE 'take' END,"
         f" CASE WHEN {mod} < 80 THEN 'resolved' WHEN {mod} < 90 THEN 'assigned' ELSE 'new'"
         f" END, {status}, NULL {from_} WHERE {mod} < 95"),
    ]
    with_p, from_p = d.series(0, persons - 1)
    p = "s.t"
    people = ("person", f"{with_p}INSERT INTO person (id, email, name, created_at)"
              f" SELECT {first_person} + {p}, 'user' || {d.text(p)} || '@univ.example',"
              f" 'Utilisateur ' || {d.text(p)}, {d.ts(str(start))} {from_p}")
    return [people, *out]


# -- databases ----------------------------------------------------------------------------


def _sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sqlite(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.create_function("sha256", 1, _sha256, deterministic=True)
    return con


class SqliteDb:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def rows(self, sql: str, params: tuple = ()) -> list:
        con = _sqlite(self.path)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def fingerprint(self) -> str:
        rows = self.rows("SELECT type, name, tbl_name, sql FROM sqlite_master"
                         " WHERE name NOT LIKE 'bench_%' ORDER BY type, name")
        # The migrations write a table's constraints in no fixed order: compare the lines.
        rows = [(t, n, tb, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                for t, n, tb, sql in rows]
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))

    def fill(self, statements: list[tuple[str, str]]) -> dict[str, float]:
        con = _sqlite(self.path)
        times: dict[str, float] = {}
        try:
            con.execute("PRAGMA journal_mode = OFF")  # a cache under construction: any
            con.execute("PRAGMA synchronous = OFF")  # failure throws it away
            con.execute("PRAGMA cache_size = -2000000")
            con.execute("BEGIN")
            for table, sql in statements:
                started = time.perf_counter()
                con.execute(sql)
                times[table] = times.get(table, 0.0) + time.perf_counter() - started
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode = WAL")  # as the helpdesk leaves it
        finally:
            con.close()
        return times

    def execute(self, sql: str, params: tuple = ()) -> None:
        con = _sqlite(self.path)
        try:
            con.execute(sql, params)
        finally:
            con.close()


class PgDb:
    kind = "pg"

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name

    def _connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def rows(self, sql: str, params: tuple = ()) -> list:
        with self._connect() as con:
            return con.execute(sql.replace("?", "%s"), params or None).fetchall()

    def execute(self, sql: str, params: tuple = ()) -> None:
        with self._connect() as con:
            con.execute(sql.replace("?", "%s"), params or None)

    def fingerprint(self) -> str:
        cols = self.rows("SELECT table_name, column_name, data_type, is_nullable,"
                         " column_default FROM information_schema.columns"
                         " WHERE table_schema = current_schema() AND table_name NOT LIKE 'bench_%'"
                         " ORDER BY 1, 2")
        idx = self.rows("SELECT indexname, indexdef FROM pg_indexes"
                        " WHERE schemaname = current_schema() ORDER BY 1")
        schema = self.rows("SELECT current_schema()")[0][0]
        text = json.dumps([cols, idx], default=str).replace(f"{schema}.", "")
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def size_bytes(self) -> int:
        return int(self.rows("SELECT pg_database_size(current_database())")[0][0])

    def fill(self, statements: list[tuple[str, str]]) -> dict[str, float]:
        times: dict[str, float] = {}
        with self._connect() as con:
            con.execute("SET synchronous_commit = off")
            # Foreign keys hold by construction: no trigger per row while loading.
            con.execute("SET session_replication_role = replica")
            con.execute("SET maintenance_work_mem = '512MB'")
            con.execute("BEGIN")
            for table, sql in statements:
                started = time.perf_counter()
                try:
                    con.execute(sql)
                except Exception as exc:
                    raise SystemExit(f"scale: filling {table} failed: {exc}\n{sql}") from None
                times[table] = times.get(table, 0.0) + time.perf_counter() - started
            con.execute("COMMIT")
            for table in ID_TABLES:  # the sequences behind the ids we set
                seq = con.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()
                if seq and seq[0]:
                    con.execute(f"SELECT setval('{seq[0]}', (SELECT max(id) FROM {table}))")
            started = time.perf_counter()
            con.execute("ANALYZE")
            times["ANALYZE"] = time.perf_counter() - started
        return times


def _pg_url(admin_url: str, database: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path="/" + database))


def _pg_admin(admin_url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(admin_url, autocommit=True)


# -- one real ticket, and the shapes of its rows -------------------------------------------


def _reply(ticket: dict, index: int, tag: str) -> bytes:
    """A requester's answer to our acknowledgement of a ticket, as a mail client writes it."""
    msg = EmailMessage(policy=policy.default)
    local, _, domain = ticket["email"].partition("@")
    msg["From"] = Address(ticket["name"], local, domain)
    msg["To"] = mails.QUEUE_ADDRESS
    msg["Subject"] = "Re: " + ticket["ack_subject"]
    msg["Date"] = format_datetime(datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
                                  + timedelta(minutes=index))
    msg["Message-ID"] = f"<bench.scale.{tag}.{index:04d}.{ticket['id']}@univ.example>"
    msg["In-Reply-To"] = f"<{ticket['ack_mid']}>"
    refs = [m for m in (ticket["first_mid"], f"<{ticket['ack_mid']}>") if m]
    msg["References"] = " ".join(refs)
    msg["User-Agent"] = "Mozilla/5.0 Thunderbird/128.5.0"
    quoted = "\n".join("> " + line for line in
                       ("Bonjour,", "", "Votre demande est enregistrée sous le numéro "
                        f"{ticket['id']}.", "Répondez à ce message pour la compléter.")[:4])
    text = ("Bonjour,\n\nLe problème est toujours là ce matin, même après un redémarrage.\n"
            "Je reste disponible au bureau 12 jusqu'à 17 h.\n\nCordialement,\n"
            f"{ticket['name']}\n\nLe 26/11/2026 à 10:12, Support DSI a écrit :\n{quoted}\n")
    msg.set_content(text, cte="8bit")
    return msg.as_bytes()


def _ticket_info(db, ticket_ids: list[int]) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    out = {}
    for tid in ticket_ids:
        row = db.rows(
            "SELECT t.id, p.email, p.name, o.message_id, o.subject, m.message_id, t.status"
            " FROM ticket t JOIN person p ON p.id = t.requester_id"
            " JOIN outbox_message o ON o.ticket_id = t.id AND o.kind = 'ack'"
            " LEFT JOIN article a ON a.id = (SELECT min(id) FROM article WHERE ticket_id = t.id)"
            " LEFT JOIN mail_record m ON m.id = a.mail_id WHERE t.id = ?", (tid,))
        if not row:
            raise SystemExit(f"scale: ticket #{tid} has no acknowledgement to answer")
        r = row[0]
        out[tid] = {"id": r[0], "email": r[1], "name": r[2] or "", "ack_mid": r[3],
                    "ack_subject": r[4], "first_mid": r[5], "status": r[6]}
    return out


def _shapes(db, ticket_id: int) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """Per table: how many rows belong to a ticket and which columns they fill (and, on
    SQLite, with which storage types)."""
    where = {
        "person": "id = (SELECT requester_id FROM ticket WHERE id = {t})",
        "ticket": "id = {t}",
        "mail_raw": "mail_id IN (SELECT id FROM mail_record WHERE ticket_id = {t})",
        "attachment": "article_id IN (SELECT id FROM article WHERE ticket_id = {t})",
    }
    out = {}
    for table in TABLES:
        if db.kind == "sqlite":
            cols = [r[1] for r in db.rows(f"PRAGMA table_info({table})")]
            kinds = ", ".join(f"typeof({c})" for c in cols)
        else:
            cols = [r[0] for r in db.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))]
            kinds = ", ".join(f"CASE WHEN {c} IS NULL THEN 'null' ELSE 'value' END"
                              for c in cols)
        cond = where.get(table, "ticket_id = {t}").format(t=int(ticket_id))
        rows = db.rows(f"SELECT {kinds} FROM {table} WHERE {cond}")
        filled = {c: sorted({str(r[i]) for r in rows}) for i, c in enumerate(cols)}
        out[table] = {"rows": len(rows), "columns": filled}
    return out


def _compare(real: dict, bulk: dict) -> list[str]:
    diffs = []
    for table in TABLES:
        a, b = real[table], bulk[table]
        if a["rows"] != b["rows"]:
            diffs.append(f"{table}: {a['rows']} row(s) for a delivered ticket, {b['rows']} in"
                         " bulk")
            continue
        for col, kinds in a["columns"].items():
            if kinds != b["columns"].get(col):
                diffs.append(f"{table}.{col}: {'/'.join(kinds)} delivered, "
                             f"{'/'.join(b['columns'].get(col) or ['?'])} in bulk")
    return diffs


# -- building a database --------------------------------------------------------------------


def _deliver(h: ModuleType, cfg: Path, raw: bytes, path: Path) -> None:
    path.write_bytes(raw)
    with open(path, "rb") as fh:
        h.run_checked([*h.pipe_command(), "--config", str(cfg), "deliver", "--queue", "dsi"],
                      stdin=fh, timeout=120)


def build(h: ModuleType, db, cfg: Path, n: int, sdir: Path) -> dict:  # type: ignore[no-untyped-def]
    """Fill a database just made by `helpdesk-pipe init` up to n tickets (see module doc)."""
    started = time.perf_counter()
    # One real ticket first, through the real command, and a reply to its acknowledgement.
    _deliver(h, cfg, mails.small_mail(0, h.SEED + 7), sdir / f"real-{db.kind}-{n}-new.eml")
    real = _shapes(db, 1)
    first = _ticket_info(db, [1])[1]
    _deliver(h, cfg, _reply(first, 0, "real"), sdir / f"real-{db.kind}-{n}-reply.eml")
    verdicts = db.rows("SELECT verdict, ticket_id FROM mail_record ORDER BY id")
    if [tuple(v) for v in verdicts] != [("ticket", 1), ("followup", 1)]:
        raise SystemExit(f"scale: the real mail and reply gave {verdicts}")
    after_reply = _shapes(db, 1)
    reply_rows = {t: after_reply[t]["rows"] - real[t]["rows"] for t in TABLES
                  if after_reply[t]["rows"] != real[t]["rows"]}
    maxima = {t: int(db.rows(f"SELECT coalesce(max(id), 0) FROM {t}")[0][0])
              for t in ("person", "mail_record", "article", "outbox_message", "access_token")}
    persons = max(20, n // 10)
    first_person = maxima["person"] + 1
    tech_id = first_person + persons
    offsets = {"mail": maxima["mail_record"] - 1, "article": maxima["article"] - 1,
               "outbox": maxima["outbox_message"] - 2, "token": maxima["access_token"] - 1}
    step = max(1, SPAN_S // max(n, 1))
    start = int(time.time()) - SPAN_S - 86400
    statements = fill_statements(Dialect(db.kind == "sqlite"), 2, n, first_person, persons,
                                 tech_id, offsets, start, step)
    statements.append(("person", "INSERT INTO person (id, email, name, created_at)"
                       f" VALUES ({tech_id}, '{TECH[1]}', '{TECH[0]}',"
                       f" {Dialect(db.kind == 'sqlite').ts(str(start))})"))
    _log(f"scale: filling {db.kind} up to {n:,} tickets")
    fill_started = time.perf_counter()
    times = db.fill(statements)
    fill_s = time.perf_counter() - fill_started
    probe = 2 + ((n - 2) // 2) // 100 * 100 + 97  # a `new` bulk ticket mid-range
    probe = probe if probe <= n else 97
    bulk = _shapes(db, probe)
    diffs = _compare(real, bulk)
    counts = {t: int(db.rows(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}
    if counts["ticket"] != n:
        raise SystemExit(f"scale: {counts['ticket']} tickets after the fill, expected {n}")
    return {"tickets": n, "persons": persons + 2, "fill_s": fill_s,
            "fill_s_by_table": {k: round(v, 2) for k, v in times.items()},
            "build_s": time.perf_counter() - started, "rows": counts,
            "real_ticket_rows": {t: real[t]["rows"] for t in TABLES},
            "reply_adds": reply_rows, "bulk_vs_delivered": diffs, "probe_ticket": probe,
            "text_chars": {"body": BODY_CHARS, "raw": RAW_CHARS, "outbox_data": OUT_CHARS}}


def _stamp(head: str, fingerprint: str, n: int) -> dict[str, str]:
    return {"fill_version": str(FILL_VERSION), "tickets": str(n), "alembic_head": head,
            "schema": fingerprint}


def _read_stamp(db) -> dict[str, str] | None:  # type: ignore[no-untyped-def]
    try:
        return dict(db.rows("SELECT key, value FROM bench_scale_stamp"))
    except Exception:  # noqa: BLE001 - no stamp: not a usable cache
        return None


def _write_stamp(db, stamp: dict[str, str], info: dict) -> None:  # type: ignore[no-untyped-def]
    db.execute("CREATE TABLE bench_scale_stamp (key VARCHAR(40) PRIMARY KEY, value TEXT)")
    for key, value in {**stamp, "info": json.dumps(info)}.items():
        db.execute("INSERT INTO bench_scale_stamp (key, value) VALUES (?, ?)", (key, value))


def _config(h: ModuleType, directory: Path, url: str, name: str, sock: Path) -> Path:
    return h.write_config(directory, url, name=name,
                          extra=h.ingestd_toml(sock) + "workers = 2\n\n" + GROUP_TOML)


def sqlite_database(h: ModuleType, sdir: Path, n: int, head: tuple[str, str]) -> tuple:
    """A fresh copy of the cached SQLite database of n tickets (built when missing)."""
    work_path = sdir / f"sqlite-{n}.db"
    cache = CACHE_DIR / f"sqlite-{n}.db"
    stamp = _stamp(head[0], head[1], n)
    if CACHE and cache.exists():
        cached = SqliteDb(cache)
        found = _read_stamp(cached)
        if found and all(found.get(k) == v for k, v in stamp.items()):
            started = time.perf_counter()
            shutil.copyfile(cache, work_path)
            info = json.loads(found["info"])
            info.update(cached=True, copy_s=time.perf_counter() - started)
            _log(f"scale: sqlite {n:,} tickets from the cache ({info['copy_s']:.1f} s to copy)")
            return SqliteDb(work_path), info
        _log(f"scale: cache {cache.name} is stale ({found}); rebuilding")
        cache.unlink()
    target = (CACHE_DIR / f"sqlite-{n}.building.db") if CACHE else work_path
    for old in target.parent.glob(target.name + "*"):
        old.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config(h, sdir, f"sqlite:///{target}", f"build-sqlite-{n}.toml",
                  sdir / "nobody-listens.sock")
    h.init_db(cfg)
    db = SqliteDb(target)
    info = build(h, db, cfg, n, sdir)
    if db.fingerprint() != head[1]:
        raise SystemExit("scale: the built SQLite schema differs from a fresh init's")
    info["size_bytes"] = db.size_bytes()
    info["cached"] = False
    if not CACHE:
        return db, info
    _write_stamp(db, stamp, info)
    target.rename(cache)
    started = time.perf_counter()
    shutil.copyfile(cache, work_path)
    info["copy_s"] = time.perf_counter() - started
    return SqliteDb(work_path), info


def pg_database(h: ModuleType, sdir: Path, n: int, head: tuple[str, str]) -> tuple:
    """A fresh database copied from the cached one of n tickets (built when missing)."""
    admin = h.PG_ADMIN_URL
    cache_name = f"helpdesk_bench_scale_{n}"
    run_name = f"helpdesk_bench_run_{uuid.uuid4().hex[:8]}"
    stamp = _stamp(head[0], head[1], n)
    with _pg_admin(admin) as con:
        exists = con.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (cache_name,)).fetchone()
    if CACHE and exists:
        cached = PgDb(_pg_url(admin, cache_name), cache_name)
        found = _read_stamp(cached)
        if found and all(found.get(k) == v for k, v in stamp.items()):
            started = time.perf_counter()
            with _pg_admin(admin) as con:
                con.execute(f"CREATE DATABASE {run_name} TEMPLATE {cache_name}"
                            " STRATEGY FILE_COPY")
            info = json.loads(found["info"])
            info.update(cached=True, copy_s=time.perf_counter() - started)
            _log(f"scale: pg {n:,} tickets from the cache ({info['copy_s']:.1f} s to copy)")
            return PgDb(_pg_url(admin, run_name), run_name), info
        _log(f"scale: cache database {cache_name} is stale ({found}); rebuilding")
    building = f"{cache_name}_building" if CACHE else run_name
    with _pg_admin(admin) as con:
        if CACHE:
            con.execute(f"DROP DATABASE IF EXISTS {building}")
            con.execute(f"DROP DATABASE IF EXISTS {cache_name}")
        con.execute(f"CREATE DATABASE {building}")
    db = PgDb(_pg_url(admin, building), building)
    try:
        cfg = _config(h, sdir, db.url, f"build-pg-{n}.toml", sdir / "nobody-listens.sock")
        h.init_db(cfg)
        info = build(h, db, cfg, n, sdir)
        if db.fingerprint() != head[1]:
            raise SystemExit("scale: the built PostgreSQL schema differs from a fresh init's")
    except BaseException:
        _drop_pg(h, building)  # half a database is no cache, and no one else's to drop
        raise
    info["size_bytes"] = db.size_bytes()
    info["cached"] = False
    if not CACHE:
        return db, info
    _write_stamp(db, stamp, info)
    started = time.perf_counter()
    with _pg_admin(admin) as con:
        con.execute(f"ALTER DATABASE {building} RENAME TO {cache_name}")
        con.execute(f"CREATE DATABASE {run_name} TEMPLATE {cache_name} STRATEGY FILE_COPY")
    info["copy_s"] = time.perf_counter() - started
    return PgDb(_pg_url(admin, run_name), run_name), info


def _drop_pg(h: ModuleType, name: str) -> None:
    with _pg_admin(h.PG_ADMIN_URL) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _heads(h: ModuleType, sdir: Path, pg_url: str | None) -> dict[str, tuple[str, str]]:
    """(alembic head, schema fingerprint) of a fresh `helpdesk-pipe init`, per database."""
    out = {}
    path = sdir / "fresh.db"
    cfg = _config(h, sdir, f"sqlite:///{path}", "fresh.toml", sdir / "nobody-listens.sock")
    h.init_db(cfg)
    db = SqliteDb(path)
    out["sqlite"] = (db.rows("SELECT version_num FROM alembic_version")[0][0], db.fingerprint())
    if pg_url:
        cfg = _config(h, sdir, pg_url, "fresh-pg.toml", sdir / "nobody-listens.sock")
        h.init_db(cfg)
        pdb = PgDb(pg_url, "fresh")
        out["pg"] = (pdb.rows("SELECT version_num FROM alembic_version")[0][0],
                     pdb.fingerprint())
    return out


# -- measuring ------------------------------------------------------------------------------


def _targets(n: int, count: int, seed: str) -> list[int]:
    """`count` distinct `new` tickets (id modulo 100 at least 95) spread over 2..n, in a
    seeded random order (so rounds do not walk the id range in order)."""
    candidates = [t for t in range(2, n + 1) if t % 100 >= 95]
    if len(candidates) < count:
        raise SystemExit(f"scale: {n} tickets hold {len(candidates)} new ones; {count} needed")
    picked = [candidates[int((j + 0.5) * len(candidates) / count)] for j in range(count)]
    random.Random(seed).shuffle(picked)
    return picked


def bench_scale(work: Path, h: ModuleType, warm_skip: str | None) -> dict:
    """Section 6 of the benchmark (bench.py passes itself as `h`)."""
    sdir = work / "scale"
    sdir.mkdir()
    started = time.perf_counter()
    out: dict = {"small": SMALL, "big": BIG, "replies": REPLIES, "warmup": WARMUP,
                 "target": TARGET, "databases": {}, "variants": {}, "skipped": {},
                 "warm_skipped": warm_skip, "inproc": INPROC, "cache": CACHE}
    paths = []
    if not warm_skip:
        paths.append("warm")
    if INPROC or warm_skip:
        paths.append("inproc")
    dbs: dict[tuple[str, int], object] = {}
    pg_names: list[str] = []
    services: dict[str, service.Ingestd] = {}
    with h.Postgres() as pg:
        heads = _heads(h, sdir, pg.url)
        if not pg.url:
            out["skipped"]["pg"] = pg.skipped
        try:
            for kind in ("sqlite", "pg"):
                if kind not in heads:
                    continue
                for n in (SMALL, BIG):
                    if kind == "sqlite":
                        db, info = sqlite_database(h, sdir, n, heads[kind])
                    else:
                        db, info = pg_database(h, sdir, n, heads[kind])
                        pg_names.append(db.name)
                    dbs[(kind, n)] = db
                    out["databases"][f"{kind}_{n}"] = info
                    if info["bulk_vs_delivered"]:
                        _log(f"scale: bulk rows differ from a delivered ticket's: "
                             f"{info['bulk_vs_delivered']}")
            out["setup_s"] = time.perf_counter() - started
            out.update(_measure(h, sdir, dbs, paths, services))
        finally:
            for svc in services.values():
                svc.stop()
            for name in pg_names:
                if os.environ.get("KEEP") != "1":
                    _drop_pg(h, name)
    out["wall_s"] = time.perf_counter() - started
    return out


def _measure(h: ModuleType, sdir: Path, dbs: dict, paths: list[str],
             services: dict[str, service.Ingestd]) -> dict:
    pipe = h.pipe_command()
    variants: dict[str, dict] = {}
    per_db = len(paths)
    rounds = WARMUP + REPLIES
    for (kind, n), db in dbs.items():
        targets = _targets(n, rounds * per_db + TRACE_REPLIES, f"{h.SEED}:{kind}:{n}")
        info = _ticket_info(db, targets)
        for i, path in enumerate(paths):
            key = f"{path}_{kind}_{n}"
            sock = sdir / f"{key}.sock"
            cfg = _config(h, sdir, db.url, f"{key}.toml",
                          sock if path == "warm" else sdir / "nobody-listens.sock")
            mine = targets[i * rounds:(i + 1) * rounds]
            mail_paths = []
            for r, tid in enumerate(mine):
                p = sdir / "replies" / key / f"{r:03d}.eml"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(_reply(info[tid], r, key))
                mail_paths.append(str(p))
            variants[key] = {"kind": kind, "n": n, "path": path, "config": cfg, "db": db,
                             "targets": mine, "mails": mail_paths, "samples": [],
                             "codes": []}
            if path == "warm":
                services[key] = service.Ingestd(pipe, cfg, sock, sdir / f"{key}.stderr",
                                                h.CHILD_ENV)
        trace = targets[per_db * rounds:]
        variants[f"trace_{kind}_{n}"] = {"trace": trace, "info": info}
    for svc in services.values():
        svc.start()
    measured = {k: v for k, v in variants.items() if not k.startswith("trace_")}
    order = list(measured)
    rng = random.Random(h.SEED)
    _log(f"scale: {len(measured)} variants x ({WARMUP} warm-up + {REPLIES} rounds)")
    errs = sdir / "stderr"
    errs.mkdir()
    for r in range(rounds):
        rng.shuffle(order)
        for key in order:
            v = measured[key]
            argv = [*pipe, "--config", str(v["config"]), "deliver", "--queue", "dsi"]
            s = h.spawn(argv, v["mails"][r], errs / f"{key}.txt")
            if s.code != 0:
                raise SystemExit(f"scale: {key} exited {s.code}:\n"
                                 f"{(errs / f'{key}.txt').read_text()}")
            if r >= WARMUP:
                v["samples"].append(s.ms)
        for key, svc in services.items():
            if not svc.alive():
                raise SystemExit(f"scale: the ingestd of {key} died:\n"
                                 f"{svc.stderr.read_text()[-2000:]}")
        if (r + 1) % 10 == 0:
            _log(f"  round {r + 1}/{rounds}")
    results: dict[str, dict] = {}
    for key, v in measured.items():
        db = v["db"]
        rows = db.rows("SELECT m.verdict, m.ticket_id, m.message_id FROM mail_record m"
                       " WHERE m.message_id LIKE ?", (f"<bench.scale.{key}.%",))
        ok = sum(1 for verdict, tid, mid in rows
                 if verdict == "followup" and _REPLY_TICKET.search(mid)
                 and int(_REPLY_TICKET.search(mid).group(1)) == tid)
        entry = {"kind": v["kind"], "n": v["n"], "path": v["path"], "ms": h.summary(v["samples"]),
                 "samples_ms": [round(x, 2) for x in v["samples"]],
                 "followups_ok": ok, "replies": rounds, "targets": v["targets"]}
        if ok != rounds:
            raise SystemExit(f"scale: {key}: {ok} of {rounds} replies became follow-ups in "
                             f"their ticket: {rows[:5]}")
        if v["path"] == "warm":
            svc = services[key]
            decided = sum(svc.decided().values())
            entry["service"] = {"decided": decided, "problems": svc.problems()[:10],
                                "fallbacks": service.fallbacks(v["config"].with_suffix(".log"))}
            if decided != rounds or entry["service"]["fallbacks"]:
                raise SystemExit(f"scale: {key} was not all warm: {entry['service']}")
        results[key] = entry
    for svc in services.values():
        svc.stop()
    # Per-statement timings and plans (in one process, no service) on every database.
    traces = {}
    for key, v in variants.items():
        if not key.startswith("trace_"):
            continue
        _, kind, n = key.split("_")
        db = dbs[(kind, int(n))]
        cfg = _config(h, sdir, db.url, f"{key}.toml", sdir / "nobody-listens.sock")
        mail_paths = []
        for r, tid in enumerate(v["trace"]):
            p = sdir / "replies" / key / f"{r:03d}.eml"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_reply(v["info"][tid], r, key))
            mail_paths.append(str(p))
        res = subprocess.run([h.PY, str(HERE / "scale_trace.py"), str(cfg), "dsi", *mail_paths],
                             capture_output=True, text=True, env=h.CHILD_ENV, timeout=600)
        if res.returncode != 0:
            raise SystemExit(f"scale: scale_trace.py failed:\n{res.stderr[-3000:]}")
        trace = json.loads(res.stdout)
        bad = [r for r in trace["runs"] if r["verdict"] != "followup"]
        if bad:
            raise SystemExit(f"scale: traced replies did not thread: {bad[:2]}")
        traces[f"{kind}_{n}"] = trace
    return {"results": results, "traces": traces, "paths": paths,
            "comparison": _compare_sizes(results, traces)}


def _compare_sizes(results: dict, traces: dict) -> dict:
    out: dict = {"ratios": {}, "statements": {}}
    for key, entry in results.items():
        if entry["n"] != SMALL:
            continue
        big = results.get(key.replace(f"_{SMALL}", f"_{BIG}"))
        if big:
            ratio = big["ms"]["median"] / entry["ms"]["median"]
            out["ratios"][f"{entry['path']}_{entry['kind']}"] = {
                "small_ms": entry["ms"]["median"], "big_ms": big["ms"]["median"],
                "ratio": ratio, "ok": ratio <= TARGET}
    for kind in ("sqlite", "pg"):
        small, big = traces.get(f"{kind}_{SMALL}"), traces.get(f"{kind}_{BIG}")
        if not small or not big:
            continue
        ms_small = {s["sql"]: s for s in small["statements"]}
        rows = []
        for s in big["statements"]:
            base = ms_small.get(s["sql"])
            rows.append({"sql": s["sql"], "big_ms": s["median_ms"],
                         "small_ms": base["median_ms"] if base else None,
                         "calls": s["calls"], "plan": s["plan"], "full_scan": s["full_scan"],
                         "small_full_scan": base["full_scan"] if base else None})
        rows.sort(key=lambda r: -(r["big_ms"] - (r["small_ms"] or 0)))
        out["statements"][kind] = {
            "total_small_ms": statistics.median(r["total_ms"] for r in small["runs"]),
            "total_big_ms": statistics.median(r["total_ms"] for r in big["runs"]),
            "rows": rows,
        }
    return out


# -- report ---------------------------------------------------------------------------------


def render(sc: dict) -> list[str]:
    SMALL, BIG = sc["small"], sc["big"]  # noqa: N806 - as this run had them
    out: list[str] = []
    a = out.append
    a(f"### 6. Scale: a threaded reply with {SMALL:,} and with {BIG:,} tickets stored "
      f"({sc['replies']} rounds after {sc['warmup']} warm-up, variants shuffled in each round)")
    a("")
    if "results" not in sc:
        a(f"Not measured: {sc.get('error', 'skipped')}.")
        return out
    a("A reply by the requester to our acknowledgement of a `new` ticket (In-Reply-To and "
      "References name our Message-ID), delivered as a whole process by the MTA's command; "
      "each reply goes to a different ticket spread over the id range, and each became a "
      "follow-up in its ticket. Databases: `helpdesk-pipe init`, one real ticket delivered "
      "and answered, then bulk SQL for the rest as delivered tickets look (see "
      "[`scale.py`](scale.py)); PostgreSQL analysed after the fill, SQLite never (as in "
      "production).")
    a("")
    a("| database | tickets | rows (ticket / article / mail_record / outbox / thread_ref / "
      "history) | size | fill s | cached | bulk rows vs a delivered ticket |")
    a("| --- | ---: | --- | ---: | ---: | --- | --- |")
    for key, info in sc["databases"].items():
        kind = "SQLite" if key.startswith("sqlite") else "PostgreSQL"
        r = info["rows"]
        diff = "same tables, rows and filled columns" if not info["bulk_vs_delivered"] else \
            "; ".join(info["bulk_vs_delivered"][:3])
        a(f"| {kind} | {info['tickets']:,} | {r['ticket']:,} / {r['article']:,} / "
          f"{r['mail_record']:,} / {r['outbox_message']:,} / {r['thread_ref']:,} / "
          f"{r['ticket_history']:,} | {info['size_bytes'] / 1e6:,.0f} MB | "
          f"{info['fill_s']:.0f} | {'yes' if info['cached'] else 'no (built now)'} | {diff} |")
    a("")
    a("| variant | database | tickets | median | p90 | min | max | big / small (ratio of "
      "medians) |")
    a("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios = sc["comparison"]["ratios"]
    for e in sc["results"].values():
        st = e["ms"]
        ratio = ratios.get(f"{e['path']}_{e['kind']}") if e["n"] == BIG else None
        shown = f"{ratio['ratio']:.2f}" if ratio else "–"
        a(f"| {'warm deliver (ingestd)' if e['path'] == 'warm' else 'in-process deliver'} | "
          f"{'SQLite' if e['kind'] == 'sqlite' else 'PostgreSQL'} | {e['n']:,} | "
          f"{st['median']:.1f} | {st['p90']:.1f} | {st['min']:.1f} | {st['max']:.1f} | "
          f"{shown} |")
    troubled = {k: e["service"]["problems"] for k, e in sc["results"].items()
                if e.get("service", {}).get("problems")}
    if troubled:
        a("")
        a("The service logged errors during these rounds (every mail was still decided by "
          "it): " + "; ".join(f"{k}: `{p[0][:160]}`" for k, p in troubled.items()) + ".")
    for kind, st in sc["comparison"]["statements"].items():
        a("")
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        a(f"{name}, in one process (bench/scale_trace.py, median of {TRACE_REPLIES} replies): "
          f"{st['total_small_ms']:.1f} ms per reply with {SMALL:,} tickets, "
          f"{st['total_big_ms']:.1f} ms with {BIG:,}. The statements that grew most:")
        a("")
        a(f"| statement | calls | ms at {SMALL:,} | ms at {BIG:,} | plan at {BIG:,} |")
        a("| --- | ---: | ---: | ---: | --- |")
        for row in st["rows"][:5]:
            sql = " ".join(row["sql"].split())
            sql = sql if len(sql) <= 140 else sql[:137] + "..."
            plan = "; ".join(row["plan"][:3])
            plan = plan if len(plan) <= 120 else plan[:117] + "..."
            small = f"{row['small_ms']:.2f}" if row["small_ms"] is not None else "–"
            a(f"| `{sql}` | {row['calls']:g} | {small} | {row['big_ms']:.2f} | "
              f"{'**full scan** ' if row['full_scan'] else ''}{plan} |")
    return out


if __name__ == "__main__":
    raise SystemExit("run it through bench/run.sh (or bench.py)")

