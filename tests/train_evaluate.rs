//! `[model]`, `[train]`, `[evaluate]` and `fkp predict` end to end on small
//! synthetic faces whose keypoints are known by construction.

use crate::common::{Scratch, blob_csv};
use serde_json::Value;

const SIDE: usize = 24;

fn pipeline(s: &Scratch, train: &str, extra: &str) {
    s.write("faces.csv", blob_csv(300, SIDE, 7));
    s.write(
        "p.toml",
        format!(
            "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\nval = 0.2\n\
             [model]\narch = \"lenet\"\ndropout = 0.0\n[train]\ndevice = \"cpu\"\nbatch_size = 16\n{train}\n[evaluate]\n{extra}"
        ),
    );
}

/// `fkp run p.toml`, refused as a configuration error (exit 2): its stderr.
fn refused(s: &Scratch) -> String {
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 2, "{err}");
    err
}

fn metrics(s: &Scratch) -> Value {
    serde_json::from_slice(&std::fs::read(s.path("reports/p/metrics.json")).unwrap()).unwrap()
}

#[test]
fn training_learns_keypoints_far_better_than_the_mean_shape() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 20\n[train.augment]\nhflip = true\n", "");
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("epoch  20/20"), "{out}");
    let m = metrics(&s);
    let rmse = m["validation"]["rmse_px"].as_f64().unwrap();
    let baseline = m["validation"]["mean_shape_rmse_px"].as_f64().unwrap();
    assert!(
        rmse < 0.5 * baseline,
        "val RMSE {rmse:.2} px vs mean shape {baseline:.2} px"
    );
    assert_eq!(m["model"]["spec"]["outputs"], 4);
    assert_eq!(m["validation"]["per_keypoint"].as_array().unwrap().len(), 2);
    for file in [
        "metrics.md",
        "learning_curves.png",
        "learning_curves.svg",
        "predictions.png",
        "train/history.md",
        "train/augmented.png",
    ] {
        assert!(s.path(&format!("reports/p/{file}")).is_file(), "{file}");
    }
}

#[test]
fn changing_a_train_key_retrains_and_an_evaluate_key_only_rescores() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 2\n", "");
    s.ok(&["run", "p.toml"]);
    pipeline(&s, "epochs = 2\n", "samples = 2\n");
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("train      cached") && out.contains("evaluate   running"),
        "{out}"
    );
    pipeline(&s, "epochs = 3\n", "samples = 2\n");
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("prepare    cached") && out.contains("`[train] epochs` changed: 2 -> 3"),
        "{out}"
    );
}

#[test]
fn predict_writes_one_row_per_input_row_and_a_kaggle_submission() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    let rows: Vec<String> = blob_csv(5, SIDE, 99)
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    let test: String = rows
        .iter()
        .enumerate()
        .map(|(i, image)| format!("{},{image}\n", i + 1))
        .collect();
    s.write("test.csv", format!("ImageId,Image\n{test}"));
    s.write(
        "lookup.csv",
        "RowId,ImageId,FeatureName,Location\n1,1,left_eye_center_x,\n2,3,right_eye_center_y,\n",
    );
    let out = s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "test.csv",
        "--output",
        "preds.csv",
    ]);
    assert!(out.contains("train      running"), "predict trains first: {out}");
    let preds = std::fs::read_to_string(s.path("preds.csv")).unwrap();
    let lines: Vec<&str> = preds.lines().collect();
    assert_eq!(
        lines[0],
        "left_eye_center_x,left_eye_center_y,right_eye_center_x,right_eye_center_y"
    );
    assert_eq!(lines.len(), 6);
    assert!(
        lines[1]
            .split(',')
            .all(|v| v.parse::<f32>().is_ok_and(f32::is_finite))
    );

    let (_, err) = s.fails(&[
        "predict",
        "p.toml",
        "--input",
        "test.csv",
        "--output",
        "sub.csv",
        "--submission",
    ]);
    assert!(err.contains("--submission needs `lookup`"), "{err}");

    let text = std::fs::read_to_string(s.path("p.toml")).unwrap();
    s.write(
        "p.toml",
        text.replace("[ingest]\n", "[ingest]\nlookup = \"lookup.csv\"\n"),
    );
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "test.csv",
        "--output",
        "sub.csv",
        "--submission",
    ]);
    let submission = std::fs::read_to_string(s.path("sub.csv")).unwrap();
    let lines: Vec<&str> = submission.lines().collect();
    assert_eq!(lines[0], "RowId,Location");
    assert_eq!(lines.len(), 3);
    let location: f32 = lines[1].split(',').nth(1).unwrap().parse().unwrap();
    assert!((0.0..=SIDE as f32).contains(&location));
}

/// Every `[train] loss` trains; its settings are in the key, checked, and a
/// setting of another loss is said to be one.
#[test]
fn each_loss_trains_and_its_settings_are_keys() {
    let s = Scratch::new();
    for loss in ["l1", "smooth_l1", "adaptive_wing", "wing"] {
        pipeline(&s, &format!("epochs = 2\nloss = \"{loss}\"\n"), "");
        let out = s.ok(&["run", "p.toml"]);
        assert!(out.contains("epoch   2/2"), "{loss}: {out}");
        let rmse = metrics(&s)["validation"]["rmse_px"].as_f64().unwrap();
        assert!(rmse.is_finite() && rmse < SIDE as f64, "{loss}: {rmse}");
    }
    pipeline(&s, "epochs = 2\nloss = \"wing\"\nwing_w = 5\n", "");
    let out = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(out.contains("`[train] wing_w` changed: 10.0 -> 5.0"), "{out}");

    pipeline(&s, "epochs = 2\nwing_w = 5\n", "");
    let err = refused(&s);
    assert!(err.contains("`wing_w` is a setting of loss = \"wing\""), "{err}");
    pipeline(&s, "epochs = 2\nloss = \"wing\"\nwing_epsilon = 0\n", "");
    let err = refused(&s);
    assert!(err.contains("`train.wing_epsilon`: 0 is outside"), "{err}");
    pipeline(&s, "epochs = 2\nloss = \"adaptive_wing\"\n", "");
    s.ok(&["run", "p.toml"]);
    pipeline(&s, "epochs = 2\nloss = \"adaptive_wing\"\nawing_theta = 4\n", "");
    let out = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(out.contains("`[train] awing_theta` changed: 0.5 -> 4.0"), "{out}");
    pipeline(&s, "epochs = 2\nloss = \"wing\"\nawing_alpha = 2\n", "");
    let err = refused(&s);
    assert!(
        err.contains("`awing_alpha` is a setting of loss = \"adaptive_wing\""),
        "{err}"
    );
}

/// `ema` and `complete_weight` train, are in the key when written and only
/// then (earlier pipelines keep their entries), and are checked.
#[test]
fn ema_and_complete_weight_are_keys_only_when_written() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 2\n", "");
    s.ok(&["run", "p.toml"]);
    let plain = metrics(&s)["validation"]["rmse_px"].as_f64().unwrap();
    for (train, changed) in [
        ("ema = 0.9\n", "`[train] ema` changed: (unset) -> 0.9"),
        (
            "complete_weight = 3\n",
            "`[train] complete_weight` changed: (unset) -> 3.0",
        ),
    ] {
        pipeline(&s, &format!("epochs = 2\n{train}"), "");
        let out = s.ok(&["run", "p.toml", "--dry-run"]);
        assert!(out.contains(changed), "{train}: {out}");
        let out = s.ok(&["run", "p.toml"]);
        assert!(out.contains("epoch   2/2"), "{train}: {out}");
        let rmse = metrics(&s)["validation"]["rmse_px"].as_f64().unwrap();
        assert!(rmse.is_finite() && rmse != plain, "{train}: {rmse} vs {plain}");
    }
    pipeline(&s, "epochs = 2\nema = 1\n", "");
    assert!(refused(&s).contains("`train.ema`: 1 is outside"));
    pipeline(&s, "epochs = 2\ncomplete_weight = 0\n", "");
    assert!(refused(&s).contains("`train.complete_weight`: 0 is outside"));
    // Written back as they were, the old entry is the answer again.
    pipeline(&s, "epochs = 2\n", "");
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("train      cached"), "{out}");
}

/// DSNT's regulariser trains a heatmap network, is in the key when written,
/// and is refused where there are no maps or with a setting alone.
#[test]
fn the_dsnt_regulariser_trains_heatmap_networks_only() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(300, SIDE, 7));
    let heatmap = |train: &str| {
        s.write(
            "p.toml",
            format!(
                "[ingest]\ntrain = \"faces.csv\"\n[prepare]\nmissing = \"mask\"\nval = 0.2\n[model]\n\
                 layers = [{{ conv = 8, kernel = 3, padding = 1 }}, \"relu\", {{ maxpool = 2 }}, \
                 {{ conv = 2, kernel = 3, padding = 1 }}, \"soft_argmax\"]\n\
                 [train]\ndevice = \"cpu\"\nbatch_size = 16\nepochs = 3\n{train}\n[evaluate]\n"
            ),
        )
    };
    heatmap("");
    s.ok(&["run", "p.toml"]);
    let plain = metrics(&s)["validation"]["rmse_px"].as_f64().unwrap();
    let history = std::fs::read_to_string(s.path("reports/p/train/history.md")).unwrap();
    assert!(!history.contains("DSNT"), "{history}");
    heatmap("dsnt_regulariser = 1\ndsnt_sigma = 2\n");
    let out = s.ok(&["run", "p.toml", "--dry-run"]);
    assert!(
        out.contains("`[train] dsnt_regulariser` changed: (unset) -> 1.0"),
        "{out}"
    );
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("epoch   3/3: train loss ") && out.contains(" (+ DSNT 0."),
        "{out}"
    );
    let rmse = metrics(&s)["validation"]["rmse_px"].as_f64().unwrap();
    assert!(rmse.is_finite() && rmse != plain, "{rmse} vs {plain}");
    // The regulariser has its own column: train loss stays the coordinates'.
    let history = std::fs::read_to_string(s.path("reports/p/train/history.md")).unwrap();
    assert!(
        history.contains("| epoch | train loss | train DSNT | val loss |"),
        "{history}"
    );

    heatmap("dsnt_sigma = 2\n");
    assert!(
        refused(&s).contains("`dsnt_sigma` is a setting of the regulariser: set `dsnt_regulariser` too"),
        "sigma alone"
    );
    heatmap("dsnt_regulariser = 0\n");
    assert!(refused(&s).contains("`train.dsnt_regulariser`: a weight of 0 adds nothing: remove the key"));
    heatmap("dsnt_regulariser = -1\n");
    assert!(refused(&s).contains("`train.dsnt_regulariser`: -1 is outside 0 ..= 1000"));
    pipeline(&s, "epochs = 2\ndsnt_regulariser = 1\n", "");
    let err = refused(&s);
    assert!(
        err.contains("p.toml:")
            && err.contains("regularises the maps of a network ending in \"soft_argmax\""),
        "{err}"
    );
}

#[test]
fn bad_model_and_train_values_are_clear_errors() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(20, SIDE, 1));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[model]\narch = \"resnet19\"\nchannels = 2\n\
         [train]\nepochs = 0\noptimizer = \"adamax\"\n[train.schedule]\nkind = \"step\"\n",
    );
    let err = refused(&s);
    for expected in [
        "`model.arch`: \"resnet19\" is not one of \"lenet\", \"alexnet\", \"resnet18\", \"resnet34\", \"resnet50\", \"darknet53\"",
        "did you mean `resnet18`?",
        "`model.channels`: 2 channels",
        "`train.epochs`: 0 is outside 1..=100000",
        "`train.optimizer`: \"adamax\" is not one of \"adam\", \"adamw\", \"sgd\"",
        "`train.schedule.kind`: \"step\" is not one of",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[train]\nepochs = 1\n",
    );
    let (_, err) = s.fails(&["run", "p.toml"]);
    assert!(err.contains("stage [train] needs [model]"), "{err}");
}

/// Only a build without CUDA can be asked for it in vain.
#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_without_it_is_an_error_and_auto_falls_back() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    let text = std::fs::read_to_string(s.path("p.toml")).unwrap();
    s.write("p.toml", text.replace("device = \"cpu\"", "device = \"cuda\""));
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("built without CUDA"), "{err}");
    assert!(s.entries("train").is_empty() && s.temp_dirs().is_empty());

    s.write("p.toml", text.replace("device = \"cpu\"", "device = \"auto\""));
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("warning: device = \"auto\"") && out.contains("training on the CPU"),
        "{out}"
    );
}

#[test]
fn evaluate_is_a_stage_like_the_others() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    let out = s.ok(&["run", "p.toml", "--until", "evaluate"]);
    assert!(out.contains("evaluate   running"), "{out}");
    let out = s.ok(&["run", "p.toml", "--force-stage", "evaluate"]);
    assert!(out.contains("train      cached"), "{out}");
    assert!(out.contains("evaluate   running"), "{out}");
    assert_eq!(s.entries("evaluate").len(), 1);

    // Another evaluate configuration leaves the first entry unreferenced.
    pipeline(&s, "epochs = 1\n", "samples = 4\n");
    s.ok(&["run", "p.toml"]);
    assert_eq!(s.entries("evaluate").len(), 2);
    s.ok(&["clean", "p.toml"]);
    assert_eq!(s.entries("evaluate").len(), 1);
}

#[test]
fn evaluate_without_train_is_a_config_error() {
    let s = Scratch::new();
    s.write("faces.csv", blob_csv(20, SIDE, 1));
    s.write(
        "p.toml",
        "[ingest]\ntrain = \"faces.csv\"\n[prepare]\n[evaluate]\n",
    );
    let err = refused(&s);
    assert!(err.contains("stage [evaluate] needs [train]"), "{err}");
    assert!(err.contains("p.toml:4:2"), "{err}");
}

fn history(s: &Scratch) -> Vec<Vec<String>> {
    let entry = s.entries("train").pop().unwrap();
    let text = std::fs::read_to_string(entry.join("data/history.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn adamw_warm_up_and_cosine_set_the_rate_batch_by_batch() {
    let s = Scratch::new();
    // 240 training rows in batches of 16: 15 batches an epoch, 30 warming up.
    pipeline(
        &s,
        "epochs = 4\noptimizer = \"adamw\"\nclip_grad_norm = 1.0\n[train.schedule]\nkind = \"cosine\"\nwarmup_epochs = 2\n",
        "",
    );
    s.ok(&["run", "p.toml"]);
    let rates: Vec<String> = history(&s).iter().map(|row| row[5].clone()).collect();
    // Each epoch logs its first batch's rate: 1/30 and 16/30 of 1e-3 warming up,
    // then the cosine over the 2 epochs left: its start, and its middle.
    assert_eq!(rates, ["3.333e-5", "5.333e-4", "1.000e-3", "5.000e-4"]);

    // One cycle warms up by itself; asking for both is an error.
    pipeline(
        &s,
        "epochs = 4\n[train.schedule]\nkind = \"onecycle\"\nwarmup_epochs = 1\n",
        "",
    );
    let err = refused(&s);
    assert!(err.contains("\"onecycle\" warms up by itself"), "{err}");
}

#[test]
fn clipping_the_gradient_norm_bounds_each_step() {
    let s = Scratch::new();
    let losses = |s: &Scratch| -> Vec<f64> { history(s).iter().map(|row| row[2].parse().unwrap()).collect() };
    // With SGD, a tiny norm means tiny steps: the validation loss stays put.
    pipeline(
        &s,
        "epochs = 2\noptimizer = \"sgd\"\nlr = 0.05\nclip_grad_norm = 1e-6\n",
        "",
    );
    s.ok(&["run", "p.toml"]);
    let clipped = losses(&s);
    let s = Scratch::new();
    pipeline(&s, "epochs = 2\noptimizer = \"sgd\"\nlr = 0.05\n", "");
    s.ok(&["run", "p.toml"]);
    let free = losses(&s);
    let (moved_clipped, moved_free) = ((clipped[1] - clipped[0]).abs(), (free[1] - free[0]).abs());
    assert!(moved_clipped < 1e-4 * clipped[0], "{clipped:?}");
    assert!(moved_free > 100.0 * moved_clipped, "{free:?} vs {clipped:?}");
}

#[test]
fn test_time_flips_are_scored_beside_plain_predictions_and_predict_uses_them() {
    let s = Scratch::new();
    pipeline(
        &s,
        "epochs = 3\n[train.augment]\nhflip = true\n",
        "tta = [\"hflip\"]\n",
    );
    s.ok(&["run", "p.toml"]);
    let m = metrics(&s);
    assert_eq!(m["tta"], serde_json::json!(["hflip"]));
    let with = m["validation"]["rmse_px"].as_f64().unwrap();
    let without = m["without_tta"]["validation"]["rmse_px"].as_f64().unwrap();
    assert!(
        with.is_finite() && without.is_finite() && with != without,
        "{with} {without}"
    );
    let md = std::fs::read_to_string(s.path("reports/p/metrics.md")).unwrap();
    assert!(
        md.contains("validation (sparse labels), with TTA")
            && md.contains("validation (sparse labels), without TTA"),
        "{md}"
    );

    let err = s.ok(&["predict", "p.toml", "--input", "faces.csv", "--output", "tta.csv"]);
    assert!(err.contains("predicting with test-time augmentation"), "{err}");
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "faces.csv",
        "--output",
        "plain.csv",
        "--no-tta",
    ]);
    let (tta, plain) = (
        std::fs::read(s.path("tta.csv")).unwrap(),
        std::fs::read(s.path("plain.csv")).unwrap(),
    );
    assert_ne!(tta, plain);

    // Without `tta`, metrics.json says so and has no second set of scores.
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    s.ok(&["run", "p.toml"]);
    let m = metrics(&s);
    assert_eq!(m["tta"], serde_json::json!([]));
    assert!(m.get("without_tta").is_none(), "{m}");
}

/// The rows of a `fkp predict` CSV, as numbers.
fn predicted(s: &Scratch, file: &str) -> Vec<Vec<f64>> {
    std::fs::read_to_string(s.path(file))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn a_seed_ensemble_trains_one_shared_entry_per_seed_and_averages_them() {
    let s = Scratch::new();
    pipeline(
        &s,
        "epochs = 2
seeds = [3, 5]
",
        "tta = [\"hflip\"]\n",
    );
    let out = s.ok(&["run", "p.toml"]);
    assert!(
        out.contains("train#seed-3") && out.contains("train#seed-5"),
        "{out}"
    );
    assert_eq!(s.entries("train").len(), 2);
    let m = metrics(&s);
    let members = m["members"].as_array().unwrap();
    let seeds: Vec<u64> = members.iter().map(|m| m["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, [3, 5]);
    for member in members {
        assert!(member["validation"]["rmse_px"].as_f64().unwrap().is_finite());
        assert!(
            member["without_tta"]["validation"]["rmse_px"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
    }
    assert_ne!(
        members[0]["validation"]["rmse_px"], members[1]["validation"]["rmse_px"],
        "two seeds, two different models"
    );
    for file in ["seed-3/learning_curves.png", "seed-5/train/history.md"] {
        assert!(s.path(&format!("reports/p/{file}")).is_file(), "{file}");
    }
    // Without [train.augment] there is no picture of augmented faces.
    assert!(!s.path("reports/p/seed-3/train/augmented.png").exists());
    let md = std::fs::read_to_string(s.path("reports/p/metrics.md")).unwrap();
    assert!(
        md.contains("An ensemble of 2") && md.contains("seed-3/learning_curves.png"),
        "{md}"
    );

    // predict averages the members; each member alone is the pipeline with its
    // `seed`, whose training is the ensemble's cached entry.
    s.ok(&[
        "predict",
        "p.toml",
        "--input",
        "faces.csv",
        "--output",
        "ensemble.csv",
    ]);
    let mut alone = Vec::new();
    for seed in [3, 5] {
        pipeline(&s, &format!("epochs = 2\nseed = {seed}\n"), "tta = [\"hflip\"]\n");
        let out = s.ok(&["run", "p.toml"]);
        assert!(out.contains("train      cached"), "{out}");
        let file = format!("seed-{seed}.csv");
        s.ok(&["predict", "p.toml", "--input", "faces.csv", "--output", &file]);
        alone.push(predicted(&s, &file));
    }
    assert_eq!(s.entries("train").len(), 2);
    let ensemble = predicted(&s, "ensemble.csv");
    assert_eq!(ensemble.len(), 300);
    for (row, values) in ensemble.iter().enumerate() {
        for (c, value) in values.iter().enumerate() {
            let mean = (alone[0][row][c] + alone[1][row][c]) / 2.0;
            assert!((value - mean).abs() < 1e-3, "row {row}: {value} vs mean {mean}");
        }
    }
}

#[test]
fn seeds_are_checked_where_they_are_written() {
    let s = Scratch::new();
    for (train, message) in [
        ("seed = 1\nseeds = [1, 2]\n", "not both"),
        ("seeds = []\n", "lists no seed"),
        ("seeds = [1, 2, 1]\n", "1 is listed twice"),
        ("seeds = [1, -2]\n", "-2 is negative"),
        ("seeds = 3\n", "must be an array of non-negative integers"),
    ] {
        pipeline(&s, &format!("epochs = 1\n{train}"), "");
        let (code, err) = s.fails(&["run", "p.toml"]);
        assert_eq!(code, 2, "{train}: {err}");
        assert!(
            err.contains(message) && err.contains("train.seeds"),
            "{train}: {err}"
        );
    }
    assert!(s.entries("ingest").is_empty());
}

#[test]
fn set_changes_a_key_for_one_command_and_its_mistakes_name_the_key() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    s.ok(&["run", "p.toml"]);
    let out = stdout(&s, &["status", "p.toml", "--set", "train.epochs=2"]);
    assert!(
        out.contains("`[train] epochs` changed") && out.contains("stale"),
        "{out}"
    );
    let out = s.ok(&[
        "run",
        "p.toml",
        "--set",
        "train.epochs=2",
        "--set",
        "model.arch=lenet",
    ]);
    assert!(
        out.contains("`[train] epochs` changed: 1 -> 2") && out.contains("epoch   2/2"),
        "{out}"
    );
    // Without it, the file's own value: its entry is still cached.
    let out = s.ok(&["run", "p.toml"]);
    assert!(out.contains("train      cached"), "{out}");

    for (set, says) in [
        ("train.epochs=zero", "`train.epochs` must be"),
        ("train.epoch=2", "unknown key `epoch`"),
        ("trian.epochs=2", "none of the pipelines has [trian]"),
        ("train.epochs", "has no `=`"),
        ("train.lr=[1,", "is not a TOML value"),
    ] {
        let (code, err) = s.fails(&["run", "p.toml", "--set", set]);
        assert_eq!(code, 2, "{set}: {err}");
        assert!(err.contains(says), "{set}: {err}");
    }
    let (_, err) = s.fails(&["run", "p.toml", "--set", "trian.epochs=2"]);
    assert!(err.contains("train"), "a hint names the table: {err}");
    let (_, err) = s.fails(&["run", "p.toml", "--set", "train.epochs=zero"]);
    assert!(err.contains("--set"), "the error points at the argument: {err}");
}

fn stdout(s: &Scratch, args: &[&str]) -> String {
    let out = s.fkp(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sweep_expands_into_named_variants_that_share_what_they_can() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    // A report reads [eda] too.
    let sweep = "[eda]\nplots = []\n[sweep]\n\"train.lr\" = [1e-3, 3e-4]\n\"train.seed\" = [1, 2]\n";
    let text = std::fs::read_to_string(s.path("p.toml")).unwrap() + sweep;
    s.write("p.toml", &text);
    let names = [
        "p--lr-1e-3--seed-1",
        "p--lr-1e-3--seed-2",
        "p--lr-3e-4--seed-1",
        "p--lr-3e-4--seed-2",
    ];
    let dag = stdout(&s, &["dag", "p.toml"]);
    for name in names {
        assert!(dag.contains(&format!("{name} (")), "{name}: {dag}");
    }
    let out = s.ok(&["run", "p.toml"]);
    for name in names {
        assert!(
            s.path(&format!("reports/{name}/metrics.json")).is_file(),
            "{name}: {out}"
        );
    }
    // One ingest, eda and prepare for all; a training per variant.
    assert_eq!(s.entries("ingest").len(), 1);
    assert_eq!(s.entries("prepare").len(), 1);
    assert_eq!(s.entries("train").len(), 4);
    // The comparison has every variant, and each learning rate's seeds as mean ± std.
    let table = stdout(&s, &["compare", "p.toml", "--format", "md"]);
    assert!(table.contains("4 pipelines"), "{table}");
    assert!(
        table.contains("| p--lr-1e-3 ") && table.contains("| p--lr-3e-4 ") && table.contains(" ± "),
        "{table}"
    );
    let json: Value = serde_json::from_str(&stdout(&s, &["compare", "p.toml", "--format", "json"])).unwrap();
    assert_eq!(json["seed_groups"].as_array().unwrap().len(), 2);
    // --set changes every variant; a report lists the sweep as one file.
    let out = s.ok(&["run", "p.toml", "--set", "evaluate.samples=2"]);
    assert_eq!(out.matches("evaluate   running").count(), 4, "{out}");
    s.write("report.toml", "[report]\npipelines = [\"p.toml\"]\n");
    let out = s.ok(&["run", "report.toml"]);
    assert!(out.contains("report     running"), "{out}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(s.path("reports/report/report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 4);

    for (bad, says) in [
        (
            "[sweep]\n\"train.lr\" = 1e-3\n",
            "write the values to try as an array",
        ),
        ("[sweep]\n\"train.lr\" = []\n", "lists no value"),
        ("[sweep]\n\"lr\" = [1e-3]\n", "a swept key is a key of a table"),
        (
            "[sweep]\n\"train.lr\" = [1e-3, 0.001]\n",
            "`0.001` is listed twice (as `1e-3`)",
        ),
        (
            "[sweep]\n\"ingest.on_bad_row\" = [\"a/b\", \"a_b\"]\n",
            "both name variants `a_b`",
        ),
        (
            "[sweep]\n\"pipeline.extends\" = [\"x.toml\"]\n",
            "`extends` cannot be swept",
        ),
        (
            "[sweep]\n\"train.lr\" = [-1.0]\n\"train.seed\" = [1, 2]\n",
            "-1 is outside",
        ),
        ("[sweep]\n\"train.lrr\" = [1e-3]\n", "unknown key `lrr`"),
        ("[sweep]\n", "sweeps no key"),
    ] {
        pipeline(&s, "epochs = 1\n", "");
        let text = std::fs::read_to_string(s.path("p.toml")).unwrap() + bad;
        s.write("p.toml", &text);
        let (code, err) = s.fails(&["run", "p.toml"]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert_eq!(
            err.matches(says).count(),
            1,
            "{bad}: said once, whatever the variants: {err}"
        );
    }
}

#[test]
fn a_diverging_training_stops_with_advice_and_caches_nothing() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 2\noptimizer = \"sgd\"\nlr = 10.0\n", "");
    let (code, err) = s.fails(&["run", "p.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("training diverged in epoch 1") && err.contains("try a lower `lr`"),
        "{err}"
    );
    assert!(s.entries("train").is_empty() && s.entries("evaluate").is_empty());

    // A floor above the rate would make it rise.
    pipeline(
        &s,
        "epochs = 2\nlr = 1e-3\n[train.schedule]\nkind = \"cosine\"\nmin_lr = 1e-2\n",
        "",
    );
    let err = refused(&s);
    assert!(err.contains("0.01 is not below lr = 0.001"), "{err}");
}

#[test]
fn schedule_keys_in_train_and_a_wrong_case_get_a_pointer() {
    let s = Scratch::new();
    pipeline(&s, "warmup_epochs = 1\noptimizer = \"AdamW\"\n", "");
    let err = refused(&s);
    assert!(
        err.contains("`warmup_epochs` belongs in [train.schedule]"),
        "{err}"
    );
    assert!(err.contains("did you mean `adamw`?"), "{err}");
}

/// Two pipelines, the second with a network its images cannot pass: it is named
/// before the first trains, from `[ingest] image_side` or from its cached ingest.
#[test]
fn a_network_that_cannot_take_the_images_is_found_before_anything_trains() {
    let s = Scratch::new();
    pipeline(&s, "epochs = 1\n", "");
    let bad = |side: &str| {
        format!(
            "[ingest]\ntrain = \"faces.csv\"\n{side}[prepare]\n[model]\nlayers = [{{ maxpool = 32 }}, \"flatten\"]\n\
             [train]\ndevice = \"cpu\"\nepochs = 1\n"
        )
    };
    s.write("bad.toml", bad("image_side = 24\n"));
    s.write("later.toml", bad(""));
    s.ok(&["run", "later.toml", "--until", "ingest"]);
    for file in ["bad.toml", "later.toml"] {
        let (code, err) = s.fails(&["run", "p.toml", file, "--force"]);
        assert_eq!(code, 1, "{err}");
        let name = file.trim_end_matches(".toml");
        let early = err
            .find(&format!("pipeline `{name}` cannot run, the others go on"))
            .unwrap_or_else(|| panic!("{err}"));
        let trained = err.find("train      running").unwrap_or_else(|| panic!("{err}"));
        assert!(early < trained, "{err}");
        assert!(err.contains("maxpool"), "{err}");
    }
}
