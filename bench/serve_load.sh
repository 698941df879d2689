#!/usr/bin/env bash
# `fkp serve` under load, measured with load generators that are not fkp's own:
#
#  1. study: a scratch workspace with 10 small pipelines (a LeNet-style network on the
#     bundled 300-face sample, 2 epochs each, each its own lr and seed), all run, then
#     `fkp serve`; wrk (Debian's, `wrk --latency`, WRK_THREADS threads, WRK_CONNECTIONS
#     connections, WRK_SECONDS s) on GET /api/compare?pipelines=<all 10> (also with one
#     connection: one request's cost), GET /api/overview and GET /api/status: requests/s
#     and p50/p90/p99 latency, and any non-2xx answers or socket errors.
#  2. events: CLIENTS (200) /api/events streams (bench/serve_load.py, Python asyncio)
#     held open HOLD (60) s while a quickstart-like training (pipelines/quickstart.toml's
#     network, LONG_EPOCHS = 40 epochs of 2-3 s, longer than the hold) runs in another
#     process (`fkp run`): the events each client got, and that every one got every epoch
#     event; the server's max RSS (VmRSS, sampled every second) and CPU; and the training's
#     images/s (its train entry's timing.json) against the same training (other seeds,
#     so nothing is cached) with no server and no clients, run once before and once
#     after it so that a drift in the machine's load cancels: the ratio over the epochs
#     that ran inside the hold (target: within 5%).
#
#   bench/serve_load.sh [FKP_BINARY] [study|events|all]
#
# Everything listens and connects on 127.0.0.1 only. wrk is installed with apt-get when
# missing (as root). Meant for an idle 2-core machine: the load generator, the server and
# (in part 2) the training share the cores, so close other work first. ~10 min in all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=$(realpath "${1:-${FKP_BIN:-${CARGO_TARGET_DIR:-target}/release/fkp}}")
PART=${2:-all}
WRK_SECONDS=${WRK_SECONDS:-20}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
CLIENTS=${CLIENTS:-200}
HOLD=${HOLD:-60}
LONG_EPOCHS=${LONG_EPOCHS:-40}
N=10
case $PART in study | events | all) ;; *) echo "usage: $0 [FKP_BINARY] [study|events|all]" >&2; exit 2 ;; esac
[ -x "$FKP" ] || { echo "no fkp binary at $FKP (build with cargo build --release)" >&2; exit 1; }

if ! command -v wrk >/dev/null && [ "$PART" != events ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
    else
        echo "wrk is missing: sudo apt-get install wrk" >&2
        exit 1
    fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-serve-load.XXXXXX")
SERVE_PID=
CLIENTS_PID=
TRAIN_PID=
cleanup() {
    local pid
    for pid in $CLIENTS_PID $TRAIN_PID $SERVE_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $CLIENTS_PID $TRAIN_PID $SERVE_PID; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$WORK"
cp -r "$ROOT/datasets" datasets
mkdir pipelines base
SUMMARY=$WORK/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# Starts `fkp serve --port 0` (the kernel picks a free port) and sets PORT from the
# address it prints.
start_serve() {
    : >serve.log
    "$FKP" serve --port 0 >serve.log 2>&1 &
    SERVE_PID=$!
    local i
    for i in $(seq 1 100); do
        PORT=$(grep -o 'http://127\.0\.0\.1:[0-9]*' serve.log | head -1 | sed 's/.*://') || true
        [ -n "$PORT" ] && return 0
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "fkp serve did not start:" >&2
    cat serve.log >&2
    exit 1
}
stop_serve() {
    kill "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=
}

# Runs wrk on one path (connections: $3, default WRK_CONNECTIONS); prints requests/s,
# p50, p90, p99 and any errors.
load() {
    local label=$1 path=$2 connections=${3:-$WRK_CONNECTIONS} url out code
    url="http://127.0.0.1:$PORT$path"
    code=$(curl -s -o response.json -w '%{http_code}' "$url")
    [ "$code" = 200 ] || { echo "GET $path: HTTP $code: $(head -c 300 response.json)" >&2; exit 1; }
    out=$(wrk -t"$((connections < WRK_THREADS ? connections : WRK_THREADS))" -c"$connections" \
        -d"${WRK_SECONDS}s" --latency "$url")
    echo "$out" >"wrk-$label.txt"
    echo "$out" | awk -v label="$label" -v bytes="$(wc -c <response.json)" '
        /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
        /^Requests\/sec:/ { rps = $2 }
        /requests in/ { total = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); socket = $0 }
        END {
            printf "%-12s %10s req/s   p50 %-9s p90 %-9s p99 %-9s (%s requests, %s bytes each)", label, rps, p50, p90, p99, total, bytes
            if (non2xx != "") printf "  NON-2XX: %s", non2xx
            if (socket != "") printf "  socket errors: %s", socket
            printf "\n"
        }' | tee -a "$SUMMARY"
}

# --- part 1: the 10-pipeline study ---------------------------------------------------
if [ "$PART" != events ]; then
    lrs=(5e-4 7e-4 1e-3 1.5e-3 2e-3 5e-4 7e-4 1e-3 1.5e-3 2e-3)
    names=()
    for i in $(seq 1 $N); do
        cat >"pipelines/p$i.toml" <<EOF
[pipeline]
description = "serve_load study: LeNet-style network, lr ${lrs[$((i - 1))]}, seed $i"

[ingest]
train = "../datasets/faces300-sparse.csv.gz"

[eda]
plots = []

[prepare]
missing = "mask"
val = 0.2

[model]
side = 96
layers = [
  { conv = 16, kernel = 3 }, "relu", { maxpool = 2 },
  { conv = 32, kernel = 3 }, "relu", { maxpool = 2 },
  { conv = 64, kernel = 3 }, "relu", { maxpool = 2 },
  "flatten",
]
head = [{ dense = 128 }, "relu", { dropout = 0.2 }]

[train]
device = "cpu"
epochs = 2
batch_size = 32
lr = ${lrs[$((i - 1))]}
seed = $i

[evaluate]
truth = "../datasets/faces300-full.csv.gz"
samples = 8
EOF
        names+=("p$i")
    done
    "$FKP" -q model pipelines/p1.toml >/dev/null
    start=$(date +%s%N)
    "$FKP" -q run -j 2 pipelines/p*.toml
    echo "built $N pipelines (2 epochs each) in $((($(date +%s%N) - start) / 1000000)) ms"
    start_serve
    all=$(IFS=,; echo "${names[*]}")
    python3 - "$PORT" "$all" <<'EOF'
import json, sys, urllib.request
port, names = sys.argv[1], sys.argv[2].split(",")
with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/compare?pipelines={','.join(names)}") as r:
    body = json.load(r)
got = sorted(row["pipeline"] for row in body["rows"])
assert got == sorted(names), f"compare rows {got}, expected {sorted(names)}"
EOF
    say ""
    say "part 1: fkp serve with $N cached pipelines; wrk ${WRK_SECONDS}s each, $WRK_THREADS threads," \
        "$WRK_CONNECTIONS connections (compare-1c: 1 thread, 1 connection)"
    load compare "/api/compare?pipelines=$all"
    load compare-1c "/api/compare?pipelines=$all" 1
    load overview "/api/overview"
    load status "/api/status"
    stop_serve
fi

# --- part 2: event streams during a training -----------------------------------------
if [ "$PART" != study ]; then
    cp "$ROOT/pipelines/quickstart.toml" base/quickstart.toml
    seed=$((1000 + RANDOM)) # a fresh workspace, but never the quickstart's own key
    for run in before loaded after; do
        seed=$((seed + 1))
        cat >"pipelines/long-$run.toml" <<EOF
[pipeline]
description = "serve_load: quickstart's network, $LONG_EPOCHS epochs ($run run)"
extends = "../base/quickstart.toml"

[train]
epochs = $LONG_EPOCHS
seed = $seed
EOF
    done
    timing() {
        "$FKP" status --json "pipelines/$1.toml" | python3 -c '
import json, sys
stages = json.load(sys.stdin)["pipelines"][0]["stages"]
print(next(s["timing"] for s in stages if s["stage"] == "train"))'
    }
    # Ingest, EDA and prepare first, so that each training starts at once.
    "$FKP" -q run --until prepare pipelines/long-before.toml
    alone() {
        echo "training long-$1 ($LONG_EPOCHS epochs) with no server and no clients..."
        local start
        start=$(date +%s%N)
        "$FKP" run "pipelines/long-$1.toml" >"train-$1.log" 2>&1
        echo "  done in $((($(date +%s%N) - start) / 1000000)) ms"
    }
    alone before

    start_serve
    echo "opening $CLIENTS event streams, holding them ${HOLD}s while long-loaded trains..."
    python3 "$ROOT/bench/serve_load.py" clients --port "$PORT" --clients "$CLIENTS" --hold "$HOLD" \
        --pipeline long-loaded --serve-pid "$SERVE_PID" --ready ready --out clients.json &
    CLIENTS_PID=$!
    while [ ! -e ready ]; do
        kill -0 "$CLIENTS_PID" 2>/dev/null || { echo "the event-stream clients failed" >&2; exit 1; }
        sleep 0.1
    done
    "$FKP" run pipelines/long-loaded.toml >train-loaded.log 2>&1 &
    TRAIN_PID=$!
    clients_rc=0
    wait "$CLIENTS_PID" || clients_rc=$?
    CLIENTS_PID=
    echo "  streams closed; waiting for the training to end"
    wait "$TRAIN_PID"
    TRAIN_PID=
    stop_serve
    alone after
    say ""
    say "part 2: $CLIENTS /api/events clients for ${HOLD}s during a $LONG_EPOCHS-epoch training"
    report_rc=0
    python3 "$ROOT/bench/serve_load.py" report --clients clients.json \
        --baseline "$(timing long-before)" --baseline "$(timing long-after)" \
        --loaded "$(timing long-loaded)" | tee -a "$SUMMARY" || report_rc=$?
    [ "$clients_rc" = 0 ] || say "(not every client connected: exit $clients_rc)"
    [ "$report_rc" = 0 ] || say "(a check failed: see above)"
fi

echo
echo "=== summary (fkp $("$FKP" --version | awk '{print $NF}'), $(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg)) ==="
cat "$SUMMARY"
