"""The requester's viewer through Flask's test client, on SQLite and on PostgreSQL.

The pages in a real Chromium are in test_browser.py; here: access, headers, the
form's rules, attachments, languages, expiry, the rate limit and the logs.
"""

from __future__ import annotations

import io
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import pipe_command
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from smtp_catcher import SmtpCatcher

ALICE = "alice@univ.example"
LINK = re.compile(r"/t/([A-Za-z0-9_-]{43})")


def _deliver(config: Path, raw: bytes, queue: str = "dsi") -> None:
    result = run_pipe(config, raw, queue=queue)
    assert result.returncode == 0, result.stderr


def _link(config: Path, ticket_id: int = 1) -> str:
    result = run_cli(config, "ticket", "link", str(ticket_id))
    assert result.returncode == 0, result.stderr
    return "/t/" + LINK.search(result.stdout).group(1)


def _app(config: Path, **overrides: Any) -> Any:
    from dataclasses import replace

    from helpdesk.config import load_settings
    from webview import create_app

    settings = replace(load_settings(config), **overrides)
    app = create_app(settings=settings)
    app.config["TESTING"] = True
    return app


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


WITH_FILES = (
    b"From: Alice Martin <alice@univ.example>\r\n"
    b"To: dsi.support@univ.example\r\n"
    b"Subject: Captures\r\n"
    b"Message-ID: <files-1@univ.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVoici les fichiers.\r\n"
    b'--b\r\nContent-Type: text/html; name="page.html"\r\n'
    b'Content-Disposition: attachment; filename="page.html"\r\n\r\n'
    b"<script>alert(1)</script>\r\n"
    b'--b\r\nContent-Type: image/png; name="ecran.png"\r\n'
    b'Content-Disposition: attachment; filename="ecran.png"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\r\n"
    b"--b--\r\n"
)


def test_the_page_shows_the_ticket_in_the_readers_language(config: Path) -> None:
    _deliver(config, make_mail(subject="Imprimante en panne"))
    client = _app(config).test_client()
    link = _link(config)
    page = client.get(link, headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<html lang="fr">' in html
    assert "Demande n° 1" in html and "Imprimante en panne" in html
    assert "l&#39;imprimante du bureau 12 ne marche plus" in html
    assert "Ajouter un nouveau suivi" in html and ">Ajouter</button>" in html
    english = client.get(link, headers={"Accept-Language": "en-US,en;q=0.8"})
    assert "Add a follow-up" in english.get_data(as_text=True)
    # No Accept-Language: the queue's language.
    assert "Ajouter un nouveau suivi" in client.get(link).get_data(as_text=True)


def test_an_english_queue_speaks_english_by_default(config: Path) -> None:
    _deliver(config, make_mail().replace(b"dsi.support", b"scd.informatique"), queue="scd")
    html = _app(config).test_client().get(_link(config)).get_data(as_text=True)
    assert '<html lang="en">' in html and "Request no. 1" in html


def test_security_headers(config: Path) -> None:
    _deliver(config, make_mail())
    page = _app(config).test_client().get(_link(config))
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "script-src" not in csp  # so: no script at all
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.get_data(as_text=True)


def test_every_bad_token_gives_the_same_404(config: Path) -> None:
    _deliver(config, make_mail(subject="Premier"))
    _deliver(config, make_mail(subject="Second", sender="bob@univ.example"))
    client = _app(config).test_client()
    link = _link(config)
    changed = link[:-1] + ("A" if link[-1] != "A" else "B")
    revoked = _link(config)
    bodies = set()
    for path in (changed, "/t/short", "/t/" + "é" * 43, "/t/" + "x" * 43):
        response = client.get(path)
        assert response.status_code == 404
        bodies.add(response.get_data())
    assert run_cli(config, "ticket", "link", "1", "--revoke").returncode == 0
    response = client.get(revoked)
    assert response.status_code == 404
    bodies.add(response.get_data())
    assert len(bodies) == 1
    # Another ticket's link shows that ticket only.
    other = client.get(_link(config, 2)).get_data(as_text=True)
    assert "Second" in other and "Premier" not in other


def test_a_followup_from_the_form_goes_through_the_workflow(config: Path) -> None:
    _deliver(config, make_mail())
    client = _app(config).test_client()
    link = _link(config)
    form = client.get(link).get_data(as_text=True)
    response = client.post(
        link,
        data={
            "csrf_token": _csrf(form),
            "description": "Toujours en panne ce matin.",
            "attachments": (io.BytesIO(b"log"), "../../etc/journal.txt"),
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(link + "#last")
    shown = cli_json(config, "ticket", "show", "1")
    last = shown["articles"][-1]
    assert last["source"] == "web" and last["author"] == ALICE
    assert last["body_text"] == "Toujours en panne ce matin."
    assert [f["filename"] for f in last["attachments"]] == ["journal.txt"]
    page = client.get(link).get_data(as_text=True)
    assert page.rindex("Toujours en panne ce matin.") > page.rindex("ne marche plus")
    assert 'id="last"' in page[page.rindex('<li class="entry') :]
    # The technicians are told, through the outbox.
    news = [r for r in cli_json(config, "outbox", "list") if r["kind"] == "tech_followup"]
    assert sorted(r["to"] for r in news) == ["jean.tech@univ.example", "marie.tech@univ.example"]
    assert {r["status"] for r in news} == {"sent"}


def test_a_post_without_csrf_or_text_is_refused(config: Path) -> None:
    _deliver(config, make_mail())
    client = _app(config).test_client()
    link = _link(config)
    refused = client.post(link, data={"description": "sans jeton"})
    assert refused.status_code == 400
    form = client.get(link).get_data(as_text=True)
    empty = client.post(link, data={"csrf_token": _csrf(form), "description": "  "})
    assert empty.status_code == 400
    assert "Écrivez une description" in empty.get_data(as_text=True)
    assert len(cli_json(config, "ticket", "show", "1")["articles"]) == 1


def test_attachments_are_downloads_with_a_safe_type(config: Path) -> None:
    _deliver(config, WITH_FILES)
    _deliver(config, make_mail(subject="Autre", sender="bob@univ.example"))
    client = _app(config).test_client()
    link = _link(config)
    files = {
        f["filename"]: f["id"]
        for f in cli_json(config, "ticket", "show", "1")["articles"][0]["attachments"]
    }
    html = client.get(f"{link}/a/{files['page.html']}")
    assert html.status_code == 200
    assert html.headers["Content-Type"] == "application/octet-stream"
    assert html.headers["Content-Disposition"].startswith("attachment")
    assert "page.html" in html.headers["Content-Disposition"]
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in html.headers["Content-Security-Policy"]
    assert html.get_data() == b"<script>alert(1)</script>"
    png = client.get(f"{link}/a/{files['ecran.png']}")
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Disposition"].startswith("attachment")
    # Not through another ticket's link.
    assert client.get(f"{_link(config, 2)}/a/{files['page.html']}").status_code == 404


TRICKY_NAMES = ["invoice\u202efdp.exe", "CON.txt", "rap\u200bport\u2066.pdf"]


def _tricky_files() -> bytes:
    """A mail whose attachments are named to deceive (RFC 2231 names, UTF-8)."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Alice Martin <alice@univ.example>"
    msg["To"] = "dsi.support@univ.example"
    msg["Subject"] = "Facture"
    msg["Message-ID"] = "<tricky-1@univ.example>"
    msg.set_content("Voici la facture.\n")
    for name in TRICKY_NAMES:
        msg.add_attachment(b"MZ", maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def test_an_attachment_shows_and_downloads_by_a_safe_name(config: Path) -> None:
    _deliver(config, _tricky_files())
    client = _app(config).test_client()
    link = _link(config)
    files = cli_json(config, "ticket", "show", "1")["articles"][0]["attachments"]
    assert [f["filename"] for f in files] == TRICKY_NAMES  # stored as they came
    page = client.get(link).get_data(as_text=True)
    assert "\u202e" not in page and "\u200b" not in page and "\u2066" not in page
    for shown in ("invoicefdp.exe", "_CON.txt", "rapport.pdf"):
        assert f" download>{shown}</a>" in page, page
    dispositions = [client.get(f"{link}/a/{f['id']}").headers["Content-Disposition"] for f in files]
    assert dispositions == [
        "attachment; filename=invoicefdp.exe",
        "attachment; filename=_CON.txt",
        "attachment; filename=rapport.pdf",
    ]


def test_the_technicians_mail_names_the_files_safely(config: Path, tmp_path: Path) -> None:
    _deliver(config, _tricky_files())
    sent = [p.read_bytes().decode() for p in sorted((tmp_path / "sent").glob("*.eml"))]
    tech = [m for m in sent if "jean.tech@univ.example" in m.split("\r\n\r\n")[0]]
    assert tech, sent
    from email import message_from_string
    from email.policy import default

    body = message_from_string(tech[0], policy=default).get_content()
    assert "invoicefdp.exe, _CON.txt, rapport.pdf" in body, body
    assert "\u202e" not in body and "\u200b" not in body


@pytest.mark.parametrize("number", [0, 2**31, 2**63 - 1, 2**63, 2**64, 10**30])
def test_an_attachment_id_no_row_can_have_is_404(config: Path, number: int) -> None:
    _deliver(config, WITH_FILES)
    client = _app(config).test_client()
    link = _link(config)
    assert client.get(f"{link}/a/{number}").status_code == 404
    assert client.get(f"{link}/a/1").status_code == 200  # the link itself still works


def test_internal_entries_and_their_files_stay_hidden(config: Path) -> None:
    _deliver(config, WITH_FILES)
    db_execute(config, "UPDATE article SET internal = :yes WHERE id = 1", yes=True)
    client = _app(config).test_client()
    link = _link(config)
    page = client.get(link).get_data(as_text=True)
    assert "Voici les fichiers." not in page and "ecran.png" not in page
    [attachment] = [1]  # the first attachment of the internal entry
    assert client.get(f"{link}/a/{attachment}").status_code == 404


def test_hostile_html_is_sanitized(config: Path) -> None:
    hostile = (
        "<p>Le texte inoffensif reste visible.</p><script>alert(1)</script>"
        '<img src=x onerror=alert(2)><a href="javascript:alert(3)">clic</a>'
        '<iframe src="https://evil.example"></iframe><svg onload=alert(4)></svg>'
        '<div style="width:expression(alert(5))">x</div>'
        '<img src="https://tracker.example/p.png" alt="pixel">'
    )
    raw = (
        "From: Alice <alice@univ.example>\r\nTo: dsi.support@univ.example\r\n"
        "Subject: HTML\r\nMessage-ID: <html-1@univ.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + hostile + "\r\n"
    ).encode()
    _deliver(config, raw)
    client = _app(config).test_client()
    link = _link(config)
    page = client.get(link)
    html = page.get_data(as_text=True)
    assert "Le texte inoffensif reste visible." in html
    for bad in ("<script", "onerror", "onload", "javascript:", "<iframe", "<svg", "expression("):
        assert bad not in html, bad
    assert "tracker.example" not in html and "pixel" in html
    assert "img-src 'self';" in page.headers["Content-Security-Policy"]
    shown = client.get(link + "?images=1")
    assert 'src="https://tracker.example/p.png"' in shown.get_data(as_text=True)
    assert "https:" in shown.headers["Content-Security-Policy"]


def test_links_expire_some_days_after_the_ticket_closes(config: Path) -> None:
    _deliver(config, make_mail())
    link = _link(config)
    client = _app(config, link_days_after_close=30).test_client()
    from datetime import UTC
    from datetime import datetime
    from datetime import timedelta

    for days, status in ((2, 200), (31, 404)):
        closed = datetime.now(UTC) - timedelta(days=days)
        db_execute(config, "UPDATE ticket SET status = 'closed', closed_at = :at", at=closed)
        assert client.get(link).status_code == status, days


def test_failed_lookups_are_rate_limited(config: Path) -> None:
    _deliver(config, make_mail())
    link = _link(config)
    client = _app(config, failed_lookups_per_minute=3).test_client()
    for _ in range(3):
        assert client.get("/t/" + "x" * 43).status_code == 404
    assert client.get("/t/" + "y" * 43).status_code == 429
    assert client.get(link).status_code == 429  # even a right guess now waits
    other = client.get(link, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


def test_the_translations_cover_every_text_of_the_pages() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parent.parent / "webview"
    with open(root / "translations" / "fr" / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalogue = read_po(fh)
    found = {
        message[2] if isinstance(message[2], str) else message[2][0]
        for message in extract_from_dir(
            str(root / "templates"),
            method_map=[("**.html", "jinja2")],
            options_map={"**.html": {"extensions": "jinja2.ext.i18n"}},
        )
    }
    assert len(found) > 20
    missing = [m for m in found if not (catalogue.get(m) and catalogue.get(m).string)]
    assert not missing, missing


def test_no_token_reaches_the_servers_log(config: Path, tmp_path: Path) -> None:
    _deliver(config, make_mail())
    link = _link(config)
    with subprocess.Popen(
        [*pipe_command(), "--config", str(config), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            port = None
            lines = []
            deadline = time.monotonic() + 30
            while port is None and time.monotonic() < deadline:
                line = server.stderr.readline()
                lines.append(line)
                found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                port = found and int(found.group(1))
            assert port, lines
            for path in (link, "/t/" + "z" * 43):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
                except urllib.error.HTTPError:
                    pass
        finally:
            server.terminate()
        log = "".join(lines) + server.stderr.read()
    assert "GET /t/… HTTP" in log, log
    assert link.split("/")[-1] not in log and "z" * 43 not in log


def test_ticket_link_needs_an_existing_ticket(config: Path) -> None:
    missing = run_cli(config, "ticket", "link", "9")
    assert missing.returncode != 0 and "no ticket #9" in missing.stderr


def test_the_viewer_refuses_a_config_without_a_secret(tmp_path: Path, db_url: str) -> None:
    from helpdesk.config import ConfigError
    from helpdesk.config import load_settings
    from webview import create_app

    config = write_config(tmp_path, db_url)
    config.write_text(re.sub(r'secret_key = ".*"', "", config.read_text()))
    with pytest.raises(ConfigError, match="secret_key"):
        create_app(settings=load_settings(config))


def test_behind_a_proxy_the_limit_counts_the_readers_address(config: Path) -> None:
    _deliver(config, make_mail())
    link = _link(config)
    client = _app(config, failed_lookups_per_minute=2, trusted_proxies=1).test_client()
    guesser = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(2):
        assert client.get("/t/" + "x" * 43, headers=guesser).status_code == 404
    assert client.get(link, headers=guesser).status_code == 429
    assert client.get(link, headers={"X-Forwarded-For": "198.51.100.4"}).status_code == 200


def test_inline_pictures_show_from_our_own_attachments(config: Path) -> None:
    raw = (
        b"From: Alice <alice@univ.example>\r\nTo: dsi.support@univ.example\r\n"
        b"Subject: Capture\r\nMessage-ID: <cid-1@univ.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/related; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<p>Voici l\'erreur :</p><img src="cid:shot@univ.example" alt="capture">\r\n'
        b"--r\r\nContent-Type: image/png\r\nContent-ID: <shot@univ.example>\r\n"
        b"Content-Disposition: inline; filename=shot.png\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\r\n"
        b"--r--\r\n"
    )
    _deliver(config, raw)
    client = _app(config).test_client()
    link = _link(config)
    html = client.get(link).get_data(as_text=True)
    [src] = re.findall(r'<img src="([^"]+)"', html)
    assert src.startswith(link + "/a/")
    assert client.get(src).headers["Content-Type"] == "image/png"
    assert "images=1" not in html  # nothing remote to ask for


def test_no_token_reaches_gunicorns_logs(config: Path) -> None:
    """Production: gunicorn with its access log on, as a sysadmin might turn it on."""
    import os
    import socket
    import sys

    _deliver(config, make_mail())
    link = _link(config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = {**os.environ, "HELPDESK_CONFIG": str(config)}
    args = [gunicorn, "-w", "1", "-b", f"127.0.0.1:{port}", "--access-logfile", "-"]
    with subprocess.Popen(
        [*args, "--error-logfile", "-", "webview:create_app()"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{link}", timeout=5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "gunicorn did not answer"
                    time.sleep(0.2)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/t/{'q' * 43}", timeout=5)
            except urllib.error.HTTPError:
                pass
        finally:
            server.terminate()
        log = server.stdout.read()
    assert '"GET /t/… HTTP/1.1" 200' in log, log
    assert link.split("/")[-1] not in log and "q" * 43 not in log


@pytest.mark.parametrize("server", ["serve", "gunicorn"])
def test_a_download_carries_one_date_header(config: Path, server: str) -> None:
    """Werkzeug's conditional responses add a Date; the development server adds another."""
    import http.client
    import os
    import socket
    import sys

    _deliver(config, WITH_FILES)
    link = _link(config)
    [png] = [
        f["id"]
        for f in cli_json(config, "ticket", "show", "1")["articles"][0]["attachments"]
        if f["filename"] == "ecran.png"
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if server == "serve":
        args = [*pipe_command(), "--config", str(config), "serve", "--port", str(port)]
    else:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        args = [gunicorn, "-w", "1", "-b", f"127.0.0.1:{port}", "webview:create_app()"]
    env = {**os.environ, "HELPDESK_CONFIG": str(config)}
    dates: dict[str, list[str]] = {}
    with subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:
            deadline = time.monotonic() + 30
            for path in (f"{link}/a/{png}", f"{link}/e/1/text", link):
                while True:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    try:
                        connection.request("GET", path)
                        response = connection.getresponse()
                        break
                    except OSError:
                        assert time.monotonic() < deadline, f"{server} did not answer"
                        time.sleep(0.2)
                response.read()
                connection.close()
                assert response.status == 200, (path, response.status)
                dates[path] = [v for k, v in response.getheaders() if k.lower() == "date"]
        finally:
            process.terminate()
    assert all(len(d) == 1 for d in dates.values()), dates


def _hostile_paths(token: str) -> list[str]:
    """Every form of a link a client may send that the server logs."""
    encoded = "".join(f"%{ord(c):02X}" for c in token)
    one = f"{token[:21]}%{ord(token[21]):02x}{token[22:]}"
    return [
        f"/t/{token}",
        f"/t//{token}",
        f"/T/{token}",
        f"/t\\{token}",
        f"/t/x/../{token}",
        f"/t/{encoded}",
        f"/t/{encoded.lower()}",
        f"/t/{one}",
        f"/t%2F{token}",
        f"/t%2f{token}",
        f"/%74/{token}",
        f"/t/{encoded.replace('%', '%25')}",  # encoded twice
        f"/t/{encoded.replace('%', '%2525')}",  # three times
        f"/t/%{token}",
        f"/?token={token}",
        f"/t/x?{token}",
        f"/t/x;{token}",
        f"/t;{token}",
        f"/t/{token}/a/1",
        f"/t/{token}?images=1",
        f"/t/{token}%3Fimages=1",
    ]


def _raw_get(server: subprocess.Popen, port: int, path: str, token: str) -> bytes:
    """One request as sent, path untouched; its status line."""
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            assert server.poll() is None, "the server stopped"
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
    with conn:
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Referer: https://helpdesk.univ.example/t/{token}\r\n"
            f"User-Agent: link-checker/1.0 ({token})\r\n\r\n".encode()
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def _no_token_in(log: str, token: str) -> None:
    from urllib.parse import unquote

    decoded = log
    for _ in range(4):
        decoded = unquote(decoded)
    assert token not in log and token not in decoded, log


def test_redact_hides_every_form_of_a_token_and_keeps_the_rest() -> None:
    import logging
    import sys

    from webview.app import RedactTokens
    from webview.app import redact

    token = "Ab7cKFt4Hqkk4DmvjCSy4Y-C1bQ_0123456789abcde"
    for path in _hostile_paths(token):
        _no_token_in(redact(f'"GET {path} HTTP/1.1" 404 "-" "checker ({token})"'), token)
    assert redact(f"GET /t/{token} HTTP/1.1") == "GET /t/… HTTP/1.1"
    for kept in ["GET /static/style.css HTTP/1.1", "/t/" + "a" * 42, "ticket #12: closed"]:
        assert redact(kept) == kept
    # A traceback, formatted by whatever handler, is redacted too.
    record = logging.LogRecord(
        "webview.app", logging.ERROR, __file__, 1, "Exception on %s", (f"/t//{token}",), None
    )
    try:
        raise LookupError(f"no route for /T/{token}")
    except LookupError:
        record.exc_info = sys.exc_info()
    assert RedactTokens().filter(record)
    assert token not in logging.Formatter().format(record)


def test_no_token_in_any_form_reaches_the_development_servers_log(config: Path) -> None:
    _deliver(config, make_mail())
    token = _link(config).split("/")[-1]
    paths = _hostile_paths(token)
    with subprocess.Popen(
        [*pipe_command(), "--config", str(config), "serve", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            lines: list[str] = []
            port = None
            while port is None:
                lines.append(server.stderr.readline())
                assert lines[-1], lines  # the server died
                found = re.search(r"http://127\.0\.0\.1:(\d+)", lines[-1])
                port = found and int(found.group(1))
            statuses = [_raw_get(server, port, path, token) for path in paths]
        finally:
            server.terminate()
        log = "".join(lines) + server.stderr.read()
    assert statuses[0] == b"HTTP/1.1 200 OK" and b"HTTP/1.1 200 OK" in statuses[5:8]
    assert log.count(" HTTP/1.1") >= len(paths), log  # every request was logged
    _no_token_in(log, token)


def test_no_token_in_any_form_reaches_gunicorns_logs(config: Path, tmp_path: Path) -> None:
    """gunicorn as the shipped unit starts it, with its access log turned on."""
    import os
    import shlex
    import socket
    import sys

    _deliver(config, make_mail())
    token = _link(config).split("/")[-1]
    paths = _hostile_paths(token)
    unit = (Path(__file__).parent.parent / "etc/systemd/helpdesk-viewer.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    argv = shlex.split(exec_start)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv[0] = str(Path(sys.executable).parent / "gunicorn")
    argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    argv[1:1] = ["--access-logfile", str(access), "--error-logfile", str(errors)]
    # Debug level: gunicorn then logs each request line in its error log as well. No
    # control socket: a test must not share ~/.gunicorn with another gunicorn.
    argv[1:1] = ["--log-level", "debug", "--no-control-socket"]
    env = {**os.environ, "HELPDESK_CONFIG": str(config)}
    with subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as server:
        try:
            statuses = [_raw_get(server, port, path, token) for path in paths]
        finally:
            server.terminate()
        output = server.stdout.read()
    assert statuses[0] == b"HTTP/1.1 200 OK" and b"HTTP/1.1 200 OK" in statuses[5:8]
    access_log, error_log = access.read_text(), errors.read_text()
    assert access_log.count(" HTTP/1.1") == len(paths), access_log
    assert error_log.count("[DEBUG] GET ") == len(paths), error_log
    for log in (access_log, error_log, output):
        _no_token_in(log, token)


# -- the solution approval: close, or "not solved" (issue 5) ------------------------

JEAN = "jean.tech@univ.example"
MARIE = "marie.tech@univ.example"
SOLUTION = "Le toner a été remplacé."


@pytest.fixture
def mailed(db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher) -> Path:
    """A config whose mail goes to the SMTP catcher, on a fresh, initialised database."""
    path = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
    assert run_cli(path, "init").returncode == 0
    return path


@contextmanager
def _workflow(config: Path) -> Iterator[tuple[Any, Any, Any]]:
    """The workflow in-process, as the CLI drives it: one transaction, then its mail sent."""
    from helpdesk.config import load_settings
    from helpdesk.notify.outbox import flush
    from helpdesk.store import Store

    settings = load_settings(config)
    with Store(settings.database_url, settings.busy_timeout) as db:
        with db.transaction():
            yield db, settings, settings.queues["dsi"]
        flush(db, settings, due_only=False)


def _open(config: Path, subject: str = "Imprimante en panne") -> int:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        alice = workflow.ensure_person(db, ALICE, "Alice Martin")
        ticket_id, _article = workflow.open_ticket(
            db, settings, queue, alice, subject=subject, body_text="L'imprimante ne marche plus."
        )
    return ticket_id


def _take(config: Path, ticket_id: int) -> None:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        jean = workflow.ensure_person(db, JEAN, "Jean Technicien")
        workflow.take(db, settings, queue, ticket_id, jean, workflow.Actor(jean, JEAN, "cli"))


def _resolve(config: Path, ticket_id: int) -> None:
    from helpdesk import workflow

    with _workflow(config) as (db, settings, queue):
        jean = workflow.ensure_person(db, JEAN, "Jean Technicien")
        workflow.resolve(db, settings, queue, ticket_id, jean, body_text=SOLUTION)


def _resolved(config: Path, subject: str = "Imprimante en panne") -> int:
    """A ticket taken by Jean, then resolved with SOLUTION."""
    ticket_id = _open(config, subject)
    _take(config, ticket_id)
    _resolve(config, ticket_id)
    return ticket_id


def _status(config: Path, ticket_id: int = 1) -> str:
    [(status,)] = db_execute(config, "SELECT status FROM ticket WHERE id = :id", id=ticket_id)
    return status


def _counts(config: Path) -> tuple[int, int, int]:
    """(articles, history rows, outbox rows): what any change would add to."""
    return tuple(  # type: ignore[return-value]
        db_execute(config, f"SELECT count(*) FROM {table}")[0][0]
        for table in ("article", "ticket_history", "outbox_message")
    )


FR = {"Accept-Language": "fr-FR,fr;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.8"}


def test_a_resolved_ticket_asks_the_requester_to_close_it_or_say_it_persists(
    config: Path,
) -> None:
    _resolved(config)
    link = _link(config)
    client = _app(config, autoclose_days=15).test_client()
    html = client.get(link, headers=FR).get_data(as_text=True)
    assert "Votre problème est-il résolu ?" in html
    assert "au bout de 15 jours" in html
    assert f'action="{link}/close"' in html and ">Clore la demande</button>" in html
    assert f'action="{link}/reopen"' in html and ">Le problème persiste</button>" in html
    assert '<label for="comment">Sinon, qu\'est-ce qui ne va toujours pas ?</label>' in html
    assert re.search(r'<textarea id="comment" name="comment"[^>]* required', html)
    assert html.count('name="csrf_token"') == 2
    # The solution approval replaces the follow-up form, right after the thread.
    assert "Ajouter un nouveau suivi" not in html and 'name="description"' not in html
    assert html.index(SOLUTION) < html.index('id="answer"')
    assert 'href="#answer"' in html
    assert "Résolue" in html and "Jean Technicien" in html

    english = client.get(link, headers=EN).get_data(as_text=True)
    assert "Is your problem solved?" in english and "after 15 days" in english
    assert ">Close my request</button>" in english and ">Not solved</button>" in english
    assert '<label for="comment">If not, what is still wrong?</label>' in english
    assert "Add a follow-up" not in english
    one_day = _app(config, autoclose_days=1).test_client().get(link, headers=EN)
    assert "after 1 day." in one_day.get_data(as_text=True)


def test_close_my_request_closes_it_at_once_and_mails_nobody(
    mailed: Path, smtp_catcher: SmtpCatcher
) -> None:
    _resolved(mailed)
    link = _link(mailed)
    client = _app(mailed).test_client()
    smtp_catcher.clear()
    before = db_execute(mailed, "SELECT count(*) FROM outbox_message")[0][0]
    form = client.get(link, headers=FR).get_data(as_text=True)
    response = client.post(link + "/close", data={"csrf_token": _csrf(form)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(link)
    assert _status(mailed) == "closed"
    [history] = db_execute(
        mailed,
        "SELECT h.door, h.old_status, h.new_status, p.email, h.actor FROM ticket_history h"
        " JOIN person p ON p.id = h.actor_id WHERE h.ticket_id = 1 AND h.action = 'close'",
    )
    assert history == ("web", "resolved", "closed", ALICE, ALICE)
    [(closed_at,)] = db_execute(mailed, "SELECT closed_at FROM ticket WHERE id = 1")
    assert closed_at is not None
    # They closed it themself: no "your request is closed" mail, nor any other.
    assert db_execute(mailed, "SELECT count(*) FROM outbox_message")[0][0] == before
    time.sleep(0.3)
    assert smtp_catcher.messages == []

    page = client.get(link, headers=FR).get_data(as_text=True)
    assert "Cette demande est close" in page
    assert 'href="mailto:dsi.support@univ.example">dsi.support@univ.example</a>' in page
    assert "une nouvelle demande sera ouverte" in page
    assert "<form" not in page and "<textarea" not in page and 'class="skip"' not in page
    assert '<span class="status status-closed">Close</span>' in page
    english = client.get(link, headers=EN).get_data(as_text=True)
    assert "This request is closed" in english and "opens a new request" in english


def test_not_solved_reopens_it_for_the_technician_with_the_comment(
    mailed: Path, smtp_catcher: SmtpCatcher
) -> None:
    _resolved(mailed)
    link = _link(mailed)
    client = _app(mailed).test_client()
    smtp_catcher.clear()
    comment = "Toujours des traînées noires sur chaque page."
    form = client.get(link, headers=FR).get_data(as_text=True)
    response = client.post(link + "/reopen", data={"csrf_token": _csrf(form), "comment": comment})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(link + "#last")
    assert _status(mailed) == "assigned"
    articles = cli_json(mailed, "ticket", "show", "1")["articles"]
    last = [a for a in articles if not a["internal"]][-1]
    assert last["author"] == ALICE and last["body_text"] == comment and last["source"] == "web"
    [history] = db_execute(
        mailed,
        "SELECT door, old_status, new_status, actor_id IS NOT NULL FROM ticket_history"
        " WHERE action = 'reopen'",
    )
    assert history == ("web", "resolved", "assigned", True)
    # Jean, who has it, is told at once, with the comment; nobody else.
    [caught] = smtp_catcher.wait_for(1)
    assert caught.recipients == [JEAN]
    message = caught.message()
    assert message["Subject"] == "[HD #1] Demande rouverte : Imprimante en panne"
    assert comment in message.get_content() and ALICE in message.get_content()
    [row] = [r for r in cli_json(mailed, "outbox", "list") if r["kind"] == "reopened"]
    assert row["status"] == "sent"

    page = client.get(link, headers=FR).get_data(as_text=True)
    last_entry = page[page.rindex('<li class="entry') :]
    assert 'id="last"' in last_entry and comment in last_entry and "mine" in last_entry
    assert "En cours de traitement" in page and "Jean Technicien" in page
    assert "Ajouter un nouveau suivi" in page and "Clore la demande" not in page


def test_not_solved_without_a_technician_goes_back_to_the_group(
    mailed: Path, smtp_catcher: SmtpCatcher
) -> None:
    _resolved(mailed)
    db_execute(mailed, "UPDATE ticket SET assignee_id = NULL")
    link = _link(mailed)
    client = _app(mailed).test_client()
    smtp_catcher.clear()
    form = client.get(link).get_data(as_text=True)
    assert "Pas encore attribuée" in form
    response = client.post(link + "/reopen", data={"csrf_token": _csrf(form), "comment": "Non."})
    assert response.status_code == 303
    assert _status(mailed) == "new"
    caught = smtp_catcher.wait_for(2)
    assert sorted(r for c in caught for r in c.recipients) == [JEAN, MARIE]


def test_not_solved_needs_a_comment(config: Path) -> None:
    _resolved(config)
    link = _link(config)
    client = _app(config).test_client()
    before = _counts(config)
    form = client.get(link, headers=FR).get_data(as_text=True)
    for data in ({"comment": "  \n "}, {}):
        response = client.post(link + "/reopen", data={"csrf_token": _csrf(form), **data})
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert "Dites ce qui ne va toujours pas" in html
        assert 'aria-describedby="comment-error"' in html and 'role="alert"' in html
    assert _status(config) == "resolved" and _counts(config) == before


def test_close_and_reopen_need_the_csrf_token(config: Path) -> None:
    _resolved(config)
    link = _link(config)
    client = _app(config).test_client()
    client.get(link)  # the session exists: only the form's token is missing
    before = _counts(config)
    for path, data in (("/close", {}), ("/reopen", {"comment": "Toujours en panne."})):
        assert client.post(link + path, data=data).status_code == 400
        forged = client.post(link + path, data={**data, "csrf_token": "forged"}, headers=FR)
        assert forged.status_code == 400
        assert "Le formulaire a expiré" in forged.get_data(as_text=True)
    assert _status(config) == "resolved" and _counts(config) == before


def test_close_and_reopen_only_answer_a_resolved_ticket(config: Path) -> None:
    _open(config)
    link = _link(config)
    client = _app(config).test_client()
    form = client.get(link, headers=FR).get_data(as_text=True)
    assert "Clore la demande" not in form and "Ajouter un nouveau suivi" in form
    token = _csrf(form)
    for status in ("new", "assigned", "waiting", "closed"):
        db_execute(config, "UPDATE ticket SET status = :status", status=status)
        before = _counts(config)
        closing = client.post(link + "/close", data={"csrf_token": token}, headers=FR)
        assert closing.status_code == 409, status
        assert "rien n'a été modifié" in closing.get_data(as_text=True)
        reopening = client.post(
            link + "/reopen", data={"csrf_token": token, "comment": "Encore ?"}, headers=EN
        )
        assert reopening.status_code == 409, status
        html = reopening.get_data(as_text=True)
        assert "not waiting for your answer to a solution: nothing was changed" in html
        assert "Encore ?" in html  # what they wrote is not lost
        assert _status(config) == status and _counts(config) == before


def test_a_closed_ticket_takes_no_followup(config: Path) -> None:
    _resolved(config)
    link = _link(config)
    client = _app(config).test_client()
    token = _csrf(client.get(link).get_data(as_text=True))
    assert client.post(link + "/close", data={"csrf_token": token}).status_code == 303
    before = _counts(config)
    response = client.post(
        link,
        data={
            "csrf_token": token,
            "description": "Et aussi le scanner.",
            "attachments": (io.BytesIO(b"log"), "journal.txt"),
        },
        content_type="multipart/form-data",
        headers=FR,
    )
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert "votre suivi n'a pas été ajouté" in html
    assert "Et aussi le scanner." in html and "Cette demande est close" in html
    assert _status(config) == "closed" and _counts(config) == before


def test_a_followup_on_a_resolved_ticket_reopens_it(config: Path) -> None:
    _resolved(config)
    link = _link(config)
    client = _app(config).test_client()
    token = _csrf(client.get(link).get_data(as_text=True))
    response = client.post(link, data={"csrf_token": token, "description": "Encore en panne."})
    assert response.status_code == 303
    assert _status(config) == "assigned"


def test_internal_comments_never_reach_the_requester(
    mailed: Path, smtp_catcher: SmtpCatcher
) -> None:
    from helpdesk import workflow

    secret = "Note interne : le fournisseur facture le toner trop cher."
    ticket_id = _open(mailed)
    _take(mailed, ticket_id)
    with _workflow(mailed) as (db, settings, queue):
        marie = workflow.ensure_person(db, MARIE)
        workflow.comment(db, settings, queue, ticket_id, marie, body_text=secret)
    link = _link(mailed)
    client = _app(mailed).test_client()
    pages = [client.get(link).get_data(as_text=True)]
    _resolve(mailed, ticket_id)
    form = client.get(link).get_data(as_text=True)
    pages.append(form)
    reopened = client.post(link + "/reopen", data={"csrf_token": _csrf(form), "comment": "Non."})
    assert reopened.status_code == 303
    pages.append(client.get(link).get_data(as_text=True))
    pages.append(client.get(link, headers=EN).get_data(as_text=True))
    for page in pages:
        assert "fournisseur" not in page
    # The comment went to the technician in charge only; no mail to the requester carries it.
    caught = smtp_catcher.wait_for(5)
    to_alice = [c for c in caught if ALICE in c.recipients]
    kinds = {r["kind"] for r in cli_json(mailed, "outbox", "list") if r["to"] == ALICE}
    assert kinds == {"ack", "taken", "resolved"} and len(to_alice) == 3
    for message in to_alice:
        assert "fournisseur" not in message.message().get_content()
    told = [c for c in caught if "fournisseur" in c.message().get_content()]
    assert [c.recipients for c in told] == [[JEAN]]


def test_a_page_cached_before_a_change_is_not_served_after(config: Path) -> None:
    from helpdesk import workflow

    _resolved(config)
    link = _link(config)
    app = _app(config)
    client = app.test_client()
    cache = app.extensions["helpdesk.page_cache"]
    for _ in range(2):  # rendered, then served from the cache
        assert "Clore la demande" in client.get(link).get_data(as_text=True)
    assert any(key[-1] == "page" for key in cache._items)
    # Closed behind the viewer's back (the scheduler's auto-close): the page follows.
    with _workflow(config) as (db, settings, queue):
        workflow.close(db, settings, queue, 1, workflow.Actor(None, "scheduler", "scheduler"))
    page = client.get(link).get_data(as_text=True)
    assert "Cette demande est close" in page and "Clore la demande" not in page
    # Reopened by a technician, resolved again: the approval is back, then closed on the web.
    with _workflow(config) as (db, settings, queue):
        jean = workflow.ensure_person(db, JEAN)
        workflow.reopen(db, settings, queue, 1, workflow.Actor(jean, JEAN, "cli"))
    assert "Ajouter un nouveau suivi" in client.get(link).get_data(as_text=True)
    _resolve(config, 1)
    form = client.get(link).get_data(as_text=True)
    assert "Clore la demande" in form and client.get(link).get_data(as_text=True) == form
    assert client.post(link + "/close", data={"csrf_token": _csrf(form)}).status_code == 303
    page = client.get(link).get_data(as_text=True)
    assert "Cette demande est close" in page and "<form" not in page


def test_every_status_has_its_words(config: Path) -> None:
    _open(config)
    _take(config, 1)
    link = _link(config)
    client = _app(config).test_client()
    words = {
        "new": ("Nouvelle", "New"),
        "assigned": ("En cours de traitement", "Being handled"),
        "waiting": ("En attente", "Waiting"),
        "resolved": ("Résolue", "Resolved"),
        "closed": ("Close", "Closed"),
    }
    for status, (french, english) in words.items():
        db_execute(config, "UPDATE ticket SET status = :status", status=status)
        for headers, label in ((FR, french), (EN, english)):
            html = client.get(link, headers=headers).get_data(as_text=True)
            assert f'<span class="status status-{status}">{label}</span>' in html, status
            assert "<dd>Jean Technicien</dd>" in html


def test_the_state_is_checked_again_under_the_lock(config: Path, monkeypatch: Any) -> None:
    """The token lookup reads the state before the transaction: a change in between (the
    scheduler, a technician) must still be refused, decided on the locked row."""
    from dataclasses import replace

    from helpdesk import tokens

    _resolved(config)
    link = _link(config)
    client = _app(config).test_client()
    token = _csrf(client.get(link).get_data(as_text=True))
    real = tokens.lookup
    for stale, now in (("resolved", "assigned"), ("resolved", "closed"), ("assigned", "closed")):
        monkeypatch.setattr(tokens, "lookup", lambda *a, s=stale: replace(real(*a), status=s))
        db_execute(config, "UPDATE ticket SET status = :status", status=now)
        before = _counts(config)
        if stale == "resolved":
            assert client.post(link + "/close", data={"csrf_token": token}).status_code == 409
            reopening = client.post(link + "/reopen", data={"csrf_token": token, "comment": "x"})
            assert reopening.status_code == 409
        else:
            followup = client.post(link, data={"csrf_token": token, "description": "x"})
            assert followup.status_code == 409
        assert _status(config) == now and _counts(config) == before
