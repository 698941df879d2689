//! Files the server hands out: only what lies inside the workspace's
//! `reports/`. A path is refused (as absent: 404) when it names a parent
//! (`..`, also percent-encoded: the router decodes first), is absolute, or
//! leads out of `reports/` through a symlink.

use std::path::{Component, Path, PathBuf};

/// The file `requested` (a path relative to `reports/`, decoded) names,
/// when it lies inside `reports_dir` and is a file.
pub fn resolve(reports_dir: &Path, requested: &str) -> Option<PathBuf> {
    let relative = Path::new(requested);
    if requested.contains('\0')
        || !relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
    {
        return None;
    }
    let root = reports_dir.canonicalize().ok()?;
    let found = root.join(relative).canonicalize().ok()?;
    (found.starts_with(&root) && found.is_file()).then_some(found)
}

/// The Content-Type of a report file, by its extension. Text that is not HTML
/// is shown as plain text: a Markdown table reads well as it is.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "md" | "csv" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_reports_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let reports = dir.path().join("reports");
        std::fs::create_dir_all(reports.join("p")).unwrap();
        std::fs::write(reports.join("p/metrics.md"), "m").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), reports.join("p/out.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), reports.join("up")).unwrap();

        assert!(resolve(&reports, "p/metrics.md").is_some());
        for refused in [
            "../secret.txt",
            "p/../../secret.txt",
            "/etc/passwd",
            "p/out.txt",
            "up/secret.txt",
            "p",
            "p/metrics.md\0",
            "",
        ] {
            assert_eq!(resolve(&reports, refused), None, "{refused:?}");
        }
    }
}
