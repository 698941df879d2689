#!/usr/bin/env bash
# Training and inference speed of fkp (dfdx, CPU) against PyTorch on the same models, batch 64,
# 2 threads, and how much of the machine's peak f32 arithmetic fkp reaches.
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
#            its RESULT line, which also gives the network's forward multiply-adds per image
#            (macs_per_img: Conv2d and Linear layers, counted by forward hooks on one 1x96x96 image).
#   PyTorch inference  the same script with --inference, in a process of its own: the same
#            network in eval mode under torch.inference_mode(), batch 64, same threads, 1 untimed
#            warm-up batch, then N timed batches (lenet 40, resnet18 12, resnet50 8, alexnet 20,
#            darknet53 6); img/s from its RESULT line.
#   fkp inference  `fkp predict`, timed differentially in the folder of the fkp run above (the
#            model is then cached: predict does not retrain). Once per benchmark two Kaggle-layout
#            inputs are written from the shared full-label faces15-train.csv.gz: its header + first
#            64 rows, and its header + first F rows (F = BENCH_INFER_FACES, 1024; at most 3462).
#            Each is predicted by `RAYON_NUM_THREADS=2 fkp predict -q --no-tta --input FILE
#            --output OUT.csv PIPELINE.toml`, the best of 3 runs (wall clock from `date +%s.%N`);
#            img/s = (F - 64) / (t(F) - t(64)): what the extra faces cost, so process start, model
#            load and the fixed CSV work cancel out (as bench/onnx_speed.sh does; fkp predicts 64
#            faces at a time). It still includes per face: parsing the row, u8 -> f32, writing the
#            predictions. FKP_BASELINE_BIN, when given, is timed the same way in its own folder.
#            "-" when t(F) <= t(64) (too few faces to measure: raise BENCH_INFER_FACES).
#
# The two numbers do not measure quite the same work:
#   - fkp's images/s covers the whole training pass of an epoch: batch assembly (shuffled u8 rows
#     -> f32 tensors, masks; augmentation is off here), forward, masked MSE, backward and the Adam
#     step. Validation is not in it.
#   - PyTorch's covers forward + MSE + backward + Adam on ONE random tensor batch reused every
#     step: no data loading at all.
# So the ratio slightly favours PyTorch, for inference too (fkp predict parses CSV rows and writes
# predictions; PyTorch's inference reuses one random batch). Peak RSS: fkp's is the whole `fkp run`
# process for the train and evaluate stages (loading prepared.safetensors, all training and
# validation images as u8, the model, Adam state, checkpoints, then [evaluate]'s predictions of the
# validation faces); PyTorch's includes the torch import (~300-400 MiB by itself).
# "fkp cores" = (user + sys CPU seconds) / wall seconds of that fkp process.
#
# Repeats: BENCH_REPEAT (default 1) runs the whole per-model measurement that many times in turn
# (baseline fkp if given, fkp, PyTorch training, PyTorch inference, then fkp inference); each
# repeat's fkp runs use fresh folders (so they train again). The table then shows, per model, the
# median of each numeric column over the repeats (a ratio column: the median of each repeat's
# ratio; an even count takes the mean of the middle two), and one more column listing each repeat's
# fkp / PyTorch training ratios, then " / ", then its inference ratios. With 1 repeat the table is
# that run's numbers, without that column.
#
# Utilisation against the machine's limit (columns MMAC/img, fkp GFLOP/s, % of peak):
#   MMAC/img               torch_train_speed.py's macs_per_img / 1e6 (forward, one image; the
#                          ports have fkp's layers, so the count is fkp's too; bias, batch norm,
#                          activations, pooling and residual adds are left out: a few %)
#   fkp GFLOP/s            MACs x 2 flops x 3 x fkp train img/s / 1e9 (a training step is about 3
#                          forwards: the forward, then input and weight gradients in backward)
#   fkp inference GFLOP/s  MACs x 2 x fkp inference img/s / 1e9
#   % of peak              GFLOP/s / peak x 100, with
#   peak GFLOP/s           physical cores x FMA units per core x f32 lanes (16 with AVX-512, else
#                          8 with AVX2) x 2 flops per FMA x GHz
#     cores: lscpu's "Core(s) per socket" x "Socket(s)" (SMT siblings share their core's FMA
#       units), else nproc. FMA units: 2 (every AVX2+FMA x86 core since Intel Haswell / AMD Zen 2;
#       not detectable from the flags; BENCH_FMA_UNITS). Lanes, from the first "flags" line of
#       /proc/cpuinfo: 16 (512-bit AVX-512) when it has avx512f as well as avx2 and fma: then
#       fkp's gemm 0.19 (its x86-v4 feature) picks its AVX-512 kernels at run time, as PyTorch
#       (oneDNN) does; else 8 (256-bit AVX2+FMA) when it has avx2 and fma; else no peak is
#       computed (set BENCH_PEAK_GFLOPS). Some AVX-512 cores have only one 512-bit FMA unit
#       (some Xeon Bronze/Silver, client Ice/Tiger Lake), and AMD Zen 4 splits 512-bit FMAs into 256-bit halves: set BENCH_FMA_UNITS=1 there.
#     GHz: BENCH_CPU_MHZ, else lscpu's "CPU max MHz", else cpufreq's cpuinfo_max_freq, else the
#       highest "cpu MHz" in /proc/cpuinfo (in a VM that is the host's nominal/TSC clock: turbo
#       above it is not counted, so % of peak may read a little high). The table's title says
#       which source gave the number.
#
# Threads: both sides get BENCH_THREADS (2): torch.set_num_threads, and RAYON_NUM_THREADS for fkp
# (dfdx's patched conv/pool kernels and gemm use rayon's global pool).
#
# Environment:
#   FKP_BIN          fkp binary (default ${CARGO_TARGET_DIR:-~/.cache/fkp-target}/release/fkp;
#                    never built here)
#   FKP_BASELINE_BIN another fkp binary (an older build) to time the same way, in a folder of its
#                    own, just before FKP_BIN (training, and predict for inference); adds its
#                    training and inference img/s and FKP_BIN's ratio to each
#   FKP_SHARED_DATA  folder holding faces15-train-sparse.csv.gz (training) and faces15-train.csv.gz
#                    (the faces predicted) (default <repo>/../shared/data)
#   TORCH_PYTHON     python with torch (default bench/.venv-torch/bin/python; when that is missing
#                    it is created with `pip install torch==2.15.0 numpy`: ~3.5 GB, CUDA wheels
#                    included, since PyPI has no CPU-only torch for Linux)
#   BENCH_THREADS=2  BENCH_BATCH=64
#   BENCH_INFER_FACES=1024  faces of the larger fkp predict input (more than 64, at most 3462)
#   BENCH_REPEAT=1   repeats of each model's measurement; the table shows medians (see above)
#   <MODEL>_EPOCHS, <MODEL>_ROWS, <MODEL>_STEPS, <MODEL>_INFER_STEPS   e.g. LENET_EPOCHS=2
#                    LENET_ROWS=all LENET_STEPS=20 LENET_INFER_STEPS=40, RESNET50_ROWS=256,
#                    DARKNET53_STEPS=3 (defaults above)
#   BENCH_PEAK_GFLOPS  the machine's peak f32 GFLOP/s, instead of computing it (see above)
#   BENCH_CPU_MHZ      the clock for the peak, instead of reading it; BENCH_FMA_UNITS=2
#   KEEP_TMP=1       keep the temporary folder (its path is printed)
#   FKP_CACHE_DIR and FKP_REMOTE are unset: every fkp run builds in its own folder's .fkp
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
INFER_FACES=${BENCH_INFER_FACES:-1024}
REPEAT=${BENCH_REPEAT:-1}
PREDICT_SMALL=64  # faces in the smaller fkp predict input (fkp predicts 64 at a time)
PREDICT_RUNS=3    # fkp predict runs per input; the fastest counts
TORCH_VERSION=2.15.0

die() { echo "bench/train_speed.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }
# each fkp run builds in its own folder's .fkp cache (repeats and the baseline train afresh)
unset FKP_CACHE_DIR FKP_REMOTE

SPARSE=$(cd "$SHARED" 2>/dev/null && pwd)/faces15-train-sparse.csv.gz ||
  die "folder not found: $SHARED (set FKP_SHARED_DATA)"
[[ -f "$SPARSE" ]] || die "faces15-train-sparse.csv.gz not found in $SHARED (set FKP_SHARED_DATA)"
FULL=$(dirname "$SPARSE")/faces15-train.csv.gz
[[ -f "$FULL" ]] || die "faces15-train.csv.gz not found in $SHARED (set FKP_SHARED_DATA)"
if ! [[ $INFER_FACES =~ ^[1-9][0-9]*$ ]] || ((INFER_FACES <= PREDICT_SMALL)); then
  die "BENCH_INFER_FACES must be an integer above $PREDICT_SMALL, not '$INFER_FACES'"
fi
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive integer, not '$REPEAT'"
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
note "threads $THREADS, batch $BATCH, $REPEAT repeat(s); load now: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- the machine's peak
# cores x FMA units x f32 lanes (16 AVX-512, 8 AVX2) x 2 flops x GHz (see the header); sets PEAK
# ("" = unknown) and PEAK_DESC
lscpu_field() { LC_ALL=C lscpu 2>/dev/null | awk -F: -v k="$1" '$1 == k { sub(/^[ \t]+/, "", $2); print $2; exit }'; }
is_number() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v x="$1" 'BEGIN { exit !(x > 0) }'; }
if [[ -n ${BENCH_PEAK_GFLOPS:-} ]]; then
  is_number "$BENCH_PEAK_GFLOPS" || die "BENCH_PEAK_GFLOPS must be a positive number, not '$BENCH_PEAK_GFLOPS'"
  PEAK=$BENCH_PEAK_GFLOPS
  PEAK_DESC="peak $PEAK GFLOP/s (BENCH_PEAK_GFLOPS)"
else
  PER_SOCKET=$(lscpu_field 'Core(s) per socket'); SOCKETS=$(lscpu_field 'Socket(s)')
  if [[ $PER_SOCKET =~ ^[0-9]+$ && $SOCKETS =~ ^[0-9]+$ ]]; then
    CORES=$((PER_SOCKET * SOCKETS)); CORES_SRC=lscpu
  else
    CORES=$(nproc); CORES_SRC=nproc
  fi
  FMA_UNITS=${BENCH_FMA_UNITS:-2}
  [[ $FMA_UNITS =~ ^[1-9][0-9]*$ ]] || die "BENCH_FMA_UNITS must be a positive integer, not '$FMA_UNITS'"
  MHZ_MAX_KHZ=/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq
  if [[ -n ${BENCH_CPU_MHZ:-} ]]; then
    MHZ=$BENCH_CPU_MHZ; MHZ_SRC=BENCH_CPU_MHZ
  elif MHZ=$(lscpu_field 'CPU max MHz') && is_number "$MHZ"; then
    MHZ_SRC="lscpu CPU max MHz"
  elif [[ -r $MHZ_MAX_KHZ ]] && MHZ=$(awk '{ printf "%.0f", $1 / 1000 }' "$MHZ_MAX_KHZ") && is_number "$MHZ"; then
    MHZ_SRC="cpufreq cpuinfo_max_freq"
  else
    MHZ=$(awk -F: '/^cpu MHz/ { v = $2 + 0; if (v > m) m = v } END { if (m > 0) printf "%.0f", m }' /proc/cpuinfo)
    MHZ_SRC="/proc/cpuinfo cpu MHz: no max frequency exposed, in a VM the nominal clock, turbo not counted"
  fi
  is_number "${MHZ:-}" || die "cannot read the CPU clock (${MHZ_SRC}: '${MHZ:-}'); set BENCH_CPU_MHZ or BENCH_PEAK_GFLOPS"
  FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has_flags() { local f; for f in "$@"; do [[ $FLAGS == *" $f "* ]] || return 1; done; }
  if has_flags avx2 fma; then
    # gemm 0.19 (x86-v4) takes its AVX-512 kernels on avx512f, as src/training/numerics.rs says
    if has_flags avx512f; then
      LANES=16; SIMD="AVX-512"
    else
      LANES=8; SIMD="AVX2+FMA"
    fi
    PEAK=$(awk -v c="$CORES" -v u="$FMA_UNITS" -v l="$LANES" -v m="$MHZ" 'BEGIN { printf "%.1f", c * u * l * 2 * m / 1000 }')
    PEAK_DESC="peak $PEAK GFLOP/s = $CORES cores ($CORES_SRC) x $FMA_UNITS FMA units x $LANES f32 lanes ($SIMD) x 2 flops x $(awk -v m="$MHZ" 'BEGIN { printf "%.3f", m / 1000 }') GHz ($MHZ_SRC)"
  else
    PEAK=""
    PEAK_DESC="peak unknown: no avx2+fma in /proc/cpuinfo (set BENCH_PEAK_GFLOPS)"
  fi
fi
[[ -z ${CORES:-} || $THREADS -ge ${CORES:-0} ]] ||
  note "warning: $THREADS threads on $CORES cores: % of peak is of the whole machine's peak"
note "$PEAK_DESC"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fkp-train-speed.XXXXXX")
if [[ -n "${KEEP_TMP:-}" ]]; then note "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# time_field FILE LABEL -> the value of "LABEL: value" in /usr/bin/time -v output
time_field() { awk -v k="$2: " '{ sub(/^[ \t]+/, "") } index($0, k) == 1 { v = substr($0, length(k) + 1) } END { print v }' "$1"; }
# wall clock "h:mm:ss" or "m:ss.ss" -> seconds
wall_seconds() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.3f", s }' <<<"$1"; }

# run_fkp BIN DIR TOML: one `fkp run` of TOML in DIR; sets FKP_IPS FKP_EPOCH FKP_RSS WALL_S FKP_CORES
run_fkp() {
  local bin=$1 dir=$2 toml=$3
  note "$MODEL / $bin: ingest + prepare ($ROWS rows, untimed)"
  (cd "$dir" && "$bin" run -q --until prepare "$toml") || die "fkp run --until prepare failed ($MODEL)"
  note "$MODEL / $bin: train, $EPOCHS epoch(s), under /usr/bin/time -v"
  (cd "$dir" && RAYON_NUM_THREADS=$THREADS /usr/bin/time -v -o "$dir/fkp.time" \
     "$bin" run -q "$toml") || die "fkp run failed ($MODEL); see $dir/fkp.time"
  local user_s sys_s
  # the LAST epoch's images/s (the first epoch includes warm-up), from the train entry's
  # timing.json that `fkp status --json` names
  read -r FKP_IPS FKP_EPOCH < <(cd "$dir" && "$bin" status --json "$toml" | python3 -c '
import json, sys
stages = json.load(sys.stdin)["pipelines"][0]["stages"]
train = next(json.load(open(s["timing"]))["stage"] for s in stages if s["stage"] == "train")
last = train["epochs"][-1]
print("%.2f %d" % (last["images_per_s"], last["epoch"]))
') || die "no train timing.json in fkp status --json ($MODEL)"
  [[ -n $FKP_EPOCH ]] || die "no train timing.json in fkp status --json ($MODEL)"
  FKP_RSS=$(awk '{ printf "%.0f", $1 / 1024 }' <<<"$(time_field "$dir/fkp.time" 'Maximum resident set size (kbytes)')")
  user_s=$(time_field "$dir/fkp.time" 'User time (seconds)')
  sys_s=$(time_field "$dir/fkp.time" 'System time (seconds)')
  WALL_S=$(wall_seconds "$(time_field "$dir/fkp.time" 'Elapsed (wall clock) time (h:mm:ss or m:ss)')")
  [[ -n $FKP_RSS && -n $user_s && -n $sys_s && $WALL_S != 0.000 ]] ||
    die "cannot read /usr/bin/time -v output: $dir/fkp.time"
  FKP_CORES=$(awk -v u="$user_s" -v s="$sys_s" -v w="$WALL_S" 'BEGIN { printf "%.2f", (w > 0 ? (u + s) / w : 0) }')
  note "  $bin: $FKP_IPS img/s (epoch $FKP_EPOCH), peak RSS $FKP_RSS MiB, ${WALL_S} s wall, $FKP_CORES cores"
}

# best_seconds N COMMAND...: the fastest of N runs, in wall seconds
# shellcheck source=bench/lib/timing.sh
source "$REPO/bench/lib/timing.sh"

# torch_result LOG ARGS...: bench/torch_train_speed.py for MODEL at BATCH and THREADS with ARGS,
# its output in LOG; prints its RESULT line
torch_result() {
  local log=$1
  shift
  "$PY" "$REPO/bench/torch_train_speed.py" --model "$MODEL" --batch "$BATCH" --threads "$THREADS" "$@" \
    > "$log" 2>&1 || { cat "$log" >&2; die "torch_train_speed.py $* failed ($MODEL)"; }
  grep '^RESULT ' "$log" | tail -n 1 | grep . || die "no RESULT line from torch_train_speed.py $* ($MODEL)"
}
# result_field NAME: the value of NAME=... in RESULT
result_field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$RESULT"; }

# predict BIN DIR TOML INPUT OUTPUT: one plain `fkp predict` with the model cached in DIR
predict() {
  (cd "$2" && RAYON_NUM_THREADS=$THREADS "$1" predict -q --no-tta --input "$4" --output "$5" "$3")
}

# predict_speed BIN DIR TOML: fkp inference img/s of the model trained in DIR, differentially:
# (INFER_FACES - PREDICT_SMALL) / (t(INFER_FACES faces) - t(PREDICT_SMALL faces)), each the best
# of PREDICT_RUNS runs; sets FKP_INFER ("-" when the larger input was not slower)
predict_speed() {
  local bin=$1 dir=$2 toml=$3 t_small t_large
  note "$MODEL / $bin: fkp predict, $INFER_FACES and $PREDICT_SMALL faces, best of $PREDICT_RUNS"
  t_large=$(best_seconds "$PREDICT_RUNS" predict "$bin" "$dir" "$toml" "$FACES_LARGE" "$dir/predict-$INFER_FACES.csv")
  t_small=$(best_seconds "$PREDICT_RUNS" predict "$bin" "$dir" "$toml" "$FACES_SMALL" "$dir/predict-$PREDICT_SMALL.csv")
  FKP_INFER=$(awk -v n="$INFER_FACES" -v s="$PREDICT_SMALL" -v a="$t_large" -v b="$t_small" \
    'BEGIN { if (a > b) printf "%.1f", (n - s) / (a - b); else print "-" }')
  note "  $bin predict: $t_large s for $INFER_FACES faces, $t_small s for $PREDICT_SMALL: $FKP_INFER img/s"
}

# numeric helpers; "-" (not measured) in, "-" out
ratio() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { n = "^[0-9]+([.][0-9]+)?$"; if (a ~ n && b ~ n && b > 0) printf f, a / b; else print "-" }'; }
percent_of_peak() { awk -v a="$1" -v p="$PEAK" 'BEGIN { if (a ~ /^[0-9]+([.][0-9]+)?$/) printf "%.1f", 100 * a / p; else print "-" }'; }
# comma_list A B C -> "A, B, C"
comma_list() { local IFS=, list; list="$*"; echo "${list//,/, }"; }
# median FILE COLUMN: the median of the numbers in COLUMN of FILE; with an odd count the middle
# value as written, with an even count the mean of the middle two, to the inputs' most decimals
median() {
  awk -v k="$2" '
    $k ~ /^-?[0-9]+([.][0-9]+)?$/ {
      n++; v[n] = $k + 0; w[n] = $k
      d = index($k, ".") ? length($k) - index($k, ".") : 0
      if (d > dec) dec = d
    }
    END {
      if (n == 0) { print "-"; exit }
      for (i = 2; i <= n; i++) {
        x = v[i]; y = w[i]
        for (j = i - 1; j >= 1 && v[j] > x; j--) { v[j + 1] = v[j]; w[j + 1] = w[j] }
        v[j + 1] = x; w[j + 1] = y
      }
      if (n % 2) print w[(n + 1) / 2]
      else printf("%." dec "f\n", (v[n / 2] + v[n / 2 + 1]) / 2)
    }' "$1"
}

# the faces fkp predict times, for every model: header + the first PREDICT_SMALL / INFER_FACES
# rows of the full-label file (Kaggle layout; predict ignores the coordinate columns)
FACES_SMALL="$TMP/faces-$PREDICT_SMALL.csv"
FACES_LARGE="$TMP/faces-$INFER_FACES.csv"
{ zcat "$FULL" || true; } | head -n $((INFER_FACES + 1)) > "$FACES_LARGE"
head -n $((PREDICT_SMALL + 1)) "$FACES_LARGE" > "$FACES_SMALL"
FULL_ROWS=$(($(wc -l < "$FACES_LARGE") - 1))
((FULL_ROWS == INFER_FACES)) || die "BENCH_INFER_FACES=$INFER_FACES, but $FULL has only $FULL_ROWS rows"

SECONDS=0
ROWS_OUT=()
for MODEL in "${MODELS[@]}"; do
  # defaults: epochs rows steps inference-steps
  case "$MODEL" in
    lenet)     set -- 2 all 20 40 ;;
    resnet18)  set -- 2 384 6 12 ;;
    resnet50)  set -- 2 256 4 8 ;;
    alexnet)   set -- 2 640 10 20 ;;
    darknet53) set -- 2 192 3 6 ;;
  esac
  KEY=${MODEL^^}
  EPOCHS=$(printenv "${KEY}_EPOCHS" || echo "$1")
  ROWS=$(printenv "${KEY}_ROWS" || echo "$2")
  STEPS=$(printenv "${KEY}_STEPS" || echo "$3")
  INFER_STEPS=$(printenv "${KEY}_INFER_STEPS" || echo "$4")
  [[ $INFER_STEPS =~ ^[1-9][0-9]*$ ]] || die "${KEY}_INFER_STEPS must be a positive integer, not '$INFER_STEPS'"
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

  # one line per repeat: the table's numeric columns, in the order of COLUMNS below
  REPEATS_TSV="$DIR/repeats.tsv"
  : > "$REPEATS_TSV"
  RATIOS=(); INFER_RATIOS=()
  for ((REP = 1; REP <= REPEAT; REP++)); do
    # each repeat trains afresh, in folders of its own
    RUN_DIR=$DIR
    if ((REP > 1)); then
      RUN_DIR="$DIR/repeat-$REP"
      mkdir -p "$RUN_DIR"
      cp "$DIR/train-$MODEL.toml" "$RUN_DIR/"
    fi
    ((REPEAT == 1)) || note "$MODEL: repeat $REP of $REPEAT"

    # ---- fkp training (after the baseline build, when given, in a folder of its own)
    BASE_IPS=-; BASE_INFER=-
    if [[ -n $BASELINE ]]; then
      mkdir -p "$RUN_DIR/baseline"
      cp "$DIR/train-$MODEL.toml" "$RUN_DIR/baseline/"
      run_fkp "$BASELINE" "$RUN_DIR/baseline" "train-$MODEL.toml"
      BASE_IPS=$FKP_IPS
    fi
    run_fkp "$FKP" "$RUN_DIR" "train-$MODEL.toml"

    # ---- PyTorch
    note "$MODEL / PyTorch: $STEPS steps"
    RESULT=$(torch_result "$RUN_DIR/torch.log" --steps "$STEPS")
    TORCH_IPS=$(result_field img_per_s)
    TORCH_RSS=$(result_field peak_rss_mib)
    MACS=$(result_field macs_per_img)
    [[ -n $TORCH_IPS && -n $TORCH_RSS && -n $MACS ]] || die "cannot parse: $RESULT"
    note "  PyTorch: $TORCH_IPS img/s, peak RSS $TORCH_RSS MiB; $MACS forward MACs per image"

    note "$MODEL / PyTorch inference: $INFER_STEPS batches"
    RESULT=$(torch_result "$RUN_DIR/torch-inference.log" --inference --steps "$INFER_STEPS")
    TORCH_INFER=$(result_field img_per_s)
    TORCH_INFER_RSS=$(result_field peak_rss_mib)
    [[ -n $TORCH_INFER && -n $TORCH_INFER_RSS ]] || die "cannot parse: $RESULT"
    note "  PyTorch inference: $TORCH_INFER img/s, peak RSS $TORCH_INFER_RSS MiB"

    # ---- fkp inference: fkp predict with the models trained above (cached: no retraining)
    if [[ -n $BASELINE ]]; then
      predict_speed "$BASELINE" "$RUN_DIR/baseline" "train-$MODEL.toml"
      BASE_INFER=$FKP_INFER
    fi
    predict_speed "$FKP" "$RUN_DIR" "train-$MODEL.toml"

    RATIO=$(ratio "$FKP_IPS" "$TORCH_IPS" %.2f)
    INFER_RATIO=$(ratio "$FKP_INFER" "$TORCH_INFER" %.2f)
    BASE_RATIO=$(ratio "$FKP_IPS" "$BASE_IPS" %.3f)
    BASE_INFER_RATIO=$(ratio "$FKP_INFER" "$BASE_INFER" %.3f)
    # utilisation: forward MACs x 2 flops (x 3 for a training step) x img/s, against PEAK
    MMACS=$(awk -v m="$MACS" 'BEGIN { printf "%.1f", m / 1e6 }')
    TRAIN_GF=$(awk -v m="$MACS" -v t="$FKP_IPS" 'BEGIN { printf "%.1f", m * 2 * 3 * t / 1e9 }')
    INFER_GF=-
    [[ $FKP_INFER == - ]] || INFER_GF=$(awk -v m="$MACS" -v i="$FKP_INFER" 'BEGIN { printf "%.1f", m * 2 * i / 1e9 }')
    TRAIN_PCT=-; INFER_PCT=-
    if [[ -n $PEAK ]]; then
      TRAIN_PCT=$(percent_of_peak "$TRAIN_GF"); INFER_PCT=$(percent_of_peak "$INFER_GF")
    fi
    note "  fkp: $TRAIN_GF GFLOP/s training ($TRAIN_PCT% of peak), $INFER_GF GFLOP/s inference ($INFER_PCT%)"
    # COLUMNS: 1 FKP_IPS 2 TORCH_IPS 3 RATIO 4 FKP_RSS 5 TORCH_RSS 6 FKP_CORES 7 FKP_INFER
    # 8 TORCH_INFER 9 INFER_RATIO 10 MMACS 11 TRAIN_GF 12 TRAIN_PCT 13 INFER_GF 14 INFER_PCT
    # 15 BASE_IPS 16 BASE_RATIO 17 BASE_INFER 18 BASE_INFER_RATIO
    echo "$FKP_IPS $TORCH_IPS $RATIO $FKP_RSS $TORCH_RSS $FKP_CORES $FKP_INFER $TORCH_INFER $INFER_RATIO" \
      "$MMACS $TRAIN_GF $TRAIN_PCT $INFER_GF $INFER_PCT $BASE_IPS $BASE_RATIO $BASE_INFER $BASE_INFER_RATIO" \
      >> "$REPEATS_TSV"
    RATIOS+=("$RATIO"); INFER_RATIOS+=("$INFER_RATIO")
  done

  # the table row: each column's median over the repeats
  COL=()
  for k in $(seq 1 18); do COL[k]=$(median "$REPEATS_TSV" "$k"); done
  [[ ${COL[5]} == - ]] || COL[5]=$(printf '%.0f' "${COL[5]}")
  BASE_COL=""
  [[ -z $BASELINE ]] || BASE_COL=" ${COL[15]} | ${COL[16]} | ${COL[17]} | ${COL[18]} |"
  REPEAT_COL=""
  if ((REPEAT > 1)); then
    REPEAT_COL=" $(comma_list "${RATIOS[@]}") / $(comma_list "${INFER_RATIOS[@]}") |"
  fi
  DATA=$([[ $ROWS == all ]] && echo "all rows" || echo "first $ROWS rows")
  ROWS_OUT+=("| $MODEL | ${COL[1]} | ${COL[2]} | ${COL[3]} | ${COL[4]} | ${COL[5]} | ${COL[6]} | ${COL[7]} | ${COL[8]} | ${COL[9]} | ${COL[10]} | ${COL[11]} | ${COL[12]} | ${COL[13]} | ${COL[14]} |$BASE_COL$REPEAT_COL $DATA, epoch $FKP_EPOCH of $EPOCHS; torch $STEPS steps, $INFER_STEPS inference batches; fkp predict $INFER_FACES vs $PREDICT_SMALL faces |")
done

echo
echo "Training and inference speed, CPU, batch $BATCH, $THREADS threads ($(nproc) cores here), torch $TORCH_FOUND$( ((REPEAT == 1)) || echo "; median of $REPEAT repeats")"
echo "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $PEAK_DESC"
echo
HEAD="| model | fkp img/s | PyTorch img/s | fkp / PyTorch | fkp peak RSS MiB | PyTorch peak RSS MiB | fkp cores used | fkp inference img/s | PyTorch inference img/s | fkp / PyTorch inference | MMAC/img | fkp GFLOP/s | % of peak | fkp inference GFLOP/s | inference % of peak |"
RULE="| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
if [[ -n $BASELINE ]]; then
  echo "Baseline fkp: $BASELINE"
  echo
  HEAD+=" baseline img/s | fkp / baseline | baseline inference img/s | fkp / baseline inference |"
  RULE+=" ---: | ---: | ---: | ---: |"
fi
if ((REPEAT > 1)); then
  HEAD+=" fkp / PyTorch per repeat (training / inference) |"
  RULE+=" --- |"
fi
echo "$HEAD run |"
echo "$RULE --- |"
printf '%s\n' "${ROWS_OUT[@]}"
echo
echo "fkp img/s: last epoch's training pass incl. batch assembly (u8 -> f32, augmentation off);"
echo "PyTorch img/s: one random batch reused, no data loading. fkp cores = (user + sys) / wall of the train run."
echo "fkp inference img/s: fkp predict --no-tta with the trained model, ($INFER_FACES - $PREDICT_SMALL) / (t($INFER_FACES faces) - t($PREDICT_SMALL faces)),"
echo "each the best of $PREDICT_RUNS runs: process start, model load and fixed CSV work cancel out (per-face CSV parsing stays in);"
echo "PyTorch inference img/s: eval mode under torch.inference_mode(), one random batch, 1 untimed warm-up batch."
echo "MMAC/img: forward multiply-adds per 1x96x96 image (Conv2d + Linear). fkp GFLOP/s = MACs x 2 x 3 x train img/s;"
echo "fkp inference GFLOP/s = MACs x 2 x inference img/s; % of peak = GFLOP/s / the peak above."
if ((REPEAT > 1)); then
  echo "Each number is the median over $REPEAT repeats (a ratio: the median of the repeats' ratios; of 2, their mean);"
  echo "the per-repeat column lists each repeat's fkp / PyTorch training ratios, then its inference ratios."
fi
echo "Whole benchmark: ${SECONDS} s wall."
