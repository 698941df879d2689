//! `[sweep]`: one pipeline file, many variants. Each key of the table is a
//! dotted key of the pipeline (`"train.lr"`) with an array of values, and every
//! combination becomes a pipeline of its own, named after what it sets
//! (`<name>--lr-3e-4--missing-mask`). Variants share every stage the swept keys
//! do not reach (one ingest, one eda for all): the cache does that, as for any
//! pipelines with equal stages.

use crate::config::{ConfigError, ConfigErrorKind, Entry, Location, Node, Table, Value};

/// The table that holds a sweep.
pub const SWEEP_TABLE: &str = "sweep";
/// Most variants one sweep may expand into.
const MAX_VARIANTS: usize = 1000;

/// One combination of the swept values.
#[derive(Debug, Clone, Default)]
pub struct Variant {
    /// Appended to the pipeline's name: `--lr-3e-4--missing-mask`.
    pub suffix: String,
    /// The values it sets, as tables to merge over the pipeline's.
    pub overlay: Table,
}

/// One swept key and its values.
struct Axis {
    path: Vec<String>,
    key_at: Location,
    /// Names the key in variant names: its last part, or the whole dotted key
    /// where two swept keys end alike.
    label: String,
    values: Vec<(Node, String)>,
}

/// Reads `[sweep]` (at `at`) into its variants, in order: the first key
/// written varies slowest. Every mistake is returned.
pub fn variants(sweep: &Table, at: &Location) -> Result<Vec<Variant>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    // In the order written, not the table's sorted order.
    let mut entries: Vec<(&String, &Entry)> = sweep.entries.iter().collect();
    entries.sort_by_key(|(_, entry)| entry.key_at.span.start);
    let mut axes: Vec<Axis> = entries
        .into_iter()
        .filter_map(|(key, entry)| read_axis(key, entry, &mut errors))
        .collect();
    if axes.is_empty() && errors.is_empty() {
        let message = "sweeps no key: add \"train.lr\" = [1e-3, 3e-4] or remove [sweep]";
        errors.push(sweep_error(message.to_string(), at));
    }
    let labels: Vec<String> = axes.iter().map(|a| a.label.clone()).collect();
    for axis in &mut axes {
        if labels.iter().filter(|l| **l == axis.label).count() > 1 {
            axis.label = axis.path.join(".");
        }
    }
    let count = axes
        .iter()
        .try_fold(1usize, |n, axis| n.checked_mul(axis.values.len()))
        .unwrap_or(usize::MAX);
    if count > MAX_VARIANTS {
        let message = format!("expands into {count} variants; at most {MAX_VARIANTS}");
        errors.push(sweep_error(message, at));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((0..count).map(|index| variant(&axes, index)).collect())
}

/// A mistake in `[sweep]` as a whole.
fn sweep_error(message: String, at: &Location) -> ConfigError {
    let kind = ConfigErrorKind::InvalidValue {
        key: SWEEP_TABLE.to_string(),
        message,
    };
    ConfigError::new(kind, at)
}

/// A mistake in the swept key `key`.
fn invalid(key: &str, message: String, at: &Location) -> ConfigError {
    let kind = ConfigErrorKind::InvalidValue {
        key: format!("{SWEEP_TABLE}.\"{key}\""),
        message,
    };
    ConfigError::new(kind, at)
}

/// One swept key and its values, or None after saying what is wrong with it.
fn read_axis(key: &str, entry: &Entry, errors: &mut Vec<ConfigError>) -> Option<Axis> {
    let path: Vec<String> = key.split('.').map(|p| p.trim().to_string()).collect();
    if path.first().is_some_and(|t| t == "pipeline") && path.get(1).is_some_and(|k| k == "extends") {
        let message = "`extends` cannot be swept: it is followed before the sweep applies";
        errors.push(invalid(key, message.to_string(), &entry.key_at));
        return None;
    }
    if path.len() < 2 || path.iter().any(String::is_empty) {
        let message = "a swept key is a key of a table, quoted: \"train.lr\" = [1e-3, 3e-4]";
        errors.push(invalid(key, message.to_string(), &entry.key_at));
        return None;
    }
    let Value::Array(items) = &entry.node.value else {
        let message = format!(
            "found a {}: write the values to try as an array",
            entry.node.value.type_name()
        );
        errors.push(invalid(key, message, &entry.node.at));
        return None;
    };
    if items.is_empty() {
        errors.push(invalid(key, "lists no value".to_string(), &entry.node.at));
        return None;
    }
    Some(Axis {
        label: path.last().cloned().unwrap_or_default(),
        path,
        key_at: entry.key_at.clone(),
        values: read_values(key, items, errors),
    })
}

/// The values of swept key `key` with the names they give variants; a table,
/// a value listed twice or two values naming variants alike is a mistake.
fn read_values(key: &str, items: &[Node], errors: &mut Vec<ConfigError>) -> Vec<(Node, String)> {
    let mut values: Vec<(Node, String)> = Vec::new();
    for item in items {
        if matches!(item.value, Value::Table(_)) {
            let message = "a swept value cannot be a table".to_string();
            errors.push(invalid(key, message, &item.at));
            continue;
        }
        let text = name_part(item);
        if let Some((seen, _)) = values
            .iter()
            .find(|(node, _)| same_value(&node.value, &item.value))
        {
            let message = format!("`{}` is listed twice (as `{}`)", written(item), written(seen));
            errors.push(invalid(key, message, &item.at));
            continue;
        }
        if values.iter().any(|(_, seen)| *seen == text) {
            let message = format!(
                "`{}` and another value both name variants `{text}`: names keep only letters, digits, `-`, `_` and `.`",
                written(item)
            );
            errors.push(invalid(key, message, &item.at));
            continue;
        }
        values.push((item.clone(), text));
    }
    values
}

/// Combination `index`, the last axis varying fastest.
fn variant(axes: &[Axis], mut index: usize) -> Variant {
    let mut picks = vec![0; axes.len()];
    for (pick, axis) in picks.iter_mut().zip(axes).rev() {
        *pick = index % axis.values.len();
        index /= axis.values.len();
    }
    let mut result = Variant::default();
    for (axis, &pick) in axes.iter().zip(&picks) {
        let (node, text) = &axis.values[pick];
        result.suffix.push_str(&format!("--{}-{text}", axis.label));
        insert(&mut result.overlay, &axis.path, node.clone(), &axis.key_at);
    }
    result
}

/// Sets `path` in `table` to `node`, making the tables on the way.
fn insert(table: &mut Table, path: &[String], node: Node, key_at: &Location) {
    let [first, rest @ ..] = path else { return };
    if rest.is_empty() {
        table.entries.insert(
            first.clone(),
            Entry {
                key_at: key_at.clone(),
                node,
            },
        );
        return;
    }
    let entry = table.entries.entry(first.clone()).or_insert_with(|| Entry {
        key_at: key_at.clone(),
        node: Node {
            value: Value::Table(Table::default()),
            at: key_at.clone(),
        },
    });
    if let Value::Table(inner) = &mut entry.node.value {
        insert(inner, rest, node, key_at);
    }
}

/// Whether two swept values are the same however written (`1e-3`, `0.001`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) | (Value::Datetime(a), Value::Datetime(b)) => a == b,
        (Value::Integer(a), Value::Integer(b)) => a == b,
        (Value::Float(a), Value::Float(b)) => a == b,
        (Value::Boolean(a), Value::Boolean(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(&x.value, &y.value))
        }
        _ => false,
    }
}

/// The value as written in the file.
fn written(node: &Node) -> &str {
    node.at.file.text.get(node.at.span.clone()).unwrap_or_default()
}

/// A value as it appears in a variant's name: a string's text, anything else
/// as written (`3e-4`, `true`), with characters a name cannot hold as `_`.
fn name_part(node: &Node) -> String {
    let text = match &node.value {
        Value::String(s) => s.clone(),
        _ => written(node).to_string(),
    };
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;
    use std::sync::Arc;

    fn sweep_of(text: &str) -> (Table, Location) {
        let file = Arc::new(SourceFile::new("s.toml".into(), text.to_string()));
        let document = toml_edit::Document::parse(file.text.as_str()).unwrap();
        let table = Table::from_document(&file, document.as_table());
        let entry = table.get(SWEEP_TABLE).unwrap().clone();
        match entry.node.value {
            Value::Table(sweep) => (sweep, entry.key_at),
            _ => panic!("not a table"),
        }
    }

    #[test]
    fn variants_follow_the_written_order_and_name_what_they_set() {
        let (sweep, at) = sweep_of(
            "[sweep]\n\"train.lr\" = [1e-3, 3e-4]\n\"prepare.missing\" = [\"median\", \"mask\"]\n\"train.augment.hflip\" = [true]\n",
        );
        let variants = variants(&sweep, &at).unwrap();
        let names: Vec<&str> = variants.iter().map(|v| v.suffix.as_str()).collect();
        assert_eq!(
            names,
            [
                "--lr-1e-3--missing-median--hflip-true",
                "--lr-1e-3--missing-mask--hflip-true",
                "--lr-3e-4--missing-median--hflip-true",
                "--lr-3e-4--missing-mask--hflip-true",
            ]
        );
        let Value::Table(train) = &variants[2].overlay.get("train").unwrap().node.value else {
            panic!()
        };
        assert!(matches!(train.get("lr").unwrap().node.value, Value::Float(v) if v == 3e-4));
        let Value::Table(augment) = &train.get("augment").unwrap().node.value else {
            panic!()
        };
        assert!(matches!(
            augment.get("hflip").unwrap().node.value,
            Value::Boolean(true)
        ));
    }

    #[test]
    fn keys_that_end_alike_are_named_in_full_and_odd_characters_replaced() {
        let (sweep, at) = sweep_of(
            "[sweep]\n\"train.seed\" = [1]\n\"prepare.seed\" = [2]\n\"pipeline.description\" = [\"a b/c\"]\n",
        );
        let variants = variants(&sweep, &at).unwrap();
        assert_eq!(
            variants[0].suffix,
            "--train.seed-1--prepare.seed-2--description-a_b_c"
        );
    }

    #[test]
    fn too_many_variants_are_refused_before_any_is_built() {
        let values: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let list = values.join(", ");
        let (sweep, at) = sweep_of(&format!(
            "[sweep]\n\"train.seed\" = [{list}]\n\"prepare.seed\" = [{list}]\n"
        ));
        let errors = variants(&sweep, &at).unwrap_err();
        assert!(
            errors[0].to_string().contains("expands into 1600 variants"),
            "{}",
            errors[0]
        );
    }
}
