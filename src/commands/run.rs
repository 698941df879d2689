//! `fkp run`: builds the pipelines' stages that are not cached.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;

use super::signals::{say_interrupted, stop_on_signals};
use super::{Context, Error, Exit};
use crate::config::Choice;
use crate::dag::remote::Remote;
use crate::dag::{self, Graph, RunOptions, SlurmRun};
use crate::settings::{ExecutorKind, Settings};
use crate::stages::StageKind;

#[derive(Args)]
pub(super) struct RunArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    /// Rerun every stage, cached or not.
    #[arg(long)]
    force: bool,
    /// Rerun this stage and every stage downstream of it (repeatable).
    #[arg(long, value_name = "STAGE", value_parser = parse_stage)]
    force_stage: Vec<StageKind>,
    /// Run this stage and the stages it needs, nothing after it.
    #[arg(long, value_name = "STAGE", value_parser = parse_stage)]
    until: Option<StageKind>,
    /// Print what would run and why, without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Stop at the first pipeline that fails. Without it the others go on
    /// (a report of the failed one is skipped) and the error lists every
    /// failure.
    #[arg(long)]
    fail_fast: bool,
    /// Build up to N stages at once: independent pipelines, or eda beside
    /// prepare. Lines then start with their pipeline's name. A training
    /// already uses every core, so N above 1 pays off for the lighter
    /// stages and for studies of many small pipelines. Default: fkp.toml's
    /// `[executor] jobs`, else 1.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: Option<u16>,
    /// Where stages build: `local` (this machine) or `slurm` (one sbatch job
    /// per stage, on the cluster's shared filesystem). Default: fkp.toml's
    /// `[executor] kind`, else local.
    #[arg(long, value_name = "KIND", env = "FKP_EXECUTOR", value_parser = parse_executor)]
    executor: Option<ExecutorKind>,
}

pub(super) fn execute(args: RunArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&args.pipelines)?;
    let options = run_options(&args, context)?;
    if args.dry_run {
        dag::dry_run(&graph, &context.workspace, &options, context.console)?;
        return Ok(Exit::Success);
    }
    run(&graph, &options, context)
}

/// Runs the graph holding the workspace's lock, stopping at a safe point on a signal.
fn run(graph: &Graph, options: &RunOptions, context: &Context) -> Result<Exit, Error> {
    let console = context.console;
    let lock = context.lock()?;
    let signal = stop_on_signals(&options.cancel, options.slurm.is_some(), console)?;
    let result = dag::run(graph, &lock, options, console);
    let signal = signal.load(Ordering::SeqCst);
    match result {
        Ok(report) => {
            for line in report.closing_lines(graph, &context.workspace) {
                console.result(&line);
            }
        }
        Err(error) if signal != 0 && error.kept().is_some() => {
            return Ok(say_interrupted(&error, signal, console));
        }
        Err(error) => return Err(error.into()),
    }
    Ok(match signal {
        0 => Exit::Success,
        signal => Exit::Signal(signal),
    })
}

/// The flags, with fkp.toml's `[executor]` and `[cache]` where a flag is not given.
fn run_options(args: &RunArgs, context: &Context) -> Result<RunOptions, Error> {
    let settings = Settings::load(&context.workspace.root)?;
    let slurm = match args.executor.unwrap_or(settings.executor) {
        ExecutorKind::Local => None,
        ExecutorKind::Slurm => Some(slurm_run(args, &settings, context)?),
    };
    let workspace_options = options_of(&settings, context)?;
    Ok(RunOptions {
        force_all: args.force,
        force_stages: args.force_stage.clone(),
        until: args.until,
        fail_fast: args.fail_fast,
        jobs: args.jobs.map_or(workspace_options.jobs, usize::from),
        slurm,
        ..workspace_options
    })
}

/// What each Slurm job needs to build its stage as this run would.
fn slurm_run(args: &RunArgs, settings: &Settings, context: &Context) -> Result<SlurmRun, Error> {
    let workspace = &context.workspace;
    Ok(SlurmRun {
        settings: settings.slurm.clone(),
        files: args
            .pipelines
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
            .collect(),
        overrides: context.global.set.clone(),
        workspace_root: workspace.root.clone(),
        cache_dir: workspace.cache_dir.clone(),
        program: std::env::current_exe()
            .map_err(|e| Error::io("cannot find this fkp binary for the jobs to run", e))?,
    })
}

/// How a command that trains first (`predict`, `export`) or reruns (`watch`)
/// builds: on this machine, with fkp.toml's `[executor] jobs` and the remote
/// cache, as `fkp run` without flags would. Reading fkp.toml also reports its
/// mistakes, as `run` does.
pub(super) fn local_options(context: &Context) -> Result<RunOptions, Error> {
    options_of(&Settings::load(&context.workspace.root)?, context)
}

/// What fkp.toml (and `--remote`) set for every build: the jobs and the remote cache.
fn options_of(settings: &Settings, context: &Context) -> Result<RunOptions, Error> {
    Ok(RunOptions {
        jobs: settings.jobs,
        remote: remote(context.global.remote.as_deref(), settings)?.map(Arc::new),
        ..RunOptions::default()
    })
}

/// The remote cache: `--remote` (or FKP_REMOTE), else fkp.toml's `[cache] remote`.
pub(super) fn remote(flag: Option<&str>, settings: &Settings) -> Result<Option<Remote>, Error> {
    match flag.or(settings.remote.as_deref()).filter(|url| !url.is_empty()) {
        Some(url) => Ok(Some(Remote::open(url)?)),
        None => Ok(None),
    }
}

fn parse_executor(name: &str) -> Result<ExecutorKind, String> {
    ExecutorKind::NAMES
        .iter()
        .position(|n| *n == name)
        .map(ExecutorKind::from_index)
        .ok_or_else(|| {
            format!(
                "unknown executor `{}`; executors: {}",
                crate::text::excerpt(name),
                ExecutorKind::NAMES.join(", ")
            )
        })
}

fn parse_stage(name: &str) -> Result<StageKind, String> {
    StageKind::from_name(name).ok_or_else(|| {
        format!(
            "unknown stage `{}`; stages: {}",
            crate::text::excerpt(name),
            StageKind::names()
        )
    })
}
