#!/usr/bin/env bash
# Training speed of fkp (dfdx, CPU) against PyTorch on the same models, batch 64, 2 threads.
#
# Usage: bench/train_speed.sh [MODEL...]
#   MODEL: lenet resnet18 resnet50 alexnet darknet53 (default: all five)
#
# For each model:
#   fkp      `fkp run` on the shared faces15-train-sparse.csv.gz (missing = "mask", device = "cpu",
#            batch 64, seed 42) in a temporary folder, 2 epochs: lenet on all 3462 rows, the
#            others on the first rows (alexnet 640, resnet18 384, resnet50 256, darknet53 192:
#            they are 4-40x slower). ingest and prepare run
#            first (`--until prepare`, untimed); then the train stage alone runs under
#            `/usr/bin/time -v`, which gives its peak RSS and CPU time. img/s is the LAST epoch's
#            `images_per_s` in the train entry's timing.json: the first epoch includes warm-up
#            (memory faulted in, the buffer cache filled), as PyTorch's untimed first step does.
#   PyTorch  bench/torch_train_speed.py --model M --batch 64 --threads 2 --steps N
#            (lenet 20 steps, resnet18 6, resnet50 4, alexnet 10, darknet53 3; 1 untimed warm-up
#            step first; parameter counts equal fkp's); img/s and peak RSS from
#            its RESULT line.
#
# The two numbers do not measure quite the same work:
#   - fkp's images/s covers the whole training pass of an epoch: batch assembly (shuffled u8 rows
#     -> f32 tensors, masks; augmentation is off here), forward, masked MSE, backward and the Adam
#     step. Validation is not in it.
#   - PyTorch's covers forward + MSE + backward + Adam on ONE random tensor batch reused every
#     step: no data loading at all.
# So the ratio slightly favours PyTorch. Peak RSS: fkp's is the whole `fkp run` process for the
# train and evaluate stages (loading prepared.safetensors, all training and validation images as
# u8, the model, Adam state, checkpoints, then [evaluate]'s predictions, whose images/s is the
# inference column); PyTorch's includes the torch import (~300-400 MiB by itself).
# "fkp cores" = (user + sys CPU seconds) / wall seconds of that fkp process.
#
# Threads: both sides get BENCH_THREADS (2): torch.set_num_threads, and RAYON_NUM_THREADS for fkp
# (dfdx's patched conv/pool kernels and gemm use rayon's global pool).
#
# Environment:
#   FKP_BIN          fkp binary (default ${CARGO_TARGET_DIR:-~/.cache/fkp-target}/release/fkp;
#                    never built here)
#   FKP_BASELINE_BIN another fkp binary (an older build) to time the same way, in a folder of its
#                    own, just before FKP_BIN; adds its img/s and FKP_BIN's ratio to it
#   FKP_SHARED_DATA  folder holding faces15-train-sparse.csv.gz (default <repo>/../shared/data)
#   TORCH_PYTHON     python with torch (default bench/.venv-torch/bin/python; when that is missing
#                    it is created with `pip install torch==2.15.0 numpy`: ~3.5 GB, CUDA wheels
#                    included, since PyPI has no CPU-only torch for Linux)
#   BENCH_THREADS=2  BENCH_BATCH=64
#   <MODEL>_EPOCHS, <MODEL>_ROWS, <MODEL>_STEPS   e.g. LENET_EPOCHS=2 LENET_ROWS=all
#                    LENET_STEPS=20, RESNET50_ROWS=256, DARKNET53_STEPS=3 (defaults above)
#   KEEP_TMP=1       keep the temporary folder (its path is printed)
# Close other work (a cargo build) first: the machine has 2 cores.
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;; esac
MODELS=("$@")
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(lenet resnet18 resnet50 alexnet darknet53)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FKP_SHARED_DATA:-$(dirname "$REPO")/shared/data}
FKP=${FKP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fkp-target}/release/fkp}
THREADS=${BENCH_THREADS:-2}
BATCH=${BENCH_BATCH:-64}
TORCH_VERSION=2.15.0

die() { echo "bench/train_speed.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

SPARSE=$(cd "$SHARED" 2>/dev/null && pwd)/faces15-train-sparse.csv.gz ||
  die "folder not found: $SHARED (set FKP_SHARED_DATA)"
[[ -f "$SPARSE" ]] || die "faces15-train-sparse.csv.gz not found in $SHARED (set FKP_SHARED_DATA)"
[[ -x "$FKP" ]] || die "no fkp binary at $FKP (build it with cargo build --release, or set FKP_BIN)"
FKP=$(cd "$(dirname "$FKP")" && pwd)/$(basename "$FKP")
BASELINE=${FKP_BASELINE_BIN:-}
[[ -z $BASELINE || -x $BASELINE ]] || die "FKP_BASELINE_BIN=$BASELINE is not an executable file"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian: apt-get install time)"
command -v python3 >/dev/null || die "python3 is required"
for m in "${MODELS[@]}"; do
  case "$m" in lenet|resnet18|resnet50|alexnet|darknet53) ;;
    *) die "unknown model: $m (lenet, resnet18, resnet50, alexnet or darknet53)" ;; esac
done

# ---------------------------------------------------------------- PyTorch
PY=${TORCH_PYTHON:-$REPO/bench/.venv-torch/bin/python}
if [[ -z "${TORCH_PYTHON:-}" && ! -x "$PY" ]]; then
  note "creating bench/.venv-torch with torch==$TORCH_VERSION: WARNING, about 3.5 GB to download"
  note "  (PyPI has only the CUDA build; set TORCH_PYTHON to a python with torch to skip this)"
  python3 -m venv "$REPO/bench/.venv-torch"
  "$REPO/bench/.venv-torch/bin/pip" install -q "torch==$TORCH_VERSION" numpy
fi
[[ -x "$PY" ]] || die "TORCH_PYTHON=$PY is not an executable file"
TORCH_FOUND=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null) ||
  die "$PY cannot import torch: pip install torch==$TORCH_VERSION numpy"
[[ $TORCH_FOUND == "$TORCH_VERSION"* ]] ||
  note "warning: $PY has torch $TORCH_FOUND, the reference numbers used $TORCH_VERSION"

note "fkp: $FKP ($("$FKP" --version 2>/dev/null || echo 'version unknown'); built $(date -r "$FKP" '+%F %T'))"
note "torch: $TORCH_FOUND ($PY)"
note "threads $THREADS, batch $BATCH; load now: $(cut -d' ' -f1-3 /proc/loadavg)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fkp-train-speed.XXXXXX")
if [[ -n "${KEEP_TMP:-}" ]]; then note "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# time_field FILE LABEL -> the value of "LABEL: value" in /usr/bin/time -v output
time_field() { awk -v k="$2: " '{ sub(/^[ \t]+/, "") } index($0, k) == 1 { v = substr($0, length(k) + 1) } END { print v }' "$1"; }
# wall clock "h:mm:ss" or "m:ss.ss" -> seconds
wall_seconds() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.3f", s }' <<<"$1"; }

# run_fkp BIN DIR TOML: one `fkp run` of TOML in DIR; sets FKP_IPS FKP_EPOCH FKP_INFER FKP_RSS WALL_S
# FKP_CORES
run_fkp() {
  local bin=$1 dir=$2 toml=$3
  note "$MODEL / $bin: ingest + prepare ($ROWS rows, untimed)"
  (cd "$dir" && "$bin" run -q --until prepare "$toml") || die "fkp run --until prepare failed ($MODEL)"
  note "$MODEL / $bin: train, $EPOCHS epoch(s), under /usr/bin/time -v"
  (cd "$dir" && RAYON_NUM_THREADS=$THREADS /usr/bin/time -v -o "$dir/fkp.time" \
     "$bin" run -q "$toml") || die "fkp run failed ($MODEL); see $dir/fkp.time"
  local user_s sys_s
  # the LAST epoch's images/s (the first epoch includes warm-up), and [evaluate]'s
  # inference images/s (the validation faces, on the training device), from the timing.json
  # files that `fkp status --json` names
  read -r FKP_IPS FKP_EPOCH FKP_INFER < <(cd "$dir" && "$bin" status --json "$toml" | python3 -c '
import json, sys
stages = json.load(sys.stdin)["pipelines"][0]["stages"]
timing = {s["stage"]: json.load(open(s["timing"]))["stage"] for s in stages if s["stage"] in ("train", "evaluate")}
last = timing["train"]["epochs"][-1]
inference = timing["evaluate"]["inference"]["images_per_s"]
print("%.2f %d %.1f" % (last["images_per_s"], last["epoch"], inference))
') || die "no train/evaluate timing.json in fkp status --json ($MODEL)"
  [[ -n $FKP_INFER ]] || die "no train/evaluate timing.json in fkp status --json ($MODEL)"
  FKP_RSS=$(awk '{ printf "%.0f", $1 / 1024 }' <<<"$(time_field "$dir/fkp.time" 'Maximum resident set size (kbytes)')")
  user_s=$(time_field "$dir/fkp.time" 'User time (seconds)')
  sys_s=$(time_field "$dir/fkp.time" 'System time (seconds)')
  WALL_S=$(wall_seconds "$(time_field "$dir/fkp.time" 'Elapsed (wall clock) time (h:mm:ss or m:ss)')")
  [[ -n $FKP_RSS && -n $user_s && -n $sys_s && $WALL_S != 0.000 ]] ||
    die "cannot read /usr/bin/time -v output: $dir/fkp.time"
  FKP_CORES=$(awk -v u="$user_s" -v s="$sys_s" -v w="$WALL_S" 'BEGIN { printf "%.2f", (w > 0 ? (u + s) / w : 0) }')
  note "  $bin: $FKP_IPS img/s (epoch $FKP_EPOCH), inference $FKP_INFER img/s, peak RSS $FKP_RSS MiB, ${WALL_S} s wall, $FKP_CORES cores"
}

SECONDS=0
ROWS_OUT=()
for MODEL in "${MODELS[@]}"; do
  # defaults: epochs rows steps
  case "$MODEL" in
    lenet)     set -- 2 all 20 ;;
    resnet18)  set -- 2 384 6 ;;
    resnet50)  set -- 2 256 4 ;;
    alexnet)   set -- 2 640 10 ;;
    darknet53) set -- 2 192 3 ;;
  esac
  KEY=${MODEL^^}
  EPOCHS=$(printenv "${KEY}_EPOCHS" || echo "$1")
  ROWS=$(printenv "${KEY}_ROWS" || echo "$2")
  STEPS=$(printenv "${KEY}_STEPS" || echo "$3")
  DIR="$TMP/$MODEL"
  mkdir -p "$DIR"
  INPUT=$SPARSE
  if [[ $ROWS != all ]]; then
    [[ $ROWS =~ ^[1-9][0-9]*$ ]] || die "rows for $MODEL must be a positive integer or 'all', not '$ROWS'"
    INPUT="$DIR/first-$ROWS.csv.gz"
    # header + the first ROWS rows (pipefail: head closing the pipe early kills zcat with SIGPIPE)
    { zcat "$SPARSE" || true; } | head -n $((ROWS + 1)) | gzip -1 > "$INPUT"
  fi
  cat > "$DIR/train-$MODEL.toml" <<EOF
[pipeline]
name = "train-speed-$MODEL"

[ingest]
train = "$INPUT"

[prepare]
missing = "mask"

[model]
arch = "$MODEL"

[train]
device = "cpu"
epochs = $EPOCHS
batch_size = $BATCH
seed = 42

[evaluate]
EOF

  # ---- fkp (after the baseline build, when given, in a folder of its own)
  BASE_COL=""
  if [[ -n $BASELINE ]]; then
    mkdir -p "$DIR/baseline"
    cp "$DIR/train-$MODEL.toml" "$DIR/baseline/"
    run_fkp "$BASELINE" "$DIR/baseline" "train-$MODEL.toml"
    BASE_IPS=$FKP_IPS
  fi
  run_fkp "$FKP" "$DIR" "train-$MODEL.toml"
  if [[ -n $BASELINE ]]; then
    BASE_COL=" $BASE_IPS | $(awk -v a="$FKP_IPS" -v b="$BASE_IPS" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }') |"
  fi

  # ---- PyTorch
  note "$MODEL / PyTorch: $STEPS steps"
  "$PY" "$REPO/bench/torch_train_speed.py" --model "$MODEL" --batch "$BATCH" --threads "$THREADS" \
    --steps "$STEPS" > "$DIR/torch.log" 2>&1 || { cat "$DIR/torch.log" >&2; die "torch_train_speed.py failed ($MODEL)"; }
  RESULT=$(grep '^RESULT ' "$DIR/torch.log" | tail -n 1) || die "no RESULT line from torch_train_speed.py ($MODEL)"
  TORCH_IPS=$(sed -n 's/.* img_per_s=\([^ ]*\).*/\1/p' <<<"$RESULT")
  TORCH_RSS=$(sed -n 's/.* peak_rss_mib=\([^ ]*\).*/\1/p' <<<"$RESULT")
  [[ -n $TORCH_IPS && -n $TORCH_RSS ]] || die "cannot parse: $RESULT"
  note "  PyTorch: $TORCH_IPS img/s, peak RSS $TORCH_RSS MiB"

  RATIO=$(awk -v a="$FKP_IPS" -v b="$TORCH_IPS" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  DATA=$([[ $ROWS == all ]] && echo "all rows" || echo "first $ROWS rows")
  ROWS_OUT+=("| $MODEL | $FKP_IPS | $TORCH_IPS | $RATIO | $FKP_RSS | $(printf '%.0f' "$TORCH_RSS") | $FKP_CORES | $FKP_INFER |$BASE_COL $DATA, epoch $FKP_EPOCH of $EPOCHS; torch $STEPS steps |")
done

echo
echo "Training speed, CPU, batch $BATCH, $THREADS threads ($(nproc) cores here), torch $TORCH_FOUND"
echo
if [[ -n $BASELINE ]]; then
  echo "Baseline fkp: $BASELINE"
  echo
  echo "| model | fkp img/s | PyTorch img/s | fkp / PyTorch | fkp peak RSS MiB | PyTorch peak RSS MiB | fkp cores used | fkp inference img/s | baseline img/s | fkp / baseline | run |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
else
  echo "| model | fkp img/s | PyTorch img/s | fkp / PyTorch | fkp peak RSS MiB | PyTorch peak RSS MiB | fkp cores used | fkp inference img/s | run |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
fi
printf '%s\n' "${ROWS_OUT[@]}"
echo
echo "fkp img/s: last epoch's training pass incl. batch assembly (u8 -> f32, augmentation off);"
echo "PyTorch img/s: one random batch reused, no data loading. fkp cores = (user + sys) / wall of the train run."
echo "fkp inference img/s: [evaluate] predicting the validation faces on the training device (batched)."
echo "Whole benchmark: ${SECONDS} s wall."
