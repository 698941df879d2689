//! The stage graph of one or more pipelines. Nodes are in a topological order:
//! each pipeline's stages in data-flow order, pipelines one after another.

use super::DagError;
use crate::pipeline::Pipeline;
use crate::stages::{Stage, StageKind};

pub struct Node {
    pub pipeline: usize,
    /// Index into the pipeline's `stages`.
    stage: usize,
    pub kind: StageKind,
    /// Names the node in its pipeline: the stage kind, plus `#<n>` when the
    /// pipeline has several instances of it. Run records are kept by label.
    pub label: String,
    /// Indices of the nodes whose outputs this one reads.
    pub deps: Vec<usize>,
}

pub struct Graph {
    pub pipelines: Vec<Pipeline>,
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Builds the graph: each stage depends on every node of its pipeline whose
    /// kind it reads. A stage whose upstream is missing is an error, never a
    /// silently dropped edge.
    pub fn new(pipelines: Vec<Pipeline>) -> Result<Graph, DagError> {
        let mut nodes: Vec<Node> = Vec::new();
        for (index, pipeline) in pipelines.iter().enumerate() {
            let first = nodes.len();
            for (position, stage) in pipeline.stages.iter().enumerate() {
                let kind = stage.kind();
                let mut deps = Vec::new();
                for needed in kind.upstream() {
                    let found: Vec<usize> = (first..nodes.len())
                        .filter(|&n| nodes[n].kind == needed)
                        .collect();
                    if found.is_empty() {
                        return Err(DagError::MissingUpstream {
                            pipeline: pipeline.name.clone(),
                            stage: kind,
                            needs: needed,
                        });
                    }
                    deps.extend(found);
                }
                let instances = pipeline.stages.iter().filter(|s| s.kind() == kind).count();
                let earlier = pipeline.stages[..position]
                    .iter()
                    .filter(|s| s.kind() == kind)
                    .count();
                let label = if instances > 1 {
                    format!("{kind}#{}", earlier + 1)
                } else {
                    kind.name().to_string()
                };
                nodes.push(Node {
                    pipeline: index,
                    stage: position,
                    kind,
                    label,
                    deps,
                });
            }
        }
        Ok(Graph { pipelines, nodes })
    }

    pub fn stage(&self, node: usize) -> &dyn Stage {
        let node = &self.nodes[node];
        self.pipelines[node.pipeline].stages[node.stage].as_ref()
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
                let deps: Vec<&str> = node.deps.iter().map(|&d| self.nodes[d].label.as_str()).collect();
                if deps.is_empty() {
                    out.push_str(&format!("  {}\n", node.label));
                } else {
                    out.push_str(&format!("  {:<10} <- {}\n", node.label, deps.join(", ")));
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
                out.push_str(&format!("    n{n} [label=\"{}\"];\n", self.nodes[n].label));
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
