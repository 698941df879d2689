//! `fkp push` and `fkp pull`: moves the pipelines' cache entries to or from
//! the remote cache.

use std::path::PathBuf;

use clap::Args;

use super::run::remote;
use super::{Context, Error, Exit, count};
use crate::dag;
use crate::settings::Settings;

#[derive(Args)]
pub(super) struct TransferArgs {
    /// Pipeline files (TOML).
    #[arg(required = true, value_name = "PIPELINE.toml")]
    pipelines: Vec<PathBuf>,
}

pub(super) enum Direction {
    Push,
    Pull,
}

pub(super) fn execute(direction: Direction, args: TransferArgs, context: &Context) -> Result<Exit, Error> {
    let graph = context.load(&args.pipelines)?;
    let workspace = &context.workspace;
    let settings = Settings::load(&workspace.root)?;
    let remote = remote(context.global.remote.as_deref(), &settings)?.ok_or(Error::NoRemote)?;
    let (done, words) = match direction {
        Direction::Push => (
            dag::push(&graph, workspace, &remote, context.console)?,
            ["pushed", "to", "there already", "stages not built here"],
        ),
        Direction::Pull => {
            let lock = context.lock()?;
            (
                dag::pull(&graph, &lock, &remote, context.console)?,
                ["pulled", "from", "here already", "stages not in the remote"],
            )
        }
    };
    let [verb, preposition, already, missing] = words;
    context.console.status(&format!(
        "{verb} {} {preposition} {}; {} {already}; {} {missing}",
        count(done.moved, "entry", "entries"),
        remote.url(),
        done.already,
        done.missing
    ));
    Ok(Exit::Success)
}
