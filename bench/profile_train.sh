#!/usr/bin/env bash
# Where fkp's CPU training time goes: `perf record` of one epoch of ARCH (default
# resnet18) on the first ROWS (default 640) faces of the shared sparse file, batch 64,
# 2 threads, then the samples grouped by kind of work (gemm, elementwise, Winograd, im2col,
# reductions, ...) and the cores used ((user + sys) / wall). Needs `perf` (Debian:
# linux-perf) and the fkp binary. With PROFILE=predict it profiles inference instead: the
# model trained first (unprofiled), then `fkp predict --no-tta` on the first 1024 faces of the
# shared full-label file.
#
#   bench/profile_train.sh [ARCH] [ROWS] [FKP_BINARY]
#   PROFILE=predict bench/profile_train.sh resnet18
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ARCH=${1:-resnet18}
ROWS=${2:-640}
FKP=$(realpath "${3:-${CARGO_TARGET_DIR:-target}/release/fkp}")
DATA="$ROOT/../shared/data/faces15-train-sparse.csv.gz"
FULL_LABELS="$ROOT/../shared/data/faces15-train.csv.gz"
case ${PROFILE:=train} in
train | predict) ;;
*) echo "profile_train.sh: PROFILE is train or predict, not '$PROFILE'" >&2; exit 2 ;;
esac
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-profile.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# zcat stops early when head has its rows (SIGPIPE): that is no failure.
(zcat "$DATA" || true) | head -n "$((ROWS + 1))" >faces.csv
cat >p.toml <<TOML
[ingest]
train = "faces.csv"
[prepare]
missing = "mask"
[model]
arch = "$ARCH"
[train]
device = "cpu"
epochs = 1
batch_size = 64
TOML
"$FKP" run p.toml -q --until prepare
export RAYON_NUM_THREADS=2
case $PROFILE in
train) what="training" profiled=("$FKP" run p.toml -q --until train) ;;
predict)
    "$FKP" run p.toml -q --until train
    (zcat "$FULL_LABELS" || true) | head -n 1025 >predict.csv
    what="fkp predict --no-tta, 1024 faces"
    profiled=("$FKP" predict p.toml -q --no-tta --input predict.csv --output predictions.csv)
    ;;
esac
/usr/bin/time -f "wall %e s, user %U s, sys %S s" -o time.txt \
    perf record -q -F 499 -o perf.data -- "${profiled[@]}"
echo "$ARCH, $ROWS rows, batch 64, 2 threads, $what: $(cat time.txt)"
[[ $PROFILE != train ]] || grep -h images_per_s .fkp/entries/train/*/timing.json | sed 's/^ */training /'
perf report -i perf.data --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | python3 -c '
import collections, re, sys
groups = [
    ("gemm (convolution and dense matmuls, multi-threaded)", lambda s, k: "gemm" in s),
    ("Winograd transforms (3x3 convolutions)", lambda s, k: "winograd" in s),
    ("im2col unfold/fold, filter copies", lambda s, k: "conv2d" in s),
    ("binary elementwise (adds, muls, batch-norm arithmetic)", lambda s, k: "BinaryKernel" in s or "zip_map" in s),
    ("gradient accumulation (elementwise backward, broadcast sums)", lambda s, k: "par::accumulate" in s),
    ("unary elementwise (ReLU, ...)", lambda s, k: "UnaryKernel" in s),
    ("reductions (sum_to: batch-norm statistics, bias gradients)", lambda s, k: "sum_to" in s or "max_to" in s),
    ("memset/memmove (buffers)", lambda s, k: "memset" in s or "memmove" in s or "memcpy" in s),
    ("batch norm (fused per-channel kernels)", lambda s, k: "batchnorm" in s),
    ("pooling", lambda s, k: "pool2d" in s),
    ("optimiser update", lambda s, k: "adam" in s.lower() or "sgd" in s.lower()),
    ("kernel (page faults, thread wake-ups)", lambda s, k: k == "k"),
]
share = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", line)
    if m:
        name = next((g for g, test in groups if test(m.group(3), m.group(2))), "other")
        share[name] += float(m.group(1))
print("share of CPU samples:")
for name, pct in share.most_common():
    print(f"  {pct:5.1f}%  {name}")
'
