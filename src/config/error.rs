//! Configuration errors: a kind that says what is wrong, plus where, plus a hint.

use std::fmt;
use std::path::PathBuf;

use super::source::Location;

#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read pipeline file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the pipeline file is not UTF-8 text")]
    NotUtf8,
    #[error("invalid TOML: {message}")]
    Syntax { message: String },
    #[error("unknown key `{key}` in [{table}]")]
    UnknownKey { key: String, table: String },
    #[error("unknown table [{name}]")]
    UnknownTable { name: String },
    #[error("invalid pipeline name \"{name}\" (from {origin}): {why}")]
    BadName {
        name: String,
        origin: &'static str,
        why: &'static str,
    },
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("missing required key `{key}` in [{table}]")]
    MissingKey { key: String, table: String },
    #[error("invalid value for `{key}`: {message}")]
    InvalidValue { key: String, message: String },
    #[error("`extends` forms a cycle: {chain}")]
    ExtendsCycle { chain: String },
    #[error("stage [{stage}] needs [{needs}], which this pipeline does not have")]
    MissingUpstream { stage: String, needs: String },
    #[error("the pipeline has no stages: add at least an [ingest] table")]
    NoStages,
    #[error("pipelines {} and {} are both named `{name}`: reports and run records would collide", first.display(), second.display())]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// One error: what, where (when known) and a hint.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub at: Option<Location>,
    /// The lines under it, in order: (`help` or `note`, text). A help says
    /// what to do; a note, what else led to it (the `--set` overrides an
    /// error in a file follows from).
    pub footer: Vec<(&'static str, String)>,
}

impl ConfigError {
    pub fn new(kind: ConfigErrorKind, at: &Location) -> Self {
        ConfigError {
            kind,
            at: Some(at.clone()),
            footer: Vec::new(),
        }
    }

    pub fn without_location(kind: ConfigErrorKind) -> Self {
        ConfigError {
            kind,
            at: None,
            footer: Vec::new(),
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.footer.push(("help", help.into()));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.footer.push(("note", note.into()));
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(at) = &self.at {
            writeln!(f)?;
            at.render_snippet(f)?;
        }
        let gutter = self.at.as_ref().map_or(1, Location::gutter);
        for (label, text) in &self.footer {
            write!(f, "\n{:gutter$} = {label}: {text}", "")?;
        }
        Ok(())
    }
}

/// Every error found in a pipeline, reported together so a user fixes them in one go.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// How many errors are shown in full; the rest are counted.
pub const SHOWN_ERRORS: usize = 50;

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().take(SHOWN_ERRORS).enumerate() {
            if i > 0 {
                write!(f, "\n\nerror: ")?;
            }
            write!(f, "{error}")?;
        }
        if self.0.len() > SHOWN_ERRORS {
            write!(
                f,
                "\n\n… and {} more errors (the first {SHOWN_ERRORS} are shown)",
                self.0.len() - SHOWN_ERRORS
            )?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// The closest candidate to a misspelt name, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        // Case does not count: `AdamW` is close to `adamw`.
        .map(|c| (strsim::jaro_winkler(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_get_a_hint_and_strangers_do_not() {
        let keys = ["train", "test", "lookup", "on_bad_row"];
        assert_eq!(
            did_you_mean("tarin", keys).as_deref(),
            Some("did you mean `train`?")
        );
        assert_eq!(
            did_you_mean("on_bad_rows", keys).as_deref(),
            Some("did you mean `on_bad_row`?")
        );
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
