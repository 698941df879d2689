//! A whole pipeline file: `[pipeline]` metadata, `extends`, and one table per stage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, ConfigErrorKind, ConfigErrors, did_you_mean};
use super::reader::TableReader;
use super::source::{Location, SourceFile};
use super::value::{Table, Value};
use crate::stages::StageKind;
use crate::stages::eda::EdaConfig;
use crate::stages::evaluate::EvaluateConfig;
use crate::stages::ingest::IngestConfig;
use crate::stages::prepare::PrepareConfig;
use crate::stages::train::{ModelConfig, TrainConfig};

/// A validated pipeline, with every stage's typed configuration.
#[derive(Debug)]
pub struct Pipeline {
    /// `[pipeline] name`, or the file's stem; names the report folder.
    pub name: String,
    pub description: Option<String>,
    /// The file named on the command line, absolute.
    pub file: PathBuf,
    /// That file and every file it extends, absolute: what `watch` would watch.
    pub sources: Vec<PathBuf>,
    pub ingest: Option<IngestConfig>,
    pub eda: Option<EdaConfig>,
    pub prepare: Option<PrepareConfig>,
    /// `[train]` with `[model]` folded in.
    pub train: Option<TrainConfig>,
    pub evaluate: Option<EvaluateConfig>,
}

impl Pipeline {
    /// Reads, merges and validates a pipeline file. Every error found is returned.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let file = absolute(path);
        let mut sources = Vec::new();
        let (table, top) = load_merged(&file, &mut sources)?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".to_string());
        let mut errors = Vec::new();
        let mut pipeline = Pipeline {
            name: stem,
            description: None,
            file,
            sources,
            ingest: None,
            eda: None,
            prepare: None,
            train: None,
            evaluate: None,
        };
        // [model] is part of [train]'s configuration: read it first.
        let model = match table.get("model") {
            Some(entry) => match &entry.node.value {
                Value::Table(model_table) => {
                    let mut reader = TableReader::new(model_table, "model", entry.key_at.clone());
                    let model = ModelConfig::read(&mut reader);
                    errors.extend(reader.finish());
                    if table.get("train").is_none() {
                        let kind = ConfigErrorKind::MissingUpstream {
                            stage: "model".to_string(),
                            needs: "train".to_string(),
                        };
                        errors.push(
                            ConfigError::new(kind, &entry.key_at)
                                .with_help("[model] describes what [train] trains"),
                        );
                    }
                    Some(model)
                }
                _ => None,
            },
            None => None,
        };
        let file_start = Location::new(&top, Some(0..0));
        for (key, entry) in &table.entries {
            let Value::Table(stage_table) = &entry.node.value else {
                let kind = ConfigErrorKind::WrongType {
                    key: key.clone(),
                    expected: "a table",
                    found: entry.node.value.type_name(),
                };
                errors.push(ConfigError::new(kind, &entry.key_at).with_help(format!("write it as [{key}]")));
                continue;
            };
            let mut reader = TableReader::new(stage_table, key.clone(), entry.key_at.clone());
            match key.as_str() {
                "pipeline" => pipeline.read_meta(&mut reader),
                "ingest" => pipeline.ingest = Some(IngestConfig::read(&mut reader)),
                "eda" => pipeline.eda = Some(EdaConfig::read(&mut reader)),
                "prepare" => pipeline.prepare = Some(PrepareConfig::read(&mut reader)),
                "evaluate" => pipeline.evaluate = Some(EvaluateConfig::read(&mut reader)),
                "model" => continue,
                "train" => match &model {
                    Some(model) => pipeline.train = Some(TrainConfig::read(&mut reader, model.clone())),
                    None => {
                        let kind = ConfigErrorKind::MissingUpstream {
                            stage: "train".to_string(),
                            needs: "model".to_string(),
                        };
                        errors.push(
                            ConfigError::new(kind, &entry.key_at)
                                .with_help("add [model] with `arch = \"lenet\"` (or another)"),
                        );
                        continue;
                    }
                },
                other => {
                    errors.push(unknown_table(other, &entry.key_at));
                    continue;
                }
            }
            errors.extend(reader.finish());
        }
        errors.extend(pipeline.check_data_flow(&table, &file_start));
        // Report in reading order: by file, then position.
        errors.sort_by_key(|e| e.at.as_ref().map(|at| (at.file.path.clone(), at.span.start)));
        if errors.is_empty() {
            Ok(pipeline)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Reads `[pipeline]`. `extends` was already followed by [`load_merged`].
    fn read_meta(&mut self, reader: &mut TableReader) {
        if let Some(name) = reader.string("name") {
            if is_valid_name(&name) {
                self.name = name;
            } else {
                reader.invalid(
                    "name",
                    format!("\"{name}\" may hold only letters, digits, '-', '_' and '.' (it names a folder)"),
                );
            }
        }
        self.description = reader.string("description");
        reader.string("extends");
    }

    /// The stages this pipeline runs, in data-flow order.
    pub fn stage_kinds(&self) -> Vec<StageKind> {
        StageKind::ALL
            .into_iter()
            .filter(|kind| match kind {
                StageKind::Ingest => self.ingest.is_some(),
                StageKind::Eda => self.eda.is_some(),
                StageKind::Prepare => self.prepare.is_some(),
                StageKind::Train => self.train.is_some(),
                StageKind::Evaluate => self.evaluate.is_some(),
            })
            .collect()
    }

    fn check_data_flow(&self, table: &Table, file_start: &Location) -> Vec<ConfigError> {
        let kinds = self.stage_kinds();
        if kinds.is_empty() {
            return vec![ConfigError::new(ConfigErrorKind::NoStages, file_start)];
        }
        let mut errors = Vec::new();
        for kind in &kinds {
            for needed in kind.upstream() {
                if !kinds.contains(needed) {
                    let at = table.get(kind.name()).map_or(file_start, |e| &e.key_at);
                    let error = ConfigErrorKind::MissingUpstream {
                        stage: kind.name().to_string(),
                        needs: needed.name().to_string(),
                    };
                    errors.push(ConfigError::new(error, at));
                }
            }
        }
        errors
    }
}

fn unknown_table(name: &str, at: &Location) -> ConfigError {
    if StageKind::PLANNED.contains(&name) {
        let kind = ConfigErrorKind::StageNotBuilt {
            name: name.to_string(),
        };
        let built = StageKind::ALL.map(|k| format!("[{}]", k.name())).join(", ");
        return ConfigError::new(kind, at).with_help(format!("stages available now: {built}"));
    }
    let known = std::iter::once("pipeline")
        .chain(StageKind::ALL.iter().map(|k| k.name()))
        .chain(StageKind::PLANNED.iter().copied());
    let error = ConfigError::new(
        ConfigErrorKind::UnknownTable {
            name: name.to_string(),
        },
        at,
    );
    match did_you_mean(name, known) {
        Some(hint) => error.with_help(hint),
        None => error,
    }
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn parse_file(path: &Path) -> Result<(Arc<SourceFile>, Table), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        ConfigError::without_location(ConfigErrorKind::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let file = Arc::new(SourceFile {
        path: path.to_path_buf(),
        text,
    });
    match toml_edit::Document::parse(file.text.as_str()) {
        Ok(doc) => {
            let table = Table::from_document(&file, doc.as_table());
            Ok((file, table))
        }
        Err(error) => {
            let at = Location::new(&file, error.span());
            let message = error.message().trim_end().to_string();
            Err(ConfigError::new(ConfigErrorKind::Syntax { message }, &at))
        }
    }
}

/// Parses `path` and, if it says `extends = "base.toml"`, merges it over its base
/// (recursively). The base's `[pipeline] name` is dropped: a name is never inherited.
/// Returns the merged table and the top file's source.
fn load_merged(path: &Path, chain: &mut Vec<PathBuf>) -> Result<(Table, Arc<SourceFile>), ConfigErrors> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let (file, mut table) = parse_file(path)?;
    if chain.contains(&canonical) {
        let names: Vec<String> = chain
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        let kind = ConfigErrorKind::ExtendsCycle {
            chain: names.join(" -> "),
        };
        return Err(ConfigError::new(kind, &Location::new(&file, None)).into());
    }
    chain.push(canonical);
    let extends = match table.get("pipeline").map(|e| &e.node.value) {
        Some(Value::Table(meta)) => meta.get("extends").cloned(),
        _ => None,
    };
    let Some(extends) = extends else {
        return Ok((table, file));
    };
    let Value::String(base_name) = &extends.node.value else {
        let kind = ConfigErrorKind::WrongType {
            key: "pipeline.extends".to_string(),
            expected: "a path (string)",
            found: extends.node.value.type_name(),
        };
        return Err(ConfigError::new(kind, &extends.node.at).into());
    };
    let base_path = extends.node.at.base_dir().join(base_name);
    if !base_path.is_file() {
        let kind = ConfigErrorKind::InvalidValue {
            key: "pipeline.extends".to_string(),
            message: format!("{} does not exist", base_path.display()),
        };
        return Err(ConfigError::new(kind, &extends.node.at).into());
    }
    let (mut base, _) = load_merged(&base_path, chain)?;
    if let Some(entry) = base.entries.get_mut("pipeline")
        && let Value::Table(meta) = &mut entry.node.value
    {
        meta.remove("name");
    }
    // The overlay's own `extends` is already followed; do not let the base's survive.
    if let Some(entry) = table.entries.get_mut("pipeline")
        && let Value::Table(meta) = &mut entry.node.value
    {
        meta.remove("extends");
    }
    base.merge(table);
    Ok((base, file))
}

/// Every `*.toml` directly under `dir`, sorted.
pub fn discover_pipelines(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn errors_of(path: &Path) -> Vec<String> {
        Pipeline::load(path)
            .expect_err("expected errors")
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn name_defaults_to_the_stem_and_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "exp.toml", "[ingest]\ntrain = \"data/t.csv\"\n");
        let pipeline = Pipeline::load(&path).unwrap();
        assert_eq!(pipeline.name, "exp");
        assert_eq!(pipeline.ingest.unwrap().train, dir.path().join("data/t.csv"));
    }

    #[test]
    fn extends_merges_deeply_and_never_inherits_the_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        write(
            &dir.path().join("base"),
            "b.toml",
            "[pipeline]\nname = \"base\"\n[ingest]\ntrain = \"t.csv\"\non_bad_row = \"skip\"\n",
        );
        let path = write(
            dir.path(),
            "v.toml",
            "[pipeline]\nextends = \"base/b.toml\"\n[ingest]\ncoordinate_tolerance = 2.0\n",
        );
        let pipeline = Pipeline::load(&path).unwrap();
        assert_eq!(pipeline.name, "v");
        let ingest = pipeline.ingest.unwrap();
        // Relative to the base file, which stated it.
        assert_eq!(ingest.train, dir.path().join("base/t.csv"));
        assert_eq!(ingest.coordinate_tolerance, 2.0);
        assert_eq!(ingest.on_bad_row.name(), "skip");
        assert_eq!(pipeline.sources.len(), 2);
    }

    #[test]
    fn extends_cycles_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "[pipeline]\nextends = \"b.toml\"\n");
        let b = write(dir.path(), "b.toml", "[pipeline]\nextends = \"a.toml\"\n");
        let errors = errors_of(&b);
        assert!(errors[0].contains("`extends` forms a cycle"), "{errors:?}");
    }

    #[test]
    fn unknown_and_unbuilt_tables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "p.toml",
            "[ingest]\ntrain = \"t.csv\"\n[ingset]\n[report]\n",
        );
        let errors = errors_of(&path);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("unknown table [ingset]"), "{errors:?}");
        assert!(errors[0].contains("did you mean `ingest`?"), "{errors:?}");
        assert!(
            errors[1].contains("stage [report] is not available"),
            "{errors:?}"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "p.toml", "[ingest]\ntrain = \n");
        let errors = errors_of(&path);
        assert!(errors[0].starts_with("invalid TOML"), "{errors:?}");
        assert!(errors[0].contains("p.toml:2:"), "{errors:?}");
    }

    #[test]
    fn an_empty_pipeline_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "p.toml", "[pipeline]\ndescription = \"nothing\"\n");
        assert!(errors_of(&path)[0].contains("no stages"));
    }
}
