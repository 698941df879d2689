//! The workspace is the current directory: the cache lives in `.fkp/` and the
//! human-facing outputs in `reports/`.

use std::path::{Path, PathBuf};

pub const DEFAULT_CACHE_DIR: &str = ".fkp";
pub const REPORTS_DIR: &str = "reports";
pub const PIPELINES_DIR: &str = "pipelines";

#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub cache_dir: PathBuf,
    pub reports_dir: PathBuf,
}

impl Workspace {
    /// The workspace rooted at `root`, with the cache at `cache_dir` (relative to
    /// `root` when relative) or `.fkp/`.
    pub fn new(root: &Path, cache_dir: Option<&Path>) -> Workspace {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let cache_dir = root.join(cache_dir.unwrap_or(Path::new(DEFAULT_CACHE_DIR)));
        Workspace {
            reports_dir: root.join(REPORTS_DIR),
            cache_dir,
            root,
        }
    }

    /// Where a pipeline's reports go: `reports/<name>/`.
    pub fn report_dir(&self, pipeline: &str) -> PathBuf {
        self.reports_dir.join(pipeline)
    }
}
