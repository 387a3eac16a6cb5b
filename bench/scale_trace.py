"""Which statements a threaded reply runs, how long each takes, and how the database plans
them: bench/scale.py runs this under the project's interpreter on a filled database.

  python bench/scale_trace.py CONFIG QUEUE MAIL [MAIL...]   JSON on stdout

Every mail is delivered in this one process with helpdesk.ingest.deliver.deliver() (as an
ingestd worker does), with helpdesk.store.Store.execute timed, rows fetched included;
BEGIN and COMMIT are timed apart.
Then every distinct statement is explained with the parameters of its slowest run:
EXPLAIN QUERY PLAN on SQLite, EXPLAIN on PostgreSQL. A plan that reads a whole table
("SCAN t" without an index on SQLite, "Seq Scan" on PostgreSQL) is flagged.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time


def main(argv: list[str]) -> int:
    config, queue, *paths = argv
    from helpdesk.config import load_settings
    from helpdesk.ingest import deliver as pipe
    from helpdesk.store import Store

    settings = load_settings(config)
    calls: list[tuple[str, dict, float]] = []
    original = Store.execute

    def timed(self, sql, params=None):  # type: ignore[no-untyped-def]
        # SQLite runs a query step by step as rows are fetched: fetch them all here, or
        # the time of a long scan would fall outside the statement's.
        started = time.perf_counter()
        cursor = Rows(original(self, sql, params))
        calls.append((sql, dict(params or {}), (time.perf_counter() - started) * 1000))
        return cursor

    Store.execute = timed  # type: ignore[method-assign]
    runs = []
    with Store(settings.database_url, settings.busy_timeout) as store:
        real_conn = store._conn
        commits: list[float] = []

        class Conn:
            """The connection, with BEGIN/COMMIT timed (Store.transaction runs them)."""

            def __getattr__(self, name):  # type: ignore[no-untyped-def]
                return getattr(real_conn, name)

            def execute(self, sql, *args):  # type: ignore[no-untyped-def]
                started = time.perf_counter()
                try:
                    return real_conn.execute(sql, *args)
                finally:
                    if sql in ("COMMIT", "BEGIN", "BEGIN IMMEDIATE"):
                        commits.append((time.perf_counter() - started) * 1000)

        for path in paths:
            with open(path, "rb") as fh:
                raw = fh.read()
            del calls[:]
            del commits[:]
            store._conn = Conn()
            started = time.perf_counter()
            outcome = pipe.deliver(raw, settings, queue, {}, store, send=True)
            total = (time.perf_counter() - started) * 1000
            store._conn = real_conn
            runs.append({"mail": path, "outcome": outcome.message, "verdict": outcome.verdict,
                         "ticket_id": outcome.ticket_id, "total_ms": total,
                         "begin_commit_ms": sum(commits), "calls": list(calls)})
        Store.execute = original  # type: ignore[method-assign]
        statements = _by_statement(runs)
        for entry in statements:
            entry["plan"], entry["full_scan"] = _explain(store, entry.pop("params"))
    for run in runs:
        run["statement_ms"] = sum(c[2] for c in run.pop("calls"))
    json.dump({"runs": runs, "statements": statements}, sys.stdout, default=str)
    return 0


class Rows:
    """A cursor's rows fetched at once, with the cursor's interface the Store uses."""

    def __init__(self, cursor) -> None:  # type: ignore[no-untyped-def]
        self.description = cursor.description
        self.rows = list(cursor.fetchall()) if cursor.description else []
        self.rowcount = cursor.rowcount
        self.lastrowid = getattr(cursor, "lastrowid", None)

    def fetchone(self):  # type: ignore[no-untyped-def]
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list:
        rows, self.rows = self.rows, []
        return rows

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.fetchall())


def _by_statement(runs: list[dict]) -> list[dict]:
    """Per distinct SQL text: calls per mail, median total ms per mail, slowest params."""
    seen: dict[str, dict] = {}
    for index, run in enumerate(runs):
        for sql, params, ms in run["calls"]:
            entry = seen.setdefault(sql, {"sql": sql, "per_run_ms": [0.0] * len(runs),
                                          "calls": 0, "max_ms": 0.0, "params": (sql, params)})
            entry["per_run_ms"][index] += ms
            entry["calls"] += 1
            if ms >= entry["max_ms"]:
                entry["max_ms"], entry["params"] = ms, (sql, params)
    out = list(seen.values())
    for entry in out:
        entry["median_ms"] = statistics.median(entry["per_run_ms"])
        entry["calls"] = entry["calls"] / len(runs)
    out.sort(key=lambda e: -e["median_ms"])
    return out


_SQLITE_SCAN = re.compile(r"\bSCAN (\w+)(?! USING)")


def _explain(store, sql_params) -> tuple[list[str], bool]:  # type: ignore[no-untyped-def]
    sql, params = sql_params
    if store.is_sqlite:
        try:
            rows = store.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            return [f"(cannot explain: {exc})"], False
        plan = [str(r[3]) for r in rows]
        # An INSERT's plan lists the foreign-key checks SQLite may run (they only scan a
        # child table when constraints are pending): not what this flag is about.
        scans = [p for p in plan if _SQLITE_SCAN.search(p) and "USING" not in p
                 and "CONSTANT ROW" not in p]
        return plan, bool(scans) and not sql.lstrip().upper().startswith("INSERT")
    try:
        store._conn.execute("BEGIN")
        rows = store.execute("EXPLAIN " + sql, params).fetchall()
    except Exception as exc:  # noqa: BLE001
        return [f"(cannot explain: {exc})"], False
    finally:
        store._conn.execute("ROLLBACK")
    plan = [str(r[0]) for r in rows]
    return plan, any("Seq Scan" in p for p in plan)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
