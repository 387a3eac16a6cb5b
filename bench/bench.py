"""The helpdesk-pipe benchmark: latency, peak memory and import cost of `deliver`, and the
throughput of the viewer's ticket page under gunicorn (bench/web.py).

Run it through bench/run.sh. It must run under the interpreter being measured (the
project's venv): every child process is started with sys.executable, and psycopg is
imported from it to make the PostgreSQL schema.

Environment (all optional):
  QUICK=1          a smoke test: few runs, README left alone unless UPDATE_README=1
  RUNS, WARMUP     measured and warm-up rounds of the latency benchmark (default 100 and 5)
  MEM_REPS         processes per variant in the memory benchmark (default 3)
  IMPORT_REPS      `-X importtime` processes (default 7)
  BENCH_PG_URL     admin URL of PostgreSQL (default postgresql://postgres@127.0.0.1:5432/test)
  BENCH_PG=0       skip PostgreSQL
  UPDATE_README=0  do not rewrite the results block of bench/README.md
  CHECK=1          exit 1 when a target is missed or a forbidden module is imported
  KEEP=1           keep the scratch directory bench/results/work (databases, mails)
  BENCH_WEB=0      skip the viewer benchmark (section 4)
  WEB_ROUNDS, WEB_THREADS, WEB_WARMUP, WEB_SECONDS   see bench/web.py
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from importlib import metadata
from pathlib import Path

import mails
import web

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"

PY = os.path.abspath(sys.executable)  # not resolve(): a venv's python is a symlink
QUICK = os.environ.get("QUICK") == "1"
RUNS = int(os.environ.get("RUNS", 8 if QUICK else 100))
WARMUP = int(os.environ.get("WARMUP", 2 if QUICK else 5))
MEM_REPS = int(os.environ.get("MEM_REPS", 1 if QUICK else 3))
IMPORT_REPS = int(os.environ.get("IMPORT_REPS", 2 if QUICK else 7))
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEED = 20261128
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)

RATIO_TARGET = 8.0  # median(deliver, SQLite) / median(stdlib baseline)
RSS_TARGET_MB = 250.0  # peak RSS of deliver on the 25 MB mail, MB = 10**6 bytes
FORBIDDEN = ("flask", "apscheduler", "alembic")
WATCHED = ("sqlalchemy", "click", "werkzeug", "jinja2", "mako", "psycopg", "mailparser")
# The deliver path as the MTA runs it (helpdesk.entry dispatches `deliver` to it).
IMPORT_ROOTS = ("helpdesk.entry", "helpdesk.ingest.deliver", "helpdesk.ingest.parse")

# The MTA's environment: a bare PATH, no HOME (as tests/conftest.py run_pipe does).
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}

QUEUE_TOML = """
[queues.dsi]
addresses = ["dsi.support@univ.example"]
group = "dsi"
language = "fr"
"""


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def pipe_command() -> list[str]:
    """The console script next to the interpreter (what the MTA alias runs), else -m."""
    script = Path(PY).parent / "helpdesk-pipe"
    if script.exists():
        return [str(script)]
    return [PY, "-m", "helpdesk.entry"]


# -- processes ---------------------------------------------------------------------------


@dataclass
class Sample:
    ms: float
    maxrss_kib: int
    code: int


def spawn(argv: list[str], stdin: str | None, stderr_path: Path) -> Sample:
    """fork/exec one process with stdin from a file, wait4 it; wall time from spawn to reap."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin or os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, str(stderr_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, CHILD_ENV, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    return Sample(elapsed * 1000.0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))


def measure_rss(argv: list[str], stdin: str | None, stderr_path: Path) -> Sample:
    """Peak RSS through GNU time, which forks a fresh child for the command.

    ru_maxrss of a process that the harness spawns itself would start at the harness's own
    peak: Linux carries the exec-ing address space's high-water mark over exec (and
    posix_spawn shares the harness's). GNU time's own footprint is ~2 MB.
    """
    rss_path = stderr_path.with_suffix(".rss")
    sample = spawn([TIME, "-f", "%M", "-o", str(rss_path), *argv], stdin, stderr_path)
    return Sample(sample.ms, int(rss_path.read_text().split()[-1]), sample.code)


def run_checked(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, env=CHILD_ENV, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}): {argv}\n{result.stderr}")
    return result


# -- statistics --------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    """median, p90 (linear interpolation), min, max, mean, sd."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        p90 = statistics.quantiles(ordered, n=10, method="inclusive")[8]
        sd = statistics.stdev(ordered)
    else:
        p90, sd = ordered[0], 0.0
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p90": p90,
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "sd": sd,
    }


# -- set-up ------------------------------------------------------------------------------


def write_config(directory: Path, url: str, name: str = "helpdesk.toml", extra: str = "") -> Path:
    path = directory / name
    path.write_text(
        f'[database]\nurl = "{url}"\nbusy_timeout = 20\n\n'
        f'[log]\nfile = "{directory / (path.stem + ".log")}"\n\n'
        '[security]\nsecret_key = "bench-secret-key-0123456789"\n\n'
        # Every new ticket renders and writes its acknowledgement, as in production;
        # a directory keeps the network out of the figures.
        f'[outgoing]\ntransport = "directory"\n'
        f'directory = "{directory / (path.stem + "-sent")}"\n\n'
        f"{extra}{QUEUE_TOML}",
        encoding="utf-8",
    )
    return path


def init_db(config: Path) -> None:
    run_checked([*pipe_command(), "--config", str(config), "init"], timeout=300)


def make_baseline_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(
        "CREATE TABLE tickets(id INTEGER PRIMARY KEY, msgid, sender, subject, date, body TEXT,"
        " created REAL)"
    )
    con.commit()
    con.close()


class Postgres:
    """A schema of its own in the test database, dropped at the end."""

    def __init__(self) -> None:
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"
        self.url: str | None = None
        self.skipped: str | None = None
        self.server_version: str | None = None

    def __enter__(self) -> Postgres:
        if os.environ.get("BENCH_PG") == "0":
            self.skipped = "BENCH_PG=0"
            return self
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f"CREATE SCHEMA {self.schema}")
                self.server_version = admin.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - reported in the README instead
            self.skipped = f"PostgreSQL unavailable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"
            log(self.skipped)
            return self
        sep = "&" if "?" in PG_ADMIN_URL else "?"
        self.url = f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{self.schema}"
        return self

    def count(self, sql: str) -> int:
        import psycopg

        with psycopg.connect(self.url) as con:
            return int(con.execute(sql).fetchone()[0])

    def __exit__(self, *exc: object) -> None:
        if self.url is None:
            return
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {self.schema} CASCADE")
        log(f"dropped schema {self.schema}")


def sqlite_count(path: Path, sql: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


# -- 1. latency --------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    label: str
    argv: list[str]
    takes_mail: bool = True
    samples: list[Sample] = field(default_factory=list)


def bench_latency(work: Path, pg: Postgres) -> dict:
    rounds = WARMUP + RUNS
    mail_dir = work / "mails"
    mail_dir.mkdir()
    # Fresh mails for the deliveries run under -X importtime and GNU time.
    extra = min(3, IMPORT_REPS) + 1 + 2 * MEM_REPS + 2
    paths = mails.write_small_mails(mail_dir, rounds + extra, SEED)
    sizes = [os.path.getsize(p) for p in paths]

    base_normal, base_full = work / "baseline-normal.db", work / "baseline-full.db"
    make_baseline_db(base_normal)
    make_baseline_db(base_full)
    sqlite_db = work / "helpdesk.db"
    sqlite_cfg = write_config(work, f"sqlite:///{sqlite_db}")
    init_db(sqlite_cfg)
    pg_cfg = None
    if pg.url:
        pg_cfg = write_config(work, pg.url, name="helpdesk-pg.toml")
        init_db(pg_cfg)

    script = str(HERE / "baseline_pipe.py")
    deliver = [*pipe_command(), "--config"]
    variants = [
        Variant("startup", "`python -c pass` (interpreter start-up only)", [PY, "-c", "pass"],
                takes_mail=False),
        Variant("imports", "`python -c 'import helpdesk.entry, …deliver, …parse'`",
                [PY, "-c", "import " + ", ".join(IMPORT_ROOTS)], takes_mail=False),
        Variant("baseline", "**stdlib baseline** `baseline_pipe.py` (WAL, synchronous=NORMAL)",
                [PY, script, str(base_normal), "NORMAL"]),
        Variant("baseline_full", "stdlib baseline, synchronous=FULL",
                [PY, script, str(base_full), "FULL"]),
        Variant("deliver_sqlite", "**`helpdesk-pipe deliver --queue dsi`, SQLite**",
                [*deliver, str(sqlite_cfg), "deliver", "--queue", "dsi"]),
    ]
    if pg_cfg:
        variants.append(Variant("deliver_pg", "`helpdesk-pipe deliver --queue dsi`, PostgreSQL",
                                [*deliver, str(pg_cfg), "deliver", "--queue", "dsi"]))

    rng = random.Random(SEED)
    errs = work / "stderr"
    errs.mkdir()
    log(f"latency: {len(variants)} variants x ({WARMUP} warm-up + {RUNS} measured rounds)")
    started = time.perf_counter()
    for r in range(rounds):
        order = variants[:]
        rng.shuffle(order)
        for v in order:
            err = errs / f"{v.key}.txt"
            s = spawn(v.argv, paths[r] if v.takes_mail else None, err)
            if s.code != 0:
                raise SystemExit(f"{v.key} exited {s.code} on {paths[r]}:\n{err.read_text()}")
            if r >= WARMUP:
                v.samples.append(s)
        if (r + 1) % 20 == 0:
            log(f"  round {r + 1}/{rounds}")
    wall = time.perf_counter() - started

    # Every delivery must have opened a ticket of its own (no duplicate, no failure).
    checks = {
        "sqlite_tickets": sqlite_count(sqlite_db, "SELECT count(*) FROM ticket"),
        "sqlite_not_ticket": sqlite_count(
            sqlite_db, "SELECT count(*) FROM mail_record WHERE verdict <> 'ticket'"),
        "baseline_rows": sqlite_count(base_normal, "SELECT count(*) FROM tickets"),
    }
    if pg_cfg:
        checks["pg_tickets"] = pg.count("SELECT count(*) FROM ticket")
        checks["pg_not_ticket"] = pg.count(
            "SELECT count(*) FROM mail_record WHERE verdict <> 'ticket'")
    expected = {"sqlite_tickets": rounds, "sqlite_not_ticket": 0, "baseline_rows": rounds,
                "pg_tickets": rounds, "pg_not_ticket": 0}
    for key, value in checks.items():
        if value != expected[key]:
            raise SystemExit(f"check failed: {key} = {value}, expected {expected[key]}")

    out = {
        "rounds": rounds, "warmup": WARMUP, "runs": RUNS, "wall_s": wall,
        "mail_bytes": {"min": min(sizes), "max": max(sizes),
                       "median": statistics.median(sizes[:rounds])},
        "checks": checks,
        "variants": {},
        "extra_mails": paths[rounds:],
        "configs": {"sqlite": str(sqlite_cfg), "pg": str(pg_cfg) if pg_cfg else None},
        "baseline_db": str(base_normal),
    }
    base = {v.key: v for v in variants}["baseline"]
    for v in variants:
        ms = [s.ms for s in v.samples]
        entry = {
            "label": v.label,
            "argv": v.argv,
            "ms": summary(ms),
            "samples_ms": [round(x, 3) for x in ms],
        }
        if v.takes_mail:
            # Pairs from the same round share the same noise; their ratio is a robustness check.
            pairs = [a.ms / b.ms for a, b in zip(v.samples, base.samples, strict=True)]
            entry["paired_ratio_median"] = statistics.median(pairs)
        out["variants"][v.key] = entry
    bmed = out["variants"]["baseline"]["ms"]["median"]
    for entry in out["variants"].values():
        entry["ratio"] = entry["ms"]["median"] / bmed
    return out


# -- 2. memory ---------------------------------------------------------------------------


def rss_entry(samples: list[Sample], mail_bytes: int) -> dict:
    rss = [x.maxrss_kib for x in samples]
    return {
        "maxrss_kib": rss,
        "maxrss_mib_median": statistics.median(rss) / 1024,
        "maxrss_mb_median": statistics.median(rss) * 1024 / 1e6,
        "maxrss_mb_max": max(rss) * 1024 / 1e6,
        "ms": [round(x.ms, 1) for x in samples],
        "ms_median": statistics.median(x.ms for x in samples),
        "mail_bytes": mail_bytes,
    }


def bench_memory(work: Path, latency: dict) -> dict:
    errs = work / "stderr"
    script = str(HERE / "baseline_pipe.py")
    deliver = [*pipe_command(), "--config"]

    def run(key: str, argv: list[str], mail: str | None) -> Sample:
        err = errs / f"mem-{key}.txt"
        sample = measure_rss(argv, mail, err)
        if sample.code != 0:
            raise SystemExit(f"memory {key} exited {sample.code}:\n{err.read_text()}")
        return sample

    # The 5 KB mail, for scale: what one process weighs at all.
    log(f"memory: 5 KB mail, {MEM_REPS} x each")
    pool = latency["extra_mails"]
    cfgs = latency["configs"]
    small: dict[str, list[Sample]] = {"startup": [], "baseline": [], "deliver_sqlite": []}
    if cfgs["pg"]:
        small["deliver_pg"] = []
    for _ in range(MEM_REPS):
        small["startup"].append(run("startup", [PY, "-c", "pass"], None))
        small["baseline"].append(
            run("baseline", [PY, script, latency["baseline_db"], "NORMAL"], pool[0]))
        small["deliver_sqlite"].append(
            run("deliver_sqlite", [*deliver, cfgs["sqlite"], "deliver", "--queue", "dsi"],
                pool.pop(0)))
        if cfgs["pg"]:
            small["deliver_pg"].append(
                run("deliver_pg", [*deliver, cfgs["pg"], "deliver", "--queue", "dsi"],
                    pool.pop(0)))
    small_bytes = latency["mail_bytes"]["median"]

    big_dir = work / "big"
    big_dir.mkdir()
    log("memory: generating the big mail")
    raw, attachment = mails.big_mail(0, SEED)
    mail_path = big_dir / "big.eml"
    mail_path.write_bytes(raw)
    del raw
    big_bytes = os.path.getsize(mail_path)
    runs: dict[str, list[Sample]] = {"deliver": [], "baseline": []}
    checks = []
    for rep in range(MEM_REPS):
        # A fresh database each time: the same mail is new to it (no duplicate, no shared blob).
        db = big_dir / f"helpdesk-{rep}.db"
        cfg = write_config(big_dir, f"sqlite:///{db}", name=f"helpdesk-{rep}.toml")
        init_db(cfg)
        base_db = big_dir / f"baseline-{rep}.db"
        make_baseline_db(base_db)
        order = ["deliver", "baseline"] if rep % 2 == 0 else ["baseline", "deliver"]
        for which in order:
            if which == "deliver":
                argv = [*deliver, str(cfg), "deliver", "--queue", "dsi"]
            else:
                argv = [PY, script, str(base_db), "NORMAL"]
            sample = run(f"big-{which}", argv, str(mail_path))
            runs[which].append(sample)
            log(f"  rep {rep + 1}/{MEM_REPS} {which}: {sample.ms:.0f} ms, "
                f"maxrss {sample.maxrss_kib / 1024:.1f} MiB")
        stored = sqlite_count(db, "SELECT max(size) FROM attachment")
        if stored != attachment:
            raise SystemExit(f"memory: stored attachment is {stored} bytes, expected {attachment}")
        checks.append({"attachment_stored_bytes": stored,
                       "tickets": sqlite_count(db, "SELECT count(*) FROM ticket")})
        for path in big_dir.glob(f"*-{rep}.db*"):
            path.unlink()
    mail_path.unlink()
    return {
        "mail_bytes": big_bytes,
        "attachment_bytes": attachment,
        "max_size_setting": "default (25 MiB = 26,214,400 bytes)",
        "checks": checks,
        "deliver": rss_entry(runs["deliver"], big_bytes),
        "baseline": rss_entry(runs["baseline"], big_bytes),
        "small": {k: rss_entry(v, small_bytes) for k, v in small.items()},
    }


# -- 3. imports --------------------------------------------------------------------------

_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( +)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) in the order -X importtime prints them."""
    rows = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            rows.append((m.group(4), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return rows


def parents_of(rows: list[tuple[str, int, int, int]]) -> dict[str, str]:
    """Each module's direct importer: -X importtime prints children just before their parent."""
    parent: dict[str, str] = {}
    pending: dict[int, list[str]] = {}
    for name, _own, _cum, depth in rows:
        for kid in pending.pop(depth + 1, []):
            parent[kid] = name
        pending.setdefault(depth, []).append(name)
    return parent


def added_rows(rows: list, startup: set[str]) -> list:
    """Drop what interpreter start-up imported (site, encodings…): it is printed first."""
    start = next((i for i, r in enumerate(rows) if r[0] not in startup), len(rows))
    return rows[start:]


def importtime_deliver(cfg: str, mail: str, work: Path) -> list:
    """One real delivery under -X importtime (the console script run by the interpreter)."""
    cmd = pipe_command()
    target = ["-m", "helpdesk.entry"] if cmd[0] == PY else cmd
    argv = [PY, "-X", "importtime", *target, "--config", cfg, "deliver", "--queue", "dsi"]
    with open(mail, "rb") as fh:
        res = subprocess.run(argv, stdin=fh, capture_output=True, text=True, env=CHILD_ENV,
                             cwd=work)
    leftover = [ln for ln in res.stderr.splitlines() if not ln.startswith("import time:")]
    if res.returncode != 0 or leftover:
        raise SystemExit(f"deliver under -X importtime failed: {res.stderr[-2000:]}")
    return parse_importtime(res.stderr)


def bench_imports(work: Path, latency: dict) -> dict:
    log(f"imports: {IMPORT_REPS} x -X importtime")
    listing = "import sys; print(chr(10).join(sorted(sys.modules)))"
    # Start-up alone: what every process in this venv pays before its first line (site, .pth).
    boot: dict[str, list[int]] = {}
    for _ in range(IMPORT_REPS):
        bare = run_checked([PY, "-X", "importtime", "-c", listing], cwd=work)
        for name, _own, cum, depth in parse_importtime(bare.stderr):
            if depth == 0 or name.startswith("__editable__"):
                boot.setdefault(name, []).append(cum)
    startup = {r[0] for r in parse_importtime(bare.stderr)}
    bare_modules = bare.stdout.split()
    boot_ms = {n: statistics.median(v) / 1000 for n, v in boot.items()}
    code = "import " + ", ".join(IMPORT_ROOTS) + "; " + listing
    per_module: dict[str, dict[str, list[int]]] = {}
    totals = []
    first: list = []
    modules: list[str] = []
    for rep in range(IMPORT_REPS):
        res = run_checked([PY, "-X", "importtime", "-c", code], cwd=work)
        added = added_rows(parse_importtime(res.stderr), startup)
        if rep == 0:
            first, modules = added, res.stdout.split()
        totals.append(sum(r[2] for r in added if r[3] == 0))
        for name, own, cum, _depth in added:
            d = per_module.setdefault(name, {"self": [], "cum": []})
            d["self"].append(own)
            d["cum"].append(cum)
    depth = {r[0]: r[3] for r in first}
    parent = parents_of(first)
    med = {name: {"self_ms": statistics.median(v["self"]) / 1000,
                  "cum_ms": statistics.median(v["cum"]) / 1000}
           for name, v in per_module.items()}
    own_roots = set(IMPORT_ROOTS) | {"helpdesk", "helpdesk.ingest"}
    by_cum = sorted((n for n in med if n not in own_roots), key=lambda n: -med[n]["cum_ms"])[:10]
    by_self = sorted(med, key=lambda n: -med[n]["self_ms"])[:10]

    def row(name: str) -> dict:
        return {"module": name, **med[name], "depth": depth.get(name),
                "imported_by": parent.get(name)}

    out = {
        "reps": IMPORT_REPS,
        "total_ms_median": statistics.median(totals) / 1000,
        "total_ms_all": [t / 1000 for t in totals],
        "top_level": {r[0]: med[r[0]] for r in first if r[3] == 0},
        "top_cumulative": [row(n) for n in by_cum],
        "top_self": [row(n) for n in by_self],
        "modules_after_import": len(modules),
        "modules_bare_interpreter": len(bare_modules),
        "startup_ms": boot_ms,
        "forbidden_loaded": sorted(m for m in modules if m.split(".")[0] in FORBIDDEN),
        "watched_loaded": sorted({m.split(".")[0] for m in modules} & set(WATCHED)),
    }

    # The same check on real deliveries (lazy imports included: workflow, psycopg).
    real = {}
    pool = latency["extra_mails"]
    for key, cfg in latency["configs"].items():
        if not cfg:
            continue
        reps = [added_rows(importtime_deliver(cfg, pool.pop(0), work), startup)
                for _ in range(1 if key == "pg" else min(3, IMPORT_REPS))]
        names = {r[0] for r in reps[0]}
        real[key] = {
            "modules_imported": len(names),
            "import_ms_median": statistics.median(
                sum(r[2] for r in rows if r[3] == 0) for rows in reps) / 1000,
            "forbidden_loaded": sorted(n for n in names if n.split(".")[0] in FORBIDDEN),
            "watched_loaded": sorted({n.split(".")[0] for n in names} & set(WATCHED)),
        }
    out["real_deliver"] = real
    return out


# -- report ------------------------------------------------------------------------------


def environment(pg: Postgres) -> dict:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or None
    except OSError:
        rev = None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": PY,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg.server_version,
        "pg_skipped": pg.skipped,
        "psycopg": version("psycopg"),
        "git": rev,
        "pipe_command": " ".join(pipe_command()),
        "quick": QUICK,
    }


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def render(res: dict) -> str:
    env, lat, mem, imp = res["env"], res["latency"], res["memory"], res["imports"]
    v = lat["variants"]
    ratio = v["deliver_sqlite"]["ratio"]
    out: list[str] = []
    a = out.append
    a(f"Last run: {env['date']}, {env['platform']}, {env['cpus']} CPUs, Python "
      f"{env['python_version']} (`{env['python']}`), SQLite {env['sqlite']}, PostgreSQL "
      f"{env['postgresql'] or 'skipped'}; load average at "
      f"start {env['loadavg_start'][0]:.2f}; whole run {res['wall_s']:.0f} s."
      + (" **QUICK mode: smoke test, not representative.**" if env["quick"] else ""))
    a("")
    a("### Targets")
    a("")
    a("| target | result | status |")
    a("| --- | ---: | --- |")
    a(f"| median(deliver, SQLite) / median(stdlib baseline) ≤ {RATIO_TARGET:g}× | "
      f"{ratio:.2f}× | {verdict(res['targets']['ratio_ok'])} |")
    d = mem["deliver"]
    a(f"| peak RSS of deliver, {mem['mail_bytes'] / 1e6:.1f} MB mail into SQLite < "
      f"{RSS_TARGET_MB:g} MB | {d['maxrss_mb_max']:.1f} MB = {max(d['maxrss_kib']) / 1024:.1f} "
      f"MiB (worst of {len(d['maxrss_kib'])}) | {verdict(res['targets']['rss_ok'])} |")
    forb = imp["forbidden_loaded"] + [m for r in imp["real_deliver"].values()
                                      for m in r["forbidden_loaded"]]
    a(f"| deliver path imports none of {', '.join(FORBIDDEN)} | "
      f"{', '.join(sorted(set(forb))) or 'none loaded'} | {verdict(not forb)} |")
    if res["web"]:
        out.extend(web.target_rows(res["web"]))
    a("")
    a(f"### 1. Latency of one delivery, whole process (ms; {lat['runs']} measured rounds after "
      f"{lat['warmup']} warm-up, variants shuffled in each round)")
    a("")
    a(f"Mails: {lat['rounds']} distinct text/plain mails of {lat['mail_bytes']['min']:,}–"
      f"{lat['mail_bytes']['max']:,} bytes, one per round (the same mail goes to every variant "
      f"of a round). Checks after the run: {lat['checks']['sqlite_tickets']} tickets in SQLite"
      + (f", {lat['checks']['pg_tickets']} in PostgreSQL" if "pg_tickets" in lat["checks"] else "")
      + ", no duplicate, no failure.")
    a("")
    a("| command | median | p90 | min | max | mean ± sd | × baseline (ratio of medians) | "
      "× baseline (median of per-round ratios) |")
    a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for entry in v.values():
        st = entry["ms"]
        paired = f"{entry['paired_ratio_median']:.2f}" if "paired_ratio_median" in entry else "–"
        a(f"| {entry['label']} | {st['median']:.1f} | {st['p90']:.1f} | {st['min']:.1f} | "
          f"{st['max']:.1f} | {st['mean']:.1f} ± {st['sd']:.1f} | {entry['ratio']:.2f} | "
          f"{paired} |")
    if "deliver_pg" not in v:
        a("")
        a(f"PostgreSQL: skipped ({env['pg_skipped']}).")
    a("")
    a("### 2. Peak memory (RSS)")
    a("")
    a(f"Large mail: {mem['mail_bytes']:,} bytes, a short text part plus one attachment of "
      f"{mem['attachment_bytes']:,} random bytes in base64; `[mail] max_size` left at its "
      f"default of 25 MiB. Each large-mail run uses a fresh SQLite database. "
      f"{len(d['maxrss_kib'])} process(es) per row; peak RSS is `ru_maxrss` as reported by "
      "GNU time (MB = 10⁶ bytes, MiB = 2²⁰ bytes).")
    a("")
    a("| mail | command | peak RSS median (MiB) | median (MB) | worst (MB) | × mail size | "
      "wall time median (ms) |")
    a("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    big = (("deliver", "`helpdesk-pipe deliver`, SQLite"),
           ("baseline", "stdlib baseline (parses, leaves the attachment encoded)"))
    for key, label in big:
        m = mem[key]
        a(f"| {mem['mail_bytes'] / 1e6:.1f} MB | {label} | {m['maxrss_mib_median']:.1f} | "
          f"{m['maxrss_mb_median']:.1f} | {m['maxrss_mb_max']:.1f} | "
          f"{m['maxrss_mb_median'] * 1e6 / mem['mail_bytes']:.1f} | {m['ms_median']:.0f} |")
    names = {"startup": "`python -c pass`", "baseline": "stdlib baseline",
             "deliver_sqlite": "`helpdesk-pipe deliver`, SQLite",
             "deliver_pg": "`helpdesk-pipe deliver`, PostgreSQL"}
    for key, m in mem["small"].items():
        mail = "none" if key == "startup" else f"{m['mail_bytes'] / 1e3:.1f} kB"
        a(f"| {mail} | {names[key]} | {m['maxrss_mib_median']:.1f} | {m['maxrss_mb_median']:.1f} "
          f"| {m['maxrss_mb_max']:.1f} | – | {m['ms_median']:.0f} |")
    a("")
    a("### 3. What the deliver path imports")
    a("")
    a(f"`{PY.replace(str(ROOT) + '/', '')} -X importtime -c 'import "
      f"{', '.join(IMPORT_ROOTS)}'`, {imp['reps']} processes, medians. The imports add "
      f"**{imp['total_ms_median']:.1f} ms** (sum of the top-level cumulative times) and "
      f"**{imp['modules_after_import'] - imp['modules_bare_interpreter']} modules** "
      f"({imp['modules_after_import']} in `sys.modules` against "
      f"{imp['modules_bare_interpreter']} for `python -c pass`). Loaded: "
      f"{', '.join(imp['watched_loaded']) or 'none'} (watched: {', '.join(WATCHED)}); "
      f"forbidden ({', '.join(FORBIDDEN)}): {', '.join(imp['forbidden_loaded']) or 'none'}.")
    a("")
    tops = ", ".join(f"`{n}` {x['cum_ms']:.1f}" for n, x in imp["top_level"].items())
    a(f"Top-level entries (cumulative ms): {tops}.")
    a("")
    real = imp["real_deliver"]
    if real:
        parts = []
        for key, r in real.items():
            name = "SQLite" if key == "sqlite" else "PostgreSQL"
            parts.append(f"{name}: {r['modules_imported']} modules imported after start-up, "
                         f"{r['import_ms_median']:.1f} ms of imports; loaded "
                         f"{', '.join(r['watched_loaded']) or 'none of the watched'}; forbidden: "
                         f"{', '.join(r['forbidden_loaded']) or 'none'}")
        a("A real `deliver` run under `-X importtime` (lazy imports included) — "
          + "; ".join(parts) + ".")
        a("")
    boot = imp["startup_ms"]
    site = boot.get("site")
    editable = {n: x for n, x in boot.items() if n.startswith("__editable__")}
    if site is not None:
        a(f"Start-up, paid by every process including the baseline: `site` takes {site:.1f} ms "
          "under `-X importtime`"
          + ("".join(f", of which `{n}` (the editable install's import hook) {x:.1f} ms"
                     for n, x in editable.items()))
          + ".")
        a("")
    a("Top 10 by cumulative time (a module's own code plus everything it imports first; "
      "rows nest, see *imported by*):")
    a("")
    a("| module | cumulative ms | self ms | imported by |")
    a("| --- | ---: | ---: | --- |")
    for r in imp["top_cumulative"]:
        a(f"| `{r['module']}` | {r['cum_ms']:.1f} | {r['self_ms']:.1f} | "
          f"{'`' + r['imported_by'] + '`' if r['imported_by'] else '(top level)'} |")
    a("")
    a("Top 10 by self time (the module's own execution, excluding its imports):")
    a("")
    a("| module | self ms | cumulative ms | imported by |")
    a("| --- | ---: | ---: | --- |")
    for r in imp["top_self"]:
        a(f"| `{r['module']}` | {r['self_ms']:.1f} | {r['cum_ms']:.1f} | "
          f"{'`' + r['imported_by'] + '`' if r['imported_by'] else '(top level)'} |")
    a("")
    if res["web"]:
        out.extend(web.render(res["web"]))
    else:
        a("### 4. The ticket page under gunicorn")
        a("")
        a("Skipped (BENCH_WEB=0).")
    a("")
    a(f"Raw data: `bench/results/{res['json_name']}` (not committed).")
    return "\n".join(out)


def update_readme(block: str) -> None:
    text = README.read_text(encoding="utf-8")
    if MARK_START not in text or MARK_END not in text:
        raise SystemExit(f"{README}: markers {MARK_START} / {MARK_END} not found")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    README.write_text(f"{head}{MARK_START}\n{block}\n{MARK_END}{tail}", encoding="utf-8")


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    work = RESULTS / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    os.chdir(work)
    started = time.perf_counter()
    with Postgres() as pg:
        env = environment(pg)
        latency = bench_latency(work, pg)
        imports = bench_imports(work, latency)
        memory = bench_memory(work, latency)
    webres = None
    if os.environ.get("BENCH_WEB") != "0":
        webres = web.bench_web(work, sys.modules[__name__])
    res = {"env": env, "latency": latency, "memory": memory, "imports": imports, "web": webres}
    res["wall_s"] = time.perf_counter() - started
    res["env"]["loadavg_end"] = os.getloadavg()
    forb = imports["forbidden_loaded"] + [m for r in imports["real_deliver"].values()
                                          for m in r["forbidden_loaded"]]
    res["targets"] = {
        "ratio": latency["variants"]["deliver_sqlite"]["ratio"],
        "ratio_ok": latency["variants"]["deliver_sqlite"]["ratio"] <= RATIO_TARGET,
        "rss_mb": memory["deliver"]["maxrss_mb_max"],
        "rss_ok": memory["deliver"]["maxrss_mb_max"] < RSS_TARGET_MB,
        "imports_ok": not forb,
        "web_ok": webres is None or all(webres["targets"].values()),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    res["json_name"] = f"bench-{stamp}{'-quick' if QUICK else ''}.json"
    (RESULTS / res["json_name"]).write_text(json.dumps(res, indent=1), encoding="utf-8")
    shutil.copyfile(RESULTS / res["json_name"], RESULTS / ("latest-quick.json" if QUICK
                                                          else "latest.json"))
    block = render(res)
    print(block)
    default_update = "0" if QUICK else "1"
    if os.environ.get("UPDATE_README", default_update) == "1":
        update_readme(block)
        log(f"results written to {README} and {RESULTS / res['json_name']}")
    else:
        log(f"README left alone; results in {RESULTS / res['json_name']}")
    if os.environ.get("KEEP") != "1":
        os.chdir(HERE)
        shutil.rmtree(work)
    failed = not all(res["targets"][k] for k in ("ratio_ok", "rss_ok", "imports_ok", "web_ok"))
    if failed:
        log("a target is missed: see the Targets table")
    return 1 if failed and os.environ.get("CHECK") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())
