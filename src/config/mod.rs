//! Pipeline files: reading, `extends` merging, and typed validation with spans.
//!
//! Where each key is read:
//! - `[pipeline]`: [`pipeline`] (this module's `pipeline.rs`)
//! - `[ingest]`: `src/stages/ingest/config.rs`
//! - `[eda]`: `src/stages/eda/config.rs`
//! - `[prepare]`: `src/stages/prepare/config.rs`
//! - `[model]`, `[train]`: `src/stages/train/config.rs`
//! - `[evaluate]`: `src/stages/evaluate/config.rs`

mod error;
mod pipeline;
mod reader;
mod source;
mod value;

pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, did_you_mean};
pub use pipeline::{Pipeline, discover_pipelines};
pub use reader::{Choice, TableReader};
pub use source::{Location, SourceFile};
pub use value::{Entry, Node, Table, Value};
