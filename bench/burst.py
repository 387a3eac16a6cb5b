"""The burst benchmark: BURST_N distinct mails, BURST_K deliveries in flight at any time.

Each delivery is a whole process spawned like the latency variants (posix_spawn, the MTA's
bare environment, the mail file as stdin); when one is reaped (wait4 on any child) the
next starts, so BURST_K are always running until the mails run out, as when an MTA's queue
runner catches up after an outage. Reported per variant: total time (first spawn to last
reap), mails/s, latency (spawn to reap) p50/p99/max, exit codes, and "lost": mails not
ending as exactly one ticket in the variant's database, counted there afterwards.

bench.py calls bench_burst(); the harness module is passed in as `h` (as for web.py).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import mails
import roundup_bench
import service

__all__ = ["run_burst", "bench_burst", "helpdesk_lost", "percentile"]

QUICK = os.environ.get("QUICK") == "1"
N = int(os.environ.get("BURST_N", 120 if QUICK else 2000))
K = int(os.environ.get("BURST_K", 32))
# In-process variants are ~5x slower: a smaller count keeps the whole run in budget.
N_INPROC = int(os.environ.get("BURST_INPROC_N", 60 if QUICK else 500))
N_ROUNDUP = int(os.environ.get("BURST_ROUNDUP_N", N))
INPROC = os.environ.get("BURST_INPROC", "1") != "0"
SEED_OFFSET = 1  # burst mails use SEED + 1: Message-IDs unlike the latency rounds'


def percentile(ordered: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_burst(argv: list[str], mail_paths: list[str], k: int, env: dict[str, str],
              stderr_path: Path) -> dict:
    """Deliver every mail through `argv`, k processes in flight; every child's stderr is
    appended to one file. Services reaped here by accident go to service.REAPED."""
    actions_err = (os.POSIX_SPAWN_OPEN, 2, str(stderr_path),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    inflight: dict[int, tuple[int, float]] = {}
    latency = [0.0] * len(mail_paths)
    codes = [None] * len(mail_paths)
    following = 0
    started = time.perf_counter()
    while following < len(mail_paths) or inflight:
        while len(inflight) < k and following < len(mail_paths):
            actions = [(os.POSIX_SPAWN_OPEN, 0, mail_paths[following], os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0), actions_err]
            t0 = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
            inflight[pid] = (following, t0)
            following += 1
        pid, status, _usage = os.wait4(-1, 0)
        now = time.perf_counter()
        code = os.waitstatus_to_exitcode(status)
        if pid not in inflight:
            service.REAPED[pid] = code  # a service died: its owner will notice
            continue
        index, t0 = inflight.pop(pid)
        latency[index] = (now - t0) * 1000.0
        codes[index] = code
    total = time.perf_counter() - started
    ordered = sorted(latency)
    return {
        "n": len(mail_paths),
        "k": k,
        "total_s": total,
        "mails_per_s": len(mail_paths) / total,
        "ms": {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90),
               "p99": percentile(ordered, 99), "max": ordered[-1], "min": ordered[0],
               "mean": statistics.fmean(ordered)},
        "exit_codes": {str(c): n for c, n in sorted(Counter(codes).items())},
        "samples_ms": [round(x, 2) for x in latency],
    }


def helpdesk_lost(count_rows, message_ids: list[str]) -> dict:
    """Lost mails in a helpdesk database: each Message-ID must have opened exactly one
    ticket, and there must be as many tickets as mails. `count_rows(sql)` runs a query."""
    rows = count_rows("SELECT message_id, count(DISTINCT ticket_id) FROM mail_record"
                      " WHERE verdict = 'ticket' AND ticket_id IS NOT NULL GROUP BY message_id")
    tickets = int(count_rows("SELECT count(*) FROM ticket")[0][0])
    verdicts = dict(count_rows("SELECT verdict, count(*) FROM mail_record GROUP BY verdict"))
    per_mail = {mid: int(n) for mid, n in rows}
    missing = sum(1 for mid in message_ids if per_mail.get(mid, 0) == 0)
    doubled = sum(1 for mid in message_ids if per_mail.get(mid, 0) > 1)
    return {"tickets": tickets, "missing": missing, "duplicated": doubled,
            "verdicts": {str(k): int(v) for k, v in verdicts.items()},
            "lost": missing + doubled + max(0, tickets - len(message_ids))}


def _sqlite_rows(path: Path):
    import sqlite3

    def run(sql: str) -> list:
        con = sqlite3.connect(path)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    return run


def _pg_rows(url: str):
    def run(sql: str) -> list:
        import psycopg

        with psycopg.connect(url) as con:
            return con.execute(sql).fetchall()
    return run


def bench_burst(work: Path, h: ModuleType, warm_skip: str | None,
                roundup: dict | None) -> dict:
    """Section 5. `warm_skip` says why the warm variants cannot run (None: they can);
    `roundup` is bench.py's Roundup set-up (None or {"skipped": reason} when absent)."""
    bdir = work / "burst"
    bdir.mkdir()
    seed = h.SEED + SEED_OFFSET
    largest = max(N, N_INPROC if INPROC else 0, N_ROUNDUP if roundup_ok(roundup) else 0)
    h.log(f"burst: writing {largest} mails")
    mail_dir = bdir / "mails"
    mail_dir.mkdir()
    paths = mails.write_small_mails(mail_dir, largest, seed)
    ids = [f"<bench.small.{seed}.{i:06d}@univ.example>" for i in range(largest)]
    sizes = [os.path.getsize(p) for p in paths]
    pipe = h.pipe_command()
    out: dict = {"k": K, "n": N, "n_inproc": N_INPROC, "n_roundup": N_ROUNDUP,
                 "mail_bytes": {"min": min(sizes), "max": max(sizes)},
                 "variants": {}, "skipped": {}}

    def helpdesk_variant(key: str, label: str, n: int, warm: bool, pg: bool) -> None:
        vdir = bdir / key
        vdir.mkdir()
        with h.Postgres() if pg else contextlib.nullcontext() as db:
            if pg and not db.url:
                out["skipped"][key] = db.skipped
                return
            url = db.url if pg else f"sqlite:///{vdir / 'helpdesk.db'}"
            sock = vdir / ("ingestd.sock" if warm else "nobody-listens.sock")
            cfg = h.write_config(vdir, url, extra=h.ingestd_toml(sock))
            h.init_db(cfg)
            argv = [*pipe, "--config", str(cfg), "deliver", "--queue", "dsi"]
            svc = None
            if warm:
                svc = service.Ingestd(pipe, cfg, sock, vdir / "ingestd.stderr", h.CHILD_ENV)
                svc.start()
            h.log(f"burst: {key}: {n} mails, {K} in flight")
            try:
                res = run_burst(argv, paths[:n], K, h.CHILD_ENV, vdir / "deliveries.stderr")
                if svc is not None:
                    res["service"] = {"alive_throughout": svc.alive(),
                                      "per_worker": dict(svc.decided()),
                                      "problems": svc.problems()[:20]}
            finally:
                code = svc.stop() if svc is not None else None
            if svc is not None:
                res["service"]["decided_by_service"] = sum(res["service"]["per_worker"].values())
                res["service"]["exit_code"] = code
                res["service"]["socket_removed"] = not sock.exists()
            rows = _pg_rows(db.url) if pg else _sqlite_rows(vdir / "helpdesk.db")
            res["check"] = helpdesk_lost(rows, ids[:n])
        res["fallbacks"] = service.fallbacks(vdir / "helpdesk.log") if warm else None
        res["label"] = label
        res["stderr_tail"] = _tail(vdir / "deliveries.stderr")
        out["variants"][key] = res
        h.log(f"  {key}: {res['mails_per_s']:.1f} mails/s, p50 {res['ms']['p50']:.0f} ms, "
              f"p99 {res['ms']['p99']:.0f} ms, exits {res['exit_codes']}, "
              f"lost {res['check']['lost']}")

    if warm_skip:
        out["skipped"]["warm_sqlite"] = out["skipped"]["warm_pg"] = warm_skip
    else:
        helpdesk_variant("warm_sqlite", "**warm deliver**, SQLite (ingestd running)", N,
                         True, False)
        helpdesk_variant("warm_pg", "**warm deliver**, PostgreSQL (ingestd running)", N,
                         True, True)
    if roundup_ok(roundup):
        rdir = bdir / "roundup"
        rdir.mkdir()
        venv = Path(roundup["venv"])
        home = roundup_bench.make_tracker(venv, rdir / "tracker", mails.senders(), h.CHILD_ENV)
        h.log(f"burst: roundup: {N_ROUNDUP} mails, {K} in flight")
        res = run_burst([str(venv / "bin" / "roundup-mailgw"), str(home)], paths[:N_ROUNDUP],
                        K, h.CHILD_ENV, rdir / "deliveries.stderr")
        res["check"] = roundup_bench.lost_mails(home, ids[:N_ROUNDUP])
        res["label"] = f"roundup-mailgw {roundup['version']} (classic tracker, sqlite)"
        res["stderr_tail"] = _tail(rdir / "deliveries.stderr")
        out["variants"]["roundup"] = res
        h.log(f"  roundup: {res['mails_per_s']:.1f} mails/s, p50 {res['ms']['p50']:.0f} ms, "
              f"p99 {res['ms']['p99']:.0f} ms, exits {res['exit_codes']}, "
              f"lost {res['check']['lost']}")
    else:
        out["skipped"]["roundup"] = (roundup or {}).get("skipped", "not set up")
    if INPROC:
        helpdesk_variant("inproc_sqlite", "in-process deliver, SQLite (no service)", N_INPROC,
                         False, False)
        helpdesk_variant("inproc_pg", "in-process deliver, PostgreSQL (no service)", N_INPROC,
                         False, True)
    else:
        out["skipped"]["inproc_sqlite"] = out["skipped"]["inproc_pg"] = "BURST_INPROC=0"
    return out


def roundup_ok(roundup: dict | None) -> bool:
    return bool(roundup) and "skipped" not in roundup


def _tail(path: Path, lines: int = 5) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-lines:] if text.strip() else []
