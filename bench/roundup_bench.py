"""Roundup, the nearest Python peer, set up as in shared/research/perf-baseline.md section 2.

`roundup>=2,<3` is installed with pip into its own virtualenv, bench/results/roundup-venv
(git-ignored; reused when it already holds a Roundup 2.x). A tracker is the classic
template on the sqlite backend, its outgoing mail written to a file (`mail_debug`, so no
SMTP), with the 20 senders of bench/mails.py registered as users (role User, which has
"Email Access" in the classic schema; Anonymous has not, so unknown senders would be
bounced). Each mail is one `roundup-mailgw TRACKER < mail` process, as an MTA alias runs it.

Not named roundup.py: a script run from this folder would import it instead of Roundup.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["RoundupUnavailable", "ensure_venv", "make_tracker", "issue_count", "lost_mails"]

REQUIREMENT = "roundup>=2,<3"
_VERSION = ("import importlib.metadata as m; v = m.version('roundup'); "
            "print(v if v.split('.')[0] == '2' else '')")
# Registers the senders in one process (roundup-admin would take one process each).
_USERS = """
import sys
from roundup import instance
tracker = instance.open(sys.argv[1])
db = tracker.open("admin")
for i, address in enumerate(sys.argv[2:]):
    db.user.create(username=f"user{i}", address=address, realname=f"User {i}", roles="User")
db.commit()
db.close()
"""


class RoundupUnavailable(Exception):
    """Roundup cannot be measured here; the message says why (shown in the README)."""


def _run(argv: list[str], env: dict[str, str], timeout: float = 600,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=cwd)


def ensure_venv(venv: Path, py: str, env: dict[str, str], log) -> dict:
    """The Roundup virtualenv, made and filled with pip when missing; raise
    RoundupUnavailable with the reason when pip cannot install it."""
    python, mailgw = venv / "bin" / "python", venv / "bin" / "roundup-mailgw"
    if python.exists() and mailgw.exists():
        res = _run([str(python), "-c", _VERSION], env)
        if res.returncode == 0 and res.stdout.strip():
            return {"venv": str(venv), "version": res.stdout.strip(), "installed_now": False}
    log(f"roundup: installing {REQUIREMENT} with pip into {venv}")
    if not python.exists():
        res = _run([py, "-m", "venv", "--clear", str(venv)], env)
        if res.returncode != 0:
            raise RoundupUnavailable(f"cannot make a virtualenv: {_last(res.stderr)}")
    # pip needs HOME-less-safe settings: no cache dir, no version check.
    pip_env = {**env, "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        res = _run([str(python), "-m", "pip", "install", "-q", REQUIREMENT], pip_env,
                   timeout=900)
    except subprocess.TimeoutExpired:
        raise RoundupUnavailable("pip install timed out (no network to PyPI?)") from None
    if res.returncode != 0:
        raise RoundupUnavailable(f"pip install {REQUIREMENT!r} failed: {_last(res.stderr)}")
    res = _run([str(python), "-c", _VERSION], env)
    if res.returncode != 0 or not res.stdout.strip() or not mailgw.exists():
        raise RoundupUnavailable(f"Roundup 2.x not importable after pip: {_last(res.stderr)}")
    return {"venv": str(venv), "version": res.stdout.strip(), "installed_now": True}


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no message)"


def make_tracker(venv: Path, home: Path, senders: list[str], env: dict[str, str]) -> Path:
    """A fresh classic tracker (sqlite) at `home` with `senders` registered as users."""
    admin = str(venv / "bin" / "roundup-admin")
    settings = ",".join([
        "mail_domain=tracker.example.org",
        "mail_host=localhost",
        "tracker_web=http://localhost:8917/tracker/",
        f"mail_debug={home.parent / (home.name + '-outgoing-mail.txt')}",
        "tracker_email=support",
    ])
    for argv in ([admin, "-i", str(home), "install", "classic", "sqlite", settings],
                 [admin, "-i", str(home), "initialise", "adminpw"],
                 [str(venv / "bin" / "python"), "-c", _USERS, str(home), *senders]):
        res = _run(argv, env, timeout=120, cwd=home.parent)
        if res.returncode != 0:
            raise SystemExit(f"roundup: {' '.join(argv[:4])} failed:\n{res.stderr[-2000:]}")
    return home


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'db' / 'db'}?mode=ro", uri=True)


def issue_count(home: Path) -> int:
    con = _db(home)
    try:
        return int(con.execute("SELECT count(*) FROM _issue").fetchone()[0])
    finally:
        con.close()


def lost_mails(home: Path, message_ids: list[str]) -> dict:
    """Mails not ending as exactly one issue: each Message-ID must be the message of
    exactly one issue, and there must be as many issues as mails."""
    con = _db(home)
    try:
        rows = con.execute(
            "SELECT m._messageid, count(DISTINCT im.nodeid) FROM _msg m"
            " JOIN issue_messages im ON im.linkid = m.id GROUP BY m._messageid").fetchall()
        issues = int(con.execute("SELECT count(*) FROM _issue").fetchone()[0])
    finally:
        con.close()
    per_mail = Counter({mid: n for mid, n in rows})
    missing = sum(1 for mid in message_ids if per_mail.get(mid, 0) == 0)
    doubled = sum(1 for mid in message_ids if per_mail.get(mid, 0) > 1)
    return {"tickets": issues, "missing": missing, "duplicated": doubled,
            "lost": missing + doubled + max(0, issues - len(message_ids))}

