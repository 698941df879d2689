//! Content hashes of input files, with a fast path: a file whose size and
//! modification time match what was recorded keeps its recorded hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::fsutil;

const FILE_NAME: &str = "file-hashes.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Known {
    size: u64,
    mtime_ns: u128,
    hash: String,
}

pub struct FileHasher {
    store: PathBuf,
    known: BTreeMap<PathBuf, Known>,
    dirty: bool,
}

impl FileHasher {
    pub fn load(cache_dir: &Path) -> FileHasher {
        let store = cache_dir.join(FILE_NAME);
        let known = std::fs::read(&store)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BTreeMap<PathBuf, Known>>(&bytes).ok())
            .unwrap_or_default();
        FileHasher {
            store,
            known,
            dirty: false,
        }
    }

    pub fn hash(&mut self, path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        // A FIFO or a device would never finish hashing.
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a regular file",
            ));
        }
        let path = path.canonicalize()?;
        let mtime_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        if let Some(known) = self.known.get(&path)
            && known.size == meta.len()
            && known.mtime_ns == mtime_ns
        {
            return Ok(known.hash.clone());
        }
        let hash = hash_file(&path)?;
        self.known.insert(
            path,
            Known {
                size: meta.len(),
                mtime_ns,
                hash: hash.clone(),
            },
        );
        self.dirty = true;
        Ok(hash)
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        // Paths that are not UTF-8 cannot be JSON keys: they are hashed anew each time.
        let known: BTreeMap<String, &Known> = self
            .known
            .iter()
            .filter_map(|(path, known)| Some((path.to_str()?.to_string(), known)))
            .collect();
        fsutil::write_json(&self.store, &known)?;
        self.dirty = false;
        Ok(())
    }
}

/// blake3 of bytes in memory: the same digest [`hash_file`] gives their file.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// blake3 of a file's bytes, memory-mapped and spread over all cores.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_follow_content_and_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "one").unwrap();
        let mut hasher = FileHasher::load(dir.path());
        let first = hasher.hash(&file).unwrap();
        assert_eq!(first, blake3::hash(b"one").to_hex().to_string());
        hasher.save().unwrap();

        let mut reloaded = FileHasher::load(dir.path());
        assert_eq!(reloaded.hash(&file).unwrap(), first);
        assert!(!reloaded.dirty, "the fast path should not rehash");

        std::fs::write(&file, "two!").unwrap();
        assert_ne!(reloaded.hash(&file).unwrap(), first);
    }
}
