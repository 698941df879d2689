#!/usr/bin/env bash
# Materialise a patched copy of dfdx 0.13.0 at <repo>/.deps/dfdx-0.13.0.
#
# The repo's Cargo.toml points `[patch.crates-io] dfdx` at that path, so the
# copy must exist before any cargo command runs in the repo. This script does
# not use the repo's manifest: it fetches the pristine crates.io source via a
# throwaway manifest, copies it, and applies patches/dfdx/*.patch in order.
# The patches are a `git format-patch` series (patches/dfdx/README.md says how
# to edit it); `patch` reads them without git, skipping each mail header.
#
# Idempotent: a stamp records the sha256 of the patches (and of this script's
# pinned inputs); a rerun with the same patches is a fast no-op. Changed patches
# => the copy is rebuilt from the pristine source.
#
# Env: CARGO_HOME (default ~/.cargo), CARGO (default cargo),
#      FKP_DEPS_DIR (default <repo>/.deps).
set -euo pipefail

DFDX_VERSION=0.13.0
# crates.io checksum of dfdx-0.13.0.crate (as written in Cargo.lock).
DFDX_SHA256=c6dbcb8a7363d8b434ca20bd3808ab9f6ee77e6916ca1d511f8e3c725d0b340e

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${FKP_DEPS_DIR:-$repo/.deps}"
dest="$deps/dfdx-$DFDX_VERSION"
stamp="$deps/dfdx-$DFDX_VERSION.stamp"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
cargo="${CARGO:-cargo}"

tmp_manifest=""
staging=""
cleanup() { rm -rf ${tmp_manifest:+"$tmp_manifest"} ${staging:+"$staging"}; }
trap cleanup EXIT

log() { printf 'setup-dfdx: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in patch sha256sum tar; do
    command -v "$tool" >/dev/null || die "'$tool' not found on PATH"
done

shopt -s nullglob
patches=("$repo"/patches/dfdx/*.patch)
shopt -u nullglob
# Glob order is locale-collated; force byte order so 0001 < 0002 < ...
if ((${#patches[@]})); then
    mapfile -t patches < <(printf '%s\n' "${patches[@]}" | LC_ALL=C sort)
fi

# Stamp content: pinned version + checksum + each patch's name and hash.
want_stamp="$(
    printf 'dfdx %s %s\n' "$DFDX_VERSION" "$DFDX_SHA256"
    for p in "${patches[@]}"; do
        printf '%s  %s\n' "$(sha256sum <"$p" | cut -d' ' -f1)" "$(basename "$p")"
    done
)"

if [[ -d "$dest" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
    exit 0 # up to date
fi

# ---- locate (or fetch) the pristine .crate archive -------------------------
find_crate() {
    local f
    for f in "$cargo_home"/registry/cache/*/dfdx-"$DFDX_VERSION".crate; do
        [[ -f "$f" ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

crate_file="$(find_crate || true)"
if [[ -z "$crate_file" ]]; then
    command -v "$cargo" >/dev/null || die "'$cargo' not found on PATH"
    log "fetching dfdx $DFDX_VERSION from crates.io"
    tmp_manifest="$(mktemp -d)"
    mkdir -p "$tmp_manifest/src"
    : >"$tmp_manifest/src/lib.rs"
    cat >"$tmp_manifest/Cargo.toml" <<EOF
[package]
name = "fkp-dfdx-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
dfdx = { version = "=$DFDX_VERSION", default-features = false }

[workspace]
EOF
    # Its own [workspace] stops cargo from walking up into an unrelated
    # workspace. Only the lock/fetch happens; nothing is compiled.
    (cd "$tmp_manifest" && CARGO_HOME="$cargo_home" "$cargo" fetch --quiet) \
        || die "cargo fetch of dfdx $DFDX_VERSION failed"
    crate_file="$(find_crate || true)"
    [[ -n "$crate_file" ]] || die "dfdx-$DFDX_VERSION.crate not in $cargo_home/registry/cache after fetch"
fi

got_sha="$(sha256sum <"$crate_file" | cut -d' ' -f1)"
[[ "$got_sha" == "$DFDX_SHA256" ]] \
    || die "$crate_file: sha256 $got_sha, expected $DFDX_SHA256"

# ---- unpack into a staging dir, patch, then swap into place ----------------
mkdir -p "$deps"
staging="$(mktemp -d "$deps/.dfdx-staging.XXXXXX")"

tar -xzf "$crate_file" -C "$staging"
src="$staging/dfdx-$DFDX_VERSION"
[[ -f "$src/Cargo.toml" ]] || die "unexpected layout in $crate_file"

for p in "${patches[@]}"; do
    log "applying $(basename "$p")"
    # Most sources are CRLF, and so are their lines in the patches; GNU patch
    # matches them byte-for-byte.
    # --binary keeps it from touching line endings on any platform.
    if ! (cd "$src" && patch -p1 --binary --forward --batch --silent --fuzz=0 \
            --no-backup-if-mismatch -r - <"$p"); then
        die "patch $(basename "$p") did not apply cleanly"
    fi
done

rm -rf "$dest" "$stamp"
mv "$src" "$dest"
printf '%s\n' "$want_stamp" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
log "ready: $dest (${#patches[@]} patch(es))"
