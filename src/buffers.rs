//! Large buffers that fkp allocates itself, allocated fallibly: when memory runs
//! out, the allocation is an [`OutOfMemory`] error naming its size and purpose,
//! which the stage reports like any other error (fkp exits 1), instead of the
//! abort of `vec!`, `Vec::with_capacity`, `to_vec` or `std::fs::read`.
//!
//! Only these can be caught: stable Rust has no way to turn the failure of an
//! ordinary (infallible) allocation into an error, whether in fkp's small
//! buffers or in its dependencies' (dfdx's own CPU tensors are fallible through
//! fkp's patches), so those still abort with "memory allocation of N bytes
//! failed". And where the kernel overcommits memory, allocations rarely fail at
//! all: the OOM killer ends the process instead (SIGKILL), which nothing in a
//! process can catch; a training then resumes from its last checkpoint.

use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("out of memory: cannot allocate {bytes} bytes for {what}")]
pub struct OutOfMemory {
    pub bytes: usize,
    pub what: String,
}

impl From<OutOfMemory> for std::io::Error {
    fn from(error: OutOfMemory) -> Self {
        std::io::Error::new(std::io::ErrorKind::OutOfMemory, error)
    }
}

/// An empty vector with room for `len` values.
pub fn with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>, OutOfMemory> {
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(len).map_err(|_| OutOfMemory {
        bytes: len.saturating_mul(std::mem::size_of::<T>()),
        what: what.to_string(),
    })?;
    Ok(buffer)
}

/// `len` default values (zeros).
pub fn zeroed<T: Clone + Default>(len: usize, what: &str) -> Result<Vec<T>, OutOfMemory> {
    let mut buffer = with_capacity(len, what)?;
    buffer.resize(len, T::default());
    Ok(buffer)
}

/// A copy of `values`.
pub fn copied<T: Clone>(values: &[T], what: &str) -> Result<Vec<T>, OutOfMemory> {
    let mut buffer = with_capacity(values.len(), what)?;
    buffer.extend_from_slice(values);
    Ok(buffer)
}

/// A file's bytes (`std::fs::read`, with an error where memory runs out).
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let mut bytes = with_capacity(len, "reading the file")?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_too_large_is_an_error_that_names_its_size() {
        let error = zeroed::<f32>(usize::MAX / 8, "a test").unwrap_err();
        assert_eq!(error.bytes, usize::MAX / 8 * 4);
        assert_eq!(
            error.to_string(),
            format!(
                "out of memory: cannot allocate {} bytes for a test",
                usize::MAX / 8 * 4
            )
        );
        let io: std::io::Error = error.into();
        assert_eq!(io.kind(), std::io::ErrorKind::OutOfMemory);
        assert_eq!(zeroed::<u8>(3, "x").unwrap(), [0, 0, 0]);
        assert_eq!(copied(&[1, 2], "x").unwrap(), [1, 2]);
    }

    #[test]
    fn read_file_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"bytes").unwrap();
        assert_eq!(read_file(&path).unwrap(), b"bytes");
        assert!(read_file(&dir.path().join("missing")).is_err());
    }
}
