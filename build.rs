//! Hashes the patched dfdx source fkp compiles, for `src/training/numerics.rs`:
//! the hash is part of the cache key of every stage that computes with dfdx, so
//! a change to what dfdx computes makes those results stale.
//!
//! It hashes the source tree, not `patches/dfdx/*.patch`, so that the key follows
//! the code: rewording a patch's header or regenerating the series changes no
//! key, and a tree patched by other means is still told apart.

use std::path::{Path, PathBuf};

fn main() {
    // Read at run time, not `env!`: a build script compiled for a clone elsewhere
    // may be reused from a shared target directory.
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let manifest = manifest_dir.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let dfdx = manifest_dir.join(dfdx_patch_path(&manifest));

    let mut files = vec![dfdx.join("Cargo.toml"), dfdx.join("build.rs")];
    collect_files(&dfdx.join("src"), &mut files);
    let mut files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|path| (relative_name(&dfdx, &path), path))
        .collect();
    files.sort();

    let mut hasher = blake3::Hasher::new();
    for (name, path) in &files {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for part in [name.as_bytes(), &bytes] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    // Cargo scans a directory named here for changes to any file under it.
    for path in ["Cargo.toml", "build.rs", "src"] {
        println!("cargo:rerun-if-changed={}", dfdx.join(path).display());
    }

    let hash = &hasher.finalize().to_hex()[..16];
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("dfdx_source.rs");
    std::fs::write(out, format!("const DFDX_SOURCE_HASH: &str = {hash:?};\n")).expect("OUT_DIR is writable");
}

/// The `path` of `dfdx = { path = "..." }` under `[patch.crates-io]`: the tree
/// cargo compiles as dfdx.
fn dfdx_patch_path(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).expect("Cargo.toml is readable");
    let document: toml_edit::DocumentMut = text.parse().expect("Cargo.toml is TOML");
    document["patch"]["crates-io"]["dfdx"]["path"]
        .as_str()
        .expect("Cargo.toml has `dfdx = { path = \"...\" }` under [patch.crates-io]")
        .to_string()
}

/// Every file under `dir`, recursively. The patched copy is made by
/// `scripts/setup-dfdx.sh`; run it first.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run `bash scripts/setup-dfdx.sh` first)", dir.display()));
    for entry in entries {
        let path = entry.expect("the dfdx source is readable").path();
        if path.is_dir() {
            collect_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// `path` relative to the dfdx tree, with `/` separators: the hash does not
/// depend on where the tree is or on the platform.
fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).expect("collected under the dfdx tree");
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
