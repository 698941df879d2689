#!/usr/bin/env bash
# Report and compare speed: N pipelines (default 10: LeNet, 1 epoch, on the bundled
# 300-face sample, each with its own seed so every one trains) and a [report] over them.
# Times, with everything cached, `fkp run report.toml` (the whole graph: 5 stages per
# pipeline plus the report; target <= 100 ms) and `fkp compare report.toml` (target
# <= 100 ms), 20 runs each, and prints the median and the slowest.
#
#   bench/report.sh [FKP_BINARY] [N]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
N=${2:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-report.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

cat >base.toml <<EOF
[ingest]
train = "$ROOT/datasets/faces300-sparse.csv.gz"
[eda]
plots = []
[prepare]
missing = "mask"
[model]
arch = "lenet"
[train]
device = "cpu"
epochs = 1
batch_size = 32
[evaluate]
truth = "$ROOT/datasets/faces300-full.csv.gz"
samples = 1
EOF
list=()
for i in $(seq 1 "$N"); do
    printf '[pipeline]\nextends = "base.toml"\n[train]\nseed = %d\n' "$i" >"p$i.toml"
    list+=("\"p$i.toml\"")
done
printf '[report]\npipelines = [%s]\n' "$(IFS=,; echo "${list[*]}")" >report.toml

start=$(date +%s%N)
"$FKP" -q run report.toml
echo "building $N pipelines and the report from a clean cache: $((($(date +%s%N) - start) / 1000000)) ms"

# Median and maximum wall time, in ms, of 20 runs of the command.
time_ms() {
    local times=() i s e
    "$@" >/dev/null 2>&1 # warm-up
    for i in $(seq 1 20); do
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1
        e=$(date +%s%N)
        times+=($(((e - s) / 1000000)))
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ t[NR] = $1 } END { printf "median %d ms, slowest %d ms\n", t[int((NR + 1) / 2)], t[NR] }'
}
echo "fully cached fkp run report.toml ($N pipelines): $(time_ms "$FKP" -q run report.toml)"
echo "fkp compare report.toml ($N cached pipelines):     $(time_ms "$FKP" compare report.toml)"
echo "fkp compare --format json:                          $(time_ms "$FKP" compare report.toml --format json)"
echo "fkp compare --format html (draws every picture):    $(time_ms "$FKP" compare report.toml --format html)"
