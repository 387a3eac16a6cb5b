#!/usr/bin/env bash
# Run the helpdesk-pipe benchmark and rewrite the results block of bench/README.md.
#   bench/run.sh                  full run (~15-20 min on 2 cores, more the first time: section 6
#                                 fills its databases of 1M tickets once and caches them)
#   QUICK=1 bench/run.sh          smoke test (~2 min): README left alone (UPDATE_README=1 to force)
#   PY=/path/to/python bench/run.sh   measure another interpreter (it must have helpdesk-pipe installed)
# Other knobs (RUNS, WARMUP, MEM_REPS, BENCH_MEM_HTML=0, MEM_HTML_CTE, MEM_VIEWER_ROUNDS,
# IMPORT_REPS, BENCH_PG_URL, BENCH_PG=0, BENCH_ROUNDUP=0,
# CHECK=1, KEEP=1, BENCH_WEB=0, WEB_*, BENCH_BURST=0, BURST_*, BENCH_SCALE=0, SCALE_*):
# see the docstring of bench/bench.py and bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
PY=${PY:-$root/.venv/bin/python}

if [ ! -x "$PY" ]; then
    echo "bench/run.sh: no interpreter at $PY (make the venv, or set PY)" >&2
    exit 2
fi
if ! "$PY" -c 'import helpdesk.ingest.deliver' 2>/dev/null; then
    echo "bench/run.sh: $PY cannot import helpdesk (pip install -e . in that venv)" >&2
    exit 2
fi

if [ "${BENCH_WEB:-1}" != 0 ]; then
    # Section 4 (bench/web.py): the viewer under gunicorn, from the same venv.
    if [ ! -x "$(dirname "$PY")/gunicorn" ] || ! "$PY" -c 'import webview' 2>/dev/null; then
        echo "bench/run.sh: gunicorn or webview missing next to $PY (pip install -e . gunicorn," \
             "or BENCH_WEB=0 to skip the viewer benchmark)" >&2
        exit 2
    fi
fi

if [ ! -x /usr/bin/time ]; then
    echo "bench/run.sh: GNU time is missing: apt-get install -y time" >&2
    exit 2
fi

exec "$PY" "$here/bench.py" "$@"
