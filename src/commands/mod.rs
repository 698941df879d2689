//! The `fkp` command line: [`Cli`] is its arguments, each command is a module
//! here with its arguments (`RunArgs`, ...) and one `execute` function, and
//! [`exit`] is how a command ends: [`Exit`] when it did its work, [`Error`]
//! (with [`Error::code`]) when it did not. `main.rs` only parses and prints.

mod clean;
pub mod compare;
mod dag;
pub mod exit;
pub mod export;
pub mod model;
pub mod predict;
mod run;
mod run_stage;
pub mod serve;
mod signals;
mod status;
mod transfer;
pub mod watch;

use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use exit::{Error, Exit};

use crate::config::{ConfigErrors, Override};
use crate::console::{Console, Verbosity};
use crate::dag::{DagError, Graph};
use crate::workspace::{Wait, Workspace, WorkspaceLock};

/// Declarative, cached pipelines for facial-keypoint experiments.
///
/// The workspace is the current directory: the cache lives in `.fkp/` and reports
/// in `reports/<pipeline>/`.
#[derive(Parser)]
#[command(name = "fkp", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Cache folder (default: .fkp in the current directory).
    #[arg(long, global = true, env = "FKP_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more detail: each stage's tables, skipped rows, `status`'s paths.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// When another fkp command is writing the workspace, fail at once instead
    /// of waiting for it.
    #[arg(long, global = true)]
    no_wait: bool,
    /// Change a key of every named pipeline that has its table, for this
    /// command only: TABLE.KEY=VALUE, the value as in TOML (a bare word is a
    /// string). Repeatable: --set train.epochs=2 --set model.arch=resnet18
    #[arg(long = "set", global = true, value_name = "TABLE.KEY=VALUE")]
    set: Vec<String>,
    /// A cache shared with other machines: s3://bucket/prefix (credentials and
    /// endpoint from AWS_* variables) or a folder. `run` fetches entries from
    /// it instead of building them, and uploads what it builds. Default:
    /// fkp.toml's `[cache] remote`.
    #[arg(long, global = true, env = "FKP_REMOTE", value_name = "URL", value_parser = parse_remote)]
    remote: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one or more pipelines; stages whose inputs did not change come from the cache.
    ///
    /// Says one line per stage (why it runs, what it found), the training's
    /// epochs and a closing line per pipeline; -v adds each stage's tables.
    /// Ctrl-C stops the running stage at its next safe point and says what was
    /// kept (exit 130; SIGTERM 143, SIGHUP 129); a second Ctrl-C stops at once.
    Run(run::RunArgs),
    /// Build one stage into the cache: what a Slurm job of `fkp run --executor
    /// slurm` runs. Checks it builds the plan (and key) it was sent.
    #[command(hide = true)]
    RunStage(run_stage::RunStageArgs),
    /// Run the pipelines, then rerun what each saved edit makes stale, until Ctrl-C.
    ///
    /// Watches each pipeline file, the files it extends, the pipelines a report
    /// lists and every input file; never .fkp/ or reports/. A stage whose key an
    /// edit changes is cancelled (training between batches, keeping its
    /// checkpoint) and rerun. Holds the workspace lock only while a round runs.
    /// Exits with 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP.
    Watch(watch::WatchArgs),
    /// Show each stage's state: cached, stale (with what changed), missing, or
    /// partial (a training stopped midway, with the epoch it resumes at). -v
    /// adds each entry's folder and files.
    Status(status::StatusArgs),
    /// Print a pipeline's stage graph.
    Dag(dag::DagArgs),
    /// Show a pipeline's network: each layer's output shape, parameters and
    /// multiply-adds, and the totals. Runs nothing.
    ///
    /// The image side is `[model] side`, or the side of the pipeline's ingested
    /// data when its ingest stage is cached.
    Model(model::ModelArgs),
    /// Predict keypoints with a pipeline's trained model (training it first if needed).
    Predict(predict::PredictArgs),
    /// Write a pipeline's trained network as an ONNX model (training it first if needed).
    ///
    /// The model takes `image` [N, 1, side, side], pixels 0-255, and returns
    /// `keypoints` [N, coordinates] in pixels: fkp's scaling, the test-time
    /// flips of `[evaluate] tta` and a seed ensemble's averaging are inside it.
    /// ONNX opset 13.
    Export(export::ExportArgs),
    /// Compare pipelines already run: the report table, read from the cache.
    ///
    /// Runs nothing and takes no lock. A pipeline that is not fully cached is
    /// listed as stale or missing. A report file stands for the pipelines it lists.
    Compare(compare::CompareArgs),
    /// Upload the cached entries of pipelines to the remote cache (--remote,
    /// FKP_REMOTE or fkp.toml's `[cache] remote`) that it lacks.
    Push(transfer::TransferArgs),
    /// Download from the remote cache the entries of pipelines that the local
    /// cache lacks, so that `fkp run` finds them cached.
    Pull(transfer::TransferArgs),
    /// Serve a live view of the pipelines in the browser until Ctrl-C: stage
    /// states, training curves as they happen, comparisons, faces, reports.
    ///
    /// Reads the cache and reports/ only (no lock): run, watch and serve work
    /// side by side. Listens on 127.0.0.1:8000; any other address needs a
    /// token. The JSON API is in docs/serve.md.
    Serve(serve::ServeArgs),
    /// Remove cache entries that no pipeline refers to, and leftovers of killed runs.
    ///
    /// Pipelines considered: every *.toml in ./pipelines/ plus those named here.
    Clean(clean::CleanArgs),
}

fn parse_remote(url: &str) -> Result<String, String> {
    crate::dag::remote::check_url(url).map(|()| url.to_string())
}

impl Cli {
    /// How much the commands print: `--quiet`, `--verbose` or neither.
    pub fn verbosity(&self) -> Verbosity {
        match (self.global.quiet, self.global.verbose) {
            (true, _) => Verbosity::Quiet,
            (_, true) => Verbosity::Verbose,
            _ => Verbosity::Normal,
        }
    }

    /// Runs the command.
    pub fn execute(self, console: &Console) -> Result<Exit, Error> {
        let context = Context::new(self.global, console)?;
        match self.command {
            Command::Run(args) => run::execute(args, &context),
            Command::RunStage(args) => run_stage::execute(args, &context),
            Command::Watch(args) => watch::execute(args, &context),
            Command::Status(args) => status::execute(args, &context),
            Command::Dag(args) => dag::execute(args, &context),
            Command::Model(args) => model::execute(args, &context),
            Command::Predict(args) => predict::execute(args, &context),
            Command::Export(args) => export::execute(args, &context),
            Command::Compare(args) => compare::execute(args, &context),
            Command::Push(args) => transfer::execute(transfer::Direction::Push, args, &context),
            Command::Pull(args) => transfer::execute(transfer::Direction::Pull, args, &context),
            Command::Serve(args) => serve::execute(args, &context),
            Command::Clean(args) => clean::execute(args, &context),
        }
    }
}

/// What every command works with: the workspace, the `--set` overrides and
/// the global flags.
struct Context<'a> {
    workspace: Workspace,
    overrides: Vec<Override>,
    global: GlobalArgs,
    console: &'a Console,
}

impl<'a> Context<'a> {
    fn new(global: GlobalArgs, console: &'a Console) -> Result<Self, Error> {
        let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read the current directory", e))?;
        let workspace = Workspace::new(&cwd, global.cache_dir.as_deref());
        let overrides = global
            .set
            .iter()
            .map(|argument| Override::parse(argument))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ConfigErrors(vec![error]))?;
        Ok(Context {
            workspace,
            overrides,
            global,
            console,
        })
    }

    /// The pipelines in `files`, with the `--set` overrides.
    fn load(&self, files: &[PathBuf]) -> Result<Graph, DagError> {
        Graph::load_with(files, &self.overrides)
    }

    /// Takes the workspace's write lock for this command.
    fn lock(&self) -> Result<WorkspaceLock, Error> {
        let wait = if self.global.no_wait { Wait::No } else { Wait::Yes };
        let command: Vec<String> = std::iter::once("fkp".to_string())
            .chain(
                std::env::args_os()
                    .skip(1)
                    .map(|a| a.to_string_lossy().into_owned()),
            )
            .collect();
        Ok(self.workspace.lock(wait, &command.join(" "), self.console)?)
    }
}

/// Prints a command's result on standard output.
fn print_out(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => Error::OutputClosed,
            _ => Error::io("cannot write to standard output", e),
        })
}

/// `1 entry`, `2 entries`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
