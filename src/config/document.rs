//! A pipeline file as a document: parsed with spans, its `extends` chain followed
//! and merged. What the tables mean is up to the pipeline and its stages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, ConfigErrorKind, ConfigErrors};
use super::source::{Location, SourceFile};
use super::value::{Table, Value};

/// Pipeline files larger than this are refused rather than read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Dotted keys this deep make toml_edit give up without saying where.
const DEEP_KEY_DOTS: usize = 100;

/// A pipeline file with everything it extends merged in.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file named on the command line, absolute.
    pub file: PathBuf,
    /// That file and every file it extends, canonical: what `watch` would watch.
    pub sources: Vec<PathBuf>,
    /// The merged tables.
    pub table: Table,
    /// The named file's text, for errors about the file as a whole.
    pub top: Arc<SourceFile>,
}

impl Document {
    /// Reads `path` and, if it says `extends = "base.toml"`, merges it over its base
    /// (recursively). The base's `[pipeline] name` is dropped: a name is never
    /// inherited.
    pub fn load(path: &Path) -> Result<Document, ConfigErrors> {
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut sources = Vec::new();
        let (table, top) = load_merged(&file, &mut sources, None)?;
        Ok(Document {
            file,
            sources,
            table,
            top,
        })
    }
}

fn read_error(path: &Path, message: String) -> ConfigError {
    ConfigError::without_location(ConfigErrorKind::Read {
        path: path.to_path_buf(),
        message,
    })
}

fn parse_file(path: &Path) -> Result<(Arc<SourceFile>, Table), ConfigError> {
    // Checked first: reading a FIFO or /dev/zero would never end.
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(read_error(path, "it is not a regular file".to_string()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(read_error(
            path,
            format!("{} bytes is too large for a pipeline file", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e.to_string()))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(error.as_bytes()).into_owned();
            let file = Arc::new(SourceFile::new(path.to_path_buf(), lossy));
            let at = Location::new(&file, Some(valid..valid + 1));
            return Err(ConfigError::new(ConfigErrorKind::NotUtf8, &at));
        }
    };
    // A byte-order mark (Windows editors write one) is no part of the TOML.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    let file = Arc::new(SourceFile::new(path.to_path_buf(), text));
    match toml_edit::Document::parse(file.text.as_str()) {
        Ok(doc) => {
            let table = Table::from_document(&file, doc.as_table());
            Ok((file, table))
        }
        Err(error) => {
            let span = error.span().or_else(|| deepest_dotted_key(&file.text));
            let at = Location::new(&file, span);
            let message = error.message().trim_end().to_string();
            Err(ConfigError::new(ConfigErrorKind::Syntax { message }, &at))
        }
    }
}

/// The line holding a dotted key deep enough to hit the parser's recursion limit,
/// which toml_edit reports without a position.
fn deepest_dotted_key(text: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut deepest: Option<(usize, std::ops::Range<usize>)> = None;
    for line in text.split_inclusive('\n') {
        let key = line.split('=').next().unwrap_or(line);
        let dots = key.matches('.').count();
        if dots >= DEEP_KEY_DOTS && deepest.as_ref().is_none_or(|(most, _)| dots > *most) {
            let trimmed = line.trim_end().len();
            deepest = Some((dots, offset..offset + trimmed));
        }
        offset += line.len();
    }
    deepest.map(|(_, span)| span)
}

/// Parses `path` and merges it over what it extends. `via` is the `extends` value
/// that led here, where a cycle is reported. Returns the merged table and the
/// file's source.
fn load_merged(
    path: &Path,
    chain: &mut Vec<PathBuf>,
    via: Option<&Location>,
) -> Result<(Table, Arc<SourceFile>), ConfigErrors> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        let names: Vec<String> = chain
            .iter()
            .chain(std::iter::once(&canonical))
            .map(|p| p.display().to_string())
            .collect();
        let kind = ConfigErrorKind::ExtendsCycle {
            chain: names.join(" -> "),
        };
        let error = match via {
            Some(at) => ConfigError::new(kind, at),
            None => ConfigError::without_location(kind),
        };
        return Err(error.into());
    }
    let (file, mut table) = parse_file(path).map_err(|error| match via {
        // A base that cannot be read is reported where it is named.
        Some(at) if error.at.is_none() => ConfigError::new(error.kind, at),
        _ => error,
    })?;
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
    let (mut base, _) = load_merged(&base_path, chain, Some(&extends.node.at))?;
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

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error_of(path: &Path) -> String {
        Document::load(path).expect_err("expected an error").to_string()
    }

    #[test]
    fn extends_cycles_point_at_the_extends_that_closes_them() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", b"# a\n[pipeline]\nextends = \"b.toml\"\n");
        let b = write(dir.path(), "b.toml", b"[pipeline]\nextends = \"a.toml\"\n");
        let error = error_of(&b);
        assert!(error.contains("`extends` forms a cycle"), "{error}");
        assert!(error.contains("a.toml:3:11"), "{error}");
    }

    #[test]
    fn a_missing_base_is_reported_where_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.toml", b"[pipeline]\nextends = \"nope.toml\"\n");
        let error = error_of(&p);
        assert!(error.contains("nope.toml"), "{error}");
        assert!(error.contains("p.toml:2:11"), "{error}");
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.toml", b"[ingest]\ntrain = \"a\xff.csv\"\n");
        let error = error_of(&p);
        assert!(error.contains("not UTF-8"), "{error}");
        assert!(error.contains("p.toml:2:11"), "{error}");
    }

    #[test]
    fn a_directory_or_device_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let error = error_of(dir.path());
        assert!(error.contains("not a regular file"), "{error}");
        #[cfg(unix)]
        {
            let error = error_of(Path::new("/dev/zero"));
            assert!(error.contains("not a regular file"), "{error}");
        }
    }

    #[test]
    fn too_deep_a_dotted_key_points_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = vec!["a"; 200].join(".");
        let p = write(dir.path(), "p.toml", format!("[eda]\n{key} = 1\n").as_bytes());
        let error = error_of(&p);
        assert!(error.contains("p.toml:2:1"), "{error}");
    }
}
