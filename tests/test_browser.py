"""The requester's web viewer in a real headless Chromium, driven by Playwright (issue 4).

Mail goes in through the real pipe, the acknowledgement is caught on a real SMTP server,
its link is opened in Debian's Chromium against the webview app served on 127.0.0.1, and
the follow-up posted there comes out as the technicians' notification. Each test runs on
SQLite and on PostgreSQL (the `db_url` fixture).

Chromium is Debian's (`/usr/bin/chromium`, installed by `.ci/browser.sh`), never a
`playwright install` download: the tests fail without it, unless HELPDESK_TEST_NO_BROWSER=1
is set on purpose (then they are skipped, loudly), as conftest does for PostgreSQL.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from conftest import cli_json
from conftest import make_mail
from conftest import run_cli
from conftest import run_pipe
from conftest import smtp_outgoing
from conftest import write_config
from playwright.sync_api import Browser
from playwright.sync_api import BrowserContext
from playwright.sync_api import Page
from playwright.sync_api import expect
from playwright.sync_api import sync_playwright
from smtp_catcher import SmtpCatcher
from werkzeug.serving import make_server

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-background-networking",  # no fetches of Google hosts in the background
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # No DNS at all: only the loopback server resolves, so a remote image or a hostile
    # URL can be *attempted* (the tests see the request) but never reaches anyone.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
SIZES = [(390, 844), (1280, 800)]  # a phone, a desktop

ALICE = "alice@univ.example"
TECHS = {"jean.tech@univ.example", "marie.tech@univ.example"}
LINK = re.compile(r"https?://[^\s/]+/t/[A-Za-z0-9_-]{43}")
HARMLESS = "Le texte inoffensif reste visible."
HOSTILE_HTML = f"""<html><head>
<meta http-equiv="refresh" content="0;url=javascript:alert(7)">
</head><body>
<p>{HARMLESS}</p>
<script>alert(1)</script>
<img src=x onerror=alert(2)>
<a href="javascript:alert(3)">click</a>
<iframe src="javascript:alert(4)"></iframe>
<object data="data:text/html,<script>alert(5)</script>"></object>
<svg onload=alert(6)></svg>
<div style="background:url(javascript:alert(8));width:expression(alert(9))">styled</div>
<form action="https://evil.example"><input name=x></form>
<img src="https://tracker.example/pixel.png" alt="pixel">
</body></html>
"""
# What must never be left in the sanitized thread (compared lower-cased).
FORBIDDEN = [
    "<script",
    "onerror",
    "onload",
    "javascript:",
    "<iframe",
    "<object",
    "<svg",
    "<meta",
    "expression(",
    '<form action="https://evil',
]


# -- the browser -----------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run: a launch costs about a second."""
    if os.environ.get("HELPDESK_TEST_NO_BROWSER") == "1":
        pytest.skip("browser tests disabled by HELPDESK_TEST_NO_BROWSER=1")
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"the browser tests need Debian's chromium at {CHROMIUM}: run `sudo make test-deps`"
            " (or set HELPDESK_TEST_NO_BROWSER=1 to skip them)"
        )
    with sync_playwright() as playwright:
        # executable_path: Playwright's own download is neither wanted nor reachable here.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page in a fresh context, with everything it did that a test may want to hold against it."""

    context: BrowserContext
    page: Page
    dialogs: list[str] = field(default_factory=list)  # "alert: 1"...
    console: list[tuple[str, str, str]] = field(default_factory=list)  # (type, text, url)
    page_errors: list[str] = field(default_factory=list)  # uncaught script exceptions
    requests: list[str] = field(default_factory=list)  # every URL the context asked for

    def errors(self) -> list[tuple[str, str, str]]:
        """The console errors, but for the favicon the page does not have (a harmless 404)."""
        return [m for m in self.console if m[0] == "error" and not m[2].endswith("/favicon.ico")]


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Open pages in fresh contexts (no cookie shared between tests); all closed afterwards."""
    contexts: list[BrowserContext] = []

    def open_(locale: str = "fr-FR", width: int = 1280, height: int = 800) -> Tab:
        # The locale sets the Accept-Language header, which picks the page's language.
        context = browser.new_context(locale=locale, viewport={"width": width, "height": height})
        contexts.append(context)
        tab = Tab(context, context.new_page())
        # Without a handler Playwright dismisses dialogs silently: record every one.
        tab.page.on("dialog", lambda d: (tab.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
        tab.page.on(
            "console", lambda m: tab.console.append((m.type, m.text, m.location.get("url", "")))
        )
        tab.page.on("pageerror", lambda e: tab.page_errors.append(str(e)))
        context.on("request", lambda r: tab.requests.append(r.url))
        return tab

    yield open_
    for context in contexts:
        context.close()


def _screenshots(page: Page, request: pytest.FixtureRequest, db: str, step: str = "") -> None:
    """Full-page screenshots at phone and desktop widths, kept as CI artifacts (not committed);
    `step` names one of several moments of a test."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = request.node.originalname + (f"-{step}" if step else "")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        png = page.screenshot(path=str(SCREENSHOTS / f"{name}-{db}-{width}.png"), full_page=True)
        # A full-page shot wider than the viewport means the page scrolls sideways.
        assert int.from_bytes(png[16:20], "big") == width, f"horizontal scroll at {width} px"


# -- the viewer, served for real ---------------------------------------------------


@dataclass
class Viewer:
    """The webview app on a loopback port, with its config and the SMTP server it sends to."""

    url: str
    config: Path
    catcher: SmtpCatcher
    db: str  # "sqlite" or "postgresql", for artifact names


@pytest.fixture
def viewer(
    db_url: str, tmp_path: Path, smtp_catcher: SmtpCatcher, request: pytest.FixtureRequest
) -> Iterator[Viewer]:
    """Serve the viewer in a thread; the config's base_url is the server's own address."""
    from helpdesk.db import dispose_engines
    from webview import create_app

    # Bind first (port 0: no race for a free port), so the links the pipe writes into
    # the acknowledgements can point at this server; the app is built once the config is.
    holder: dict[str, Any] = {}
    server = make_server(
        "127.0.0.1", 0, lambda environ, start: holder["app"](environ, start), threaded=True
    )
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        config = write_config(tmp_path, db_url, outgoing=smtp_outgoing(smtp_catcher.port))
        default = 'base_url = "https://helpdesk.univ.example"'
        assert default in config.read_text()
        config.write_text(config.read_text().replace(default, f'base_url = "{url}"'))
        result = run_cli(config, "init")
        assert result.returncode == 0, result.stderr
        holder["app"] = create_app(str(config))
        # A short poll interval: the default 0.5 s would be paid at every shutdown.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.daemon = True
        thread.start()
        try:
            yield Viewer(url, config, smtp_catcher, request.node.callspec.params["db_url"])
        finally:
            server.shutdown()  # only once serving: before, it would wait forever
            thread.join(5)
    finally:
        server.server_close()
        dispose_engines()  # no pooled connection left for conftest's DROP SCHEMA to wait on


# -- helpers -----------------------------------------------------------------------


def _deliver(config: Path, raw: bytes, queue: str = "dsi") -> None:
    result = run_pipe(config, raw, queue=queue)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"", result.stderr


def _mail(
    subject: str,
    text: str,
    html: str | None = None,
    attachment: tuple[str, str, str] | None = None,
    sender: str = ALICE,
) -> bytes:
    """A MIME mail to the dsi queue: text, or multipart/alternative with HTML, plus a file."""
    message = EmailMessage()
    message["From"] = f"Alice Martin <{sender}>"
    message["To"] = "dsi.support@univ.example"
    message["Subject"] = subject
    message["Date"] = "Sat, 28 Nov 2026 09:00:00 +0100"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@univ.example>"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    if attachment is not None:
        filename, subtype, content = attachment
        message.add_attachment(content, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)


def _link(viewer: Viewer, ticket_id: int) -> str:
    """A fresh private link to a ticket, as `helpdesk-pipe ticket link` prints it."""
    result = run_cli(viewer.config, "ticket", "link", str(ticket_id))
    assert result.returncode == 0, result.stderr
    [link] = LINK.findall(result.stdout)
    assert link.startswith(viewer.url + "/t/")
    return link


def _articles(viewer: Viewer, ticket_id: int) -> list[dict[str, Any]]:
    return cli_json(viewer.config, "ticket", "show", str(ticket_id))["articles"]


# -- the whole story ---------------------------------------------------------------


def test_link_from_the_acknowledgement_opens_the_ticket_and_takes_a_followup(
    viewer: Viewer, open_tab: Callable[..., Tab], request: pytest.FixtureRequest
) -> None:
    _deliver(viewer.config, make_mail(subject="Imprimante en panne"))
    caught = viewer.catcher.wait_for(3)  # the acknowledgement and the two technicians' news
    [ack] = [c.message() for c in caught if ALICE in c.recipients]
    [link] = LINK.findall(ack.get_content())
    assert link.startswith(viewer.url + "/t/"), link  # base_url is this server
    viewer.catcher.clear()

    tab = open_tab(locale="fr-FR")
    page = tab.page
    response = page.goto(link)
    assert response is not None and response.status == 200
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.locator(".number")).to_have_text("Demande n° 1")
    expect(page.locator("h1")).to_have_text("Imprimante en panne")
    expect(page.locator(".status")).to_have_text("Nouvelle")
    expect(page.locator(".thread")).to_contain_text("l'imprimante du bureau 12 ne marche plus")
    expect(page.get_by_role("heading", name="Ajouter un nouveau suivi")).to_be_visible()
    expect(page.locator(".thread > li")).to_have_count(1)

    text = "Toujours en panne ce matin, voici le journal."
    page.get_by_label("Description").fill(text)
    page.get_by_label("Pièces jointes (facultatif)").set_input_files(
        files=[{"name": "journal.txt", "mimeType": "text/plain", "buffer": b"E42 bourrage\n"}]
    )
    page.get_by_role("button", name="Ajouter", exact=True).click()

    # POST, 303, GET: the page lands on the new entry, the last of the thread.
    expect(page).to_have_url(re.compile(re.escape(link) + "#last$"))
    expect(page.locator(".thread > li")).to_have_count(2)
    last = page.locator(".thread > li:last-child")
    expect(last).to_contain_text(text)
    expect(last.locator(".files a")).to_have_text("journal.txt")
    expect(last).to_have_attribute("id", "last")
    expect(page.locator("#last")).to_have_count(1)
    # The attachment link serves the bytes that were sent.
    href = last.locator(".files a").get_attribute("href")
    assert href is not None
    served = tab.context.request.get(viewer.url + href)
    assert served.status == 200 and served.body() == b"E42 bourrage\n"

    # Stored through the workflow as a web follow-up...
    stored = _articles(viewer, 1)[-1]
    assert stored["source"] == "web" and stored["author"] == ALICE
    assert stored["body_text"].strip() == text
    # ...and the queue's technicians were told, with the new text.
    notices = viewer.catcher.wait_for(2)
    assert {r for c in notices for r in c.recipients} == TECHS
    for message in (c.message() for c in notices):
        assert message["Subject"].startswith("[HD #1] Nouveau suivi du demandeur")
        assert text in message.get_content()

    assert tab.dialogs == [] and tab.page_errors == []
    assert tab.errors() == []
    _screenshots(page, request, viewer.db)


def test_the_page_speaks_english_to_an_english_browser(
    viewer: Viewer, open_tab: Callable[..., Tab]
) -> None:
    # A French queue: only Accept-Language makes this page English.
    _deliver(viewer.config, make_mail(subject="Imprimante en panne"))
    tab = open_tab(locale="en-US")
    tab.page.goto(_link(viewer, 1))
    page = tab.page
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator(".number")).to_have_text("Request no. 1")
    expect(page.locator(".status")).to_have_text("New")
    expect(page.get_by_role("heading", name="Add a follow-up")).to_be_visible()
    expect(page.get_by_role("button", name="Add", exact=True)).to_be_visible()
    expect(page.get_by_label("Description")).to_be_editable()
    assert tab.dialogs == [] and tab.errors() == []


# -- hostile HTML ------------------------------------------------------------------


def test_hostile_html_runs_nothing_and_remote_images_wait_for_the_reader(
    viewer: Viewer, open_tab: Callable[..., Tab], request: pytest.FixtureRequest
) -> None:
    raw = _mail("Facture en pièce jointe", HARMLESS, html=HOSTILE_HTML)
    _deliver(viewer.config, raw)
    # Cleaned once, when it came; the mail as it came stays in the raw bytes.
    assert "<script" not in _articles(viewer, 1)[0]["body_html"]
    assert b"<script>" in run_cli(viewer.config, "mail", "show", "1", "--raw").stdout_bytes
    tab = open_tab(locale="fr-FR")
    page = tab.page
    page.goto(_link(viewer, 1))

    # The HTML part is what is shown (not the text part), sanitized.
    body = page.locator(".thread .body.html")
    expect(body).to_have_count(1)
    expect(body.get_by_text(HARMLESS)).to_be_visible()
    thread = page.locator("#thread").inner_html().lower()
    for bad in FORBIDDEN:
        assert bad not in thread, f"{bad!r} left in the thread"
    # The javascript: link lost its href: clicking it goes nowhere and runs nothing.
    link = body.get_by_text("click", exact=True)
    if link.count():
        link.click()
    page.wait_for_timeout(300)  # give a script, a refresh or an onerror time to fire
    assert tab.dialogs == [] and tab.page_errors == []
    assert tab.errors() == []
    assert not [u for u in tab.requests if "tracker.example" in u]
    assert not [u for u in tab.requests if "evil.example" in u]
    _screenshots(page, request, viewer.db)

    # Only when the reader asks: then the image is requested (and fails to resolve here).
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("link", name="Afficher les images distantes").click()
    expect(page).to_have_url(re.compile(r"\?images=1#thread$"))
    page.wait_for_load_state("load")
    assert [u for u in tab.requests if u == "https://tracker.example/pixel.png"]
    # The broken <img src=x> now loads and fails too: its onerror must be gone.
    page.wait_for_timeout(300)
    thread = page.locator("#thread").inner_html().lower()
    for bad in FORBIDDEN:
        assert bad not in thread, f"{bad!r} left in the thread with images shown"
    assert tab.dialogs == [] and tab.page_errors == []
    # The only errors allowed now are the two images failing to load.
    for kind, text, _url in tab.errors():
        assert "Failed to load resource" in text, (kind, text)


# -- security ----------------------------------------------------------------------


def test_links_open_only_their_own_ticket_and_html_files_are_downloaded(
    viewer: Viewer, open_tab: Callable[..., Tab]
) -> None:
    html_file = "<html><body><script>alert(1)</script><p>rendered!</p></body></html>"
    first = _mail(
        "Imprimante en panne",
        "Voir la page jointe.",
        attachment=("page.html", "html", html_file),
    )
    _deliver(viewer.config, first)
    _deliver(viewer.config, make_mail(subject="Badge perdu", sender="bob@univ.example"))
    link1, link2 = _link(viewer, 1), _link(viewer, 2)
    tab = open_tab(locale="fr-FR")
    page = tab.page

    # One character changed: the same 404 as any unknown link, nothing of the ticket.
    token = link1.rsplit("/", 1)[1]
    changed = ("B" if token[0] == "A" else "A") + token[1:]
    response = page.goto(f"{viewer.url}/t/{changed}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Ce lien ne fonctionne pas")).to_be_visible()
    assert "Imprimante" not in page.content()
    unknown = page.locator("main").inner_text()
    # ...the very page a malformed token gets: nothing tells a near miss from garbage.
    response = page.goto(f"{viewer.url}/t/not-a-token")
    assert response is not None and response.status == 404
    assert page.locator("main").inner_text() == unknown

    # Another ticket's link shows that ticket, never this one.
    page.goto(link2)
    expect(page.locator("h1")).to_have_text("Badge perdu")
    for shown in ("Imprimante", "Voir la page jointe", "page.html"):
        assert shown not in page.content(), shown

    # The .html attachment is a download: the page stays, nothing runs.
    page.goto(link1)
    expect(page.locator("h1")).to_have_text("Imprimante en panne")
    with page.expect_download() as download:
        page.click("text=page.html")
    assert download.value.suggested_filename == "page.html"
    # The file itself, as sent (the mail's text part gained a final newline on the way).
    assert Path(download.value.path()).read_text().rstrip("\n") == html_file
    page.wait_for_timeout(300)
    assert page.url == link1 and tab.dialogs == [] and tab.page_errors == []

    href = page.get_by_role("link", name="page.html").get_attribute("href")
    assert href is not None
    served = tab.context.request.get(viewer.url + href)
    assert served.status == 200
    headers = served.headers
    assert headers["content-disposition"].startswith("attachment"), headers
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-content-type-options"] == "nosniff"
    # The attachment's id under the other ticket's token: not found.
    attachment_id = href.rsplit("/", 1)[1]
    other = tab.context.request.get(f"{link2}/a/{attachment_id}")
    assert other.status == 404 and b"<script>" not in other.body()


def test_a_post_without_the_csrf_token_is_refused_and_adds_nothing(
    viewer: Viewer, open_tab: Callable[..., Tab]
) -> None:
    _deliver(viewer.config, make_mail(subject="Imprimante en panne"))
    link = _link(viewer, 1)
    tab = open_tab(locale="fr-FR")
    tab.page.goto(link)  # the session cookie is set: only the token in the form is missing
    form = {"description": "Ce suivi n'entre qu'avec le jeton du formulaire."}
    refused = tab.context.request.post(link, form=form, max_redirects=0)
    assert refused.status == 400
    assert "Le formulaire a expiré" in refused.text() or "The form has expired" in refused.text()
    forged = tab.context.request.post(link, form={**form, "csrf_token": "forged"}, max_redirects=0)
    assert forged.status == 400
    assert len(_articles(viewer, 1)) == 1
    tab.page.reload()
    expect(tab.page.locator(".thread > li")).to_have_count(1)
    assert "jeton du formulaire" not in tab.page.content()

    # The same POST with the page's own token goes in: the refusal was the token's doing.
    token = tab.page.locator("input[name=csrf_token]").get_attribute("value")
    assert token
    accepted = tab.context.request.post(link, form={**form, "csrf_token": token}, max_redirects=0)
    assert accepted.status == 303
    assert len(_articles(viewer, 1)) == 2


# -- the solution approval (issue 5) -------------------------------------------------

JEAN = "jean.tech@univ.example"
PHONE = {"width": 390, "height": 844}


def _resolved(viewer: Viewer, subject: str = "Imprimante en panne") -> int:
    """A ticket opened by Alice, taken by Jean and resolved, through the workflow in-process
    (as the CLI drives it), its mail sent; the catcher is then emptied."""
    from helpdesk import workflow
    from helpdesk.config import load_settings
    from helpdesk.notify.outbox import flush
    from helpdesk.store import Store

    settings = load_settings(viewer.config)
    queue = settings.queues["dsi"]
    with Store(settings.database_url, settings.busy_timeout) as db:
        with db.transaction():
            alice = workflow.ensure_person(db, ALICE, "Alice Martin")
            jean = workflow.ensure_person(db, JEAN, "Jean Technicien")
            ticket_id, _article = workflow.open_ticket(
                db, settings, queue, alice, subject=subject, body_text="Le bac 2 bourre."
            )
            workflow.take(db, settings, queue, ticket_id, jean, workflow.Actor(jean, JEAN, "cli"))
            workflow.resolve(
                db, settings, queue, ticket_id, jean, body_text="Le rouleau du bac 2 a été changé."
            )
        flush(db, settings, due_only=False)
    # The acknowledgement, the two technicians' news, "taken", the take's news to Marie
    # and "resolved".
    viewer.catcher.wait_for(6)
    viewer.catcher.clear()
    return ticket_id


def _status(viewer: Viewer, ticket_id: int) -> str:
    return cli_json(viewer.config, "ticket", "show", str(ticket_id))["status"]


def test_the_requester_closes_a_resolved_request_from_a_phone(
    viewer: Viewer, open_tab: Callable[..., Tab], request: pytest.FixtureRequest
) -> None:
    ticket_id = _resolved(viewer)
    link = _link(viewer, ticket_id)
    tab = open_tab(locale="fr-FR", **PHONE)
    page = tab.page
    page.goto(link)
    expect(page.locator(".status")).to_have_text("Résolue")
    expect(page.get_by_role("heading", name="Votre problème est-il résolu ?")).to_be_visible()
    expect(page.locator("#answer")).to_contain_text("au bout de 15 jours")
    expect(page.get_by_role("heading", name="Ajouter un nouveau suivi")).to_have_count(0)
    close = page.get_by_role("button", name="Clore la demande")
    expect(close).to_be_visible()
    expect(page.get_by_role("button", name="Le problème persiste")).to_be_visible()
    # Big enough for a thumb, and the keyboard focus shows.
    box = close.bounding_box()
    assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= 390
    close.focus()
    assert close.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
    _screenshots(page, request, viewer.db, "resolved")
    page.set_viewport_size(PHONE)

    close.click()
    expect(page.get_by_role("heading", name="Cette demande est close")).to_be_visible()
    expect(page).to_have_url(link)
    expect(page.locator(".status")).to_have_text("Close")
    expect(page.locator("form")).to_have_count(0)
    expect(page.locator("textarea")).to_have_count(0)
    address = page.get_by_role("link", name="dsi.support@univ.example")
    expect(address).to_have_attribute("href", "mailto:dsi.support@univ.example")
    assert _status(viewer, ticket_id) == "closed"
    page.wait_for_timeout(300)
    assert viewer.catcher.messages == []  # they closed it themself: no mail about it
    assert tab.dialogs == [] and tab.page_errors == [] and tab.errors() == []
    _screenshots(page, request, viewer.db, "closed")


def test_not_solved_sends_the_request_back_to_its_technician(
    viewer: Viewer, open_tab: Callable[..., Tab], request: pytest.FixtureRequest
) -> None:
    ticket_id = _resolved(viewer)
    link = _link(viewer, ticket_id)
    tab = open_tab(locale="fr-FR", **PHONE)
    page = tab.page
    page.goto(link)
    expect(page.locator(".status")).to_have_text("Résolue")
    persists = page.get_by_role("button", name="Le problème persiste")
    # The comment is required: the browser keeps an empty one from leaving.
    persists.click()
    page.wait_for_timeout(300)
    assert page.url == link and _status(viewer, ticket_id) == "resolved"

    comment = "Le bac 2 bourre encore, dès la deuxième feuille."
    page.get_by_label("Sinon, qu'est-ce qui ne va toujours pas ?").fill(comment)
    persists.click()
    expect(page).to_have_url(re.compile(re.escape(link) + "#last$"))
    last = page.locator(".thread > li:last-child")
    expect(last).to_contain_text(comment)
    expect(last).to_have_attribute("id", "last")
    expect(last).to_have_class(re.compile(r"\bmine\b"))
    expect(page.locator(".thread > li")).to_have_count(3)
    expect(page.locator(".status")).to_have_text("En cours de traitement")
    expect(page.locator(".facts")).to_contain_text("Jean Technicien")
    expect(page.get_by_role("heading", name="Ajouter un nouveau suivi")).to_be_visible()
    expect(page.get_by_role("button", name="Clore la demande")).to_have_count(0)
    assert _status(viewer, ticket_id) == "assigned"

    # Jean, who had it, hears of it at once, with the comment.
    [caught] = viewer.catcher.wait_for(1)
    assert caught.recipients == [JEAN]
    message = caught.message()
    assert message["Subject"].startswith(f"[HD #{ticket_id}] Demande rouverte")
    assert comment in message.get_content()
    assert tab.dialogs == [] and tab.page_errors == [] and tab.errors() == []
    _screenshots(page, request, viewer.db)
