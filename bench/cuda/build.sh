#!/usr/bin/env bash
# Builds fkp with CUDA on a machine without a GPU, from PyPI's CUDA 13.0 packages,
# following ../shared/dfdx/README.md:
#   - nvcc, nvrtc, cuBLAS and the runtime headers from PyPI into .cuda/ (git-ignored);
#   - a stand-in `nvidia-smi` that reports compute capability 9.0 (H100/H200), which
#     dfdx's build script asks for before compiling its kernels to PTX;
#   - a stub libcuda.so to link against (the real one comes with the GPU driver).
# The result is .cuda-build/fkp (stripped) and the include path dfdx baked into it for
# NVRTC; the GPU machine has the CUDA libraries already (PyTorch's pip packages), which
# bench/cuda/run-on-device.sh finds there. Only the binary travels (the device tool
# carries at most 64 MiB).
#
#   bench/cuda/build.sh [--check-only]
#
# --check-only stops once the CUDA build has linked (for sessions without a GPU that
# touched training): nothing is copied to .cuda-build/.
set -euo pipefail
check_only=false
case "${1:-}" in
    --check-only) check_only=true ;;
    "") ;;
    *) echo "usage: bench/cuda/build.sh [--check-only]" >&2; exit 2 ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
cuda="$repo/.cuda"
out="$repo/.cuda-build"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fkp-target-cuda}"

if [[ ! -f "$cuda/include/cuda.h" ]]; then
    python3 -m pip install --quiet --target "$cuda/pip" \
        'nvidia-cuda-nvcc==13.0.*' 'nvidia-cuda-crt==13.0.*' 'nvidia-nvvm==13.0.*' \
        'nvidia-cuda-cccl==13.0.*' 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-nvrtc==13.0.*' \
        'nvidia-cublas==13.0.*'
    # One CUDA_ROOT with bin/, include/ and lib64/, as cudarc and nvcc expect.
    mkdir -p "$cuda/bin" "$cuda/include" "$cuda/lib64"
    for pkg in "$cuda"/pip/nvidia/*/; do
        [[ -d "$pkg/bin" ]] && cp -rn "$pkg"/bin/. "$cuda/bin/"
        [[ -d "$pkg/include" ]] && cp -rn "$pkg"/include/. "$cuda/include/"
        [[ -d "$pkg/lib" ]] && cp -rn "$pkg"/lib/. "$cuda/lib64/"
        [[ -d "$pkg/nvvm" ]] && cp -rn "$pkg"/nvvm "$cuda/"
    done
    for lib in "$cuda"/lib64/*.so.*; do
        base="${lib%%.so.*}.so"
        [[ -e "$base" ]] || ln -s "$(basename "$lib")" "$base"
    done
fi

# The driver library is linked against at build time only; the GPU machine has the real one.
if [[ ! -f "$cuda/stubs/libcuda.so" ]]; then
    mkdir -p "$cuda/stubs"
    symbols=$(grep -rhoE '\bcu[A-Z][A-Za-z0-9_]+' "$cuda/include/cuda.h" | sort -u)
    { for s in $symbols; do printf 'void %s(void) {}\n' "$s"; done; } > "$cuda/stubs/stub.c"
    gcc -shared -fPIC -o "$cuda/stubs/libcuda.so" "$cuda/stubs/stub.c"
    ln -sf libcuda.so "$cuda/stubs/libcuda.so.1"
fi

# dfdx's build script runs `nvidia-smi --query-gpu=compute_cap --format=csv` and checks
# the header line before reading the value from the next one.
mkdir -p "$cuda/fake-bin"
printf '#!/bin/sh\necho compute_cap\necho 9.0\n' > "$cuda/fake-bin/nvidia-smi"
chmod +x "$cuda/fake-bin/nvidia-smi"

bash scripts/setup-dfdx.sh
export CUDA_ROOT="$cuda" CUDA_PATH="$cuda"
export PATH="$cuda/bin:$cuda/fake-bin:$PATH"
export LIBRARY_PATH="$cuda/lib64:$cuda/stubs:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$cuda/lib64:$cuda/stubs:${LD_LIBRARY_PATH:-}"
started=$SECONDS
cargo build --release --features cuda
binary="$CARGO_TARGET_DIR/release/fkp"
echo "CUDA build linked in $((SECONDS - started)) s: $binary"
ldd "$binary" | grep -E 'libcuda|libnvrtc|libcublas' || true
if $check_only; then
    exit 0
fi

rm -rf "$out"
mkdir -p "$out"
strip -o "$out/fkp" "$binary"
# dfdx compiles some kernels with NVRTC at run time and bakes this include path into
# the binary; run-on-device.sh points it at the device's own CUDA headers.
echo "$cuda/include" > "$out/include-path"
du -sh "$out"/*
