"""No private link in plaintext at rest: a copy of the database opens no ticket.

The outbox keeps each mail with a marker where its link goes; the link is made when
the mail is sent, and only its hash is stored. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import quopri
import re
import sqlite3
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config

from helpdesk.config import load_settings
from helpdesk.notify.compose import Outgoing
from helpdesk.notify.compose import compose
from helpdesk.notify.compose import link_marker

ALICE = "alice@univ.example"
BOB = "bob@univ.example"
JEAN = "jean.tech@univ.example"
TOKEN = re.compile(rb"[A-Za-z0-9_-]{43,}")
LINK = re.compile(r"https://helpdesk\.univ\.example/t/([A-Za-z0-9_-]{43})")


def _deliver(config: Path, raw: bytes) -> None:
    result = run_pipe(config, raw)
    assert result.returncode == 0, result.stderr


def _sent(config: Path) -> list[EmailMessage]:
    directory = config.parent / "sent"
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(directory.glob("*.eml"))
    ]


def _copy(config: Path, db_url: str, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as a copy of the database would have them."""
    if db_url.startswith("sqlite"):
        copy = tmp_path / "copy.db"
        source = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        target = sqlite3.connect(copy)
        source.backup(target)  # the WAL's content too
        source.close()
        tables = [r[0] for r in target.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: target.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}
        target.close()
        return rows
    tables = [
        r[0]
        for r in db_execute(
            config,
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()",
        )
    ]
    return {t: db_execute(config, f'SELECT * FROM "{t}"') for t in tables}


def _readings(value: Any) -> list[bytes]:
    """A stored value as bytes, and decoded the ways mail is encoded."""
    if value is None or isinstance(value, (int, float)):
        return []
    data = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
    return [data, quopri.decodestring(data)]


def _openers(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, set[str]]:
    """Per table, every string in it that opens a ticket: any 43 token characters in a
    row whose SHA-256 is a live access token's."""
    live = {r[3] for r in rows["access_token"] if r[-1] is None}
    found: dict[str, set[str]] = {}
    for table, table_rows in rows.items():
        for row in table_rows:
            for value in row:
                for data in _readings(value):
                    for run in TOKEN.findall(data):
                        for i in range(len(run) - 42):
                            window = run[i : i + 43]
                            if hashlib.sha256(window).hexdigest() in live:
                                found.setdefault(table, set()).add(window.decode())
    return found


def test_no_string_in_a_copy_of_the_database_opens_a_ticket(
    config: Path, db_url: str, tmp_path: Path
) -> None:
    # Bob is copied: his answers and resolution carry links of his own.
    _deliver(
        config,
        make_mail(message_id="<first@univ.example>", extra_headers=f"Cc: Bob <{BOB}>\r\n"),
    )
    assert run_cli(config, "ticket", "take", "1", "--as", JEAN).returncode == 0
    assert run_cli(config, "ticket", "reply", "1", "--as", JEAN, "-m", "Je passe.").returncode == 0
    sent = _sent(config)
    [ack] = [m for m in sent if m["To"].addresses[0].addr_spec == ALICE and "Enreg" in m["Subject"]]
    # Alice answers, quoting the acknowledgement and its link.
    quoted = "\n".join("> " + line for line in ack.get_content().splitlines())
    reply = make_mail(
        subject=f"Re: {ack['Subject']}",
        body=f"Toujours en panne.\n\n{quoted}\n",
        extra_headers=f"In-Reply-To: {ack['Message-ID']}\r\n",
    )
    _deliver(config, reply)
    assert run_cli(config, "ticket", "resolve", "1", "--as", JEAN, "-m", "Fait.").returncode == 0
    links = {t for m in _sent(config) for t in LINK.findall(m.get_content())}
    # Alice's acknowledgement, taken, follow-up, resolved; Bob's follow-up and resolved:
    # each its own.
    assert len(links) == 6
    bobs = {
        t
        for m in _sent(config)
        if m["To"].addresses[0].addr_spec == BOB
        for t in LINK.findall(m.get_content())
    }
    assert len(bobs) == 2
    owners = dict(
        db_execute(
            config,
            "SELECT a.token_sha256, p.email FROM access_token a JOIN person p"
            " ON p.id = a.person_id",
        )
    )
    assert {owners[hashlib.sha256(t.encode()).hexdigest()] for t in bobs} == {BOB}
    assert {owners[hashlib.sha256(t.encode()).hexdigest()] for t in links - bobs} == {ALICE}
    from webview import create_app

    client = create_app(settings=load_settings(config)).test_client()
    for token in links:  # what was sent works
        assert client.get(f"/t/{token}").status_code == 200

    openers = _openers(_copy(config, db_url, tmp_path))
    # Only the raw bytes of Alice's answer hold a link: the one she quoted, kept byte for
    # byte as every incoming mail is. No table the helpdesk writes holds one.
    assert set(openers) == {"mail_raw"}, openers
    [quoted_token] = openers["mail_raw"]
    assert LINK.search(ack.get_content()).group(1) == quoted_token
    shown = cli_json(config, "ticket", "show", "1")["articles"][2]
    assert "/t/…" in shown["body_text"] and quoted_token not in shown["body_text"]
    rows = db_execute(config, "SELECT kind, data FROM outbox_message WHERE kind = 'ack'")
    assert b"private-link-" in quopri.decodestring(bytes(rows[0][1]))


def test_a_marker_for_another_mail_stays_text(config: Path) -> None:
    """A writer cannot plant a marker that becomes a link: each is made of its own
    mail's Message-ID, unknown before the mail exists."""
    planted = link_marker("hd.1.0000000000000000@univ.example")
    _deliver(config, make_mail(body=f"Voici {planted} pour vous.\n"))
    [ack] = [m for m in _sent(config) if m["To"].addresses[0].addr_spec == ALICE]
    body = ack.get_content()
    assert planted in body and len(LINK.findall(body)) == 1


def test_older_outbox_rows_lose_their_links_in_the_migration(db_url: str, tmp_path: Path) -> None:
    from helpdesk import migrate

    config = write_config(tmp_path, db_url)
    migrate.upgrade(load_settings(config), "0005")
    token = "Q" * 43
    old = Outgoing(
        "dsi.support@univ.example",
        "dsi",
        ALICE,
        "Alice",
        "[HD #1] Enregistrement",
        f"Votre lien privé, très long pour être replié :\nhttps://helpdesk.univ.example/t/{token}\n",
        "hd.1.abcdef0123456789@univ.example",
        "inst",
    )
    db_execute(
        config,
        "INSERT INTO outbox_message (kind, to_addr, envelope_from, subject, message_id, data,"
        " status, tries, next_try_at, created_at) VALUES ('ack', :to, :efrom, 's', :msgid,"
        " :data, 'sent', 1, :now, :now)",
        to=ALICE,
        efrom="dsi.support@univ.example",
        msgid=old.message_id,
        data=compose(old),
        now="2026-12-01 10:00:00+00:00",
    )
    assert run_cli(config, "init").returncode == 0
    [(data,)] = db_execute(config, "SELECT data FROM outbox_message")
    text = quopri.decodestring(bytes(data)).decode()
    assert token not in text and link_marker(old.message_id) in text
    assert "Votre lien privé" in text


def test_a_link_pasted_into_the_form_is_not_kept(config: Path) -> None:
    from webview import create_app

    _deliver(config, make_mail())
    link = LINK.search(run_cli(config, "ticket", "link", "1").stdout).group(0)
    path = "/t/" + link.rsplit("/t/", 1)[1]
    app = create_app(settings=load_settings(config))
    client = app.test_client()
    form = client.get(path).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    posted = client.post(path, data={"csrf_token": csrf, "description": f"Mon lien : {link}"})
    assert posted.status_code == 303
    last = cli_json(config, "ticket", "show", "1")["articles"][-1]
    assert last["body_text"] == "Mon lien : https://helpdesk.univ.example/t/…"
    news = [m for m in _sent(config) if "suivi" in m["Subject"].lower()]
    assert news and all(path not in m.get_content() for m in news)
