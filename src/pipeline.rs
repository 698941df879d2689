//! A pipeline: a pipeline file read into its stages. `[pipeline]` (name,
//! description, extends) is read here; every other table belongs to a stage of the
//! registry ([`StageKind`]) and is read by that stage's module.

use std::path::{Path, PathBuf};

use crate::config::{
    ConfigError, ConfigErrorKind, ConfigErrors, Document, Entry, Location, Node, Override, TableReader,
    Value, did_you_mean,
};
use crate::stages::{Stage, StageKind, StageTables};
use crate::sweep::{self, SWEEP_TABLE, Variant};

/// Pipeline names become folder and file names: keep them short and plain.
const MAX_NAME_CHARS: usize = 100;

/// A validated pipeline: its stages, in data-flow order.
pub struct Pipeline {
    /// `[pipeline] name`, or the file's stem; names the report folder.
    pub name: String,
    pub description: Option<String>,
    /// The file named on the command line, absolute.
    pub file: PathBuf,
    /// That file and every file it extends, canonical.
    pub sources: Vec<PathBuf>,
    /// Its tables with `extends` merged, as TOML: what the pipeline means.
    pub toml: String,
    pub stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<StageKind> = self.stages.iter().map(|s| s.kind()).collect();
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("stages", &kinds)
            .finish()
    }
}

impl Pipeline {
    /// Reads, merges and validates a pipeline file (the first variant of a
    /// sweep: see [`Pipeline::load_all`]). Every error found is returned.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let mut pipelines = Pipeline::load_all(path, &[], &mut [])?;
        Ok(pipelines.swap_remove(0))
    }

    /// Reads a pipeline file into its pipelines: one, or one per variant of
    /// its `[sweep]`. `--set` overrides are merged over the tables each has
    /// (after `extends` and the sweep); `applied[i]` is set when override `i`
    /// was. Every error found is returned, each once.
    pub fn load_all(
        path: &Path,
        overrides: &[Override],
        applied: &mut [bool],
    ) -> Result<Vec<Pipeline>, ConfigErrors> {
        let mut doc = Document::load(path)?;
        let variants = match doc.table.remove(SWEEP_TABLE) {
            None => vec![Variant::default()],
            Some(Entry {
                node:
                    Node {
                        value: Value::Table(sweep),
                        ..
                    },
                key_at,
            }) => sweep::variants(&sweep, &key_at).map_err(ConfigErrors)?,
            Some(entry) => {
                let kind = ConfigErrorKind::WrongType {
                    key: SWEEP_TABLE.to_string(),
                    expected: "a table",
                    found: entry.node.value.type_name(),
                };
                return Err(ConfigErrors(vec![
                    ConfigError::new(kind, &entry.key_at).with_help("write it as [sweep]"),
                ]));
            }
        };
        let several = variants.len() > 1;
        let mut pipelines = Vec::new();
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut said = std::collections::HashSet::new();
        for variant in variants {
            let mut doc = doc.clone();
            doc.table.merge(variant.overlay);
            let without_overrides = (!overrides.is_empty()).then(|| doc.clone());
            let mut used = Vec::new();
            for (i, change) in overrides.iter().enumerate() {
                if doc.table.get(&change.table).is_some() {
                    doc.table.merge(change.overlay.clone());
                    used.push(change);
                    if let Some(flag) = applied.get_mut(i) {
                        *flag = true;
                    }
                }
            }
            let result = Pipeline::from_document(doc, &variant.suffix)
                .map_err(|found| blame_overrides(found, &used, without_overrides, &variant.suffix));
            match result {
                Ok(pipeline) => pipelines.push(pipeline),
                Err(ConfigErrors(found)) if !several => errors.extend(found),
                // A mistake in a swept value shows in every variant holding it: once is enough.
                Err(ConfigErrors(found)) => {
                    errors.extend(found.into_iter().filter(|error| said.insert(error.to_string())));
                }
            }
        }
        match errors.is_empty() {
            true => Ok(pipelines),
            false => Err(ConfigErrors(errors)),
        }
    }

    /// Validates a merged document into a pipeline whose name ends in `suffix`
    /// (a sweep variant's).
    fn from_document(doc: Document, suffix: &str) -> Result<Pipeline, ConfigErrors> {
        let file_start = Location::new(&doc.top, Some(0..0));
        let mut errors = Vec::new();
        let mut meta = Meta::default();

        for (key, entry) in &doc.table.entries {
            if !matches!(entry.node.value, Value::Table(_)) {
                let kind = ConfigErrorKind::WrongType {
                    key: key.clone(),
                    expected: "a table",
                    found: entry.node.value.type_name(),
                };
                errors.push(ConfigError::new(kind, &entry.key_at).with_help(format!("write it as [{key}]")));
            } else if key == "pipeline" {
                let Value::Table(table) = &entry.node.value else {
                    unreachable!("checked above")
                };
                let mut reader = TableReader::new(table, "pipeline", entry.key_at.clone());
                meta.read(&mut reader);
                errors.extend(reader.finish());
            } else if owner_of(key).is_none() {
                errors.push(unknown_table(key, &entry.key_at));
            }
        }

        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        for kind in StageKind::all() {
            let def = kind.def();
            let Some((main, main_at)) = table_reader(&doc, def.name) else {
                for other in def.also_configured_by {
                    if let Some(entry) = doc.table.get(other) {
                        let error = ConfigErrorKind::MissingUpstream {
                            stage: (*other).to_string(),
                            needs: def.name.to_string(),
                        };
                        errors.push(
                            ConfigError::new(error, &entry.key_at)
                                .with_help(format!("[{other}] is part of [{}]'s configuration", def.name)),
                        );
                    }
                }
                continue;
            };
            let also = def
                .also_configured_by
                .iter()
                .map(|name| table_reader(&doc, name).map(|(reader, _)| reader))
                .collect();
            let mut tables = StageTables { main, also };
            let built = (def.read)(&mut tables);
            errors.extend(tables.main.finish());
            for reader in tables.also.into_iter().flatten() {
                errors.extend(reader.finish());
            }
            // A stage reading other pipelines finds its upstream there (checked by the graph).
            let own_upstream = if def.reads_members {
                Vec::new()
            } else {
                kind.required_upstream()
            };
            for needed in own_upstream {
                if doc.table.get(needed.name()).is_none() {
                    let error = ConfigErrorKind::MissingUpstream {
                        stage: kind.name().to_string(),
                        needs: needed.name().to_string(),
                    };
                    errors.push(ConfigError::new(error, &main_at));
                }
            }
            stages.extend(built);
        }
        if stages.is_empty() && errors.is_empty() {
            errors.push(ConfigError::new(ConfigErrorKind::NoStages, &file_start));
        }

        let (from_name, from_file) = match suffix.is_empty() {
            true => ("[pipeline] name", "the file name"),
            false => (
                "[pipeline] name and the [sweep] values",
                "the file name and the [sweep] values",
            ),
        };
        let name = match meta.name {
            Some((name, at)) => check_name(name + suffix, from_name, &at, &mut errors),
            None => {
                let stem = doc
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                check_name(stem + suffix, from_file, &file_start, &mut errors)
            }
        };
        // Report in reading order: by file, then position.
        errors.sort_by(|a, b| {
            let place = |e: &ConfigError| e.at.as_ref().map(|at| (at.file.path.clone(), at.span.start));
            place(a).cmp(&place(b))
        });
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Pipeline {
            name,
            description: meta.description,
            toml: doc.table.to_toml(),
            file: doc.file,
            sources: doc.sources,
            stages,
        })
    }

    /// The pipeline's stage of `kind` (its first instance), if it has one.
    pub fn stage(&self, kind: StageKind) -> Option<&dyn Stage> {
        self.stages.iter().find(|s| s.kind() == kind).map(|s| s.as_ref())
    }
}

/// `[pipeline]`. `extends` was already followed by [`Document::load`].
#[derive(Default)]
struct Meta {
    name: Option<(String, Location)>,
    description: Option<String>,
}

impl Meta {
    fn read(&mut self, reader: &mut TableReader) {
        self.name = reader.string("name").map(|name| (name, reader.location("name")));
        self.description = reader.string("description");
        reader.string("extends");
    }
}

/// The stage kind a top-level table belongs to.
fn owner_of(table: &str) -> Option<StageKind> {
    StageKind::all().find(|kind| {
        let def = kind.def();
        def.name == table || def.also_configured_by.contains(&table)
    })
}

fn table_reader<'a>(doc: &'a Document, name: &str) -> Option<(TableReader<'a>, Location)> {
    let entry = doc.table.get(name)?;
    match &entry.node.value {
        Value::Table(table) => Some((
            TableReader::new(table, name.to_string(), entry.key_at.clone()),
            entry.key_at.clone(),
        )),
        _ => None,
    }
}

/// The name if it is usable as a folder name; otherwise an error, and the name
/// is replaced so that loading can go on collecting errors.
/// Notes, on each error in a file that only the `--set` overrides brought
/// about (`warmup_epochs` no longer below an overridden `epochs`), which
/// overrides those were: the file's line alone would not explain it. Errors in
/// an override quote it already.
fn blame_overrides(
    found: ConfigErrors,
    used: &[&Override],
    without_overrides: Option<Document>,
    suffix: &str,
) -> ConfigErrors {
    let Some(without_overrides) = without_overrides.filter(|_| !used.is_empty()) else {
        return found;
    };
    let own: std::collections::HashSet<String> = match Pipeline::from_document(without_overrides, suffix) {
        Ok(_) => Default::default(),
        Err(ConfigErrors(own)) => own.iter().map(ToString::to_string).collect(),
    };
    let sets: Vec<String> = used.iter().map(|o| format!("`--set {}`", o.text)).collect();
    let note = format!("with {}", sets.join(" and "));
    ConfigErrors(
        found
            .0
            .into_iter()
            .map(|mut error| {
                let in_a_file = error.at.as_ref().is_some_and(|at| !at.file.command_line);
                if in_a_file && !own.contains(&error.to_string()) {
                    error = error.with_note(note.clone());
                }
                error
            })
            .collect(),
    )
}

fn check_name(name: String, origin: &'static str, at: &Location, errors: &mut Vec<ConfigError>) -> String {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some("it is longer than 100 characters")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("it may hold only letters, digits, '-', '_' and '.' (it names a folder)")
    } else {
        None
    };
    match why {
        None => name,
        Some(why) => {
            let kind = ConfigErrorKind::BadName {
                name: crate::text::excerpt(&name),
                origin,
                why,
            };
            let help = "set `name = \"...\"` in [pipeline]";
            errors.push(ConfigError::new(kind, at).with_help(help));
            String::new()
        }
    }
}

fn unknown_table(name: &str, at: &Location) -> ConfigError {
    let known: Vec<&str> = std::iter::once("pipeline")
        .chain(StageKind::all().flat_map(|k| {
            let def = k.def();
            std::iter::once(def.name).chain(def.also_configured_by.iter().copied())
        }))
        .collect();
    let error = ConfigError::new(
        ConfigErrorKind::UnknownTable {
            name: crate::text::excerpt(name),
        },
        at,
    );
    match did_you_mean(name, known) {
        Some(hint) => error.with_help(hint),
        None => error,
    }
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

    fn kinds(pipeline: &Pipeline) -> Vec<StageKind> {
        pipeline.stages.iter().map(|s| s.kind()).collect()
    }

    #[test]
    fn name_defaults_to_the_stem() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "exp.toml", "[ingest]\ntrain = \"data/t.csv\"\n");
        let pipeline = Pipeline::load(&path).unwrap();
        assert_eq!(pipeline.name, "exp");
        assert_eq!(kinds(&pipeline), [StageKind::Ingest]);
        let inputs = pipeline.stages[0].file_inputs();
        assert_eq!(inputs[0].path, dir.path().join("data/t.csv"));
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
        let ingest = pipeline.stage(StageKind::Ingest).unwrap();
        // Relative to the base file, which stated it.
        assert_eq!(ingest.file_inputs()[0].path, dir.path().join("base/t.csv"));
        assert_eq!(ingest.config()["coordinate_tolerance"], 2.0);
        assert_eq!(ingest.config()["on_bad_row"], "skip");
        assert_eq!(pipeline.sources.len(), 2);
    }

    #[test]
    fn unknown_tables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "p.toml", "[ingest]\ntrain = \"t.csv\"\n[ingset]\n");
        let errors = errors_of(&path);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("unknown table [ingset]"), "{errors:?}");
        assert!(errors[0].contains("did you mean `ingest`?"), "{errors:?}");
    }

    #[test]
    fn a_file_may_be_only_a_report_and_its_pipelines_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "[ingest]\ntrain = \"t.csv\"\n");
        let path = write(
            dir.path(),
            "r.toml",
            "[report]\npipelines = [\"a.toml\"]\nsort_by = \"pck5\"\n",
        );
        let pipeline = Pipeline::load(&path).unwrap();
        assert_eq!(kinds(&pipeline), [StageKind::Report]);
        let path = write(
            dir.path(),
            "s.toml",
            "[report]\npipelines = [\"a.toml\",\n  \"gone.toml\", \"a.toml\"]\n",
        );
        let errors = errors_of(&path);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("s.toml:3:3"), "{errors:?}");
        assert!(
            errors[0].contains("cannot read") && errors[0].contains("gone.toml"),
            "{errors:?}"
        );
        assert!(errors[1].contains("listed twice"), "{errors:?}");
    }

    #[test]
    fn every_stage_needs_its_upstream_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "p.toml",
            "[ingest]\ntrain = \"t.csv\"\n[prepare]\n[evaluate]\n",
        );
        let errors = errors_of(&path);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("stage [evaluate] needs [train]"), "{errors:?}");
        let path = write(
            dir.path(),
            "q.toml",
            "[ingest]\ntrain = \"t.csv\"\n[model]\narch = \"lenet\"\n",
        );
        let errors = errors_of(&path);
        assert!(errors[0].contains("stage [model] needs [train]"), "{errors:?}");
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

    #[test]
    fn names_from_files_are_checked_like_names_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "...toml", "[ingest]\ntrain = \"t.csv\"\n");
        let errors = errors_of(&path);
        assert!(errors[0].contains("from the file name"), "{errors:?}");
        let long = format!("{}.toml", "n".repeat(150));
        let path = write(dir.path(), &long, "[ingest]\ntrain = \"t.csv\"\n");
        assert!(errors_of(&path)[0].contains("longer than 100"));
        let path = write(
            dir.path(),
            "ok.toml",
            "[pipeline]\nname = \"a\\nb\"\n[ingest]\ntrain = \"t.csv\"\n",
        );
        let errors = errors_of(&path);
        assert!(errors[0].contains("from [pipeline] name"), "{errors:?}");
        assert!(errors[0].contains("ok.toml:2:8"), "{errors:?}");
    }

    #[test]
    fn thousands_of_errors_are_reported_quickly_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("[ingest]\ntrain = \"t.csv\"\n");
        for i in 0..40_000 {
            text.push_str(&format!("unknown_{i} = 1\n"));
        }
        let path = write(dir.path(), "p.toml", &text);
        let started = std::time::Instant::now();
        let errors = Pipeline::load(&path).unwrap_err();
        let shown = errors.to_string();
        assert!(started.elapsed().as_secs_f64() < 5.0, "{:?}", started.elapsed());
        assert_eq!(errors.0.len(), 40_000);
        assert!(shown.ends_with("… and 39950 more errors (the first 50 are shown)"));
        assert!(shown.len() < 100_000, "{} bytes", shown.len());
    }
}
