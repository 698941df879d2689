//! `[eda]` and `[prepare]` end to end: numbers against an independent pandas
//! computation, the files they write, what reruns when their keys change, and the
//! errors only the data can reveal.

use crate::common;

use std::path::{Path, PathBuf};

use crate::common::{Scratch, labelled_csv};
use serde_json::Value;

/// The `data/<file>` of a pipeline's stage, found through `status --json`.
fn stage_output(s: &Scratch, pipeline: &str, stage: &str, file: &str) -> PathBuf {
    let status = s.status_json(&[pipeline]);
    let stages = status["pipelines"][0]["stages"].as_array().unwrap();
    let entry = stages
        .iter()
        .find(|st| st["stage"] == stage)
        .expect("the stage is listed");
    let outputs = entry["outputs"].as_array().unwrap();
    outputs
        .iter()
        .map(|o| PathBuf::from(o.as_str().unwrap()))
        .find(|p| p.ends_with(file))
        .unwrap_or_else(|| panic!("{stage} wrote no {file}: {outputs:?}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_close(what: &str, ours: &Value, reference: &Value, relative: bool) {
    match (ours.as_f64(), reference.as_f64()) {
        (Some(a), Some(b)) => {
            let scale = if relative { b.abs().max(1.0) } else { 1.0 };
            assert!((a - b).abs() <= 1e-6 * scale, "{what}: fkp {a} vs reference {b}");
        }
        (None, None) => {}
        _ => panic!("{what}: fkp {ours} vs reference {reference}"),
    }
}

/// Compares fkp's `eda.json` with `bench/eda_reference.py`'s output (pandas and
/// numpy on the CSV's float64 values): statistics to 1e-6 relative, correlations
/// to 1e-6 absolute, counts exactly.
fn compare_with_reference(eda: &Value, reference: &Value) {
    assert_eq!(eda["coordinate_names"], reference["coordinate_names"]);
    let fields = ["mean", "std", "min", "q25", "median", "q75", "max"];
    for (ours, theirs) in eda["coordinates"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["coordinates"].as_array().unwrap())
    {
        let name = theirs["name"].as_str().unwrap();
        assert_eq!(ours["count"], theirs["count"], "{name} count");
        assert_eq!(ours["missing"], theirs["missing"], "{name} missing");
        for field in fields {
            assert_close(&format!("{name}.{field}"), &ours[field], &theirs[field], true);
        }
    }
    for (i, (row, reference_row)) in eda["correlation"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["correlation"].as_array().unwrap())
        .enumerate()
    {
        for (j, (r, reference_r)) in row
            .as_array()
            .unwrap()
            .iter()
            .zip(reference_row.as_array().unwrap())
            .enumerate()
        {
            assert_close(&format!("correlation[{i}][{j}]"), r, reference_r, false);
        }
    }
    let mut ours: Vec<(String, u64)> = eda["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].to_string(), p[1].as_u64().unwrap()))
        .collect();
    let mut theirs: Vec<(String, u64)> = reference["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["present"].to_string(), p["rows"].as_u64().unwrap()))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "missing-label patterns");
    for key in ["image_means", "image_stds"] {
        assert_eq!(eda[key]["count"], reference[key]["count"]);
        for field in fields {
            assert_close(
                &format!("{key}.{field}"),
                &eda[key][field],
                &reference[key][field],
                true,
            );
        }
    }
    assert_eq!(eda["brightness_histogram"], reference["brightness_histogram"]);
}

fn eda_pipeline(s: &Scratch, train: &Path) {
    s.write(
        "p.toml",
        format!("[ingest]\ntrain = \"{}\"\n[eda]\n", train.display()),
    );
}

#[test]
fn eda_agrees_with_pandas_on_the_shipped_sample() {
    let s = Scratch::new();
    eda_pipeline(&s, &common::repo_file("datasets/faces300-sparse.csv.gz"));
    s.ok(&["run", "p.toml"]);
    let eda = read_json(&stage_output(&s, "p.toml", "eda", "eda.json"));
    let reference = read_json(&common::repo_file("tests/fixtures/eda_reference_faces300.json"));
    compare_with_reference(&eda, &reference);
}

#[test]
#[ignore = "needs ../shared/data beside the checkout (the project's development faces), then `cargo test --release -- --ignored`"]
fn eda_agrees_with_pandas_on_the_shared_sparse_data() {
    let shared = common::shared_data();
    let s = Scratch::new();
    eda_pipeline(&s, &shared.join("faces15-train-sparse.csv.gz"));
    s.ok(&["run", "p.toml"]);
    let eda = read_json(&stage_output(&s, "p.toml", "eda", "eda.json"));
    let reference = read_json(&common::repo_file("tests/fixtures/eda_reference_sparse.json"));
    compare_with_reference(&eda, &reference);
}

#[test]
fn eda_on_a_tiny_file_gives_hand_computed_numbers() {
    let s = Scratch::new();
    let image = ["0"; 4].join(" ");
    // One keypoint; x = 1, 2, 4, (missing); y = 0, 1, 1, 0.5.
    s.write(
        "t.csv",
        format!("k_x,k_y,Image\n1,0,{image}\n2,1,{image}\n4,1,{image}\n,0.5,{image}\n"),
    );
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"t.csv\"\ncoordinate_tolerance = 3\n[eda]\nplots = []\n",
    );
    s.ok(&["run", "p.toml"]);
    let eda = read_json(&stage_output(&s, "p.toml", "eda", "eda.json"));
    let x = &eda["coordinates"][0];
    assert_eq!((x["count"].as_u64(), x["missing"].as_u64()), (Some(3), Some(1)));
    assert_close("mean", &x["mean"], &Value::from(7.0 / 3.0), true);
    // deviations -4/3, -1/3, 5/3: squares 16/9 + 1/9 + 25/9 = 42/9; / 2 = 7/3
    assert_close("std", &x["std"], &Value::from((7.0f64 / 3.0).sqrt()), true);
    assert_close("q25", &x["q25"], &Value::from(1.5), true);
    assert_close("median", &x["median"], &Value::from(2.0), true);
    assert_close("q75", &x["q75"], &Value::from(3.0), true);
    // Pairwise rows 0..3: x = 1 2 4, y = 0 1 1 -> dx = -4/3 -1/3 5/3, dy = -2/3 1/3 1/3
    // sum dx dy = 8/9 - 1/9 + 5/9 = 12/9; sum dx^2 = 42/9, sum dy^2 = 6/9
    let r = (12.0 / 9.0) / ((42.0f64 / 9.0) * (6.0 / 9.0)).sqrt();
    assert_close("r", &eda["correlation"][0][1], &Value::from(r), false);
    assert_eq!(eda["patterns"], serde_json::json!([[[true], 3], [[false], 1]]));
    let dir = s.path("reports/p/eda");
    assert!(dir.join("coordinates.parquet").is_file() && dir.join("coordinates.md").is_file());
    assert!(!dir.join("boxplot.png").exists(), "plots = [] draws nothing");
}

#[test]
fn eda_writes_tables_and_the_chosen_plots() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(20));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"t.csv\"\n[eda]\nplots = [\"boxplot\", \"samples\"]\nsamples = 4\n",
    );
    let out = s.fkp(&["run", "p.toml", "-v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("most common missing-label patterns"));
    let dir = s.path("reports/p/eda");
    for table in ["coordinates", "correlation", "missing_patterns", "pixels"] {
        assert!(dir.join(format!("{table}.parquet")).is_file(), "{table}.parquet");
        assert!(dir.join(format!("{table}.md")).is_file(), "{table}.md");
    }
    for plot in ["boxplot", "samples"] {
        for ext in ["png", "svg"] {
            let path = dir.join(format!("{plot}.{ext}"));
            assert!(
                std::fs::metadata(&path).map(|m| m.len() > 1000).unwrap_or(false),
                "{path:?}"
            );
        }
    }
    assert!(!dir.join("correlation.png").exists());
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(
        summary.contains("![box plot of every coordinate](boxplot.png)"),
        "{summary}"
    );
}

fn prepare_pipeline(s: &Scratch, prepare: &str) {
    s.write(
        "p.toml",
        format!("[ingest]\ntrain = \"t.csv\"\n[eda]\nplots = []\n[prepare]\n{prepare}"),
    );
}

#[test]
fn changing_a_prepare_key_reruns_prepare_only() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(30));
    prepare_pipeline(&s, "missing = \"median\"\n");
    s.ok(&["run", "p.toml"]);
    prepare_pipeline(&s, "missing = \"mask\"\n");
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("ingest     cached"), "{out}");
    assert!(out.contains("eda        cached"), "{out}");
    assert!(
        out.contains("prepare    running")
            && out.contains("`[prepare] missing` changed: \"median\" -> \"mask\""),
        "{out}"
    );
    let dry = s.ok(&["run", "p.toml", "--dry-run", "--force-stage", "ingest"]);
    assert_eq!(dry.matches("would run").count(), 3, "{dry}");
}

#[test]
fn every_strategy_validates_on_the_same_rows() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(30));
    let mut val_rows = Vec::new();
    for (strategy, filled, masked) in [("drop", 0, 0), ("mean", 1, 0), ("median", 1, 0), ("mask", 0, 1)] {
        prepare_pipeline(&s, &format!("missing = \"{strategy}\"\nval = 0.3\nseed = 5\n"));
        s.ok(&["run", "p.toml"]);
        let meta = read_json(&stage_output(&s, "p.toml", "prepare", "prepare.json"));
        assert_eq!(meta["val_rows"], 9, "{strategy}");
        assert_eq!(
            meta["filled_labels"].as_u64().unwrap() > 0,
            filled == 1,
            "{strategy}: {meta}"
        );
        assert_eq!(
            meta["masked_labels"].as_u64().unwrap() > 0,
            masked == 1,
            "{strategy}: {meta}"
        );
        if strategy == "drop" {
            assert!(meta["dropped_rows"].as_u64().unwrap() > 0);
        }
        let summary = std::fs::read_to_string(s.path("reports/p/prepare/summary.md")).unwrap();
        assert!(summary.contains(&format!("`{strategy}`")), "{summary}");
        val_rows.push(meta["val_labels"].clone());
    }
    assert!(val_rows.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_separate_validation_file_can_be_used() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(12));
    s.write("v.csv", labelled_csv(5));
    prepare_pipeline(&s, "val_file = \"v.csv\"\n");
    s.ok(&["run", "p.toml"]);
    let meta = read_json(&stage_output(&s, "p.toml", "prepare", "prepare.json"));
    assert_eq!(
        (meta["train_rows"].as_u64(), meta["val_rows"].as_u64()),
        (Some(12), Some(5))
    );

    prepare_pipeline(&s, "val_file = \"v.csv\"\nval = 0.3\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("set either `val`"), "{err}");
}

#[test]
fn bad_prepare_values_name_file_line_and_key() {
    let s = Scratch::new();
    s.write("t.csv", labelled_csv(12));
    prepare_pipeline(&s, "missing = \"medain\"\nval = 1.5\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`prepare.missing`: \"medain\" is not one of \"drop\", \"mean\", \"median\", \"mask\""),
        "{err}"
    );
    assert!(err.contains("did you mean `median`?"), "{err}");
    assert!(err.contains("`prepare.val`: 1.5 is outside (0, 1)"), "{err}");
    assert!(err.contains("p.toml:6:11") && err.contains("p.toml:7:7"), "{err}");

    // Only the data shows these: a split that leaves no validation rows...
    prepare_pipeline(&s, "val = 0.01\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stage [prepare]") && err.contains("`prepare.val`") && err.contains("both need rows"),
        "{err}"
    );
    assert!(err.contains("p.toml:6:7"), "{err}");

    // ...and `drop` when no row is complete.
    let image = ["0"; 64].join(" ");
    let rows: String = (0..10).map(|_| format!("1,1,,,2,2,{image}\n")).collect();
    s.write("t.csv", format!("{}\n{rows}", common::header()));
    prepare_pipeline(&s, "missing = \"drop\"\n");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("\"drop\" leaves no training rows"), "{err}");
    assert!(s.entries("prepare").is_empty() && s.temp_dirs().is_empty());
}
