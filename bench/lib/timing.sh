# shellcheck shell=bash
# Wall-clock timing shared by bench/onnx_speed.sh and bench/train_speed.sh.
#   best_seconds N COMMAND...   the fastest of N runs of COMMAND, in wall seconds; the
#                               caller's `die` reports a failed run
best_seconds() {
  local n=$1 best="" started elapsed
  shift
  for _ in $(seq 1 "$n"); do
    started=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || die "failed: $*"
    elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.4f", b - a }')
    if [[ -z $best ]] || awk -v e="$elapsed" -v b="$best" 'BEGIN { exit !(e < b) }'; then best=$elapsed; fi
  done
  echo "$best"
}
