//! `fkp run --executor slurm` against a real Slurm: the one-node cluster that
//! `scripts/slurm-local.sh` starts. Without one these tests cannot run, so they are
//! ignored by default and cargo says so; `cargo test --release -- --ignored` runs
//! them where the cluster is up (CI starts it), and there they fail if it is not.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Scratch, blob_csv, files_under};

/// Fails the test unless a Slurm cluster answers here.
fn require_slurm() {
    let up = Command::new("sinfo")
        .args(["--noheader", "--format=%t"])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty());
    assert!(
        up,
        "no Slurm cluster answers: run `bash scripts/slurm-local.sh` first"
    );
}

/// Two pipelines sharing ingest and prepare, each training LeNet briefly.
fn study(s: &Scratch, settings: &str) {
    s.write("faces.csv", blob_csv(120, 24, 5));
    s.write(
        "fkp.toml",
        format!("[executor]\nkind = \"slurm\"\npoll_seconds = 0.2\n{settings}"),
    );
    let base = "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\n\
                [model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 2\n";
    s.write("a.toml", format!("{base}seed = 1\n[evaluate]\n"));
    s.write("b.toml", format!("{base}seed = 2\n[evaluate]\n"));
}

/// The ids of the queued jobs whose name contains `name` (`fkp:<pipeline>:<stage>`).
fn queued(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["--noheader", "--format=%i %j"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Polls `found` until it gives something, failing after `limit` seconds.
fn wait_for<T>(what: &str, limit: u64, mut found: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(started.elapsed() < Duration::from_secs(limit), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `fkp run FILE` (its jobs held by the study's settings), waits until
/// it has submitted its four jobs, kills it, and returns their ids.
fn submitted_then_killed(s: &Scratch, file: &str, jobs: &str) -> Vec<String> {
    let mut run = s
        .command(&["run", file])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Queued, and recorded (a record is written just after its sbatch returns).
    let ids = wait_for("the run never submitted its jobs", 60, || {
        let records = std::fs::read_dir(s.path(".fkp/jobs")).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        });
        let ids = queued(jobs);
        (ids.len() == 4 && records == 4).then_some(ids)
    });
    run.kill().unwrap();
    run.wait().unwrap();
    ids
}

/// The entries (without their timings) and reports a run left.
fn outputs(s: &Scratch) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for root in [".fkp/entries", "reports"] {
        for (path, bytes) in files_under(&s.path(root)) {
            if path.file_name().is_some_and(|n| n != "timing.json") {
                files.insert(PathBuf::from(root).join(path), bytes);
            }
        }
    }
    files
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_study_runs_as_jobs_like_a_local_run_and_a_rerun_submits_nothing() {
    require_slurm();
    let s = Scratch::new();
    study(&s, "");
    let out = s.ok(&["run", "a.toml", "b.toml"]);
    // ingest, prepare, a's train and evaluate, b's train and evaluate: shared stages once.
    assert_eq!(out.matches("submitted job").count(), 6, "{out}");
    assert!(
        out.contains("train      submitted job") && out.contains(" after "),
        "{out}"
    );
    assert!(out.contains("(shared with `a`)"), "{out}");
    assert!(s.path("reports/b/metrics.json").is_file());
    let left: Vec<PathBuf> = s
        .path(".fkp/jobs")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        left.iter().all(|p| p.extension().is_some_and(|x| x == "log")),
        "jobs that succeeded leave their logs only: {left:?}"
    );

    let again = s.ok(&["run", "a.toml", "b.toml"]);
    assert!(!again.contains("submitted"), "{again}");

    let local = Scratch::new();
    study(&local, "");
    local.ok(&["run", "--executor", "local", "a.toml", "b.toml"]);
    assert_eq!(
        outputs(&s),
        outputs(&local),
        "the jobs built the same bytes as a local run"
    );
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_failed_job_is_reported_with_its_id_and_log_and_the_next_run_resubmits_only_it() {
    require_slurm();
    let s = Scratch::new();
    study(&s, "");
    // Evaluate's job fails: its faces cannot be read (found only when it runs).
    let broken = "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\n\
                  [model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 2\n\
                  [evaluate]\ndata = \"gone.csv\"\n";
    s.write("c.toml", broken);
    s.write("gone.csv", "left_eye_center_x,Image\nnot a number,1 2 3\n");
    let (code, err) = s.fails(&["run", "c.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Slurm job") && err.contains("FAILED"), "{err}");
    assert!(
        err.contains("the end of its log") && err.contains("gone.csv"),
        "the log's tail: {err}"
    );
    assert!(
        s.path("reports/c/train").is_dir(),
        "what succeeded is published: {err}"
    );

    s.write("gone.csv", blob_csv(10, 24, 9));
    let fixed = s.ok(&["run", "c.toml"]);
    assert_eq!(
        fixed.matches("submitted job").count(),
        1,
        "only evaluate: {fixed}"
    );
    assert!(fixed.contains("evaluate   submitted job"), "{fixed}");
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_rerun_reattaches_to_jobs_still_queued_instead_of_submitting_them_again() {
    require_slurm();
    let s = Scratch::new();
    // Held jobs stay queued until released: the first run is killed meanwhile.
    study(&s, "sbatch_args = [\"--hold\"]\n");
    submitted_then_killed(&s, "a.toml", "fkp:a:");

    let second = s
        .command(&["run", "a.toml"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Released once the second run has had time to find them.
    std::thread::sleep(Duration::from_secs(2));
    let mine = queued("fkp:a:");
    assert_eq!(mine.len(), 4, "still queued: {mine:?}");
    for id in &mine {
        assert!(
            Command::new("scontrol")
                .args(["release", id])
                .status()
                .unwrap()
                .success()
        );
    }
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("reattached to job").count(), 4, "{err}");
    assert!(!err.contains("submitted job"), "{err}");
    assert!(s.path("reports/a/metrics.json").is_file());
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_cancelled_training_job_is_reported_and_resumes_from_its_checkpoint() {
    require_slurm();
    let s = Scratch::new();
    study(&s, "");
    s.write("faces.csv", blob_csv(400, 32, 5));
    s.write(
        "long.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\n\
         [model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 40\n[evaluate]\n",
    );
    let run = s
        .command(&["run", "long.toml"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = wait_for("no checkpoint was written", 120, || {
        std::fs::read_dir(s.path(".fkp/checkpoints"))
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
            .filter(|dir| dir.join("state.json").is_file())
    });
    let train = queued("fkp:long:train")
        .pop()
        .expect("the training job is running");
    assert!(Command::new("scancel").arg(&train).status().unwrap().success());
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("Slurm job {train} ended CANCELLED")),
        "{err}"
    );
    assert!(
        checkpoint.join("state.json").is_file(),
        "the checkpoint survives the cancel"
    );
    assert!(
        !s.path(".fkp/entries/train").exists(),
        "a cancelled job leaves no entry"
    );

    let again = s.ok(&["run", "long.toml"]);
    assert_eq!(
        again.matches("submitted job").count(),
        2,
        "train and evaluate only: {again}"
    );
    let logs: String = std::fs::read_dir(s.path(".fkp/jobs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("-train-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(logs.contains("resuming after epoch"), "{logs}");
    assert!(logs.contains("epoch  40/40"), "{logs}");
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_job_that_can_never_start_is_cancelled_and_reported() {
    require_slurm();
    let s = Scratch::new();
    // More CPUs than the partition's nodes have: pending (PartitionConfig) for ever.
    study(&s, "cpus = 100000\n");
    let (code, err) = s.fails(&["run", "a.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("never clears"), "{err}");
    assert!(queued("fkp:a:").is_empty(), "fkp cancelled what could not start");
}

#[test]
#[ignore = "needs a Slurm cluster: `bash scripts/slurm-local.sh`, then `cargo test --release -- --ignored`"]
fn a_rerun_with_other_executor_settings_replaces_the_queued_jobs() {
    require_slurm();
    let s = Scratch::new();
    study(&s, "sbatch_args = [\"--hold\"]\n");
    let held = submitted_then_killed(&s, "b.toml", "fkp:b:");

    study(&s, "");
    let out = s.ok(&["run", "b.toml"]);
    assert_eq!(
        out.matches("asked for other [executor] settings: cancelled")
            .count(),
        4,
        "{out}"
    );
    assert_eq!(out.matches("submitted job").count(), 4, "{out}");
    let still: Vec<String> = queued("fkp:b:")
        .into_iter()
        .filter(|id| held.contains(id))
        .collect();
    assert!(still.is_empty(), "the held jobs are gone: {still:?}");
}
