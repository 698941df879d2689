#!/usr/bin/env bash
# Model quality of fkp's trained keypoint models on the shared 15-keypoint faces.
#
# Usage: bench/quality.sh [RUN...]     (default: lenet-mask lenet-median resnet18-mask)
#
# Runs, one `fkp run` at a time, all on faces15-train-sparse.csv.gz with the same split
# ([prepare] val = 0.2, seed 42: 2770 training and 692 validation faces), device "cpu",
# batch 64, Adam lr 1e-3, seed 42:
#   lenet-mask      arch lenet,    missing = "mask",   [train.augment] hflip = true, E1 epochs
#   lenet-median    arch lenet,    missing = "median", no augmentation,              E1 epochs
#   resnet18-mask   arch resnet18, missing = "mask",   [train.augment] hflip = true, E2 epochs
# [evaluate] truth = faces15-train.csv.gz (the same faces with every label), so each run is
# scored twice: on the validation rows' sparse labels and on their full labels.
#
# Prints a markdown table per run: train wall time (sum of the per-epoch `seconds` in the
# train entry's timing.json, so it is the same when the run comes from the cache), RMSE / MAE
# in pixels, PCK@10% (percentage of points within 10% of the true inter-ocular distance,
# ~4 px here) and the mean-shape RMSE (predicting the training mean face for every image: the
# baseline a model must beat), all against the full labels, and the RMSE against the sparse
# labels. Then each run's per-epoch validation RMSE, to see whether it was still improving.
#
# Work folder: QUALITY_WORK (default bench/.quality-work, git-ignored). It is kept: its .fkp
# cache makes a rerun with the same settings instant (the numbers are read from the cache
# entries, which match the pipeline files as written now). Logs: <work>/logs/<run>.log.
# Pipeline files: <work>/<run>.toml; reports: <work>/reports/<run>/ (metrics.md,
# learning_curves.png, predictions.png, train/history.md).
#
# Environment:
#   FKP_BIN                  fkp binary (default ${CARGO_TARGET_DIR:-~/.cache/fkp-target}/release/fkp;
#                            never built here; copied to a temporary folder at the start and that
#                            copy runs everything, so a rebuild meanwhile does not mix two builds)
#   FKP_SHARED_DATA          folder with faces15-train{,-sparse}.csv.gz (default <repo>/../shared/data)
#   QUALITY_WORK             work folder (default <repo>/bench/.quality-work)
#   QUALITY_LENET_EPOCHS=15  E1
#   QUALITY_RESNET_EPOCHS=4  E2
#   QUALITY_BATCH=64  QUALITY_LR=1e-3  QUALITY_SEED=42
#   QUALITY_FORCE=1          retrain (fkp run --force-stage train) even when cached
# Time with the defaults on 2 cores: lenet ~30 s/epoch, resnet18 ~2 min/epoch, ~25 min in all.
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;; esac
ALL_RUNS=(lenet-mask lenet-median resnet18-mask)
RUNS=("$@")
[[ ${#RUNS[@]} -gt 0 ]] || RUNS=("${ALL_RUNS[@]}")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FKP_SHARED_DATA:-$(dirname "$REPO")/shared/data}
FKP=${FKP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fkp-target}/release/fkp}
WORK=${QUALITY_WORK:-$REPO/bench/.quality-work}
E1=${QUALITY_LENET_EPOCHS:-15}
E2=${QUALITY_RESNET_EPOCHS:-4}
BATCH=${QUALITY_BATCH:-64}
LR=${QUALITY_LR:-1e-3}
SEED=${QUALITY_SEED:-42}

die() { echo "bench/quality.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

SHARED=$(cd "$SHARED" 2>/dev/null && pwd) || die "folder not found: $SHARED (set FKP_SHARED_DATA)"
SPARSE=$SHARED/faces15-train-sparse.csv.gz
FULL=$SHARED/faces15-train.csv.gz
for f in "$SPARSE" "$FULL"; do [[ -f $f ]] || die "not found: $f (set FKP_SHARED_DATA)"; done
[[ -x "$FKP" ]] || die "no fkp binary at $FKP (build it with cargo build --release, or set FKP_BIN)"
FKP=$(cd "$(dirname "$FKP")" && pwd)/$(basename "$FKP")
note "fkp: $FKP ($("$FKP" --version 2>/dev/null || echo 'version unknown'); built $(date -r "$FKP" '+%F %T'))"
# Run a private copy: a `cargo build` during the benchmark (~25 min) would replace the binary, and
# a build whose cache keys differ would retrain the next runs and find this run's results stale.
BIN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fkp-quality-bin.XXXXXX")
trap 'rm -rf "$BIN_DIR"' EXIT
cp "$FKP" "$BIN_DIR/fkp"
FKP=$BIN_DIR/fkp
command -v python3 >/dev/null || die "python3 is required"
for n in "$E1" "$E2" "$BATCH"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "epochs and batch must be positive integers (got '$n')"
done
[[ $SEED =~ ^[0-9]+$ ]] || die "QUALITY_SEED must be a non-negative integer (got '$SEED')"
for r in "${RUNS[@]}"; do
  [[ " ${ALL_RUNS[*]} " == *" $r "* ]] || die "unknown run: $r (one of: ${ALL_RUNS[*]})"
done

mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
note "work folder: $WORK; data: $SHARED"
note "lenet $E1 epochs, resnet18 $E2 epochs, batch $BATCH, lr $LR, seed $SEED; load now: $(cut -d' ' -f1-3 /proc/loadavg)"

# write_pipeline RUN -> prints "arch missing augment epochs" and writes $WORK/RUN.toml
write_pipeline() {
  local run=$1 arch missing hflip epochs
  case "$run" in
    lenet-mask)    arch=lenet;    missing=mask;   hflip=true;  epochs=$E1 ;;
    lenet-median)  arch=lenet;    missing=median; hflip=false; epochs=$E1 ;;
    resnet18-mask) arch=resnet18; missing=mask;   hflip=true;  epochs=$E2 ;;
  esac
  {
    cat <<EOF
# written by bench/quality.sh; edits are overwritten on the next run
[pipeline]
description = "quality benchmark: $arch, missing = $missing, hflip = $hflip, $epochs epochs"

[ingest]
train = "$SPARSE"

[prepare]
missing = "$missing"
val = 0.2
seed = 42

[model]
arch = "$arch"

[train]
device = "cpu"
epochs = $epochs
batch_size = $BATCH
seed = $SEED
optimizer = "adam"
lr = $LR
EOF
    if [[ $hflip == true ]]; then printf '\n[train.augment]\nhflip = true\n'; fi
    printf '\n[evaluate]\ntruth = "%s"\n' "$FULL"
  } > "$WORK/$run.toml"
  echo "$arch $missing $([[ $hflip == true ]] && echo hflip || echo none) $epochs"
}

SECONDS=0
ROWS_OUT=()
CURVES=()
PROBLEMS=()
for RUN in "${RUNS[@]}"; do
  read -r ARCH MISSING AUGMENT EPOCHS < <(write_pipeline "$RUN")
  LOG=$WORK/logs/$RUN.log
  FORCE=()
  [[ -n ${QUALITY_FORCE:-} ]] && FORCE=(--force-stage train)
  note "$RUN: $ARCH, missing = $MISSING, augment = $AUGMENT, $EPOCHS epochs (log: $LOG)"
  START=$(date +%s.%N)
  if ! (cd "$WORK" && "$FKP" run ${FORCE[@]+"${FORCE[@]}"} "$RUN.toml") > "$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    PROBLEMS+=("$RUN: fkp run failed (exit status non-zero); see $LOG")
    ROWS_OUT+=("| $RUN | $ARCH | $MISSING | $AUGMENT | $EPOCHS | failed | | | | | | |")
    continue
  fi
  RUN_WALL=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
  grep -E '^ *epoch +[0-9]+/' "$LOG" | sed 's/^ */    /' >&2 || note "  (train stage came from the cache)"
  # the cache entries that belong to the pipeline as written now
  (cd "$WORK" && "$FKP" status --json "$RUN.toml") > "$WORK/logs/$RUN.status.json" ||
    die "fkp status --json failed ($RUN)"
  RESULT=$(python3 - "$RUN" "$RUN_WALL" "$WORK/logs/$RUN.status.json" <<'PY'
import csv, json, math, sys
run, run_wall = sys.argv[1], sys.argv[2]
status = json.load(open(sys.argv[3]))
out = {}
for s in status["pipelines"][0]["stages"]:
    if s["state"] != "cached":
        sys.exit(f"stage {s['stage']} is {s['state']} after the run")
    for p in s["outputs"]:
        out[(s["stage"], p.rsplit("/", 1)[-1])] = p
    out[(s["stage"], "timing.json")] = s["timing"]
hist = list(csv.DictReader(open(out[("train", "history.csv")])))
epochs = json.load(open(out[("train", "timing.json")]))["stage"]["epochs"]
m = json.load(open(out[("evaluate", "metrics.json")]))
full, sparse, model = m["validation_full_labels"], m["validation"], m["model"]
problems = []
for h in hist:
    for k in ("train loss", "val loss", "val RMSE px"):
        v = float(h[k])
        if not math.isfinite(v):
            problems.append(f"{run}: epoch {h['epoch']}: {k} = {h[k]}")
train_s = sum(e["seconds"] for e in epochs)
def f(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"
row = [f"{train_s:.0f} s ({run_wall} s now)", f(full["rmse_px"]), f(full["mae_px"]),
       f(full["pck_10"], 1), f(full["mean_shape_rmse_px"]), f(sparse["rmse_px"]),
       f"{model['best_epoch']} / {model['epochs_run']}"]
print("ROW\t" + " | ".join(row))
rmses = [float(h["val RMSE px"]) for h in hist]
print("CURVE\t" + " ".join(f"{v:.2f}" for v in rmses))
for p in problems:
    print("PROBLEM\t" + p)
PY
  ) || {
    PROBLEMS+=("$RUN: cannot read its results (fkp status --json in $WORK/logs/$RUN.status.json, history.csv, metrics.json)")
    ROWS_OUT+=("| $RUN | $ARCH | $MISSING | $AUGMENT | $EPOCHS | no results | | | | | | |")
    continue
  }
  ROWS_OUT+=("| $RUN | $ARCH | $MISSING | $AUGMENT | $EPOCHS | $(grep '^ROW' <<<"$RESULT" | cut -f2) |")
  CURVES+=("- $RUN: $(grep '^CURVE' <<<"$RESULT" | cut -f2)")
  while IFS= read -r p; do [[ -n $p ]] && PROBLEMS+=("$p"); done < <(grep '^PROBLEM' <<<"$RESULT" | cut -f2 || true)
  note "  done: $RUN_WALL s"
done

echo
echo "Quality on the 692 validation faces of faces15-train-sparse.csv.gz (val 0.2, seed 42), CPU,"
echo "batch $BATCH, Adam lr $LR; 'full labels' = scored against faces15-train.csv.gz."
echo
echo "| run | arch | missing | augment | epochs | train wall | val RMSE px (full) | MAE px (full) | PCK@10% (full) | mean-shape RMSE px (full) | val RMSE px (sparse) | best epoch / run |"
echo "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${ROWS_OUT[@]}"
echo
echo "train wall: sum of the epochs' seconds in timing.json (training + the per-epoch validation pass);"
echo "'now': this invocation's fkp run, ~0 when it came from the cache. PCK@10%: % of points within"
echo "10% of the true inter-ocular distance. Mean-shape RMSE: predicting the mean face, the baseline."
echo
echo "Validation RMSE px (sparse labels) per epoch:"
echo
printf '%s\n' "${CURVES[@]}"
if [[ ${#PROBLEMS[@]} -gt 0 ]]; then
  echo
  echo "Problems:"
  printf -- '- %s\n' "${PROBLEMS[@]}"
fi
echo
echo "Reports: $WORK/reports/<run>/ (metrics.md, learning_curves.png). Whole benchmark: ${SECONDS} s wall."
[[ ${#PROBLEMS[@]} -eq 0 ]]
