//! What the numbers a network computes depend on beyond its configuration and
//! data: fkp's patches to dfdx, and the kernels the device runs. Both go into the
//! cache keys of the stages that compute with dfdx (train, evaluate), so results
//! computed differently are never filed under one key.
//!
//! On the CPU, matrix products run in the `gemm` crate's kernels for the best
//! instruction set the processor has (FMA, AVX, SSE2), and those sum in different
//! orders. Results do not depend on the number of threads (the patched kernels
//! split work into fixed chunks), but they can differ between processors with
//! different instruction sets, so the instruction set is part of the key.

use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/dfdx_patches.rs"));

/// A short hash of the dfdx patches this fkp was built with.
pub fn patches_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hasher = blake3::Hasher::new();
        for (name, bytes) in DFDX_PATCHES {
            hasher.update(name.as_bytes());
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        hasher.finalize().to_hex()[..16].to_string()
    })
}

/// The CPU's architecture and the instruction set `gemm` picks on it: `x86_64/fma`.
pub fn cpu_kernels() -> &'static str {
    static KERNELS: OnceLock<String> = OnceLock::new();
    KERNELS.get_or_init(|| format!("{}/{}", std::env::consts::ARCH, instruction_set()))
}

/// The instruction set `gemm` dispatches to, tested in its order.
fn instruction_set() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            "fma"
        } else if std::arch::is_x86_feature_detected!("avx") {
            "avx"
        } else if std::arch::is_x86_feature_detected!("sse2") {
            "sse2"
        } else {
            "scalar"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "neon"
        } else {
            "scalar"
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_is_listed_and_hashed() {
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/patches/dfdx"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "patch")
            })
            .count();
        assert_eq!(DFDX_PATCHES.len(), on_disk);
        assert_eq!(patches_version().len(), 16);
        assert!(!cpu_kernels().is_empty());
    }
}
