#!/usr/bin/env bash
# Benchmark fkp's ingest stage on the shared face data (faces15-train.csv, 3462 rows, ~111 MB)
# and compare it with the plain pandas way (bench/ingest_pandas.py).
#
# Usage: bench/ingest.sh [--no-pandas | --pandas-only]
#
# Measures:
#   1. ingest wall time:   `fkp run ingest.toml --force -q`, 1 warm-up + BENCH_RUNS runs (min, median)
#   2. peak memory:        max RSS of one forced run (/usr/bin/time -v) vs. the input size (target <= 2x)
#   3. cached rerun:       `fkp run ingest.toml -q` with everything cached, BENCH_CACHED_RUNS runs
#                          (median; target <= 50 ms; DVC 3.67's no-op `dvc repro` takes 0.9 s here)
#   4. pandas anchor:      bench/ingest_pandas.py on the same CSV, 1 warm-up + BENCH_PANDAS_RUNS runs,
#                          and fkp's speed-up (pandas median / fkp median)
#
# Environment:
#   FKP_BIN            fkp binary (default ${CARGO_TARGET_DIR:-<repo>/target}/release/fkp, or
#                      ~/.cache/fkp-target/release/fkp when CARGO_TARGET_DIR is unset and target/ has none;
#                      built with `cargo build --release` only if missing)
#   FKP_SHARED_DATA    folder holding faces15-train.csv.gz (default <repo>/../shared/data)
#   BENCH_RUNS=5  BENCH_CACHED_RUNS=20  BENCH_PANDAS_RUNS=3
#   PANDAS_PARSE=split how ingest_pandas.py splits Image (split | apply | fromstring, see that file)
#   BENCH_NO_INSTALL=1 never try `apt-get install` for hyperfine / time
#   BENCH_NO_HYPERFINE=1 use the python3 timing loop even when hyperfine is installed
# Timing uses hyperfine when present, else a python3 loop (time.perf_counter + subprocess).
set -euo pipefail

MODE=all
case "${1:-}" in
  "") ;;
  --no-pandas) MODE=fkp ;;
  --pandas-only) MODE=pandas ;;
  -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
  *) echo "usage: $0 [--no-pandas | --pandas-only]" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${FKP_SHARED_DATA:-$(dirname "$REPO")/shared/data}
RUNS=${BENCH_RUNS:-5}
CACHED_RUNS=${BENCH_CACHED_RUNS:-20}
PANDAS_RUNS=${BENCH_PANDAS_RUNS:-3}
PANDAS_PARSE=${PANDAS_PARSE:-split}
DVC_NOOP_S=0.9      # DVC 3.67's no-op `dvc repro`, measured on this machine (the anchor)
PANDAS_ISSUE_S=5.3  # the pandas anchor as timed in the issue

die() { echo "bench/ingest.sh: error: $*" >&2; exit 1; }
note() { echo "==> $*" >&2; }

command -v python3 >/dev/null || die "python3 is required"
SRC_GZ="$SHARED/faces15-train.csv.gz"
[[ -f "$SRC_GZ" ]] || die "input not found: $SRC_GZ (set FKP_SHARED_DATA to the folder holding it)"

# Install a Debian package when missing, if we may (root, apt-get, BENCH_NO_INSTALL unset).
try_apt() { # PKG
  [[ -z "${BENCH_NO_INSTALL:-}" && $(id -u) == 0 ]] && command -v apt-get >/dev/null || return 1
  note "installing Debian package $1"
  apt-get install -y -qq "$1" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$1" >/dev/null 2>&1; }
}

# ---------------------------------------------------------------- the fkp binary
FKP=
if [[ $MODE != pandas ]]; then
  if [[ -n "${FKP_BIN:-}" ]]; then
    FKP=$FKP_BIN
    [[ -x "$FKP" ]] || die "FKP_BIN=$FKP is not an executable file"
  else
    TARGET_DIR=${CARGO_TARGET_DIR:-target}
    [[ $TARGET_DIR == /* ]] || TARGET_DIR="$REPO/$TARGET_DIR"  # cargo resolves it from the repo root
    FKP="$TARGET_DIR/release/fkp"
    # Without CARGO_TARGET_DIR, also accept the developers' usual target dir.
    if [[ ! -x "$FKP" && -z "${CARGO_TARGET_DIR:-}" && -x "${HOME:-}/.cache/fkp-target/release/fkp" ]]; then
      FKP="${HOME:-}/.cache/fkp-target/release/fkp"
    fi
    if [[ ! -x "$FKP" ]]; then
      note "no binary at $FKP: running cargo build --release"
      command -v cargo >/dev/null ||
        die "fkp binary missing at $FKP and cargo is not installed; build it or set FKP_BIN"
      (cd "$REPO" && cargo build --release) ||
        die "cargo build --release failed; fix the build or set FKP_BIN to a built fkp"
      [[ -x "$FKP" ]] ||
        die "cargo build --release succeeded but $FKP does not exist (is CARGO_TARGET_DIR set the same as for the build?)"
    fi
  fi
  FKP=$(cd "$(dirname "$FKP")" && pwd)/$(basename "$FKP")  # absolute: we cd below
  note "fkp: $FKP ($("$FKP" --version 2>/dev/null || echo 'version unknown'); built $(date -r "$FKP" '+%F %T'))"
fi

# ---------------------------------------------------------------- timing helpers
HAVE_HYPERFINE=
if [[ -z "${BENCH_NO_HYPERFINE:-}" ]]; then
  command -v hyperfine >/dev/null || try_apt hyperfine || true
  command -v hyperfine >/dev/null && HAVE_HYPERFINE=1
fi
note "timing with $([[ -n $HAVE_HYPERFINE ]] && hyperfine --version || echo 'python3 perf_counter loop')"

# bench WARMUP RUNS CMD... -> prints "MIN_S MEDIAN_S" on stdout; the command's output is discarded.
bench() {
  local warmup=$1 runs=$2; shift 2
  if [[ -n $HAVE_HYPERFINE ]]; then
    local json cmd
    json=$(mktemp -p "$WORK" hf.XXXXXX.json)
    cmd=$(printf '%q ' "$@")
    hyperfine -N --style basic --warmup "$warmup" --runs "$runs" --export-json "$json" -- "$cmd" >&2 ||
      die "hyperfine: command failed: $cmd"
    python3 - "$json" <<'EOF'
import json, statistics, sys
t = json.load(open(sys.argv[1]))["results"][0]["times"]
print(f"{min(t):.6f} {statistics.median(t):.6f}")
EOF
  else
    python3 - "$warmup" "$runs" "$@" <<'EOF'
import statistics, subprocess, sys, time
warmup, runs, cmd = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
times = []
for i in range(warmup + runs):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode(errors="replace"))
        sys.exit(f"command failed (exit {r.returncode}): {' '.join(cmd)}")
    if i >= warmup:
        times.append(dt)
print(f"  {len(times)} runs: min {min(times):.4f} s, median {statistics.median(times):.4f} s,"
      f" max {max(times):.4f} s", file=sys.stderr)
print(f"{min(times):.6f} {statistics.median(times):.6f}")
EOF
  fi
}

HAVE_TIME=
[[ -x /usr/bin/time ]] || try_apt time || true
[[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1 && HAVE_TIME=1

# max_rss_kb CMD... -> prints the peak RSS in KiB (runs the command once, output discarded)
max_rss_kb() {
  local log
  log=$(mktemp -p "$WORK" time.XXXXXX.txt)
  /usr/bin/time -v -o "$log" "$@" >/dev/null 2>&1 || { cat "$log" >&2; die "command failed: $*"; }
  sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): *//p' "$log"
}

# fmt helpers (python3 for float arithmetic)
calc() { python3 -c "print($1)"; }

# ---------------------------------------------------------------- the input, in a temp dir
WORK=$(mktemp -d -t fkp-bench-ingest.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CSV="$WORK/faces15-train.csv"
note "decompressing $SRC_GZ into $WORK"
gzip -dc "$SRC_GZ" >"$CSV"
INPUT_BYTES=$(stat -c %s "$CSV")
cat >"$WORK/ingest.toml" <<'EOF'
[ingest]
train = "faces15-train.csv"   # path relative to this TOML file
EOF
cd "$WORK"   # so fkp's cache (.fkp/) lands here and is removed on exit

# ---------------------------------------------------------------- fkp
if [[ $MODE != pandas ]]; then
  note "fkp: sanity run (fkp run ingest.toml --force)"
  "$FKP" run ingest.toml --force || die "fkp run ingest.toml --force failed"
  PARQUET=$(find "$WORK" -name '*.parquet' -newer ingest.toml -printf '%s %p\n' | head -n 5)
  [[ -n $PARQUET ]] && note "fkp wrote: $PARQUET" || note "warning: no .parquet file found under $WORK"

  note "fkp: ingest, forced (1 warm-up + $RUNS runs)"
  T=$(bench 1 "$RUNS" "$FKP" run ingest.toml --force -q)
  read -r FKP_MIN FKP_MED <<<"$T"

  if [[ -n $HAVE_TIME ]]; then
    note "fkp: peak memory of one forced run"
    FKP_RSS_KB=$(max_rss_kb "$FKP" run ingest.toml --force -q)
  else
    note "warning: /usr/bin/time (Debian package 'time') missing: peak memory not measured"
    FKP_RSS_KB=
  fi

  note "fkp: cached rerun (1 normal run, then 1 warm-up + $CACHED_RUNS runs without --force)"
  "$FKP" run ingest.toml -q || die "fkp run ingest.toml failed"
  T=$(bench 1 "$CACHED_RUNS" "$FKP" run ingest.toml -q)
  read -r CACHED_MIN CACHED_MED <<<"$T"
fi

# ---------------------------------------------------------------- pandas anchor
if [[ $MODE != fkp ]]; then
  VENV="$REPO/bench/.venv"
  REQS="$REPO/bench/requirements.txt"
  if ! cmp -s "$REQS" "$VENV/.installed-requirements.txt" 2>/dev/null; then
    note "creating $VENV with $(tr '\n' ' ' <"$REQS")"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" ||
      die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" ||
      die "pip install -r $REQS failed"
    cp "$REQS" "$VENV/.installed-requirements.txt"
  fi
  PY="$VENV/bin/python"
  PANDAS_OUT="$WORK/pandas-out.parquet"
  note "pandas anchor: sanity run (--parse $PANDAS_PARSE)"
  "$PY" "$REPO/bench/ingest_pandas.py" "$CSV" "$PANDAS_OUT" --parse "$PANDAS_PARSE" -v ||
    die "bench/ingest_pandas.py failed"
  note "pandas anchor: 1 warm-up + $PANDAS_RUNS runs"
  T=$(bench 1 "$PANDAS_RUNS" "$PY" "$REPO/bench/ingest_pandas.py" "$CSV" "$PANDAS_OUT" --parse "$PANDAS_PARSE")
  read -r PD_MIN PD_MED <<<"$T"
  PD_RSS_KB=
  if [[ -n $HAVE_TIME ]]; then
    note "pandas anchor: peak memory of one run"
    PD_RSS_KB=$(max_rss_kb "$PY" "$REPO/bench/ingest_pandas.py" "$CSV" "$PANDAS_OUT" --parse "$PANDAS_PARSE")
  fi
fi

# ---------------------------------------------------------------- summary
mib() { calc "f'{$1 / 1048576:.1f} MiB'"; }
echo
echo "fkp ingest benchmark: faces15-train.csv, 3462 rows, $(mib "$INPUT_BYTES") ($INPUT_BYTES bytes) uncompressed"
printf '%-36s %-26s %s\n' "measure" "result" "target / anchor"
printf '%-36s %-26s %s\n' "------------------------------------" "--------------------------" "------------------------------"
if [[ $MODE != pandas ]]; then
  printf '%-36s %-26s %s\n' "fkp ingest --force, wall (s)" \
    "$(calc "f'median {$FKP_MED:.3f}, min {$FKP_MIN:.3f}'")" "$RUNS runs after 1 warm-up"
  if [[ -n $FKP_RSS_KB ]]; then
    RATIO=$(calc "f'{$FKP_RSS_KB * 1024 / $INPUT_BYTES:.2f}'")
    printf '%-36s %-26s %s\n' "fkp peak RSS" "$(mib "$FKP_RSS_KB * 1024") = ${RATIO}x input" \
      "<= 2x input: $(calc "'ok' if $RATIO <= 2 else 'OVER'")"
  else
    printf '%-36s %-26s %s\n' "fkp peak RSS" "not measured" "<= 2x input"
  fi
  printf '%-36s %-26s %s\n' "fkp cached rerun, wall (ms)" \
    "$(calc "f'median {$CACHED_MED * 1000:.1f}, min {$CACHED_MIN * 1000:.1f}'")" \
    "<= 50 ms: $(calc "'ok' if $CACHED_MED <= 0.05 else 'OVER'"); DVC no-op repro ${DVC_NOOP_S} s"
fi
if [[ $MODE != fkp ]]; then
  printf '%-36s %-26s %s\n' "pandas anchor ($PANDAS_PARSE), wall (s)" \
    "$(calc "f'median {$PD_MED:.3f}, min {$PD_MIN:.3f}'")" \
    "$([[ $PANDAS_PARSE == split ]] && echo "${PANDAS_ISSUE_S} s in the issue")"
  if [[ -n ${PD_RSS_KB:-} ]]; then
    printf '%-36s %-26s %s\n' "pandas anchor peak RSS" \
      "$(mib "$PD_RSS_KB * 1024") = $(calc "f'{$PD_RSS_KB * 1024 / $INPUT_BYTES:.2f}'")x input" ""
  fi
fi
if [[ $MODE == all ]]; then
  printf '%-36s %-26s %s\n' "fkp speed-up over pandas" "$(calc "f'{$PD_MED / $FKP_MED:.1f}x'")" \
    "pandas median / fkp median"
fi
