//! `fkp push` and `fkp pull`: move the entries of pipelines between the local
//! cache and the remote one explicitly (`fkp run` fetches and uploads by
//! itself when a remote is set).

use super::DagError;
use super::graph::Graph;
use super::remote::{Fetched, Remote};
use super::resolve::{Resolver, State, Upstream};
use super::store::{OutputFile, Store};
use crate::console::Console;
use crate::workspace::{Workspace, WorkspaceLock};

/// What a push or pull did, entry by entry.
#[derive(Debug, Default)]
pub struct Transfer {
    /// Entries copied.
    pub moved: usize,
    /// Entries already where they were to go.
    pub already: usize,
    /// Stages with nothing to move: not built (push), not in the remote (pull),
    /// or behind one of those.
    pub missing: usize,
}

/// Uploads every cached entry of the graph's pipelines that the remote lacks.
/// Reads the workspace only.
pub fn push(
    graph: &Graph,
    workspace: &Workspace,
    remote: &Remote,
    console: &Console,
) -> Result<Transfer, DagError> {
    let store = Store::open_read_only(&workspace.cache_dir);
    walk(graph, workspace, &store, console, |kind, key, label, cached| {
        if !cached {
            return Ok(Step::Missing);
        }
        if remote.has(kind, key)? {
            return Ok(Step::Already);
        }
        remote.push(&store, kind, key)?;
        console.status(&format!("pushed  {label} {}", &key[..12]));
        Ok(Step::Moved)
    })
}

/// Downloads every entry of the graph's pipelines that the local cache lacks
/// and the remote has, in graph order (a downloaded entry's outputs make the
/// keys after it known).
pub fn pull(
    graph: &Graph,
    lock: &WorkspaceLock,
    remote: &Remote,
    console: &Console,
) -> Result<Transfer, DagError> {
    let workspace = lock.workspace();
    let store = Store::open(&workspace.cache_dir).map_err(|source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    })?;
    walk(graph, workspace, &store, console, |kind, key, label, cached| {
        if cached {
            return Ok(Step::Already);
        }
        match remote.fetch(&store, kind, key)? {
            Fetched::Entry(_) => {
                console.status(&format!("pulled  {label} {}", &key[..12]));
                Ok(Step::Moved)
            }
            Fetched::Absent => Ok(Step::Missing),
            Fetched::Corrupt(why) => {
                console.warn(&format!(
                    "{label}: the remote entry {} is broken ({why})",
                    &key[..12]
                ));
                Ok(Step::Missing)
            }
        }
    })
}

enum Step {
    Moved,
    Already,
    Missing,
}

/// Resolves each node in graph order and hands the ones with a key to `step`
/// (told whether the local cache has the entry).
fn walk(
    graph: &Graph,
    workspace: &Workspace,
    store: &Store,
    console: &Console,
    mut step: impl FnMut(crate::stages::StageKind, &str, &str, bool) -> Result<Step, super::remote::RemoteError>,
) -> Result<Transfer, DagError> {
    let mut resolver = Resolver::new(store, workspace);
    let mut outputs: Vec<Option<Vec<OutputFile>>> = vec![None; graph.nodes.len()];
    let mut transfer = Transfer::default();
    let mut seen = std::collections::HashSet::new();
    for n in 0..graph.nodes.len() {
        let node = &graph.nodes[n];
        let resolution = resolver.resolve(graph, n, Upstream::of(graph, n, |d| outputs[d].as_deref()))?;
        let Some(key) = resolution.key else {
            transfer.missing += 1;
            continue;
        };
        let label = format!("{}/{}", graph.pipelines[node.pipeline].name, node.label);
        let cached = match resolution.state {
            State::Cached(manifest) => Some(manifest.outputs),
            _ => None,
        };
        // A key shared with an earlier pipeline was moved (or not) once already.
        if seen.insert(key.clone()) {
            match step(node.kind, &key, &label, cached.is_some()).map_err(DagError::from)? {
                Step::Moved => transfer.moved += 1,
                Step::Already => transfer.already += 1,
                Step::Missing => {
                    console.detail(&format!("nothing to move for {label}"));
                    transfer.missing += 1;
                }
            }
        }
        // What was not here before may have been pulled just now.
        outputs[n] = cached.or_else(|| store.manifest(node.kind, &key).map(|m| m.outputs));
    }
    Ok(transfer)
}
