//! File writes that never leave a half-written file behind (write beside the
//! target, then rename over it), JSON written the same way, and paths in JSON
//! that survive not being UTF-8.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling path for writing `path`'s new content before the rename:
/// `.<name>.tmp-<pid>`.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The process that wrote a temporary sibling named `name`, if it is one.
fn temp_sibling_owner(name: &str) -> Option<u32> {
    let (stem, pid) = name.rsplit_once(".tmp-")?;
    stem.starts_with('.').then_some(())?;
    pid.parse().ok()
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

/// Pretty JSON, written atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Whether process `pid` is running (where /proc tells; elsewhere assume it is,
/// so that nothing of a live run is ever removed).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    !proc_root.is_dir() || proc_root.join(pid.to_string()).exists()
}

/// This machine's name, as the kernel has it (`localhost` where it cannot be
/// read): tells apart processes of machines sharing one cache.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Every file under `dir`, as paths relative to it, sorted. Temporary siblings
/// are left out.
pub fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let Ok(items) = std::fs::read_dir(dir.join(&relative)) else {
            continue;
        };
        for item in items {
            let item = item?;
            let path = relative.join(item.file_name());
            if item.file_type()?.is_dir() {
                stack.push(path);
            } else if temp_sibling_owner(&item.file_name().to_string_lossy()).is_none() {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Makes `to` hold the files of `from` (each copied by write-then-rename, and
/// only when its content changed), removes the files of `previous` that `from`
/// no longer has, and removes temporary siblings that killed writers left in
/// the folders it touches. Returns the files now published, relative to `to`.
pub fn publish_tree(from: &Path, to: &Path, previous: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let files = if from.is_dir() {
        list_files(from)?
    } else {
        Vec::new()
    };
    for file in &files {
        let target = to.join(file);
        let bytes = std::fs::read(from.join(file))?;
        if std::fs::read(&target).is_ok_and(|old| old == bytes) {
            continue;
        }
        std::fs::create_dir_all(target.parent().unwrap_or(to))?;
        write_atomic(&target, &bytes)?;
    }
    for gone in previous.iter().filter(|p| !files.contains(p)) {
        match std::fs::remove_file(to.join(gone)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        // Folders it leaves empty go too (`seed-1/train/` of a former ensemble).
        let mut folder = to.join(gone);
        while folder.pop() && folder.starts_with(to) && folder != to {
            if std::fs::remove_dir(&folder).is_err() {
                break;
            }
        }
    }
    let mut folders: Vec<PathBuf> = files
        .iter()
        .chain(previous)
        .map(|f| to.join(f).parent().unwrap_or(to).to_path_buf())
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        remove_stale_temp_files(&folder)?;
    }
    Ok(files)
}

/// Removes `.<name>.tmp-<pid>` files in `dir` whose writer is gone.
fn remove_stale_temp_files(dir: &Path) -> std::io::Result<()> {
    let Ok(items) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for item in items.flatten() {
        let name = item.file_name();
        if let Some(pid) = temp_sibling_owner(&name.to_string_lossy())
            && !process_alive(pid)
        {
            match std::fs::remove_file(item.path()) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A path from the bytes `OsStr::as_encoded_bytes` gave (on Unix, any bytes).
pub fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// A relative link (`/`-separated, ending in `/`) from folder `from` to folder
/// `to`, both absolute and free of `..`: `../../reports/` from `out/compare` to
/// `reports` under the same root.
pub fn relative_link(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.iter().map(|part| format!("{part}/")).collect()
}

/// For `skip_serializing_if`: a path left empty on purpose.
pub fn is_empty_path(path: &Path) -> bool {
    path.as_os_str().is_empty()
}

/// Serde for paths in fkp's JSON (records, manifests, status): written as text,
/// with any bytes that are not UTF-8 replaced by `�` rather than failing.
pub mod lossy_path {
    use std::path::{Path, PathBuf};

    pub fn serialize<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&path.to_string_lossy())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        <String as serde::Deserialize>::deserialize(deserializer).map(PathBuf::from)
    }
}

/// [`lossy_path`] for an optional path.
pub mod lossy_path_option {
    use std::path::PathBuf;

    pub fn serialize<S: serde::Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
        match path {
            Some(path) => serializer.serialize_some(&path.to_string_lossy()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        <Option<String> as serde::Deserialize>::deserialize(deserializer).map(|p| p.map(PathBuf::from))
    }
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
    fn publishing_copies_changes_removes_what_went_and_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("eda")).unwrap();
        std::fs::write(from.join("eda/s.md"), "x").unwrap();
        std::fs::write(from.join("m.json"), "{}").unwrap();
        let to = dir.path().join("to");
        let first = publish_tree(&from, &to, &[]).unwrap();
        assert_eq!(first, [PathBuf::from("eda/s.md"), PathBuf::from("m.json")]);
        assert_eq!(std::fs::read_to_string(to.join("eda/s.md")).unwrap(), "x");

        // A killed writer's leftover, a file the stage no longer writes, and a
        // file of the user's that fkp never published.
        std::fs::write(to.join("eda/.s.md.tmp-999999999"), "half").unwrap();
        std::fs::write(to.join("mine.txt"), "keep").unwrap();
        std::fs::remove_file(from.join("m.json")).unwrap();
        let second = publish_tree(&from, &to, &first).unwrap();
        assert_eq!(second, [PathBuf::from("eda/s.md")]);
        assert!(!to.join("m.json").exists());
        assert!(!to.join("eda/.s.md.tmp-999999999").exists());
        assert!(to.join("mine.txt").exists());
    }

    #[test]
    fn paths_that_are_not_utf8_still_serialise() {
        #[derive(serde::Serialize)]
        struct Record {
            #[serde(with = "lossy_path")]
            path: PathBuf,
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/f\xff.csv"));
            let json = serde_json::to_string(&Record { path }).unwrap();
            assert_eq!(json, "{\"path\":\"/data/f\u{fffd}.csv\"}");
        }
    }

    #[test]
    fn relative_links_climb_to_the_common_folder() {
        let link = |from: &str, to: &str| relative_link(Path::new(from), Path::new(to));
        assert_eq!(link("/w/out/compare", "/w/reports"), "../../reports/");
        assert_eq!(link("/w/reports/study", "/w/reports"), "../");
        assert_eq!(link("/w", "/w/reports"), "reports/");
        assert_eq!(link("/tmp/x", "/w/reports"), "../../w/reports/");
        assert_eq!(link("/w/reports", "/w/reports"), "");
    }
}
