//! Cache keys: what a stage's output depends on, hashed; and, against an earlier
//! run, what changed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stages::StageKind;

/// A file input: where it was (when known) and what its content hashed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    #[serde(
        with = "crate::fsutil::lossy_path",
        default,
        skip_serializing_if = "crate::fsutil::is_empty_path"
    )]
    pub path: PathBuf,
    pub hash: String,
}

/// Everything a stage's cache key is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub stage: StageKind,
    pub version: u32,
    pub config: Value,
    /// Input files by the config key that names them.
    pub files: BTreeMap<String, FileDigest>,
    /// The hash of the outputs it reads of each upstream node, by node label.
    pub upstream: BTreeMap<String, String>,
}

impl KeyInputs {
    /// The cache key. File paths are left out: moving a file does not change it,
    /// editing it does.
    pub fn key(&self) -> String {
        let files: BTreeMap<&String, &String> = self.files.iter().map(|(role, d)| (role, &d.hash)).collect();
        let canonical = serde_json::json!({
            "stage": self.stage,
            "version": self.version,
            "config": self.config,
            "files": files,
            "upstream": self.upstream,
        });
        let bytes = serde_json::to_vec(&canonical).expect("JSON values serialise");
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// The same inputs with the files' paths left out (they are not part of the key).
    pub fn without_paths(&self) -> KeyInputs {
        let mut inputs = self.clone();
        for digest in inputs.files.values_mut() {
            digest.path = PathBuf::new();
        }
        inputs
    }

    /// What differs from an earlier run's inputs, most specific first.
    pub fn changes_since(&self, old: &KeyInputs) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.version != old.version {
            changes.push(Change::Code {
                old: old.version,
                new: self.version,
            });
        }
        let mut old_config = BTreeMap::new();
        let mut new_config = BTreeMap::new();
        flatten(self.stage.name(), &old.config, &mut old_config);
        flatten(self.stage.name(), &self.config, &mut new_config);
        let mut keys: Vec<&String> = old_config.keys().chain(new_config.keys()).collect();
        // `layers[2]` before `layers[10]`.
        keys.sort_by(|a, b| natural_cmp(a, b));
        keys.dedup();
        for key in keys {
            let (before, after) = (old_config.get(key), new_config.get(key));
            if before != after {
                changes.push(Change::Config {
                    key: key.clone(),
                    old: before.cloned(),
                    new: after.cloned(),
                });
            }
        }
        let roles: std::collections::BTreeSet<&String> = old.files.keys().chain(self.files.keys()).collect();
        for role in roles {
            match (old.files.get(role), self.files.get(role)) {
                (Some(a), Some(b)) if a.hash == b.hash => {}
                (_, Some(now)) => changes.push(Change::Input {
                    name: role.clone(),
                    path: now.path.clone(),
                }),
                (Some(before), None) => changes.push(Change::Input {
                    name: role.clone(),
                    path: before.path.clone(),
                }),
                (None, None) => {}
            }
        }
        for (stage, hash) in &self.upstream {
            if old.upstream.get(stage) != Some(hash) {
                changes.push(Change::Upstream { stage: stage.clone() });
            }
        }
        changes
    }
}

/// Orders strings as people count: runs of digits by their value, so
/// `layers[2]` comes before `layers[10]`; everything else byte by byte.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (digits(a), digits(b));
                let value = |s: &[u8]| {
                    let zeros = s.iter().take_while(|c| **c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (va, vb) = (value(&a[..da]), value(&b[..db]));
                // Fewer significant digits is smaller; then digit by digit; then
                // fewer leading zeros first, so that the order is total.
                let order = va
                    .len()
                    .cmp(&vb.len())
                    .then_with(|| va.cmp(&vb))
                    .then_with(|| da.cmp(&db));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// Objects by key and arrays by index, so a change names the one value that
/// changed (`train.model.graph.layers[3].kernel`), not a whole network.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flatten(&format!("{prefix}.{key}"), inner, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{index}]"), inner, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The most changes a reason lists; the rest are counted.
const LISTED_CHANGES: usize = 5;
/// The most characters of a value a change shows.
const SHOWN_VALUE_CHARS: usize = 80;

/// Why a stage must run again, in one line: the first few changes.
pub fn describe(changes: &[Change]) -> String {
    let mut text = changes
        .iter()
        .take(LISTED_CHANGES)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if changes.len() > LISTED_CHANGES {
        text += &format!("; and {} more", changes.len() - LISTED_CHANGES);
    }
    text
}

/// Why a stage must run again.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A configuration key was set, removed or changed.
    Config {
        key: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    /// An input file's content changed (or it was added or removed).
    Input {
        name: String,
        #[serde(with = "crate::fsutil::lossy_path")]
        path: PathBuf,
    },
    /// An upstream stage's output changed.
    Upstream { stage: String },
    /// fkp's code for the stage changed.
    Code { old: u32, new: u32 },
    /// Nothing changed, but the cached output is gone (e.g. `fkp clean`).
    EntryRemoved,
    /// Nothing changed, but the entry lacks a file its manifest lists, or one
    /// has another size (damaged by hand, or by a clean killed halfway).
    EntryDamaged,
    /// `--force` or `--force-stage`.
    Forced,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| {
            let text = v.as_ref().map_or("(unset)".to_string(), Value::to_string);
            match text.char_indices().nth(SHOWN_VALUE_CHARS) {
                Some((end, _)) => format!("{}… ({} characters)", &text[..end], text.chars().count()),
                None => text,
            }
        };
        match self {
            Change::Config { key, old, new } => write!(
                f,
                "{} changed: {} -> {}",
                crate::stages::key_name(key),
                show(old),
                show(new)
            ),
            Change::Input { name, path } => write!(f, "input `{name}` changed ({})", path.display()),
            Change::Upstream { stage } => write!(f, "upstream [{stage}] changed"),
            Change::Code { old, new } => write!(f, "fkp's code for this stage changed (v{old} -> v{new})"),
            Change::EntryRemoved => write!(f, "its cache entry was removed"),
            Change::EntryDamaged => write!(
                f,
                "its cache entry is damaged (a file it lists is missing or changed size)"
            ),
            Change::Forced => write!(f, "forced"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(config: Value, hash: &str, path: &str) -> KeyInputs {
        KeyInputs {
            stage: StageKind::Ingest,
            version: 1,
            config,
            files: BTreeMap::from([(
                "train".to_string(),
                FileDigest {
                    path: PathBuf::from(path),
                    hash: hash.to_string(),
                },
            )]),
            upstream: BTreeMap::new(),
        }
    }

    #[test]
    fn the_key_follows_content_not_paths() {
        let a = inputs(serde_json::json!({"on_bad_row": "error"}), "h1", "/a/t.csv");
        let moved = inputs(serde_json::json!({"on_bad_row": "error"}), "h1", "/b/t.csv");
        let edited = inputs(serde_json::json!({"on_bad_row": "error"}), "h2", "/a/t.csv");
        assert_eq!(a.key(), moved.key());
        assert_ne!(a.key(), edited.key());
        assert_eq!(a.key().len(), 64);
    }

    #[test]
    fn changes_name_the_key_and_the_input() {
        let old = inputs(
            serde_json::json!({"on_bad_row": "error", "tol": 1.0}),
            "h1",
            "/a/t.csv",
        );
        let new = inputs(
            serde_json::json!({"on_bad_row": "skip", "tol": 1.0}),
            "h2",
            "/a/t.csv",
        );
        let changes = new.changes_since(&old);
        let text: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "`[ingest] on_bad_row` changed: \"error\" -> \"skip\"",
                "input `train` changed (/a/t.csv)"
            ]
        );
        assert!(new.changes_since(&new).is_empty());
    }

    #[test]
    fn numbers_in_keys_count_as_numbers() {
        let mut keys = vec![
            "layers[10]",
            "layers[2]",
            "layers[1].kernel",
            "head[0]",
            "layers[02]",
            "lr",
        ];
        keys.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            keys,
            [
                "head[0]",
                "layers[1].kernel",
                "layers[2]",
                "layers[02]",
                "layers[10]",
                "lr"
            ]
        );
    }

    #[test]
    fn changed_layers_are_listed_in_order_and_named_as_written() {
        let layers = |ten: u64| {
            let mut layers: Vec<Value> = (0..12).map(|i| serde_json::json!({ "units": i })).collect();
            layers[2] = serde_json::json!({ "units": ten });
            layers[10] = serde_json::json!({ "units": ten });
            serde_json::json!({ "model": { "graph": { "layers": layers } }, "warmup_epochs": ten })
        };
        let train = |ten| KeyInputs {
            stage: StageKind::Train,
            version: 1,
            config: layers(ten),
            files: BTreeMap::new(),
            upstream: BTreeMap::new(),
        };
        let text = describe(&train(3).changes_since(&train(2)));
        assert_eq!(
            text,
            "`[model] layers[2].units` changed: 2 -> 3; `[model] layers[10].units` changed: 2 -> 3; \
             `[train.schedule] warmup_epochs` changed: 2 -> 3"
        );
    }
}
