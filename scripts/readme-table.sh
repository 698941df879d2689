#!/usr/bin/env bash
# Puts a report's table into README.md, between the `<!-- NAME:start -->` and
# `<!-- NAME:end -->` markers, as `fkp compare` prints it: the numbers in README
# come from the report, never typed in. Run after `fkp run REPORT.toml`.
#   bash scripts/readme-table.sh pipelines/study-missing-labels.toml study
#   bash scripts/readme-table.sh pipelines/ablation.toml ablation
#   bash scripts/readme-table.sh pipelines/ablation.toml ablation --partial
# (--partial: pipelines not run yet are listed under the table as not compared;
# FKP=path/to/fkp to use a built binary)
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:?usage: readme-table.sh REPORT.toml MARKER}
marker=${2:?usage: readme-table.sh REPORT.toml MARKER}
partial=${3:-}
fkp=(cargo run --release --quiet --)
[[ -n ${FKP:-} ]] && fkp=("$FKP")

table=$(mktemp)
trap 'rm -f "$table" "$table.readme" "$table.readme.part"' EXIT
"${fkp[@]}" compare "$report" --format md >"$table"
if [[ $partial != --partial ]] && grep -q '^not compared:' "$table"; then
    grep '^not compared:' "$table" >&2
    echo "readme-table: run it first (fkp run $report)" >&2
    exit 1
fi
# The summary line, the ranked table and the timing section: what comes before the
# per-keypoint table, without the title and description.
awk '/^## RMSE per keypoint/ { exit } NR > 4 { print }' "$table" >"$table.readme.part"
if [[ $partial == --partial ]]; then
    awk '/^not compared:/ { on = 1 } on { print }' "$table" | sed 's/^/    /' >>"$table.readme.part"
fi
awk -v part="$table.readme.part" -v start="<!-- $marker:start -->" -v end="<!-- $marker:end -->" '
    $0 == start { print; while ((getline line < part) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }
' README.md >"$table.readme"
rm -f "$table.readme.part"
grep -qx "<!-- $marker:end -->" "$table.readme" || { echo "readme-table: README.md lacks the $marker markers" >&2; exit 1; }
mv "$table.readme" README.md
echo "README.md: $marker table updated"
