//! Loading pipeline files into a [`Graph`]: each file once however it is spelt,
//! with the pipelines its reports list, each before the report.

use std::path::{Path, PathBuf};

use super::DagError;
use super::graph::Graph;
use crate::config::{ConfigError, ConfigErrorKind, ConfigErrors};
use crate::pipeline::Pipeline;

impl Graph {
    /// Loads the named pipelines, and the pipelines their reports list, into a
    /// graph. Every file's configuration errors are reported together.
    pub fn load(files: &[PathBuf]) -> Result<Graph, DagError> {
        let mut loader = Loader::default();
        for file in files {
            loader.load(file);
        }
        let Loader {
            pipelines,
            mut errors,
            ..
        } = loader;
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
struct Loader {
    pipelines: Vec<Pipeline>,
    errors: Vec<ConfigError>,
    seen: Vec<PathBuf>,
}

impl Loader {
    fn load(&mut self, file: &Path) {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        if self.seen.contains(&canonical) {
            return;
        }
        self.seen.push(canonical);
        match Pipeline::load(file) {
            Ok(pipeline) => {
                for stage in &pipeline.stages {
                    for (member, _) in stage.member_files() {
                        self.load(&member);
                    }
                }
                self.pipelines.push(pipeline);
            }
            Err(ConfigErrors(found)) => self.errors.extend(found),
        }
    }
}
