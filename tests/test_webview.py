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
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_json
from conftest import db_execute
from conftest import make_mail
from conftest import pipe_command
from conftest import run_cli
from conftest import run_pipe
from conftest import write_config

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
