#!/usr/bin/env bash
# Concurrency probe: two `fkp run` of one pipeline started together in one fresh
# workspace, TRIALS times. Counts the trials where both exit 0, every stage has
# exactly one cache entry, nothing is left in .fkp/tmp or as a temporary file in
# reports/, and reports/ is byte-identical to what a single run writes.
#
#   bench/concurrency.sh [FKP_BINARY] [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
TRIALS=${2:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-concurrency.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

pipeline() {
    mkdir -p "$1"
    cat >"$1/p.toml" <<EOF
[ingest]
train = "$ROOT/datasets/faces300-sparse.csv.gz"
[eda]
[prepare]
[model]
arch = "lenet"
[train]
device = "cpu"
epochs = 1
batch_size = 32
EOF
}

pipeline "$WORK/single"
(cd "$WORK/single" && "$FKP" -q run p.toml)

good=0
for i in $(seq 1 "$TRIALS"); do
    dir="$WORK/t$i"
    pipeline "$dir"
    (cd "$dir" && { "$FKP" run p.toml >/dev/null 2>a.log & "$FKP" run p.toml >/dev/null 2>b.log & wait -n && wait -n; }) && ok=yes || ok=no
    entries=$(find "$dir/.fkp/entries" -mindepth 2 -maxdepth 2 -type d | wc -l)
    leftovers=$(( $(find "$dir/.fkp/tmp" -mindepth 1 | wc -l) + $(find "$dir/reports" -name '.*.tmp-*' | wc -l) ))
    same=$(diff -r "$WORK/single/reports" "$dir/reports" >/dev/null && echo yes || echo no)
    waited=$(cat "$dir/a.log" "$dir/b.log" | grep -c "waiting for the lock" || true)
    echo "trial $i: both succeeded $ok, entries $entries (4 expected), leftovers $leftovers, reports identical $same, waits $waited"
    [[ $ok == yes && $entries == 4 && $leftovers == 0 && $same == yes ]] && good=$((good + 1))
done
echo "$good of $TRIALS trials clean"
