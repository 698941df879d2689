//! `fkp run` end to end: caching, what reruns when, and the flags that steer it.

use crate::common::{Scratch, labelled_csv};

fn setup() -> Scratch {
    let s = Scratch::new();
    s.write("data/train.csv", labelled_csv(12));
    s.write("p.toml", "[ingest]\ntrain = \"data/train.csv\"\n");
    s
}

#[test]
fn a_cached_rerun_runs_nothing() {
    let s = setup();
    let first = s.ok(&["run", "p.toml"]);
    assert!(first.contains("ingest     running"), "{first}");
    assert!(first.contains("never built"), "{first}");
    let entries = s.entries("ingest");
    assert_eq!(entries.len(), 1);
    let manifest = entries[0].join("manifest.json");
    let written = std::fs::metadata(&manifest).unwrap().modified().unwrap();

    let second = s.ok(&["run", "p.toml"]);
    assert!(second.contains("ingest     cached"), "{second}");
    assert!(!second.contains("running"), "{second}");
    assert_eq!(std::fs::metadata(&manifest).unwrap().modified().unwrap(), written);
    assert!(s.path("reports/p/ingest/summary.md").is_file());
}

#[test]
fn comments_and_key_order_change_nothing_but_a_value_reruns_the_stage() {
    let s = setup();
    s.ok(&["run", "p.toml"]);
    s.write(
        "p.toml",
        "# a comment\n[ingest]\non_bad_row = \"error\"  # the default, now explicit\ntrain = \"data/train.csv\"\n",
    );
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("cached"), "{out}");

    s.write(
        "p.toml",
        "[ingest]\ntrain = \"data/train.csv\"\ncoordinate_tolerance = 2\n",
    );
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("`[ingest] coordinate_tolerance` changed: 1.0 -> 2.0"),
        "{out}"
    );
    assert_eq!(s.entries("ingest").len(), 2);
}

#[test]
fn editing_an_input_file_reruns_and_moving_it_does_not() {
    let s = setup();
    s.ok(&["run", "p.toml"]);
    std::fs::rename(s.path("data/train.csv"), s.path("data/moved.csv")).unwrap();
    s.write("p.toml", "[ingest]\ntrain = \"data/moved.csv\"\n");
    assert!(s.ok(&["run", "p.toml"]).contains("cached"));

    s.write("data/moved.csv", labelled_csv(13));
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("input `train` changed"), "{out}");
}

#[test]
fn force_reruns_cached_stages() {
    let s = setup();
    s.ok(&["run", "p.toml"]);
    let out = s.ok(&["run", "p.toml", "--force"]);
    assert!(out.contains("running") && out.contains("forced"), "{out}");
    let out = s.ok(&["run", "p.toml", "--force-stage", "ingest"]);
    assert!(out.contains("forced"), "{out}");
    assert_eq!(s.entries("ingest").len(), 1);
    assert!(s.temp_dirs().is_empty());
}

#[test]
fn until_and_dry_run() {
    let s = setup();
    let out = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(out.contains("would run") && out.contains("never built"), "{out}");
    assert!(s.entries("ingest").is_empty(), "a dry run builds nothing");
    let out = s.ok(&["run", "p.toml", "--until", "ingest"]);
    assert!(out.contains("done"), "{out}");
    let (code, err) = s.fails(&["run", "p.toml", "--until", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown stage `nope`"), "{err}");
}

#[test]
fn until_names_the_reports_it_left_older_than_the_run() {
    let s = setup();
    s.write("p.toml", "[ingest]\ntrain = \"data/train.csv\"\n[eda]\n");
    s.ok(&["run", "p.toml"]);
    assert!(s.path("reports/p/eda").is_dir());
    // Nothing upstream changed: the EDA report is current, and nothing is said.
    let out = s.ok(&["run", "p.toml", "--until", "ingest"]);
    assert!(!out.contains("older than this run"), "{out}");
    s.write("data/train.csv", labelled_csv(13));
    let out = s.ok(&["run", "p.toml", "--until", "ingest"]);
    assert!(
        out.contains(
            "reports/p/ keeps reports older than this run: [eda] (after [ingest] was rebuilt) did not run; \
             `fkp run` (without --until) brings them up to date"
        ),
        "{out}"
    );
}

#[test]
fn a_stage_shared_by_two_pipelines_runs_once() {
    let s = setup();
    s.write(
        "q.toml",
        "[pipeline]\ndescription = \"same data\"\n[ingest]\ntrain = \"data/train.csv\"\n",
    );
    let out = s.ok(&["run", "p.toml", "q.toml"]);
    assert_eq!(out.matches("running").count(), 1, "{out}");
    assert!(out.contains("shared with `p`"), "{out}");
    assert!(s.path("reports/q/ingest/summary.md").is_file());
}

#[test]
fn status_json_reports_missing_cached_and_stale_with_the_reason() {
    let s = setup();
    let status = s.status_json(&["p.toml"]);
    assert_eq!(status["schema"], "fkp.status/1");
    let stage = &status["pipelines"][0]["stages"][0];
    assert_eq!(stage["stage"], "ingest");
    assert_eq!(stage["state"], "missing");

    s.ok(&["run", "p.toml"]);
    let status = s.status_json(&["p.toml"]);
    let stage = &status["pipelines"][0]["stages"][0];
    assert_eq!(stage["state"], "cached");
    let outputs: Vec<&str> = stage["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        outputs.iter().any(|o| o.ends_with("data/train.parquet")),
        "{outputs:?}"
    );
    assert!(
        outputs
            .iter()
            .all(|o| std::path::Path::new(o).is_absolute() && std::path::Path::new(o).is_file())
    );

    s.write(
        "p.toml",
        "[ingest]\ntrain = \"data/train.csv\"\non_bad_row = \"skip\"\n",
    );
    let status = s.status_json(&["p.toml"]);
    let stage = &status["pipelines"][0]["stages"][0];
    assert_eq!(stage["state"], "stale");
    assert_eq!(stage["changes"][0]["change"], "config");
    assert_eq!(stage["changes"][0]["key"], "ingest.on_bad_row");
    assert_eq!(stage["changes"][0]["old"], "error");
    assert_eq!(stage["changes"][0]["new"], "skip");
    assert!(stage["reason"].as_str().unwrap().contains("on_bad_row"));
}

#[test]
fn extends_variants_state_only_what_differs() {
    let s = setup();
    s.write(
        "v.toml",
        "[pipeline]\nextends = \"p.toml\"\n[ingest]\non_bad_row = \"skip\"\n",
    );
    s.ok(&["run", "v.toml"]);
    let status = s.status_json(&["v.toml"]);
    assert_eq!(status["pipelines"][0]["name"], "v");
    assert_eq!(status["pipelines"][0]["stages"][0]["state"], "cached");
}

#[test]
fn clean_removes_only_unreferenced_entries() {
    let s = setup();
    s.ok(&["run", "p.toml"]);
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"data/train.csv\"\non_bad_row = \"skip\"\n",
    );
    s.ok(&["run", "p.toml"]);
    assert_eq!(s.entries("ingest").len(), 2);
    // An abandoned temporary folder, as a killed run leaves (pid 0 never runs fkp).
    std::fs::create_dir_all(s.path(".fkp/tmp/ingest-0123456789abcdef-0-0/data")).unwrap();
    // A training checkpoint of a configuration no pipeline has any more.
    std::fs::create_dir_all(s.path(".fkp/checkpoints/train-0123456789abcdef")).unwrap();

    let out = s.ok(&["clean", "p.toml", "--dry-run"]);
    assert!(
        out.contains("would remove 1 entry and 2 leftovers of killed runs"),
        "{out}"
    );
    assert_eq!(s.entries("ingest").len(), 2);

    s.ok(&["clean", "p.toml"]);
    assert_eq!(s.entries("ingest").len(), 1);
    assert!(s.temp_dirs().is_empty());
    assert!(!s.path(".fkp/checkpoints/train-0123456789abcdef").exists());
    assert!(s.ok(&["run", "p.toml"]).contains("cached"));
}

/// An entry missing a file, or with one cut short, is said to be damaged (not
/// removed) and is rebuilt.
#[test]
fn a_damaged_entry_is_said_and_rebuilt() {
    let s = setup();
    s.ok(&["run", "p.toml"]);
    let entry = s.entries("ingest").remove(0);
    let data = std::fs::read_dir(entry.join("data"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.is_file())
        .unwrap();
    std::fs::write(&data, b"cut").unwrap();
    let status = s.status_json(&["p.toml"]);
    let ingest = &status["pipelines"][0]["stages"][0];
    assert_eq!(ingest["state"], "stale", "{status:#}");
    assert_eq!(ingest["changes"][0]["change"], "entry_damaged", "{status:#}");
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("its cache entry is damaged (a file it lists is missing or changed size)"),
        "{out}"
    );
    assert!(s.ok(&["run", "p.toml"]).contains("ingest     cached"));
}

#[test]
fn the_cache_dir_can_be_moved() {
    let s = setup();
    s.ok(&["run", "p.toml", "--cache-dir", "elsewhere"]);
    assert!(s.path("elsewhere/entries/ingest").is_dir());
    assert!(!s.path(".fkp").exists());
}

#[test]
fn dag_prints_the_graph() {
    let s = setup();
    let out = s.fkp(&["dag", "p.toml", "--dot"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("digraph fkp {") && text.contains("label=\"ingest\""),
        "{text}"
    );
}

#[test]
fn a_stage_reruns_only_when_the_upstream_files_it_reads_change() {
    let s = setup();
    s.write("p.toml", "[ingest]\ntrain = \"data/train.csv\"\n[prepare]\n");
    s.ok(&["run", "p.toml"]);
    // Adding a test file changes ingest's outputs, but not train.parquet, which is
    // all prepare reads.
    let pixels = vec!["1"; 64].join(" ");
    s.write("data/test.csv", format!("ImageId,Image\n1,{pixels}\n"));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"data/train.csv\"\ntest = \"data/test.csv\"\n[prepare]\n",
    );
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("ingest     running"), "{out}");
    assert!(out.contains("prepare    cached"), "{out}");
}

#[test]
fn a_failing_pipeline_does_not_stop_the_others_unless_fail_fast() {
    let s = setup();
    s.write("data/bad.csv", "left_eye_center_x,Image\nnot a number,1 2 3\n");
    for name in ["bad1", "bad2"] {
        s.write(&format!("{name}.toml"), "[ingest]\ntrain = \"data/bad.csv\"\n");
    }
    let (code, err) = s.fails(&["run", "bad1.toml", "p.toml", "bad2.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        s.path("reports/p/ingest/summary.md").is_file(),
        "p ran after bad1 failed: {err}"
    );
    assert!(err.contains("2 pipelines failed"), "{err}");
    assert!(err.contains("`bad1`") && err.contains("`bad2`"), "{err}");

    let s = setup();
    s.write("data/bad.csv", "left_eye_center_x,Image\nnot a number,1 2 3\n");
    s.write("bad1.toml", "[ingest]\ntrain = \"data/bad.csv\"\n");
    let (code, err) = s.fails(&["run", "--fail-fast", "bad1.toml", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        !err.contains("pipelines failed"),
        "one failure, said as itself: {err}"
    );
    assert!(!s.path("reports/p").exists(), "--fail-fast stops at bad1: {err}");
}

#[test]
fn parallel_jobs_prefix_each_line_and_build_a_shared_stage_once() {
    let s = setup();
    s.write(
        "longer-name.toml",
        "[pipeline]\ndescription = \"same data\"\n[ingest]\ntrain = \"data/train.csv\"\n[eda]\nsamples = 2\n",
    );
    let out = s.ok(&["run", "-j", "2", "p.toml", "longer-name.toml"]);
    // Both pipelines want the same ingest key: one builds it, the other waits and finds it cached.
    assert_eq!(out.matches("ingest     running").count(), 1, "{out}");
    assert!(out.contains("p           |   ingest "), "{out}");
    assert!(out.contains("longer-name |   eda        running"), "{out}");
    for line in out.lines() {
        assert!(
            line.starts_with("p           | ") || line.starts_with("longer-name | "),
            "every line says whose it is: {line:?}\n{out}"
        );
    }
    assert!(s.path("reports/longer-name/eda").is_dir());
    let again = s.ok(&["run", "-j", "2", "p.toml", "longer-name.toml"]);
    assert!(!again.contains("running"), "{again}");
}

#[test]
fn in_parallel_too_a_failing_pipeline_does_not_stop_the_others() {
    let s = setup();
    s.write("data/bad.csv", "left_eye_center_x,Image\nnot a number,1 2 3\n");
    for name in ["bad1", "bad2"] {
        s.write(&format!("{name}.toml"), "[ingest]\ntrain = \"data/bad.csv\"\n");
    }
    let (code, err) = s.fails(&["run", "-j", "2", "bad1.toml", "p.toml", "bad2.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(s.path("reports/p/ingest/summary.md").is_file(), "{err}");
    assert!(err.contains("2 pipelines failed"), "{err}");
    // Listed in the order the pipelines were named, whichever failed first.
    let (first, second) = (err.find("`bad1`").unwrap(), err.find("`bad2`").unwrap());
    assert!(first < second, "{err}");
}

#[test]
fn a_pipeline_whose_input_is_missing_fails_alone() {
    let s = setup();
    s.write("gone.toml", "[ingest]\ntrain = \"data/nowhere.csv\"\n");
    for jobs in ["1", "2"] {
        let (code, err) = s.fails(&["run", "-j", jobs, "gone.toml", "p.toml"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("nowhere.csv"), "{err}");
        assert!(s.path("reports/p/ingest/summary.md").is_file(), "p ran: {err}");
    }
    let s = setup();
    s.write("gone.toml", "[ingest]\ntrain = \"data/nowhere.csv\"\n");
    let (_, err) = s.fails(&["run", "--fail-fast", "gone.toml", "p.toml"]);
    assert!(err.contains("nowhere.csv"), "{err}");
    assert!(!s.path("reports/p").exists(), "--fail-fast: nothing runs: {err}");
}
