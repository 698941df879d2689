//! `fkp watch` end to end: the real binary and the real (inotify) watcher, on
//! tiny files the tests write. Every wait is bounded and waits for a line fkp
//! prints, never for a fixed time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::common::{Scratch, blob_csv};

/// How long any one awaited line may take: generous for a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(120);

/// Every stage, with a training of `epochs` epochs on small faces.
fn pipeline(epochs: usize, lr: &str, samples: usize) -> String {
    format!(
        "[ingest]\ntrain = \"faces.csv\"\n[eda]\nsamples = 2\n[prepare]\nmissing = \"mask\"\n\
         [model]\narch = \"lenet\"\n\
         [train]\ndevice = \"cpu\"\nepochs = {epochs}\nbatch_size = 16\nlr = {lr}\n\
         [evaluate]\nsamples = {samples}\n"
    )
}

fn workspace(epochs: usize, lr: &str) -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(120, 24, 5));
    s.write("p.toml", pipeline(epochs, lr, 2));
    s
}

/// A running `fkp watch` and the lines it has printed (stdout and stderr).
struct Watching {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(s: &Scratch, args: &[&str]) -> Watching {
        let mut all = vec!["watch", "p.toml"];
        all.extend(args);
        let mut child = s
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fkp watch starts");
        let (sender, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; returns the lines printed since the
    /// previous wait, up to and including it.
    fn wait_for(&mut self, text: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut since = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    since.push(line.clone());
                    if line.contains(text) {
                        return since;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    panic!("no line with {text:?}; fkp watch printed:\n{}", self.printed());
                }
            }
        }
    }

    /// What the watch printed, without the tables' rows.
    fn printed(&self) -> String {
        let table = ['┌', '│', '╞', '├', '└'];
        let lines: Vec<&str> = self
            .seen
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with(table))
            .collect();
        lines.join("\n")
    }

    /// The lines printed within `quiet` (for checking that nothing more happens).
    fn lines_within(&mut self, quiet: Duration) -> Vec<String> {
        let deadline = Instant::now() + quiet;
        let mut found = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            found.push(line);
        }
        found
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the watch to exit; its exit code.
    fn exit_code(mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited, not killed");
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("fkp watch did not exit; it printed:\n{}", self.printed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stages a round's lines say ran, in order.
fn ran(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let stage = words.next()?;
            (words.next()? == "running").then(|| stage.to_string())
        })
        .collect()
}

#[test]
fn an_evaluate_edit_reruns_only_evaluate_and_the_lock_is_free_between_rounds() {
    let s = workspace(1, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    let first = watch.wait_for("round 1 done");
    assert_eq!(ran(&first), ["ingest", "eda", "prepare", "train", "evaluate"]);
    // The headline numbers (stdout) may arrive before or after stderr's lines.
    if !first.iter().any(|l| l.starts_with("p: val RMSE")) {
        watch.wait_for("p: val RMSE");
    }
    if !watch.seen.iter().any(|l| l.contains("waiting for changes")) {
        watch.wait_for("waiting for changes");
    }

    // Idle, the watch holds no lock: another writer gets in at once.
    s.ok(&["run", "p.toml", "--no-wait"]);

    s.write("p.toml", pipeline(1, "1e-3", 3));
    let second = watch.wait_for("round 2 done");
    assert!(second.iter().any(|l| l.contains("round 2: p.toml changed")));
    assert_eq!(ran(&second), ["evaluate"], "{second:#?}");
    for stage in ["ingest", "eda", "prepare", "train"] {
        assert!(
            second
                .iter()
                .any(|l| l.split_whitespace().take(2).eq([stage, "cached"])),
            "{stage} is cached: {second:#?}"
        );
    }
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn a_train_edit_during_training_cancels_it_and_undoing_the_edit_resumes_it() {
    let s = workspace(400, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    let first = watch.wait_for("epoch   2/400");
    let key = |lines: &[String]| {
        let line = lines
            .iter()
            .find(|l| l.contains("train      running"))
            .expect("train ran");
        line.split_whitespace().nth(2).unwrap().to_string()
    };
    let first_key = key(&first);

    s.write("p.toml", pipeline(400, "2e-3", 2));
    let cancelled = watch.wait_for("train      cancelled");
    assert!(
        cancelled.iter().any(|l| l.contains("cancelling [train]")),
        "{cancelled:#?}"
    );
    let restarted = watch.wait_for("train      running");
    assert_ne!(
        key(&restarted),
        first_key,
        "the new learning rate is a new training"
    );
    let pending_of_first = s
        .temp_dirs()
        .into_iter()
        .filter(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("train-{first_key}"))
        })
        .count();
    assert_eq!(
        pending_of_first, 0,
        "the cancelled training leaves no pending entry"
    );

    // Back to the first learning rate: that training resumes from its checkpoint.
    s.write("p.toml", pipeline(400, "1e-3", 2));
    watch.wait_for("train      cancelled");
    let resumed = watch.wait_for("resuming after epoch");
    assert!(resumed.iter().any(|l| l.contains("round 3")), "{resumed:#?}");
    watch.signal("TERM");
    assert_eq!(watch.exit_code(), 143);
}

#[test]
fn an_invalid_save_prints_the_error_and_the_next_valid_save_recovers() {
    let s = workspace(1, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    watch.wait_for("round 1 done");

    s.write(
        "p.toml",
        pipeline(1, "1e-3", 2).replace("samples = 2\n[prepare]", "samples = \"two\"\n[prepare]"),
    );
    let broken = watch.wait_for("waiting for a fix");
    let error = broken
        .iter()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(error.contains("eda.samples"), "{broken:#?}");
    assert!(
        broken.iter().any(|l| l.contains("p.toml:4:")),
        "file and line: {broken:#?}"
    );

    s.write("p.toml", pipeline(1, "1e-3", 3));
    let fixed = watch.wait_for("round 2 done");
    assert_eq!(ran(&fixed), ["evaluate"], "{fixed:#?}");
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn a_pipeline_broken_from_the_start_runs_once_it_is_fixed() {
    let s = workspace(1, "1e-3");
    s.write("p.toml", format!("oops\n{}", pipeline(1, "1e-3", 2)));
    let mut watch = Watching::start(&s, &[]);
    let broken = watch.wait_for("waiting for a fix");
    assert!(broken.iter().any(|l| l.contains("p.toml:1:")), "{broken:#?}");

    s.write("p.toml", pipeline(1, "1e-3", 2));
    let fixed = watch.wait_for("round 1 done");
    assert_eq!(ran(&fixed), ["ingest", "eda", "prepare", "train", "evaluate"]);
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn an_input_in_folders_created_later_is_seen() {
    let s = workspace(1, "1e-3");
    s.write(
        "p.toml",
        pipeline(1, "1e-3", 2).replace("faces.csv", "later/deeper/faces.csv"),
    );
    let mut watch = Watching::start(&s, &[]);
    let failed = watch.wait_for("round 1 failed");
    assert!(
        failed.iter().any(|l| l.contains("later/deeper/faces.csv")),
        "{failed:#?}"
    );

    s.write("later/deeper/faces.csv", blob_csv(120, 24, 5));
    let second = watch.wait_for("round 2 done");
    assert_eq!(ran(&second), ["ingest", "eda", "prepare", "train", "evaluate"]);
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn an_evaluate_edit_undone_during_training_leaves_the_round_running() {
    let s = workspace(60, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    watch.wait_for("epoch   2/60");
    s.write("p.toml", pipeline(60, "1e-3", 3));
    watch.wait_for("[train] is unaffected");
    s.write("p.toml", pipeline(60, "1e-3", 2));
    watch.wait_for("back to the plan that is running");
    let rest = watch.wait_for("round 1 done");
    assert!(rest.iter().any(|l| l.contains("evaluate   running")), "{rest:#?}");
    let after = watch.lines_within(Duration::from_millis(1000));
    assert!(!after.iter().any(|l| l.contains("round 2")), "{after:#?}");
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn a_rename_save_and_a_vim_style_save_are_each_seen_once() {
    let s = workspace(1, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    watch.wait_for("round 1 done");

    // VS Code, JetBrains: write a temporary file, rename it over the original.
    s.write(".p.toml.tmp", pipeline(1, "1e-3", 3));
    std::fs::rename(s.path(".p.toml.tmp"), s.path("p.toml")).unwrap();
    watch.wait_for("round 2 done");

    // vim: a swap file, the original moved to a backup, a new file, backup removed.
    s.write(".p.toml.swp", "swap");
    std::fs::rename(s.path("p.toml"), s.path("p.toml~")).unwrap();
    s.write("p.toml", pipeline(1, "1e-3", 4));
    std::fs::remove_file(s.path("p.toml~")).unwrap();
    std::fs::remove_file(s.path(".p.toml.swp")).unwrap();
    watch.wait_for("round 3 done");

    // A save that changes nothing starts no round.
    s.write("p.toml", pipeline(1, "1e-3", 4));
    let after = watch.lines_within(Duration::from_millis(1500));
    assert!(
        !after.iter().any(|l| l.contains("round 4")),
        "each save is one round: {after:#?}"
    );
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn a_changed_input_csv_reruns_ingest_and_what_follows() {
    let s = workspace(1, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    watch.wait_for("round 1 done");

    s.write("faces.csv", blob_csv(120, 24, 6));
    let second = watch.wait_for("round 2 done");
    assert!(
        second.iter().any(|l| l.contains("faces.csv changed")),
        "{second:#?}"
    );
    assert_eq!(ran(&second), ["ingest", "eda", "prepare", "train", "evaluate"]);
    watch.signal("INT");
    assert_eq!(watch.exit_code(), 130);
}

#[test]
fn ctrl_c_during_training_exits_130_and_the_next_run_resumes_to_the_same_model() {
    let s = workspace(6, "1e-3");
    let mut watch = Watching::start(&s, &[]);
    watch.wait_for("epoch   2/6");
    watch.signal("INT");
    watch.wait_for("train      cancelled");
    assert_eq!(watch.exit_code(), 130);
    assert!(s.temp_dirs().is_empty());
    assert!(s.entries("train").is_empty(), "no half-written entry");

    let resumed = s.ok(&["run", "p.toml"]);
    assert!(resumed.contains("resuming after epoch"), "{resumed}");
    let uninterrupted = workspace(6, "1e-3");
    uninterrupted.ok(&["run", "p.toml", "-q"]);
    let model = |s: &Scratch| std::fs::read(s.entries("train")[0].join("data/model.safetensors")).unwrap();
    assert!(
        model(&s) == model(&uninterrupted),
        "a resumed training ends bit-identical"
    );
}
