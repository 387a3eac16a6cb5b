"""The requester's web viewer: a private link to a ticket, its thread and a follow-up form.

Production: `gunicorn 'webview:create_app()'`; development: `helpdesk-pipe serve`.
"""

from webview.app import create_app

__all__ = ["create_app"]
