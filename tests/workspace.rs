//! The workspace: one writer at a time (an OS lock on .fkp/lock), readers that
//! write nothing, and reports that keep exactly what the stages publish.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{Scratch, blob_csv, files_under, labelled_csv};

/// A pipeline whose training takes a few seconds, so another command can meet it.
fn training_workspace() -> Scratch {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(400, 40, 5));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[model]\narch = \"lenet\"\n\
         [train]\ndevice = \"cpu\"\nepochs = 6\nbatch_size = 16\n",
    );
    s
}

/// Waits until the lock file names its holder: the first run holds the lock.
fn wait_for_holder(s: &Scratch) -> String {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(s.path(".fkp/lock"))
            && text.contains("fkp")
        {
            return text.trim().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no lock holder appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_writer_waits_for_the_first_and_then_finds_its_work_cached() {
    let s = training_workspace();
    let first = s
        .command(&["run", "p.toml"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let holder = wait_for_holder(&s);
    assert!(holder.starts_with(&format!("pid {} (", first.id())), "{holder}");
    let second = s.fkp(&["run", "p.toml"]);
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("waiting for the lock on"), "{err}");
    assert!(err.contains(&holder), "{err}");
    assert!(
        err.contains("train      cached"),
        "the second run trained again:\n{err}"
    );
    assert_eq!(s.entries("train").len(), 1);
    assert!(s.temp_dirs().is_empty());
}

#[test]
fn no_wait_fails_at_once_naming_the_holder_and_readers_need_no_lock() {
    let s = training_workspace();
    let mut first = s.command(&["run", "p.toml", "-q"]).spawn().unwrap();
    let holder = wait_for_holder(&s);

    let started = Instant::now();
    let (code, err) = s.fails(&["run", "p.toml", "--no-wait"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the workspace is in use"), "{err}");
    assert!(err.contains(&holder), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Readers go ahead while the run holds the lock.
    for args in [
        &["status", "p.toml"][..],
        &["dag", "p.toml"],
        &["run", "p.toml", "--dry-run"],
    ] {
        let out = s.fkp(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(first.wait().unwrap().success());
}

/// Every file under .fkp with its modification time.
fn cache_snapshot(s: &Scratch) -> Vec<(std::path::PathBuf, Vec<u8>, SystemTime)> {
    files_under(&s.path(".fkp"))
        .into_iter()
        .map(|(path, bytes)| {
            let modified = std::fs::metadata(s.path(".fkp").join(&path))
                .unwrap()
                .modified()
                .unwrap();
            (path, bytes, modified)
        })
        .collect()
}

#[test]
fn readers_create_and_rewrite_nothing() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(6));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n[prepare]\nval = 0.5\n");
    let readers: [&[&str]; 4] = [
        &["status", "p.toml"],
        &["status", "p.toml", "--json"],
        &["dag", "p.toml", "--dot"],
        &["run", "p.toml", "--dry-run"],
    ];
    for args in readers {
        s.ok(args);
        assert!(!s.path(".fkp").exists(), "{args:?} created the cache");
    }
    s.ok(&["run", "p.toml"]);
    // Touching the input makes its recorded hash stale: a writer would rewrite
    // the hash memo, a reader must not.
    std::thread::sleep(Duration::from_millis(20));
    s.write("t.csv", labelled_csv(6));
    let before = cache_snapshot(&s);
    for args in readers {
        s.ok(args);
    }
    assert!(before == cache_snapshot(&s), "a reader changed the cache");
    let out = s.fkp(&["status", "p.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ingest     cached"), "{text}");
}

#[test]
fn reports_keep_exactly_what_the_stages_publish() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(12));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n[eda]\n");
    s.ok(&["run", "p.toml"]);
    assert!(s.path("reports/p/eda/correlation.png").is_file());
    assert!(s.path("reports/p/eda/samples.svg").is_file());

    // A killed writer's temporary file, and a file of the user's.
    s.write("reports/p/eda/.summary.md.tmp-999999999", "half");
    s.write("reports/p/notes.md", "mine");
    // Fewer plots: the others are no longer published.
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"t.csv\"\n[eda]\nplots = [\"boxplot\"]\n",
    );
    s.ok(&["run", "p.toml"]);
    assert!(s.path("reports/p/eda/boxplot.png").is_file());
    assert!(!s.path("reports/p/eda/correlation.png").exists());
    assert!(!s.path("reports/p/eda/samples.svg").exists());
    assert!(!s.path("reports/p/eda/.summary.md.tmp-999999999").exists());
    assert!(s.path("reports/p/notes.md").is_file());

    // A stage taken out of the pipeline takes its reports with it.
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    s.ok(&["run", "p.toml"]);
    assert!(!s.path("reports/p/eda/boxplot.png").exists());
    assert!(s.path("reports/p/ingest/summary.md").is_file());
    assert!(s.path("reports/p/notes.md").is_file());
}

#[test]
fn a_damaged_entry_is_rebuilt_not_trusted() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(6));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    s.ok(&["run", "p.toml"]);
    // As a clean killed halfway, or a hand, could leave it.
    let entry = s.entries("ingest")[0].clone();
    std::fs::remove_file(entry.join("report/ingest/summary.md")).unwrap();
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("ingest     running"), "{out}");
    assert!(s.path("reports/p/ingest/summary.md").is_file());
}

#[test]
fn reports_published_before_a_kill_are_still_tracked() {
    let s = training_workspace();
    s.write(
        "p.toml",
        format!("{}[eda]\n", std::fs::read_to_string(s.path("p.toml")).unwrap()),
    );
    let mut child = s.command(&["run", "p.toml", "-q"]).spawn().unwrap();
    let started = Instant::now();
    while std::fs::read_dir(s.path(".fkp/checkpoints")).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(s.path("reports/p/eda/correlation.png").is_file());
    let text = std::fs::read_to_string(s.path("p.toml")).unwrap();
    s.write(
        "p.toml",
        text.replace("[eda]\n", "[eda]\nplots = [\"boxplot\"]\n"),
    );
    s.ok(&["run", "p.toml", "--until", "eda"]);
    assert!(!s.path("reports/p/eda/correlation.png").exists());
    assert!(s.path("reports/p/eda/boxplot.png").is_file());
}

#[test]
fn a_failed_stage_takes_its_old_reports_with_it() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(4));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n[prepare]\nval = 0.5\n");
    s.ok(&["run", "p.toml"]);
    assert!(s.path("reports/p/prepare/summary.md").is_file());
    // Holding out 1% of 4 rows leaves none for validation.
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n[prepare]\nval = 0.01\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(!s.path("reports/p/prepare/summary.md").exists());
    assert!(s.path("reports/p/ingest/summary.md").is_file());
}

#[test]
fn workspaces_sharing_a_cache_keep_their_own_records() {
    let shared = Scratch::new();
    let cache = shared.path("cache");
    let cache = cache.to_str().unwrap();
    let (a, b) = (Scratch::new(), Scratch::new());
    for (s, plots) in [(&a, "[\"boxplot\", \"correlation\"]"), (&b, "[\"boxplot\"]")] {
        s.write("t.csv", labelled_csv(8));
        s.write(
            "pipelines/p.toml",
            format!("[ingest]\ntrain = \"../t.csv\"\n[eda]\nplots = {plots}\n"),
        );
        let out = s
            .command(&["run", "pipelines/p.toml"])
            .env("FKP_CACHE_DIR", cache)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // B's clean keeps A's last run; A's records are A's own.
    let out = b
        .command(&["clean"])
        .env("FKP_CACHE_DIR", cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed 0 entries"), "{err}");
    assert!(err.contains("1 other workspace"), "{err}");
    a.write(
        "pipelines/p.toml",
        "[ingest]\ntrain = \"../t.csv\"\n[eda]\nplots = [\"boxplot\"]\n",
    );
    let out = a
        .command(&["run", "pipelines/p.toml"])
        .env("FKP_CACHE_DIR", cache)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!a.path("reports/p/eda/correlation.png").exists());
}

#[test]
fn clean_with_no_pipeline_to_keep_refuses() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(4));
    s.write("p.toml", "[ingest]\ntrain = \"t.csv\"\n");
    s.ok(&["run", "p.toml"]);
    let (code, err) = s.fails(&["clean"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no pipelines to keep the entries of"), "{err}");
    assert_eq!(s.entries("ingest").len(), 1);
}

/// A pipeline file reached through a symbolic link resolves what it extends and
/// reads from where the file really is, not from the link's folder.
#[cfg(unix)]
#[test]
fn a_linked_pipeline_resolves_paths_from_where_it_really_is() {
    let s = Scratch::new();
    s.write("project/data/train.csv", common::labelled_csv(12));
    s.write("project/base.toml", "[ingest]\ntrain = \"data/train.csv\"\n");
    s.write("project/p.toml", "[pipeline]\nextends = \"base.toml\"\n[eda]\n");
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(s.path("project/p.toml"), s.path("elsewhere/p.toml")).unwrap();
    s.ok(&["run", "elsewhere/p.toml"]);
    assert!(s.path("reports/p/eda").is_dir());
    // Mistakes are still reported at the path the user gave.
    s.write(
        "project/p.toml",
        "[pipeline]\nextends = \"base.toml\"\n[eda]\nsample = 2\n",
    );
    let (code, err) = s.fails(&["run", "elsewhere/p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("elsewhere/p.toml:4:1"), "{err}");
}
