"""The pipe is a fresh process per mail: its import path stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import make_mail
from conftest import write_config

FORBIDDEN = ("flask", "apscheduler", "alembic", "sqlalchemy", "click", "werkzeug", "ldap3")
# Jinja2 renders the acknowledgement, so a new ticket loads it; a mail that sends
# nothing (a duplicate, machine mail) must not pay for it.
RENDERING = ("jinja2", "markupsafe")

PROBE = """
import sys
from helpdesk.entry import main
code = main(["--config", sys.argv[1], "deliver", "--queue", "dsi"])
loaded = sorted(sys.modules)
print(code, " ".join(loaded))
"""


def test_deliver_never_loads_web_scheduler_or_migrations(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'h.db'}")
    init = subprocess.run(
        [sys.executable, "-m", "helpdesk.entry", "--config", str(config), "init"],
        capture_output=True,
    )
    assert init.returncode == 0, init.stderr
    mail = make_mail()
    for forbidden in (FORBIDDEN, FORBIDDEN + RENDERING):  # a new ticket, then its duplicate
        result = subprocess.run(
            [sys.executable, "-c", PROBE, str(config)],
            input=mail,
            capture_output=True,
            text=False,
        )
        assert result.returncode == 0, result.stderr
        code, modules = result.stdout.decode().split(" ", 1)
        assert code == "0"
        loaded = set(modules.split())
        assert {"helpdesk.ingest.parse", "helpdesk.store"} <= loaded  # it did parse and store
        roots = {name.split(".")[0] for name in loaded}
        assert not roots & set(forbidden), roots & set(forbidden)
