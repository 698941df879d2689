//! `--set TABLE.KEY=VALUE`: a key of the pipelines changed from the command line,
//! for a quick variant without a new file. The value is TOML (`2`, `1e-3`,
//! `true`, `[1, 2]`, `"text"`); a bare word that is not TOML is a string
//! (`--set model.arch=resnet18`). Each override is merged over every pipeline
//! that has its table, after `extends`, and its mistakes are reported like a
//! file's, pointing into the `--set` text.

use std::path::PathBuf;
use std::sync::Arc;

use super::error::{ConfigError, ConfigErrorKind};
use super::source::{Location, SourceFile};
use super::value::Table;

/// One `--set` argument, parsed.
#[derive(Debug, Clone)]
pub struct Override {
    /// The top-level table it changes (`train` in `train.epochs=2`).
    pub table: String,
    /// The argument as given, for messages.
    pub text: String,
    /// What it merges over a pipeline's tables.
    pub overlay: Table,
}

impl Override {
    pub fn parse(argument: &str) -> Result<Override, ConfigError> {
        let invalid = |message: String| {
            let file = Arc::new(SourceFile::new(PathBuf::from("--set"), argument.to_string()));
            ConfigError::new(
                ConfigErrorKind::InvalidValue {
                    key: "--set".to_string(),
                    message,
                },
                &Location::new(&file, Some(0..argument.len())),
            )
        };
        let Some((key, value)) = argument.split_once('=') else {
            return Err(invalid(format!(
                "`{argument}` has no `=`: write TABLE.KEY=VALUE, e.g. --set train.epochs=2"
            )));
        };
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(invalid(format!(
                "`{key}` names no key of a table: write TABLE.KEY=VALUE, e.g. --set train.epochs=2"
            )));
        }
        let table = parts[0].trim();
        if table == crate::sweep::SWEEP_TABLE || (table == "pipeline" && parts[1].trim() == "extends") {
            return Err(invalid(format!(
                "`{key}` cannot be set from the command line: it is read before overrides apply; edit the file"
            )));
        }
        let value = value.trim();
        if value.contains(['\n', '\r']) {
            return Err(invalid(
                "the value holds a line break: one key per --set".to_string(),
            ));
        }
        let as_toml = format!("{key} = {value}\n");
        let bare_word = value.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '/')
            && value.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c));
        let text = match toml_edit::Document::parse(as_toml.as_str()) {
            Ok(_) => as_toml,
            // A bare word is a string; anything else that is not TOML is a mistake.
            Err(_) if bare_word => format!("{key} = \"{value}\"\n"),
            Err(error) => {
                return Err(invalid(format!(
                    "`{value}` is not a TOML value ({}): quote strings, e.g. --set {key}='\"text\"'",
                    error.message().trim_end()
                )));
            }
        };
        let file = Arc::new(SourceFile::new(PathBuf::from("--set"), text));
        let document =
            toml_edit::Document::parse(file.text.as_str()).map_err(|e| invalid(e.message().to_string()))?;
        Ok(Override {
            table: table.to_string(),
            text: argument.to_string(),
            overlay: Table::from_document(&file, document.as_table()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Value;

    fn value_of(argument: &str) -> Value {
        let parsed = Override::parse(argument).unwrap();
        let Value::Table(table) = &parsed.overlay.get(&parsed.table).unwrap().node.value else {
            panic!("not a table")
        };
        table.entries.values().next().unwrap().node.value.clone()
    }

    #[test]
    fn values_are_typed_like_toml_and_bare_words_are_strings() {
        assert!(matches!(value_of("train.epochs=2"), Value::Integer(2)));
        assert!(matches!(value_of("train.lr = 3e-4"), Value::Float(v) if v == 3e-4));
        assert!(matches!(value_of("model.arch=resnet18"), Value::String(s) if s == "resnet18"));
        assert!(matches!(value_of("model.arch=\"lenet\""), Value::String(s) if s == "lenet"));
        assert!(matches!(value_of("train.seeds=[1, 2]"), Value::Array(a) if a.len() == 2));
        let nested = Override::parse("train.augment.hflip=true").unwrap();
        assert_eq!(nested.table, "train");
    }

    #[test]
    fn malformed_overrides_say_how_to_write_one() {
        for (argument, says) in [
            ("train.epochs", "has no `=`"),
            ("epochs=2", "names no key of a table"),
            ("train..epochs=2", "names no key of a table"),
            ("train.lr=[1,", "is not a TOML value"),
            ("train.seed=18446744073709551616", "is not a TOML value"),
            ("train.lr=1e-3\n[eda]\nsamples=3", "one key per --set"),
            (
                "pipeline.extends=other.toml",
                "cannot be set from the command line",
            ),
            ("sweep.\"train.lr\"=[1e-2]", "cannot be set from the command line"),
        ] {
            let error = Override::parse(argument).unwrap_err().to_string();
            assert!(error.contains(says), "{argument}: {error}");
        }
    }
}
