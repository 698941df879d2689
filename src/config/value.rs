//! The parsed TOML of a pipeline, every value and key carrying the file and span it
//! came from, so that errors found after an `extends` merge still point at the right
//! line of the right file.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::source::{Location, SourceFile};

#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

impl Value {
    /// The TOML type's name, as used in "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key_at: Location,
    pub node: Node,
}

/// Pairs of keys that say one thing two ways: a file that writes one drops the
/// other from the files it extends (`seeds`, an ensemble, instead of `seed`).
/// Written in one file, both stay, and the stage that reads them says which.
pub const ALTERNATIVES: [(&str, &str); 1] = [("seed", "seeds")];

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub entries: BTreeMap<String, Entry>,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.entries.remove(key)
    }

    /// Deep merge: tables merge key by key, anything else in `overlay` replaces
    /// what `self` had, and a key replaces its alternative ([`ALTERNATIVES`]).
    /// This is what `extends` means.
    pub fn merge(&mut self, overlay: Table) {
        // First, so that an overlay writing both keeps both (and is told off).
        for (a, b) in ALTERNATIVES {
            for (written, replaced) in [(a, b), (b, a)] {
                if overlay.entries.contains_key(written) {
                    self.entries.remove(replaced);
                }
            }
        }
        for (key, entry) in overlay.entries {
            match (self.entries.get_mut(&key), entry.node.value) {
                (
                    Some(Entry {
                        node:
                            Node {
                                value: Value::Table(base),
                                ..
                            },
                        ..
                    }),
                    Value::Table(over),
                ) => base.merge(over),
                (_, value) => {
                    let node = Node {
                        value,
                        at: entry.node.at,
                    };
                    self.entries.insert(
                        key,
                        Entry {
                            key_at: entry.key_at,
                            node,
                        },
                    );
                }
            }
        }
    }

    /// The merged tables as TOML text: what a pipeline means once `extends` is
    /// followed, shown in reports. Keys come out sorted.
    pub fn to_toml(&self) -> String {
        let mut document = toml_edit::DocumentMut::new();
        for (key, entry) in &self.entries {
            document.insert(key, to_item(&entry.node.value));
        }
        document.to_string()
    }

    /// Builds the tree from a parsed document.
    pub fn from_document(file: &Arc<SourceFile>, root: &toml_edit::Table) -> Table {
        table_from_pairs(file, root.iter().filter_map(|(k, _)| root.get_key_value(k)))
    }
}

fn table_from_pairs<'a>(
    file: &Arc<SourceFile>,
    pairs: impl Iterator<Item = (&'a toml_edit::Key, &'a toml_edit::Item)>,
) -> Table {
    let mut table = Table::default();
    for (key, item) in pairs {
        let key_at = Location::new(file, key.span());
        if let Some(node) = node_from_item(file, item, &key_at) {
            table
                .entries
                .insert(key.get().to_string(), Entry { key_at, node });
        }
    }
    table
}

fn node_from_item(file: &Arc<SourceFile>, item: &toml_edit::Item, key_at: &Location) -> Option<Node> {
    // Implicit tables (`[train.augment]` implies `train`) have no span of their own.
    let at = |span: Option<std::ops::Range<usize>>| {
        span.map_or_else(|| key_at.clone(), |s| Location::new(file, Some(s)))
    };
    match item {
        toml_edit::Item::None => None,
        toml_edit::Item::Value(value) => Some(node_from_value(file, value, key_at)),
        toml_edit::Item::Table(t) => Some(Node {
            value: Value::Table(table_from_pairs(
                file,
                t.iter().filter_map(|(k, _)| t.get_key_value(k)),
            )),
            at: at(t.span()),
        }),
        toml_edit::Item::ArrayOfTables(array) => Some(Node {
            value: Value::Array(
                array
                    .iter()
                    .map(|t| Node {
                        value: Value::Table(table_from_pairs(
                            file,
                            t.iter().filter_map(|(k, _)| t.get_key_value(k)),
                        )),
                        at: at(t.span()),
                    })
                    .collect(),
            ),
            at: at(array.span()),
        }),
    }
}

fn node_from_value(file: &Arc<SourceFile>, value: &toml_edit::Value, key_at: &Location) -> Node {
    let at = value
        .span()
        .map_or_else(|| key_at.clone(), |s| Location::new(file, Some(s)));
    let value = match value {
        toml_edit::Value::String(s) => Value::String(s.value().clone()),
        toml_edit::Value::Integer(i) => Value::Integer(*i.value()),
        toml_edit::Value::Float(x) => Value::Float(*x.value()),
        toml_edit::Value::Boolean(b) => Value::Boolean(*b.value()),
        toml_edit::Value::Datetime(d) => Value::Datetime(d.value().to_string()),
        toml_edit::Value::Array(array) => {
            Value::Array(array.iter().map(|v| node_from_value(file, v, key_at)).collect())
        }
        toml_edit::Value::InlineTable(t) => Value::Table(table_from_pairs(
            file,
            t.iter().filter_map(|(k, _)| t.get_key_value(k)),
        )),
    };
    Node { value, at }
}

fn to_item(value: &Value) -> toml_edit::Item {
    match value {
        Value::Table(table) => {
            let mut out = toml_edit::Table::new();
            for (key, entry) in &table.entries {
                out.insert(key, to_item(&entry.node.value));
            }
            toml_edit::Item::Table(out)
        }
        other => toml_edit::Item::Value(to_value(other)),
    }
}

fn to_value(value: &Value) -> toml_edit::Value {
    match value {
        Value::String(s) => s.as_str().into(),
        Value::Integer(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        Value::Boolean(b) => (*b).into(),
        Value::Datetime(text) => text
            .parse::<toml_edit::Datetime>()
            .map_or_else(|_| text.as_str().into(), toml_edit::Value::from),
        Value::Array(items) => {
            toml_edit::Value::Array(items.iter().map(|item| to_value(&item.value)).collect())
        }
        Value::Table(table) => {
            let mut inline = toml_edit::InlineTable::new();
            for (key, entry) in &table.entries {
                inline.insert(key, to_value(&entry.node.value));
            }
            toml_edit::Value::InlineTable(inline)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse(text: &str) -> Table {
        let file = Arc::new(SourceFile::new(PathBuf::from("t.toml"), text.to_string()));
        let doc = toml_edit::Document::parse(text.to_string()).unwrap();
        Table::from_document(&file, doc.as_table())
    }

    fn table<'a>(t: &'a Table, key: &str) -> &'a Table {
        match &t.get(key).unwrap().node.value {
            Value::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    #[test]
    fn keys_and_values_keep_their_positions() {
        let t = parse("[ingest]\ntrain = \"a.csv\"\n");
        let entry = table(&t, "ingest").get("train").unwrap();
        assert_eq!(entry.key_at.line_col(), (2, 1));
        assert_eq!(entry.node.at.line_col(), (2, 9));
    }

    #[test]
    fn merge_is_deep_and_overlay_wins() {
        let mut base = parse("[ingest]\ntrain = \"a.csv\"\ntest = \"t.csv\"\n[eda]\n");
        let overlay = parse("[ingest]\ntrain = \"b.csv\"\n");
        base.merge(overlay);
        let ingest = table(&base, "ingest");
        match &ingest.get("train").unwrap().node.value {
            Value::String(s) => assert_eq!(s, "b.csv"),
            other => panic!("{other:?}"),
        }
        assert!(ingest.get("test").is_some());
        assert!(base.get("eda").is_some());
    }

    #[test]
    fn a_key_replaces_its_alternative_from_an_extended_file() {
        let mut base = parse("[train]\nseed = 7\nepochs = 2\n");
        base.merge(parse("[train]\nseeds = [1, 2]\n"));
        let train = table(&base, "train");
        assert!(train.get("seed").is_none() && train.get("seeds").is_some());
        assert!(train.get("epochs").is_some());
        base.merge(parse("[train]\nseed = 3\n"));
        let train = table(&base, "train");
        assert!(train.get("seeds").is_none() && train.get("seed").is_some());
        // Both in one file stay both, for the reader to refuse.
        base.merge(parse("[train]\nseed = 4\nseeds = [5, 6]\n"));
        let train = table(&base, "train");
        assert!(train.get("seeds").is_some() && train.get("seed").is_some());
    }

    #[test]
    fn implicit_parent_tables_point_at_their_key() {
        let t = parse("[train.augment]\nhflip = true\n");
        let train = t.get("train").unwrap();
        assert_eq!(train.node.at.line_col(), train.key_at.line_col());
        assert!(table(table(&t, "train"), "augment").get("hflip").is_some());
    }
}
