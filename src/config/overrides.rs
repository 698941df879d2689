//! `--set TABLE.KEY=VALUE`: a key of the pipelines changed from the command line,
//! for a quick variant without a new file. The value is TOML (`2`, `1e-3`,
//! `true`, `[1, 2]`, `"text"`); a bare word that is not TOML is a string
//! (`--set model.arch=resnet18`). Each override is merged over every pipeline
//! that has its table, after `extends`, and its mistakes are reported like a
//! file's, pointing into the `--set` text.

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
    /// Where the table is named in the argument, for an error about the
    /// override as a whole (no pipeline has its table).
    pub at: Location,
    /// What it merges over a pipeline's tables.
    pub overlay: Table,
}

/// What an override's errors quote before the argument: it reads like the command line.
const SHOWN_AS: &str = "--set ";

impl Override {
    pub fn parse(argument: &str) -> Result<Override, ConfigError> {
        // Every error quotes the argument as written, as a file's errors quote
        // its line; the TOML read below keeps the same byte offsets.
        let shown = Arc::new(SourceFile::command_line(format!("{SHOWN_AS}{argument}\n")));
        let at = |range: std::ops::Range<usize>| {
            Location::new(
                &shown,
                Some(SHOWN_AS.len() + range.start..SHOWN_AS.len() + range.end),
            )
        };
        let invalid = |message: String| {
            ConfigError::new(
                ConfigErrorKind::InvalidValue {
                    key: "--set".to_string(),
                    message,
                },
                &at(0..argument.len()),
            )
        };
        let Some((key, value)) = argument.split_once('=') else {
            return Err(invalid(
                "it has no `=`: write TABLE.KEY=VALUE, e.g. --set train.epochs=2".to_string(),
            ));
        };
        let key_text = key;
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
        let value_start = key_text.len() + 1 + (value.len() - value.trim_start().len());
        let value = value.trim();
        if value.contains(['\n', '\r']) {
            return Err(invalid(
                "the value holds a line break: one key per --set".to_string(),
            ));
        }
        let bare_word = value.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '/')
            && value.chars().all(|c| c.is_alphanumeric() || "-_./".contains(c));
        // The argument is TOML as it stands (`train.epochs=2`), or a bare word
        // is quoted in place; either way each byte keeps its offset, behind
        // spaces as wide as what the errors show in front of it.
        let pad = " ".repeat(SHOWN_AS.len());
        let text = match toml_edit::Document::parse(argument) {
            Ok(_) => format!("{pad}{argument}\n"),
            // A bare word is a string; anything else that is not TOML is a mistake.
            Err(_) if bare_word => format!(
                "{pad}{}\"{value}\"{}\n",
                &argument[..value_start],
                &argument[value_start + value.len()..]
            ),
            Err(error) => {
                let mut error = invalid(format!(
                    "`{value}` is not a TOML value ({}): quote strings, e.g. --set {key}='\"text\"'",
                    error.message().trim_end()
                ));
                error.at = Some(at(value_start..value_start + value.len()));
                return Err(error);
            }
        };
        let document =
            toml_edit::Document::parse(text.as_str()).map_err(|e| invalid(e.message().to_string()))?;
        let table_start = key_text.len() - key_text.trim_start().len();
        Ok(Override {
            table: table.to_string(),
            text: argument.to_string(),
            at: at(table_start..table_start + table.len()),
            overlay: Table::from_document(&shown, document.as_table()),
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
