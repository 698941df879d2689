//! The Slurm executor: each stage that must build becomes a Slurm job running
//! `fkp run-stage` on the cluster's shared filesystem, submitted behind the
//! jobs of the stages it reads (`--dependency=afterok`), so the whole study is
//! queued at once and goes on without the submitting `fkp run`.
//!
//! The submitting run holds the workspace lock and alone writes records and
//! reports; jobs take no workspace lock (that would deadlock), only the build
//! lock of their key, and write only their entry. A job is named by its plan
//! (see `Resolution::plan`) and recorded in `.fkp/jobs/<plan>.json`, so a rerun
//! while it is queued or running waits for it instead of submitting it again.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::DagError;
use super::build::{BuildRequest, Builder, Built};
use super::error::JobFailure;
use super::graph::Graph;
use super::store::Store;
use crate::console::Console;
use crate::fsutil;
use crate::settings::SlurmSettings;

/// What a Slurm run needs besides the graph: how the jobs load the same graph.
#[derive(Debug, Clone)]
pub struct SlurmRun {
    pub settings: SlurmSettings,
    /// The pipeline files of this run, absolute, and its `--set` arguments.
    pub files: Vec<PathBuf>,
    pub overrides: Vec<String>,
    pub workspace_root: PathBuf,
    pub cache_dir: PathBuf,
    /// The fkp binary the jobs run: this one, on the shared filesystem.
    pub program: PathBuf,
}

/// `.fkp/jobs/<plan>.json`: the job building a plan, for a later run to find.
#[derive(Debug, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    pipeline: String,
    label: String,
    log: PathBuf,
    /// What it asked sbatch for (without its dependencies): a rerun whose
    /// `[executor]` asks for something else does not reattach to it.
    resources: Vec<String>,
}

struct Submitted {
    id: String,
    plan: String,
    log: PathBuf,
    /// The state last seen (`PENDING`, `RUNNING`), said when it changes.
    state: String,
}

pub(super) struct SlurmBuilder<'a> {
    run: &'a SlurmRun,
    graph: &'a Graph,
    store: &'a Store,
    consoles: &'a [Console],
    label_width: usize,
    /// Jobs in flight, by node.
    jobs: BTreeMap<usize, Submitted>,
    /// Ended jobs not yet handed back, upstream first.
    ended: VecDeque<Built>,
}

impl<'a> SlurmBuilder<'a> {
    pub fn new(
        run: &'a SlurmRun,
        graph: &'a Graph,
        store: &'a Store,
        consoles: &'a [Console],
        label_width: usize,
    ) -> Self {
        SlurmBuilder {
            run,
            graph,
            store,
            consoles,
            label_width,
            jobs: BTreeMap::new(),
            ended: VecDeque::new(),
        }
    }

    fn record_path(&self, plan: &str) -> PathBuf {
        self.store.jobs_dir().join(format!("{plan}.json"))
    }

    /// The job a run before this one submitted for `plan`, if it is still
    /// queued or running.
    fn live_job(&self, plan: &str) -> Option<(JobRecord, JobState)> {
        let record: JobRecord = serde_json::from_slice(&std::fs::read(self.record_path(plan)).ok()?).ok()?;
        let states = query(std::slice::from_ref(&record.id)).ok()?;
        let state = states.get(&record.id)?.clone();
        (!state.ended()).then_some((record, state))
    }

    /// The sbatch options of node `n`'s job, but its dependencies.
    fn resources(&self, n: usize, log: &Path) -> Vec<String> {
        let node = &self.graph.nodes[n];
        let pipeline = &self.graph.pipelines[node.pipeline].name;
        sbatch_arguments(
            &self.run.settings,
            &format!("fkp:{pipeline}:{}", node.label),
            log,
            &self.run.workspace_root,
            self.graph.stage(n).needs_gpu(),
        )
    }

    fn submit(&self, request: &BuildRequest, after: &[String]) -> Result<(String, PathBuf), String> {
        let graph = self.graph;
        let node = &graph.nodes[request.n];
        let pipeline = &graph.pipelines[node.pipeline].name;
        let dir = self.store.jobs_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let stem = format!("{}-{}", &request.plan[..16], node.label.replace('#', "-"));
        let script = dir.join(format!("{stem}.sh"));
        let log_pattern = dir.join(format!("{stem}-%j.log"));
        let text = job_script(self.run, pipeline, &node.label, request);
        fsutil::write_atomic(&script, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        let resources = self.resources(request.n, &log_pattern);
        let mut arguments = resources.clone();
        arguments.extend(dependency(after));
        let output = Command::new("sbatch")
            .args(&arguments)
            .arg(&script)
            .output()
            .map_err(|e| format!("cannot run sbatch: {e} (is Slurm installed here?)"))?;
        if !output.status.success() {
            return Err(format!(
                "sbatch {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        // `--parsable` prints `<id>` or `<id>;<cluster>`.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(format!("sbatch printed no job id: {stdout:?}"));
        }
        let log = PathBuf::from(log_pattern.to_string_lossy().replace("%j", &id));
        let record = JobRecord {
            id: id.clone(),
            pipeline: pipeline.clone(),
            label: node.label.clone(),
            log: log.clone(),
            resources,
        };
        fsutil::write_json(&self.record_path(&request.plan), &record)
            .map_err(|e| format!("job {id} was submitted but cannot be recorded: {e}"))?;
        Ok((id, log))
    }

    /// Reads every job's state once; moves those that ended to `ended`.
    fn poll(&mut self) {
        let ids: Vec<String> = self.jobs.values().map(|job| job.id.clone()).collect();
        let states = match query(&ids) {
            Ok(states) => states,
            Err(message) => {
                self.consoles[0].warn(&format!("cannot read job states ({message}); trying again"));
                return;
            }
        };
        let nodes: Vec<usize> = self.jobs.keys().copied().collect();
        for n in nodes {
            let job = &self.jobs[&n];
            // Gone from the controller's memory: the entry, or its absence, tells.
            let state = states.get(&job.id).cloned().unwrap_or(JobState {
                name: "ENDED".to_string(),
                reason: String::new(),
            });
            let stuck = state.name == "PENDING" && NEVER_STARTS.contains(&state.reason.as_str());
            if !state.ended() && !stuck {
                if state.name != job.state {
                    let node = &self.graph.nodes[n];
                    self.consoles[node.pipeline].status(&format!(
                        "  {:<w$} job {} {}",
                        node.label,
                        job.id,
                        state.name.to_lowercase(),
                        w = self.label_width
                    ));
                    self.jobs.get_mut(&n).expect("listed above").state = state.name;
                }
                continue;
            }
            if stuck {
                let _ = Command::new("scancel").arg(&job.id).status();
            }
            let job = self.jobs.remove(&n).expect("listed above");
            let _ = std::fs::remove_file(self.record_path(&job.plan));
            let node = &self.graph.nodes[n];
            let console = &self.consoles[node.pipeline];
            let result = match state.name.as_str() {
                "COMPLETED" | "ENDED" => {
                    // The log stays (what the stage printed); `fkp clean` removes it.
                    let _ = std::fs::remove_file(job_script_path(&job.log));
                    console.status(&format!(
                        "  {:<w$} job {} ended: {}",
                        node.label,
                        job.id,
                        state.name.to_lowercase(),
                        w = self.label_width
                    ));
                    Ok(None)
                }
                _ => Err(DagError::Job(Box::new(JobFailure {
                    pipeline: self.graph.pipelines[node.pipeline].name.clone(),
                    stage: node.kind,
                    job: job.id.clone(),
                    state: match state.reason.as_str() {
                        _ if stuck => format!(
                            "without starting: it was pending for a reason that never clears ({}), so fkp cancelled it",
                            state.reason
                        ),
                        "" | "None" => state.name.clone(),
                        reason => format!("{} ({reason})", state.name),
                    },
                    tail: log_tail(&job.log, 20),
                    log: job.log.clone(),
                }))),
            };
            self.ended.push_back(Built {
                n,
                plan: job.plan,
                // The walk reads the entry, and what made it, from the cache.
                inputs: None,
                result,
            });
        }
    }
}

impl Builder for SlurmBuilder<'_> {
    fn start(&mut self, request: BuildRequest) -> Result<(), DagError> {
        let node = &self.graph.nodes[request.n];
        let console = &self.consoles[node.pipeline];
        let w = self.label_width;
        let live = self.live_job(&request.plan).filter(|(record, _)| {
            let same = record.resources == self.resources(request.n, &log_pattern_of(&record.log));
            if !same {
                let _ = Command::new("scancel").arg(&record.id).status();
                console.status(&format!(
                    "  {:<w$} job {} asked for other [executor] settings: cancelled",
                    node.label, record.id
                ));
            }
            same
        });
        let (id, log, state) = match live {
            Some((record, state)) => {
                console.status(&format!(
                    "  {:<w$} reattached to job {} ({})",
                    node.label,
                    record.id,
                    state.name.to_lowercase()
                ));
                (record.id, record.log, state.name)
            }
            None => {
                let mut after: Vec<String> = request
                    .after
                    .iter()
                    .filter_map(|d| self.jobs.get(d).map(|job| job.id.clone()))
                    .collect();
                after.sort_by_key(|id| id.parse::<u64>().unwrap_or(u64::MAX));
                after.dedup();
                let (id, log) = self
                    .submit(&request, &after)
                    .map_err(|message| DagError::Submit {
                        pipeline: self.graph.pipelines[node.pipeline].name.clone(),
                        stage: node.kind,
                        message,
                    })?;
                let behind = match after.is_empty() {
                    true => String::new(),
                    false => format!(" after {}", after.join(", ")),
                };
                console.status(&format!(
                    "  {:<w$} submitted job {id}{behind}: {}",
                    node.label, request.why
                ));
                (id, log, "PENDING".to_string())
            }
        };
        self.jobs.insert(
            request.n,
            Submitted {
                id,
                plan: request.plan,
                log,
                state,
            },
        );
        Ok(())
    }

    fn next(&mut self) -> Built {
        let interval = Duration::from_secs_f64(self.run.settings.poll_seconds);
        loop {
            if let Some(built) = self.ended.pop_front() {
                return built;
            }
            let polled = Instant::now();
            self.poll();
            if self.ended.is_empty() {
                std::thread::sleep(interval.saturating_sub(polled.elapsed()));
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct JobState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`...
    name: String,
    /// Why it is pending or how it ended (`Dependency`, `NonZeroExitCode`).
    reason: String,
}

impl JobState {
    fn ended(&self) -> bool {
        !matches!(
            self.name.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "RESIZING"
                | "STAGE_OUT"
                | "SIGNALING"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESV_DEL_HOLD"
        )
    }
}

/// The state of each of `ids` that the controller still knows (finished jobs
/// stay for `MinJobAge`), from one `squeue` call.
fn query(ids: &[String]) -> Result<BTreeMap<String, JobState>, String> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let output = Command::new("squeue")
        .args(["--noheader", "--states=all", "--format=%i|%T|%r"])
        .arg(format!("--jobs={}", ids.join(",")))
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Every listed job already forgotten: squeue calls the list invalid.
        if stderr.contains("Invalid job id") {
            return Ok(BTreeMap::new());
        }
        return Err(format!("squeue {}: {}", output.status, stderr.trim()));
    }
    Ok(parse_squeue(&stdout))
}

fn parse_squeue(text: &str) -> BTreeMap<String, JobState> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().splitn(3, '|');
            let id = fields.next()?.to_string();
            let name = fields.next()?.to_string();
            let reason = fields.next().unwrap_or_default().to_string();
            Some((id, JobState { name, reason }))
        })
        .collect()
}

/// Pending reasons that never clear by themselves: the job asks for more than
/// the partition, account or QOS allows, or waits on a job that failed.
const NEVER_STARTS: &[&str] = &[
    "DependencyNeverSatisfied",
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxNodePerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
    "QOSMaxMemoryPerJob",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxNodePerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
];

/// The `--output` pattern a job's log was named from (`<stem>-%j.log`).
fn log_pattern_of(log: &Path) -> PathBuf {
    log.with_file_name(format!("{}-%j.log", log_stem(log)))
}

/// `<stem>` of a job's log `<stem>-<id>.log`, which its script `<stem>.sh` shares.
fn log_stem(log: &Path) -> String {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.rsplit_once('-')
        .map_or(name.clone(), |(stem, _)| stem.to_string())
}

/// The options of one stage's `sbatch`, from `[executor]`.
fn sbatch_arguments(
    settings: &SlurmSettings,
    name: &str,
    log: &Path,
    workdir: &Path,
    gpu: bool,
) -> Vec<String> {
    let mut arguments = vec![
        "--parsable".to_string(),
        format!("--job-name={name}"),
        format!("--output={}", log.display()),
        format!("--chdir={}", workdir.display()),
        // A job whose upstream job failed is cancelled, not left pending forever.
        "--kill-on-invalid-dep=yes".to_string(),
    ];
    let optional = [
        ("--partition", settings.partition.clone()),
        ("--time", settings.time.clone()),
        ("--mem", settings.mem.clone()),
        ("--cpus-per-task", settings.cpus.map(|c| c.to_string())),
        ("--account", settings.account.clone()),
        ("--gres", gpu.then(|| settings.gpu_gres.clone())),
    ];
    for (flag, value) in optional {
        if let Some(value) = value {
            arguments.push(format!("{flag}={value}"));
        }
    }
    arguments.extend(settings.sbatch_args.iter().cloned());
    arguments
}

/// Waits for the jobs `after` to succeed.
fn dependency(after: &[String]) -> Option<String> {
    (!after.is_empty()).then(|| format!("--dependency=afterok:{}", after.join(":")))
}

/// The job's shell script: `fkp run-stage` on one node of one pipeline.
fn job_script(run: &SlurmRun, pipeline: &str, label: &str, request: &BuildRequest) -> String {
    let mut command = vec![
        quote(&run.program.to_string_lossy()),
        "--cache-dir".to_string(),
        quote(&run.cache_dir.to_string_lossy()),
    ];
    for set in &run.overrides {
        command.extend(["--set".to_string(), quote(set)]);
    }
    command.extend([
        "run-stage".to_string(),
        "--pipeline".to_string(),
        quote(pipeline),
        "--stage".to_string(),
        quote(label),
        "--plan".to_string(),
        request.plan.clone(),
    ]);
    if let Some(key) = &request.key {
        command.extend(["--key".to_string(), key.clone()]);
    }
    if request.forced {
        command.push("--force".to_string());
    }
    command.push("--".to_string());
    command.extend(run.files.iter().map(|f| quote(&f.to_string_lossy())));
    // The kernels use the CPUs Slurm gave the job, not every core of the node.
    let threads = match run.settings.cpus {
        Some(_) => "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n",
        None => "",
    };
    format!(
        "#!/bin/sh\n# fkp run-stage: pipeline `{pipeline}`, stage [{label}], plan {}\n{threads}exec {}\n",
        request.plan,
        command.join(" ")
    )
}

/// The script beside a job's log: `<stem>-<id>.log` was written by `<stem>.sh`.
fn job_script_path(log: &Path) -> PathBuf {
    log.with_file_name(format!("{}.sh", log_stem(log)))
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The last `lines` lines of a job's log, or why it cannot be read.
fn log_tail(log: &Path, lines: usize) -> String {
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read the log: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn sbatch_gets_the_executor_keys_and_a_gpu_only_where_asked() {
        let mut settings = Settings::default().slurm;
        settings.partition = Some("gpu".to_string());
        settings.time = Some("4:00:00".to_string());
        settings.mem = Some("16G".to_string());
        settings.cpus = Some(8);
        settings.account = Some("lab".to_string());
        settings.gpu_gres = "gpu:a100:1".to_string();
        settings.sbatch_args = vec!["--qos=short".to_string()];
        let log = Path::new("/w/.fkp/jobs/x-%j.log");
        let gpu = sbatch_arguments(&settings, "fkp:p:train", log, Path::new("/w"), true);
        assert_eq!(
            gpu,
            [
                "--parsable",
                "--job-name=fkp:p:train",
                "--output=/w/.fkp/jobs/x-%j.log",
                "--chdir=/w",
                "--kill-on-invalid-dep=yes",
                "--partition=gpu",
                "--time=4:00:00",
                "--mem=16G",
                "--cpus-per-task=8",
                "--account=lab",
                "--gres=gpu:a100:1",
                "--qos=short",
            ]
        );
        let cpu = sbatch_arguments(&Settings::default().slurm, "n", log, Path::new("/w"), false);
        assert!(!cpu.iter().any(|a| a.starts_with("--gres")));
        let after = ["41".to_string(), "42".to_string()];
        assert_eq!(dependency(&after).as_deref(), Some("--dependency=afterok:41:42"));
        assert_eq!(dependency(&[]), None);
        assert_eq!(
            log_pattern_of(Path::new("/j/ab12-train-41.log")),
            Path::new("/j/ab12-train-%j.log")
        );
        assert_eq!(
            job_script_path(Path::new("/j/ab12-train-41.log")),
            Path::new("/j/ab12-train.sh")
        );
    }

    #[test]
    fn squeue_lines_become_states() {
        let states = parse_squeue("12|RUNNING|None\n13|PENDING|Dependency\n14|FAILED|NonZeroExitCode\n");
        assert_eq!(states["12"].name, "RUNNING");
        assert!(!states["13"].ended());
        assert_eq!(states["13"].reason, "Dependency");
        assert!(states["14"].ended());
    }

    #[test]
    fn shell_words_survive_quotes_and_spaces() {
        assert_eq!(quote("it's a b"), "'it'\\''s a b'");
    }
}
