//! The stage graph of one or more pipelines. Nodes are in a topological order:
//! each pipeline's stages in data-flow order, pipelines one after another.

use crate::config::Pipeline;
use crate::stages::{Stage, StageKind, stages_of};

pub struct Node {
    pub pipeline: usize,
    pub stage: Box<dyn Stage>,
    /// Indices of the nodes whose outputs this one reads.
    pub deps: Vec<usize>,
}

impl Node {
    pub fn kind(&self) -> StageKind {
        self.stage.kind()
    }
}

pub struct Graph {
    pub pipelines: Vec<Pipeline>,
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Builds the graph. Pipelines are validated when loaded, so every upstream
    /// a stage needs is present.
    pub fn new(pipelines: Vec<Pipeline>) -> Graph {
        let mut nodes: Vec<Node> = Vec::new();
        for (index, pipeline) in pipelines.iter().enumerate() {
            let first = nodes.len();
            for stage in stages_of(pipeline) {
                let deps = stage
                    .kind()
                    .upstream()
                    .iter()
                    .filter_map(|needed| (first..nodes.len()).find(|&n| nodes[n].kind() == *needed))
                    .collect();
                nodes.push(Node {
                    pipeline: index,
                    stage,
                    deps,
                });
            }
        }
        Graph { pipelines, nodes }
    }

    pub fn nodes_of(&self, pipeline: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&n| self.nodes[n].pipeline == pipeline)
    }

    /// The node and everything it reads from, directly or not.
    pub fn with_ancestors(&self, node: usize) -> Vec<usize> {
        let mut found = vec![node];
        let mut i = 0;
        while i < found.len() {
            for &dep in &self.nodes[found[i]].deps {
                if !found.contains(&dep) {
                    found.push(dep);
                }
            }
            i += 1;
        }
        found
    }

    /// Renders the graph of each pipeline as indented text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (index, pipeline) in self.pipelines.iter().enumerate() {
            out.push_str(&format!("{} ({})\n", pipeline.name, pipeline.file.display()));
            for n in self.nodes_of(index) {
                let node = &self.nodes[n];
                let deps: Vec<&str> = node.deps.iter().map(|&d| self.nodes[d].kind().name()).collect();
                if deps.is_empty() {
                    out.push_str(&format!("  {}\n", node.kind()));
                } else {
                    out.push_str(&format!("  {:<10} <- {}\n", node.kind().name(), deps.join(", ")));
                }
            }
        }
        out
    }

    /// Renders the graph in Graphviz DOT, one cluster per pipeline.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph fkp {\n  rankdir=LR;\n  node [shape=box];\n");
        for (index, pipeline) in self.pipelines.iter().enumerate() {
            out.push_str(&format!(
                "  subgraph cluster_{index} {{\n    label=\"{}\";\n",
                pipeline.name
            ));
            for n in self.nodes_of(index) {
                out.push_str(&format!("    n{n} [label=\"{}\"];\n", self.nodes[n].kind()));
            }
            out.push_str("  }\n");
        }
        for (n, node) in self.nodes.iter().enumerate() {
            for dep in &node.deps {
                out.push_str(&format!("  n{dep} -> n{n};\n"));
            }
        }
        out.push_str("}\n");
        out
    }
}
