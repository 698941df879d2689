//! The generic TOML machinery of pipeline files: documents with spans, `extends`,
//! typed reading and errors. What the tables mean lives elsewhere: `[pipeline]` in
//! `src/pipeline.rs`, each stage's tables in `src/stages/<stage>/config.rs`
//! (`[model]` with `[train]`, in `src/stages/train/config.rs`).

mod document;
mod error;
mod overrides;
mod reader;
mod source;
mod value;

pub use document::{Document, discover_pipelines};
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, did_you_mean};
pub use overrides::Override;
pub use reader::{Choice, TableReader};
pub use source::{Location, SourceFile};
pub use value::{Entry, Node, Table, Value};
