//! The workspace is the current directory: the cache lives in `.fkp/` and the
//! human-facing outputs in `reports/`. Commands that write hold an OS lock on
//! `.fkp/lock`; commands that only read take none and create nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::console::Console;

pub const DEFAULT_CACHE_DIR: &str = ".fkp";
pub const REPORTS_DIR: &str = "reports";
pub const PIPELINES_DIR: &str = "pipelines";
const LOCK_FILE: &str = "lock";

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    pub reports_dir: PathBuf,
}

/// Whether a writer that finds the workspace locked waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    /// `--no-wait`: fail at once.
    No,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the workspace is in use: {holder} holds the lock on {path} (--no-wait)")]
    Busy { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Proof that this process may write the workspace; the lock goes with it.
#[derive(Debug)]
pub struct WorkspaceLock {
    workspace: Workspace,
    _file: File,
}

impl WorkspaceLock {
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }
}

impl Workspace {
    /// The workspace rooted at `root`, with the cache at `cache_dir` (relative to
    /// `root` when relative) or `.fkp/`.
    pub fn new(root: &Path, cache_dir: Option<&Path>) -> Workspace {
        let root = normalised(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
        let cache_dir = normalised(&root.join(cache_dir.unwrap_or(Path::new(DEFAULT_CACHE_DIR))));
        Workspace {
            reports_dir: root.join(REPORTS_DIR),
            cache_dir,
            root,
        }
    }

    /// A short name for this workspace, from its root: run records are kept per
    /// workspace, so several can share one cache.
    pub fn id(&self) -> String {
        let root = self.root.canonicalize().unwrap_or_else(|_| self.root.clone());
        blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex()[..16].to_string()
    }

    /// Where a pipeline's reports go: `reports/<name>/`.
    pub fn report_dir(&self, pipeline: &str) -> PathBuf {
        self.reports_dir.join(pipeline)
    }

    /// Takes the workspace's write lock, waiting for another writer to finish
    /// (saying who it is) unless told not to. `command` describes this process to
    /// the next one that waits.
    pub fn lock(&self, wait: Wait, command: &str, console: &Console) -> Result<WorkspaceLock, LockError> {
        let path = self.cache_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if wait == Wait::No {
                    return Err(LockError::Busy { path, holder });
                }
                let shown = self.cache_dir.strip_prefix(&self.root).unwrap_or(&self.cache_dir);
                console.status(&format!(
                    "waiting for the lock on {} held by {holder}",
                    shown.display()
                ));
                file.lock().map_err(io)?;
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "pid {} ({command})", std::process::id()).map_err(io)?;
        Ok(WorkspaceLock {
            workspace: self.clone(),
            _file: file,
        })
    }
}

/// `path` without `.` and `..` components (resolved lexically, as a shell does).
pub(crate) fn normalised(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Who holds the lock, as its holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    match text.trim() {
        "" => "another fkp process".to_string(),
        holder => crate::text::excerpt(holder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_and_gets_it_once_free() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path(), None);
        let console = Console::silent();
        let first = workspace.lock(Wait::No, "fkp run a.toml", &console).unwrap();
        let error = workspace.lock(Wait::No, "fkp run b.toml", &console).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("pid {} (fkp run a.toml)", std::process::id())),
            "{message}"
        );
        drop(first);
        workspace.lock(Wait::No, "fkp run b.toml", &console).unwrap();
    }
}
