//! `fkp clean`: removes cache entries no pipeline refers to, and leftovers of
//! killed runs; with `--dry-run`, only says what it would remove.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{Context, Error, Exit, count};
use crate::config::discover_pipelines;
use crate::dag::{self, Graph};
use crate::workspace::{PIPELINES_DIR, WorkspaceLock};

#[derive(Args)]
pub(super) struct CleanArgs {
    /// Pipeline files whose entries to keep, besides those in ./pipelines/.
    #[arg(value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn execute(args: CleanArgs, context: &Context) -> Result<Exit, Error> {
    let lock = match args.dry_run {
        true => None,
        false => Some(context.lock()?),
    };
    clean(args.pipelines, lock.as_ref(), context)?;
    Ok(Exit::Success)
}

/// Plans the clean and, holding the lock, carries it out; without it, only says.
fn clean(named: Vec<PathBuf>, lock: Option<&WorkspaceLock>, context: &Context) -> Result<(), Error> {
    let (workspace, console) = (&context.workspace, context.console);
    let files = pipelines_to_keep(named, context)?;
    // A pipeline that fails to load must stop the clean: its entries would look unreferenced.
    let graph = Graph::load_with(&files, &context.overrides)?;
    let plan = dag::clean::plan(&graph, workspace)?;
    let verb = if lock.is_some() { "removed" } else { "would remove" };
    for dir in plan.entries.iter().chain(&plan.abandoned) {
        console.status(&format!("{verb} {}", relative(dir, &workspace.root)));
    }
    if let Some(lock) = lock {
        dag::clean::execute(&plan, lock)?;
    }
    let others = match plan.other_workspaces {
        0 => String::new(),
        n => format!(
            " and the last runs of {} sharing this cache",
            count(n, "other workspace", "other workspaces")
        ),
    };
    console.status(&format!(
        "{verb} {} and {} of killed runs or gone workspaces ({:.1} MB); kept what {} refer to{others}",
        count(plan.entries.len(), "entry", "entries"),
        count(plan.abandoned.len(), "leftover", "leftovers"),
        plan.bytes as f64 / 1e6,
        count(graph.pipelines.len(), "pipeline", "pipelines"),
    ));
    Ok(())
}

/// The pipelines named, and every one in the workspace's `pipelines/`.
fn pipelines_to_keep(named: Vec<PathBuf>, context: &Context) -> Result<Vec<PathBuf>, Error> {
    let workspace = &context.workspace;
    let mut files = named;
    let pipelines_dir = workspace.root.join(PIPELINES_DIR);
    if pipelines_dir.is_dir() {
        let found = discover_pipelines(&pipelines_dir)
            .map_err(|e| Error::io(format!("cannot list {}", pipelines_dir.display()), e))?;
        files.extend(found);
    }
    if files.is_empty() {
        return Err(Error::NothingToKeep {
            pipelines_dir,
            cache_dir: workspace.cache_dir.clone(),
        });
    }
    Ok(files)
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
