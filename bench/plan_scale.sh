#!/usr/bin/env bash
# Planning at scale, for docs/scale.md: how the cost of planning a sweep grows with its
# variants. For N in 40, 400 and 4000 (or those given), a sweep of N variants over the
# bundled 300-face sample (ingest, eda, prepare, LeNet training, evaluate: 5 stages each,
# differing in `[train] seed`; sweeps of at most 1000 variants, fkp's limit), nothing built yet; times `fkp run --dry-run` (plans every
# stage and says what would run) and `fkp status` (text and --json), 3 runs each after a
# warm-up, and takes the median and the peak memory (/usr/bin/time). Then builds one
# variant (1 epoch) and counts the files and bytes of each stage's cache entry: what a
# stage moves to the shared filesystem or S3 when it builds elsewhere.
#
#   bench/plan_scale.sh [FKP_BINARY] [N...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
shift || true
SIZES=("$@")
((${#SIZES[@]} > 0)) || SIZES=(40 400 4000)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-scale.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

cat >base.toml <<EOF
[ingest]
train = "$ROOT/datasets/faces300-sparse.csv.gz"
[eda]
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

# median_ms COMMAND...: median wall time of 3 runs after a warm-up, in ms; with its peak RSS.
median_ms() {
    local times=() i s e rss
    "$@" >/dev/null 2>&1
    for i in 1 2 3; do
        s=$(date +%s%N)
        "$@" >/dev/null 2>&1
        e=$(date +%s%N)
        times+=($(((e - s) / 1000000)))
    done
    rss=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1)
    printf '%s\n' "${times[@]}" | sort -n | awk -v rss="$rss" '{ t[NR] = $1 } END { printf "%d ms, %d MiB", t[2], rss / 1024 }'
}

printf '| variants | stages | `run --dry-run` | `status` | `status --json` | JSON bytes |\n'
printf '| ---: | ---: | ---: | ---: | ---: | ---: |\n'
for n in "${SIZES[@]}"; do
    # A sweep holds at most 1000 variants: larger studies are several sweep files.
    rm -f sweep-*.toml
    files=()
    for ((first = 1; first <= n; first += 1000)); do
        last=$((first + 999 < n ? first + 999 : n))
        printf '[pipeline]\nextends = "base.toml"\n[sweep]\n"train.seed" = [%s]\n' \
            "$(seq -s, "$first" "$last")" >"sweep-$first.toml"
        files+=("sweep-$first.toml")
    done
    dry=$(median_ms "$FKP" run "${files[@]}" --dry-run)
    status=$(median_ms "$FKP" status "${files[@]}")
    json=$(median_ms "$FKP" status "${files[@]}" --json)
    bytes=$("$FKP" status "${files[@]}" --json | wc -c)
    printf '| %d | %d | %s | %s | %s | %d |\n' "$n" $((n * 5)) "$dry" "$status" "$json" "$bytes"
done

# One variant built: the files and bytes of each stage's entry.
printf '[pipeline]\nextends = "base.toml"\n' >one.toml
"$FKP" -q run one.toml
printf '\n| stage | files in its entry | bytes |\n| --- | ---: | ---: |\n'
for stage in ingest eda prepare train evaluate; do
    dir=$(echo .fkp/entries/$stage/*)
    printf '| %s | %d | %d |\n' "$stage" "$(find "$dir" -type f | wc -l)" "$(du -sb "$dir" | cut -f1)"
done
