//! What the numbers a network computes depend on beyond its configuration and
//! data: the dfdx source fkp compiles (the crates.io release with fkp's patches),
//! and the kernels the device runs. Both go into the cache keys of the stages that
//! compute with dfdx (train, evaluate), so results computed differently are never
//! filed under one key.
//!
//! The dfdx part hashes the patched source tree (build.rs), not the patch files:
//! a patch's header or format can change without changing what dfdx computes.
//!
//! On the CPU, matrix products run in the `gemm` crate's kernels for the best
//! instruction set the processor has (AVX-512, FMA or none), and those sum in different
//! orders. Results do not depend on the number of threads (the patched kernels
//! split work into fixed chunks), but they can differ between processors with
//! different instruction sets, so the instruction set is part of the key.

use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/dfdx_source.rs"));

/// A short hash of the patched dfdx source this fkp was built with.
pub fn dfdx_source_hash() -> &'static str {
    DFDX_SOURCE_HASH
}

/// The CPU's architecture and the instruction set `gemm` picks on it: `x86_64/fma`.
pub fn cpu_kernels() -> &'static str {
    static KERNELS: OnceLock<String> = OnceLock::new();
    KERNELS.get_or_init(|| format!("{}/{}", std::env::consts::ARCH, instruction_set()))
}

/// The instruction set `gemm` dispatches to, tested in its order: gemm 0.19
/// (with `x86-v4`) takes its AVX-512 kernels on `avx512f`, else its FMA ones
/// on `fma`, else scalar ones.
fn instruction_set() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "avx512"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "fma"
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
    fn keys_name_the_dfdx_source_and_the_cpu_kernels() {
        let hash = dfdx_source_hash();
        assert_eq!(hash.len(), 16);
        assert!(
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!(!cpu_kernels().is_empty());
    }
}
