//! Loading pipeline files into a [`Graph`]: each file once however it is spelt,
//! with the pipelines its reports list, each before the report.

use std::path::{Path, PathBuf};

use super::DagError;
use super::graph::Graph;
use crate::config::{ConfigError, ConfigErrorKind, ConfigErrors, Override, did_you_mean};
use crate::pipeline::Pipeline;
use crate::stages::StageKind;

impl Graph {
    /// Loads the named pipelines, and the pipelines their reports list, into a
    /// graph. Every file's configuration errors are reported together.
    pub fn load(files: &[PathBuf]) -> Result<Graph, DagError> {
        Graph::load_with(files, &[])
    }

    /// [`Graph::load`] with `--set` overrides merged over every pipeline that
    /// has their table; one that no pipeline has is an error.
    pub fn load_with(files: &[PathBuf], overrides: &[Override]) -> Result<Graph, DagError> {
        let mut loader = Loader {
            overrides,
            applied: vec![false; overrides.len()],
            ..Loader::default()
        };
        for file in files {
            loader.load(file);
        }
        let Loader {
            pipelines,
            mut errors,
            applied,
            ..
        } = loader;
        if errors.is_empty() {
            for (change, _) in overrides.iter().zip(applied).filter(|(_, applied)| !applied) {
                errors.push(unapplied(change));
            }
        }
        for (i, pipeline) in pipelines.iter().enumerate() {
            if let Some(other) = pipelines[..i].iter().find(|p| p.name == pipeline.name) {
                let kind = ConfigErrorKind::DuplicateName {
                    name: pipeline.name.clone(),
                    first: other.file.clone(),
                    second: pipeline.file.clone(),
                };
                errors.push(
                    ConfigError::without_location(kind).with_help("set [pipeline] name in one of them"),
                );
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        Graph::new(pipelines)
    }
}

/// Loads pipeline files, each once however it is spelt, each after the
/// pipelines its stages list (a report's members; the graph refuses a report
/// of reports).
#[derive(Default)]
struct Loader<'a> {
    overrides: &'a [Override],
    applied: Vec<bool>,
    pipelines: Vec<Pipeline>,
    errors: Vec<ConfigError>,
    seen: Vec<PathBuf>,
}

/// An override whose table none of the pipelines has (a typo, most likely).
fn unapplied(change: &Override) -> ConfigError {
    let tables = std::iter::once("pipeline").chain(
        StageKind::all()
            .flat_map(|k| std::iter::once(k.name()).chain(k.def().also_configured_by.iter().copied())),
    );
    let hint = did_you_mean(&change.table, tables.filter(|t| *t != change.table));
    let kind = ConfigErrorKind::InvalidValue {
        key: "--set".to_string(),
        message: format!("none of the pipelines has [{}]", change.table),
    };
    let error = ConfigError::new(kind, &change.at);
    match hint {
        Some(hint) => error.with_help(hint),
        None => error,
    }
}

impl Loader<'_> {
    fn load(&mut self, file: &Path) {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        if self.seen.contains(&canonical) {
            return;
        }
        self.seen.push(canonical);
        match Pipeline::load_all(file, self.overrides, &mut self.applied) {
            Ok(pipelines) => {
                for pipeline in pipelines {
                    for stage in &pipeline.stages {
                        for (member, _) in stage.member_files() {
                            self.load(&member);
                        }
                    }
                    self.pipelines.push(pipeline);
                }
            }
            Err(ConfigErrors(found)) => self.errors.extend(found),
        }
    }
}
