//! Keys of `[report]`.

use std::path::{Path, PathBuf};

use super::SortBy;
use crate::config::{Location, TableReader};

/// Validation faces in the side-by-side picture unless `[report] faces` says.
pub const DEFAULT_FACES: usize = 6;

/// `[report]`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportConfig {
    /// `pipelines`: the pipeline files compared, relative to the file (required).
    /// In the key by what they are (their names, configurations and outputs),
    /// not by where they are.
    #[serde(skip)]
    pub pipelines: Vec<(PathBuf, Location)>,
    /// `baseline`: the name of one listed pipeline; deltas are against it (optional).
    pub baseline: Option<String>,
    #[serde(skip)]
    pub baseline_at: Option<Location>,
    /// `sort_by`: "rmse" (default), "mae", "pck5", "pck10" or "parameters".
    pub sort_by: SortBy,
    /// `faces`: validation faces in the side-by-side picture, worst first (default 6, 1 to 16).
    pub faces: usize,
}

impl ReportConfig {
    pub fn read(r: &mut TableReader) -> ReportConfig {
        let listed = r.states("pipelines");
        let errors_before = r.error_count();
        let pipelines = r.path_list("pipelines");
        if !listed {
            r.missing("pipelines");
        } else if pipelines.is_empty() && r.error_count() == errors_before {
            r.invalid("pipelines", "name at least one pipeline file");
        }
        for (i, (path, at)) in pipelines.iter().enumerate() {
            let problem = match std::fs::metadata(path) {
                Err(e) => Some(format!("cannot read {}: {e}", path.display())),
                Ok(meta) if !meta.is_file() => Some(format!("{} is not a regular file", path.display())),
                Ok(_) => pipelines[..i]
                    .iter()
                    .find(|(p, _)| same_file(p, path))
                    .map(|(_, first)| format!("{} is listed twice (first at {first})", path.display())),
            };
            if let Some(problem) = problem {
                r.invalid_at("pipelines", at, problem);
            }
        }
        let baseline = r.string("baseline");
        let baseline_at = baseline.is_some().then(|| r.location("baseline"));
        ReportConfig {
            pipelines,
            baseline,
            baseline_at,
            sort_by: r.choice("sort_by", SortBy::Rmse),
            faces: r.usize_in("faces", DEFAULT_FACES, 1..=16),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
