# shellcheck shell=bash
# The 4-pipeline CPU study of bench/parallel_study.sh and bench/remote_cache.sh: one
# [sweep] over prepare.missing (median, mean, drop, mask), so four pipelines sharing
# ingest and eda, each with its own prepare, train (LeNet, 3 epochs, hflip) and evaluate
# against the full labels, on the 300-face sample in datasets/.
#   write_study FILE ROOT     writes the study to FILE; ROOT is the repository
write_study() {
    cat >"$1" <<TOML
[pipeline]
description = "four ways to treat missing labels, LeNet 3 epochs"
[ingest]
train = "$2/datasets/faces300-sparse.csv.gz"
[eda]
samples = 8
[prepare]
val = 0.2
seed = 42
[model]
arch = "lenet"
[train]
device = "cpu"
epochs = 3
batch_size = 16
seed = 42
[train.augment]
hflip = true
[evaluate]
truth = "$2/datasets/faces300-full.csv.gz"
samples = 4
[sweep]
"prepare.missing" = ["median", "mean", "drop", "mask"]
TOML
}

# Everything a run wrote but the volatile timings, one hash per file.
fingerprint() {
    (cd "$1" && find .fkp/entries reports -type f ! -name timing.json -print0 | sort -z | xargs -0 sha256sum)
}

# Seconds since the epoch, with nanoseconds.
now() { date +%s.%N; }
