//! The ingest stage end to end: every accepted format, every bad input with its
//! message and exit code, and the cache left valid after a failure.

use crate::common;

use crate::common::{Scratch, gzip, header, labelled_csv, row, zip_one};

fn pipeline(s: &Scratch, train: &str, extra: &str) {
    s.write("p.toml", format!("[ingest]\ntrain = \"{train}\"\n{extra}"));
}

/// Asserts a failed run: exit code 1 unless stated, the message, and a clean cache.
fn assert_run_fails(s: &Scratch, expected: &str) {
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    assert!(s.entries("ingest").is_empty(), "no entry after a failure");
    assert!(s.temp_dirs().is_empty(), "no half-written entry after a failure");
}

#[test]
fn plain_gzip_and_zip_inputs_give_the_same_parquet() {
    let csv = labelled_csv(10);
    let s = Scratch::new();
    s.write("t.csv", &csv);
    s.write("t.csv.gz", gzip(csv.as_bytes()));
    s.write("training.zip", zip_one("training.csv", csv.as_bytes()));
    let mut parquet_hashes = Vec::new();
    for file in ["t.csv", "t.csv.gz", "training.zip"] {
        pipeline(&s, file, "");
        s.ok(&["run", "p.toml"]);
        let status = s.status_json(&["p.toml"]);
        let outputs = status["pipelines"][0]["stages"][0]["outputs"]
            .as_array()
            .unwrap()
            .clone();
        let train = outputs
            .iter()
            .find(|o| o.as_str().unwrap().ends_with("train.parquet"))
            .unwrap();
        parquet_hashes.push(blake3::hash(&std::fs::read(train.as_str().unwrap()).unwrap()));
    }
    // Different input bytes, hence three entries, with identical Parquet output.
    assert_eq!(s.entries("ingest").len(), 3);
    assert!(parquet_hashes.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn the_summary_counts_rows_complete_rows_and_presence() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(9));
    pipeline(&s, "t.csv", "");
    // By default one line says what ingest found; the tables are in reports/.
    let out = s.fkp(&["run", "p.toml"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stderr.contains(": 9 rows (6 complete), 8x8 pixels, 3 keypoints\n"),
        "{stderr}"
    );
    assert!(!stdout.contains("66.7%") && !stdout.contains('┆'), "{stdout}");
    // -v prints them too.
    let out = s.fkp(&["run", "p.toml", "--force", "-v"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 9 rows, every third (3 of them) missing right_eye_center.
    assert!(stdout.contains("6 (66.7%)"), "{stdout}");
    assert!(stdout.contains("right_eye_center"), "{stdout}");
    let markdown = std::fs::read_to_string(s.path("reports/p/ingest/summary.md")).unwrap();
    assert!(
        markdown.contains("| right_eye_center") && markdown.contains("66.7%"),
        "{markdown}"
    );
    let meta_path = s.entries("ingest")[0].join("data/ingest.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta_path).unwrap()).unwrap();
    assert_eq!(meta["side"], 8);
    assert_eq!(meta["train_rows"], 9);
    assert_eq!(meta["train_presence"][2], 6);
}

#[test]
fn kaggle_test_and_lookup_files_are_ingested() {
    let s = Scratch::new();
    s.write("train.csv", labelled_csv(4));
    let pixels = vec!["1"; 64].join(" ");
    s.write("test.csv", format!("ImageId,Image\n1,{pixels}\n2,{pixels}\n"));
    s.write(
        "IdLookupTable.csv",
        "RowId,ImageId,FeatureName,Location\n1,1,nose_tip_x,\n2,1,nose_tip_y,\n3,2,left_eye_center_x,\n",
    );
    pipeline(
        &s,
        "train.csv",
        "test = \"test.csv\"\nlookup = \"IdLookupTable.csv\"\n",
    );
    s.ok(&["run", "p.toml"]);
    let data = s.entries("ingest")[0].join("data");
    assert!(data.join("test.parquet").is_file() && data.join("lookup.parquet").is_file());

    s.write(
        "IdLookupTable.csv",
        "RowId,ImageId,FeatureName,Location\n1,3,nose_tip_x,\n",
    );
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(
        err.contains("IdLookupTable.csv:2: column `ImageId`: image 3 is not in the test file"),
        "{err}"
    );
}

#[test]
fn a_test_file_with_another_image_size_is_an_error() {
    let s = Scratch::new();
    s.write("train.csv", labelled_csv(4));
    s.write("test.csv", "ImageId,Image\n1,0 0 0 0\n");
    pipeline(&s, "train.csv", "test = \"test.csv\"\n");
    assert_run_fails(&s, "images are 2x2 but the training images are 8x8");
}

fn with_bad_row(bad: &str) -> Scratch {
    let s = Scratch::new();
    s.write(
        "t.csv",
        format!("{}\n{}\n{bad}\n{}\n", header(), row(0, false), row(2, false)),
    );
    pipeline(&s, "t.csv", "");
    s
}

fn good_prefix(pixels: &str) -> String {
    format!("1,1,2,2,3,3,{pixels}")
}

#[test]
fn bad_rows_are_errors_naming_file_line_and_column() {
    let zeros = |n: usize| vec!["0"; n].join(" ");
    let cases = [
        (
            good_prefix(&zeros(63)),
            "t.csv:3: column `Image`: 63 pixels, expected 64 (8x8 like most rows)",
        ),
        (
            good_prefix(&format!("{} 256", zeros(63))),
            "t.csv:3: column `Image`: pixel 64 is `256`, not an integer in 0..=255",
        ),
        (
            good_prefix(&format!("{} x", zeros(63))),
            "t.csv:3: column `Image`: pixel 64 is `x`, not an integer in 0..=255",
        ),
        (
            format!("1,1,2,9.5,3,3,{}", zeros(64)),
            "t.csv:3: column `right_eye_center_y`: 9.5 is outside the image [0, 8) (tolerance 1 px)",
        ),
        (
            format!("1,1,2,-1.5,3,3,{}", zeros(64)),
            "t.csv:3: column `right_eye_center_y`: -1.5 is outside the image",
        ),
        (
            format!("1,1,2,inf,3,3,{}", zeros(64)),
            "column `right_eye_center_y`: inf is outside the image",
        ),
        (
            format!("1,1,2,abc,3,3,{}", zeros(64)),
            "t.csv:3: column `right_eye_center_y`: `abc` is not a number",
        ),
        (
            "1,1,2".to_string(),
            "t.csv:3: column `right_eye_center_y`: the row ends early",
        ),
    ];
    for (bad, expected) in cases {
        let s = with_bad_row(&bad);
        assert_run_fails(&s, expected);
    }
}

#[test]
fn on_bad_row_skip_skips_and_counts() {
    let s = with_bad_row(&good_prefix("1 2 3"));
    pipeline(&s, "t.csv", "on_bad_row = \"skip\"\n");
    let out = s.fkp(&["run", "p.toml", "-v"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skipped ") && stderr.contains("t.csv:3: column `Image`: 3 pixels"),
        "{stderr}"
    );
    // 2 rows kept, 1 skipped.
    assert!(
        stderr.contains(": 2 rows (2 complete), 8x8 pixels, 3 keypoints, 1 skipped"),
        "{stderr}"
    );
    assert!(stdout.contains("│ train ┆    2 ┆"), "{stdout}");
    assert!(stdout.contains("┆            1 │"), "{stdout}");
}

#[test]
fn truncated_archives_are_errors_not_short_datasets() {
    let csv = labelled_csv(400);
    let s = Scratch::new();
    let gz = gzip(csv.as_bytes());
    s.write("t.csv.gz", &gz[..gz.len() / 2]);
    pipeline(&s, "t.csv.gz", "");
    assert_run_fails(&s, "is damaged or truncated");

    let zipped = zip_one("training.csv", csv.as_bytes());
    s.write("t.zip", &zipped[..zipped.len() - 40]);
    pipeline(&s, "t.zip", "");
    assert_run_fails(&s, "is damaged or truncated");
}

#[test]
fn a_missing_input_file_names_the_key_and_path() {
    let s = Scratch::new();
    pipeline(&s, "nowhere.csv", "");
    assert_run_fails(&s, "cannot read `ingest.train`");
}

#[test]
fn config_errors_name_file_line_and_key_and_exit_2() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(3));
    s.write(
        "p.toml",
        "[ingest]\ntrian = \"t.csv\"\non_bad_row = 3\n[report]\n[prepar]\n",
    );
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "missing required key `train` in [ingest]",
        "p.toml:1:2",
        "unknown key `trian` in [ingest]",
        "p.toml:2:1",
        "did you mean `train`?",
        "`ingest.on_bad_row` must be a string, found integer",
        "p.toml:3:14",
        "missing required key `pipelines` in [report]",
        "unknown table [prepar]",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    assert!(!s.path(".fkp").exists(), "a config error touches no cache");
}

#[test]
fn the_shipped_sample_ingests() {
    let s = Scratch::new();
    let sample = common::repo_file("datasets/faces300-sparse.csv.gz");
    pipeline(&s, &sample.display().to_string(), "");
    let out = s.fkp(&["run", "p.toml", "-v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("│ train ┆  300 ┆    95 (31.7%) ┆"), "{stdout}");
}

#[test]
#[ignore = "needs ../shared/data beside the checkout (the project's development faces), then `cargo test --release -- --ignored`"]
fn the_shared_real_data_ingests() {
    let shared = common::shared_data();
    let s = Scratch::new();
    let file = shared.join("faces15-train-sparse.csv.gz");
    pipeline(&s, &file.display().to_string(), "");
    s.ok(&["run", "p.toml"]);
    let meta_path = s.entries("ingest")[0].join("data/ingest.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta_path).unwrap()).unwrap();
    assert_eq!(meta["side"], 96);
    assert_eq!(meta["train_rows"], 3462);
    assert_eq!(meta["train_complete_rows"], 1045);
    assert_eq!(meta["coordinate_names"].as_array().unwrap().len(), 30);
}
