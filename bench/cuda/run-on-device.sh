#!/usr/bin/env bash
# Runs on the GPU machine (via the device tool), from the repository root, with
# .cuda-build/ carried: a short CUDA training of LeNet and ResNet-18 on the bundled
# sample, printing images/s from each history, then the PyTorch reference on the
# same GPU when torch is importable there.
set -euo pipefail
build="$PWD/.cuda-build"
# Recreate the include path baked into the binary for NVRTC.
baked="$(cat "$build/include-path")"
mkdir -p "$(dirname "$baked")"
[[ -e "$baked" ]] || ln -s "$build/include" "$baked"
export LD_LIBRARY_PATH="$build/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

work="$(mktemp -d)"
zcat datasets/faces300-sparse.csv.gz > "$work/faces.csv"
for arch in lenet resnet18; do
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
    (cd "$work" && "$build/fkp" run "$arch.toml")
    history=$(ls "$work"/.fkp/entries/train/*/data/history.csv | head -1)
    echo "RESULT fkp-cuda $arch $(tail -1 "$history")"
    rm -rf "$work/.fkp"
done
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    for model in lenet resnet18; do
        python3 bench/torch_train_speed.py --model "$model" --batch 64 --steps 20 --device cuda || true
    done
fi
