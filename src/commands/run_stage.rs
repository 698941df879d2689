//! `fkp run-stage` (hidden): builds one stage into the cache, as a Slurm job of
//! `fkp run --executor slurm` does.

use std::path::PathBuf;

use clap::Args;

use super::{Context, Error, Exit};
use crate::dag;

#[derive(Args)]
pub(super) struct RunStageArgs {
    /// The pipeline's name.
    #[arg(long)]
    pipeline: String,
    /// The stage's node label (`train`, `train#seed-1`).
    #[arg(long)]
    stage: String,
    #[arg(long)]
    plan: String,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    force: bool,
    /// The pipeline files of the submitting run.
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
}

pub(super) fn execute(args: RunStageArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&args.pipelines)?;
    let job = dag::StageJob {
        pipeline: args.pipeline,
        label: args.stage,
        plan: args.plan,
        key: args.key,
        force: args.force,
    };
    dag::run_stage(&graph, &context.workspace, &job, context.console)?;
    Ok(Exit::Success)
}
