//! Typed access to one table of a pipeline. Every stage reads its keys through a
//! [`TableReader`], which records which keys exist, so anything else in the table is
//! reported as unknown, with a "did you mean" hint. Errors are collected, not
//! returned one at a time, so a user sees every mistake in one run.

use std::path::PathBuf;

use super::error::{ConfigError, ConfigErrorKind, did_you_mean};
use super::source::Location;
use super::value::{Node, Table, Value};
use crate::text::excerpt;

/// A closed set of string values for one key (`on_bad_row = "error" | "skip"`).
pub trait Choice: Sized + Copy {
    const NAMES: &'static [&'static str];
    fn from_index(index: usize) -> Self;
}

/// Declares an enum whose variants are read from and written to TOML by name.
#[macro_export]
macro_rules! config_choice {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }
        impl $crate::config::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_index(index: usize) -> Self {
                [$($name::$variant),+][index]
            }
        }
        impl $name {
            /// The name as written in TOML. (Not every choice needs it shown.)
            #[allow(dead_code)]
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

pub struct TableReader<'a> {
    table: &'a Table,
    /// Dotted name used in messages: `ingest`, `train.augment`.
    path: String,
    at: Location,
    known: Vec<&'static str>,
    errors: Vec<ConfigError>,
}

impl<'a> TableReader<'a> {
    pub fn new(table: &'a Table, path: impl Into<String>, at: Location) -> Self {
        TableReader {
            table,
            path: path.into(),
            at,
            known: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The table itself, for readers of nested structures ([`crate::models::graph::read`]).
    pub fn raw(&self) -> &'a Table {
        self.table
    }

    /// Adds errors found by such a reader.
    pub fn report(&mut self, errors: Vec<ConfigError>) {
        self.errors.extend(errors);
    }

    /// Errors found so far.
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    fn know(&mut self, key: &'static str) {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Node> {
        self.know(key);
        self.table.get(key).map(|entry| &entry.node)
    }

    fn dotted(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn wrong_type(&mut self, key: &str, node: &Node, expected: &'static str) {
        let kind = ConfigErrorKind::WrongType {
            key: self.dotted(key),
            expected,
            found: node.value.type_name(),
        };
        self.errors.push(ConfigError::new(kind, &node.at));
    }

    /// Where `key` is written, or the table's header when it is not: for errors
    /// that only running the stage can find.
    pub fn location(&self, key: &str) -> Location {
        self.table
            .get(key)
            .map_or_else(|| self.at.clone(), |e| e.node.at.clone())
    }

    /// Whether the table states `key` (rather than leaving its default). The key
    /// counts as one this table takes, for the "unknown key" hints.
    pub fn states(&mut self, key: &'static str) -> bool {
        self.know(key);
        self.table.get(key).is_some()
    }

    /// Reports `key`, when the table states it, as one that does not apply here
    /// (a key of another `kind`, say), with `why`.
    pub fn not_here(&mut self, key: &'static str, why: impl Into<String>) {
        if self.states(key) {
            self.invalid(key, why);
        }
    }

    /// Reports a value that has the right type but is not acceptable.
    pub fn invalid(&mut self, key: &'static str, message: impl Into<String>) {
        let at = self
            .table
            .get(key)
            .map_or_else(|| self.at.clone(), |e| e.node.at.clone());
        let kind = ConfigErrorKind::InvalidValue {
            key: self.dotted(key),
            message: message.into(),
        };
        self.errors.push(ConfigError::new(kind, &at));
    }

    /// Reports that this table needs another top-level table the pipeline lacks.
    pub fn needs_table(&mut self, table: &str, help: impl Into<String>) {
        let kind = ConfigErrorKind::MissingUpstream {
            stage: self.path.clone(),
            needs: table.to_string(),
        };
        self.errors.push(ConfigError::new(kind, &self.at).with_help(help));
    }

    pub fn missing(&mut self, key: &'static str) {
        let kind = ConfigErrorKind::MissingKey {
            key: key.to_string(),
            table: self.path.clone(),
        };
        let error =
            ConfigError::new(kind, &self.at).with_help(format!("add `{key} = ...` to [{}]", self.path));
        self.errors.push(error);
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let node = self.get(key)?;
        match &node.value {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(key, node, "a string");
                None
            }
        }
    }

    /// A path, resolved against the directory of the file that wrote it.
    pub fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        let node = self.get(key)?;
        match &node.value {
            Value::String(s) if s.is_empty() => {
                self.invalid(key, "the path is empty");
                None
            }
            Value::String(s) => Some(node.at.base_dir().join(s)),
            _ => {
                self.wrong_type(key, node, "a path (string)");
                None
            }
        }
    }

    /// An array of paths, each resolved against the directory of the file that
    /// wrote it, with where each is written (for errors only running can find).
    pub fn path_list(&mut self, key: &'static str) -> Vec<(PathBuf, Location)> {
        let Some(node) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = &node.value else {
            self.wrong_type(key, node, "an array of paths (strings)");
            return Vec::new();
        };
        let mut paths = Vec::new();
        for item in items {
            match &item.value {
                Value::String(s) if !s.is_empty() => {
                    paths.push((item.at.base_dir().join(s), item.at.clone()))
                }
                Value::String(_) => {
                    let kind = ConfigErrorKind::InvalidValue {
                        key: self.dotted(key),
                        message: "a path is empty".to_string(),
                    };
                    self.errors.push(ConfigError::new(kind, &item.at));
                }
                _ => self.wrong_type(key, item, "an array of paths (strings)"),
            }
        }
        paths
    }

    /// An array of distinct non-negative integers (`seeds = [1, 2, 3]`), each
    /// mistake reported where the item is written.
    pub fn u64_list(&mut self, key: &'static str) -> Vec<u64> {
        let Some(node) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = &node.value else {
            self.wrong_type(key, node, "an array of non-negative integers");
            return Vec::new();
        };
        let mut values = Vec::new();
        for item in items {
            match item.value {
                Value::Integer(i) if i >= 0 && values.contains(&(i as u64)) => {
                    self.invalid_at(key, &item.at, format!("{i} is listed twice"));
                }
                Value::Integer(i) if i >= 0 => values.push(i as u64),
                Value::Integer(i) => self.invalid_at(key, &item.at, format!("{i} is negative")),
                _ => self.wrong_type(key, item, "an array of non-negative integers"),
            }
        }
        values
    }

    /// An array of non-empty strings (`sbatch_args = ["--qos=low"]`), each
    /// mistake reported where the item is written.
    pub fn string_list(&mut self, key: &'static str) -> Vec<String> {
        let Some(node) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = &node.value else {
            self.wrong_type(key, node, "an array of strings");
            return Vec::new();
        };
        let mut values = Vec::new();
        for item in items {
            match &item.value {
                Value::String(s) if s.is_empty() => self.invalid_at(key, &item.at, "an item is empty"),
                Value::String(s) => values.push(s.clone()),
                _ => self.wrong_type(key, item, "an array of strings"),
            }
        }
        values
    }

    /// Reports an unacceptable value at `at` (an item of an array).
    pub fn invalid_at(&mut self, key: &'static str, at: &Location, message: impl Into<String>) {
        let kind = ConfigErrorKind::InvalidValue {
            key: self.dotted(key),
            message: message.into(),
        };
        self.errors.push(ConfigError::new(kind, at));
    }

    pub fn required_path(&mut self, key: &'static str) -> Option<PathBuf> {
        let known_before = self.table.get(key).is_some();
        let path = self.path(key);
        if !known_before {
            self.missing(key);
        }
        path
    }

    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        let Some(node) = self.get(key) else {
            return default;
        };
        match node.value {
            Value::Boolean(b) => b,
            _ => {
                self.wrong_type(key, node, "a boolean");
                default
            }
        }
    }

    /// A number; integers are accepted where a float is expected.
    pub fn f64(&mut self, key: &'static str, default: f64) -> f64 {
        let Some(node) = self.get(key) else {
            return default;
        };
        match node.value {
            // `+ 0.0` turns -0.0 into 0.0: the same value, one cache key.
            Value::Float(x) if x.is_finite() => x + 0.0,
            Value::Integer(i) => i as f64,
            Value::Float(_) => {
                self.invalid(key, "must be a finite number");
                default
            }
            _ => {
                self.wrong_type(key, node, "a number");
                default
            }
        }
    }

    /// A number that must lie in `range` (inclusive bounds).
    pub fn f64_in(&mut self, key: &'static str, default: f64, range: std::ops::RangeInclusive<f64>) -> f64 {
        let value = self.f64(key, default);
        if !range.contains(&value) {
            self.invalid(
                key,
                format!("{value} is outside {} ..= {}", range.start(), range.end()),
            );
            return default;
        }
        value
    }

    pub fn u64(&mut self, key: &'static str, default: u64) -> u64 {
        let Some(node) = self.get(key) else {
            return default;
        };
        match node.value {
            Value::Integer(i) if i >= 0 => i as u64,
            Value::Integer(i) => {
                self.invalid(key, format!("{i} is negative"));
                default
            }
            _ => {
                self.wrong_type(key, node, "a non-negative integer");
                default
            }
        }
    }

    /// A non-negative integer that must lie in `range` (inclusive bounds).
    pub fn usize_in(
        &mut self,
        key: &'static str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> usize {
        let value = self.u64(key, default as u64);
        match usize::try_from(value) {
            Ok(value) if range.contains(&value) => value,
            _ => {
                self.invalid(
                    key,
                    format!("{value} is outside {}..={}", range.start(), range.end()),
                );
                default
            }
        }
    }

    pub fn choice<T: Choice>(&mut self, key: &'static str, default: T) -> T {
        let Some(node) = self.get(key) else {
            return default;
        };
        let Value::String(text) = &node.value else {
            self.wrong_type(key, node, "a string");
            return default;
        };
        match T::NAMES.iter().position(|n| n == text) {
            Some(index) => T::from_index(index),
            None => {
                self.not_a_choice::<T>(key, text, node);
                default
            }
        }
    }

    fn not_a_choice<T: Choice>(&mut self, key: &str, text: &str, node: &Node) {
        let valid = T::NAMES
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut error = ConfigError::new(
            ConfigErrorKind::InvalidValue {
                key: self.dotted(key),
                message: format!("\"{}\" is not one of {valid}", excerpt(text)),
            },
            &node.at,
        );
        if let Some(hint) = did_you_mean(text, T::NAMES.iter().copied()) {
            error = error.with_help(hint);
        }
        self.errors.push(error);
    }

    /// An array of choices (`plots = ["boxplot", "samples"]`), duplicates removed.
    pub fn choice_list<T: Choice + PartialEq>(&mut self, key: &'static str, default: &[T]) -> Vec<T> {
        let Some(node) = self.get(key) else {
            return default.to_vec();
        };
        let Value::Array(items) = &node.value else {
            self.wrong_type(key, node, "an array of strings");
            return default.to_vec();
        };
        let mut chosen = Vec::new();
        for item in items {
            let Value::String(text) = &item.value else {
                self.wrong_type(key, item, "an array of strings");
                continue;
            };
            match T::NAMES.iter().position(|n| n == text) {
                Some(index) if !chosen.contains(&T::from_index(index)) => chosen.push(T::from_index(index)),
                Some(_) => {}
                None => self.not_a_choice::<T>(key, text, item),
            }
        }
        chosen
    }

    /// A nested table (`[train.schedule]`), read by its own reader whose errors
    /// the caller hands back with [`TableReader::absorb`].
    pub fn table(&mut self, key: &'static str) -> Option<TableReader<'a>> {
        let node = self.get(key)?;
        match &node.value {
            Value::Table(table) => Some(TableReader::new(table, self.dotted(key), node.at.clone())),
            _ => {
                self.wrong_type(key, node, "a table");
                None
            }
        }
    }

    /// Takes over the errors of a nested table's reader.
    pub fn absorb(&mut self, nested: TableReader) {
        self.errors.extend(nested.finish());
    }

    /// Ends reading: any key not asked for is unknown. Returns every error found.
    pub fn finish(mut self) -> Vec<ConfigError> {
        for (key, entry) in &self.table.entries {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let kind = ConfigErrorKind::UnknownKey {
                key: excerpt(key),
                table: self.path.clone(),
            };
            let mut error = ConfigError::new(kind, &entry.key_at);
            let hint = did_you_mean(key, self.known.iter().copied())
                .unwrap_or_else(|| format!("[{}] takes: {}", self.path, self.known.join(", ")));
            error = error.with_help(hint);
            self.errors.push(error);
        }
        self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::SourceFile;
    use std::sync::Arc;

    crate::config_choice! {
        enum Colour { Red = "red", Green = "green" }
    }

    fn with_table<R>(text: &str, f: impl FnOnce(TableReader) -> R) -> R {
        let file = Arc::new(SourceFile::new(PathBuf::from("/p/x.toml"), text.to_string()));
        let doc = toml_edit::Document::parse(text.to_string()).unwrap();
        let table = Table::from_document(&file, doc.as_table());
        let at = Location::new(&file, None);
        f(TableReader::new(&table, "s", at))
    }

    #[test]
    fn reads_typed_values_with_defaults() {
        with_table(
            "a = 1\nb = 0.5\nc = true\nd = \"green\"\np = \"data/f.csv\"\n",
            |mut r| {
                assert_eq!(r.f64("a", 0.0), 1.0);
                assert_eq!(r.f64("b", 0.0), 0.5);
                assert!(r.bool("c", false));
                assert_eq!(r.choice("d", Colour::Red).name(), "green");
                assert_eq!(r.path("p"), Some(PathBuf::from("/p/data/f.csv")));
                assert_eq!(r.u64("absent", 7), 7);
                assert!(r.finish().is_empty());
            },
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_bad_choices_are_all_reported() {
        let errors = with_table("a = \"x\"\nd = \"gren\"\nzzz = 1\n", |mut r| {
            r.f64("a", 0.0);
            r.choice("d", Colour::Red);
            r.finish()
        });
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(messages[0].starts_with("`s.a` must be a number, found string"));
        assert!(messages[0].contains("/p/x.toml:1:5"));
        assert!(messages[1].contains("\"gren\" is not one of \"red\", \"green\""));
        assert!(messages[1].contains("did you mean `green`?"));
        assert!(messages[2].starts_with("unknown key `zzz` in [s]"));
        assert!(messages[2].contains("/p/x.toml:3:1"));
    }

    #[test]
    fn missing_required_path_is_an_error() {
        let errors = with_table("", |mut r| {
            assert_eq!(r.required_path("train"), None);
            r.finish()
        });
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("missing required key `train` in [s]")
        );
    }
}
