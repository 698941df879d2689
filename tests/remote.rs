//! The remote cache: a folder remote (always), and S3 against a real endpoint
//! (moto's server, which CI starts and FKP_TEST_S3_ENDPOINT names; that test is
//! ignored by default and runs with `cargo test --release -- --ignored`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{Scratch, blob_csv, files_under};

/// A small two-pipeline study sharing ingest and prepare.
fn study(s: &Scratch) {
    s.write("faces.csv", blob_csv(80, 24, 3));
    let base = "[ingest]\ntrain = \"faces.csv\"\n[eda]\nsamples = 2\n[prepare]\nmissing = \"mask\"\n\
                [model]\narch = \"lenet\"\n[train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 1\n";
    s.write("a.toml", format!("{base}seed = 1\n[evaluate]\n"));
    s.write("b.toml", format!("{base}seed = 2\n[evaluate]\n"));
}

fn entries(s: &Scratch) -> BTreeMap<PathBuf, Vec<u8>> {
    files_under(&s.path(".fkp/entries"))
        .into_iter()
        .filter(|(path, _)| path.file_name().is_some_and(|n| n != "timing.json"))
        .collect()
}

/// Every file under `dir` whose path contains `part`.
fn remote_files(dir: &Path, part: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(part))
        .map(|p| dir.join(p))
        .collect()
}

#[test]
fn a_fresh_workspace_fetches_every_entry_instead_of_building_it() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_string_lossy().into_owned();
    let first = Scratch::new();
    study(&first);
    first.ok(&["run", "--remote", &url, "a.toml", "b.toml"]);

    let second = Scratch::new();
    study(&second);
    second.write("fkp.toml", format!("[cache]\nremote = {url:?}\n"));
    let out = second.ok(&["run", "a.toml", "b.toml"]);
    assert!(!out.contains("running"), "{out}");
    // ingest, eda, prepare once; a's and b's train and evaluate.
    assert_eq!(out.matches("fetched").count(), 7, "{out}");
    assert_eq!(entries(&first), entries(&second));
    assert!(second.path("reports/b/metrics.json").is_file());
}

/// `predict` and `export` train first as `run` would: from the remote cache
/// when it has the entries.
#[test]
fn predict_and_export_fetch_what_they_would_train() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_string_lossy().into_owned();
    let first = Scratch::new();
    study(&first);
    first.ok(&["run", "--remote", &url, "a.toml"]);

    for command in [
        &["predict", "a.toml", "--input", "faces.csv", "--output", "p.csv"][..],
        &["export", "a.toml", "--output", "a.onnx"],
    ] {
        let second = Scratch::new();
        study(&second);
        second.write("fkp.toml", format!("[cache]\nremote = {url:?}\n"));
        let out = second.ok(command);
        assert!(!out.contains("running"), "{command:?}: {out}");
        // ingest, prepare and train.
        assert_eq!(out.matches("fetched").count(), 3, "{command:?}: {out}");
    }
}

#[test]
fn a_broken_or_partial_remote_entry_is_built_here_and_replaced() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_string_lossy().into_owned();
    let first = Scratch::new();
    study(&first);
    first.ok(&["run", "--remote", &url, "a.toml"]);
    // A damaged model file, and an evaluate entry whose upload never finished.
    let model = remote_files(remote.path(), "model.safetensors");
    assert_eq!(model.len(), 1);
    let mut bytes = std::fs::read(&model[0]).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&model[0], bytes).unwrap();
    for manifest in remote_files(&remote.path().join("evaluate"), "manifest.json") {
        std::fs::remove_file(manifest).unwrap();
    }

    let second = Scratch::new();
    study(&second);
    let out = second.ok(&["run", "--remote", &url, "a.toml"]);
    assert!(
        !out.contains("train      fetched") && out.contains("is broken (data/"),
        "{out}"
    );
    assert!(
        out.contains("train      running") && out.contains("evaluate   running"),
        "{out}"
    );
    assert!(out.contains("prepare    fetched"), "{out}");
    assert_eq!(entries(&first), entries(&second));

    // Both were uploaded again, whole: a third workspace fetches everything.
    let third = Scratch::new();
    study(&third);
    let out = third.ok(&["run", "--remote", &url, "a.toml"]);
    assert!(!out.contains("running") && !out.contains("warning"), "{out}");
}

#[test]
fn push_and_pull_move_entries_explicitly() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_string_lossy().into_owned();
    let first = Scratch::new();
    study(&first);
    first.ok(&["run", "a.toml"]);
    assert!(files_under(remote.path()).is_empty(), "no remote, no upload");
    let out = first.ok(&["push", "--remote", &url, "a.toml", "b.toml"]);
    assert!(out.contains("pushed 5 entries"), "{out}");
    assert!(
        out.contains("not built here"),
        "b's training was never built: {out}"
    );
    let again = first.ok(&["push", "--remote", &url, "a.toml"]);
    assert!(
        again.contains("pushed 0 entries") && again.contains("5 there already"),
        "{again}"
    );

    let second = Scratch::new();
    study(&second);
    let out = second.ok(&["pull", "--remote", &url, "a.toml"]);
    assert!(out.contains("pulled 5 entries"), "{out}");
    let run = second.ok(&["run", "a.toml"]);
    assert!(!run.contains("running"), "{run}");
    let (code, err) = second.fails(&["pull", "a.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no remote cache"), "{err}");
}

#[test]
#[ignore = "needs an S3 endpoint in FKP_TEST_S3_ENDPOINT (moto's server, as `.ci/run` starts it), then `cargo test --release -- --ignored`"]
fn an_s3_remote_shares_entries_and_never_records_credentials() {
    let endpoint = std::env::var("FKP_TEST_S3_ENDPOINT")
        .expect("FKP_TEST_S3_ENDPOINT must name an S3 endpoint (`.ci/run` starts moto's server)");
    let bucket = std::env::var("FKP_TEST_S3_BUCKET").unwrap_or_else(|_| "fkp-test".to_string());
    let prefix = format!("s3://{bucket}/test-{}", std::process::id());
    let secret = "very-secret-key-3f9a1c";
    let run = |s: &Scratch| {
        let out = s
            .command(&["run", "--remote", &prefix, "a.toml"])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "fkp-test-id")
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    let first = Scratch::new();
    study(&first);
    let built = run(&first);
    assert!(built.contains("running"), "{built}");
    let second = Scratch::new();
    study(&second);
    let fetched = run(&second);
    assert!(!fetched.contains("running"), "{fetched}");
    assert_eq!(fetched.matches("fetched").count(), 5, "{fetched}");
    assert_eq!(entries(&first), entries(&second));
    for (s, said) in [(&first, &built), (&second, &fetched)] {
        assert!(!said.contains(secret));
        for (path, bytes) in files_under(s.dir.path()) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} holds the secret",
                path.display()
            );
        }
    }
}

#[test]
fn an_unreachable_remote_is_a_warning_and_the_run_builds_without_it() {
    let s = Scratch::new();
    study(&s);
    let out = s
        .command(&["run", "--remote", "s3://bucket/prefix", "a.toml"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_ACCESS_KEY_ID", "id")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Said once; the stages after it do not ask the remote again.
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("without the remote cache"), "{err}");
    assert!(s.path("reports/a/metrics.json").is_file());
}
