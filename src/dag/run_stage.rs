//! `fkp run-stage`: what a Slurm job runs. Builds one node of one pipeline into
//! the cache, after checking that it builds what it was sent to (the plan, and
//! the key when the submitter knew it). Every node it reads must have its entry
//! already. It takes no workspace lock (the submitting run holds it) and writes
//! only its entry: records and reports are the submitting run's.

use super::DagError;
use super::build::StageBuild;
use super::cancel::Cancel;
use super::graph::Graph;
use super::resolve::{Resolver, State, Upstream};
use super::store::{DATA_DIR, Store};
use crate::console::Console;
use crate::stages::UpstreamOutput;
use crate::workspace::Workspace;

/// The node a job builds and what it was told to expect.
#[derive(Debug, Clone)]
pub struct StageJob {
    pub pipeline: String,
    /// The node's label (`train`, `train#seed-1`).
    pub label: String,
    pub plan: String,
    pub key: Option<String>,
    pub force: bool,
}

pub fn run_stage(
    graph: &Graph,
    workspace: &Workspace,
    job: &StageJob,
    console: &Console,
) -> Result<(), DagError> {
    let n = (0..graph.nodes.len())
        .find(|&n| {
            let node = &graph.nodes[n];
            node.label == job.label && graph.pipelines[node.pipeline].name == job.pipeline
        })
        .ok_or_else(|| DagError::NoSuchStage {
            pipeline: job.pipeline.clone(),
            label: job.label.clone(),
        })?;
    let store = Store::open(&workspace.cache_dir).map_err(|source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    })?;
    let mut resolver = Resolver::new(&store, workspace);
    let mut outputs = vec![None; graph.nodes.len()];
    let mut data_dirs = vec![None; graph.nodes.len()];
    let mut ancestors = graph.with_ancestors(n);
    // Graph order is topological: each node resolves after what it reads.
    ancestors.sort_unstable();
    let node = &graph.nodes[n];
    let pipeline = &graph.pipelines[node.pipeline].name;
    for m in ancestors {
        let resolution = resolver.resolve(graph, m, Upstream::of(graph, m, |d| outputs[d].as_deref()))?;
        if m != n {
            let State::Cached(manifest) = resolution.state else {
                return Err(DagError::UpstreamNotBuilt {
                    pipeline: pipeline.clone(),
                    stage: node.kind,
                    upstream: graph.dep_label(n, m),
                });
            };
            data_dirs[m] = Some(store.entry_dir(graph.nodes[m].kind, &manifest.key).join(DATA_DIR));
            outputs[m] = Some(manifest.outputs);
            continue;
        }
        let mismatch = |what, sent: &str, found: &str| DagError::JobMismatch {
            pipeline: pipeline.clone(),
            stage: node.kind,
            what,
            sent: sent.to_string(),
            found: found.to_string(),
        };
        let plan = resolution.plan.unwrap_or_default();
        if plan != job.plan {
            return Err(mismatch("plan", &job.plan, &plan));
        }
        let (Some(key), Some(inputs)) = (resolution.key, resolution.inputs) else {
            unreachable!("every upstream node has its entry");
        };
        if let Some(sent) = job.key.as_deref().filter(|sent| *sent != key) {
            return Err(mismatch("key", sent, &key));
        }
        let upstream: Vec<UpstreamOutput> = node
            .deps
            .iter()
            .filter_map(|&d| {
                data_dirs[d].clone().map(|data_dir| UpstreamOutput {
                    kind: graph.nodes[d].kind,
                    pipeline: graph.pipelines[graph.nodes[d].pipeline].name.clone(),
                    data_dir,
                })
            })
            .collect();
        console.status(&format!("{pipeline}: [{}] key {key}", node.label));
        let build = StageBuild {
            graph,
            n,
            key: &key,
            inputs: &inputs,
            upstream: &upstream,
            forced: job.force,
        };
        build.build(&store, console, &Cancel::default(), graph.label_width())?;
        return Ok(());
    }
    unreachable!("a node is among its own ancestors")
}
