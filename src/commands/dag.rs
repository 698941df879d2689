//! `fkp dag`: a pipeline's stage graph, as text or Graphviz DOT.

use std::path::PathBuf;

use clap::Args;

use super::{Context, Error, Exit, print_out};

#[derive(Args)]
pub(super) struct DagArgs {
    /// A pipeline file (TOML).
    #[arg(value_name = "PIPELINE.toml")]
    pipeline: PathBuf,
    /// Print Graphviz DOT instead of text.
    #[arg(long)]
    dot: bool,
}

pub(super) fn execute(args: DagArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&[args.pipeline])?;
    print_out(&if args.dot { graph.to_dot() } else { graph.to_text() })?;
    Ok(Exit::Success)
}
