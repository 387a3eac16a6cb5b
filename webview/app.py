"""The Flask app factory: config, security headers, languages, the database per request."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from flask import Flask
from flask import g
from flask import render_template
from flask import request
from flask_wtf.csrf import CSRFError
from flask_wtf.csrf import CSRFProtect

from helpdesk.config import ConfigError
from helpdesk.config import Settings
from helpdesk.config import load_settings
from helpdesk.display import safe_filename
from helpdesk.store import Store
from helpdesk.store import StoreError
from webview import i18n
from webview.cache import PageCache
from webview.ratelimit import FailedLookups

__all__ = ["create_app", "redact"]

csrf = CSRFProtect()
_local = threading.local()
# A token is 43 characters of [A-Za-z0-9_-] (secrets.token_urlsafe(32)). A client
# may send it in any form the server still logs: percent-encoded once or twice,
# after "//", "\\", "/T/", "x/../", ";" or "?token=", in a Referer or a User-Agent.
# So whatever stands around it: any run of token characters and percent signs
# that holds 43 token characters in a row, as it is or percent-decoded (once, twice,
# until nothing changes). A long hex digest in a log line goes too.
_RUN = re.compile(r"[A-Za-z0-9_%-]{43,}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def _hide(match: re.Match[str]) -> str:
    run = text = match.group()
    # Every stage is looked at: "%" + a token decodes into something else.
    while not _TOKEN.search(text):
        decoded = unquote(text)
        if decoded == text:
            return run
        text = decoded  # shorter each round: it ends
    return "…"


def redact(text: str) -> str:
    """A log line without any ticket token, in whatever form: /t/<token> becomes /t/…"""
    return _RUN.sub(_hide, text)


class RedactTokens(logging.Filter):
    """Keeps tokens out of every log line that passes through (the server's access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # A traceback names what failed, a URL too: formatted here, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _csp(remote_images: bool) -> str:
    images = "'self' https: http:" if remote_images else "'self'"
    return (
        "default-src 'none'; style-src 'self'; img-src " + images + "; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def create_app(config: str | None = None, settings: Settings | None = None) -> Flask:
    """Build the viewer for a config file (default: $HELPDESK_CONFIG, /etc/helpdesk/...)."""
    settings = settings or load_settings(config)
    try:
        ZoneInfo(settings.timezone)
    except Exception as exc:  # noqa: BLE001 - zoneinfo raises several types
        raise ConfigError(f"{settings.path}: [web] timezone {settings.timezone!r}: {exc}") from None
    app = Flask(__name__)
    app.config.update(
        # Its own key, derived: the signing key of reply addresses never signs cookies.
        SECRET_KEY=hmac.new(
            settings.signing_key().encode(), b"webview-session", hashlib.sha256
        ).hexdigest(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        MAX_CONTENT_LENGTH=settings.max_size,
        WTF_CSRF_TIME_LIMIT=None,  # a form open all afternoon still posts
    )
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind a reverse proxy every request comes from it: the rate limit must
        # count the reader's address, from X-Forwarded-For.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies
        )
    app.extensions["helpdesk.settings"] = settings
    app.extensions["helpdesk.failed_lookups"] = FailedLookups(settings.failed_lookups_per_minute)
    app.extensions["helpdesk.page_cache"] = PageCache(128)
    catalogues = i18n.load_catalogues()
    # The access log and Flask's own error lines name the URL: tokens stay out.
    # A logger's filter sees only what is logged on it, not what its children pass up:
    # each logger that names URLs gets its own.
    names = ("werkzeug", "gunicorn.error", "gunicorn.access", "helpdesk.webview", app.logger.name)
    for logger in map(logging.getLogger, names):
        if not any(isinstance(f, RedactTokens) for f in logger.filters):  # once per logger
            logger.addFilter(RedactTokens())

    app.jinja_env.add_extension("jinja2.ext.i18n")
    # Jinja's new-style gettext formats the %(name)s placeholders itself.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda message: _catalogue(catalogues).gettext(message),
        ngettext=lambda one, many, n: _catalogue(catalogues).ngettext(one, many, n),
        newstyle=True,
    )

    @app.before_request
    def _language() -> None:
        g.language = i18n.pick_language(request.accept_languages, "en")

    # After _language: a refused token's page (400) speaks the reader's language too.
    csrf.init_app(app)

    @app.teardown_appcontext
    def _release(exc: BaseException | None) -> None:
        store = g.pop("store", None)
        if store is not None and not store.end_request(healthy=exc is None):
            _local.__dict__.pop("store", None)

    @app.after_request
    def _headers(response: Any) -> Any:
        response.headers.setdefault("Content-Security-Policy", _csp(bool(g.get("remote_images"))))
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if settings.base_url.startswith("https://"):
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.template_filter("when")
    def _when(value: Any) -> str:
        return i18n.format_time(value, g.language, settings.timezone)

    # An attachment's name as shown and downloaded: no bidi trick, no device name.
    app.add_template_filter(safe_filename, "shown_name")

    @app.template_filter("size")
    def _size(value: float) -> str:
        for unit in ("B", "KB", "MB"):
            if value < 1024 or unit == "MB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        return str(value)

    def _error(code: int) -> Any:
        return render_template("error.html", code=code), code

    app.register_error_handler(404, lambda _e: _error(404))
    app.register_error_handler(405, lambda _e: _error(404))
    app.register_error_handler(413, lambda _e: _error(413))
    app.register_error_handler(429, lambda _e: _error(429))
    app.register_error_handler(CSRFError, lambda _e: _error(400))
    app.register_error_handler(StoreError, lambda _e: _error(503))

    from webview.views import bp

    app.register_blueprint(bp)
    return app


def _catalogue(catalogues: dict) -> Any:
    return catalogues.get(g.get("language", "en"), catalogues["en"])


def store() -> Store:
    """The request's database connection, opened on first use."""
    if "store" not in g:
        settings = settings_of()
        cached = getattr(_local, "store", None)
        if cached is None or cached.url != settings.database_url:
            if cached is not None:
                cached.close()
            cached = Store(settings.database_url, settings.busy_timeout)
            cached.connect()
            # One connection per worker thread, kept between requests: opening one
            # costs more than the page (PostgreSQL's handshake, SQLite's pragmas).
            _local.store = cached
        g.store = cached
    return g.store


def settings_of() -> Settings:
    """The settings of the running app."""
    from flask import current_app

    return current_app.extensions["helpdesk.settings"]
