"""The staged installation other users run (tests/other_user.py), wherever the clone sits."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT
from conftest import make_mail
from conftest import write_config
from other_user import stage

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the pipe as nobody")
def test_nobody_runs_the_staged_pipe_and_no_directory_of_ours_changes_mode() -> None:
    ours = [ROOT, *ROOT.parents]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in ours}
    base = Path(tempfile.mkdtemp(prefix="helpdesk-staged-", dir="/var/tmp"))
    try:
        started = time.monotonic()
        pipe = stage(base) / "helpdesk-pipe"
        took = time.monotonic() - started
        assert took < 30, f"staging took {took:.1f} s"
        home = base / "home"  # the database where nobody may write
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        config = write_config(home, f"sqlite:///{home / 'helpdesk.db'}")
        config.chmod(0o644)
        init = subprocess.run(
            [*AS_NOBODY, pipe, "--config", config, "init"], capture_output=True, cwd="/"
        )
        assert init.returncode == 0, init.stderr
        delivered = subprocess.run(
            [*AS_NOBODY, pipe, "--config", config, "deliver", "--queue", "dsi"],
            input=make_mail(),
            capture_output=True,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        assert delivered.returncode == 0, delivered.stderr
        assert (home / "helpdesk.db").stat().st_uid == 65534
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in ours} == modes
