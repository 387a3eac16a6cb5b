"""Mail templates (Jinja2): one file per kind and language, overridable by the sysadmin.

A template sets its subject with `{% set subject %}...{% endset %}` and renders
the text body. The sysadmin's directory ([mail] templates) is searched first, as
`<lang>/<kind>.txt`, so copying one file from helpdesk/notify/templates and
editing it is enough.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["Rendered", "render", "BUILTIN_TEMPLATES"]

BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"


class Rendered:
    """A rendered template: its subject and its text body."""

    def __init__(self, subject: str, body: str) -> None:
        self.subject = subject
        self.body = body


@lru_cache(maxsize=4)
def _environment(override: str | None) -> Any:
    # Imported here: only mail that sends something pays for Jinja2.
    from jinja2 import ChoiceLoader
    from jinja2 import Environment
    from jinja2 import FileSystemLoader
    from jinja2 import StrictUndefined

    loaders = [FileSystemLoader(override)] if override else []
    loaders.append(FileSystemLoader(str(BUILTIN_TEMPLATES)))
    environment = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=False,  # text/plain mail: nothing to escape, and &amp; would show
        undefined=StrictUndefined,  # a typo in an overriding template fails loudly
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["quote"] = _quote
    return environment


def warm(override: str | None = None, compile_all: bool = False) -> None:
    """Load Jinja2 now; with compile_all, compile every template too (a long-lived
    process: Jinja2 caches them; a one-mail process compiles the one or two it uses)."""
    environment = _environment(override)
    if compile_all:
        for name in environment.list_templates(extensions=["txt"]):
            environment.get_template(name)


def _quote(text: str) -> str:
    """Quote a text mail-style, '> ' before every line."""
    return "\n".join("> " + line if line else ">" for line in str(text).splitlines())


def render(
    kind: str, language: str, context: dict[str, Any], override: str | None = None
) -> Rendered:
    """Render `<language>/<kind>.txt` with a context; return its subject and body."""
    template = _environment(override).get_template(f"{language}/{kind}.txt")
    module = template.make_module(context)
    subject = " ".join(str(getattr(module, "subject", "")).split())
    return Rendered(subject, str(module).strip("\n") + "\n")
