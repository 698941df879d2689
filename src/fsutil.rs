//! File writes that never leave a half-written file behind: write beside the
//! target, then rename over it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling path for writing `path`'s new content before the rename.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Copies every file under `from` to the same place under `to`, each by
/// write-then-rename, and returns how many files were copied. Files already
/// identical are left alone, so refreshing unchanged reports is cheap.
pub fn sync_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut copied = 0;
    if !from.is_dir() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copied += sync_tree(&source, &target)?;
            continue;
        }
        let bytes = std::fs::read(&source)?;
        if std::fs::read(&target).is_ok_and(|old| old == bytes) {
            continue;
        }
        std::fs::create_dir_all(to)?;
        write_atomic(&target, &bytes)?;
        copied += 1;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sync_tree_copies_nested_files_and_skips_identical_ones() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("eda")).unwrap();
        std::fs::write(from.join("eda/s.md"), "x").unwrap();
        std::fs::write(from.join("m.json"), "{}").unwrap();
        let to = dir.path().join("to");
        assert_eq!(sync_tree(&from, &to).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(to.join("eda/s.md")).unwrap(), "x");
        assert_eq!(sync_tree(&from, &to).unwrap(), 0);
    }
}
