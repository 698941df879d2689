//! The `fkp` command line: parses arguments, calls the library, prints errors.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use fkp::config::{ConfigErrors, Override, discover_pipelines};
use fkp::console::{Console, Verbosity};
use fkp::dag::remote::Remote;
use fkp::dag::{self, DagError, Graph, RunOptions, SlurmRun};
use fkp::export::{ExportRequest, InputType};
use fkp::predict::{PredictError, PredictInput, PredictRequest, predict};
use fkp::settings::{ExecutorKind, Settings};
use fkp::stages::StageKind;
use fkp::watch::WatchOptions;
use fkp::workspace::{PIPELINES_DIR, Wait, Workspace, WorkspaceLock};

/// Declarative, cached pipelines for facial-keypoint experiments.
///
/// The workspace is the current directory: the cache lives in `.fkp/` and reports
/// in `reports/<pipeline>/`.
#[derive(Parser)]
#[command(name = "fkp", version, propagate_version = true)]
struct Cli {
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
    /// kept (exit 130; SIGTERM 143); a second Ctrl-C stops at once.
    Run {
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
    },
    /// Build one stage into the cache: what a Slurm job of `fkp run --executor
    /// slurm` runs. Checks it builds the plan (and key) it was sent.
    #[command(hide = true)]
    RunStage {
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
    },
    /// Run the pipelines, then rerun what each saved edit makes stale, until Ctrl-C.
    ///
    /// Watches each pipeline file, the files it extends, the pipelines a report
    /// lists and every input file; never .fkp/ or reports/. A stage whose key an
    /// edit changes is cancelled (training between batches, keeping its
    /// checkpoint) and rerun. Holds the workspace lock only while a round runs.
    /// Exits with 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP.
    Watch {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
        /// How long after a file event it counts, in milliseconds (10-60000):
        /// editors save in several steps.
        #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        debounce: u64,
        /// Poll for changes instead of using file system events (network file
        /// systems, containers where inotify does not reach).
        #[arg(long)]
        poll: bool,
        /// How often --poll looks, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000, requires = "poll", value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
        poll_interval: u64,
        /// Clear the screen at the start of each round.
        #[arg(long)]
        clear: bool,
    },
    /// Show each stage's state: cached, stale (with what changed), missing, or
    /// partial (a training stopped midway, with the epoch it resumes at). -v
    /// adds each entry's folder and files.
    Status {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
        /// Print JSON (schema "fkp.status/1", see docs/status-json.md).
        #[arg(long)]
        json: bool,
    },
    /// Print a pipeline's stage graph.
    Dag {
        /// A pipeline file (TOML).
        #[arg(value_name = "PIPELINE.toml")]
        pipeline: PathBuf,
        /// Print Graphviz DOT instead of text.
        #[arg(long)]
        dot: bool,
    },
    /// Show a pipeline's network: each layer's output shape, parameters and
    /// multiply-adds, and the totals. Runs nothing.
    ///
    /// The image side is `[model] side`, or the side of the pipeline's ingested
    /// data when its ingest stage is cached.
    Model {
        /// A pipeline file (TOML) with [model].
        #[arg(value_name = "PIPELINE.toml")]
        pipeline: PathBuf,
        /// Print Graphviz DOT (blocks drawn as clusters) instead of a table.
        #[arg(long)]
        dot: bool,
    },
    /// Predict keypoints with a pipeline's trained model (training it first if needed).
    Predict {
        /// The pipeline whose model predicts (TOML).
        #[arg(value_name = "PIPELINE.toml")]
        pipeline: PathBuf,
        /// A Kaggle-layout file (.csv, .csv.gz or .zip) with an `Image` column;
        /// coordinate columns in it are ignored.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "images",
            conflicts_with = "images"
        )]
        input: Option<PathBuf>,
        /// PNG or JPEG files, or folders of them (their .png, .jpg and .jpeg
        /// files), each a face crop like Kaggle's: one row per image, the
        /// file name and the coordinates in the image's own pixels.
        #[arg(long, value_name = "PATH", num_args = 1..)]
        images: Vec<PathBuf>,
        /// Where to write the predictions (CSV).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Write Kaggle's `RowId,Location` submission, using [ingest] lookup.
        #[arg(long, conflicts_with = "images")]
        submission: bool,
        /// Plain predictions, without the test-time augmentation of the
        /// pipeline's `[evaluate] tta`.
        #[arg(long)]
        no_tta: bool,
        /// With --images: also write each image with its keypoints drawn and
        /// numbered, as DIR/<file stem>.png.
        #[arg(long, value_name = "DIR", requires = "images")]
        draw: Option<PathBuf>,
        /// With --images: stop at the first image that cannot be read, writing
        /// nothing (by default it is reported and the others get their rows).
        #[arg(long, requires = "images")]
        fail_fast: bool,
    },
    /// Write a pipeline's trained network as an ONNX model (training it first if needed).
    ///
    /// The model takes `image` [N, 1, side, side], pixels 0-255, and returns
    /// `keypoints` [N, coordinates] in pixels: fkp's scaling, the test-time
    /// flips of `[evaluate] tta` and a seed ensemble's averaging are inside it.
    /// ONNX opset 13.
    Export {
        /// The pipeline whose model is exported (TOML).
        #[arg(value_name = "PIPELINE.toml")]
        pipeline: PathBuf,
        /// Where to write the model (default: <pipeline name>.onnx).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The plain network, without the test-time augmentation of the
        /// pipeline's `[evaluate] tta`.
        #[arg(long)]
        no_tta: bool,
        /// The type of the input `image`: float32 or uint8 pixels, 0-255.
        #[arg(long, value_enum, default_value_t = InputType::Float)]
        input_type: InputType,
    },
    /// Compare pipelines already run: the report table, read from the cache.
    ///
    /// Runs nothing and takes no lock. A pipeline that is not fully cached is
    /// listed as stale or missing. A report file stands for the pipelines it lists.
    Compare {
        /// Pipeline files (TOML) with [evaluate], or report files.
        #[arg(required = true, value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
        /// An earlier report JSON (report.json, or `--format json` output):
        /// adds "was → now (Δ)" for every metric and marks regressions.
        #[arg(long, value_name = "FILE.json")]
        against: Option<PathBuf>,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Also write index.md, index.html, report.json and the pictures here.
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// With --against: exit 3 when a quality metric regressed (after printing).
        #[arg(long, requires = "against")]
        fail_on_regression: bool,
    },
    /// Upload the cached entries of pipelines to the remote cache (--remote,
    /// FKP_REMOTE or fkp.toml's `[cache] remote`) that it lacks.
    Push {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
    },
    /// Download from the remote cache the entries of pipelines that the local
    /// cache lacks, so that `fkp run` finds them cached.
    Pull {
        /// Pipeline files (TOML).
        #[arg(required = true, value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
    },
    /// Remove cache entries that no pipeline refers to, and leftovers of killed runs.
    ///
    /// Pipelines considered: every *.toml in ./pipelines/ plus those named here.
    Clean {
        /// Pipeline files whose entries to keep, besides those in ./pipelines/.
        #[arg(value_name = "PIPELINE.toml")]
        pipelines: Vec<PathBuf>,
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Md,
    Json,
    Html,
}

fn parse_remote(url: &str) -> Result<String, String> {
    fkp::dag::remote::check_url(url).map(|()| url.to_string())
}

fn parse_executor(name: &str) -> Result<ExecutorKind, String> {
    use fkp::config::Choice;
    ExecutorKind::NAMES
        .iter()
        .position(|n| *n == name)
        .map(ExecutorKind::from_index)
        .ok_or_else(|| {
            format!(
                "unknown executor `{}`; executors: {}",
                fkp::text::excerpt(name),
                ExecutorKind::NAMES.join(", ")
            )
        })
}

fn parse_stage(name: &str) -> Result<StageKind, String> {
    StageKind::from_name(name).ok_or_else(|| {
        format!(
            "unknown stage `{}`; stages: {}",
            fkp::text::excerpt(name),
            StageKind::names()
        )
    })
}

/// `fkp compare --fail-on-regression` when a metric regressed, as `scripts/ci-report.sh`.
const REGRESSION_EXIT: u8 = 3;

fn main() -> ExitCode {
    // Before any thread starts: it decides how training keeps its buffers.
    fkp::training::host_memory::keep_freed_memory();
    let cli = Cli::parse();
    let verbosity = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let console = Console::new(verbosity);
    match execute(cli, &console) {
        Ok(code) => code,
        // A reader that went away (`fkp status --json | head -1`) is not an error.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            let config = error
                .downcast_ref::<ConfigErrors>()
                .or_else(|| match error.downcast_ref() {
                    Some(DagError::Config(config)) => Some(config),
                    _ => None,
                });
            let (text, code) = match config {
                Some(config) => (config.to_string(), 2),
                None => (fkp::text::error_chain(error.as_ref()), 1),
            };
            let _ = writeln!(std::io::stderr(), "error: {text}");
            ExitCode::from(code)
        }
    }
}

/// Prints a command's result on stdout; failing to is an error (a full disk),
/// except for a closed pipe, which ends the command quietly.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            ErrorKind::BrokenPipe => anyhow::Error::new(e),
            _ => anyhow::Error::new(e).context("cannot write to standard output"),
        })
}

/// Takes the workspace's write lock for this command.
fn lock(workspace: &Workspace, no_wait: bool, console: &Console) -> Result<WorkspaceLock> {
    let wait = if no_wait { Wait::No } else { Wait::Yes };
    let command: Vec<String> = std::iter::once("fkp".to_string())
        .chain(
            std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned()),
        )
        .collect();
    Ok(workspace.lock(wait, &command.join(" "), console)?)
}

fn execute(cli: Cli, console: &Console) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workspace = Workspace::new(&cwd, cli.global.cache_dir.as_deref());
    let overrides = cli
        .global
        .set
        .iter()
        .map(|argument| Override::parse(argument))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigErrors(vec![error]))?;
    let load = |files: &[PathBuf]| Graph::load_with(files, &overrides);
    match cli.command {
        Command::Run {
            pipelines,
            force,
            force_stage,
            until,
            dry_run,
            fail_fast,
            jobs,
            executor,
        } => {
            let graph = load(&pipelines)?;
            let settings = Settings::load(&workspace.root)?;
            let slurm = match executor.unwrap_or(settings.executor) {
                ExecutorKind::Local => None,
                ExecutorKind::Slurm => Some(SlurmRun {
                    settings: settings.slurm.clone(),
                    files: pipelines
                        .iter()
                        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
                        .collect(),
                    overrides: cli.global.set.clone(),
                    workspace_root: workspace.root.clone(),
                    cache_dir: workspace.cache_dir.clone(),
                    program: std::env::current_exe()
                        .context("cannot find this fkp binary for the jobs to run")?,
                }),
            };
            let options = RunOptions {
                force_all: force,
                force_stages: force_stage,
                until,
                fail_fast,
                jobs: jobs.map_or(settings.jobs, usize::from),
                slurm,
                remote: remote(cli.global.remote.as_deref(), &settings)?.map(Arc::new),
                ..RunOptions::default()
            };
            if dry_run {
                dag::dry_run(&graph, &workspace, &options, console)?;
            } else {
                let lock = lock(&workspace, cli.global.no_wait, console)?;
                let signal = stop_on_signals(&options.cancel, options.slurm.is_some(), console)?;
                let result = dag::run(&graph, &lock, &options, console);
                let signal = signal.load(Ordering::SeqCst);
                match result {
                    Ok(report) => {
                        for line in report.closing_lines(&graph, &workspace) {
                            console.result(&line);
                        }
                    }
                    Err(error) if signal != 0 && error.kept().is_some() => {
                        return Ok(say_interrupted(&error, signal, console));
                    }
                    Err(error) => return Err(error.into()),
                }
                if signal != 0 {
                    return Ok(ExitCode::from(exit_code(signal)));
                }
            }
        }
        Command::RunStage {
            pipeline,
            stage,
            plan,
            key,
            force,
            pipelines,
        } => {
            let graph = load(&pipelines)?;
            let job = dag::StageJob {
                pipeline,
                label: stage,
                plan,
                key,
                force,
            };
            dag::run_stage(&graph, &workspace, &job, console)?;
        }
        Command::Watch {
            pipelines,
            debounce,
            poll,
            poll_interval,
            clear,
        } => {
            // No edit can fix a bad --set: say so now rather than wait for one.
            if !overrides.is_empty()
                && let Err(error) = load(&pipelines)
                && Graph::load(&pipelines).is_ok()
            {
                return Err(error.into());
            }
            let options = WatchOptions {
                files: pipelines,
                debounce: Duration::from_millis(debounce),
                poll: poll.then(|| Duration::from_millis(poll_interval)),
                clear,
                overrides,
            };
            return Ok(ExitCode::from(fkp::watch::watch(&workspace, &options, console)?));
        }
        Command::Status { pipelines, json } => {
            let graph = load(&pipelines)?;
            let report = dag::status(&graph, &workspace)?;
            if json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                print_out(&report.to_text(console.verbosity >= Verbosity::Verbose))?;
            }
        }
        Command::Dag { pipeline, dot } => {
            let graph = load(&[pipeline])?;
            print_out(&if dot { graph.to_dot() } else { graph.to_text() })?;
        }
        Command::Model { pipeline, dot } => {
            // A pipeline that does not load is a configuration error (exit 2), as for `run`.
            let summary =
                fkp::model_summary::summarise(&pipeline, &overrides, &workspace).map_err(|e| match e {
                    fkp::model_summary::ModelSummaryError::Dag(dag) => anyhow::Error::new(dag),
                    other => anyhow::Error::new(other),
                })?;
            print_out(&if dot { summary.to_dot() } else { summary.to_text() })?;
        }
        Command::Predict {
            pipeline,
            input,
            images,
            output,
            submission,
            no_tta,
            draw,
            fail_fast,
        } => {
            let graph = load(&[pipeline])?;
            let lock = lock(&workspace, cli.global.no_wait, console)?;
            let predicted = interruptible(
                console,
                |cancel| {
                    let request = PredictRequest {
                        input: match &input {
                            Some(input) => PredictInput::Csv(input),
                            None => PredictInput::Images(&images),
                        },
                        output: &output,
                        submission,
                        tta: !no_tta,
                        draw: draw.as_deref(),
                        fail_fast,
                        cancel: cancel.clone(),
                    };
                    predict(&graph, &lock, &request, console)
                },
                PredictError::dag,
            )?;
            let rows = match predicted {
                Ok(rows) => rows,
                Err(code) => return Ok(code),
            };
            console.status(&format!("wrote {rows} rows to {}", output.display()));
        }
        Command::Export {
            pipeline,
            output,
            no_tta,
            input_type,
        } => {
            let graph = load(&[pipeline])?;
            let lock = lock(&workspace, cli.global.no_wait, console)?;
            let exported = interruptible(
                console,
                |cancel| {
                    let request = ExportRequest {
                        output: output.as_deref(),
                        tta: !no_tta,
                        input_type,
                        cancel: cancel.clone(),
                    };
                    fkp::export::export(&graph, &lock, &request, console)
                },
                fkp::export::ExportError::dag,
            )?;
            let exported = match exported {
                Ok(exported) => exported,
                Err(code) => return Ok(code),
            };
            let mut what = String::from("the network");
            if exported.members > 1 {
                what = format!("the mean of {} networks ([train] seeds)", exported.members);
            }
            if !exported.tta.is_empty() {
                let names: Vec<&str> = exported.tta.iter().map(|t| t.name()).collect();
                what += &format!(" with test-time augmentation {names:?} (--no-tta: without)");
            }
            console.status(&format!(
                "wrote {} ({}, {:.1} MB; weights {:.1} MB): {what}, ONNX opset {}",
                exported.path.display(),
                count(exported.bytes, "byte", "bytes"),
                exported.bytes as f64 / 1e6,
                exported.weights_bytes as f64 / 1e6,
                fkp::export::onnx::OPSET,
            ));
        }
        Command::Compare {
            pipelines,
            against,
            format,
            output,
            fail_on_regression,
        } => {
            let graph = load(&pipelines)?;
            let result = fkp::compare::compare(&graph, &workspace, against.as_deref())?;
            if let Some(dir) = &output {
                result.write(dir)?;
            }
            print_out(&match format {
                Format::Table => result.to_terminal(),
                Format::Md => result.to_markdown(),
                Format::Json => result.to_json(),
                Format::Html => result.to_html()?,
            })?;
            // A gate that compared nothing has not passed.
            if fail_on_regression && result.comparison.rows.is_empty() {
                anyhow::bail!(
                    "nothing was compared against {} (--fail-on-regression): no pipeline is fully cached",
                    against.as_deref().unwrap_or(Path::new("")).display()
                );
            }
            if fail_on_regression && result.regressions() > 0 {
                console.error(&format!(
                    "{} regressions against {} (--fail-on-regression)",
                    result.regressions(),
                    against.as_deref().unwrap_or(Path::new("")).display()
                ));
                return Ok(ExitCode::from(REGRESSION_EXIT));
            }
        }
        Command::Push { pipelines } => transfer(
            Direction::Push,
            &load(&pipelines)?,
            &workspace,
            &cli.global,
            console,
        )?,
        Command::Pull { pipelines } => transfer(
            Direction::Pull,
            &load(&pipelines)?,
            &workspace,
            &cli.global,
            console,
        )?,
        Command::Clean { pipelines, dry_run } => {
            let lock = if dry_run {
                None
            } else {
                Some(lock(&workspace, cli.global.no_wait, console)?)
            };
            clean(&workspace, pipelines, &overrides, lock.as_ref(), console)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, SIGTERM or SIGHUP during `fkp run`: the first stops the running
/// stage at its next safe point (training between batches, keeping its
/// checkpoint) and starts no other, so the run can say what it kept; a second
/// ends at once, as a kill does. Slurm jobs run on without this process (the
/// next run reattaches to them), so under Slurm the first one ends at once.
/// Returns where the signal's number is put (0 until one comes).
fn stop_on_signals(cancel: &dag::Cancel, slurm: bool, console: &Console) -> Result<Arc<AtomicI32>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let received = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot catch Ctrl-C and SIGTERM")?;
    let (cancel, console, seen) = (cancel.clone(), console.clone(), received.clone());
    std::thread::Builder::new()
        .name("fkp-signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                let first = seen
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if slurm {
                    console.failure(&format!(
                        "interrupted by {}: the submitted Slurm jobs run on; the next `fkp run` \
                         reattaches to them and builds nothing twice",
                        signal_name(signal)
                    ));
                    std::process::exit(i32::from(exit_code(signal)));
                }
                if first {
                    cancel.request(dag::Stop::Now);
                    console.failure(
                        "stopping: the running stage stops at its next safe point \
                         (press Ctrl-C again to stop at once)",
                    );
                } else {
                    console.failure(
                        "stopped at once: the entries already built are kept, and the next \
                         `fkp run` resumes training from its last checkpoint",
                    );
                    std::process::exit(i32::from(exit_code(signal)));
                }
            }
        })
        .context("cannot catch Ctrl-C and SIGTERM")?;
    Ok(received)
}

/// Interrupted: says what the next run finds, rather than an error, and returns
/// the signal's exit code.
fn say_interrupted(error: &DagError, signal: i32, console: &Console) -> ExitCode {
    // Pipelines that failed before the signal are still failures.
    if let DagError::Several(errors) = error {
        for failed in errors.iter().filter(|e| e.kept().is_none()) {
            console.error(&fkp::text::error_chain(failed));
        }
    }
    console.failure(&format!(
        "interrupted by {}: nothing half-written is left",
        signal_name(signal)
    ));
    for line in error.kept().map(dag::Kept::lines).unwrap_or_default() {
        console.failure(&line);
    }
    ExitCode::from(exit_code(signal))
}

/// Runs a command that may train first (`predict`, `export`) with Ctrl-C and
/// SIGTERM stopping that training at a safe point, as `fkp run` does. `dag`
/// finds the run's error in the command's. Returns the exit code of a signal
/// that stopped it, or the command's result.
fn interruptible<T, E: Into<anyhow::Error>>(
    console: &Console,
    work: impl FnOnce(&dag::Cancel) -> std::result::Result<T, E>,
    dag: impl Fn(&E) -> Option<&DagError>,
) -> Result<std::result::Result<T, ExitCode>> {
    let cancel = dag::Cancel::default();
    let signal = stop_on_signals(&cancel, false, console)?;
    let result = work(&cancel);
    let signal = signal.load(Ordering::SeqCst);
    match result {
        Err(error) if signal != 0 && dag(&error).is_some_and(|e| e.kept().is_some()) => {
            let run_error = dag(&error).expect("checked above");
            Ok(Err(say_interrupted(run_error, signal, console)))
        }
        Err(error) => Err(error.into()),
        Ok(_) if signal != 0 => Ok(Err(ExitCode::from(exit_code(signal)))),
        Ok(value) => Ok(Ok(value)),
    }
}

/// The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "Ctrl-C",
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

enum Direction {
    Push,
    Pull,
}

/// `fkp push` and `fkp pull`: moves the graph's entries to or from the remote cache.
fn transfer(
    direction: Direction,
    graph: &Graph,
    workspace: &Workspace,
    global: &GlobalArgs,
    console: &Console,
) -> Result<()> {
    let settings = Settings::load(&workspace.root)?;
    let remote = remote(global.remote.as_deref(), &settings)?
        .context("no remote cache: name one with --remote URL, FKP_REMOTE or [cache] remote in fkp.toml")?;
    let (done, words) = match direction {
        Direction::Push => (
            dag::push(graph, workspace, &remote, console)?,
            ["pushed", "to", "there already", "stages not built here"],
        ),
        Direction::Pull => {
            let lock = lock(workspace, global.no_wait, console)?;
            (
                dag::pull(graph, &lock, &remote, console)?,
                ["pulled", "from", "here already", "stages not in the remote"],
            )
        }
    };
    let [verb, preposition, already, missing] = words;
    console.status(&format!(
        "{verb} {} {preposition} {}; {} {already}; {} {missing}",
        count(done.moved, "entry", "entries"),
        remote.url(),
        done.already,
        done.missing
    ));
    Ok(())
}

/// The remote cache: `--remote` (or FKP_REMOTE), else fkp.toml's `[cache] remote`.
fn remote(flag: Option<&str>, settings: &Settings) -> Result<Option<Remote>> {
    match flag.or(settings.remote.as_deref()).filter(|url| !url.is_empty()) {
        Some(url) => Ok(Some(Remote::open(url)?)),
        None => Ok(None),
    }
}

/// Plans the clean and, holding the lock, carries it out; without it, only says.
fn clean(
    workspace: &Workspace,
    named: Vec<PathBuf>,
    overrides: &[Override],
    lock: Option<&WorkspaceLock>,
    console: &Console,
) -> Result<()> {
    let mut files = named;
    let pipelines_dir = workspace.root.join(PIPELINES_DIR);
    if pipelines_dir.is_dir() {
        files.extend(
            discover_pipelines(&pipelines_dir)
                .with_context(|| format!("cannot list {}", pipelines_dir.display()))?,
        );
    }
    if files.is_empty() {
        bail!(
            "no pipelines to keep the entries of: {} holds no *.toml and none were named; \
             name them (`fkp clean PIPELINE.toml...`) or delete {} yourself",
            pipelines_dir.display(),
            workspace.cache_dir.display()
        );
    }
    // A pipeline that fails to load must stop the clean: its entries would look unreferenced.
    let graph = Graph::load_with(&files, overrides)?;
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

/// `1 entry`, `2 entries`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
