# ruff: noqa: E401, E402, E702, F401, I001
# The stdlib floor of a pipe delivery: the same code as `pipe_min.py` in
# shared/research/perf-baseline.md section 1c, kept line for line (hence the noqa above),
# without its optional PIPE_TRACE printing.
#   usage: python baseline_pipe.py DB MODE < message      MODE: parse | NORMAL | FULL
# DB must already hold the table (bench.py creates it):
#   tickets(id INTEGER PRIMARY KEY, msgid, sender, subject, date, body TEXT, created REAL)
import time
_t0 = time.perf_counter()
import sys, os, sqlite3, email, email.policy
_t1 = time.perf_counter()

def main():
    db, mode = sys.argv[1], sys.argv[2]          # mode: parse | NORMAL | FULL
    msg = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.default)
    subject = str(msg["subject"]); sender = msg["from"].addresses[0].addr_spec
    msgid = str(msg["message-id"]); date = msg["date"].datetime.isoformat()
    body = msg.get_body(preferencelist=("plain",)).get_content()
    if mode != "parse":
        con = sqlite3.connect(db, timeout=5.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={mode}")
        con.execute("BEGIN")
        con.execute("INSERT INTO tickets(msgid, sender, subject, date, body) VALUES (?,?,?,?,?)",
                    (msgid, sender, subject, date, body))
        con.execute("COMMIT")
        con.close()
main()
