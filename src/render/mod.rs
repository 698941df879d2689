//! Drawing and tabulating results for people: tables (terminal, Markdown,
//! Parquet) and plots (PNG, SVG), which the stages' reports and the commands use.

pub mod faces;
pub mod plot;
mod table;

pub use table::{Cell, ReportTable, escape_html};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot write {path}: {message}")]
    Write {
        path: std::path::PathBuf,
        message: String,
    },
}

impl RenderError {
    pub fn write(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        RenderError::Write {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }
}
