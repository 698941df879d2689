#!/usr/bin/env bash
# Runs the CI study (pipelines/ci/report.toml) and writes its comparison report.
#
#   scripts/ci-report.sh [--against FILE.json] [--out DIR] [--fail-on-regression]
#
#   --against FILE.json   an earlier report JSON (report.json of an earlier run, or
#                         `fkp compare --format json` output): adds "was -> now (delta)"
#                         columns and a regressions count to the report
#   --out DIR             where index.md, index.html, report.json and the plots go
#                         (default: reports/ci)
#   --fail-on-regression  exit 3 when the report counts a regression (default: report only)
#
# What it does, from the repository root (the fkp workspace: .fkp/ and reports/):
#   fkp run pipelines/ci/report.toml
#   fkp compare pipelines/ci/report.toml --format md [--against FILE] --output DIR
# and, when GITHUB_STEP_SUMMARY is set (GitHub Actions), appends DIR/index.md to it.
#
# Env: FKP       an fkp binary to use (nothing is built); default `cargo run --release --`
#      FKP_CACHE_DIR, CARGO_TARGET_DIR  passed through to fkp / cargo as usual
# Runs anywhere with bash; exits non-zero, saying why, when anything fails.
set -euo pipefail

die() {
    echo "ci-report: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# An absolute form of a path given relative to the caller's directory.
absolute() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

against=""
out=""
fail_on_regression=0
while (($# > 0)); do
    case $1 in
        --against)
            (($# >= 2)) || die "--against needs a FILE.json"
            against=$2
            shift 2
            ;;
        --against=*)
            against=${1#--against=}
            shift
            ;;
        --out)
            (($# >= 2)) || die "--out needs a DIR"
            out=$2
            shift 2
            ;;
        --out=*)
            out=${1#--out=}
            shift
            ;;
        --fail-on-regression)
            fail_on_regression=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# Paths the caller gave are relative to where it stands; fkp runs from the repository root.
if [[ -n $against ]]; then
    [[ -f $against ]] || die "--against $against: no such file"
    [[ -r $against ]] || die "--against $against: not readable"
    against=$(absolute "$against")
fi
[[ -n $out ]] && out=$(absolute "$out")

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=${out:-$repo/reports/ci}
study=pipelines/ci/report.toml
[[ -f $study ]] || die "$repo/$study is missing"

if [[ -n ${FKP:-} ]]; then
    [[ -x $FKP ]] || die "FKP=$FKP is not an executable file"
    fkp=("$FKP")
else
    command -v cargo >/dev/null || die "neither FKP (an fkp binary) is set nor cargo found on PATH"
    fkp=(cargo run --release --quiet --)
fi

started=$SECONDS
echo "== ci-report: fkp run $study"
"${fkp[@]}" run "$study" || die "fkp run $study failed (exit $?)"

compare=("${fkp[@]}" compare "$study" --format md --output "$out")
[[ -n $against ]] && compare+=(--against "$against")
echo "== ci-report: fkp compare $study --format md${against:+ --against $against} --output $out"
markdown=$("${compare[@]}") || die "fkp compare $study failed (exit $?)"
printf '%s\n' "$markdown"

[[ -s $out/index.md ]] || die "fkp compare wrote no $out/index.md"
[[ -s $out/report.json ]] || die "fkp compare wrote no $out/report.json"
# Every pipeline was just run, so every one must be scored: a stale or missing one is a bug.
if grep -q '^not compared:' "$out/index.md"; then
    die "some pipelines were not compared after running them (see 'not compared' above)"
fi

if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
    cat "$out/index.md" >>"$GITHUB_STEP_SUMMARY" || die "cannot append to GITHUB_STEP_SUMMARY ($GITHUB_STEP_SUMMARY)"
fi

regressions=""
if [[ -n $against ]]; then
    regressions=$(sed -n 's/^\([0-9][0-9]*\) regressions (.*/\1/p' "$out/index.md" | head -n 1)
    [[ -n $regressions ]] || die "the report has no 'Against' section although --against was given"
fi
echo "== ci-report: wrote $out (index.md, index.html, report.json, plots) in $((SECONDS - started)) s${regressions:+; $regressions regressions against $against}"
if ((fail_on_regression)) && [[ -n $regressions ]] && ((regressions > 0)); then
    echo "ci-report: $regressions regressions against $against (--fail-on-regression)" >&2
    exit 3
fi
