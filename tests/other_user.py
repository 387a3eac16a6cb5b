"""An installation of this checkout that another user (nobody, helpdesk) can run.

A clone may sit under a 0700 directory (/root, `mktemp -d`) and its .venv's interpreter
under /root (pyenv): another user can enter neither. Rather than opening the user's
directories, the tests that run the pipe as someone else stage what it needs in a
world-readable directory of their own: a copy of the package, the files of its runtime
distributions (hard links when the file system allows, copies otherwise) and a venv of
an interpreter that user can run. About 85 MB of hard links: a fraction of a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# The checkout's packages, as setup.cfg installs them (migrations become helpdesk.migrations).
PACKAGES = {"helpdesk": "helpdesk", "webview": "webview", "migrations": "helpdesk/migrations"}
OWN_DISTRIBUTION = "helpdesk-pipe"


def reachable_by_all(path: Path) -> bool:
    """Whether any user may reach and run `path`: o+x on it and every directory above."""
    path = path.resolve()
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents))


def interpreter() -> Path:
    """A Python of this version that any user can run: this one, else Debian's."""
    mine = Path(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable)
    if reachable_by_all(mine):
        return mine
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(f"/usr/bin/python{version}"), Path("/usr/bin/python3")):
        if candidate.exists() and reachable_by_all(candidate):
            found = subprocess.run(
                [candidate, "-c", "import sys; print(*sys.version_info[:2], sep='.')"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if found == version:
                return candidate
    raise RuntimeError(
        f"no Python {version} that other users can run: {mine} is under a private "
        f"directory and /usr/bin/python{version} is missing (apt-get install python3)"
    )


def runtime_distributions() -> list[importlib.metadata.Distribution]:
    """The distributions helpdesk-pipe needs at run time (no test extras), with their extras."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(OWN_DISTRIBUTION)]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        key = (re.sub(r"[-_.]+", "-", requirement.name).lower(), frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        dist = importlib.metadata.distribution(requirement.name)
        found[key[0]] = dist
        for text in dist.requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    found.pop(OWN_DISTRIBUTION, None)
    return list(found.values())


def _place(source: Path, target: Path) -> None:
    """A hard link when the source is world-readable and on this file system, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.stat().st_mode & stat.S_IROTH:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)
    target.chmod(0o755 if source.stat().st_mode & stat.S_IXUSR else 0o644)


def stage(base: Path) -> Path:
    """Fill `base` (made world-readable) with a venv that runs this checkout; return its bin/.

    `base` must be reachable by the other user (under /tmp or /var/tmp, say); its site/
    and venv/ are replaced.
    """
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    base.chmod(0o755)
    site, venv = base / "site", base / "venv"
    for previous in (site, venv):  # a run that was killed left them behind
        shutil.rmtree(previous, ignore_errors=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for dist in runtime_distributions():
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            relative = Path(str(file))
            # Scripts (../../bin) are not needed: the venv below has its own launcher.
            if relative.parts[0] == ".." or not source.is_file():
                continue
            if source.resolve().is_relative_to(purelib.resolve()):
                _place(source, site / relative)
    for package, where in PACKAGES.items():
        for source in (ROOT / package).rglob("*"):
            if source.is_file() and "__pycache__" not in source.parts:
                _place(source, site / where / source.relative_to(ROOT / package))
    for directory in (site, *(p for p in site.rglob("*") if p.is_dir())):
        directory.chmod(0o755)
    subprocess.run(
        [interpreter(), "-m", "venv", "--without-pip", venv], check=True, capture_output=True
    )
    [site_packages] = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "helpdesk-staged.pth").write_text(f"{site}\n")
    script = venv / "bin" / "helpdesk-pipe"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\n"
        "import sys\nfrom helpdesk.entry import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    # The tests' umask (the helpdesk's 0007, set by init in process) closed what venv made.
    for path in (venv, *venv.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o644)
    return venv / "bin"
