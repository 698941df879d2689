//! `fkp clean`: removes cache entries no known pipeline refers to, and the
//! leftovers of killed runs. A cache shared by several workspaces keeps what the
//! others last ran with: their run records name it.

use std::collections::HashSet;
use std::path::PathBuf;

use super::DagError;
use super::graph::Graph;
use super::resolve::{Resolver, State, Upstream};
use super::store::{OutputFile, Store};
use crate::workspace::{Workspace, WorkspaceLock};

#[derive(Debug, Default)]
pub struct CleanPlan {
    /// Entries no pipeline refers to.
    pub entries: Vec<PathBuf>,
    /// Temporary folders of runs that were killed, checkpoints of stages no
    /// pipeline refers to any more, the run records of workspaces that are gone,
    /// and the logs of Slurm jobs no run waits for.
    pub abandoned: Vec<PathBuf>,
    /// Other workspaces whose last runs' entries were kept.
    pub other_workspaces: usize,
    pub bytes: u64,
}

/// What `clean` would remove. Entries that any pipeline of `graph` refers to in its
/// current configuration are kept. Reads only.
pub fn plan(graph: &Graph, workspace: &Workspace) -> Result<CleanPlan, DagError> {
    let cache_error = |source| DagError::Cache {
        path: workspace.cache_dir.clone(),
        source,
    };
    let store = Store::open_read_only(&workspace.cache_dir);
    let mut resolver = Resolver::new(&store, workspace);
    let mut keep: HashSet<String> = HashSet::new();
    let mut outputs: Vec<Option<Vec<OutputFile>>> = vec![None; graph.nodes.len()];
    for n in 0..graph.nodes.len() {
        let upstream = Upstream::of(graph, n, |d| outputs[d].as_deref());
        let resolution = match resolver.resolve(graph, n, upstream) {
            Ok(resolution) => resolution,
            // Its input is unreadable (moved, or not downloaded yet): keep whatever
            // the pipeline last ran with rather than guess.
            Err(DagError::Input { .. }) => {
                let name = &graph.pipelines[graph.nodes[n].pipeline].name;
                keep.extend(resolver.record(name).stages.values().map(|inputs| inputs.key()));
                continue;
            }
            Err(error) => return Err(error),
        };
        if let State::Cached(manifest) = &resolution.state {
            outputs[n] = Some(manifest.outputs.clone());
        }
        if let Some(key) = resolution.key {
            keep.insert(key);
        }
    }
    let mut plan = CleanPlan::default();
    for (dir, records) in store.other_workspaces(workspace).map_err(cache_error)? {
        match records {
            Some(records) => {
                plan.other_workspaces += 1;
                keep.extend(
                    records
                        .iter()
                        .flat_map(|r| r.stages.values().map(|inputs| inputs.key())),
                );
            }
            None => plan.abandoned.push(dir),
        }
    }
    for (_, key, dir) in store.entries().map_err(cache_error)? {
        if !keep.contains(&key) {
            plan.bytes += folder_size(&dir);
            plan.entries.push(dir);
        }
    }
    for dir in store.abandoned_temp_dirs().map_err(cache_error)? {
        plan.bytes += folder_size(&dir);
        plan.abandoned.push(dir);
    }
    for file in store.ended_job_files().map_err(cache_error)? {
        plan.bytes += file.metadata().map_or(0, |m| m.len());
        plan.abandoned.push(file);
    }
    for (key, dir) in store.checkpoints().map_err(cache_error)? {
        if !keep.contains(&key) {
            plan.bytes += folder_size(&dir);
            plan.abandoned.push(dir);
        }
    }
    // A live log goes with its checkpoint: with none left, no run continues its story.
    for (kind, key, file) in store.live_logs().map_err(cache_error)? {
        let resumable = keep.contains(&key) && store.checkpoint_dir(kind, &key).exists();
        if !resumable && super::live::is_leftover(&file) {
            plan.bytes += file.metadata().map_or(0, |m| m.len());
            plan.abandoned.push(file);
        }
    }
    Ok(plan)
}

/// Removes what `plan` found, each folder renamed aside first so that a clean
/// killed halfway leaves no partial entry; the caller holds the workspace lock.
pub fn execute(plan: &CleanPlan, lock: &WorkspaceLock) -> Result<(), DagError> {
    let store = Store::open_read_only(&lock.workspace().cache_dir);
    for path in plan.entries.iter().chain(&plan.abandoned) {
        // A job's log is one file: nothing reads it, so it simply goes.
        let removed = match path.is_file() {
            true => std::fs::remove_file(path),
            false => store.remove_entry(path),
        };
        removed.map_err(|source| DagError::Cache {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn folder_size(dir: &std::path::Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else {
        return 0;
    };
    items
        .flatten()
        .map(|item| match item.file_type() {
            Ok(t) if t.is_dir() => folder_size(&item.path()),
            _ => item.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
