//! `fkp model`: a pipeline's network as a table in the manner of Keras'
//! `summary()` (each layer's output shape, parameters and multiply-adds, then
//! the totals), or as a Graphviz picture with each block use a cluster. Runs
//! nothing; the image side comes from `[model] side` or the pipeline's cached
//! ingest output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{Context, Error, Exit, print_out};
use crate::dag::{self, DagError, Graph};
use crate::models::graph::shape::{self, Row, Summary};
use crate::models::graph::{Layer, Op, Shortcut};
use crate::models::{Network, shape_error};
use crate::render::{Cell, ReportTable};
use crate::stages::StageKind;
use crate::stages::ingest::{RULES_FILE, ReadingRules};
use crate::workspace::Workspace;

#[derive(Args)]
pub(super) struct ModelArgs {
    /// A pipeline file (TOML) with [model].
    #[arg(value_name = "PIPELINE.toml")]
    pipeline: PathBuf,
    /// Print Graphviz DOT (blocks drawn as clusters) instead of a table.
    #[arg(long)]
    dot: bool,
}

pub(super) fn execute(args: ModelArgs, context: &Context) -> Result<Exit, Error> {
    let summary = summarise(&args.pipeline, &context.overrides, &context.workspace)?;
    print_out(&if args.dot {
        summary.to_dot()
    } else {
        summary.to_text()
    })?;
    Ok(Exit::Success)
}

/// The output width assumed when the data has not been read: Kaggle's 15 keypoints.
const KAGGLE_OUTPUTS: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum ModelSummaryError {
    #[error(transparent)]
    Dag(#[from] DagError),
    #[error("pipeline `{0}` has no [model]")]
    NoModel(String),
    #[error(
        "the image side of pipeline `{0}` is not known yet: run `fkp run --until ingest {1}` first, \
         or set `side` in [model]"
    )]
    NoSide(String, PathBuf),
    #[error("{0}")]
    Shape(String),
}

/// A network, the sizes it was followed with, and where they came from.
pub struct ModelSummary {
    pub pipeline: String,
    pub network: Network,
    pub summary: Summary,
    pub side: usize,
    pub outputs: usize,
    /// Where the side and output width came from, for the reader.
    pub sizes_from: String,
}

/// Follows the network of the pipeline in `file` through its image side.
pub fn summarise(
    file: &Path,
    overrides: &[crate::config::Override],
    workspace: &Workspace,
) -> Result<ModelSummary, ModelSummaryError> {
    let graph = Graph::load_with(&[file.to_path_buf()], overrides)?;
    let pipeline = &graph.pipelines[0];
    let Some(model) = pipeline.stage(StageKind::Train).and_then(|s| s.model()) else {
        return Err(ModelSummaryError::NoModel(pipeline.name.clone()));
    };
    let rules = ingested_rules(&graph, workspace);
    let (side, outputs, sizes_from) = match (model.side, rules) {
        (Some(side), Some(rules)) => (
            side,
            rules.coordinate_names.len(),
            "[model] side; outputs from the ingested data",
        ),
        (Some(side), None) => (
            side,
            KAGGLE_OUTPUTS,
            "[model] side; 30 outputs (Kaggle's 15 keypoints) assumed",
        ),
        (None, Some(rules)) => (rules.side, rules.coordinate_names.len(), "the ingested data"),
        (None, None) => {
            return Err(ModelSummaryError::NoSide(
                pipeline.name.clone(),
                file.to_path_buf(),
            ));
        }
    };
    let summary = shape::infer(&model.graph, side, Some(outputs))
        .map_err(|e| ModelSummaryError::Shape(shape_error(&e).to_string()))?;
    Ok(ModelSummary {
        pipeline: pipeline.name.clone(),
        network: model.graph.clone(),
        summary,
        side,
        outputs,
        sizes_from: sizes_from.to_string(),
    })
}

/// The reading rules of the pipeline's ingest output, when it is cached. A
/// pipeline whose input is not there yet has none (its status cannot be known).
fn ingested_rules(graph: &Graph, workspace: &Workspace) -> Option<ReadingRules> {
    let status = dag::status(graph, workspace).ok()?;
    let entry = status.pipelines[0]
        .stages
        .iter()
        .find(|s| s.stage == StageKind::Ingest.name() && s.state == dag::StateName::Cached)
        .and_then(|s| s.entry.clone())?;
    ReadingRules::read(&entry.join(dag::DATA_DIR).join(RULES_FILE)).ok()
}

impl ModelSummary {
    pub fn to_text(&self) -> String {
        let mut table = ReportTable::new(["layer", "kind", "output", "parameters", "mult-adds"], 0);
        table.push(vec![
            Cell::Text("input".into()),
            Cell::Text(match self.network.channels {
                1 => "grey image".into(),
                c => format!("grey image repeated to {c} channels"),
            }),
            Cell::Text(self.summary.input.to_string()),
            Cell::Text(String::new()),
            Cell::Text(String::new()),
        ]);
        for row in &self.summary.rows {
            table.push(vec![
                Cell::Text(format!("{}{}", "  ".repeat(row.depth), row.path)),
                Cell::Text(row.what.clone()),
                Cell::Text(row.output.to_string()),
                Cell::Text(thousands(row.parameters as u64)),
                Cell::Text(thousands(row.mult_adds)),
            ]);
        }
        let bytes = self.summary.parameters as f64 * 4.0;
        let size = if bytes >= 1e6 {
            format!("{:.1} MB", bytes / 1e6)
        } else {
            format!("{:.1} kB", bytes / 1e3)
        };
        format!(
            "{} network of pipeline `{}`, for {side}x{side} images and {} outputs ({}):\n\n{}\n\
             parameters: {} ({size} of f32 weights)\n\
             multiply-adds per image: {}\n",
            self.network.name,
            self.pipeline,
            self.outputs,
            self.sizes_from,
            table.to_terminal().trim_end(),
            thousands(self.summary.parameters as u64),
            thousands(self.summary.mult_adds),
            side = self.side,
        )
    }

    /// Graphviz DOT: one node per layer, each block use a cluster, and the
    /// shortcut of a residual block an edge into its sum.
    pub fn to_dot(&self) -> String {
        let rows: HashMap<&str, &Row> = self.summary.rows.iter().map(|r| (r.path.as_str(), r)).collect();
        let mut dot = Dot {
            out: String::new(),
            rows,
            next_cluster: 0,
        };
        dot.out.push_str(&format!(
            "digraph model {{\n  label=\"{} ({}x{}, {} parameters)\";\n  node [shape=box, fontsize=10];\n",
            escape(&self.network.name),
            self.side,
            self.side,
            thousands(self.summary.parameters as u64)
        ));
        dot.out.push_str(&format!(
            "  input [label=\"input\\n{}\", shape=ellipse];\n",
            self.summary.input
        ));
        let last = dot.list("layers", &self.network.layers, "input".into(), 1);
        let last = dot.list("head", &self.network.head, last, 1);
        // A final soft_argmax gives the coordinates: no output layer.
        if !self.network.reads_coordinates() {
            dot.node("output", &format!("dense {}", self.outputs), 1);
            dot.edge(&last, "output", 1);
        }
        dot.out.push_str("}\n");
        dot.out
    }
}

struct Dot<'a> {
    out: String,
    rows: HashMap<&'a str, &'a Row>,
    next_cluster: usize,
}

impl Dot<'_> {
    fn id(path: &str) -> String {
        format!("\"{path}\"")
    }

    fn node(&mut self, path: &str, what: &str, depth: usize) {
        let shape = self
            .rows
            .get(path)
            .map(|r| r.output.to_string())
            .unwrap_or_default();
        self.out.push_str(&format!(
            "{}{} [label=\"{}\\n{}\\n{}\"];\n",
            "  ".repeat(depth),
            Self::id(path),
            escape(path),
            escape(what),
            shape
        ));
    }

    fn edge(&mut self, from: &str, to: &str, depth: usize) {
        self.out.push_str(&format!(
            "{}{} -> {};\n",
            "  ".repeat(depth),
            Self::id(from),
            Self::id(to)
        ));
    }

    /// Draws `layers` after the node `from`; returns the last node.
    fn list(&mut self, path: &str, layers: &[Layer], mut from: String, depth: usize) -> String {
        for (i, layer) in layers.iter().enumerate() {
            let path = format!("{path}.{i}");
            match &layer.op {
                Op::Block { name, uses } => {
                    for (r, block_use) in uses.iter().enumerate() {
                        let use_path = format!("{path}.{r}");
                        self.out.push_str(&format!(
                            "{}subgraph cluster_{} {{\n{}  label=\"{} {}\";\n",
                            "  ".repeat(depth),
                            self.next_cluster,
                            "  ".repeat(depth),
                            escape(name),
                            use_path
                        ));
                        self.next_cluster += 1;
                        let input = from.clone();
                        let body = self.list(&format!("{use_path}.body"), &block_use.body, from, depth + 1);
                        let joined = match &block_use.shortcut {
                            Shortcut::None => body,
                            shortcut => {
                                let sum = format!("{use_path}.add");
                                self.node(&sum, "add shortcut", depth + 1);
                                self.edge(&body, &sum, depth + 1);
                                let side = match shortcut {
                                    Shortcut::Projection { layers } => {
                                        self.list(&format!("{use_path}.projection"), layers, input, depth + 1)
                                    }
                                    _ => input,
                                };
                                self.edge(&side, &sum, depth + 1);
                                sum
                            }
                        };
                        from = self.list(
                            &format!("{use_path}.after_add"),
                            &block_use.after_add,
                            joined,
                            depth + 1,
                        );
                        self.out.push_str(&format!("{}}}\n", "  ".repeat(depth)));
                    }
                }
                op => {
                    self.node(&path, &op.describe(), depth);
                    self.edge(&from, &path, depth);
                    from = path;
                }
            }
        }
        from
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// 11185630 as `11,185,630`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(11_185_630), "11,185,630");
    }
}
