#!/usr/bin/env bash
# Inference speed of one trained network three ways, on the same faces, batch 64, 2 threads:
# `fkp predict`, ONNX Runtime on the model `fkp export` wrote, and PyTorch in eval mode on the
# same network rebuilt from the checkpoint (bench/torch_from_checkpoint.py).
#
# Usage: bench/onnx_speed.sh [MODEL...]
#   MODEL: lenet resnet18 (default: both; alexnet, resnet34, resnet50, darknet53 also work)
#
# For each model, in a temporary folder:
#   1. `fkp run --until train` trains it for 1 epoch on the first 128 faces of the bundled sample
#      (datasets/faces300-full.csv.gz): the weights do not matter here, the arithmetic does.
#   2. `fkp export --no-tta` writes the ONNX model (plain predictions, as timed below).
#   3. fkp: `fkp predict --no-tta` on FACES faces (the sample's 300, repeated; default 1024) and
#      on the first 64 of them, RAYON_NUM_THREADS=2, each the best of BENCH_REPEATS runs.
#      img/s = (FACES - 64) / (t(FACES) - t(64)): what the extra faces cost, without the
#      process start, the model load and the CSV work both runs share. fkp predicts 64 faces
#      at a time.
#   4. bench/onnx_speed.py: ONNX Runtime (CPU provider, intra_op_num_threads 2, sequential) and
#      PyTorch (torch.set_num_threads(2), eval, inference_mode) on the same FACES faces in
#      batches of 64, one untimed warm-up batch, the best of BENCH_REPEATS passes; it also
#      prints each one's largest |difference| from fkp predict's coordinates, in pixels.
# Prints a table of img/s side by side, and the ONNX file's size against the checkpoint's.
#
# Environment:
#   FKP_BIN          fkp binary (default ${CARGO_TARGET_DIR:-~/.cache/fkp-target}/release/fkp;
#                    never built here)
#   TORCH_PYTHON     python with torch, numpy and onnxruntime (default bench/.venv-torch/bin/python;
#                    when missing it is created with `pip install torch==2.15.0 numpy
#                    onnxruntime==1.32.0`: ~3.5 GB, as for train_speed.sh)
#   BENCH_THREADS=2  BENCH_BATCH=64  BENCH_FACES=1024  BENCH_REPEATS=3
#   KEEP_TMP=1       keep the temporary folder (its path is printed)
# Close other work (a cargo build) first: the machine has 2 cores.
set -euo pipefail

case "${1:-}" in -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;; esac
MODELS=("$@")
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(lenet resnet18)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FKP=${FKP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/fkp-target}/release/fkp}
THREADS=${BENCH_THREADS:-2}
BATCH=${BENCH_BATCH:-64}
FACES=${BENCH_FACES:-1024}
REPEATS=${BENCH_REPEATS:-3}
TORCH_VERSION=2.15.0
ORT_VERSION=1.32.0
SAMPLE=$REPO/datasets/faces300-full.csv.gz

die() { echo "bench/onnx_speed.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

[[ -x "$FKP" ]] || die "no fkp binary at $FKP (build it with cargo build --release, or set FKP_BIN)"
FKP=$(cd "$(dirname "$FKP")" && pwd)/$(basename "$FKP")
((FACES > BATCH)) || die "BENCH_FACES ($FACES) must be more than BENCH_BATCH ($BATCH)"

PY=${TORCH_PYTHON:-$REPO/bench/.venv-torch/bin/python}
if [[ -z "${TORCH_PYTHON:-}" && ! -x "$PY" ]]; then
  note "creating bench/.venv-torch with torch==$TORCH_VERSION: WARNING, about 3.5 GB to download"
  python3 -m venv "$REPO/bench/.venv-torch"
  "$REPO/bench/.venv-torch/bin/pip" install -q "torch==$TORCH_VERSION" numpy "onnxruntime==$ORT_VERSION"
fi
[[ -x "$PY" ]] || die "TORCH_PYTHON=$PY is not an executable file"
"$PY" -c 'import onnxruntime' 2>/dev/null || {
  note "installing onnxruntime==$ORT_VERSION into $PY's environment"
  "$PY" -m pip install -q "onnxruntime==$ORT_VERSION"
}
VERSIONS=$("$PY" -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)') ||
  die "$PY cannot import torch and onnxruntime"

note "fkp: $FKP ($("$FKP" --version 2>/dev/null || echo 'version unknown'); built $(date -r "$FKP" '+%F %T'))"
note "$VERSIONS ($PY)"
note "threads $THREADS, batch $BATCH, $FACES faces; load now: $(cut -d' ' -f1-3 /proc/loadavg)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fkp-onnx-speed.XXXXXX")
if [[ -n "${KEEP_TMP:-}" ]]; then note "keeping $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# The faces: the sample's rows repeated to FACES, as a Kaggle-layout CSV and as raw bytes.
python3 - "$SAMPLE" "$FACES" "$BATCH" "$TMP" <<'EOF'
import csv, gzip, sys
sample, count, batch, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with gzip.open(sample, "rt", newline="") as f:
    rows = list(csv.DictReader(f))
images = [rows[i % len(rows)]["Image"] for i in range(count)]
for name, n in (("faces.csv", count), ("first.csv", batch)):
    with open(f"{tmp}/{name}", "w") as out:
        out.write("Image\n" + "".join(image + "\n" for image in images[:n]))
with open(f"{tmp}/faces.u8", "wb") as out:
    out.write(bytes(int(p) for image in images for p in image.split()))
with gzip.open(sample, "rt", newline="") as f, open(f"{tmp}/train.csv", "w") as out:
    out.writelines(line for i, line in zip(range(129), f))
EOF

# best_seconds N COMMAND...: the fastest of N runs, in wall seconds
# shellcheck source=bench/lib/timing.sh
source "$REPO/bench/lib/timing.sh"

ROWS_OUT=()
for MODEL in "${MODELS[@]}"; do
  DIR="$TMP/$MODEL"
  mkdir -p "$DIR"
  cat > "$DIR/$MODEL.toml" <<EOF
[ingest]
train = "$TMP/train.csv"
[prepare]
missing = "mask"
[model]
arch = "$MODEL"
[train]
device = "cpu"
epochs = 1
batch_size = 32
EOF
  note "$MODEL: train 1 epoch on 128 faces (untimed)"
  (cd "$DIR" && "$FKP" run -q --until train "$MODEL.toml") || die "fkp run failed ($MODEL)"
  (cd "$DIR" && "$FKP" -q export "$MODEL.toml" --no-tta --output "$MODEL.onnx") || die "fkp export failed ($MODEL)"
  ENTRY=$(cd "$DIR" && "$FKP" status --json "$MODEL.toml" | python3 -c '
import json, sys
stages = json.load(sys.stdin)["pipelines"][0]["stages"]
print(next(s["entry"] for s in stages if s["stage"] == "train"))')/data

  note "$MODEL: fkp predict, $FACES and $BATCH faces, best of $REPEATS"
  predict() { (cd "$DIR" && RAYON_NUM_THREADS=$THREADS "$FKP" -q predict "$MODEL.toml" --no-tta --input "$1" --output "$2"); }
  T_ALL=$(best_seconds "$REPEATS" predict "$TMP/faces.csv" "$DIR/fkp.csv")
  T_FIRST=$(best_seconds "$REPEATS" predict "$TMP/first.csv" "$DIR/fkp-first.csv")
  FKP_IPS=$(awk -v n="$FACES" -v b="$BATCH" -v t="$T_ALL" -v f="$T_FIRST" 'BEGIN { printf "%.1f", (n - b) / (t - f) }')
  note "  fkp predict: $T_ALL s for $FACES faces, $T_FIRST s for $BATCH: $FKP_IPS img/s"

  note "$MODEL: ONNX Runtime and PyTorch"
  "$PY" "$REPO/bench/onnx_speed.py" --entry "$ENTRY" --onnx "$DIR/$MODEL.onnx" --faces "$TMP/faces.u8" \
    --batch "$BATCH" --threads "$THREADS" --repeats "$REPEATS" --expected "$DIR/fkp.csv" > "$DIR/py.log" 2>&1 ||
    { cat "$DIR/py.log" >&2; die "onnx_speed.py failed ($MODEL)"; }
  cat "$DIR/py.log" >&2
  field() { awk -v r="runtime=$1" -v k="$2=" '$1 == "RESULT" && $2 == r { for (i = 3; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }' "$DIR/py.log"; }
  ORT_IPS=$(field onnxruntime img_per_s)
  TORCH_IPS=$(field torch img_per_s)
  ORT_DIFF=$(field onnxruntime max_abs_vs_fkp)
  TORCH_DIFF=$(field torch max_abs_vs_fkp)
  ONNX_MB=$(awk -v b="$(stat -c %s "$DIR/$MODEL.onnx")" 'BEGIN { printf "%.2f", b / 1e6 }')
  ST_MB=$(awk -v b="$(stat -c %s "$ENTRY/model.safetensors")" 'BEGIN { printf "%.2f", b / 1e6 }')
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
  ROWS_OUT+=("| $MODEL | $FKP_IPS | $ORT_IPS | $TORCH_IPS | $(ratio "$ORT_IPS" "$FKP_IPS") | $(ratio "$TORCH_IPS" "$FKP_IPS") | $ORT_DIFF | $TORCH_DIFF | $ONNX_MB | $ST_MB |")
done

echo
echo "Inference, batch $BATCH, $THREADS threads, $FACES faces ($VERSIONS):"
echo
echo "| model | fkp predict img/s | ONNX Runtime img/s | PyTorch eval img/s | ONNX Runtime / fkp | PyTorch / fkp | ONNX Runtime max |Δ| px | PyTorch max |Δ| px | ONNX MB | safetensors MB |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${ROWS_OUT[@]}"
