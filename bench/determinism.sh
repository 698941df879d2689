#!/usr/bin/env bash
# Exactness probe: builds the same pipeline from a clean cache several times and
# compares every file the stages wrote (cache entries' data/, report/ and
# manifest.json, and reports/), byte for byte. Timing files (timing.json) are
# volatile by design and left out.
#
#   bench/determinism.sh [FKP_BINARY] [TRIALS]
#
# Runs, each in a fresh workspace, on the 300-face sample (LeNet with dropout 0.5,
# 3 epochs, hflip + shift, evaluate against the full labels):
#   a   RAYON_NUM_THREADS=2                    the reference
#   b   RAYON_NUM_THREADS=2                    run to run
#   t1  RAYON_NUM_THREADS=1                    thread count
#   k   RAYON_NUM_THREADS=2, SIGKILLed right after the first epoch's checkpoint,
#       then resumed                           kill -9 and resume (TRIALS times)
#   w   the same, but SIGKILLed while the second epoch's checkpoint files are
#       being written (before its state.json) (TRIALS times)
# Prints, per comparison, the files that differ and how many of their bytes do.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FKP=${1:-${CARGO_TARGET_DIR:-target}/release/fkp}
FKP=$(realpath "$FKP")
TRIALS=${2:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-determinism.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

pipeline() {
    mkdir -p "$1"
    cat >"$1/p.toml" <<EOF
[ingest]
train = "$ROOT/datasets/faces300-sparse.csv.gz"
[eda]
[prepare]
missing = "mask"
[model]
arch = "lenet"
dropout = 0.5
[train]
device = "cpu"
epochs = 3
batch_size = 32
[train.augment]
hflip = true
shift_px = 2
[evaluate]
truth = "$ROOT/datasets/faces300-full.csv.gz"
EOF
}

run() { # workspace threads
    pipeline "$1"
    (cd "$1" && RAYON_NUM_THREADS=$2 "$FKP" -q run p.toml)
}

run_killed() { # workspace: kill -9 once the first checkpoint exists, then resume
    pipeline "$1"
    (
        cd "$1"
        RAYON_NUM_THREADS=2 "$FKP" -q run p.toml &
        pid=$!
        for _ in $(seq 1 6000); do
            if compgen -G ".fkp/checkpoints/train-*/state.json" >/dev/null; then break; fi
            if ! kill -0 "$pid" 2>/dev/null; then echo "the run ended before the kill" >&2; exit 1; fi
            sleep 0.01
        done
        kill -9 "$pid"
        wait "$pid" 2>/dev/null || true
        RAYON_NUM_THREADS=2 "$FKP" -q run p.toml
    )
}

run_killed_mid_checkpoint() { # workspace: kill -9 as soon as the checkpoint folder
    # changes after its first complete state, then resume
    pipeline "$1"
    (cd "$1" && RAYON_NUM_THREADS=2 python3 - "$FKP" <<'EOF'
import glob, os, signal, subprocess, sys, time
run = subprocess.Popen([sys.argv[1], "-q", "run", "p.toml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def listing():
    found = glob.glob(".fkp/checkpoints/train-*/state.json")
    if not found:
        return None
    folder = os.path.dirname(found[0])
    try:
        return sorted((n, os.stat(os.path.join(folder, n)).st_ino) for n in os.listdir(folder))
    except FileNotFoundError:
        return None
first = None
while run.poll() is None:
    now = listing()
    if now and first is None:
        first = now
    elif now and now != first:
        run.send_signal(signal.SIGKILL)
        run.wait()
        sys.exit(0)
    time.sleep(0.0002)
sys.exit("the run ended before the kill")
EOF
    )
    (cd "$1" && RAYON_NUM_THREADS=2 "$FKP" -q run p.toml)
}

compare() { # label workspace-a workspace-b
    python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
label, a, b = sys.argv[1:]
def files(root):
    out = {}
    for base in (".fkp/entries", "reports"):
        for dirpath, _, names in os.walk(os.path.join(root, base)):
            for n in names:
                if n == "timing.json":
                    continue
                full = os.path.join(dirpath, n)
                rel = os.path.relpath(full, root)
                parts = rel.split(os.sep)
                if parts[0] == ".fkp":  # .fkp/entries/<stage>/<key>/...: drop the key
                    rel = os.path.join(parts[2], *parts[4:])
                out.setdefault(rel, []).append(full)
    return out
fa, fb = files(a), files(b)
diff = []
for rel in sorted(set(fa) | set(fb)):
    if rel not in fa or rel not in fb or len(fa[rel]) != len(fb[rel]):
        diff.append((rel, "only in one run"))
        continue
    for pa, pb in zip(sorted(fa[rel]), sorted(fb[rel])):
        x, y = open(pa, "rb").read(), open(pb, "rb").read()
        if x != y:
            n = sum(1 for i in range(min(len(x), len(y))) if x[i] != y[i]) + abs(len(x) - len(y))
            diff.append((rel, f"{n} of {max(len(x), len(y))} bytes differ"))
total = len(set(fa) | set(fb))
print(f"{label}: {len(diff)} of {total} files differ")
for rel, why in diff:
    print(f"    {rel}: {why}")
EOF
}

run "$WORK/a" 2
run "$WORK/b" 2
run "$WORK/t1" 1
compare "run to run (2 threads twice)" "$WORK/a" "$WORK/b"
compare "1 thread vs 2 threads" "$WORK/a" "$WORK/t1"
for i in $(seq 1 "$TRIALS"); do
    run_killed "$WORK/k$i"
    compare "kill -9 after epoch 1 and resume, trial $i" "$WORK/a" "$WORK/k$i"
done
for i in $(seq 1 "$TRIALS"); do
    run_killed_mid_checkpoint "$WORK/w$i"
    compare "kill -9 while writing epoch 2's checkpoint and resume, trial $i" "$WORK/a" "$WORK/w$i"
done
