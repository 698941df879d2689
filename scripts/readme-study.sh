#!/usr/bin/env bash
# Puts the study's table into README.md, between the `<!-- study:start -->` and
# `<!-- study:end -->` markers, as `fkp compare` prints it: the numbers in README
# come from the report, never typed in. Run after `fkp run pipelines/study-missing-labels.toml`.
#   bash scripts/readme-study.sh            (FKP=path/to/fkp to use a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
fkp=(cargo run --release --quiet --)
[[ -n ${FKP:-} ]] && fkp=("$FKP")

table=$(mktemp)
trap 'rm -f "$table" "$table.readme" "$table.readme.part"' EXIT
"${fkp[@]}" compare pipelines/study-missing-labels.toml --format md >"$table"
if grep -q '^not compared:' "$table"; then
    grep '^not compared:' "$table" >&2
    echo "readme-study: run the study first (fkp run pipelines/study-missing-labels.toml)" >&2
    exit 1
fi
# The summary line, the ranked table and the timing section: what comes before the
# per-keypoint table, without the title and description.
awk '/^## RMSE per keypoint/ { exit } NR > 4 { print }' "$table" >"$table.readme.part"
awk -v part="$table.readme.part" '
    /<!-- study:start -->/ { print; while ((getline line < part) > 0) print line; skip = 1; next }
    /<!-- study:end -->/ { skip = 0 }
    !skip { print }
' README.md >"$table.readme"
rm -f "$table.readme.part"
grep -q '<!-- study:end -->' "$table.readme" || { echo "readme-study: README.md lacks the study markers" >&2; exit 1; }
mv "$table.readme" README.md
echo "README.md: study table updated"
