//! Human-facing outputs: tables (terminal, Markdown, Parquet) and plots (PNG, SVG).

pub mod faces;
pub mod plot;
mod table;

pub use table::{Cell, ReportTable, escape_html};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
}

impl ReportError {
    pub fn write(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        ReportError::Write {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}
