#!/usr/bin/env bash
# `fkp run` on the 4-pipeline CPU study (bench/lib/study4.sh) from a clean cache, in
# several modes, and whether each mode's outputs match the first mode's byte for byte.
#
#   bench/parallel_study.sh [FKP_BINARY] [REPEATS] [MODE...]     (defaults: 3 repeats, 1 2)
#
# A MODE is a number N (`fkp run -j N`) or `slurm` (`fkp run --executor slurm` on the
# cluster `sinfo` answers for, e.g. scripts/slurm-local.sh's; the workspace is under
# $TMPDIR, which the cluster's nodes must see). For slurm the script also reruns with
# nothing changed and counts the jobs that rerun submitted (0 expected). Measure on a
# quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/lib/study4.sh
source bench/lib/study4.sh
FKP=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/fkp}")
REPEATS=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(1 2)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fkp-parallel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
write_study "$WORK/study.toml" "$ROOT"

run_mode() { # MODE WORKSPACE
    case $1 in
        slurm) (cd "$2" && "$FKP" run -q --executor slurm "$WORK/study.toml") ;;
        *) (cd "$2" && "$FKP" run -q -j "$1" "$WORK/study.toml") ;;
    esac
}

printf '%-6s %-8s %s\n' "mode" "repeat" "wall s"
declare -A TOTAL
for repeat in $(seq 1 "$REPEATS"); do
    for mode in "${MODES[@]}"; do
        ws="$WORK/$mode"
        rm -rf "$ws" && mkdir -p "$ws"
        [[ $mode == slurm ]] && printf '[executor]\npoll_seconds = 0.5\n' >"$ws/fkp.toml"
        start=$(now)
        run_mode "$mode" "$ws"
        wall=$(echo "$(now) - $start" | bc)
        printf '%-6s %-8s %.2f\n' "$mode" "$repeat" "$wall"
        TOTAL[$mode]=$(echo "${TOTAL[$mode]:-0} + $wall" | bc)
    done
done
echo
base=${MODES[0]}
for mode in "${MODES[@]}"; do
    mean=$(echo "scale=2; ${TOTAL[$mode]} / $REPEATS" | bc)
    ratio=$(echo "scale=3; ${TOTAL[$base]} / ${TOTAL[$mode]}" | bc)
    same=$([[ "$(fingerprint "$WORK/$mode")" == "$(fingerprint "$WORK/$base")" ]] && echo yes || echo NO)
    printf '%-6s mean %6.2f s   speed-up vs %s: %sx   outputs identical to %s: %s\n' \
        "$mode" "$mean" "$base" "$ratio" "$base" "$same"
done
if [[ " ${MODES[*]} " == *" slurm "* ]]; then
    start=$(now)
    rerun=$(cd "$WORK/slurm" && "$FKP" run --executor slurm "$WORK/study.toml" 2>&1)
    submitted=$(grep -c "submitted job" <<<"$rerun" || true)
    printf 'slurm rerun with nothing changed: %s jobs submitted, %.2f s\n' "$submitted" "$(echo "$(now) - $start" | bc)"
fi
