//! A cache hit must mean exactly what a fresh run would produce. These tests build
//! every stage from a clean cache several times (also on 1 and 2 threads, with
//! stages built side by side by `-j 3`, and
//! once killed with SIGKILL and resumed, with Adam, AdamW, SGD with
//! momentum and a moving average of the weights) and compare every byte the stages wrote: entries (data, reports,
//! manifests) and the published reports. Only the entries' `timing.json` (wall
//! times, images/s) may differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Scratch, blob_csv, files_under};

/// Every stage, with dropout and every augmentation, on faces big enough that
/// an epoch takes a while (so a run can be killed between two).
fn workspace() -> Scratch {
    workspace_with("")
}

/// [`workspace`] with more `[train]` keys (another optimiser).
fn workspace_with(train: &str) -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(400, 40, 3));
    s.write(
        "p.toml",
        format!(
            "[ingest]\ntrain = \"faces.csv\"\n[eda]\nsamples = 4\n[prepare]\nmissing = \"mask\"\n\
             [model]\narch = \"lenet\"\ndropout = 0.5\n\
             [train]\ndevice = \"cpu\"\nepochs = 4\nbatch_size = 16\n{train}\
             [train.augment]\nhflip = true\nshift_px = 2\nrotate_deg = 5\nscale = 0.05\nbrightness = 0.1\ncontrast = 0.1\n\
             [evaluate]\ndata = \"faces.csv\"\nsamples = 4\n"
        ),
    );
    s
}

/// What a run left: every file under the cache's entries and under reports/,
/// except the volatile timing files.
fn outputs(s: &Scratch) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for root in [".fkp/entries", "reports"] {
        for (path, bytes) in files_under(&s.path(root)) {
            if path.file_name().is_some_and(|n| n == "timing.json") {
                continue;
            }
            files.insert(Path::new(root).join(path), bytes);
        }
    }
    files
}

fn run(s: &Scratch, threads: &str, jobs: &str) {
    let out = s
        .command(&["run", "p.toml", "-q", "--jobs", jobs])
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The files that differ between two runs (or exist in one only).
fn differences(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut paths: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| a.get(*p) != b.get(*p))
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn every_output_is_byte_identical_across_clean_runs_and_thread_counts() {
    let reference = workspace();
    run(&reference, "2", "1");
    let expected = outputs(&reference);
    let stages: Vec<String> = expected
        .keys()
        .filter_map(|p| p.strip_prefix(".fkp/entries").ok())
        .filter_map(|p| p.iter().next().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for stage in ["ingest", "eda", "prepare", "train", "evaluate"] {
        assert!(stages.iter().any(|s| s == stage), "no {stage} entry");
    }
    assert!(expected.keys().any(|p| p.ends_with("model.safetensors")));
    assert!(expected.keys().any(|p| p.ends_with("prepared.safetensors")));
    assert!(expected.keys().any(|p| p.ends_with("predictions.png")));

    // Three jobs: eda builds beside prepare and train.
    for (threads, jobs) in [("2", "1"), ("1", "1"), ("2", "3")] {
        let again = workspace();
        run(&again, threads, jobs);
        let differ = differences(&expected, &outputs(&again));
        assert!(
            differ.is_empty(),
            "with {threads} thread(s) and {jobs} job(s), these files differ: {differ:#?}"
        );
    }
}

/// The files that differ, each with how many of its bytes do (or how much
/// longer or shorter it is).
fn differences_in_bytes(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    differences(a, b)
        .into_iter()
        .map(|path| {
            let (x, y) = (&a.get(Path::new(&path)), &b.get(Path::new(&path)));
            match (x, y) {
                (Some(x), Some(y)) if x.len() == y.len() => {
                    let differ = x.iter().zip(y.iter()).filter(|(p, q)| p != q).count();
                    format!("{path}: {differ} of {} bytes differ", x.len())
                }
                (Some(x), Some(y)) => format!("{path}: {} bytes, then {}", x.len(), y.len()),
                _ => format!("{path}: in one run only"),
            }
        })
        .collect()
}

#[test]
fn a_run_killed_after_a_checkpoint_resumes_to_the_same_bytes() {
    killed_and_resumed_to_the_same_bytes("");
}

/// SGD's momentum is checkpointed like Adam's moments: without it a resumed
/// run's weights went elsewhere.
#[test]
fn a_killed_sgd_run_with_momentum_resumes_to_the_same_bytes() {
    killed_and_resumed_to_the_same_bytes("optimizer = \"sgd\"\nmomentum = 0.9\nnesterov = true\n");
}

#[test]
fn a_killed_adamw_run_resumes_to_the_same_bytes() {
    killed_and_resumed_to_the_same_bytes("optimizer = \"adamw\"\n");
}

/// The moving average of the weights and its step count are checkpointed:
/// without them the resumed run's model (the average) would differ.
#[test]
fn a_killed_run_with_a_moving_average_resumes_to_the_same_bytes() {
    killed_and_resumed_to_the_same_bytes("ema = 0.9\n");
}

/// Trains once straight and once killed after its first checkpoint and
/// resumed; every output must match, and the resumed run's timing.json must
/// count the time of the run that was killed.
fn killed_and_resumed_to_the_same_bytes(train: &str) {
    let reference = workspace_with(train);
    run(&reference, "2", "1");
    let expected = outputs(&reference);

    let s = workspace_with(train);
    let dir = kill_after_the_first_checkpoint(&s);
    // A kill can also fall while the next epoch's files are being written: the
    // committed state.json must be all that counts.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
    let next = state["progress"]["epochs_done"].as_u64().unwrap() + 1;
    for kind in ["weights", "optimizer", "best"] {
        std::fs::write(dir.join(format!("{kind}-{next:05}.safetensors")), b"half-written").unwrap();
    }

    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("resuming after epoch"), "{out}");
    assert!(
        !out.contains("epoch   1/4"),
        "a resumed run does not redo epochs: {out}"
    );
    let checkpoints = std::fs::read_dir(s.path(".fkp/checkpoints")).unwrap().count();
    assert_eq!(checkpoints, 0, "the checkpoint goes once the stage succeeds");
    let differ = differences_in_bytes(&expected, &outputs(&s));
    assert!(
        differ.is_empty(),
        "after a kill and resume, these files differ: {differ:#?}"
    );

    // The killed run's epochs count in the wall time: the total is at least
    // every epoch's time, and the part before the resume is recorded.
    let entry = &s.entries("train")[0];
    let timing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("timing.json")).unwrap()).unwrap();
    let total = timing["seconds"].as_f64().unwrap();
    let epochs: f64 = timing["stage"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seconds"].as_f64().unwrap())
        .sum();
    assert_eq!(timing["stage"]["epochs"].as_array().unwrap().len(), 4, "{timing}");
    let earlier = timing["stage"]["earlier_seconds"].as_f64().unwrap_or(0.0);
    assert!(earlier > 0.0, "the time before the kill is recorded: {timing}");
    assert!(total + 1e-6 >= epochs, "the total counts every epoch: {timing}");
    assert!(total > earlier, "{timing}");
}

/// A checkpoint without the optimiser's state it needs (as an older fkp wrote
/// for SGD), or whose optimiser file is damaged, cannot resume exactly:
/// training starts over, from the seed's weights (not the checkpoint's, which
/// the damaged one had already restored), to the same bytes.
#[test]
fn a_checkpoint_without_usable_optimiser_state_is_not_resumed_from() {
    let train = "optimizer = \"sgd\"\nmomentum = 0.9\n";
    let reference = workspace_with(train);
    run(&reference, "2", "1");
    let expected = outputs(&reference);
    for damage in ["no optimiser state", "a damaged optimiser file"] {
        let s = workspace_with(train);
        let dir = kill_after_the_first_checkpoint(&s);
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["has_optimizer"], true, "SGD with momentum saves its state");
        let epoch = state["progress"]["epochs_done"].as_u64().unwrap();
        let why = if damage == "no optimiser state" {
            state["has_optimizer"] = false.into();
            std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
            "it has no optimiser state"
        } else {
            let optimizer = dir.join(format!("optimizer-{epoch:05}.safetensors"));
            let mut bytes = std::fs::read(&optimizer).unwrap();
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&optimizer, bytes).unwrap();
            "is not where its header says"
        };

        let out = s.ok(&["run", "p.toml"]);
        assert!(
            out.contains(why) && out.contains("training starts over"),
            "{damage}: {out}"
        );
        assert!(!out.contains("resuming after epoch"), "{damage}: {out}");
        let differ = differences_in_bytes(&expected, &outputs(&s));
        assert!(differ.is_empty(), "{damage}: these files differ: {differ:#?}");
    }
}

/// Starts the pipeline and kills it (SIGKILL) as soon as its training's first
/// checkpoint is committed; returns the checkpoint's folder.
fn kill_after_the_first_checkpoint(s: &Scratch) -> PathBuf {
    let mut child = s.command(&["run", "p.toml", "-q"]).spawn().unwrap();
    // Kill it as soon as the first epoch's checkpoint is complete.
    let started = Instant::now();
    loop {
        let state = std::fs::read_dir(s.path(".fkp/checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("state.json"))
            .find(|p| p.is_file());
        if state.is_some() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(s.entries("train").is_empty(), "killed before training finished");
    std::fs::read_dir(s.path(".fkp/checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}
