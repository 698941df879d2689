//! From the TOML of `[model]` to a [`Network`]: every layer checked for its kind,
//! keys and value types, block uses expanded with their parameters, and each
//! error pointing at the file and line that wrote it.
//!
//! A layer is a string (`"relu"`) or a one-kind table (`{ conv = 32, kernel = 3 }`).
//! Inside a block, a number may be a string naming a parameter (`"filters"`),
//! given where the block is used or in the block's `defaults`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use super::{BlockUse, Layer, Network, Op, Shortcut};
use crate::config::{ConfigError, ConfigErrorKind, Entry, Location, Node, Table, Value, did_you_mean};
use crate::models::kinds::{self, Flow, LayerTable, NumberReader, ReadLayer, SPELLINGS, TableForm, Written};
use crate::text::excerpt;

/// The keys of a block's definition.
const BLOCK_KEYS: [&str; 5] = ["layers", "residual", "projection", "after_add", "defaults"];

/// The most layers a network may have once its blocks are expanded: far above
/// any real network (ResNet-152 has about 500), far below what exhausts memory.
const MAX_LAYERS: usize = 10_000;

/// A parameter's value: where a block is used, or in its `defaults`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Integer(i64),
    Float(f64),
}

/// A parameter's value and where it is written (a block's use, or its defaults).
#[derive(Debug, Clone)]
struct Param {
    value: Number,
    at: Location,
}

/// The parameters visible to a block's layers, and which of them were read.
#[derive(Default)]
struct Scope {
    block: Option<String>,
    values: BTreeMap<String, Param>,
    read: BTreeSet<String>,
}

pub struct GraphReader<'a> {
    blocks: Option<&'a Table>,
    /// Blocks being expanded, innermost last: a block may not use itself.
    stack: Vec<String>,
    /// The parameters each used block read.
    used: BTreeMap<String, BTreeSet<String>>,
    /// Layers read so far, blocks expanded.
    layers_read: usize,
    errors: Vec<ConfigError>,
}

impl<'a> GraphReader<'a> {
    /// `blocks` is `[model.blocks]`, when the pipeline or preset has it.
    pub fn new(blocks: Option<&'a Table>) -> Self {
        GraphReader {
            blocks,
            stack: Vec::new(),
            used: BTreeMap::new(),
            layers_read: 0,
            errors: Vec::new(),
        }
    }

    pub fn finish(self) -> Vec<ConfigError> {
        // A block used many times reports one mistake once.
        let mut seen = BTreeSet::new();
        self.errors
            .into_iter()
            .filter(|e| seen.insert(e.to_string()))
            .collect()
    }

    /// Reads `layers` and `head` into a graph whose input has `channels` channels.
    pub fn graph(
        &mut self,
        name: String,
        channels: usize,
        layers_node: &Node,
        head: Option<&Node>,
    ) -> Network {
        let mut flow = Flow::Map(channels);
        let mut scope = Scope::default();
        let layers = self.list("model.layers", layers_node, &mut scope, &mut flow);
        let head = match head {
            Some(head) => self.list("model.head", head, &mut scope, &mut flow),
            None => Vec::new(),
        };
        self.check_blocks(&layers_node.at);
        Network {
            name,
            channels,
            layers,
            head,
            at: Some(layers_node.at.clone()),
        }
    }

    /// A block written in the file that writes `layers` and never used is
    /// likely a typo (an override of a preset's block under another name), as is
    /// a default no use of its block reads. Blocks from elsewhere (a preset, a
    /// pipeline this one extends) may go unused when `layers` is replaced.
    fn check_blocks(&mut self, layers_at: &Location) {
        let Some(blocks) = self.blocks else {
            return;
        };
        let read_by_block = std::mem::take(&mut self.used);
        let used: Vec<&str> = read_by_block.keys().map(String::as_str).collect();
        for (name, entry) in &blocks.entries {
            match read_by_block.get(name) {
                None if written_in(entry, layers_at) => {
                    let help = did_you_mean(name, used.iter().copied())
                        .unwrap_or_else(|| "use it in `layers` as { block = \"NAME\" }, or remove it".into());
                    let message = format!("block \"{}\" is defined but never used", excerpt(name));
                    self.error_with_help("model.blocks", &entry.key_at, message, Some(help));
                }
                None => {}
                Some(read) => {
                    let defaults = match &entry.node.value {
                        Value::Table(t) => t.get("defaults").map(|e| &e.node.value),
                        _ => None,
                    };
                    let Some(Value::Table(defaults)) = defaults else {
                        continue;
                    };
                    for (key, default) in &defaults.entries {
                        if !read.contains(key) {
                            let help = did_you_mean(key, read.iter().map(String::as_str));
                            let message =
                                format!("default `{}` is never read by block \"{name}\"", excerpt(key));
                            self.error_with_help(
                                &format!("model.blocks.{name}"),
                                &default.key_at,
                                message,
                                help,
                            );
                        }
                    }
                }
            }
        }
    }

    fn error(&mut self, key: &str, at: &Location, message: impl Into<String>) {
        self.error_with_help(key, at, message, None);
    }

    fn error_with_help(
        &mut self,
        key: &str,
        at: &Location,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let kind = ConfigErrorKind::InvalidValue {
            key: key.to_string(),
            message: message.into(),
        };
        let error = ConfigError::new(kind, at);
        self.errors.push(match help {
            Some(help) => error.with_help(help),
            None => error,
        });
    }

    /// An array of layers.
    fn list(&mut self, key: &str, node: &Node, scope: &mut Scope, flow: &mut Flow) -> Vec<Layer> {
        let Value::Array(items) = &node.value else {
            let kind = ConfigErrorKind::WrongType {
                key: key.to_string(),
                expected: "an array of layers",
                found: node.value.type_name(),
            };
            self.errors.push(ConfigError::new(kind, &node.at));
            return Vec::new();
        };
        let mut layers: Vec<Layer> = Vec::new();
        let mut bias_stated = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let key = format!("{key}[{index}]");
            self.layers_read += 1;
            if self.layers_read == MAX_LAYERS + 1 {
                self.error(
                    &key,
                    &item.at,
                    format!("the network has more than {MAX_LAYERS} layers once its blocks are expanded"),
                );
            }
            if self.layers_read > MAX_LAYERS {
                break;
            }
            if let Some(read) = self.layer(&key, item, scope, flow) {
                layers.push(Layer {
                    op: read.op,
                    at: Some(item.at.clone()),
                });
                bias_stated.push(read.states_bias);
            }
        }
        // A conv's bias defaults to on, unless batch norm follows: its mean
        // subtraction would cancel the bias (torchvision leaves it out there too).
        for i in 0..layers.len() {
            let next_is_norm = layers.get(i + 1).is_some_and(|l| l.op == Op::BatchNorm);
            if let Op::Conv { bias, .. } = &mut layers[i].op
                && !bias_stated[i]
            {
                *bias = !next_is_norm;
            }
        }
        layers
    }

    /// One layer.
    fn layer(&mut self, key: &str, item: &Node, scope: &mut Scope, flow: &mut Flow) -> Option<ReadLayer> {
        let read = match &item.value {
            Value::String(kind) => ReadLayer::new(self.bare(key, kind, item)?),
            Value::Table(table) => self.table_layer(key, table, item, scope, flow)?,
            other => {
                self.error(
                    key,
                    &item.at,
                    format!(
                        "a layer is a string (\"relu\") or a table ({{ conv = 32, kernel = 3 }}), not a {}",
                        other.type_name()
                    ),
                );
                return None;
            }
        };
        *flow = read.op.flow(*flow);
        Some(read)
    }

    fn bare(&mut self, key: &str, kind: &str, item: &Node) -> Option<Op> {
        let Some(spelling) = SPELLINGS.iter().find(|s| s.name == kind) else {
            let help =
                did_you_mean(kind, kinds::bare_names().chain(kinds::table_names())).unwrap_or_else(|| {
                    format!(
                        "layers are {}, or tables of {}",
                        kinds::bare_names().collect::<Vec<_>>().join(", "),
                        kinds::table_names().collect::<Vec<_>>().join(", ")
                    )
                });
            let message = format!("unknown layer kind \"{}\"", excerpt(kind));
            self.error_with_help(key, &item.at, message, Some(help));
            return None;
        };
        match &spelling.written {
            Written::Bare(op) | Written::BareOrTable(op, _) => Some(op.clone()),
            Written::Table { example, .. } => {
                self.error(
                    key,
                    &item.at,
                    format!("\"{kind}\" needs a value: write {example}"),
                );
                None
            }
        }
    }

    fn table_layer(
        &mut self,
        key: &str,
        table: &Table,
        item: &Node,
        scope: &mut Scope,
        flow: &mut Flow,
    ) -> Option<ReadLayer> {
        let (kind, form) = self.table_kind(key, table, item)?;
        match form {
            TableForm::Layer { keys, read } => {
                self.check_keys(key, table, kind, keys);
                let layer = LayerTable {
                    value: &table.get(kind)?.node,
                    table,
                    at: &item.at,
                };
                read(
                    &mut ScopedNumbers {
                        reader: self,
                        key,
                        scope,
                    },
                    &layer,
                )
            }
            TableForm::Block => self.block_use(key, table, item, scope, flow).map(ReadLayer::new),
        }
    }

    /// The one kind a layer table names.
    fn table_kind(
        &mut self,
        key: &str,
        table: &Table,
        item: &Node,
    ) -> Option<(&'static str, &'static TableForm)> {
        let kinds: Vec<(&'static str, &'static TableForm)> = SPELLINGS
            .iter()
            .filter_map(|s| Some((s.name, s.table()?)))
            .filter(|(name, _)| table.get(name).is_some())
            .collect();
        match kinds.as_slice() {
            [kind] => Some(*kind),
            [] => {
                // `{ relu = true }`: a kind written only as a string.
                let bare_only = |k: &String| {
                    SPELLINGS
                        .iter()
                        .find(|s| s.name == k && s.table().is_none())
                        .map(|s| {
                            format!(
                                "\"{0}\" takes no settings: write it as the string \"{0}\"",
                                s.name
                            )
                        })
                };
                let hint = table
                    .entries
                    .keys()
                    .find_map(|k| bare_only(k).or_else(|| did_you_mean(k, kinds::table_names())));
                let names = kinds::table_names().collect::<Vec<_>>().join(", ");
                let message = format!("a layer table needs one of the keys {names}");
                self.error_with_help(key, &item.at, message, hint);
                None
            }
            many => {
                let names: Vec<&str> = many.iter().map(|(name, _)| *name).collect();
                let message = format!("a layer has one kind, this one has {}", names.join(" and "));
                self.error(key, &item.at, message);
                None
            }
        }
    }

    /// Every key of a `kind` layer's table is its name or one of `keys`.
    fn check_keys(&mut self, key: &str, table: &Table, kind: &str, keys: &[&str]) {
        for (name, entry) in &table.entries {
            if name != kind && !keys.contains(&name.as_str()) {
                let help = did_you_mean(name, keys.iter().copied()).or_else(|| {
                    Some(if keys.is_empty() {
                        format!("{kind} takes no other keys")
                    } else {
                        format!("{kind} takes {}", keys.join(", "))
                    })
                });
                self.error_with_help(
                    key,
                    &entry.key_at,
                    format!("unknown key `{}` for the {kind} layer", excerpt(name)),
                    help,
                );
            }
        }
    }

    /// A number as written, or the value of the parameter a string names, with
    /// where that value is written and, for a parameter, which one it is.
    fn number(
        &mut self,
        key: &str,
        node: &Node,
        scope: &mut Scope,
        what: &str,
    ) -> Option<(Number, Location, String)> {
        match &node.value {
            Value::Integer(i) => Some((Number::Integer(*i), node.at.clone(), String::new())),
            Value::Float(x) => Some((Number::Float(*x), node.at.clone(), String::new())),
            Value::String(name) => {
                let Some(block) = scope.block.clone() else {
                    self.error(
                        key,
                        &node.at,
                        format!(
                            "{what} is \"{}\", a parameter, but only a block's layers take parameters",
                            excerpt(name)
                        ),
                    );
                    return None;
                };
                scope.read.insert(name.clone());
                match scope.values.get(name) {
                    Some(param) => Some((
                        param.value,
                        param.at.clone(),
                        format!(" (parameter `{}` of block \"{block}\")", excerpt(name)),
                    )),
                    None => {
                        self.error(
                            key,
                            &node.at,
                            format!(
                                "parameter `{}` has no value: pass it where block \"{block}\" is used, \
                                 or add it to [model.blocks.{block}] defaults",
                                excerpt(name)
                            ),
                        );
                        None
                    }
                }
            }
            other => {
                self.error(
                    key,
                    &node.at,
                    format!("{what} must be a number, found {}", other.type_name()),
                );
                None
            }
        }
    }

    fn count(
        &mut self,
        key: &str,
        node: &Node,
        scope: &mut Scope,
        what: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Option<usize> {
        let (value, at, param) = self.number(key, node, scope, what)?;
        match value {
            Number::Integer(i) if i >= 0 && range.contains(&(i as usize)) => Some(i as usize),
            Number::Integer(i) => {
                self.error(
                    key,
                    &at,
                    format!("{what} {i}{param} is outside {}..={}", range.start(), range.end()),
                );
                None
            }
            Number::Float(x) => {
                self.error(
                    key,
                    &at,
                    format!("{what}{param} must be a whole number, not {x:?}"),
                );
                None
            }
        }
    }

    /// A number in [0, max].
    fn fraction(&mut self, key: &str, node: &Node, scope: &mut Scope, what: &str, max: f64) -> Option<f64> {
        let (value, at, param) = self.number(key, node, scope, what)?;
        let value = match value {
            Number::Integer(i) => i as f64,
            Number::Float(x) => x,
        };
        if (0.0..=max).contains(&value) {
            // `+ 0.0` turns -0.0 into 0.0: one value, one cache key.
            Some(value + 0.0)
        } else {
            self.error(key, &at, format!("{what} {value}{param} is outside 0..={max}"));
            None
        }
    }

    /// A block's use (`{ block = "basic", filters = 64, repeat = 2 }`): the
    /// block's layers once per repetition, with the parameters filled in.
    fn block_use(
        &mut self,
        key: &str,
        table: &Table,
        item: &Node,
        outer: &mut Scope,
        flow: &mut Flow,
    ) -> Option<Op> {
        let name_node = &table.get("block")?.node;
        let Value::String(name) = &name_node.value else {
            self.error(key, &name_node.at, "`block` names a block: { block = \"basic\" }");
            return None;
        };
        let definition = self.block_definition(key, name, name_node)?;
        // Used, even when the use has mistakes of its own.
        self.used.entry(name.clone()).or_default();
        let repeat = match table.get("repeat") {
            Some(e) => self.count(key, &e.node, outer, "repeat", 1..=256)?,
            None => 1,
        };
        let passed = self.passed(key, table, outer)?;
        let block_key = format!("model.blocks.{name}");
        let block = Block {
            name,
            key: &block_key,
            definition,
            defaults: self.defaults(&block_key, definition),
            residual: self.residual(&block_key, definition),
        };
        let Some(layers) = definition.get("layers") else {
            self.error(
                &block_key,
                &definition_at(definition, item),
                "a block needs `layers = [...]`",
            );
            return None;
        };
        self.stack.push(name.clone());
        let mut uses = Vec::new();
        let mut read = BTreeSet::new();
        for r in 0..repeat {
            let mut scope = Scope {
                block: Some(name.clone()),
                values: block.values(&passed, r, &item.at),
                read: BTreeSet::new(),
            };
            let block_use = self.expand(key, &block, &layers.node, item, &mut scope, flow);
            read.extend(scope.read);
            if self.layers_read > MAX_LAYERS {
                break;
            }
            uses.push(block_use);
        }
        self.stack.pop();
        self.check_passed(key, name, &passed, read);
        Some(Op::Block {
            name: name.clone(),
            uses,
        })
    }

    /// The definition of the block `name`, which must exist, not be in use
    /// already (a block may not use itself), be a table, and have only known keys.
    fn block_definition(&mut self, key: &str, name: &str, name_node: &Node) -> Option<&'a Table> {
        let Some(definition) = self.blocks.and_then(|b| b.get(name)) else {
            let defined: Vec<&str> = self
                .blocks
                .map(|b| b.entries.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let help = did_you_mean(name, defined.iter().copied()).or_else(|| {
                Some(if defined.is_empty() {
                    format!("define it in [model.blocks.{}]", excerpt(name))
                } else {
                    format!("the blocks are {}", defined.join(", "))
                })
            });
            let message = format!("there is no block \"{}\"", excerpt(name));
            self.error_with_help(key, &name_node.at, message, help);
            return None;
        };
        if self.stack.iter().any(|b| b == name) {
            let chain = self
                .stack
                .iter()
                .map(String::as_str)
                .chain(std::iter::once(name))
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(" -> ");
            let message = format!("block \"{name}\" uses itself: {chain}");
            self.error(key, &name_node.at, message);
            return None;
        }
        let Value::Table(table) = &definition.node.value else {
            self.error(
                &format!("model.blocks.{name}"),
                &definition.node.at,
                "a block is a table with `layers`",
            );
            return None;
        };
        for (k, entry) in &table.entries {
            if !BLOCK_KEYS.contains(&k.as_str()) {
                let help = did_you_mean(k, BLOCK_KEYS.iter().copied())
                    .or_else(|| Some(format!("a block takes {}", BLOCK_KEYS.join(", "))));
                let message = format!("unknown key `{}`", excerpt(k));
                self.error_with_help(&format!("model.blocks.{name}"), &entry.key_at, message, help);
            }
        }
        Some(table)
    }

    /// The parameters a use passes, resolved in the scope it is written in,
    /// with where each is passed.
    fn passed(&mut self, key: &str, table: &Table, outer: &mut Scope) -> Option<Passed> {
        let mut passed = BTreeMap::new();
        for (k, entry) in &table.entries {
            if k != "block" && k != "repeat" {
                let (value, at, _) = self.number(key, &entry.node, outer, k)?;
                passed.insert(k.clone(), (Param { value, at }, entry.key_at.clone()));
            }
        }
        Some(passed)
    }

    /// A block's `defaults`: numbers only.
    fn defaults(&mut self, block_key: &str, definition: &Table) -> BTreeMap<String, Param> {
        let mut defaults = BTreeMap::new();
        let Some(entry) = definition.get("defaults") else {
            return defaults;
        };
        let Value::Table(t) = &entry.node.value else {
            self.error(block_key, &entry.node.at, "`defaults` is a table: { stride = 1 }");
            return defaults;
        };
        for (k, e) in &t.entries {
            let value = match e.node.value {
                Value::Integer(i) => Number::Integer(i),
                Value::Float(x) => Number::Float(x),
                _ => {
                    self.error(block_key, &e.node.at, format!("default `{k}` must be a number"));
                    continue;
                }
            };
            let at = e.node.at.clone();
            defaults.insert(k.clone(), Param { value, at });
        }
        defaults
    }

    /// Whether the block adds its input to its output; without that, a
    /// `projection` or `after_add` is a mistake (an empty list says "none",
    /// which undoes a preset's).
    fn residual(&mut self, block_key: &str, definition: &Table) -> bool {
        let residual = match definition.get("residual") {
            Some(Entry { node, .. }) => match node.value {
                Value::Boolean(b) => b,
                _ => {
                    self.error(block_key, &node.at, "`residual` is true or false");
                    false
                }
            },
            None => false,
        };
        if !residual {
            for k in ["projection", "after_add"] {
                let stated = definition
                    .get(k)
                    .filter(|e| !matches!(&e.node.value, Value::Array(items) if items.is_empty()));
                if let Some(e) = stated {
                    let message = format!("`{k}` only applies with `residual = true`");
                    self.error(block_key, &e.key_at, message);
                }
            }
        }
        residual
    }

    /// One use of `block`: its layers, its shortcut and what follows the sum.
    fn expand(
        &mut self,
        key: &str,
        block: &Block,
        layers: &Node,
        item: &Node,
        scope: &mut Scope,
        flow: &mut Flow,
    ) -> BlockUse {
        let input = *flow;
        let body = self.list(&format!("{}.layers", block.key), layers, scope, flow);
        let shortcut = if block.residual {
            self.shortcut(key, block, item, scope, input, (*flow, &body))
        } else {
            Shortcut::None
        };
        let after_add = match block.definition.get("after_add") {
            Some(e) if block.residual => self.list(&format!("{}.after_add", block.key), &e.node, scope, flow),
            _ => Vec::new(),
        };
        BlockUse {
            body,
            shortcut,
            after_add,
        }
    }

    /// A residual block's shortcut: the identity when the layers keep the
    /// shape, else the block's projection, which it must have.
    fn shortcut(
        &mut self,
        key: &str,
        block: &Block,
        item: &Node,
        scope: &mut Scope,
        input: Flow,
        (output, body): (Flow, &[Layer]),
    ) -> Shortcut {
        let strides = body.iter().any(|l| l.op.strides());
        if input == output && !strides {
            return Shortcut::Identity;
        }
        if let Some(projection) = block.definition.get("projection") {
            let mut through = input;
            let key = format!("{}.projection", block.key);
            let layers = self.list(&key, &projection.node, scope, &mut through);
            return Shortcut::Projection { layers };
        }
        let name = block.name;
        self.error_with_help(
            key,
            &item.at,
            format!(
                "block \"{name}\" changes the shape of its input ({} to {}{}), so its input cannot be added to its output",
                flow_text(input),
                flow_text(output),
                if strides { ", with a stride" } else { "" }
            ),
            Some(format!(
                "add `projection = [{{ conv = \"filters\", kernel = 1, stride = \"stride\" }}, \"batchnorm\"]` to [model.blocks.{name}]"
            )),
        );
        Shortcut::Identity
    }

    /// Records the parameters the block read; one passed that no use read is a mistake.
    fn check_passed(&mut self, key: &str, name: &str, passed: &Passed, read: BTreeSet<String>) {
        for (k, (_, at)) in passed {
            if !read.contains(k) {
                let help = did_you_mean(k, read.iter().map(String::as_str)).or_else(|| {
                    Some(if read.is_empty() {
                        format!("block \"{name}\" takes no parameters")
                    } else {
                        let names: Vec<&str> = read.iter().map(String::as_str).collect();
                        format!("its parameters are {}", names.join(", "))
                    })
                });
                let message = format!("block \"{name}\" has no parameter `{}`", excerpt(k));
                self.error_with_help(key, at, message, help);
            }
        }
        self.used.entry(name.to_string()).or_default().extend(read);
    }
}

/// The parameters a block's use passes: each value and where its key is written.
type Passed = BTreeMap<String, (Param, Location)>;

/// A block as one of its uses expands it.
struct Block<'b> {
    name: &'b str,
    /// `model.blocks.NAME`, for errors in its definition.
    key: &'b str,
    definition: &'b Table,
    defaults: BTreeMap<String, Param>,
    residual: bool,
}

impl Block<'_> {
    /// The parameters of use `r`: the defaults, overridden by what the use
    /// passes, except that `stride` applies to the first use only (a stage
    /// downsamples once), later ones taking the default or 1.
    fn values(&self, passed: &Passed, r: usize, at: &Location) -> BTreeMap<String, Param> {
        let mut values = self.defaults.clone();
        for (k, (param, _)) in passed {
            if !(r > 0 && k == "stride") {
                values.insert(k.clone(), param.clone());
            }
        }
        if r > 0 && !self.defaults.contains_key("stride") {
            let one = Param {
                value: Number::Integer(1),
                at: at.clone(),
            };
            values.insert("stride".into(), one);
        }
        values
    }
}

/// The reader's checks of numbers, for one layer in one scope.
struct ScopedNumbers<'r, 'a> {
    reader: &'r mut GraphReader<'a>,
    key: &'r str,
    scope: &'r mut Scope,
}

impl NumberReader for ScopedNumbers<'_, '_> {
    fn count(&mut self, node: &Node, what: &str, range: RangeInclusive<usize>) -> Option<usize> {
        self.reader.count(self.key, node, self.scope, what, range)
    }

    fn fraction(&mut self, node: &Node, what: &str, max: f64) -> Option<f64> {
        self.reader.fraction(self.key, node, self.scope, what, max)
    }

    fn error(&mut self, at: &Location, message: String) {
        self.reader.error(self.key, at, message);
    }
}

fn definition_at(definition: &Table, item: &Node) -> Location {
    definition
        .entries
        .values()
        .next()
        .map_or_else(|| item.at.clone(), |e| e.key_at.clone())
}

/// Whether a block's definition, or any key in it, is written in the file of `at`.
fn written_in(block: &Entry, at: &Location) -> bool {
    let same = |l: &Location| std::sync::Arc::ptr_eq(&l.file, &at.file);
    same(&block.key_at)
        || match &block.node.value {
            Value::Table(t) => t.entries.values().any(|e| same(&e.key_at)),
            _ => false,
        }
}

fn flow_text(flow: Flow) -> String {
    match flow {
        Flow::Map(c) => format!("{c} channels"),
        Flow::Flat => "flat features".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::config::SourceFile;

    /// Reads `text`, a `[model]` table's body, into a graph and the error messages.
    pub(crate) fn read(text: &str) -> (Network, Vec<String>) {
        let file = Arc::new(SourceFile::new(PathBuf::from("/p/model.toml"), text.to_string()));
        let document = toml_edit::Document::parse(text.to_string()).unwrap();
        let table = Table::from_document(&file, document.as_table());
        let blocks = match table.get("blocks").map(|e| &e.node.value) {
            Some(Value::Table(t)) => Some(t),
            _ => None,
        };
        let mut reader = GraphReader::new(blocks);
        let graph = reader.graph(
            "custom".into(),
            1,
            &table.get("layers").unwrap().node,
            table.get("head").map(|e| &e.node),
        );
        (graph, reader.finish().iter().map(|e| e.to_string()).collect())
    }

    const SKETCH: &str = r#"
layers = [
  { conv = 32, kernel = 3 }, "relu", { maxpool = 2 }, { dropout = 0.1 },
  { block = "basic", filters = 64, repeat = 2, stride = 2 },
  "global_avg_pool", { dense = 500 }, "relu", { dropout = 0.5 },
]
[blocks.basic]
layers = [{ conv = "filters", kernel = 3, stride = "stride" }, "batchnorm", "relu",
          { conv = "filters", kernel = 3 }, "batchnorm"]
residual = true
projection = [{ conv = "filters", kernel = 1, stride = "stride" }, "batchnorm"]
"#;

    #[test]
    fn the_issue_sketch_reads_with_its_simple_forms() {
        let (graph, errors) = read(SKETCH);
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(graph.layers.len(), 9);
        assert_eq!(
            graph.layers[0].op,
            Op::Conv {
                filters: 32,
                kernel: 3,
                stride: 1,
                padding: 0,
                bias: true
            }
        );
        assert_eq!(
            graph.layers[2].op,
            Op::MaxPool {
                kernel: 2,
                stride: 2,
                padding: 0
            }
        );
        let Op::Block { name, uses } = &graph.layers[4].op else {
            panic!("{:?}", graph.layers[4].op)
        };
        assert_eq!((name.as_str(), uses.len()), ("basic", 2));
        // The first use downsamples and projects; the second keeps the shape.
        let conv = |u: &BlockUse| u.body[0].op.clone();
        assert!(matches!(
            conv(&uses[0]),
            Op::Conv {
                filters: 64,
                stride: 2,
                bias: false,
                ..
            }
        ));
        assert!(matches!(
            conv(&uses[1]),
            Op::Conv {
                filters: 64,
                stride: 1,
                ..
            }
        ));
        assert!(matches!(uses[0].shortcut, Shortcut::Projection { .. }));
        assert_eq!(uses[1].shortcut, Shortcut::Identity);
    }

    fn one_error(text: &str) -> String {
        let (_, errors) = read(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors[0].clone()
    }

    #[test]
    fn mistakes_name_the_line_and_what_is_wrong() {
        let e = one_error("layers = [\"relu\",\n  \"rleu\"]\n");
        assert!(e.contains("unknown layer kind \"rleu\""), "{e}");
        assert!(e.contains("/p/model.toml:2:3"), "{e}");
        assert!(e.contains("did you mean `relu`?"), "{e}");

        let e = one_error("layers = [{ conv = 8 }]\n");
        assert!(e.contains("a conv needs `kernel`"), "{e}");

        let e = one_error("layers = [{ conv = 8, kernel = 3, strid = 2 }]\n");
        assert!(
            e.contains("unknown key `strid` for the conv layer") && e.contains("did you mean `stride`?"),
            "{e}"
        );

        let e = one_error("layers = [{ conv = 8.5, kernel = 3 }]\n");
        assert!(e.contains("filters must be a whole number, not 8.5"), "{e}");

        let e = one_error("layers = [{ conv = \"filters\", kernel = 3 }]\n");
        assert!(e.contains("only a block's layers take parameters"), "{e}");

        // (and "basic", now unused, is reported too)
        let e = read("layers = [{ block = \"basc\" }]\n[blocks.basic]\nlayers = [\"relu\"]\n").1[0].clone();
        assert!(
            e.contains("there is no block \"basc\"") && e.contains("did you mean `basic`?"),
            "{e}"
        );

        let e = one_error(
            "layers = [{ block = \"a\" }]\n[blocks.a]\nlayers = [{ block = \"b\" }]\n[blocks.b]\nlayers = [{ block = \"a\" }]\n",
        );
        assert!(
            e.contains("block \"a\" uses itself: \"a\" -> \"b\" -> \"a\""),
            "{e}"
        );

        let e = one_error(
            "layers = [{ block = \"a\", filtres = 3 }]\n[blocks.a]\nlayers = [{ conv = \"filters\", kernel = 3 }]\ndefaults = { filters = 4 }\n",
        );
        assert!(
            e.contains("block \"a\" has no parameter `filtres`") && e.contains("did you mean `filters`?"),
            "{e}"
        );

        let e = one_error(
            "layers = [{ block = \"a\" }]\n[blocks.a]\nlayers = [{ conv = \"filters\", kernel = 3 }]\n",
        );
        assert!(e.contains("parameter `filters` has no value"), "{e}");

        let e = one_error(
            "layers = [{ conv = 8, kernel = 3 }, { block = \"a\" }]\n[blocks.a]\nlayers = [{ conv = 16, kernel = 3 }]\nresidual = true\n",
        );
        assert!(
            e.contains("block \"a\" changes the shape of its input (8 channels to 16 channels)"),
            "{e}"
        );
        assert!(e.contains("add `projection = ["), "{e}");

        let e = one_error("layers = [{ maxpool = 2, dense = 3 }]\n");
        assert!(
            e.contains("a layer has one kind, this one has maxpool and dense"),
            "{e}"
        );
    }

    #[test]
    fn nothing_is_dropped_or_left_unchecked() {
        // A table without a known kind, whatever its keys, is an error.
        for layer in ["{ foo = 2 }", "{}", "{ kernel = 3 }", "{ relu = true }"] {
            let e = one_error(&format!("layers = [{layer}, \"flatten\"]\n"));
            assert!(e.contains("a layer table needs one of the keys"), "{layer}: {e}");
        }
        let e = one_error("layers = [{ sigmoid = 1 }]\n");
        assert!(
            e.contains("\"sigmoid\" takes no settings: write it as the string \"sigmoid\""),
            "{e}"
        );
        // A block defined and never used (a misspelt override, say).
        let e = one_error(
            "layers = [{ block = \"basic\" }]\n[blocks.basic]\nlayers = [\"relu\"]\n[blocks.basci]\nlayers = [\"relu\"]\n",
        );
        assert!(
            e.contains("block \"basci\" is defined but never used") && e.contains("did you mean `basic`?"),
            "{e}"
        );
        // A default no use reads.
        let e = one_error(
            "layers = [{ block = \"a\" }]\n[blocks.a]\nlayers = [{ conv = 8, kernel = 3, stride = \"stride\" }]\ndefaults = { stride = 1, strid = 2 }\n",
        );
        assert!(e.contains("default `strid` is never read by block \"a\""), "{e}");
        // A bad value passed to a block is reported where it is passed.
        let e = one_error(
            "layers = [{ block = \"a\", filters = 8 },\n  { block = \"a\", filters = 0 }]\n[blocks.a]\nlayers = [{ conv = \"filters\", kernel = 3 }]\n",
        );
        assert!(
            e.contains("filters 0 (parameter `filters` of block \"a\") is outside 1..=65536"),
            "{e}"
        );
        assert!(e.contains("/p/model.toml:2:"), "{e}");
        // Expansion is bounded.
        let e = one_error(
            "layers = [{ block = \"a\", repeat = 256 }]\n[blocks.a]\nlayers = [{ block = \"b\", repeat = 256 }]\n[blocks.b]\nlayers = [\"relu\"]\n",
        );
        assert!(
            e.contains("more than 10000 layers once its blocks are expanded"),
            "{e}"
        );
        // An empty projection undoes one, even without residual.
        let (_, errors) =
            read("layers = [{ block = \"a\" }]\n[blocks.a]\nlayers = [\"relu\"]\nprojection = []\n");
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn the_key_ignores_names_so_a_preset_written_out_is_the_preset() {
        let (by_hand, errors) = read(crate::models::presets::Arch::ResNet18.text());
        assert!(errors.is_empty(), "{errors:#?}");
        let preset = crate::models::presets::Arch::ResNet18.graph(1);
        assert_eq!(by_hand.key(), preset.key());
        assert_ne!(
            serde_json::to_value(&by_hand).unwrap(),
            serde_json::to_value(&preset).unwrap()
        );
    }

    #[test]
    fn a_conv_has_no_bias_before_batch_norm_unless_it_says_so() {
        let (graph, errors) = read(
            "layers = [{ conv = 8, kernel = 3 }, \"batchnorm\", { conv = 8, kernel = 3, bias = true }, \"batchnorm\", { conv = 8, kernel = 1 }]\n",
        );
        assert!(errors.is_empty(), "{errors:#?}");
        let biases: Vec<bool> = graph
            .layers
            .iter()
            .filter_map(|l| {
                if let Op::Conv { bias, .. } = l.op {
                    Some(bias)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(biases, [false, true, true]);
    }

    #[test]
    fn formatting_and_comments_change_nothing_and_the_graph_is_the_key() {
        let (a, _) = read("layers = [{ conv = 8, kernel = 3 }, \"relu\", \"flatten\"]\n");
        let (b, _) = read(
            "# a comment\nlayers = [\n  { kernel = 3, conv = 8, stride = 1 },   # same\n  \"relu\",\n  \"flatten\",\n]\n",
        );
        let (c, _) = read("layers = [{ conv = 8, kernel = 3 }, \"relu\", { dropout = 0.1 }, \"flatten\"]\n");
        let json = |g: &Network| serde_json::to_string(g).unwrap();
        assert_eq!(json(&a), json(&b));
        assert_ne!(json(&a), json(&c));
    }
}
