#!/usr/bin/env bash
# The remote cache on the 4-pipeline CPU study (bench/lib/study4.sh): how long a fresh
# workspace takes to fetch every entry from an S3 remote, against computing them.
#
#   bench/remote_cache.sh [FKP_BINARY] [REPEATS]
#
# The S3 endpoint is $AWS_ENDPOINT_URL with bucket $FKP_BENCH_BUCKET (default fkp-bench);
# without AWS_ENDPOINT_URL the script starts moto's server (`pip install "moto[server]"`)
# on a free port and makes the bucket. Per repeat, each in a fresh workspace:
#   compute    fkp run, no remote
#   upload     fkp run --remote (computes, then uploads every entry)
#   fetch      fkp run --remote in a fresh workspace: downloads every entry, builds nothing
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib/study4.sh
source bench/lib/study4.sh
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
REPEATS=${2:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-remote.XXXXXX")
MOTO_PID=
cleanup() { [[ -n $MOTO_PID ]] && kill "$MOTO_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
BUCKET=${FKP_BENCH_BUCKET:-fkp-bench}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-bench} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-bench}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    moto_server -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 60); do
        python3 -c "import urllib.request as r; r.urlopen(r.Request('$AWS_ENDPOINT_URL/$BUCKET', method='PUT'))" 2>/dev/null && break
        sleep 0.5
    done
fi
write_study "$WORK/study.toml" "$ROOT"

timed() { # WORKSPACE ARGS...: wall seconds of `fkp run ARGS` in a fresh WORKSPACE
    local ws=$1 start
    shift
    rm -rf "$ws" && mkdir -p "$ws"
    start=$(now)
    (cd "$ws" && "$FKP" run -q "$@" "$WORK/study.toml")
    echo "$(now) - $start" | bc
}

printf '%-8s %-10s %-10s %-10s\n' repeat "compute s" "upload s" "fetch s"
declare -A TOTAL
for repeat in $(seq 1 "$REPEATS"); do
    remote="s3://$BUCKET/bench-$$-$repeat"
    compute=$(timed "$WORK/compute")
    upload=$(timed "$WORK/upload" --remote "$remote")
    fetch=$(timed "$WORK/fetch" --remote "$remote")
    printf '%-8s %-10.2f %-10.2f %-10.2f\n' "$repeat" "$compute" "$upload" "$fetch"
    for k in compute upload fetch; do TOTAL[$k]=$(echo "${TOTAL[$k]:-0} + ${!k}" | bc); done
done
same=$([[ "$(fingerprint "$WORK/fetch")" == "$(fingerprint "$WORK/compute")" ]] && echo yes || echo NO)
bytes=$(du -sb "$WORK/fetch/.fkp/entries" | cut -f1)
echo
printf 'mean: compute %.2f s, compute + upload %.2f s, fetch %.2f s (%.1f MB of entries): fetching is %.1fx faster than computing; fetched entries identical to computed: %s\n' \
    "$(echo "${TOTAL[compute]} / $REPEATS" | bc -l)" "$(echo "${TOTAL[upload]} / $REPEATS" | bc -l)" \
    "$(echo "${TOTAL[fetch]} / $REPEATS" | bc -l)" "$(echo "$bytes / 1000000" | bc -l)" \
    "$(echo "${TOTAL[compute]} / ${TOTAL[fetch]}" | bc -l)" "$same"
