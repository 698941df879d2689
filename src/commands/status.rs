//! `fkp status`: each stage's state, as text or JSON.

use std::path::PathBuf;

use clap::Args;

use super::{Context, Error, Exit, print_out};
use crate::console::Verbosity;
use crate::dag;

#[derive(Args)]
pub(super) struct StatusArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
    /// Print JSON (schema "fkp.status/1", see docs/status-json.md).
    #[arg(long)]
    json: bool,
}

pub(super) fn execute(args: StatusArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&args.pipelines)?;
    let report = dag::status(&graph, &context.workspace)?;
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::io("cannot write the status as JSON", std::io::Error::other(e)))?;
        print_out(&format!("{json}\n"))?;
    } else {
        print_out(&report.to_text(context.console.verbosity >= Verbosity::Verbose))?;
    }
    Ok(Exit::Success)
}
