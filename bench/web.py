"""The viewer benchmark: the ticket page of a 50-entry thread under gunicorn, against the
minimal Flask page (bench/minimal_app.py) served the same way, in the same run.

bench.py calls bench_web() (section 4 of bench/README.md); it can also run alone:

  .venv/bin/python bench/web.py             this part only: prints its table, README untouched
  .venv/bin/python bench/web.py --profile   one SQLite thread, then the ticket page in-process
                                            (Flask test client) under cProfile: top functions

Method: each server is `gunicorn -w 2 -b 127.0.0.1:PORT` (sync workers, the default),
started for one measurement and stopped after it. One load generator for both (load()):
WEB_THREADS threads, each opening a new connection per request (sync workers close it
anyway), WEB_WARMUP seconds not counted, then WEB_SECONDS measured; every latency is kept.
Rounds run every server once in a new seeded random order, so drift hits all of them.

Environment (all optional): WEB_ROUNDS (default 3), WEB_THREADS (8), WEB_WARMUP (2 s),
WEB_SECONDS (10 s); QUICK=1 makes it 1 round of 1 + 3 s; BENCH_WEB=0 skips it in bench.py;
BENCH_PG=0 / BENCH_PG_URL as for bench.py.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import mails

HERE = Path(__file__).resolve().parent
QUICK = os.environ.get("QUICK") == "1"
ROUNDS = int(os.environ.get("WEB_ROUNDS", 1 if QUICK else 3))
THREADS = int(os.environ.get("WEB_THREADS", 8))
WARMUP_S = float(os.environ.get("WEB_WARMUP", 1 if QUICK else 2))
SECONDS = float(os.environ.get("WEB_SECONDS", 3 if QUICK else 10))
WORKERS = 2
HOST = "127.0.0.1"

TARGET = 0.4  # ticket page throughput / minimal page throughput, at least
ENTRIES = 50  # entries in the thread: the first mail and 49 replies
HTML_EVERY = 5  # entries 2, 7, 12... carry a text/html alternative
QUOTE_EVERY = 5  # entries 4, 9, 14... quote the previous one (trimmed by the pipe)
ATTACHMENT_AT = 25  # this entry carries a PDF
ENTRY_MARK = '<li class="entry '  # one per thread entry in webview/templates/ticket.html
HTML_MARK = 'class="body html"'
# What a browser sends (the ticket page reads Accept-Language); the same for both servers.
REQUEST_HEADERS = {
    "User-Agent": "helpdesk-bench-web/1",
    "Accept": "text/html,application/xhtml+xml",
    "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5",
}
WEB_TOML = '[web]\nbase_url = "http://127.0.0.1:8080"\n\n'
_SENDER = Address("Chloé Dubois", "chloe.dubois", "univ.example")
_EPOCH = datetime(2026, 11, 2, 8, 30, tzinfo=timezone(timedelta(hours=1)))
_SUBJECT = "Accès VPN refusé depuis la mise à jour du poste"


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the thread --------------------------------------------------------------------------


def _html_of(text: str, rng: random.Random, index: int) -> str:
    """An HTML alternative as a mail client writes it: head with a style, paragraphs,
    a bold word, a link, and a signature logo (a remote image) in one of them."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    parts = []
    for p in paragraphs:
        words = html.escape(p.replace("\n", " ")).split(" ")
        if len(words) > 6:
            k = rng.randrange(len(words) - 3)
            words[k] = f"<b>{words[k]}</b>"
        parts.append("<p>" + " ".join(words) + "</p>")
    parts.insert(1, '<p>Voir <a href="https://intranet.univ.example/aide/vpn">la page '
                    "d'aide VPN</a>.</p>")
    if index == 2 + 2 * HTML_EVERY:
        parts.append('<p><img src="https://www.univ.example/logo-signature.png" '
                     'alt="Université d\'exemple" width="120" height="40"></p>')
    return ("<html><head><meta charset=\"utf-8\"><style>p{margin:0 0 1em}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def thread_mails(seed: int) -> list[bytes]:
    """The first mail of the ticket and 49 replies to it by the same requester: they thread
    by In-Reply-To / References. Deterministic (seeded, explicit MIME boundaries)."""
    rng = random.Random(f"{seed}:web")
    first_id = f"<bench.web.{seed}.000@univ.example>"
    out: list[bytes] = []
    previous = ""
    for i in range(ENTRIES):
        msg = EmailMessage(policy=policy.default)
        msg["From"] = _SENDER
        msg["To"] = mails.QUEUE_ADDRESS
        msg["Subject"] = _SUBJECT if i == 0 else "Re: " + _SUBJECT
        when = _EPOCH + timedelta(hours=3 * i, minutes=rng.randrange(60))
        msg["Date"] = format_datetime(when)
        msg["Message-ID"] = f"<bench.web.{seed}.{i:03d}@univ.example>"
        if i:
            msg["In-Reply-To"] = first_id
            msg["References"] = first_id
        msg["User-Agent"] = "Mozilla/5.0 Thunderbird/128.5.0"
        text = mails._body(rng, rng.randint(400, 1_600))
        if i and i % QUOTE_EVERY == 4:
            quoted = "\n".join("> " + line for line in previous.splitlines())
            text += f"\nLe {format_datetime(when - timedelta(hours=3))}, {_SENDER} a écrit :\n"
            text += quoted + "\n"
        msg.set_content(text, cte="8bit")
        if i % HTML_EVERY == 2:
            msg.add_alternative(_html_of(text, rng, i), subtype="html", cte="quoted-printable")
        if i == ATTACHMENT_AT:
            pdf = b"%PDF-1.4\n" + rng.randbytes(48_000) + b"\n%%EOF\n"
            msg.add_attachment(pdf, maintype="application", subtype="pdf",
                               filename="capture-erreur-vpn.pdf")
        if msg.is_multipart():
            msg.set_boundary(f"=====bench-web-{seed}-{i}=====")
        previous = text
        out.append(msg.as_bytes())
    return out


def expected_html_entries() -> int:
    return sum(1 for i in range(ENTRIES) if i % HTML_EVERY == 2)


def make_ticket(h: ModuleType, directory: Path, url: str, name: str, seed: int) -> dict:
    """A fresh database with one ticket of ENTRIES entries; its config and its page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = h.write_config(directory, url, name=name, extra=WEB_TOML)
    h.init_db(cfg)
    pipe = [*h.pipe_command(), "--config", str(cfg)]
    mail_dir = directory / "thread-mails"
    mail_dir.mkdir(exist_ok=True)
    sizes = []
    for i, raw in enumerate(thread_mails(seed)):
        path = mail_dir / f"{i:03d}.eml"
        path.write_bytes(raw)
        sizes.append(len(raw))
        with open(path, "rb") as fh:
            h.run_checked([*pipe, "deliver", "--queue", "dsi"], stdin=fh, timeout=120)
    tickets = json.loads(h.run_checked([*pipe, "ticket", "list", "--json"]).stdout)
    if len(tickets) != 1:
        raise SystemExit(f"web: {len(tickets)} tickets in {url}, expected 1 (did not thread)")
    ticket_id = int(tickets[0]["id"])
    shown = json.loads(h.run_checked([*pipe, "ticket", "show", str(ticket_id), "--json"]).stdout)
    articles = shown["articles"]
    public = [a for a in articles if not a["internal"]]
    files = sum(len(a["attachments"]) for a in public)
    with_html = sum(1 for a in public if a["body_html"])
    if len(public) != ENTRIES or files != 1 or with_html != expected_html_entries():
        raise SystemExit(f"web: ticket #{ticket_id} has {len(public)} public articles, {files} "
                         f"attachments, {with_html} HTML bodies; expected {ENTRIES}, 1, "
                         f"{expected_html_entries()}")
    link = h.run_checked([*pipe, "ticket", "link", str(ticket_id)]).stdout.strip().split()[-1]
    return {
        "config": str(cfg),
        "ticket_id": ticket_id,
        "path": urlsplit(link).path,
        "articles": len(articles),
        "public_articles": len(public),
        "html_bodies": with_html,
        "attachments": files,
        "trimmed": sum(1 for a in public if a["body_shown"] != a["body_text"]),
        "mail_bytes": {"min": min(sizes), "max": max(sizes), "total": sum(sizes)},
    }


# -- the servers -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and int(stat[1]) == pid:
                kids.append(int(entry))
    return kids


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (state is field 3, utime 14, stime 15)."""
    total = 0
    for pid in pids:
        stat = _proc_stat(pid)
        if stat:
            total += int(stat[11]) + int(stat[12])
    return total / _TICK


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine since boot (/proc/stat, all CPUs)."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


class Gunicorn:
    """`gunicorn -w 2 -b 127.0.0.1:PORT APP` in its own session, logging to a file."""

    def __init__(self, py: str, app: str, env: dict[str, str], log_path: Path,
                 chdir: Path | None = None, extra: list[str] | None = None) -> None:
        self.port = _free_port()
        argv = [str(Path(py).parent / "gunicorn"), "-w", str(WORKERS), "-b",
                f"{HOST}:{self.port}"]
        if chdir:
            argv += ["--chdir", str(chdir)]
        self.argv = [*argv, *(extra or []), app]
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.workers: list[int] = []

    def __enter__(self) -> Gunicorn:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.log_path.parent)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"web: gunicorn exited {self.proc.returncode}: "
                                 f"{' '.join(self.argv)}\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"web: gunicorn not ready after 60 s: {' '.join(self.argv)}")
            self.workers = _children(self.proc.pid)
            if len(self.workers) == WORKERS:
                try:
                    status, _ = fetch(self.port, "/__ready__")  # any answer from a worker
                    if status:
                        return self
                except OSError:
                    pass
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: workers finish, then exit
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# -- the load generator ------------------------------------------------------------------


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a new connection, the body read to the end."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path, headers=REQUEST_HEADERS)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def percentile(ordered: list[float], p: int) -> float:
    if len(ordered) < 2:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[p - 1]


def load(port: int, path: str, pids: list[int], threads: int = THREADS,
         warmup: float = WARMUP_S, seconds: float = SECONDS) -> dict:
    """THREADS clients in a closed loop for warmup + seconds. Counted: the requests that
    completed inside the measured window; throughput = those / the window's length. CPU of
    the server's workers and of this process (the client) over the same window."""
    t0 = time.perf_counter() + 0.05
    t_measure, t_end = t0 + warmup, t0 + warmup + seconds
    results: list[list[tuple[float, float, int, int]]] = [[] for _ in range(threads)]
    failures: list[str] = []

    def client(out: list) -> None:
        while True:
            start = time.perf_counter()
            if start >= t_end:
                return
            try:
                status, body = fetch(port, path)
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                status, body = 0, b""
            end = time.perf_counter()
            out.append((start, end, status, len(body)))

    pool = [threading.Thread(target=client, args=(results[k],)) for k in range(threads)]
    for t in pool:
        t.start()
    time.sleep(max(0.0, t_measure - time.perf_counter()))
    cpu_a, client_a, machine_a = _cpu_seconds(pids), time.process_time(), _machine_cpu()
    time.sleep(max(0.0, t_end - time.perf_counter()))
    cpu_b, client_b, machine_b = _cpu_seconds(pids), time.process_time(), _machine_cpu()
    for t in pool:
        t.join()
    inside = [r for rs in results for r in rs if t_measure <= r[1] < t_end]
    statuses: dict[int, int] = {}
    for r in (r for rs in results for r in rs):
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    lat = sorted((r[1] - r[0]) * 1000.0 for r in inside)
    n = len(inside)
    if n == 0:
        raise SystemExit(f"web: no request completed in {seconds:g} s: statuses {statuses}, "
                         f"failures {failures[:5]}")
    return {
        "requests": n,
        "rps": n / seconds,
        "ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90),
               "p99": percentile(lat, 99), "mean": statistics.fmean(lat),
               "min": lat[0], "max": lat[-1]},
        "statuses": {str(k): v for k, v in statuses.items()},
        "failures": failures[:5],
        "response_bytes": statistics.median(r[3] for r in inside),
        "server_cpu_s": cpu_b - cpu_a,
        "server_cpu_ms_per_request": (cpu_b - cpu_a) * 1000.0 / n,
        "client_cpu_share": (client_b - client_a) / seconds,
        # CPU-seconds per second: the whole machine's busy time, and what of it was neither
        # the workers nor the client (the kernel's loopback work, gunicorn's master, and any
        # other job running on the machine at the same time).
        "machine_busy": (machine_b[0] - machine_a[0]) / seconds,
        "machine_cpus": (machine_b[1] - machine_a[1]) / seconds,
        "other_cpu": (machine_b[0] - machine_a[0] - (cpu_b - cpu_a) - (client_b - client_a))
        / seconds,
        "samples_ms": [round(x, 3) for x in lat],
    }


# -- one run -----------------------------------------------------------------------------


def _check_page(key: str, status: int, body: bytes) -> None:
    page = body.decode("utf-8", "replace")
    if key == "minimal":
        ok = status == 200 and "Minimal page" in page
        if not ok:
            raise SystemExit(f"web: minimal page answered {status}: {page[:500]}")
        return
    entries, htmls = page.count(ENTRY_MARK), page.count(HTML_MARK)
    links = len(re.findall(r'href="/t/[^"/]+/a/\d+"', page))
    if status != 200 or entries != ENTRIES or htmls != expected_html_entries() or links != 1:
        raise SystemExit(f"web: {key} page answered {status} with {entries} entries, {htmls} "
                         f"HTML bodies, {links} attachment links; expected 200, {ENTRIES}, "
                         f"{expected_html_entries()}, 1:\n{page[:1000]}")


def bench_web(work: Path, h: ModuleType) -> dict:
    """Section 4 of the benchmark. `h` is bench.py (write_config, init_db, Postgres...)."""
    wdir = work / "web"
    wdir.mkdir()
    started = time.perf_counter()
    with h.Postgres() as pg:  # a schema of its own: ticket #1 is ours
        _log("web: building the 50-entry thread (SQLite)")
        tickets = {"ticket_sqlite": make_ticket(h, wdir / "sqlite", f"sqlite:///{wdir}/web.db",
                                                "web.toml", h.SEED)}
        if pg.url:
            _log("web: building the 50-entry thread (PostgreSQL)")
            tickets["ticket_pg"] = make_ticket(h, wdir / "pg", pg.url, "web-pg.toml", h.SEED)
        setup_s = time.perf_counter() - started
        inprocess = in_process(h.PY, tickets["ticket_sqlite"], work)
        servers = {
            "minimal": {"label": "minimal Flask page (`bench/minimal_app.py`)",
                        "app": "minimal_app:app", "chdir": HERE, "path": "/", "env": {}},
        }
        for key, t in tickets.items():
            db = "SQLite" if key == "ticket_sqlite" else "PostgreSQL"
            servers[key] = {"label": f"**ticket page**, {ENTRIES} entries, {db}",
                            "app": "webview:create_app()", "chdir": None, "path": t["path"],
                            "env": {"HELPDESK_CONFIG": t["config"]}}
        rng = random.Random(h.SEED)
        runs: dict[str, list[dict]] = {k: [] for k in servers}
        orders = []
        for r in range(ROUNDS):
            order = list(servers)
            rng.shuffle(order)
            orders.append(order)
            for key in order:
                s = servers[key]
                env = {**h.CHILD_ENV, **s["env"]}
                with Gunicorn(h.PY, s["app"], env, wdir / f"gunicorn-{key}.log",
                              s["chdir"]) as server:
                    _check_page(key, *fetch(server.port, s["path"]))
                    res = load(server.port, s["path"], server.workers)
                bad = {k: v for k, v in res["statuses"].items() if k != "200"}
                if bad or res["failures"]:
                    raise SystemExit(f"web: {key} round {r + 1}: statuses {res['statuses']}, "
                                     f"failures {res['failures']}")
                runs[key].append(res)
                _log(f"  round {r + 1}/{ROUNDS} {key}: {res['rps']:.0f} req/s, p50 "
                     f"{res['ms']['p50']:.1f} ms, p99 {res['ms']['p99']:.1f} ms, server CPU "
                     f"{res['server_cpu_ms_per_request']:.2f} ms/req, client CPU "
                     f"{100 * res['client_cpu_share']:.0f}%, other CPU "
                     f"{100 * res['other_cpu']:.0f}%")
    out: dict = {
        "rounds": ROUNDS, "threads": THREADS, "warmup_s": WARMUP_S, "seconds": SECONDS,
        "workers": WORKERS, "target": TARGET, "tickets": tickets, "orders": orders,
        "setup_s": setup_s, "in_process": inprocess, "servers": {},
        "gunicorn": _version("gunicorn"), "flask": _version("flask"),
    }
    base = runs["minimal"]
    for key, s in servers.items():
        rs = runs[key]
        entry = {
            "label": s["label"],
            "rps_median": statistics.median(r["rps"] for r in rs),
            "rps_all": [round(r["rps"], 1) for r in rs],
            "p50_median": statistics.median(r["ms"]["p50"] for r in rs),
            "p99_median": statistics.median(r["ms"]["p99"] for r in rs),
            "cpu_ms_median": statistics.median(r["server_cpu_ms_per_request"] for r in rs),
            "client_cpu_share_median": statistics.median(r["client_cpu_share"] for r in rs),
            "other_cpu_median": statistics.median(r["other_cpu"] for r in rs),
            "response_bytes": rs[0]["response_bytes"],
            "requests": sum(r["requests"] for r in rs),
            "paired_ratio_median": statistics.median(
                a["rps"] / b["rps"] for a, b in zip(rs, base, strict=True)),
            "runs": rs,
        }
        out["servers"][key] = entry
    bmed = out["servers"]["minimal"]["rps_median"]
    for entry in out["servers"].values():
        entry["ratio"] = entry["rps_median"] / bmed
    out["targets"] = {key: out["servers"][key]["ratio"] >= TARGET for key in tickets}
    out["wall_s"] = time.perf_counter() - started
    return out


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- section 2: the ticket of the big HTML-only mail in a worker --------------------------

# webview/data.py TEXT_LIMIT: the characters of an entry's text its page shows.
VIEWER_TEXT_LIMIT = 200_000
NOTICE_MARK = '<p class="notice">'
# gunicorn's access log, one line per request: the worker's pid, the path, status, bytes.
_ACCESS = ["--access-logfile", "-", "--access-logformat",
           "served %(p)s %(U)s %(q)s %(s)s %(B)s"]
_SERVED = re.compile(r"^served <(\d+)> (\S+) (\S*) (\d+) (\d+)$", re.M)
# A page that is another key of the page cache (webview/views.py _page): it warms a
# worker (templates compiled, catalogues loaded) and leaves the pages measured uncached.
_WARM_QUERY = "images=1"
# The one thing of a page that is the reader's own (a new session per connection here).
_CSRF = re.compile(rb'name="csrf_token" value="[^"]*"')


def viewer_unavailable(py: str) -> str | None:
    """None when gunicorn and webview are there next to `py` (as bench/run.sh checks)."""
    if not (Path(py).parent / "gunicorn").exists():
        return f"no gunicorn next to {py}"
    res = subprocess.run([py, "-c", "import webview"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "LANG": "C"})
    return None if res.returncode == 0 else f"webview not importable: {res.stderr[-200:]}"


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise SystemExit(f"web: no VmHWM for pid {pid}")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def viewer_memory(h: ModuleType, cfg: Path, big: str, small: str, expect: dict,
                  log_path: Path, rounds: int) -> dict:
    """The big HTML-only mail's ticket served by a real gunicorn worker (started as
    section 4 starts the ticket page's): its page, its `message.html` and its whole
    text downloaded, each checked; the peak RSS of the workers (VmHWM, read from
    /proc/<pid>/status after every request; the workers must be the same processes at
    the end, so no peak left with a replaced one); then the page's latency against a
    small ticket's page of the same database: once each rendered (both workers warmed
    first by another page, so neither pays its first request), then `rounds` times each
    from the workers' page cache, in a seeded order.

    `expect`: the bytes and sha256 of the HTML the attachment must hold, the sha256 of
    the ticket's whole text (as stored) and a phrase from its end the page must not show."""
    env = {**h.CHILD_ENV, "HELPDESK_CONFIG": str(cfg)}
    with Gunicorn(h.PY, "webview:create_app()", env, log_path, extra=_ACCESS) as server:
        workers = sorted(server.workers)
        idle = {pid: _vm_hwm_kib(pid) for pid in workers}
        served: list[dict] = []

        def get(kind: str, path: str) -> bytes:
            start = time.perf_counter()
            status, body = fetch(server.port, path)
            ms = (time.perf_counter() - start) * 1000.0
            served.append({"kind": kind, "path": path, "status": status, "bytes": len(body),
                           "ms": ms, "hwm_kib": {p: _vm_hwm_kib(p) for p in workers}})
            if status != 200:
                raise SystemExit(f"web (memory): {kind} {path} answered {status}: "
                                 f"{body[:300]!r}")
            return body

        def logged(query: str) -> set[int]:
            return {int(m[0]) for m in _SERVED.findall(log_path.read_text()) if m[2] == query}

        for _ in range(10):  # until both workers have served a page
            for _ in range(2 * WORKERS):
                get("warm-up", f"{small}?{_WARM_QUERY}")
            time.sleep(0.2)  # a worker logs a request after its answer
            if logged(_WARM_QUERY) == set(workers):
                break
        else:
            raise SystemExit(f"web (memory): warm-up requests reached workers "
                             f"{sorted(logged(_WARM_QUERY))} of {workers}")
        page = get("small page", small).decode("utf-8", "replace")
        if page.count(ENTRY_MARK) != 1 or NOTICE_MARK in page:
            raise SystemExit(f"web (memory): the small ticket's page shows "
                             f"{page.count(ENTRY_MARK)} entries, a cut notice: "
                             f"{NOTICE_MARK in page}")
        raw_page = get("page", big)
        page = raw_page.decode("utf-8", "replace")
        same_page = _CSRF.sub(b"", raw_page)
        files = re.findall(r'href="(/t/[^"/]+/a/\d+)" download>([^<]*)</a>', page)
        texts = re.findall(r'href="(/t/[^"/]+/e/\d+/text)" download>', page)
        problems = []
        if page.count(ENTRY_MARK) != 1:
            problems.append(f"{page.count(ENTRY_MARK)} entries, expected 1")
        if HTML_MARK in page:
            problems.append("the HTML is shown (it is over what is cleaned)")
        if NOTICE_MARK not in page or len(texts) != 1:
            problems.append(f"cut notice: {NOTICE_MARK in page}, whole-text links: {len(texts)}")
        if [name for _, name in files] != ["message.html"]:
            problems.append(f"attachments listed: {[name for _, name in files]}")
        if expect["start"] not in page or expect["end"] in page:
            problems.append(f"start of the text shown: {expect['start'] in page}, its end "
                            f"shown: {expect['end'] in page}")
        if problems:
            raise SystemExit("web (memory): the big ticket's page: " + "; ".join(problems))
        attached = get("message.html", files[0][0])
        if len(attached) != expect["html_bytes"] or _sha256(attached) != expect["html_sha256"]:
            raise SystemExit(f"web (memory): message.html is {len(attached)} bytes "
                             f"(sha256 {_sha256(attached)[:12]}), expected "
                             f"{expect['html_bytes']} ({expect['html_sha256'][:12]})")
        del attached
        whole = get("whole text", texts[0])
        if _sha256(whole) != expect["text_sha256"] or expect["end"].encode() not in whole:
            raise SystemExit(f"web (memory): the whole text is {len(whole)} bytes, not the "
                             "stored text")
        whole_bytes = len(whole)
        del whole
        rng = random.Random(f"{h.SEED}:viewer-memory")
        timing: dict[str, list[float]] = {"page": [], "small page": []}
        warm = 2 * WORKERS  # each worker has rendered and cached both pages
        for r in range(warm + rounds):
            order = [("page", big), ("small page", small)]
            rng.shuffle(order)
            for kind, path in order:
                body = get(kind, path)
                if kind == "page" and _CSRF.sub(b"", body) != same_page:
                    raise SystemExit("web (memory): the big ticket's page changed")
                if r >= warm:
                    timing[kind].append(served[-1]["ms"])
        now = sorted(_children(server.proc.pid))
        if now != workers:
            raise SystemExit(f"web (memory): gunicorn's workers changed from {workers} to {now}"
                             " (one was replaced: its peak went with it)")
    # Two workers write the log, not always in the order the requests were sent, and
    # the viewer's logging hides the token (`/t/…`); the downloads' paths are still one
    # of a kind, so they tell which worker served them.
    def hidden(path: str) -> str:
        return re.sub(r"^/t/[^/?]+", "/t/…", path.split("?")[0])

    lines = [(int(pid), hidden(path)) for pid, path, _q, _s, _b in
             _SERVED.findall(log_path.read_text()) if path != "/__ready__"]
    by = {path: pid for pid, path in lines}
    for r in served:
        r["logged_path"] = hidden(r["path"])
    if Counter(p for _, p in lines) != Counter(r["logged_path"] for r in served):
        raise SystemExit(f"web (memory): the access log lists {len(lines)} requests, "
                         f"{len(served)} were sent")
    peak = {pid: max(r["hwm_kib"][pid] for r in served) for pid in workers}
    first = {kind: next(r for r in served if r["kind"] == kind) for kind in
             ("page", "small page", "message.html", "whole text")}
    after_page = max(first["page"]["hwm_kib"].values())  # pages served, no download yet
    med = {kind: statistics.median(v) for kind, v in timing.items()}
    return {
        "workers": workers,
        "idle_hwm_kib": idle,
        "peak_hwm_kib": peak,
        "worker_hwm_kib": max(peak.values()),
        "page_worker_hwm_kib": after_page,
        "downloads_by": {k: by.get(first[k]["logged_path"]) for k in ("message.html",
                                                                      "whole text")},
        "page_bytes": len(raw_page),
        "text_bytes": whole_bytes,
        "first_ms": {k: r["ms"] for k, r in first.items()},
        "rendered_ratio": first["page"]["ms"] / first["small page"]["ms"],
        "rounds": rounds,
        "ms_median": med,
        "ratio": med["page"] / med["small page"],
        "samples_ms": {k: [round(x, 3) for x in v] for k, v in timing.items()},
        "requests": len(served),
    }


# -- in process: no server, no network ---------------------------------------------------


def in_process(py: str, ticket: dict, work: Path) -> dict:
    """The two pages through the Flask test client, in a process of their own (the harness
    stays free of Flask): median ms per request, and the ticket page's top functions."""
    res = subprocess.run([py, str(Path(__file__).resolve()), "--in-process", ticket["config"],
                          ticket["path"]], capture_output=True, text=True, cwd=work,
                         env={"PATH": "/usr/bin:/bin", "LANG": "C"}, timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"web: in-process measurement failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout)


def _profile_pages(config: str, path: str, reps: int = 200, top: int = 15) -> dict:
    import cProfile
    import pstats

    sys.path.insert(0, str(HERE))
    import minimal_app

    from webview import create_app

    app = create_app(config)
    clients = {"minimal": (minimal_app.app.test_client(), "/"),
               "ticket_sqlite": (app.test_client(), path)}
    timing = {}
    for key, (client, url) in clients.items():
        for _ in range(20):  # templates compiled, caches warm, as in a worker after warm-up
            response = client.get(url, headers=REQUEST_HEADERS)
            if response.status_code != 200:
                raise SystemExit(f"{key}: {response.status_code}")
        _check_page(key, 200, response.data)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            client.get(url, headers=REQUEST_HEADERS).close()
            times.append((time.perf_counter() - t) * 1000.0)
        timing[key] = {"ms_median": statistics.median(times), "ms_min": min(times)}
    client, url = clients["ticket_sqlite"]
    profiler = cProfile.Profile()
    n = 50
    profiler.enable()
    for _ in range(n):
        client.get(url, headers=REQUEST_HEADERS).close()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]

    def rows(index: int, ours: bool = False) -> list[dict]:
        items = sorted(stats.stats.items(), key=lambda kv: -kv[1][index])  # type: ignore
        if ours:  # the project's own functions and templates, where a fix would go
            items = [kv for kv in items if "/webview/" in kv[0][0] or "/helpdesk/" in kv[0][0]]
        out = []
        for (file, line, func), (_cc, calls, tt, ct, _callers) in items[:top]:
            short = file
            for prefix in (str(HERE.parent) + "/", "site-packages/"):
                if prefix in short:
                    short = short.split(prefix, 1)[1]
            out.append({"function": f"{short}:{line}({func})", "calls_per_request": calls / n,
                        "tottime_ms": tt * 1000 / n, "cumtime_ms": ct * 1000 / n})
        return out

    return {"reps": reps, "timing": timing, "profiled_requests": n,
            "profile_ms_per_request": total * 1000 / n,
            "top_tottime": rows(2), "top_cumtime": rows(3), "top_ours": rows(3, ours=True)}


# -- report ------------------------------------------------------------------------------


def target_rows(web: dict) -> list[str]:
    """Rows of the README's Targets table."""
    rows = []
    for key, ok in web["targets"].items():
        db = "SQLite" if key == "ticket_sqlite" else "PostgreSQL"
        s = web["servers"][key]
        rows.append(f"| ticket page throughput / minimal page throughput ≥ {TARGET:g}× "
                    f"(gunicorn, {WORKERS} workers, {ENTRIES} entries, {db}) | {s['ratio']:.2f}× "
                    f"| {'**met**' if ok else '**NOT met**'} |")
    return rows


def render(web: dict) -> list[str]:
    out: list[str] = []
    a = out.append
    t = web["tickets"]["ticket_sqlite"]
    a(f"### 4. The ticket page under gunicorn ({web['rounds']} round(s) of {web['warmup_s']:g} s "
      f"warm-up + {web['seconds']:g} s measured per server, {web['threads']} client threads)")
    a("")
    a(f"`gunicorn -w {web['workers']}` (sync workers; gunicorn {web['gunicorn']}, Flask "
      f"{web['flask']}) on {HOST}, one server at a time, servers in a new random order each "
      f"round. The ticket: {t['public_articles']} entries ({t['html_bodies']} with an HTML "
      f"body, {t['trimmed']} replies shown trimmed of their quote, 1 PDF attachment), delivered "
      f"by `helpdesk-pipe deliver` into a fresh database; page checked once per server start "
      f"({ENTRIES} entries, every status 200). Load: one new connection per request, latency "
      f"from connect to the last byte; medians over rounds.")
    a("")
    a("| server | req/s (median) | p50 ms | p99 ms | × minimal (ratio of medians) | "
      "× minimal (median of per-round ratios) | server CPU ms/req | page bytes |")
    a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in web["servers"].values():
        a(f"| {s['label']} | {s['rps_median']:.0f} | {s['p50_median']:.1f} | "
          f"{s['p99_median']:.1f} | {s['ratio']:.2f} | {s['paired_ratio_median']:.2f} | "
          f"{s['cpu_ms_median']:.2f} | {s['response_bytes']:,.0f} |")
    a("")
    rounds = "; ".join(f"{k} {', '.join(f'{x:.0f}' for x in s['rps_all'])}"
                       for k, s in web["servers"].items())
    client = max(s["client_cpu_share_median"] for s in web["servers"].values())
    other = max(s["other_cpu_median"] for s in web["servers"].values())
    a(f"Per round (req/s): {rounds}. *Server CPU ms/req*: user + system time of the two "
      "workers over the measured window / requests. The client shares the 2 CPUs with the "
      f"workers: it used up to {100 * client:.0f}% of one CPU (median per server); CPU used by "
      f"neither (kernel loopback work, gunicorn's master, other jobs): up to {100 * other:.0f}% "
      "of one CPU.")
    a("")
    ip = web["in_process"]
    a(f"In process (Flask test client, no server, no network; median of {ip['reps']}): "
      f"ticket page {ip['timing']['ticket_sqlite']['ms_median']:.2f} ms, minimal page "
      f"{ip['timing']['minimal']['ms_median']:.2f} ms.")
    if not all(web["targets"].values()):
        a("")
        a(f"Target missed: where a ticket-page request goes (cProfile over "
          f"{ip['profiled_requests']} requests in process, SQLite: "
          f"{ip['profile_ms_per_request']:.1f} ms/request under the profiler, which inflates "
          "Python-heavy code: read the shares). The project's functions by cumulative time, "
          "then all functions by own time:")
        for key in ("top_ours", "top_tottime"):
            a("")
            a("| function | calls/req | own ms/req | cumulative ms/req |")
            a("| --- | ---: | ---: | ---: |")
            for r in ip[key][:10]:
                a(f"| `{r['function']}` | {r['calls_per_request']:g} | {r['tottime_ms']:.2f} | "
                  f"{r['cumtime_ms']:.2f} |")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--in-process"]:
        print(json.dumps(_profile_pages(argv[1], argv[2])))
        return 0
    import shutil

    import bench as harness  # not when bench.py runs us: it passes itself

    work = harness.RESULTS / "work-web"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    os.chdir(work)
    try:
        return _standalone(argv, harness, work)
    finally:
        if os.environ.get("KEEP") != "1":
            os.chdir(HERE)
            shutil.rmtree(work)


def _standalone(argv: list[str], harness: ModuleType, work: Path) -> int:
    if argv[:1] == ["--profile"]:
        ticket = make_ticket(harness, work / "sqlite", f"sqlite:///{work}/web.db", "web.toml",
                             harness.SEED)
        ip = _profile_pages(ticket["config"], ticket["path"])
        print(json.dumps(ip["timing"], indent=1))
        print(f"profile: {ip['profile_ms_per_request']:.2f} ms/request under cProfile")
        for title, key in (("own time", "top_tottime"), ("cumulative time", "top_cumtime"),
                           ("cumulative time, project code only", "top_ours")):
            print(f"\ntop by {title} (ms per request):")
            for r in ip[key]:
                print(f"  {r['tottime_ms']:7.3f} own {r['cumtime_ms']:7.3f} cum "
                      f"{r['calls_per_request']:7g} calls  {r['function']}")
        return 0
    web = bench_web(work, harness)
    print("\n".join(["| target | result | status |", "| --- | ---: | --- |", *target_rows(web),
                     "", *render(web)]))
    (harness.RESULTS / "web-latest.json").write_text(json.dumps(web, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
