"""The helpdesk-pipe benchmark: latency (in process, warm through ingestd, and Roundup's
roundup-mailgw in the same rounds), peak memory and import cost of `deliver`, the
throughput of the viewer's ticket page under gunicorn (bench/web.py), bursts of deliveries
(bench/burst.py) and a threaded reply in big databases (bench/scale.py).

Run it through bench/run.sh. It must run under the interpreter being measured (the
project's venv): every child process is started with sys.executable, and psycopg is
imported from it to make the PostgreSQL schema. `bench.py --memory` runs section 2 alone
(prints it; with UPDATE_README=1 it replaces section 2 and its targets in the README's
results block, the rest of the block staying as the last full run left it).

Environment (all optional):
  QUICK=1          a smoke test: few runs, README left alone unless UPDATE_README=1
  RUNS, WARMUP     measured and warm-up rounds of the latency benchmark (default 100 and 5)
  MEM_REPS         processes per variant in the memory benchmark (default 3)
  BENCH_MEM_HTML=0 skip the 25 MB HTML-only mail of the memory benchmark
  MEM_HTML_CTE     its transfer encoding: 8bit (default) or quoted-printable
  MEM_VIEWER_ROUNDS  requests of its ticket's page and of a small one, each (default 20)
  IMPORT_REPS      `-X importtime` processes (default 7)
  BENCH_PG_URL     admin URL of PostgreSQL (default postgresql://postgres@127.0.0.1:5432/test)
  BENCH_PG=0       skip PostgreSQL
  BENCH_ROUNDUP=0  skip Roundup (else pip installs it once into bench/results/roundup-venv)
  UPDATE_README=0  do not rewrite the results block of bench/README.md
  CHECK=1          exit 1 when a target is missed or a forbidden module is imported
  KEEP=1           keep the scratch directory bench/results/work (databases, mails)
  BENCH_WEB=0      skip the viewer benchmark (section 4)
  WEB_ROUNDS, WEB_THREADS, WEB_WARMUP, WEB_SECONDS   see bench/web.py
  BENCH_BURST=0    skip the burst (section 5); BURST_N, BURST_K, BURST_ROUNDUP_N,
                   BURST_INPROC_N, BURST_INPROC=0: see bench/burst.py
  BENCH_SCALE=0    skip the scale benchmark (section 6); SCALE_SMALL, SCALE_BIG,
                   SCALE_REPLIES, SCALE_WARMUP, SCALE_INPROC=0, SCALE_CACHE=0: bench/scale.py
"""

from __future__ import annotations

import hashlib
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
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import burst
import mails
import roundup_bench
import scale
import service
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
MEM_HTML = os.environ.get("BENCH_MEM_HTML") != "0"
MEM_HTML_CTE = os.environ.get("MEM_HTML_CTE", mails.HTML_CTE)
MEM_VIEWER_ROUNDS = int(os.environ.get("MEM_VIEWER_ROUNDS", 5 if QUICK else 20))
IMPORT_REPS = int(os.environ.get("IMPORT_REPS", 2 if QUICK else 7))
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SEED = 20261128
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)

RATIO_TARGET = 8.0  # median(deliver, SQLite) / median(stdlib baseline)
WARM_TARGET = 1.0  # median(warm deliver) / median(stdlib baseline), at most
ROUNDUP_TARGET = 1.5  # median(deliver in process, SQLite) / median(roundup-mailgw), at most
BURST_TARGET = 4.0  # burst mails/s of warm deliver / roundup-mailgw's, at least
RSS_TARGET_MB = 250.0  # peak RSS of deliver on the 25 MB mails, MB = 10**6 bytes
VIEWER_RSS_TARGET_MB = 250.0  # peak RSS of a viewer worker for the 25 MB HTML-only mail
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


def ingestd_toml(sock: Path) -> str:
    """The [ingestd] table: every config names its own socket (one service per database)."""
    return f'[ingestd]\nsocket = "{sock}"\n\n'


def bench_latency(work: Path, pg: Postgres, pg_warm: Postgres, warm_skip: str | None,
                  roundup: dict | None) -> dict:
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
    # In-process configs name a socket nobody listens on: deliver runs in its own process.
    nobody = ingestd_toml(work / "nobody-listens.sock")
    sqlite_db = work / "helpdesk.db"
    sqlite_cfg = write_config(work, f"sqlite:///{sqlite_db}", extra=nobody)
    init_db(sqlite_cfg)
    pg_cfg = None
    if pg.url:
        pg_cfg = write_config(work, pg.url, name="helpdesk-pg.toml", extra=nobody)
        init_db(pg_cfg)
    # Warm variants: a config and a database of their own, and the service of that config.
    services: dict[str, service.Ingestd] = {}
    warm_cfgs: dict[str, Path] = {}
    if not warm_skip:
        warm_db = work / "warm.db"
        warm_cfgs["warm_sqlite"] = write_config(work, f"sqlite:///{warm_db}", name="warm.toml",
                                                extra=ingestd_toml(work / "warm.sock"))
        if pg_warm.url:
            warm_cfgs["warm_pg"] = write_config(work, pg_warm.url, name="warm-pg.toml",
                                                extra=ingestd_toml(work / "warm-pg.sock"))
        for key, cfg in warm_cfgs.items():
            init_db(cfg)
            sock = work / ("warm.sock" if key == "warm_sqlite" else "warm-pg.sock")
            services[key] = service.Ingestd(pipe_command(), cfg, sock,
                                            work / f"{cfg.stem}-ingestd.stderr", CHILD_ENV)
    tracker = None
    if roundup_ok(roundup):
        tracker = roundup_bench.make_tracker(Path(roundup["venv"]), work / "roundup-tracker",
                                             mails.senders(), CHILD_ENV)

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
        Variant("deliver_sqlite", "**`helpdesk-pipe deliver --queue dsi`, SQLite** (in process)",
                [*deliver, str(sqlite_cfg), "deliver", "--queue", "dsi"]),
    ]
    if pg_cfg:
        variants.append(Variant("deliver_pg",
                                "`helpdesk-pipe deliver --queue dsi`, PostgreSQL (in process)",
                                [*deliver, str(pg_cfg), "deliver", "--queue", "dsi"]))
    labels = {"warm_sqlite": "**warm deliver**, SQLite: the same command, `ingestd` running",
              "warm_pg": "**warm deliver**, PostgreSQL: the same command, `ingestd` running"}
    for key, cfg in warm_cfgs.items():
        variants.append(Variant(key, labels[key],
                                [*deliver, str(cfg), "deliver", "--queue", "dsi"]))
    if tracker:
        variants.append(Variant(
            "roundup", f"`roundup-mailgw TRACKER` (Roundup {roundup['version']}, classic, sqlite)",
            [str(Path(roundup["venv"]) / "bin" / "roundup-mailgw"), str(tracker)]))

    rng = random.Random(SEED)
    errs = work / "stderr"
    errs.mkdir()
    for svc in services.values():
        svc.start()
    log(f"latency: {len(variants)} variants x ({WARMUP} warm-up + {RUNS} measured rounds)"
        + (f"; ingestd running for {', '.join(services)}" if services else ""))
    started = time.perf_counter()
    try:
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
            for key, svc in services.items():
                if not svc.alive():
                    raise SystemExit(f"latency: the ingestd of {key} died (exit {svc.code}):\n"
                                     f"{svc.stderr.read_text()[-2000:]}")
            if (r + 1) % 20 == 0:
                log(f"  round {r + 1}/{rounds}")
        wall = time.perf_counter() - started
        warm_checks = {key: {"per_worker": dict(svc.decided()), "problems": svc.problems()}
                       for key, svc in services.items()}
    finally:
        stopped = {key: svc.stop() for key, svc in services.items()}

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
    if "warm_sqlite" in services:
        checks["warm_sqlite_tickets"] = sqlite_count(work / "warm.db",
                                                     "SELECT count(*) FROM ticket")
    if "warm_pg" in services:
        checks["warm_pg_tickets"] = pg_warm.count("SELECT count(*) FROM ticket")
    if tracker:
        checks["roundup_issues"] = roundup_bench.issue_count(tracker)
    expected = {"sqlite_tickets": rounds, "sqlite_not_ticket": 0, "baseline_rows": rounds,
                "pg_tickets": rounds, "pg_not_ticket": 0, "warm_sqlite_tickets": rounds,
                "warm_pg_tickets": rounds, "roundup_issues": rounds}
    for key, value in checks.items():
        if value != expected[key]:
            raise SystemExit(f"check failed: {key} = {value}, expected {expected[key]}")
    # Warm means warm: the service decided every mail, no client delivered in process,
    # the service lived through the rounds and stopped cleanly on SIGTERM.
    for key, wc in warm_checks.items():
        wc["decided"] = sum(wc["per_worker"].values())
        wc["fallbacks"] = service.fallbacks(warm_cfgs[key].with_suffix(".log"))
        wc["exit_code"] = stopped[key]
        wc["startup_s"] = services[key].ready_s
        if wc["decided"] != rounds or wc["fallbacks"] or stopped[key] != 0:
            raise SystemExit(f"check failed: {key}: the service decided {wc['decided']} of "
                             f"{rounds} mails, {wc['fallbacks']} delivered in process, exit "
                             f"{stopped[key]}, problems {wc['problems'][:5]}")

    out = {
        "rounds": rounds, "warmup": WARMUP, "runs": RUNS, "wall_s": wall,
        "mail_bytes": {"min": min(sizes), "max": max(sizes),
                       "median": statistics.median(sizes[:rounds])},
        "checks": checks,
        "warm_checks": warm_checks,
        "variants": {},
        "extra_mails": paths[rounds:],
        "configs": {"sqlite": str(sqlite_cfg), "pg": str(pg_cfg) if pg_cfg else None},
        "baseline_db": str(base_normal),
        "warm_skipped": warm_skip,
        "roundup_skipped": None if tracker else (roundup or {}).get("skipped", "not set up"),
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
    if tracker:
        rs = {v.key: v for v in variants}["roundup"]
        for v in variants:
            if v.key.startswith(("deliver_", "warm_")):
                entry = out["variants"][v.key]
                entry["ratio_roundup"] = entry["ms"]["median"] / out["variants"]["roundup"][
                    "ms"]["median"]
                entry["paired_ratio_roundup"] = statistics.median(
                    a.ms / b.ms for a, b in zip(v.samples, rs.samples, strict=True))
    return out


def roundup_ok(roundup: dict | None) -> bool:
    return bool(roundup) and "skipped" not in roundup


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
    warm: list[dict] = []
    checks = []
    for rep in range(MEM_REPS):
        # A fresh database each time: the same mail is new to it (no duplicate, no shared blob).
        db = big_dir / f"helpdesk-{rep}.db"
        cfg = write_config(big_dir, f"sqlite:///{db}", name=f"helpdesk-{rep}.toml",
                           extra=ingestd_toml(big_dir / "nobody-listens.sock"))
        init_db(cfg)
        base_db = big_dir / f"baseline-{rep}.db"
        make_baseline_db(base_db)
        order = ["deliver", "baseline", "warm"]
        random.Random(f"{SEED}:mem:{rep}").shuffle(order)
        if latency["warm_skipped"]:
            order.remove("warm")
        for which in order:
            if which == "warm":
                warm.append(warm_big_mail(big_dir, rep, mail_path, run,
                                          lambda db: attachment_check(db, attachment)))
                continue
            if which == "deliver":
                argv = [*deliver, str(cfg), "deliver", "--queue", "dsi"]
            else:
                argv = [PY, script, str(base_db), "NORMAL"]
            sample = run(f"big-{which}", argv, str(mail_path))
            runs[which].append(sample)
            log(f"  rep {rep + 1}/{MEM_REPS} {which}: {sample.ms:.0f} ms, "
                f"maxrss {sample.maxrss_kib / 1024:.1f} MiB")
        checks.append(attachment_check(db, attachment))
        for path in big_dir.glob(f"*-{rep}.db*"):
            path.unlink()
    mail_path.unlink()
    out = {
        "mail_bytes": big_bytes,
        "attachment_bytes": attachment,
        "max_size_setting": "default (25 MiB = 26,214,400 bytes)",
        "checks": checks,
        "deliver": rss_entry(runs["deliver"], big_bytes),
        "baseline": rss_entry(runs["baseline"], big_bytes),
        "small": {k: rss_entry(v, small_bytes) for k, v in small.items()},
        "warm": None,
    }
    if warm:
        out["warm"] = warm_entry(warm, big_bytes)
    out["html"] = bench_html_memory(work, latency, run) if MEM_HTML else None
    return out


def warm_entry(warm: list[dict], mail_bytes: int) -> dict:
    """The warm path's peaks over the repetitions: the client's and the service's."""
    return {
        "client": rss_entry([w["client"] for w in warm], mail_bytes),
        "worker_hwm_kib": [w["worker_hwm_kib"] for w in warm],
        "worker_idle_hwm_kib": [w["worker_idle_hwm_kib"] for w in warm],
        "master_hwm_kib": [w["master_hwm_kib"] for w in warm],
        "tree_sum_hwm_kib": [w["tree_sum_hwm_kib"] for w in warm],
        "workers": [w["workers"] for w in warm],
        "renewed": [w["renewed"] for w in warm],
        "worker_mb_median": statistics.median(w["worker_hwm_kib"] for w in warm) * 1024 / 1e6,
        "worker_mb_max": max(w["worker_hwm_kib"] for w in warm) * 1024 / 1e6,
        "tree_sum_mb_max": max(w["tree_sum_hwm_kib"] for w in warm) * 1024 / 1e6,
        "reps": [{**w, "client": asdict(w["client"])} for w in warm],
    }


def attachment_check(db: Path, attachment: int) -> dict:
    """The big mail with an attachment opened one ticket and stored the attachment whole."""
    stored = sqlite_count(db, "SELECT max(size) FROM attachment")
    tickets = sqlite_count(db, "SELECT count(*) FROM ticket")
    if stored != attachment or tickets != 1:
        raise SystemExit(f"memory: {tickets} ticket(s), stored attachment of {stored} bytes; "
                         f"expected 1 ticket and {attachment} bytes")
    return {"attachment_stored_bytes": stored, "tickets": tickets}


def html_check(db: Path, expect: dict) -> dict:
    """What the HTML-only mail must have become: one ticket whose one entry shows the text
    derived from the HTML (longer than a page shows, from the first line to the last),
    the HTML not shown (over what is cleaned) but attached whole as `message.html`."""
    con = sqlite3.connect(db)
    try:
        verdicts = [row[0] for row in con.execute("SELECT verdict FROM mail_record")]
        tickets = con.execute("SELECT count(*) FROM ticket").fetchone()[0]
        entries = con.execute("SELECT body_html IS NULL, COALESCE(body_trimmed, body_text) "
                              "FROM article WHERE internal = 0").fetchall()
        files = con.execute("SELECT filename, content_type, size, blob_sha256 FROM attachment"
                            ).fetchall()
    finally:
        con.close()
    text = entries[0][1] if len(entries) == 1 else ""
    want = [("message.html", "text/html", expect["html_bytes"], expect["html_sha256"])]
    problems = []
    if verdicts != ["ticket"] or tickets != 1 or len(entries) != 1:
        problems.append(f"verdicts {verdicts}, {tickets} ticket(s), {len(entries)} entries")
    if entries and not entries[0][0]:
        problems.append("the HTML is stored to be shown")
    start, end = expect["start"] in text[:2_000], expect["end"] in text[-2_000:]
    if len(text) <= web.VIEWER_TEXT_LIMIT or not start or not end:
        problems.append(f"text of {len(text)} characters (its start found: {start}, its end: "
                        f"{end})")
    if [tuple(f) for f in files] != want:
        problems.append(f"attachments {[(f[0], f[1], f[2], f[3][:12]) for f in files]}, expected "
                        f"message.html, text/html, {expect['html_bytes']} bytes")
    if problems:
        raise SystemExit(f"memory (HTML-only mail, {db.name}): " + "; ".join(problems))
    return {"tickets": tickets, "text_chars": len(text),
            "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "attachment": {"filename": "message.html", "bytes": files[0][2]}}


def bench_html_memory(work: Path, latency: dict, run: Callable[..., Sample]) -> dict:
    """The 25 MB HTML-only mail: deliver in process (GNU time) and warm (the worker's
    VmHWM), each into a fresh database; then the in-process database's ticket in a
    gunicorn worker (web.viewer_memory), beside a 5 KB ticket for the latency ratio."""
    hdir = work / "html"
    hdir.mkdir()
    log(f"memory: generating the HTML-only mail ({MEM_HTML_CTE})")
    raw, markup = mails.html_mail(0, SEED, cte=MEM_HTML_CTE)
    mail_path = hdir / "html.eml"
    mail_path.write_bytes(raw)
    encoded = markup.encode("utf-8")
    expect = {"html_chars": len(markup), "html_bytes": len(encoded),
              "html_sha256": hashlib.sha256(encoded).hexdigest(),
              "start": mails.HTML_START, "end": mails.HTML_END}
    del raw, markup, encoded
    small_path = hdir / "small.eml"
    small_path.write_bytes(mails.small_mail(900_000, SEED))  # not one of section 1's
    viewer_skipped = web.viewer_unavailable(PY)
    if viewer_skipped:
        log(f"memory: viewer not measured: {viewer_skipped}")
    deliver = [*pipe_command(), "--config"]
    runs: list[Sample] = []
    warm: list[dict] = []
    viewers: list[dict] = []
    checks = []
    for rep in range(MEM_REPS):
        order = ["deliver", "warm"]
        random.Random(f"{SEED}:mem-html:{rep}").shuffle(order)
        if latency["warm_skipped"]:
            order.remove("warm")
        for which in order:
            if which == "warm":
                warm.append(warm_big_mail(hdir, rep, mail_path, run,
                                          lambda db: html_check(db, expect), "HTML"))
                continue
            db = hdir / f"helpdesk-{rep}.db"
            cfg = write_config(hdir, f"sqlite:///{db}", name=f"helpdesk-{rep}.toml",
                               extra=web.WEB_TOML + ingestd_toml(hdir / "nobody-listens.sock"))
            init_db(cfg)
            sample = run("html-deliver", [*deliver, str(cfg), "deliver", "--queue", "dsi"],
                         str(mail_path))
            runs.append(sample)
            checks.append(html_check(db, expect))
            log(f"  rep {rep + 1}/{MEM_REPS} HTML deliver: {sample.ms:.0f} ms, maxrss "
                f"{sample.maxrss_kib / 1024:.1f} MiB")
            if viewer_skipped is None:
                viewers.append(viewer_rep(hdir, rep, cfg, small_path,
                                          {**expect, "text_sha256": checks[-1]["text_sha256"]}))
        for path in hdir.glob(f"*-{rep}.db*"):
            path.unlink()
    mail_bytes = os.path.getsize(mail_path)
    mail_path.unlink()
    out = {
        "mail_bytes": mail_bytes,
        "cte": MEM_HTML_CTE,
        "html_chars": expect["html_chars"],
        "html_bytes": expect["html_bytes"],
        "text_chars": checks[0]["text_chars"],
        "checks": checks,
        "deliver": rss_entry(runs, mail_bytes),
        "warm": warm_entry(warm, mail_bytes) if warm else None,
        "viewer": None,
        "viewer_skipped": viewer_skipped,
    }
    if viewers:
        kib = [v["worker_hwm_kib"] for v in viewers]
        out["viewer"] = {
            "reps": viewers,
            "worker_mb_median": statistics.median(kib) * 1024 / 1e6,
            "worker_mb_max": max(kib) * 1024 / 1e6,
            "page_worker_mb_max": max(v["page_worker_hwm_kib"] for v in viewers) * 1024 / 1e6,
            "idle_mb_median": statistics.median(
                x for v in viewers for x in v["idle_hwm_kib"].values()) * 1024 / 1e6,
            "ratio_median": statistics.median(v["ratio"] for v in viewers),
        }
    return out


def viewer_rep(hdir: Path, rep: int, cfg: Path, small_path: Path, expect: dict) -> dict:
    """A 5 KB mail into the same database (the small ticket), both tickets' links, then
    the viewer's measurement (bench/web.py)."""
    pipe = [*pipe_command(), "--config", str(cfg)]
    with open(small_path, "rb") as fh:
        run_checked([*pipe, "deliver", "--queue", "dsi"], stdin=fh, timeout=120)
    paths = {}
    for ticket in (1, 2):
        link = run_checked([*pipe, "ticket", "link", str(ticket)]).stdout.strip().split()[-1]
        paths[ticket] = urlsplit(link).path
    res = web.viewer_memory(sys.modules[__name__], cfg, paths[1], paths[2], expect,
                            hdir / f"gunicorn-{rep}.log", MEM_VIEWER_ROUNDS)
    log(f"  rep {rep + 1}/{MEM_REPS} viewer: worker VmHWM {res['worker_hwm_kib'] / 1024:.1f} "
        f"MiB (after the page {res['page_worker_hwm_kib'] / 1024:.1f}, idle "
        f"{max(res['idle_hwm_kib'].values()) / 1024:.1f}); page {res['ms_median']['page']:.1f}"
        f" ms vs {res['ms_median']['small page']:.1f} ms for a 5 KB ticket "
        f"({res['ratio']:.2f}x)")
    return res


class HwmSampler:
    """Samples VmHWM of a service's processes every few ms while a mail goes through: a
    worker renewed right after a big mail (over [ingestd] max_rss_mb) takes its peak with
    it when it exits, so the last reading before that is kept."""

    def __init__(self, svc: service.Ingestd) -> None:
        import threading

        self.svc = svc
        self.peak: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.done.is_set():
            for pid in service.tree_pids(self.svc.pid):
                value = service.vm_hwm_kib(pid)
                if value is not None and value > self.peak.get(pid, 0):
                    self.peak[pid] = value
            self.done.wait(0.003)

    def __enter__(self) -> HwmSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the worker sends its acknowledgement after the answer
        self.done.set()
        self.thread.join()


def warm_big_mail(big_dir: Path, rep: int, mail_path: Path, run: Callable[..., Sample],
                  check: Callable[[Path], object], what: str = "big") -> dict:
    """A 25 MB mail through the warm path: the client's peak RSS (GNU time) and the
    service's (VmHWM of its processes, sampled), with a fresh database and service;
    `check` raises unless the database holds what the mail must have become."""
    db = big_dir / f"warm-{rep}.db"
    sock = big_dir / f"warm-{rep}.sock"
    cfg = write_config(big_dir, f"sqlite:///{db}", name=f"warm-{rep}.toml",
                       extra=ingestd_toml(sock))
    init_db(cfg)
    svc = service.Ingestd(pipe_command(), cfg, sock, big_dir / f"warm-{rep}-ingestd.stderr",
                          CHILD_ENV)
    with svc:
        idle = svc.hwm()
        with HwmSampler(svc) as sampler:
            sample = run(f"{what}-warm", [*pipe_command(), "--config", str(cfg), "deliver",
                                          "--queue", "dsi"], str(mail_path))
        decided = svc.decided()
        problems = svc.problems()
    if sum(decided.values()) != 1 or service.fallbacks(cfg.with_suffix(".log")):
        raise SystemExit(f"memory: the {what} mail was not decided by the service ({decided}, "
                         f"problems {problems[:3]})")
    check(db)
    worker = next(iter(decided))
    peak = {**idle}
    for pid, value in sampler.peak.items():
        peak[pid] = max(value, peak.get(pid, 0))
    renewed = "renewing" in svc.stderr.read_text(errors="replace")
    out = {
        "client": sample,
        "worker_pid": worker,
        "worker_hwm_kib": peak.get(worker, 0),
        "worker_idle_hwm_kib": idle.get(worker),
        "master_hwm_kib": peak.get(svc.pid, 0),
        "tree_sum_hwm_kib": sum(peak.values()),
        "workers": len(peak) - 1,
        "renewed": renewed,
        "problems": problems[:5],
    }
    log(f"  rep {rep + 1}/{MEM_REPS} {what} warm: client {sample.ms:.0f} ms, maxrss "
        f"{sample.maxrss_kib / 1024:.1f} MiB; worker VmHWM {out['worker_hwm_kib'] / 1024:.1f} "
        f"MiB (idle {(out['worker_idle_hwm_kib'] or 0) / 1024:.1f}), master "
        f"{out['master_hwm_kib'] / 1024:.1f} MiB" + (", worker renewed after it" if renewed
                                                      else ""))
    for path in big_dir.glob(f"warm-{rep}.db*"):
        path.unlink()
    return out


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
    out.extend(memory_target_rows(mem, res["targets"]))
    forb = imp["forbidden_loaded"] + [m for r in imp["real_deliver"].values()
                                      for m in r["forbidden_loaded"]]
    a(f"| deliver path imports none of {', '.join(FORBIDDEN)} | "
      f"{', '.join(sorted(set(forb))) or 'none loaded'} | {verdict(not forb)} |")
    if res["web"]:
        out.extend(web.target_rows(res["web"]))
    for t in res["targets"]["new"]:
        a(f"| {t['target']} | {t['result']} | {t['status']} |")
    a("")
    a(f"### 1. Latency of one delivery, whole process (ms; {lat['runs']} measured rounds after "
      f"{lat['warmup']} warm-up, variants shuffled in each round)")
    a("")
    a(f"Mails: {lat['rounds']} distinct text/plain mails of {lat['mail_bytes']['min']:,}–"
      f"{lat['mail_bytes']['max']:,} bytes, one per round (the same mail goes to every variant "
      f"of a round). Checks after the run: {lat['checks']['sqlite_tickets']} tickets in SQLite"
      + (f", {lat['checks']['pg_tickets']} in PostgreSQL" if "pg_tickets" in lat["checks"] else "")
      + "".join(f", {lat['checks'][k]} {what}" for k, what in (
          ("warm_sqlite_tickets", "in the warm SQLite database"),
          ("warm_pg_tickets", "in the warm PostgreSQL database"),
          ("roundup_issues", "Roundup issues")) if k in lat["checks"])
      + ", no duplicate, no failure.")
    if lat["warm_checks"]:
        parts = [f"{'SQLite' if k == 'warm_sqlite' else 'PostgreSQL'}: {w['decided']} mails "
                 f"decided by {len(w['per_worker'])} worker(s) "
                 f"({', '.join(str(n) for n in sorted(w['per_worker'].values(), reverse=True))}),"
                 f" {w['fallbacks']} delivered in process, service up {w['startup_s']:.1f} s "
                 f"after its start, exit {w['exit_code']} on SIGTERM"
                 + (f", it logged {len(w['problems'])} problem line(s), the first "
                    f"`{w['problems'][0][:160]}`" if w["problems"] else "")
                 for k, w in lat["warm_checks"].items()]
        a("")
        a("Warm rows: the same command as the in-process rows, with `helpdesk-pipe --config "
          "CFG ingestd` of that config running (its own database and socket; started before "
          "the rounds, alive after each). Checked from the service's log: " + "; ".join(parts)
          + ".")
    a("")
    a("| command | median | p90 | min | max | mean ± sd | × baseline (ratio of medians) | "
      "× baseline (median of per-round ratios) | × roundup-mailgw (ratio of medians) |")
    a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for entry in v.values():
        st = entry["ms"]
        paired = f"{entry['paired_ratio_median']:.2f}" if "paired_ratio_median" in entry else "–"
        rr = f"{entry['ratio_roundup']:.2f}" if "ratio_roundup" in entry else "–"
        a(f"| {entry['label']} | {st['median']:.1f} | {st['p90']:.1f} | {st['min']:.1f} | "
          f"{st['max']:.1f} | {st['mean']:.1f} ± {st['sd']:.1f} | {entry['ratio']:.2f} | "
          f"{paired} | {rr} |")
    skipped = []
    if "deliver_pg" not in v:
        skipped.append(f"PostgreSQL: skipped ({env['pg_skipped']})")
    if lat["warm_skipped"]:
        skipped.append(f"warm deliver: not measured: {lat['warm_skipped']}")
    if lat["roundup_skipped"]:
        skipped.append(f"roundup-mailgw: not measured: {lat['roundup_skipped']}")
    if skipped:
        a("")
        a(". ".join(skipped) + ".")
    a("")
    out.extend(render_memory(mem))
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
    out.extend(render_burst(res["burst"]))
    a("")
    if res["scale"]:
        out.extend(scale.render(res["scale"]))
    else:
        a("### 6. Scale")
        a("")
        a("Skipped (BENCH_SCALE=0).")
    a("")
    a(f"Raw data: `bench/results/{res['json_name']}` (not committed).")
    return "\n".join(out)


def memory_target_rows(mem: dict, targets: dict) -> list[str]:
    """Section 2's rows of the Targets table (they all begin with `| peak RSS of`)."""
    d = mem["deliver"]
    rows = [f"| peak RSS of deliver, {mem['mail_bytes'] / 1e6:.1f} MB mail into SQLite < "
            f"{RSS_TARGET_MB:g} MB | {d['maxrss_mb_max']:.1f} MB = "
            f"{max(d['maxrss_kib']) / 1024:.1f} MiB (worst of {len(d['maxrss_kib'])}) | "
            f"{verdict(targets['rss_ok'])} |"]
    rows += [f"| {t['target']} | {t['result']} | {t['status']} |"
             for t in targets["memory_html"]]
    return rows


def render_memory(mem: dict) -> list[str]:
    """Section 2 of the results block."""
    out: list[str] = []
    a = out.append
    d = mem["deliver"]
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
    if mem.get("warm"):
        w = mem["warm"]
        c = w["client"]
        a(f"| {mem['mail_bytes'] / 1e6:.1f} MB | warm deliver, SQLite: the client "
          f"(`helpdesk-pipe deliver` with `ingestd` running) | {c['maxrss_mib_median']:.1f} | "
          f"{c['maxrss_mb_median']:.1f} | {c['maxrss_mb_max']:.1f} | "
          f"{c['maxrss_mb_median'] * 1e6 / mem['mail_bytes']:.1f} | {c['ms_median']:.0f} |")
        kib = w["worker_hwm_kib"]
        a(f"| {mem['mail_bytes'] / 1e6:.1f} MB | warm deliver, SQLite: the ingestd worker that "
          f"took it (VmHWM) | {statistics.median(kib) / 1024:.1f} | "
          f"{w['worker_mb_median']:.1f} | {w['worker_mb_max']:.1f} | "
          f"{w['worker_mb_median'] * 1e6 / mem['mail_bytes']:.1f} | – |")
    names = {"startup": "`python -c pass`", "baseline": "stdlib baseline",
             "deliver_sqlite": "`helpdesk-pipe deliver`, SQLite",
             "deliver_pg": "`helpdesk-pipe deliver`, PostgreSQL"}
    for key, m in mem["small"].items():
        mail = "none" if key == "startup" else f"{m['mail_bytes'] / 1e3:.1f} kB"
        a(f"| {mail} | {names[key]} | {m['maxrss_mib_median']:.1f} | {m['maxrss_mb_median']:.1f} "
          f"| {m['maxrss_mb_max']:.1f} | – | {m['ms_median']:.0f} |")
    if mem.get("warm"):
        w = mem["warm"]
        idle = [x for x in w["worker_idle_hwm_kib"] if x]
        a("")
        a("Warm rows: a fresh database and service for each mail; the service's peak is the "
          "VmHWM of its processes (`/proc/<pid>/status`, the master and its forked workers, "
          "sampled every few ms so a worker renewed after the mail is not missed). The worker "
          f"that took the mail peaked at {w['worker_mb_max']:.1f} MB at worst"
          + (f" (idle before it: {statistics.median(idle) * 1024 / 1e6:.1f} MB)" if idle else "")
          + f"; the master at {max(w['master_hwm_kib']) * 1024 / 1e6:.1f} MB; the sum over "
          f"the master and its {max(w['workers'])} workers (pages shared since the fork counted "
          f"in each) {w['tree_sum_mb_max']:.1f} MB at worst."
          + (" The worker was renewed after the mail ([ingestd] max_rss_mb)."
             if any(w["renewed"]) else ""))
    if mem.get("html"):
        out.extend(render_html_memory(mem["html"]))
    return out


def render_html_memory(h: dict) -> list[str]:
    """Section 2, the HTML-only mail: the pipe's peaks and the viewer worker's."""
    out: list[str] = []
    a = out.append
    c = h["checks"][0]
    mb = h["mail_bytes"]
    a("")
    a(f"HTML-only mail: {mb:,} bytes, one `text/html; charset=utf-8` part in {h['cte']} "
      f"holding {h['html_bytes']:,} bytes ({h['html_chars']:,} characters) of newsletter HTML "
      "([`mails.py`](mails.py) `html_mail`: a layout table of articles, each a heading with "
      "its link, paragraphs of French text with bold words and links, every third one a "
      "table of dates; typographic apostrophes, `€`, `&nbsp;`), no text part. Checked in "
      f"every database: one ticket, its entry's text derived from the HTML ({c['text_chars']:,}"
      " characters, from the newsletter's first line to its last), the HTML not shown (over "
      "the 1,000,000 characters that are cleaned) and attached whole as `message.html` "
      f"({c['attachment']['bytes']:,} bytes, sha256 as sent).")
    a("")
    a("| mail | what | peak RSS median (MiB) | median (MB) | worst (MB) | × mail size | "
      "wall time median (ms) |")
    a("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    size = f"{mb / 1e6:.1f} MB HTML"

    def row(label: str, kib: list[int], ms: str) -> None:
        med = statistics.median(kib)
        a(f"| {size} | {label} | {med / 1024:.1f} | {med * 1024 / 1e6:.1f} | "
          f"{max(kib) * 1024 / 1e6:.1f} | {med * 1024 / mb:.1f} | {ms} |")

    d = h["deliver"]
    row("`helpdesk-pipe deliver`, SQLite (in process)", d["maxrss_kib"], f"{d['ms_median']:.0f}")
    if h["warm"]:
        w = h["warm"]
        row("warm deliver, SQLite: the client", w["client"]["maxrss_kib"],
            f"{w['client']['ms_median']:.0f}")
        row("warm deliver, SQLite: the ingestd worker that took it (VmHWM"
            + ("; renewed after it, over `[ingestd] max_rss_mb`)" if any(w["renewed"]) else ")"),
            w["worker_hwm_kib"], "–")
    v = h["viewer"]
    if v:
        reps = v["reps"]
        row("viewer: the gunicorn worker, after the page (VmHWM)",
            [r["page_worker_hwm_kib"] for r in reps], "–")
        row("viewer: the gunicorn workers' peak, page + `message.html` + whole text (VmHWM)",
            [r["worker_hwm_kib"] for r in reps], "–")
        r0 = reps[0]
        a("")
        a(f"Viewer: `gunicorn -w 2` with `webview:create_app()`, as section 4 starts it, on the "
          "database of the in-process row with a 5 KB ticket added; a fresh server per "
          f"process row ({len(reps)}). Requests one at a time, each checked: the ticket's "
          f"page (200, one entry, the text shown cut with its notice and the whole-text link, "
          f"`message.html` listed, {r0['page_bytes']:,} bytes), `message.html` (its "
          f"{h['html_bytes']:,} bytes, sha256 as sent), the whole text ({r0['text_bytes']:,} "
          "bytes, the stored text), then the page and the small ticket's page "
          f"{r0['rounds']} times each in a seeded order after {2 * web.WORKERS} of each. Both "
          "workers first serve another page (a key of its own in the page cache), so the first "
          "request of each page is a render on a warm worker. Peak RSS: VmHWM of both workers "
          "read from `/proc/<pid>/status` after every request (the kernel keeps the high-water "
          "mark; the workers were the same processes at the end, so none left with its peak). "
          f"Idle workers: {v['idle_mb_median']:.1f} MB; "
          + ("the downloads were served by the worker that peaked (gunicorn's access log)"
             if all(set(r["downloads_by"].values()) == {max(r["peak_hwm_kib"],
                                                            key=r["peak_hwm_kib"].get)}
                    for r in reps)
             else "downloads served by: " + "; ".join(
                 ", ".join(f"{k} by {p}" for k, p in r["downloads_by"].items())
                 + f" (peaks {r['peak_hwm_kib']})" for r in reps)) + ".")
        a("")
        def over(field: str, kind: str) -> float:  # the median over the servers
            return statistics.median(r[field][kind] for r in reps)

        a(f"Page latency, from the page cache (medians of each server, then over the servers): "
          f"**{over('ms_median', 'page'):.1f} ms** against {over('ms_median', 'small page'):.1f}"
          " ms"
          f" for the 5 KB ticket's page: **{v['ratio_median']:.2f}×** (median over {len(reps)} "
          "server(s); per server " + ", ".join(f"{r['ratio']:.2f}" for r in reps) + "). "
          f"Rendered (the first request of each page, one per server; median over the servers): "
          f"{over('first_ms', 'page'):.0f} ms against {over('first_ms', 'small page'):.0f} ms ("
          + ", ".join(f"{r['rendered_ratio']:.1f}×" for r in reps) + "). Downloads: "
          f"`message.html` {over('first_ms', 'message.html'):.0f} ms, the whole text "
          f"{over('first_ms', 'whole text'):.0f} ms.")
    elif h.get("viewer_skipped"):
        a("")
        a(f"Viewer: not measured: {h['viewer_skipped']}.")
    return out


def render_burst(b: dict | None) -> list[str]:
    if not b:
        return ["### 5. Burst", "", "Skipped (BENCH_BURST=0)."]
    out = [f"### 5. Burst: distinct mails, {b['k']} deliveries in flight", ""]
    a = out.append
    a(f"Mails of {b['mail_bytes']['min']:,}–{b['mail_bytes']['max']:,} bytes, each with its own "
      "Message-ID; every delivery is a whole process spawned like the latency rows (the MTA's "
      f"environment), and when one ends the next starts, so {b['k']} run at any time. "
      "Latency runs from spawn to reap. *Lost*: mails not ending as exactly one ticket (one "
      "issue for Roundup), counted in the database afterwards. Each variant has a fresh "
      "database; the warm ones a fresh service (default workers, 2 per CPU).")
    a("")
    a("| variant | mails | total s | mails/s | × roundup-mailgw | p50 ms | p99 ms | max ms | "
      "exit codes | lost |")
    a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    deferred = []
    rr = b["variants"].get("roundup", {}).get("mails_per_s")
    for key, r in b["variants"].items():
        times = f"{r['mails_per_s'] / rr:.1f}" if rr and key != "roundup" else (
            "1.0" if key == "roundup" else "–")
        codes = ", ".join(f"{c}: {n}" for c, n in r["exit_codes"].items())
        a(f"| {r['label']} | {r['n']:,} | {r['total_s']:.1f} | {r['mails_per_s']:.1f} | {times} "
          f"| {r['ms']['p50']:.0f} | {r['ms']['p99']:.0f} | {r['ms']['max']:.0f} | {codes} | "
          f"{r['check']['lost']} |")
        if r["exit_codes"].get("75"):
            why = "; ".join(sorted(set(r.get("stderr_tail", []))))[:200]
            deferred.append(f"{key}: {r['exit_codes']['75']} deferred with exit 75"
                            + (f" (`{why}`)" if why else "")
                            + ": not stored, counted as lost here; an MTA would retry them")
    notes = deferred
    for key, r in b["variants"].items():
        if "service" in r:
            sv = r["service"]
            notes.append(f"{key}: {sv['decided_by_service']} of {r['n']} mails decided by the "
                         f"service ({len(sv['per_worker'])} workers), {r['fallbacks']} in "
                         f"process, alive throughout: {'yes' if sv['alive_throughout'] else 'NO'}"
                         f", exit {sv['exit_code']} on SIGTERM"
                         + (f", logged `{sv['problems'][0][:160]}` ({len(sv['problems'])} "
                            "line(s))" if sv["problems"] else ""))
        unexplained = r["check"].get("missing", 0) - int(r["exit_codes"].get("75", 0))
        if unexplained > 0 or r["check"].get("duplicated"):
            notes.append(f"{key}: {r['check']['missing']} mail(s) without a ticket, "
                         f"{r['check']['duplicated']} with more than one")
    for key, why in b["skipped"].items():
        notes.append(f"{key}: not measured: {why}")
    if b["n_inproc"] != b["n"] and any(k.startswith("inproc") for k in b["variants"]):
        notes.append(f"the in-process variants take {b['n_inproc']:,} mails, not {b['n']:,}, to "
                     "keep the whole run in its time budget (BURST_INPROC_N)")
    if notes:
        a("")
        a("Checks: " + "; ".join(notes) + ".")
    return out


def not_measured(target: str, why: str) -> dict:
    return {"target": target, "result": "–", "status": f"not measured: {why}", "ok": None}


def html_targets(mem: dict) -> list[dict]:
    """The HTML-only mail's targets: the pipe's peak and the viewer worker's."""
    h = mem.get("html")
    size = f"{h['mail_bytes'] / 1e6:.1f} MB" if h else "25 MB"
    pipe = f"peak RSS of deliver, {size} HTML-only mail into SQLite < {RSS_TARGET_MB:g} MB"
    viewer = (f"peak RSS of a viewer worker (gunicorn) serving that ticket: its page, "
              f"`message.html`, the whole text < {VIEWER_RSS_TARGET_MB:g} MB")
    if h is None:
        why = "BENCH_MEM_HTML=0" if "html" in mem else "not in this run"
        return [not_measured(pipe, why), not_measured(viewer, why)]

    def worst(kib: list[int]) -> str:
        return (f"{max(kib) * 1024 / 1e6:.1f} MB = {max(kib) / 1024:.1f} MiB (worst of "
                f"{len(kib)})")

    d = h["deliver"]
    out = [{"target": pipe, "result": worst(d["maxrss_kib"]),
            "ok": d["maxrss_mb_max"] < RSS_TARGET_MB}]
    if h["warm"]:
        out.append({"target": "peak RSS of the ingestd worker that took it (VmHWM; reported, "
                    "not judged)", "result": worst(h["warm"]["worker_hwm_kib"]), "ok": None,
                    "status": "–"})
    v = h["viewer"]
    if v:
        out.append({"target": viewer, "result": worst([r["worker_hwm_kib"] for r in v["reps"]]),
                    "ok": v["worker_mb_max"] < VIEWER_RSS_TARGET_MB})
    else:
        out.append(not_measured(viewer, h.get("viewer_skipped") or "not run"))
    for t in out:
        t.setdefault("status", verdict(t["ok"]) if t["ok"] is not None else "–")
    return out


def new_targets(res: dict) -> list[dict]:
    """The targets of the warm path, Roundup, burst and scale: met, missed or not measured."""
    lat, b, sc = res["latency"], res["burst"], res["scale"]
    v = lat["variants"]
    out = []
    names = {"warm_sqlite": "SQLite", "warm_pg": "PostgreSQL"}
    for key, db in names.items():
        target = (f"median(warm deliver, {db}) / median(stdlib baseline) ≤ {WARM_TARGET:g}× "
                  "(same run)")
        if key in v:
            r = v[key]["ratio"]
            out.append({"target": target, "result": f"{r:.2f}×", "ok": r <= WARM_TARGET})
        else:
            why = lat["warm_skipped"] or res["env"]["pg_skipped"] or "not run"
            out.append(not_measured(target, why))
    target = (f"median(deliver in process, SQLite) / median(roundup-mailgw) ≤ "
              f"{ROUNDUP_TARGET:g}× (same rounds)")
    if "roundup" in v:
        r = v["deliver_sqlite"]["ratio_roundup"]
        out.append({"target": target, "result": f"{r:.2f}×", "ok": r <= ROUNDUP_TARGET})
        if "deliver_pg" in v:
            r = v["deliver_pg"]["ratio_roundup"]
            out.append({"target": "median(deliver in process, PostgreSQL) / median(roundup-mailgw)"
                        " (reported, not judged: Roundup runs on SQLite)", "result": f"{r:.2f}×",
                        "ok": None, "status": "–"})
    else:
        out.append(not_measured(target, lat["roundup_skipped"]))
    if b is None:
        out.append(not_measured("burst", "BENCH_BURST=0"))
    else:
        rr = b["variants"].get("roundup")
        for key, db in names.items():
            target = (f"burst ({b['n']:,} mails, {b['k']} in flight): mails/s of warm deliver, "
                      f"{db} ≥ {BURST_TARGET:g}× roundup-mailgw's")
            r = b["variants"].get(key)
            if r is None:
                out.append(not_measured(target, b["skipped"].get(key, "not run")))
            elif rr is None:
                out.append(not_measured(target, "roundup-mailgw: "
                                        + b["skipped"].get("roundup", "not run")))
            else:
                x = r["mails_per_s"] / rr["mails_per_s"]
                out.append({"target": target, "result": f"{x:.1f}× ({r['mails_per_s']:.1f} / "
                            f"{rr['mails_per_s']:.1f} mails/s)", "ok": x >= BURST_TARGET})
        # The target is about the warm path, like the throughput next to it; the
        # in-process variants are reported beside it.
        for which, keys in (("warm deliver", ("warm_sqlite", "warm_pg")),
                            ("deliver in process", ("inproc_sqlite", "inproc_pg"))):
            ours = {k: b["variants"][k] for k in keys if k in b["variants"]}
            if not ours:
                continue
            lost = sum(r["check"]["lost"] for r in ours.values())
            deferred = sum(int(r["exit_codes"].get("75", 0)) for r in ours.values())
            row = {"target": f"burst: no mail lost, {which} ("
                   + ", ".join("SQLite" if k.endswith("sqlite") else "PostgreSQL" for k in ours)
                   + ")", "result": f"{lost} lost of {sum(r['n'] for r in ours.values()):,}"
                   + (f" ({deferred} deferred with exit 75)" if deferred else ""),
                   "ok": lost == 0}
            if which != "warm deliver":
                row["target"] += " (reported, not judged)"
                row["ok"], row["status"] = None, "–"
            out.append(row)
    if sc is None:
        out.append(not_measured("scale", "BENCH_SCALE=0"))
    elif "comparison" in sc:
        for key, r in sc["comparison"]["ratios"].items():
            path, kind = key.split("_")
            label = ("warm deliver" if path == "warm" else "deliver in process") + \
                (", SQLite" if kind == "sqlite" else ", PostgreSQL")
            out.append({"target": f"threaded reply with {sc['big']:,} tickets / with "
                        f"{sc['small']:,} ≤ {scale.TARGET:g}× ({label})",
                        "result": f"{r['ratio']:.2f}× ({r['big_ms']:.1f} / {r['small_ms']:.1f} "
                        "ms)", "ok": r["ok"]})
    for t in out:
        t.setdefault("status", verdict(t["ok"]) if t["ok"] is not None else "–")
    return out


def setup_roundup() -> dict:
    """Roundup's virtualenv (made with pip when missing), or {"skipped": why}."""
    if os.environ.get("BENCH_ROUNDUP") == "0":
        return {"skipped": "BENCH_ROUNDUP=0"}
    try:
        # pip gets the caller's environment (proxy settings, HOME for its config).
        return roundup_bench.ensure_venv(RESULTS / "roundup-venv", PY, dict(os.environ), log)
    except roundup_bench.RoundupUnavailable as exc:
        log(f"roundup-mailgw not measured: {exc}")
        return {"skipped": str(exc)}


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
    me = sys.modules[__name__]
    warm_skip = service.available(pipe_command(), CHILD_ENV)
    if warm_skip:
        log(f"warm variants skipped: {warm_skip}")
    roundup = setup_roundup()
    with Postgres() as pg, Postgres() as pg_warm:
        env = environment(pg)
        env["roundup"] = roundup
        latency = bench_latency(work, pg, pg_warm, warm_skip, roundup)
        imports = bench_imports(work, latency)
        memory = bench_memory(work, latency)
    webres = None
    if os.environ.get("BENCH_WEB") != "0":
        webres = web.bench_web(work, me)
    burstres = None
    if os.environ.get("BENCH_BURST") != "0":
        burstres = burst.bench_burst(work, me, warm_skip, roundup)
    scaleres = None
    if os.environ.get("BENCH_SCALE") != "0":
        scaleres = scale.bench_scale(work, me, warm_skip)
    res = {"env": env, "latency": latency, "memory": memory, "imports": imports, "web": webres,
           "burst": burstres, "scale": scaleres}
    res["wall_s"] = time.perf_counter() - started
    res["env"]["loadavg_end"] = os.getloadavg()
    compute_targets(res)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    res["json_name"] = f"bench-{stamp}{'-quick' if QUICK else ''}.json"
    (RESULTS / res["json_name"]).write_text(json.dumps(res, indent=1, default=str),
                                           encoding="utf-8")
    shutil.copyfile(RESULTS / res["json_name"], RESULTS / ("latest-quick.json" if QUICK
                                                          else "latest.json"))
    if os.environ.get("KEEP") != "1":
        os.chdir(HERE)
        shutil.rmtree(work)
    return publish(res)


def compute_targets(res: dict) -> None:
    imports, memory, latency, webres = (res["imports"], res["memory"], res["latency"],
                                        res["web"])
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
    res["targets"]["new"] = new_targets(res)
    res["targets"]["new_ok"] = all(t["ok"] is not False for t in res["targets"]["new"])
    res["targets"]["memory_html"] = html_targets(memory)
    res["targets"]["memory_html_ok"] = all(t["ok"] is not False
                                           for t in res["targets"]["memory_html"])


def publish(res: dict) -> int:
    """Print the results block, put it in the README (unless QUICK), return the exit code."""
    block = render(res)
    print(block)
    default_update = "0" if res["env"]["quick"] else "1"
    if os.environ.get("UPDATE_README", default_update) == "1":
        update_readme(block)
        log(f"results written to {README} (raw: {RESULTS / res['json_name']})")
    else:
        log(f"README left alone; results in {RESULTS / res['json_name']}")
    failed = not all(res["targets"][k] for k in ("ratio_ok", "rss_ok", "imports_ok", "web_ok",
                                                  "new_ok", "memory_html_ok"))
    unmeasured = [t["target"] for t in res["targets"]["new"] + res["targets"]["memory_html"]
                  if t["status"].startswith("not")]
    if unmeasured:
        log(f"not measured: {'; '.join(unmeasured)}")
    if failed:
        log("a target is missed: see the Targets table")
    return 1 if failed and os.environ.get("CHECK") == "1" else 0


def memory_setup(work: Path, pg: Postgres, warm_skip: str | None) -> dict:
    """What section 2 takes from section 1 when it runs alone: fresh 5 KB mails, the
    in-process configs and databases they go into, the stdlib baseline's database."""
    mail_dir = work / "mails"
    mail_dir.mkdir()
    (work / "stderr").mkdir()
    paths = mails.write_small_mails(mail_dir, 2 * MEM_REPS, SEED)
    nobody = ingestd_toml(work / "nobody-listens.sock")
    sqlite_cfg = write_config(work, f"sqlite:///{work / 'helpdesk.db'}", extra=nobody)
    init_db(sqlite_cfg)
    pg_cfg = None
    if pg.url:
        pg_cfg = write_config(work, pg.url, name="helpdesk-pg.toml", extra=nobody)
        init_db(pg_cfg)
    base = work / "baseline-normal.db"
    make_baseline_db(base)
    return {"extra_mails": paths, "baseline_db": str(base), "warm_skipped": warm_skip,
            "configs": {"sqlite": str(sqlite_cfg), "pg": str(pg_cfg) if pg_cfg else None},
            "mail_bytes": {"median": statistics.median(os.path.getsize(p) for p in paths)}}


def memory_only() -> int:
    """`bench.py --memory`: section 2 alone. Prints its targets and tables; raw results in
    bench/results/memory-<UTC time>.json; with UPDATE_README=1, section 2 and its rows of
    the Targets table replace theirs in the README's results block."""
    RESULTS.mkdir(exist_ok=True)
    work = RESULTS / "work-memory"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    os.chdir(work)
    started = time.perf_counter()
    warm_skip = service.available(pipe_command(), CHILD_ENV)
    if warm_skip:
        log(f"warm variants skipped: {warm_skip}")
    with Postgres() as pg:
        env = environment(pg)
        memory = bench_memory(work, memory_setup(work, pg, warm_skip))
    res = {"env": env, "memory": memory, "wall_s": time.perf_counter() - started}
    res["targets"] = {"rss_ok": memory["deliver"]["maxrss_mb_max"] < RSS_TARGET_MB,
                      "memory_html": html_targets(memory)}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"memory-{stamp}{'-quick' if QUICK else ''}.json"
    (RESULTS / name).write_text(json.dumps(res, indent=1, default=str), encoding="utf-8")
    if os.environ.get("KEEP") != "1":
        os.chdir(HERE)
        shutil.rmtree(work)
    rows = memory_target_rows(memory, res["targets"])
    note = (f"*Section 2 and its rows of the Targets table: a run of section 2 alone "
            f"(`bench/bench.py --memory`), {env['date']}, load average at start "
            f"{env['loadavg_start'][0]:.2f}, {res['wall_s']:.0f} s; raw data "
            f"`bench/results/{name}` (not committed).*"
            + (" **QUICK mode: smoke test, not representative.**" if QUICK else ""))
    section = render_memory(memory)
    section[2:2] = [note, ""]
    print("\n".join(["| target | result | status |", "| --- | ---: | --- |", *rows, "",
                     *section]))
    if os.environ.get("UPDATE_README") == "1":
        splice_memory(rows, section)
        log(f"section 2 written to {README} (raw: {RESULTS / name})")
    else:
        log(f"README left alone; results in {RESULTS / name}")
    failed = not res["targets"]["rss_ok"] or any(t["ok"] is False
                                                 for t in res["targets"]["memory_html"])
    if failed:
        log("a target is missed: see the Targets rows")
    return 1 if failed and os.environ.get("CHECK") == "1" else 0


def splice_memory(rows: list[str], section: list[str]) -> None:
    """Put section 2 and its target rows of another run into the README's results block."""
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(MARK_START, 1)
    block, tail = rest.split(MARK_END, 1)
    lines = block.split("\n")
    old = [i for i, line in enumerate(lines) if line.startswith("| peak RSS of ")]
    start = next((i for i, line in enumerate(lines) if line.startswith("### 2. ")), None)
    end = next((i for i, line in enumerate(lines) if line.startswith("### 3. ")), None)
    if not old or old != list(range(old[0], old[-1] + 1)) or start is None or end is None \
            or not old[-1] < start < end:
        raise SystemExit(f"{README}: no section 2 or Targets rows to replace in the results")
    lines[start:end] = [*section, ""]
    lines[old[0]:old[-1] + 1] = rows
    README.write_text(f"{head}{MARK_START}{chr(10).join(lines)}{MARK_END}{tail}",
                      encoding="utf-8")


def rerender(path: str) -> int:
    """`bench.py --render results/latest.json`: the README block again from a run's raw
    results (after a change to the presentation or to how targets are judged)."""
    res = json.loads(Path(path).read_text(encoding="utf-8"))
    compute_targets(res)
    return publish(res)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        sys.exit(rerender(sys.argv[2]))
    if sys.argv[1:] == ["--memory"]:
        sys.exit(memory_only())
    sys.exit(main())
