#!/usr/bin/env bash
# `fkp run -j N` on a 4-pipeline CPU study: wall time from a clean cache at each N,
# and whether the outputs match the -j 1 run byte for byte.
#
#   bench/parallel_study.sh [FKP_BINARY] [REPEATS] [JOBS...]     (defaults: 3 repeats, -j 1 2)
#
# The study is one [sweep] over prepare.missing (median, mean, drop, mask): four
# pipelines sharing ingest and eda, each with its own prepare, train (LeNet, 3 epochs,
# hflip) and evaluate against the full labels, on the 300-face sample. Measure on a
# quiet machine; each run starts from an empty cache.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
REPEATS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
JOBS=("$@")
[[ ${#JOBS[@]} -gt 0 ]] || JOBS=(1 2)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-parallel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cat >"$WORK/study.toml" <<TOML
[pipeline]
description = "four ways to treat missing labels, LeNet 3 epochs"
[ingest]
train = "$ROOT/datasets/faces300-sparse.csv.gz"
[eda]
samples = 8
[prepare]
val = 0.2
seed = 42
[model]
arch = "lenet"
[train]
device = "cpu"
epochs = 3
batch_size = 16
seed = 42
[train.augment]
hflip = true
[evaluate]
truth = "$ROOT/datasets/faces300-full.csv.gz"
samples = 4
[sweep]
"prepare.missing" = ["median", "mean", "drop", "mask"]
TOML

# Everything a run wrote but the volatile timings, as one hash per file.
fingerprint() {
    (cd "$1" && find .fkp/entries reports -type f ! -name timing.json -print0 | sort -z | xargs -0 sha256sum)
}

printf '%-4s %-8s %s\n' "-j" "repeat" "wall s"
declare -A TOTAL
for repeat in $(seq 1 "$REPEATS"); do
    for jobs in "${JOBS[@]}"; do
        ws="$WORK/j$jobs"
        rm -rf "$ws" && mkdir -p "$ws"
        start=$(date +%s.%N)
        (cd "$ws" && "$FKP" run -q -j "$jobs" "$WORK/study.toml")
        wall=$(echo "$(date +%s.%N) - $start" | bc)
        printf '%-4s %-8s %.2f\n' "$jobs" "$repeat" "$wall"
        TOTAL[$jobs]=$(echo "${TOTAL[$jobs]:-0} + $wall" | bc)
    done
done
echo
base=${JOBS[0]}
for jobs in "${JOBS[@]}"; do
    mean=$(echo "scale=2; ${TOTAL[$jobs]} / $REPEATS" | bc)
    ratio=$(echo "scale=3; ${TOTAL[$base]} / ${TOTAL[$jobs]}" | bc)
    same=$([[ "$(fingerprint "$WORK/j$jobs")" == "$(fingerprint "$WORK/j$base")" ]] && echo yes || echo NO)
    printf -- '-j %-3s mean %6.2f s   speed-up vs -j %s: %sx   outputs identical to -j %s: %s\n' \
        "$jobs" "$mean" "$base" "$ratio" "$base" "$same"
done
