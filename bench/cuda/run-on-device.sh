#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool), from the repository root, with
# .cuda-build/ carried (the stripped CUDA fkp from bench/cuda/build.sh, ~50 MB; the
# bundled sample in datasets/ travels with the tracked files). The machine has no
# Rust, but has CUDA 13 (nvcc and headers) and PyTorch with the pip packages
# nvidia-cublas, nvidia-cuda-nvrtc and nvidia-cuda-runtime: fkp's CUDA libraries are
# taken from there, and the include path dfdx baked into the binary for NVRTC is
# pointed at the device's CUDA headers.
#
# Trains lenet, resnet18 and resnet50 for 3 epochs each on the 300-face sample on
# the GPU (batch 64) and prints img/s from each history, then the PyTorch reference
# of each on the same GPU.
set -euo pipefail
build="$PWD/.cuda-build"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# The CUDA libraries of PyTorch's pip packages.
libs=$(python3 - <<'PY'
import importlib, os
dirs = []
for name in ("nvidia.cublas", "nvidia.cuda_nvrtc", "nvidia.cuda_runtime"):
    module = importlib.import_module(name)
    base = os.path.dirname(module.__file__) if module.__file__ else list(module.__path__)[0]
    dirs.append(os.path.join(base, "lib"))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}"

# NVRTC includes from the path baked in at build time: make it the device's headers.
baked="$(cat "$build/include-path")"
headers="${CUDA_HOME:-/usr/local/cuda}/include"
[[ -f "$headers/cuda.h" ]] || headers="$(dirname "$(dirname "$(command -v nvcc)")")/include"
mkdir -p "$(dirname "$baked")"
[[ -e "$baked" ]] || ln -s "$headers" "$baked"

work="$(mktemp -d)"
zcat datasets/faces300-sparse.csv.gz > "$work/faces.csv"
for arch in lenet resnet18 resnet50; do
    cat > "$work/$arch.toml" <<TOML
[ingest]
train = "faces.csv"
[prepare]
missing = "mask"
[model]
arch = "$arch"
[train]
device = "cuda"
epochs = 3
batch_size = 64
[evaluate]
TOML
    (cd "$work" && timeout 240 "$build/fkp" run "$arch.toml") || echo "RESULT fkp-cuda $arch FAILED ($?)"
    history=$(ls "$work"/.fkp/entries/train/*/data/history.csv 2>/dev/null | head -1)
    timing=$(ls "$work"/.fkp/entries/train/*/timing.json 2>/dev/null | head -1)
    [[ -n "$history" ]] && echo "RESULT fkp-cuda $arch $(tail -1 "$history") $(cat "$timing")"
    rm -rf "$work/.fkp"
done
for model in lenet resnet18 resnet50; do
    timeout 120 python3 bench/torch_train_speed.py --model "$model" --batch 64 --steps 20 --device cuda || true
done
