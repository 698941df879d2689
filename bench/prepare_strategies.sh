#!/usr/bin/env bash
# Run fkp's prepare stage on the sparse shared data with each missing-label strategy
# (drop, mean, median, mask) and report what each did: training rows, real / filled / masked
# training labels, rows dropped, validation rows and labels; and, for mean and median, the RMSE
# in pixels between the filled values and the true labels of faces15-train.csv.gz (the error that
# median filling bakes into a model), against the baseline of predicting the training median for
# every label. The numbers come from bench/prepare_report.py, which reads prepared.safetensors
# itself and checks it against the CSVs (see its header for the definitions).
#
# Usage: bench/prepare_strategies.sh [STRATEGY...]      (default: drop mean median mask)
#
# Environment:
#   FKP_BIN          fkp binary (default ${CARGO_TARGET_DIR:-~/.cache/fkp-target}/release/fkp;
#                    never built here)
#   FKP_SHARED_DATA  folder holding faces15-train-sparse.csv.gz and faces15-train.csv.gz
#                    (default <repo>/../shared/data)
#   PREPARE_VAL=0.2  PREPARE_SEED=42
#   BENCH_PYTHON     python with pandas, numpy, safetensors (default bench/.venv/bin/python;
#                    created from bench/requirements.txt when missing)
#   KEEP_TMP=1       keep the temporary folder (its path is printed)
# Works in a temporary folder (the cache lands there) that it removes on exit.
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;; esac
STRATEGIES=("$@")
[[ ${#STRATEGIES[@]} -gt 0 ]] || STRATEGIES=(drop mean median mask)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FKP_SHARED_DATA:-$(dirname "$REPO")/shared/data}
FKP=${FKP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fkp-target}/release/fkp}
VAL=${PREPARE_VAL:-0.2}
SEED=${PREPARE_SEED:-42}

die() { echo "bench/prepare_strategies.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

SPARSE=$(cd "$SHARED" 2>/dev/null && pwd)/faces15-train-sparse.csv.gz
FULL=$(dirname "$SPARSE")/faces15-train.csv.gz
[[ -f "$SPARSE" && -f "$FULL" ]] ||
  die "faces15-train-sparse.csv.gz / faces15-train.csv.gz not found in $SHARED (set FKP_SHARED_DATA)"
[[ -x "$FKP" ]] || die "no fkp binary at $FKP (build it, or set FKP_BIN)"
FKP=$(cd "$(dirname "$FKP")" && pwd)/$(basename "$FKP")

PY=${BENCH_PYTHON:-$REPO/bench/.venv/bin/python}
if [[ -z "${BENCH_PYTHON:-}" && ! -x "$PY" ]]; then
  note "creating bench/.venv from bench/requirements.txt"
  python3 -m venv "$REPO/bench/.venv"
  "$REPO/bench/.venv/bin/pip" install -q -r "$REPO/bench/requirements.txt"
fi
"$PY" -c 'import numpy, pandas, safetensors' 2>/dev/null ||
  die "$PY lacks numpy/pandas/safetensors: pip install -r bench/requirements.txt"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fkp-prepare.XXXXXX")
if [[ -n "${KEEP_TMP:-}" ]]; then note "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi
cd "$TMP"

ARGS=()
for s in "${STRATEGIES[@]}"; do
  case "$s" in drop|mean|median|mask) ;; *) die "unknown strategy: $s" ;; esac
  cat > "prepare-$s.toml" <<EOF
[pipeline]
name = "prepare-$s"

[ingest]
train = "$SPARSE"

[prepare]
missing = "$s"
val = $VAL
seed = $SEED
EOF
  note "fkp run prepare-$s.toml"
  start=$(date +%s.%N)
  "$FKP" run -q "prepare-$s.toml" || die "fkp run prepare-$s.toml failed"
  end=$(date +%s.%N)
  note "  $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f s", b-a}')"
  "$FKP" status --json "prepare-$s.toml" > "status-$s.json" || die "fkp status --json failed"
  out=$("$PY" - "status-$s.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
stage = next(s for s in d["pipelines"][0]["stages"] if s["stage"] == "prepare")
if stage["state"] != "cached":
    sys.exit(f"prepare is {stage['state']} after the run")
print(next(p for p in stage["outputs"] if p.endswith("prepared.safetensors")))
EOF
  ) || die "no prepared.safetensors in the status of prepare-$s.toml"
  ARGS+=("$s=$out")
done

note "reporting"
"$PY" "$REPO/bench/prepare_report.py" --sparse "$SPARSE" --full "$FULL" --json "$TMP/report.json" "${ARGS[@]}"
