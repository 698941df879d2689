#!/usr/bin/env bash
# Fetches uPlot (the chart library fkp serve's page embeds) from the npm registry and
# checks that src/commands/serve/page/vendor/ holds exactly its files: run it to verify
# the vendored copy, or with --update after changing VERSION to replace it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.6.32
VENDOR=src/commands/serve/page/vendor
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

(cd "$scratch" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
pairs=("dist/uPlot.iife.min.js uPlot.iife.min.js" "dist/uPlot.min.css uPlot.min.css" "LICENSE uPlot-LICENSE")
if [[ ${1:-} == --update ]]; then
    for pair in "${pairs[@]}"; do
        read -r from to <<<"$pair"
        cp "$scratch/package/$from" "$VENDOR/$to"
    done
    echo "vendored uPlot $VERSION into $VENDOR"
    exit 0
fi
status=0
for pair in "${pairs[@]}"; do
    read -r from to <<<"$pair"
    if cmp -s "$scratch/package/$from" "$VENDOR/$to"; then
        echo "ok: $VENDOR/$to is uplot@$VERSION's $from"
    else
        echo "DIFFERS: $VENDOR/$to is not uplot@$VERSION's $from" >&2
        status=1
    fi
done
exit "$status"
