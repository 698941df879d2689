//! Lists fkp's dfdx patches for `src/training/numerics.rs`: their content is part
//! of the cache key of every stage that computes with dfdx, so changing a patch
//! makes those results stale.

use std::path::Path;

fn main() {
    // Read at run time, not `env!`: a build script compiled for a clone elsewhere
    // may be reused from a shared target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("patches/dfdx");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut patches: Vec<_> = std::fs::read_dir(&dir)
        .expect("patches/dfdx is part of the source tree")
        .map(|entry| entry.expect("patches/dfdx is readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "patch"))
        .collect();
    patches.sort();
    let mut code = String::from("pub const DFDX_PATCHES: &[(&str, &[u8])] = &[\n");
    for path in &patches {
        let name = path.file_name().expect("a file").to_string_lossy();
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("dfdx_patches.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
