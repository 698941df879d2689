use std::path::PathBuf;

/// Errors reading or writing face data. Each names the file and, for content
/// errors, the line and column at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: it is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path} is damaged or truncated: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error("{path}:1: bad header: {message}")]
    Header { path: PathBuf, message: String },
    #[error("{path}:{line}: column `{column}`: {message}")]
    BadRow {
        path: PathBuf,
        line: usize,
        column: String,
        message: String,
    },
    /// A row whose field count the header does not allow: a format error, not damage.
    #[error(
        "{path}:{line}: the row has {found} fields where the header `{header}` allows {expected}: `{row}`"
    )]
    Width {
        path: PathBuf,
        line: usize,
        found: usize,
        expected: String,
        header: String,
        row: String,
    },
    #[error("{path}: no data rows")]
    Empty { path: PathBuf },
    #[error("{path}: every one of its {rows} rows was skipped as bad; the first: {first}")]
    AllSkipped {
        path: PathBuf,
        rows: usize,
        first: String,
    },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read Parquet file {path}: {message}")]
    Parquet { path: PathBuf, message: String },
}
