//! The stage graph of one or more pipelines. Nodes are in a topological order:
//! each pipeline's stages in data-flow order, pipelines one after another.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::DagError;
use crate::config::{ConfigError, ConfigErrorKind, ConfigErrors};
use crate::pipeline::Pipeline;
use crate::stages::{MemberInfo, Stage, StageKind};

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
    /// Each pipeline's nodes, which are consecutive: found without a scan of
    /// all nodes, so planning a sweep of thousands of variants stays linear.
    spans: Vec<std::ops::Range<usize>>,
}

impl Graph {
    /// Builds the graph: each stage depends on every node of its pipeline whose
    /// kind it reads; a stage that reads other pipelines (a report) depends on
    /// those pipelines' nodes instead, and must come after them. A stage whose
    /// upstream is missing is an error, never a silently dropped edge.
    pub fn new(mut pipelines: Vec<Pipeline>) -> Result<Graph, DagError> {
        let members = link_members(&mut pipelines)?;
        let mut nodes: Vec<Node> = Vec::new();
        let mut spans: Vec<std::ops::Range<usize>> = Vec::with_capacity(pipelines.len());
        for (index, pipeline) in pipelines.iter().enumerate() {
            let labels = labels(pipeline);
            let first = nodes.len();
            for (position, stage) in pipeline.stages.iter().enumerate() {
                let kind = stage.kind();
                let sources: Vec<usize> = match members.get(&(index, position)) {
                    Some(listed) => listed.clone(),
                    None => vec![index],
                };
                let mut deps = Vec::new();
                for &source in &sources {
                    // Members come earlier (their spans are known); the stage's own
                    // pipeline is the one being built.
                    let span = spans.get(source).cloned().unwrap_or(first..nodes.len());
                    for needed in kind.upstream() {
                        // A member lacking a stage was refused, with its place, when linked.
                        let found: Vec<usize> = span.clone().filter(|&n| nodes[n].kind == needed).collect();
                        if found.is_empty() && !kind.def().optional_reads.contains(&needed) {
                            return Err(DagError::MissingUpstream {
                                pipeline: pipelines[source].name.clone(),
                                stage: kind,
                                needs: needed,
                            });
                        }
                        deps.extend(found);
                    }
                }
                nodes.push(Node {
                    pipeline: index,
                    stage: position,
                    kind,
                    label: labels[position].clone(),
                    deps,
                });
            }
            spans.push(first..nodes.len());
        }
        Ok(Graph {
            pipelines,
            nodes,
            spans,
        })
    }

    /// What a stage reading pipeline `pipeline` is told of it.
    pub fn describe(&self, pipeline: usize) -> MemberInfo {
        member_info(&self.pipelines[pipeline])
    }

    /// Whether another pipeline's stage reads this pipeline (it is a report's member).
    pub fn is_member(&self, pipeline: usize) -> bool {
        !self.reports_of(pipeline).is_empty()
    }

    /// The reports (pipeline indices) that read pipeline `pipeline`.
    pub fn reports_of(&self, pipeline: usize) -> Vec<usize> {
        let mut reports: Vec<usize> = self
            .nodes
            .iter()
            .filter(|node| {
                node.pipeline != pipeline && node.deps.iter().any(|&d| self.nodes[d].pipeline == pipeline)
            })
            .map(|node| node.pipeline)
            .collect();
        reports.dedup();
        reports
    }

    /// Says, for an error about a report's member, which report lists it.
    pub fn in_report_context(&self, error: DagError) -> DagError {
        let Some(member) = error
            .pipeline()
            .and_then(|name| self.pipelines.iter().position(|p| p.name == name))
        else {
            return error;
        };
        match self.reports_of(member).first() {
            Some(&report) => DagError::InReport {
                member: self.pipelines[member].name.clone(),
                report: self.pipelines[report].name.clone(),
                file: self.pipelines[report].file.clone(),
                source: Box::new(error),
            },
            None => error,
        }
    }

    /// How node `n` names its upstream node `dep`: by label in its own
    /// pipeline, as `<pipeline>/<label>` in another.
    pub fn dep_label(&self, n: usize, dep: usize) -> String {
        let (node, upstream) = (&self.nodes[n], &self.nodes[dep]);
        if node.pipeline == upstream.pipeline {
            upstream.label.clone()
        } else {
            format!("{}/{}", self.pipelines[upstream.pipeline].name, upstream.label)
        }
    }

    pub fn stage(&self, node: usize) -> &dyn Stage {
        let node = &self.nodes[node];
        self.pipelines[node.pipeline].stages[node.stage].as_ref()
    }

    pub fn nodes_of(&self, pipeline: usize) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.spans[pipeline].clone()
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

    /// The width stage labels are padded to in listings: 10, or the longest
    /// label (`train#seed-42`).
    pub fn label_width(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.label.len())
            .max()
            .unwrap_or(0)
            .max(10)
    }

    /// Renders the graph of each pipeline as indented text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (index, pipeline) in self.pipelines.iter().enumerate() {
            out.push_str(&format!("{} ({})\n", pipeline.name, pipeline.file.display()));
            for n in self.nodes_of(index) {
                let node = &self.nodes[n];
                let deps: Vec<String> = node.deps.iter().map(|&d| self.dep_label(n, d)).collect();
                if deps.is_empty() {
                    out.push_str(&format!("  {}\n", node.label));
                } else {
                    out.push_str(&format!(
                        "  {:<width$} <- {}\n",
                        node.label,
                        deps.join(", "),
                        width = self.label_width()
                    ));
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

/// Each node's label: the stage kind, plus `#<instance>` when the pipeline has
/// several instances of it (`train#seed-1`), or `#<n>` for unnamed ones.
fn labels(pipeline: &Pipeline) -> Vec<String> {
    let kinds: Vec<StageKind> = pipeline.stages.iter().map(|s| s.kind()).collect();
    kinds
        .iter()
        .zip(&pipeline.stages)
        .enumerate()
        .map(|(position, (kind, stage))| {
            let instances = kinds.iter().filter(|k| *k == kind).count();
            let earlier = kinds[..position].iter().filter(|k| *k == kind).count();
            match (instances, stage.instance()) {
                (1, _) => kind.name().to_string(),
                (_, Some(name)) => format!("{kind}#{name}"),
                (_, None) => format!("{kind}#{}", earlier + 1),
            }
        })
        .collect()
}

/// What a stage reading other pipelines is told of each.
fn member_info(pipeline: &Pipeline) -> MemberInfo {
    let labels = labels(pipeline);
    MemberInfo {
        name: pipeline.name.clone(),
        description: pipeline.description.clone(),
        toml: pipeline.toml.clone(),
        toml_blake3: blake3::hash(pipeline.toml.as_bytes()).to_hex().to_string(),
        stages: labels
            .into_iter()
            .zip(&pipeline.stages)
            .map(|(label, stage)| (label, stage.config()))
            .collect(),
        has_members: pipeline.stages.iter().any(|s| !s.member_files().is_empty()),
    }
}

/// Finds the pipelines each stage lists (they must be loaded earlier in
/// `pipelines`), hands the stage what it needs of them, and returns the member
/// pipelines' indices by (pipeline, stage position).
fn link_members(pipelines: &mut [Pipeline]) -> Result<BTreeMap<(usize, usize), Vec<usize>>, DagError> {
    let canonical: Vec<PathBuf> = pipelines
        .iter()
        .map(|p| p.file.canonicalize().unwrap_or_else(|_| p.file.clone()))
        .collect();
    let mut links = BTreeMap::new();
    for index in 0..pipelines.len() {
        for position in 0..pipelines[index].stages.len() {
            let files = pipelines[index].stages[position].member_files();
            if files.is_empty() {
                continue;
            }
            let mut members = Vec::new();
            for (file, at) in &files {
                let wanted = file.canonicalize().unwrap_or_else(|_| file.clone());
                // One pipeline, or every variant of a sweep.
                let all_found: Vec<usize> =
                    (0..canonical.len()).filter(|&i| canonical[i] == wanted).collect();
                let found = all_found.first().copied();
                let refusal = if all_found.contains(&index) {
                    Some("a report cannot list its own file")
                } else if found.is_some_and(|m| member_info(&pipelines[m]).has_members) {
                    Some("it is itself a report; a report lists pipelines, not other reports")
                } else {
                    None
                };
                if let Some(why) = refusal {
                    let kind = ConfigErrorKind::InvalidValue {
                        key: format!("{}.pipelines", pipelines[index].stages[position].kind()),
                        message: format!("{}: {why}", file.display()),
                    };
                    return Err(ConfigErrors(vec![ConfigError::new(kind, at)]).into());
                }
                if let Some(member) = found {
                    let kinds: Vec<StageKind> = pipelines[member].stages.iter().map(|s| s.kind()).collect();
                    let needs = pipelines[index].stages[position].kind().required_upstream();
                    if let Some(missing) = needs.iter().find(|k| !kinds.contains(k)) {
                        let kind = ConfigErrorKind::InvalidValue {
                            key: format!("{}.pipelines", pipelines[index].stages[position].kind()),
                            message: format!(
                                "pipeline `{}` ({}) has no [{missing}], which a report reads",
                                pipelines[member].name,
                                file.display()
                            ),
                        };
                        let help = format!("a report reads {}", {
                            let names: Vec<String> = needs.iter().map(|k| format!("[{k}]")).collect();
                            names.join(", ")
                        });
                        return Err(ConfigErrors(vec![ConfigError::new(kind, at).with_help(help)]).into());
                    }
                }
                if found.is_none_or(|m| m >= index) {
                    return Err(DagError::MemberNotLoaded {
                        report: pipelines[index].name.clone(),
                        file: file.clone(),
                    });
                }
                members.extend(all_found);
            }
            let infos = members.iter().map(|&m| member_info(&pipelines[m])).collect();
            let this = member_info(&pipelines[index]);
            pipelines[index].stages[position]
                .link_members(this, infos)
                .map_err(|error| ConfigErrors(vec![error]))?;
            links.insert((index, position), members);
        }
    }
    Ok(links)
}
