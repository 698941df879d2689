//! Working out a stage's cache key and state, shared by `run`, `status` and `clean`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::DagError;
use super::graph::Graph;
use super::hashing::FileHasher;
use super::key::{Change, FileDigest, KeyInputs};
use super::store::{Manifest, OutputFile, PipelineRecord, Store, hash_outputs};
use crate::workspace::Workspace;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Cached,
    Stale,
    Missing,
    /// Not cached, but a run of this very key stopped midway left a checkpoint
    /// that the next run resumes from (shown by `fkp status` only).
    Partial,
}

impl StateName {
    pub fn as_str(&self) -> &'static str {
        match self {
            StateName::Cached => "cached",
            StateName::Stale => "stale",
            StateName::Missing => "missing",
            StateName::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone)]
pub enum State {
    /// Its cache entry exists.
    Cached(Box<Manifest>),
    /// An earlier run of this pipeline built it from other inputs.
    Stale(Vec<Change>),
    /// Never built for this pipeline.
    Missing,
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Cached(_) => StateName::Cached,
            State::Stale(_) => StateName::Stale,
            State::Missing => StateName::Missing,
        }
    }

    pub fn reason(&self) -> Option<String> {
        match self {
            State::Cached(_) => None,
            State::Stale(changes) => Some(super::key::describe(changes)),
            State::Missing => Some("never built".to_string()),
        }
    }
}

/// Where the upstream stages stand.
pub enum Upstream {
    /// Every upstream output exists: the hash of what is read of each, by node label.
    Ready(BTreeMap<String, String>),
    /// This upstream node has not been built (yet), so the key cannot be known.
    NotBuilt(String),
}

impl Upstream {
    /// The upstream state of `node`, given the outputs of every node built so far.
    /// Only the upstream files the stage reads count, so a change to an output
    /// it ignores (say, adding `ingest.test`) does not rerun it.
    pub fn of<'a>(
        graph: &Graph,
        node: usize,
        outputs: impl Fn(usize) -> Option<&'a [OutputFile]>,
    ) -> Upstream {
        let mut hashes = BTreeMap::new();
        let reads = graph.nodes[node].kind.def().reads;
        for &dep in &graph.nodes[node].deps {
            let dep_node = &graph.nodes[dep];
            let names: Vec<&str> = reads
                .iter()
                .filter(|(kind, _)| *kind == dep_node.kind)
                .map(|(_, name)| *name)
                .collect();
            match outputs(dep) {
                Some(files) => {
                    hashes.insert(graph.dep_label(node, dep), hash_outputs(files, Some(&names)));
                }
                None => return Upstream::NotBuilt(graph.dep_label(node, dep)),
            }
        }
        Upstream::Ready(hashes)
    }
}

pub struct Resolution {
    /// Known once every upstream output exists.
    pub inputs: Option<KeyInputs>,
    pub key: Option<String>,
    /// Known before the upstream outputs: the key's inputs with each upstream
    /// node's plan in place of its output hash. Outputs are a function of the
    /// key, so two nodes with one plan get one key: a build can be named (and
    /// shared, and found again) before what it reads exists.
    pub plan: Option<String>,
    pub state: State,
}

/// Loads each pipeline's record (in this workspace) once and hashes input files
/// through the fast path.
pub struct Resolver<'a> {
    pub store: &'a Store,
    workspace: &'a Workspace,
    hasher: FileHasher,
    records: BTreeMap<String, PipelineRecord>,
    /// The plan of every node resolved so far (nodes resolve in graph order).
    plans: BTreeMap<usize, String>,
}

impl<'a> Resolver<'a> {
    pub fn new(store: &'a Store, workspace: &'a Workspace) -> Self {
        Resolver {
            hasher: FileHasher::load(store.root()),
            store,
            workspace,
            records: BTreeMap::new(),
            plans: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, pipeline: &str) -> &mut PipelineRecord {
        let (store, workspace) = (self.store, self.workspace);
        self.records
            .entry(pipeline.to_string())
            .or_insert_with(|| store.record(workspace, pipeline).unwrap_or_default())
    }

    pub fn resolve(
        &mut self,
        graph: &Graph,
        node: usize,
        upstream: Upstream,
    ) -> Result<Resolution, DagError> {
        let node_ref = &graph.nodes[node];
        let stage = graph.stage(node);
        let pipeline = &graph.pipelines[node_ref.pipeline];
        let kind = node_ref.kind;
        let previous = self.record(&pipeline.name).stages.get(&node_ref.label).cloned();
        let mut files = BTreeMap::new();
        for input in stage.file_inputs() {
            let hash = self.hasher.hash(&input.path).map_err(|source| DagError::Input {
                pipeline: pipeline.name.clone(),
                stage: kind,
                role: input.role.to_string(),
                path: input.path.clone(),
                source,
            })?;
            files.insert(
                input.role.to_string(),
                FileDigest {
                    path: input.path,
                    hash,
                },
            );
        }
        let mut inputs = KeyInputs {
            stage: kind,
            version: stage.version(),
            config: stage.config(),
            files,
            upstream: BTreeMap::new(),
        };
        let plan_upstream: Option<BTreeMap<String, String>> = node_ref
            .deps
            .iter()
            .map(|&d| {
                let plan = self.plans.get(&d)?;
                Some((graph.dep_label(node, d), format!("plan:{plan}")))
            })
            .collect();
        let plan = plan_upstream.map(|upstream| {
            inputs.upstream = upstream;
            inputs.key()
        });
        if let Some(plan) = &plan {
            self.plans.insert(node, plan.clone());
        }
        inputs.upstream = match upstream {
            Upstream::Ready(hashes) => hashes,
            Upstream::NotBuilt(stage) => {
                let state = match previous {
                    Some(_) => State::Stale(vec![Change::Upstream { stage }]),
                    None => State::Missing,
                };
                return Ok(Resolution {
                    inputs: None,
                    key: None,
                    plan,
                    state,
                });
            }
        };
        let key = inputs.key();
        let state = match (self.store.manifest(kind, &key), previous) {
            (Some(manifest), _) => State::Cached(Box::new(manifest)),
            (None, Some(previous)) => {
                let mut changes = inputs.changes_since(&previous);
                if changes.is_empty() {
                    changes.push(match self.store.entry_dir(kind, &key).exists() {
                        true => Change::EntryDamaged,
                        false => Change::EntryRemoved,
                    });
                }
                State::Stale(changes)
            }
            (None, None) => State::Missing,
        };
        Ok(Resolution {
            inputs: Some(inputs),
            key: Some(key),
            plan,
            state,
        })
    }

    /// Saves the file-hash fast path, so the next run need not rehash. Only
    /// commands that hold the workspace lock call this.
    pub fn save_hashes(&mut self) -> Result<(), DagError> {
        self.hasher.save().map_err(|source| DagError::Cache {
            path: self.store.root().to_path_buf(),
            source,
        })
    }

    /// Saves a pipeline's record.
    pub fn save_record(&mut self, pipeline: &str) -> Result<(), DagError> {
        let record = self.record(pipeline).clone();
        self.store
            .save_record(self.workspace, pipeline, &record)
            .map_err(|source| DagError::Cache {
                path: self.store.root().to_path_buf(),
                source,
            })
    }
}
